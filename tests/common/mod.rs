//! Shared helpers for the wspush integration tests.
//!
//! Every test starts its own `wspush serve` on an ephemeral port with its own
//! control socket in a fresh temporary directory, and talks to it over real
//! sockets only (no server-crate modules are used).
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::protocol::WebSocket;
use tungstenite::{Bytes, Message};

pub const BIN: &str = env!("CARGO_BIN_EXE_wspush");

/// Default socket read timeout used by the helpers.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The Sec-WebSocket-Key example from RFC 6455 and its accept value.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub type Ws = WebSocket<TcpStream>;

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub control_path: PathBuf,
    pub dir: tempfile::TempDir,
    pub stderr_path: PathBuf,
    /// The startup line printed on stdout.
    pub banner: String,
}

/// Options for starting a server.
pub struct ServerOpts {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Use this directory (e.g. one that already holds a tokens file).
    pub dir: Option<tempfile::TempDir>,
    /// Override the control socket path (default: {dir}/wspush.sock).
    pub control_path: Option<PathBuf>,
    /// Pass `--listen 127.0.0.1:0` (default true).
    pub listen_arg: bool,
    /// Pass `--control PATH` (default true); when false, WSPUSH_CONTROL is set instead.
    pub control_arg: bool,
    /// Run the binary under this command, e.g. `["prlimit", "--nofile=64:64", "--"]`
    /// (it must exec the binary, so the child's pid is the server's).
    pub wrapper: Vec<String>,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            args: vec![],
            env: vec![],
            dir: None,
            control_path: None,
            listen_arg: true,
            control_arg: true,
            wrapper: vec![],
        }
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wspush-test")
        .tempdir()
        .expect("tempdir")
}

