//! Jobs, closes, events, shutdown, seq reservations, replay and stats.

use serde_json::{Value, json};

use super::*;

#[test]
fn delayed_and_periodic_jobs_run_on_virtual_time_and_cancel() {
    let mut h = hub(&["a"]);
    let mut out = Rec::default();
    let a = connect(&mut h, &mut out, 1, "a", None);
    let once = push(
        &mut h,
        &mut out,
        json!({"users": ["a"], "content": 1, "delay": 2}),
    );
    let id = once["messageId"].as_str().unwrap().to_string();
    assert_eq!(once["at"], T0 + 2000);
    let every = push(
        &mut h,
        &mut out,
        json!({"users": ["a"], "content": 2, "every": 3}),
    );
    let periodic = every["messageId"].as_str().unwrap().to_string();
    h.handle(1000, Input::Tick, &mut out);
    assert!(out.texts(a).is_empty());
    h.handle(2000, Input::Tick, &mut out);
    assert_eq!(out.texts(a)[0]["messageId"], id.as_str());
    for t in [3000, 6000] {
        h.handle(t, Input::Tick, &mut out);
    }
    let ids: Vec<Value> = out
        .texts(a)
        .iter()
        .map(|v| v["messageId"].clone())
        .collect();
    assert_eq!(
        ids[1..],
        [
            json!(format!("{periodic}.1")),
            json!(format!("{periodic}.2"))
        ]
    );
    let reply = request(
        &mut h,
        &mut out,
        6000,
        json!({"op": "cancel", "messageId": periodic}),
    );
    assert_eq!(reply["cancelled"], true);
    h.handle(9000, Input::Tick, &mut out);
    assert_eq!(out.texts(a).len(), 3, "a cancelled job does not run");
    assert_eq!(h.jobs.len(), 0);
}

#[test]
fn kick_and_the_per_user_cap_close_with_1008_revoke_with_4401() {
    let mut h = hub_with(
        Config {
            max_conns_per_user: 2,
            ..config()
        },
        &["a", "b"],
    );
    let mut out = Rec::default();
    let a1 = connect(&mut h, &mut out, 1, "a", None);
    let a2 = connect(&mut h, &mut out, 2, "a", None);
    let a3 = connect(&mut h, &mut out, 3, "a", None);
    assert_eq!(out.closed, [(a1, 1008)], "the oldest went");
    let reply = request(
        &mut h,
        &mut out,
        0,
        json!({"op": "kick", "connection": 102}),
    );
    assert_eq!(reply["closed"], 1);
    assert_eq!(out.closed[1], (a2, 1008));
    let b = connect(&mut h, &mut out, 4, "b", None);
    let reply = request(&mut h, &mut out, 0, json!({"op": "revoke", "token": "t-b"}));
    assert_eq!(reply["closed"], 1);
    assert_eq!(out.closed[2], (b, 4401), "revoked: never retry this token");
    let again = connect(&mut h, &mut out, 5, "b", None);
    assert_eq!(
        out.closed.last(),
        Some(&(again, 4401)),
        "a revoked token is upgraded, then closed with 4401"
    );
    assert!(out.refused.is_empty(), "no HTTP answer by default");
    assert!(!h.is_open(again));
    assert_eq!(
        push(&mut h, &mut out, json!({"content": 1}))["delivered"],
        1
    );
    assert_eq!(out.seqs(a3), [1]);
}

#[test]
fn a_stale_connection_id_reaches_nobody() {
    let mut h = hub(&["a"]);
    let mut out = Rec::default();
    let a = connect(&mut h, &mut out, 1, "a", None);
    let stale = ConnId {
        key: a.key,
        generation: a.generation + 1,
    };
    h.handle(
        0,
        Input::Text {
            conn: stale,
            text: "unsubscribe",
        },
        &mut out,
    );
    h.handle(0, Input::Left { conn: stale }, &mut out);
    assert_eq!(
        push(&mut h, &mut out, json!({"content": 1}))["delivered"],
        1
    );
}

#[test]
fn events_report_presence_and_upstream_messages() {
    let mut h = hub(&["a"]);
    let mut out = Rec::default();
    request(&mut h, &mut out, 0, json!({"op": "events"}));
    let a = connect(&mut h, &mut out, 1, "a", None);
    h.handle(
        0,
        Input::Text {
            conn: a,
            text: "hello",
        },
        &mut out,
    );
    h.handle(
        0,
        Input::Binary {
            conn: a,
            data: &[1, 2],
        },
        &mut out,
    );
    h.handle(
        0,
        Input::Text {
            conn: a,
            text: "--",
        },
        &mut out,
    );
    h.handle(0, Input::Left { conn: a }, &mut out);
    let kinds: Vec<&str> = out
        .events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["online", "message", "message", "offline"]);
    assert_eq!(out.events[0]["peer"], "127.0.0.1:9");
    assert_eq!(out.events[1]["text"], "hello");
    assert_eq!(out.events[2]["binary"], "AQI=");
    assert_eq!(out.events[3]["connection"], 101);
    assert_eq!(h.stats.messages_in, 2);
}

