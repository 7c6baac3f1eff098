//! Executing control requests (DESIGN.md §5) against the server state, and
//! the `/metrics` page that shares the same counters.

use std::collections::HashSet;
use std::fmt::Write as _;

use log::debug;
use serde::Serialize;
use serde_json::{Value, json};

use crate::conn::Phase;
use crate::control::{self, Fill, Line, MAX_PENDING_REPLIES, Request};
use crate::frame::{self, OpCode};
use crate::server::{Again, CTRL_LINE_BUDGET, Server};

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
    content: &'a Value,
    ts: u64,
}

impl Server {
    /// Readiness on control connection `key`: flush replies, read requests,
    /// execute complete lines while the unsent replies stay under the bound.
    /// At most [`CTRL_LINE_BUDGET`] lines run per turn; a client with more
    /// waiting is resumed next turn (`again`), so a huge pipelined stream
    /// neither starves other sources nor postpones the flush of its pushes.
    pub(crate) fn ctrl_ready(&mut self, key: usize) {
        let mut budget = CTRL_LINE_BUDGET;
        loop {
            let Some(ctrl) = self.ctrls.get_mut(key) else {
                return;
            };
            if ctrl.flush().is_err() {
                return self.drop_ctrl(key);
            }
            let fill = match ctrl.fill(&mut self.scratch) {
                Ok(fill) => fill,
                Err(_) => return self.drop_ctrl(key),
            };
            while self.ctrls[key].pending_replies() < MAX_PENDING_REPLIES {
                if budget == 0 {
                    self.again.push(Again::Ctrl(key));
                    if self.ctrls[key].flush().is_err() {
                        self.drop_ctrl(key);
                    }
                    return;
                }
                let Some(line) = self.ctrls[key].next_line() else {
                    break;
                };
                budget -= 1;
                let reply = match line {
                    Line::Request(request) => self.execute(&request),
                    Line::TooLong => control::error(None, "line longer than 1 MiB refused"),
                };
                self.ctrls[key].queue(&reply);
            }
            let ctrl = &mut self.ctrls[key];
            if ctrl.flush().is_err() {
                return self.drop_ctrl(key);
            }
            match fill {
                Fill::WouldBlock => return,
                Fill::Eof => {
                    if ctrl.pending_replies() == 0 {
                        self.drop_ctrl(key);
                    }
                    return;
                }
                Fill::Paused if ctrl.pending_replies() >= MAX_PENDING_REPLIES => return,
                Fill::Paused => {}
            }
        }
    }

    /// Execute one request line; returns the reply line.
    fn execute(&mut self, line: &[u8]) -> Vec<u8> {
        let (id, request) = control::parse(line);
        let result = match request {
            Ok(request) => self.apply(request),
            Err(e) => Err(e),
        };
        match result {
            Ok(fields) => control::ok(id, fields),
            Err(e) => {
                debug!("control: refused request: {e}");
                control::error(id, &e)
            }
        }
    }

    fn apply(&mut self, request: Request) -> Result<Value, String> {
        match request {
            Request::Push {
                users,
                content,
                title,
                kind,
            } => Ok(self.push(&users, &content, title.as_deref(), kind)),
            Request::Clients { user } => Ok(self.clients(user.as_deref())),
            Request::Stats {} => Ok(self.stats_json()),
            Request::Grant { token, user } => {
                self.tokens.grant(&token, &user)?;
                Ok(json!({}))
            }
            Request::Revoke { token } => match self.tokens.revoke(&token) {
                Some(tag) => Ok(json!({ "closed": self.close_token(tag) })),
                None => Err("unknown token".into()),
            },
            Request::Kick { user, connection } => {
                let keys: Vec<usize> = match (user, connection) {
                    (Some(user), None) => match self.users.find(&user) {
                        Some(index) => self.users.connections(index, &self.conns),
                        None => Vec::new(),
                    },
                    (None, Some(id)) => self
                        .conns
                        .iter()
                        .filter(|(_, c)| c.serial == id && c.phase == Phase::Open)
                        .map(|(k, _)| k)
                        .collect(),
                    _ => return Err("kick takes exactly one of \"user\" and \"connection\"".into()),
                };
                for &key in &keys {
                    self.start_close(key, 1008, "kicked");
                }
                self.stats.kicked += keys.len() as u64;
                Ok(json!({ "closed": keys.len() }))
            }
        }
    }

