//! The I/O state the hub's effects land in, and [`Out`] carried out on it:
//! frames queued into the turn, closes started, replies held on their
//! control connection, records appended to the data log.
//!
//! Nothing here decides who gets what; that is the hub's. Everything here
//! is about bytes, sockets and deadlines.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use log::{debug, error};
use slab::Slab;

use super::Timer;
use super::conn::{Conn, Phase, Stamp};
use super::ctrl_conn::ControlConn;
use super::outbox::{self, Turn};
use super::send::Sender;
use super::store::Store;
pub use super::tallies::Tallies;
use crate::hub::{Call, ConnId, FrameRef, Key, Link, LogHealth, LogRecord, Origin, Out, Transport};
use crate::proto::frame;
use crate::proto::handshake::{self, HttpError};
use crate::wheel::Wheel;

/// How long a closing connection may take to answer our close frame, and
/// how long an HTTP answer may take to leave, before the socket is dropped.
pub const CLOSE_TIMEOUT_MS: u64 = 5000;
/// How often a failed data log is retried.
pub const LOG_RETRY_MS: u64 = 1000;
/// Unsent event bytes after which a listener is cut off.
pub const MAX_EVENT_BACKLOG: usize = 1 << 20;

/// Counters of the I/O side (the hub keeps the routing ones).
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    /// Bytes read from WebSocket connections.
    pub bytes_in: u64,
    /// Bytes queued to WebSocket connections.
    pub bytes_out: u64,
    /// Requests answered with an HTTP error.
    pub rejected: u64,
    /// Connections closed after the idle timeout.
    pub idle_evictions: u64,
    /// Connections closed for not reading.
    pub slow_consumers: u64,
}

/// Per-connection timing and size settings, in ms and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Idle timeout.
    pub idle_ms: u64,
    /// Ping interval (0: no pings).
    pub ping_ms: u64,
    /// Unsent bytes after which a connection is a slow consumer.
    pub max_outbound: usize,
}

/// An HTTP API reply waiting for the end of the turn.
#[derive(Debug)]
pub struct HeldHttp {
    /// The connection that asked.
    pub conn: ConnId,
    /// The control reply line.
    pub line: Vec<u8>,
    /// The log position its records end at, if it wrote any.
    pub needs: Option<u64>,
    /// The HTTP status, when the hub chose it (else it follows the reply).
    pub status: Option<u16>,
}

/// Sockets, buffers and the data log: what the hub's effects act on.
pub struct Wire {
    /// WebSocket connections; the slot is the [`ConnId`] key.
    pub conns: Slab<Conn>,
    /// Control clients; the slot is the key of [`Origin::Control`].
    pub ctrls: Slab<ControlConn>,
    /// This turn's frames, written before the loop sleeps.
    pub turn: Turn,
    /// Connection deadlines and the loop's own timers.
    pub wheel: Wheel<Timer>,
    /// The data log (`--data-dir`).
    pub store: Option<Store>,
    /// Control clients with replies or events to flush this turn.
    pub ctrl_dirty: Vec<usize>,
    /// Connections that stopped receiving pushes on the I/O side (gone,
    /// too slow): the hub must be told.
    pub gone: Vec<ConnId>,
    /// HTTP API replies of this turn, answered once the log is synced.
    pub http_held: Vec<HeldHttp>,
    /// The client each connection came through a trusted proxy for, by
    /// slot with its generation (only such connections have an entry).
    pub forwarded: HashMap<usize, (u32, IpAddr)>,
    /// Counters.
    pub traffic: Traffic,
    /// Counters by close code and HTTP status, and the fan-out histogram.
    pub tallies: Tallies,
    /// Timing and size settings.
    pub limits: Limits,
    /// Virtual ms now (read once per turn).
    pub now: u64,
    /// When the server started, for the uptime.
    pub started: Instant,
    /// The Redis link (`--redis`).
    pub redis: Option<super::redis_link::RedisLink>,
}

