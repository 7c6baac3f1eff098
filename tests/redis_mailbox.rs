//! The mailbox of a cluster (`--redis` with `--mailbox`, docs/cluster.md,
//! "Mailbox"): a message for a user offline on every node is held in
//! Redis and reaches it once on whichever node it connects to; `?since=`
//! replays across nodes; `messages`, `delete` and `/api/collect` see the
//! shared records; a killed node's users count as offline once its lease
//! runs out; a Redis restarted empty learns again who is online. Each test
//! starts its own real redis-server (skipped without one, failed under
//! `WSPUSH_REQUIRE_EXTERNAL=1`).

mod common;
#[path = "common/redis.rs"]
mod redis;

use std::time::{Duration, Instant};

use common::*;
use redis::RedisServer;
use serde_json::{Value, json};

fn node(url: &str, id: &str) -> Server {
    Server::start(&[
        "--redis",
        url,
        "--node-id",
        id,
        "--ping-interval",
        "0",
        "--mailbox",
        "16",
    ])
}

/// Wait until the node's link is up.
fn wait_up(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.stats()["redis"] != json!("up") {
        assert!(
            Instant::now() < deadline,
            "link not up: {}",
            s.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

fn pair(redis: &RedisServer) -> (Server, Server) {
    let (a, b) = (node(&redis.url(), "A"), node(&redis.url(), "B"));
    for s in [&a, &b] {
        wait_up(s);
        s.grant("t-alice", "alice");
        s.grant("t-bob", "bob");
    }
    (a, b)
}

fn push(s: &Server, users: &[&str], n: u64) -> Value {
    s.control(json!({"op": "push", "users": users, "content": {"n": n}}))
}

/// `content.n` of the next `n` messages, then nothing more.
fn receive(ws: &mut Ws, n: usize) -> Vec<u64> {
    let got: Vec<Value> = (0..n).map(|_| recv_json(ws)).collect();
    for pair in got.windows(2) {
        assert!(pair[0]["seq"].as_u64() < pair[1]["seq"].as_u64(), "{got:?}");
    }
    expect_silence(ws, Duration::from_millis(300));
    got.iter()
        .map(|m| m["content"]["n"].as_u64().unwrap())
        .collect()
}

fn collect(s: &Server, token: &str, query: &str) -> HttpResponse {
    let request = format!(
        "GET /api/collect{query} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    s.http(request.as_bytes())
}

#[test]
fn a_held_message_reaches_the_user_once_on_the_other_node() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&redis);
    let r = push(&a, &["alice"], 1);
    let seq = r["seq"].as_u64().unwrap();
    assert_eq!(
        r,
        json!({"ok": true, "messageId": format!("R-{seq}"), "seq": seq, "delivered": 0, "queued": 1})
    );
    let job = json!({"users": ["alice"], "content": {"n": 2}}).to_string();
    assert_eq!(
        redis.cli(&["FCALL", "wspush_push", "0", "wspush", &job]),
        (seq + 1).to_string()
    );
    let page = b.control(json!({"op": "messages", "user": "alice"}));
    let statuses: Vec<&Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["status"])
        .collect();
    assert_eq!(statuses, [&json!("held"), &json!("held")], "{page}");

    let mut on_b = b.ws_connect("t-alice");
    assert_eq!(receive(&mut on_b, 2), [1, 2], "held, then delivered on B");
    let stats = b.stats();
    assert!(
        stats.get("mailbox").is_none(),
        "no local mailbox rows: {stats}"
    );
    let mut on_a = a.ws_connect("t-alice");
    expect_silence(&mut on_a, Duration::from_millis(300));
    let r = push(&a, &["alice", "bob"], 3);
    assert_eq!(
        (&r["delivered"], &r["queued"]),
        (&json!(1), &json!(1)),
        "alice live on A (B's delivery is not counted), bob held: {r}"
    );
    assert_eq!(receive(&mut on_a, 1), [3]);
    assert_eq!(receive(&mut on_b, 1), [3]);

    let page = a.control(json!({"op": "messages", "status": "held"}));
    let held: Vec<(&Value, &Value)> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (&m["user"], &m["seq"]))
        .collect();
    assert_eq!(held, [(&json!("bob"), &json!(seq + 2))], "{page}");
    let delivered = b.control(json!({"op": "messages", "user": "alice", "status": "delivered"}));
    assert_eq!(delivered["messages"].as_array().unwrap().len(), 3);

    let deleted = b.control(json!({"op": "delete", "messageId": format!("R-{}", seq + 2)}));
    assert_eq!(deleted, json!({"ok": true, "deleted": 2}));
    let mut bob = a.ws_connect("t-bob");
    expect_silence(&mut bob, Duration::from_millis(300));
    let page = a.control(json!({"op": "messages", "user": "bob"}));
    assert_eq!(page["messages"], json!([]), "{page}");
}

