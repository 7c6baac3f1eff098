//! A `wspush-load` worker: one process holding up to ~19,000 connections
//! (this machine caps a process at 20,000 open files), driven by its parent
//! over stdin/stdout, one JSON line per answer.
//!
//! Commands (one per line on stdin):
//!
//! - `open FIRST COUNT`: open connections FIRST..FIRST+COUNT →
//!   `{"opened","failed","error"}`.
//! - `expect SEQ K LAT`: broadcasts SEQ..SEQ+K are coming → `{"armed":true}`
//!   at once, then, when every connection has all K or the timeout passed,
//!   `{"received","dups","stray","last_us","lat_us"}` (`lat_us`, receipt
//!   latencies in µs, only when LAT is 1).
//! - `churn SECS FIRST`: open, upgrade and close connections one after the
//!   other for SECS seconds → `{"churned","failed","error"}`.
//! - `quit`.
//!
//! Between commands it keeps reading its sockets (answering pings) so a
//! server never sees a stalled client.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::{Value, json};

use crate::unix_us;
use crate::ws::{self, Frame, Target};

/// The stdin thread wakes the loop through this token.
const STDIN: Token = Token(usize::MAX);
/// Most connections a churn command opens, whatever its duration.
const MAX_CHURN: u64 = 500_000;

/// How connection `i` authenticates.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Token prefix: connection `i` uses `{prefix}-{i}`.
    pub prefix: String,
    /// Every connection uses `{prefix}-shared`.
    pub shared: bool,
    /// With `churn`, connection `n` uses token `n % pool` (the granted ones).
    pub pool: usize,
}

impl Tokens {
    /// The token of connection `i`.
    pub fn of(&self, i: usize) -> String {
        if self.shared {
            format!("{}-shared", self.prefix)
        } else {
            format!("{}-{i}", self.prefix)
        }
    }
}

struct Peer {
    stream: TcpStream,
    /// Bytes of an incomplete frame (empty, and unallocated, most of the time).
    partial: Vec<u8>,
}

/// What the worker is waiting for.
struct Batch {
    seq: u64,
    k: u64,
    latencies: bool,
    /// One bit per (connection, broadcast).
    seen: Vec<u64>,
    received: u64,
    dups: u64,
    stray: u64,
    last_us: u64,
    lat_us: Vec<u32>,
    deadline: Instant,
}

/// Run a worker until `quit` or end of input.
pub fn run(target: Target, tokens: Tokens, timeout: Duration) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), STDIN)?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() || waker.wake().is_err() {
                break;
            }
        }
        let _ = tx.send("quit".into());
        let _ = waker.wake();
    });
    let mut peers: Vec<Peer> = Vec::new();
    let mut events = Events::with_capacity(4096);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut batch: Option<Batch> = None;
    let mut stray = 0u64;
    loop {
        let wait = batch
            .as_ref()
            .map(|b| b.deadline.saturating_duration_since(Instant::now()));
        poll.poll(&mut events, wait.or(Some(Duration::from_secs(1))))?;
        for event in events.iter() {
            if event.token() == STDIN {
                continue;
            }
            let i = event.token().0;
            let now = unix_us();
            drain(&mut peers[i], i, &mut scratch, &mut batch, &mut stray, now);
        }
        if let Some(b) = &batch {
            let want = peers.len() as u64 * b.k;
            if b.received >= want || Instant::now() >= b.deadline {
                let b = batch.take().expect("checked above");
                let mut out = json!({
                    "received": b.received, "expected": want, "dups": b.dups,
                    "stray": b.stray + std::mem::take(&mut stray), "last_us": b.last_us,
                });
                if b.latencies {
                    out["lat_us"] = json!(b.lat_us);
                }
                say(&out);
            }
        }
        while let Ok(line) = rx.try_recv() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| {
                words
                    .get(i)
                    .and_then(|w| w.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            match words.first().copied() {
                Some("open") => {
                    let (first, count) = (num(1) as usize, num(2) as usize);
                    say(&open(
                        &target, &tokens, &poll, &mut peers, first, count, timeout,
                    ));
                }
                Some("expect") => {
                    let k = num(2).max(1);
                    batch = Some(Batch {
                        seq: num(1),
                        k,
                        latencies: num(3) == 1,
                        seen: vec![0; (peers.len() * k as usize).div_ceil(64)],
                        received: 0,
                        dups: 0,
                        stray: 0,
                        last_us: 0,
                        lat_us: Vec::new(),
                        deadline: Instant::now() + timeout,
                    });
                    say(&json!({"armed": true}));
                }
                Some("churn") => say(&churn(&target, &tokens, num(1), num(2) as usize, timeout)),
                Some("quit") | None => return Ok(()),
                Some(other) => say(&json!({"error": format!("unknown command {other}")})),
            }
        }
    }
}

