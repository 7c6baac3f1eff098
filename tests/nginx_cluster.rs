//! Two wspush nodes sharing a real Redis behind a real nginx, with the
//! config shipped in `tools/nginx/cluster.conf`: clients connect through
//! nginx, land on both nodes, and pushes given to either node reach all of
//! them once. Without nginx or redis-server the test skips (and fails under
//! `WSPUSH_REQUIRE_EXTERNAL=1`).

mod common;
#[path = "common/nginx.rs"]
mod nginx;
#[path = "common/redis.rs"]
mod redis;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use redis::RedisServer;
use serde_json::json;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx on a free port with the shipped config, in front of `nodes`.
fn start_nginx(dir: &Path, nodes: [SocketAddr; 2]) -> (nginx::Nginx, u16) {
    let port = free_port();
    let upstream = |addr| format!("    server {addr} max_fails=1 fail_timeout=10s;");
    let site = nginx::site(
        "cluster.conf",
        &[
            ("# test: node a", upstream(nodes[0])),
            ("# test: node b", upstream(nodes[1])),
            ("# test: listen", format!("    listen 127.0.0.1:{port};")),
        ],
    );
    (nginx::start(dir, &site, port), port)
}

/// A node on a fixed free port (nginx's upstream names it).
fn node(url: &str, id: &str) -> Server {
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["--redis", url, "--node-id", id, "--listen", &listen];
    Server::start_opts(ServerOpts {
        args: args.iter().map(|a| a.to_string()).collect(),
        listen_arg: false,
        ..Default::default()
    })
}

fn wait_up(s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.http(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").status != 200 {
        assert!(Instant::now() < deadline, "the Redis link never came up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connect_through(port: u16, token: &str) -> Ws {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/push/{token}");
    tungstenite::client::client(url.as_str(), stream)
        .expect("upgrade through nginx")
        .0
}

#[test]
fn nginx_spreads_clients_over_two_nodes_and_pushes_reach_all() {
    if find_program("nginx").is_none() {
        return skip_missing("nginx not found (Debian package nginx)");
    }
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let nodes = [node(&redis.url(), "A"), node(&redis.url(), "B")];
    let users: Vec<String> = (0..8).map(|i| format!("u{i}")).collect();
    for s in &nodes {
        wait_up(s);
        for u in &users {
            s.grant(&format!("t-{u}"), u);
        }
    }
    let dir = tempdir();
    let (_nginx, port) = start_nginx(dir.path(), [nodes[0].addr, nodes[1].addr]);
    let mut clients: Vec<Ws> = users
        .iter()
        .map(|u| connect_through(port, &format!("t-{u}")))
        .collect();
    let held = [nodes[0].clients(None).len(), nodes[1].clients(None).len()];
    assert_eq!(held[0] + held[1], 8, "{held:?}");
    assert!(held[0] > 0 && held[1] > 0, "nginx used one node: {held:?}");

    let everyone = nodes[0].control(json!({"op": "push", "content": {"n": 1}}));
    assert_eq!(everyone["ok"], json!(true), "{everyone}");
    let some = nodes[1].push(&["u3", "u6"], json!({"n": 2}));
    assert_eq!(some["ok"], json!(true), "{some}");
    for (i, ws) in clients.iter_mut().enumerate() {
        let first = recv_json(ws);
        assert_eq!(first["content"], json!({"n": 1}));
        assert_eq!(first["seq"], everyone["seq"]);
        if i == 3 || i == 6 {
            let second = recv_json(ws);
            assert_eq!(second["content"], json!({"n": 2}));
            assert_eq!(second["messageId"], some["messageId"]);
        }
        expect_silence(ws, Duration::from_millis(200));
    }
}
