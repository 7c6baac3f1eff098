//! A tokio-tungstenite push server (current_thread runtime, one thread)
//! speaking the control subset of wspush-floor, so `wspush-load` drives it
//! like wspush: WebSocket on `/push/{token}`, a Unix control socket of JSON
//! lines where `grant` and anything else answer `{"ok":true}`, `stats`
//! answers the connection count, and `push` broadcasts wspush's envelope
//! (`{"messageId","seq","content","ts"}`, one text frame) to every
//! connection and answers `{"ok":true,"seq":S,"delivered":N}` once the
//! frame is queued to all of them.
//!
//! ```text
//! wspush-peer-tungstenite --port 7003 --control ./t.sock
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Frames a slow connection may lag behind before it loses some.
const QUEUE: usize = 4096;

static SEQ: AtomicU64 = AtomicU64::new(0);

fn main() {
    let mut port = 7003u16;
    let mut control = String::from("./tungstenite.sock");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).expect("--port N"),
            "--control" => control = args.next().expect("--control PATH"),
            other => panic!("unknown argument {other} (--port N --control PATH)"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(serve(port, control));
}

async fn serve(port: u16, control: String) {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| fail(&format!("127.0.0.1:{port}: {e}")));
    let _ = std::fs::remove_file(&control);
    let ctl = UnixListener::bind(&control).unwrap_or_else(|e| fail(&format!("{control}: {e}")));
    let (tx, _) = broadcast::channel::<Message>(QUEUE);
    println!("tungstenite peer: listening on ws://127.0.0.1:{port}, control socket {control}");
    let txc = tx.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = ctl.accept().await {
            tokio::spawn(control_client(stream, txc.clone()));
        }
    });
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, tx.clone()));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("tungstenite peer: {message}");
    std::process::exit(1)
}

// The handshake callback's type is the library's.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, tx: broadcast::Sender<Message>) {
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path().starts_with("/push/") {
            Ok(resp)
        } else {
            let mut e = ErrorResponse::new(None);
            *e.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
            Err(e)
        }
    };
    // The library's advice for many connections: a 4 KiB read buffer (the
    // 128 KiB default is zeroed on every read attempt, one per broadcast
    // here, since a select polls the read side too).
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config)).await
    else {
        return;
    };
    let mut rx = tx.subscribe();
    drop(tx);
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                // Pings are answered and a close is echoed by the library
                // on the next read; the stream ends after that.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            frame = rx.recv() => match frame {
                Ok(m) => {
                    if ws.feed(m).await.is_err() {
                        break;
                    }
                    // Whatever else is queued goes out in the same flush.
                    while let Ok(m) = rx.try_recv() {
                        if ws.feed(m).await.is_err() {
                            break;
                        }
                    }
                    if ws.flush().await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
}

async fn control_client(stream: UnixStream, tx: broadcast::Sender<Message>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        let request: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let reply = match request["op"].as_str() {
            Some("push") => {
                let seq = SEQ.fetch_add(1, Ordering::Relaxed) + 1;
                let ts = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let payload = json!({"messageId": format!("f100-{seq}"), "seq": seq,
                                     "content": request["content"], "ts": ts});
                let n = tx.send(Message::text(payload.to_string())).unwrap_or(0);
                json!({"ok": true, "seq": seq, "delivered": n, "queued": 0})
            }
            Some("stats") => json!({"ok": true, "connections": tx.receiver_count()}),
            _ => json!({"ok": true}),
        };
        if write
            .write_all(format!("{reply}\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
}