#[test]
fn since_replays_from_the_shared_history_on_another_node() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&redis);
    let mut on_a = a.ws_connect("t-alice");
    let first = push(&a, &["alice"], 1)["seq"].as_u64().unwrap();
    push(&b, &["alice"], 2);
    push(&a, &["alice"], 3);
    assert_eq!(receive(&mut on_a, 3), [1, 2, 3]);
    drop(on_a);

    let mut on_b = b.ws_connect_path(&format!("/push/t-alice?since={first}"));
    assert_eq!(receive(&mut on_b, 2), [2, 3], "everything after {first}");
    // A since above every seq of the channel says nothing about what the
    // client has: it gets what is held (nothing).
    let mut fresh = a.ws_connect_path("/push/t-alice?since=999999");
    expect_silence(&mut fresh, Duration::from_millis(300));
    // Over HTTP too, from either node.
    let r = collect(&a, "t-alice", &format!("?since={first}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let got: Vec<Value> = serde_json::from_str(&r.body).unwrap();
    let ns: Vec<&Value> = got.iter().map(|m| &m["content"]["n"]).collect();
    assert_eq!(ns, [&json!(2), &json!(3)]);
}

#[test]
fn collect_takes_what_is_held_on_any_node() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&redis);
    push(&a, &["bob"], 7);
    let r = collect(&b, "t-bob", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let got: Vec<Value> = serde_json::from_str(&r.body).unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["content"], json!({"n": 7}));
    let again = collect(&a, "t-bob", "");
    assert_eq!(again.body.trim(), "[]", "collected once");
    let mut bob = a.ws_connect("t-bob");
    expect_silence(&mut bob, Duration::from_millis(300));
}

#[test]
fn a_killed_nodes_users_count_as_offline_once_its_lease_runs_out() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (mut a, b) = pair(&redis);
    let mut alice = a.ws_connect("t-alice");
    // Once a push has reached it, the connection's catch-up is over and
    // Redis knows alice is on A.
    push(&b, &["alice"], 0);
    assert_eq!(receive(&mut alice, 1), [0]);
    let r = push(&b, &["alice"], 0);
    assert_eq!(r["queued"], json!(0), "alice is online on A: {r}");
    a.kill9();
    // The lease lasts 15 s: until it runs out pushes count alice online.
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut n = 0;
    let held_from = loop {
        n += 1;
        let r = push(&b, &["alice"], n);
        if r["queued"] == json!(1) {
            break n;
        }
        assert!(Instant::now() < deadline, "still online after 25 s: {r}");
        std::thread::sleep(Duration::from_millis(500));
    };
    push(&b, &["alice"], n + 1);
    let mut on_b = b.ws_connect("t-alice");
    let expected: Vec<u64> = (held_from..=n + 1).collect();
    assert_eq!(receive(&mut on_b, expected.len()), expected);
}

#[test]
fn a_redis_restarted_empty_learns_again_who_is_online() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = pair(&redis);
    let mut alice = a.ws_connect("t-alice");
    assert_eq!(push(&b, &["alice"], 0)["queued"], json!(0));
    assert_eq!(receive(&mut alice, 1), [0]);
    redis.restart();
    for s in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stats = s.stats();
            if stats["redis"] == json!("up") && stats["redis_reconnects"] == json!(1) {
                break;
            }
            assert!(Instant::now() < deadline, "not back: {stats}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let r = push(&b, &["alice"], 1);
    assert_eq!(
        (&r["ok"], &r["queued"]),
        (&json!(true), &json!(0)),
        "A registered alice again: {r}"
    );
    assert_eq!(receive(&mut alice, 1), [1]);
    let r = push(&b, &["bob"], 2);
    assert_eq!(r["queued"], json!(1), "{r}");
}

