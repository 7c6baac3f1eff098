//! Shared by tests/interop_python.rs and tests/interop_node.rs: a `Driver`
//! (one client script running one third-party WebSocket library, spoken
//! to over its stdin/stdout line protocol, described at the top of
//! tests/interop/python_client.py), the test cases, and the
//! `interop_tests!` macro that turns them into `#[test]`s for one library.
//!
//! Every case starts its own server; cargo runs them on parallel threads.
//! Protocol errors (1002, 1007) are left out: a conforming library never
//! sends a frame that provokes them.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::{ControlConn, Server, run_with_timeout, tempdir};

/// How long one expected event may take to arrive.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The driver process
// ---------------------------------------------------------------------------

/// One client script (`tests/interop/*_client.*`) and its event lines.
pub struct Driver {
    pub library: String,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
    /// Events read while waiting for another connection's.
    pending: VecDeque<Value>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Driver {
    /// Spawn `cmd` and wait for its `ready` line (20 s: a cold interpreter).
    pub fn spawn(mut cmd: Command) -> Driver {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"event": "not JSON", "line": line}));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let mut d = Driver {
            library: String::new(),
            child,
            stdin,
            lines,
            pending: VecDeque::new(),
            stderr,
        };
        let ready = match d.lines.recv_timeout(Duration::from_secs(20)) {
            Ok(v) => v,
            Err(e) => panic!("client script not ready ({e}); stderr:\n{}", d.stderr()),
        };
        assert_eq!(ready["event"], "ready", "first line of {cmd:?}: {ready}");
        let field = |k: &str| ready[k].as_str().unwrap_or("?").to_string();
        d.library = format!("{} {}", field("library"), field("version"));
        d
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    pub fn command(&mut self, cmd: Value) {
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).unwrap_or_else(|e| {
            panic!(
                "write to the client script: {e}; stderr:\n{}",
                self.stderr()
            )
        });
    }

    /// The next event of connection `id`, within `timeout`.
    pub fn event_within(&mut self, id: &str, timeout: Duration) -> Value {
        if let Some(i) = self.pending.iter().position(|e| e["id"] == id) {
            return self.pending.remove(i).unwrap();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(e) if e["id"] == id => return e,
                Ok(e) if e["event"] == "not JSON" => panic!("client script printed {e}"),
                Ok(e) => self.pending.push_back(e),
                Err(why) => panic!(
                    "{}: no event for connection {id} within {timeout:?} ({why}); \
                     other events: {:?}; stderr:\n{}",
                    self.library,
                    self.pending,
                    self.stderr()
                ),
            }
        }
    }

    pub fn event(&mut self, id: &str) -> Value {
        self.event_within(id, EVENT_TIMEOUT)
    }

    /// The next event of `id`, which must be `what`.
    fn expect(&mut self, id: &str, what: &str) -> Value {
        let e = self.event(id);
        assert_eq!(e["event"], what, "{}: connection {id}: {e}", self.library);
        e
    }

    /// The answer `what` to a command on `id`; the messages (or the close)
    /// that come before it stay queued, in order, for the next reads.
    fn ack(&mut self, id: &str, what: &str) {
        let mut early = Vec::new();
        loop {
            let e = self.event(id);
            if e["event"] == what {
                break;
            }
            assert_ne!(
                e["event"], "error",
                "{}: {id}: waiting for {what}: {e}",
                self.library
            );
            early.push(e);
        }
        for e in early.into_iter().rev() {
            self.pending.push_front(e);
        }
    }

    /// Open connection `id` to `path` of server `s`; the upgrade must succeed.
    pub fn open(&mut self, s: &Server, id: &str, path: &str) {
        self.command(json!({"op": "open", "id": id, "url": s.url(path)}));
        self.expect(id, "open");
    }

    pub fn send_text(&mut self, id: &str, text: &str) {
        self.command(json!({"op": "send", "id": id, "text": text}));
        self.ack(id, "sent");
    }

    pub fn send_binary(&mut self, id: &str, bytes: &[u8]) {
        self.command(json!({"op": "send", "id": id, "binary": B64.encode(bytes)}));
        self.ack(id, "sent");
    }

    pub fn pause(&mut self, id: &str) {
        self.command(json!({"op": "pause", "id": id}));
        self.ack(id, "paused");
    }

    pub fn resume(&mut self, id: &str) {
        self.command(json!({"op": "resume", "id": id}));
        self.ack(id, "resumed");
    }

    /// The next message of `id`: a text frame holding JSON.
    pub fn recv_json(&mut self, id: &str) -> Value {
        let e = self.expect(id, "message");
        assert_eq!(e["kind"], "text", "{}: {e}", self.library);
        let data = e["data"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: message without data: {e}", self.library));
        serde_json::from_str(data)
            .unwrap_or_else(|err| panic!("{}: message is not JSON ({err}): {data:?}", self.library))
    }

    /// Read `id`'s events up to its close: (code, reason, messages before it).
    pub fn close_after(&mut self, id: &str) -> (Option<u64>, String, Vec<Value>) {
        let mut messages = Vec::new();
        loop {
            let e = self.event(id);
            match e["event"].as_str() {
                Some("message") => messages.push(e),
                Some("close") => {
                    let reason = e["reason"].as_str().unwrap_or_default().to_string();
                    return (e["code"].as_u64(), reason, messages);
                }
                _ => panic!(
                    "{}: {id}: expected messages then a close, got {e}",
                    self.library
                ),
            }
        }
    }

    /// `id` is closed with exactly `code` and `reason`, nothing before it.
    pub fn expect_close(&mut self, id: &str, code: u64, reason: &str) {
        let (got, why, messages) = self.close_after(id);
        assert_eq!(
            (got, why.as_str()),
            (Some(code), reason),
            "{}: connection {id}: close code and reason as the library reports them",
            self.library
        );
        assert!(
            messages.is_empty(),
            "{}: {id}: unexpected messages before the close: {messages:?}",
            self.library
        );
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- client script stderr ----\n{}", self.stderr());
        }
    }
}

