//! Unit tests of `resp.rs`, on byte slices.
use super::RespError::*;
use super::*;

/// Parse one complete reply; returns (reply, consumed).
fn ok(buf: &[u8]) -> (Reply<'_>, usize) {
    parse(buf).expect("valid reply").expect("complete reply")
}

/// The error `buf` gives.
fn err(buf: &[u8]) -> RespError {
    parse(buf).expect_err("refused reply")
}

/// The wire form of `reply` (the encoder a Redis server has).
fn encode(reply: &Reply, out: &mut Vec<u8>) {
    match reply {
        Reply::Simple(s) => line(out, b'+', s),
        Reply::Error(s) => line(out, b'-', s),
        Reply::Int(n) => line(out, b':', n.to_string().as_bytes()),
        Reply::Bulk(s) => {
            line(out, b'$', s.len().to_string().as_bytes());
            out.extend_from_slice(s);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
        Reply::Array(items) => {
            line(out, b'*', items.len().to_string().as_bytes());
            for item in items {
                encode(item, out);
            }
        }
        Reply::NilArray => out.extend_from_slice(b"*-1\r\n"),
    }
}

fn line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

#[test]
fn every_type() {
    assert_eq!(ok(b"+OK\r\n"), (Reply::Simple(b"OK"), 5));
    assert_eq!(ok(b"+\r\n"), (Reply::Simple(b""), 3));
    assert_eq!(ok(b"-ERR no\r\n"), (Reply::Error(b"ERR no"), 9));
    assert_eq!(ok(b":0\r\n"), (Reply::Int(0), 4));
    assert_eq!(ok(b":-42\r\n"), (Reply::Int(-42), 6));
    assert_eq!(ok(b":-0\r\n").0, Reply::Int(0));
    assert_eq!(ok(b":9223372036854775807\r\n").0, Reply::Int(i64::MAX));
    assert_eq!(ok(b":-9223372036854775808\r\n").0, Reply::Int(i64::MIN));
    assert_eq!(ok(b"$5\r\nhello\r\n"), (Reply::Bulk(b"hello"), 11));
    assert_eq!(ok(b"$0\r\n\r\n"), (Reply::Bulk(b""), 6));
    assert_eq!(ok(b"$-1\r\n"), (Reply::Nil, 5));
    assert_eq!(ok(b"*0\r\n"), (Reply::Array(vec![]), 4));
    assert_eq!(ok(b"*-1\r\n"), (Reply::NilArray, 5));
    let (r, n) = ok(b"*3\r\n:1\r\n$1\r\nx\r\n+y\r\n");
    let want = vec![Reply::Int(1), Reply::Bulk(b"x"), Reply::Simple(b"y")];
    assert_eq!((r, n), (Reply::Array(want), 19));
}

#[test]
fn nested_arrays_with_nulls() {
    let buf = b"*3\r\n*2\r\n$-1\r\n*-1\r\n*0\r\n*1\r\n*1\r\n:7\r\n";
    let (r, n) = ok(buf);
    assert_eq!(n, buf.len());
    let inner = Reply::Array(vec![Reply::Array(vec![Reply::Int(7)])]);
    let want = vec![
        Reply::Array(vec![Reply::Nil, Reply::NilArray]),
        Reply::Array(vec![]),
        inner,
    ];
    assert_eq!(r, Reply::Array(want));
}

#[test]
fn bulk_payloads_are_binary_safe() {
    let (r, n) = ok(b"$8\r\n\r\n\0\xff\r\r\n\n\r\n+next\r\n");
    assert_eq!((r, n), (Reply::Bulk(b"\r\n\0\xff\r\r\n\n"), 14));
}

#[test]
fn trailing_bytes_are_left_alone() {
    assert_eq!(ok(b":1\r\n:2\r\n"), (Reply::Int(1), 4));
    assert_eq!(ok(b"+OK\r\ngarbage"), (Reply::Simple(b"OK"), 5));
}

/// Two of each kind of reply, one after another.
const PIPELINE: &[u8] = b"+OK\r\n-ERR x\r\n:12\r\n$3\r\na\r\n\r\n$-1\r\n$0\r\n\r\n*-1\r\n\
*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhe\r\no\r\n*2\r\n*1\r\n:1\r\n*0\r\n";

fn pipeline_replies() -> Vec<Reply<'static>> {
    vec![
        Reply::Simple(b"OK"),
        Reply::Error(b"ERR x"),
        Reply::Int(12),
        Reply::Bulk(b"a\r\n"),
        Reply::Nil,
        Reply::Bulk(b""),
        Reply::NilArray,
        Reply::Array(vec![
            Reply::Bulk(b"message"),
            Reply::Bulk(b"ch"),
            Reply::Bulk(b"he\r\no"),
        ]),
        Reply::Array(vec![
            Reply::Array(vec![Reply::Int(1)]),
            Reply::Array(vec![]),
        ]),
    ]
}

