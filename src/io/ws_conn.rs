//! The WebSocket side of the loop: reading, the HTTP request, inbound
//! frames, closing, and the per-connection timer. What a client's message
//! means is the hub's: whole messages go to it as [`Input::Text`] and
//! [`Input::Binary`].

use std::io::{self, Read};

use log::{debug, info, trace};

use super::conn::{self, Event, Input as Pending, Phase, Stamp, Verdict};
use super::event_loop::Server;
use super::{Again, WS_READ_BUDGET};
use crate::hub::Input;
use crate::proto::frame::{self, OpCode};
use crate::proto::handshake::{self, HttpError, Outcome, Rules};
use crate::proto::proxy;

/// Largest HTTP request head (docs/protocol.md, "The WebSocket endpoint":
/// beyond it, 431).
pub const MAX_HEAD: usize = 8 * 1024;

impl Server {
    /// Readiness on WebSocket connection `key`.
    pub(super) fn ws_ready(&mut self, key: usize, writable: bool) {
        if writable && self.wire.conns.get(key).is_some_and(|c| c.has_backlog()) {
            let freed = self.wire.write_backlog(key);
            self.note_freed(freed);
            self.settle();
        }
        // Read regardless of the event kind: with edge triggering, a missed
        // read would never be reported again; a spare read costs one EAGAIN.
        self.ws_read(key);
    }

    /// Read until `WouldBlock` or the per-turn budget is spent; then the
    /// connection waits in `again` for the next turn, so a fast sender (a
    /// ping flood, a 16 MiB message) cannot starve the others or pile up
    /// replies that the end-of-turn flush has not yet checked.
    pub(super) fn ws_read(&mut self, key: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut reads = 0;
        while let Some(conn) = self.wire.conns.get_mut(key) {
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
            conn.last_read = Stamp::of(self.wire.now);
            self.wire.traffic.bytes_in += n as u64;
            trace!("conn {}: read {n} bytes", conn.serial);
            match conn.phase {
                Phase::Handshake => self.handshake_bytes(key, &mut scratch[..n]),
                Phase::Open | Phase::Closing => self.frame_bytes(key, &mut scratch[..n]),
                Phase::Api { .. } => self.api_ahead(key, &scratch[..n]),
                // Read and discard, so closing with unread input does not
                // turn into a reset that could destroy our last bytes.
                Phase::Finishing => {}
            }
        }
        self.scratch = scratch;
    }

    /// Bytes of an HTTP request (a WebSocket upgrade, an API call, or a
    /// plain GET); an incomplete request is kept in the connection's input.
    pub(super) fn handshake_bytes(&mut self, key: usize, data: &mut [u8]) {
        match self.wire.conns[key].take_input() {
            Some(mut input) => {
                input.buf.extend_from_slice(data);
                if self.request(key, &mut input.buf)
                    && let Some(conn) = self.wire.conns.get_mut(key)
                {
                    conn.put_input(Some(input));
                }
            }
            None => {
                if self.request(key, data)
                    && let Some(conn) = self.wire.conns.get_mut(key)
                {
                    conn.put_input(Some(Pending::holding(data.to_vec())));
                }
            }
        }
    }

    /// Act on the request bytes received so far; true when they are
    /// incomplete and must be kept.
    fn request(&mut self, key: usize, bytes: &mut [u8]) -> bool {
        let rules = Rules {
            ws_path: &self.args.ws_path,
            allowed_origins: &self.args.allowed_origins,
            max_head: MAX_HEAD,
            api_key: self.api_key.as_ref(),
            demo: self.demo.is_some(),
        };
        match handshake::examine(bytes, &rules) {
            Outcome::Partial => return true,
            Outcome::Api { head, consumed } => return self.api_request(key, head, consumed, bytes),
            Outcome::Collect { head, consumed } => self.collect_request(key, head, consumed, bytes),
            Outcome::ApiReject(err) => self.wire.refuse_api(key, &err),
            Outcome::Reject(err) => {
                let origin = (err.status == 403)
                    .then(|| handshake::origin_of(bytes))
                    .flatten();
                self.wire.refuse_http(key, &err, origin.as_deref());
            }
            Outcome::Health { head } => {
                let failed = self.wire.store.as_ref().and_then(|s| s.failed());
                let response = match (failed, self.hub.redis_up()) {
                    (Some(reason), _) => {
                        handshake::http_response(503, &[], &format!("data log failed: {reason}\n"))
                    }
                    (None, Some(false)) => handshake::http_response(503, &[], "redis: down\n"),
                    (None, _) => handshake::http_response(200, &[], "ok\n"),
                };
                self.wire.http_answer(key, head_or_all(response, head));
            }
            Outcome::Demo { asset, head } => {
                let demo = self
                    .demo
                    .as_ref()
                    .expect("demo assets are routed only with --demo");
                let response = demo.response(asset).to_vec();
                self.wire.http_answer(key, head_or_all(response, head));
            }
            Outcome::Metrics { head } => {
                let body = self.hub.metrics(&crate::hub::Out::transport(&self.wire));
                let response = handshake::typed_response(200, handshake::METRICS_TYPE, &[], &body);
                self.wire.http_answer(key, head_or_all(response, head));
            }
            Outcome::Upgrade { upgrade, consumed } => {
                self.note_forwarded(key, upgrade.forwarded_for.as_deref());
                let conn = &self.wire.conns[key];
                let id = conn.id(key);
                let serial = conn.serial;
                self.feed(Input::Upgrade {
                    conn: id,
                    request: upgrade,
                    serial,
                });
                if self.hub.is_open(id) && consumed < bytes.len() {
                    // A pipelined first frame: not lost.
                    self.frame_bytes(key, &mut bytes[consumed..]);
                }
            }
        }
        false
    }

