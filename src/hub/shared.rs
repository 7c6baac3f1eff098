//! The mailbox of a cluster node (`--redis` with `--mailbox`,
//! docs/cluster.md, "Mailbox"): held messages and per-user history live in
//! Redis, so a user gets what was held for it, and `?since=` replays, on
//! whichever node it connects to.
//!
//! Redis's function decides, when it gives a message its seq, which
//! listed users are offline on every live node (presence: each node
//! registers the users it has connections of), holds the message for
//! those and names them in the header. A new connection opens at once but
//! *catches up* first: the node asks Redis for what it must get
//! (`wspush_online`, which also registers the user here), parks the live
//! messages meant for it meanwhile, and then sends both merged in seq
//! order, each seq once. A held message that reaches a connection live
//! anyway (its node's lease had lapsed) is claimed, so it is not sent
//! again on the next connect.

use std::collections::HashMap;
use std::rc::Rc;

use log::{debug, warn};
use serde_json::{Value, json};

use super::cluster::{Query, RELAY_TIMEOUT_MS};
use super::nodes::{job_message, split};
use super::{Call, ConnId, Hub, Origin, Out};
use crate::proto::control::{self, Message};
use crate::proto::frame;

/// Bytes of live frames parked for one catching-up connection at most;
/// beyond, it is closed with [`RESYNC`] and comes back with `since`.
const MAX_PARKED_BYTES: usize = 4 << 20;
/// Users per `wspush_present` call when the link comes back.
const PRESENT_CHUNK: usize = 512;
/// The close code that asks a client to reconnect with `?since=`: this
/// node could not give it every message in order.
pub const RESYNC: u16 = 4003;

/// A connection waiting for its share of the mailbox.
#[derive(Debug)]
pub struct CatchUp {
    /// The `wspush_online` call it waits for.
    reference: u64,
    /// Live frames meant for it meanwhile, by seq.
    parked: Vec<(u64, Rc<[u8]>)>,
    parked_bytes: usize,
    /// Virtual ms it opened.
    since: u64,
}

/// A mailbox call waiting for Redis's answer.
#[derive(Debug, Clone, Copy)]
pub enum Pending {
    /// A connection's catch-up.
    CatchUp(ConnId),
    /// `GET /api/collect` from `origin`, asked at virtual ms `since`.
    Collect { origin: Origin, since: u64 },
}

impl super::cluster::Cluster {
    /// Call `wspush_online` for `user` (registering it here unless this is
    /// a collect) and note what waits for the answer.
    fn ask_online(
        &mut self,
        user: &str,
        since: Option<u64>,
        pending: Pending,
        out: &mut impl Out,
    ) -> u64 {
        let reference = self.reference();
        let collect = matches!(pending, Pending::Collect { .. });
        out.call(
            reference,
            Call::Online {
                user,
                since,
                collect,
            },
        );
        self.calls.insert(reference, pending);
        reference
    }
}

/// A stored payload as the frame every node sends for it.
fn payload_frame(payload: &[u8]) -> Option<(u64, Rc<[u8]>)> {
    let (header, job) = split(payload)?;
    let message = job_message(job).ok()?;
    let id = header.message_id();
    Some((
        header.seq,
        Hub::frame_of(&message, header.seq, &id, header.ts),
    ))
}

/// Merge two seq-ordered lists, each seq once.
fn merge(a: Vec<(u64, Rc<[u8]>)>, b: Vec<(u64, Rc<[u8]>)>) -> Vec<Rc<[u8]>> {
    let mut all: Vec<(u64, Rc<[u8]>)> = a.into_iter().chain(b).collect();
    all.sort_by_key(|(seq, _)| *seq);
    all.dedup_by_key(|(seq, _)| *seq);
    all.into_iter().map(|(_, f)| f).collect()
}

