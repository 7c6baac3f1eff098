//! Helpers shared by the delivery-feature tests (topics, mailbox, durability,
//! records, scheduled pushes, latest value, events, their CLI). Builds on
//! `common` (server process, control connection, raw and tungstenite
//! clients); declare it with
//! `#[path = "common/delivery.rs"] mod delivery;` next to `mod common;`.
#![allow(dead_code)]

use std::io::{self, BufRead};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::{HeaderName, HeaderValue};

use crate::common::*;

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The control socket path as a CLI argument.
pub fn ctl(s: &Server) -> String {
    s.control_path.to_str().unwrap().to_string()
}

/// One control request that must succeed; returns the reply.
pub fn ok(s: &Server, req: Value) -> Value {
    let r = s.control(req.clone());
    assert_eq!(r["ok"], json!(true), "request {req} failed: {r}");
    r
}

/// One control request that must be refused with a non-empty error string.
pub fn refused(s: &Server, req: Value) -> Value {
    let r = s.control(req.clone());
    assert_eq!(r["ok"], json!(false), "request {req} was not refused: {r}");
    let e = r["error"]
        .as_str()
        .unwrap_or_else(|| panic!("refusal of {req} has no error string: {r}"));
    assert!(!e.is_empty(), "refusal of {req} has an empty error");
    r
}

/// Send many requests in one write and read their replies (in order).
pub fn pipelined(c: &mut ControlConn, reqs: &[Value]) -> Vec<Value> {
    let mut batch = Vec::new();
    for r in reqs {
        batch.extend(serde_json::to_vec(r).unwrap());
        batch.push(b'\n');
    }
    c.send_raw(&batch).expect("write pipelined requests");
    reqs.iter().map(|_| c.read_reply()).collect()
}

/// Pipelined in chunks of `chunk` requests (keeps the unread replies bounded).
pub fn pipelined_chunked(c: &mut ControlConn, reqs: &[Value], chunk: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(reqs.len());
    for part in reqs.chunks(chunk) {
        out.extend(pipelined(c, part));
    }
    out
}

/// Poll `f` every 20 ms until it returns Some, at most `timeout`; panics with
/// `what` (and the last observation printed by `f`'s caller) otherwise.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Poll `stats` until `pred` holds (5 s); returns that stats reply.
pub fn wait_stats(s: &Server, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = s.stats();
        if pred(&st) {
            return st;
        }
        if Instant::now() > deadline {
            panic!("stats never satisfied {what}: last {st}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `messages` op; returns the reply (asserted ok).
pub fn messages(s: &Server, req: Value) -> Value {
    let mut req = req;
    req["op"] = json!("messages");
    let r = s.control(req.clone());
    assert_eq!(r["ok"], json!(true), "messages {req} failed: {r}");
    assert!(r["messages"].is_array(), "messages not an array: {r}");
    r
}

/// Just the records list of a `messages` reply.
pub fn records(s: &Server, req: Value) -> Vec<Value> {
    messages(s, req)["messages"].as_array().unwrap().clone()
}

// ---------------------------------------------------------------------------
// websocket helpers
// ---------------------------------------------------------------------------

/// Send a text message holding `v` as JSON.
pub fn send_json(ws: &mut Ws, v: &Value) {
    ws.send(Message::text(v.to_string())).expect("send text");
}

pub fn send_text(ws: &mut Ws, t: &str) {
    ws.send(Message::text(t.to_string())).expect("send text");
}

/// The next text message as JSON within `dur`, or None when nothing (but
/// pings/pongs) arrives in time. Panics on close, binary or errors.
pub fn try_recv_json(ws: &mut Ws, dur: Duration) -> Option<Value> {
    let deadline = Instant::now() + dur;
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break None;
        }
        ws.get_ref()
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match ws.read() {
            Ok(Message::Text(t)) => {
                break Some(
                    serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("message is not JSON ({e}): {t:?}")),
                );
            }
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(other) => panic!("expected a text message, got {other:?}"),
            Err(tungstenite::Error::Io(e))
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                break None;
            }
            Err(e) => panic!("expected a text message, got error {e}"),
        }
    };
    ws.get_ref().set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    result
}

/// The next text message as JSON within `dur` (panics when none arrives).
pub fn recv_within(ws: &mut Ws, dur: Duration, what: &str) -> Value {
    try_recv_json(ws, dur).unwrap_or_else(|| panic!("no message within {dur:?}: {what}"))
}

/// Everything that arrives until a ping/pong round trip completes, as JSON.
pub fn sync_json(ws: &mut Ws) -> Vec<Value> {
    sync(ws)
        .into_iter()
        .map(|m| match m {
            Message::Text(t) => serde_json::from_str(t.as_str())
                .unwrap_or_else(|e| panic!("message is not JSON ({e}): {t:?}")),
            other => panic!("expected text messages, got {other:?}"),
        })
        .collect()
}

