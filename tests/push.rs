//! Delivery of pushes: targeting, broadcast, envelope, subscribe/unsubscribe,
//! sequence numbers, delivered counts and ordering.
mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn push_to_user_reaches_all_their_connections_and_no_one_else() {
    let s = Server::start(&[]);
    s.grant("ta1", "alice");
    s.grant("ta2", "alice");
    s.grant("tb", "bob");
    let mut a1 = s.ws_connect("ta1");
    let mut a2 = s.ws_connect("ta2");
    let mut b = s.ws_connect("tb");

    let r = s.push(&["alice"], json!({"hello": "alice"}));
    assert_eq!(r["ok"], json!(true));
    assert_eq!(r["delivered"], json!(2), "{r}");
    assert_eq!(r["queued"], json!(0), "{r}");
    assert!(r["messageId"].is_string(), "{r}");
    assert!(r["seq"].is_u64(), "{r}");

    for ws in [&mut a1, &mut a2] {
        let m = recv_json(ws);
        assert_eq!(m["content"], json!({"hello": "alice"}));
        assert_eq!(m["messageId"], r["messageId"]);
        assert_eq!(m["seq"], r["seq"]);
    }

    // bob must not have seen alice's push: his first message is his own.
    let rb = s.push(&["bob"], json!("for bob"));
    assert_eq!(rb["delivered"], json!(1), "{rb}");
    let m = recv_json(&mut b);
    assert_eq!(
        m["content"],
        json!("for bob"),
        "bob received someone else's push first: {m}"
    );
    assert_eq!(m["messageId"], rb["messageId"]);
    // and alice's connections did not get bob's push
    for ws in [&mut a1, &mut a2] {
        let other = sync(ws);
        assert!(other.is_empty(), "alice got bob's push: {other:?}");
    }
}

#[test]
fn push_to_several_users() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    s.grant("tc", "carol");
    let mut a = s.ws_connect("ta");
    let mut b = s.ws_connect("tb");
    let mut c = s.ws_connect("tc");
    let r = s.push(&["alice", "bob", "nobody"], json!([1, 2, 3]));
    assert_eq!(r["delivered"], json!(2), "{r}");
    assert_eq!(recv_json(&mut a)["content"], json!([1, 2, 3]));
    assert_eq!(recv_json(&mut b)["content"], json!([1, 2, 3]));
    assert!(
        sync(&mut c).is_empty(),
        "carol got a push meant for alice and bob"
    );
}

#[test]
fn broadcast_with_no_users_and_with_empty_users() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let mut a = s.ws_connect("ta");
    let mut b1 = s.ws_connect("tb");
    let mut b2 = s.ws_connect("tb");

    // no "users" field at all
    let r = s.control(json!({"op":"push","content":{"n":1}}));
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["delivered"], json!(3), "{r}");
    // empty list
    let r2 = s.control(json!({"op":"push","users":[],"content":{"n":2}}));
    assert_eq!(r2["ok"], json!(true), "{r2}");
    assert_eq!(r2["delivered"], json!(3), "{r2}");

    for ws in [&mut a, &mut b1, &mut b2] {
        assert_eq!(recv_json(ws)["content"], json!({"n":1}));
        assert_eq!(recv_json(ws)["content"], json!({"n":2}));
    }
}

#[test]
fn envelope_without_title_and_type() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let r = s.push(
        &["alice"],
        json!({"k": "v", "nested": {"a": [1, null, true]}}),
    );
    let m = recv_json(&mut a);
    let k = keys(&m);
    for must in ["messageId", "seq", "content"] {
        assert!(k.contains(must), "envelope lacks {must}: {m}");
    }
    assert!(
        !k.contains("title"),
        "title present although not given: {m}"
    );
    assert!(!k.contains("type"), "type present although not given: {m}");
    let allowed: BTreeSet<String> = ["messageId", "seq", "content", "ts"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(k.is_subset(&allowed), "unexpected envelope fields: {m}");
    assert_eq!(m["messageId"], r["messageId"]);
    assert_eq!(m["seq"], r["seq"]);
    assert_eq!(
        m["content"],
        json!({"k": "v", "nested": {"a": [1, null, true]}})
    );
}

