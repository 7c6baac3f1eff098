//! Pushes, broadcasts, topics, the mailbox and latest-value keys.

use serde_json::json;

use super::*;

#[test]
fn a_push_reaches_every_connection_of_its_users_once() {
    let mut h = hub(&["alice", "bob"]);
    let mut out = Rec::default();
    let a1 = connect(&mut h, &mut out, 1, "alice", None);
    let a2 = connect(&mut h, &mut out, 2, "alice", None);
    let b = connect(&mut h, &mut out, 3, "bob", None);
    assert_eq!(out.opened, [a1, a2, b]);
    let reply = push(
        &mut h,
        &mut out,
        json!({"users": ["alice", "alice"], "content": {"t": 21}, "title": "T", "type": 2}),
    );
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["delivered"], 2, "alice once per connection: {reply}");
    assert_eq!(out.frames.len(), 1, "encoded once");
    let env = &out.texts(a1)[0];
    assert_eq!(env["content"], json!({"t": 21}));
    assert_eq!(
        (env["seq"].as_u64(), env["title"].as_str()),
        (Some(1), Some("T"))
    );
    assert_eq!(env["messageId"], "test-1");
    assert_eq!(env["ts"], T0);
    assert_eq!(out.texts(a2).len(), 1);
    assert!(out.texts(b).is_empty());
}

#[test]
fn a_broadcast_reaches_everyone_and_unsubscribe_switches_pushes_off() {
    let mut h = hub(&["a", "b"]);
    let mut out = Rec::default();
    let a = connect(&mut h, &mut out, 1, "a", None);
    let b = connect(&mut h, &mut out, 2, "b", None);
    h.handle(
        0,
        Input::Text {
            conn: b,
            text: "unsubscribe",
        },
        &mut out,
    );
    assert_eq!(
        push(&mut h, &mut out, json!({"content": 1}))["delivered"],
        1
    );
    h.handle(
        0,
        Input::Text {
            conn: b,
            text: "subscribe",
        },
        &mut out,
    );
    assert_eq!(
        push(&mut h, &mut out, json!({"content": 2}))["delivered"],
        2
    );
    assert_eq!(out.seqs(a), [1, 2]);
    assert_eq!(out.seqs(b), [2]);
}

#[test]
fn topics_deliver_to_followers_within_the_cap() {
    let mut h = hub(&["a", "b"]);
    let mut out = Rec::default();
    let a = connect(&mut h, &mut out, 1, "a", None);
    let b = connect(&mut h, &mut out, 2, "b", None);
    for t in ["x", "y", "z"] {
        let text = json!({"op": "subscribe", "topic": t}).to_string();
        h.handle(
            0,
            Input::Text {
                conn: a,
                text: &text,
            },
            &mut out,
        );
    }
    let acks = out.texts(a);
    assert_eq!(acks[0]["ok"], true);
    assert_eq!(
        acks[2]["ok"], false,
        "third topic over the cap of 2: {}",
        acks[2]
    );
    let text = json!({"op": "subscribe", "topic": ""}).to_string();
    h.handle(
        0,
        Input::Text {
            conn: b,
            text: &text,
        },
        &mut out,
    );
    assert_eq!(out.texts(b)[0]["ok"], false, "empty topic refused");
    let reply = request(
        &mut h,
        &mut out,
        0,
        json!({"op": "publish", "topic": "x", "content": 1}),
    );
    assert_eq!(reply["delivered"], 1);
    assert_eq!(out.texts(a).last().unwrap()["topic"], "x");
    let text = json!({"op": "unsubscribe", "topic": "x"}).to_string();
    h.handle(
        0,
        Input::Text {
            conn: a,
            text: &text,
        },
        &mut out,
    );
    let reply = request(
        &mut h,
        &mut out,
        0,
        json!({"op": "publish", "topic": "x", "content": 2}),
    );
    assert_eq!(reply["delivered"], 0);
    assert_eq!(h.topics.len(), 1, "x went with its last follower; y stays");
    h.handle(0, Input::Left { conn: a }, &mut out);
    assert!(h.topics.is_empty(), "leaving drops every subscription");
    let reply = request(&mut h, &mut out, 0, json!({"op": "publish", "content": 2}));
    assert_eq!(reply["ok"], false, "publish without a topic");
}

