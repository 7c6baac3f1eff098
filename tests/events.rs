//! Events: `{"op":"events"}` turns a control connection into a stream of
//! online / offline / upstream message events; slow listeners are cut off.
//! Also the `clients` fields device, connected_at and last_seen.
mod common;
#[path = "common/delivery.rs"]
mod delivery;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use delivery::*;
use serde_json::{Value, json};
use tungstenite::{Bytes, Message};

const EV: Duration = Duration::from_secs(5);

fn assert_ts(e: &Value, t0: u64, t1: u64) {
    let ts = e["ts"]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric ts: {e}"));
    assert!(
        ts + 1000 >= t0 && ts <= t1 + 1000,
        "ts {ts} not a Unix ms within [{t0}, {t1}]: {e}"
    );
}

#[test]
fn online_and_offline_events() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut l = Listener::start(&s);
    let t0 = now_ms();
    let ws = s.ws_connect_path("/push/ta?device=phone");
    let t1 = now_ms();
    let entry = client_entry(&s, &ws);
    let on = l.next_event(EV);
    assert_eq!(on["event"], json!("online"), "{on}");
    assert_eq!(on["user"], json!("alice"), "{on}");
    assert_eq!(on["connection"], entry["id"], "{on} vs clients {entry}");
    assert_eq!(on["peer"], entry["peer"], "{on} vs clients {entry}");
    assert_eq!(on["device"], json!("phone"), "{on}");
    assert_ts(&on, t0, t1);

    let t0 = now_ms();
    close_ws(ws);
    let off = l.next_event(EV);
    let t1 = now_ms();
    assert_eq!(off["event"], json!("offline"), "{off}");
    assert_eq!(off["user"], json!("alice"), "{off}");
    assert_eq!(off["connection"], entry["id"], "{off}");
    assert_ts(&off, t0, t1);
}

#[test]
fn kicked_and_dropped_connections_give_offline_events() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let mut l = Listener::start(&s);
    let mut a = s.ws_connect("ta");
    let b = s.ws_connect("tb");
    let ida = client_entry(&s, &a)["id"].clone();
    let idb = client_entry(&s, &b)["id"].clone();
    assert_eq!(l.expect_kind("online")["connection"], ida);
    assert_eq!(l.expect_kind("online")["connection"], idb);
    let r = ok(&s, json!({"op":"kick","connection":ida}));
    assert_eq!(r["closed"], json!(1), "{r}");
    assert_eq!(expect_close(&mut a), 1008);
    let off = l.expect_kind("offline");
    assert_eq!(off["connection"], ida, "{off}");
    assert_eq!(off["user"], json!("alice"));
    // a TCP drop without a close handshake
    drop(b);
    let off = l.expect_kind("offline");
    assert_eq!(off["connection"], idb, "{off}");
    assert_eq!(off["user"], json!("bob"));
}

#[test]
fn upstream_text_and_binary_messages() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut ws = s.ws_connect("ta");
    let id = client_entry(&s, &ws)["id"].clone();
    let mut l = Listener::start(&s);

    let t0 = now_ms();
    send_text(&mut ws, "hello server ✓");
    let e = l.next_event(EV);
    let t1 = now_ms();
    assert_eq!(e["event"], json!("message"), "{e}");
    assert_eq!(e["user"], json!("alice"), "{e}");
    assert_eq!(e["connection"], id, "{e}");
    assert_eq!(e["text"], json!("hello server ✓"), "{e}");
    assert!(e.get("binary").is_none(), "{e}");
    assert_ts(&e, t0, t1);

    let bin: Vec<u8> = vec![0, 1, 2, 0xff, 0xfe, b'\n', b'"'];
    ws.send(Message::Binary(Bytes::from(bin.clone()))).unwrap();
    let e = l.next_event(EV);
    assert_eq!(e["event"], json!("message"), "{e}");
    assert_eq!(e["connection"], id, "{e}");
    let b64 = e["binary"]
        .as_str()
        .unwrap_or_else(|| panic!("no binary: {e}"));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|err| panic!("binary is not standard base64 ({err}): {e}"));
    assert_eq!(decoded, bin);
    assert!(e.get("text").is_none(), "{e}");

    // JSON that is not a topic command is upstream too, passed on verbatim
    let raw = r#"{"op":"hello","n":[1,2]}"#;
    send_text(&mut ws, raw);
    let e = l.next_event(EV);
    assert_eq!(e["text"], json!(raw), "{e}");

    // an empty text message is still a message
    send_text(&mut ws, "");
    let e = l.next_event(EV);
    assert_eq!(e["event"], json!("message"), "{e}");
    assert_eq!(e["text"], json!(""), "{e}");
}

