//! `wspush-floor`: the raw floor a broadcast is measured against.
//!
//! A stand-in server with no WebSocket logic worth the name: it accepts
//! connections on `--listen`, answers any request head with a fixed `101`,
//! and on a control `push` line writes the frame wspush would send (same
//! envelope, same size) to every connection with one plain `write` call
//! each, in a loop, before answering. No outbox, no coalescing, no timers.
//! It speaks just enough of wspush's control protocol (`grant` and `stats`
//! answer ok, `push` broadcasts) for `wspush-load` to drive it unchanged:
//!
//! ```text
//! wspush-floor --listen 127.0.0.1:7002 --control ./floor.sock &
//! wspush-load fanout --addr 127.0.0.1:7002 --control ./floor.sock --count 10000
//! ```

use std::io::{self, Read, Write};
use std::time::Duration;

use clap::Parser;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};
use wspush_tools::unix_us;

const LISTENER: Token = Token(usize::MAX);
const CONTROL: Token = Token(usize::MAX - 1);
const CTRL: Token = Token(usize::MAX - 2);

/// A raw-`write` broadcast floor for comparing with wspush.
#[derive(Parser, Debug)]
struct Args {
    /// TCP address clients connect to.
    #[arg(long, default_value = "127.0.0.1:7002")]
    listen: std::net::SocketAddr,
    /// Control socket (one client at a time).
    #[arg(long, default_value = "./floor.sock")]
    control: String,
}

struct Client {
    stream: TcpStream,
    /// The request head is answered.
    upgraded: bool,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_file(&args.control);
    let mut control = UnixListener::bind(&args.control)?;
    let mut listener = TcpListener::bind(args.listen)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    poll.registry()
        .register(&mut control, CONTROL, Interest::READABLE)?;
    println!(
        "wspush-floor: listening on ws://{}, control socket {}",
        args.listen, args.control
    );
    let mut clients: Vec<Option<Client>> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    // One control client at a time, with its unparsed input.
    let mut ctrl: Option<(UnixStream, Vec<u8>)> = None;
    let mut seq = 0u64;
    loop {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            match event.token() {
                LISTENER => accept(&listener, &poll, &mut clients)?,
                CONTROL => {
                    while let Ok((mut stream, _)) = control.accept() {
                        poll.registry()
                            .register(&mut stream, CTRL, Interest::READABLE)?;
                        ctrl = Some((stream, Vec::new()));
                    }
                }
                CTRL => {
                    let Some((stream, input)) = &mut ctrl else {
                        continue;
                    };
                    let open = read_all(stream, &mut scratch, input);
                    while let Some(end) = input.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = input.drain(..=end).collect();
                        let request: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
                        let reply = match request["op"].as_str() {
                            Some("push") => {
                                seq += 1;
                                let n = broadcast(&mut clients, &request["content"], seq);
                                json!({"ok": true, "seq": seq, "delivered": n, "queued": 0})
                            }
                            Some("stats") => json!({"ok": true,
                                "connections": clients.iter().flatten().filter(|c| c.upgraded).count()}),
                            _ => json!({"ok": true}),
                        };
                        write_blocking(stream, format!("{reply}\n").as_bytes());
                    }
                    if !open {
                        ctrl = None;
                    }
                }
                Token(slot) => client_ready(&mut clients, slot, &poll, &mut scratch),
            }
        }
    }
}

fn accept(
    listener: &TcpListener,
    poll: &Poll,
    clients: &mut Vec<Option<Client>>,
) -> io::Result<()> {
    while let Ok((stream, _)) = listener.accept() {
        let _ = stream.set_nodelay(true);
        let mut client = Client {
            stream,
            upgraded: false,
        };
        poll.registry()
            .register(&mut client.stream, Token(clients.len()), Interest::READABLE)?;
        clients.push(Some(client));
    }
    Ok(())
}

/// Read until `WouldBlock`; false once the peer has closed.
fn read_all(stream: &mut UnixStream, scratch: &mut [u8], input: &mut Vec<u8>) -> bool {
    loop {
        match stream.read(scratch) {
            Ok(0) => return false,
            Ok(n) => input.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Write a short reply, waiting out `WouldBlock` (bounded: 10 s).
fn write_blocking(stream: &mut UnixStream, mut bytes: &[u8]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !bytes.is_empty() && std::time::Instant::now() < deadline {
        match stream.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(100))
            }
            Err(_) => return,
        }
    }
}

/// Answer a request head with `101`; answer a close frame and drop.
fn client_ready(clients: &mut [Option<Client>], slot: usize, poll: &Poll, scratch: &mut [u8]) {
    let Some(client) = &mut clients[slot] else {
        return;
    };
    let gone = loop {
        match client.stream.read(scratch) {
            Ok(0) => break true,
            Ok(n) if !client.upgraded && scratch[..n].windows(4).any(|w| w == b"\r\n\r\n") => {
                client.upgraded = true;
                let _ = client.stream.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                );
            }
            Ok(_) if client.upgraded && scratch[0] & 0x0f == 8 => {
                let _ = client.stream.write_all(&[0x88, 2, 0x03, 0xe8]);
                break true;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break e.kind() != io::ErrorKind::WouldBlock,
        }
    };
    if gone {
        let _ = poll.registry().deregister(&mut client.stream);
        clients[slot] = None;
    }
}

/// Encode wspush's envelope for `content` as one text frame and `write` it
/// to every upgraded client, one call each.
fn broadcast(clients: &mut [Option<Client>], content: &Value, seq: u64) -> usize {
    let payload = json!({"messageId": format!("f100-{seq}"), "seq": seq,
                         "content": content, "ts": unix_us() / 1000})
    .to_string();
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n < 65536 => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload.as_bytes());
    let mut delivered = 0;
    for client in clients.iter_mut().flatten().filter(|c| c.upgraded) {
        if let Ok(n) = client.stream.write(&frame) {
            delivered += usize::from(n == frame.len());
        }
    }
    delivered
}
