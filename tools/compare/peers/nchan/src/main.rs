//! The control-socket adapter of the nchan peer (tools/compare): nginx with
//! the nchan module holds the WebSocket connections (`/push/{token}`, all on
//! one channel); this process speaks the control subset of wspush-floor on
//! a Unix socket and turns it into nchan's HTTP publisher API:
//!
//! - `push`: wspush's envelope (`{"messageId","seq","content","ts"}`) is
//!   POSTed to `/pub` (nchan sends it to every subscriber as one text
//!   frame); the reply `{"ok":true,"seq":S,"delivered":N}` takes N from
//!   nchan's answer (`subscribers`).
//! - `stats`: GET `/pub` (the channel's info) → `{"ok":true,"connections":N}`.
//! - anything else (`grant`): `{"ok":true}`.
//!
//! Requests go out pipelined on one keep-alive HTTP connection as control
//! lines arrive (so `wspush-load --window W` keeps W in flight in nginx);
//! a second thread reads nchan's answers in order and writes the replies.
//! It runs beside the load (its CPU is not the server's).
//!
//! ```text
//! wspush-peer-nchan --port 7007 --control ./nchan.sock   # nginx on 127.0.0.1:7007
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// What a control line waits for, in order.
enum Pending {
    /// A reply that needs no HTTP request.
    Now(Value),
    /// nchan's answer to a publish of this seq.
    Push(u64),
    /// nchan's answer to a channel-info GET.
    Stats,
}

fn main() {
    let mut port = 7007u16;
    let mut control = String::from("./nchan.sock");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).expect("--port N"),
            "--control" => control = args.next().expect("--control PATH"),
            other => fail(&format!(
                "unknown argument {other} (--port N --control PATH)"
            )),
        }
    }
    let _ = std::fs::remove_file(&control);
    let listener =
        UnixListener::bind(&control).unwrap_or_else(|e| fail(&format!("{control}: {e}")));
    println!("nchan adapter: publishing to http://127.0.0.1:{port}/pub, control socket {control}");
    let mut seq = 0u64;
    // One control client at a time, like wspush-floor.
    for stream in listener.incoming().flatten() {
        if let Err(e) = serve(stream, port, &mut seq) {
            eprintln!("nchan adapter: {e}");
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("nchan adapter: {message}");
    std::process::exit(1)
}

fn serve(control: UnixStream, port: u16, seq: &mut u64) -> io::Result<()> {
    let http = TcpStream::connect(("127.0.0.1", port))?;
    http.set_nodelay(true)?;
    http.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut http_out = http.try_clone()?;
    let mut replies = control.try_clone()?;
    let (tx, rx) = mpsc::channel::<Pending>();
    let answers = std::thread::spawn(move || -> io::Result<()> {
        let mut http_in = BufReader::new(http);
        for pending in rx {
            let reply = match pending {
                Pending::Now(v) => v,
                Pending::Push(seq) => {
                    let (status, body) = response(&mut http_in)?;
                    match status {
                        200..=299 => json!({"ok": true, "seq": seq,
                            "delivered": count(&body, "subscribers"), "queued": 0}),
                        _ => json!({"ok": false, "error": format!("nchan answered {status}")}),
                    }
                }
                Pending::Stats => {
                    let (status, body) = response(&mut http_in)?;
                    let n = if status == 200 {
                        count(&body, "subscribers")
                    } else {
                        0
                    };
                    json!({"ok": true, "connections": n})
                }
            };
            replies.write_all(format!("{reply}\n").as_bytes())?;
        }
        Ok(())
    });
    for line in BufReader::new(control).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let request: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let pending = match request["op"].as_str() {
            Some("push") => {
                *seq += 1;
                let ts = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let body = json!({"messageId": format!("f100-{seq}"), "seq": *seq,
                                  "content": request["content"], "ts": ts})
                .to_string();
                let head = format!(
                    "POST /pub HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/json\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                http_out.write_all((head + &body).as_bytes())?;
                Pending::Push(*seq)
            }
            Some("stats") => {
                http_out.write_all(
                    b"GET /pub HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/json\r\n\r\n",
                )?;
                Pending::Stats
            }
            _ => Pending::Now(json!({"ok": true})),
        };
        if tx.send(pending).is_err() {
            break;
        }
    }
    drop(tx);
    answers.join().unwrap_or(Ok(()))
}

/// Read one HTTP response: (status, body). Content-Length or chunked.
fn response(r: &mut BufReader<TcpStream>) -> io::Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let (mut length, mut chunked) = (0usize, false);
    for _ in 0..100 {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        for _ in 0..10_000 {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        r.read_exact(&mut body)?;
    }
    Ok((status, body))
}

/// A count field of nchan's JSON answer (a number, or a number in a string).
fn count(body: &[u8], field: &str) -> u64 {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match &v[field] {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}
