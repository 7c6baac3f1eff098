//! A cluster node's shared mailbox on virtual time: catching up merges
//! what Redis held with what arrived live, each seq once and in order
//! (also when the channel brings a seq after the catch-up gave it);
//! held messages reached live are claimed; seqs lost beyond repair close
//! connections with 4003; the link's loss ends catch-ups the same way.

use serde_json::{Value, json};

use super::*;

fn node(users: &[&str]) -> Hub {
    let config = Config {
        node: Some("n1".into()),
        mailbox: 16,
        ..config()
    };
    let mut h = hub_with(config, users);
    h.handle(
        0,
        Input::RedisLink {
            up: true,
            counter: 0,
        },
        &mut Rec::default(),
    );
    h
}

fn payload(seq: u64, held: &[&str], job: &Value) -> String {
    let held = if held.is_empty() {
        String::new()
    } else {
        format!(",\"held\":{}", json!(held))
    };
    format!("{{\"seq\":{seq},\"ts\":1700000000000,\"node\":\"n2\",\"ref\":0{held}}}\n{job}")
}

fn remote(h: &mut Hub, out: &mut Rec, seq: u64, held: &[&str], job: Value) {
    let payload = payload(seq, held, &job);
    h.handle(
        0,
        Input::Remote {
            payload: payload.as_bytes(),
        },
        out,
    );
}

fn answer(h: &mut Hub, out: &mut Rec, reference: u64, payloads: &[String]) {
    let items: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
    h.handle(
        0,
        Input::Called {
            reference,
            result: Ok(&items),
        },
        out,
    );
}

fn send(h: &mut Hub, out: &mut Rec, body: Value) {
    let line = body.to_string();
    let origin = Origin::Control(ConnId {
        key: 0,
        generation: 7,
    });
    let input = Input::Request {
        origin,
        line: line.as_bytes(),
    };
    h.handle(0, input, out);
}

fn to(user: &str, n: u64) -> Value {
    json!({"users": [user], "content": {"n": n}})
}

#[test]
fn a_catch_up_merges_held_and_live_in_seq_order_once() {
    let mut h = node(&["a"]);
    let mut out = Rec::default();
    let a = connect(&mut h, &mut out, 1, "a", None);
    assert_eq!(out.opened, [a]);
    let (reference, call) = out.calls[0].clone();
    assert!(
        call.starts_with("Online { user: \"a\", since: None"),
        "{call}"
    );
    // Live messages while Redis's answer is on its way: parked.
    remote(&mut h, &mut out, 11, &[], to("a", 11));
    remote(&mut h, &mut out, 12, &[], json!({"content": {"n": 12}}));
    remote(&mut h, &mut out, 13, &["a"], to("a", 13));
    assert!(out.seqs(a).is_empty(), "nothing before the catch-up");
    // Redis held 10 and 13 (13 also came live: once).
    answer(
        &mut h,
        &mut out,
        reference,
        &[
            payload(10, &["a"], &to("a", 10)),
            payload(13, &["a"], &to("a", 13)),
        ],
    );
    assert_eq!(out.seqs(a), [10, 11, 12, 13]);
    assert_eq!(out.texts(a)[0]["messageId"], json!("R-10"));
    // Caught up: the next one goes straight out.
    remote(&mut h, &mut out, 14, &[], to("a", 14));
    assert_eq!(out.seqs(a), [10, 11, 12, 13, 14]);
    assert!(
        !out.calls.iter().any(|(_, c)| c.starts_with("Claim")),
        "13 was not delivered live: {:?}",
        out.calls
    );
}

#[test]
fn what_the_catch_up_gave_before_the_channel_brought_it_is_not_sent_again() {
    let mut h = node(&["a"]);
    let mut out = Rec::default();
    let a = connect(&mut h, &mut out, 1, "a", None);
    let reference = out.calls[0].0;
    // Redis answers on its own connection, ahead of the channel: it held
    // 21 and 23 for a; 22, a broadcast, was never held.
    answer(
        &mut h,
        &mut out,
        reference,
        &[
            payload(21, &["a"], &to("a", 21)),
            payload(23, &["a"], &to("a", 23)),
        ],
    );
    assert_eq!(out.seqs(a), [21, 23]);
    remote(&mut h, &mut out, 21, &["a"], to("a", 21));
    remote(&mut h, &mut out, 22, &[], json!({"content": {"n": 22}}));
    remote(&mut h, &mut out, 23, &["a"], to("a", 23));
    remote(&mut h, &mut out, 24, &[], to("a", 24));
    assert_eq!(out.seqs(a), [21, 23, 22, 24], "each seq once");
    assert!(h.cluster.as_ref().unwrap().replayed.is_empty(), "forgotten");
}

