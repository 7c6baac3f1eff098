//! Durability (--data-dir DIR): held messages, their records, the seq counter
//! and periodic jobs survive a restart, including SIGKILL; a corrupt tail of
//! the data files does not prevent start.
mod common;
#[path = "common/delivery.rs"]
mod delivery;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use delivery::*;
use serde_json::{Value, json};

fn start(data: &Path, extra: &[&str]) -> Server {
    let d = data.to_str().unwrap().to_string();
    let mut args: Vec<&str> = vec!["--data-dir", &d];
    args.extend_from_slice(extra);
    let s = Server::start(&args);
    // grants are durable too (tests/tokens.rs); granting again after every
    // start replaces them with the same grant and keeps these tests about
    // messages independent of that
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    s
}

fn seq_of(r: &Value) -> u64 {
    r["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric seq in {r}"))
}

fn files_in(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            files_in(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

/// Append garbage (a partial JSON record, binary junk, no newline) to every
/// regular file under `dir`; returns how many files there were.
fn corrupt_tails(dir: &Path) -> usize {
    let mut files = vec![];
    files_in(dir, &mut files);
    for f in &files {
        let mut h = std::fs::OpenOptions::new().append(true).open(f).unwrap();
        h.write_all(b"{\"seq\":99999999,\"user\":\"alice\",\"con")
            .unwrap();
        h.write_all(&[0x00, 0xff, 0xfe, 0x13, 0x37, 0x80, 0x81, 0x0a, 0xde, 0xad])
            .unwrap();
        h.write_all(b"garbage-tail").unwrap();
    }
    files.len()
}

#[test]
fn held_message_survives_sigkill() {
    let data = tempdir();
    let mut s1 = start(data.path(), &["--mailbox", "10"]);
    let r = s1.control(
        json!({"op":"push","users":["alice"],"content":{"survive":true},"title":"T","type":1}),
    );
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["queued"], json!(1), "{r}");
    s1.kill9();

    let s2 = start(data.path(), &["--mailbox", "10"]);
    let st = s2.stats();
    assert_eq!(st["mailbox"], json!(1), "held message not restored: {st}");
    let mut a = s2.ws_connect("ta");
    let m = recv_json(&mut a);
    assert_eq!(m["messageId"], r["messageId"], "{m}");
    assert_eq!(m["seq"], r["seq"], "{m}");
    assert_eq!(m["content"], json!({"survive":true}), "{m}");
    assert_eq!(m["title"], json!("T"), "{m}");
    assert_eq!(m["type"], json!(1), "{m}");
    assert!(sync_json(&mut a).is_empty());
}

#[test]
fn several_users_and_messages_survive_sigkill_in_order() {
    let data = tempdir();
    let mut s1 = start(data.path(), &["--mailbox", "10"]);
    let mut c = s1.control_conn();
    let mut alice = vec![];
    let mut bob = vec![];
    for i in 0..6 {
        let users = if i % 2 == 0 {
            vec!["alice"]
        } else {
            vec!["alice", "bob"]
        };
        let r = c.request(&json!({"op":"push","users":users,"content":i}));
        assert_eq!(r["ok"], json!(true), "{r}");
        alice.push((i, seq_of(&r)));
        if i % 2 == 1 {
            bob.push((i, seq_of(&r)));
        }
    }
    s1.kill9();

    let s2 = start(data.path(), &["--mailbox", "10"]);
    let mut a = s2.ws_connect("ta");
    for (i, seq) in &alice {
        let m = recv_json(&mut a);
        assert_eq!(m["content"], json!(i), "{m}");
        assert_eq!(m["seq"], json!(seq), "{m}");
    }
    assert!(sync_json(&mut a).is_empty());
    let mut b = s2.ws_connect("tb");
    for (i, seq) in &bob {
        let m = recv_json(&mut b);
        assert_eq!(m["content"], json!(i), "{m}");
        assert_eq!(m["seq"], json!(seq), "{m}");
    }
    assert!(sync_json(&mut b).is_empty());
}

#[test]
fn seq_keeps_increasing_across_sigkill() {
    let data = tempdir();
    let mut s1 = start(data.path(), &["--mailbox", "10"]);
    let mut c = s1.control_conn();
    let mut max = 0;
    // broadcasts (never held), a held message, more broadcasts and a publish
    for i in 0..50 {
        let r = c.request(&json!({"op":"push","content":i}));
        max = max.max(seq_of(&r));
    }
    max = max.max(seq_of(
        &c.request(&json!({"op":"push","users":["alice"],"content":"held"})),
    ));
    for i in 0..50 {
        let r = c.request(&json!({"op":"push","content":i}));
        max = max.max(seq_of(&r));
    }
    let r = c.request(&json!({"op":"publish","topic":"t","content":"p"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    max = max.max(seq_of(&r));
    s1.kill9();

    let s2 = start(data.path(), &["--mailbox", "10"]);
    let r = s2.push(&[], json!("after restart"));
    assert!(
        seq_of(&r) > max,
        "seq after restart {} not above {max} from before",
        seq_of(&r)
    );
    let r = s2.push(&["bob"], json!("held after restart"));
    assert!(seq_of(&r) > max, "{r}");
}

#[test]
fn seq_keeps_increasing_across_sigkill_without_held_messages() {
    let data = tempdir();
    let mut s1 = start(data.path(), &["--mailbox", "10"]);
    let mut c = s1.control_conn();
    let mut max = 0;
    for i in 0..30 {
        max = max.max(seq_of(&c.request(&json!({"op":"push","content":i}))));
    }
    s1.kill9();
    let s2 = start(data.path(), &["--mailbox", "10"]);
    let r = s2.push(&[], json!("after"));
    assert!(seq_of(&r) > max, "seq {} not above {max}", seq_of(&r));
}

#[test]
fn seq_keeps_increasing_across_sigterm_restarts() {
    let data = tempdir();
    let mut max = 0;
    for round in 0..3 {
        let mut s = start(data.path(), &["--mailbox", "10"]);
        for i in 0..5 {
            let r = s.push(&["alice"], json!([round, i]));
            let seq = seq_of(&r);
            assert!(seq > max, "round {round}: seq {seq} not above {max}");
            max = seq;
        }
        s.term();
    }
}

#[test]
fn delivered_message_is_not_redelivered_after_restart() {
    let data = tempdir();
    let mut s1 = start(data.path(), &["--mailbox", "10"]);
    let r = s1.push(&["alice"], json!("once"));
    assert_eq!(r["queued"], json!(1), "{r}");
    let mut a = s1.ws_connect("ta");
    assert_eq!(recv_json(&mut a)["content"], json!("once"));
    // wait until the server has marked it delivered
    wait_for(
        "the record to be marked delivered",
        Duration::from_secs(5),
        || {
            let recs = records(&s1, json!({"user":"alice"}));
            (recs.len() == 1 && recs[0]["status"] == json!("delivered")).then_some(())
        },
    );
    close_ws(a);
    s1.term();

    let s2 = start(data.path(), &["--mailbox", "10"]);
    assert_eq!(s2.stats()["mailbox"], json!(0));
    let mut a = s2.ws_connect("ta");
    assert!(
        sync_json(&mut a).is_empty(),
        "delivered message was delivered again after restart"
    );
}

#[test]
fn records_survive_restart() {
    let data = tempdir();
    let mut s1 = start(data.path(), &["--mailbox", "10"]);
    let held = s1.push(&["bob"], json!("held"));
    let mut a = s1.ws_connect("ta");
    let live = s1.push(&["alice"], json!("live"));
    assert_eq!(live["delivered"], json!(1), "{live}");
    assert_eq!(recv_json(&mut a)["content"], json!("live"));
    wait_for("alice's record", Duration::from_secs(5), || {
        let recs = records(&s1, json!({"user":"alice"}));
        (recs.len() == 1 && recs[0]["status"] == json!("delivered")).then_some(())
    });
    drop(a);
    s1.term();

    let s2 = start(data.path(), &["--mailbox", "10"]);
    let recs = records(&s2, json!({}));
    let summary: Vec<(Value, Value, Value, Value)> = recs
        .iter()
        .map(|r| {
            (
                r["messageId"].clone(),
                r["seq"].clone(),
                r["user"].clone(),
                r["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                held["messageId"].clone(),
                held["seq"].clone(),
                json!("bob"),
                json!("held")
            ),
            (
                live["messageId"].clone(),
                live["seq"].clone(),
                json!("alice"),
                json!("delivered")
            ),
        ],
        "records after restart: {recs:?}"
    );
}

#[test]
fn deleted_message_stays_deleted_after_restart() {
    let data = tempdir();
    let mut s1 = start(data.path(), &["--mailbox", "10"]);
    let gone = s1.push(&["alice"], json!("deleted"));
    let kept = s1.push(&["alice"], json!("kept"));
    let r = ok(&s1, json!({"op":"delete","messageId":gone["messageId"]}));
    assert_eq!(r["deleted"], json!(1), "{r}");
    s1.kill9();

    let s2 = start(data.path(), &["--mailbox", "10"]);
    let mut a = s2.ws_connect("ta");
    let m = recv_json(&mut a);
    assert_eq!(m["messageId"], kept["messageId"], "{m}");
    assert!(
        sync_json(&mut a).is_empty(),
        "a deleted message came back after restart"
    );
}

#[test]
fn periodic_job_survives_sigterm_restart() {
    periodic_job_survives(false);
}

#[test]
fn periodic_job_survives_sigkill_restart() {
    periodic_job_survives(true);
}

fn periodic_job_survives(sigkill: bool) {
    let data = tempdir();
    let mut s1 = start(data.path(), &[]);
    let r = ok(
        &s1,
        json!({"op":"push","users":["alice"],"content":"tick","every":1}),
    );
    assert_eq!(r["scheduled"], json!(true), "{r}");
    let id = r["messageId"].as_str().unwrap().to_string();
    if sigkill {
        s1.kill9();
    } else {
        s1.term();
    }

    let s2 = start(data.path(), &[]);
    let mut a = s2.ws_connect("ta");
    for _ in 0..2 {
        let m = recv_within(
            &mut a,
            Duration::from_millis(3500),
            "periodic push after restart",
        );
        assert_eq!(m["content"], json!("tick"), "{m}");
        let mid = m["messageId"].as_str().unwrap_or_else(|| panic!("{m}"));
        let n = mid
            .strip_prefix(&format!("{id}."))
            .unwrap_or_else(|| panic!("messageId {mid} is not {id}.N"));
        assert!(n.parse::<u64>().is_ok(), "messageId {mid} is not {id}.N");
    }
    // and it can still be cancelled by its id
    let r = ok(&s2, json!({"op":"cancel","messageId":id}));
    assert_eq!(r["cancelled"], json!(true), "{r}");
    sync_json(&mut a);
    assert!(
        try_recv_json(&mut a, Duration::from_millis(2200)).is_none(),
        "periodic push ran after cancel"
    );
}

#[test]
fn cancelled_job_stays_cancelled_after_restart() {
    let data = tempdir();
    let mut s1 = start(data.path(), &[]);
    let r = ok(
        &s1,
        json!({"op":"push","users":["alice"],"content":"x","every":1}),
    );
    let c = ok(&s1, json!({"op":"cancel","messageId":r["messageId"]}));
    assert_eq!(c["cancelled"], json!(true), "{c}");
    s1.kill9();
    let s2 = start(data.path(), &[]);
    let mut a = s2.ws_connect("ta");
    assert!(
        try_recv_json(&mut a, Duration::from_millis(2500)).is_none(),
        "a cancelled job came back after restart"
    );
}

#[test]
fn corrupt_tail_does_not_prevent_start() {
    let data = tempdir();
    let mut s1 = start(data.path(), &["--mailbox", "10"]);
    let r1 = s1.push(&["alice"], json!("first"));
    let r2 = s1.push(&["alice"], json!("second"));
    assert_eq!(r2["queued"], json!(1), "{r2}");
    s1.kill9();
    let n = corrupt_tails(data.path());
    assert!(n > 0, "--data-dir holds no files after a held push");

    let s2 = start(data.path(), &["--mailbox", "10"]);
    let mut a = s2.ws_connect("ta");
    let m = recv_json(&mut a);
    assert_eq!(m["messageId"], r1["messageId"], "{m}");
    let m = recv_json(&mut a);
    assert_eq!(m["messageId"], r2["messageId"], "{m}");
    assert!(
        sync_json(&mut a).is_empty(),
        "garbage turned into a message"
    );
    let r = s2.push(&[], json!("new"));
    assert!(seq_of(&r) > seq_of(&r2), "{r}");
}

#[test]
fn corrupt_tail_after_sigterm_does_not_prevent_start() {
    let data = tempdir();
    let mut s1 = start(data.path(), &["--mailbox", "10"]);
    let r1 = s1.push(&["alice"], json!("kept"));
    s1.term();
    corrupt_tails(data.path());
    let s2 = start(data.path(), &["--mailbox", "10"]);
    let mut a = s2.ws_connect("ta");
    let m = recv_json(&mut a);
    assert_eq!(m["messageId"], r1["messageId"], "{m}");
    assert!(sync_json(&mut a).is_empty());
}

#[test]
fn writes_after_a_corrupt_tail_still_survive() {
    let data = tempdir();
    let mut s1 = start(data.path(), &["--mailbox", "10"]);
    let r1 = s1.push(&["alice"], json!("before"));
    s1.kill9();
    corrupt_tails(data.path());

    let mut s2 = start(data.path(), &["--mailbox", "10"]);
    let r2 = s2.push(&["alice"], json!("after"));
    assert_eq!(r2["queued"], json!(1), "{r2}");
    assert!(seq_of(&r2) > seq_of(&r1));
    s2.kill9();

    let s3 = start(data.path(), &["--mailbox", "10"]);
    let mut a = s3.ws_connect("ta");
    let m = recv_json(&mut a);
    assert_eq!(m["messageId"], r1["messageId"], "{m}");
    let m = recv_json(&mut a);
    assert_eq!(
        m["messageId"], r2["messageId"],
        "message written after the corrupt tail was lost: {m}"
    );
    assert!(sync_json(&mut a).is_empty());
    let r3 = s3.push(&[], json!("x"));
    assert!(seq_of(&r3) > seq_of(&r2), "{r3}");
}

#[test]
fn held_message_age_counts_across_a_restart() {
    // TTL runs from the push, not from the restart: a message whose TTL ran
    // out while the server was down is not delivered after it comes back.
    let data = tempdir();
    let mut s1 = start(data.path(), &["--mailbox", "10", "--mailbox-ttl", "2"]);
    let pushed = now_ms();
    let r = s1.push(&["alice"], json!("stale"));
    assert_eq!(r["queued"], json!(1), "{r}");
    s1.kill9();
    // let the TTL (2 s) plus one 1 s tick pass while the server is down
    std::thread::sleep(Duration::from_millis(
        (pushed + 3300).saturating_sub(now_ms()),
    ));

    let s2 = start(data.path(), &["--mailbox", "10", "--mailbox-ttl", "2"]);
    let mut a = s2.ws_connect("ta");
    assert!(
        sync_json(&mut a).is_empty(),
        "a message past its TTL was delivered after the restart"
    );
    assert_eq!(s2.stats()["mailbox"], json!(0));
}

#[test]
fn periodic_message_ids_do_not_repeat_after_restart() {
    let data = tempdir();
    let mut s1 = start(data.path(), &[]);
    let mut a = s1.ws_connect("ta");
    let r = ok(
        &s1,
        json!({"op":"push","users":["alice"],"content":"tick","every":1}),
    );
    let id = r["messageId"].as_str().unwrap().to_string();
    for k in 1..=2 {
        let m = recv_within(&mut a, Duration::from_millis(2500), "a run before restart");
        assert_eq!(m["messageId"], json!(format!("{id}.{k}")), "{m}");
    }
    drop(a);
    s1.term();

    let s2 = start(data.path(), &[]);
    let mut a = s2.ws_connect("ta");
    let m = recv_within(&mut a, Duration::from_millis(3500), "a run after restart");
    let mid = m["messageId"].as_str().unwrap();
    let n: u64 = mid
        .strip_prefix(&format!("{id}."))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("messageId {mid} is not {id}.N"));
    assert!(
        n >= 3,
        "run numbering restarted after restart: got {mid} after {id}.2 was sent"
    );
    ok(&s2, json!({"op":"cancel","messageId":id}));
}

#[test]
fn the_log_is_compacted_while_running_and_loses_nothing() {
    // 400 pushes of 8 KiB to a user with a one-message mailbox append ~3.2 MB
    // to the log while the live state stays one message: the server must
    // rewrite the log without a restart, and the held message and the seq
    // counter must survive SIGKILL after it.
    let data = tempdir();
    let mut s1 = start(data.path(), &["--mailbox", "1"]);
    let mut c = s1.control_conn();
    let big = "x".repeat(8 * 1024);
    let reqs: Vec<Value> = (0..400)
        .map(|i| json!({"op":"push","users":["alice"],"content":{"i":i,"pad":big}}))
        .collect();
    let replies = pipelined_chunked(&mut c, &reqs, 50);
    let last = replies.last().unwrap().clone();
    let log = data.path().join("wspush.log");
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size < 1_500_000, "the log was not compacted: {size} bytes");
    s1.kill9();

    let s2 = start(data.path(), &["--mailbox", "1"]);
    let mut a = s2.ws_connect("ta");
    let m = recv_json(&mut a);
    assert_eq!(m["messageId"], last["messageId"], "{m}");
    assert_eq!(m["content"]["i"], json!(399), "{m}");
    let r = s2.push(&["bob"], json!("after"));
    assert!(
        seq_of(&r) > seq_of(&last),
        "seq went back: {r} after {last}"
    );
}
