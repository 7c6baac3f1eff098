//! The control socket protocol (DESIGN.md §5): newline-delimited JSON
//! requests from local producers and operators, one reply line per request,
//! in order, with an optional `"id"` echoed back.
//!
//! This module owns the wire format and the per-connection buffers; the
//! server executes the requests. A bad line is answered with
//! `{"ok":false,"error":...}` and the connection stays usable. A line longer
//! than [`MAX_LINE`] is answered with an error and skipped up to its newline.
//! A last line without a newline is executed when the client shuts its
//! side. A client that sends requests but does not read the replies stops
//! being read once [`MAX_PENDING_REPLIES`] bytes of replies are waiting, so
//! it can never grow the server's memory.
//!
//! Replies are *held* ([`ControlConn::hold`]) until the end of the turn,
//! when the server has synced the data log; only then are they released to
//! the socket ([`ControlConn::release`]), each one that depends on records
//! the log could not write turned into an error. [`ControlConn::flush`]
//! writes released bytes only, so no path can send a reply early.

use std::io::{self, Read, Write};

use mio::net::UnixStream;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest request line, newline excluded.
pub const MAX_LINE: usize = 1 << 20;
/// Unsent reply bytes at which the server stops reading a control client.
pub const MAX_PENDING_REPLIES: usize = 1 << 20;
/// Buffers above this capacity are given back once they empty out.
const SMALL_BUFFER: usize = 64 * 1024;

/// What a push, a publish or a scheduled job sends, and to whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Recipients; empty with no topic means every online client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// For `publish`: every connection subscribed to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The producer's JSON value, sent as the envelope's `content`.
    pub content: Value,
    /// Optional envelope title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Optional envelope type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<i64>,
    /// Latest-value key: replaces an unsent message with the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// When to send: now, once later, or periodically.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Schedule {
    /// Seconds before the first run.
    pub delay: Option<u64>,
    /// Seconds between runs.
    pub every: Option<u64>,
}

impl Schedule {
    /// Whether this is a scheduled (not immediate) send.
    pub fn is_scheduled(&self) -> bool {
        self.delay.is_some() || self.every.is_some()
    }
}

/// One request, as the `op` field names it.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Push to users (or every online client when `users` is absent/empty).
    Push {
        /// Recipients, content and envelope fields.
        #[serde(flatten)]
        message: Message,
        /// `delay` / `every`.
        #[serde(flatten)]
        schedule: Schedule,
    },
    /// Push to every connection subscribed to a topic.
    Publish {
        /// Topic, content and envelope fields (`users` is ignored).
        #[serde(flatten)]
        message: Message,
        /// `delay` / `every`.
        #[serde(flatten)]
        schedule: Schedule,
    },
    /// Stop a delayed or periodic push.
    Cancel {
        /// The id the scheduling reply gave.
        #[serde(rename = "messageId")]
        message_id: String,
    },
    /// List connections, optionally of one user.
    Clients {
        /// Only this user's connections.
        user: Option<String>,
    },
    /// Server counters.
    Stats {},
    /// Allow a token to connect as a user.
    Grant {
        /// The secret.
        token: String,
        /// The user it authenticates.
        user: String,
    },
    /// Forget a token and close its connections with 1008.
    Revoke {
        /// The secret.
        token: String,
    },
    /// Close a user's connections, or one connection, with 1008.
    Kick {
        /// Every connection of this user.
        user: Option<String>,
        /// One connection, by the `id` `clients` shows.
        connection: Option<u64>,
    },
    /// Message records (mailbox), oldest first.
    Messages {
        /// Only this user's records.
        user: Option<String>,
        /// Only records in this status: delivered, held, expired.
        status: Option<String>,
        /// Page size (default 100, at most 1000).
        limit: Option<usize>,
        /// Only records with a larger seq (the previous page's `next`).
        after: Option<u64>,
    },
    /// Delete a message's records (a held message is then never sent).
    Delete {
        /// The message.
        #[serde(rename = "messageId")]
        message_id: String,
    },
    /// Turn this connection into a stream of events.
    Events {},
}

impl Request {
    /// Whether the request changes state (refused once shutting down);
    /// queries and `events` are still answered.
    pub fn is_job(&self) -> bool {
        !matches!(
            self,
            Request::Clients { .. }
                | Request::Stats {}
                | Request::Messages { .. }
                | Request::Events {}
        )
    }
}

