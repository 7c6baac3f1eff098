//! Unit tests of `handshake.rs`, on byte slices.
use super::*;

const STD: [&str; 5] = [
    "Host: example.com",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
];
const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn raw(line: &str, headers: &[&str]) -> Vec<u8> {
    let headers: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    format!("{line}\r\n{headers}\r\n").into_bytes()
}

/// GET `target` with the standard upgrade headers plus `extra`.
fn get(target: &str, extra: &[&str]) -> Vec<u8> {
    let headers: Vec<&str> = STD.iter().chain(extra).copied().collect();
    raw(&format!("GET {target} HTTP/1.1"), &headers)
}

/// GET /push/t with standard header `i` replaced by `with` (dropped if empty).
fn swap(i: usize, with: &str) -> Vec<u8> {
    let mut headers = STD.to_vec();
    headers[i] = with;
    headers.retain(|h| !h.is_empty());
    raw("GET /push/t HTTP/1.1", &headers)
}

fn run_with(buf: &[u8], ws_path: &str, origins: &[String]) -> Outcome {
    let rules = Rules {
        ws_path,
        allowed_origins: origins,
        max_head: 8192,
        api_key: None,
        demo: false,
    };
    examine(buf, &rules)
}

fn run(buf: &[u8]) -> Outcome {
    run_with(buf, "/push", &["https://app.example".to_owned()])
}

fn upgrade(buf: &[u8]) -> (Upgrade, usize) {
    match run(buf) {
        Outcome::Upgrade { upgrade, consumed } => (upgrade, consumed),
        other => panic!("expected an upgrade, got {other:?}"),
    }
}

#[test]
fn rfc_sample_accept_key() {
    assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), RFC_ACCEPT);
}

#[test]
fn valid_upgrade() {
    let extra = [
        "User-Agent: t/1",
        "X-Forwarded-For: 1.2.3.4",
        "Origin: HTTPS://App.example",
    ];
    let buf = get("/push/abc.def?since=42&device=my%20phone&x=1", &extra);
    let (up, consumed) = upgrade(&buf);
    assert_eq!(consumed, buf.len());
    let want = Upgrade {
        token: "abc.def".into(),
        accept: RFC_ACCEPT.into(),
        since: Some(42),
        device: Some("my phone".into()),
        user_agent: Some("t/1".into()),
        forwarded_for: Some("1.2.3.4".into()),
    };
    assert_eq!(up, want);
}

#[test]
fn trailing_frame_bytes_are_not_consumed() {
    let head = get("/push/tok", &[]);
    let mut buf = head.clone();
    buf.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
    assert_eq!(upgrade(&buf).1, head.len());
}

#[test]
fn byte_by_byte_is_partial_until_the_end() {
    let buf = get("/push/tok?since=7", &[]);
    for end in 0..buf.len() {
        assert_eq!(run(&buf[..end]), Outcome::Partial, "at {end}");
    }
    assert_eq!(upgrade(&buf).0.since, Some(7));
}