/// Run `cmd` (a probe: import the library) for at most 30 s: the last
/// line of its stdout when it exits 0, else the first line of its stderr
/// that names an error (or its last line).
pub fn probe(cmd: Command) -> Result<String, String> {
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    if out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        return Ok(text.lines().last().unwrap_or_default().to_string());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("Error"))
        .or_else(|| text.lines().last())
        .unwrap_or_default();
    Err(line.trim().to_string())
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// At least 32 bytes, as a secret file should hold.
const JWT_SECRET: &str = "interop-jwt-secret-0123456789-abcdefghijkl";
const OTHER_SECRET: &str = "some-other-jwt-secret-0123456789-abcdefgh";

fn mint(claims: Value, secret: &str) -> String {
    let head = B64URL.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let body = B64URL.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{head}.{body}").as_bytes());
    let sig = B64URL.encode(mac.finalize().into_bytes());
    format!("{head}.{body}.{sig}")
}

fn start_with_jwt(args: &[&str]) -> Server {
    let dir = tempdir();
    let path = dir.path().join("jwt.secret");
    std::fs::write(&path, format!("{JWT_SECRET}\n")).unwrap();
    let path = path.display().to_string();
    let mut all = vec!["--jwt-secret-file", path.as_str()];
    all.extend_from_slice(args);
    Server::start_in(dir, &all)
}

/// A control connection turned into an events stream.
fn events(s: &Server) -> ControlConn {
    let mut ev = s.control_conn();
    assert_eq!(ev.request(&json!({"op": "events"})), json!({"ok": true}));
    ev
}

/// The next event line named `name` (others skipped; at most 5 s per line).
fn wait_event(ev: &mut ControlConn, name: &str) -> Value {
    for _ in 0..100 {
        let e = ev.read_reply();
        if e["event"] == name {
            return e;
        }
    }
    panic!("no {name} event in 100 lines");
}

fn ok(reply: &Value) -> &Value {
    assert_eq!(reply["ok"], json!(true), "control reply: {reply}");
    reply
}