#[test]
fn envelope_with_title_and_type() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let r = s
        .control(json!({"op":"push","users":["alice"],"content":"hi","title":"Greeting","type":3}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let m = recv_json(&mut a);
    assert_eq!(m["title"], json!("Greeting"), "{m}");
    assert_eq!(m["type"], json!(3), "{m}");
    assert_eq!(m["content"], json!("hi"));
    assert_eq!(m["messageId"], r["messageId"]);
    assert_eq!(m["seq"], r["seq"]);

    // type 0 is "given" too and must be present
    let r = s.control(json!({"op":"push","users":["alice"],"content":1,"type":0}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let m = recv_json(&mut a);
    assert_eq!(m["type"], json!(0), "{m}");
    assert!(!keys(&m).contains("title"), "{m}");

    // title only
    let r = s.control(json!({"op":"push","users":["alice"],"content":2,"title":"only title"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let m = recv_json(&mut a);
    assert_eq!(m["title"], json!("only title"), "{m}");
    assert!(!keys(&m).contains("type"), "{m}");
}

#[test]
fn content_of_any_json_kind() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let contents = [
        json!("a string"),
        json!(42),
        json!(-1.5),
        json!(true),
        json!([1, "two", {"three": 3}]),
        json!({}),
        json!("ünïcødé ✓"),
    ];
    for c in &contents {
        s.push(&["alice"], c.clone());
    }
    for c in &contents {
        assert_eq!(&recv_json(&mut a)["content"], c);
    }
}

#[test]
fn unsubscribe_and_subscribe() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let mut a2 = s.ws_connect("ta");

    a.send(Message::text("unsubscribe")).unwrap();
    assert!(sync(&mut a).is_empty(), "unsubscribe must not be answered");
    let cl = s.clients(Some("alice"));
    let subs: Vec<bool> = cl
        .iter()
        .map(|c| c["subscribed"].as_bool().unwrap())
        .collect();
    assert_eq!(subs.iter().filter(|b| !**b).count(), 1, "{cl:?}");

    let r = s.push(&["alice"], json!("while unsubscribed"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut a2)["content"], json!("while unsubscribed"));
    // broadcast skips it too
    let r = s.push(&[], json!("broadcast while unsubscribed"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(
        recv_json(&mut a2)["content"],
        json!("broadcast while unsubscribed")
    );

    a.send(Message::text("subscribe")).unwrap();
    let missed = sync(&mut a);
    assert!(
        missed.is_empty(),
        "unsubscribed connection received pushes: {missed:?}"
    );
    let r = s.push(&["alice"], json!("subscribed again"));
    assert_eq!(r["delivered"], json!(2), "{r}");
    assert_eq!(recv_json(&mut a)["content"], json!("subscribed again"));
    assert_eq!(recv_json(&mut a2)["content"], json!("subscribed again"));
}

#[test]
fn seq_strictly_increases() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let mut a = s.ws_connect("ta");
    let mut last = 0u64;
    let mut seen_ids = BTreeSet::new();
    let mut replies = vec![];
    for i in 0..20 {
        // interleave targets (including offline users) - seq is global
        let users: &[&str] = match i % 3 {
            0 => &["alice"],
            1 => &["bob"],
            _ => &["offline-user"],
        };
        let r = s.push(users, json!(i));
        let seq = r["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("seq not a number: {r}"));
        if i > 0 {
            assert!(seq > last, "seq did not increase: {seq} after {last}");
        }
        last = seq;
        assert!(
            seen_ids.insert(r["messageId"].as_str().unwrap().to_string()),
            "duplicate messageId {r}"
        );
        replies.push(r);
    }
    let mut prev = 0u64;
    for (i, r) in replies.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        let m = recv_json(&mut a);
        assert_eq!(m["content"], json!(i));
        assert_eq!(m["seq"], r["seq"]);
        let seq = m["seq"].as_u64().unwrap();
        assert!(seq > prev);
        prev = seq;
    }
}

#[test]
fn delivered_counts() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let r = s.push(&["alice"], json!(0));
    assert_eq!(r["delivered"], json!(0), "offline user: {r}");
    assert_eq!(r["queued"], json!(0), "{r}");
    let r = s.push(&[], json!(0));
    assert_eq!(
        r["delivered"],
        json!(0),
        "broadcast with nobody online: {r}"
    );

    let mut conns = vec![];
    for n in 1..=3u64 {
        conns.push(s.ws_connect("ta"));
        let r = s.push(&["alice"], json!(n));
        assert_eq!(r["delivered"], json!(n), "{r}");
    }
    // a closed connection is no longer counted
    let mut c = conns.pop().unwrap();
    c.close(None).unwrap();
    while c.read().is_ok() {}
    s.wait_connections(2);
    let r = s.push(&["alice"], json!("after close"));
    assert_eq!(r["delivered"], json!(2), "{r}");
}

#[test]
fn thousand_messages_arrive_in_order() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let mut c = s.control_conn();
    let mut seqs = vec![];
    for i in 0..1000 {
        let r = c.request(&json!({"op":"push","users":["alice"],"content":{"i":i}}));
        assert_eq!(r["ok"], json!(true), "{r}");
        assert_eq!(r["delivered"], json!(1), "push {i}: {r}");
        seqs.push(r["seq"].as_u64().unwrap());
    }
    let mut prev = 0;
    for (i, &seq) in seqs.iter().enumerate() {
        let m = recv_json(&mut a);
        assert_eq!(m["content"], json!({"i": i}), "message {i} out of order");
        assert_eq!(m["seq"].as_u64().unwrap(), seq);
        assert!(i == 0 || seq > prev);
        prev = seq;
    }
}

#[test]
fn pipelined_pushes_in_one_write_arrive_in_order() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let mut c = s.control_conn();
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.extend(
            serde_json::to_vec(&json!({"op":"push","users":["alice"],"content":i,"id":i})).unwrap(),
        );
        batch.push(b'\n');
    }
    c.send_raw(&batch).unwrap();
    for i in 0..200 {
        let r = c.read_reply();
        assert_eq!(r["id"], json!(i), "{r}");
        assert_eq!(r["delivered"], json!(1), "{r}");
    }
    for i in 0..200 {
        assert_eq!(recv_json(&mut a)["content"], json!(i));
    }
}