/// Every reply `buf` holds, and the bytes they took.
fn parse_all(buf: &[u8]) -> (Vec<Reply<'_>>, usize) {
    let (mut replies, mut pos) = (vec![], 0);
    while let Some((reply, n)) = parse(&buf[pos..]).expect("valid replies") {
        assert!(n > 0);
        replies.push(reply);
        pos += n;
    }
    (replies, pos)
}

#[test]
fn pipelined_replies_parse_one_after_another() {
    let (replies, used) = parse_all(PIPELINE);
    assert_eq!(replies, pipeline_replies());
    assert_eq!(used, PIPELINE.len());
    let sizes: Vec<usize> = pipeline_replies()
        .iter()
        .map(|r| {
            let mut out = vec![];
            encode(r, &mut out);
            out.len()
        })
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), PIPELINE.len());
    let mut pos = 0;
    for size in sizes {
        assert_eq!(ok(&PIPELINE[pos..]).1, size);
        pos += size;
    }
}

#[test]
fn incomplete_at_every_split_point() {
    let want = pipeline_replies();
    let mut ends = vec![];
    let mut end = 0;
    for r in &want {
        let mut out = vec![];
        encode(r, &mut out);
        end += out.len();
        ends.push(end);
    }
    for k in 0..=PIPELINE.len() {
        let (got, used) = parse_all(&PIPELINE[..k]);
        // Exactly the replies that end within the first k bytes.
        let complete = ends.iter().filter(|&&e| e <= k).count();
        assert_eq!(got, want[..complete], "split at {k}");
        assert_eq!(used, if complete == 0 { 0 } else { ends[complete - 1] });
    }
}

#[test]
fn bad_type_bytes() {
    for b in [b'>', b'%', b'_', b'#', b'a', b' ', b'\r', 0] {
        assert_eq!(err(&[b, b'\r', b'\n']), BadType(b));
    }
    assert_eq!(err(b"*1\r\n!x\r\n"), BadType(b'!'));
}

#[test]
fn bad_integers() {
    for buf in [
        &b":\r\n"[..],
        b":-\r\n",
        b":+1\r\n",
        b": 1\r\n",
        b":1a\r\n",
        b":1.5\r\n",
        b":9223372036854775808\r\n",
        b":-9223372036854775809\r\n",
        b"$\r\n",
        b"$x\r\n",
        b"*1x\r\n",
    ] {
        assert_eq!(err(buf), BadInteger, "{:?}", String::from_utf8_lossy(buf));
    }
    // Over MAX_INT_LINE digits with no CR LF yet: refused without waiting.
    let mut long = vec![b':'];
    long.resize(2 + MAX_INT_LINE, b'1');
    assert_eq!(err(&long), BadInteger);
    long.truncate(1 + MAX_INT_LINE);
    assert_eq!(parse(&long), Ok(None));
}

#[test]
fn bad_line_ends() {
    assert_eq!(err(b"+OK\rX"), BadLineEnd);
    assert_eq!(err(b"+OK\n"), BadLineEnd);
    assert_eq!(err(b":1\n"), BadLineEnd);
    assert_eq!(err(b"$1\n"), BadLineEnd);
    assert_eq!(parse(b"+OK\r"), Ok(None));
}