/// Parse one request line. The `id` is returned even when the request is
/// bad, so the error reply can carry it.
pub fn parse(line: &[u8]) -> (Option<Value>, Result<Request, String>) {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return (None, Err(format!("not JSON: {e}"))),
    };
    let id = value.get("id").cloned();
    if !value.is_object() {
        return (
            id,
            Err("a request is a JSON object with an \"op\" field".into()),
        );
    }
    if value.get("op").is_none_or(|op| !op.is_string()) {
        return (id, Err("missing \"op\" (a string)".into()));
    }
    let request = Request::deserialize(value).map_err(|e| e.to_string());
    (id, request)
}

/// A success reply line: `{"ok":true, ...fields, "id":...}` + newline.
pub fn ok(id: Option<Value>, fields: Value) -> Vec<u8> {
    let mut map = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    map.insert("ok".into(), Value::Bool(true));
    finish(id, map)
}

/// An error reply line: `{"ok":false,"error":message,"id":...}` + newline.
pub fn error(id: Option<Value>, message: &str) -> Vec<u8> {
    let mut map = Map::new();
    map.insert("ok".into(), Value::Bool(false));
    map.insert("error".into(), Value::String(message.into()));
    finish(id, map)
}

fn finish(id: Option<Value>, mut map: Map<String, Value>) -> Vec<u8> {
    if let Some(id) = id {
        map.insert("id".into(), id);
    }
    let mut line = serde_json::to_vec(&Value::Object(map)).expect("a JSON map always serialises");
    line.push(b'\n');
    line
}

/// A reply waiting for the end of its turn.
#[derive(Debug)]
struct Held {
    line: Vec<u8>,
    /// Log position the reply's records end at, if it wrote any.
    needs: Option<u64>,
}

/// The reply a request gets when the records it wrote could not reach the
/// disk: `ok` false, the reason, `"durable":false`, and the fields of the
/// reply it would have had (a push delivered online says how many got it).
pub fn not_durable(reply: &[u8], reason: &str) -> Vec<u8> {
    let mut map = match serde_json::from_slice(reply) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    if map.get("ok") == Some(&Value::Bool(false)) {
        return reply.to_vec();
    }
    map.insert("ok".into(), Value::Bool(false));
    map.insert("error".into(), Value::String(format!("data log: {reason}")));
    map.insert("durable".into(), Value::Bool(false));
    let mut line = serde_json::to_vec(&Value::Object(map)).expect("a JSON map always serialises");
    line.push(b'\n');
    line
}

/// What [`ControlConn::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete request line (newline stripped).
    Request(Vec<u8>),
    /// A line passed [`MAX_LINE`]; it is being skipped.
    TooLong,
}

/// What a read turn ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// The socket has nothing more for now.
    WouldBlock,
    /// The client closed its side (replies may still be flushed).
    Eof,
    /// Reading paused: too many unsent replies or too many unprocessed bytes.
    Paused,
}

/// One control client.
#[derive(Debug)]
pub struct ControlConn {
    /// The socket.
    pub stream: UnixStream,
    /// Received bytes not yet split into lines.
    inbuf: Vec<u8>,
    /// Where the newline search resumes in `inbuf`.
    scanned: usize,
    /// Discarding an over-long line up to its newline.
    skipping: bool,
    /// Released reply bytes not yet written, from `sent` on.
    outbuf: Vec<u8>,
    sent: usize,
    /// Replies of this turn, in order, waiting for the log sync.
    held: Vec<Held>,
    /// Bytes in `held`.
    held_bytes: usize,
    /// The client shut its write side; close once replies are out.
    pub eof: bool,
    /// Reading stopped with input possibly left in the socket: whoever
    /// drains the replies must resume reading (no new edge will say so).
    pub paused: bool,
}

impl ControlConn {
    /// Wrap an accepted socket.
    pub fn new(stream: UnixStream) -> Self {
        ControlConn {
            stream,
            inbuf: Vec::new(),
            scanned: 0,
            skipping: false,
            outbuf: Vec::new(),
            sent: 0,
            held: Vec::new(),
            held_bytes: 0,
            eof: false,
            paused: false,
        }
    }

