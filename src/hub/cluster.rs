//! Scale-out over Redis (docs/cluster.md). In a cluster a job that makes a
//! message is not delivered where it arrives: it is relayed to Redis,
//! whose function gives it its seq and publishes it on the channel, and
//! every node, this one included, delivers what its subscription brings,
//! in seq order. The job's reply waits for this node's own delivery of it
//! (which gives the seq and the `delivered` count); Redis's answer to the
//! relay matters when it is an error (nothing was published) or when the
//! message never comes back on the subscription.
//!
//! Replies to one origin leave in request order, so a reply that waits for
//! Redis holds back the replies of the requests behind it on the same
//! connection (the I/O side stops reading a connection that has too many
//! unanswered requests, which bounds these queues).

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use log::{debug, warn};
use serde_json::{Value, json};

use super::nodes::{job_message, split};
use super::{ConnId, Deadline, Hub, Origin, Out};
use crate::proto::control::{self, Message};

/// Jobs waiting for Redis at most; beyond, jobs are refused at once.
pub const MAX_WAITING: usize = 65_536;
/// How long a relayed job may wait for Redis's answer and for its own
/// message on the subscription before it is answered with an error.
pub const RELAY_TIMEOUT_MS: u64 = 5_000;
/// What a job is told while the link is down.
pub const LINK_DOWN: &str = "redis link down";

/// A request answered by a mailbox function rather than by a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Query {
    /// `messages`: the function answers the page's JSON.
    Messages,
    /// `delete`: the function answers the count.
    Delete,
}

/// A relayed job waiting for its message on the subscription.
#[derive(Debug)]
pub(super) struct Waiting {
    /// Where the reply goes, and the request's `id`.
    origin: Origin,
    pub(super) id: Option<Value>,
    /// A publish (its reply has no `queued`).
    publish: bool,
    /// Not a job: a mailbox request answered by Redis.
    pub(super) query: Option<Query>,
    /// Redis's answer: the seq, once it came.
    seq: Option<u64>,
    /// This node's delivery of it from the subscription: message id, seq,
    /// connections reached and users held for. Redis published it, so it
    /// is done.
    reached: Option<(Rc<str>, u64, usize, usize)>,
    /// Virtual ms it was relayed.
    since: u64,
}

/// A reply in its origin's queue.
#[derive(Debug)]
enum Slot {
    Ready(Vec<u8>, bool),
    Waiting(u64),
}

/// Counters of the link, for `stats` and `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterStats {
    /// Messages received on the subscription.
    pub received: u64,
    /// Messages at or below a seq already delivered here: dropped.
    pub stale: u64,
    /// Times a seq arrived more than one above the last one (a repair).
    pub gaps: u64,
    /// Seqs that never arrived and were not in the recent window either.
    pub lost: u64,
    /// Messages on the channel that are not a job (dropped).
    pub bad: u64,
    /// Plain `PUBLISH`ed jobs this node relayed as the leader.
    pub plain: u64,
    /// Times the link came back after being lost.
    pub reconnects: u64,
}

/// The cluster state of a node.
#[derive(Debug)]
pub struct Cluster {
    /// This node's id (`--node-id`).
    node: Box<str>,
    /// Whether the link is ready (connected, subscribed, seeded).
    pub(super) up: bool,
    /// Whether it was ever up (the next `up` is a reconnect).
    was_up: bool,
    next_ref: u64,
    /// Relayed jobs by reference.
    pub(super) waiting: HashMap<u64, Waiting>,
    /// The reference of the job the request being handled just relayed.
    relayed: Option<u64>,
    /// Replies that must wait for an earlier one, per origin.
    queues: HashMap<Origin, VecDeque<Slot>>,
    /// Whether a [`Deadline::Relays`] is pending.
    armed: bool,
    /// The highest seq delivered here.
    pub(super) high: u64,
    /// A gap being repaired from the recent window.
    pub(super) repair: Option<super::repair::Repair>,
    /// Nodes alive, and whether this one leads (`hub/nodes.rs`).
    pub(super) alive: usize,
    pub(super) leader: bool,
    /// Whether the mailbox is on: it lives in Redis (`hub/shared.rs`).
    pub(super) mailbox: bool,
    /// Connections waiting for what the shared mailbox has for them.
    pub(super) catching: HashMap<ConnId, super::shared::CatchUp>,
    /// Seqs a connection got from its catch-up before the channel brought
    /// them here: it must not get them a second time live.
    pub(super) replayed: HashMap<ConnId, Vec<u64>>,
    /// Mailbox calls waiting for Redis's answer, by reference.
    pub(super) calls: HashMap<u64, super::shared::Pending>,
    /// Counters.
    pub stats: ClusterStats,
}