#[test]
fn held_messages_go_first_on_connect_and_since_resumes() {
    let mut h = hub_with(
        Config {
            mailbox: 3,
            ..config()
        },
        &["a"],
    );
    let mut out = Rec::default();
    for n in 1..=4 {
        let reply = push(&mut h, &mut out, json!({"users": ["a"], "content": n}));
        assert_eq!(
            (reply["delivered"].as_u64(), reply["queued"].as_u64()),
            (Some(0), Some(1))
        );
    }
    let a = connect(&mut h, &mut out, 1, "a", None);
    assert_eq!(out.seqs(a), [2, 3, 4], "per-user bound evicted the oldest");
    assert_eq!(h.mailbox.held(), 0, "held became delivered");
    assert_eq!(h.mailbox.evicted, 1);
    h.handle(0, Input::Left { conn: a }, &mut out);
    let again = connect(&mut h, &mut out, 2, "a", Some(3));
    assert_eq!(out.seqs(again), [4], "since=3 resumes after 3");
    let reply = request(&mut h, &mut out, 0, json!({"op": "messages", "user": "a"}));
    let statuses: Vec<&str> = reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["delivered"; 3]);
}

#[test]
fn held_messages_expire_on_virtual_time() {
    let mut h = hub_with(
        Config {
            mailbox: 10,
            mailbox_ttl: 5,
            ..config()
        },
        &["a"],
    );
    let mut out = Rec::default();
    push(&mut h, &mut out, json!({"users": ["a"], "content": 1}));
    assert_eq!(h.poll_timeout(0), Some(5000));
    h.handle(4000, Input::Tick, &mut out);
    assert_eq!(h.mailbox.held(), 1);
    h.handle(6000, Input::Tick, &mut out);
    assert_eq!((h.mailbox.held(), h.mailbox.expired), (0, 1));
    let a = connect(&mut h, &mut out, 1, "a", None);
    assert!(out.seqs(a).is_empty(), "an expired message is never sent");
}

#[test]
fn a_keyed_push_replaces_the_held_one_with_that_key() {
    let mut h = hub_with(
        Config {
            mailbox: 10,
            ..config()
        },
        &["a"],
    );
    let mut out = Rec::default();
    push(
        &mut h,
        &mut out,
        json!({"users": ["a"], "content": 1, "key": "temp"}),
    );
    push(
        &mut h,
        &mut out,
        json!({"users": ["a"], "content": 2, "key": "temp"}),
    );
    assert_eq!(h.mailbox.held(), 1);
    assert_ne!(
        out.frames[1].1, 0,
        "the frame carries its key to the outbox"
    );
    let a = connect(&mut h, &mut out, 1, "a", None);
    assert_eq!(out.texts(a)[0]["content"], 2);
}

#[test]
fn a_since_above_every_seq_handed_out_is_from_an_earlier_run() {
    // A server without a data log starts again at seq 1: a client that
    // comes back with the old run's seq must still get what is held now.
    let mut h = hub_with(
        Config {
            mailbox: 8,
            ..config()
        },
        &["a"],
    );
    let mut out = Rec::default();
    for n in 1..=2 {
        push(&mut h, &mut out, json!({"users": ["a"], "content": n}));
    }
    let a = connect(&mut h, &mut out, 1, "a", Some(500));
    assert_eq!(out.seqs(a), [1, 2]);
    h.handle(0, Input::Left { conn: a }, &mut out);
    // A since this run did hand out still means "I have these".
    push(&mut h, &mut out, json!({"users": ["a"], "content": 3}));
    let b = connect(&mut h, &mut out, 2, "a", Some(2));
    assert_eq!(out.seqs(b), [3]);
}
