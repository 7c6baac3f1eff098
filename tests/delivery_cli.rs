//! CLI subcommands for the delivery features: publish, send --key/--delay/
//! --every, cancel, messages, delete, events.
mod common;
#[path = "common/delivery.rs"]
mod delivery;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use delivery::*;
use serde_json::{Value, json};
use tungstenite::Message;

fn assert_fails(out: &Output, what: &str) {
    assert!(
        !out.status.success(),
        "{what}: exited 0; stdout {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn cli_publish_with_title_type_and_key() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let mut other = s.ws_connect("ta");
    subscribe(&mut a, "dev/42");
    let c = ctl(&s);
    let r = stdout_json(&s.cli(&[
        "publish",
        "--control",
        &c,
        "--topic",
        "dev/42",
        "--title",
        "Temp",
        "--type",
        "7",
        "--key",
        "temp",
        r#"{"c":21.5}"#,
    ]));
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert!(r["seq"].is_u64(), "{r}");
    let m = recv_json(&mut a);
    assert_eq!(m["topic"], json!("dev/42"), "{m}");
    assert_eq!(m["title"], json!("Temp"), "{m}");
    assert_eq!(m["type"], json!(7), "{m}");
    assert_eq!(m["content"], json!({"c":21.5}), "{m}");
    assert_eq!(m["messageId"], r["messageId"]);
    assert!(sync_json(&mut other).is_empty());

    // plain text content is sent as a string
    let r = stdout_json(&s.cli(&[
        "publish",
        "--control",
        &c,
        "--topic",
        "dev/42",
        "plain words",
    ]));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut a)["content"], json!("plain words"));
}

#[test]
fn cli_publish_needs_a_topic() {
    let s = Server::start(&[]);
    let out = s.cli(&["publish", "--control", &ctl(&s), "content"]);
    assert_fails(&out, "publish without --topic");
    assert!(!out.stderr.is_empty(), "no error on stderr");
}

