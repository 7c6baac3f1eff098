//! Scheduled pushes: `delay` / `every` on push and publish, `cancel`, bad
//! values and --max-jobs. Timer granularity is 1 s, so the windows below
//! allow for a tick either way.
mod common;
#[path = "common/delivery.rs"]
mod delivery;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use delivery::*;
use serde_json::{Value, json};

/// A run due at `due` (Unix ms) may be up to one 1 s tick late (plus
/// scheduling slack), and early by less than a tick.
fn check_run_time(mid: &str, arrived: u64, due: u64) {
    assert!(
        arrived <= due + 1300,
        "{mid} arrived {} ms after it was due (at most one 1 s tick late allowed)",
        arrived as i64 - due as i64
    );
    assert!(
        arrived + 1000 >= due,
        "{mid} arrived {} ms before it was due",
        due as i64 - arrived as i64
    );
}

/// Assert a scheduled reply; returns (messageId, at).
fn scheduled(r: &Value, t0: u64, t1: u64, first_run_s: u64) -> (String, u64) {
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["scheduled"], json!(true), "{r}");
    let id = r["messageId"]
        .as_str()
        .unwrap_or_else(|| panic!("no messageId: {r}"))
        .to_string();
    assert!(!id.is_empty());
    let at = r["at"]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric at: {r}"));
    let lo = t0 + first_run_s * 1000;
    let hi = t1 + first_run_s * 1000;
    assert!(
        at + 1000 >= lo && at <= hi + 1000,
        "at {at} not about {first_run_s} s after the request ([{lo}, {hi}] ± 1 s): {r}"
    );
    (id, at)
}

#[test]
fn delayed_push_is_sent_once_after_the_delay() {
    let s = Server::start(&["--ping-interval", "0"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let t0 = now_ms();
    let start = Instant::now();
    let r =
        s.control(json!({"op":"push","users":["alice"],"content":"later","title":"D","delay":2}));
    let t1 = now_ms();
    let (id, _) = scheduled(&r, t0, t1, 2);
    assert!(
        try_recv_json(&mut a, Duration::from_millis(900)).is_none(),
        "delayed push arrived at once"
    );
    let m = recv_within(&mut a, Duration::from_secs(4), "the delayed push");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1000) && waited <= Duration::from_millis(4500),
        "delay 2 arrived after {waited:?}"
    );
    assert_eq!(m["messageId"], json!(id), "{m}");
    assert_eq!(m["content"], json!("later"), "{m}");
    assert_eq!(m["title"], json!("D"), "{m}");
    assert!(m["seq"].is_u64(), "{m}");
    assert!(
        try_recv_json(&mut a, Duration::from_millis(2200)).is_none(),
        "delayed push sent more than once"
    );
    // it ran: cancelling now finds nothing
    let c = ok(&s, json!({"op":"cancel","messageId":id}));
    assert_eq!(c["cancelled"], json!(false), "{c}");
}