    /// Encode the envelope once, as one frame, and queue it to every
    /// recipient: O(1) allocations however many connections receive it.
    fn push(
        &mut self,
        users: &[String],
        content: &Value,
        title: Option<&str>,
        kind: Option<i64>,
    ) -> Value {
        self.seq += 1;
        let message_id = format!("{}-{}", self.id_prefix, self.seq);
        let envelope = Envelope {
            message_id: &message_id,
            seq: self.seq,
            title,
            kind,
            content,
            ts: self.unix_ms(self.now),
        };
        let payload = serde_json::to_vec(&envelope).expect("an envelope always serialises");
        let mut bytes = Vec::with_capacity(frame::header_len(payload.len()) + payload.len());
        frame::write_header(OpCode::Text, payload.len(), &mut bytes);
        bytes.extend_from_slice(&payload);
        let size = bytes.len() as u64;
        let shared = self.turn.add(bytes.into());
        let mut delivered = 0usize;
        let mut enqueue = |key: usize, server: &mut Server| {
            let conn = &mut server.conns[key];
            if conn.wants_pushes() {
                server.turn.enqueue(key, &mut conn.chain, shared);
                delivered += 1;
            }
        };
        if users.is_empty() {
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                enqueue(key, self);
            }
        } else {
            let mut seen = HashSet::with_capacity(users.len());
            for name in users {
                if !seen.insert(name.as_str()) {
                    continue;
                }
                if let Some(index) = self.users.find(name) {
                    for key in self.users.connections(index, &self.conns) {
                        enqueue(key, self);
                    }
                }
            }
        }
        self.stats.pushes += 1;
        self.stats.messages_out += delivered as u64;
        self.stats.bytes_out += size * delivered as u64;
        json!({ "messageId": message_id, "seq": self.seq, "delivered": delivered, "queued": 0 })
    }

    fn clients(&self, user: Option<&str>) -> Value {
        let list: Vec<Value> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Open)
            .filter_map(|(_, c)| {
                let name = &self.users.get(c.user).name;
                if user.is_some_and(|u| u != &**name) {
                    return None;
                }
                Some(json!({
                    "user": &**name,
                    "id": c.serial,
                    "peer": c.peer.to_string(),
                    "device": c.device.as_deref(),
                    "connected_at": self.unix_ms(c.connected_ms),
                    "last_seen": self.unix_ms(c.last_read_ms),
                    "subscribed": c.subscribed,
                    "topics": [],
                }))
            })
            .collect();
        json!({ "clients": list })
    }

    fn stats_json(&self) -> Value {
        let s = &self.stats;
        json!({
            "connections": self.open,
            "handshaking": self.conns.iter().filter(|(_, c)| c.phase == Phase::Handshake).count(),
            "users": self.users.len(),
            "tokens": self.tokens.len(),
            "upgrades": s.upgrades,
            "rejected": s.rejected,
            "pushes": s.pushes,
            "seq": self.seq,
            "messages_in": s.messages_in,
            "messages_out": s.messages_out,
            "bytes_in": s.bytes_in,
            "bytes_out": s.bytes_out,
            "evictions": s.idle_evictions,
            "slow_consumers": s.slow_consumers,
            "kicked": s.kicked,
            "mailbox": 0,
            "uptime": self.uptime(),
        })
    }

    /// `/metrics` in the Prometheus text format.
    pub(crate) fn metrics(&self) -> String {
        let s = &self.stats;
        let rows = [
            ("connections", "gauge", self.open as u64),
            ("users", "gauge", self.users.len() as u64),
            ("upgrades_total", "counter", s.upgrades),
            ("rejected_total", "counter", s.rejected),
            ("pushes_total", "counter", s.pushes),
            ("messages_in_total", "counter", s.messages_in),
            ("messages_out_total", "counter", s.messages_out),
            ("bytes_in_total", "counter", s.bytes_in),
            ("bytes_out_total", "counter", s.bytes_out),
            ("idle_evictions_total", "counter", s.idle_evictions),
            ("slow_consumers_total", "counter", s.slow_consumers),
            ("uptime_seconds", "gauge", self.uptime()),
        ];
        let mut out = String::new();
        for (name, kind, value) in rows {
            let _ = writeln!(out, "# TYPE wspush_{name} {kind}\nwspush_{name} {value}");
        }
        out
    }
}
