//! Getting messages to connections: the envelope, fan-out to users, topics
//! or everyone, latest-value keys, the mailbox on push and on connect, and
//! the event stream for control listeners.

use std::collections::HashSet;
use std::rc::Rc;

use log::debug;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::control::Message;
use crate::frame::{self, OpCode};
use crate::mailbox::{Record, Status};
use crate::outbox::{FrameRef, Key, key_of};
use crate::server::{Server, Timer};
use crate::store::Entry;

/// Longest topic name, in bytes.
pub const MAX_TOPIC: usize = 128;
/// Seqs reserved in the log at a time. A new reservation is appended when
/// less than half of the current one is left, so it is normally durable
/// (synced at the end of its turn) long before a seq needs it.
pub(crate) const SEQ_BLOCK: u64 = 4096;

/// The JSON object every push delivers (DESIGN.md §4).
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

/// A client's topic command: `{"op":"subscribe","topic":"T"}`.
#[derive(Deserialize)]
struct TopicCommand {
    op: String,
    topic: Option<Value>,
}

/// What a delivery reached.
pub(crate) struct Delivered {
    pub message_id: String,
    pub seq: u64,
    pub delivered: usize,
    pub queued: usize,
}

impl Server {
    /// Hand out the next seq. With a data log it comes only from a durable
    /// reservation, so a restart never hands out a seq a client already
    /// holds: when a turn would outrun the reservation, the log is synced
    /// right away, and while the log is failed the push is refused once the
    /// durable reservation is used up.
    fn next_seq(&mut self) -> Result<u64, String> {
        let seq = self.seq + 1;
        if let Some(store) = &mut self.store {
            if seq + SEQ_BLOCK / 2 > store.reserved() {
                store.reserve(seq + SEQ_BLOCK);
            }
            if seq > store.reserved_durable() {
                self.sync_log();
            }
        }
        if let Some(store) = &self.store
            && seq > store.reserved_durable()
        {
            let reason = store.failed().unwrap_or("seq reservation not written");
            return Err(format!("data log: {reason}"));
        }
        self.seq = seq;
        Ok(seq)
    }

