//! Nodes sharing a real `redis-server` (`--redis`, docs/cluster.md): one
//! seq, every push once and in order on every node, producers with only
//! redis-cli, Redis killed and restarted empty, a lost subscription
//! repaired, a stalled one found by the probe, a node killed. Each test
//! starts its own Redis; without redis-server the tests skip (and fail
//! under `WSPUSH_REQUIRE_EXTERNAL=1`).

mod common;
#[path = "common/redis.rs"]
mod redis;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use redis::RedisServer;
use serde_json::{Value, json};

fn node(url: &str, id: &str) -> Server {
    Server::start(&["--redis", url, "--node-id", id, "--ping-interval", "0"])
}

fn healthz(s: &Server) -> (u16, String) {
    let r = s.http(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    (r.status, r.body)
}

/// Poll `/healthz` until it answers `status`, at most `secs`.
fn wait_health(s: &Server, status: u16, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (got, body) = healthz(s);
        if got == status {
            if status == 503 {
                assert!(body.starts_with("redis: down"), "{body:?}");
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "healthz still {got} {body:?} after {secs} s; stderr:\n{}",
            s.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn push_from(s: &Server, body: Value) -> Value {
    let mut body = body;
    if body.get("op").is_none() {
        body["op"] = json!("push");
    }
    s.control(body)
}

/// The next `n` pushes a connection receives: their `content.n`, checking
/// that seqs rise; then nothing more.
fn receive(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut got: Vec<Value> = (0..n).map(|_| recv_json(ws)).collect();
    for pair in got.windows(2) {
        assert!(pair[0]["seq"].as_u64() < pair[1]["seq"].as_u64(), "{got:?}");
    }
    expect_silence(ws, Duration::from_millis(300));
    got.iter_mut().map(|m| m.take()).collect()
}

fn contents(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["content"]["n"].as_u64().unwrap())
        .collect()
}

fn follow(ws: &mut Ws, topic: &str) {
    let command = json!({"op": "subscribe", "topic": topic}).to_string();
    ws.send(tungstenite::Message::text(command)).unwrap();
    assert_eq!(recv_json(ws)["ok"], json!(true));
}

#[test]
fn two_nodes_deliver_every_push_exactly_once_in_order() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (node(&redis.url(), "A"), node(&redis.url(), "B"));
    wait_health(&a, 200, 10);
    wait_health(&b, 200, 10);
    for s in [&a, &b] {
        s.grant("t-alice", "alice");
        s.grant("t-bob", "bob");
        s.grant("t-carol", "carol");
    }
    let mut alice_a = a.ws_connect("t-alice");
    let mut carol_a = a.ws_connect("t-carol");
    let mut alice_b = b.ws_connect("t-alice");
    let mut bob_b = b.ws_connect("t-bob");
    follow(&mut carol_a, "news");
    follow(&mut bob_b, "news");

    let r1 = push_from(&a, json!({"users": ["alice"], "content": {"n": 1}}));
    let seq = r1["seq"].as_u64().unwrap();
    assert_eq!(
        r1,
        json!({"ok": true, "messageId": format!("R-{seq}"), "seq": seq, "delivered": 1, "queued": 0})
    );
    let r2 = push_from(&b, json!({"users": ["alice", "bob"], "content": {"n": 2}}));
    assert_eq!(r2["delivered"], json!(2), "{r2}");
    assert_eq!(r2["seq"].as_u64(), Some(seq + 1));
    let r3 = push_from(&a, json!({"content": {"n": 3}}));
    assert_eq!(r3["delivered"], json!(2), "alice and carol on A: {r3}");
    let r4 = push_from(
        &b,
        json!({"op": "publish", "topic": "news", "content": {"n": 4}}),
    );
    assert_eq!(r4["delivered"], json!(1), "bob on B: {r4}");
    assert!(r4.get("queued").is_none());
    let job = json!({"users": ["alice"], "content": {"n": 5}}).to_string();
    let r5 = redis.cli(&["FCALL", "wspush_push", "0", "wspush", &job]);
    assert_eq!(r5, (seq + 4).to_string());
    let job = json!({"topic": "news", "content": {"n": 6}}).to_string();
    redis.cli(&["FCALL", "wspush_push", "0", "wspush", &job]);

    let on_a = receive(&mut alice_a, 4);
    let on_b = receive(&mut alice_b, 4);
    assert_eq!(contents(&on_a), [1, 2, 3, 5]);
    assert_eq!(on_a, on_b, "the same envelopes on both nodes");
    assert_eq!(on_a[0]["messageId"], r1["messageId"]);
    assert_eq!(contents(&receive(&mut bob_b, 4)), [2, 3, 4, 6]);
    let carol = receive(&mut carol_a, 3);
    assert_eq!(contents(&carol), [3, 4, 6]);
    assert_eq!(carol[1]["topic"], json!("news"));
    for s in [&a, &b] {
        let stats = s.stats();
        assert_eq!(stats["redis"], json!("up"));
        assert_eq!(stats["redis_received"], json!(6), "{stats}");
        assert_eq!(stats["redis_gaps"], json!(0));
    }
}

#[test]
fn redis_restart_empty_keeps_seqs_rising_and_link_recovers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (node(&redis.url(), "A"), node(&redis.url(), "B"));
    wait_health(&a, 200, 10);
    wait_health(&b, 200, 10);
    a.grant("t-alice", "alice");
    b.grant("t-bob", "bob");
    let mut alice = a.ws_connect("t-alice");
    let mut bob = b.ws_connect("t-bob");
    let mut seqs = Vec::new();
    let mut n = 0;
    let mut burst = |count: usize, seqs: &mut Vec<u64>| {
        for i in 0..count {
            n += 1;
            let s = if i % 2 == 0 { &a } else { &b };
            let r = push_from(s, json!({"users": ["alice", "bob"], "content": {"n": n}}));
            assert_eq!(r["ok"], json!(true), "{r}");
            seqs.push(r["seq"].as_u64().unwrap());
        }
    };
    burst(10, &mut seqs);
    redis.kill();
    wait_health(&a, 503, 10);
    wait_health(&b, 503, 10);
    for s in [&a, &b] {
        let r = push_from(s, json!({"users": ["alice", "bob"], "content": {"n": 0}}));
        assert_eq!(r, json!({"ok": false, "error": "redis link down"}));
        assert_eq!(s.stats()["redis"], json!("down"));
    }
    redis.restart();
    wait_health(&a, 200, 15);
    wait_health(&b, 200, 15);
    let before = *seqs.iter().max().unwrap();
    burst(10, &mut seqs);
    assert!(
        seqs[10..].iter().all(|&s| s > before),
        "seqs went back after an empty Redis: {seqs:?}"
    );
    let expected: Vec<u64> = (1..=20).collect();
    for ws in [&mut alice, &mut bob] {
        let got = receive(ws, 20);
        assert_eq!(contents(&got), expected);
        let got_seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(got_seqs, seqs);
    }
    for s in [&a, &b] {
        assert!(s.stats()["redis_reconnects"].as_u64() >= Some(1));
        let metrics = s.http(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").body;
        assert!(metrics.contains("\nwspush_redis_up 1\n"), "{metrics}");
        assert!(metrics.contains("\nwspush_redis_reconnects_total 1\n"));
    }
}

#[test]
fn a_subscription_cut_off_is_repaired_from_the_recent_window() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (node(&redis.url(), "A"), node(&redis.url(), "B"));
    wait_health(&a, 200, 10);
    wait_health(&b, 200, 10);
    b.grant("t-bob", "bob");
    let mut bob = b.ws_connect("t-bob");
    assert_eq!(
        push_from(&a, json!({"content": {"n": 1}}))["ok"],
        json!(true)
    );
    // Cut B's subscriber; A's pushes meanwhile miss B's subscription.
    let clients = redis.cli(&["CLIENT", "LIST"]);
    let id = clients
        .lines()
        .find(|l| l.contains("name=wspush-B-sub"))
        .and_then(|l| l.strip_prefix("id="))
        .and_then(|l| l.split(' ').next())
        .expect("B's subscriber is named")
        .to_string();
    redis.cli(&["CLIENT", "KILL", "ID", &id]);
    for n in 2..=4 {
        let r = push_from(&a, json!({"content": {"n": n}}));
        assert_eq!(r["ok"], json!(true), "{r}");
    }
    assert_eq!(contents(&receive(&mut bob, 4)), [1, 2, 3, 4]);
    let stats = b.stats();
    assert_eq!(stats["redis_gaps"], json!(1), "{stats}");
    assert_eq!(stats["redis_lost"], json!(0));
}

/// A TCP relay to Redis that can stop forwarding without closing.
struct Relay {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    fn start(to: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            while flag.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            if into.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = into.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, frozen }
    }
}

