//! The control socket protocol (docs/protocol.md, "The control protocol"): newline-delimited JSON
//! requests from local producers and operators, one reply line per request,
//! in order, with an optional `"id"` echoed back.
//!
//! This module owns the wire format: requests, reply lines, and the bounds
//! a control client is held to; the buffers of a control connection are
//! the I/O side's (`crate::io::ctrl_conn`), and the hub carries the
//! requests out. A bad line is answered with `{"ok":false,"error":...}` and
//! the connection stays usable. A line longer than [`MAX_LINE`] is answered
//! with an error and skipped up to its newline.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest request line, newline excluded.
pub const MAX_LINE: usize = 1 << 20;
/// Unsent reply bytes at which the server stops reading a control client.
pub const MAX_PENDING_REPLIES: usize = 1 << 20;

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

impl Message {
    /// Name each user once: a push reaches a user (and records it) once
    /// however often the request lists it. Sorting in place allocates
    /// nothing.
    pub fn dedupe_users(&mut self) {
        self.users.sort_unstable();
        self.users.dedup();
    }
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
    /// List the known tokens (by fingerprint, never in full).
    Tokens {},
    /// Allow a token to connect as a user.
    Grant {
        /// The secret.
        token: String,
        /// The user it authenticates.
        user: String,
        /// Topic names and `prefix*` patterns it may subscribe to; absent
        /// or null: `--topics-default`.
        topics: Option<Vec<String>>,
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
                | Request::Tokens {}
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
        let (_, req) = parse(br#"{"op":"grant","token":"t","user":"u","topics":["a/*"]}"#);
        assert!(matches!(req, Ok(Request::Grant { topics: Some(t), .. }) if t == ["a/*"]));
        let (_, req) = parse(br#"{"op":"grant","token":"t","user":"u"}"#);
        assert!(matches!(req, Ok(Request::Grant { topics: None, .. })));
        assert!(
            matches!(parse(br#"{"op":"tokens"}"#).1, Ok(ref r @ Request::Tokens {}) if !r.is_job())
        );
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
