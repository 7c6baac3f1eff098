//! Executing control requests (DESIGN.md §5) against the server state, the
//! `events` listeners, and the `/metrics` page that shares the counters.

use std::fmt::Write as _;

use log::debug;
use serde_json::{Value, json};

use crate::conn::Phase;
use crate::control::{self, Fill, Line, MAX_PENDING_REPLIES, Message, Request, Schedule};
use crate::mailbox::Status;
use crate::server::{Again, CTRL_LINE_BUDGET, Server};
use crate::store::Store;

/// Unsent event bytes after which a listener is cut off.
pub const MAX_EVENT_BACKLOG: usize = 1 << 20;
/// Default and largest page of `messages`.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

impl Server {
    /// Readiness on control connection `key`: flush released replies, read
    /// requests, execute complete lines while the unsent replies stay under
    /// the bound. Replies are held, and released at the end of the turn once
    /// the log is synced (`Server::release_replies`). At most [`CTRL_LINE_BUDGET`] lines run per turn; a client
    /// with more waiting is resumed next turn (`again`), so a huge pipelined
    /// stream neither starves other sources nor postpones the flush of its
    /// pushes.
    pub(crate) fn ctrl_ready(&mut self, key: usize) {
        let mut budget = CTRL_LINE_BUDGET;
        // Only replies released by earlier turns go out here; this turn's
        // are held until its log sync.
        match self.ctrls.get_mut(key).map(|c| c.flush()) {
            None => return,
            Some(Err(_)) => return self.drop_ctrl(key),
            Some(Ok(())) => {}
        }
        loop {
            let Some(ctrl) = self.ctrls.get_mut(key) else {
                return;
            };
            let fill = match ctrl.fill(&mut self.scratch) {
                Ok(fill) => fill,
                Err(_) => return self.drop_ctrl(key),
            };
            while self.ctrls[key].pending_replies() < MAX_PENDING_REPLIES {
                if budget == 0 {
                    self.again.push(Again::Ctrl(key));
                    return;
                }
                let Some(line) = self.ctrls[key].next_line() else {
                    break;
                };
                budget -= 1;
                if self.listeners.contains(&key) {
                    continue; // a stream of events takes no more requests
                }
                let before = self.store.as_ref().map(Store::required);
                let reply = match line {
                    Line::Request(request) => self.execute(key, &request),
                    Line::TooLong => control::error(None, "line longer than 1 MiB refused"),
                };
                let needs = self
                    .store
                    .as_ref()
                    .map(Store::required)
                    .filter(|&after| Some(after) != before);
                self.ctrls[key].hold(reply, needs);
                self.mark_ctrl_dirty(key);
            }
            let ctrl = &self.ctrls[key];
            match fill {
                Fill::WouldBlock => return,
                Fill::Eof => {
                    if ctrl.pending_replies() == 0 && !self.ctrl_dirty.contains(&key) {
                        self.drop_ctrl(key);
                    }
                    return;
                }
                Fill::Paused if ctrl.pending_replies() >= MAX_PENDING_REPLIES => return,
                Fill::Paused => {}
            }
        }
    }

    /// Write a control connection's released replies (end of turn).
    pub(crate) fn flush_ctrl(&mut self, key: usize) {
        let Some(ctrl) = self.ctrls.get_mut(key) else {
            return;
        };
        if ctrl.flush().is_err() || (ctrl.eof && ctrl.pending_replies() == 0) {
            self.drop_ctrl(key);
        } else if ctrl.paused && ctrl.pending_replies() < MAX_PENDING_REPLIES {
            self.again.push(Again::Ctrl(key));
        }
    }

    /// Queue an event line to a listener; cut it off once it lags too far.
    /// Events promise nothing durable, so a listener is flushed early when
    /// a busy turn piles them up, instead of waiting for the end of the turn.
    pub(crate) fn queue_event(&mut self, key: usize, line: &[u8]) {
        let ctrl = &mut self.ctrls[key];
        if ctrl.pending_replies() + line.len() > MAX_EVENT_BACKLOG / 4 && ctrl.flush().is_err() {
            return self.drop_ctrl(key);
        }
        if ctrl.pending_replies() + line.len() > MAX_EVENT_BACKLOG {
            debug!("control {key}: events listener too slow, disconnecting");
            ctrl.queue_event(b"{\"event\":\"error\",\"error\":\"listener too slow: events dropped, disconnecting\"}\n");
            let _ = ctrl.flush();
            return self.drop_ctrl(key);
        }
        ctrl.queue_event(line);
        self.mark_ctrl_dirty(key);
    }

    /// Remember to flush control connection `key` at the end of the turn.
    fn mark_ctrl_dirty(&mut self, key: usize) {
        if self.ctrl_dirty.last() != Some(&key) {
            self.ctrl_dirty.push(key);
        }
    }

    /// Execute one request line; returns the reply line.
    fn execute(&mut self, key: usize, line: &[u8]) -> Vec<u8> {
        let (id, request) = control::parse(line);
        let result = match request {
            Ok(request) => self.apply(key, request),
            Err(e) => Err(e),
        };
        match result {
            Ok(fields) => control::ok(id, fields),
            Err(e) => {
                debug!("control {key}: refused request: {e}");
                control::error(id, &e)
            }
        }
    }

