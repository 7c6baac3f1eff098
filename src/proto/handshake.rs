//! The HTTP side of the WebSocket port: pure decisions over bytes, no sockets.
//!
//! This module owns parsing the client's request head, choosing the answer
//! (RFC 6455 §4.2 plus the small HTTP surface wspush exposes), and building
//! the response bytes. The server owns I/O and the token check.
//!
//! [`examine`] decides in this order, first match wins:
//! 1. parse (httparse, 64 headers): too many headers or a head over
//!    `max_head` → 431, malformed → 400, incomplete → [`Outcome::Partial`];
//! 2. HTTP version other than 1.1 → 400;
//! 3. route on the path (target up to `?`, must start with `/`): `/api/…`
//!    when the HTTP API is on (see [`http`]), `/healthz`, `/metrics` and,
//!    with `--demo`, `/` and `/wspush.js` (GET or HEAD, else 405), the ws
//!    path, anything else → 404;
//! 4. ws route, method other than GET → 405;
//! 5. smuggling guards: a body, duplicate key headers or no `Host` → 400;
//! 6. no `Upgrade: websocket` + `Connection: upgrade` → 426;
//! 7. `Sec-WebSocket-Version` other than 13 → 426;
//! 8. missing or malformed `Sec-WebSocket-Key` → 400;
//! 9. `Origin` present but not allowed → 403;
//! 10. bad `since` or `device` query parameter → 400;
//! 11. otherwise [`Outcome::Upgrade`] with the raw token.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use httparse::{Header, Request, Status};
use sha1::{Digest as _, Sha1};

use super::demo;
use super::http::{self, ApiHead, CollectHead, KeyDigest};
pub use super::response::{METRICS_TYPE, head_only, http_response, typed_response};

/// Header slots for httparse; more headers than this is a 431, not a 400.
const MAX_HEADERS: usize = 64;
/// The fixed GUID RFC 6455 appends to the client key.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Longest device name kept, in bytes.
const MAX_DEVICE: usize = 64;
/// Longest User-Agent kept, in bytes.
const MAX_USER_AGENT: usize = 128;

/// An HTTP answer other than 101: status and a one-line reason used as the
/// plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// HTTP status code.
    pub status: u16,
    /// Short explanation, sent as the body.
    pub reason: &'static str,
}

/// What the server needs from a valid upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The path after `{ws_path}/`, raw (not percent-decoded); may be empty.
    pub token: String,
    /// The `Sec-WebSocket-Accept` value to send back.
    pub accept: String,
    /// `?since=SEQ`: resume after this sequence number.
    pub since: Option<u64>,
    /// `?device=NAME`, percent-decoded, at most 64 bytes.
    pub device: Option<String>,
    /// The `User-Agent` header, at most 128 bytes.
    pub user_agent: Option<String>,
    /// The `X-Forwarded-For` header value, raw (repeated headers joined
    /// with ", "); believed only from a `--trusted-proxy` (`proto::proxy`).
    pub forwarded_for: Option<String>,
}

/// The decision for the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The head is not complete yet and is still under the size limit: read more.
    Partial,
    /// A valid upgrade request.
    Upgrade {
        /// What the server needs to finish the handshake.
        upgrade: Upgrade,
        /// Length of the request head; bytes after it are the client's first frames.
        consumed: usize,
    },
    /// `GET /healthz` (or `HEAD`: `head` is true): the server answers it.
    Health {
        /// A `HEAD` request: the answer's head only.
        head: bool,
    },
    /// `GET /metrics` (or `HEAD`): the server answers it.
    Metrics {
        /// A `HEAD` request: the answer's head only.
        head: bool,
    },
    /// `GET /` or `/wspush.js` with `--demo` (or `HEAD`).
    Demo {
        /// Which of the two.
        asset: demo::Asset,
        /// A `HEAD` request: the answer's head only.
        head: bool,
    },
    /// A valid HTTP API request head (`POST /api/{op}`); its body follows.
    Api {
        /// What the head says.
        head: ApiHead,
        /// Length of the head; the body starts after it.
        consumed: usize,
    },
    /// `GET /api/collect`: a client collects its held messages.
    Collect {
        /// What the head says.
        head: CollectHead,
        /// Length of the head.
        consumed: usize,
    },
    /// An HTTP API request refused from its head: answer with
    /// [`http::error_response`] and close.
    ApiReject(HttpError),
    /// Answer with this error and close.
    Reject(HttpError),
}

