//! The HTTP API (`--api-key-file`): every control op as `POST /api/{op}`
//! on the WebSocket port, against the real binary over real sockets:
//! delivery, keep-alive and pipelining, `Expect: 100-continue`, the status
//! of each refusal (and which ones close), durability of the reply, and the
//! deadline on slow clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const KEY: &str = "test-api-key-0123456789";

fn key_file(dir: &Path) -> String {
    let path = dir.join("api.key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    path.display().to_string()
}

/// A server with the API on (plus `args`), and alice's token granted.
fn start(args: &[&str]) -> Server {
    let dir = tempdir();
    let key = key_file(dir.path());
    let mut all = vec!["--api-key-file", key.as_str()];
    all.extend_from_slice(args);
    let s = Server::start_in(dir, &all);
    s.grant("ta", "alice");
    s
}

/// A request with the right key and a JSON body.
fn post(op: &str, body: &str) -> String {
    post_with(op, body, "")
}

fn post_with(op: &str, body: &str, extra: &str) -> String {
    format!(
        "POST /api/{op} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn connect(s: &Server) -> TcpStream {
    let c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    c
}

fn json_of(r: &HttpResponse) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.raw))
}

/// Whether the server closed `c` (EOF within a short wait).
fn closed(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut b = [0u8; 64];
    matches!(c.read(&mut b), Ok(0))
}

