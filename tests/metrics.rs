//! `/metrics` as Prometheus reads it: the live output of the real server,
//! after some traffic, passes `promtool check metrics` (Debian's
//! `prometheus` package) with no complaint, has the 0.0.4 content type,
//! counts closes by code and HTTP errors by status, times fan-outs, and
//! answers `HEAD` like `/healthz`. Without promtool the check skips (and
//! fails under `WSPUSH_REQUIRE_EXTERNAL=1`).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

fn metrics(s: &Server) -> HttpResponse {
    s.http(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// The value of the sample line `name` (with its labels), if present.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_live_metrics_pass_promtool_and_count_what_happened() {
    let data = tempdir();
    let dir = data.path().display().to_string();
    let s = Server::start(&["--data-dir", &dir, "--mailbox", "10"]);
    s.grant("good", "ann");
    let mut ws = s.ws_connect("good");
    assert_eq!(s.push(&["ann"], json!(1))["delivered"], json!(1));
    recv_json(&mut ws);
    assert_eq!(s.raw_ws("/push/bad").expect_close(), 4401);
    assert_eq!(
        s.http(upgrade_request("/elsewhere", &[], &[]).as_bytes())
            .status,
        404
    );
    s.control(json!({"op": "kick", "user": "ann"}));
    assert_eq!(expect_close(&mut ws), 1008);

    let r = metrics(&s);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = &r.body;
    let helps = body.lines().filter(|l| l.starts_with("# HELP ")).count();
    let types = body.lines().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(helps, types, "{body}");
    assert!(types > 25, "{body}");
    assert_eq!(
        sample(body, "wspush_closes_total{code=\"4401\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(body, "wspush_closes_total{code=\"1008\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(body, "wspush_http_errors_total{status=\"404\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(body, "wspush_token_refusals_total"),
        Some(1.0),
        "{body}"
    );
    assert!(
        sample(body, "wspush_fanout_seconds_count").unwrap() >= 1.0,
        "{body}"
    );
    assert_eq!(sample(body, "wspush_kicked_total"), Some(1.0), "{body}");
    assert_eq!(sample(body, "wspush_data_log_ok"), Some(1.0), "{body}");
    // Every `stats` counter has its metric: one table behind both.
    for name in [
        "kicked",
        "tokens",
        "handshaking",
        "jobs",
        "topics",
        "mailbox_bytes",
    ] {
        assert!(s.stats().get(name).is_some(), "stats lacks {name}");
        assert!(
            body.contains(&format!("\nwspush_{name}")),
            "metrics lack {name}: {body}"
        );
    }

    let Some(promtool) = find_program("promtool") else {
        return skip_missing("promtool not found (Debian package prometheus)");
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\n{body}");
    assert!(said.trim().is_empty(), "promtool complained: {said}");
}

#[test]
fn head_answers_like_get_without_a_body() {
    let s = Server::start(&[]);
    for path in ["/healthz", "/metrics"] {
        let get = s.http(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let head = s.http(format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(head.status, 200, "{}", head.raw);
        assert_eq!(head.body, "", "{}", head.raw);
        assert_eq!(head.header("content-type"), get.header("content-type"));
        assert!(head.header("content-length").is_some(), "{}", head.raw);
    }
    let post = s.http(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}