/// A node with these mailbox bounds.
fn bounded(redis: &RedisServer, id: &str, bounds: &[&str]) -> Server {
    let url = redis.url();
    let mut args = vec!["--redis", &url, "--node-id", id, "--ping-interval", "0"];
    args.extend_from_slice(bounds);
    let s = Server::start(&args);
    wait_up(&s);
    s.grant("t-bob", "bob");
    s
}

#[test]
fn the_shared_mailbox_keeps_its_bounds() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // Per user: the newest 2; a keyed push replaces the held one with its key.
    let a = bounded(&redis, "A", &["--mailbox", "2"]);
    for n in 1..=3 {
        push(&a, &["bob"], n);
    }
    let keyed = |n: u64| json!({"op": "push", "users": ["carol"], "content": {"n": n}, "key": "k"});
    a.grant("t-carol", "carol");
    a.control(keyed(1));
    a.control(keyed(2));
    assert_eq!(receive(&mut a.ws_connect("t-bob"), 2), [2, 3]);
    assert_eq!(receive(&mut a.ws_connect("t-carol"), 1), [2]);
    drop(a);

    // TTL: gone after it, for every node.
    let b = bounded(&redis, "B", &["--mailbox", "16", "--mailbox-ttl", "1"]);
    push(&b, &["bob"], 4);
    std::thread::sleep(Duration::from_millis(1500));
    push(&b, &["bob"], 5);
    assert_eq!(receive(&mut b.ws_connect("t-bob"), 1), [5]);
    let page = b.control(json!({"op": "messages", "user": "bob"}));
    let ns: Vec<&Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["seq"])
        .collect();
    assert_eq!(ns.len(), 1, "the expired record is gone: {page}");
    drop(b);

    // Bytes: the oldest message goes first when the total is over.
    let c = bounded(&redis, "C", &["--mailbox", "16", "--mailbox-bytes", "1500"]);
    let big = "x".repeat(400);
    for n in 6..=8 {
        let job = json!({"op": "push", "users": ["bob"], "content": {"n": n, "pad": big}});
        assert_eq!(c.control(job)["queued"], json!(1));
    }
    let mut bob = c.ws_connect("t-bob");
    assert_eq!(
        receive(&mut bob, 2),
        [7, 8],
        "about 640 B each with the record overhead: two fit in 1,500"
    );
    assert_eq!(redis.cli(&["HLEN", "wspush:wspush:m"]), "2");
}

#[test]
fn connecting_during_a_stream_of_pushes_gets_every_one_once_in_order() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = bounded(&redis, "A", &["--mailbox", "1000"]);
    let b = bounded(&redis, "B", &["--mailbox", "1000"]);
    b.grant("t-alice", "alice");
    let control = a.control_conn();
    let producer = std::thread::spawn(move || {
        let mut control = control;
        let mut queued = Vec::new();
        for n in 1..=300u64 {
            let r =
                control.request(&json!({"op": "push", "users": ["alice"], "content": {"n": n}}));
            assert_eq!(r["ok"], json!(true), "{r}");
            queued.push(r["queued"].as_u64().unwrap());
            std::thread::sleep(Duration::from_millis(1));
        }
        queued
    });
    // Connect while the stream runs: what came before is held, what comes
    // after is live, and the catch-up merges the two.
    std::thread::sleep(Duration::from_millis(100));
    let mut alice = b.ws_connect("t-alice");
    let queued = producer.join().unwrap();
    let held = queued.iter().take_while(|&&q| q == 1).count();
    assert!(
        held > 0 && held < 300,
        "the connect came mid-stream: {queued:?}"
    );
    assert!(queued[held..].iter().all(|&q| q == 0), "{queued:?}");
    let mut got = Vec::new();
    alice
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    while let Ok(tungstenite::Message::Text(t)) = alice.read() {
        let m: Value = serde_json::from_str(t.as_str()).unwrap();
        got.push(m["content"]["n"].as_u64().unwrap());
        if got.len() == 300 {
            break;
        }
    }
    assert_eq!(got, (1..=300).collect::<Vec<u64>>(), "{held} were held");
    expect_silence(&mut alice, Duration::from_millis(300));
}