#[test]
fn a_push_over_http_reaches_the_user_and_the_connection_stays_open() {
    let s = start(&[]);
    let mut ws = s.ws_connect("ta");
    let mut c = connect(&s);
    let mut buf = Vec::new();
    c.write_all(post("push", r#"{"users":["alice"],"content":{"t":21.5}}"#).as_bytes())
        .unwrap();
    let r = read_http_response(&mut c, &mut buf);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("connection"), Some("keep-alive"));
    let reply = json_of(&r);
    assert_eq!(reply["ok"], json!(true), "{reply}");
    assert_eq!(reply["delivered"], json!(1), "{reply}");
    let m = recv_json(&mut ws);
    assert_eq!(m["content"], json!({"t": 21.5}));
    assert_eq!(m["messageId"], reply["messageId"]);
    // The same connection serves the next request.
    c.write_all(post("stats", "{}").as_bytes()).unwrap();
    let r = read_http_response(&mut c, &mut buf);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(json_of(&r)["connections"], json!(1), "{}", r.body);
    // And `Connection: close` is honoured.
    c.write_all(post_with("stats", "{}", "Connection: close\r\n").as_bytes())
        .unwrap();
    let r = read_http_response(&mut c, &mut buf);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed(&mut c));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = start(&[]);
    let mut ws = s.ws_connect("ta");
    let mut c = connect(&s);
    let mut all = String::new();
    for i in 0..5 {
        all.push_str(&post(
            "push",
            &format!(r#"{{"users":["alice"],"content":{i}}}"#),
        ));
    }
    all.push_str(&post("stats", "{}"));
    c.write_all(all.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut seqs = Vec::new();
    for _ in 0..5 {
        let r = read_http_response(&mut c, &mut buf);
        assert_eq!(r.status, 200, "{}", r.raw);
        seqs.push(json_of(&r)["seq"].as_u64().unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let stats = read_http_response(&mut c, &mut buf);
    assert_eq!(json_of(&stats)["pushes"], json!(5), "{}", stats.body);
    for i in 0..5 {
        assert_eq!(recv_json(&mut ws)["content"], json!(i));
    }
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let s = start(&[]);
    let mut c = connect(&s);
    let body = r#"{"token":"tb","user":"bob"}"#;
    let request = post_with("grant", body, "Expect: 100-continue\r\n");
    c.write_all(&request.as_bytes()[..request.len() - body.len()])
        .unwrap();
    let mut buf = Vec::new();
    let interim = read_http_response(&mut c, &mut buf);
    assert_eq!(interim.status, 100, "{}", interim.raw);
    c.write_all(body.as_bytes()).unwrap();
    let r = read_http_response(&mut c, &mut buf);
    assert_eq!(r.status, 200, "{}", r.raw);
    s.ws_connect("tb");
}

#[test]
fn refusals_have_their_status_and_head_errors_close() {
    let s = start(&[]);
    let good = post("stats", "{}");
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let big = "x".repeat(9000);
    // (request, status, whether the connection stays open)
    let cases: Vec<(String, u16, bool)> = vec![
        (good.replace(&auth, ""), 401, false),
        (good.replace(KEY, "wrong-key-0123456789000"), 401, false),
        (good.replace(KEY, &KEY[..8]), 401, false),
        (good.replace(KEY, &format!("{KEY}{KEY}")), 401, false),
        (good.replace("Bearer", "Basic"), 401, false),
        (good.replace("/api/stats", "/api/nope"), 404, false),
        (good.replace("/api/stats", "/api/events"), 404, false),
        (good.replace("POST", "GET"), 405, false),
        (good.replace("POST", "PUT"), 405, false),
        (good.replace("Content-Length: 2\r\n", ""), 411, false),
        (
            good.replace("Content-Length: 2\r\n", "Transfer-Encoding: chunked\r\n")
                .replace("{}", "2\r\n{}\r\n0\r\n\r\n"),
            411,
            false,
        ),
        (
            good.replace(
                "Content-Length: 2\r\n",
                "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
            ),
            400,
            false,
        ),
        (
            good.replace(
                "Content-Length: 2\r\n",
                "Content-Length: 2\r\nContent-Length: 40\r\n",
            ),
            400,
            false,
        ),
        (
            good.replace("Content-Length: 2", "Content-Length: 2000000"),
            413,
            false,
        ),
        (good.replace("application/json", "text/plain"), 415, false),
        (
            good.replace("Content-Type: application/json\r\n", ""),
            415,
            false,
        ),
        (
            good.replace("Host: t\r\n", &format!("Host: t\r\nX-Big: {big}\r\n")),
            431,
            false,
        ),
        (post("push", "{bad json"), 400, true),
        (post("push", "[1,2]"), 400, true),
        (
            post("push", r#"{"op":"grant","token":"x","user":"y"}"#),
            400,
            true,
        ),
        (post("revoke", r#"{"token":"never-granted"}"#), 400, true),
    ];
    for (request, status, open) in cases {
        let mut c = connect(&s);
        c.write_all(request.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let r = read_http_response(&mut c, &mut buf);
        assert_eq!(r.status, status, "{request:?} got {}", r.raw);
        let error = serde_json::from_str::<Value>(&r.body).ok();
        if status != 431 {
            let error = error.unwrap_or_else(|| panic!("not JSON: {}", r.raw));
            assert_eq!(error["ok"], json!(false), "{}", r.raw);
            assert!(error["error"].is_string(), "{}", r.raw);
        }
        if status == 401 {
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer"))
            );
        }
        if status == 405 {
            assert_eq!(r.header("allow"), Some("POST"));
        }
        if open {
            c.write_all(good.as_bytes()).unwrap();
            let next = read_http_response(&mut c, &mut buf);
            assert_eq!(next.status, 200, "after {request:?}: {}", next.raw);
        } else {
            assert!(closed(&mut c), "{request:?} left the connection open");
        }
    }
    // Nothing above changed any state, and the server still serves.
    let stats = s.stats();
    assert_eq!(stats["pushes"], json!(0), "{stats}");
    s.ws_connect("ta");
}

#[test]
fn without_the_key_file_there_is_no_api() {
    let s = Server::start(&[]);
    let mut c = connect(&s);
    c.write_all(post("stats", "{}").as_bytes()).unwrap();
    let r = read_http_response(&mut c, &mut Vec::new());
    assert_eq!(r.status, 404, "{}", r.raw);
}

#[test]
fn a_short_key_file_is_refused_at_start() {
    let dir = tempdir();
    let path = dir.path().join("short.key");
    std::fs::write(
        &path, "short
",
    )
    .unwrap();
    let out = serve_refused(&["--api-key-file", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 16 bytes"), "{stderr}");
}

#[test]
fn a_held_push_acknowledged_over_http_survives_sigkill() {
    let data = tempdir();
    let dir = data.path().display().to_string();
    let mut s1 = start(&["--data-dir", &dir, "--mailbox", "10"]);
    let mut c = connect(&s1);
    c.write_all(post("push", r#"{"users":["alice"],"content":"kept"}"#).as_bytes())
        .unwrap();
    let r = read_http_response(&mut c, &mut Vec::new());
    assert_eq!(r.status, 200, "{}", r.raw);
    let reply = json_of(&r);
    assert_eq!(reply["queued"], json!(1), "{reply}");
    s1.signal(libc::SIGKILL);
    s1.wait_exit(Duration::from_secs(5));
    let s2 = start(&["--data-dir", &dir, "--mailbox", "10"]);
    let mut ws = s2.ws_connect("ta");
    let m = recv_json(&mut ws);
    assert_eq!(m["content"], json!("kept"));
    assert_eq!(m["seq"], reply["seq"]);
}

#[test]
fn slow_and_idle_clients_are_cut_off_at_the_handshake_timeout() {
    let s = start(&["--handshake-timeout", "1"]);
    // Half a head, then nothing.
    let mut slow = connect(&s);
    slow.write_all(b"POST /api/stats HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    // A complete head whose body never comes.
    let mut no_body = connect(&s);
    let request = post("stats", "{}");
    no_body
        .write_all(&request.as_bytes()[..request.len() - 2])
        .unwrap();
    // Served once, then idle.
    let mut idle = connect(&s);
    idle.write_all(post("stats", "{}").as_bytes()).unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_http_response(&mut idle, &mut buf).status, 200);
    let started = Instant::now();
    for c in [&mut slow, &mut no_body] {
        let r = read_http_response(c, &mut Vec::new());
        assert_eq!(r.status, 408, "{}", r.raw);
    }
    let r = read_http_response(&mut idle, &mut buf);
    assert!(r.status == 408 || r.raw.is_empty(), "{}", r.raw);
    assert!(started.elapsed() < Duration::from_secs(4));
    // Meanwhile and after, others are served.
    let mut c = connect(&s);
    c.write_all(post("stats", "{}").as_bytes()).unwrap();
    assert_eq!(read_http_response(&mut c, &mut Vec::new()).status, 200);
}

fn collect_request(token: &str, query: &str) -> String {
    format!("GET /api/collect{query} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n")
}

#[test]
fn a_client_collects_its_held_messages_over_http() {
    // Served without --api-key-file too: the client's own token is the key.
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("ta", "alice");
    for i in 0..3 {
        assert_eq!(s.push(&["alice"], json!(i))["queued"], json!(1));
    }
    let mut c = connect(&s);
    let mut buf = Vec::new();
    c.write_all(collect_request("ta", "").as_bytes()).unwrap();
    let r = read_http_response(&mut c, &mut buf);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let got = json_of(&r);
    let contents: Vec<Value> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(contents, [json!(0), json!(1), json!(2)]);
    assert!(
        got[0]["messageId"].is_string() && got[0]["seq"].is_u64(),
        "{got}"
    );
    // Collected is delivered: not again, neither here nor on the WebSocket.
    c.write_all(collect_request("ta", "").as_bytes()).unwrap();
    assert_eq!(json_of(&read_http_response(&mut c, &mut buf)), json!([]));
    let mut ws = s.ws_connect("ta");
    assert!(sync(&mut ws).is_empty());
    // ?since= replays the history after a seq.
    let since = got[1]["seq"].as_u64().unwrap();
    c.write_all(collect_request("ta", &format!("?since={since}")).as_bytes())
        .unwrap();
    let again = json_of(&read_http_response(&mut c, &mut buf));
    assert_eq!(again.as_array().unwrap().len(), 1, "{again}");
    assert_eq!(again[0]["content"], json!(2));
    // Refusals.
    for (request, status) in [
        (collect_request("nope", ""), 401),
        (
            "GET /api/collect HTTP/1.1\r\nHost: t\r\n\r\n".to_string(),
            401,
        ),
        (collect_request("ta", "?since=x"), 400),
        (collect_request("ta", "").replace("GET", "POST"), 405),
    ] {
        let mut c = connect(&s);
        c.write_all(request.as_bytes()).unwrap();
        let r = read_http_response(&mut c, &mut Vec::new());
        assert_eq!(r.status, status, "{request:?}: {}", r.raw);
        assert_eq!(json_of(&r)["ok"], json!(false), "{}", r.raw);
        if status == 401 {
            assert!(r.header("www-authenticate").is_some(), "{}", r.raw);
        }
    }
}

/// On a full disk an HTTP push is answered `503` with `"durable":false`,
/// not `200`: the reply waited for the log, like a control reply.
#[test]
fn a_push_the_log_cannot_keep_is_a_503() {
    let Some(fs) = small_tmpfs() else { return };
    let data = fs.0.join("data").display().to_string();
    let s = start(&["--data-dir", &data, "--mailbox", "1000"]);
    let mut c = connect(&s);
    let mut buf = Vec::new();
    let mut statuses = Vec::new();
    for i in 0..200 {
        let body = json!({"users": [format!("u{i}")], "content": "x".repeat(8000)}).to_string();
        c.write_all(post("push", &body).as_bytes()).unwrap();
        let r = read_http_response(&mut c, &mut buf);
        let reply = json_of(&r);
        statuses.push(r.status);
        if r.status == 200 {
            assert_eq!(reply["ok"], json!(true), "{reply}");
            continue;
        }
        assert_eq!(r.status, 503, "{}", r.raw);
        assert_eq!(reply["durable"], json!(false), "{reply}");
        assert!(
            reply["error"].as_str().unwrap().starts_with("data log: "),
            "{reply}"
        );
        break;
    }
    assert_eq!(
        statuses.last(),
        Some(&503),
        "a 256 KiB disk never filled up"
    );
    assert!(
        statuses.iter().filter(|&&st| st == 200).count() > 5,
        "{statuses:?}"
    );
}
