//! The mailbox (`--mailbox N`): messages for users who were offline, and a
//! short history per user so a reconnecting client can ask for what it
//! missed (`?since=SEQ`).
//!
//! Every user-targeted push is recorded for each listed user: `held` when
//! the user had no open connection, `delivered` otherwise. A record keeps
//! the encoded frame (shared with the live delivery, not copied) until its
//! TTL passes; a held record then becomes `expired` and is never sent.
//!
//! Bounds, all evicting the oldest record first: at most `per_user`
//! records per user; at most `byte_cap` bytes in total, counting each
//! record's frame plus [`RECORD_OVERHEAD`] so that metadata of expired
//! records is bounded too. Held records dropped by a bound count as
//! `evicted`. Records are kept per user in seq order, and globally in a
//! seq-ordered index that drives both byte eviction and expiry (with a
//! fixed TTL, seq order is expiry order).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::rc::Rc;

use super::Key;

/// Bytes charged per record on top of its frame (the record itself and the
/// index entries), so millions of metadata-only records cannot pile up.
pub const RECORD_OVERHEAD: usize = 128;

/// Where a message stands for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for the user to connect.
    Held,
    /// Sent to at least one of the user's connections.
    Delivered,
    /// Its TTL passed while it was held; it will not be sent.
    Expired,
}

impl Status {
    /// The name used on the control socket.
    pub fn name(self) -> &'static str {
        match self {
            Status::Held => "held",
            Status::Delivered => "delivered",
            Status::Expired => "expired",
        }
    }

    /// Parse a control-socket status name.
    pub fn parse(name: &str) -> Option<Status> {
        match name {
            "held" => Some(Status::Held),
            "delivered" => Some(Status::Delivered),
            "expired" => Some(Status::Expired),
            _ => None,
        }
    }
}

/// One message for one user.
#[derive(Debug, Clone)]
pub struct Record {
    /// The push's message id.
    pub message_id: Rc<str>,
    /// The push's seq (unique per message).
    pub seq: u64,
    /// Where it stands.
    pub status: Status,
    /// Unix ms when it was pushed.
    pub ts: u64,
    /// Unix ms after which its frame is dropped.
    pub expires: u64,
    /// The encoded frame while it is retained (before the TTL).
    pub frame: Option<Rc<[u8]>>,
    /// Latest-value key (0: none): a newer held message with the same key
    /// replaces an older held one.
    pub key: Key,
}

/// What a caller may want to persist after a change.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Seqs whose records were marked delivered.
    pub delivered: Vec<u64>,
}

/// The mailbox.
#[derive(Debug)]
pub struct Mailbox {
    per_user: usize,
    /// TTL in ms.
    pub ttl_ms: u64,
    byte_cap: usize,
    users: HashMap<Rc<str>, VecDeque<Record>>,
    /// Every record, by seq: (seq, user) → present. Oldest first.
    order: BTreeMap<(u64, Rc<str>), ()>,
    /// The last record (in `order`) checked for expiry.
    expiry_cursor: Option<(u64, Rc<str>)>,
    bytes: usize,
    held: usize,
    /// Held records dropped by the count or byte bound.
    pub evicted: u64,
    /// Held records whose TTL passed.
    pub expired: u64,
}

impl Mailbox {
    /// A mailbox holding `per_user` records per user (0 = off).
    pub fn new(per_user: usize, ttl_ms: u64, byte_cap: usize) -> Self {
        Mailbox {
            per_user,
            ttl_ms,
            byte_cap,
            users: HashMap::new(),
            order: BTreeMap::new(),
            expiry_cursor: None,
            bytes: 0,
            held: 0,
            evicted: 0,
            expired: 0,
        }
    }

    /// Whether the mailbox is on.
    pub fn enabled(&self) -> bool {
        self.per_user > 0
    }

    /// Held messages now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Bytes charged now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Record a message for `user`. A held record with a key replaces the
    /// user's earlier held record with that key.
    pub fn record(&mut self, user: &str, record: Record) {
        if !self.enabled() {
            return;
        }
        // The user's name is allocated once, with its first record.
        let user = match self.users.get_key_value(user) {
            Some((name, _)) => name.clone(),
            None => Rc::from(user),
        };
        let user = &user;
        if record.key != 0 && record.status == Status::Held {
            let old = self.users.get(&**user).and_then(|list| {
                list.iter()
                    .find(|r| r.key == record.key && r.status == Status::Held)
                    .map(|r| r.seq)
            });
            if let Some(seq) = old {
                self.remove(user, seq);
            }
        }
        self.bytes += charge(&record);
        if record.status == Status::Held {
            self.held += 1;
        }
        self.order.insert((record.seq, user.clone()), ());
        let list = self.users.entry(user.clone()).or_default();
        list.push_back(record);
        if list.len() > self.per_user {
            let oldest = list.front().map(|r| r.seq).expect("list is not empty");
            self.evict(user, oldest);
        }
        while self.bytes > self.byte_cap {
            let Some((seq, owner)) = self.order.keys().next().cloned() else {
                break;
            };
            self.evict(&owner, seq);
        }
    }

