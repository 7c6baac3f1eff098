//! RESP2, the Redis serialization protocol, on byte slices.
//!
//! Encodes commands (arrays of bulk strings, pipelined by appending several
//! to one buffer) and decodes replies in place: [`parse`] borrows the
//! strings of a [`Reply`] from the caller's read buffer and says how many
//! bytes the reply took, or that more bytes are needed. Everything a peer
//! declares (lengths, counts, nesting, line lengths) is checked against the
//! named limits below as soon as it is read, so a broken or hostile peer
//! costs an error (the link is dropped and reconnected), never a panic and
//! never unbounded buffering.
//!
//! # Why our own codec and not a crate
//!
//! RESP2 is small: five reply types, one command shape. The decoder has to
//! work on the link's own read buffer without copying, and the RESP crates
//! built on `bytes` or `nom` want their own buffer types and bring their
//! dependencies along. It has to enforce our limits, which are part of
//! wspush's memory budget. And the stripped release binary must stay under
//! 2 MiB. A few hundred lines of pure functions meet all three.
//!
//! RESP3 (`HELLO 3`, push `>` replies, maps, ...) is not spoken: its type
//! bytes are [`RespError::BadType`].

use std::fmt;

/// Largest bulk string payload accepted: 16 MiB. A push job is at most
/// 1 MiB plus its envelope; this leaves room for anything else the link
/// reads, and a peer announcing more is refused before it is buffered.
pub const MAX_BULK: usize = 16 << 20;

/// Most elements in one array: 1,048,576. Pub/sub messages have 3 or 4.
pub const MAX_ARRAY: usize = 1 << 20;

/// Deepest nesting of arrays: 8 arrays inside each other at most (a
/// top-level array is depth 1). Keeps the recursive decoder's stack small.
pub const MAX_DEPTH: usize = 8;

/// Longest simple string or error line, without its CR LF: 64 KiB. A line
/// with no CR LF within this many bytes is an error, not a reason to wait.
pub const MAX_LINE: usize = 64 << 10;

/// Largest whole reply, every byte of it counted: 32 MiB, two [`MAX_BULK`]s.
/// Bounds what the caller buffers for one reply whatever its shape.
pub const MAX_REPLY: usize = 2 * MAX_BULK;

/// Longest integer line (`:`, and the lengths after `$` and `*`) without
/// its CR LF: `-9223372036854775808` is 20 bytes. Longer is
/// [`RespError::BadInteger`] at once.
pub const MAX_INT_LINE: usize = 20;

/// Bytes of the smallest possible reply (`+\r\n`), to bound array counts
/// and allocations by the bytes that can still hold elements.
const MIN_REPLY: usize = 3;

/// One RESP2 reply; strings borrow from the buffer given to [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+OK\r\n`: a status line, without its CR LF.
    Simple(&'a [u8]),
    /// `-ERR ...\r\n`: an error line, without its CR LF.
    Error(&'a [u8]),
    /// `:42\r\n`: a signed 64-bit integer.
    Int(i64),
    /// `$5\r\nhello\r\n`: a binary-safe string, possibly empty.
    Bulk(&'a [u8]),
    /// `$-1\r\n`: the null bulk string (a missing key, ...).
    Nil,
    /// `*2\r\n...`: an array of replies, possibly empty, possibly nested.
    Array(Vec<Reply<'a>>),
    /// `*-1\r\n`: the null array (a timed-out blocking pop, ...).
    NilArray,
}

impl<'a> Reply<'a> {
    /// The bytes of a simple or bulk string; None for any other reply.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Reply::Simple(s) | Reply::Bulk(s) => Some(s),
            _ => None,
        }
    }

    /// The value of an integer reply; None for any other reply (a bulk
    /// string of digits is not converted).
    pub fn as_int(&self) -> Option<i64> {
        match *self {
            Reply::Int(n) => Some(n),
            _ => None,
        }
    }

    /// The elements of a (non-null) array.
    pub fn as_array(&self) -> Option<&[Reply<'a>]> {
        match self {
            Reply::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Whether this is an error reply (`-...`).
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The text of an error reply, e.g. `WRONGPASS invalid username-password pair`.
    pub fn error(&self) -> Option<&'a [u8]> {
        match *self {
            Reply::Error(text) => Some(text),
            _ => None,
        }
    }

    /// Whether this is the null bulk string or the null array.
    pub fn is_nil(&self) -> bool {
        matches!(self, Reply::Nil | Reply::NilArray)
    }

    /// Whether this is `+OK`, the answer to `AUTH` and `SELECT`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Simple(b"OK"))
    }
}

/// Why bytes from the peer are not RESP2 (or not within our limits). Any
/// of them ends the link: the stream cannot be resynchronized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespError {
    /// A reply starting with a byte other than `+ - : $ *`.
    BadType(u8),
    /// An integer, bulk length or array count that is not a decimal i64
    /// (empty, other characters, overflow, over [`MAX_INT_LINE`] bytes).
    BadInteger,
    /// A line with a CR not followed by LF, or a bare LF.
    BadLineEnd,
    /// A bulk payload not followed by CR LF.
    MissingCrlf,
    /// A bulk length or array count below -1.
    NegativeLength(i64),
    /// A simple string or error line over [`MAX_LINE`] bytes.
    LineTooLong,
    /// A bulk string declared over [`MAX_BULK`] bytes.
    BulkTooLong,
    /// An array declared with over [`MAX_ARRAY`] elements.
    ArrayTooLong,
    /// Arrays nested over [`MAX_DEPTH`] deep.
    TooDeep,
    /// A reply that is, or is declared to be, over [`MAX_REPLY`] bytes.
    ReplyTooLong,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RespError::BadType(b) => write!(f, "bad RESP type byte 0x{b:02x}"),
            RespError::BadInteger => f.write_str("bad RESP integer"),
            RespError::BadLineEnd => f.write_str("RESP line not ended by CR LF"),
            RespError::MissingCrlf => f.write_str("missing CR LF after a RESP bulk string"),
            RespError::NegativeLength(n) => write!(f, "negative RESP length {n}"),
            RespError::LineTooLong => write!(f, "RESP line over {MAX_LINE} bytes"),
            RespError::BulkTooLong => write!(f, "RESP bulk string over {MAX_BULK} bytes"),
            RespError::ArrayTooLong => write!(f, "RESP array over {MAX_ARRAY} elements"),
            RespError::TooDeep => write!(f, "RESP arrays nested over {MAX_DEPTH} deep"),
            RespError::ReplyTooLong => write!(f, "RESP reply over {MAX_REPLY} bytes"),
        }
    }
}