impl Cluster {
    /// A node that has not reached Redis yet.
    pub fn new(node: &str, mailbox: bool) -> Cluster {
        Cluster {
            node: node.into(),
            up: false,
            was_up: false,
            next_ref: 1,
            waiting: HashMap::new(),
            relayed: None,
            queues: HashMap::new(),
            armed: false,
            high: 0,
            repair: None,
            alive: 0,
            leader: false,
            mailbox,
            catching: HashMap::new(),
            replayed: HashMap::new(),
            calls: HashMap::new(),
            stats: ClusterStats::default(),
        }
    }

    /// The highest seq delivered here: the link seeds Redis's counter
    /// with it, so a Redis that lost its data never hands out a seq again.
    pub fn high(&self) -> u64 {
        self.high
    }

    /// Send `line` to `origin` now, or behind the replies it waits for.
    fn answer(&mut self, origin: Origin, line: Vec<u8>, logged: bool, out: &mut impl Out) {
        match self.queues.get_mut(&origin) {
            Some(queue) => queue.push_back(Slot::Ready(line, logged)),
            None => out.reply(origin, line, logged),
        }
    }

    /// Replace waiting slot `reference` of `origin` with `line`, then send
    /// every reply at the head of its queue that is ready.
    fn fill(&mut self, origin: Origin, reference: u64, line: Vec<u8>, out: &mut impl Out) {
        let Some(queue) = self.queues.get_mut(&origin) else {
            return; // the origin is gone
        };
        if let Some(slot) = queue
            .iter_mut()
            .find(|s| matches!(s, Slot::Waiting(r) if *r == reference))
        {
            *slot = Slot::Ready(line, false);
        }
        while let Some(Slot::Ready(..)) = queue.front() {
            let Some(Slot::Ready(line, logged)) = queue.pop_front() else {
                unreachable!()
            };
            out.reply(origin, line, logged);
        }
        if queue.is_empty() {
            self.queues.remove(&origin);
        }
    }

    /// Answer waiting job `reference` with `line` and forget it.
    pub(super) fn finish(&mut self, reference: u64, line: Vec<u8>, out: &mut impl Out) {
        if let Some(w) = self.waiting.remove(&reference) {
            self.fill(w.origin, reference, line, out);
        }
    }

    /// Answer job `reference` once this node has delivered it.
    fn try_finish(&mut self, reference: u64, out: &mut impl Out) {
        let Some(w) = self.waiting.get(&reference) else {
            return;
        };
        let Some((message_id, seq, delivered, queued)) = &w.reached else {
            return;
        };
        let mut fields = json!({"messageId": &**message_id, "seq": seq, "delivered": delivered});
        if !w.publish {
            fields["queued"] = json!(queued);
        }
        let line = control::ok(w.id.clone(), fields);
        self.finish(reference, line, out);
    }

    /// Answer a job that cannot complete with what is known of it.
    pub(super) fn fail(&mut self, reference: u64, why: &str, out: &mut impl Out) {
        let Some(w) = self.waiting.get(&reference) else {
            return;
        };
        let why = match w.seq {
            _ if w.query.is_some() => why.to_string(),
            Some(seq) => format!(
                "{why}: redis gave the job seq {seq}, but this node has not seen it on its \
                 subscription (other nodes may have delivered it)"
            ),
            None => format!("{why}: the job may or may not have been published"),
        };
        let line = control::error(w.id.clone(), &why);
        self.finish(reference, line, out);
    }
}

