//! Mailbox (--mailbox N): messages for offline users are held and delivered
//! first when the user connects; `?since=SEQ` replays retained messages;
//! bounds by count, TTL and total bytes; the mailbox stats.
mod common;
#[path = "common/delivery.rs"]
mod delivery;

use common::*;
use delivery::*;
use serde_json::{Value, json};

fn seq_of(r: &Value) -> u64 {
    r["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric seq in {r}"))
}

#[test]
fn held_message_is_delivered_on_connect_and_only_once() {
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("ta", "alice");
    let r = s.control(
        json!({"op":"push","users":["alice"],"content":{"door":"open"},"title":"Door","type":2}),
    );
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["delivered"], json!(0), "{r}");
    assert_eq!(r["queued"], json!(1), "{r}");
    let st = s.stats();
    assert_eq!(st["mailbox"], json!(1), "{st}");
    assert!(st["mailbox_bytes"].as_u64().unwrap_or(0) > 0, "{st}");

    let mut a = s.ws_connect("ta");
    let m = recv_json(&mut a);
    assert_eq!(m["messageId"], r["messageId"], "{m}");
    assert_eq!(m["seq"], r["seq"], "{m}");
    assert_eq!(m["content"], json!({"door":"open"}), "{m}");
    assert_eq!(m["title"], json!("Door"), "{m}");
    assert_eq!(m["type"], json!(2), "{m}");
    assert!(sync_json(&mut a).is_empty(), "more than the held message");
    wait_stats(&s, "mailbox == 0 after delivery", |st| {
        st["mailbox"] == json!(0)
    });

    // a second connection (while the first is open) and a later reconnect
    // do not get it again
    let mut a2 = s.ws_connect("ta");
    assert!(
        sync_json(&mut a2).is_empty(),
        "held message delivered twice"
    );
    close_ws(a);
    close_ws(a2);
    s.wait_connections(0);
    let mut a3 = s.ws_connect("ta");
    assert!(
        sync_json(&mut a3).is_empty(),
        "held message delivered again on reconnect"
    );
}