impl std::error::Error for RespError {}

/// `n` in decimal, written into `digits` without allocating; the returned
/// slice is the part of `digits` used (u64::MAX has 20 digits).
pub fn decimal(n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[i..];
        }
    }
}

/// Append `prefix`, `n` in decimal and CR LF to `out`.
fn put_header(out: &mut Vec<u8>, prefix: u8, n: usize) {
    let mut digits = [0u8; 20];
    out.push(prefix);
    out.extend_from_slice(decimal(n as u64, &mut digits));
    out.extend_from_slice(b"\r\n");
}

/// Append one command to `out` as an array of bulk strings
/// (`*N\r\n$len\r\nARG\r\n...`). Pipeline by appending several before
/// writing; Redis answers each with one reply, in order.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    // Each argument costs `$`, up to 20 digits, two CR LFs and itself.
    out.reserve(23 + args.iter().map(|a| a.len() + 25).sum::<usize>());
    put_header(out, b'*', args.len());
    for arg in args {
        put_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// What decoding one value gives: an error, Ok(None) for "need more
/// bytes", or the value and the index just after it.
type Step<'a, T> = Result<Option<(T, usize)>, RespError>;

/// Decode one reply at the start of `buf`.
///
/// `Ok(None)`: incomplete, call again with the same bytes and more after
/// them. `Ok(Some((reply, consumed)))`: the reply is `buf[..consumed]`;
/// pipelined replies follow it. Incomplete input is parsed again from the
/// start on the next call, which costs little: lines are scanned for CR LF
/// within their limit only, and bulk payloads are never scanned. Sizes are
/// checked as soon as they are read, so an oversized reply is an error
/// before its bytes have arrived.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, RespError> {
    // A reply that does not end within MAX_REPLY bytes is too long: look no
    // further, so a long incomplete reply is an error as soon as it is that
    // long, whatever made it long.
    let window = &buf[..buf.len().min(MAX_REPLY)];
    match value(window, 0, 0)? {
        None if buf.len() >= MAX_REPLY => Err(RespError::ReplyTooLong),
        step => Ok(step),
    }
}

/// The reply starting at `buf[pos]`, inside `depth` arrays.
fn value(buf: &[u8], pos: usize, depth: usize) -> Step<'_, Reply<'_>> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let start = pos + 1;
    match kind {
        b'+' | b'-' => Ok(line(buf, start, MAX_LINE, RespError::LineTooLong)?.map(
            |(text, next)| {
                let reply = if kind == b'+' {
                    Reply::Simple(text)
                } else {
                    Reply::Error(text)
                };
                (reply, next)
            },
        )),
        b':' => Ok(int_line(buf, start)?.map(|(n, next)| (Reply::Int(n), next))),
        b'$' => bulk(buf, start),
        b'*' => array(buf, start, depth),
        other => Err(RespError::BadType(other)),
    }
}

