//! Slow consumers at scale: 100 clients that never read and 10 that do,
//! 10,000 broadcast pushes. The non-readers are closed with 4000, the
//! readers get every message in order, and the server's RSS stays under
//! 100 × `--max-outbound` plus a small constant.
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;

const READERS: usize = 10;
const NON_READERS: usize = 100;
const PUSHES: u64 = 10_000;
/// Pushes in flight on the control connection before reading their replies.
const BATCH: u64 = 100;
const MAX_OUTBOUND: u64 = 64 * 1024;
/// RSS of the debug server with ~110 connections and no backlog, measured
/// at about 5 MiB, with headroom: the "small constant".
const BASE_RSS: u64 = 8 << 20;

#[test]
fn non_readers_are_closed_and_readers_get_everything_in_order() {
    let s = Server::start(&[
        "--max-outbound",
        &MAX_OUTBOUND.to_string(),
        "--ping-interval",
        "0",
    ]);
    s.grant("r", "reader");
    s.grant("n", "sleeper");
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let mut ws = s.ws_connect("r");
            ws.get_ref()
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            std::thread::spawn(move || {
                let mut seqs = Vec::with_capacity(PUSHES as usize);
                for i in 0..PUSHES {
                    let msg = match ws.read() {
                        Ok(Message::Text(t)) => t,
                        other => panic!("reader: message {i}: {other:?}"),
                    };
                    let v: Value = serde_json::from_str(msg.as_str()).unwrap();
                    assert_eq!(v["content"]["i"], json!(i), "out of order");
                    seqs.push(v["seq"].as_u64().unwrap());
                }
                (seqs, ws) // keep the connection open
            })
        })
        .collect();
    let mut sleepers: Vec<_> = (0..NON_READERS).map(|_| s.ws_connect("n")).collect();
    s.wait_connections((READERS + NON_READERS) as u64);

    // Sample the server's RSS while the pushes run.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak, pid) = (done.clone(), peak.clone(), s.pid());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let pad = "x".repeat(1000);
    let mut ctl = s.control_conn();
    let mut pushed_seqs = Vec::new();
    for start in (0..PUSHES).step_by(BATCH as usize) {
        for i in start..start + BATCH {
            ctl.send(&json!({"op":"push","content":{"i":i,"pad":pad}}));
        }
        for _ in 0..BATCH {
            let r = ctl.read_reply();
            assert_eq!(r["ok"], json!(true), "{r}");
            pushed_seqs.push(r["seq"].as_u64().unwrap());
        }
    }
    let mut open = Vec::new();
    for reader in readers {
        let (seqs, ws) = reader.join().expect("reader thread");
        assert_eq!(seqs, pushed_seqs);
        open.push(ws);
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    let stats = s.stats();
    assert_eq!(stats["slow_consumers"], json!(NON_READERS), "{stats}");
    assert_eq!(stats["connections"], json!(READERS), "{stats}");
    // A few of them, read at last: whatever was on the wire, then 4000.
    for ws in sleepers.iter_mut().take(3) {
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        assert_eq!(expect_close(ws), 4000);
    }

    let peak = peak.load(Ordering::Relaxed);
    let bound = NON_READERS as u64 * MAX_OUTBOUND + BASE_RSS;
    println!(
        "peak server RSS {} KiB (bound {} KiB = {NON_READERS} x {} KiB + {} KiB)",
        peak / 1024,
        bound / 1024,
        MAX_OUTBOUND / 1024,
        BASE_RSS / 1024
    );
    assert!(peak < bound, "peak RSS {peak} B over {bound} B");
}