    fn frame_bytes(&mut self, key: usize, data: &mut [u8]) {
        let mut input = self.wire.conns[key].take_input();
        let max = self.max_message;
        let verdict = conn::feed(&mut input, data, max, |event| self.on_event(key, event));
        if let Some(conn) = self.wire.conns.get_mut(key) {
            conn.put_input(input);
            match verdict {
                Verdict::Close(code, reason) => {
                    debug!("conn {}: closing with {code}: {reason}", conn.serial);
                    let id = conn.id(key);
                    self.feed(Input::Left { conn: id });
                    self.wire.start_close(key, code, reason);
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
        let conn = &self.wire.conns[key];
        let id = conn.id(key);
        if conn.phase == Phase::Closing {
            // We already said goodbye: only the peer's close matters now.
            if matches!(event, Event::Close(_)) {
                self.drop_conn(key, "close handshake complete");
                return Verdict::Stop;
            }
            return Verdict::Continue;
        }
        match event {
            // The heartbeat and the push switches are commands, even in
            // echo mode.
            Event::Text(text @ ("--" | "subscribe" | "unsubscribe")) => {
                self.feed(Input::Text { conn: id, text })
            }
            Event::Text(text) if self.args.echo => {
                let echo = frame::encode(OpCode::Text, text.as_bytes());
                self.wire.queue(key, echo.into());
            }
            Event::Binary(data) if self.args.echo => {
                let echo = frame::encode(OpCode::Binary, data);
                self.wire.queue(key, echo.into());
            }
            Event::Text(text) => self.feed(Input::Text { conn: id, text }),
            Event::Binary(data) => self.feed(Input::Binary { conn: id, data }),
            Event::Ping(payload) => {
                let pong = frame::encode(OpCode::Pong, payload);
                self.wire.queue(key, pong.into());
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
                self.feed(Input::Left { conn: id });
                self.wire.queue(key, reply.into());
                self.wire.finish(key);
                return Verdict::Stop;
            }
        }
        Verdict::Continue
    }

    /// Fail the connection: our close frame, then TCP closes once it is
    /// written (see [`Verdict::Fail`]). Already closing: the peer answered
    /// our close with garbage or a bad close frame, so drop it now.
    fn fail(&mut self, key: usize, code: u16, reason: &'static str) {
        let conn = &self.wire.conns[key];
        match conn.phase {
            Phase::Open => {
                let id = conn.id(key);
                self.feed(Input::Left { conn: id });
                self.wire.tallies.close(code);
                self.wire
                    .queue(key, frame::encode_close(code, reason).into());
                self.wire.finish(key);
            }
            Phase::Closing => self.drop_conn(key, reason),
            Phase::Handshake | Phase::Api { .. } | Phase::Finishing => {}
        }
    }

    /// Connection `key`'s timer fired (handshake, idle/ping or close deadline).
    pub(super) fn on_conn_timer(&mut self, key: usize) {
        let Some(conn) = self.wire.conns.get_mut(key) else {
            return;
        };
        conn.timer = None;
        match conn.phase {
            Phase::Handshake => {
                let timeout = HttpError {
                    status: 408,
                    reason: "handshake timeout",
                };
                self.wire.refuse_http(key, &timeout, None);
            }
            Phase::Open => self.idle_or_ping(key),
            Phase::Api { .. } => self.drop_conn(key, "HTTP request deadline passed"),
            Phase::Closing | Phase::Finishing => self.drop_conn(key, "close deadline passed"),
        }
    }

    fn idle_or_ping(&mut self, key: usize) {
        let now = self.wire.now;
        let conn = &mut self.wire.conns[key];
        if now >= conn.last_read.ms(now) + self.wire.limits.idle_ms {
            self.wire.traffic.idle_evictions += 1;
            debug!(
                "conn {}: idle for {} s",
                conn.serial, self.args.idle_timeout
            );
            let id = conn.id(key);
            self.feed(Input::Left { conn: id });
            return self.wire.start_close(key, 4001, "idle timeout");
        }
        let ping_ms = self.wire.limits.ping_ms;
        if ping_ms != 0 && now >= conn.next_ping.ms(now) {
            conn.next_ping = Stamp::of(now + ping_ms);
            let ping = self.ping_frame.clone();
            self.wire.queue(key, ping);
        }
        self.wire.rearm_open(key);
    }
}

impl Server {
    /// Believe `X-Forwarded-For` only from a trusted proxy
    /// (`--trusted-proxy`): remember the client it names for this
    /// connection, for `clients`, events and logs.
    fn note_forwarded(&mut self, key: usize, forwarded_for: Option<&str>) {
        let (Some(list), false) = (forwarded_for, self.args.trusted_proxies.is_empty()) else {
            return;
        };
        let conn = &self.wire.conns[key];
        let Ok(peer) = conn.stream.peer_addr() else {
            return;
        };
        if let Some(client) = proxy::client(peer.ip(), list, &self.args.trusted_proxies) {
            info!("conn {}: {client} through proxy {peer}", conn.serial);
            let generation = conn.generation();
            self.wire.forwarded.insert(key, (generation, client));
        }
    }
}

/// A `HEAD` request gets the answer's head only.
fn head_or_all(response: Vec<u8>, head: bool) -> Vec<u8> {
    if head {
        handshake::head_only(response)
    } else {
        response
    }
}