    fn apply(&mut self, key: usize, request: Request) -> Result<Value, String> {
        if self.shutting_down && request.is_job() {
            return Err("shutting down".into());
        }
        match request {
            Request::Push {
                mut message,
                schedule,
            } => {
                message.topic = None;
                self.send_or_schedule(message, schedule)
            }
            Request::Publish {
                mut message,
                schedule,
            } => {
                match &message.topic {
                    Some(t) if !t.is_empty() && t.len() <= crate::delivery::MAX_TOPIC => {}
                    _ => return Err("publish needs a \"topic\" of 1 to 128 bytes".into()),
                }
                message.users.clear();
                self.send_or_schedule(message, schedule)
            }
            Request::Cancel { message_id } => Ok(json!({ "cancelled": self.cancel(&message_id) })),
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
            Request::Kick { user, connection } => self.kick(user, connection),
            Request::Messages {
                user,
                status,
                limit,
                after,
            } => self.messages(user.as_deref(), status.as_deref(), limit, after),
            Request::Delete { message_id } => {
                Ok(json!({ "deleted": self.mailbox.delete(&message_id) })).inspect(|_| {
                    if let Some(store) = &mut self.store {
                        store.append(&crate::store::Entry::Del {
                            id: message_id.clone(),
                        });
                    }
                })
            }
            Request::Events {} => {
                if !self.listeners.contains(&key) {
                    self.listeners.push(key);
                }
                Ok(json!({}))
            }
        }
    }

    fn send_or_schedule(&mut self, message: Message, schedule: Schedule) -> Result<Value, String> {
        if schedule.is_scheduled() {
            return self.schedule(message, schedule);
        }
        let report = self.deliver(&message, None)?;
        let mut reply = json!({ "messageId": report.message_id, "seq": report.seq, "delivered": report.delivered });
        if message.topic.is_none() {
            reply["queued"] = json!(report.queued);
        }
        Ok(reply)
    }

    fn kick(&mut self, user: Option<String>, connection: Option<u64>) -> Result<Value, String> {
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

    fn messages(
        &self,
        user: Option<&str>,
        status: Option<&str>,
        limit: Option<usize>,
        after: Option<u64>,
    ) -> Result<Value, String> {
        let status = match status {
            None => None,
            Some(name) => {
                Some(Status::parse(name).ok_or("status must be delivered, held or expired")?)
            }
        };
        let limit = limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
        let page = self.mailbox.list(user, status, after.unwrap_or(0), limit);
        let next = match page.last() {
            Some((_, last)) if !self.mailbox.list(user, status, last.seq, 1).is_empty() => {
                Some(last.seq)
            }
            _ => None,
        };
        let list: Vec<Value> = page
            .into_iter()
            .map(|(user, r)| {
                json!({
                    "messageId": &*r.message_id,
                    "seq": r.seq,
                    "user": &*user,
                    "status": r.status.name(),
                    "ts": r.ts,
                })
            })
            .collect();
        Ok(json!({ "messages": list, "next": next }))
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
                let topics: Vec<&str> = c
                    .topics
                    .iter()
                    .flat_map(|l| l.iter().map(|t| &**t))
                    .collect();
                Some(json!({
                    "user": &**name,
                    "id": c.serial,
                    "peer": c.peer.to_string(),
                    "device": c.device.as_deref(),
                    "connected_at": self.unix_ms(c.connected_ms),
                    "last_seen": self.unix_ms(c.last_read_ms),
                    "subscribed": c.subscribed,
                    "topics": topics,
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
            "topics": self.topics.len(),
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
            "mailbox": self.mailbox.held(),
            "mailbox_bytes": self.mailbox.bytes(),
            "mailbox_evicted": self.mailbox.evicted,
            "mailbox_expired": self.mailbox.expired,
            "jobs": self.job_count(),
            "listeners": self.listeners.len(),
            "data_log": match &self.store {
                None => "off",
                Some(store) if store.failed().is_some() => "failed",
                Some(_) => "ok",
            },
            "data_log_error": self.store.as_ref().and_then(Store::failed),
            "data_log_failures": self.store.as_ref().map_or(0, Store::failures),
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
            ("mailbox_held", "gauge", self.mailbox.held() as u64),
            ("mailbox_evicted_total", "counter", self.mailbox.evicted),
            ("mailbox_expired_total", "counter", self.mailbox.expired),
            ("uptime_seconds", "gauge", self.uptime()),
        ];
        let log_rows = self.store.as_ref().map(|store| {
            [
                ("data_log_ok", "gauge", u64::from(store.failed().is_none())),
                ("data_log_failures_total", "counter", store.failures()),
            ]
        });
        let rows = rows.into_iter().chain(log_rows.into_iter().flatten());
        let mut out = String::new();
        for (name, kind, value) in rows {
            let _ = writeln!(out, "# TYPE wspush_{name} {kind}\nwspush_{name} {value}");
        }
        out
    }
}
