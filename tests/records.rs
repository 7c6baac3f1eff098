//! Message records: the `messages` control op (filters, paging) and `delete`.
mod common;
#[path = "common/delivery.rs"]
mod delivery;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use delivery::*;
use serde_json::{Value, json};

fn seq_of(r: &Value) -> u64 {
    r["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric seq in {r}"))
}

/// (messageId, user, status) of each record, in reply order.
fn triples(recs: &[Value]) -> Vec<(String, String, String)> {
    recs.iter()
        .map(|r| {
            (
                r["messageId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{r}"))
                    .to_string(),
                r["user"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{r}"))
                    .to_string(),
                r["status"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{r}"))
                    .to_string(),
            )
        })
        .collect()
}

fn assert_ascending(recs: &[Value]) {
    let seqs: Vec<u64> = recs.iter().map(seq_of).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] <= w[1]),
        "records not ascending by seq: {seqs:?}"
    );
}

fn id(r: &Value) -> String {
    r["messageId"].as_str().unwrap().to_string()
}

#[test]
fn records_for_held_and_delivered_pushes() {
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let mut a = s.ws_connect("ta");
    let t0 = now_ms();
    let m1 = s.push(&["alice"], json!(1)); // delivered
    let m2 = s.push(&["bob"], json!(2)); // held
    let m3 = s.push(&["alice", "bob"], json!(3)); // delivered to alice, held for bob
    assert_eq!(m3["delivered"], json!(1), "{m3}");
    assert_eq!(m3["queued"], json!(1), "{m3}");
    assert_eq!(recv_json(&mut a)["content"], json!(1));
    assert_eq!(recv_json(&mut a)["content"], json!(3));
    let t1 = now_ms();

    let r = messages(&s, json!({}));
    let recs = r["messages"].as_array().unwrap();
    assert_ascending(recs);
    assert_eq!(r["next"], Value::Null, "one page only: {r}");
    let got: BTreeSet<_> = triples(recs).into_iter().collect();
    let want: BTreeSet<_> = [
        (id(&m1), "alice", "delivered"),
        (id(&m2), "bob", "held"),
        (id(&m3), "alice", "delivered"),
        (id(&m3), "bob", "held"),
    ]
    .into_iter()
    .map(|(a, b, c)| (a, b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want, "records: {r}");
    for rec in recs {
        let seq = seq_of(rec);
        let mid = rec["messageId"].as_str().unwrap();
        let expect_seq = [&m1, &m2, &m3]
            .iter()
            .find(|m| m["messageId"] == json!(mid))
            .map(|m| seq_of(m))
            .unwrap();
        assert_eq!(seq, expect_seq, "{rec}");
        let ts = rec["ts"].as_u64().unwrap_or_else(|| panic!("ts in {rec}"));
        assert!(
            ts + 2000 >= t0 && ts <= t1 + 2000,
            "ts {ts} not a Unix ms near [{t0}, {t1}]: {rec}"
        );
    }

    // filters
    let bob = records(&s, json!({"user":"bob"}));
    assert_eq!(
        triples(&bob),
        vec![
            (id(&m2), "bob".into(), "held".into()),
            (id(&m3), "bob".into(), "held".into())
        ]
    );
    let delivered = records(&s, json!({"status":"delivered"}));
    assert_eq!(
        triples(&delivered),
        vec![
            (id(&m1), "alice".into(), "delivered".into()),
            (id(&m3), "alice".into(), "delivered".into())
        ]
    );
    let held_alice = records(&s, json!({"user":"alice","status":"held"}));
    assert!(held_alice.is_empty(), "{held_alice:?}");
    assert!(records(&s, json!({"user":"nobody"})).is_empty());
    assert!(records(&s, json!({"status":"expired"})).is_empty());

    // bob connects: his records become delivered
    let mut b = s.ws_connect("tb");
    assert_eq!(recv_json(&mut b)["content"], json!(2));
    assert_eq!(recv_json(&mut b)["content"], json!(3));
    wait_for("bob's records delivered", Duration::from_secs(5), || {
        let recs = records(&s, json!({"user":"bob"}));
        (recs.len() == 2 && recs.iter().all(|r| r["status"] == json!("delivered"))).then_some(())
    });
    assert!(records(&s, json!({"status":"held"})).is_empty());
    assert_eq!(records(&s, json!({"status":"delivered"})).len(), 4);
}

#[test]
fn no_records_for_broadcasts_and_publishes() {
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    s.push(&[], json!("b"));
    ok(&s, json!({"op":"publish","topic":"t","content":"p"}));
    assert_eq!(recv_json(&mut a)["content"], json!("b"));
    assert!(
        records(&s, json!({})).is_empty(),
        "broadcast/publish got records"
    );
}

#[test]
fn no_records_with_mailbox_off() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let _a = s.ws_connect("ta");
    s.push(&["alice"], json!(1));
    s.push(&["bob"], json!(2));
    let r = messages(&s, json!({}));
    assert_eq!(r["messages"], json!([]), "{r}");
    assert_eq!(r["next"], Value::Null, "{r}");
}

