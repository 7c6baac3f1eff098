//! Getting messages to connections: the upgrade (authenticate, open, the
//! mailbox first), the envelope, and the fan-out of one push to users, a
//! topic or everyone — encoded once, O(1) allocations however many receive
//! it.

use std::num::NonZeroU64;
use std::rc::Rc;

use log::debug;
use serde::Serialize;
use serde_json::Value;

use super::journal::LogRecord;
use super::mailbox::{Record, Status};
use super::session::Session;
use super::tokens;
use super::{ConnId, FrameRef, Hub, Out, key_of};
use crate::proto::control::Message;
use crate::proto::frame::{self, OpCode};
use crate::proto::handshake::Upgrade;

/// The JSON object every push delivers (see docs/protocol.md, "The envelope").
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "messageId")]
    message_id: &'a str,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    content: &'a Value,
    ts: u64,
}

/// What a delivery reached.
#[derive(Debug)]
pub struct Delivered {
    /// The message id.
    pub message_id: Rc<str>,
    /// Its seq.
    pub seq: u64,
    /// Connections it was queued to.
    pub delivered: usize,
    /// Users it was held for (offline).
    pub queued: usize,
}

impl Hub {
    /// A connection sent a valid upgrade request.
    pub(super) fn upgrade(
        &mut self,
        conn: ConnId,
        request: Upgrade,
        serial: u64,
        out: &mut impl Out,
    ) {
        let admitted = match self.admit(&request) {
            Ok(admitted) => admitted,
            Err(refusal) => return self.refuse(conn, &request, serial, refusal, out),
        };
        let user = admitted.user;
        let cap = self.config.max_conns_per_user;
        if cap > 0 {
            while let Some(index) = self.users.find(&user) {
                let u = self.users.get(index);
                if (u.count as usize) < cap {
                    break;
                }
                let oldest = self.sessions.id_at(u.head);
                self.close(oldest, 1008, "too many connections for this user", out);
            }
        }
        debug!(
            "conn {serial}: upgraded as user {user} (token {})",
            tokens::fingerprint(&request.token)
        );
        // Labels are kept once per distinct text (`hub/devices.rs`).
        let device = request.device.or(request.user_agent);
        let serial = NonZeroU64::new(serial).expect("connection serials start at 1");
        let session = Session::new(serial, admitted.tag, self.now);
        self.sessions.insert(conn, session, device.as_deref());
        if let Some(claims) = admitted.signed {
            self.track_signed(conn, claims);
        }
        self.users.join(user.clone(), conn, &mut self.sessions);
        self.stats.upgrades += 1;
        out.open(conn, &request.accept);
        self.mailbox_on_connect(conn, &user, request.since, out);
        self.presence(conn, true, out);
    }

    /// A user just connected: what the mailbox holds for it goes first.
    fn mailbox_on_connect(
        &mut self,
        conn: ConnId,
        user: &str,
        since: Option<u64>,
        out: &mut impl Out,
    ) {
        if self.shared_mailbox() {
            return self.catch_up(conn, user, since, out);
        }
        for frame in self.take_held(user, since, out) {
            out.send(conn, frame);
        }
    }

    /// What `user` must get on connecting (or collecting), now marked
    /// delivered: the held frames, or with `since` every retained one above
    /// it, in seq order.
    pub(super) fn take_held(
        &mut self,
        user: &str,
        since: Option<u64>,
        out: &mut impl Out,
    ) -> Vec<Rc<[u8]>> {
        if !self.mailbox.enabled() {
            return Vec::new();
        }
        // A seq this server never handed out comes from an earlier run
        // whose seqs were not kept (no data log): it says nothing about
        // what the client has, so everything held goes out.
        let since = since.filter(|&seq| seq <= self.seq.last);
        let (frames, changes) = self.mailbox.on_connect(user, since);
        self.stats.messages_out += frames.len() as u64;
        for seq in changes.delivered {
            self.log(
                &LogRecord::Dlv {
                    user: user.into(),
                    seq,
                },
                out,
            );
        }
        frames
    }

    /// Send a message now: encode it once, as one frame, and queue it to
    /// every recipient; record it in the mailbox for listed users. The
    /// message id is `{prefix}-{seq}` unless given (scheduled jobs have
    /// theirs). `message.users` must be free of duplicates.
    pub(super) fn deliver(
        &mut self,
        message: &Message,
        message_id: Option<&str>,
        out: &mut impl Out,
    ) -> Result<Delivered, String> {
        let seq = self.next_seq(out)?;
        let message_id: Rc<str> = match message_id {
            Some(id) => Rc::from(id),
            None => Rc::from(format!("{}-{seq}", self.config.id_prefix)),
        };
        let ts = self.unix_ms();
        Ok(self.fan_out(message, seq, message_id, ts, out))
    }

