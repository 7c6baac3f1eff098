//! The HTTP API on the WebSocket port (`--api-key-file`): `POST /api/{op}`
//! with the control request's JSON as the body. Pure decisions over a parsed
//! request head and bytes; the loop reads the body and holds the reply.
//!
//! [`api_head`] checks a complete head in this order, first failure wins:
//! 1. the op after `/api/` is a control op the API serves → else 404;
//! 2. the method is `POST` → else 405 (with `Allow: POST`);
//! 3. exactly one `Host` → else 400;
//! 4. `Authorization: Bearer KEY` with the configured key (compared as
//!    SHA-1 digests, in constant time) → else 401 (with `WWW-Authenticate`);
//! 5. no `Transfer-Encoding` (with `Content-Length` as well: a smuggling
//!    attempt, 400; alone, 411: bodies must announce their length);
//! 6. one `Content-Length` (repeats must agree), digits only → else 400;
//!    missing → 411; over [`MAX_BODY`] → 413;
//! 7. `Content-Type: application/json` (parameters allowed) → else 415;
//! 8. `Expect`, if sent, is `100-continue` → else 417.
//!
//! Errors found in the head are answered with a JSON body and the
//! connection closed: after a bad head the stream's framing cannot be
//! trusted. Errors in the body (bad JSON, a refused request) keep it open.

use httparse::{Header, Request};
use serde_json::Value;
use sha1::{Digest as _, Sha1};

use super::handshake::{HttpError, has_token, values};

/// Largest request body, in bytes (beyond it, 413).
pub const MAX_BODY: usize = 1 << 20;

/// The control ops the API serves: all but `events`, which turns a control
/// connection into a stream and has no meaning for one request.
pub const OPS: &[&str] = &[
    "push", "publish", "cancel", "clients", "stats", "grant", "revoke", "kick", "messages",
    "delete",
];

/// The SHA-1 digest of the API key: what requests are compared against.
pub type KeyDigest = [u8; 20];

/// The digest of a key (or of what a request presented as one).
pub fn digest(key: &[u8]) -> KeyDigest {
    Sha1::digest(key).into()
}

/// A valid API request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiHead {
    /// The control op, from the path.
    pub op: String,
    /// Body length (`Content-Length`).
    pub length: usize,
    /// Whether the connection stays open after the answer (HTTP/1.1's
    /// default, unless the client sent `Connection: close`).
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
}

const fn err(status: u16, reason: &'static str) -> HttpError {
    HttpError { status, reason }
}

/// Check the head of a request for `path` (which starts with `/api/`)
/// against the key; see the module documentation for the order.
pub fn api_head(req: &Request<'_, '_>, path: &str, key: &KeyDigest) -> Result<ApiHead, HttpError> {
    let op = path.strip_prefix("/api/").unwrap_or("");
    if !OPS.contains(&op) {
        return Err(err(404, "unknown op"));
    }
    if req.method != Some("POST") {
        return Err(err(405, "method not allowed: use POST"));
    }
    let hs: &[Header<'_>] = req.headers;
    match values(hs, "host").count() {
        0 => return Err(err(400, "missing Host header")),
        1 => {}
        _ => return Err(err(400, "duplicate Host")),
    }
    authorize(hs, key)?;
    let has_length = values(hs, "content-length").next().is_some();
    if values(hs, "transfer-encoding").next().is_some() {
        return Err(if has_length {
            err(400, "both Content-Length and Transfer-Encoding")
        } else {
            err(411, "chunked bodies are not accepted: send Content-Length")
        });
    }
    let length = content_length(hs)?;
    let json = values(hs, "content-type").next().is_some_and(|v| {
        let mime = v.split(|&b| b == b';').next().unwrap_or_default();
        mime.trim_ascii().eq_ignore_ascii_case(b"application/json")
    });
    if !json {
        return Err(err(415, "Content-Type must be application/json"));
    }
    let mut expect_continue = false;
    for value in values(hs, "expect") {
        if !value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
            return Err(err(417, "only Expect: 100-continue is supported"));
        }
        expect_continue = true;
    }
    let keep_alive = !values(hs, "connection").any(|v| has_token(v, "close"));
    Ok(ApiHead {
        op: op.to_owned(),
        length,
        keep_alive,
        expect_continue,
    })
}

/// A valid `GET /api/collect` head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectHead {
    /// The client's own token (granted, or a JWT), from `Authorization`.
    pub token: String,
    /// `?since=SEQ`, as on the WebSocket URL.
    pub since: Option<u64>,
    /// As in [`ApiHead`].
    pub keep_alive: bool,
}