impl Server {
    /// `wspush serve --listen 127.0.0.1:0 --control {tmp}/wspush.sock ARGS`
    pub fn start(args: &[&str]) -> Server {
        Server::start_opts(ServerOpts {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
    }

    /// Like `start` but in an existing directory (e.g. one with a tokens file).
    pub fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Server {
        Server::start_opts(ServerOpts {
            args: args.iter().map(|s| s.to_string()).collect(),
            dir: Some(dir),
            ..Default::default()
        })
    }

    pub fn start_opts(opts: ServerOpts) -> Server {
        let dir = opts.dir.unwrap_or_else(tempdir);
        let control_path = opts
            .control_path
            .unwrap_or_else(|| dir.path().join("wspush.sock"));
        let stderr_path = dir.path().join(format!("server-{}.stderr", unique()));
        let stderr_file = std::fs::File::create(&stderr_path).expect("create stderr file");
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.arg("serve");
        if opts.listen_arg {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if opts.control_arg {
            cmd.arg("--control").arg(&control_path);
        } else {
            cmd.env("WSPUSH_CONTROL", &control_path);
        }
        cmd.args(&opts.args);
        cmd.env("RUST_LOG", "debug");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr_file));
        let mut child = cmd.spawn().expect("spawn wspush serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // keep draining stdout so the server never blocks on it
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        let banner = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not print its startup line within 10 s; stderr:\n{}",
                    tail_file(&stderr_path)
                );
            }
        };
        let banner = banner.trim_end().to_string();
        let addr = parse_banner(&banner).unwrap_or_else(|| {
            let _ = child.kill();
            let st = child.wait();
            panic!(
                "bad startup line {banner:?} (exit {st:?}); stderr:\n{}",
                tail_file(&stderr_path)
            )
        });
        Server {
            child,
            addr,
            control_path,
            dir,
            stderr_path,
            banner,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    // -- control socket ----------------------------------------------------

    /// One request over a fresh control connection; returns the reply line parsed.
    pub fn control(&self, req: Value) -> Value {
        let mut c = self.control_conn();
        c.request(&req)
    }

    pub fn control_conn(&self) -> ControlConn {
        ControlConn::connect(&self.control_path)
    }

    pub fn grant(&self, token: &str, user: &str) {
        let r = self.control(json!({"op":"grant","token":token,"user":user}));
        assert_eq!(r["ok"], json!(true), "grant {token}->{user} failed: {r}");
    }

    /// Push `content` to `users` (empty = broadcast, sent as an empty list). Returns the reply.
    pub fn push(&self, users: &[&str], content: Value) -> Value {
        let r = self.control(json!({"op":"push","users":users,"content":content}));
        assert_eq!(r["ok"], json!(true), "push failed: {r}");
        r
    }

    pub fn stats(&self) -> Value {
        let r = self.control(json!({"op":"stats"}));
        assert_eq!(r["ok"], json!(true), "stats failed: {r}");
        r
    }

    pub fn clients(&self, user: Option<&str>) -> Vec<Value> {
        let req = match user {
            Some(u) => json!({"op":"clients","user":u}),
            None => json!({"op":"clients"}),
        };
        let r = self.control(req);
        assert_eq!(r["ok"], json!(true), "clients failed: {r}");
        r["clients"]
            .as_array()
            .unwrap_or_else(|| panic!("clients not an array: {r}"))
            .clone()
    }

    /// Poll `stats.connections` until it equals `n` (bounded, 5 s).
    pub fn wait_connections(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = self.stats();
            if s["connections"] == json!(n) {
                return;
            }
            if Instant::now() > deadline {
                panic!("stats.connections never became {n}: {s}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // -- websocket -----------------------------------------------------------

    /// Connect with tungstenite to `{ws-path default /push}/{token}`; panics on failure.
    pub fn ws_connect(&self, token: &str) -> Ws {
        self.ws_connect_path(&format!("/push/{token}"))
    }

    pub fn ws_connect_path(&self, path: &str) -> Ws {
        match self.ws_try_connect_path(path) {
            Ok(ws) => ws,
            Err(e) => panic!("ws connect {path} failed: {e}"),
        }
    }

    /// Ok(ws) on 101, Err(description incl. HTTP status) otherwise.
    pub fn ws_try_connect_path(&self, path: &str) -> Result<Ws, String> {
        let stream = TcpStream::connect(self.addr).map_err(|e| format!("tcp connect: {e}"))?;
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        match tungstenite::client::client(self.url(path), stream) {
            Ok((ws, _resp)) => Ok(ws),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                Err(format!("HTTP {}", resp.status().as_u16()))
            }
            Err(e) => Err(format!("handshake error: {e}")),
        }
    }

    /// How an upgrade with `token` ends: `Ok` when the connection is open
    /// (it answers a ping with a pong), `Err(code)` when the token is
    /// refused after the upgrade (the close code), `Err(status)` when the
    /// upgrade itself is refused.
    pub fn token_outcome(&self, token: &str) -> Result<(), u16> {
        let mut stream = TcpStream::connect(self.addr).expect("tcp connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut req = upgrade_request(&format!("/push/{token}"), &[], &[]).into_bytes();
        req.extend_from_slice(&client_frame(true, OP_PING, b"p"));
        stream.write_all(&req).expect("write upgrade request");
        let mut buf = Vec::new();
        let response = read_http_response(&mut stream, &mut buf);
        if response.status != 101 {
            return Err(response.status);
        }
        let mut raw = RawWs {
            stream,
            buf,
            response,
        };
        let frame = raw.read_frame();
        match frame.opcode {
            OP_PONG => Ok(()),
            OP_CLOSE => Err(frame.close_code().expect("a close code")),
            other => panic!("unexpected frame {other} after the upgrade"),
        }
    }

    /// Raw websocket connection (hand-made frames) to `path`; asserts 101.
    pub fn raw_ws(&self, path: &str) -> RawWs {
        RawWs::connect(self.addr, path, &[])
    }

    // -- raw HTTP ------------------------------------------------------------

    /// Write `bytes`, read the response (head + Content-Length body, or until
    /// EOF/timeout), return it as text.
    pub fn raw_request(&self, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(self.addr).expect("tcp connect");
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.write_all(bytes).expect("write request");
        let mut leftover = Vec::new();
        read_http_response(&mut s, &mut leftover).raw
    }

    pub fn http(&self, bytes: &[u8]) -> HttpResponse {
        parse_response(&self.raw_request(bytes))
    }

    // -- process -------------------------------------------------------------

    pub fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM)
    }

    pub fn sighup(&self) {
        self.signal(libc::SIGHUP)
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > deadline {
                panic!(
                    "server did not exit within {timeout:?}; stderr:\n{}",
                    tail_file(&self.stderr_path)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGKILL, and wait for the exit.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(5));
    }

    /// SIGTERM; the server must exit 0 within 10 s.
    pub fn term(&mut self) {
        self.sigterm();
        let st = self.wait_exit(Duration::from_secs(10));
        assert!(st.success(), "SIGTERM exit status {st:?}");
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Run a CLI subcommand (`wspush ARGS...`) with a 10 s limit.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        run_with_timeout(cmd, Duration::from_secs(10))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Under a wrapper (strace), the server is the wrapper's child:
        // killing the wrapper alone would leave it running.
        let pid = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
        for child in children.unwrap_or_default().split_whitespace() {
            if let Ok(child) = child.parse::<i32>() {
                unsafe { libc::kill(child, libc::SIGKILL) };
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- server stderr (tail) {} ----\n{}",
                self.stderr_path.display(),
                tail_file(&self.stderr_path)
            );
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn tail_file(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let n = s.len();
    if n > 6000 {
        let mut i = n - 6000;
        while !s.is_char_boundary(i) {
            i += 1;
        }
        s[i..].to_string()
    } else {
        s
    }
}

/// Parse `wspush: listening on ws://127.0.0.1:PORT, control socket PATH`.
pub fn parse_banner(line: &str) -> Option<SocketAddr> {
    let rest = line.split("ws://").nth(1)?;
    let addr = rest.split(',').next()?;
    addr.trim().parse().ok()
}

/// Spawn `cmd` with piped stdout/stderr, wait at most `timeout` (then kill and panic).
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let te = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command {cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: to.join().unwrap(),
        stderr: te.join().unwrap(),
    }
}

// ---------------------------------------------------------------------------
// Control connection
// ---------------------------------------------------------------------------

pub struct ControlConn {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
}

impl ControlConn {
    pub fn connect(path: &Path) -> ControlConn {
        let s = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connect control {}: {e}", path.display()));
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        let w = s.try_clone().unwrap();
        ControlConn {
            reader: BufReader::new(s),
            writer: w,
        }
    }

    /// Send raw bytes (caller adds the newline).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    pub fn send(&mut self, req: &Value) {
        let mut line = serde_json::to_vec(req).unwrap();
        line.push(b'\n');
        self.writer.write_all(&line).expect("write control request");
    }

    /// Read one reply line (panics on EOF / timeout / non-JSON).
    pub fn read_reply(&mut self) -> Value {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("control connection closed before a reply"),
            Ok(_) => {}
            Err(e) => panic!("reading control reply: {e}"),
        }
        assert!(
            line.ends_with('\n'),
            "reply line not newline-terminated: {line:?}"
        );
        serde_json::from_str(line.trim_end())
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {line:?}"))
    }

    /// Like read_reply but returns None on EOF.
    pub fn try_read_reply(&mut self) -> io::Result<Option<Value>> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line)?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_str(line.trim_end())
                .map_err(|e| io::Error::other(format!("{e}: {line:?}")))?,
        ))
    }

    pub fn request(&mut self, req: &Value) -> Value {
        self.send(req);
        self.read_reply()
    }
}