#[test]
fn shutdown_closes_everyone_with_1001_and_refuses_jobs() {
    let mut h = hub(&["a"]);
    let mut out = Rec::default();
    let a = connect(&mut h, &mut out, 1, "a", None);
    h.handle(0, Input::Shutdown, &mut out);
    assert_eq!(out.closed, [(a, 1001)]);
    assert_eq!(
        push(&mut h, &mut out, json!({"content": 1}))["error"],
        "shutting down"
    );
    assert_eq!(
        request(&mut h, &mut out, 0, json!({"op": "stats"}))["ok"],
        true
    );
}

#[test]
fn seqs_come_from_durable_reservations_only() {
    let mut h = hub_with(
        Config {
            data_log: true,
            ..config()
        },
        &["a"],
    );
    let mut out = Rec::default();
    h.restore(Vec::new(), 0);
    h.handle(0, Input::LogWritten { ok: true }, &mut out);
    let reply = push(&mut h, &mut out, json!({"content": 1}));
    assert_eq!((reply["seq"].as_u64(), out.syncs), (Some(1), 0));
    // Run past half the block: a new reservation is logged, not yet durable.
    for _ in 2..=SEQ_BLOCK {
        push(&mut h, &mut out, json!({"content": 1}));
    }
    assert!(
        out.log
            .iter()
            .any(|r| matches!(r, LogRecord::Seq { upto } if *upto > SEQ_BLOCK))
    );
    // The log fails before it is synced: the durable reservation is used up.
    out.sync_fails = true;
    h.handle(0, Input::LogWritten { ok: false }, &mut out);
    let reply = push(&mut h, &mut out, json!({"content": 1}));
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(out.syncs > 0, "it tried a sync first");
    out.sync_fails = false;
    let reply = push(&mut h, &mut out, json!({"content": 1}));
    assert_eq!(
        reply["seq"],
        SEQ_BLOCK + 1,
        "once the log syncs, seqs go on"
    );
}

#[test]
fn replaying_the_log_restores_the_mailbox_seq_and_jobs() {
    let cfg = Config {
        mailbox: 10,
        data_log: true,
        ..config()
    };
    let mut first = hub_with(cfg.clone(), &["a"]);
    let mut out = Rec::default();
    first.restore(Vec::new(), 0);
    first.handle(0, Input::LogWritten { ok: true }, &mut out);
    push(
        &mut first,
        &mut out,
        json!({"users": ["a"], "content": "held"}),
    );
    push(
        &mut first,
        &mut out,
        json!({"users": ["a"], "content": 2, "delay": 60}),
    );
    assert!(
        out.replies.iter().all(|(_, logged)| *logged),
        "replies wait for the log"
    );
    let mut records = out.log.clone();
    records.retain(|r| !matches!(r, LogRecord::Seq { .. }));
    let mut second = hub_with(cfg, &["a"]);
    let count = second.restore(records, 0);
    assert_eq!(count, 2);
    assert_eq!(second.restored(), (1, 1, 1));
    let mut out = Rec::default();
    second.handle(0, Input::LogWritten { ok: true }, &mut out);
    let a = connect(&mut second, &mut out, 1, "a", None);
    assert_eq!(out.texts(a)[0]["content"], "held");
    assert_eq!(push(&mut second, &mut out, json!({"content": 1}))["seq"], 2);
    let snapshot = second.snapshot();
    assert!(matches!(snapshot[0], LogRecord::Seq { upto } if upto > 2));
    assert_eq!(
        snapshot.len(),
        4,
        "reservation, one record, one job, a's token"
    );
}

#[test]
fn the_stats_table_feeds_both_stats_and_metrics() {
    let mut h = hub(&["a"]);
    let mut out = Rec::default();
    connect(&mut h, &mut out, 1, "a", None);
    push(&mut h, &mut out, json!({"content": 1}));
    let stats = request(&mut h, &mut out, 0, json!({"op": "stats"}));
    let metrics = h.metrics(&Transport::default());
    for row in h.stat_rows(&Transport::default()) {
        assert_eq!(stats[row.stat], row.value, "{}", row.stat);
        let line = format!("wspush_{} {}", row.metric, row.value);
        assert!(metrics.lines().any(|l| l == line), "{line}");
    }
    assert_eq!(
        (stats["connections"].as_u64(), stats["pushes"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(stats["data_log"], "off");
}

#[test]
fn device_labels_are_shared_and_outlive_only_their_last_connection() {
    let mut h = hub(&["a", "b"]);
    let mut out = Rec::default();
    let with_agent = |token: &str, agent: &str| Upgrade {
        user_agent: Some(agent.into()),
        ..upgrade(token, None)
    };
    let a = connect_request(&mut h, &mut out, 0, 1, with_agent("t-a", "okhttp/4.12"));
    connect_request(&mut h, &mut out, 0, 2, with_agent("t-b", "okhttp/4.12"));
    let named = Upgrade {
        device: Some("kitchen".into()),
        ..with_agent("t-b", "okhttp/4.12")
    };
    connect_request(&mut h, &mut out, 0, 3, named);
    connect(&mut h, &mut out, 4, "a", None);
    h.handle(0, Input::Left { conn: a }, &mut out);
    let reply = request(&mut h, &mut out, 0, json!({"op": "clients"}));
    let mut devices: Vec<Value> = reply["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["device"].clone())
        .collect();
    devices.sort_by_key(|d| d.to_string());
    assert_eq!(
        devices,
        [json!("kitchen"), json!("okhttp/4.12"), Value::Null],
        "{reply}"
    );
}
