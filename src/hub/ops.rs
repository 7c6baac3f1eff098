//! Control requests carried out against the hub (see docs/protocol.md,
//! "The control protocol"), and the one table of counters that both `stats`
//! and `/metrics` read.

use std::borrow::Cow;

use serde_json::{Value, json};

use super::cluster::Query;
use super::journal::LogRecord;
use super::mailbox::Status;
use super::tokens::{self, TokenTag};
use super::topics::{MAX_TOPIC, patterns, valid_topic};
use super::{Call, ConnId, Hub, Link, Origin, Out, auth};
use crate::proto::control::{Message, Request, Schedule};

/// Default and largest page of `messages`.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

impl Hub {
    /// Carry out one parsed request; the reply's fields, or why not.
    pub(super) fn apply(
        &mut self,
        origin: Origin,
        request: Request,
        out: &mut impl Out,
    ) -> Result<Value, String> {
        if self.shutting_down && request.is_job() {
            return Err("shutting down".into());
        }
        match request {
            Request::Push {
                mut message,
                schedule,
            } => {
                message.topic = None;
                self.send_or_schedule(message, schedule, out)
            }
            Request::Publish {
                mut message,
                schedule,
            } => {
                if !message.topic.as_deref().is_some_and(valid_topic) {
                    return Err(format!(
                        "publish needs a \"topic\" of 1 to {MAX_TOPIC} bytes"
                    ));
                }
                message.users.clear();
                self.send_or_schedule(message, schedule, out)
            }
            Request::Cancel { message_id } => {
                Ok(json!({ "cancelled": self.cancel(&message_id, out) }))
            }
            Request::Clients { user } => Ok(self.clients(user.as_deref(), out)),
            Request::Stats {} => Ok(self.stats_json(&out.transport())),
            Request::Grant {
                token,
                user,
                topics,
            } => self.grant(&token, user, topics, out),
            Request::Revoke { token } => match self.tokens.revoke(&token) {
                Some(tag) => {
                    let digest = tokens::hex(&tokens::digest(&token));
                    self.log(
                        &LogRecord::Revoke {
                            digest: digest.into(),
                        },
                        out,
                    );
                    Ok(json!({ "closed": self.close_token(tag, out) }))
                }
                None => Err("unknown token".into()),
            },
            Request::Tokens {} => Ok(self.token_list()),
            Request::Kick { user, connection } => self.kick(user, connection, out),
            Request::Messages {
                user,
                status,
                limit,
                after,
            } if self.shared_mailbox() => {
                let status = status.as_deref();
                if let Some(name) = status {
                    Status::parse(name).ok_or("status must be delivered, held or expired")?;
                }
                let call = Call::Messages {
                    user: user.as_deref(),
                    status,
                    after: after.unwrap_or(0),
                    limit: limit.unwrap_or(PAGE).clamp(1, MAX_PAGE),
                };
                self.shared_query(Query::Messages, call, out)
            }
            Request::Messages {
                user,
                status,
                limit,
                after,
            } => self.messages(user.as_deref(), status.as_deref(), limit, after),
            Request::Delete { message_id } if self.shared_mailbox() => {
                let call = Call::Delete {
                    message_id: &message_id,
                };
                self.shared_query(Query::Delete, call, out)
            }
            Request::Delete { message_id } => {
                let deleted = self.mailbox.delete(&message_id);
                self.log(
                    &LogRecord::Del {
                        id: message_id.into(),
                    },
                    out,
                );
                Ok(json!({ "deleted": deleted }))
            }
            Request::Events {} => {
                if !self.listeners.contains(&origin) {
                    self.listeners.push(origin);
                }
                Ok(json!({}))
            }
        }
    }

    /// Whether `origin` is an `events` listener (which takes no requests).
    pub fn is_listener(&self, origin: Origin) -> bool {
        self.listeners.contains(&origin)
    }

    fn send_or_schedule(
        &mut self,
        mut message: Message,
        schedule: Schedule,
        out: &mut impl Out,
    ) -> Result<Value, String> {
        message.dedupe_users();
        if schedule.is_scheduled() {
            return self.schedule(message, schedule, out);
        }
        if self.cluster.is_some() {
            let reference = self.relay(&message, None, out)?;
            self.relayed(reference);
            return Ok(json!({}));
        }
        let report = self.deliver(&message, None, out)?;
        let mut reply = json!({
            "messageId": &*report.message_id,
            "seq": report.seq,
            "delivered": report.delivered,
        });
        if message.topic.is_none() {
            reply["queued"] = json!(report.queued);
        }
        Ok(reply)
    }

