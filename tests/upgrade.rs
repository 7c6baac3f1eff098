//! HTTP side of the WebSocket endpoint: every status the upgrade handler can
//! answer, healthz, handshake timeout, pipelined first frame, max connections.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn server_with_token() -> Server {
    let s = Server::start(&[]);
    s.grant("tok1", "alice");
    s
}

/// With `--token-rejection http`: bad tokens get HTTP 401, as before the
/// close codes.
fn server_with_token_http() -> Server {
    let s = Server::start(&["--token-rejection", "http"]);
    s.grant("tok1", "alice");
    s
}

#[test]
fn a_bad_token_is_upgraded_then_closed_with_4401_and_its_reason() {
    let s = server_with_token();
    for (path, reason) in [
        ("/push/nosuchtoken", "unknown or revoked token"),
        ("/push/", "missing token"),
        ("/push", "missing token"),
    ] {
        let mut ws = s.raw_ws(path);
        let close = ws.expect_close_frame();
        assert_eq!(close.close_code(), Some(4401), "{path}");
        assert_eq!(&close.payload[2..], reason.as_bytes(), "{path}");
    }
    let stats = s.stats();
    assert_eq!(stats["token_refusals"], json!(3), "{stats}");
    assert_eq!(stats["upgrades"], json!(0), "{stats}");
    assert_eq!(stats["connections"], json!(0), "{stats}");
    // The good token still works.
    let mut ws = s.ws_connect("tok1");
    sync(&mut ws);
}

#[test]
fn healthz_is_200_plain_text() {
    let s = Server::start(&[]);
    let r = s.http(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200, "{:?}", r.raw);
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("text/plain"),
        "content-type {ct:?} in {:?}",
        r.raw
    );
}

#[test]
fn valid_upgrade_is_101_with_accept_key() {
    let s = server_with_token();
    let r = s.http(upgrade_request("/push/tok1", &[], &[]).as_bytes());
    assert_eq!(r.status, 101, "{:?}", r.raw);
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some(WS_ACCEPT),
        "{:?}",
        r.raw
    );
    assert!(
        r.header("upgrade")
            .unwrap_or("")
            .eq_ignore_ascii_case("websocket"),
        "{:?}",
        r.raw
    );
    assert!(
        r.header("connection")
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains("upgrade"),
        "{:?}",
        r.raw
    );
}

#[test]
fn upgrade_with_query_parameters_is_101() {
    let s = server_with_token();
    let r = s.http(upgrade_request("/push/tok1?since=0&device=phone", &[], &[]).as_bytes());
    assert_eq!(r.status, 101, "{:?}", r.raw);
}

#[test]
fn tungstenite_client_connects() {
    let s = server_with_token();
    let mut ws = s.ws_connect("tok1");
    sync(&mut ws);
}

#[test]
fn unknown_token_is_401_with_one_line_reason() {
    let s = server_with_token_http();
    let r = s.http(upgrade_request("/push/nosuchtoken", &[], &[]).as_bytes());
    assert_eq!(r.status, 401, "{:?}", r.raw);
    let body = r.body.trim_end();
    assert!(!body.is_empty(), "401 without a reason body: {:?}", r.raw);
    assert_eq!(
        body.lines().count(),
        1,
        "401 body must be one line: {:?}",
        r.body
    );
}

#[test]
fn missing_token_is_401() {
    let s = server_with_token_http();
    let r = s.http(upgrade_request("/push/", &[], &[]).as_bytes());
    assert_eq!(r.status, 401, "{:?}", r.raw);
    assert!(
        !r.body.trim().is_empty(),
        "401 without a reason body: {:?}",
        r.raw
    );
}

#[test]
fn bare_ws_path_without_token_is_401() {
    let s = server_with_token_http();
    let r = s.http(upgrade_request("/push", &[], &[]).as_bytes());
    assert_eq!(r.status, 401, "{:?}", r.raw);
}