#[test]
fn rejects() {
    let pad = format!("X-Pad: {}", "a".repeat(9000));
    let big = get("/push/t", &[&pad]);
    let many: Vec<String> = (0..70).map(|i| format!("X-H{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let mut non_utf8 = get("/push/t", &[]);
    non_utf8.truncate(non_utf8.len() - 2); // reopen the head for one more header
    non_utf8.extend_from_slice(b"User-Agent: \xff\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("complete head too large", big.clone(), 431),
        ("partial head too large", big[..big.len() - 4].to_vec(), 431),
        ("too many headers", raw("GET /push/t HTTP/1.1", &many), 431),
        ("garbage", b"\x00\x01garbage\r\n\r\n".to_vec(), 400),
        ("HTTP/1.0", raw("GET /push/t HTTP/1.0", &STD), 400),
        (
            "absolute-form",
            raw("GET http://h/push/t HTTP/1.1", &STD),
            400,
        ),
        ("missing Host", swap(0, ""), 400),
        ("duplicate Host", get("/push/t", &["Host: other"]), 400),
        ("missing key", swap(3, ""), 400),
        ("bad key", swap(3, "Sec-WebSocket-Key: not base64!"), 400),
        ("short key", swap(3, "Sec-WebSocket-Key: c2hvcnQ="), 400),
        ("duplicate key", get("/push/t", &[STD[3]]), 400),
        (
            "content-length",
            get("/push/t", &["Content-Length: 5"]),
            400,
        ),
        (
            "chunked",
            get("/push/t", &["Transfer-Encoding: chunked"]),
            400,
        ),
        ("bad since", get("/push/t?since=abc", &[]), 400),
        ("bad escape", get("/push/t?device=%zz", &[]), 400),
        ("control char", get("/push/t?device=a%0Ab", &[]), 400),
        ("non-UTF-8 UA", non_utf8, 400),
        (
            "bad origin",
            get("/push/t", &["Origin: https://evil.example"]),
            403,
        ),
        ("other path", get("/other", &[]), 404),
        ("prefix only", get("/pushx/t", &[]), 404),
        ("POST ws", raw("POST /push/t HTTP/1.1", &STD), 405),
        (
            "POST healthz",
            raw("POST /healthz HTTP/1.1", &["Host: a"]),
            405,
        ),
        ("plain GET", raw("GET /push/t HTTP/1.1", &["Host: a"]), 426),
        ("no Upgrade", swap(1, ""), 426),
        ("no Connection", swap(2, ""), 426),
        ("no version", swap(4, ""), 426),
        ("version 8", swap(4, "Sec-WebSocket-Version: 8"), 426),
    ];
    for (name, buf, want) in cases {
        match run(&buf) {
            Outcome::Reject(e) => assert_eq!(e.status, want, "{name}: {e:?}"),
            other => panic!("{name}: expected {want}, got {other:?}"),
        }
    }
}

#[test]
fn accepted_variants() {
    let plain = |target: &str| raw(&format!("GET {target} HTTP/1.1"), &["Host: a"]);
    assert_eq!(run(&plain("/healthz")), Outcome::Health { head: false });
    assert_eq!(run(&plain("/metrics?x")), Outcome::Metrics { head: false });
    let head = [b"HEAD".as_slice(), &plain("/healthz")[3..]].concat();
    assert_eq!(run(&head), Outcome::Health { head: true });
    assert_eq!(upgrade(&get("/push", &[])).0.token, "");
    assert_eq!(upgrade(&get("/push/", &[])).0.token, "");
    assert_eq!(upgrade(&get("/push/../x", &[])).0.token, "../x");
    assert_eq!(upgrade(&get("/push/a%2Fb/c", &[])).0.token, "a%2Fb/c");
    assert_eq!(upgrade(&get("/push/t?device=", &[])).0.device, None);
    assert_eq!(
        upgrade(&get("/push/t", &["Content-Length: 0"])).0.token,
        "t"
    );
    let ka = swap(2, "Connection: keep-alive, Upgrade");
    assert_eq!(upgrade(&ka).0.accept, RFC_ACCEPT);
    assert_eq!(upgrade(&swap(1, "Upgrade: WebSocket")).0.token, "t");
    // An empty allow-list admits any Origin; a trailing '/' in ws_path is fine.
    let evil = get("/push/t", &["Origin: https://evil.example"]);
    assert!(matches!(
        run_with(&evil, "/push/", &[]),
        Outcome::Upgrade { .. }
    ));
}

#[test]
fn long_values_are_truncated_at_char_boundaries() {
    let ua = format!("User-Agent: {}", "u".repeat(300));
    let target = format!("/push/t?device=a{}", "%C3%A9".repeat(40)); // 81 bytes decoded
    let (up, _) = upgrade(&get(&target, &[&ua]));
    assert_eq!(up.user_agent.map(|u| u.len()), Some(128));
    assert_eq!(up.device, Some(format!("a{}", "é".repeat(31))));
}

#[test]
fn responses() {
    let r = String::from_utf8(reject_response(&err(426, "upgrade required"))).unwrap();
    assert!(r.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{r}");
    assert!(r.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    assert!(r.contains("\r\nContent-Length: 17\r\n"));
    assert!(r.ends_with("\r\n\r\nupgrade required\n"));
    let r = String::from_utf8(reject_response(&NOT_ALLOWED)).unwrap();
    assert!(r.contains("\r\nAllow: GET\r\n") && r.contains("\r\nConnection: close\r\n"));
    let r = String::from_utf8(switching_protocols(RFC_ACCEPT)).unwrap();
    assert!(r.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(r.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(r.ends_with("\r\n\r\n"));
}

#[test]
fn origins_are_normalised_or_refused() {
    let n = |s: &str| normalize_origin(s);
    assert_eq!(
        n("http://127.0.0.1:18080/").as_deref(),
        Some("http://127.0.0.1:18080")
    );
    assert_eq!(
        n("HTTP://Example.com:80").as_deref(),
        Some("http://example.com")
    );
    assert_eq!(
        n("https://example.com:443").as_deref(),
        Some("https://example.com")
    );
    assert_eq!(
        n("https://example.com:8443").as_deref(),
        Some("https://example.com:8443")
    );
    assert_eq!(n("http://[::1]:8080").as_deref(), Some("http://[::1]:8080"));
    assert_eq!(n("http://[::1]").as_deref(), Some("http://[::1]"));
    for bad in [
        "not a url",
        "example.com",
        "ftp://example.com",
        "http://",
        "http://example.com/app",
        "http://example.com?x",
        "http://user@example.com",
        "http://example.com:99999",
        "http://example.com:x",
        "http://[::1",
        "null",
    ] {
        assert_eq!(n(bad), None, "{bad}");
    }
}

#[test]
fn a_sent_origin_matches_its_normal_form() {
    let allowed = vec!["http://example.com".to_string()];
    let rules = Rules {
        ws_path: "/push",
        allowed_origins: &allowed,
        max_head: 8192,
        api_key: None,
        demo: false,
    };
    for (origin, ok) in [
        ("http://example.com", true),
        ("HTTP://EXAMPLE.COM:80", true),
        ("http://example.com:8080", false),
        ("https://example.com", false),
        ("null", false),
    ] {
        let request = format!(
            "GET /push/t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Origin: {origin}\r\n\r\n"
        );
        let outcome = examine(request.as_bytes(), &rules);
        assert_eq!(
            matches!(outcome, Outcome::Upgrade { .. }),
            ok,
            "{origin}: {outcome:?}"
        );
    }
}

#[test]
fn demo_paths_are_routed_only_with_demo() {
    use crate::proto::demo::Asset;
    let plain =
        |method: &str, target: &str| raw(&format!("{method} {target} HTTP/1.1"), &["Host: a"]);
    let with = |buf: &[u8], demo: bool| {
        let rules = Rules {
            ws_path: "/push",
            allowed_origins: &[],
            max_head: 8192,
            api_key: None,
            demo,
        };
        examine(buf, &rules)
    };
    let page = Outcome::Demo {
        asset: Asset::Page,
        head: false,
    };
    assert_eq!(with(&plain("GET", "/?x=1"), true), page);
    assert_eq!(
        with(&plain("HEAD", "/wspush.js"), true),
        Outcome::Demo {
            asset: Asset::Module,
            head: true
        }
    );
    let Outcome::Reject(e) = with(&plain("POST", "/"), true) else {
        panic!("POST / is refused");
    };
    assert_eq!(
        (e.status, e.reason),
        (405, "method not allowed: use GET or HEAD")
    );
    for target in ["/", "/wspush.js", "/index.html"] {
        let Outcome::Reject(e) = with(&plain("GET", target), false) else {
            panic!("{target} without --demo");
        };
        assert_eq!(e.status, 404, "{target}");
    }
}