#[test]
fn missing_crlf_after_bulk() {
    assert_eq!(err(b"$3\r\nabcd\r\n"), MissingCrlf);
    assert_eq!(err(b"$3\r\nabc\rX"), MissingCrlf);
    // Refused as soon as the wrong byte is there, not when all are.
    assert_eq!(err(b"$3\r\nabcX"), MissingCrlf);
    assert_eq!(parse(b"$3\r\nabc\r"), Ok(None));
}

#[test]
fn negative_lengths() {
    assert_eq!(err(b"$-2\r\n"), NegativeLength(-2));
    assert_eq!(err(b"*-5\r\n"), NegativeLength(-5));
    assert_eq!(err(b"$-9223372036854775808\r\n"), NegativeLength(i64::MIN));
}

#[test]
fn line_limit() {
    let mut buf = vec![b'+'];
    buf.resize(1 + MAX_LINE, b'a');
    assert_eq!(parse(&buf), Ok(None));
    buf.extend_from_slice(b"\r\n");
    assert_eq!(ok(&buf).1, MAX_LINE + 3);
    buf.truncate(1 + MAX_LINE);
    buf.push(b'a');
    assert_eq!(err(&buf), LineTooLong);
    buf[0] = b'-';
    assert_eq!(err(&buf), LineTooLong);
}

#[test]
fn bulk_limit_is_checked_before_the_payload() {
    let at_limit = format!("${MAX_BULK}\r\n");
    assert_eq!(parse(at_limit.as_bytes()), Ok(None));
    let over = format!("${}\r\n", MAX_BULK + 1);
    assert_eq!(err(over.as_bytes()), BulkTooLong);
    assert_eq!(err(b"$9223372036854775807\r\n"), BulkTooLong);
    let mut full = at_limit.into_bytes();
    full.resize(full.len() + MAX_BULK, b'\n');
    full.extend_from_slice(b"\r\n");
    assert_eq!(ok(&full).0.as_bytes().map(<[u8]>::len), Some(MAX_BULK));
}

#[test]
fn array_limit_is_checked_before_the_elements() {
    let at_limit = format!("*{MAX_ARRAY}\r\n");
    assert_eq!(parse(at_limit.as_bytes()), Ok(None));
    let over = format!("*{}\r\n", MAX_ARRAY + 1);
    assert_eq!(err(over.as_bytes()), ArrayTooLong);
    let mut full = at_limit.into_bytes();
    for _ in 0..MAX_ARRAY {
        full.extend_from_slice(b"+\r\n");
    }
    let (r, n) = ok(&full);
    assert_eq!(
        (r.as_array().map(<[_]>::len), n),
        (Some(MAX_ARRAY), full.len())
    );
}

#[test]
fn depth_limit() {
    let nest = |depth: usize| {
        let mut buf = b"*1\r\n".repeat(depth);
        buf.extend_from_slice(b":1\r\n");
        buf
    };
    let deepest = nest(MAX_DEPTH);
    assert_eq!(ok(&deepest).1, deepest.len());
    assert_eq!(err(&nest(MAX_DEPTH + 1)), TooDeep);
    // Refused at the array header, before anything inside it.
    assert_eq!(err(&b"*1\r\n".repeat(MAX_DEPTH + 1)), TooDeep);
}

#[test]
fn reply_limit() {
    // Declared: a bulk that would end past MAX_REPLY, refused before it arrives.
    let mut buf = format!("*2\r\n${MAX_BULK}\r\n").into_bytes();
    buf.resize(buf.len() + MAX_BULK, b'x');
    buf.extend_from_slice(format!("\r\n${MAX_BULK}\r\n").as_bytes());
    assert_eq!(err(&buf), ReplyTooLong);
    // Declared: more elements than the bytes left under MAX_REPLY can hold.
    let mut buf = format!("*3\r\n${MAX_BULK}\r\n").into_bytes();
    buf.resize(buf.len() + MAX_BULK, b'x');
    let second = MAX_BULK - (2 << 20);
    buf.extend_from_slice(format!("\r\n${second}\r\n").as_bytes());
    buf.resize(buf.len() + second, b'x');
    buf.extend_from_slice(b"\r\n");
    let head = buf.len();
    buf.extend_from_slice(format!("*{MAX_ARRAY}\r\n").as_bytes());
    assert_eq!(err(&buf), ReplyTooLong);
    buf.truncate(head);
    buf.extend_from_slice(b"*1000\r\n");
    assert_eq!(parse(&buf), Ok(None));
    // Not declared: MAX_REPLY bytes buffered and the reply still incomplete.
    let mut slow = format!("*{MAX_ARRAY}\r\n").into_bytes();
    let element = format!("+{}\r\n", "y".repeat(1000));
    while slow.len() < MAX_REPLY {
        slow.extend_from_slice(element.as_bytes());
    }
    assert_eq!(parse(&slow[..MAX_REPLY - 1]), Ok(None));
    assert_eq!(err(&slow[..MAX_REPLY]), ReplyTooLong);
}

