//! Latest value: a push/publish with a `key` replaces an unsent message with
//! the same key in each recipient's queue, so a client that does not read is
//! not cut off by a stream of readings, and gets the newest one when it reads.
mod common;
#[path = "common/delivery.rs"]
mod delivery;

use std::time::Duration;

use common::*;
use delivery::*;
use serde_json::{Value, json};

const N: u64 = 3000;

fn flood_args() -> [&'static str; 6] {
    [
        "--max-outbound",
        "1000000",
        "--ping-interval",
        "0",
        "--idle-timeout",
        "600",
    ]
}

/// Read until the message whose content.i is `last` arrives; returns every
/// content.i read, in order.
fn read_until_last(ws: &mut Ws, last: u64) -> Vec<Value> {
    let mut got = vec![];
    loop {
        let m = recv_within(
            ws,
            Duration::from_secs(5),
            &format!(
                "reading towards the last message (after {} messages)",
                got.len()
            ),
        );
        let done = m["content"]["i"] == json!(last);
        got.push(m);
        if done {
            return got;
        }
    }
}

fn keyed_flood(publish: bool) {
    let s = Server::start(&flood_args());
    s.grant("ta", "alice");
    let mut slow = s.ws_connect("ta");
    if publish {
        subscribe(&mut slow, "temp");
    }
    let pad = "t".repeat(4096);
    let reqs: Vec<Value> = (0..N)
        .map(|i| {
            if publish {
                json!({"op":"publish","topic":"temp","key":"temp","content":{"i":i,"pad":pad}})
            } else {
                json!({"op":"push","users":["alice"],"key":"temp","content":{"i":i,"pad":pad}})
            }
        })
        .collect();
    let mut c = s.control_conn();
    let replies = pipelined_chunked(&mut c, &reqs, 100);
    let mut seqs = vec![];
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r["ok"], json!(true), "{r}");
        assert_eq!(
            r["delivered"],
            json!(1),
            "keyed push {i} was not delivered: the non-reading client was cut off? {r}"
        );
        seqs.push(r["seq"].as_u64().unwrap());
    }
    let st = s.stats();
    assert_eq!(st["slow_consumers"], json!(0), "{st}");
    assert_eq!(st["connections"], json!(1), "{st}");

    // now the client reads: the newest value arrives last, after far fewer
    // than N messages, in push order
    let got = read_until_last(&mut slow, N - 1);
    let is: Vec<u64> = got
        .iter()
        .map(|m| m["content"]["i"].as_u64().unwrap())
        .collect();
    assert!(
        is.windows(2).all(|w| w[0] < w[1]),
        "keyed messages out of order: {is:?}"
    );
    let last = got.last().unwrap();
    assert_eq!(last["seq"], json!(seqs[(N - 1) as usize]));
    assert_eq!(last["content"]["pad"].as_str().map(str::len), Some(4096));
    if publish {
        assert_eq!(last["topic"], json!("temp"));
    }
    assert!(
        (got.len() as u64) < N / 2,
        "received {} of {N} keyed messages: unsent ones were not replaced",
        got.len()
    );
    assert!(
        sync_json(&mut slow).is_empty(),
        "messages after the last one"
    );
}

#[test]
fn keyed_pushes_replace_unsent_ones_for_a_client_that_does_not_read() {
    keyed_flood(false);
}

#[test]
fn keyed_publishes_replace_unsent_ones_for_a_subscriber_that_does_not_read() {
    keyed_flood(true);
}

#[test]
fn the_same_flood_without_a_key_closes_the_client_with_4000() {
    // the premise of the keyed tests: 12 MB unkeyed exceeds --max-outbound
    let s = Server::start(&flood_args());
    s.grant("ta", "alice");
    let mut slow = s.ws_connect("ta");
    let pad = "t".repeat(4096);
    let reqs: Vec<Value> = (0..N)
        .map(|i| json!({"op":"push","users":["alice"],"content":{"i":i,"pad":pad}}))
        .collect();
    let mut c = s.control_conn();
    let replies = pipelined_chunked(&mut c, &reqs, 100);
    assert!(
        replies.iter().any(|r| r["delivered"] == json!(0)),
        "unkeyed flood never dropped the non-reading client"
    );
    let (code, _) = expect_close_collect(&mut slow);
    assert_eq!(code, 4000);
}

#[test]
fn unkeyed_messages_are_never_dropped_and_keys_are_independent() {
    let s = Server::start(&[
        "--max-outbound",
        "50000000",
        "--ping-interval",
        "0",
        "--idle-timeout",
        "600",
    ]);
    s.grant("ta", "alice");
    let mut slow = s.ws_connect("ta");
    let pad = "u".repeat(4096);
    let rounds = 600u64;
    let mut reqs = vec![];
    for i in 0..rounds {
        for k in ["a", "b", "none"] {
            let mut r = json!({"op":"push","users":["alice"],"content":{"k":k,"i":i,"pad":pad}});
            if k != "none" {
                r["key"] = json!(k);
            }
            reqs.push(r);
        }
    }
    let mut c = s.control_conn();
    for r in pipelined_chunked(&mut c, &reqs, 150) {
        assert_eq!(r["delivered"], json!(1), "{r}");
    }

    let (mut a, mut b, mut none) = (vec![], vec![], vec![]);
    let mut last_seq = 0;
    while !(a.last() == Some(&(rounds - 1))
        && b.last() == Some(&(rounds - 1))
        && none.last() == Some(&(rounds - 1)))
    {
        let m = recv_within(
            &mut slow,
            Duration::from_secs(5),
            &format!("a={} b={} none={} so far", a.len(), b.len(), none.len()),
        );
        let seq = m["seq"].as_u64().unwrap();
        assert!(
            seq > last_seq,
            "messages out of seq order: {seq} after {last_seq}"
        );
        last_seq = seq;
        let i = m["content"]["i"].as_u64().unwrap();
        match m["content"]["k"].as_str().unwrap() {
            "a" => a.push(i),
            "b" => b.push(i),
            _ => none.push(i),
        }
    }
    assert_eq!(
        none,
        (0..rounds).collect::<Vec<_>>(),
        "an unkeyed message was dropped or reordered"
    );
    for (name, v) in [("a", &a), ("b", &b)] {
        assert!(v.windows(2).all(|w| w[0] < w[1]), "key {name}: {v:?}");
        assert!(
            (v.len() as u64) < rounds,
            "key {name}: all {rounds} arrived, none was replaced"
        );
    }
    assert!(sync_json(&mut slow).is_empty());
}