#[test]
fn periodic_push_repeats_with_suffixed_ids_and_new_seqs() {
    let s = Server::start(&["--ping-interval", "0"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let t0 = now_ms();
    let r = s.control(json!({"op":"push","users":["alice"],"content":{"v":1},"every":1}));
    let t1 = now_ms();
    let (id, _) = scheduled(&r, t0, t1, 1);
    let (id, at) = (id, r["at"].as_u64().unwrap());
    let mut last_seq = 0;
    for k in 0..3u64 {
        let m = recv_within(&mut a, Duration::from_millis(2500), "a periodic run");
        let arrived = now_ms();
        let mid = m["messageId"].as_str().unwrap_or_else(|| panic!("{m}"));
        assert_eq!(
            mid,
            format!("{id}.{}", k + 1),
            "run {k}: ids must count up from .1"
        );
        let seq = m["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "each run gets a new seq: {m}");
        last_seq = seq;
        assert_eq!(m["content"], json!({"v":1}));
        check_run_time(mid, arrived, at + k * 1000);
    }

    let c = ok(&s, json!({"op":"cancel","messageId":id}));
    assert_eq!(c, json!({"ok":true,"cancelled":true}));
    sync_json(&mut a); // runs before the cancel may still be in flight
    assert!(
        try_recv_json(&mut a, Duration::from_millis(2200)).is_none(),
        "periodic push ran after cancel"
    );
    let c = ok(&s, json!({"op":"cancel","messageId":id}));
    assert_eq!(c["cancelled"], json!(false), "second cancel: {c}");
}

#[test]
fn periodic_runs_keep_their_period_whatever_the_phase() {
    // A probe job's first run shows where the server's 1 s tick falls; then
    // every-1 jobs are started 1 ms apart across the next tick boundary, so
    // some deadlines sit a few ms after a tick. Every run of every job must
    // come at most one tick after it is due (`at` + k s): no period skipped.
    let s = Server::start(&["--ping-interval", "0"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let probe = ok(
        &s,
        json!({"op":"push","users":["alice"],"content":-1,"every":1}),
    );
    let m = recv_within(&mut a, Duration::from_millis(2500), "the probe's first run");
    assert_eq!(m["content"], json!(-1));
    let tick = now_ms();
    ok(&s, json!({"op":"cancel","messageId":probe["messageId"]}));
    sync_json(&mut a);

    // phasing only, not synchronisation
    let start_at = tick + 1000 - 30;
    std::thread::sleep(Duration::from_millis(start_at.saturating_sub(now_ms())));
    let mut c = s.control_conn();
    let mut jobs = vec![]; // (id, at)
    for i in 0..60 {
        let r = c.request(&json!({"op":"push","users":["alice"],"content":i,"every":1}));
        assert_eq!(r["ok"], json!(true), "{r}");
        jobs.push((
            r["messageId"].as_str().unwrap().to_string(),
            r["at"].as_u64().unwrap(),
        ));
        std::thread::sleep(Duration::from_millis(1));
    }
    // three runs of each: until the last job's third run is due, plus a tick
    let end = jobs.last().unwrap().1 + 2000 + 1300;
    let mut runs = vec![0u64; jobs.len()];
    loop {
        let left = end.saturating_sub(now_ms());
        if left == 0 || runs.iter().all(|&n| n >= 3) {
            break;
        }
        let Some(m) = try_recv_json(&mut a, Duration::from_millis(left)) else {
            break;
        };
        let arrived = now_ms();
        let i = m["content"].as_u64().unwrap() as usize;
        let (id, at) = &jobs[i];
        let mid = m["messageId"].as_str().unwrap();
        let k = runs[i];
        assert_eq!(
            mid,
            format!("{id}.{}", k + 1),
            "job {i}'s runs out of order"
        );
        check_run_time(mid, arrived, at + k * 1000);
        runs[i] += 1;
    }
    for (i, n) in runs.iter().enumerate() {
        assert!(*n >= 3, "job {i} ran {n} times in its first ~3 s (every 1)");
    }
    for (id, _) in &jobs {
        let r = c.request(&json!({"op":"cancel","messageId":id}));
        assert_eq!(r["cancelled"], json!(true), "{r}");
    }
}

#[test]
fn delay_then_every() {
    let s = Server::start(&["--ping-interval", "0"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let t0 = now_ms();
    let start = Instant::now();
    let r = s.control(json!({"op":"push","users":["alice"],"content":"x","delay":3,"every":1}));
    let t1 = now_ms();
    let (id, _) = scheduled(&r, t0, t1, 3);
    let m = recv_within(&mut a, Duration::from_secs(5), "first run");
    let first = start.elapsed();
    assert!(
        first >= Duration::from_millis(2000),
        "delay 3 + every 1: first run after only {first:?}"
    );
    assert_eq!(m["messageId"], json!(format!("{id}.1")), "{m}");
    let m = recv_within(&mut a, Duration::from_millis(2500), "second run");
    assert_eq!(m["messageId"], json!(format!("{id}.2")), "{m}");
    let c = ok(&s, json!({"op":"cancel","messageId":id}));
    assert_eq!(c["cancelled"], json!(true), "{c}");
}

#[test]
fn cancel_before_it_runs() {
    let s = Server::start(&["--ping-interval", "0"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let r = ok(
        &s,
        json!({"op":"push","users":["alice"],"content":"never","delay":1}),
    );
    let r2 = ok(
        &s,
        json!({"op":"push","users":["alice"],"content":"sent","delay":1}),
    );
    let c = ok(&s, json!({"op":"cancel","messageId":r["messageId"]}));
    assert_eq!(c, json!({"ok":true,"cancelled":true}));
    let m = recv_within(&mut a, Duration::from_secs(3), "the other delayed push");
    assert_eq!(m["messageId"], r2["messageId"], "{m}");
    assert_eq!(m["content"], json!("sent"));
    assert!(
        try_recv_json(&mut a, Duration::from_millis(1500)).is_none(),
        "cancelled push was sent"
    );
}

#[test]
fn cancel_unknown_is_not_an_error() {
    let s = Server::start(&[]);
    let c = ok(&s, json!({"op":"cancel","messageId":"nope-1"}));
    assert_eq!(c, json!({"ok":true,"cancelled":false}));
    // an immediate push's id is not a job either
    let r = s.push(&["x"], json!(1));
    let c = ok(&s, json!({"op":"cancel","messageId":r["messageId"]}));
    assert_eq!(c["cancelled"], json!(false), "{c}");
}

#[test]
fn scheduled_broadcast_reaches_clients_online_at_run_time() {
    let s = Server::start(&["--ping-interval", "0"]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let r = ok(&s, json!({"op":"push","content":"bcast","delay":1}));
    assert_eq!(r["scheduled"], json!(true), "{r}");
    // connected after scheduling, before the run
    let mut a = s.ws_connect("ta");
    let mut b = s.ws_connect("tb");
    for ws in [&mut a, &mut b] {
        let m = recv_within(ws, Duration::from_secs(3), "scheduled broadcast");
        assert_eq!(m["messageId"], r["messageId"]);
        assert_eq!(m["content"], json!("bcast"));
    }
}

#[test]
fn scheduled_publish() {
    let s = Server::start(&["--ping-interval", "0"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let mut other = s.ws_connect("ta");
    subscribe(&mut a, "sensors/1");
    let t0 = now_ms();
    let r = s.control(json!({"op":"publish","topic":"sensors/1","content":20,"delay":1}));
    let (id, _) = scheduled(&r, t0, now_ms(), 1);
    let m = recv_within(&mut a, Duration::from_secs(3), "delayed publish");
    assert_eq!(m["messageId"], json!(id), "{m}");
    assert_eq!(m["topic"], json!("sensors/1"), "{m}");
    assert_eq!(m["content"], json!(20));

    let r = s.control(json!({"op":"publish","topic":"sensors/1","content":21,"every":1}));
    let (pid, _) = scheduled(&r, t0, now_ms(), 1);
    let m = recv_within(&mut a, Duration::from_millis(2500), "periodic publish");
    assert_eq!(m["messageId"], json!(format!("{pid}.1")), "{m}");
    assert_eq!(m["topic"], json!("sensors/1"), "{m}");
    let c = ok(&s, json!({"op":"cancel","messageId":pid}));
    assert_eq!(c["cancelled"], json!(true), "{c}");
    assert!(
        sync_json(&mut other).is_empty(),
        "non-subscriber got a scheduled publish"
    );
}

#[test]
fn bad_schedule_values_are_refused() {
    let s = Server::start(&["--ping-interval", "0"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    subscribe(&mut a, "t");
    let bad = [
        json!({"delay":0}),
        json!({"delay":-1}),
        json!({"delay":-0.5}),
        json!({"delay":"5"}),
        json!({"delay":[1]}),
        json!({"every":0}),
        json!({"every":0.5}),
        json!({"every":-1}),
        json!({"every":"1"}),
        json!({"every":true}),
        json!({"delay":1,"every":0}),
        json!({"delay":-1,"every":1}),
    ];
    let mut c = s.control_conn();
    for b in &bad {
        for op in ["push", "publish"] {
            let mut req = json!({"op":op,"users":["alice"],"topic":"t","content":"bad"});
            if op == "publish" {
                req.as_object_mut().unwrap().remove("users");
            }
            for (k, v) in b.as_object().unwrap() {
                req[k] = v.clone();
            }
            let r = c.request(&req);
            assert_eq!(r["ok"], json!(false), "{req} must be refused: {r}");
            assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
        }
    }
    // nothing of it was sent or scheduled, immediately or later
    assert!(sync_json(&mut a).is_empty(), "a refused push was sent");
    assert!(
        try_recv_json(&mut a, Duration::from_millis(2200)).is_none(),
        "a refused push ran later"
    );
}

#[test]
fn max_jobs_bounds_pending_jobs() {
    let s = Server::start(&["--max-jobs", "2"]);
    let j1 = ok(
        &s,
        json!({"op":"push","users":["x"],"content":1,"delay":60}),
    );
    let _j2 = ok(
        &s,
        json!({"op":"publish","topic":"t","content":2,"every":60}),
    );
    refused(
        &s,
        json!({"op":"push","users":["x"],"content":3,"delay":60}),
    );
    refused(&s, json!({"op":"push","users":["x"],"content":3,"every":5}));
    refused(
        &s,
        json!({"op":"publish","topic":"t","content":3,"delay":60}),
    );
    // immediate pushes are not jobs
    let r = s.push(&["x"], json!("now"));
    assert!(
        r.get("scheduled").is_none() || r["scheduled"] == json!(false),
        "{r}"
    );
    // cancelling frees a slot
    let c = ok(&s, json!({"op":"cancel","messageId":j1["messageId"]}));
    assert_eq!(c["cancelled"], json!(true), "{c}");
    ok(
        &s,
        json!({"op":"push","users":["x"],"content":4,"delay":60}),
    );
    refused(
        &s,
        json!({"op":"push","users":["x"],"content":5,"delay":60}),
    );
}

#[test]
fn finished_delayed_job_frees_its_slot() {
    let s = Server::start(&["--max-jobs", "1", "--ping-interval", "0"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    ok(
        &s,
        json!({"op":"push","users":["alice"],"content":1,"delay":1}),
    );
    refused(
        &s,
        json!({"op":"push","users":["alice"],"content":2,"delay":1}),
    );
    recv_within(&mut a, Duration::from_secs(3), "the delayed push");
    // the one-shot job is done: a new one fits
    ok(
        &s,
        json!({"op":"push","users":["alice"],"content":3,"delay":1}),
    );
}

#[test]
fn many_scheduled_ids_are_distinct() {
    let s = Server::start(&[]);
    let mut c = s.control_conn();
    let reqs: Vec<Value> = (0..50)
        .map(|i| json!({"op":"push","users":["x"],"content":i,"delay":600}))
        .collect();
    let ids: BTreeSet<String> = pipelined(&mut c, &reqs)
        .iter()
        .map(|r| {
            assert_eq!(r["scheduled"], json!(true), "{r}");
            r["messageId"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 50, "scheduled messageIds repeat");
    // and they do not collide with an immediate push's id
    let r = s.push(&["x"], json!("now"));
    assert!(!ids.contains(r["messageId"].as_str().unwrap()), "{r}");
}

#[test]
fn delayed_push_to_an_offline_user_is_held() {
    let s = Server::start(&["--mailbox", "10", "--ping-interval", "0"]);
    s.grant("ta", "alice");
    let r = ok(
        &s,
        json!({"op":"push","users":["alice"],"content":"while away","delay":1}),
    );
    let st = wait_stats(&s, "the delayed push to be held", |st| {
        st["mailbox"] == json!(1)
    });
    assert_eq!(st["mailbox"], json!(1));
    let mut a = s.ws_connect("ta");
    let m = recv_json(&mut a);
    assert_eq!(m["messageId"], r["messageId"], "{m}");
    assert_eq!(m["content"], json!("while away"));
}