#[test]
fn held_messages_arrive_first_in_seq_order() {
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("ta", "alice");
    let mut held = vec![];
    for i in 0..5 {
        let r = s.push(&["alice"], json!({"held": i}));
        assert_eq!(r["queued"], json!(1), "{r}");
        held.push(seq_of(&r));
    }
    // the first frame (a topic subscribe) is pipelined behind the upgrade
    // request: its answer must still come after the held messages
    let sub = client_frame(
        true,
        OP_TEXT,
        json!({"op":"subscribe","topic":"t"}).to_string().as_bytes(),
    );
    let mut raw = RawWs::connect(s.addr, "/push/ta", &sub);
    let mut controls = vec![];
    for (i, seq) in held.iter().enumerate() {
        let (op, data) = raw.read_message(&mut controls);
        assert_eq!(op, OP_TEXT);
        let m: Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(
            m["content"],
            json!({"held": i}),
            "message {i} is not the held one in order: {m}"
        );
        assert_eq!(m["seq"], json!(seq), "{m}");
    }
    let (_, data) = raw.read_message(&mut controls);
    let ack: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(ack, json!({"op":"subscribe","topic":"t","ok":true}));

    // then live pushes as usual
    let r = s.push(&["alice"], json!("live"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(r["queued"], json!(0), "{r}");
    let (_, data) = raw.read_message(&mut controls);
    let m: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(m["content"], json!("live"));
}

#[test]
fn queued_counts_offline_users_only() {
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    s.grant("tc", "carol");
    let mut a = s.ws_connect("ta");
    let r = s.push(&["alice", "bob", "carol"], json!("x"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(r["queued"], json!(2), "{r}");
    assert_eq!(recv_json(&mut a)["content"], json!("x"));
    assert_eq!(s.stats()["mailbox"], json!(2));
    let mut b = s.ws_connect("tb");
    let m = recv_json(&mut b);
    assert_eq!(m["content"], json!("x"));
    assert_eq!(m["messageId"], r["messageId"]);
    let mut c = s.ws_connect("tc");
    assert_eq!(recv_json(&mut c)["messageId"], r["messageId"]);
    // alice was online: nothing held for her
    let mut a2 = s.ws_connect("ta");
    assert!(sync_json(&mut a2).is_empty());
}

#[test]
fn held_for_a_user_who_never_connected_and_not_for_others() {
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let r = s.push(&["alice"], json!("for alice"));
    assert_eq!(r["queued"], json!(1), "{r}");
    let mut b = s.ws_connect("tb");
    assert!(sync_json(&mut b).is_empty(), "bob got alice's held message");
    let mut a = s.ws_connect("ta");
    assert_eq!(recv_json(&mut a)["content"], json!("for alice"));
}

#[test]
fn broadcasts_and_publishes_are_never_held() {
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("ta", "alice");
    let r = s.control(json!({"op":"push","content":"bcast"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["queued"], json!(0), "{r}");
    let r = s.push(&[], json!("bcast2"));
    assert_eq!(r["queued"], json!(0), "{r}");
    let r = ok(&s, json!({"op":"publish","topic":"t","content":"pub"}));
    assert!(r.get("queued").is_none() || r["queued"] == json!(0), "{r}");
    let st = s.stats();
    assert_eq!(st["mailbox"], json!(0), "{st}");
    let mut a = s.ws_connect("ta");
    assert!(
        sync_json(&mut a).is_empty(),
        "broadcast or publish was held"
    );
}

#[test]
fn mailbox_off_by_default() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let r = s.push(&["alice"], json!("lost"));
    assert_eq!(r["queued"], json!(0), "{r}");
    assert_eq!(r["delivered"], json!(0), "{r}");
    let st = s.stats();
    assert_eq!(st["mailbox"], json!(0), "{st}");
    let mut a = s.ws_connect("ta");
    assert!(sync_json(&mut a).is_empty(), "held although --mailbox 0");
}

#[test]
fn explicit_mailbox_zero_holds_nothing() {
    let s = Server::start(&["--mailbox", "0"]);
    s.grant("ta", "alice");
    let r = s.push(&["alice"], json!("lost"));
    assert_eq!(r["queued"], json!(0), "{r}");
    let mut a = s.ws_connect("ta");
    assert!(sync_json(&mut a).is_empty(), "held although --mailbox 0");
}

#[test]
fn per_user_count_bound_drops_oldest() {
    let s = Server::start(&["--mailbox", "3"]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let mut seqs = vec![];
    for i in 0..5 {
        let r = s.push(&["alice"], json!(i));
        assert_eq!(r["queued"], json!(1), "push {i}: {r}");
        seqs.push(seq_of(&r));
    }
    // bob's mailbox is separate
    let rb = s.push(&["bob"], json!("b"));
    assert_eq!(rb["queued"], json!(1), "{rb}");
    let st = s.stats();
    assert_eq!(st["mailbox"], json!(4), "3 for alice + 1 for bob: {st}");
    assert_eq!(st["mailbox_evicted"], json!(2), "{st}");
    let mut a = s.ws_connect("ta");
    for (i, seq) in seqs.iter().enumerate().take(5).skip(2) {
        let m = recv_json(&mut a);
        assert_eq!(m["content"], json!(i), "oldest must be dropped first: {m}");
        assert_eq!(m["seq"], json!(seq));
    }
    assert!(sync_json(&mut a).is_empty());
    let mut b = s.ws_connect("tb");
    assert_eq!(recv_json(&mut b)["content"], json!("b"));
}

#[test]
fn since_replays_retained_messages_including_delivered_ones() {
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let mut a1 = s.ws_connect("ta");
    let mut seqs = vec![];
    for i in 0..4 {
        let r = s.push(&["alice"], json!(i));
        assert_eq!(r["delivered"], json!(1), "{r}");
        seqs.push(seq_of(&r));
        // interleave someone else's pushes: never replayed to alice
        s.push(&["bob"], json!("bob's"));
    }
    for i in 0..4 {
        assert_eq!(recv_json(&mut a1)["content"], json!(i));
    }

    // since the first one: 1, 2, 3 in order, nothing else
    let mut a2 = s.ws_connect_path(&format!("/push/ta?since={}", seqs[0]));
    for (i, seq) in seqs.iter().enumerate().take(4).skip(1) {
        let m = recv_json(&mut a2);
        assert_eq!(m["content"], json!(i), "{m}");
        assert_eq!(m["seq"], json!(seq));
    }
    assert!(sync_json(&mut a2).is_empty(), "replayed too much");

    // since=0: everything retained
    let mut a3 = s.ws_connect_path("/push/ta?since=0");
    for i in 0..4 {
        assert_eq!(recv_json(&mut a3)["content"], json!(i));
    }
    assert!(sync_json(&mut a3).is_empty());

    // since the last one: nothing
    let mut a4 = s.ws_connect_path(&format!("/push/ta?since={}", seqs[3]));
    assert!(sync_json(&mut a4).is_empty(), "nothing is newer than since");

    // a connection without since gets nothing (all were delivered)
    let mut a5 = s.ws_connect("ta");
    assert!(sync_json(&mut a5).is_empty());
    // the originals did not get anything extra either
    assert!(sync_json(&mut a1).is_empty());
}

#[test]
fn since_gets_held_messages_once_in_order() {
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let r0 = s.push(&["alice"], json!("live"));
    assert_eq!(recv_json(&mut a)["content"], json!("live"));
    close_ws(a);
    s.wait_connections(0);
    let r1 = s.push(&["alice"], json!("held-1"));
    let r2 = s.push(&["alice"], json!("held-2"));
    assert_eq!(r1["queued"], json!(1), "{r1}");
    assert_eq!(r2["queued"], json!(1), "{r2}");

    // since before "live": live (already delivered), held-1, held-2 - each once
    let since = seq_of(&r0) - 1;
    let mut b = s.ws_connect_path(&format!("/push/ta?since={since}"));
    let got: Vec<Value> = (0..3)
        .map(|_| recv_json(&mut b)["content"].clone())
        .collect();
    assert_eq!(got, vec![json!("live"), json!("held-1"), json!("held-2")]);
    assert!(sync_json(&mut b).is_empty(), "a message came twice");
    // held ones are now delivered: a plain reconnect gets nothing
    let mut c = s.ws_connect("ta");
    assert!(sync_json(&mut c).is_empty());
}

#[test]
fn since_excludes_seqs_at_or_below_it() {
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("ta", "alice");
    let mut seqs = vec![];
    for i in 0..3 {
        seqs.push(seq_of(&s.push(&["alice"], json!(i))));
    }
    // offline: all three held; since = second one → only the third
    let mut a = s.ws_connect_path(&format!("/push/ta?since={}", seqs[1]));
    let m = recv_json(&mut a);
    assert_eq!(m["content"], json!(2), "{m}");
    assert!(
        sync_json(&mut a).is_empty(),
        "got a message with seq <= since"
    );
}

#[test]
fn held_messages_expire_after_ttl() {
    let s = Server::start(&["--mailbox", "10", "--mailbox-ttl", "1"]);
    s.grant("ta", "alice");
    let r = s.push(&["alice"], json!("old"));
    assert_eq!(r["queued"], json!(1), "{r}");
    let st = wait_stats(&s, "mailbox_expired == 1 and mailbox == 0", |st| {
        st["mailbox_expired"] == json!(1) && st["mailbox"] == json!(0)
    });
    assert_eq!(st["mailbox_evicted"], json!(0), "{st}");
    // a fresh one is still held and delivered; the expired one is not sent
    let r2 = s.push(&["alice"], json!("new"));
    assert_eq!(r2["queued"], json!(1), "{r2}");
    let mut a = s.ws_connect("ta");
    let m = recv_json(&mut a);
    assert_eq!(m["content"], json!("new"), "expired message was sent: {m}");
    assert!(sync_json(&mut a).is_empty());
}

#[test]
fn expired_messages_are_not_replayed_by_since() {
    let s = Server::start(&["--mailbox", "10", "--mailbox-ttl", "1"]);
    s.grant("ta", "alice");
    s.push(&["alice"], json!("old"));
    wait_stats(&s, "mailbox_expired == 1", |st| {
        st["mailbox_expired"] == json!(1)
    });
    let mut a = s.ws_connect_path("/push/ta?since=0");
    assert!(
        sync_json(&mut a).is_empty(),
        "an expired message was replayed"
    );
}

#[test]
fn total_bytes_bound_drops_oldest() {
    let s = Server::start(&["--mailbox", "100", "--mailbox-bytes", "10000"]);
    s.grant("ta", "alice");
    let pad = "z".repeat(3000);
    let mut seqs = vec![];
    for i in 0..10 {
        let r = s.push(&["alice"], json!({"i": i, "pad": pad}));
        assert_eq!(r["queued"], json!(1), "push {i}: {r}");
        seqs.push(seq_of(&r));
        let st = s.stats();
        let bytes = st["mailbox_bytes"].as_u64().unwrap();
        assert!(bytes <= 10000, "retained bytes over --mailbox-bytes: {st}");
    }
    let st = s.stats();
    let held = st["mailbox"].as_u64().unwrap();
    assert!(
        (1..=3).contains(&held),
        "3000-byte messages under a 10000-byte cap: {st}"
    );
    assert_eq!(st["mailbox_evicted"].as_u64().unwrap(), 10 - held, "{st}");
    assert!(st["mailbox_bytes"].as_u64().unwrap() > 0, "{st}");

    let mut a = s.ws_connect("ta");
    let first = 10 - held as usize;
    for (i, seq) in seqs.iter().enumerate().take(10).skip(first) {
        let m = recv_json(&mut a);
        assert_eq!(
            m["content"]["i"],
            json!(i),
            "not the newest ones in order: {m}"
        );
        assert_eq!(m["seq"], json!(seq));
    }
    assert!(sync_json(&mut a).is_empty());
}

#[test]
fn bytes_bound_is_global_across_users() {
    let s = Server::start(&["--mailbox", "100", "--mailbox-bytes", "10000"]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let pad = "z".repeat(3000);
    // alice's old message, then enough of bob's to push it out
    let ra = s.push(&["alice"], json!({"who":"alice","pad":pad}));
    assert_eq!(ra["queued"], json!(1), "{ra}");
    for i in 0..5 {
        let r = s.push(&["bob"], json!({"who":"bob","i":i,"pad":pad}));
        assert_eq!(r["queued"], json!(1), "{r}");
    }
    let st = s.stats();
    assert!(st["mailbox_bytes"].as_u64().unwrap() <= 10000, "{st}");
    let mut a = s.ws_connect("ta");
    assert!(
        sync_json(&mut a).is_empty(),
        "the globally oldest message was not dropped"
    );
    let mut b = s.ws_connect("tb");
    let m = recv_json(&mut b);
    assert_eq!(m["content"]["who"], json!("bob"));
    wait_stats(&s, "mailbox == 0 once bob got his", |st| {
        st["mailbox"] == json!(0)
    });
}

#[test]
fn stats_has_mailbox_counters() {
    let s = Server::start(&["--mailbox", "2"]);
    let st = s.stats();
    for k in [
        "mailbox",
        "mailbox_bytes",
        "mailbox_evicted",
        "mailbox_expired",
    ] {
        assert_eq!(st[k], json!(0), "{k} in {st}");
    }
    for i in 0..3 {
        s.push(&["ghost"], json!(i));
    }
    let st = s.stats();
    assert_eq!(st["mailbox"], json!(2), "{st}");
    assert_eq!(st["mailbox_evicted"], json!(1), "{st}");
    assert_eq!(st["mailbox_expired"], json!(0), "{st}");
    assert!(st["mailbox_bytes"].as_u64().unwrap() > 0, "{st}");
}

#[test]
fn count_bound_includes_delivered_records() {
    // per user at most N records: delivered ones count, the oldest go first,
    // and a new held message is kept
    let s = Server::start(&["--mailbox", "3"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    for i in 0..3 {
        assert_eq!(s.push(&["alice"], json!(i))["delivered"], json!(1));
        assert_eq!(recv_json(&mut a)["content"], json!(i));
    }
    close_ws(a);
    s.wait_connections(0);
    let r = s.push(&["alice"], json!("held"));
    assert_eq!(r["queued"], json!(1), "{r}");
    let mut b = s.ws_connect_path("/push/ta?since=0");
    let got: Vec<Value> = (0..3)
        .map(|_| recv_json(&mut b)["content"].clone())
        .collect();
    assert_eq!(got, vec![json!(1), json!(2), json!("held")]);
    assert!(sync_json(&mut b).is_empty());
}
