//! Signed tokens (`--jwt-secret-file`) and the close codes of refused
//! tokens, against the real binary: a JWT admits its `sub`, an expired one
//! is told to refresh (4402), a forged one never to retry (4401), a live
//! connection is closed when its token expires, and `--token-rejection
//! http` keeps the 401.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::*;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "integration-secret-0123456789-abcdefgh";

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn mint_with(header: &str, claims: Value, secret: &str) -> String {
    let head = B64.encode(header);
    let body = B64.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{head}.{body}").as_bytes());
    let sig = B64.encode(mac.finalize().into_bytes());
    format!("{head}.{body}.{sig}")
}

fn mint(claims: Value) -> String {
    mint_with(r#"{"alg":"HS256","typ":"JWT"}"#, claims, SECRET)
}

fn start(args: &[&str]) -> Server {
    let dir = tempdir();
    let path = dir.path().join("jwt.secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    let path = path.display().to_string();
    let mut all = vec!["--jwt-secret-file", path.as_str()];
    all.extend_from_slice(args);
    Server::start_in(dir, &all)
}

/// The close code and reason a refused token gets after its upgrade.
fn refusal(s: &Server, token: &str) -> (u16, String) {
    let mut ws = s.raw_ws(&format!("/push/{token}"));
    let close = ws.expect_close_frame();
    let reason = String::from_utf8_lossy(&close.payload[2..]).into_owned();
    (close.close_code().unwrap(), reason)
}

#[test]
fn a_jwt_admits_its_subject() {
    let s = start(&[]);
    let token = mint(json!({"sub": "ann", "exp": now_s() + 600}));
    let mut ws = s.ws_connect(&token);
    let reply = s.push(&["ann"], json!("hello"));
    assert_eq!(reply["delivered"], json!(1), "{reply}");
    assert_eq!(recv_json(&mut ws)["content"], json!("hello"));
    let clients = s.clients(Some("ann"));
    assert_eq!(clients.len(), 1, "{clients:?}");
}

#[test]
fn refused_tokens_say_whether_to_refresh_or_give_up() {
    let s = start(&[]);
    let now = now_s();
    let cases = [
        (
            mint(json!({"sub": "ann", "exp": now - 120})),
            4402,
            "token expired",
        ),
        (
            mint(json!({"sub": "ann", "nbf": now + 600})),
            4402,
            "token not valid yet",
        ),
        (
            mint_with(
                r#"{"alg":"HS256"}"#,
                json!({"sub": "ann"}),
                "some-other-secret-0123456789-abcdefgh",
            ),
            4401,
            "bad signature",
        ),
        (
            format!(
                "{}.{}.",
                B64.encode(r#"{"alg":"none"}"#),
                B64.encode(r#"{"sub":"root"}"#)
            ),
            4401,
            "alg is not HS256",
        ),
        (
            mint_with(r#"{"alg":"HS512"}"#, json!({"sub": "ann"}), SECRET),
            4401,
            "alg is not HS256",
        ),
        ("x.y.z".to_string(), 4401, ""),
        (
            "never-granted".to_string(),
            4401,
            "unknown or revoked token",
        ),
    ];
    for (token, code, reason) in &cases {
        let (got, why) = refusal(&s, token);
        assert_eq!(got, *code, "{token}: {why}");
        if !reason.is_empty() {
            assert_eq!(why, *reason, "{token}");
        }
    }
    let stats = s.stats();
    assert_eq!(stats["token_refusals"], json!(cases.len()), "{stats}");
    assert_eq!(stats["upgrades"], json!(0), "{stats}");
}

#[test]
fn a_live_connection_is_closed_with_4402_when_its_token_expires() {
    let s = start(&["--ping-interval", "0"]);
    // Accepted within the 30 s leeway, due one second from now.
    let token = mint(json!({"sub": "ann", "exp": now_s() - 29}));
    let mut ws = s.raw_ws(&format!("/push/{token}"));
    let started = Instant::now();
    let close = ws.expect_close_frame();
    assert_eq!(close.close_code(), Some(4402));
    assert_eq!(&close.payload[2..], b"token expired");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.stats()["connections"], json!(0));
}

#[test]
fn token_rejection_http_keeps_the_401() {
    let s = start(&["--token-rejection", "http"]);
    let expired = mint(json!({"sub": "ann", "exp": now_s() - 120}));
    for token in [expired.as_str(), "never-granted"] {
        let r = s.http(upgrade_request(&format!("/push/{token}"), &[], &[]).as_bytes());
        assert_eq!(r.status, 401, "{}", r.raw);
    }
}

#[test]
fn a_short_secret_is_refused_at_start() {
    let dir = tempdir();
    let path = dir.path().join("short.secret");
    std::fs::write(&path, "too-short").unwrap();
    let out = serve_refused(&["--jwt-secret-file", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("short.secret"), "{stderr}");
}
