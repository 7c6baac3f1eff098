//! `wspush-conns`: open N upgraded WebSocket connections to a wspush server
//! and either hold them (for memory figures) or measure how long one
//! broadcast push takes to reach all of them.
//!
//! ```text
//! wspush-conns --addr 127.0.0.1:7001 --control ./wspush.sock --count 1000 hold 30
//! wspush-conns --addr 127.0.0.1:7001 --control ./wspush.sock --count 1000 fanout 5
//! ```
//!
//! Tokens `bench-{i}` for users `bench-{i}` are granted over the control
//! socket first (one user per connection: the worst case for the server's
//! per-user tables); `--shared` uses one token and user for all. `hold SECS` prints the server's `stats` and sleeps.
//! `fanout ROUNDS` pushes one broadcast per round and prints, per round, the
//! time from writing the push request to the last connection receiving its
//! frame, as JSON lines. The loop is bounded: every wait has a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};

struct Opts {
    addr: SocketAddr,
    control: String,
    count: usize,
    mode: String,
    arg: u64,
    /// All connections use one token and one user (isolates the cost of a
    /// connection from the cost of a user and a token).
    shared: bool,
}

fn parse() -> Opts {
    let mut args = std::env::args().skip(1);
    let mut o = Opts {
        addr: "127.0.0.1:7001".parse().expect("valid default"),
        control: "./wspush.sock".into(),
        count: 1000,
        mode: "hold".into(),
        arg: 10,
        shared: false,
    };
    let mut rest = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => {
                o.addr = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--addr HOST:PORT")
            }
            "--control" => o.control = args.next().expect("--control PATH"),
            "--count" => o.count = args.next().and_then(|v| v.parse().ok()).expect("--count N"),
            "--shared" => o.shared = true,
            "-h" | "--help" => {
                eprintln!(
                    "usage: wspush-conns [--addr A] [--control PATH] [--count N] [--shared] (hold SECS | fanout ROUNDS)"
                );
                std::process::exit(0);
            }
            _ => rest.push(a),
        }
    }
    if let Some(m) = rest.first() {
        o.mode = m.clone();
    }
    if let Some(n) = rest.get(1) {
        o.arg = n.parse().expect("a number after the mode");
    }
    o
}

/// One control connection used for many requests.
struct Control {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Control {
    fn open(path: &str) -> Control {
        let writer = UnixStream::connect(path).expect("connect to the control socket");
        let reader = BufReader::new(writer.try_clone().expect("clone"));
        Control { writer, reader }
    }

    /// Send many requests, then read their replies (pipelined).
    fn batch(&mut self, requests: &[Value]) -> Vec<Value> {
        let mut out = Vec::new();
        for r in requests {
            out.extend_from_slice(r.to_string().as_bytes());
            out.push(b'\n');
        }
        self.writer.write_all(&out).expect("write requests");
        (0..requests.len())
            .map(|_| {
                let mut line = String::new();
                self.reader.read_line(&mut line).expect("read reply");
                serde_json::from_str(&line).expect("JSON reply")
            })
            .collect()
    }
}

fn upgrade(addr: SocketAddr, token: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let req = format!(
        "GET /push/{token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("send upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read the 101");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "upgrade refused: {}",
        String::from_utf8_lossy(&head)
    );
    s.set_nonblocking(true).expect("nonblocking");
    let _ = s.set_nodelay(true);
    s
}

fn main() {
    let o = parse();
    let mut control = Control::open(&o.control);
    let token = |i: usize| {
        if o.shared {
            "bench-shared".to_string()
        } else {
            format!("bench-{i}")
        }
    };
    let grants: Vec<Value> = (0..if o.shared { 1 } else { o.count })
        .map(|i| json!({"op":"grant","token":token(i),"user":token(i)}))
        .collect();
    for chunk in grants.chunks(1000) {
        control.batch(chunk);
    }
    let started = Instant::now();
    let streams: Vec<TcpStream> = (0..o.count).map(|i| upgrade(o.addr, &token(i))).collect();
    let connect_s = started.elapsed().as_secs_f64();
    let stats = control.batch(&[json!({"op":"stats"})]).remove(0);
    println!(
        "{}",
        json!({"mode": o.mode, "count": o.count, "connect_seconds": connect_s, "server_connections": stats["connections"]})
    );
    match o.mode.as_str() {
        "hold" => std::thread::sleep(Duration::from_secs(o.arg)),
        "fanout" => fanout(streams, &mut control, o.arg),
        m => panic!("unknown mode {m}: hold or fanout"),
    }
}

fn fanout(streams: Vec<TcpStream>, control: &mut Control, rounds: u64) {
    let mut poll = Poll::new().expect("poll");
    let mut socks: Vec<mio::net::TcpStream> = streams
        .into_iter()
        .map(mio::net::TcpStream::from_std)
        .collect();
    for (i, s) in socks.iter_mut().enumerate() {
        poll.registry()
            .register(s, Token(i), Interest::READABLE)
            .expect("register");
    }
    let mut events = Events::with_capacity(4096);
    let mut buf = vec![0u8; 64 * 1024];
    let mut times = Vec::new();
    for round in 0..rounds {
        let mut got = vec![false; socks.len()];
        let mut left = socks.len();
        let t0 = Instant::now();
        let reply = control
            .batch(&[json!({"op":"push","content":{"round":round}})])
            .remove(0);
        let deadline = t0 + Duration::from_secs(30);
        while left > 0 && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .expect("poll");
            for e in events.iter() {
                let i = e.token().0;
                while let Ok(n) = socks[i].read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if !got[i] {
                        got[i] = true;
                        left -= 1;
                    }
                }
            }
        }
        let last_ms = t0.elapsed().as_secs_f64() * 1000.0;
        times.push(last_ms);
        println!(
            "{}",
            json!({"round": round, "delivered": reply["delivered"], "received": socks.len() - left, "last_delivery_ms": last_ms})
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({"rounds": rounds, "median_last_delivery_ms": times[times.len() / 2]})
    );
}