/// The seq of a message event, read from its first characters.
fn seq_of(message: &Value) -> u64 {
    let head = message["head"].as_str().unwrap_or_default();
    let rest = head
        .split("\"seq\":")
        .nth(1)
        .unwrap_or_else(|| panic!("no seq in {head:?}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("bad seq in {head:?}"))
}

/// The envelope fields every push has, checked against the push's reply.
fn check_envelope(lib: &str, m: &Value, reply: &Value, content: &Value) {
    assert_eq!(m["messageId"], reply["messageId"], "{lib}: {m}");
    assert_eq!(m["seq"], reply["seq"], "{lib}: {m}");
    assert_eq!(&m["content"], content, "{lib}: {m}");
    let id = m["messageId"].as_str().unwrap();
    let (prefix, seq) = id.split_once('-').unwrap_or_else(|| panic!("{lib}: {id}"));
    assert!(
        prefix.len() == 4 && prefix.chars().all(|c| c.is_ascii_hexdigit()),
        "{lib}: messageId {id}: not 4 hex digits, a dash, the seq"
    );
    assert_eq!(seq, m["seq"].to_string(), "{lib}: messageId {id}");
    let ts = m["ts"].as_u64().unwrap_or_else(|| panic!("{lib}: ts: {m}"));
    let now_ms = now_s() * 1000;
    assert!(
        ts + 60_000 > now_ms && ts < now_ms + 60_000,
        "{lib}: ts {ts} is not now"
    );
}

// ---------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------

/// A user push, a broadcast and a topic publish, as the library delivers them.
pub fn deliveries(d: &mut Driver) {
    let s = Server::start(&[]);
    s.grant("tok-alice", "alice");
    d.open(&s, "a", "/push/tok-alice");
    let lib = d.library.clone();

    let content = json!({"text": "héllo ✓", "n": [1, 2.5, null, true]});
    let push = json!({"op": "push", "users": ["alice"], "content": content,
                      "title": "greeting", "type": 7});
    let reply = s.control(push);
    assert_eq!(ok(&reply)["delivered"], json!(1), "{reply}");
    let m = d.recv_json("a");
    check_envelope(&lib, &m, &reply, &content);
    assert_eq!(
        (&m["title"], &m["type"]),
        (&json!("greeting"), &json!(7)),
        "{lib}: {m}"
    );
    assert!(
        m.get("topic").is_none(),
        "{lib}: a user push has no topic: {m}"
    );
    let first_seq = m["seq"].as_u64().unwrap();

    let broadcast = s.push(&[], json!("to everyone"));
    assert_eq!(broadcast["delivered"], json!(1), "{broadcast}");
    let m = d.recv_json("a");
    check_envelope(&lib, &m, &broadcast, &json!("to everyone"));
    assert!(
        m.get("topic").is_none() && m.get("title").is_none(),
        "{lib}: {m}"
    );
    assert!(
        m["seq"].as_u64().unwrap() > first_seq,
        "{lib}: seq grows: {m}"
    );

    d.send_text("a", r#"{"op":"subscribe","topic":"news"}"#);
    assert_eq!(
        d.recv_json("a"),
        json!({"ok": true, "op": "subscribe", "topic": "news"}),
        "{lib}: the subscribe ack"
    );
    // Not followed: nobody gets it (had it arrived, the next check fails).
    let other = s.control(json!({"op": "publish", "topic": "sports", "content": 0}));
    assert_eq!(ok(&other)["delivered"], json!(0), "{other}");
    let content = json!({"headline": "wspush speaks RFC 6455"});
    let publish = s.control(json!({"op": "publish", "topic": "news", "content": content}));
    assert_eq!(ok(&publish)["delivered"], json!(1), "{publish}");
    let m = d.recv_json("a");
    check_envelope(&lib, &m, &publish, &content);
    assert_eq!(m["topic"], json!("news"), "{lib}: {m}");
}

/// Upstream text and binary messages reach an `events` listener.
pub fn upstream_messages(d: &mut Driver) {
    let s = Server::start(&[]);
    s.grant("tok-bob", "bob");
    let mut ev = events(&s);
    d.open(&s, "b", "/push/tok-bob");
    let online = wait_event(&mut ev, "online");
    assert_eq!(online["user"], json!("bob"), "{online}");
    let conn = online["connection"].clone();
    assert!(conn.is_u64(), "{online}");

    let text = format!("hello from {} ✓", d.library);
    d.send_text("b", &text);
    let m = wait_event(&mut ev, "message");
    assert_eq!(
        (&m["user"], &m["connection"], &m["text"]),
        (&json!("bob"), &conn, &json!(text)),
        "{m}"
    );
    assert!(m["ts"].is_u64() && m.get("binary").is_none(), "{m}");

    d.send_binary("b", &[0, 1, 2, 0xff]);
    let m = wait_event(&mut ev, "message");
    assert_eq!(
        (&m["user"], &m["connection"], &m["binary"]),
        (&json!("bob"), &conn, &json!("AAEC/w==")),
        "{m}"
    );
    assert!(m.get("text").is_none(), "{m}");
}

/// `kick` → 1008 `kicked`; `revoke` → 4401 `token revoked`, and the
/// revoked token is refused from then on.
pub fn kick_and_revoke(d: &mut Driver) {
    let s = Server::start(&[]);
    s.grant("tok-kim", "kim");
    s.grant("tok-rae", "rae");
    d.open(&s, "k", "/push/tok-kim");
    d.open(&s, "r", "/push/tok-rae");

    let r = s.control(json!({"op": "kick", "user": "kim"}));
    assert_eq!(ok(&r)["closed"], json!(1), "{r}");
    d.expect_close("k", 1008, "kicked");

    let r = s.control(json!({"op": "revoke", "token": "tok-rae"}));
    assert_eq!(ok(&r)["closed"], json!(1), "{r}");
    d.expect_close("r", 4401, "token revoked");

    d.open(&s, "again", "/push/tok-rae");
    d.expect_close("again", 4401, "unknown or revoked token");
}

/// An unknown token and no token: upgraded, then 4401 with the reason.
pub fn refused_tokens(d: &mut Driver) {
    let s = Server::start(&[]);
    d.open(&s, "unknown", "/push/never-granted");
    d.expect_close("unknown", 4401, "unknown or revoked token");
    d.open(&s, "missing", "/push/");
    d.expect_close("missing", 4401, "missing token");
}

/// A connection that sends nothing (the library's keepalive is off) is
/// closed with 4001 between 1 and 2 s (one timer tick late at most).
pub fn idle_timeout(d: &mut Driver) {
    let s = Server::start(&["--idle-timeout", "1", "--ping-interval", "0"]);
    s.grant("tok-ida", "ida");
    d.open(&s, "i", "/push/tok-ida");
    let opened = Instant::now();
    d.expect_close("i", 4001, "idle timeout");
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{}: idle close after {took:?}",
        d.library
    );
    assert_eq!(s.stats()["evictions"], json!(1));
}

/// SIGTERM: 1001 `server shutting down`, then the server exits 0.
pub fn shutdown(d: &mut Driver) {
    let mut s = Server::start(&[]);
    s.grant("tok-sam", "sam");
    d.open(&s, "s", "/push/tok-sam");
    s.wait_connections(1);
    s.sigterm();
    d.expect_close("s", 1001, "server shutting down");
    let status = s.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// A message of `--max-message-size` bytes goes upstream; one byte more
/// closes with 1009 `message too big`.
pub fn message_too_big(d: &mut Driver) {
    let s = Server::start(&["--max-message-size", "1024"]);
    s.grant("tok-max", "max");
    let mut ev = events(&s);
    d.open(&s, "m", "/push/tok-max");
    let at_limit = "a".repeat(1024);
    d.send_text("m", &at_limit);
    let m = wait_event(&mut ev, "message");
    assert_eq!(
        m["text"],
        json!(at_limit),
        "the 1024-byte message goes upstream"
    );
    d.send_text("m", &"b".repeat(1025));
    d.expect_close("m", 1009, "message too big");
}

/// `--max-conns-per-user 1`: a second connection of the user closes the
/// first with 1008, and the second one gets the user's pushes.
pub fn per_user_cap(d: &mut Driver) {
    let s = Server::start(&["--max-conns-per-user", "1"]);
    s.grant("tok-uma-1", "uma");
    s.grant("tok-uma-2", "uma");
    d.open(&s, "first", "/push/tok-uma-1");
    d.open(&s, "second", "/push/tok-uma-2");
    d.expect_close("first", 1008, "too many connections for this user");
    let reply = s.push(&["uma"], json!("for the second"));
    assert_eq!(reply["delivered"], json!(1), "{reply}");
    check_envelope(
        &d.library.clone(),
        &d.recv_json("second"),
        &reply,
        &json!("for the second"),
    );
}

/// JWTs: a valid one admits its `sub`; expired or not yet valid → 4402;
/// signed with another key → 4401 `bad signature`.
pub fn jwt_refusals(d: &mut Driver) {
    let s = start_with_jwt(&[]);
    let now = now_s();
    let valid = mint(json!({"sub": "jay", "exp": now + 600}), JWT_SECRET);
    d.open(&s, "valid", &format!("/push/{valid}"));
    let reply = s.push(&["jay"], json!("signed in"));
    assert_eq!(reply["delivered"], json!(1), "{reply}");
    check_envelope(
        &d.library.clone(),
        &d.recv_json("valid"),
        &reply,
        &json!("signed in"),
    );

    let cases = [
        (
            "expired",
            json!({"sub": "jay", "exp": now - 120}),
            JWT_SECRET,
            4402,
            "token expired",
        ),
        (
            "early",
            json!({"sub": "jay", "nbf": now + 600}),
            JWT_SECRET,
            4402,
            "token not valid yet",
        ),
        (
            "forged",
            json!({"sub": "jay", "exp": now + 600}),
            OTHER_SECRET,
            4401,
            "bad signature",
        ),
    ];
    for (id, claims, secret, code, reason) in cases {
        d.open(&s, id, &format!("/push/{}", mint(claims, secret)));
        d.expect_close(id, code, reason);
    }
}

/// A live JWT connection is closed with 4402 when `exp` + the 30 s leeway
/// passes. `exp` = now − 28 puts that 1 to 2 s after minting (plus up to
/// one tick): late enough to see a push first, early enough for a short
/// test.
pub fn jwt_expires_while_connected(d: &mut Driver) {
    let s = start_with_jwt(&["--ping-interval", "0"]);
    let minted = Instant::now();
    let token = mint(json!({"sub": "eve", "exp": now_s() - 28}), JWT_SECRET);
    d.open(&s, "e", &format!("/push/{token}"));
    let reply = s.push(&["eve"], json!("still valid"));
    assert_eq!(
        reply["delivered"],
        json!(1),
        "admitted within the leeway: {reply}"
    );
    let (code, reason, messages) = d.close_after("e");
    let took = minted.elapsed();
    assert_eq!(
        (code, reason.as_str()),
        (Some(4402), "token expired"),
        "{}",
        d.library
    );
    assert_eq!(messages.len(), 1, "{}: {messages:?}", d.library);
    assert_eq!(seq_of(&messages[0]), reply["seq"].as_u64().unwrap());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{}: closed {took:?} after minting",
        d.library
    );
}

/// A connection that stops reading (the library's own flow control) is
/// closed with 4000 `slow consumer` once more than `--max-outbound` bytes
/// wait for it; when it reads again it gets a prefix of the pushes, in
/// order, then the close.
pub fn slow_consumer(d: &mut Driver) {
    let s = Server::start(&["--max-outbound", "65536", "--ping-interval", "0"]);
    s.grant("tok-sly", "sly");
    d.open(&s, "slow", "/push/tok-sly");
    d.pause("slow");
    let pad = "p".repeat(16 * 1024);
    let mut c = s.control_conn();
    let mut seqs = Vec::new();
    let mut closed = false;
    for i in 0..5000 {
        let r =
            c.request(&json!({"op": "push", "users": ["sly"], "content": {"i": i, "pad": pad}}));
        match ok(&r)["delivered"].as_u64() {
            Some(1) => seqs.push(r["seq"].as_u64().unwrap()),
            Some(0) => {
                closed = true;
                break;
            }
            _ => panic!("{r}"),
        }
    }
    assert!(
        closed,
        "{}: never a slow consumer after {} pushes of 16 KiB: it buffers everything",
        d.library,
        seqs.len()
    );
    d.resume("slow");
    let (code, reason, messages) = d.close_after("slow");
    assert_eq!(
        (code, reason.as_str()),
        (Some(4000), "slow consumer"),
        "{}: after {} messages",
        d.library,
        messages.len()
    );
    let got: Vec<u64> = messages.iter().map(seq_of).collect();
    assert!(
        got.len() <= seqs.len() && got == seqs[..got.len()],
        "{}: not a prefix of the pushes: {got:?} of {seqs:?}",
        d.library
    );
    assert_eq!(s.stats()["slow_consumers"], json!(1));
    println!(
        "{}: slow consumer after {} pushes of 16 KiB; {} read before the close",
        d.library,
        seqs.len(),
        got.len()
    );
}

/// One `#[test]` per case, each with a fresh driver from `$driver`
/// (`fn() -> Option<Driver>`, `None` after `skip_missing`).
macro_rules! interop_tests {
    ($driver:path) => {
        interop_tests!(@each $driver;
            deliveries, upstream_messages, kick_and_revoke, refused_tokens,
            idle_timeout, shutdown, message_too_big, per_user_cap,
            jwt_refusals, jwt_expires_while_connected, slow_consumer);
    };
    (@each $driver:path; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                let Some(mut d) = $driver() else { return };
                $crate::interop::$case(&mut d);
            }
        )*
    };
}
