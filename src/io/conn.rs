//! One WebSocket/HTTP connection's I/O state and the inbound half of the
//! protocol (frames → messages).
//!
//! Memory is the point of this file. A [`Conn`] is a fixed-size slab entry
//! (48 bytes: the peer's address is asked of the kernel when `clients`
//! wants it, not kept; instants are [`Stamp`]s of 4 bytes) and owns no
//! heap buffer while idle:
//! reads go through the server's loop-wide scratch buffer, and an [`Input`]
//! exists only while
//! a frame or a fragmented message is partly received (or while a handshake
//! arrives in pieces). Outbound bytes live in the server's per-turn queue and,
//! only when the socket pushes back, in a [`Backlog`]. The two share one
//! box, present only while either is.

use mio::net::TcpStream;

use super::outbox::{Backlog, Chain};
use crate::hub::ConnId;
use crate::proto::frame::{self, OpCode};
use crate::wheel::TimerId;

/// The most a connection's instants may lie from now: a [`Stamp`] reads
/// back exactly within it. The connection timer fires at least once per
/// idle timeout and ping interval, which are kept below it
/// ([`MAX_INTERVAL_S`]).
const STAMP_RANGE_MS: u64 = 1 << 31;
/// The longest idle timeout or ping interval, in seconds (24 days).
pub const MAX_INTERVAL_S: u64 = STAMP_RANGE_MS / 1000 - 1;

/// A virtual-ms instant in 4 bytes: its low 32 bits, read back against the
/// current time. Exact while it lies less than 2^31 ms (24.8 days) before or
/// after now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(u32);

impl Stamp {
    /// The instant `ms`.
    pub fn of(ms: u64) -> Stamp {
        Stamp(ms as u32)
    }

    /// The instant as virtual ms, `now` being the current time.
    pub fn ms(self, now: u64) -> u64 {
        let ahead = self.0.wrapping_sub(now as u32) as i32;
        now.saturating_add_signed(i64::from(ahead))
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a complete HTTP request head (deadline: `--handshake-timeout`).
    Handshake,
    /// Upgraded: receives pushes. Its routing state (user, token, topics,
    /// ...) is the hub's session, which exists exactly while this lasts;
    /// the only I/O state of an open connection alone is `next_ping`
    /// (kept beside the tag: carried in the variant it would cost 16 B per
    /// connection in alignment).
    Open,
    /// An HTTP API request is with the hub; its reply goes out at the end
    /// of the turn, then the connection waits for the next request (as in
    /// `Handshake`) or closes.
    Api {
        /// Whether the client wants the connection kept open.
        keep_alive: bool,
    },
    /// We sent a close frame and wait for the peer's (deadline: close timeout).
    Closing,
    /// Last bytes (an HTTP answer or the reply to the peer's close) are
    /// queued; the socket is dropped once they are written.
    Finishing,
}

/// The I/O state of one connection, in the wire's slab. The slab key is
/// its mio token and its [`ConnId`] key.
#[derive(Debug)]
pub struct Conn {
    /// The socket, registered once for READABLE | WRITABLE (edge-triggered).
    pub stream: TcpStream,
    /// Unique number of this connection since the server started; `clients`
    /// shows it as `id`, and its low 32 bits are the generation of its
    /// [`ConnId`] and of its timer entries, so a reused slab slot is never
    /// mistaken for this one.
    pub serial: u64,
    /// Life-cycle state.
    pub phase: Phase,
    /// While open and pings are on: when the next server ping is due.
    pub next_ping: Stamp,
    /// When the last byte was received: idle eviction reads this lazily
    /// when the connection's timer fires, so a read costs no timer update.
    pub last_read: Stamp,
    /// The connection's single timer entry (handshake, idle/ping, or close deadline).
    pub timer: Option<TimerId>,
    /// Frames queued for it in the current loop turn.
    pub chain: Chain,
    /// Bytes the socket refused and partial inbound data, in one box that
    /// exists only while either does (one pointer in the slab entry, not two).
    spill: Option<Box<Spill>>,
}

/// The rarely present parts of a connection.
#[derive(Debug, Default)]
struct Spill {
    /// Bytes the socket refused; present only while backed up.
    backlog: Option<Backlog>,
    /// Partial inbound data; present only while something is incomplete.
    input: Option<Input>,
}

impl Conn {
    /// A freshly accepted connection, waiting for its request head.
    pub fn new(stream: TcpStream, serial: u64, now_ms: u64) -> Self {
        Conn {
            stream,
            serial,
            phase: Phase::Handshake,
            next_ping: Stamp::of(now_ms),
            last_read: Stamp::of(now_ms),
            timer: None,
            chain: Chain::default(),
            spill: None,
        }
    }