impl Wire {
    /// The connection `conn` names, if it still exists.
    pub fn conn(&mut self, conn: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(conn.key as usize)
            .filter(|c| c.generation() == conn.generation)
    }

    /// Queue bytes for connection `key` in this turn.
    pub fn queue(&mut self, key: usize, bytes: Rc<[u8]>) {
        self.traffic.bytes_out += bytes.len() as u64;
        let frame = self.turn.add(bytes, 0);
        self.turn.enqueue(key, &mut self.conns[key].chain, frame);
    }

    /// (Re)arm connection `key`'s single timer.
    pub fn arm(&mut self, key: usize, at_ms: u64) {
        let conn = &mut self.conns[key];
        if let Some(old) = conn.timer.take() {
            self.wheel.cancel(old);
        }
        let timer = Timer::Conn { key: key as u32 };
        conn.timer = Some(self.wheel.insert(at_ms, timer));
    }

    /// Arm an open connection's timer for its next idle check or ping.
    /// Reads don't touch the wheel: `last_read` is checked when it fires.
    pub fn rearm_open(&mut self, key: usize) {
        let conn = &self.conns[key];
        let idle_at = conn.last_read.ms(self.now) + self.limits.idle_ms;
        let at = match self.limits.ping_ms {
            0 => idle_at,
            _ => conn.next_ping.ms(self.now).min(idle_at),
        };
        self.arm(key, at);
    }

    /// Last bytes are queued: drop the socket once they are written.
    pub fn finish(&mut self, key: usize) {
        self.conns[key].phase = Phase::Finishing;
        self.arm(key, self.now + CLOSE_TIMEOUT_MS);
    }

    /// Begin our side of the close handshake on an open connection.
    pub fn start_close(&mut self, key: usize, code: u16, reason: &'static str) {
        if self.conns[key].phase != Phase::Open {
            return;
        }
        self.tallies.close(code);
        self.queue(key, frame::encode_close(code, reason).into());
        self.conns[key].phase = Phase::Closing;
        self.arm(key, self.now + CLOSE_TIMEOUT_MS);
    }

    /// The client does not read: keep only what is half on the wire, queue
    /// the close frame behind it, and give it the close timeout to go.
    pub fn slow_consumer(&mut self, key: usize) {
        self.traffic.slow_consumers += 1;
        let conn = &mut self.conns[key];
        debug!(
            "conn {}: slow consumer, {} bytes unsent",
            conn.serial,
            conn.unsent()
        );
        self.gone.push(conn.id(key));
        let backlog = conn.backlog_or_default();
        backlog.truncate_to_partial();
        backlog.push(frame::encode_close(4000, "slow consumer").into());
        self.tallies.close(4000);
        conn.phase = Phase::Closing;
        self.arm(key, self.now + CLOSE_TIMEOUT_MS);
    }

    /// Forget a connection now: its socket is closed, its timer cancelled,
    /// and the hub will hear that it left.
    pub fn drop_conn(&mut self, key: usize, why: &str) {
        let conn = self.conns.remove(key);
        self.forwarded.remove(&key);
        if let Some(timer) = conn.timer {
            self.wheel.cancel(timer);
        }
        self.gone.push(conn.id(key));
        debug!("conn {}: dropped ({why})", conn.serial);
    }

    /// Write a connection's backlog after a WRITABLE event. Returns the
    /// bytes it freed (for the heap trim).
    pub fn write_backlog(&mut self, key: usize) -> u64 {
        let conn = &mut self.conns[key];
        let before = conn.unsent();
        let mut backlog = conn.take_backlog();
        let result = outbox::write_backlog(&mut backlog, &mut Sender(&conn.stream));
        conn.put_backlog(backlog);
        let freed = before.saturating_sub(conn.unsent()) as u64;
        self.after_write(key, result);
        freed
    }