/// The line at `buf[start..]` without its CR LF, and the index after the
/// LF. No CR LF within `max` bytes is `too_long`; a CR without LF or a
/// bare LF is [`RespError::BadLineEnd`].
fn line(buf: &[u8], start: usize, max: usize, too_long: RespError) -> Step<'_, &[u8]> {
    let rest = buf.get(start..).unwrap_or_default();
    let window = &rest[..rest.len().min(max + 1)];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(end) => match (rest[end], rest.get(end + 1)) {
            (b'\r', Some(b'\n')) => Ok(Some((&rest[..end], start + end + 2))),
            (b'\r', None) => Ok(None),
            _ => Err(RespError::BadLineEnd),
        },
        None if rest.len() > max => Err(too_long),
        None => Ok(None),
    }
}

/// The integer line at `buf[start..]`, and the index after its CR LF.
fn int_line(buf: &[u8], start: usize) -> Step<'_, i64> {
    match line(buf, start, MAX_INT_LINE, RespError::BadInteger)? {
        Some((digits, next)) => Ok(Some((int(digits).ok_or(RespError::BadInteger)?, next))),
        None => Ok(None),
    }
}

/// A decimal i64: an optional `-`, then at least one digit; None on
/// anything else or on overflow.
fn int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', digits @ ..] => (true, digits),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        // Accumulating negatively reaches i64::MIN without overflow.
        n = n.checked_mul(10)?;
        n = if negative {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

/// A length or count after `$` or `*`: None for -1 (null), an error below it.
fn length(n: i64, too_long: RespError) -> Result<Option<usize>, RespError> {
    match n {
        -1 => Ok(None),
        n if n < 0 => Err(RespError::NegativeLength(n)),
        n => usize::try_from(n).map(Some).map_err(|_| too_long),
    }
}

/// The bulk string whose length line starts at `buf[start]`.
fn bulk(buf: &[u8], start: usize) -> Step<'_, Reply<'_>> {
    let Some((n, body)) = int_line(buf, start)? else {
        return Ok(None);
    };
    let Some(len) = length(n, RespError::BulkTooLong)? else {
        return Ok(Some((Reply::Nil, body)));
    };
    if len > MAX_BULK {
        return Err(RespError::BulkTooLong);
    }
    // No overflow: body <= MAX_REPLY + a line, len <= MAX_BULK.
    let end = body + len;
    if end + 2 > MAX_REPLY {
        return Err(RespError::ReplyTooLong);
    }
    // The CR LF is checked byte by byte as it arrives.
    for (at, want) in [(end, b'\r'), (end + 1, b'\n')] {
        match buf.get(at) {
            Some(&b) if b == want => {}
            Some(_) => return Err(RespError::MissingCrlf),
            None => return Ok(None),
        }
    }
    Ok(Some((Reply::Bulk(&buf[body..end]), end + 2)))
}

/// The array whose count line starts at `buf[start]`, inside `depth` arrays.
fn array(buf: &[u8], start: usize, depth: usize) -> Step<'_, Reply<'_>> {
    if depth >= MAX_DEPTH {
        return Err(RespError::TooDeep);
    }
    let Some((n, mut pos)) = int_line(buf, start)? else {
        return Ok(None);
    };
    let Some(count) = length(n, RespError::ArrayTooLong)? else {
        return Ok(Some((Reply::NilArray, pos)));
    };
    if count > MAX_ARRAY {
        return Err(RespError::ArrayTooLong);
    }
    if pos + count * MIN_REPLY > MAX_REPLY {
        return Err(RespError::ReplyTooLong);
    }
    // Reserve only what the bytes already here can hold: a peer announcing
    // a million elements and sending none costs no million-slot vector.
    let room = (buf.len() - pos) / MIN_REPLY;
    let mut items = Vec::with_capacity(count.min(room));
    for _ in 0..count {
        let Some((item, next)) = value(buf, pos, depth + 1)? else {
            return Ok(None);
        };
        items.push(item);
        pos = next;
    }
    Ok(Some((Reply::Array(items), pos)))
}

/// The channel and payload of a pub/sub message: `["message", channel,
/// payload]`, or `["pmessage", pattern, channel, payload]` from a pattern
/// subscription. None for anything else (subscribe confirmations, ...).
pub fn pubsub_message<'a>(reply: &Reply<'a>) -> Option<(&'a [u8], &'a [u8])> {
    match reply.as_array()? {
        [
            Reply::Bulk(b"message"),
            Reply::Bulk(channel),
            Reply::Bulk(payload),
        ]
        | [
            Reply::Bulk(b"pmessage"),
            Reply::Bulk(_),
            Reply::Bulk(channel),
            Reply::Bulk(payload),
        ] => Some((channel, payload)),
        _ => None,
    }
}

#[cfg(test)]
#[path = "resp_tests.rs"]
mod tests;