impl Cluster {
    /// Note request `reference` as waiting for Redis.
    pub(super) fn wait(&mut self, reference: u64, publish: bool, query: Option<Query>, now: u64) {
        let waiting = Waiting {
            origin: Origin::Timer,
            id: None,
            publish,
            query,
            seq: None,
            reached: None,
            since: now,
        };
        self.waiting.insert(reference, waiting);
    }

    /// A new reference for something sent to Redis.
    pub(super) fn reference(&mut self) -> u64 {
        self.next_ref += 1;
        self.next_ref - 1
    }
}

impl Hub {
    /// In a cluster: hand a message job to Redis. Its reply is settled
    /// later ([`Hub::settle_request`] picks up the reference).
    pub(super) fn relay(
        &mut self,
        message: &Message,
        message_id: Option<&str>,
        out: &mut impl Out,
    ) -> Result<u64, String> {
        let now = self.now;
        let c = self.cluster.as_mut().expect("relay only in a cluster");
        if !c.up {
            return Err(LINK_DOWN.into());
        }
        if c.waiting.len() >= MAX_WAITING {
            return Err(format!("{MAX_WAITING} jobs already wait for redis"));
        }
        let reference = c.reference();
        let job = serde_json::to_vec(message).expect("a message always serialises");
        out.relay(reference, &job, message_id);
        let publish = message.topic.is_some();
        c.wait(reference, publish, None, now);
        self.arm_relays();
        Ok(reference)
    }

    /// Arm the sweep of what waits for Redis unless it is pending.
    pub(super) fn arm_relays(&mut self) {
        if let Some(c) = &mut self.cluster
            && !c.armed
        {
            c.armed = true;
            self.wheel.insert(self.now + 1000, Deadline::Relays);
        }
    }

    /// Note that the request being handled relayed job `reference`: its
    /// reply waits for Redis.
    pub(super) fn relayed(&mut self, reference: u64) {
        if let Some(c) = &mut self.cluster {
            c.relayed = Some(reference);
        }
    }

    /// In a cluster: reply to a request in order, now or once its job
    /// is through Redis.
    pub(super) fn settle_request(
        &mut self,
        origin: Origin,
        id: Option<Value>,
        outcome: Result<Value, String>,
        out: &mut impl Out,
    ) {
        let logged = self.logged;
        let c = self.cluster.as_mut().expect("settle only in a cluster");
        match (c.relayed.take(), outcome) {
            (Some(reference), Ok(_)) => {
                if let Some(w) = c.waiting.get_mut(&reference) {
                    w.origin = origin;
                    w.id = id;
                    let queue = c.queues.entry(origin).or_default();
                    queue.push_back(Slot::Waiting(reference));
                }
            }
            (_, Ok(fields)) => c.answer(origin, control::ok(id, fields), logged, out),
            (_, Err(e)) => c.answer(origin, control::error(id, &e), logged, out),
        }
    }

    /// A control client went away: nothing more is sent to it.
    pub(super) fn cluster_forget(&mut self, origin: Origin) {
        if let Some(c) = &mut self.cluster {
            c.queues.remove(&origin);
        }
    }