    /// The generation timer entries and its [`ConnId`] carry.
    pub fn generation(&self) -> u32 {
        self.serial as u32
    }

    /// Its id, in slot `key`.
    pub fn id(&self, key: usize) -> ConnId {
        ConnId {
            key: key as u32,
            generation: self.generation(),
        }
    }

    /// Unsent bytes held in the backlog.
    pub fn unsent(&self) -> usize {
        self.spill
            .as_ref()
            .and_then(|s| s.backlog.as_ref())
            .map_or(0, |b| b.bytes())
    }

    /// Whether the socket has refused bytes that are still held.
    pub fn has_backlog(&self) -> bool {
        self.spill.as_ref().is_some_and(|s| s.backlog.is_some())
    }

    /// The backlog, if the socket has refused bytes.
    pub fn backlog_mut(&mut self) -> Option<&mut Backlog> {
        self.spill.as_mut().and_then(|s| s.backlog.as_mut())
    }

    /// The backlog, made if there is none.
    pub fn backlog_or_default(&mut self) -> &mut Backlog {
        let spill = self.spill.get_or_insert_with(Box::default);
        spill.backlog.get_or_insert_with(Backlog::default)
    }

    /// Take the backlog out (to write it); [`Conn::put_backlog`] puts back
    /// what is left.
    pub fn take_backlog(&mut self) -> Option<Backlog> {
        let backlog = self.spill.as_mut().and_then(|s| s.backlog.take());
        self.shrink();
        backlog
    }

    /// Keep `backlog` (or none), freeing the box once nothing is in it.
    pub fn put_backlog(&mut self, backlog: Option<Backlog>) {
        match backlog {
            Some(b) => self.spill.get_or_insert_with(Box::default).backlog = Some(b),
            None => self.shrink(),
        }
    }

    /// Whether inbound bytes are waiting.
    pub fn has_input(&self) -> bool {
        self.spill.as_ref().is_some_and(|s| s.input.is_some())
    }

    /// The partial input, made if there is none.
    pub fn input_or_default(&mut self) -> &mut Input {
        let spill = self.spill.get_or_insert_with(Box::default);
        spill.input.get_or_insert_with(Input::default)
    }

    /// Take the partial input out (to feed it); [`Conn::put_input`] puts
    /// back what is still incomplete.
    pub fn take_input(&mut self) -> Option<Input> {
        let input = self.spill.as_mut().and_then(|s| s.input.take());
        self.shrink();
        input
    }

    /// Keep `input` (or none), freeing the box once nothing is in it.
    pub fn put_input(&mut self, input: Option<Input>) {
        match input {
            Some(i) => self.spill.get_or_insert_with(Box::default).input = Some(i),
            None => self.shrink(),
        }
    }