#[test]
fn cli_publish_delayed_and_cancel() {
    let s = Server::start(&["--ping-interval", "0"]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    subscribe(&mut a, "t");
    let c = ctl(&s);
    let r = stdout_json(&s.cli(&[
        "publish",
        "--control",
        &c,
        "--topic",
        "t",
        "--delay",
        "1",
        "d",
    ]));
    assert_eq!(r["scheduled"], json!(true), "{r}");
    assert!(r["at"].is_u64(), "{r}");
    let m = recv_within(&mut a, Duration::from_secs(3), "delayed publish via CLI");
    assert_eq!(m["messageId"], r["messageId"], "{m}");
    assert_eq!(m["topic"], json!("t"));

    let r = stdout_json(&s.cli(&[
        "publish",
        "--control",
        &c,
        "--topic",
        "t",
        "--every",
        "1",
        "p",
    ]));
    assert_eq!(r["scheduled"], json!(true), "{r}");
    let id = r["messageId"].as_str().unwrap().to_string();
    let r = stdout_json(&s.cli(&["cancel", "--control", &c, &id]));
    assert_eq!(r, json!({"ok":true,"cancelled":true}));
    sync_json(&mut a);
    assert!(
        try_recv_json(&mut a, Duration::from_millis(2200)).is_none(),
        "cancelled periodic publish ran"
    );
}

#[test]
fn cli_send_with_key_delay_every_and_cancel() {
    let s = Server::start(&["--ping-interval", "0"]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let mut a = s.ws_connect("ta");
    let mut b = s.ws_connect("tb");
    let c = ctl(&s);

    let r = stdout_json(&s.cli(&[
        "send",
        "--control",
        &c,
        "--user",
        "alice",
        "--key",
        "k",
        "1",
    ]));
    assert_eq!(r["delivered"], json!(1), "{r}");
    assert_eq!(recv_json(&mut a)["content"], json!(1));

    let r = stdout_json(&s.cli(&[
        "send",
        "--control",
        &c,
        "--user",
        "alice",
        "--user",
        "bob",
        "--delay",
        "1",
        "later",
    ]));
    assert_eq!(r["scheduled"], json!(true), "{r}");
    for ws in [&mut a, &mut b] {
        let m = recv_within(ws, Duration::from_secs(3), "delayed send via CLI");
        assert_eq!(m["messageId"], r["messageId"]);
        assert_eq!(m["content"], json!("later"));
    }

    let r = stdout_json(&s.cli(&[
        "send",
        "--control",
        &c,
        "--user",
        "bob",
        "--every",
        "1",
        "tick",
    ]));
    assert_eq!(r["scheduled"], json!(true), "{r}");
    let id = r["messageId"].as_str().unwrap().to_string();
    let m = recv_within(&mut b, Duration::from_millis(2500), "periodic send via CLI");
    assert_eq!(m["messageId"], json!(format!("{id}.1")), "{m}");
    let r = stdout_json(&s.cli(&["cancel", "--control", &c, &id]));
    assert_eq!(r["cancelled"], json!(true), "{r}");
    // cancelling an unknown id is not an error
    let r = stdout_json(&s.cli(&["cancel", "--control", &c, &id]));
    assert_eq!(r, json!({"ok":true,"cancelled":false}));
    assert!(
        sync_json(&mut a).is_empty(),
        "alice got bob's periodic send"
    );
}

#[test]
fn cli_send_with_bad_schedule_fails() {
    let s = Server::start(&[]);
    let c = ctl(&s);
    for args in [
        vec!["send", "--control", &c, "--every", "0", "x"],
        vec!["send", "--control", &c, "--delay", "0", "x"],
        vec![
            "publish",
            "--control",
            &c,
            "--topic",
            "t",
            "--every",
            "0",
            "x",
        ],
    ] {
        let out = s.cli(&args);
        assert_fails(&out, &format!("{args:?}"));
        assert!(!out.stderr.is_empty(), "{args:?}: no error on stderr");
    }
    assert_eq!(s.stats()["pushes"], json!(0));
}

#[test]
fn cli_messages_and_delete() {
    let s = Server::start(&["--mailbox", "10"]);
    let c = ctl(&s);
    let mut ids = vec![];
    let mut seqs = vec![];
    for i in 0..4 {
        let r = s.push(&["carol"], json!(i));
        ids.push(r["messageId"].as_str().unwrap().to_string());
        seqs.push(r["seq"].as_u64().unwrap());
    }
    s.push(&["dave"], json!("d"));

    let r = stdout_json(&s.cli(&["messages", "--control", &c]));
    assert_eq!(r["messages"].as_array().unwrap().len(), 5, "{r}");
    assert_eq!(r["next"], Value::Null, "{r}");

    let r = stdout_json(&s.cli(&[
        "messages",
        "--control",
        &c,
        "--user",
        "carol",
        "--status",
        "held",
        "--limit",
        "2",
        "--after",
        &seqs[0].to_string(),
    ]));
    let recs = r["messages"].as_array().unwrap();
    let got: Vec<Value> = recs.iter().map(|x| x["messageId"].clone()).collect();
    assert_eq!(got, vec![json!(ids[1]), json!(ids[2])], "{r}");
    assert!(
        recs.iter()
            .all(|x| x["user"] == json!("carol") && x["status"] == json!("held"))
    );
    assert_eq!(r["next"], json!(seqs[2]), "{r}");

    let out = s.cli(&["messages", "--control", &c, "--status", "bogus"]);
    assert_fails(&out, "messages --status bogus");

    let r = stdout_json(&s.cli(&["delete", "--control", &c, &ids[0]]));
    assert_eq!(r, json!({"ok":true,"deleted":1}));
    let r = stdout_json(&s.cli(&["delete", "--control", &c, "unknown-id"]));
    assert_eq!(r, json!({"ok":true,"deleted":0}));
    let r = stdout_json(&s.cli(&["messages", "--control", &c, "--user", "carol"]));
    assert_eq!(r["messages"].as_array().unwrap().len(), 3, "{r}");
}

#[test]
fn cli_events_prints_lines_until_killed() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut child = Command::new(BIN)
        .args(["events", "--control", &ctl(&s)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wspush events");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let parse = |line: String| -> Value {
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("events line not JSON ({e}): {line:?}"))
    };
    // The CLI may still be connecting when a client comes: connect clients
    // until one's online event is printed (the reply line, if printed, is
    // skipped).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ws = None;
    while ws.is_none() {
        assert!(
            Instant::now() < deadline,
            "wspush events never printed an online event"
        );
        let mut w = Some(s.ws_connect("ta"));
        let until = Instant::now() + Duration::from_millis(300);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            let Ok(line) = rx.recv_timeout(left) else {
                break;
            };
            let v = parse(line);
            if v["event"] == json!("online") {
                assert_eq!(v["user"], json!("alice"), "{v}");
                ws = w.take();
                break;
            }
        }
    }
    let mut ws = ws.unwrap();
    send_text(&mut ws, "hello cli");
    let e = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("wspush events printed no message line"));
        let e = parse(line);
        if e["event"] == json!("message") {
            break e;
        }
    };
    assert_eq!(e["text"], json!("hello cli"), "{e}");
    assert_eq!(e["user"], json!("alice"));
    ws.send(Message::Close(None)).ok();
    assert!(
        child.try_wait().unwrap().is_none(),
        "wspush events exited by itself"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn cli_new_subcommands_have_help() {
    for (sub, flags) in [
        (
            "publish",
            &["--topic", "--key", "--delay", "--every", "--control"][..],
        ),
        ("send", &["--key", "--delay", "--every", "--control"][..]),
        ("cancel", &["--control"][..]),
        (
            "messages",
            &["--user", "--status", "--limit", "--after", "--control"][..],
        ),
        ("delete", &["--control"][..]),
        ("events", &["--control"][..]),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args([sub, "--help"]);
        let out = run_with_timeout(cmd, Duration::from_secs(10));
        assert!(out.status.success(), "{sub} --help exited {:?}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        for f in flags {
            assert!(
                text.contains(f),
                "{sub} --help does not mention {f}:\n{text}"
            );
        }
    }
}

fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn cli_send_json_refuses_bad_json_and_sends_nothing() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let c = ctl(&s);
    for args in [
        vec!["send", "--control", &c, "--json", "{bad"],
        vec!["send", "--control", &c, "--user", "alice", "--json", "{bad"],
        vec!["publish", "--control", &c, "-t", "t", "--json", "{bad"],
    ] {
        let out = s.cli(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = stderr_text(&out);
        assert!(
            err.contains("not valid JSON") && err.contains("line 1"),
            "{args:?}: stderr does not name the parse error: {err:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: printed a reply");
    }
    assert_eq!(s.stats()["pushes"], json!(0));
    assert!(sync_json(&mut a).is_empty(), "bad JSON reached a client");

    // valid JSON with --json is sent as JSON, without a note
    let out = s.cli(&["send", "--control", &c, "--json", r#"{"a":1}"#]);
    assert_eq!(stdout_json(&out)["delivered"], json!(1));
    assert_eq!(stderr_text(&out), "");
    assert_eq!(recv_json(&mut a)["content"], json!({"a":1}));
}

#[test]
fn cli_send_and_publish_text_send_json_as_a_string() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    subscribe(&mut a, "t");
    let c = ctl(&s);
    let out = s.cli(&["send", "--control", &c, "--text", r#"{"a":1}"#]);
    assert_eq!(stdout_json(&out)["delivered"], json!(1));
    assert_eq!(stderr_text(&out), "", "--text printed a note");
    let m = recv_json(&mut a);
    assert_eq!(m["content"], json!(r#"{"a":1}"#), "{m}");
    assert!(m.to_string().contains(r#""content":"{\"a\":1}""#), "{m}");

    let out = s.cli(&["publish", "--control", &c, "-t", "t", "--text", "42"]);
    assert_eq!(stdout_json(&out)["delivered"], json!(1));
    assert_eq!(recv_json(&mut a)["content"], json!("42"));
}

#[test]
fn cli_send_bad_json_without_flags_is_sent_as_text_with_a_note() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a = s.ws_connect("ta");
    let c = ctl(&s);
    let out = s.cli(&["send", "--control", &c, "{bad json"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout_json(&out)["delivered"], json!(1));
    let err = stderr_text(&out);
    assert!(
        err.contains("not JSON; sent as a string") && err.contains("--text"),
        "no note on stderr: {err:?}"
    );
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert_eq!(recv_json(&mut a)["content"], json!("{bad json"));

    // JSON content gets no note
    let out = s.cli(&["send", "--control", &c, "[1]"]);
    assert_eq!(stderr_text(&out), "");
    assert_eq!(recv_json(&mut a)["content"], json!([1]));
}

#[test]
fn cli_json_and_text_conflict() {
    let s = Server::start(&[]);
    let c = ctl(&s);
    for args in [
        vec!["send", "--control", &c, "--json", "--text", "1"],
        vec![
            "publish",
            "--control",
            &c,
            "-t",
            "t",
            "--text",
            "--json",
            "1",
        ],
    ] {
        let out = s.cli(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = stderr_text(&out);
        assert!(err.contains("cannot be used with"), "{args:?}: {err:?}");
    }
    assert_eq!(s.stats()["pushes"], json!(0));
}

#[test]
fn cli_events_exits_1_when_the_server_goes_away() {
    let mut s = Server::start(&[]);
    let mut cmd = Command::new(BIN);
    cmd.args(["events", "--control", &ctl(&s)]);
    let events = std::thread::spawn(move || run_with_timeout(cmd, Duration::from_secs(10)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.stats()["listeners"] != json!(1) {
        assert!(Instant::now() < deadline, "wspush events never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.sigterm();
    s.wait_exit(Duration::from_secs(10));
    let out = events.join().expect("wspush events did not exit in time");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr_text(&out);
    assert!(
        err.contains("wspush: the server closed the events stream"),
        "{err:?}"
    );
}

#[test]
fn cli_messages_without_mailbox_says_it_is_off() {
    let s = Server::start(&[]);
    s.push(&["carol"], json!(1));
    let out = s.cli(&["messages", "--control", &ctl(&s)]);
    assert!(out.status.success(), "{out:?}");
    let r = stdout_json(&out);
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["mailbox"], json!("off"), "{r}");
    assert_eq!(r["messages"], json!([]), "{r}");
    let err = stderr_text(&out);
    assert!(err.contains("without --mailbox"), "no note: {err:?}");
}

#[test]
fn cli_messages_with_mailbox_has_no_note() {
    let s = Server::start(&["--mailbox", "10"]);
    s.push(&["carol"], json!(1));
    let out = s.cli(&["messages", "--control", &ctl(&s)]);
    let r = stdout_json(&out);
    assert!(r.get("mailbox").is_none(), "{r}");
    assert_eq!(r["messages"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(stderr_text(&out), "");
}

fn help_of(args: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--help");
    let out = run_with_timeout(cmd, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "{args:?} --help exited {:?}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn cli_help_texts_describe_their_own_subcommand() {
    let delete = help_of(&["delete"]);
    assert!(delete.contains("records"), "{delete}");
    assert!(
        !delete.to_lowercase().contains("cancel"),
        "delete --help speaks of cancel:\n{delete}"
    );
    let cancel = help_of(&["cancel"]);
    assert!(cancel.contains("scheduled"), "{cancel}");
    assert!(!cancel.contains("records"), "{cancel}");
    let revoke = help_of(&["token", "revoke"]);
    assert!(
        revoke.contains("4401") && !revoke.contains("1008"),
        "revoke closes with 4401:\n{revoke}"
    );
    let events = help_of(&["events"]);
    assert!(events.contains("server closes"), "{events}");
    for sub in ["send", "publish"] {
        let text = help_of(&[sub]);
        for f in ["--json", "--text"] {
            assert!(text.contains(f), "{sub} --help lacks {f}:\n{text}");
        }
    }
}

#[test]
fn cli_version() {
    let mut cmd = Command::new(BIN);
    cmd.arg("--version");
    let out = run_with_timeout(cmd, Duration::from_secs(10));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("wspush {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(env!("CARGO_PKG_VERSION"), "0.1.0");
}
