//! Topics: JSON subscribe/unsubscribe commands on the WebSocket, their
//! answers and errors, the per-connection cap, the `publish` control op, and
//! `clients.topics`.
mod common;
#[path = "common/delivery.rs"]
mod delivery;

use common::*;
use delivery::*;
use serde_json::{Value, json};
use tungstenite::Message;

/// Assert `r` is the error answer to a subscribe with `topic`.
fn assert_subscribe_error(r: &Value, topic: Value, what: &str) {
    assert_eq!(r["op"], json!("subscribe"), "{what}: {r}");
    assert_eq!(r["ok"], json!(false), "{what}: {r}");
    assert_eq!(r["topic"], topic, "{what}: topic not echoed as sent: {r}");
    let e = r["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error string: {r}"));
    assert!(!e.is_empty(), "{what}: empty error");
}

#[test]
fn subscribe_is_acknowledged_and_publish_reaches_only_subscribers() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    s.grant("tc", "carol");
    let mut a = s.ws_connect("ta");
    let mut b = s.ws_connect("tb");
    let mut c = s.ws_connect("tc");
    subscribe(&mut a, "dev/42");
    subscribe(&mut b, "dev/43");

    let r = ok(
        &s,
        json!({"op":"publish","topic":"dev/42","content":{"t":21.5}}),
    );
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert!(r["messageId"].is_string(), "{r}");
    assert!(r["seq"].is_u64(), "{r}");

    let m = recv_json(&mut a);
    assert_eq!(m["topic"], json!("dev/42"), "{m}");
    assert_eq!(m["content"], json!({"t":21.5}), "{m}");
    assert_eq!(m["messageId"], r["messageId"], "{m}");
    assert_eq!(m["seq"], r["seq"], "{m}");
    assert!(m.get("title").is_none() && m.get("type").is_none(), "{m}");
    assert!(
        sync_json(&mut b).is_empty(),
        "subscriber of another topic got it"
    );
    assert!(sync_json(&mut c).is_empty(), "non-subscriber got it");
}

#[test]
fn publish_envelope_with_title_and_type() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    subscribe(&mut a, "door");
    let r = ok(
        &s,
        json!({"op":"publish","topic":"door","content":"open","title":"Door","type":4}),
    );
    let m = recv_json(&mut a);
    assert_eq!(m["topic"], json!("door"), "{m}");
    assert_eq!(m["title"], json!("Door"), "{m}");
    assert_eq!(m["type"], json!(4), "{m}");
    assert_eq!(m["content"], json!("open"), "{m}");
    assert_eq!(m["messageId"], r["messageId"]);
}

#[test]
fn publish_counts_connections_not_users() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let mut a1 = s.ws_connect("ta");
    let mut a2 = s.ws_connect("ta");
    let mut a3 = s.ws_connect("ta");
    let mut b = s.ws_connect("tb");
    subscribe(&mut a1, "news");
    subscribe(&mut a2, "news");
    subscribe(&mut b, "news");
    // a3 is alice's too but did not subscribe: topic subscriptions are per connection
    let r = ok(&s, json!({"op":"publish","topic":"news","content":1}));
    assert_eq!(r["delivered"], json!(3), "{r}");
    for ws in [&mut a1, &mut a2, &mut b] {
        let m = recv_json(ws);
        assert_eq!(m["content"], json!(1));
        assert_eq!(m["topic"], json!("news"));
    }
    assert!(
        sync_json(&mut a3).is_empty(),
        "unsubscribed connection of the same user got the publish"
    );
}

#[test]
fn publish_to_topic_without_subscribers_delivers_zero() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let r = ok(&s, json!({"op":"publish","topic":"empty","content":1}));
    assert_eq!(r["delivered"], json!(0), "{r}");
    assert!(sync_json(&mut a).is_empty());
}

#[test]
fn publish_and_push_share_the_seq_counter() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    subscribe(&mut a, "x");
    let mut last = 0;
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..6 {
        let r = if i % 2 == 0 {
            ok(&s, json!({"op":"publish","topic":"x","content":i}))
        } else {
            ok(&s, json!({"op":"push","users":["alice"],"content":i}))
        };
        let seq = r["seq"].as_u64().unwrap_or_else(|| panic!("{r}"));
        assert!(seq > last, "seq {seq} not above {last}: {r}");
        last = seq;
        assert!(ids.insert(r["messageId"].as_str().unwrap().to_string()));
    }
    for i in 0..6 {
        let m = recv_json(&mut a);
        assert_eq!(m["content"], json!(i), "order of pushes and publishes");
        assert_eq!(m.get("topic").is_some(), i % 2 == 0, "{m}");
    }
}

