//! Process lifecycle: SIGTERM / SIGINT shut down cleanly.
mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn shutdown_with(sig: i32) {
    let mut s = Server::start(&[]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let mut a = s.ws_connect("ta");
    let mut b = s.ws_connect("tb");
    let mut raw = s.raw_ws("/push/ta");
    s.wait_connections(3);
    assert!(s.control_path.exists());

    s.signal(sig);

    assert_eq!(expect_close(&mut a), 1001, "client a");
    assert_eq!(expect_close(&mut b), 1001, "client b");
    // tungstenite answered the close; the raw client answers too
    let code = raw.expect_close();
    assert_eq!(code, 1001, "raw client");
    raw.finish_close(1001);

    let st = s.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "exit status {st:?}");
    assert_eq!(st.code(), Some(0));
    assert!(!s.control_path.exists(), "control socket file not removed");
    // nothing listens any more
    assert!(
        std::net::TcpStream::connect(s.addr).is_err(),
        "still listening after exit"
    );
}

#[test]
fn sigterm_closes_clients_with_1001_removes_socket_exits_0() {
    shutdown_with(libc::SIGTERM);
}

#[test]
fn sigint_closes_clients_with_1001_removes_socket_exits_0() {
    shutdown_with(libc::SIGINT);
}

#[test]
fn sigterm_with_no_clients() {
    let mut s = Server::start(&[]);
    s.sigterm();
    let st = s.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(!s.control_path.exists());
}

#[test]
fn sigterm_with_unresponsive_client_still_exits() {
    // A client that never answers the close frame must not keep the server alive forever.
    let mut s = Server::start(&[]);
    s.grant("ta", "alice");
    let _raw = s.raw_ws("/push/ta"); // never reads, never answers
    s.wait_connections(1);
    s.sigterm();
    let st = s.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(!s.control_path.exists());
}

#[test]
fn sighup_does_not_stop_server() {
    let mut s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut ws = s.ws_connect("ta");
    s.sighup();
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.is_running(), "SIGHUP without --tokens killed the server");
    let r = s.push(&["alice"], json!("after hup"));
    assert_eq!(r["delivered"], json!(1));
    assert_eq!(recv_json(&mut ws)["content"], json!("after hup"));
}

#[test]
fn restart_on_same_control_path_after_sigterm() {
    let mut s = Server::start(&[]);
    let path = s.control_path.clone();
    s.sigterm();
    assert_eq!(s.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let dir = std::mem::replace(&mut s.dir, tempdir());
    let s2 = Server::start_opts(ServerOpts {
        dir: Some(dir),
        control_path: Some(path),
        ..Default::default()
    });
    assert_eq!(s2.stats()["ok"], json!(true));
}