#[test]
fn a_subscription_that_stops_delivering_is_found_by_the_probe() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let relay = Relay::start(redis.port);
    let a = node(&format!("redis://127.0.0.1:{}", relay.port), "A");
    wait_health(&a, 200, 10);
    // Both sockets stay open but nothing gets through either way.
    relay.frozen.store(true, Ordering::SeqCst);
    let stalled = Instant::now();
    wait_health(&a, 503, 15);
    let found = stalled.elapsed();
    assert!(found <= Duration::from_secs(12), "found after {found:?}");
    relay.frozen.store(false, Ordering::SeqCst);
    wait_health(&a, 200, 15);
    a.grant("t", "ann");
    let mut ws = a.ws_connect("t");
    let r = push_from(&a, json!({"users": ["ann"], "content": {"n": 1}}));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(contents(&receive(&mut ws, 1)), [1]);
    assert!(
        a.stderr_text()
            .contains("the subscription stopped delivering")
    );
}

#[test]
fn a_node_killed_does_not_stop_the_other() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (mut a, b) = (node(&redis.url(), "A"), node(&redis.url(), "B"));
    wait_health(&a, 200, 10);
    wait_health(&b, 200, 10);
    b.grant("t-bob", "bob");
    let mut bob = b.ws_connect("t-bob");
    a.kill9();
    let r = push_from(&b, json!({"users": ["bob"], "content": {"n": 1}}));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(contents(&receive(&mut bob, 1)), [1]);
    assert_eq!(healthz(&b).0, 200);
}