#[test]
fn heartbeats_switches_and_topic_commands_are_not_upstream() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut ws = s.ws_connect("ta");
    let mut l = Listener::start(&s);
    send_text(&mut ws, "--");
    send_text(&mut ws, "unsubscribe");
    send_text(&mut ws, "subscribe");
    send_json(&mut ws, &json!({"op":"subscribe","topic":"x"}));
    assert_eq!(recv_json(&mut ws)["ok"], json!(true));
    send_json(&mut ws, &json!({"op":"unsubscribe","topic":"x"}));
    assert_eq!(recv_json(&mut ws)["ok"], json!(true));
    sync(&mut ws); // pings are not upstream either
    send_text(&mut ws, "marker");
    let e = l.next_event(EV);
    assert_eq!(
        e["text"],
        json!("marker"),
        "a heartbeat, switch, ping or topic command became an event: {e}"
    );
    assert!(l.try_event(Duration::from_millis(300)).is_none());
}

#[test]
fn fragmented_upstream_message_is_one_event() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut raw = s.raw_ws("/push/ta");
    let mut l = Listener::start(&s);
    raw.send_frame(false, OP_TEXT, b"frag");
    raw.send_frame(false, OP_CONT, b"men");
    raw.send_frame(true, OP_CONT, b"ted");
    let e = l.next_event(EV);
    assert_eq!(e["event"], json!("message"), "{e}");
    assert_eq!(e["text"], json!("fragmented"), "{e}");
}

#[test]
fn every_listener_gets_every_event() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut l1 = Listener::start(&s);
    let mut l2 = Listener::start(&s);
    let mut l3 = Listener::start(&s);
    let mut ws = s.ws_connect("ta");
    send_text(&mut ws, "one");
    send_text(&mut ws, "two");
    sync(&mut ws);
    close_ws(ws);
    for l in [&mut l1, &mut l2, &mut l3] {
        let kinds: Vec<Value> = (0..4)
            .map(|_| {
                let e = l.next_event(EV);
                json!([e["event"], e.get("text").cloned().unwrap_or(Value::Null)])
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                json!(["online", null]),
                json!(["message", "one"]),
                json!(["message", "two"]),
                json!(["offline", null]),
            ]
        );
    }
}

#[test]
fn requests_on_a_listener_are_ignored() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut l = Listener::start(&s);
    l.conn.send(&json!({"op":"stats"}));
    l.conn
        .send(&json!({"op":"push","content":"from a listener"}));
    l.conn.send_raw(b"not even json\n").unwrap();
    let mut ws = s.ws_connect("ta");
    let e = l.next_event(EV);
    assert_eq!(
        e["event"],
        json!("online"),
        "a request on a listener was answered: {e}"
    );
    // the ignored push was not executed
    assert!(
        sync_json(&mut ws).is_empty(),
        "a push sent on a listener was executed"
    );
    assert_eq!(s.stats()["pushes"], json!(0));
}

#[test]
fn listener_going_away_changes_nothing() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let l1 = Listener::start(&s);
    let mut l2 = Listener::start(&s);
    drop(l1);
    let mut ws = s.ws_connect("ta");
    send_text(&mut ws, "still");
    assert_eq!(l2.expect_kind("message")["text"], json!("still"));
    let r = s.push(&["alice"], json!("push"));
    assert_eq!(r["delivered"], json!(1));
    assert_eq!(recv_json(&mut ws)["content"], json!("push"));
}

#[test]
fn slow_listener_is_cut_off_and_everyone_else_carries_on() {
    const COUNT: usize = 3000;
    const SIZE: usize = 1000; // ~3 MB of upstream text in all
    let s = Server::start(&["--ping-interval", "0"]);
    s.grant("ta", "alice");
    let mut ws = s.ws_connect("ta");
    let mut slow = Listener::start(&s); // never reads until the end
    let mut fast = Listener::start(&s);

    let (tx, rx) = mpsc::channel::<Result<usize, String>>();
    let reader = std::thread::spawn(move || {
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while n < COUNT {
            let left = deadline.saturating_duration_since(Instant::now());
            match fast.next_line(left) {
                Ok(Some(line)) => {
                    let e: Value = match serde_json::from_str(&line) {
                        Ok(e) => e,
                        Err(err) => {
                            let _ = tx.send(Err(format!("bad line ({err}): {line:.200}")));
                            return fast;
                        }
                    };
                    if e["event"] != json!("message") {
                        continue;
                    }
                    let want = format!("up-{n:05}-");
                    let ok_text = e["text"]
                        .as_str()
                        .is_some_and(|t| t.starts_with(&want) && t.len() == SIZE);
                    if !ok_text {
                        let _ = tx.send(Err(format!("event {n} wrong: {:.200}", line)));
                        return fast;
                    }
                    n += 1;
                }
                Ok(None) => {
                    let _ = tx.send(Err(format!("reading listener closed after {n} events")));
                    return fast;
                }
                Err(err) => {
                    let _ = tx.send(Err(format!("reading listener: {err} after {n} events")));
                    return fast;
                }
            }
        }
        let _ = tx.send(Ok(n));
        fast
    });

    for i in 0..COUNT {
        let mut t = format!("up-{i:05}-");
        t.push_str(&"m".repeat(SIZE - t.len()));
        ws.send(Message::text(t))
            .expect("client send (server stopped reading it?)");
    }
    sync(&mut ws); // the server has read everything the client sent

    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(n)) => assert_eq!(n, COUNT),
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("reading listener did not get all events in time"),
    }
    let mut fast = reader.join().unwrap();

    // the server still answers, and clients still work
    let st = s.stats();
    assert_eq!(st["connections"], json!(1), "{st}");
    let r = s.push(&["alice"], json!("after"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut ws)["content"], json!("after"));

    // the slow listener was disconnected: reading it now ends in EOF, after
    // fewer than all events, the last complete line possibly an error event
    let mut lines = vec![];
    let end = loop {
        match slow.next_line(Duration::from_secs(5)) {
            Ok(Some(line)) => lines.push(line),
            Ok(None) => break "eof",
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!(
                "slow listener was never cut off: {e} after {} lines (last {:.200?})",
                lines.len(),
                lines.last()
            ),
        }
    };
    let messages = lines
        .iter()
        .filter(|l| l.contains("\"event\":\"message\""))
        .count();
    assert!(
        messages < COUNT,
        "slow listener got all {COUNT} events before it was cut off ({end})"
    );
    // every complete line but the last is a JSON event in order
    for (i, line) in lines.iter().enumerate().take(lines.len().saturating_sub(1)) {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("slow listener line {i} is not JSON ({e}): {line:.200}"));
    }
    if let Some(last) = lines.last()
        && let Ok(v) = serde_json::from_str::<Value>(last)
        && v["event"] != json!("message")
        && v["event"] != json!("online")
    {
        assert_eq!(v["event"], json!("error"), "unexpected final line {v}");
    }

    // the other listener still gets events
    close_ws(ws);
    assert_eq!(fast.expect_kind("offline")["user"], json!("alice"));
}