    /// Write every frame queued this turn: one vectored write per
    /// connection. Returns the bytes the turn's frames held.
    pub fn flush_turn(&mut self) -> u64 {
        let dirty = self.turn.take_dirty();
        for &key in &dirty {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.chain.is_empty() {
                continue;
            }
            let mut backlog = conn.take_backlog();
            let result =
                self.turn
                    .write_chain(&mut conn.chain, &mut backlog, &mut Sender(&conn.stream));
            conn.put_backlog(backlog);
            self.after_write(key, result);
        }
        let bytes = self.turn.take_bytes();
        self.turn.clear(dirty);
        if let Some(first) = self.tallies.first_push.take() {
            let us = u64::try_from(first.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.tallies.fanout.observe(us);
        }
        bytes
    }

    fn after_write(&mut self, key: usize, result: io::Result<usize>) {
        let unsent = match result {
            Ok(unsent) => unsent,
            Err(e) => return self.drop_conn(key, &format!("write error: {e}")),
        };
        let conn = &self.conns[key];
        if unsent == 0 && conn.phase == Phase::Finishing {
            self.drop_conn(key, "done");
        } else if unsent > self.limits.max_outbound && conn.phase == Phase::Open {
            self.slow_consumer(key);
        }
    }

    /// Write and fsync the records queued so far; false if the log is
    /// failed (it is then retried every [`LOG_RETRY_MS`]).
    pub fn sync_log(&mut self) -> bool {
        let Some(store) = &mut self.store else {
            return true;
        };
        let was_failed = store.failed().is_some();
        match store.sync() {
            Ok(()) => true,
            Err(e) => {
                if !was_failed {
                    error!(
                        "cannot write the data log: {e}; replies that need it are errors until it recovers"
                    );
                    self.wheel.insert(self.now + LOG_RETRY_MS, Timer::DataLog);
                }
                false
            }
        }
    }

    /// Remember to flush control connection `key` at the end of the turn.
    pub fn mark_ctrl_dirty(&mut self, key: usize) {
        if self.ctrl_dirty.last() != Some(&key) {
            self.ctrl_dirty.push(key);
        }
    }

    fn ctrl(&mut self, to: Origin) -> Option<(usize, &mut ControlConn)> {
        let Origin::Control(id) = to else {
            return None;
        };
        let key = id.key as usize;
        self.ctrls
            .get_mut(key)
            .filter(|c| c.generation == id.generation)
            .map(|c| (key, c))
    }
}

impl Out for Wire {
    fn open(&mut self, conn: ConnId, accept: &str) {
        let key = conn.key as usize;
        let ping = self.limits.ping_ms;
        let now = self.now;
        let Some(c) = self.conn(conn) else {
            return;
        };
        c.phase = Phase::Open;
        c.next_ping = Stamp::of(now + ping);
        self.queue(key, handshake::switching_protocols(accept).into());
        self.rearm_open(key);
    }

    fn refuse(&mut self, conn: ConnId, status: u16, reason: &'static str) {
        if self.conn(conn).is_some() {
            self.refuse_http(conn.key as usize, &HttpError { status, reason }, None);
        }
    }

    fn send(&mut self, conn: ConnId, frame: Rc<[u8]>) {
        if self.conn(conn).is_some() {
            self.queue(conn.key as usize, frame);
        }
    }

    fn shared(&mut self, frame: Rc<[u8]>, key: Key) -> FrameRef {
        self.tallies.first_push.get_or_insert_with(Instant::now);
        self.turn.add(frame, key)
    }

    fn push(&mut self, conns: impl Iterator<Item = ConnId>, frame: FrameRef) {
        let (bytes, value_key) = self.turn.frame(frame);
        let len = bytes.len() as u64;
        let mut queued = 0;
        for conn in conns {
            let Some(c) = self
                .conns
                .get_mut(conn.key as usize)
                .filter(|c| c.generation() == conn.generation)
            else {
                continue;
            };
            if value_key != 0
                && let Some(backlog) = c.backlog_mut()
            {
                backlog.drop_key(value_key);
            }
            let key = conn.key as usize;
            self.turn.enqueue_keyed(key, &mut c.chain, frame, value_key);
            queued += 1;
        }
        self.traffic.bytes_out += len * queued;
    }

