//! RFC 6455 frame codec, with no sockets.
//!
//! Decodes client frames (which must be masked) out of a byte buffer,
//! unmasking the payload in place so the caller never copies it; encodes
//! unmasked server frames; validates close payloads. Message assembly
//! (fragments, UTF-8 of whole text messages) is the caller's job.

use std::ops::Range;

/// Frame opcode (RFC 6455 §5.2). Reserved values are rejected in `decode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: first frame of a text message.
    Text,
    /// 0x2: first frame of a binary message.
    Binary,
    /// 0x8: close handshake.
    Close,
    /// 0x9: ping; the peer answers with a pong carrying the same payload.
    Ping,
    /// 0xA: pong, solicited or not.
    Pong,
}

impl OpCode {
    /// Whether this is a control frame (close, ping, pong): these may not be
    /// fragmented and carry at most 125 bytes.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }

    /// Wire value, 0x0..0xA.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }
}

/// One decoded client frame. `payload` indexes the buffer passed to `decode`, already unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Final fragment of its message.
    pub fin: bool,
    /// Frame type.
    pub opcode: OpCode,
    /// Where the (unmasked) payload sits in the decoded buffer.
    pub payload: Range<usize>,
}

/// Why a frame is refused; each variant's doc says the close code the server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Client frame without the MASK bit (§5.1): 1002.
    Unmasked,
    /// RSV1-3 set while no extension was negotiated: 1002.
    ReservedBits,
    /// Reserved opcode 0x3-0x7 or 0xB-0xF: 1002.
    UnknownOpcode,
    /// Control frame without FIN: 1002.
    FragmentedControl,
    /// Control frame payload over 125 bytes: 1002.
    ControlTooLong,
    /// 64-bit length with the most significant bit set: 1002.
    /// (Non-minimal length encodings are accepted: being lenient costs nothing.)
    BadLength,
    /// Payload length over `max_payload`: 1009.
    TooBig,
}

impl FrameError {
    /// Close code to send back for this error.
    pub fn close_code(self) -> u16 {
        match self {
            FrameError::TooBig => 1009,
            _ => 1002,
        }
    }

    /// The close reason sent with [`FrameError::close_code`].
    pub fn reason(self) -> &'static str {
        match self {
            FrameError::TooBig => "message too big",
            _ => "protocol error",
        }
    }
}

/// Largest control frame payload (§5.5).
const MAX_CONTROL: usize = 125;

/// Decode one frame at the start of `buf`.
///
/// `Ok(None)`: not enough bytes yet (buf untouched). `Ok(Some((frame, consumed)))`:
/// the frame occupies `buf[..consumed]` and its payload, unmasked in place, is
/// `buf[frame.payload]`. Header checks are made as soon as the header bytes are
/// present, before the payload has arrived, so an oversized frame is refused
/// without buffering it.
pub fn decode(buf: &mut [u8], max_payload: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    let fin = b0 & 0x80 != 0;
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(FrameError::UnknownOpcode)?;
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
        // 126 and 127 announce extended lengths, which are > 125 by themselves.
        if usize::from(len7) > MAX_CONTROL {
            return Err(FrameError::ControlTooLong);
        }
    }
    let (len, ext_end): (u64, usize) = match len7 {
        126 => match buf.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
            _ => return Ok(None),
        },
        127 => {
            let Some(ext) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(ext);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 {
                return Err(FrameError::BadLength);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    // A length that does not even fit in usize is certainly over the limit.
    let len = usize::try_from(len).map_err(|_| FrameError::TooBig)?;
    if len > max_payload {
        return Err(FrameError::TooBig);
    }
    let start = ext_end + 4;
    let end = start.checked_add(len).ok_or(FrameError::TooBig)?;
    if buf.len() < end {
        return Ok(None);
    }
    let mut key = [0u8; 4];
    key.copy_from_slice(&buf[ext_end..start]);
    apply_mask(&mut buf[start..end], key);
    let frame = Frame {
        fin,
        opcode,
        payload: start..end,
    };
    Ok(Some((frame, end)))
}

/// XOR `buf` with the 4-byte mask, starting at mask offset 0.
///
/// Works 8 bytes at a time with the key repeated into a u64; since the key is
/// laid out in memory order in both halves, endianness does not matter.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let [k0, k1, k2, k3] = key;
    let wide = u64::from_ne_bytes([k0, k1, k2, k3, k0, k1, k2, k3]);
    let (words, tail) = buf.as_chunks_mut::<8>();
    for w in words {
        *w = (u64::from_ne_bytes(*w) ^ wide).to_ne_bytes();
    }
    // The tail starts at a multiple of 8, hence at mask offset 0 again.
    for (i, b) in tail.iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// Bytes of the header of an unmasked FIN server frame with a payload of `len` bytes (2, 4 or 10).
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Header with minimal length encoding; `mask_bit` is 0x80 for client frames.
fn put_header(b0: u8, mask_bit: u8, len: usize, out: &mut Vec<u8>) {
    match len {
        0..=125 => out.extend_from_slice(&[b0, mask_bit | len as u8]),
        126..=0xFFFF => {
            out.extend_from_slice(&[b0, mask_bit | 126]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.extend_from_slice(&[b0, mask_bit | 127]);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Append the header of an unmasked FIN server frame to `out`.
pub fn write_header(opcode: OpCode, len: usize, out: &mut Vec<u8>) {
    put_header(0x80 | opcode.bits(), 0, len, out);
}

/// A whole unmasked FIN server frame (header + payload), allocated once with exact capacity.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header_len(payload.len()) + payload.len());
    write_header(opcode, payload.len(), &mut out);
    out.extend_from_slice(payload);
    out
}

/// The payload of a whole unmasked server frame (one [`encode`] made):
/// what follows its 2-, 4- or 10-byte header.
pub fn server_payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.get(header..).unwrap_or_default()
}

/// A whole close frame: code (big-endian) + reason, truncated at a char
/// boundary so the payload stays <= 125 bytes (the peer would reject more).
pub fn encode_close(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL - 2);
    // Cutting inside a char would make the reason invalid UTF-8 (close 1007).
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut out = Vec::with_capacity(2 + 2 + reason.len());
    write_header(OpCode::Close, 2 + reason.len(), &mut out);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
    out
}

/// Validate a received close frame's payload.
///
/// `Ok(None)`: empty payload (no code). `Ok(Some((code, reason)))`.
/// `Err(close code to answer with)`: 1-byte payload → 1002; a code a peer
/// must not send → 1002; reason not UTF-8 → 1007.
pub fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, u16> {
    match payload {
        [] => Ok(None),
        [_] => Err(1002),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(1002);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| 1007u16)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Whether a peer may send this close code (RFC 6455 §7.4 + IANA registry).
///
/// Valid: 1000-1003, 1007-1014, 3000-4999. 1004 is reserved, 1005/1006/1015
/// are local-only pseudo codes, 1016-2999 are unassigned (Autobahn 7.7.* /
/// 7.9.*; current Autobahn no longer treats the registered 1012-1014 as invalid).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// For tests and tools (load generator, test clients): a masked client frame
/// with the given FIN, opcode, payload and key.
pub fn encode_masked(fin: bool, opcode: OpCode, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let len = payload.len();
    let mut out = Vec::with_capacity(header_len(len) + 4 + len);
    put_header(u8::from(fin) << 7 | opcode.bits(), 0x80, len, &mut out);
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key);
    out
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
