//! Hashed timer wheel on virtual time: the one place that owns every pending
//! deadline (idle timeouts, ping and close deadlines), modelled on sozu's
//! `timer.rs` and mio-extras' timer, without a wake-up thread.
//!
//! Time is a `u64` count of milliseconds since server start, passed in by the
//! caller. The wheel never reads a clock, so tests drive it on virtual time and
//! the event loop decides what "now" is once per turn.
//!
//! Entries live in a [`Slab`]; each of the `slots` lists (plus one "overdue"
//! list) is a doubly linked list threaded through the slab by `u32` indices. An
//! entry costs its value plus 24 bytes (`u64` deadline, two `u32` links, `u32`
//! list number, `u32` generation), plus slab's vacancy tag.
//!
//! Rounding: a deadline `at_ms` belongs to tick `ceil(at_ms / tick_ms)` and
//! lives in slot `tick % slots`; its exact deadline is kept, so an entry from a
//! later rotation sharing the slot is skipped until it is due. An entry fires at
//! the first `expire(now_ms)` with `now_ms >= at_ms`; a caller that sleeps per
//! [`Wheel::next_timeout`] wakes at most at the tick boundary after it. An
//! entry inserted at or before the latest time `expire` has seen goes to the
//! overdue list and comes out first on the next `expire`.
//!
//! Costs: `insert` and `cancel` are O(1). `expire` costs O(entries fired +
//! slots passed + entries of later rotations stepped over in those slots); a
//! jump of more than a rotation visits each slot once instead of every tick.
//! `next_timeout` scans at most `slots` list heads and never touches entries.

use std::num::NonZeroU32;

use slab::Slab;

/// "No entry" in the intrusive links; slab indices are kept below it.
const NIL: u32 = u32::MAX;

/// Handle to a scheduled entry. It carries a generation, so a stale id (its
/// entry fired or was cancelled and the slab slot reused) never touches the new
/// tenant. Generations come from a wrapping counter: a stale id could only
/// alias after 2^32 further inserts landed on the same slab slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerId {
    index: u32,
    /// Never zero, so `Option<TimerId>` is as small as a `TimerId`.
    generation: NonZeroU32,
}

/// One scheduled value, linked into exactly one list.
struct Scheduled<T> {
    value: T,
    /// Exact deadline; tested on every visit because a slot also holds entries
    /// of later rotations.
    at_ms: u64,
    prev: u32,
    next: u32,
    /// Index into `Wheel::lists`. Stored because an overdue entry's list cannot
    /// be derived from its deadline.
    list: u32,
    generation: NonZeroU32,
}

/// Head and tail of one list; the tail makes lists FIFO, so entries due at the
/// same tick come out in insertion order.
#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

/// A hashed timer wheel holding values of type `T`; see the module doc.
pub struct Wheel<T> {
    entries: Slab<Scheduled<T>>,
    /// `slots` wheel slots followed by the overdue list.
    lists: Vec<List>,
    tick_ms: u64,
    /// `slots - 1`; `slots` is a power of two so a tick maps to its slot by masking.
    mask: u64,
    /// Latest `now_ms` seen by `expire`. Entries due at or before it are either
    /// in the overdue list or still reachable by the sweep below.
    now: u64,
    /// Tick whose slot `expire` is sweeping; `now / tick_ms + 1` once every
    /// entry due at `now` has fired.
    cursor: u64,
    /// Next entry of the cursor's slot to examine. Entries before it cannot fire
    /// at (`now`, `cursor`); NIL once the whole slot was examined.
    walk: u32,
    next_generation: NonZeroU32,
}

impl<T> Wheel<T> {
    /// `tick_ms` > 0: granularity. `slots`: number of slots (rounded up to a
    /// power of two). Panics if `tick_ms` is 0.
    pub fn new(tick_ms: u64, slots: usize) -> Self {
        assert!(tick_ms > 0, "tick_ms must be positive");
        let slots = slots.max(1).next_power_of_two();
        assert!(slots < NIL as usize, "slot numbers must fit a u32");
        Wheel {
            entries: Slab::new(),
            lists: vec![EMPTY; slots + 1],
            tick_ms,
            mask: slots as u64 - 1,
            now: 0,
            // Tick 0 holds only deadline 0, which is already overdue at time 0.
            cursor: 1,
            walk: NIL,
            next_generation: NonZeroU32::MIN,
        }
    }

