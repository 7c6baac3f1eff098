//! Tokens: --tokens file, grant/revoke over the control socket, SIGHUP reload,
//! refused tokens closed with 4401.
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn write_tokens(dir: &tempfile::TempDir, v: serde_json::Value) -> String {
    let p = dir.path().join("tokens.json");
    // write + rename so the server never sees a half-written file
    let tmp = dir.path().join("tokens.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p.to_str().unwrap().to_string()
}

/// A refused token: upgraded, then closed with 4401 (never retry).
fn assert_refused(s: &Server, token: &str) {
    assert_eq!(s.token_outcome(token), Err(4401), "token {token}");
}

/// Poll until `token` is accepted or the deadline passes.
fn wait_accepted(s: &Server, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = s.token_outcome(token);
        if r.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "token {token} never accepted; last: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_refused(s: &Server, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = s.token_outcome(token);
        if r == Err(4401) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "token {token} never refused; last: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tokens_file_is_loaded() {
    let dir = tempdir();
    let p = write_tokens(&dir, json!({"tok-a": "alice", "tok-b": "bob"}));
    let s = Server::start_in(dir, &["--tokens", &p]);
    let mut a = s.ws_connect("tok-a");
    let mut b = s.ws_connect("tok-b");
    let r = s.push(&["alice"], json!("to alice"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut a)["content"], json!("to alice"));
    let r = s.push(&["bob"], json!("to bob"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut b)["content"], json!("to bob"));
    assert_refused(&s, "tok-c");
}

#[test]
fn tokens_file_from_env() {
    let dir = tempdir();
    let p = write_tokens(&dir, json!({"envtok": "eve"}));
    let s = Server::start_opts(ServerOpts {
        env: vec![("WSPUSH_TOKENS".into(), p)],
        dir: Some(dir),
        ..Default::default()
    });
    let mut e = s.ws_connect("envtok");
    s.push(&["eve"], json!(1));
    assert_eq!(recv_json(&mut e)["content"], json!(1));
}

#[test]
fn no_tokens_means_everything_is_refused() {
    let s = Server::start(&[]);
    assert_refused(&s, "anything");
}

#[test]
fn grant_then_connect() {
    let s = Server::start(&[]);
    assert_refused(&s, "newtok");
    let r = s.control(json!({"op":"grant","token":"newtok","user":"nina"}));
    assert_eq!(r, json!({"ok": true}));
    let mut ws = s.ws_connect("newtok");
    let cl = s.clients(Some("nina"));
    assert_eq!(cl.len(), 1, "{cl:?}");
    assert_eq!(cl[0]["user"], json!("nina"));
    s.push(&["nina"], json!("granted"));
    assert_eq!(recv_json(&mut ws)["content"], json!("granted"));
}

#[test]
fn revoke_closes_live_connections_with_4401_and_refuses_new() {
    let s = Server::start(&[]);
    s.grant("rt", "rita");
    s.grant("other", "rita");
    let mut w1 = s.ws_connect("rt");
    let mut w2 = s.ws_connect("rt");
    let mut w3 = s.ws_connect("other");
    let r = s.control(json!({"op":"revoke","token":"rt"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["closed"], json!(2), "{r}");
    assert_eq!(expect_close(&mut w1), 4401);
    assert_eq!(expect_close(&mut w2), 4401);
    assert_refused(&s, "rt");
    // the same user's connection with another token is untouched
    let r = s.push(&["rita"], json!("still"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut w3)["content"], json!("still"));
    s.wait_connections(1);
}

#[test]
fn revoke_token_from_tokens_file() {
    let dir = tempdir();
    let p = write_tokens(&dir, json!({"filetok": "fred"}));
    let s = Server::start_in(dir, &["--tokens", &p]);
    let mut ws = s.ws_connect("filetok");
    let r = s.control(json!({"op":"revoke","token":"filetok"}));
    assert_eq!(r["closed"], json!(1), "{r}");
    assert_eq!(expect_close(&mut ws), 4401);
    assert_refused(&s, "filetok");
}

#[test]
fn revoke_without_connections_closes_zero() {
    let s = Server::start(&[]);
    s.grant("idle", "ida");
    let r = s.control(json!({"op":"revoke","token":"idle"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["closed"], json!(0), "{r}");
    assert_refused(&s, "idle");
}

#[test]
fn regrant_after_revoke_works() {
    let s = Server::start(&[]);
    s.grant("t", "u");
    s.control(json!({"op":"revoke","token":"t"}));
    assert_refused(&s, "t");
    s.grant("t", "v");
    let mut ws = s.ws_connect("t");
    let r = s.push(&["v"], json!("regranted"));
    assert_eq!(r["delivered"], json!(1));
    assert_eq!(recv_json(&mut ws)["content"], json!("regranted"));
}

#[test]
fn sighup_reloads_tokens_file() {
    let dir = tempdir();
    let p = write_tokens(&dir, json!({"keep": "alice", "gone": "bob"}));
    let path = std::path::PathBuf::from(&p);
    let s = Server::start_in(dir, &["--tokens", &p]);
    let mut keep = s.ws_connect("keep");
    let mut gone = s.ws_connect("gone");
    assert_refused(&s, "added");

    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(&json!({"keep": "alice", "added": "carol"})).unwrap(),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    s.sighup();

    // removed token: live connection closed with 4401, new connects too
    assert_eq!(expect_close(&mut gone), 4401);
    wait_accepted(&s, "added");
    assert_refused(&s, "gone");

    // the kept token's connection is still alive and new connects work
    let r = s.push(&["alice"], json!("after reload"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut keep)["content"], json!("after reload"));
    let _k2 = s.ws_connect("keep");
    let mut c = s.ws_connect("added");
    // keep, keep, added (the probe connections of wait_accepted are gone)
    s.wait_connections(3);
    let r = s.push(&["carol"], json!("carol here"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut c)["content"], json!("carol here"));
}

#[test]
fn sighup_with_broken_file_keeps_running() {
    let dir = tempdir();
    let p = write_tokens(&dir, json!({"keep": "alice"}));
    let s = Server::start_in(dir, &["--tokens", &p]);
    let mut keep = s.ws_connect("keep");
    std::fs::write(&p, b"{ this is not json").unwrap();
    s.sighup();
    // server survives, answers control, old tokens still valid
    std::thread::sleep(Duration::from_millis(300));
    let st = s.stats();
    assert_eq!(st["connections"], json!(1), "{st}");
    let r = s.push(&["alice"], json!("ok"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut keep)["content"], json!("ok"));
    wait_accepted(&s, "keep");
}

#[test]
fn revoke_is_immediate_for_new_connects() {
    // revoke is immediate: the very next connect is refused
    let s = Server::start(&[]);
    s.grant("x", "y");
    wait_accepted(&s, "x");
    s.control(json!({"op":"revoke","token":"x"}));
    wait_refused(&s, "x");
    assert_refused(&s, "x");
}

// ---------------------------------------------------------------------------
// Durable grants (--data-dir) and topic permissions
// ---------------------------------------------------------------------------

/// `wspush serve --data-dir DATA EXTRA...` in a fresh control directory.
fn start_durable(data: &std::path::Path, extra: &[&str]) -> Server {
    let d = data.to_str().unwrap().to_string();
    let mut args: Vec<&str> = vec!["--data-dir", &d];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Send a topic command on `ws` and return the server's answer.
fn topic_command(ws: &mut Ws, op: &str, topic: &str) -> serde_json::Value {
    let text = json!({"op": op, "topic": topic}).to_string();
    ws.send(tungstenite::Message::text(text)).expect("send");
    recv_json(ws)
}

#[test]
fn a_granted_token_survives_a_restart() {
    let data = tempdir();
    let mut s1 = start_durable(data.path(), &[]);
    s1.grant("durable-tok", "dora");
    s1.term();
    let s2 = start_durable(data.path(), &[]);
    let mut ws = s2.ws_connect("durable-tok");
    let r = s2.push(&["dora"], json!("back"));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut ws)["content"], json!("back"));
}

#[test]
fn a_grant_acknowledged_survives_sigkill_right_after_the_reply() {
    let data = tempdir();
    let mut s1 = start_durable(data.path(), &[]);
    let r = s1.control(json!({"op":"grant","token":"k9-tok","user":"kim","topics":["dev/*"]}));
    assert_eq!(r, json!({"ok": true}));
    s1.kill9();
    let s2 = start_durable(data.path(), &[]);
    let mut ws = s2.ws_connect("k9-tok");
    assert_eq!(
        topic_command(&mut ws, "subscribe", "dev/1")["ok"],
        json!(true)
    );
    let r = topic_command(&mut ws, "subscribe", "ops");
    assert_eq!(r["error"], json!("topic not allowed"), "{r}");
    let log = std::fs::read(data.path().join("wspush.log")).unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(
        !text.contains("k9-tok"),
        "the token reached the disk: {text}"
    );
}

#[test]
fn a_revoke_survives_sigkill_and_the_token_is_refused_after_restart() {
    let data = tempdir();
    let mut s1 = start_durable(data.path(), &[]);
    s1.grant("gone-tok", "gus");
    s1.grant("kept-tok", "gus");
    let r = s1.control(json!({"op":"revoke","token":"gone-tok"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    s1.kill9();
    let mut s2 = start_durable(data.path(), &[]);
    assert_refused(&s2, "gone-tok");
    drop(s2.ws_connect("kept-tok"));
    // and after the compaction at that start, once more
    s2.term();
    let s3 = start_durable(data.path(), &[]);
    assert_refused(&s3, "gone-tok");
    drop(s3.ws_connect("kept-tok"));
}

#[test]
fn token_list_shows_fingerprints_and_never_the_token() {
    let dir = tempdir();
    let p = write_tokens(&dir, json!({"file-secret-123": "fred"}));
    let s = Server::start_in(dir, &["--tokens", &p]);
    let r = s.control(
        json!({"op":"grant","token":"grant-secret-456","user":"gina","topics":["dev/42/*","news"]}),
    );
    assert_eq!(r["ok"], json!(true), "{r}");
    let control = s.control_path.to_str().unwrap();
    let out = s.cli(&["token", "list", "--control", control]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!text.contains("secret"), "a token was shown: {text}");
    let v = stdout_json(&out);
    let list = v["tokens"].as_array().expect("tokens list");
    assert_eq!(list.len(), 2, "{v}");
    let fred = &list[0];
    assert_eq!(fred["user"], json!("fred"), "{v}");
    assert_eq!(fred["source"], json!("file"), "{v}");
    assert_eq!(fred["topics"], json!(null), "{v}");
    assert_eq!(fred["granted_at"], json!(null), "{v}");
    let gina = &list[1];
    assert_eq!(gina["source"], json!("grant"), "{v}");
    assert_eq!(gina["topics"], json!(["dev/42/*", "news"]), "{v}");
    assert!(
        gina["granted_at"].as_u64().unwrap() > 1_700_000_000_000,
        "{v}"
    );
    let fp = gina["fingerprint"].as_str().unwrap();
    assert_eq!(fp.len(), 8, "{v}");
    assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()), "{v}");
    // the fingerprint is the one the server logs for the token
    drop(s.ws_connect("grant-secret-456"));
    assert!(s.stderr_text().contains(&format!("(token {fp})")));
    // the help text names the command
    let help = s.cli(&["token", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("list"));
}

#[test]
fn a_denied_subscribe_is_answered_on_the_websocket() {
    let s = Server::start(&[]);
    let r = s.control(json!({"op":"grant","token":"pt","user":"pat","topics":["dev/42/*","news"]}));
    assert_eq!(r["ok"], json!(true), "{r}");
    s.grant("free", "fay");
    let mut ws = s.ws_connect("pt");
    assert_eq!(
        topic_command(&mut ws, "subscribe", "dev/42/temp")["ok"],
        json!(true)
    );
    assert_eq!(
        topic_command(&mut ws, "subscribe", "news")["ok"],
        json!(true)
    );
    let r = topic_command(&mut ws, "subscribe", "dev/43/temp");
    assert_eq!(
        r,
        json!({"op":"subscribe","topic":"dev/43/temp","ok":false,"error":"topic not allowed"})
    );
    let mut free = s.ws_connect("free");
    assert_eq!(
        topic_command(&mut free, "subscribe", "dev/43/temp")["ok"],
        json!(true)
    );
    let r = s.control(json!({"op":"publish","topic":"dev/43/temp","content":1}));
    assert_eq!(r["delivered"], json!(1), "only the allowed follower: {r}");
    // a bad pattern is refused at grant time
    let r = s.control(json!({"op":"grant","token":"bad","user":"b","topics":["a*b"]}));
    assert_eq!(r["ok"], json!(false), "{r}");
    assert_refused(&s, "bad");
}

#[test]
fn topics_default_none_from_the_environment() {
    let s = Server::start_opts(ServerOpts {
        env: vec![("WSPUSH_TOPICS_DEFAULT".into(), "none".into())],
        ..Default::default()
    });
    s.grant("plain", "pia");
    let r = s.control(json!({"op":"grant","token":"listed","user":"lou","topics":["*"]}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let mut plain = s.ws_connect("plain");
    let r = topic_command(&mut plain, "subscribe", "x");
    assert_eq!(r["error"], json!("topic not allowed"), "{r}");
    let mut listed = s.ws_connect("listed");
    assert_eq!(
        topic_command(&mut listed, "subscribe", "x")["ok"],
        json!(true)
    );
}

#[test]
fn token_grant_cli_takes_topic_patterns() {
    let s = Server::start(&[]);
    let control = s.control_path.to_str().unwrap();
    let out = s.cli(&[
        "token",
        "grant",
        "--topic",
        "dev/*",
        "-t",
        "news",
        "cli-tok",
        "cleo",
        "--control",
        control,
    ]);
    assert_eq!(stdout_json(&out), json!({"ok": true}));
    let list = s.control(json!({"op":"tokens"}));
    assert_eq!(
        list["tokens"][0]["topics"],
        json!(["dev/*", "news"]),
        "{list}"
    );
    let mut ws = s.ws_connect("cli-tok");
    assert_eq!(
        topic_command(&mut ws, "subscribe", "dev/1")["ok"],
        json!(true)
    );
    let r = topic_command(&mut ws, "subscribe", "other");
    assert_eq!(r["error"], json!("topic not allowed"), "{r}");
}

#[test]
fn a_data_log_naming_tokens_by_their_whole_sha1_is_still_read() {
    use sha1::{Digest, Sha1};
    use wspush::hub::LogRecord;
    use wspush::hub::journal::encode;
    // Logs written before the key was shortened to 128 bits name a token
    // by all 40 hex digits of its SHA-1.
    let sha1 = |token: &str| -> String {
        Sha1::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let data = tempdir();
    let mut bytes = Vec::new();
    for (token, user) in [("old-tok", "olga"), ("old-gone", "olga")] {
        let record = LogRecord::Grant {
            digest: sha1(token).into(),
            user: user.into(),
            topics: None,
            at: 1,
        };
        encode(&record, &mut bytes);
    }
    encode(
        &LogRecord::Revoke {
            digest: sha1("old-gone").into(),
        },
        &mut bytes,
    );
    std::fs::write(data.path().join("wspush.log"), &bytes).unwrap();
    let mut s = start_durable(data.path(), &[]);
    let mut ws = s.ws_connect("old-tok");
    assert_eq!(s.push(&["olga"], json!("kept"))["delivered"], json!(1));
    assert_eq!(recv_json(&mut ws)["content"], json!("kept"));
    assert_refused(&s, "old-gone");
    // The token can be revoked by name, and that, too, survives a restart.
    let r = s.control(json!({"op":"revoke","token":"old-tok"}));
    assert_eq!(r["closed"], json!(1), "{r}");
    s.term();
    let s = start_durable(data.path(), &[]);
    assert_refused(&s, "old-tok");
}
