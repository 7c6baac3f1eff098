//! The hub on virtual time with a recording sink: every routing behaviour
//! checked without a socket, a file or a clock.

use std::rc::Rc;

use serde_json::{Value, json};

use super::*;
use crate::proto::frame;
use crate::proto::handshake::Upgrade;

const T0: u64 = 1_800_000_000_000;
const CTRL: Origin = Origin::Control(ConnId {
    key: 0,
    generation: 7,
});

/// A sink that records every effect.
#[derive(Default)]
struct Rec {
    frames: Vec<(Rc<[u8]>, Key)>,
    /// Text of every frame queued to each connection, in order.
    got: Vec<(ConnId, String)>,
    opened: Vec<ConnId>,
    refused: Vec<(ConnId, u16)>,
    closed: Vec<(ConnId, u16)>,
    replies: Vec<(Value, bool)>,
    events: Vec<Value>,
    log: Vec<LogRecord<'static>>,
    /// What `sync_now` answers; how often it was asked.
    sync_fails: bool,
    syncs: usize,
}

impl Out for Rec {
    fn open(&mut self, conn: ConnId, _accept: &str) {
        self.opened.push(conn);
    }
    fn refuse(&mut self, conn: ConnId, status: u16, _reason: &'static str) {
        self.refused.push((conn, status));
    }
    fn send(&mut self, conn: ConnId, frame: Rc<[u8]>) {
        let text = String::from_utf8_lossy(frame::server_payload(&frame)).into_owned();
        self.got.push((conn, text));
    }
    fn shared(&mut self, frame: Rc<[u8]>, key: Key) -> FrameRef {
        self.frames.push((frame, key));
        FrameRef(self.frames.len() as u32 - 1)
    }
    fn push(&mut self, conn: ConnId, frame: FrameRef) {
        let bytes = self.frames[frame.0 as usize].0.clone();
        self.send(conn, bytes);
    }
    fn close(&mut self, conn: ConnId, code: u16, _reason: &'static str) {
        self.closed.push((conn, code));
    }
    fn reply(&mut self, _to: Origin, line: Vec<u8>, logged: bool) {
        self.replies
            .push((serde_json::from_slice(&line).unwrap(), logged));
    }
    fn event(&mut self, _to: Origin, line: &[u8]) -> bool {
        self.events.push(serde_json::from_slice(line).unwrap());
        true
    }
    fn log(&mut self, record: &LogRecord<'_>) {
        self.log.push(record.clone().into_owned());
    }
    fn sync_now(&mut self) -> bool {
        self.syncs += 1;
        !self.sync_fails
    }
    fn link(&self, _conn: ConnId) -> Option<Link> {
        Some(Link {
            peer: "127.0.0.1:9".parse().unwrap(),
            last_seen_ms: 0,
        })
    }
    fn transport(&self) -> Transport<'_> {
        Transport::default()
    }
}

impl Rec {
    /// Envelopes and other JSON texts `conn` received.
    fn texts(&self, conn: ConnId) -> Vec<Value> {
        self.got
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, t)| serde_json::from_str(t).unwrap())
            .collect()
    }

    fn seqs(&self, conn: ConnId) -> Vec<u64> {
        self.texts(conn)
            .iter()
            .filter_map(|v| v["seq"].as_u64())
            .collect()
    }

    fn last_reply(&self) -> &Value {
        &self.replies.last().expect("a reply").0
    }
}

fn config() -> Config {
    Config {
        max_connections: 100,
        max_conns_per_user: 0,
        max_topics: 2,
        max_jobs: 10,
        mailbox: 0,
        mailbox_ttl: 60,
        mailbox_bytes: 1 << 20,
        data_log: false,
        started_unix_ms: T0,
        id_prefix: "test".into(),
    }
}

/// A hub whose tokens `t-NAME` authenticate user `NAME`.
fn hub_with(config: Config, users: &[&str]) -> Hub {
    let mut tokens = Tokens::default();
    for u in users {
        tokens.grant(&format!("t-{u}"), u).unwrap();
    }
    Hub::new(config, tokens)
}

fn hub(users: &[&str]) -> Hub {
    hub_with(config(), users)
}

fn upgrade(token: &str, since: Option<u64>) -> Upgrade {
    Upgrade {
        token: token.into(),
        accept: "x".into(),
        since,
        device: None,
        user_agent: None,
        forwarded_for: None,
    }
}

/// Connect slot `key` as `user` at virtual ms `now`.
fn connect(hub: &mut Hub, out: &mut Rec, key: u32, user: &str, since: Option<u64>) -> ConnId {
    let conn = ConnId {
        key,
        generation: key + 100,
    };
    let request = upgrade(&format!("t-{user}"), since);
    let serial = u64::from(key + 100);
    hub.handle(
        0,
        Input::Upgrade {
            conn,
            request: &request,
            serial,
        },
        out,
    );
    conn
}

fn request(hub: &mut Hub, out: &mut Rec, now: u64, body: Value) -> Value {
    let line = body.to_string();
    hub.handle(
        now,
        Input::Request {
            origin: CTRL,
            line: line.as_bytes(),
        },
        out,
    );
    out.last_reply().clone()
}

fn push(hub: &mut Hub, out: &mut Rec, body: Value) -> Value {
    let mut body = body;
    body["op"] = json!("push");
    request(hub, out, 0, body)
}

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
fn revoke_kick_and_the_per_user_cap_close_with_1008() {
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
    assert_eq!(out.closed[2], (b, 1008));
    connect(&mut h, &mut out, 5, "b", None);
    assert_eq!(
        out.refused.last().map(|r| r.1),
        Some(401),
        "a revoked token is refused"
    );
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
    assert_eq!(snapshot.len(), 3, "reservation, one record, one job");
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
