//! A cluster node's view of the others, the channel's payload (a header
//! line Redis's function writes, then the job), plain `PUBLISH`ed jobs,
//! and the link's counters (docs/cluster.md).
//!
//! Every node renews a lease in Redis with each probe and learns which
//! nodes are alive; the one whose id sorts first is the *leader*. A job
//! that a producer `PUBLISH`es on the channel itself (no header, so no
//! seq) is ignored by every node but the leader, which relays it through
//! the function like a job of its own: it gets a seq and reaches every
//! node a few ms later. While leadership changes hands (a node joins,
//! or a dead node's lease runs out, at most 15 s) such a job may be
//! relayed twice or not at all; the function is the way with guarantees.

use std::rc::Rc;

use log::{debug, info};
use serde::Deserialize;
use serde_json::Value;

use super::cluster::Cluster;
use super::stats::{StatRow, counter, gauge};
use super::topics::valid_topic;
use super::{Hub, Out};
use crate::proto::control::Message;

/// The header Redis's function puts before the job on the channel.
#[derive(Debug, Deserialize)]
pub(super) struct Header {
    pub(super) seq: u64,
    pub(super) ts: u64,
    #[serde(default)]
    pub(super) node: String,
    #[serde(default, rename = "ref")]
    pub(super) reference: u64,
    #[serde(default)]
    id: Option<String>,
    /// With the shared mailbox: the users it was held for (offline on
    /// every live node when Redis ran the function).
    #[serde(default)]
    pub(super) held: Vec<String>,
}

impl Header {
    /// The message id every node gives it.
    pub(super) fn message_id(&self) -> Rc<str> {
        match &self.id {
            Some(id) => id.as_str().into(),
            None => format!("R-{}", self.seq).into(),
        }
    }
}

/// A channel payload's header and job, or `None` if it has no header (a
/// plain `PUBLISH`).
pub(super) fn split(payload: &[u8]) -> Option<(Header, &[u8])> {
    let at = payload.iter().position(|&b| b == b'\n')?;
    let header: Header = serde_json::from_slice(&payload[..at]).ok()?;
    Some((header, &payload[at + 1..]))
}

impl Hub {
    /// The lease renewal's news: how many nodes are alive, and whether
    /// this one leads.
    pub(super) fn nodes_seen(&mut self, alive: usize, leader: bool) {
        if let Some(c) = &mut self.cluster {
            if leader != c.leader {
                info!(
                    "redis: this node {} plain PUBLISHed jobs",
                    if leader {
                        "now relays"
                    } else {
                        "no longer relays"
                    }
                );
            }
            c.alive = alive;
            c.leader = leader;
        }
    }

    /// A message on the channel without a header: a producer's plain
    /// `PUBLISH` of a `push` or `publish` request. The leader relays it.
    pub(super) fn plain_job(&mut self, payload: &[u8], out: &mut impl Out) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let message = match plain_message(payload) {
            Ok(message) => message,
            Err(e) => {
                c.stats.bad += 1;
                debug!("redis: a plain message on the channel is not a job ({e}): dropped");
                return;
            }
        };
        if !c.leader {
            return;
        }
        match self.relay(&message, None, out) {
            Ok(_) => self.cluster.as_mut().expect("a cluster").stats.plain += 1,
            Err(e) => debug!("redis: a plain job was not relayed: {e}"),
        }
    }

    /// The link's rows of `stats` and `/metrics`.
    pub(super) fn cluster_rows(&self, rows: &mut Vec<StatRow>) {
        let Some(c) = &self.cluster else {
            return;
        };
        let s = c.stats;
        rows.extend([
            gauge(
                "redis_up",
                "redis_up",
                "1 while the Redis link is ready.",
                u64::from(c.up),
            ),
            counter(
                "redis_reconnects",
                "redis_reconnects_total",
                "Times the Redis link came back after being lost.",
                s.reconnects,
            ),
            counter(
                "redis_received",
                "redis_received_total",
                "Messages received on the Redis channel.",
                s.received,
            ),
            counter(
                "redis_stale",
                "redis_stale_total",
                "Channel messages at or below a seq already delivered (dropped).",
                s.stale,
            ),
            counter(
                "redis_gaps",
                "redis_gaps_total",
                "Times seqs were missing from the channel.",
                s.gaps,
            ),
            counter(
                "redis_lost",
                "redis_lost_total",
                "Seqs missing from the channel and from the recent window.",
                s.lost,
            ),
            gauge(
                "redis_nodes",
                "redis_nodes",
                "Nodes of the cluster alive, as the last lease renewal saw them.",
                c.alive as u64,
            ),
            counter(
                "redis_plain",
                "redis_plain_total",
                "Plain PUBLISHed jobs this node relayed as the leader.",
                s.plain,
            ),
            counter(
                "redis_bad",
                "redis_bad_total",
                "Channel messages that were not a wspush job (dropped).",
                s.bad,
            ),
            gauge(
                "redis_waiting",
                "redis_waiting",
                "Jobs waiting for Redis.",
                c.waiting.len() as u64,
            ),
        ]);
    }

    /// Whether the Redis link is ready: `None` outside a cluster.
    pub fn redis_up(&self) -> Option<bool> {
        self.cluster.as_ref().map(|c| c.up)
    }

    /// See [`Cluster::high`]; 0 outside a cluster.
    pub fn cluster_high(&self) -> u64 {
        self.cluster.as_ref().map_or(0, Cluster::high)
    }
}

/// A plainly published request: `{"op":"push"|"publish", ...}` without
/// `delay` or `every`.
fn plain_message(payload: &[u8]) -> Result<Message, String> {
    let request: Value = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let op = request.get("op").and_then(Value::as_str);
    if request.get("delay").is_some() || request.get("every").is_some() {
        return Err("scheduled jobs are not taken from the channel".into());
    }
    let mut message: Message = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    match op {
        Some("push") => message.topic = None,
        Some("publish") if message.topic.as_deref().is_some_and(valid_topic) => {}
        Some("publish") => return Err("publish needs a topic of 1 to 128 bytes".into()),
        _ => return Err("\"op\" is not push or publish".into()),
    }
    job_message_checked(message)
}

/// The message a channel job carries, checked as a control request is.
pub(super) fn job_message(job: &[u8]) -> Result<Message, String> {
    job_message_checked(serde_json::from_slice(job).map_err(|e| e.to_string())?)
}

/// A job's message with the rules of a control request applied: a topic
/// makes it a publish (no users), users are named once.
fn job_message_checked(mut message: Message) -> Result<Message, String> {
    if let Some(topic) = &message.topic {
        if !valid_topic(topic) {
            return Err("bad topic".into());
        }
        message.users.clear();
    }
    message.dedupe_users();
    Ok(message)
}
