//! The HTTP API's side of the loop: a request's body is read in the
//! handshake phase (under the handshake deadline), handed to the hub as a
//! job with [`Origin::Http`], and its reply answered once the turn's log
//! records are synced — the same promise control replies keep. Keep-alive
//! connections then wait for their next request; pipelined requests are
//! examined one at a time, the next one in the turn after the answer.

use log::{debug, info};

use super::Again;
use super::conn::{Input as Pending, Phase};
use super::event_loop::Server;
use super::wire::Wire;
use crate::hub::{Input, Origin};
use crate::proto::control::not_durable;
use crate::proto::handshake::{self, HttpError};
use crate::proto::http::{self, ApiHead, CollectHead, MAX_BODY};

/// Largest number of bytes an HTTP connection may send ahead (pipelined
/// requests) while its current request is with the hub.
const MAX_AHEAD: usize = super::ws_conn::MAX_HEAD + MAX_BODY;

impl Server {
    /// A valid API head of `consumed` bytes at the start of `bytes`.
    /// Returns true while the body is incomplete: keep `bytes` and read on.
    pub(super) fn api_request(
        &mut self,
        key: usize,
        head: ApiHead,
        consumed: usize,
        bytes: &[u8],
    ) -> bool {
        let end = consumed + head.length;
        if bytes.len() < end {
            // Sent once: the first time the head is complete, no body yet.
            if head.expect_continue && bytes.len() == consumed {
                self.wire.queue(key, http::CONTINUE.into());
            }
            return true;
        }
        let conn = &mut self.wire.conns[key];
        let id = conn.id(key);
        conn.phase = Phase::Api {
            keep_alive: head.keep_alive,
        };
        if end < bytes.len() {
            conn.put_input(Some(Pending::holding(bytes[end..].to_vec())));
        }
        debug!("conn {}: API {}", conn.serial, head.op);
        let origin = Origin::Http(id);
        match http::control_line(&head.op, &bytes[consumed..end]) {
            Ok(line) => self.feed(Input::Request {
                origin,
                line: &line,
            }),
            Err(reason) => {
                let line = http::error_body(reason);
                crate::hub::Out::reply(&mut self.wire, origin, line, false);
            }
        }
        false
    }

    /// A valid `GET /api/collect` head of `consumed` bytes (it has no body).
    pub(super) fn collect_request(
        &mut self,
        key: usize,
        head: CollectHead,
        consumed: usize,
        bytes: &[u8],
    ) {
        let conn = &mut self.wire.conns[key];
        let origin = Origin::Http(conn.id(key));
        conn.phase = Phase::Api {
            keep_alive: head.keep_alive,
        };
        if consumed < bytes.len() {
            conn.put_input(Some(Pending::holding(bytes[consumed..].to_vec())));
        }
        self.feed(Input::Collect {
            origin,
            token: &head.token,
            since: head.since,
        });
    }

    /// Bytes from a client whose request is with the hub: kept for later,
    /// within [`MAX_AHEAD`].
    pub(super) fn api_ahead(&mut self, key: usize, data: &[u8]) {
        let conn = &mut self.wire.conns[key];
        let input = conn.input_or_default();
        if input.buf.len() + data.len() > MAX_AHEAD {
            return self.drop_conn(key, "too much sent ahead of an HTTP answer");
        }
        input.buf.extend_from_slice(data);
    }

    /// Answer this turn's HTTP API replies (after the log sync, before the
    /// turn's writes): a reply whose records did not reach the disk says so.
    pub(super) fn release_http(&mut self) {
        if self.wire.http_held.is_empty() {
            return;
        }
        let (durable, failure) = match &self.wire.store {
            Some(store) => (store.durable(), store.failed()),
            None => (u64::MAX, None),
        };
        let failure = failure.unwrap_or("records not written").to_string();
        for held in std::mem::take(&mut self.wire.http_held) {
            let key = held.conn.key as usize;
            let Some(conn) = self.wire.conn(held.conn) else {
                continue;
            };
            let Phase::Api { keep_alive } = conn.phase else {
                continue;
            };
            let line = match held.needs {
                Some(needs) if needs > durable => not_durable(&held.line, &failure),
                _ => held.line,
            };
            let status = held.status.unwrap_or_else(|| http::status_of(&line));
            let keep = keep_alive && !self.shutting_down;
            let extra: &[(&str, &str)] = match status {
                401 => &[("WWW-Authenticate", "Bearer realm=\"wspush\"")],
                _ => &[],
            };
            let response = http::response(status, keep, extra, &line);
            self.wire.queue(key, response.into());
            if !keep {
                self.wire.finish(key);
                continue;
            }
            let conn = &mut self.wire.conns[key];
            conn.phase = Phase::Handshake;
            if conn.has_input() {
                let serial = conn.serial;
                self.again.push(Again::Http { key, serial });
            }
            let deadline = self.wire.now + self.args.handshake_timeout * 1000;
            self.wire.arm(key, deadline);
        }
    }
}

/// Plain HTTP answers and refusals on the WebSocket port.
impl Wire {
    /// Answer an HTTP request and close once the answer is written.
    pub fn http_answer(&mut self, key: usize, response: Vec<u8>) {
        self.queue(key, response.into());
        self.finish(key);
    }

    /// Refuse an HTTP API request from its head: a JSON error, then close.
    pub fn refuse_api(&mut self, key: usize, err: &HttpError) {
        self.note_refusal(key, err, None);
        self.http_answer(key, crate::proto::http::error_response(err));
    }

    /// Refuse a request with an HTTP error; `origin` is the `Origin` it
    /// sent, shown in the log line of a 403.
    pub fn refuse_http(&mut self, key: usize, err: &HttpError, origin: Option<&str>) {
        self.note_refusal(key, err, origin);
        self.http_answer(key, handshake::reject_response(err));
    }

    /// Count a refused request and log it at info, at most
    /// [`crate::hub::stats::LOG_LINES_PER_SEC`] lines a second.
    fn note_refusal(&mut self, key: usize, err: &HttpError, origin: Option<&str>) {
        self.traffic.rejected += 1;
        self.tallies.http_error(err.status);
        let Some(suppressed) = self.tallies.refusal_log.take(self.now) else {
            return;
        };
        let conn = &self.conns[key];
        let peer = conn
            .stream
            .peer_addr()
            .map_or_else(|_| "unknown".to_string(), |p| p.to_string());
        let origin = origin.map_or_else(String::new, |o| format!(", Origin {o:?}"));
        info!(
            "conn {}: HTTP {} {} from {peer}{origin}{}",
            conn.serial,
            err.status,
            err.reason,
            crate::hub::suppressed_note(suppressed)
        );
    }
}
