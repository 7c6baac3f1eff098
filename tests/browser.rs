//! What page scripts in a real browser see when a token is refused:
//! headless Chromium (Debian's `chromium`), driven over the DevTools
//! protocol, opens `new WebSocket(...)` to the real server.
//!
//! By default a refused token reaches `onclose` as 4401 or 4402 with its
//! reason; with `--token-rejection http` the page sees only 1006 and no
//! reason, which is why that is not the default. Without chromium the test
//! skips (and fails under `WSPUSH_REQUIRE_EXTERNAL=1`).

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::sync::mpsc;
use std::time::Duration;

use browser::Browser;
use common::*;
use serde_json::json;

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
