use super::*;
use crate::proto::handshake::{Outcome, Rules, examine};

const KEY: &str = "k3y-0123456789abcdef";

fn head(extra: &str) -> String {
    format!(
        "POST /api/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\n{extra}\r\n"
    )
}

fn check(request: &str) -> Outcome {
    let key = digest(KEY.as_bytes());
    let rules = Rules {
        ws_path: "/push",
        allowed_origins: &[],
        max_head: 8192,
        api_key: Some(&key),
        demo: false,
    };
    examine(request.as_bytes(), &rules)
}

fn status(request: &str) -> u16 {
    match check(request) {
        Outcome::ApiReject(e) => e.status,
        Outcome::Api { .. } => 200,
        other => panic!("not an API outcome: {other:?}"),
    }
}

#[test]
fn a_valid_head_gives_the_op_length_and_connection_mode() {
    let request = head("Content-Length: 2\r\n");
    let Outcome::Api { head: h, consumed } = check(&format!("{request}{{}}")) else {
        panic!("not accepted");
    };
    assert_eq!(consumed, request.len());
    assert_eq!(
        h,
        ApiHead {
            op: "push".into(),
            length: 2,
            keep_alive: true,
            expect_continue: false,
        }
    );
    let Outcome::Api { head: h, .. } = check(&head(
        "Content-Length: 2\r\nConnection: close\r\nExpect: 100-continue\r\n",
    )) else {
        panic!("not accepted");
    };
    assert!(!h.keep_alive && h.expect_continue);
}

#[test]
fn each_rule_has_its_status() {
    let ok = "Content-Length: 2\r\n";
    let cases: &[(String, u16)] = &[
        (head(ok).replace("/api/push", "/api/nope"), 404),
        (head(ok).replace("/api/push", "/api/events"), 404),
        (head(ok).replace("POST", "GET"), 405),
        (head(ok).replace("Host: x\r\n", ""), 400),
        (head(&format!("{ok}Host: y\r\n")), 400),
        (
            head(ok).replace(&format!("Bearer {KEY}"), "Bearer nope"),
            401,
        ),
        (
            head(ok).replace(&format!("Bearer {KEY}"), &format!("Basic {KEY}")),
            401,
        ),
        (
            head(ok).replace(&format!("Authorization: Bearer {KEY}\r\n"), ""),
            401,
        ),
        (head(ok).replace(KEY, &KEY[..KEY.len() - 1]), 401),
        (head(&format!("{ok}Authorization: Bearer {KEY}\r\n")), 401),
        (head("Transfer-Encoding: chunked\r\n"), 411),
        (head(&format!("{ok}Transfer-Encoding: chunked\r\n")), 400),
        (head(""), 411),
        (head("Content-Length: -1\r\n"), 400),
        (head("Content-Length: 1e3\r\n"), 400),
        (head("Content-Length: 2\r\nContent-Length: 3\r\n"), 400),
        (head("Content-Length: 2\r\nContent-Length: 2\r\n"), 200),
        (head("Content-Length: 1048577\r\n"), 413),
        (head("Content-Length: 99999999999999999999999\r\n"), 413),
        (head("Content-Length: 1048576\r\n"), 200),
        (head(ok).replace("application/json", "text/plain"), 415),
        (
            head(ok).replace("application/json", "application/json; charset=utf-8"),
            200,
        ),
        (
            head(ok).replace("application/json", "Application/JSON"),
            200,
        ),
        (head(&format!("{ok}Expect: something\r\n")), 417),
    ];
    for (request, want) in cases {
        assert_eq!(status(request), *want, "{request:?}");
    }
}

#[test]
fn without_a_key_the_api_does_not_exist() {
    let rules = Rules {
        ws_path: "/push",
        allowed_origins: &[],
        max_head: 8192,
        api_key: None,
        demo: false,
    };
    let outcome = examine(head("Content-Length: 2\r\n").as_bytes(), &rules);
    assert!(matches!(
        outcome,
        Outcome::Reject(HttpError { status: 404, .. })
    ));
}

#[test]
fn the_body_becomes_a_control_line_with_the_op_of_the_path() {
    let line = control_line("push", br#"{"users":["a"],"content":1}"#).unwrap();
    let value: Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(value["op"], "push");
    assert_eq!(value["users"][0], "a");
    assert!(control_line("push", br#"{"op":"push"}"#).is_ok());
    assert!(control_line("push", br#"{"op":"grant"}"#).is_err());
    assert!(control_line("push", b"{bad").is_err());
    assert!(control_line("push", b"[1]").is_err());
    assert!(control_line("push", b"").is_err());
}

#[test]
fn replies_map_to_statuses() {
    assert_eq!(status_of(b"{\"ok\":true}\n"), 200);
    assert_eq!(status_of(b"{\"ok\":false,\"error\":\"unknown op\"}\n"), 400);
    assert_eq!(
        status_of(b"{\"ok\":false,\"error\":\"shutting down\"}\n"),
        503
    );
    assert_eq!(
        status_of(b"{\"ok\":false,\"error\":\"redis link down\"}\n"),
        503
    );
    assert_eq!(
        status_of(b"{\"ok\":false,\"error\":\"data log: x\",\"durable\":false}\n"),
        503
    );
}

#[test]
fn error_answers_are_json_and_close() {
    let e = HttpError {
        status: 401,
        reason: "wrong API key",
    };
    let text = String::from_utf8(error_response(&e)).unwrap();
    assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
    assert!(text.contains("WWW-Authenticate: Bearer realm=\"wspush\"\r\n"));
    assert!(text.contains("Connection: close\r\n"));
    assert!(text.contains("Content-Type: application/json\r\n"));
    assert!(
        text.ends_with("{\"error\":\"wrong API key\",\"ok\":false}\n"),
        "{text}"
    );
}