    /// The link is ready (`up`) or lost.
    pub(super) fn link_changed(&mut self, up: bool, counter: u64, out: &mut impl Out) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        if up {
            c.stats.reconnects += u64::from(c.was_up);
            c.was_up = true;
            c.up = true;
            if let Some(repair) = &mut c.repair {
                // A gap the subscription showed before the link was up.
                repair.since = self.now;
                out.fetch(repair.from, repair.to);
            } else if c.high != 0 && counter > c.high {
                let from = c.high + 1;
                self.start_repair(from, counter, None, out);
            }
            return self.shared_link_up(out);
        }
        c.up = up;
        if !up {
            self.end_repair(&[], out);
            let c = self.cluster.as_mut().expect("still a cluster");
            let mut lost: Vec<u64> = c.waiting.keys().copied().collect();
            lost.sort_unstable();
            for reference in lost {
                c.fail(reference, "redis link lost", out);
            }
            self.shared_link_down(out);
        }
    }

    /// Redis answered relayed job `reference`: its seq, or why not.
    pub(super) fn relay_answered(
        &mut self,
        reference: u64,
        result: Result<u64, &str>,
        out: &mut impl Out,
    ) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let Some(w) = c.waiting.get_mut(&reference) else {
            return;
        };
        match result {
            Ok(seq) => {
                w.seq = Some(seq);
                c.try_finish(reference, out);
            }
            Err(e) => {
                let line = control::error(w.id.clone(), &format!("redis: {e}"));
                c.finish(reference, line, out);
            }
        }
    }

    /// Jobs that waited too long are answered.
    pub(super) fn sweep_relays(&mut self, out: &mut impl Out) {
        let now = self.now;
        let Some(c) = &mut self.cluster else {
            return;
        };
        c.armed = false;
        let mut late: Vec<u64> = c
            .waiting
            .iter()
            .filter(|(_, w)| now >= w.since + RELAY_TIMEOUT_MS)
            .map(|(&r, _)| r)
            .collect();
        late.sort_unstable();
        for reference in late {
            c.fail(reference, "redis did not answer within 5 s", out);
        }
        let repairing = c.repair.as_ref().map(|r| r.since);
        let calls = !c.catching.is_empty() || !c.calls.is_empty();
        if !c.waiting.is_empty() || repairing.is_some() || calls {
            c.armed = true;
            self.wheel.insert(now + 1000, Deadline::Relays);
        }
        if repairing.is_some_and(|since| now >= since + RELAY_TIMEOUT_MS) {
            warn!("redis: the recent window did not come within 5 s");
            self.end_repair(&[], out);
        }
        self.sweep_calls(out);
    }

    /// A message from the channel (or from the recent window, with
    /// `repair` false): deliver it here, in seq order, once. A seq more
    /// than one above the last starts a repair (`hub/repair.rs`) unless
    /// this is one.
    pub(super) fn remote_message(&mut self, payload: &[u8], repair: bool, out: &mut impl Out) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let Some((header, job)) = split(payload) else {
            return self.plain_job(payload, out);
        };
        if header.seq <= c.high {
            c.stats.stale += 1;
            debug!("redis: seq {} at or below {}: dropped", header.seq, c.high);
            return;
        }
        if c.high != 0 && header.seq > c.high + 1 {
            let (from, to) = (c.high + 1, header.seq - 1);
            if repair {
                return self.start_repair(from, to, Some(payload), out);
            }
            c.stats.lost += to - from + 1;
            warn!("redis: seqs {from}..{to} are lost: not on the channel nor in the recent window");
            self.resync(out);
        }
        let c = self.cluster.as_mut().expect("still a cluster");
        c.high = header.seq;
        let own = (*header.node == *c.node).then_some(header.reference);
        let message = match job_message(job) {
            Ok(m) => m,
            Err(e) => {
                c.stats.bad += 1;
                warn!("redis: seq {}: not a job ({e}): dropped", header.seq);
                if let Some(reference) = own
                    && let Some(w) = c.waiting.get(&reference)
                {
                    let line = control::error(w.id.clone(), &format!("not a job: {e}"));
                    c.finish(reference, line, out);
                }
                return;
            }
        };
        let message_id = header.message_id();
        let report = self.fan_out(&message, header.seq, message_id, header.ts, out);
        self.claim_held(&header.held, header.seq, out);
        let c = self.cluster.as_mut().expect("still a cluster");
        if let Some(reference) = own
            && let Some(w) = c.waiting.get_mut(&reference)
        {
            let queued = header.held.len();
            w.reached = Some((report.message_id, header.seq, report.delivered, queued));
            c.try_finish(reference, out);
        }
    }
}
