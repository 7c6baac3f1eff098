//! Slow consumer: a client that never reads is closed with 4000 once its
//! unsent bytes exceed --max-outbound, while a reading client gets everything.
mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;

#[test]
fn slow_consumer_is_closed_with_4000_and_reader_gets_everything() {
    let s = Server::start(&[
        "--max-outbound",
        "65536",
        "--idle-timeout",
        "600",
        "--ping-interval",
        "0",
    ]);
    s.grant("slowtok", "slow");
    s.grant("fasttok", "fast");
    let mut slow = s.ws_connect("slowtok");
    let mut fast = s.ws_connect("fasttok");

    // The fast client reads on its own thread and forwards contents.
    let (tx, rx) = mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        fast.get_ref()
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        loop {
            match fast.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    let done = v["content"]["done"] == json!(true);
                    tx.send(v).unwrap();
                    if done {
                        return fast; // keep the connection open
                    }
                }
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
                Ok(m) => panic!("fast reader got {m:?}"),
                Err(e) => panic!("fast reader error: {e}"),
            }
        }
    });

    let pad = "p".repeat(16 * 1024);
    let mut c = s.control_conn();
    let mut pushed = 0u64;
    let mut seqs = vec![];
    let mut slow_dropped = false;
    for i in 0..5000u64 {
        let r =
            c.request(&json!({"op":"push","users":["slow","fast"],"content":{"i":i,"pad":pad}}));
        assert_eq!(r["ok"], json!(true), "{r}");
        pushed += 1;
        seqs.push(r["seq"].as_u64().unwrap());
        let d = r["delivered"].as_u64().unwrap();
        if d < 2 {
            assert_eq!(d, 1, "the reading client must still be delivered to: {r}");
            slow_dropped = true;
            break;
        }
    }
    assert!(
        slow_dropped,
        "slow consumer never dropped after {pushed} pushes of 16 KiB"
    );

    // The slow client: data frames (a prefix of the pushes, in order) then close 4000.
    let (code, msgs) = expect_close_collect(&mut slow);
    assert_eq!(code, 4000, "slow consumer close code");
    for (k, m) in msgs.iter().enumerate() {
        let Message::Text(t) = m else {
            panic!("slow client got non-text {m:?}")
        };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        assert_eq!(
            v["content"]["i"],
            json!(k),
            "slow client's messages out of order"
        );
    }
    assert!(
        (msgs.len() as u64) < pushed,
        "slow client got every push although it was dropped"
    );

    // The reading client got all pushes, in order, then the marker.
    let r = c.request(&json!({"op":"push","users":["fast"],"content":{"done":true}}));
    assert_eq!(r["delivered"], json!(1), "{r}");
    let _fast = reader.join().expect("reader thread");
    let got: Vec<Value> = rx.iter().collect();
    assert_eq!(got.len() as u64, pushed + 1, "reader missed pushes");
    for (i, v) in got.iter().take(pushed as usize).enumerate() {
        assert_eq!(
            v["content"]["i"],
            json!(i),
            "reader's messages out of order"
        );
        assert_eq!(v["seq"], json!(seqs[i]));
        assert_eq!(
            v["content"]["pad"].as_str().map(|s| s.len()),
            Some(16 * 1024)
        );
    }

    s.wait_connections(1);
    let cl = s.clients(None);
    assert_eq!(cl.len(), 1);
    assert_eq!(cl[0]["user"], json!("fast"));
}

#[test]
fn reading_client_is_not_dropped_under_load() {
    // A client that keeps up is never closed, even with a small --max-outbound.
    let s = Server::start(&["--max-outbound", "65536", "--ping-interval", "0"]);
    s.grant("t", "alice");
    let mut ws = s.ws_connect("t");
    let mut c = s.control_conn();
    let pad = "q".repeat(16 * 1024);
    for i in 0..300 {
        let r = c.request(&json!({"op":"push","users":["alice"],"content":{"i":i,"pad":pad}}));
        assert_eq!(r["delivered"], json!(1), "push {i}: {r}");
        let m = recv_json(&mut ws);
        assert_eq!(m["content"]["i"], json!(i));
    }
}
