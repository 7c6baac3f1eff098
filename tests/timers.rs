//! Timers: read-idle eviction (4001), heartbeat keeps a connection alive,
//! server pings.
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn idle_connection_is_closed_with_4001() {
    let s = Server::start(&["--idle-timeout", "2", "--ping-interval", "0"]);
    s.grant("tok", "alice");
    let mut raw = s.raw_ws("/push/tok");
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let start = Instant::now();
    let f = raw.expect_close_frame();
    let elapsed = start.elapsed();
    assert_eq!(f.close_code(), Some(4001), "{f:?}");
    assert!(
        elapsed >= Duration::from_millis(1500),
        "closed too early: {elapsed:?}"
    );
    assert!(
        elapsed <= Duration::from_secs(5),
        "closed too late: {elapsed:?}"
    );
    raw.finish_close(4001);
    s.wait_connections(0);
}

#[test]
fn idle_eviction_with_tungstenite_client() {
    let s = Server::start(&["--idle-timeout", "1", "--ping-interval", "0"]);
    s.grant("tok", "alice");
    let mut ws = s.ws_connect("tok");
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_secs(6)))
        .unwrap();
    assert_eq!(expect_close(&mut ws), 4001);
}

#[test]
fn pushes_do_not_count_as_client_activity() {
    // Server->client traffic does not reset the read-idle timer.
    let s = Server::start(&["--idle-timeout", "2", "--ping-interval", "0"]);
    s.grant("tok", "alice");
    let mut raw = s.raw_ws("/push/tok");
    let start = Instant::now();
    let mut code = None;
    while start.elapsed() < Duration::from_secs(6) {
        let _ = s.control(json!({"op":"push","users":["alice"],"content":"tick"}));
        raw.stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        match raw.try_read_frame() {
            Ok(Some(f)) if f.opcode == OP_CLOSE => {
                code = f.close_code();
                break;
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("EOF without close frame"),
            Err(_) => {}
        }
    }
    assert_eq!(
        code,
        Some(4001),
        "not evicted although it never sent anything"
    );
    assert!(
        start.elapsed() <= Duration::from_secs(5),
        "evicted too late: {:?}",
        start.elapsed()
    );
}

#[test]
fn heartbeat_keeps_connection_alive() {
    let s = Server::start(&["--idle-timeout", "2", "--ping-interval", "0"]);
    s.grant("tok", "alice");
    let mut raw = s.raw_ws("/push/tok");
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let start = Instant::now();
    // 5 s of heartbeats every 500 ms: more than twice the idle timeout
    while start.elapsed() < Duration::from_secs(5) {
        raw.send_text("--");
        match raw.try_read_frame() {
            Ok(Some(f)) => panic!(
                "unexpected frame while sending heartbeats: {f:?} (close code {:?})",
                f.close_code()
            ),
            Ok(None) => panic!("connection closed while sending heartbeats"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{e}"
            ),
        }
    }
    raw.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let r = s.push(&["alice"], json!("alive"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    let mut ctl = vec![];
    let (_, data) = raw.read_message(&mut ctl);
    let m: serde_json::Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(m["content"], json!("alive"));

    // and once the heartbeats stop, eviction follows
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let start = Instant::now();
    assert_eq!(raw.expect_close(), 4001);
    assert!(
        start.elapsed() <= Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn pings_from_client_keep_connection_alive() {
    let s = Server::start(&["--idle-timeout", "2", "--ping-interval", "0"]);
    s.grant("tok", "alice");
    let mut raw = s.raw_ws("/push/tok");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let other = raw.sync();
        assert!(other.is_empty(), "unexpected frames: {other:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(raw.sync().is_empty());
}

#[test]
fn server_pings_at_interval() {
    let s = Server::start(&["--ping-interval", "1"]);
    s.grant("tok", "alice");
    let mut raw = s.raw_ws("/push/tok");
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(4)))
        .unwrap();
    let start = Instant::now();
    let f = raw.read_frame();
    assert_eq!(f.opcode, OP_PING, "expected a server ping, got {f:?}");
    assert!(!f.masked);
    assert!(
        start.elapsed() <= Duration::from_secs(3),
        "first ping after {:?}",
        start.elapsed()
    );
    // answer it and expect another one
    let pong = client_frame(true, OP_PONG, &f.payload);
    raw.send(&pong);
    let f2 = raw.read_frame();
    assert_eq!(f2.opcode, OP_PING, "expected a second ping, got {f2:?}");
}

#[test]
fn answered_server_pings_keep_connection_alive() {
    // A client that only answers pings (tungstenite does so automatically)
    // is not idle: pongs are frames. With 1 s timer granularity pings may
    // come up to ~2 s apart, so the idle timeout is 3 s and we stay 7 s.
    let s = Server::start(&["--idle-timeout", "3", "--ping-interval", "1"]);
    s.grant("tok", "alice");
    let mut ws = s.ws_connect("tok");
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(7) {
        match ws.read() {
            Ok(tungstenite::Message::Ping(_)) => {}
            Ok(m) => panic!("unexpected {m:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("connection broke: {e}"),
        }
    }
    ws.get_ref().set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let r = s.push(&["alice"], json!("alive"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut ws)["content"], json!("alive"));
}

#[test]
fn ping_interval_zero_disables_pings() {
    let s = Server::start(&["--ping-interval", "0", "--idle-timeout", "30"]);
    s.grant("tok", "alice");
    let mut raw = s.raw_ws("/push/tok");
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(3500)))
        .unwrap();
    match raw.try_read_frame() {
        Ok(Some(f)) => panic!("got a frame although pings are off: {f:?}"),
        Ok(None) => panic!("connection closed"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
}

#[test]
fn idle_timeout_from_env() {
    let s = Server::start_opts(ServerOpts {
        env: vec![
            ("WSPUSH_IDLE_TIMEOUT".into(), "1".into()),
            ("WSPUSH_PING_INTERVAL".into(), "0".into()),
        ],
        ..Default::default()
    });
    s.grant("tok", "alice");
    let mut raw = s.raw_ws("/push/tok");
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(6)))
        .unwrap();
    assert_eq!(raw.expect_close(), 4001);
}