#[test]
fn errors_display_short_messages() {
    assert_eq!(BadType(b'>').to_string(), "bad RESP type byte 0x3e");
    assert_eq!(NegativeLength(-3).to_string(), "negative RESP length -3");
    for e in [
        BadInteger,
        BadLineEnd,
        MissingCrlf,
        LineTooLong,
        BulkTooLong,
    ] {
        assert!(e.to_string().contains("RESP"), "{e}");
    }
    let boxed: Box<dyn std::error::Error> = Box::new(TooDeep);
    assert_eq!(boxed.to_string(), "RESP arrays nested over 8 deep");
}

#[test]
fn commands_encode_as_arrays_of_bulk_strings() {
    let mut out = vec![];
    command(&mut out, &[b"SUBSCRIBE", b"wspush:jobs"]);
    assert_eq!(out, b"*2\r\n$9\r\nSUBSCRIBE\r\n$11\r\nwspush:jobs\r\n");
    command(&mut out, &[b"PING"]);
    command(&mut out, &[]);
    command(&mut out, &[b"SET", b"k", b"", b"a\r\nb\0"]);
    let (replies, used) = parse_all(&out);
    assert_eq!(used, out.len());
    let bulks =
        |args: &[&'static [u8]]| Reply::Array(args.iter().map(|a| Reply::Bulk(a)).collect());
    let want = [
        bulks(&[b"SUBSCRIBE", b"wspush:jobs"]),
        bulks(&[b"PING"]),
        bulks(&[]),
        bulks(&[b"SET", b"k", b"", b"a\r\nb\0"]),
    ];
    assert_eq!(replies, want);
}

#[test]
fn decimal_without_allocation() {
    let mut digits = [0; 20];
    assert_eq!(decimal(0, &mut digits), b"0");
    assert_eq!(decimal(7, &mut digits), b"7");
    assert_eq!(decimal(1_048_576, &mut digits), b"1048576");
    assert_eq!(decimal(u64::MAX, &mut digits), b"18446744073709551615");
}

#[test]
fn reply_helpers() {
    assert_eq!(Reply::Simple(b"OK").as_bytes(), Some(&b"OK"[..]));
    assert_eq!(Reply::Bulk(b"x").as_bytes(), Some(&b"x"[..]));
    assert_eq!(Reply::Error(b"ERR").as_bytes(), None);
    assert_eq!(Reply::Nil.as_bytes(), None);
    assert_eq!(Reply::Int(3).as_int(), Some(3));
    assert_eq!(Reply::Bulk(b"3").as_int(), None);
    assert!(Reply::Error(b"WRONGPASS").is_error());
    assert_eq!(Reply::Error(b"WRONGPASS").error(), Some(&b"WRONGPASS"[..]));
    assert_eq!(Reply::Simple(b"WRONGPASS").error(), None);
    assert!(!Reply::Simple(b"OK").is_error());
    assert!(Reply::Simple(b"OK").is_ok());
    assert!(!Reply::Bulk(b"OK").is_ok());
    assert!(Reply::Nil.is_nil() && Reply::NilArray.is_nil());
    assert!(!Reply::Bulk(b"").is_nil());
    assert_eq!(Reply::Array(vec![]).as_array(), Some(&[][..]));
    assert_eq!(Reply::NilArray.as_array(), None);
}

#[test]
fn pubsub_messages() {
    let (r, _) = ok(b"*3\r\n$7\r\nmessage\r\n$4\r\njobs\r\n$3\r\n{}\n\r\n");
    assert_eq!(pubsub_message(&r), Some((&b"jobs"[..], &b"{}\n"[..])));
    let (r, _) = ok(b"*4\r\n$8\r\npmessage\r\n$2\r\nj*\r\n$4\r\njobs\r\n$0\r\n\r\n");
    assert_eq!(pubsub_message(&r), Some((&b"jobs"[..], &b""[..])));
    for buf in [
        &b"*3\r\n$9\r\nsubscribe\r\n$4\r\njobs\r\n:1\r\n"[..],
        b"*3\r\n$7\r\nMESSAGE\r\n$1\r\na\r\n$1\r\nb\r\n",
        b"*3\r\n+message\r\n$1\r\na\r\n$1\r\nb\r\n",
        b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$-1\r\n",
        b"*2\r\n$7\r\nmessage\r\n$1\r\na\r\n",
        b"*3\r\n$8\r\npmessage\r\n$1\r\na\r\n$1\r\nb\r\n",
        b"$7\r\nmessage\r\n",
        b"*-1\r\n",
    ] {
        assert_eq!(pubsub_message(&ok(buf).0), None);
    }
}

/// xorshift64*: a fixed-seed generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Bytes drawn mostly from `\r`, `\n`, `$`, `*`, `:`, digits and a few others.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        const ALPHABET: &[u8] = b"\r\n$*:+-01239az \0\xff";
        let len = self.below(max + 1);
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len())])
            .collect()
    }

    /// A line for `+`/`-`: no CR or LF.
    fn text(&mut self) -> Vec<u8> {
        let mut s = self.bytes(12);
        s.retain(|&b| b != b'\r' && b != b'\n');
        s
    }
}

