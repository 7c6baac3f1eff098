//! Unit tests of `frame.rs`, on byte slices.
use super::FrameError::*;
use super::OpCode::*;
use super::*;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const BIG: usize = 1 << 20;
const HELLO: [u8; 11] = [0x81, 0x85, 55, 0xfa, 33, 61, 0x7f, 0x9f, 0x4d, 0x51, 0x58];

/// Decode a frame that must be valid and complete; returns (frame, consumed).
fn ok(buf: &mut [u8], max: usize) -> (Frame, usize) {
    let frame = decode(buf, max).expect("valid frame");
    frame.expect("complete frame")
}

#[test]
fn rfc_6455_section_5_7_examples() {
    let mut hello = HELLO;
    assert_eq!(encode_masked(true, Text, b"Hello", KEY), hello);
    let (f, n) = ok(&mut hello, BIG);
    assert_eq!((f.fin, f.opcode, n), (true, Text, 11));
    assert_eq!(&hello[f.payload], b"Hello");
    let mut pong = HELLO;
    pong[0] = 0x8a;
    let (f, _) = ok(&mut pong, BIG);
    assert_eq!((f.opcode, &pong[f.payload]), (Pong, &b"Hello"[..]));

    let server = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(encode(Text, b"Hello"), server);
    assert_eq!(encode(Ping, b"Hello")[..2], [0x89, 0x05]);
    assert_eq!(encode(Binary, &[0; 256])[..4], [0x82, 0x7E, 0x01, 0x00]);
    let big = encode(Binary, &[0; 65536]);
    assert_eq!(big[..10], [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(big.len(), 65546);
}

#[test]
fn round_trips_at_length_boundaries() {
    let lens = [0, 125, 126, 65535, 65536, 70001];
    for (len, hdr) in lens.into_iter().zip([6, 6, 8, 8, 14, 14]) {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        for fin in [true, false] {
            let mut wire = encode_masked(fin, Binary, &payload, [1, 2, 3, 0xff]);
            let (f, n) = ok(&mut wire, BIG);
            assert_eq!((f.fin, f.opcode, n), (fin, Binary, hdr + len));
            assert_eq!((f.payload.start, &wire[f.payload]), (hdr, &payload[..]));
        }
    }
    // Non-minimal length encodings are tolerated.
    let mut wire = [0x81, 0xFF, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, b'h', b'i'];
    let (f, n) = ok(&mut wire, BIG);
    assert_eq!((&wire[f.payload], n), (&b"hi"[..], 16));
    assert_eq!(ok(&mut [0x82, 0xFE, 0, 1, 0, 0, 0, 0, 9], BIG).1, 9);
}

#[test]
fn partial_input_at_every_split() {
    for len in [0, 5, 125, 126, 300] {
        let payload = vec![b'x'; len];
        let wire = encode_masked(true, Text, &payload, KEY);
        for split in 0..wire.len() {
            let mut part = wire[..split].to_vec();
            assert_eq!(decode(&mut part, BIG), Ok(None), "len {len} split {split}");
            assert_eq!(part, wire[..split], "buffer touched");
        }
        let mut full = wire.clone();
        let (f, n) = ok(&mut full, BIG);
        assert_eq!((n, &full[f.payload]), (wire.len(), &payload[..]));
    }
    // 64-bit header: every split inside the header, plus one byte short.
    let wire = encode_masked(true, Binary, &[9; 65536], KEY);
    for split in (0..=14).chain([wire.len() - 1]) {
        assert_eq!(decode(&mut wire[..split].to_vec(), BIG), Ok(None));
    }
}

#[test]
fn oversized_rejected_from_header_alone() {
    let mut hdr = vec![0x82, 0xFF];
    hdr.extend_from_slice(&(16u64 << 20).to_be_bytes());
    assert_eq!(decode(&mut hdr, 64 << 10), Err(TooBig));
    // 16-bit length, no mask key or payload yet.
    assert_eq!(decode(&mut [0x82, 0xFE, 0x04, 0x00], 1000), Err(TooBig));
    // Exactly max_payload is fine, one less is not.
    let mut wire = encode_masked(true, Binary, &[0; 1000], KEY);
    assert_eq!(ok(&mut wire, 1000).1, 1008);
    assert_eq!(decode(&mut wire, 999), Err(TooBig));
}

#[test]
fn each_error_variant() {
    let mut unmasked = [0x81, 0x05, b'H', b'e', b'l', b'l', b'o'];
    assert_eq!(decode(&mut unmasked, BIG), Err(Unmasked));
    for rsv in [0x40, 0x20, 0x10] {
        let mut f = encode_masked(true, Text, b"a", KEY);
        f[0] |= rsv;
        assert_eq!(decode(&mut f, BIG), Err(ReservedBits));
    }
    for op in (0x3..=0x7).chain(0xB..=0xF) {
        let mut f = [0x80 | op, 0x80, 0, 0, 0, 0];
        assert_eq!(decode(&mut f, BIG), Err(UnknownOpcode));
    }
    for op in [Close, Ping, Pong] {
        let mut f = encode_masked(false, op, b"", KEY);
        assert_eq!(decode(&mut f, BIG), Err(FragmentedControl));
        // Refused from the first two bytes.
        let mut f = encode_masked(true, op, &[0; 126], KEY);
        assert_eq!(decode(&mut f[..2], BIG), Err(ControlTooLong));
        assert_eq!(ok(&mut encode_masked(true, op, &[0; 125], KEY), BIG).1, 131);
    }
    let mut f = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1];
    assert_eq!(decode(&mut f, usize::MAX), Err(BadLength));
    let mut f = encode_masked(true, Text, b"abc", KEY);
    assert_eq!(decode(&mut f, 2), Err(TooBig));

    let protocol = [Unmasked, ReservedBits, UnknownOpcode, FragmentedControl];
    for e in protocol.into_iter().chain([ControlTooLong, BadLength]) {
        assert_eq!(e.close_code(), 1002);
    }
    assert_eq!(TooBig.close_code(), 1009);
}

#[test]
fn frames_back_to_back() {
    let mut wire = encode_masked(false, Text, b"Hel", KEY);
    let first = wire.len();
    wire.extend(encode_masked(true, Continuation, b"lo", [9, 8, 7, 6]));
    let second = wire.len();
    wire.extend(&encode_masked(true, Ping, b"p", KEY)[..3]);

    let (f, n) = ok(&mut wire, BIG);
    assert_eq!((n, f.fin, f.opcode), (first, false, Text));
    assert_eq!(&wire[f.payload], b"Hel");
    let (f, n) = ok(&mut wire[first..], BIG);
    assert_eq!((first + n, f.fin, f.opcode), (second, true, Continuation));
    assert_eq!(&wire[first..][f.payload], b"lo");
    assert_eq!(decode(&mut wire[second..], BIG), Ok(None));
}

#[test]
fn apply_mask_matches_naive() {
    let data: Vec<u8> = (0..64u32).map(|i| (i * 31 + 5) as u8).collect();
    for key in [KEY, [0, 0, 0, 0], [0xff, 1, 0x80, 0x7f]] {
        // Odd offsets exercise unaligned starts; all lengths exercise every tail size.
        for off in 0..8 {
            for len in 0..=(data.len() - off) {
                let mut fast = data.clone();
                apply_mask(&mut fast[off..off + len], key);
                let mut naive = data.clone();
                for (i, b) in naive[off..off + len].iter_mut().enumerate() {
                    *b ^= key[i % 4];
                }
                assert_eq!(fast, naive, "key {key:?} off {off} len {len}");
                apply_mask(&mut fast[off..off + len], key);
                assert_eq!(fast, data, "masking twice is the identity");
            }
        }
    }
}

#[test]
fn header_len_and_write_header_boundaries() {
    let cases: [(usize, &[u8]); 5] = [
        (0, &[0x81, 0]),
        (125, &[0x81, 125]),
        (126, &[0x81, 126, 0, 126]),
        (65535, &[0x81, 126, 0xff, 0xff]),
        (65536, &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
    ];
    for (len, want) in cases {
        let mut out = vec![0xAA];
        write_header(Text, len, &mut out);
        assert_eq!((out[0], &out[1..]), (0xAA, want));
        assert_eq!(header_len(len), want.len());
        let f = encode(Binary, &vec![1; len]);
        assert_eq!((f.len(), f.capacity()), (want.len() + len, f.len()));
    }
}

#[test]
fn encode_close_truncates_at_char_boundary() {
    assert_eq!(encode_close(1000, ""), [0x88, 2, 0x03, 0xe8]);
    let bye = [0x88, 5, 0x03, 0xe9, b'b', b'y', b'e'];
    assert_eq!(encode_close(1001, "bye"), bye);
    let cases = [
        ("a".repeat(200), 123),
        ("€".repeat(41), 123),
        ("€".repeat(42), 123),
        ("é".repeat(100), 122),
        (format!("ab{}", "€".repeat(50)), 122),
    ];
    for (reason, kept) in cases {
        let f = encode_close(4000, &reason);
        assert_eq!((f[1] as usize, f.len()), (2 + kept, 4 + kept));
        assert_eq!(parse_close(&f[2..]), Ok(Some((4000, &reason[..kept]))));
    }
}

#[test]
fn parse_close_table() {
    assert_eq!(parse_close(&[]), Ok(None));
    assert_eq!(parse_close(&[0x03]), Err(1002));
    assert_eq!(parse_close(&[0x03, 0xe8]), Ok(Some((1000, ""))));
    assert_eq!(parse_close(b"\x0f\xa0ok"), Ok(Some((4000, "ok"))));
    assert_eq!(parse_close(&[0x03, 0xed]), Err(1002)); // 1005
    assert_eq!(parse_close(&[0x00, 0x00, b'x']), Err(1002));
    // Autobahn 7.5.1: a surrogate encoded in UTF-8 is invalid.
    let bad = [0x03, 0xe8, 0xce, 0xba, 0xed, 0xa0, 0x80];
    assert_eq!(parse_close(&bad), Err(1007));
    assert_eq!(parse_close(&[0x03, 0xe8, 0xff]), Err(1007));
    // An invalid code is reported before a bad reason.
    assert_eq!(parse_close(&[0x03, 0xec, 0xff]), Err(1002));
}

#[test]
fn close_code_validity() {
    // Autobahn 7.7.* (valid) plus the IANA-registered 1012-1014.
    const VALID: [u16; 16] = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ];
    // Autobahn 7.9.* (invalid) plus 1015 and out-of-range codes.
    const INVALID: [u16; 12] = [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    for c in VALID {
        assert_eq!(parse_close(&c.to_be_bytes()), Ok(Some((c, ""))), "{c}");
    }
    for c in INVALID {
        assert!(!is_valid_close_code(c), "{c}");
        assert_eq!(parse_close(&c.to_be_bytes()), Err(1002), "{c}");
    }
}

#[test]
fn opcode_bits_and_control() {
    let all = [Continuation, Text, Binary, Close, Ping, Pong];
    for (op, bits) in all.into_iter().zip([0, 1, 2, 8, 9, 10]) {
        assert_eq!((op.bits(), OpCode::from_bits(bits)), (bits, Some(op)));
        assert_eq!(op.is_control(), bits >= 8);
    }
}
