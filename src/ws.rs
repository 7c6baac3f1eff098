//! The WebSocket side of the loop: reading, the HTTP upgrade, inbound
//! frames, closing, and the per-connection timer.

use std::io::{self, Read};
use std::rc::Rc;

use log::{debug, trace};

use crate::conn::{self, Event, Input, Phase, Verdict};
use crate::frame::{self, OpCode};
use crate::handshake::{self, HttpError, Outcome, Rules, Upgrade};
use crate::outbox::Backlog;
use crate::server::{Again, CLOSE_TIMEOUT_MS, Server, WS_READ_BUDGET};
use crate::tokens::{self, TokenTag};

/// Largest HTTP request head (DESIGN.md §4: beyond it, 431).
pub const MAX_HEAD: usize = 8 * 1024;

impl Server {
    /// Readiness on WebSocket connection `key`.
    pub(crate) fn ws_ready(&mut self, key: usize, writable: bool) {
        if writable && self.conns.get(key).is_some_and(|c| c.backlog.is_some()) {
            self.write_backlog(key);
        }
        // Read regardless of the event kind: with edge triggering, a missed
        // read would never be reported again; a spare read costs one EAGAIN.
        self.ws_read(key);
    }

    /// Read until `WouldBlock` or the per-turn budget is spent; then the
    /// connection waits in `again` for the next turn, so a fast sender (a
    /// ping flood, a 16 MiB message) cannot starve the others or pile up
    /// replies that the end-of-turn flush has not yet checked.
    pub(crate) fn ws_read(&mut self, key: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut reads = 0;
        while let Some(conn) = self.conns.get_mut(key) {
            if reads == WS_READ_BUDGET {
                let serial = conn.serial;
                self.again.push(Again::Ws { key, serial });
                break;
            }
            reads += 1;
            let n = match conn.stream.read(&mut scratch) {
                Ok(0) => {
                    self.drop_conn(key, "peer closed the connection");
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.drop_conn(key, &format!("read error: {e}"));
                    break;
                }
            };
            conn.last_read_ms = self.now;
            self.stats.bytes_in += n as u64;
            trace!("conn {}: read {n} bytes", conn.serial);
            match conn.phase {
                Phase::Handshake => self.handshake_bytes(key, &mut scratch[..n]),
                Phase::Open | Phase::Closing => self.frame_bytes(key, &mut scratch[..n]),
                // Read and discard, so closing with unread input does not
                // turn into a reset that could destroy our last bytes.
                Phase::Finishing => {}
            }
        }
        self.scratch = scratch;
    }

    fn handshake_bytes(&mut self, key: usize, data: &mut [u8]) {
        let conn = &mut self.conns[key];
        let mut held;
        let bytes: &mut [u8] = match conn.input.take() {
            Some(mut input) => {
                input.buf.extend_from_slice(data);
                held = input.buf;
                &mut held
            }
            None => data,
        };
        let rules = Rules {
            ws_path: &self.args.ws_path,
            allowed_origins: &self.args.allowed_origins,
            max_head: MAX_HEAD,
        };
        match handshake::examine(bytes, &rules) {
            Outcome::Partial => conn.input = Some(Box::new(Input::holding(bytes.to_vec()))),
            Outcome::Reject(err) => self.refuse(key, &err),
            Outcome::Health => {
                let response = match self.store.as_ref().and_then(|s| s.failed()) {
                    Some(reason) => {
                        handshake::http_response(503, &[], &format!("data log failed: {reason}\n"))
                    }
                    None => handshake::http_response(200, &[], "ok\n"),
                };
                self.http_answer(key, response);
            }
            Outcome::Metrics => {
                let body = self.metrics();
                self.http_answer(key, handshake::http_response(200, &[], &body));
            }
            Outcome::Upgrade { upgrade, consumed } => {
                if self.upgrade(key, upgrade) && consumed < bytes.len() {
                    // A pipelined first frame: not lost.
                    self.frame_bytes(key, &mut bytes[consumed..]);
                }
            }
        }
    }