#[test]
fn paging_with_limit_after_and_next() {
    let s = Server::start(&["--mailbox", "100"]);
    let mut c = s.control_conn();
    let reqs: Vec<Value> = (0..25)
        .map(|i| json!({"op":"push","users":["carol"],"content":i}))
        .collect();
    let seqs: Vec<u64> = pipelined(&mut c, &reqs).iter().map(seq_of).collect();

    let mut after: Option<u64> = None;
    let mut all = vec![];
    let mut pages = 0;
    loop {
        let mut req = json!({"user":"carol","limit":10});
        if let Some(a) = after {
            req["after"] = json!(a);
        }
        let r = messages(&s, req);
        let recs = r["messages"].as_array().unwrap().clone();
        pages += 1;
        assert!(recs.len() <= 10, "limit ignored: {} records", recs.len());
        assert_ascending(&recs);
        if let Some(a) = after {
            assert!(
                recs.iter().all(|x| seq_of(x) > a),
                "after not exclusive: {r}"
            );
        }
        all.extend(recs.iter().map(seq_of));
        match &r["next"] {
            Value::Null => break,
            n => {
                let n = n.as_u64().unwrap_or_else(|| panic!("next not a seq: {r}"));
                assert_eq!(recs.len(), 10, "short page with a next: {r}");
                assert_eq!(
                    n,
                    seq_of(recs.last().unwrap()),
                    "next is not the last seq: {r}"
                );
                after = Some(n);
            }
        }
        assert!(pages < 10, "paging never ends");
    }
    assert_eq!(pages, 3);
    assert_eq!(all, seqs, "paging lost or repeated records");

    // after is exclusive at any point
    let r = records(&s, json!({"user":"carol","after":seqs[3],"limit":2}));
    assert_eq!(
        r.iter().map(seq_of).collect::<Vec<_>>(),
        vec![seqs[4], seqs[5]]
    );
    // after the last: empty, next null
    let r = messages(&s, json!({"after":seqs[24]}));
    assert_eq!(r["messages"], json!([]), "{r}");
    assert_eq!(r["next"], Value::Null, "{r}");
}

#[test]
fn next_is_null_when_the_last_page_is_full() {
    let s = Server::start(&["--mailbox", "100"]);
    let mut c = s.control_conn();
    let reqs: Vec<Value> = (0..20)
        .map(|i| json!({"op":"push","users":["dan"],"content":i}))
        .collect();
    let seqs: Vec<u64> = pipelined(&mut c, &reqs).iter().map(seq_of).collect();
    let p1 = messages(&s, json!({"limit":10}));
    assert_eq!(p1["next"], json!(seqs[9]), "{p1}");
    let p2 = messages(&s, json!({"limit":10,"after":seqs[9]}));
    assert_eq!(p2["messages"].as_array().unwrap().len(), 10);
    assert_eq!(p2["next"], Value::Null, "no further page exists: {p2}");
    let all = messages(&s, json!({"limit":20}));
    assert_eq!(all["next"], Value::Null, "{all}");
}

#[test]
fn default_limit_is_100_and_max_is_1000() {
    let s = Server::start(&["--mailbox", "2000"]);
    let mut c = s.control_conn();
    let reqs: Vec<Value> = (0..1100)
        .map(|i| json!({"op":"push","users":["erin"],"content":i}))
        .collect();
    let seqs: Vec<u64> = pipelined_chunked(&mut c, &reqs, 200)
        .iter()
        .map(seq_of)
        .collect();
    let r = messages(&s, json!({}));
    let recs = r["messages"].as_array().unwrap();
    assert_eq!(recs.len(), 100, "default limit");
    assert_eq!(seq_of(&recs[0]), seqs[0]);
    assert_eq!(r["next"], json!(seqs[99]), "{}", r["next"]);

    let r = messages(&s, json!({"limit":1000}));
    assert_eq!(r["messages"].as_array().unwrap().len(), 1000);
    assert_eq!(r["next"], json!(seqs[999]));

    // over the maximum: refused, or capped at 1000
    let r = s.control(json!({"op":"messages","limit":5000}));
    if r["ok"] == json!(true) {
        let n = r["messages"].as_array().unwrap().len();
        assert_eq!(n, 1000, "limit 5000 must be capped at 1000, got {n}");
        assert_eq!(r["next"], json!(seqs[999]));
    } else {
        assert!(r["error"].is_string(), "{r}");
    }
}

#[test]
fn bad_status_is_refused() {
    let s = Server::start(&["--mailbox", "10"]);
    s.push(&["u"], json!(1));
    for bad in [json!("pending"), json!("HELD"), json!(""), json!(3)] {
        refused(&s, json!({"op":"messages","status":bad}));
    }
    // the valid ones are fine
    for good in ["held", "delivered", "expired"] {
        messages(&s, json!({"status":good}));
    }
}