    /// Schedule `value` to fire at absolute virtual time `at_ms`. A time in the
    /// past (or now) fires at the next `expire` call.
    pub fn insert(&mut self, at_ms: u64, value: T) -> TimerId {
        let list = if at_ms <= self.now {
            self.overdue_list()
        } else {
            // Such a tick is >= the cursor, so the sweep has not passed it yet.
            self.slot_of(at_ms.div_ceil(self.tick_ms))
        };
        let generation = self.next_generation;
        self.next_generation = generation.checked_add(1).unwrap_or(NonZeroU32::MIN);
        let tail = self.lists[list].tail;
        let index = self.entries.insert(Scheduled {
            value,
            at_ms,
            prev: tail,
            next: NIL,
            list: list as u32,
            generation,
        });
        let index = u32::try_from(index)
            .ok()
            .filter(|&index| index != NIL)
            .expect("fewer than u32::MAX timers are pending");
        if tail == NIL {
            self.lists[list].head = index;
        } else {
            self.entry_mut(tail).next = index;
        }
        self.lists[list].tail = index;
        TimerId { index, generation }
    }

    /// Remove a pending entry; None if it already fired, was cancelled, or the id is stale.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let entry = self.entries.get(id.index as usize)?;
        (entry.generation == id.generation).then(|| self.remove(id.index))
    }

    /// Pop ONE entry whose deadline is <= `now_ms` (never early). Call in a loop
    /// until None. Entries come out in tick order, same-tick ones in insertion
    /// order, except that entries inserted already overdue come out first and a
    /// jump of more than a rotation yields the overdue backlog in slot order.
    /// Time must not run backwards: a `now_ms` below one already seen fires nothing.
    pub fn expire(&mut self, now_ms: u64) -> Option<T> {
        if now_ms < self.now {
            return None;
        }
        if now_ms > self.now {
            self.now = now_ms;
            // Entries passed over at the old time may be due at the new one.
            self.walk = self.lists[self.slot_of(self.cursor)].head;
        }
        let overdue = self.lists[self.overdue_list()].head;
        if overdue != NIL {
            return Some(self.remove(overdue));
        }
        // The partially elapsed tick (or the next one when `now` is on a boundary).
        let last = (self.now / self.tick_ms).saturating_add(1);
        loop {
            // Only entries of ticks <= cursor fire here, so a later rotation that
            // is also due waits for its own tick and order is kept.
            let limit = self.now.min(self.cursor.saturating_mul(self.tick_ms));
            while self.walk != NIL {
                let index = self.walk;
                let entry = self
                    .entries
                    .get(index as usize)
                    .expect("walk points at a pending entry");
                if entry.at_ms <= limit {
                    return Some(self.remove(index));
                }
                self.walk = entry.next;
            }
            if self.cursor >= last {
                return None;
            }
            // Past a full rotation the remaining ticks revisit the same slots, so
            // jump to the last `slots` ticks: every slot is still visited once.
            self.cursor = (self.cursor + 1).max((last + 1).saturating_sub(self.mask + 1));
            self.walk = self.lists[self.slot_of(self.cursor)].head;
        }
    }

    /// Milliseconds from `now_ms` until `expire` next needs calling: Some(0) if
    /// something is due at the time `expire` last saw (or `expire` stopped
    /// mid-sweep); otherwise the time to the earliest tick boundary whose slot
    /// holds entries. That may be early when the slot's entries belong to a
    /// later rotation, never later than the earliest deadline rounded up to a
    /// tick. None when empty. Scans at most `slots` list heads.
    pub fn next_timeout(&self, now_ms: u64) -> Option<u64> {
        if self.entries.is_empty() {
            return None;
        }
        let unfinished = self.lists[self.overdue_list()].head != NIL
            || self.walk != NIL
            || self.cursor <= self.now / self.tick_ms;
        if unfinished {
            return Some(0);
        }
        // Every remaining entry has a tick >= cursor, so the first non-empty slot
        // met from the cursor is at or before the earliest entry's tick.
        (self.cursor..self.cursor.saturating_add(self.mask + 1))
            .find(|&tick| self.lists[self.slot_of(tick)].head != NIL)
            .map(|tick| tick.saturating_mul(self.tick_ms).saturating_sub(now_ms))
    }

    /// Number of pending entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn slot_of(&self, tick: u64) -> usize {
        (tick & self.mask) as usize
    }

    fn overdue_list(&self) -> usize {
        self.lists.len() - 1
    }

    fn entry_mut(&mut self, index: u32) -> &mut Scheduled<T> {
        self.entries
            .get_mut(index as usize)
            .expect("list links point at pending entries")
    }

    /// Unlink a pending entry and free its slab slot.
    fn remove(&mut self, index: u32) -> T {
        let entry = self.entries.remove(index as usize);
        if self.walk == index {
            self.walk = entry.next;
        }
        let list = entry.list as usize;
        if entry.prev == NIL {
            self.lists[list].head = entry.next;
        } else {
            self.entry_mut(entry.prev).next = entry.next;
        }
        if entry.next == NIL {
            self.lists[list].tail = entry.prev;
        } else {
            self.entry_mut(entry.next).prev = entry.prev;
        }
        entry.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn drain(wheel: &mut Wheel<u64>, now: u64) -> Vec<u64> {
        std::iter::from_fn(|| wheel.expire(now)).collect()
    }

    #[test]
    fn entry_is_small() {
        assert_eq!(std::mem::size_of::<Scheduled<()>>(), 24);
    }

    #[test]
    fn fires_not_early_and_within_one_tick() {
        let mut wheel = Wheel::new(10, 8);
        wheel.insert(15, 1);
        wheel.insert(15, 2);
        assert_eq!(drain(&mut wheel, 14), Vec::<u64>::new());
        assert_eq!(drain(&mut wheel, 15), [1, 2]);
        // Sleeping per next_timeout wakes at the boundary after the deadline.
        wheel.insert(21, 3);
        let wake = 15 + wheel.next_timeout(15).expect("pending");
        assert!((21..21 + 10).contains(&wake), "woke at {wake}");
        assert_eq!(drain(&mut wheel, 20), Vec::<u64>::new());
        assert_eq!(drain(&mut wheel, wake), [3]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn cancel_and_stale_ids() {
        let mut wheel = Wheel::new(10, 8);
        let a = wheel.insert(50, 1);
        assert_eq!(wheel.cancel(a), Some(1));
        assert_eq!(wheel.cancel(a), None);
        let b = wheel.insert(50, 2); // reuses a's slab slot
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(wheel.len(), 1);
        let c = wheel.insert(5, 3);
        assert_eq!(drain(&mut wheel, 5), [3]);
        assert_eq!(wheel.cancel(c), None);
        assert_eq!(wheel.cancel(b), Some(2));
        assert!(wheel.is_empty());
    }

    #[test]
    fn later_rotations_do_not_fire_early() {
        let mut wheel = Wheel::new(1, 8);
        wheel.insert(100, 1);
        wheel.insert(3, 2);
        for now in 0..100 {
            let fired = drain(&mut wheel, now);
            assert_eq!(fired, if now == 3 { vec![2] } else { vec![] }, "at {now}");
        }
        assert_eq!(drain(&mut wheel, 100), [1]);
    }

    #[test]
    fn next_timeout_bounds() {
        let mut wheel = Wheel::new(10, 16);
        assert_eq!(wheel.next_timeout(0), None);
        let a = wheel.insert(25, 1);
        assert_eq!(wheel.next_timeout(0), Some(30));
        assert_eq!(wheel.next_timeout(12), Some(18));
        assert_eq!(wheel.next_timeout(30), Some(0));
        let b = wheel.insert(0, 2);
        assert_eq!(wheel.next_timeout(0), Some(0));
        assert_eq!(wheel.cancel(b), Some(2));
        // A slot shared with a later rotation may wake early, never late.
        let c = wheel.insert(1000, 3);
        assert!(wheel.next_timeout(0).expect("pending") <= 30);
        assert_eq!(wheel.cancel(a), Some(1));
        assert!(wheel.next_timeout(0).expect("pending") <= 1000);
        assert_eq!(wheel.cancel(c), Some(3));
        assert_eq!(wheel.next_timeout(0), None);
        // Stopping mid-drain leaves due entries behind: wake at once.
        wheel.insert(41, 4);
        wheel.insert(42, 5);
        assert_eq!(wheel.expire(45), Some(4));
        assert_eq!(wheel.next_timeout(45), Some(0));
    }

    #[test]
    fn large_jump_fires_everything_due() {
        let mut wheel = Wheel::new(1, 64);
        for i in 0..1000u64 {
            wheel.insert(i * 997 % 1_000_000, i);
        }
        wheel.insert(u64::MAX / 2, 1000);
        let mut fired = drain(&mut wheel, 10_000_000_000);
        fired.sort_unstable();
        assert_eq!(fired, (0..1000).collect::<Vec<_>>());
        assert_eq!(wheel.len(), 1);
        let left = wheel.next_timeout(10_000_000_000).expect("pending");
        assert!(left <= u64::MAX / 2 - 10_000_000_000);
    }

    #[test]
    fn hundred_thousand_entries() {
        let mut wheel = Wheel::new(4, 4096);
        for i in 0..100_000u64 {
            wheel.insert(i * 7919 % 60_000, i);
        }
        let (mut now, mut count) = (0, 0);
        while !wheel.is_empty() {
            now += wheel.next_timeout(now).expect("pending");
            while let Some(i) = wheel.expire(now) {
                let at = i * 7919 % 60_000;
                assert!(at <= now && now < at + 4, "{i} due {at} fired {now}");
                count += 1;
            }
        }
        assert_eq!(count, 100_000);
    }

    #[test]
    fn randomized_against_model() {
        const TICK: u64 = 5;
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut wheel = Wheel::new(TICK, 16);
        // value -> (deadline, id, inserted already due)
        let mut model: BTreeMap<u64, (u64, TimerId, bool)> = BTreeMap::new();
        let (mut now, mut next_value, mut dead) = (0u64, 0u64, Vec::new());
        for step in 0..20_000 {
            match rand(10) {
                0..=4 => {
                    let at = (now + rand(400)).saturating_sub(20);
                    let id = wheel.insert(at, next_value);
                    model.insert(next_value, (at, id, at <= now));
                    next_value += 1;
                }
                5 | 6 if !model.is_empty() => {
                    let nth = rand(model.len() as u64) as usize;
                    let key = *model.keys().nth(nth).expect("nth < len");
                    let (_, id, _) = model.remove(&key).expect("key from model");
                    assert_eq!(wheel.cancel(id), Some(key));
                    dead.push(id);
                }
                5 | 6 if !dead.is_empty() => {
                    let id = dead[rand(dead.len() as u64) as usize];
                    assert_eq!(wheel.cancel(id), None);
                }
                _ => {
                    let before = now;
                    now += match rand(20) {
                        0 => 1000 + rand(5000),
                        1..=4 => rand(17 * TICK),
                        _ => rand(12),
                    };
                    // Tick order holds unless the sweep had to jump (> one rotation).
                    let ordered = now / TICK - before / TICK <= 16;
                    let mut last_tick = 0;
                    while let Some(value) = wheel.expire(now) {
                        let (at, id, past) = model.remove(&value).expect("fires once");
                        assert!(at <= now, "step {step}: {value} due {at} fired at {now}");
                        if !past && ordered {
                            assert!(at.div_ceil(TICK) >= last_tick, "step {step}: out of order");
                            last_tick = at.div_ceil(TICK);
                        }
                        dead.push(id);
                    }
                    // Nothing due is left behind: no firing later than its tick.
                    assert!(model.values().all(|&(at, ..)| at > now), "step {step}");
                }
            }
            assert_eq!(wheel.len(), model.len());
            let bound = model.values().map(|v| v.0.div_ceil(TICK) * TICK).min();
            let wait = wheel.next_timeout(now);
            assert_eq!(wait.is_some(), bound.is_some(), "step {step}");
            assert!(wait <= bound.map(|b| b.saturating_sub(now)), "step {step}");
        }
        while let Some(value) = wheel.expire(u64::MAX / 2) {
            model.remove(&value).expect("fires once");
        }
        assert!(model.is_empty() && wheel.is_empty());
    }
}