#[test]
fn a_held_message_that_reaches_a_connection_live_is_claimed() {
    let mut h = node(&["a"]);
    let mut out = Rec::default();
    let a = connect(&mut h, &mut out, 1, "a", None);
    let reference = out.calls[0].0;
    answer(&mut h, &mut out, reference, &[]);
    // Held for "a" and "b" (the lease of this node had lapsed, say).
    remote(
        &mut h,
        &mut out,
        1,
        &["a", "b"],
        json!({"users": ["a", "b"], "content": 1}),
    );
    assert_eq!(out.seqs(a), [1]);
    let claims: Vec<&String> = out
        .calls
        .iter()
        .filter(|(_, c)| c.starts_with("Claim"))
        .map(|(_, c)| c)
        .collect();
    assert_eq!(claims, ["Claim { user: \"a\", seq: 1 }"]);
}

#[test]
fn the_last_connection_of_a_user_unregisters_it() {
    let mut h = node(&["a"]);
    let mut out = Rec::default();
    let first = connect(&mut h, &mut out, 1, "a", None);
    let second = connect(&mut h, &mut out, 2, "a", Some(5));
    assert!(out.calls[1].1.contains("since: Some(5)"), "{:?}", out.calls);
    h.handle(0, Input::Left { conn: first }, &mut out);
    assert!(!out.calls.iter().any(|(_, c)| c.starts_with("Offline")));
    h.handle(0, Input::Left { conn: second }, &mut out);
    assert_eq!(
        out.calls.last().unwrap(),
        &(0, "Offline { user: \"a\" }".into())
    );
    // A late answer for a connection that left goes nowhere.
    let late = out.calls[1].0;
    answer(&mut h, &mut out, late, &[payload(3, &[], &to("a", 3))]);
    assert!(out.seqs(second).is_empty());
}

#[test]
fn losing_the_link_ends_catch_ups_with_4003() {
    let mut h = node(&["a"]);
    let mut out = Rec::default();
    let a = connect(&mut h, &mut out, 1, "a", None);
    h.handle(
        0,
        Input::RedisLink {
            up: false,
            counter: 0,
        },
        &mut out,
    );
    assert_eq!(out.closed, [(a, 4003)]);
}

#[test]
fn a_catch_up_redis_does_not_answer_ends_with_4003() {
    let mut h = node(&["a"]);
    let mut out = Rec::default();
    let a = connect(&mut h, &mut out, 1, "a", None);
    h.handle(4_000, Input::Tick, &mut out);
    assert!(out.closed.is_empty());
    h.handle(6_000, Input::Tick, &mut out);
    assert_eq!(out.closed, [(a, 4003)]);
}

#[test]
fn seqs_lost_beyond_the_window_close_every_connection_with_4003() {
    let mut h = node(&["a", "b"]);
    let mut out = Rec::default();
    let a = connect(&mut h, &mut out, 1, "a", None);
    let b = connect(&mut h, &mut out, 2, "b", None);
    for (reference, _) in out.calls.clone() {
        answer(&mut h, &mut out, reference, &[]);
    }
    remote(&mut h, &mut out, 1, &[], to("a", 1));
    remote(&mut h, &mut out, 5, &[], to("a", 5));
    assert_eq!(out.fetches, [(2, 4)], "a repair first");
    h.handle(0, Input::Recovered { payloads: &[] }, &mut out);
    let mut closed = out.closed.clone();
    closed.sort_by_key(|(c, _)| c.key);
    assert_eq!(closed, [(a, 4003), (b, 4003)]);
}

#[test]
fn messages_and_delete_are_answered_by_redis_in_order() {
    let mut h = node(&[]);
    let mut out = Rec::default();
    send(
        &mut h,
        &mut out,
        json!({"op": "messages", "user": "a", "id": 1}),
    );
    send(&mut h, &mut out, json!({"op": "stats", "id": 2}));
    send(
        &mut h,
        &mut out,
        json!({"op": "delete", "messageId": "R-3", "id": 3}),
    );
    assert!(out.replies.is_empty(), "all wait for the first");
    let calls = out.calls.clone();
    assert!(
        calls[0].1.starts_with("Messages { user: Some(\"a\")"),
        "{calls:?}"
    );
    assert!(calls[1].1.starts_with("Delete"), "{calls:?}");
    let count = b"2".as_slice();
    h.handle(
        0,
        Input::Called {
            reference: calls[1].0,
            result: Ok(&[count]),
        },
        &mut out,
    );
    assert!(out.replies.is_empty());
    let page = br#"{"messages":[],"next":null}"#.as_slice();
    h.handle(
        0,
        Input::Called {
            reference: calls[0].0,
            result: Ok(&[page]),
        },
        &mut out,
    );
    let ids: Vec<&Value> = out.replies.iter().map(|(r, _)| &r["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2), &json!(3)]);
    assert_eq!(out.replies[0].0["messages"], json!([]));
    assert_eq!(out.replies[2].0["deleted"], json!(2));
    let bad = request(
        &mut h,
        &mut out,
        0,
        json!({"op": "messages", "status": "lost"}),
    );
    assert_eq!(bad["ok"], json!(false), "{bad}");
}