#[test]
fn unsubscribe_topic_stops_delivery_and_is_ok_when_not_subscribed() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    unsubscribe(&mut a, "never-subscribed");
    subscribe(&mut a, "t1");
    subscribe(&mut a, "t2");
    unsubscribe(&mut a, "t1");
    let r = ok(&s, json!({"op":"publish","topic":"t1","content":"one"}));
    assert_eq!(r["delivered"], json!(0), "{r}");
    let r = ok(&s, json!({"op":"publish","topic":"t2","content":"two"}));
    assert_eq!(r["delivered"], json!(1), "{r}");
    let m = recv_json(&mut a);
    assert_eq!(m["content"], json!("two"), "{m}");
    assert!(sync_json(&mut a).is_empty());
    // unsubscribing twice is fine too
    unsubscribe(&mut a, "t1");
}

#[test]
fn duplicate_subscribe_delivers_once() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    subscribe(&mut a, "dup");
    subscribe(&mut a, "dup");
    let r = ok(&s, json!({"op":"publish","topic":"dup","content":1}));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut a)["content"], json!(1));
    assert!(
        sync_json(&mut a).is_empty(),
        "a connection subscribed twice got the publish twice"
    );
    let cl = client_entry(&s, &a);
    assert_eq!(cl["topics"], json!(["dup"]), "{cl}");
    // one unsubscribe is enough
    unsubscribe(&mut a, "dup");
    let r = ok(&s, json!({"op":"publish","topic":"dup","content":2}));
    assert_eq!(r["delivered"], json!(0), "{r}");
}

#[test]
fn bad_subscribe_commands_are_answered_and_connection_stays_open() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");

    send_json(&mut a, &json!({"op":"subscribe"}));
    assert_subscribe_error(&recv_json(&mut a), Value::Null, "missing topic");

    send_json(&mut a, &json!({"op":"subscribe","topic":null}));
    assert_subscribe_error(&recv_json(&mut a), Value::Null, "null topic");

    send_json(&mut a, &json!({"op":"subscribe","topic":42}));
    assert_subscribe_error(&recv_json(&mut a), json!(42), "numeric topic");

    send_json(&mut a, &json!({"op":"subscribe","topic":["a"]}));
    assert_subscribe_error(&recv_json(&mut a), json!(["a"]), "array topic");

    send_json(&mut a, &json!({"op":"subscribe","topic":""}));
    assert_subscribe_error(&recv_json(&mut a), json!(""), "empty topic");

    let long = "x".repeat(129);
    send_json(&mut a, &json!({"op":"subscribe","topic":long}));
    assert_subscribe_error(&recv_json(&mut a), json!(long), "129-byte topic");

    // 128 bytes is still fine (multi-byte characters count as bytes)
    let max = "y".repeat(128);
    subscribe(&mut a, &max);
    let over = "é".repeat(65); // 130 bytes, 65 chars
    send_json(&mut a, &json!({"op":"subscribe","topic":over}));
    assert_subscribe_error(&recv_json(&mut a), json!(over), "130-byte topic");

    // none of the bad ones were subscribed
    let cl = client_entry(&s, &a);
    assert_eq!(cl["topics"], json!([max]), "{cl}");

    // the connection is still open and usable
    let r = ok(
        &s,
        json!({"op":"publish","topic":max,"content":"still here"}),
    );
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut a)["content"], json!("still here"));
    let r = s.push(&["alice"], json!("push too"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut a)["content"], json!("push too"));
}

#[test]
fn topic_cap_per_connection() {
    let s = Server::start(&["--max-topics", "3"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let mut other = s.ws_connect("ta");
    for t in ["t1", "t2", "t3"] {
        subscribe(&mut a, t);
    }
    send_json(&mut a, &json!({"op":"subscribe","topic":"t4"}));
    assert_subscribe_error(
        &recv_json(&mut a),
        json!("t4"),
        "4th topic over --max-topics 3",
    );

    // still open and subscribed to the first three, not to t4
    let r = ok(&s, json!({"op":"publish","topic":"t4","content":4}));
    assert_eq!(r["delivered"], json!(0), "{r}");
    let r = ok(&s, json!({"op":"publish","topic":"t1","content":1}));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut a)["content"], json!(1));
    assert_eq!(client_entry(&s, &a)["topics"], json!(["t1", "t2", "t3"]));

    // the cap is per connection: another connection of the same user has its own
    for t in ["t1", "t2", "t4"] {
        subscribe(&mut other, t);
    }

    // unsubscribing frees a slot
    unsubscribe(&mut a, "t2");
    subscribe(&mut a, "t4");
    let r = ok(&s, json!({"op":"publish","topic":"t4","content":"four"}));
    assert_eq!(r["delivered"], json!(2), "{r}");
    assert_eq!(recv_json(&mut a)["content"], json!("four"));
    assert_eq!(recv_json(&mut other)["content"], json!("four"));
}