// ---------------------------------------------------------------------------
// clients: device, connected_at, last_seen
// ---------------------------------------------------------------------------

#[test]
fn device_from_query_or_user_agent() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let q = s.ws_connect_path("/push/ta?device=kitchen-tablet");
    assert_eq!(client_entry(&s, &q)["device"], json!("kitchen-tablet"));
    let ua = ws_connect_headers(&s, "/push/ta", &[("User-Agent", "WsPushTest/2.1 (x)")]);
    assert_eq!(client_entry(&s, &ua)["device"], json!("WsPushTest/2.1 (x)"));
    let both = ws_connect_headers(
        &s,
        "/push/ta?device=phone",
        &[("User-Agent", "SomeBrowser/1.0")],
    );
    assert_eq!(
        client_entry(&s, &both)["device"],
        json!("phone"),
        "?device must win over the User-Agent"
    );
    // the online event carries the same device
    let mut l = Listener::start(&s);
    let _ua2 = ws_connect_headers(&s, "/push/ta", &[("User-Agent", "Agent/3")]);
    assert_eq!(l.expect_kind("online")["device"], json!("Agent/3"));
}

#[test]
fn connected_at_and_last_seen() {
    let s = Server::start(&["--ping-interval", "0"]);
    s.grant("ta", "alice");
    let t0 = now_ms();
    let mut ws = s.ws_connect("ta");
    let t1 = now_ms();
    let e = client_entry(&s, &ws);
    let connected = e["connected_at"]
        .as_u64()
        .unwrap_or_else(|| panic!("connected_at: {e}"));
    let seen = e["last_seen"]
        .as_u64()
        .unwrap_or_else(|| panic!("last_seen: {e}"));
    assert!(
        connected + 200 >= t0 && connected <= t1 + 200,
        "connected_at {connected} not within [{t0}, {t1}]: {e}"
    );
    assert!(seen >= connected, "{e}");
    assert!(seen <= now_ms() + 200, "{e}");

    // no client frames (server pushes do not count): last_seen stays
    s.push(&["alice"], json!("x"));
    assert_eq!(recv_json(&mut ws)["content"], json!("x"));
    expect_silence(&mut ws, Duration::from_millis(1200));
    let e2 = client_entry(&s, &ws);
    assert_eq!(
        e2["last_seen"],
        json!(seen),
        "last_seen moved without client frames"
    );
    assert_eq!(e2["connected_at"], json!(connected));

    // a client frame moves it forward (to about now)
    let before = now_ms();
    send_text(&mut ws, "--");
    sync(&mut ws);
    let e3 = client_entry(&s, &ws);
    let seen3 = e3["last_seen"].as_u64().unwrap();
    assert!(
        seen3 > seen,
        "last_seen did not advance after a frame: {e3}"
    );
    assert!(
        seen3 + 200 >= before && seen3 <= now_ms() + 200,
        "last_seen {seen3} is not the time of the frame (~{before}): {e3}"
    );
    assert_eq!(e3["connected_at"], json!(connected));
}

#[test]
fn a_request_behind_events_in_the_same_write_is_ignored() {
    let s = Server::start(&[]);
    let mut c = s.control_conn();
    c.send_raw(b"{\"op\":\"events\"}\n{\"op\":\"push\",\"content\":\"behind events\"}\n")
        .unwrap();
    assert_eq!(c.read_reply(), json!({"ok": true}));
    assert_eq!(s.stats()["pushes"], json!(0), "the push behind events ran");
}
