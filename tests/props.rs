//! Property tests on the pure parts (no server process): the upgrade parser
//! fed at arbitrary split points, and the timer wheel against a simple model.

use std::collections::BTreeMap;

use proptest::prelude::*;
use wspush::handshake::{Outcome, Rules, examine};
use wspush::wheel::{TimerId, Wheel};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn rules() -> Rules<'static> {
    Rules {
        ws_path: "/push",
        allowed_origins: &[],
        max_head: 8 * 1024,
        api_key: None,
        demo: false,
    }
}

/// Feed `bytes` as the server does: append each chunk to what it holds and
/// examine the whole so far, until the answer is no longer Partial. Returns
/// that answer and how many bytes had arrived when it came.
fn feed_in_chunks(bytes: &[u8], cuts: &[usize]) -> (Outcome, usize) {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    for end in ends {
        let outcome = examine(&bytes[..end], &rules());
        if outcome != Outcome::Partial {
            return (outcome, end);
        }
    }
    (Outcome::Partial, bytes.len())
}

/// A valid upgrade request: any header order and name case, a token of
/// URL-safe characters, optional extra headers, and a pipelined first frame.
fn valid_request() -> impl Strategy<Value = (Vec<u8>, usize, String)> {
    let token = "[A-Za-z0-9._~-]{0,40}";
    let extras = prop::collection::vec(("X-[A-Za-z]{1,10}", "[ -~]{0,30}"), 0..5);
    let tail = prop::collection::vec(any::<u8>(), 0..20);
    (token, extras, tail, any::<u64>(), any::<u64>()).prop_map(
        |(token, extras, tail, order, case)| {
            let mut headers: Vec<(String, String)> = vec![
                ("Host".into(), "127.0.0.1".into()),
                ("Upgrade".into(), "websocket".into()),
                ("Connection".into(), "Upgrade".into()),
                ("Sec-WebSocket-Key".into(), KEY.into()),
                ("Sec-WebSocket-Version".into(), "13".into()),
            ];
            headers.extend(extras);
            // A deterministic shuffle and case change driven by the seeds.
            let n = headers.len();
            for i in (1..n).rev() {
                headers.swap(i, (order >> (i % 60)) as usize % (i + 1));
            }
            let mut head = format!("GET /push/{token} HTTP/1.1\r\n");
            for (i, (name, value)) in headers.iter().enumerate() {
                let name = if case >> (i % 64) & 1 == 1 {
                    name.to_ascii_lowercase()
                } else {
                    name.clone()
                };
                head.push_str(&format!("{name}: {}\r\n", value.trim()));
            }
            head.push_str("\r\n");
            let head_len = head.len();
            let mut bytes = head.into_bytes();
            bytes.extend(tail);
            (bytes, head_len, token)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// However a valid request is split, the answer is Partial until the
    /// blank line has arrived, then the same Upgrade as for the whole.
    #[test]
    fn upgrade_parser_is_split_proof(
        (bytes, head_len, token) in valid_request(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let (outcome, at) = feed_in_chunks(&bytes, &cuts);
        prop_assert!(at >= head_len, "decided after {at} of {head_len} bytes");
        let Outcome::Upgrade { upgrade, consumed } = &outcome else {
            return Err(TestCaseError::fail(format!("{outcome:?}")));
        };
        prop_assert_eq!(*consumed, head_len);
        prop_assert_eq!(&upgrade.token, &token);
        prop_assert_eq!(&outcome, &examine(&bytes, &rules()));
    }

    /// On damaged requests the answer does not depend on how the bytes
    /// arrived either: once decided, more bytes never change it.
    #[test]
    fn decisions_are_final(
        (mut bytes, _, _) in valid_request(),
        damage in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        for (at, byte) in damage {
            let len = bytes.len();
            bytes[at % len] = byte;
        }
        let (outcome, at) = feed_in_chunks(&bytes, &cuts);
        for end in at..=bytes.len() {
            prop_assert_eq!(&examine(&bytes[..end], &rules()), &outcome, "at {}", end);
        }
    }
}

/// One step of a wheel scenario.
#[derive(Debug, Clone)]
enum Op {
    /// Schedule at `now + delta` ms (delta may be 0: due at once).
    Insert(u64),
    /// Cancel the n-th id ever handed out (possibly fired or cancelled).
    Cancel(usize),
    /// Advance virtual time and expire everything due.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..5_000).prop_map(Op::Insert),
        1 => (0u64..2_000_000).prop_map(Op::Insert),
        2 => any::<usize>().prop_map(Op::Cancel),
        3 => (0u64..3_000).prop_map(Op::Advance),
        1 => (0u64..300_000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The wheel against a map of pending deadlines: nothing fires early,
    /// everything due fires at the `expire` that reaches it, exactly once;
    /// cancel succeeds only on pending entries; `next_timeout` is never
    /// later than the earliest deadline rounded up to a tick.
    #[test]
    fn wheel_matches_a_model(
        tick in 1u64..2_000,
        slots in 1usize..64,
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let mut wheel: Wheel<usize> = Wheel::new(tick, slots);
        let mut pending: BTreeMap<usize, u64> = BTreeMap::new();
        let mut ids: Vec<TimerId> = Vec::new();
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Insert(delta) => {
                    let n = ids.len();
                    ids.push(wheel.insert(now + delta, n));
                    pending.insert(n, now + delta);
                }
                Op::Cancel(pick) if !ids.is_empty() => {
                    let n = pick % ids.len();
                    let got = wheel.cancel(ids[n]);
                    prop_assert_eq!(got, pending.remove(&n).map(|_| n));
                }
                Op::Cancel(_) => {}
                Op::Advance(delta) => {
                    now += delta;
                    while let Some(n) = wheel.expire(now) {
                        let at = pending.remove(&n);
                        prop_assert!(at.is_some(), "entry {} fired twice or after cancel", n);
                        prop_assert!(at.unwrap() <= now, "entry {} due {:?} fired at {}", n, at, now);
                    }
                    let late: Vec<_> = pending.iter().filter(|&(_, &at)| at <= now).collect();
                    prop_assert!(late.is_empty(), "due but not fired at {}: {:?}", now, late);
                }
            }
            prop_assert_eq!(wheel.len(), pending.len());
            match pending.values().min() {
                None => prop_assert_eq!(wheel.next_timeout(now), None),
                Some(&earliest) => {
                    let wait = wheel.next_timeout(now);
                    prop_assert!(wait.is_some());
                    let rounded = earliest.div_ceil(tick) * tick;
                    prop_assert!(
                        now + wait.unwrap() <= rounded.max(now),
                        "sleeps {:?} from {} past {} (due {})", wait, now, rounded, earliest
                    );
                }
            }
        }
    }
}