/// Configuration the examination needs.
pub struct Rules<'a> {
    /// Path of the WebSocket endpoint, e.g. `/push`; tokens follow it after a `/`.
    pub ws_path: &'a str,
    /// Allowed `Origin` values, normalised ([`normalize_origin`]); empty
    /// allows any.
    pub allowed_origins: &'a [String],
    /// Largest request head accepted, in bytes.
    pub max_head: usize,
    /// The HTTP API key's digest, when the API is on (`/api/` is 404
    /// otherwise).
    pub api_key: Option<&'a KeyDigest>,
    /// `--demo`: `/` and `/wspush.js` are served (404 otherwise).
    pub demo: bool,
}

const fn err(status: u16, reason: &'static str) -> HttpError {
    HttpError { status, reason }
}

const TOO_LARGE: HttpError = err(431, "request head too large");
const NOT_FOUND: HttpError = err(404, "not found");
const NOT_ALLOWED: HttpError = err(405, "method not allowed");
const NOT_ALLOWED_PLAIN: HttpError = err(405, "method not allowed: use GET or HEAD");
const BAD_HEADER: HttpError = err(400, "bad header value");

/// Examine the bytes received so far.
pub fn examine(buf: &[u8], rules: &Rules<'_>) -> Outcome {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = Request::new(&mut headers);
    let decided = match req.parse(buf) {
        Ok(Status::Complete(n)) if n > rules.max_head => Err(TOO_LARGE),
        Ok(Status::Complete(n)) => decide(&req, n, rules),
        // An endless head is a memory attack: cap it even before it completes.
        Ok(Status::Partial) if buf.len() > rules.max_head => Err(TOO_LARGE),
        Ok(Status::Partial) => Ok(Outcome::Partial),
        Err(httparse::Error::TooManyHeaders) => Err(err(431, "too many headers")),
        Err(_) => Err(err(400, "malformed request")),
    };
    decided.unwrap_or_else(Outcome::Reject)
}