#[test]
fn a_node_without_redis_starts_and_says_it_is_down() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again: nobody listens there
    let s = node(&format!("redis://127.0.0.1:{port}"), "lonely");
    assert_eq!(healthz(&s), (503, "redis: down\n".to_string()));
    let r = push_from(&s, json!({"content": 1}));
    assert_eq!(r, json!({"ok": false, "error": "redis link down"}));
    assert_eq!(s.stats()["redis"], json!("down"));
    // Other requests are answered as usual.
    assert_eq!(s.control(json!({"op": "clients"}))["ok"], json!(true));
}

#[test]
fn a_plain_publish_is_relayed_once_by_the_leader() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (node(&redis.url(), "A"), node(&redis.url(), "B"));
    for s in [&a, &b] {
        wait_health(s, 200, 10);
        s.grant("t-alice", "alice");
    }
    // Each node learns of the other at its next lease renewal (5 s).
    let deadline = Instant::now() + Duration::from_secs(12);
    while [&a, &b]
        .iter()
        .any(|s| s.stats()["redis_nodes"] != json!(2))
    {
        assert!(Instant::now() < deadline, "the nodes never saw each other");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut on_a = a.ws_connect("t-alice");
    let mut on_b = b.ws_connect("t-alice");
    let job = json!({"op": "push", "users": ["alice"], "content": {"n": 1}}).to_string();
    redis.cli(&["PUBLISH", "wspush", &job]);
    let got_a = receive(&mut on_a, 1);
    assert_eq!(got_a, receive(&mut on_b, 1));
    assert_eq!(contents(&got_a), [1]);
    assert!(got_a[0]["seq"].as_u64() >= Some(1));
    assert_eq!(a.stats()["redis_plain"], json!(1), "A sorts first");
    assert_eq!(b.stats()["redis_plain"], json!(0));
}