    fn evict(&mut self, user: &Rc<str>, seq: u64) {
        if let Some(record) = self.remove(user, seq)
            && record.status == Status::Held
        {
            self.evicted += 1;
        }
    }

    /// Remove one record entirely.
    fn remove(&mut self, user: &str, seq: u64) -> Option<Record> {
        let name = self.users.get_key_value(user)?.0.clone();
        let list = self.users.get_mut(user)?;
        let index = list.binary_search_by_key(&seq, |r| r.seq).ok()?;
        let record = list.remove(index)?;
        if list.is_empty() {
            self.users.remove(user);
        }
        self.order.remove(&(seq, name));
        self.bytes -= charge(&record);
        if record.status == Status::Held {
            self.held -= 1;
        }
        Some(record)
    }

    /// Frames a connecting client of `user` must get first, in seq order:
    /// without `since`, the held ones; with it, every retained one above
    /// `since`. Held records are marked delivered either way (those at or
    /// below `since` were acknowledged by the client).
    pub fn on_connect(&mut self, user: &str, since: Option<u64>) -> (Vec<Rc<[u8]>>, Changes) {
        let mut frames = Vec::new();
        let mut changes = Changes::default();
        let Some(list) = self.users.get_mut(user) else {
            return (frames, changes);
        };
        for record in list.iter_mut() {
            let send = match since {
                Some(s) => record.seq > s && record.status != Status::Expired,
                None => record.status == Status::Held,
            };
            if send && let Some(frame) = &record.frame {
                frames.push(frame.clone());
            }
            if record.status == Status::Held {
                record.status = Status::Delivered;
                self.held -= 1;
                changes.delivered.push(record.seq);
            }
        }
        (frames, changes)
    }

    /// Mark a record delivered (replaying the store).
    pub fn mark_delivered(&mut self, user: &str, seq: u64) {
        if let Some(record) = self
            .users
            .get_mut(user)
            .and_then(|l| l.iter_mut().find(|r| r.seq == seq))
            && record.status == Status::Held
        {
            record.status = Status::Delivered;
            self.held -= 1;
        }
    }

    /// Drop frames whose TTL has passed; held records become expired.
    /// Returns the Unix ms of the next expiry, if any.
    pub fn expire(&mut self, now_unix_ms: u64) -> Option<u64> {
        loop {
            let next = match &self.expiry_cursor {
                None => self.order.keys().next(),
                Some(c) => self
                    .order
                    .range((Bound::Excluded(c.clone()), Bound::Unbounded))
                    .next()
                    .map(|(k, ())| k),
            };
            let (seq, user) = next.cloned()?;
            if let Some(record) = self.users.get_mut(&*user).and_then(|l| {
                l.binary_search_by_key(&seq, |r| r.seq)
                    .ok()
                    .map(|i| &mut l[i])
            }) {
                if record.expires > now_unix_ms {
                    return Some(record.expires);
                }
                if let Some(frame) = record.frame.take() {
                    self.bytes -= frame.len();
                }
                if record.status == Status::Held {
                    record.status = Status::Expired;
                    self.held -= 1;
                    self.expired += 1;
                }
            }
            self.expiry_cursor = Some((seq, user));
        }
    }

    /// Records, oldest first, filtered, with seq > `after`, at most `limit`.
    /// A page ends on a seq boundary (one push to several users gives
    /// several records one seq), so resuming with `after` = the last seq
    /// skips nothing; only a single group larger than `limit` overflows it.
    pub fn list(
        &self,
        user: Option<&str>,
        status: Option<Status>,
        after: u64,
        limit: usize,
    ) -> Vec<(Rc<str>, &Record)> {
        let mut out: Vec<(Rc<str>, &Record)> = Vec::new();
        for ((seq, owner), ()) in self.order.range((after + 1, Rc::from(""))..) {
            if user.is_some_and(|u| u != &**owner) {
                continue;
            }
            let Some(record) = self
                .users
                .get(&**owner)
                .and_then(|l| l.binary_search_by_key(seq, |r| r.seq).ok().map(|i| &l[i]))
            else {
                continue;
            };
            if status.is_some_and(|s| s != record.status) {
                continue;
            }
            if out.len() >= limit {
                let last = out.last().map_or(0, |(_, r)| r.seq);
                if last == *seq {
                    let group = out.iter().rev().take_while(|(_, r)| r.seq == last).count();
                    if group < out.len() {
                        out.truncate(out.len() - group);
                        break;
                    }
                } else {
                    break;
                }
            }
            out.push((owner.clone(), record));
        }
        out
    }