// ---------------------------------------------------------------------------
// tungstenite helpers
// ---------------------------------------------------------------------------

/// Read the next text message as JSON, skipping pings/pongs.
pub fn recv_json(ws: &mut Ws) -> Value {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                return serde_json::from_str(t.as_str())
                    .unwrap_or_else(|e| panic!("push is not JSON ({e}): {t:?}"));
            }
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(other) => panic!("expected a text message, got {other:?}"),
            Err(e) => panic!("expected a text message, got error {e}"),
        }
    }
}

/// Read until a Close frame; returns its code. Data messages before it are returned too.
pub fn expect_close_collect(ws: &mut Ws) -> (u16, Vec<Message>) {
    let mut msgs = Vec::new();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return (u16::from(f.code), msgs),
            Ok(Message::Close(None)) => panic!("close frame without a status code"),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
            Ok(m) => msgs.push(m),
            Err(e) => panic!(
                "expected a close frame, got error {e} (after {} messages)",
                msgs.len()
            ),
        }
    }
}

pub fn expect_close(ws: &mut Ws) -> u16 {
    expect_close_collect(ws).0
}

/// Send a ping with a unique payload and read until its pong. Returns the
/// data messages read meanwhile. Because the server handles one connection's
/// frames in order, everything sent before has been processed afterwards.
pub fn sync(ws: &mut Ws) -> Vec<Message> {
    let payload = format!("sync-{}", unique());
    ws.send(Message::Ping(Bytes::from(payload.clone().into_bytes())))
        .expect("send ping");
    let mut msgs = Vec::new();
    loop {
        match ws.read() {
            Ok(Message::Pong(p)) if p.as_ref() == payload.as_bytes() => return msgs,
            Ok(Message::Pong(_)) | Ok(Message::Ping(_)) => {}
            Ok(m) => msgs.push(m),
            Err(e) => panic!("waiting for pong {payload}: {e}"),
        }
    }
}

