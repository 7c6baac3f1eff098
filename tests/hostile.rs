//! The hostile-input catalogue: one table of bad inputs on the three
//! surfaces (HTTP upgrade, WebSocket frames, control socket), each with the
//! answer docs/protocol.md and README give it, all thrown at one server.
//! Afterwards a normal client still connects and receives a push, and the
//! server's RSS stays under [`RSS_BOUND`].
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Server RSS allowed after the whole catalogue (debug build): 16 MiB.
/// Measured: 6 MiB before the ping flood, 8.4 MiB at the end (heap the
/// allocator keeps after the 1 MiB control-line bound, the 100,000-name
/// `users` list and the flood's outbox). Before the per-turn read budget
/// the ping flood alone left it at 24 MiB: every pong of one endless read
/// loop was queued before any flush could apply `--max-outbound`.
const RSS_BOUND: u64 = 16 << 20;

/// What one bad input is and what it must get.
enum Bad {
    /// Raw bytes on the WebSocket port → this HTTP status.
    Http(Vec<u8>, u16),
    /// Raw bytes after a good upgrade → a close frame with this code.
    Frames(Vec<u8>, u16),
    /// An upgrade to this path is accepted, then closed with this code (a
    /// refused token).
    Refused(String, u16),
    /// One control line (newline added) → `ok:false` with an error containing this.
    Control(Vec<u8>, &'static str),
    /// Anything that needs more than one exchange.
    Custom(fn(&Server)),
}

const TOKEN: &str = "tok1";

fn upgrade(path: &str) -> Vec<u8> {
    upgrade_request(path, &[], &[]).into_bytes()
}

fn upgrade_with(omit: &[&str], extra: &[(&str, &str)]) -> Vec<u8> {
    upgrade_request("/push/tok1", omit, extra).into_bytes()
}

fn with_method(method: &str) -> Vec<u8> {
    upgrade_request_method(method, "/push/tok1", &[], &[]).into_bytes()
}

/// A request head with these lines between the request line and the blank line.
fn head(request_line: &str, lines: &[&str]) -> Vec<u8> {
    let mut s = format!("{request_line}\r\n");
    for l in lines {
        s.push_str(l);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn frame(fin: bool, rsv: u8, opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    build_frame(fin, rsv, opcode, payload, masked.then_some(MASK))
}

/// A masked frame header announcing `len` bytes in the 64-bit form, no payload.
fn header64(opcode: u8, len: u64) -> Vec<u8> {
    let mut f = vec![0x80 | opcode, 0x80 | 127];
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&MASK);
    f
}

fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    client_frame(true, OP_CLOSE, &p)
}

fn catalogue() -> Vec<(&'static str, Bad)> {
    use Bad::*;
    let valid_key = "dGhlIHNhbXBsZSBub25jZQ==";
    let long_token = format!("/push/{}", "t".repeat(4000));
    let many_headers: Vec<String> = (0..70).map(|i| format!("X-H{i}: v")).collect();
    let many: Vec<&str> = many_headers.iter().map(String::as_str).collect();
    let huge = format!("X-Big: {}", "a".repeat(9000));
    vec![
        // --- handshake -----------------------------------------------------
        (
            "garbage bytes",
            Http(b"\x00\x01\x02\xff garbage\r\n\r\n".to_vec(), 400),
        ),
        ("not HTTP at all", Http(b"HELLO\r\n\r\n".to_vec(), 400)),
        (
            "huge header",
            Http(head("GET /push/tok1 HTTP/1.1", &["Host: x", &huge]), 431),
        ),
        (
            "too many headers",
            Http(head("GET /push/tok1 HTTP/1.1", &many), 431),
        ),
        ("endless head", Http(vec![b'a'; 9 * 1024], 431)),
        (
            "missing key",
            Http(upgrade_with(&["Sec-WebSocket-Key"], &[]), 400),
        ),
        (
            "key not base64",
            Http(
                upgrade_with(
                    &["Sec-WebSocket-Key"],
                    &[("Sec-WebSocket-Key", "!!!not-base64!!!")],
                ),
                400,
            ),
        ),
        (
            "key of 15 bytes",
            Http(
                upgrade_with(
                    &["Sec-WebSocket-Key"],
                    &[("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA")],
                ),
                400,
            ),
        ),
        (
            "two keys",
            Http(upgrade_with(&[], &[("Sec-WebSocket-Key", valid_key)]), 400),
        ),
        (
            "version 8",
            Http(
                upgrade_with(
                    &["Sec-WebSocket-Version"],
                    &[("Sec-WebSocket-Version", "8")],
                ),
                426,
            ),
        ),
        (
            "no version",
            Http(upgrade_with(&["Sec-WebSocket-Version"], &[]), 426),
        ),
        (
            "Upgrade: h2c",
            Http(upgrade_with(&["Upgrade"], &[("Upgrade", "h2c")]), 426),
        ),
        (
            "no Connection: upgrade",
            Http(upgrade_with(&["Connection"], &[]), 426),
        ),
        ("POST", Http(with_method("POST"), 405)),
        ("lowercase get", Http(with_method("get"), 405)),
        (
            "HTTP/1.0",
            Http(
                upgrade("/push/tok1").replace_first(b"HTTP/1.1", b"HTTP/1.0"),
                400,
            ),
        ),
        (
            "absolute-form target",
            Http(
                upgrade_request("http://evil/push/tok1", &[], &[]).into_bytes(),
                400,
            ),
        ),
        (
            "smuggling: Content-Length body",
            Http(upgrade_with(&[], &[("Content-Length", "5")]), 400),
        ),
        (
            "smuggling: chunked",
            Http(upgrade_with(&[], &[("Transfer-Encoding", "chunked")]), 400),
        ),
        (
            "smuggling: CL and TE",
            Http(
                upgrade_with(
                    &[],
                    &[("Content-Length", "0"), ("Transfer-Encoding", "chunked")],
                ),
                400,
            ),
        ),
        (
            "smuggling: two Hosts",
            Http(upgrade_with(&[], &[("Host", "other")]), 400),
        ),
        (
            "smuggling: space before colon",
            Http(upgrade_with(&[], &[("Transfer-Encoding ", "chunked")]), 400),
        ),
        (
            "CRLF in the target",
            Http(
                b"GET /push/tok1\r\nX: y HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                400,
            ),
        ),
        (
            "NUL in a header",
            Http(upgrade_with(&[], &[("X-N", "a\0b")]), 400),
        ),
        (
            "non-UTF-8 User-Agent",
            Http(
                upgrade_with(&[], &[("User-Agent", "X")])
                    .replace_first(b"User-Agent: X", b"User-Agent: \xff"),
                400,
            ),
        ),
        ("no Host", Http(upgrade_with(&["Host"], &[]), 400)),
        ("empty token", Refused("/push/".into(), 4401)),
        ("no token", Refused("/push".into(), 4401)),
        ("4000-byte token", Refused(long_token.clone(), 4401)),
        (
            "percent-encoded token",
            Refused("/push/tok%31".into(), 4401),
        ),
        ("token with /..", Refused("/push/../push/tok1".into(), 4401)),
        ("token then /..", Refused("/push/tok1/..".into(), 4401)),
        ("JWT-shaped junk", Refused("/push/a.b.c".into(), 4401)),
        ("other path", Http(upgrade("/admin"), 404)),
        ("path prefix", Http(upgrade("/pushx/tok1"), 404)),
        ("bad since", Http(upgrade("/push/tok1?since=-1"), 400)),
        ("slow drip past the deadline", Custom(slow_drip)),
        // --- frames ----------------------------------------------------------
        (
            "unmasked frame",
            Frames(frame(true, 0, OP_TEXT, false, b"hi"), 1002),
        ),
        ("RSV1", Frames(frame(true, 4, OP_TEXT, true, b"hi"), 1002)),
        ("RSV2", Frames(frame(true, 2, OP_BINARY, true, b"hi"), 1002)),
        (
            "RSV3 on a ping",
            Frames(frame(true, 1, OP_PING, true, b""), 1002),
        ),
        ("opcode 3", Frames(frame(true, 0, 3, true, b""), 1002)),
        ("opcode 0xB", Frames(frame(true, 0, 0xB, true, b""), 1002)),
        (
            "64-bit length, top bit set",
            Frames(header64(OP_BINARY, 1 << 63), 1002),
        ),
        (
            "64-bit length of 1 TiB",
            Frames(header64(OP_BINARY, 1 << 40), 1009),
        ),
        (
            "message over the limit",
            Frames(header64(OP_TEXT, 65537), 1009),
        ),
        (
            "fragments over the limit",
            Frames(
                [
                    client_frame(false, OP_BINARY, &[0; 40000]),
                    client_frame(true, OP_CONT, &[0; 40000]),
                ]
                .concat(),
                1009,
            ),
        ),
        (
            "fragmented ping",
            Frames(client_frame(false, OP_PING, b"x"), 1002),
        ),
        (
            "126-byte ping",
            Frames(client_frame(true, OP_PING, &[b'p'; 126]), 1002),
        ),
        (
            "close with a 64-bit length",
            Frames(header64(OP_CLOSE, 2), 1002),
        ),
        (
            "continuation without a start",
            Frames(client_frame(true, OP_CONT, b"x"), 1002),
        ),
        (
            "text inside a fragmented message",
            Frames(
                [
                    client_frame(false, OP_TEXT, b"a"),
                    client_frame(true, OP_TEXT, b"b"),
                ]
                .concat(),
                1002,
            ),
        ),
        (
            "invalid UTF-8",
            Frames(
                client_frame(
                    true,
                    OP_TEXT,
                    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
                ),
                1007,
            ),
        ),
        (
            "UTF-8 split badly across fragments",
            Frames(
                [
                    client_frame(false, OP_TEXT, b"\xce"),
                    client_frame(true, OP_CONT, b"a"),
                ]
                .concat(),
                1007,
            ),
        ),
        ("close code 1005", Frames(close(1005, b""), 1002)),
        ("close code 999", Frames(close(999, b""), 1002)),
        ("close code 1016", Frames(close(1016, b""), 1002)),
        ("close code 5000", Frames(close(5000, b""), 1002)),
        (
            "one-byte close",
            Frames(client_frame(true, OP_CLOSE, b"\x03"), 1002),
        ),
        (
            "close reason not UTF-8",
            Frames(close(1000, b"\xff\xfe"), 1007),
        ),
        ("ping flood without reading", Custom(ping_flood)),
        // --- control socket ---------------------------------------------------
        ("not JSON", Control(b"hello".to_vec(), "not JSON")),
        ("JSON array", Control(b"[1,2]".to_vec(), "JSON object")),
        ("JSON string", Control(br#""push""#.to_vec(), "JSON object")),
        ("op not a string", Control(br#"{"op":5}"#.to_vec(), "op")),
        (
            "missing op",
            Control(br#"{"users":["a"],"content":1}"#.to_vec(), "op"),
        ),
        (
            "unknown op",
            Control(br#"{"op":"shutdown"}"#.to_vec(), "unknown variant"),
        ),
        (
            "push without content",
            Control(br#"{"op":"push","users":["a"]}"#.to_vec(), "content"),
        ),
        (
            "users not a list",
            Control(
                br#"{"op":"push","users":"alice","content":1}"#.to_vec(),
                "invalid type",
            ),
        ),
        (
            "type not a number",
            Control(
                br#"{"op":"push","content":1,"type":"x"}"#.to_vec(),
                "invalid type",
            ),
        ),
        (
            "type out of range",
            Control(
                br#"{"op":"push","content":1,"type":1e400}"#.to_vec(),
                "not JSON",
            ),
        ),
        (
            "grant with a numeric token",
            Control(
                br#"{"op":"grant","token":5,"user":"u"}"#.to_vec(),
                "invalid type",
            ),
        ),
        (
            "grant an empty token",
            Control(br#"{"op":"grant","token":"","user":"u"}"#.to_vec(), "token"),
        ),
        (
            "kick with both fields",
            Control(
                br#"{"op":"kick","user":"u","connection":1}"#.to_vec(),
                "exactly one",
            ),
        ),
        (
            "revoke an unknown token",
            Control(
                br#"{"op":"revoke","token":"nope"}"#.to_vec(),
                "unknown token",
            ),
        ),
        (
            "trailing garbage",
            Control(br#"{"op":"stats"} x"#.to_vec(), "not JSON"),
        ),
        (
            "invalid UTF-8 in a string",
            Control(
                b"{\"op\":\"push\",\"content\":\"\xff\"}".to_vec(),
                "not JSON",
            ),
        ),
        (
            "binary junk",
            Control((0..=255u8).filter(|&b| b != b'\n').collect(), "not JSON"),
        ),
        (
            "deeply nested JSON",
            Control(
                [vec![b'['; 100_000], vec![b']'; 100_000]].concat(),
                "not JSON",
            ),
        ),
        ("a 2 MiB line", Custom(long_line)),
        (
            "users list of 100,000 names",
            Custom(hundred_thousand_users),
        ),
        ("control client that never reads", Custom(never_reads)),
    ]
}

trait ReplaceFirst {
    fn replace_first(self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceFirst for Vec<u8> {
    fn replace_first(self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = self
            .windows(from.len())
            .position(|w| w == from)
            .expect("pattern present");
        [&self[..at], to, &self[at + from.len()..]].concat()
    }
}

/// One byte every 300 ms: the head never completes; `--handshake-timeout 1`
/// answers 408 and closes.
fn slow_drip(s: &Server) {
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    for &b in upgrade("/push/tok1").iter().cycle() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no 408 after 5 s"
        );
        if c.write_all(&[b]).is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 "), "got {text:?}");
}

/// 100,000 pings (12.7 MB of pongs owed, well over what socket buffers absorb) from a client that never reads: the
/// pongs pile up past `--max-outbound` and the client is closed with 4000.
fn ping_flood(s: &Server) {
    let mut ws = s.raw_ws("/push/tok1");
    let ping = client_frame(true, OP_PING, &[b'p'; 125]);
    let flood: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 100_000)
        .collect();
    ws.send_lossy(&flood);
    assert_eq!(ws.expect_close(), 4000);
}

/// A 2 MiB line is refused with an error and skipped; the connection stays usable.
fn long_line(s: &Server) {
    let mut c = s.control_conn();
    let mut line = vec![b'x'; 2 << 20];
    line.push(b'\n');
    c.send_raw(&line).unwrap();
    let r = c.read_reply();
    assert_eq!(r["ok"], json!(false), "{r}");
    assert!(r["error"].as_str().unwrap().contains("1 MiB"), "{r}");
    assert_eq!(c.request(&json!({"op":"stats","id":2}))["id"], json!(2));
}

/// A valid push naming 100,000 users nobody is connected as: answered
/// promptly with `delivered: 0`.
fn hundred_thousand_users(s: &Server) {
    let users: Vec<String> = (0..100_000).map(|i| format!("u{i}")).collect();
    let started = Instant::now();
    let r = s.control(json!({"op":"push","users":users,"content":1}));
    assert_eq!(
        (r["ok"].clone(), r["delivered"].clone()),
        (json!(true), json!(0)),
        "{r}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// A control client writes 20,000 requests and reads nothing: the server
/// stops reading it at 1 MiB of unsent replies, and others are still served.
fn never_reads(s: &Server) {
    let mut greedy = s.control_conn();
    let line = b"{\"op\":\"stats\"}\n".repeat(20_000);
    greedy
        .writer
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let _ = greedy.send_raw(&line);
    let started = Instant::now();
    assert_eq!(s.stats()["ok"], json!(true));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn the_hostile_catalogue_gets_its_answers_and_the_server_survives() {
    let s = Server::start(&["--handshake-timeout", "1", "--ping-interval", "0"]);
    s.grant(TOKEN, "alice");
    let cases = catalogue();
    let mut names: Vec<&str> = cases.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "duplicate case names");
    assert!(cases.len() >= 40, "the catalogue shrank to {}", cases.len());

    let mut ctrl = s.control_conn();
    for (name, bad) in &cases {
        println!("case: {name} (RSS {} KiB)", rss_bytes(s.pid()) / 1024);
        match bad {
            Bad::Http(bytes, status) => {
                let r = s.http(bytes);
                assert_eq!(r.status, *status, "{name}: {:?}", r.raw);
            }
            Bad::Refused(path, code) => {
                let mut ws = s.raw_ws(path);
                assert_eq!(ws.expect_close(), *code, "{name}");
            }
            Bad::Frames(bytes, code) => {
                let mut ws = s.raw_ws("/push/tok1");
                ws.send_lossy(bytes);
                assert_eq!(ws.expect_close(), *code, "{name}");
            }
            Bad::Control(line, needle) => {
                let mut line = line.clone();
                line.push(b'\n');
                ctrl.send_raw(&line).unwrap();
                let r = ctrl.read_reply();
                assert_eq!(r["ok"], json!(false), "{name}: {r}");
                let error = r["error"].as_str().unwrap_or_default();
                assert!(error.contains(needle), "{name}: {r}");
            }
            Bad::Custom(run) => run(&s),
        }
    }
    // The same control connection is still usable after every bad line.
    assert_eq!(
        ctrl.request(&json!({"op":"stats","id":"end"}))["id"],
        json!("end")
    );

    let mut ws = s.ws_connect(TOKEN);
    s.push(&["alice"], json!({"after":"catalogue"}));
    let got: Value = recv_json(&mut ws);
    assert_eq!(got["content"], json!({"after":"catalogue"}));

    let rss = rss_bytes(s.pid());
    println!(
        "server RSS after {} hostile inputs: {} KiB",
        cases.len(),
        rss / 1024
    );
    assert!(rss < RSS_BOUND, "RSS {rss} B over {RSS_BOUND} B");
}