#[test]
fn default_topic_cap_is_64() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    for i in 0..64 {
        send_json(&mut a, &json!({"op":"subscribe","topic":format!("t{i}")}));
    }
    for i in 0..64 {
        let r = recv_json(&mut a);
        assert_eq!(
            r,
            json!({"op":"subscribe","topic":format!("t{i}"),"ok":true}),
            "subscription {i} of 64"
        );
    }
    send_json(&mut a, &json!({"op":"subscribe","topic":"t64"}));
    assert_subscribe_error(&recv_json(&mut a), json!("t64"), "65th topic");
    let topics = client_entry(&s, &a)["topics"].as_array().unwrap().len();
    assert_eq!(topics, 64);
}

#[test]
fn text_unsubscribe_switches_topic_publishes_off_too() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    subscribe(&mut a, "temp");
    a.send(Message::text("unsubscribe")).unwrap();
    assert!(
        sync_json(&mut a).is_empty(),
        "text unsubscribe was answered"
    );
    let r = ok(&s, json!({"op":"publish","topic":"temp","content":"off"}));
    assert_eq!(r["delivered"], json!(0), "{r}");
    assert!(
        sync_json(&mut a).is_empty(),
        "publish reached a connection with pushes off"
    );
    // the topic subscription itself is kept
    assert_eq!(client_entry(&s, &a)["topics"], json!(["temp"]));

    a.send(Message::text("subscribe")).unwrap();
    assert!(sync_json(&mut a).is_empty());
    let r = ok(&s, json!({"op":"publish","topic":"temp","content":"on"}));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut a)["content"], json!("on"));
}

#[test]
fn clients_lists_topics_in_subscription_order() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let b = s.ws_connect("ta");
    assert_eq!(client_entry(&s, &a)["topics"], json!([]));
    for t in ["zeta", "alpha", "mid/1"] {
        subscribe(&mut a, t);
    }
    assert_eq!(
        client_entry(&s, &a)["topics"],
        json!(["zeta", "alpha", "mid/1"])
    );
    unsubscribe(&mut a, "alpha");
    subscribe(&mut a, "alpha");
    assert_eq!(
        client_entry(&s, &a)["topics"],
        json!(["zeta", "mid/1", "alpha"])
    );
    assert_eq!(client_entry(&s, &b)["topics"], json!([]));
}

#[test]
fn subscriptions_end_with_the_connection() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    subscribe(&mut a, "gone");
    close_ws(a);
    s.wait_connections(0);
    let r = ok(&s, json!({"op":"publish","topic":"gone","content":1}));
    assert_eq!(r["delivered"], json!(0), "{r}");
    // a new connection of the same user starts with no topics
    let mut a2 = s.ws_connect("ta");
    assert_eq!(client_entry(&s, &a2)["topics"], json!([]));
    let r = ok(&s, json!({"op":"publish","topic":"gone","content":2}));
    assert_eq!(r["delivered"], json!(0), "{r}");
    assert!(sync_json(&mut a2).is_empty());
}

#[test]
fn broadcast_push_still_reaches_topic_subscribers() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    subscribe(&mut a, "t");
    let r = s.push(&[], json!("all"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    let m = recv_json(&mut a);
    assert_eq!(m["content"], json!("all"));
    assert!(m.get("topic").is_none(), "push envelope has a topic: {m}");
}

#[test]
fn publish_without_topic_is_refused() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    subscribe(&mut a, "t");
    let mut c = s.control_conn();
    let r = c.request(&json!({"op":"publish","content":1}));
    assert_eq!(r["ok"], json!(false), "publish without topic: {r}");
    assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    // the control connection stays usable
    let r = c.request(&json!({"op":"publish","topic":"t","content":2,"id":"p"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["id"], json!("p"));
    assert_eq!(recv_json(&mut a)["content"], json!(2));
    assert!(
        sync_json(&mut a).is_empty(),
        "refused publish was delivered"
    );
}

#[test]
fn topic_commands_and_pushes_keep_their_order() {
    // The answer to a subscribe comes back in order with pushes: a push
    // issued after the answer was read is never seen before it.
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    for i in 0..20 {
        let t = format!("o{i}");
        send_json(&mut a, &json!({"op":"subscribe","topic":t}));
        let ack = recv_json(&mut a);
        assert_eq!(ack, json!({"op":"subscribe","topic":t,"ok":true}));
        let r = ok(&s, json!({"op":"publish","topic":t,"content":i}));
        assert_eq!(r["delivered"], json!(1), "{r}");
        let m = recv_json(&mut a);
        assert_eq!(m["content"], json!(i));
        assert_eq!(m["topic"], json!(t));
    }
}