    /// Authenticate and switch protocols; false if the request was refused.
    fn upgrade(&mut self, key: usize, up: Upgrade) -> bool {
        let (user, tag) = match self.tokens.lookup(&up.token) {
            Ok(found) => found,
            Err(reason) => {
                debug!(
                    "conn {}: 401 {reason} (token {})",
                    self.conns[key].serial,
                    tokens::fingerprint(&up.token)
                );
                self.refuse(
                    key,
                    &HttpError {
                        status: 401,
                        reason,
                    },
                );
                return false;
            }
        };
        if self.open >= self.max_connections {
            self.refuse(
                key,
                &HttpError {
                    status: 503,
                    reason: "server full",
                },
            );
            return false;
        }
        let cap = self.args.max_conns_per_user;
        if cap > 0 {
            while let Some(index) = self.users.find(&user) {
                if (self.users.get(index).count as usize) < cap {
                    break;
                }
                let oldest = self.users.get(index).head as usize;
                self.start_close(oldest, 1008, "too many connections for this user");
            }
        }
        let now = self.now;
        let ping = self.args.ping_interval * 1000;
        let conn = &mut self.conns[key];
        conn.phase = Phase::Open;
        conn.token = tag;
        conn.connected_ms = now;
        conn.next_ping_ms = if ping > 0 { now + ping } else { 0 };
        conn.device = up.device.or(up.user_agent).map(String::into_boxed_str);
        debug!(
            "conn {}: upgraded as user {user} (token {})",
            conn.serial,
            tokens::fingerprint(&up.token)
        );
        self.users.join(user.clone(), key, &mut self.conns);
        self.open += 1;
        self.stats.upgrades += 1;
        self.send(key, handshake::switching_protocols(&up.accept).into());
        self.mailbox_on_connect(key, &user, up.since);
        self.presence(key, true);
        self.rearm_open(key);
        true
    }

    /// Answer an HTTP error and close once it is written.
    fn refuse(&mut self, key: usize, err: &HttpError) {
        self.stats.rejected += 1;
        debug!(
            "conn {}: HTTP {} {}",
            self.conns[key].serial, err.status, err.reason
        );
        self.http_answer(key, handshake::reject_response(err));
    }

    fn http_answer(&mut self, key: usize, response: Vec<u8>) {
        self.send(key, response.into());
        self.finish(key);
    }

    fn frame_bytes(&mut self, key: usize, data: &mut [u8]) {
        let mut input = self.conns[key].input.take();
        let max = self.max_message;
        let verdict = conn::feed(&mut input, data, max, |event| self.on_event(key, event));
        if let Some(conn) = self.conns.get_mut(key) {
            conn.input = input;
            match verdict {
                Verdict::Close(code, reason) => {
                    debug!("conn {}: closing with {code}: {reason}", conn.serial);
                    self.start_close(key, code, reason);
                }
                Verdict::Fail(code, reason) => {
                    debug!("conn {}: failing with {code}: {reason}", conn.serial);
                    self.fail(key, code, reason);
                }
                Verdict::Continue | Verdict::Stop => {}
            }
        }
    }

    fn on_event(&mut self, key: usize, event: Event<'_>) -> Verdict {
        let conn = &mut self.conns[key];
        if conn.phase == Phase::Closing {
            // We already said goodbye: only the peer's close matters now.
            if matches!(event, Event::Close(_)) {
                self.drop_conn(key, "close handshake complete");
                return Verdict::Stop;
            }
            return Verdict::Continue;
        }
        match event {
            Event::Text("--") => {}
            Event::Text("subscribe") => conn.subscribed = true,
            Event::Text("unsubscribe") => conn.subscribed = false,
            Event::Text(text) if self.args.echo => {
                let echo = frame::encode(OpCode::Text, text.as_bytes());
                self.send(key, echo.into());
            }
            Event::Binary(data) if self.args.echo => {
                let echo = frame::encode(OpCode::Binary, data);
                self.send(key, echo.into());
            }
            Event::Text(text) => {
                if !self.topic_command(key, text) {
                    self.upstream(key, Some(text), None);
                }
            }
            Event::Binary(data) => self.upstream(key, None, Some(data)),
            Event::Ping(payload) => {
                let pong = frame::encode(OpCode::Pong, payload);
                self.send(key, pong.into());
            }
            Event::Pong => {}
            Event::Close(close) => {
                // Echo the peer's code (RFC 6455 §5.5.1), then close the TCP
                // connection ourselves once the reply is written.
                let reply = match close {
                    Some((code, _)) => frame::encode_close(code, ""),
                    None => frame::encode(OpCode::Close, b""),
                };
                debug!("conn {}: peer closed with {close:?}", conn.serial);
                self.leave_open(key);
                self.send(key, reply.into());
                self.finish(key);
                return Verdict::Stop;
            }
        }
        Verdict::Continue
    }

    /// Queue one frame (or HTTP bytes) for connection `key` in this turn.
    pub(crate) fn send(&mut self, key: usize, bytes: Rc<[u8]>) {
        self.stats.bytes_out += bytes.len() as u64;
        let frame = self.turn.add(bytes, 0);
        self.turn.enqueue(key, &mut self.conns[key].chain, frame);
    }