impl Hub {
    /// Whether the mailbox lives in Redis.
    pub(super) fn shared_mailbox(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.mailbox)
    }

    /// A connection of `user` opened: ask Redis what it must get first.
    /// While the link is down there is nobody to ask: it gets live
    /// messages, and what is held waits for its next connect.
    pub(super) fn catch_up(
        &mut self,
        conn: ConnId,
        user: &str,
        since: Option<u64>,
        out: &mut impl Out,
    ) {
        let now = self.now;
        let c = self.cluster.as_mut().expect("a cluster");
        if !c.up {
            debug!("user {user}: connected while the redis link is down: no catch-up");
            return;
        }
        let reference = c.ask_online(user, since, Pending::CatchUp(conn), out);
        let catch_up = CatchUp {
            reference,
            parked: Vec::new(),
            parked_bytes: 0,
            since: now,
        };
        c.catching.insert(conn, catch_up);
        self.arm_relays();
    }

    /// A connection of `user` closed; the last one here unregisters it.
    pub(super) fn shared_leave(&mut self, conn: ConnId, user: &str, out: &mut impl Out) {
        let online = self.users.find(user).is_some();
        let c = self.cluster.as_mut().expect("a cluster");
        if let Some(catch_up) = c.catching.remove(&conn) {
            c.calls.remove(&catch_up.reference);
        }
        c.replayed.remove(&conn);
        if !online && c.up {
            out.call(0, Call::Offline { user });
        }
    }

    /// The link is back: register every user online here again.
    pub(super) fn shared_link_up(&mut self, out: &mut impl Out) {
        if !self.shared_mailbox() {
            return;
        }
        let names: Vec<&str> = self.users.names().map(|n| &**n).collect();
        for users in names.chunks(PRESENT_CHUNK) {
            out.call(0, Call::Present { users });
        }
    }

    /// The link is lost: catch-ups cannot finish (those clients come
    /// back with `since`), collects are answered.
    pub(super) fn shared_link_down(&mut self, out: &mut impl Out) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let catching: Vec<ConnId> = c.catching.drain().map(|(conn, _)| conn).collect();
        let collects: Vec<Origin> = c
            .calls
            .drain()
            .filter_map(|(_, p)| match p {
                Pending::Collect { origin, .. } => Some(origin),
                Pending::CatchUp(_) => None,
            })
            .collect();
        for conn in catching {
            self.close(conn, RESYNC, "resync", out);
        }
        for origin in collects {
            out.answer(origin, 503, control::error(None, "redis link lost"));
        }
    }

    /// Catch-ups and collects that waited too long.
    pub(super) fn sweep_calls(&mut self, out: &mut impl Out) {
        let now = self.now;
        let Some(c) = &mut self.cluster else {
            return;
        };
        let late = |since: u64| now >= since + RELAY_TIMEOUT_MS;
        let mut doomed = Vec::new();
        c.calls.retain(|_, p| match *p {
            Pending::CatchUp(_) => true,
            Pending::Collect { origin, since } => {
                let keep = !late(since);
                if !keep {
                    doomed.push(origin);
                }
                keep
            }
        });
        let slow: Vec<ConnId> = c
            .catching
            .iter()
            .filter(|(_, cu)| late(cu.since))
            .map(|(&conn, _)| conn)
            .collect();
        for origin in doomed {
            let body = control::error(None, "redis did not answer within 5 s");
            out.answer(origin, 503, body);
        }
        for conn in slow {
            warn!("redis: a catch-up took more than 5 s: closing the connection with 4003");
            self.close(conn, RESYNC, "resync", out);
        }
    }

    /// Park a live frame for the catching-up connections it is meant for.
    /// `catching` is the cluster's map, taken out while the fan-out runs.
    pub(super) fn park(
        &self,
        catching: &mut HashMap<ConnId, CatchUp>,
        message: &Message,
        seq: u64,
        frame: &Rc<[u8]>,
    ) -> (usize, Vec<ConnId>) {
        let (mut parked, mut full) = (0, Vec::new());
        for (&conn, catch_up) in catching.iter_mut() {
            let Some(s) = self.sessions.get(conn).filter(|s| s.subscribed()) else {
                continue;
            };
            let wanted = match &message.topic {
                Some(topic) => s
                    .topics
                    .as_ref()
                    .is_some_and(|t| t.iter().any(|x| **x == **topic)),
                None if message.users.is_empty() => true,
                None => {
                    let name = self.users.name_of(s);
                    message.users.iter().any(|u| **u == **name)
                }
            };
            if wanted {
                catch_up.parked.push((seq, frame.clone()));
                catch_up.parked_bytes += frame.len();
                parked += 1;
                if catch_up.parked_bytes > MAX_PARKED_BYTES {
                    full.push(conn);
                }
            }
        }
        (parked, full)
    }

    /// The connections that got `seq` from their catch-up already. The
    /// channel brings seqs in order, so what is at or below `seq` will not
    /// come again and is forgotten.
    pub(super) fn replayed(&mut self, seq: u64) -> Vec<ConnId> {
        let Some(c) = self.cluster.as_mut().filter(|c| !c.replayed.is_empty()) else {
            return Vec::new();
        };
        let mut got = Vec::new();
        c.replayed.retain(|&conn, seqs| {
            if seqs.binary_search(&seq).is_ok() {
                got.push(conn);
            }
            seqs.retain(|&s| s > seq);
            !seqs.is_empty()
        });
        got
    }

    /// Messages held for `users` that reached one of their connections
    /// here live are theirs now: Redis stops holding them.
    pub(super) fn claim_held(&mut self, users: &[String], seq: u64, out: &mut impl Out) {
        let Some(c) = &self.cluster else {
            return;
        };
        for user in users {
            let Some(index) = self.users.find(user) else {
                continue;
            };
            let mut walk = self.users.walk(index, &self.sessions);
            if walk.any(|(id, s)| s.subscribed() && !c.catching.contains_key(&id)) {
                out.call(0, Call::Claim { user, seq });
            }
        }
    }

    /// Seqs were lost beyond repair: every connection here is closed with
    /// [`RESYNC`] so that it comes back with `since` (the history has
    /// what was meant for its user). Without the mailbox there is no
    /// history to come back to: the loss is only counted.
    pub(super) fn resync(&mut self, out: &mut impl Out) {
        if !self.shared_mailbox() {
            return;
        }
        let open: Vec<ConnId> = self.sessions.ids().collect();
        warn!(
            "redis: closing {} connections with 4003 to resync",
            open.len()
        );
        for conn in open {
            self.close(conn, RESYNC, "resync", out);
        }
    }

    /// Redis answered a mailbox call.
    pub(super) fn called(
        &mut self,
        reference: u64,
        result: Result<&[&[u8]], &str>,
        out: &mut impl Out,
    ) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        match c.calls.remove(&reference) {
            Some(Pending::CatchUp(conn)) => self.caught_up(conn, reference, result, out),
            Some(Pending::Collect { origin, .. }) => self.collected(origin, result, out),
            None => self.query_answered(reference, result, out),
        }
    }

    /// What a catching-up connection must get came: send it, merged with
    /// what was parked, in seq order.
    fn caught_up(
        &mut self,
        conn: ConnId,
        reference: u64,
        result: Result<&[&[u8]], &str>,
        out: &mut impl Out,
    ) {
        let c = self.cluster.as_mut().expect("a cluster");
        let Some(catch_up) = c
            .catching
            .remove(&conn)
            .filter(|cu| cu.reference == reference)
        else {
            return;
        };
        let payloads = match result {
            Ok(payloads) => payloads,
            Err(e) => {
                warn!("redis: a catch-up failed ({e}): closing the connection with 4003");
                return self.close(conn, RESYNC, "resync", out);
            }
        };
        let stored: Vec<(u64, Rc<[u8]>)> =
            payloads.iter().filter_map(|p| payload_frame(p)).collect();
        // Redis answers on its own connection: what it gave may still be
        // on its way here on the channel.
        let mut ahead: Vec<u64> = stored.iter().map(|(seq, _)| *seq).collect();
        ahead.retain(|&seq| seq > c.high);
        ahead.sort_unstable();
        if !ahead.is_empty() {
            c.replayed.insert(conn, ahead);
        }
        debug!(
            "caught up: {} stored, {} parked",
            stored.len(),
            catch_up.parked.len()
        );
        let frames = merge(stored, catch_up.parked);
        self.stats.messages_out += frames.len() as u64;
        for frame in frames {
            out.send(conn, frame);
        }
    }

    /// `GET /api/collect` in a cluster: ask Redis.
    pub(super) fn shared_collect(
        &mut self,
        origin: Origin,
        user: &str,
        since: Option<u64>,
        out: &mut impl Out,
    ) {
        let now = self.now;
        let c = self.cluster.as_mut().expect("a cluster");
        if !c.up {
            return out.answer(origin, 503, control::error(None, super::cluster::LINK_DOWN));
        }
        c.ask_online(user, since, Pending::Collect { origin, since: now }, out);
        self.arm_relays();
    }

    fn collected(&mut self, origin: Origin, result: Result<&[&[u8]], &str>, out: &mut impl Out) {
        let payloads = match result {
            Ok(payloads) => payloads,
            Err(e) => {
                let body = control::error(None, &format!("redis: {e}"));
                return out.answer(origin, 503, body);
            }
        };
        let frames: Vec<Rc<[u8]>> = payloads
            .iter()
            .filter_map(|p| payload_frame(p))
            .map(|(_, f)| f)
            .collect();
        self.stats.messages_out += frames.len() as u64;
        out.answer(origin, 200, collect_body(&frames));
    }

    /// `messages` or `delete` in a cluster: Redis answers it.
    pub(super) fn shared_query(
        &mut self,
        query: Query,
        call: Call<'_>,
        out: &mut impl Out,
    ) -> Result<Value, String> {
        let now = self.now;
        let c = self.cluster.as_mut().expect("a cluster");
        if !c.up {
            return Err(super::cluster::LINK_DOWN.into());
        }
        let reference = c.reference();
        out.call(reference, call);
        c.wait(reference, false, Some(query), now);
        self.arm_relays();
        self.relayed(reference);
        Ok(json!({}))
    }

    fn query_answered(
        &mut self,
        reference: u64,
        result: Result<&[&[u8]], &str>,
        out: &mut impl Out,
    ) {
        let c = self.cluster.as_mut().expect("a cluster");
        let Some(w) = c.waiting.get(&reference) else {
            return;
        };
        let id = w.id.clone();
        let first = result.map(|items| items.first().copied().unwrap_or_default());
        let line = match (w.query, first) {
            (_, Err(e)) => control::error(id, &format!("redis: {e}")),
            (Some(Query::Messages), Ok(json)) => match serde_json::from_slice::<Value>(json) {
                Ok(page) => control::ok(id, page),
                Err(e) => control::error(id, &format!("redis: a page that is not JSON: {e}")),
            },
            (Some(Query::Delete), Ok(count)) => {
                let n: u64 = std::str::from_utf8(count)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                control::ok(id, json!({ "deleted": n }))
            }
            (None, Ok(_)) => return,
        };
        c.finish(reference, line, out);
    }
}

/// The body of a collect answer: the envelopes as one JSON array.
pub(super) fn collect_body(frames: &[Rc<[u8]>]) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + frames.iter().map(|f| f.len() + 1).sum::<usize>());
    body.push(b'[');
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(frame::server_payload(f));
    }
    body.extend_from_slice(b"]\n");
    body
}