    /// Free the box when it holds neither part.
    fn shrink(&mut self) {
        if self
            .spill
            .as_ref()
            .is_some_and(|s| s.backlog.is_none() && s.input.is_none())
        {
            self.spill = None;
        }
    }
}

/// Inbound bytes that could not be used yet.
#[derive(Debug, Default)]
pub struct Input {
    /// The start of an incomplete frame (or, before the upgrade, of the
    /// request head).
    pub buf: Vec<u8>,
    /// A fragmented message being assembled: its opcode and data so far.
    message: Option<(OpCode, Vec<u8>)>,
}

impl Input {
    /// An input holding the start of a request head.
    pub fn holding(buf: Vec<u8>) -> Self {
        Input { buf, message: None }
    }
}

/// A complete inbound unit, handed to the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole text message (UTF-8 checked).
    Text(&'a str),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// A ping with its payload (answer with a pong).
    Ping(&'a [u8]),
    /// A pong (only resets the idle clock).
    Pong,
    /// The peer's close frame, with its code and reason if it sent one.
    Close(Option<(u16, &'a str)>),
}

/// What to do with a connection after handling input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep going.
    Continue,
    /// Send a close frame with this code and reason, then wait for the peer's.
    Close(u16, &'static str),
    /// Fail the connection (RFC 6455 §7.1.7): send a close frame with this
    /// code and reason, then close TCP once it is written, without waiting
    /// for a reply. For a broken frame header (the rest of the stream cannot
    /// be framed any more) and a bad close frame (the peer already closed).
    Fail(u16, &'static str),
    /// Stop reading: the connection is finishing or gone.
    Stop,
}

/// Feed newly received bytes into the frame decoder. Every complete frame is
/// decoded (unmasked in place), control frames and whole messages are handed
/// to `on`, and an incomplete tail is kept in `input`. Frames after one that
/// ends the connection are ignored.
pub fn feed(
    input: &mut Option<Input>,
    data: &mut [u8],
    max_message: usize,
    mut on: impl FnMut(Event<'_>) -> Verdict,
) -> Verdict {
    let mut state = input.take().unwrap_or_default();
    let verdict = if state.buf.is_empty() {
        let (verdict, used) = decode_all(data, &mut state.message, max_message, &mut on);
        if verdict == Verdict::Continue {
            state.buf.extend_from_slice(&data[used..]);
        }
        verdict
    } else {
        let mut buf = std::mem::take(&mut state.buf);
        buf.extend_from_slice(data);
        let (verdict, used) = decode_all(&mut buf, &mut state.message, max_message, &mut on);
        buf.drain(..used);
        state.buf = buf;
        verdict
    };
    if verdict == Verdict::Continue && (!state.buf.is_empty() || state.message.is_some()) {
        if state.buf.is_empty() {
            // Don't hold a large freed buffer between fragments.
            state.buf = Vec::new();
        }
        *input = Some(state);
    }
    verdict
}

/// Decode and dispatch every complete frame in `bytes`; returns the verdict
/// and how many bytes were consumed.
fn decode_all(
    bytes: &mut [u8],
    message: &mut Option<(OpCode, Vec<u8>)>,
    max_message: usize,
    on: &mut impl FnMut(Event<'_>) -> Verdict,
) -> (Verdict, usize) {
    let mut pos = 0;
    loop {
        let (frame, used) = match frame::decode(&mut bytes[pos..], max_message) {
            Ok(Some(found)) => found,
            Ok(None) => return (Verdict::Continue, pos),
            Err(e) => return (Verdict::Fail(e.close_code(), e.reason()), pos),
        };
        let payload = &bytes[pos + frame.payload.start..pos + frame.payload.end];
        pos += used;
        let verdict = on_frame(frame.fin, frame.opcode, payload, message, max_message, on);
        if verdict != Verdict::Continue {
            return (verdict, pos);
        }
    }
}

fn on_frame(
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    message: &mut Option<(OpCode, Vec<u8>)>,
    max_message: usize,
    on: &mut impl FnMut(Event<'_>) -> Verdict,
) -> Verdict {
    match opcode {
        OpCode::Ping => on(Event::Ping(payload)),
        OpCode::Pong => on(Event::Pong),
        OpCode::Close => match frame::parse_close(payload) {
            Ok(close) => on(Event::Close(close)),
            Err(code) => Verdict::Fail(code, "bad close frame"),
        },
        OpCode::Text | OpCode::Binary if message.is_some() => {
            Verdict::Close(1002, "new message inside a fragmented one")
        }
        OpCode::Text | OpCode::Binary if fin => deliver(opcode, payload, on),
        OpCode::Text | OpCode::Binary => {
            *message = Some((opcode, payload.to_vec()));
            Verdict::Continue
        }
        OpCode::Continuation => {
            let Some((_, data)) = message else {
                return Verdict::Close(1002, "continuation without a message");
            };
            if data.len() + payload.len() > max_message {
                return Verdict::Close(1009, "message too big");
            }
            data.extend_from_slice(payload);
            if !fin {
                return Verdict::Continue;
            }
            let (kind, data) = message.take().expect("checked above");
            deliver(kind, &data, on)
        }
    }
}

fn deliver(kind: OpCode, data: &[u8], on: &mut impl FnMut(Event<'_>) -> Verdict) -> Verdict {
    if kind == OpCode::Binary {
        return on(Event::Binary(data));
    }
    match std::str::from_utf8(data) {
        Ok(text) => on(Event::Text(text)),
        Err(_) => Verdict::Close(1007, "invalid UTF-8"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_masked;

    const KEY: [u8; 4] = [1, 2, 3, 4];

    fn collect(input: &mut Option<Input>, bytes: &[u8], max: usize) -> (Verdict, Vec<String>) {
        let mut seen = Vec::new();
        let mut data = bytes.to_vec();
        let verdict = feed(input, &mut data, max, |e| {
            seen.push(format!("{e:?}"));
            Verdict::Continue
        });
        (verdict, seen)
    }

    #[test]
    fn whole_frames_need_no_input_buffer() {
        let mut input = None;
        let mut bytes = encode_masked(true, OpCode::Text, b"hi", KEY);
        bytes.extend(encode_masked(true, OpCode::Ping, b"p", KEY));
        let (v, seen) = collect(&mut input, &bytes, 100);
        assert_eq!(v, Verdict::Continue);
        assert_eq!(seen, ["Text(\"hi\")", "Ping([112])"]);
        assert!(input.is_none());
    }

    #[test]
    fn split_frames_and_fragments_are_reassembled() {
        let mut bytes = encode_masked(false, OpCode::Text, "hé".as_bytes(), KEY);
        bytes.extend(encode_masked(true, OpCode::Ping, b"", KEY));
        bytes.extend(encode_masked(true, OpCode::Continuation, b"llo", KEY));
        for split in 0..bytes.len() {
            let mut input = None;
            let (_, mut seen) = collect(&mut input, &bytes[..split], 100);
            let (v, rest) = collect(&mut input, &bytes[split..], 100);
            seen.extend(rest);
            assert_eq!(v, Verdict::Continue);
            assert_eq!(seen, ["Ping([])", "Text(\"héllo\")"], "split at {split}");
            assert!(input.is_none());
        }
    }

    #[test]
    fn protocol_violations_get_their_close_codes() {
        let cases: [(Vec<u8>, u16); 4] = [
            (encode_masked(true, OpCode::Continuation, b"x", KEY), 1002),
            (encode_masked(true, OpCode::Text, &[0xff, 0xfe], KEY), 1007),
            (encode_masked(true, OpCode::Text, &[b'a'; 11], KEY), 1009),
            (
                [
                    encode_masked(false, OpCode::Text, b"a", KEY),
                    encode_masked(true, OpCode::Text, b"b", KEY),
                ]
                .concat(),
                1002,
            ),
        ];
        for (bytes, code) in cases {
            let mut input = None;
            let (v, _) = collect(&mut input, &bytes, 10);
            assert!(
                matches!(v, Verdict::Close(c, _) | Verdict::Fail(c, _) if c == code),
                "{v:?} for {code}"
            );
        }
        let mut input = None;
        let mut big = encode_masked(false, OpCode::Binary, &[0; 6], KEY);
        big.extend(encode_masked(true, OpCode::Continuation, &[0; 6], KEY));
        assert!(matches!(
            collect(&mut input, &big, 10).0,
            Verdict::Close(1009, _)
        ));
        // A broken header or a bad close frame fails the connection at once.
        let mut input = None;
        let unmasked = [0x81, 0x01, b'x'];
        assert_eq!(
            collect(&mut input, &unmasked, 10).0,
            Verdict::Fail(1002, "protocol error")
        );
        let bad_close = encode_masked(true, OpCode::Close, &[0, 0], KEY);
        assert_eq!(
            collect(&mut input, &bad_close, 10).0,
            Verdict::Fail(1002, "bad close frame")
        );
    }
}

#[cfg(test)]
mod size {
    use super::*;

    #[test]
    fn a_stamp_reads_back_within_its_range_across_the_32_bit_wrap() {
        let wrap = 1u64 << 32;
        for now in [
            0,
            5,
            wrap - 1,
            wrap,
            wrap + 7,
            3 * wrap + 12_345,
            u64::MAX / 2,
        ] {
            for offset in [0i64, 1, -1, 605_000, -605_000, (1 << 31) - 1, -(1 << 30)] {
                let Some(at) = now.checked_add_signed(offset) else {
                    continue;
                };
                assert_eq!(Stamp::of(at).ms(now), at, "{at} read at {now}");
            }
        }
        const { assert!(MAX_INTERVAL_S * 1000 < STAMP_RANGE_MS) };
    }

    /// The slab entry and the hub's session are most of an idle
    /// connection's user-space memory (docs/protocol.md, "Bounds and
    /// budgets": 512 B per idle connection, all included).
    #[test]
    fn an_idle_connection_stays_small() {
        let conn = std::mem::size_of::<Option<Conn>>();
        let session = std::mem::size_of::<Option<crate::hub::session::Session>>();
        println!("slab entry {conn} B, session {session} B");
        // 48 + 48 in a release build; a debug build's mio socket carries
        // 16 more bytes (a selector id and its padding).
        assert!(conn + session <= 112, "{conn} + {session} B per connection");
    }
}