fn say(value: &Value) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn open(
    target: &Target,
    tokens: &Tokens,
    poll: &Poll,
    peers: &mut Vec<Peer>,
    first: usize,
    count: usize,
    timeout: Duration,
) -> Value {
    let (mut opened, mut failed, mut error) = (0, 0, None);
    for i in first..first + count {
        let path = target.path_for(i, &tokens.of(i));
        let source = ws::source_for(&target.addr, i);
        match ws::open(target, source, &path, timeout) {
            Ok((stream, rest)) => {
                let mut stream = TcpStream::from_std(stream);
                let token = Token(peers.len());
                if let Err(e) = poll
                    .registry()
                    .register(&mut stream, token, Interest::READABLE)
                {
                    failed += 1;
                    error.get_or_insert(e.to_string());
                    continue;
                }
                peers.push(Peer {
                    stream,
                    partial: rest,
                });
                opened += 1;
            }
            Err(e) => {
                failed += 1;
                error.get_or_insert(format!("connection {i}: {e}"));
            }
        }
    }
    json!({"opened": opened, "failed": failed, "error": error, "held": peers.len()})
}

/// Read a connection until `WouldBlock`, accounting every complete frame.
fn drain(
    peer: &mut Peer,
    index: usize,
    scratch: &mut [u8],
    batch: &mut Option<Batch>,
    stray: &mut u64,
    now: u64,
) {
    loop {
        let n = match peer.stream.read(scratch) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let mut pongs = Vec::new();
        let mut take = |frame: Frame<'_>| match frame {
            Frame::Data(payload) => match (ws::find_marker(payload), batch.as_mut()) {
                (Some((seq, t)), Some(b)) if seq >= b.seq && seq < b.seq + b.k => {
                    let bit = index * b.k as usize + (seq - b.seq) as usize;
                    if b.seen[bit / 64] & (1 << (bit % 64)) != 0 {
                        b.dups += 1;
                    } else {
                        b.seen[bit / 64] |= 1 << (bit % 64);
                        b.received += 1;
                        b.last_us = b.last_us.max(now);
                        if b.latencies {
                            b.lat_us.push(now.saturating_sub(t) as u32);
                        }
                    }
                }
                (_, Some(b)) => b.stray += 1,
                (_, None) => *stray += 1,
            },
            Frame::Ping(payload) => pongs.extend(ws::pong(payload)),
            Frame::Close | Frame::Other => {}
        };
        if peer.partial.is_empty() {
            let used = scan(&scratch[..n], &mut take);
            peer.partial.extend_from_slice(&scratch[used..n]);
        } else {
            peer.partial.extend_from_slice(&scratch[..n]);
            let used = scan(&peer.partial, &mut take);
            peer.partial.drain(..used);
            if peer.partial.is_empty() {
                peer.partial = Vec::new();
            }
        }
        if !pongs.is_empty() {
            let _ = peer.stream.write_all(&pongs);
        }
    }
}

/// Hand every complete frame of `buf` to `take`; returns the bytes used.
fn scan(buf: &[u8], take: &mut impl FnMut(Frame<'_>)) -> usize {
    let mut used = 0;
    while let Some((frame, len)) = ws::next_frame(&buf[used..]) {
        take(frame);
        used += len;
    }
    used
}

/// Open, upgrade and close (close frame 1000, wait for the server's answer)
/// one connection after another. Source addresses rotate over eight
/// addresses so client ports left in TIME_WAIT never run out.
fn churn(target: &Target, tokens: &Tokens, secs: u64, first: usize, timeout: Duration) -> Value {
    let started = Instant::now();
    let (mut churned, mut failed, mut error) = (0u64, 0u64, None);
    let close = ws::client_frame(0x8, &1000u16.to_be_bytes());
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(secs) && n < MAX_CHURN {
        let i = first + n as usize;
        n += 1;
        let token = tokens.of(i % tokens.pool.max(1));
        let source = ws::source_for(&target.addr, (i % 8) * ws::PER_SOURCE);
        let once = || -> io::Result<()> {
            let (mut stream, _) = ws::open(target, source, &target.path_for(i, &token), timeout)?;
            stream.set_nonblocking(false)?;
            stream.write_all(&close)?;
            let mut buf = [0u8; 64];
            // The server answers with its close frame, then closes.
            while stream.read(&mut buf)? > 0 {}
            Ok(())
        };
        match once() {
            Ok(()) => churned += 1,
            Err(e) => {
                failed += 1;
                error.get_or_insert(e.to_string());
            }
        }
    }
    json!({"churned": churned, "failed": failed, "error": error,
           "seconds": started.elapsed().as_secs_f64()})
}
