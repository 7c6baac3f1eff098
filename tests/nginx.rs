//! wspush behind a real nginx terminating TLS, with the config shipped in
//! `tools/nginx/wspush.conf`: a `wss://` client (Python's `ssl`, trusting
//! a certificate made here with openssl) connects through nginx from
//! 127.0.0.2, receives a push, and `--trusted-proxy` decides whether
//! `clients` shows that address or nginx's. Without nginx, openssl or
//! python3 the test skips (and fails under `WSPUSH_REQUIRE_EXTERNAL=1`).

mod common;
#[path = "common/nginx.rs"]
mod nginx;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

/// A wss client: connects from 127.0.0.2 to nginx, upgrades with a forged
/// X-Forwarded-For, prints OPEN, then the payload of the first text frame.
const CLIENT: &str = r#"
import socket, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
raw = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0))
s = ctx.wrap_socket(raw, server_hostname="localhost")
s.sendall(b"GET /push/ta HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
          b"X-Forwarded-For: 198.51.100.66\r\n\r\n")
buf = b""
while b"\r\n\r\n" not in buf:
    buf += s.recv(4096)
head, buf = buf.split(b"\r\n\r\n", 1)
assert head.startswith(b"HTTP/1.1 101"), head
print("OPEN", flush=True)
while len(buf) < 2:
    buf += s.recv(4096)
n = buf[1] & 0x7f
start = 2
if n == 126:
    while len(buf) < 4:
        buf += s.recv(4096)
    n, start = int.from_bytes(buf[2:4], "big"), 4
while len(buf) < start + n:
    buf += s.recv(4096)
print(buf[start:start + n].decode(), flush=True)
"#;

/// Everything the test needs from outside, or the reason it is missing.
fn programs() -> Result<(), String> {
    for p in ["nginx", "openssl", "python3"] {
        if find_program(p).is_none() {
            return Err(format!(
                "{p} not found (Debian packages nginx, openssl, python3)"
            ));
        }
    }
    Ok(())
}

fn certificate(dir: &Path) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl req failed");
}

/// nginx on a free port with the shipped server block, in front of `s`.
fn start_nginx(dir: &Path, s: &Server) -> (nginx::Nginx, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let site = nginx::site(
        "wspush.conf",
        &[
            ("# test: upstream", format!("    server {};", s.addr)),
            (
                "# test: listen",
                format!("    listen 127.0.0.1:{port} ssl;"),
            ),
            (
                "# test: certificate",
                format!("    ssl_certificate {};", dir.join("cert.pem").display()),
            ),
            (
                "# test: key",
                format!("    ssl_certificate_key {};", dir.join("key.pem").display()),
            ),
        ],
    );
    (nginx::start(dir, &site, port), port)
}

/// Connect the wss client through nginx, push to it, and return what
/// `clients` showed while it was connected.
fn push_through(s: &Server, port: u16, dir: &Path) -> serde_json::Value {
    let mut client = Command::new("python3")
        .args(["-c", CLIENT, &port.to_string()])
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok);
    assert_eq!(
        first.as_deref(),
        Some("OPEN"),
        "the wss client did not connect"
    );
    let clients = s.clients(Some("alice"));
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert_eq!(
        s.push(&["alice"], json!({"via": "nginx"}))["delivered"],
        json!(1)
    );
    let frame = lines
        .next()
        .and_then(Result::ok)
        .expect("a push through nginx");
    let envelope: serde_json::Value = serde_json::from_str(&frame).unwrap();
    assert_eq!(envelope["content"], json!({"via": "nginx"}));
    assert!(client.wait().unwrap().success());
    clients[0].clone()
}

#[test]
fn a_wss_client_behind_nginx_gets_pushes_and_trusted_proxy_names_it() {
    if let Err(why) = programs() {
        return skip_missing(&why);
    }
    let dir = tempdir();
    certificate(dir.path());

    // nginx trusted: the client's own address (127.0.0.2), not the forged one.
    let s = Server::start(&["--trusted-proxy", "127.0.0.1"]);
    s.grant("ta", "alice");
    let (_nginx, port) = start_nginx(dir.path(), &s);
    let entry = push_through(&s, port, dir.path());
    assert_eq!(entry["peer"], json!("127.0.0.2"), "{entry}");
    assert!(
        entry["proxy"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{entry}"
    );
    drop(_nginx);

    // Not trusted: nginx's own address, whatever the header says.
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let (_nginx, port) = start_nginx(dir.path(), &s);
    let entry = push_through(&s, port, dir.path());
    assert!(
        entry["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{entry}"
    );
    assert_eq!(entry["proxy"], json!(null), "{entry}");
}
