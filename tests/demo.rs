//! The demo page (`--demo`): what the server answers at `/` and
//! `/wspush.js`, and the page itself in headless Chromium against the real
//! server: pushes appear, the page rides out a restart and shows the
//! message held meanwhile exactly once, and a revoked token ends its
//! retries. Without chromium the browser test skips (and fails under
//! `WSPUSH_REQUIRE_EXTERNAL=1`).

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::Path;
use std::time::Duration;

use browser::Browser;
use common::*;
use serde_json::{Value, json};

fn get(s: &Server, method: &str, path: &str) -> HttpResponse {
    s.http(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
}

#[test]
fn without_demo_the_root_is_not_found() {
    let s = Server::start(&[]);
    assert_eq!(get(&s, "GET", "/").status, 404);
    assert_eq!(get(&s, "GET", "/wspush.js").status, 404);
}

#[test]
fn with_demo_the_page_and_module_are_served() {
    let s = Server::start(&["--demo", "--ws-path", "/live/"]);
    let page = get(&s, "GET", "/?from=docs");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.header("content-security-policy").is_some());
    // The page's default server address uses the configured ws path.
    assert!(page.body.contains(r#"data-path="/live""#), "{}", page.body);
    assert!(
        page.body
            .contains("import { WspushClient } from './wspush.js'")
    );
    let module = get(&s, "GET", "/wspush.js");
    assert_eq!(module.status, 200);
    assert_eq!(
        module.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/client/wspush.js"),
    )
    .unwrap();
    assert_eq!(module.body, source, "the module is served verbatim");
    let head = get(&s, "HEAD", "/");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), page.header("content-length"));
    let post = get(&s, "POST", "/");
    assert_eq!(post.status, 405);
    assert_eq!(get(&s, "GET", "/other.js").status, 404);
    // The ws path itself still upgrades.
    s.grant("t", "ann");
    let _ws = s.ws_connect_path("/live/t");
}

/// How many pushes the page lists, and their seqs, newest first.
const SHOWN: &str =
    "[...document.querySelectorAll('#pushes li')].map(li => Number(li.dataset.seq))";

fn shown(b: &mut Browser) -> Vec<u64> {
    serde_json::from_value(b.eval(SHOWN)).unwrap()
}

fn state_is(label: &str) -> String {
    format!("document.getElementById('state').textContent === {label:?}")
}

fn attempts(b: &mut Browser) -> u64 {
    b.eval("Number(document.getElementById('attempts').textContent)")
        .as_u64()
        .unwrap()
}

/// Start a demo server in `dir`, on `listen` (port 0: any).
fn demo_server(dir: tempfile::TempDir, listen: &str, control: &Path) -> Server {
    let data = dir.path().join("data");
    let args = [
        "--demo",
        "--mailbox",
        "16",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        listen,
    ];
    Server::start_opts(ServerOpts {
        args: args.iter().map(|a| a.to_string()).collect(),
        dir: Some(dir),
        control_path: Some(control.to_path_buf()),
        listen_arg: false,
        ..Default::default()
    })
}

#[test]
fn the_demo_page_shows_pushes_survives_a_restart_and_stops_on_revoke() {
    let Some(mut b) = Browser::start() else {
        return;
    };
    let dir = tempdir();
    let control = dir.path().join("wspush.sock");
    let mut s = demo_server(dir, "127.0.0.1:0", &control);
    s.grant("demo-token", "ann");
    let wait = Duration::from_secs(10);
    // Back-off of 1.5 to 3 s: time to push while the page is away.
    b.navigate(&format!(
        "http://{}/#token=demo-token&minDelay=1500&maxDelay=3000",
        s.addr
    ));
    b.wait_for(&state_is("connected"), wait);

    // 1. A push from the control socket appears with its seq.
    let first = s.push(&["ann"], json!({"temp": 21.5}));
    assert_eq!(first["delivered"], json!(1), "{first}");
    b.wait_for(&format!("{SHOWN}.length === 1"), wait);
    assert_eq!(shown(&mut b), vec![first["seq"].as_u64().unwrap()]);

    // 2. Pause and resume from the page: paused, nothing is delivered.
    b.eval("document.getElementById('pause').click()");
    wait_until(wait, || {
        s.clients(Some("ann"))
            .first()
            .is_some_and(|c| c["subscribed"] == json!(false))
    });
    let paused = s.push(&["ann"], json!("while paused"));
    assert_eq!(paused["delivered"], json!(0), "{paused}");
    b.eval("document.getElementById('pause').click()");
    wait_until(wait, || {
        s.clients(Some("ann"))
            .first()
            .is_some_and(|c| c["subscribed"] == json!(true))
    });

    // 3. The topic box: follow a topic, then a publish to it appears.
    b.eval(
        "document.getElementById('topic').value = 'dev/42/temp';
         document.getElementById('follow-button').click()",
    );
    b.wait_for("document.querySelectorAll('#topics li').length === 1", wait);
    let published = s.control(json!({"op": "publish", "topic": "dev/42/temp", "content": {"temp": 22.0}, "title": "kitchen"}));
    assert_eq!(published["delivered"], json!(1), "{published}");
    b.wait_for(&format!("{SHOWN}.length === 2"), wait);

    // 4. Restart: the page loses the server (1001), fails at least once
    // while it is down, and a push sent before it is back is held.
    let addr = s.addr;
    s.term();
    b.wait_for(&state_is("reconnecting"), wait);
    let before = attempts(&mut b);
    b.wait_for(
        &format!(
            "Number(document.getElementById('attempts').textContent) > {before} && {}",
            state_is("reconnecting")
        ),
        wait,
    );
    let dir = std::mem::replace(&mut s.dir, tempdir());
    let s = demo_server(dir, &addr.to_string(), &control);
    let held = s.push(&["ann"], json!({"temp": 23.0}));
    assert_eq!(
        (held["delivered"].clone(), held["queued"].clone()),
        (json!(0), json!(1)),
        "the page came back before the push: {held}"
    );
    b.wait_for(&state_is("connected"), wait);
    b.wait_for(&format!("{SHOWN}.length === 3"), wait);
    // Exactly once: nothing more arrives, newest first, no repeats.
    std::thread::sleep(Duration::from_millis(500));
    let seqs = shown(&mut b);
    assert_eq!(seqs[0], held["seq"].as_u64().unwrap(), "{seqs:?}");
    assert_eq!(seqs.len(), 3, "{seqs:?}");
    // The page re-followed its topic on the new connection.
    let again = s.control(json!({"op": "publish", "topic": "dev/42/temp", "content": 24}));
    assert_eq!(again["delivered"], json!(1), "{again}");
    b.wait_for(&format!("{SHOWN}.length === 4"), wait);

    let png = b.screenshot(900, 640);
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo.png");
    std::fs::write(&shot, &png).unwrap();
    if std::env::var_os("WSPUSH_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/demo.png");
        std::fs::write(docs, &png).unwrap();
    }

    // 5. Revoked: the page says so and never tries again.
    let revoked = s.control(json!({"op": "revoke", "token": "demo-token"}));
    assert_eq!(revoked["closed"], json!(1), "{revoked}");
    b.wait_for(&state_is("token rejected"), wait);
    let tried = attempts(&mut b);
    let upgrades = s.stats()["upgrades"].clone();
    // Longer than the largest back-off (3 s): a retry would have happened.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(attempts(&mut b), tried, "the page retried a revoked token");
    assert_eq!(s.stats()["upgrades"], upgrades, "the server saw a retry");
    let detail: Value = b.eval("document.getElementById('detail').textContent");
    assert_eq!(detail, json!("4401: token revoked"));
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}
