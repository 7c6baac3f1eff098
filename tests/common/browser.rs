//! Headless Chromium (Debian's `chromium`) driven over the DevTools
//! protocol with our own WebSocket client: no npm, no driver. Included by
//! the tests that need a real browser (`#[path] mod browser;`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use crate::common::{find_program, read_http_response, skip_missing, tempdir};

/// A headless Chromium with one blank page, killed on drop.
pub struct Browser {
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
    pub fn start() -> Option<Browser> {
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

    /// Call a DevTools `method`; the reply's `result`, or its error.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let call = json!({"id": id, "method": method, "params": params});
        self.page.send(Message::text(call.to_string())).unwrap();
        loop {
            let message = self.page.read().expect("DevTools reply");
            let Message::Text(text) = message else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == json!(id) {
                if !reply["error"].is_null() {
                    return Err(reply["error"].to_string());
                }
                return Ok(reply["result"].clone());
            }
        }
    }

    /// Evaluate `expression` in the page (a promise is awaited); its value,
    /// or the exception it threw.
    pub fn try_eval(&mut self, expression: &str) -> Result<Value, String> {
        let params = json!({"expression": expression, "awaitPromise": true, "returnByValue": true});
        let result = self.call("Runtime.evaluate", params)?;
        match result.get("exceptionDetails") {
            Some(e) => Err(e.to_string()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// [`Browser::try_eval`] that must succeed.
    pub fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    /// Poll `expression` until it is `true` (exceptions count as not yet,
    /// e.g. while a page loads), at most `timeout`.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.try_eval(expression);
            if seen == Ok(Value::Bool(true)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{expression} not true within {timeout:?} (last: {seen:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Load `url` in the page and wait until it has loaded.
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}))
            .expect("navigate");
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(10),
        );
    }

    /// The page as a PNG, `width` × `height` CSS pixels.
    pub fn screenshot(&mut self, width: u32, height: u32) -> Vec<u8> {
        let metrics =
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false});
        self.call("Emulation.setDeviceMetricsOverride", metrics)
            .expect("set the viewport");
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .expect("screenshot");
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 screenshot")
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