/// Rules 2–11 on a complete head of `consumed` bytes.
fn decide(req: &Request<'_, '_>, consumed: usize, rules: &Rules<'_>) -> Result<Outcome, HttpError> {
    if req.version != Some(1) {
        return Err(err(400, "HTTP/1.1 required"));
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(err(400, "malformed request"));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    // Origin-form only: absolute-form and `*` have no business here.
    if !path.starts_with('/') {
        return Err(err(400, "bad request target"));
    }
    if path == "/api/collect" {
        return Ok(match http::collect_head(req, query) {
            Ok(head) => Outcome::Collect { head, consumed },
            Err(e) => Outcome::ApiReject(e),
        });
    }
    if let Some(key) = rules.api_key
        && path.starts_with("/api/")
    {
        return Ok(match http::api_head(req, path, key) {
            Ok(head) => Outcome::Api { head, consumed },
            Err(e) => Outcome::ApiReject(e),
        });
    }
    let is_get = method == "GET";
    let head = method == "HEAD";
    let plain = match path {
        "/healthz" => Some(Outcome::Health { head }),
        "/metrics" => Some(Outcome::Metrics { head }),
        _ => demo::asset(path)
            .filter(|_| rules.demo)
            .map(|asset| Outcome::Demo { asset, head }),
    };
    if let Some(outcome) = plain {
        return if is_get || head {
            Ok(outcome)
        } else {
            Err(NOT_ALLOWED_PLAIN)
        };
    }
    // A configured trailing slash ("/push/") would otherwise demand "//".
    let base = rules.ws_path.trim_end_matches('/');
    // No normalization: "/push/../x" is the opaque token "../x", which the
    // server rejects; "/pushx" is a different path.
    let token = match path.strip_prefix(base) {
        Some("") => "",
        Some(rest) => rest.strip_prefix('/').ok_or(NOT_FOUND)?,
        None => return Err(NOT_FOUND),
    };
    if !is_get {
        return Err(NOT_ALLOWED);
    }

    let hs: &[Header<'_>] = req.headers;
    // A GET with a body is how request smuggling starts; we never read bodies.
    if values(hs, "transfer-encoding").next().is_some()
        || values(hs, "content-length").any(|v| v.trim_ascii() != b"0")
    {
        return Err(err(400, "request body not allowed"));
    }
    single(hs, "host", "duplicate Host")?.ok_or(err(400, "missing Host header"))?;
    let upgrade = single(hs, "upgrade", "duplicate Upgrade")?;
    let key = single(hs, "sec-websocket-key", "duplicate Sec-WebSocket-Key")?;
    let version = single(
        hs,
        "sec-websocket-version",
        "duplicate Sec-WebSocket-Version",
    )?;

    // Connection may legitimately repeat; any of its lists may carry the token.
    let upgrading = upgrade.is_some_and(|v| has_token(v, "websocket"))
        && values(hs, "connection").any(|v| has_token(v, "upgrade"));
    if !upgrading {
        return Err(err(426, "upgrade required"));
    }
    if version.map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(err(426, "unsupported websocket version"));
    }
    let key = key
        .ok_or(err(400, "missing Sec-WebSocket-Key"))?
        .trim_ascii();
    if !STANDARD.decode(key).is_ok_and(|k| k.len() == 16) {
        return Err(err(400, "bad Sec-WebSocket-Key"));
    }
    // Browsers always send Origin; non-browser clients may omit it. The
    // allowed list is already normalised (`--allowed-origin`).
    let allowed = |o: &[u8]| {
        let o = std::str::from_utf8(o).ok().and_then(normalize_origin);
        o.is_some_and(|o| rules.allowed_origins.contains(&o))
    };
    if !rules.allowed_origins.is_empty() && !values(hs, "origin").all(allowed) {
        return Err(err(403, "origin not allowed"));
    }
    let (since, device) = parse_query(query)?;

    let user_agent = values(hs, "user-agent").next().map(text).transpose()?;
    let forwarded: Vec<&str> = values(hs, "x-forwarded-for")
        .map(text)
        .collect::<Result<_, _>>()?;
    let upgrade = Upgrade {
        token: token.to_owned(),
        accept: accept_bytes(key),
        since,
        device,
        user_agent: user_agent.map(|ua| clip(ua, MAX_USER_AGENT).to_owned()),
        forwarded_for: (!forwarded.is_empty()).then(|| forwarded.join(", ")),
    };
    Ok(Outcome::Upgrade { upgrade, consumed })
}

/// Values of every header called `name` (lowercase), in order.
pub(super) fn values<'h, 'b>(
    hs: &'h [Header<'b>],
    name: &'static str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    hs.iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The value of a header that must appear at most once.
fn single<'b>(
    hs: &[Header<'b>],
    name: &'static str,
    dup: &'static str,
) -> Result<Option<&'b [u8]>, HttpError> {
    let mut found = values(hs, name);
    let first = found.next();
    match found.next() {
        Some(_) => Err(err(400, dup)),
        None => Ok(first),
    }
}