    /// Delete every record of a message; returns how many.
    pub fn delete(&mut self, message_id: &str) -> usize {
        let doomed: Vec<(u64, Rc<str>)> = self
            .users
            .iter()
            .flat_map(|(u, l)| {
                l.iter()
                    .filter(|r| &*r.message_id == message_id)
                    .map(|r| (r.seq, u.clone()))
            })
            .collect();
        for (seq, user) in &doomed {
            self.remove(user, *seq);
        }
        doomed.len()
    }
}

fn charge(record: &Record) -> usize {
    RECORD_OVERHEAD + record.frame.as_ref().map_or(0, |f| f.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, status: Status, key: Key) -> Record {
        Record {
            message_id: Rc::from(format!("m-{seq}")),
            seq,
            status,
            ts: 1000 + seq,
            expires: 10_000 + seq,
            frame: Some(Rc::from(format!("frame{seq}").as_bytes())),
            key,
        }
    }

    fn user(name: &str) -> Rc<str> {
        Rc::from(name)
    }

    #[test]
    fn held_messages_go_out_once_in_order() {
        let mut m = Mailbox::new(10, 60_000, 1 << 20);
        let alice = user("alice");
        for seq in 1..=3 {
            m.record(&alice, rec(seq, Status::Held, 0));
        }
        assert_eq!(m.held(), 3);
        let (frames, changes) = m.on_connect("alice", None);
        assert_eq!(frames.len(), 3);
        assert_eq!(&*frames[0], b"frame1");
        assert_eq!(changes.delivered, vec![1, 2, 3]);
        assert_eq!(m.held(), 0);
        assert!(m.on_connect("alice", None).0.is_empty());
        // ?since resends what is still retained above the given seq.
        let (frames, _) = m.on_connect("alice", Some(1));
        assert_eq!(
            frames.iter().map(|f| f.to_vec()).collect::<Vec<_>>(),
            [b"frame2".to_vec(), b"frame3".to_vec()]
        );
    }

    #[test]
    fn bounds_evict_oldest_first() {
        let mut m = Mailbox::new(2, 60_000, 1 << 20);
        let bob = user("bob");
        for seq in 1..=3 {
            m.record(&bob, rec(seq, Status::Held, 0));
        }
        assert_eq!(m.evicted, 1);
        assert_eq!(
            m.list(Some("bob"), None, 0, 10)
                .iter()
                .map(|(_, r)| r.seq)
                .collect::<Vec<_>>(),
            [2, 3]
        );
        let mut m = Mailbox::new(100, 60_000, 3 * (RECORD_OVERHEAD + 6));
        for seq in 1..=5 {
            m.record(&bob, rec(seq, Status::Held, 0));
        }
        assert_eq!(m.list(None, None, 0, 10).len(), 3);
        assert_eq!(m.evicted, 2);
        assert!(m.bytes() <= 3 * (RECORD_OVERHEAD + 6));
    }

    #[test]
    fn ttl_expires_held_and_drops_frames() {
        let mut m = Mailbox::new(10, 60_000, 1 << 20);
        let carol = user("carol");
        m.record(&carol, rec(1, Status::Held, 0));
        m.record(&carol, rec(2, Status::Delivered, 0));
        m.record(&carol, rec(3, Status::Held, 0));
        assert_eq!(m.expire(10_002), Some(10_003));
        assert_eq!(m.expired, 1);
        assert_eq!(m.held(), 1);
        let expired = m.list(None, Some(Status::Expired), 0, 10);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].1.seq, 1);
        let (frames, _) = m.on_connect("carol", Some(0));
        assert_eq!(frames.len(), 1, "only seq 3 is still retained");
    }

    #[test]
    fn keys_replace_held_and_delete_removes() {
        let mut m = Mailbox::new(10, 60_000, 1 << 20);
        let dave = user("dave");
        m.record(&dave, rec(1, Status::Held, 7));
        m.record(&dave, rec(2, Status::Held, 7));
        m.record(&dave, rec(3, Status::Held, 0));
        assert_eq!(m.held(), 2);
        assert_eq!(m.delete("m-3"), 1);
        assert_eq!(m.delete("m-3"), 0);
        let left = m.list(Some("dave"), Some(Status::Held), 0, 10);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.seq, 2);
        assert_eq!(
            m.list(None, None, 1, 1).len(),
            1,
            "paging with after and limit"
        );
    }
}
