//! Strict configuration: flags are parsed and normalised (or refused with
//! exit code 2) before anything is bound, and refused requests are logged
//! at the default level, rate-limited.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// `wspush serve ARGS` that must not start: its exit code and stderr.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let out = serve_refused(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A server logging at the default level (info), not debug.
fn start_info(args: &[&str]) -> Server {
    Server::start_opts(ServerOpts {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![("RUST_LOG".into(), "info".into())],
        ..Default::default()
    })
}

fn upgrade_with_origin(s: &Server, origin: &str) -> u16 {
    let request = upgrade_request("/push/t", &[], &[("Origin", origin)]);
    s.http(request.as_bytes()).status
}

#[test]
fn bad_flags_are_refused_with_exit_code_2_before_anything_is_bound() {
    for (args, needle) in [
        (vec!["--allowed-origin", "not a url"], "is not an origin"),
        (
            vec!["--allowed-origin", "http://example.com/app"],
            "no path",
        ),
        (
            vec!["--allowed-origin", "ftp://example.com"],
            "is not an origin",
        ),
        (vec!["--ws-path", "push"], "must start with '/'"),
        (vec!["--listen", "nowhere.invalid:7001"], "is not HOST:PORT"),
        (vec!["--listen", "127.0.0.1"], "is not HOST:PORT"),
        // A connection keeps its instants in 4 bytes, exact within 24 days.
        (vec!["--idle-timeout", "2147483"], "2147482"),
        (vec!["--ping-interval", "3000000"], "2147482"),
    ] {
        let (code, stderr) = refused(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // Files named by flags are read before binding too (exit 1: not a
    // usage error, but nothing is bound either).
    let (code, stderr) = refused(&["--api-key-file", "/nonexistent/key"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/key"), "{stderr}");
}

#[test]
fn origins_match_in_their_normal_form() {
    let s = Server::start(&[
        "--allowed-origin",
        "http://127.0.0.1:18080/",
        "--allowed-origin",
        "HTTP://Example.com:80",
    ]);
    s.grant("t", "ann");
    assert_eq!(upgrade_with_origin(&s, "http://127.0.0.1:18080"), 101);
    assert_eq!(upgrade_with_origin(&s, "http://example.com"), 101);
    assert_eq!(upgrade_with_origin(&s, "http://EXAMPLE.com:80"), 101);
    assert_eq!(upgrade_with_origin(&s, "http://example.com:8080"), 403);
    assert_eq!(upgrade_with_origin(&s, "https://example.com"), 403);
}

#[test]
fn listen_takes_host_names() {
    let s = Server::start_opts(ServerOpts {
        args: vec!["--listen".into(), "localhost:0".into()],
        listen_arg: false,
        ..Default::default()
    });
    assert!(s.addr.ip().is_loopback(), "{}", s.addr);
    let r = s.http(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
}

#[test]
fn refusals_are_logged_at_info_with_peer_and_origin_and_rate_limited() {
    let s = start_info(&["--allowed-origin", "http://good.example"]);
    s.grant("t", "ann");
    assert_eq!(upgrade_with_origin(&s, "http://evil.example"), 403);
    let started = Instant::now();
    for _ in 0..60 {
        let r = s.http(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.status, 404);
    }
    let seconds = started.elapsed().as_secs() + 1;
    // Give the log a moment to reach the file.
    std::thread::sleep(Duration::from_millis(200));
    let log = s.stderr_text();
    let forbidden = log
        .lines()
        .find(|l| l.contains("HTTP 403"))
        .unwrap_or_else(|| panic!("no info line for the 403:\n{log}"));
    assert!(forbidden.contains("from 127.0.0.1:"), "{forbidden}");
    assert!(
        forbidden.contains("Origin \"http://evil.example\""),
        "{forbidden}"
    );
    let not_found = log.lines().filter(|l| l.contains("HTTP 404")).count() as u64;
    assert!(not_found >= 9, "{not_found} lines:\n{log}");
    assert!(
        not_found <= 10 * seconds + 1,
        "{not_found} lines in {seconds} s: not rate-limited"
    );
    assert_eq!(upgrade_with_origin(&s, "http://good.example"), 101);
}