    /// Begin our side of the close handshake (no-op if already closing).
    pub(crate) fn start_close(&mut self, key: usize, code: u16, reason: &'static str) {
        match self.conns[key].phase {
            Phase::Open => {}
            Phase::Handshake => return self.drop_conn(key, reason),
            Phase::Closing | Phase::Finishing => return,
        }
        self.leave_open(key);
        self.send(key, frame::encode_close(code, reason).into());
        self.conns[key].phase = Phase::Closing;
        self.arm(key, self.now + CLOSE_TIMEOUT_MS);
    }

    /// Fail the connection: our close frame, then TCP closes once it is
    /// written (see [`Verdict::Fail`]). Already closing: the peer answered
    /// our close with garbage or a bad close frame, so drop it now.
    fn fail(&mut self, key: usize, code: u16, reason: &'static str) {
        match self.conns[key].phase {
            Phase::Open => {
                self.leave_open(key);
                self.send(key, frame::encode_close(code, reason).into());
                self.finish(key);
            }
            Phase::Closing => self.drop_conn(key, reason),
            Phase::Handshake | Phase::Finishing => {}
        }
    }

    /// Close every live connection opened with a token (revoked or removed).
    pub(crate) fn close_token(&mut self, tag: TokenTag) -> usize {
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Open && c.token == tag)
            .map(|(k, _)| k)
            .collect();
        for &key in &keys {
            self.start_close(key, 1008, "token revoked");
        }
        keys.len()
    }

    /// The client does not read: keep only what is half on the wire, queue
    /// the close frame behind it, and give it the close timeout to go.
    pub(crate) fn slow_consumer(&mut self, key: usize) {
        self.leave_open(key);
        self.stats.slow_consumers += 1;
        let conn = &mut self.conns[key];
        debug!(
            "conn {}: slow consumer, {} bytes unsent",
            conn.serial,
            conn.unsent()
        );
        let backlog = conn.backlog.get_or_insert_with(Box::<Backlog>::default);
        backlog.truncate_to_partial();
        backlog.push(frame::encode_close(4000, "slow consumer").into());
        conn.phase = Phase::Closing;
        self.arm(key, self.now + CLOSE_TIMEOUT_MS);
    }

    /// Last bytes are queued: drop the socket once they are written.
    fn finish(&mut self, key: usize) {
        self.conns[key].phase = Phase::Finishing;
        self.arm(key, self.now + CLOSE_TIMEOUT_MS);
    }

    /// Leave the set of connections that receive pushes.
    fn leave_open(&mut self, key: usize) {
        if self.conns[key].phase == Phase::Open {
            self.open -= 1;
            self.presence(key, false);
        }
        self.users.leave(key, &mut self.conns);
    }

    /// Forget a connection now: its socket is closed, its timer cancelled.
    pub(crate) fn drop_conn(&mut self, key: usize, why: &str) {
        self.leave_open(key);
        self.leave_topics(key);
        let conn = self.conns.remove(key);
        if let Some(timer) = conn.timer {
            self.wheel.cancel(timer);
        }
        debug!("conn {}: dropped ({why})", conn.serial);
    }

    /// Connection `key`'s timer fired (handshake, idle/ping or close deadline).
    pub(crate) fn on_conn_timer(&mut self, key: usize, generation: u32) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.generation() != generation {
            return;
        }
        conn.timer = None;
        match conn.phase {
            Phase::Handshake => self.refuse(
                key,
                &HttpError {
                    status: 408,
                    reason: "handshake timeout",
                },
            ),
            Phase::Open => self.idle_or_ping(key),
            Phase::Closing | Phase::Finishing => self.drop_conn(key, "close deadline passed"),
        }
    }

    fn idle_or_ping(&mut self, key: usize) {
        let idle = self.args.idle_timeout * 1000;
        let conn = &mut self.conns[key];
        if self.now >= conn.last_read_ms + idle {
            self.stats.idle_evictions += 1;
            debug!(
                "conn {}: idle for {} s",
                conn.serial, self.args.idle_timeout
            );
            return self.start_close(key, 4001, "idle timeout");
        }
        if conn.next_ping_ms != 0 && self.now >= conn.next_ping_ms {
            conn.next_ping_ms = self.now + self.args.ping_interval * 1000;
            let ping = self.ping_frame.clone();
            self.send(key, ping);
        }
        self.rearm_open(key);
    }

    /// Arm an open connection's timer for its next idle check or ping. Reads
    /// don't touch the wheel: `last_read_ms` is checked when this fires.
    fn rearm_open(&mut self, key: usize) {
        let conn = &self.conns[key];
        let idle_at = conn.last_read_ms + self.args.idle_timeout * 1000;
        let at = match conn.next_ping_ms {
            0 => idle_at,
            ping => ping.min(idle_at),
        };
        self.arm(key, at);
    }
}