#[test]
fn other_path_is_404() {
    let s = server_with_token();
    let r = s.http(upgrade_request("/nope/tok1", &[], &[]).as_bytes());
    assert_eq!(r.status, 404, "{:?}", r.raw);
    let r = s.http(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 404, "{:?}", r.raw);
}

#[test]
fn not_get_is_405() {
    let s = server_with_token();
    let r = s.http(
        upgrade_request_method("POST", "/push/tok1", &[], &[("Content-Length", "0")]).as_bytes(),
    );
    assert_eq!(r.status, 405, "{:?}", r.raw);
}

#[test]
fn get_without_upgrade_headers_is_426_with_version_header() {
    let s = server_with_token();
    let r = s.http(b"GET /push/tok1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 426, "{:?}", r.raw);
    assert_eq!(r.header("sec-websocket-version"), Some("13"), "{:?}", r.raw);
}

#[test]
fn wrong_websocket_version_is_426() {
    let s = server_with_token();
    let req = upgrade_request(
        "/push/tok1",
        &["Sec-WebSocket-Version"],
        &[("Sec-WebSocket-Version", "8")],
    );
    let r = s.http(req.as_bytes());
    assert_eq!(r.status, 426, "{:?}", r.raw);
}

#[test]
fn malformed_request_is_400() {
    let s = server_with_token();
    let r = s.http(b"THIS IS NOT HTTP\r\n\r\n");
    assert_eq!(r.status, 400, "{:?}", r.raw);
    let r = s.http(b"GET /push/tok1 HTTP/1.1\r\nBroken header line without colon\r\n\r\n");
    assert_eq!(r.status, 400, "{:?}", r.raw);
}

#[test]
fn bad_websocket_key_is_400() {
    let s = server_with_token();
    // not base64 at all
    let req = upgrade_request(
        "/push/tok1",
        &["Sec-WebSocket-Key"],
        &[("Sec-WebSocket-Key", "not*base64!!")],
    );
    let r = s.http(req.as_bytes());
    assert_eq!(r.status, 400, "{:?}", r.raw);
    // valid base64 but decodes to 3 bytes, not 16
    let req = upgrade_request(
        "/push/tok1",
        &["Sec-WebSocket-Key"],
        &[("Sec-WebSocket-Key", "YWJj")],
    );
    let r = s.http(req.as_bytes());
    assert_eq!(r.status, 400, "{:?}", r.raw);
}

#[test]
fn oversized_request_head_is_431() {
    let s = server_with_token();
    let pad = "a".repeat(9 * 1024);
    let req = upgrade_request("/push/tok1", &[], &[("X-Pad", &pad)]);
    let r = s.http(req.as_bytes());
    assert_eq!(r.status, 431, "{:?}", &r.raw[..r.raw.len().min(300)]);
}

#[test]
fn endless_request_head_is_431() {
    // A head that never ends must be refused once it passes 8 KiB.
    let s = server_with_token();
    let mut req = "GET /push/tok1 HTTP/1.1\r\n".to_string();
    for i in 0..200 {
        req.push_str(&format!("X-Header-{i}: {}\r\n", "b".repeat(60)));
    }
    let r = s.http(req.as_bytes());
    assert_eq!(r.status, 431, "{:?}", &r.raw[..r.raw.len().min(300)]);
}

#[test]
fn handshake_timeout_is_408_and_closes() {
    let s = Server::start(&["--handshake-timeout", "1"]);
    s.grant("tok1", "alice");
    let mut t = TcpStream::connect(s.addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    t.write_all(b"GET /push/tok1 HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        match t.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) => panic!(
                "no EOF after handshake timeout (got {:?} so far): {e}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&buf);
    let r = parse_response(&text);
    assert_eq!(r.status, 408, "{text:?}");
    assert!(
        elapsed >= Duration::from_millis(500),
        "408 came too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "408 came too late: {elapsed:?}"
    );
}

#[test]
fn silent_connection_gets_408() {
    let s = Server::start(&["--handshake-timeout", "1"]);
    let mut t = TcpStream::connect(s.addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let mut buf = Vec::new();
    let _ = t.read_to_end(&mut buf);
    let r = parse_response(&String::from_utf8_lossy(&buf));
    assert_eq!(r.status, 408, "{:?}", String::from_utf8_lossy(&buf));
}

#[test]
fn completed_handshake_is_not_cut_by_handshake_timeout() {
    let s = Server::start(&["--handshake-timeout", "1", "--idle-timeout", "30"]);
    s.grant("tok1", "alice");
    let mut ws = s.ws_connect("tok1");
    std::thread::sleep(Duration::from_millis(2500));
    sync(&mut ws);
    let r = s.push(&["alice"], json!("still here"));
    assert_eq!(r["delivered"], json!(1));
    assert_eq!(recv_json(&mut ws)["content"], json!("still here"));
}

#[test]
fn pipelined_first_frame_is_processed() {
    let s = server_with_token();
    let ping = client_frame(true, OP_PING, b"early");
    let mut raw = RawWs::connect(s.addr, "/push/tok1", &ping);
    let f = raw.read_frame();
    assert_eq!(f.opcode, OP_PONG, "{f:?}");
    assert_eq!(f.payload, b"early");
}

#[test]
fn pipelined_first_frame_text_with_echo() {
    let s = Server::start(&["--echo"]);
    s.grant("tok1", "alice");
    let mut first = client_frame(true, OP_TEXT, b"hello early");
    first.extend(client_frame(true, OP_PING, b"p"));
    let mut raw = RawWs::connect(s.addr, "/push/tok1", &first);
    let mut ctl = Vec::new();
    let (op, data) = raw.read_message(&mut ctl);
    assert_eq!(op, OP_TEXT);
    assert_eq!(data, b"hello early");
}

#[test]
fn max_connections_gives_503() {
    let s = Server::start(&["--max-connections", "2"]);
    s.grant("tok1", "alice");
    let mut a = s.ws_connect("tok1");
    let _b = s.ws_connect("tok1");
    let r = s.http(upgrade_request("/push/tok1", &[], &[]).as_bytes());
    assert_eq!(r.status, 503, "{:?}", r.raw);

    // Free a slot: afterwards a new connection is accepted again.
    a.close(None).unwrap();
    while a.read().is_ok() {}
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match s.ws_try_connect_path("/push/tok1") {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "slot never freed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn ws_path_flag_changes_endpoint() {
    let s = Server::start(&["--ws-path", "/ws"]);
    s.grant("tok1", "alice");
    let mut ws = s.ws_connect_path("/ws/tok1");
    sync(&mut ws);
    let r = s.http(upgrade_request("/push/tok1", &[], &[]).as_bytes());
    assert_eq!(r.status, 404, "{:?}", r.raw);
}

#[test]
fn flags_from_environment() {
    let s = Server::start_opts(ServerOpts {
        env: vec![
            ("WSPUSH_WS_PATH".into(), "/envpath".into()),
            ("WSPUSH_ECHO".into(), "true".into()),
        ],
        ..Default::default()
    });
    s.grant("tok1", "alice");
    let mut ws = s.ws_connect_path("/envpath/tok1");
    ws.send(tungstenite::Message::text("env echo")).unwrap();
    let msgs = sync(&mut ws);
    assert_eq!(msgs, vec![tungstenite::Message::text("env echo")]);
}

#[test]
fn listen_from_environment() {
    let s = Server::start_opts(ServerOpts {
        env: vec![("WSPUSH_LISTEN".into(), "127.0.0.1:0".into())],
        listen_arg: false,
        ..Default::default()
    });
    assert!(
        s.addr.port() != 0 && s.addr.port() != 7001,
        "banner: {}",
        s.banner
    );
    let r = s.http(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
}

#[test]
fn banner_names_control_socket() {
    let s = Server::start(&[]);
    assert!(
        s.banner.starts_with("wspush: listening on ws://127.0.0.1:"),
        "{}",
        s.banner
    );
    assert!(
        s.banner
            .ends_with(&format!(", control socket {}", s.control_path.display())),
        "{}",
        s.banner
    );
}

#[test]
fn remaining_serve_flags_from_environment() {
    let s = Server::start_opts(ServerOpts {
        env: vec![
            ("WSPUSH_MAX_CONNECTIONS".into(), "1".into()),
            ("WSPUSH_MAX_MESSAGE_SIZE".into(), "1024".into()),
            ("WSPUSH_CONTROL_MODE".into(), "640".into()),
            ("WSPUSH_HANDSHAKE_TIMEOUT".into(), "1".into()),
        ],
        control_arg: false,
        ..Default::default()
    });
    // WSPUSH_CONTROL
    assert!(
        s.control_path.exists(),
        "control socket not at WSPUSH_CONTROL path"
    );
    // WSPUSH_CONTROL_MODE
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&s.control_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640, "mode {mode:o}");
    s.grant("tok1", "alice");
    // WSPUSH_HANDSHAKE_TIMEOUT
    let mut t = TcpStream::connect(s.addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let mut buf = Vec::new();
    let _ = t.read_to_end(&mut buf);
    assert_eq!(
        parse_response(&String::from_utf8_lossy(&buf)).status,
        408,
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    // WSPUSH_MAX_CONNECTIONS (the timed-out socket above is gone by now)
    let mut raw = s.raw_ws("/push/tok1");
    let r = s.http(upgrade_request("/push/tok1", &[], &[]).as_bytes());
    assert_eq!(r.status, 503, "{:?}", r.raw);
    // WSPUSH_MAX_MESSAGE_SIZE
    raw.send_text(&"z".repeat(2000));
    assert_eq!(raw.expect_close(), 1009);
}

#[test]
fn connection_header_token_list_and_case_insensitive_values() {
    // Browsers send "Connection: keep-alive, Upgrade" and may capitalise "WebSocket".
    let s = server_with_token();
    let req = upgrade_request(
        "/push/tok1",
        &["Connection", "Upgrade"],
        &[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ],
    );
    let r = s.http(req.as_bytes());
    assert_eq!(r.status, 101, "{:?}", r.raw);
    assert_eq!(r.header("sec-websocket-accept"), Some(WS_ACCEPT));
}

#[test]
fn request_head_arriving_in_pieces_is_accepted() {
    let s = server_with_token();
    let req = upgrade_request("/push/tok1", &[], &[]);
    let mut t = TcpStream::connect(s.addr).unwrap();
    t.set_nodelay(true).unwrap();
    t.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    for chunk in req.as_bytes().chunks(7) {
        t.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut buf = Vec::new();
    let r = read_http_response(&mut t, &mut buf);
    assert_eq!(r.status, 101, "{:?}", r.raw);
}

#[test]
fn request_head_under_8k_is_accepted() {
    let s = server_with_token();
    let pad = "a".repeat(7 * 1024);
    let req = upgrade_request("/push/tok1", &[], &[("X-Pad", &pad)]);
    assert!(req.len() < 8 * 1024);
    let r = s.http(req.as_bytes());
    assert_eq!(r.status, 101, "{:?}", &r.raw[..r.raw.len().min(300)]);
}

#[test]
fn error_answers_close_the_connection() {
    // After a 4xx answer the server closes the TCP connection.
    let s = server_with_token();
    for req in [
        upgrade_request("/push/tok1", &["Sec-WebSocket-Version"], &[]),
        upgrade_request("/elsewhere", &[], &[]),
        "GET /push/tok1 HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
    ] {
        let mut t = TcpStream::connect(s.addr).unwrap();
        t.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        t.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let start = Instant::now();
        match t.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!(
                "connection not closed after {:?}: {e}",
                String::from_utf8_lossy(&buf)
            ),
        }
        assert!(start.elapsed() < Duration::from_secs(3));
        let r = parse_response(&String::from_utf8_lossy(&buf));
        assert!((400..500).contains(&r.status), "{:?}", r.raw);
    }
}