/// Send a topic command and return the next text message (its answer).
pub fn topic_cmd(ws: &mut Ws, op: &str, topic: &str) -> Value {
    send_json(ws, &json!({"op": op, "topic": topic}));
    recv_json(ws)
}

/// Subscribe to `topic`, asserting the exact acknowledgement.
pub fn subscribe(ws: &mut Ws, topic: &str) {
    let r = topic_cmd(ws, "subscribe", topic);
    assert_eq!(
        r,
        json!({"op":"subscribe","topic":topic,"ok":true}),
        "subscribe {topic:?}"
    );
}

pub fn unsubscribe(ws: &mut Ws, topic: &str) {
    let r = topic_cmd(ws, "unsubscribe", topic);
    assert_eq!(
        r,
        json!({"op":"unsubscribe","topic":topic,"ok":true}),
        "unsubscribe {topic:?}"
    );
}

/// tungstenite connection to `path` with extra request headers.
pub fn ws_connect_headers(s: &Server, path: &str, headers: &[(&str, &str)]) -> Ws {
    let stream = TcpStream::connect(s.addr).expect("tcp connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut req = s.url(path).into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => ws,
        Err(e) => panic!("ws connect {path} failed: {e}"),
    }
}

/// The `clients` entry whose peer is this websocket's local address.
pub fn client_entry(s: &Server, ws: &Ws) -> Value {
    let local = ws.get_ref().local_addr().unwrap().to_string();
    let all = s.clients(None);
    all.iter()
        .find(|c| c["peer"] == json!(local))
        .unwrap_or_else(|| panic!("no clients entry with peer {local}: {all:?}"))
        .clone()
}

/// Close a websocket politely and wait for the server's side of the close.
pub fn close_ws(mut ws: Ws) {
    let _ = ws.close(None);
    let deadline = Instant::now() + READ_TIMEOUT;
    while Instant::now() < deadline {
        if ws.read().is_err() {
            break;
        }
    }
}

// ---------------------------------------------------------------------------
// events listener
// ---------------------------------------------------------------------------

/// A control connection that asked for `events`.
pub struct Listener {
    pub conn: ControlConn,
    partial: Vec<u8>,
}

impl Listener {
    /// Connect, send `{"op":"events"}`, expect `{"ok":true}`.
    pub fn start(s: &Server) -> Listener {
        let mut conn = s.control_conn();
        let r = conn.request(&json!({"op":"events"}));
        assert_eq!(r, json!({"ok":true}), "events reply");
        Listener {
            conn,
            partial: Vec::new(),
        }
    }

    /// Next complete line within `dur`: Ok(Some(line)), Ok(None) on EOF,
    /// Err(TimedOut) when nothing complete arrived in time.
    pub fn next_line(&mut self, dur: Duration) -> io::Result<Option<String>> {
        let deadline = Instant::now() + dur;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no event line"));
            }
            self.conn
                .reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.conn.reader.read_until(b'\n', &mut self.partial) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    if self.partial.ends_with(b"\n") {
                        let line = String::from_utf8_lossy(&self.partial).to_string();
                        self.partial.clear();
                        return Ok(Some(line.trim_end().to_string()));
                    }
                    // EOF inside a line: the loop's next read returns 0
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no event line"));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes of an unterminated line read before EOF/timeout.
    pub fn partial(&self) -> &[u8] {
        &self.partial
    }

    /// Next event within `dur` (panics on EOF, timeout or non-JSON).
    pub fn next_event(&mut self, dur: Duration) -> Value {
        match self.next_line(dur) {
            Ok(Some(line)) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("event line is not JSON ({e}): {line:?}")),
            Ok(None) => panic!("events connection closed while waiting for an event"),
            Err(e) => panic!("no event within {dur:?}: {e}"),
        }
    }

    /// Next event, or None if none arrives within `dur`.
    pub fn try_event(&mut self, dur: Duration) -> Option<Value> {
        match self.next_line(dur) {
            Ok(Some(line)) => Some(
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("event line is not JSON ({e}): {line:?}")),
            ),
            Ok(None) => panic!("events connection closed while waiting for an event"),
            Err(_) => None,
        }
    }

    /// Skip events until one with `"event": kind` arrives (5 s overall).
    pub fn expect_kind(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_event(left) {
                Some(e) if e["event"] == json!(kind) => return e,
                Some(e) => skipped.push(e),
                None => panic!("no {kind:?} event within 5 s; skipped {skipped:?}"),
            }
        }
    }
}