/// A random reply tree; strings live in `store`, so it is built in two steps.
#[derive(Clone)]
enum Shape {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Shape>),
    NilArray,
}

fn shape(rng: &mut Rng, depth: usize) -> Shape {
    let kinds = if depth < MAX_DEPTH { 7 } else { 6 };
    match rng.below(kinds) {
        0 => Shape::Simple(rng.text()),
        1 => Shape::Error(rng.text()),
        2 => Shape::Int(rng.next() as i64 >> rng.below(64)),
        3 => Shape::Bulk(rng.bytes(40)),
        4 => Shape::Nil,
        5 => Shape::NilArray,
        _ => Shape::Array((0..rng.below(5)).map(|_| shape(rng, depth + 1)).collect()),
    }
}

fn reply(shape: &Shape) -> Reply<'_> {
    match shape {
        Shape::Simple(s) => Reply::Simple(s),
        Shape::Error(s) => Reply::Error(s),
        Shape::Int(n) => Reply::Int(*n),
        Shape::Bulk(s) => Reply::Bulk(s),
        Shape::Nil => Reply::Nil,
        Shape::Array(items) => Reply::Array(items.iter().map(reply).collect()),
        Shape::NilArray => Reply::NilArray,
    }
}

#[test]
fn random_buffers_split_at_random_points() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..300 {
        let shapes: Vec<Shape> = (0..1 + rng.below(8)).map(|_| shape(&mut rng, 1)).collect();
        let want: Vec<Reply> = shapes.iter().map(reply).collect();
        let mut wire = vec![];
        for r in &want {
            encode(r, &mut wire);
        }
        // Stream the bytes in random chunks, parsing after each as the link will.
        let (mut buf, mut pos, mut got) = (vec![], 0, 0);
        let mut fed = 0;
        while fed < wire.len() {
            let chunk = 1 + rng.below(16.min(wire.len() - fed));
            buf.extend_from_slice(&wire[fed..fed + chunk]);
            fed += chunk;
            while let Some((r, n)) = parse(&buf[pos..]).expect("valid stream") {
                assert_eq!(r, want[got], "round {round}, reply {got}");
                pos += n;
                got += 1;
            }
        }
        assert_eq!((got, pos), (want.len(), wire.len()), "round {round}");
    }
}