#[test]
fn the_link_takes_its_settings_from_the_environment() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let s = Server::start_opts(ServerOpts {
        env: vec![
            ("WSPUSH_REDIS".into(), redis.url()),
            ("WSPUSH_REDIS_CHANNEL".into(), "plant-7".into()),
            ("WSPUSH_NODE_ID".into(), "gw1".into()),
        ],
        ..Default::default()
    });
    wait_health(&s, 200, 10);
    s.grant("t", "ann");
    let mut ws = s.ws_connect("t");
    let job = json!({"users": ["ann"], "content": {"n": 1}}).to_string();
    assert_eq!(
        redis.cli(&["FCALL", "wspush_push", "0", "plant-7", &job]),
        "1"
    );
    assert_eq!(contents(&receive(&mut ws, 1)), [1]);
    assert!(
        redis
            .cli(&["CLIENT", "LIST"])
            .contains("name=wspush-gw1-sub")
    );
    // Another channel's jobs do not reach it.
    redis.cli(&["FCALL", "wspush_push", "0", "wspush", &job]);
    expect_silence(&mut ws, Duration::from_millis(300));
}

#[test]
fn redis_killed_in_the_middle_of_a_stream_loses_no_acknowledged_push() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (a, b) = (node(&redis.url(), "A"), node(&redis.url(), "B"));
    wait_health(&a, 200, 10);
    wait_health(&b, 200, 10);
    b.grant("t-bob", "bob");
    let mut bob = b.ws_connect("t-bob");
    let stop = Arc::new(AtomicBool::new(false));
    let control = a.control_conn();
    let producer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut control = control;
            let mut replies = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                n += 1;
                let r =
                    control.request(&json!({"op": "push", "users": ["bob"], "content": {"n": n}}));
                replies.push((n, r));
                std::thread::sleep(Duration::from_millis(2));
            }
            replies
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    redis.kill();
    wait_health(&a, 503, 10);
    std::thread::sleep(Duration::from_millis(300));
    redis.restart();
    wait_health(&a, 200, 15);
    wait_health(&b, 200, 15);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let replies = producer.join().unwrap();

    let mut acked = Vec::new();
    let mut unsure = Vec::new();
    let mut refused = 0;
    for (n, r) in &replies {
        match (&r["ok"], r["error"].as_str()) {
            (Value::Bool(true), _) => acked.push(*n),
            (_, Some("redis link down")) => refused += 1,
            (_, Some(e)) if e.starts_with("redis link lost") => unsure.push(*n),
            _ => panic!("a reply that does not say what happened: {r}"),
        }
    }
    assert!(refused > 0, "some pushes met the outage: {replies:?}");
    let after = acked
        .iter()
        .filter(|&&n| n > replies.len() as u64 / 2)
        .count();
    assert!(
        after > 0,
        "pushes were acknowledged after the link came back"
    );
    // Bob gets every acknowledged push once, in order; at most the
    // unsure ones besides.
    let mut got = Vec::new();
    bob.get_mut()
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    while let Ok(tungstenite::Message::Text(t)) = bob.read() {
        let m: Value = serde_json::from_str(t.as_str()).unwrap();
        got.push(m["content"]["n"].as_u64().unwrap());
    }
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {got:?}"
    );
    let extra: Vec<u64> = got.iter().copied().filter(|n| !acked.contains(n)).collect();
    assert!(
        extra.iter().all(|n| unsure.contains(n)),
        "delivered but refused: {extra:?}"
    );
    let missing: Vec<u64> = acked.iter().copied().filter(|n| !got.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}"
    );
}
