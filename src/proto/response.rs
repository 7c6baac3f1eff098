//! HTTP/1.1 response bytes for the plain answers of the WebSocket port
//! (`/healthz`, `/metrics`, the demo page, refusals): built whole, with
//! `Content-Length` and `Connection: close`.

/// The standard reason phrase for the statuses wspush sends.
pub(super) fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A complete HTTP/1.1 response with `Content-Type: text/plain; charset=utf-8`,
/// `Content-Length`, `Connection: close` (we never keep plain HTTP connections
/// alive), the given extra headers, and `body` (for errors: reason + "\n").
/// Standard reason phrases for 200, 400, 401, 403, 404, 405, 408, 426, 431, 500, 503.
pub fn http_response(status: u16, extra_headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    typed_response(status, "text/plain; charset=utf-8", extra_headers, body)
}

/// The `Content-Type` of `/metrics`: the Prometheus text format.
pub const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// [`http_response`] with another `Content-Type`.
pub fn typed_response(
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &str,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        reason_phrase(status),
        body.len()
    );
    for (name, value) in extra_headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// The answer to a `HEAD` request: `response` without its body (the head
/// keeps the `Content-Length` the body would have had).
pub fn head_only(mut response: Vec<u8>) -> Vec<u8> {
    if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
        response.truncate(end + 4);
    }
    response
}