    fn close(&mut self, conn: ConnId, code: u16, reason: &'static str) {
        if self.conn(conn).is_some() {
            self.start_close(conn.key as usize, code, reason);
        }
    }

    fn reply(&mut self, to: Origin, line: Vec<u8>, logged: bool) {
        let needs = match (&self.store, logged) {
            (Some(store), true) => Some(store.required()),
            _ => None,
        };
        if let Origin::Http(conn) = to {
            let status = None;
            return self.http_held.push(HeldHttp {
                conn,
                line,
                needs,
                status,
            });
        }
        if let Some((key, ctrl)) = self.ctrl(to) {
            ctrl.hold(line, needs);
            self.mark_ctrl_dirty(key);
        }
    }

    fn answer(&mut self, to: Origin, status: u16, body: Vec<u8>) {
        if let Origin::Http(conn) = to {
            self.http_held.push(HeldHttp {
                conn,
                line: body,
                needs: None,
                status: Some(status),
            });
        }
    }

    fn event(&mut self, to: Origin, line: &[u8]) -> bool {
        let Some((key, ctrl)) = self.ctrl(to) else {
            return false;
        };
        // Events promise nothing durable: a busy turn flushes them early
        // rather than piling them up until its end.
        if ctrl.pending_replies() + line.len() > MAX_EVENT_BACKLOG / 4 && ctrl.flush().is_err() {
            self.ctrls.remove(key);
            return false;
        }
        if ctrl.pending_replies() + line.len() > MAX_EVENT_BACKLOG {
            debug!("control {key}: events listener too slow, disconnecting");
            ctrl.queue_event(b"{\"event\":\"error\",\"error\":\"listener too slow: events dropped, disconnecting\"}\n");
            let _ = ctrl.flush();
            self.ctrls.remove(key);
            return false;
        }
        ctrl.queue_event(line);
        self.mark_ctrl_dirty(key);
        true
    }

    fn log(&mut self, record: &LogRecord<'_>) {
        if let Some(store) = &mut self.store {
            store.append(record);
        }
    }

    fn relay(&mut self, reference: u64, job: &[u8], message_id: Option<&str>) {
        if let Some(link) = &mut self.redis {
            link.relay(reference, job, message_id);
        }
    }

    fn fetch(&mut self, from: u64, to: u64) {
        if let Some(link) = &mut self.redis {
            link.fetch(from, to);
        }
    }

    fn call(&mut self, reference: u64, call: Call<'_>) {
        if let Some(link) = &mut self.redis {
            link.call(reference, call);
        }
    }

    fn sync_now(&mut self) -> bool {
        self.sync_log()
    }

    fn link(&self, conn: ConnId) -> Option<Link> {
        let c = self
            .conns
            .get(conn.key as usize)
            .filter(|c| c.generation() == conn.generation)?;
        Some(Link {
            // Asked of the kernel rather than kept: 32 B per connection
            // for a fact only `clients` and the online event show.
            peer: c.stream.peer_addr().ok(),
            forwarded: self
                .forwarded
                .get(&(conn.key as usize))
                .filter(|(generation, _)| *generation == conn.generation)
                .map(|&(_, ip)| ip),
            last_seen_ms: c.last_read.ms(self.now),
        })
    }

    fn transport(&self) -> Transport<'_> {
        let t = self.traffic;
        Transport {
            closes: &self.tallies.closes,
            http_errors: &self.tallies.http_errors,
            fanout: self.tallies.fanout.clone(),
            handshaking: self
                .conns
                .iter()
                .filter(|(_, c)| c.phase == Phase::Handshake)
                .count(),
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
            rejected: t.rejected,
            idle_evictions: t.idle_evictions,
            slow_consumers: t.slow_consumers,
            uptime: self.started.elapsed().as_secs(),
            data_log: self.store.as_ref().map(|s| LogHealth {
                failed: s.failed(),
                failures: s.failures(),
            }),
        }
    }
}