#[test]
fn expired_records() {
    let s = Server::start(&["--mailbox", "10", "--mailbox-ttl", "1"]);
    s.grant("ta", "alice");
    let r = s.push(&["alice"], json!("soon expired"));
    assert_eq!(records(&s, json!({"status":"held"})).len(), 1);
    let rec = wait_for("an expired record", Duration::from_secs(5), || {
        records(&s, json!({"status":"expired"})).pop()
    });
    assert_eq!(rec["messageId"], r["messageId"], "{rec}");
    assert_eq!(rec["user"], json!("alice"), "{rec}");
    assert_eq!(rec["status"], json!("expired"), "{rec}");
    assert!(records(&s, json!({"status":"held"})).is_empty());
    let mut a = s.ws_connect("ta");
    assert!(sync_json(&mut a).is_empty(), "expired message delivered");
}

#[test]
fn delete_held_message() {
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("ta", "alice");
    let gone = s.push(&["alice"], json!("gone"));
    let kept = s.push(&["alice"], json!("kept"));
    assert_eq!(s.stats()["mailbox"], json!(2));
    let r = ok(&s, json!({"op":"delete","messageId":gone["messageId"]}));
    assert_eq!(r["deleted"], json!(1), "{r}");
    assert_eq!(s.stats()["mailbox"], json!(1));
    let recs = records(&s, json!({"user":"alice"}));
    assert_eq!(
        triples(&recs),
        vec![(id(&kept), "alice".into(), "held".into())]
    );
    let mut a = s.ws_connect("ta");
    let m = recv_json(&mut a);
    assert_eq!(
        m["content"],
        json!("kept"),
        "deleted message delivered: {m}"
    );
    assert!(sync_json(&mut a).is_empty());
}

#[test]
fn delete_counts_every_record_of_the_message() {
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let m = s.push(&["alice", "bob", "carol"], json!("x"));
    assert_eq!(m["queued"], json!(2), "{m}");
    assert_eq!(recv_json(&mut a)["content"], json!("x"));
    assert_eq!(records(&s, json!({})).len(), 3);
    let r = ok(&s, json!({"op":"delete","messageId":m["messageId"]}));
    assert_eq!(r["deleted"], json!(3), "{r}");
    assert!(records(&s, json!({})).is_empty());
    assert_eq!(s.stats()["mailbox"], json!(0));
    // deleting again or an unknown id: 0
    let r = ok(&s, json!({"op":"delete","messageId":m["messageId"]}));
    assert_eq!(r["deleted"], json!(0), "{r}");
    let r = ok(&s, json!({"op":"delete","messageId":"no-such-id"}));
    assert_eq!(r["deleted"], json!(0), "{r}");
}

#[test]
fn deleted_messages_are_not_replayed_by_since() {
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let m1 = s.push(&["alice"], json!(1));
    let m2 = s.push(&["alice"], json!(2));
    assert_eq!(recv_json(&mut a)["content"], json!(1));
    assert_eq!(recv_json(&mut a)["content"], json!(2));
    let r = ok(&s, json!({"op":"delete","messageId":m1["messageId"]}));
    assert_eq!(r["deleted"], json!(1), "{r}");
    let mut b = s.ws_connect_path("/push/ta?since=0");
    let m = recv_json(&mut b);
    assert_eq!(m["messageId"], m2["messageId"], "{m}");
    assert!(sync_json(&mut b).is_empty());
}

#[test]
fn paging_visits_every_record_of_multi_user_pushes() {
    // several records share a seq (one push, two held users): paging by
    // `after` = seq must still visit each record exactly once
    let s = Server::start(&["--mailbox", "100"]);
    let mut c = s.control_conn();
    let reqs: Vec<Value> = (0..7)
        .map(|i| json!({"op":"push","users":["u1","u2"],"content":i}))
        .collect();
    pipelined(&mut c, &reqs);
    let all = records(&s, json!({}));
    assert_eq!(all.len(), 14);
    let mut seen = BTreeSet::new();
    let mut after: Option<u64> = None;
    for _ in 0..20 {
        let mut req = json!({"limit":3});
        if let Some(a) = after {
            req["after"] = json!(a);
        }
        let r = messages(&s, req);
        let recs = r["messages"].as_array().unwrap();
        assert!(recs.len() <= 3, "limit 3 exceeded: {r}");
        for rec in recs {
            let key = (seq_of(rec), rec["user"].as_str().unwrap().to_string());
            assert!(seen.insert(key), "record seen twice while paging: {rec}");
        }
        match r["next"].as_u64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(
        seen.len(),
        14,
        "paging with limit 3 skipped records of pushes to two users: saw {seen:?}"
    );
}
