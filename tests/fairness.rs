//! One fast sender must not starve the loop: a client flooding pings, or a
//! control client pipelining requests as fast as it can, gets a bounded
//! share of each loop turn, and everyone else is still served meanwhile.
mod common;

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// How long a flood may run at most, whatever happens.
const FLOOD_CAP: Duration = Duration::from_secs(15);

/// Run `flood` on a thread until the returned flag is set (or the cap).
fn spawn_flood(mut flood: impl FnMut() -> bool + Send + 'static) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let started = Instant::now();
        while !flag.load(Ordering::Relaxed) && started.elapsed() < FLOOD_CAP {
            if !flood() {
                return;
            }
        }
    });
    stop
}

#[test]
fn a_ping_flood_does_not_starve_other_clients() {
    let s = Server::start(&["--ping-interval", "0"]);
    s.grant("flood", "flooder");
    s.grant("calm", "reader");
    let mut reader = s.ws_connect("calm");
    let mut flooder = s.raw_ws("/push/flood").stream;
    let ping = client_frame(true, OP_PING, &[b'p'; 125]);
    let chunk: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 8000)
        .collect();
    let stop = spawn_flood(move || flooder.write_all(&chunk).is_ok());
    std::thread::sleep(Duration::from_millis(300));

    // Without a per-turn read budget the loop never leaves the flooder's
    // read loop: this push is never flushed and the reader times out.
    s.push(&["reader"], json!("still here"));
    let got: Value = recv_json(&mut reader);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(got["content"], json!("still here"));
}

#[test]
fn a_pipelining_control_client_does_not_starve_pushes() {
    let s = Server::start(&["--ping-interval", "0"]);
    s.grant("calm", "reader");
    let mut reader = s.ws_connect("calm");
    let greedy = s.control_conn();
    let mut writer = greedy.writer;
    let mut replies = greedy.reader;
    // Read the replies as fast as they come, so the server never pauses the
    // greedy client for unread replies: only fairness can stop it.
    std::thread::spawn(move || {
        let mut line = String::new();
        while matches!(replies.read_line(&mut line), Ok(n) if n > 0) {
            line.clear();
        }
    });
    let batch = b"{\"op\":\"stats\"}\n".repeat(10_000);
    let stop = spawn_flood(move || writer.write_all(&batch).is_ok());
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let r = s.push(&["reader"], json!("still here"));
    assert_eq!(r["delivered"], json!(1));
    let got: Value = recv_json(&mut reader);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(got["content"], json!("still here"));
    println!("push answered and delivered in {:?}", started.elapsed());
}