/// Whether a comma-separated header list contains `token` (ASCII case-insensitive).
pub(super) fn has_token(list: &[u8], token: &str) -> bool {
    list.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// A header value we need as text; non-UTF-8 is the client's error.
fn text(value: &[u8]) -> Result<&str, HttpError> {
    std::str::from_utf8(value).map_err(|_| BAD_HEADER)
}

/// At most `max` bytes of `s`, cut at a char boundary so it stays valid UTF-8.
fn clip(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

/// `since` and `device` from the query string; other parameters are ignored.
pub(super) fn parse_query(query: &str) -> Result<(Option<u64>, Option<String>), HttpError> {
    let (mut since, mut device) = (None, None);
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "since" => since = Some(value.parse().map_err(|_| err(400, "bad since"))?),
            "device" => {
                let name = percent_decode(value).ok_or(err(400, "bad device"))?;
                device = (!name.is_empty()).then(|| clip(&name, MAX_DEVICE).to_owned());
            }
            _ => {}
        }
    }
    Ok((since, device))
}

/// Query-string decoding (`%XX`, and `+` as space as HTML forms send it).
/// None for a broken escape, invalid UTF-8 or control characters, which
/// would only corrupt the logs and metrics the name ends up in.
fn percent_decode(s: &str) -> Option<String> {
    let hex = |b: Option<&u8>| {
        b.and_then(|&b| (b as char).to_digit(16))
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let (byte, len) = match b {
            b'%' => (hex(bytes.get(i + 1))? << 4 | hex(bytes.get(i + 2))?, 3),
            b'+' => (b' ', 1),
            _ => (b, 1),
        };
        out.push(byte);
        i += len;
    }
    String::from_utf8(out)
        .ok()
        .filter(|s| !s.chars().any(char::is_control))
}

/// The `Origin` a request head sent (for the log line of a 403), at most
/// 128 bytes of it.
pub fn origin_of(buf: &[u8]) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = Request::new(&mut headers);
    req.parse(buf).ok()?;
    let value = values(req.headers, "origin").next()?;
    let text = String::from_utf8_lossy(value);
    Some(clip(&text, 128).to_owned())
}

/// An origin (`scheme://host[:port]`) in the form compared: scheme and
/// host lowercased, the scheme's default port dropped, one trailing `/`
/// allowed and dropped. `None` for anything else (a path, a query, user
/// info, an unknown scheme, an empty host or a bad port), so a flag that
/// could never match a browser is refused at start.
pub fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim();
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    // The port follows the last ':' unless that is inside an IPv6 literal.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    if host.is_empty() || (host.starts_with('[') != host.ends_with(']')) {
        return None;
    }
    let host = host.to_ascii_lowercase();
    match port {
        None => Some(format!("{scheme}://{host}")),
        Some(p) if p.parse::<u16>().is_err() => None,
        Some(p) if p.trim_start_matches('0') == default_port => Some(format!("{scheme}://{host}")),
        Some(p) => Some(format!("{scheme}://{host}:{}", p.parse::<u16>().ok()?)),
    }
}

/// RFC 6455 accept key: base64(sha1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")).
pub fn accept_key(key: &str) -> String {
    accept_bytes(key.as_bytes())
}

/// [`accept_key`] on raw header bytes, so the parsed key needs no UTF-8 step.
fn accept_bytes(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WS_GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// The full 101 response bytes for an accept value (`Upgrade: websocket`,
/// `Connection: Upgrade`, `Sec-WebSocket-Accept`). No subprotocol, no extensions:
/// we never negotiate either, so echoing none is what RFC 6455 asks.
pub fn switching_protocols(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// The response for a [`Outcome::Reject`]: [`http_response`] with the reason as
/// body, adding `Sec-WebSocket-Version: 13` for 426 and `Allow: GET` for 405.
pub fn reject_response(err: &HttpError) -> Vec<u8> {
    let extra: &[(&str, &str)] = match err.status {
        // Tells the client which protocol version we do speak (RFC 6455 §4.4).
        426 => &[("Sec-WebSocket-Version", "13")],
        405 if err.reason.ends_with("GET or HEAD") => &[("Allow", "GET, HEAD")],
        405 => &[("Allow", "GET")],
        _ => &[],
    };
    http_response(err.status, extra, &format!("{}\n", err.reason))
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