    /// `grant`: check the topic patterns, add or replace the token, and log
    /// it by digest so that it survives a restart.
    fn grant(
        &mut self,
        token: &str,
        user: String,
        topics: Option<Vec<String>>,
        out: &mut impl Out,
    ) -> Result<Value, String> {
        let topics = topics.map(patterns).transpose()?;
        let at = self.unix_ms();
        let digest = self.tokens.grant_with(token, &user, topics.clone(), at)?;
        let record = LogRecord::Grant {
            digest: tokens::hex(&digest).into(),
            user: user.into(),
            topics: topics.as_deref().map(Cow::Borrowed),
            at,
        };
        self.log(&record, out);
        Ok(json!({}))
    }

    /// `tokens`: every token by fingerprint, sorted by user.
    fn token_list(&self) -> Value {
        let mut entries: Vec<_> = self
            .tokens
            .entries()
            .map(|e| (e.user, tokens::fingerprint_of(e.digest), e))
            .collect();
        entries.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let list: Vec<Value> = entries
            .into_iter()
            .map(|(user, fingerprint, e)| {
                json!({
                    "fingerprint": fingerprint,
                    "user": user,
                    "topics": e.topics,
                    "granted_at": e.granted_at,
                    "source": if e.granted_at.is_some() { "grant" } else { "file" },
                })
            })
            .collect();
        json!({ "tokens": list })
    }

    /// Close every open connection opened with a token (revoked or removed).
    pub(super) fn close_token(&mut self, tag: TokenTag, out: &mut impl Out) -> usize {
        let doomed: Vec<ConnId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.token == tag)
            .map(|(id, _)| id)
            .collect();
        for &conn in &doomed {
            self.close(conn, auth::CLOSE_REJECTED, "token revoked", out);
        }
        doomed.len()
    }

    fn kick(
        &mut self,
        user: Option<String>,
        connection: Option<u64>,
        out: &mut impl Out,
    ) -> Result<Value, String> {
        let doomed: Vec<ConnId> = match (user, connection) {
            (Some(user), None) => match self.users.find(&user) {
                Some(index) => self
                    .users
                    .walk(index, &self.sessions)
                    .map(|(id, _)| id)
                    .collect(),
                None => Vec::new(),
            },
            (None, Some(serial)) => self
                .sessions
                .iter()
                .filter(|(_, s)| s.serial.get() == serial)
                .map(|(id, _)| id)
                .collect(),
            _ => return Err("kick takes exactly one of \"user\" and \"connection\"".into()),
        };
        for &conn in &doomed {
            self.close(conn, 1008, "kicked", out);
        }
        self.stats.kicked += doomed.len() as u64;
        Ok(json!({ "closed": doomed.len() }))
    }

    /// `messages`: one page of mailbox records; `"mailbox":"off"` when the
    /// server runs without `--mailbox`.
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
        let mut reply = json!({ "messages": list, "next": next });
        if !self.mailbox.enabled() {
            // Without --mailbox nothing is ever recorded: say so rather
            // than answer a list that only looks empty.
            reply["mailbox"] = json!("off");
        }
        Ok(reply)
    }

    fn clients(&self, user: Option<&str>, out: &impl Out) -> Value {
        let base = self.config.started_unix_ms;
        let list: Vec<Value> = self
            .sessions
            .iter()
            .filter_map(|(id, s)| {
                let name = self.users.name_of(s);
                if user.is_some_and(|u| u != &**name) {
                    return None;
                }
                let link = out.link(id);
                let topics: Vec<&str> = s
                    .topics
                    .iter()
                    .flat_map(|l| l.iter().map(|t| &**t))
                    .collect();
                Some(json!({
                    "user": &**name,
                    "id": s.serial,
                    "peer": link.as_ref().and_then(peer_of),
                    "proxy": link.as_ref().filter(|l| l.forwarded.is_some()).and_then(|l| l.peer).map(|p| p.to_string()),
                    "device": self.sessions.device_of(s),
                    "connected_at": base + s.connected_ms,
                    "last_seen": base + link.map_or(s.connected_ms, |l| l.last_seen_ms),
                    "subscribed": s.subscribed(),
                    "topics": topics,
                }))
            })
            .collect();
        json!({ "clients": list })
    }
}

/// What `clients` and events show as a connection's peer: the client a
/// trusted proxy forwarded it for (an address without a port), else the
/// TCP peer.
pub(super) fn peer_of(link: &Link) -> Option<String> {
    match link.forwarded {
        Some(client) => Some(client.to_string()),
        None => link.peer.map(|p| p.to_string()),
    }
}
