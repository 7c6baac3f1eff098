//! Limits: `--allowed-origin` (403), `--max-conns-per-user` (the oldest is
//! closed with 1008), `--max-connections` under a burst of handshakes (503),
//! and running out of file descriptors (no crash, no spinning, accepting
//! again once descriptors are free).
mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

#[test]
fn allowed_origin_gives_403_to_other_origins() {
    let s = Server::start(&[
        "--allowed-origin",
        "http://ok.example",
        "--allowed-origin",
        "https://b.example:8443",
    ]);
    s.grant("tok1", "alice");
    let status = |origins: &[&str]| {
        let extra: Vec<(&str, &str)> = origins.iter().map(|o| ("Origin", *o)).collect();
        s.http(upgrade_request("/push/tok1", &[], &extra).as_bytes())
            .status
    };
    assert_eq!(status(&["http://ok.example"]), 101);
    assert_eq!(status(&["https://b.example:8443"]), 101);
    assert_eq!(status(&["HTTP://OK.EXAMPLE"]), 101, "case-insensitive");
    assert_eq!(
        status(&["http://ok.example:80"]),
        101,
        "the default port is no port"
    );
    assert_eq!(status(&[]), 101, "no Origin: a non-browser client");
    for bad in [
        "http://evil.example",
        "http://ok.example.evil.example",
        "http://ok.example:8080",
        "https://ok.example",
        "https://b.example",
        "null",
        "",
    ] {
        assert_eq!(status(&[bad]), 403, "Origin {bad:?}");
    }
    assert_eq!(
        status(&["http://ok.example", "http://evil.example"]),
        403,
        "every Origin header must be allowed"
    );
}

#[test]
fn max_conns_per_user_closes_the_oldest_with_1008() {
    let s = Server::start(&["--max-conns-per-user", "2", "--ping-interval", "0"]);
    s.grant("a", "alice");
    s.grant("b", "bob");
    let mut a1 = s.ws_connect("a");
    let mut a2 = s.ws_connect("a");
    let mut bob = s.ws_connect("b");
    let mut a3 = s.ws_connect("a");
    assert_eq!(expect_close(&mut a1), 1008);
    s.wait_connections(3);
    let r = s.push(&["alice", "bob"], json!("x"));
    assert_eq!(r["delivered"], json!(3), "{r}");
    for ws in [&mut a2, &mut a3, &mut bob] {
        assert_eq!(recv_json(ws)["content"], json!("x"));
    }
    // The cap keeps applying in age order.
    let mut a4 = s.ws_connect("a");
    assert_eq!(expect_close(&mut a2), 1008);
    s.push(&["alice"], json!("y"));
    assert_eq!(recv_json(&mut a3)["content"], json!("y"));
    assert_eq!(recv_json(&mut a4)["content"], json!("y"));
}

#[test]
fn a_burst_of_handshakes_past_max_connections_gets_503() {
    let s = Server::start(&["--max-connections", "2", "--handshake-timeout", "30"]);
    s.grant("tok1", "alice");
    let _open: Vec<_> = (0..2).map(|_| s.ws_connect("tok1")).collect();
    // 100 sockets that never send a request: up to 64 wait in their
    // handshake (so refused upgrades still get their answer), the rest are
    // answered 503 at once.
    let mut idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(s.addr).expect("connect"))
        .collect();
    let mut refused = 0;
    for c in &mut idle {
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut rest = Vec::new();
        let r = read_http_response(c, &mut rest);
        if r.status == 503 {
            refused += 1;
        }
    }
    assert!(refused >= 30, "only {refused} of 100 got 503");
    // A complete upgrade past the limit is 503 as well, and the server is fine.
    let r = s.http(upgrade_request("/push/tok1", &[], &[]).as_bytes());
    assert_eq!(r.status, 503, "{:?}", r.raw);
    assert_eq!(s.stats()["connections"], json!(2));
}

/// Under `prlimit --nofile=64`, 150 idle connections exhaust the server's
/// descriptors: accept fails with EMFILE and the rest wait in the listen
/// backlog. The server must neither die nor spin (it pauses accepting on a
/// 1 s timer), a control client that connected meanwhile must be served
/// once descriptors are free, and new clients are accepted again.
#[test]
fn file_descriptor_exhaustion_neither_kills_nor_spins() {
    let Some(prlimit) = find_program("prlimit") else {
        return skip_missing("prlimit (util-linux) not found");
    };
    let mut s = Server::start_opts(ServerOpts {
        args: ["--handshake-timeout", "60", "--ping-interval", "0"]
            .map(String::from)
            .to_vec(),
        wrapper: vec![
            prlimit.display().to_string(),
            "--nofile=64:64".into(),
            "--".into(),
        ],
        ..Default::default()
    });
    s.grant("tok1", "alice");
    let mut reader = s.ws_connect("tok1");
    // Connected before the flood: a new control client could not be accepted.
    let mut ctl = s.control_conn();

    let flood: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(s.addr).expect("loopback connect"))
        .collect();
    // Wait until the server holds every descriptor it may.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(s.pid()) < 64 {
        assert!(
            Instant::now() < deadline,
            "never saturated: {} fds",
            open_fds(s.pid())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A control client arrives while no descriptor is free.
    let control_path = s.control_path.clone();
    let late_control = std::thread::spawn(move || {
        let mut c = ControlConn::connect(&control_path);
        c.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        c.request(&json!({"op":"stats","id":"late"}))
    });

    let cpu_before = cpu_time(s.pid());
    let window = Duration::from_secs(3);
    std::thread::sleep(window);
    let cpu = cpu_time(s.pid()) - cpu_before;
    println!(
        "saturated at {} fds for {window:?}: server CPU time {cpu:?}",
        open_fds(s.pid())
    );
    assert!(s.is_running(), "the server died under EMFILE");
    assert!(
        cpu < Duration::from_millis(500),
        "the server spun while saturated: {cpu:?} CPU in {window:?}"
    );
    // Already upgraded clients are still served meanwhile.
    let r = ctl.request(&json!({"op":"push","content":"saturated"}));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut reader)["content"], json!("saturated"));

    drop(flood);
    let r: Value = late_control.join().expect("late control client");
    assert_eq!(r["id"], json!("late"), "{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ws = loop {
        match s.ws_try_connect_path("/push/tok1") {
            Ok(ws) => break ws,
            Err(e) => {
                assert!(Instant::now() < deadline, "never accepted again: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    s.push(&[], json!("after"));
    assert_eq!(recv_json(&mut ws)["content"], json!("after"));
    assert!(s.is_running());
}

/// While the server cannot accept (out of descriptors, or busy), new
/// connections wait in the listen backlog. mio's default of 128 made every
/// connect beyond it stall for a minute of SYN retries; a reconnect storm
/// of 500 clients now fits (the backlog is raised to somaxconn's cap).
#[test]
fn a_reconnect_storm_fits_in_the_listen_backlog() {
    let Some(prlimit) = find_program("prlimit") else {
        return skip_missing("prlimit (util-linux) not found");
    };
    let s = Server::start_opts(ServerOpts {
        args: ["--handshake-timeout", "60"].map(String::from).to_vec(),
        wrapper: vec![
            prlimit.display().to_string(),
            "--nofile=64:64".into(),
            "--".into(),
        ],
        ..Default::default()
    });
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(4096);
    let storm = 500.min(somaxconn);
    let held: Vec<TcpStream> = (0..storm)
        .map(|i| {
            TcpStream::connect_timeout(&s.addr, Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("connect {i} of {storm}: {e}"))
        })
        .collect();
    assert_eq!(held.len(), storm);
}
