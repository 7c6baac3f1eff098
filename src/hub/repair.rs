//! Gap repair for a cluster node (docs/cluster.md, "Gaps"). The channel
//! brings every seq in order; a seq more than one above the last means
//! the subscription lost messages (a reconnect, a failover). The node then
//! asks Redis for the missing seqs from the channel's recent window (the
//! last 1,024 messages, kept by the `wspush_push` function), holds back
//! what keeps arriving meanwhile, and delivers the recovered messages and
//! then the held ones, so that its clients still see every seq in order.
//! Seqs that are no longer in the window are lost for this node's clients
//! (counted in `redis_lost`).

use log::warn;

use super::cluster::RELAY_TIMEOUT_MS;
use super::{Deadline, Hub, Out};

/// Messages held back during a repair at most, and their bytes: beyond
/// either, the repair ends without waiting for the window.
const MAX_PARKED: usize = 4096;
const MAX_PARKED_BYTES: usize = 16 << 20;

/// A repair in progress.
#[derive(Debug)]
pub struct Repair {
    /// The missing seqs, inclusive.
    pub(super) from: u64,
    pub(super) to: u64,
    /// Channel messages that arrived meanwhile, in order.
    parked: Vec<Box<[u8]>>,
    parked_bytes: usize,
    /// Virtual ms it started, or its fetch was sent (it ends
    /// [`RELAY_TIMEOUT_MS`] later).
    pub since: u64,
}

impl Hub {
    /// A message on the channel: held back during a repair, else delivered.
    pub(super) fn remote(&mut self, payload: &[u8], out: &mut impl Out) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        c.stats.received += 1;
        let Some(repair) = &mut c.repair else {
            return self.remote_message(payload, true, out);
        };
        repair.parked.push(payload.into());
        repair.parked_bytes += payload.len();
        if repair.parked.len() > MAX_PARKED || repair.parked_bytes > MAX_PARKED_BYTES {
            warn!("redis: too much arrived while repairing a gap: delivering without it");
            self.end_repair(&[], out);
        }
    }

    /// Seqs `from..=to` never arrived: ask the recent window for them,
    /// and hold `payload` (the message after them, if one came) and what
    /// follows until it answers.
    pub(super) fn start_repair(
        &mut self,
        from: u64,
        to: u64,
        payload: Option<&[u8]>,
        out: &mut impl Out,
    ) {
        let now = self.now;
        let c = self.cluster.as_mut().expect("repair only in a cluster");
        c.stats.gaps += 1;
        warn!("redis: seqs {from}..{to} did not arrive on the subscription: repairing");
        c.repair = Some(Repair {
            from,
            to,
            parked: payload.into_iter().map(Box::from).collect(),
            parked_bytes: payload.map_or(0, <[u8]>::len),
            since: now,
        });
        // The subscription can bring its first message before the link is
        // up, when nothing can be fetched: the fetch then waits for the
        // link (`link_changed`).
        if c.up {
            out.fetch(from, to);
        }
        self.wheel.insert(now + RELAY_TIMEOUT_MS, Deadline::Relays);
    }

    /// The recent window answered (or the repair gave up, with nothing):
    /// deliver what it had of the missing seqs, then what was held back.
    pub(super) fn end_repair(&mut self, recovered: &[&[u8]], out: &mut impl Out) {
        let Some(repair) = self.cluster.as_mut().and_then(|c| c.repair.take()) else {
            return;
        };
        for payload in recovered {
            self.remote_message(payload, false, out);
        }
        let c = self.cluster.as_mut().expect("still a cluster");
        if c.high < repair.to {
            let from = c.high.max(repair.from - 1) + 1;
            c.stats.lost += repair.to - from + 1;
            c.high = repair.to;
            warn!(
                "redis: seqs {from}..{} are lost: no longer in the recent window",
                repair.to
            );
            self.resync(out);
        }
        let parked = repair.parked;
        for (n, payload) in parked.iter().enumerate() {
            // A later gap starts a new repair, which holds the rest.
            if let Some(next) = self.cluster.as_mut().and_then(|c| c.repair.as_mut()) {
                let rest = &parked[n..];
                next.parked_bytes += rest.iter().map(|p| p.len()).sum::<usize>();
                next.parked.extend(rest.iter().cloned());
                return;
            }
            self.remote_message(payload, true, out);
        }
    }
}