    /// Read what the socket has, up to the backpressure bounds.
    pub fn fill(&mut self, scratch: &mut [u8]) -> io::Result<Fill> {
        self.paused = false;
        loop {
            if self.pending_replies() >= MAX_PENDING_REPLIES || self.inbuf.len() > MAX_LINE {
                self.paused = true;
                return Ok(Fill::Paused);
            }
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(Fill::Eof);
                }
                Ok(n) => self.inbuf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Fill::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next complete line, if any; after EOF, also the unterminated
    /// rest. Every line is held to [`MAX_LINE`] (terminator excluded),
    /// wherever the reads that brought it happened to end.
    pub fn next_line(&mut self) -> Option<Line> {
        loop {
            let found = memchr(&self.inbuf[self.scanned..]).map(|i| self.scanned + i);
            let mut line = match found {
                Some(end) => {
                    let mut line: Vec<u8> = self.inbuf.drain(..=end).collect();
                    self.scanned = 0;
                    line.pop();
                    if std::mem::take(&mut self.skipping) {
                        continue;
                    }
                    line
                }
                None if self.inbuf.len() > MAX_LINE => {
                    self.release_inbuf();
                    if !std::mem::replace(&mut self.skipping, true) {
                        return Some(Line::TooLong);
                    }
                    return None;
                }
                None if self.eof && !self.skipping && !self.inbuf.is_empty() => {
                    self.scanned = 0;
                    std::mem::take(&mut self.inbuf)
                }
                None => {
                    if self.skipping {
                        self.inbuf.clear();
                    }
                    if self.inbuf.capacity() > SMALL_BUFFER && self.inbuf.len() < SMALL_BUFFER {
                        self.inbuf.shrink_to(SMALL_BUFFER);
                    }
                    self.scanned = self.inbuf.len();
                    return None;
                }
            };
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > MAX_LINE {
                return Some(Line::TooLong);
            }
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            return Some(Line::Request(line));
        }
    }

    fn release_inbuf(&mut self) {
        self.inbuf = Vec::new();
        self.scanned = 0;
    }

    /// Hold a reply until the end of the turn; `needs` is the log position
    /// its records end at, if the request wrote any.
    pub fn hold(&mut self, line: Vec<u8>, needs: Option<u64>) {
        self.held_bytes += line.len();
        self.held.push(Held { line, needs });
    }

    /// Queue an event line: it promises nothing durable, so it goes out
    /// with the next flush, unless replies are held, which it must follow.
    pub fn queue_event(&mut self, line: &[u8]) {
        if self.held.is_empty() {
            self.outbuf.extend_from_slice(line);
        } else {
            self.hold(line.to_vec(), None);
        }
    }

    /// The log is synced up to `durable`: release the held replies, each
    /// one whose records lie beyond it answered as [`not_durable`].
    pub fn release(&mut self, durable: u64, reason: &str) {
        for held in self.held.drain(..) {
            if held.needs.is_some_and(|needs| needs > durable) {
                self.outbuf
                    .extend_from_slice(&not_durable(&held.line, reason));
            } else {
                self.outbuf.extend_from_slice(&held.line);
            }
        }
        self.held_bytes = 0;
        if self.held.capacity() > 1024 {
            self.held = Vec::new();
        }
    }

    /// Reply bytes not yet written, held ones included.
    pub fn pending_replies(&self) -> usize {
        self.outbuf.len() - self.sent + self.held_bytes
    }

    /// Write released replies until done or `WouldBlock`.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.outbuf.len() {
            match self.stream.write(&self.outbuf[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.outbuf.len() {
            // Release big buffers; keep small ones for the next replies.
            if self.outbuf.capacity() > SMALL_BUFFER {
                self.outbuf = Vec::new();
            } else {
                self.outbuf.clear();
            }
            self.sent = 0;
        }
        Ok(())
    }
}

fn memchr(haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_parse_and_errors_keep_the_id() {
        let (id, req) = parse(br#"{"op":"push","users":["a"],"content":{"x":1},"id":7}"#);
        assert_eq!(id, Some(json!(7)));
        assert!(matches!(req, Ok(Request::Push { message, .. }) if message.users == ["a"]));
        let (_, req) = parse(br#"{"op":"publish","topic":"t","content":1,"every":5,"key":"k"}"#);
        assert!(matches!(req, Ok(Request::Publish { message, schedule })
            if message.topic.as_deref() == Some("t") && schedule.every == Some(5) && message.key.as_deref() == Some("k")));
        assert!(parse(br#"{"op":"push","content":1,"delay":-1}"#).1.is_err());
        let (id, req) = parse(br#"{"op":"nope","id":"x"}"#);
        assert_eq!(id, Some(json!("x")));
        assert!(req.unwrap_err().contains("unknown variant"));
        assert!(parse(b"{").1.unwrap_err().starts_with("not JSON"));
        assert!(parse(b"[1]").1.is_err());
        assert!(
            parse(br#"{"op":"grant","token":"t"}"#)
                .1
                .unwrap_err()
                .contains("user")
        );
        assert!(
            parse(br#"{"op":"push"}"#)
                .1
                .unwrap_err()
                .contains("content")
        );
        assert!(parse(br#"{"op":5}"#).1.is_err());
    }

    #[test]
    fn replies_are_single_lines() {
        let line = ok(Some(json!(1)), json!({"seq": 3}));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v, json!({"ok": true, "seq": 3, "id": 1}));
        assert_eq!(line.last(), Some(&b'\n'));
        let line = error(None, "bad \"thing\"\nhere");
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    }
}