/// Check the head of `GET /api/collect?since=SEQ` (served whether or not
/// the API key is set: the client authenticates with its own token).
pub fn collect_head(req: &Request<'_, '_>, query: &str) -> Result<CollectHead, HttpError> {
    if req.method != Some("GET") {
        return Err(err(405, "method not allowed: use GET"));
    }
    let hs: &[Header<'_>] = req.headers;
    if values(hs, "host").count() != 1 {
        return Err(err(400, "exactly one Host header required"));
    }
    if values(hs, "transfer-encoding").next().is_some()
        || values(hs, "content-length").any(|v| v.trim_ascii() != b"0")
    {
        return Err(err(400, "request body not allowed"));
    }
    let token = bearer(hs)
        .filter(|t| !t.is_empty())
        .ok_or(err(401, "missing token"))?;
    let token = std::str::from_utf8(token)
        .map_err(|_| err(401, "unknown or revoked token"))?
        .to_owned();
    let (since, _device) = super::handshake::parse_query(query)?;
    let keep_alive = !values(hs, "connection").any(|v| has_token(v, "close"));
    Ok(CollectHead {
        token,
        since,
        keep_alive,
    })
}

/// The credentials of the one `Authorization: Bearer ...` header.
fn bearer<'b>(hs: &[Header<'b>]) -> Option<&'b [u8]> {
    let mut found = values(hs, "authorization");
    let (Some(value), None) = (found.next(), found.next()) else {
        return None;
    };
    match value.trim_ascii().split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => Some(rest.trim_ascii()),
        _ => None,
    }
}

/// Rule 4: one `Authorization: Bearer KEY` header with the right key.
fn authorize(hs: &[Header<'_>], key: &KeyDigest) -> Result<(), HttpError> {
    let presented = bearer(hs).ok_or(err(401, "missing API key"))?;
    if equal_digests(&digest(presented), key) {
        Ok(())
    } else {
        Err(err(401, "wrong API key"))
    }
}

/// Compare two digests without an early exit, so the time taken says
/// nothing about where they differ.
fn equal_digests(a: &KeyDigest, b: &KeyDigest) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Rule 6: the body length.
fn content_length(hs: &[Header<'_>]) -> Result<usize, HttpError> {
    let mut length = None;
    for value in values(hs, "content-length") {
        let value = value.trim_ascii();
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return Err(err(400, "bad Content-Length"));
        }
        // Digits only, so an overflow can only mean "too large".
        let n = std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        if length.is_some_and(|l| l != n) {
            return Err(err(400, "conflicting Content-Length"));
        }
        length = Some(n);
    }
    match length {
        None => Err(err(411, "Content-Length required")),
        Some(n) if n > MAX_BODY => Err(err(413, "body over 1 MiB")),
        Some(n) => Ok(n),
    }
}

/// The control line for `op` with `body` as its fields: the body must be a
/// JSON object; an `op` field in it must agree with the path.
pub fn control_line(op: &str, body: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut value: Value = serde_json::from_slice(body).map_err(|_| "body is not valid JSON")?;
    let Some(fields) = value.as_object_mut() else {
        return Err("body must be a JSON object");
    };
    match fields.get("op") {
        Some(given) if given.as_str() != Some(op) => {
            return Err("\"op\" in the body differs from the URL");
        }
        _ => {}
    }
    fields.insert("op".into(), Value::from(op));
    Ok(serde_json::to_vec(&value).expect("a JSON value always serialises"))
}

/// The HTTP status of a control reply: 200 when `ok`, 503 when the server
/// could not keep its promise (the data log failed, shutting down), 400
/// for any other refusal.
pub fn status_of(reply: &[u8]) -> u16 {
    let value: Value = serde_json::from_slice(reply).unwrap_or_default();
    if value["ok"] == Value::Bool(true) {
        return 200;
    }
    let error = value["error"].as_str().unwrap_or_default();
    // The server could not do it now (its log, its Redis link, shutdown):
    // the same request may work later.
    let unavailable = error == "shutting down" || error.starts_with("redis");
    if value.get("durable") == Some(&Value::Bool(false)) || unavailable {
        503
    } else {
        400
    }
}

/// A complete API response: JSON `body` (a control reply line, newline
/// included), `Content-Length`, and `Connection: keep-alive` or `close`.
pub fn response(status: u16, keep_alive: bool, extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: {connection}\r\n",
        super::response::reason_phrase(status),
        body.len()
    );
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The answer to a head error: `{"ok":false,"error":...}`, then close;
/// 401 says how to authenticate and 405 which method to use.
pub fn error_response(e: &HttpError) -> Vec<u8> {
    let extra: &[(&str, &str)] = match e.status {
        401 => &[("WWW-Authenticate", "Bearer realm=\"wspush\"")],
        405 if e.reason.ends_with("GET") => &[("Allow", "GET")],
        405 => &[("Allow", "POST")],
        _ => &[],
    };
    response(e.status, false, extra, &error_body(e.reason))
}

/// A control-style error line for an HTTP answer.
pub fn error_body(reason: &str) -> Vec<u8> {
    super::control::error(None, reason)
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