/// Assert nothing (other than ping/pong) arrives within `dur`.
pub fn expect_silence(ws: &mut Ws, dur: Duration) {
    ws.get_ref().set_read_timeout(Some(dur)).unwrap();
    let deadline = Instant::now() + dur;
    loop {
        match ws.read() {
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {
                if Instant::now() >= deadline {
                    break;
                }
            }
            Ok(m) => panic!("expected silence, got {m:?}"),
            Err(tungstenite::Error::Io(e))
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                break;
            }
            Err(e) => panic!("expected silence, got error {e}"),
        }
    }
    ws.get_ref().set_read_timeout(Some(READ_TIMEOUT)).unwrap();
}

// ---------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub raw: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn parse_response(raw: &str) -> HttpResponse {
    let (head, body) = match raw.find("\r\n\r\n") {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => (raw, ""),
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_string(),
        raw: raw.to_string(),
    }
}

fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Read one HTTP response from `s`. `buf` receives any bytes after it (e.g.
/// websocket frames after a 101). Reads the head, then the Content-Length
/// body; without Content-Length (and not 101) reads until EOF or timeout.
pub fn read_http_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> HttpResponse {
    let mut tmp = [0u8; 16384];
    let mut eof = false;
    let head_end = loop {
        if let Some(e) = find_head_end(buf) {
            break Some(e);
        }
        match s.read(&mut tmp) {
            Ok(0) => {
                eof = true;
                break None;
            }
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(_) => break None,
        }
    };
    let Some(head_end) = head_end else {
        let raw = String::from_utf8_lossy(buf).to_string();
        buf.clear();
        let _ = eof;
        return parse_response(&raw);
    };
    let head = parse_response(&String::from_utf8_lossy(&buf[..head_end]));
    if head.status == 101 {
        let raw = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        return parse_response(&raw);
    }
    let clen: Option<usize> = head.header("content-length").and_then(|v| v.parse().ok());
    loop {
        if let Some(cl) = clen
            && buf.len() >= head_end + cl
        {
            let raw = String::from_utf8_lossy(&buf[..head_end + cl]).to_string();
            buf.drain(..head_end + cl);
            return parse_response(&raw);
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let raw = String::from_utf8_lossy(buf).to_string();
    buf.clear();
    parse_response(&raw)
}

/// A complete websocket upgrade request for `path` with the default headers;
/// `extra` headers are appended, and headers named in `omit` are left out.
pub fn upgrade_request(path: &str, omit: &[&str], extra: &[(&str, &str)]) -> String {
    upgrade_request_method("GET", path, omit, extra)
}

pub fn upgrade_request_method(
    method: &str,
    path: &str,
    omit: &[&str],
    extra: &[(&str, &str)],
) -> String {
    let defaults = [
        ("Host", "127.0.0.1"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", WS_KEY),
        ("Sec-WebSocket-Version", "13"),
    ];
    let mut s = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in defaults {
        if omit.iter().any(|o| o.eq_ignore_ascii_case(k)) {
            continue;
        }
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    for (k, v) in extra {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s
}

// ---------------------------------------------------------------------------
// Raw websocket frames
// ---------------------------------------------------------------------------

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Build one frame by hand. `rsv` is the 3 reserved bits (0..=7, RSV1 = 4).
pub fn build_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(((fin as u8) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        f.push(m | len as u8);
    } else if len <= 0xffff {
        f.push(m | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(m | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// A masked (client) frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    build_frame(fin, 0, opcode, payload, Some(MASK))
}

pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn close_code(&self) -> Option<u16> {
        if self.opcode == OP_CLOSE && self.payload.len() >= 2 {
            Some(u16::from_be_bytes([self.payload[0], self.payload[1]]))
        } else {
            None
        }
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).to_string()
    }
}

/// Try to parse one frame from the front of `buf`.
pub fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let rsv = (buf[0] >> 4) & 7;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let mut len = (buf[1] & 0x7f) as u64;
    let mut pos = 2;
    if len == 126 {
        if buf.len() < 4 {
            return None;
        }
        len = u16::from_be_bytes([buf[2], buf[3]]) as u64;
        pos = 4;
    } else if len == 127 {
        if buf.len() < 10 {
            return None;
        }
        len = u64::from_be_bytes(buf[2..10].try_into().unwrap());
        pos = 10;
    }
    let mut key = [0u8; 4];
    if masked {
        if buf.len() < pos + 4 {
            return None;
        }
        key.copy_from_slice(&buf[pos..pos + 4]);
        pos += 4;
    }
    let end = pos + len as usize;
    if buf.len() < end {
        return None;
    }
    let mut payload = buf[pos..end].to_vec();
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Some((
        Frame {
            fin,
            rsv,
            opcode,
            masked,
            payload,
        },
        end,
    ))
}

/// A hand-driven websocket client connection.
pub struct RawWs {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub response: HttpResponse,
}

impl RawWs {
    /// Connect, send the upgrade request for `path` followed (in the same
    /// write) by `first`, and assert a correct 101 response.
    pub fn connect(addr: SocketAddr, path: &str, first: &[u8]) -> RawWs {
        let mut stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut req = upgrade_request(path, &[], &[]).into_bytes();
        req.extend_from_slice(first);
        stream.write_all(&req).expect("write upgrade request");
        let mut buf = Vec::new();
        let response = read_http_response(&mut stream, &mut buf);
        assert_eq!(
            response.status, 101,
            "expected 101 for {path}, got: {:?}",
            response.raw
        );
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(WS_ACCEPT),
            "bad Sec-WebSocket-Accept in {:?}",
            response.raw
        );
        RawWs {
            stream,
            buf,
            response,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write frame");
    }

    /// Send, ignoring errors (the server may already have closed).
    pub fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Send one masked frame.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let f = client_frame(fin, opcode, payload);
        self.send(&f);
    }

    pub fn send_text(&mut self, s: &str) {
        self.send_frame(true, OP_TEXT, s.as_bytes());
    }

    /// Ok(Some(frame)), Ok(None) on EOF, Err on timeout/reset.
    pub fn try_read_frame(&mut self) -> io::Result<Option<Frame>> {
        let mut tmp = [0u8; 65536];
        loop {
            if let Some((f, n)) = parse_frame(&self.buf) {
                self.buf.drain(..n);
                return Ok(Some(f));
            }
            let n = self.stream.read(&mut tmp)?;
            if n == 0 {
                if !self.buf.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "EOF inside a frame",
                    ));
                }
                return Ok(None);
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    pub fn read_frame(&mut self) -> Frame {
        match self.try_read_frame() {
            Ok(Some(f)) => f,
            Ok(None) => panic!("connection closed (EOF) while expecting a frame"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("no frame arrived within the read timeout ({e})")
            }
            Err(e) => panic!("error while expecting a frame: {e}"),
        }
    }

    /// Read frames (skipping data/ping/pong) until a close frame; returns it.
    pub fn expect_close_frame(&mut self) -> Frame {
        loop {
            let f = self.read_frame();
            assert!(!f.masked, "server frames must not be masked: {f:?}");
            if f.opcode == OP_CLOSE {
                return f;
            }
        }
    }

    /// Read until a close frame and return its status code (panics if none).
    pub fn expect_close(&mut self) -> u16 {
        let f = self.expect_close_frame();
        f.close_code()
            .unwrap_or_else(|| panic!("close frame without status code: {f:?}"))
    }

    /// After the close handshake the server must close TCP: expect EOF (or reset).
    pub fn expect_eof(&mut self) {
        match self.try_read_frame() {
            Ok(None) => {}
            Ok(Some(f)) => panic!("expected EOF, got frame {f:?}"),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected EOF, got error {e}"),
        }
    }

    /// Reply to a server close and expect the TCP close.
    pub fn finish_close(&mut self, code: u16) {
        let p = close_payload(code, "");
        self.send_lossy(&client_frame(true, OP_CLOSE, &p));
        self.expect_eof();
    }

    /// Read one complete data message (reassembling fragments); control frames
    /// received in between are returned in `controls`.
    pub fn read_message(&mut self, controls: &mut Vec<Frame>) -> (u8, Vec<u8>) {
        let mut opcode = None;
        let mut data = Vec::new();
        loop {
            let f = self.read_frame();
            if f.opcode >= 8 {
                if f.opcode == OP_CLOSE {
                    panic!(
                        "got close {:?} while expecting a data message",
                        f.close_code()
                    );
                }
                controls.push(f);
                continue;
            }
            if opcode.is_none() {
                assert_ne!(f.opcode, OP_CONT, "continuation frame without a start");
                opcode = Some(f.opcode);
            } else {
                assert_eq!(
                    f.opcode, OP_CONT,
                    "new data frame inside a fragmented message"
                );
            }
            data.extend_from_slice(&f.payload);
            if f.fin {
                return (opcode.unwrap(), data);
            }
        }
    }

    /// Send a ping with a unique payload and read until the matching pong;
    /// returns all non-pong frames read meanwhile.
    pub fn sync(&mut self) -> Vec<Frame> {
        let payload = format!("sync-{}", unique());
        self.send_frame(true, OP_PING, payload.as_bytes());
        let mut other = Vec::new();
        loop {
            let f = self.read_frame();
            if f.opcode == OP_PONG && f.payload == payload.as_bytes() {
                return other;
            }
            other.push(f);
        }
    }
}

// ---------------------------------------------------------------------------
// Outside programs and process figures
// ---------------------------------------------------------------------------

/// Whether CI asked for every outside program to be present (`.ci/run`).
pub fn external_required() -> bool {
    std::env::var("WSPUSH_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1")
}

/// An outside program a test needs is missing: print `SKIPPED: <why>` (the
/// caller then returns), or fail when `WSPUSH_REQUIRE_EXTERNAL=1`.
pub fn skip_missing(why: &str) {
    if external_required() {
        panic!("{why} (required: WSPUSH_REQUIRE_EXTERNAL=1)");
    }
    println!("SKIPPED: {why}");
}

/// A small tmpfs mounted for one test, unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempdir().keep();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }

    pub fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {size}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A 256 KiB tmpfs (root only), or a skip.
pub fn small_tmpfs() -> Option<Tmpfs> {
    if unsafe { libc::geteuid() } != 0 {
        skip_missing("mounting a tmpfs needs root");
        return None;
    }
    let fs = Tmpfs::mount("256k");
    if fs.is_none() {
        skip_missing("mount -t tmpfs failed");
    }
    fs
}

/// `wspush serve ARGS` (on a free port and a fresh control path unless
/// ARGS name them) that must refuse to start: its output. Nothing may
/// have been bound: the control socket must not exist.
pub fn serve_refused(args: &[&str]) -> Output {
    let dir = tempdir();
    let socket = dir.path().join("s.sock");
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").arg("--control").arg(&socket).args(args);
    if !args.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    let out = run_with_timeout(cmd, Duration::from_secs(10));
    assert!(!out.status.success(), "serve {args:?} started");
    assert!(
        !socket.exists(),
        "serve {args:?} bound its control socket before refusing"
    );
    out
}

/// `name` as found on PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Resident set size of process `pid`, in bytes (from /proc).
pub fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// User + system CPU time process `pid` has used so far (from /proc).
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')').expect("comm ends with )") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Open file descriptors of process `pid`.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The reply line a successful CLI run printed, parsed (panics with the
/// exit status, stdout and stderr otherwise).
pub fn stdout_json(out: &Output) -> Value {
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}; stdout {so:?}; stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = so
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no output line"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("stdout not JSON ({e}): {so:?}"))
}
