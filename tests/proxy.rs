//! `--trusted-proxy`: `X-Forwarded-For` names the client in `clients`,
//! events and logs only when the request came from a trusted proxy, and
//! never otherwise.

mod common;
#[path = "common/delivery.rs"]
mod delivery;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use delivery::Listener;
use serde_json::{Value, json};

/// An upgrade as `alice` carrying `X-Forwarded-For: forwarded`, kept open.
fn connect_forwarded(s: &Server, forwarded: &str) -> (TcpStream, Value) {
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let request = upgrade_request("/push/ta", &[], &[("X-Forwarded-For", forwarded)]);
    stream.write_all(request.as_bytes()).unwrap();
    let r = read_http_response(&mut stream, &mut Vec::new());
    assert_eq!(r.status, 101, "{}", r.raw);
    let clients = s.clients(Some("alice"));
    assert_eq!(clients.len(), 1, "{clients:?}");
    (stream, clients[0].clone())
}

fn online_event(l: &mut Listener) -> Value {
    loop {
        let line = l
            .next_line(Duration::from_secs(5))
            .unwrap()
            .expect("an event");
        let event: Value = serde_json::from_str(&line).unwrap();
        if event["event"] == "online" {
            return event;
        }
    }
}

#[test]
fn a_trusted_proxy_names_the_client() {
    let s = Server::start(&["--trusted-proxy", "127.0.0.0/8", "--ping-interval", "0"]);
    s.grant("ta", "alice");
    let mut l = Listener::start(&s);
    // The client forged an entry; the proxy appended the real address.
    let (stream, entry) = connect_forwarded(&s, "198.51.100.1, 203.0.113.7");
    assert_eq!(entry["peer"], json!("203.0.113.7"), "{entry}");
    assert!(
        entry["proxy"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{entry}"
    );
    assert_eq!(online_event(&mut l)["peer"], json!("203.0.113.7"));
    std::thread::sleep(Duration::from_millis(100));
    let log = s.stderr_text();
    assert!(
        log.contains("203.0.113.7 through proxy 127.0.0.1:"),
        "{log}"
    );
    drop(stream);
}

#[test]
fn the_header_is_never_believed_from_anyone_else() {
    for args in [vec![], vec!["--trusted-proxy", "10.0.0.0/8"]] {
        let s = Server::start(&args);
        s.grant("ta", "alice");
        let mut l = Listener::start(&s);
        let (stream, entry) = connect_forwarded(&s, "203.0.113.7");
        let peer = entry["peer"].as_str().unwrap().to_string();
        assert!(peer.starts_with("127.0.0.1:"), "{args:?}: {entry}");
        assert_eq!(entry["proxy"], json!(null), "{entry}");
        assert_eq!(online_event(&mut l)["peer"], json!(peer));
        assert!(!s.stderr_text().contains("203.0.113.7"), "{args:?}");
        drop(stream);
    }
}

#[test]
fn a_bad_trusted_proxy_is_refused_at_start() {
    let out = serve_refused(&["--trusted-proxy", "10.0.0.0/33"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("prefix length"));
}
