//! What page scripts in a real browser see when a token is refused:
//! headless Chromium (Debian's `chromium`), driven over the DevTools
//! protocol, opens `new WebSocket(...)` to the real server.
//!
//! By default a refused token reaches `onclose` as 4401 or 4402 with its
//! reason; with `--token-rejection http` the page sees only 1006 and no
//! reason, which is why that is not the default. Without chromium the test
//! skips (and fails under `WSPUSH_REQUIRE_EXTERNAL=1`).

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// A headless Chromium with one blank page, killed on drop.
struct Browser {
    child: Child,
    page: WebSocket<TcpStream>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start() -> Option<Browser> {
        let Some(program) = find_program("chromium") else {
            skip_missing("chromium not found (Debian package chromium)");
            return None;
        };
        let profile = tempdir();
        let mut child = Command::new(program)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let browser_url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium printed no DevTools address within 30 s");
        let port = browser_url
            .strip_prefix("ws://127.0.0.1:")
            .and_then(|rest| rest.split('/').next())
            .expect("a DevTools address on 127.0.0.1");
        let page_url = page_target(port);
        let stream = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (page, _) =
            tungstenite::client::client(page_url.as_str(), stream).expect("DevTools page");
        Some(Browser {
            child,
            page,
            next_id: 1,
            _profile: profile,
        })
    }

    /// Evaluate `expression` (a promise) in the page; its resolved value.
    fn eval(&mut self, expression: &str) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let call = json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": {"expression": expression, "awaitPromise": true, "returnByValue": true},
        });
        self.page.send(Message::text(call.to_string())).unwrap();
        loop {
            let message = self.page.read().expect("DevTools reply");
            let Message::Text(text) = message else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == json!(id) {
                assert!(reply["result"]["exceptionDetails"].is_null(), "{reply}");
                return reply["result"]["result"]["value"].clone();
            }
        }
    }
}

/// The DevTools WebSocket address of the browser's page.
fn page_target(port: &str) -> String {
    for _ in 0..50 {
        let mut s = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::io::Write::write_all(
            &mut s,
            format!("GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let r = read_http_response(&mut s, &mut Vec::new());
        let targets: Value = serde_json::from_str(&r.body).unwrap_or_default();
        let page = targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page");
        if let Some(url) = page.and_then(|t| t["webSocketDebuggerUrl"].as_str()) {
            return url.to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("chromium shows no page target");
}

/// A page script that opens `url` and resolves with how it closed.
fn close_of(url: &str) -> String {
    format!(
        "new Promise(resolve => {{
            const ws = new WebSocket({url:?});
            ws.onclose = e => resolve({{code: e.code, reason: e.reason}});
        }})"
    )
}

#[test]
fn page_scripts_see_why_a_token_was_refused() {
    let Some(mut browser) = Browser::start() else {
        return;
    };
    let s = Server::start(&[]);
    s.grant("good", "ann");
    let base = format!("ws://{}/push", s.addr);
    let seen = browser.eval(&close_of(&format!("{base}/nosuchtoken")));
    assert_eq!(
        seen,
        json!({"code": 4401, "reason": "unknown or revoked token"})
    );
    let seen = browser.eval(&close_of(&format!("{base}/")));
    assert_eq!(seen, json!({"code": 4401, "reason": "missing token"}));
    // A live connection whose token is revoked: the page hears it too.
    let script = close_of(&format!("{base}/good"));
    let (tx, rx) = mpsc::channel();
    let control = s.control_path.clone();
    let watcher = std::thread::spawn(move || {
        // Revoke once the page's connection is open.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut c = ControlConn::connect(&control);
            let clients = c.request(&json!({"op": "clients"}));
            if clients["clients"].as_array().is_some_and(|l| !l.is_empty()) {
                let r = c.request(&json!({"op": "revoke", "token": "good"}));
                let _ = tx.send(r);
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the page never connected"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let seen = browser.eval(&script);
    watcher.join().unwrap();
    assert_eq!(rx.recv().unwrap()["closed"], json!(1));
    assert_eq!(seen, json!({"code": 4401, "reason": "token revoked"}));
}

#[test]
fn with_http_rejection_the_page_learns_nothing() {
    let Some(mut browser) = Browser::start() else {
        return;
    };
    let s = Server::start(&["--token-rejection", "http"]);
    let seen = browser.eval(&close_of(&format!("ws://{}/push/nosuchtoken", s.addr)));
    assert_eq!(seen, json!({"code": 1006, "reason": ""}));
}