    /// Send a message now: encode it once, as one frame, and queue it to
    /// every recipient (O(1) allocations however many receive it); record it
    /// in the mailbox for listed users. The message id is `{prefix}-{seq}`
    /// unless given (scheduled jobs have theirs).
    pub(crate) fn deliver(
        &mut self,
        message: &Message,
        message_id: Option<&str>,
    ) -> Result<Delivered, String> {
        let seq = self.next_seq()?;
        let message_id = match message_id {
            Some(id) => id.to_string(),
            None => format!("{}-{seq}", self.id_prefix),
        };
        let message_id = message_id.as_str();
        let ts = self.unix_ms(self.now);
        let envelope = Envelope {
            message_id,
            seq,
            title: message.title.as_deref(),
            kind: message.kind,
            topic: message.topic.as_deref(),
            content: &message.content,
            ts,
        };
        let payload = serde_json::to_vec(&envelope).expect("an envelope always serialises");
        let mut bytes = Vec::with_capacity(frame::header_len(payload.len()) + payload.len());
        frame::write_header(OpCode::Text, payload.len(), &mut bytes);
        bytes.extend_from_slice(&payload);
        let frame: Rc<[u8]> = bytes.into();
        let value_key = message.key.as_deref().map_or(0, key_of);
        let shared = self.turn.add(frame.clone(), value_key);
        let mut report = Delivered {
            message_id: message_id.to_string(),
            seq,
            delivered: 0,
            queued: 0,
        };
        if let Some(topic) = &message.topic {
            let keys = self.topics.get(topic.as_str()).cloned().unwrap_or_default();
            for key in keys {
                report.delivered += usize::from(self.queue_push(key as usize, shared));
            }
        } else if message.users.is_empty() {
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                report.delivered += usize::from(self.queue_push(key, shared));
            }
        } else {
            let mut seen = HashSet::with_capacity(message.users.len());
            for name in &message.users {
                if !seen.insert(name.as_str()) {
                    continue;
                }
                let online = self.users.find(name);
                let mut reached = 0;
                if let Some(index) = online {
                    for key in self.users.connections(index, &self.conns) {
                        reached += usize::from(self.queue_push(key, shared));
                    }
                }
                report.delivered += reached;
                let status = match (online, reached) {
                    (None, _) => Status::Held,
                    (Some(_), 0) => continue, // online with pushes switched off
                    (Some(_), _) => Status::Delivered,
                };
                if self.mailbox.enabled() {
                    report.queued += usize::from(status == Status::Held);
                    let record = Record {
                        message_id: Rc::from(message_id),
                        seq,
                        status,
                        ts,
                        expires: ts + self.mailbox.ttl_ms,
                        frame: Some(frame.clone()),
                        key: value_key,
                    };
                    self.hold(name, record, &payload);
                }
            }
        }
        self.stats.pushes += 1;
        self.stats.messages_out += report.delivered as u64;
        self.stats.bytes_out += frame.len() as u64 * report.delivered as u64;
        Ok(report)
    }

    /// Put a record in the mailbox (and the log), and make sure expiry runs.
    fn hold(&mut self, user: &str, record: Record, payload: &[u8]) {
        if let Some(store) = &mut self.store {
            store.append(&Entry::record(user, &record, payload));
        }
        let at = record.expires;
        self.mailbox.record(&Rc::from(user), record);
        self.arm_mailbox(at);
    }

    /// Arm the mailbox expiry timer for Unix ms `at` unless one is pending.
    pub(crate) fn arm_mailbox(&mut self, at_unix_ms: u64) {
        if !self.mailbox_timer {
            self.mailbox_timer = true;
            let at = at_unix_ms.saturating_sub(self.started_unix_ms);
            self.wheel.insert(at, Timer::Mailbox);
        }
    }

    /// The mailbox expiry timer fired.
    pub(crate) fn on_mailbox_timer(&mut self) {
        self.mailbox_timer = false;
        if let Some(next) = self.mailbox.expire(self.unix_ms(self.now)) {
            self.arm_mailbox(next);
        }
    }

    /// Queue a push frame to a connection that wants pushes; a keyed frame
    /// also drops an unsent frame with that key from the backlog.
    fn queue_push(&mut self, key: usize, frame: FrameRef) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if !conn.wants_pushes() {
            return false;
        }
        let value_key: Key = self.turn.frame(frame).1;
        if value_key != 0
            && let Some(backlog) = &mut conn.backlog
        {
            backlog.drop_key(value_key);
        }
        self.turn.enqueue(key, &mut conn.chain, frame);
        true
    }

    /// A user just connected: what the mailbox holds for it goes first.
    pub(crate) fn mailbox_on_connect(&mut self, key: usize, user: &str, since: Option<u64>) {
        if !self.mailbox.enabled() {
            return;
        }
        let (frames, changes) = self.mailbox.on_connect(user, since);
        for frame in frames {
            self.stats.messages_out += 1;
            self.send(key, frame);
        }
        if let Some(store) = &mut self.store {
            for seq in changes.delivered {
                store.append(&Entry::Dlv {
                    user: user.to_string(),
                    seq,
                });
            }
        }
    }

    /// Handle a client's `{"op":"subscribe"|"unsubscribe","topic":T}`.
    /// Returns false when the text is not a topic command.
    pub(crate) fn topic_command(&mut self, key: usize, text: &str) -> bool {
        if !text.starts_with('{') {
            return false;
        }
        let Ok(command) = serde_json::from_str::<TopicCommand>(text) else {
            return false;
        };
        let subscribe = match command.op.as_str() {
            "subscribe" => true,
            "unsubscribe" => false,
            _ => return false,
        };
        let topic = command.topic.clone().unwrap_or(Value::Null);
        let result = match topic.as_str() {
            Some(t) if !t.is_empty() && t.len() <= MAX_TOPIC => {
                if subscribe {
                    self.subscribe(key, t)
                } else {
                    self.unsubscribe(key, t);
                    Ok(())
                }
            }
            _ => Err(format!("topic must be a string of 1 to {MAX_TOPIC} bytes")),
        };
        let reply = match result {
            Ok(()) => json!({"op": command.op, "topic": topic, "ok": true}),
            Err(e) => json!({"op": command.op, "topic": topic, "ok": false, "error": e}),
        };
        let bytes = frame::encode(OpCode::Text, reply.to_string().as_bytes());
        self.send(key, bytes.into());
        true
    }

    fn subscribe(&mut self, key: usize, topic: &str) -> Result<(), String> {
        let conn = &mut self.conns[key];
        let list = conn.topics.get_or_insert_with(Box::default);
        if list.iter().any(|t| &**t == topic) {
            return Ok(());
        }
        if list.len() >= self.args.max_topics {
            return Err(format!("topic limit {} reached", self.args.max_topics));
        }
        let name: Rc<str> = match self.topics.get_key_value(topic) {
            Some((name, _)) => name.clone(),
            None => Rc::from(topic),
        };
        list.push(name.clone());
        self.topics.entry(name).or_default().push(key as u32);
        Ok(())
    }

    fn unsubscribe(&mut self, key: usize, topic: &str) {
        let conn = &mut self.conns[key];
        if let Some(list) = &mut conn.topics {
            list.retain(|t| &**t != topic);
            if list.is_empty() {
                conn.topics = None;
            }
        }
        if let Some(keys) = self.topics.get_mut(topic) {
            keys.retain(|&k| k as usize != key);
            if keys.is_empty() {
                self.topics.remove(topic);
            }
        }
    }

    /// Drop every subscription of a connection that is going away.
    pub(crate) fn leave_topics(&mut self, key: usize) {
        let Some(list) = self.conns[key].topics.take() else {
            return;
        };
        for topic in list.iter() {
            if let Some(keys) = self.topics.get_mut(&**topic) {
                keys.retain(|&k| k as usize != key);
                if keys.is_empty() {
                    self.topics.remove(&**topic);
                }
            }
        }
    }

    /// Queue an event line to every `events` listener.
    pub(crate) fn emit(&mut self, mut event: Value) {
        if self.listeners.is_empty() {
            return;
        }
        event["ts"] = json!(self.unix_ms(self.now));
        let mut line = event.to_string().into_bytes();
        line.push(b'\n');
        for key in self.listeners.clone() {
            self.queue_event(key, &line);
        }
    }

    /// An upstream client message: to the listeners, or dropped.
    pub(crate) fn upstream(&mut self, key: usize, text: Option<&str>, binary: Option<&[u8]>) {
        self.stats.messages_in += 1;
        let conn = &self.conns[key];
        if self.listeners.is_empty() {
            debug!(
                "conn {}: upstream message dropped (no event listener)",
                conn.serial
            );
            return;
        }
        let mut event = json!({
            "event": "message",
            "user": self.users.get(conn.user).name.as_ref(),
            "connection": conn.serial,
        });
        match (text, binary) {
            (Some(text), _) => event["text"] = json!(text),
            (None, Some(data)) => {
                use base64::Engine as _;
                event["binary"] = json!(base64::engine::general_purpose::STANDARD.encode(data));
            }
            (None, None) => {}
        }
        self.emit(event);
    }

    /// `online` / `offline` events for connection `key`.
    pub(crate) fn presence(&mut self, key: usize, online: bool) {
        if self.listeners.is_empty() {
            return;
        }
        let conn = &self.conns[key];
        let mut event = json!({
            "event": if online { "online" } else { "offline" },
            "user": self.users.get(conn.user).name.as_ref(),
            "connection": conn.serial,
        });
        if online {
            event["peer"] = json!(conn.peer.to_string());
            event["device"] = json!(conn.device.as_deref());
        }
        self.emit(event);
    }
}