    /// Queue a message that has its seq, id and time to every recipient
    /// here (one frame, shared), and record it in the mailbox.
    pub(super) fn fan_out(
        &mut self,
        message: &Message,
        seq: u64,
        message_id: Rc<str>,
        ts: u64,
        out: &mut impl Out,
    ) -> Delivered {
        let (frame, header) = encode_message(message, seq, &message_id, ts);
        let value_key = message.key.as_deref().map_or(0, key_of);
        let shared = out.shared(frame.clone(), value_key);
        let mut report = Delivered {
            message_id: message_id.clone(),
            seq,
            delivered: 0,
            queued: 0,
        };
        // Connections catching up with the shared mailbox get it later,
        // in order with what Redis holds for them (`hub/shared.rs`).
        let mut catching = match &mut self.cluster {
            Some(c) => std::mem::take(&mut c.catching),
            None => Default::default(),
        };
        // Those that got it from their catch-up already do not get it again.
        let replayed = self.replayed(seq);
        let free = |conn: &ConnId| !catching.contains_key(conn) && !replayed.contains(conn);
        if let Some(topic) = &message.topic {
            let sessions = &self.sessions;
            let followers = self.topics.subscribers(topic).iter().copied();
            let reached =
                followers.filter(|&conn| sessions.get(conn).is_some_and(Session::subscribed));
            report.delivered += push_all(reached.filter(free), shared, out);
        } else if message.users.is_empty() {
            let everyone = self.sessions.pushing().iter().copied();
            report.delivered += push_all(everyone.filter(free), shared, out);
        } else {
            for name in &message.users {
                let online = self.users.find(name);
                let reached = match online {
                    Some(index) => {
                        let walk = self.users.walk(index, &self.sessions);
                        let reached = walk.filter(|(_, s)| s.subscribed()).map(|(id, _)| id);
                        push_all(reached.filter(free), shared, out)
                    }
                    None => 0,
                };
                report.delivered += reached;
                let status = match (online, reached) {
                    (None, _) => Status::Held,
                    (Some(_), 0) => continue, // online with pushes switched off
                    (Some(_), _) => Status::Delivered,
                };
                if self.mailbox.enabled() {
                    report.queued += usize::from(status == Status::Held);
                    let record = Record {
                        message_id: message_id.clone(),
                        seq,
                        status,
                        ts,
                        expires: ts + self.mailbox.ttl_ms,
                        frame: Some(frame.clone()),
                        key: value_key,
                    };
                    let body = &frame[header..];
                    self.log(&LogRecord::of(name.into(), &record, body), out);
                    let at = record.expires;
                    self.mailbox.record(name, record);
                    self.arm_mailbox(at);
                }
            }
        }
        if !catching.is_empty() {
            let (parked, full) = self.park(&mut catching, message, seq, &frame);
            report.delivered += parked;
            if let Some(c) = &mut self.cluster {
                c.catching = catching;
            }
            for conn in full {
                self.close(conn, super::shared::RESYNC, "resync", out);
            }
        }
        self.stats.pushes += 1;
        self.stats.messages_out += report.delivered as u64;
        report
    }

    /// The frame of a message as [`Hub::fan_out`] encodes it.
    pub(super) fn frame_of(message: &Message, seq: u64, message_id: &str, ts: u64) -> Rc<[u8]> {
        encode_message(message, seq, message_id, ts).0
    }
}

/// A message's envelope as one text frame, and the frame header's length.
fn encode_message(message: &Message, seq: u64, message_id: &str, ts: u64) -> (Rc<[u8]>, usize) {
    let envelope = Envelope {
        message_id,
        seq,
        title: message.title.as_deref(),
        kind: message.kind,
        topic: message.topic.as_deref(),
        content: &message.content,
        ts,
    };
    encode(&envelope)
}

/// Queue `frame` to each of `conns`; returns how many there were.
fn push_all(conns: impl Iterator<Item = ConnId>, frame: FrameRef, out: &mut impl Out) -> usize {
    let mut reached = 0;
    out.push(conns.inspect(|_| reached += 1), frame);
    reached
}

/// The envelope as one text frame, and the length of the frame's header.
fn encode(envelope: &Envelope<'_>) -> (Rc<[u8]>, usize) {
    let payload = serde_json::to_vec(envelope).expect("an envelope always serialises");
    let frame = frame::encode(OpCode::Text, &payload);
    let header = frame.len() - payload.len();
    (frame.into(), header)
}
