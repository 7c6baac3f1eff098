//! Control socket protocol, socket file handling and the CLI subcommands.
mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn assert_error_reply(r: &Value, what: &str) {
    assert_eq!(r["ok"], json!(false), "{what}: {r}");
    let e = r["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error string in {r}"));
    assert!(!e.is_empty(), "{what}: empty error");
}

// ---------------------------------------------------------------------------
// protocol
// ---------------------------------------------------------------------------

#[test]
fn id_is_echoed() {
    let s = Server::start(&[]);
    let mut c = s.control_conn();
    let r = c.request(&json!({"op":"stats","id":"abc"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["id"], json!("abc"));
    let r = c.request(&json!({"op":"grant","token":"t","user":"u","id":7}));
    assert_eq!(r, json!({"ok":true,"id":7}));
    let r = c.request(&json!({"op":"push","users":["u"],"content":1,"id":"p1"}));
    assert_eq!(r["id"], json!("p1"), "{r}");
    // errors echo the id as well
    let r = c.request(&json!({"op":"no-such-op","id":"err-1"}));
    assert_error_reply(&r, "unknown op");
    assert_eq!(r["id"], json!("err-1"));
    // without id there is none in the reply
    let r = c.request(&json!({"op":"stats"}));
    assert!(r.get("id").is_none(), "{r}");
}

#[test]
fn bad_lines_get_error_and_connection_stays_usable() {
    let s = Server::start(&[]);
    let mut c = s.control_conn();
    let bad: &[(&str, &str)] = &[
        ("not json at all", "not JSON"),
        ("{\"op\":\"push\",", "truncated JSON"),
        ("[1,2,3]", "not an object"),
        ("\"stats\"", "string"),
        ("{}", "no op"),
        ("{\"op\":\"frobnicate\"}", "unknown op"),
        ("{\"op\":42}", "op wrong type"),
        ("{\"op\":\"grant\",\"token\":\"t\"}", "grant missing user"),
        ("{\"op\":\"grant\",\"user\":\"u\"}", "grant missing token"),
        (
            "{\"op\":\"grant\",\"token\":5,\"user\":\"u\"}",
            "grant token wrong type",
        ),
        ("{\"op\":\"revoke\"}", "revoke missing token"),
        (
            "{\"op\":\"push\",\"users\":\"alice\",\"content\":1}",
            "users not a list",
        ),
        (
            "{\"op\":\"push\",\"users\":[1,2],\"content\":1}",
            "users not strings",
        ),
        (
            "{\"op\":\"push\",\"users\":[\"a\"],\"content\":1,\"type\":\"x\"}",
            "type not a number",
        ),
        (
            "{\"op\":\"push\",\"users\":[\"a\"],\"content\":1,\"title\":5}",
            "title not a string",
        ),
        ("{\"op\":\"kick\"}", "kick without user or connection"),
        (
            "{\"op\":\"kick\",\"connection\":\"abc\"}",
            "kick connection wrong type",
        ),
        ("{\"op\":\"clients\",\"user\":5}", "clients user wrong type"),
    ];
    for (line, what) in bad {
        c.send_raw(format!("{line}\n").as_bytes()).unwrap();
        let r = c.read_reply();
        assert_error_reply(&r, what);
        // still usable after each bad line
        let ok = c.request(&json!({"op":"stats"}));
        assert_eq!(ok["ok"], json!(true), "after {what}: {ok}");
    }
    // a good grant works on the same connection afterwards
    let r = c.request(&json!({"op":"grant","token":"t","user":"u"}));
    assert_eq!(r, json!({"ok":true}));
}

#[test]
fn empty_lines_and_crlf() {
    let s = Server::start(&[]);
    let mut c = s.control_conn();
    c.send_raw(b"{\"op\":\"stats\",\"id\":1}\r\n").unwrap();
    let r = c.read_reply();
    assert_eq!(r["ok"], json!(true), "CRLF line: {r}");
    assert_eq!(r["id"], json!(1));
}

#[test]
fn pipelined_requests_answered_in_order() {
    let s = Server::start(&[]);
    s.grant("t", "alice");
    let mut ws = s.ws_connect("t");
    let mut c = s.control_conn();
    let mut batch = Vec::new();
    let mut expect_ok = Vec::new();
    for i in 0..60 {
        let line = match i % 5 {
            0 => json!({"op":"stats","id":i}).to_string(),
            1 => json!({"op":"push","users":["alice"],"content":i,"id":i}).to_string(),
            2 => json!({"op":"grant","token":format!("tok{i}"),"user":"x","id":i}).to_string(),
            3 => json!({"op":"bogus","id":i}).to_string(),
            _ => json!({"op":"clients","id":i}).to_string(),
        };
        expect_ok.push(i % 5 != 3);
        batch.extend_from_slice(line.as_bytes());
        batch.push(b'\n');
    }
    c.send_raw(&batch).unwrap();
    let mut seqs = vec![];
    for (i, ok) in expect_ok.iter().enumerate() {
        let r = c.read_reply();
        assert_eq!(r["id"], json!(i), "reply out of order: {r}");
        assert_eq!(r["ok"], json!(*ok), "{r}");
        if i % 5 == 1 {
            seqs.push(r["seq"].as_u64().unwrap());
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for i in (0..60).filter(|i| i % 5 == 1) {
        assert_eq!(recv_json(&mut ws)["content"], json!(i));
    }
}

#[test]
fn request_split_across_writes() {
    let s = Server::start(&[]);
    let mut c = s.control_conn();
    c.send_raw(b"{\"op\":\"st").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    c.send_raw(b"ats\",\"id\":\"split\"}\n").unwrap();
    let r = c.read_reply();
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["id"], json!("split"));
}

#[test]
fn line_over_one_mib_is_refused_and_server_survives() {
    let s = Server::start(&[]);
    s.grant("t", "alice");
    let mut ws = s.ws_connect("t");
    let mut c = s.control_conn();
    let big = "x".repeat(1024 * 1024 + 100 * 1024);
    let line = format!("{{\"op\":\"push\",\"users\":[\"alice\"],\"content\":\"{big}\"}}\n");
    // the server may stop reading / close early: ignore write errors
    let _ = c.writer.write_all(line.as_bytes());
    match c.try_read_reply() {
        Ok(Some(r)) => assert_error_reply(&r, "over-long line"),
        other => panic!("expected an error reply for a >1 MiB line, got {other:?}"),
    }
    // the push must not have happened
    let r = s.control(json!({"op":"push","users":["alice"],"content":"after"}));
    assert_eq!(r["ok"], json!(true), "server unusable after long line: {r}");
    assert_eq!(
        recv_json(&mut ws)["content"],
        json!("after"),
        "the over-long push was delivered"
    );
}

#[test]
fn line_just_under_one_mib_is_accepted() {
    let s = Server::start(&["--max-outbound", "4194304"]);
    s.grant("t", "alice");
    let mut ws = s.ws_connect("t");
    let mut c = s.control_conn();
    let big = "y".repeat(1000 * 1024);
    let r = c.request(&json!({"op":"push","users":["alice"],"content":big}));
    assert_eq!(
        r["ok"],
        json!(true),
        "{}",
        &r.to_string()[..200.min(r.to_string().len())]
    );
    assert_eq!(
        recv_json(&mut ws)["content"].as_str().map(|s| s.len()),
        Some(1000 * 1024)
    );
}

#[test]
fn many_control_connections() {
    let s = Server::start(&[]);
    let mut conns: Vec<ControlConn> = (0..20).map(|_| s.control_conn()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(&json!({"op":"stats","id":i}));
    }
    for (i, c) in conns.iter_mut().enumerate().rev() {
        assert_eq!(c.read_reply()["id"], json!(i));
    }
}

#[test]
fn stats_counts_connections_and_users() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let st = s.stats();
    assert_eq!(st["connections"], json!(0), "{st}");
    assert_eq!(st["users"], json!(0), "{st}");
    let _a1 = s.ws_connect("ta");
    let _a2 = s.ws_connect("ta");
    let mut b = s.ws_connect("tb");
    let st = s.stats();
    assert_eq!(st["connections"], json!(3), "{st}");
    assert_eq!(st["users"], json!(2), "{st}");
    b.close(None).unwrap();
    while b.read().is_ok() {}
    s.wait_connections(2);
    assert_eq!(s.stats()["users"], json!(1));
}

#[test]
fn clients_lists_connections_with_fields() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let a = s.ws_connect_path("/push/ta?device=phone");
    let _a2 = s.ws_connect("ta");
    let _b = s.ws_connect("tb");
    let all = s.clients(None);
    assert_eq!(all.len(), 3, "{all:?}");
    let alice = s.clients(Some("alice"));
    assert_eq!(alice.len(), 2, "{alice:?}");
    assert!(alice.iter().all(|c| c["user"] == json!("alice")));
    let local = a.get_ref().local_addr().unwrap().to_string();
    let phone = alice
        .iter()
        .find(|c| c["peer"] == json!(local))
        .unwrap_or_else(|| panic!("no client with peer {local}: {alice:?}"));
    assert_eq!(phone["device"], json!("phone"), "{phone}");
    assert!(phone["id"].is_u64(), "{phone}");
    assert_eq!(phone["subscribed"], json!(true), "{phone}");
    assert_eq!(phone["topics"], json!([]), "{phone}");
    assert!(
        phone.get("connected_at").is_some_and(|v| !v.is_null()),
        "{phone}"
    );
    assert!(
        phone.get("last_seen").is_some_and(|v| !v.is_null()),
        "{phone}"
    );
    let ids: std::collections::BTreeSet<u64> =
        all.iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 3, "ids not unique: {all:?}");
    assert!(s.clients(Some("nobody")).is_empty());
}

#[test]
fn kick_user_closes_with_1008() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    s.grant("tb", "bob");
    let mut a1 = s.ws_connect("ta");
    let mut a2 = s.ws_connect("ta");
    let mut b = s.ws_connect("tb");
    let r = s.control(json!({"op":"kick","user":"alice"}));
    assert_eq!(r, json!({"ok":true,"closed":2}));
    assert_eq!(expect_close(&mut a1), 1008);
    assert_eq!(expect_close(&mut a2), 1008);
    let r = s.push(&["bob"], json!("bob ok"));
    assert_eq!(r["delivered"], json!(1));
    assert_eq!(recv_json(&mut b)["content"], json!("bob ok"));
    // kicking is not revoking: alice can reconnect
    let _a3 = s.ws_connect("ta");
    let r = s.control(json!({"op":"kick","user":"nobody"}));
    assert_eq!(r, json!({"ok":true,"closed":0}));
}

#[test]
fn kick_connection_by_id() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut a1 = s.ws_connect("ta");
    let mut a2 = s.ws_connect("ta");
    let local = a1.get_ref().local_addr().unwrap().to_string();
    let cl = s.clients(Some("alice"));
    let id = cl.iter().find(|c| c["peer"] == json!(local)).unwrap()["id"].clone();
    let r = s.control(json!({"op":"kick","connection":id}));
    assert_eq!(r, json!({"ok":true,"closed":1}));
    assert_eq!(expect_close(&mut a1), 1008);
    let r = s.push(&["alice"], json!("a2 only"));
    assert_eq!(r["delivered"], json!(1));
    assert_eq!(recv_json(&mut a2)["content"], json!("a2 only"));
    let r = s.control(json!({"op":"kick","connection":999999}));
    assert_eq!(r, json!({"ok":true,"closed":0}));
}

// ---------------------------------------------------------------------------
// socket file
// ---------------------------------------------------------------------------

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn socket_mode_default_600() {
    let s = Server::start(&[]);
    assert_eq!(
        mode(&s.control_path),
        0o600,
        "mode {:o}",
        mode(&s.control_path)
    );
}

#[test]
fn socket_mode_from_flag() {
    let s = Server::start(&["--control-mode", "640"]);
    assert_eq!(
        mode(&s.control_path),
        0o640,
        "mode {:o}",
        mode(&s.control_path)
    );
    let s = Server::start(&["--control-mode", "0660"]);
    assert_eq!(
        mode(&s.control_path),
        0o660,
        "mode {:o}",
        mode(&s.control_path)
    );
}

#[test]
fn stale_socket_is_replaced() {
    let dir = tempdir();
    let path = dir.path().join("wspush.sock");
    {
        let _l = UnixListener::bind(&path).unwrap();
    } // listener gone, file left behind
    assert!(path.exists());
    assert!(
        UnixStream::connect(&path).is_err(),
        "stale socket should refuse connections"
    );
    let s = Server::start_opts(ServerOpts {
        dir: Some(dir),
        control_path: Some(path.clone()),
        ..Default::default()
    });
    let st = s.stats();
    assert_eq!(st["ok"], json!(true));
}

#[test]
fn live_server_refuses_second_instance() {
    let s = Server::start(&[]);
    s.grant("t", "alice");
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--control"])
        .arg(&s.control_path);
    let out = run_with_timeout(cmd, Duration::from_secs(10));
    assert!(
        !out.status.success(),
        "second serve on the same control socket succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already"),
        "stderr does not mention 'already': {err:?}"
    );
    // the first server is unaffected and its socket still works
    assert!(
        s.control_path.exists(),
        "socket file removed by the second instance"
    );
    let st = s.stats();
    assert_eq!(st["ok"], json!(true));
    let _ws = s.ws_connect("t");
}

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

fn ctl(s: &Server) -> String {
    s.control_path.to_str().unwrap().to_string()
}

#[test]
fn cli_send_json_content() {
    let s = Server::start(&[]);
    s.grant("t", "alice");
    s.grant("u", "bob");
    let mut a = s.ws_connect("t");
    let mut b = s.ws_connect("u");
    let c = ctl(&s);
    let out = s.cli(&[
        "send",
        "--control",
        &c,
        "--user",
        "alice",
        r#"{"a":1,"b":[true]}"#,
    ]);
    let r = stdout_json(&out);
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["delivered"], json!(1), "{r}");
    let m = recv_json(&mut a);
    assert_eq!(m["content"], json!({"a":1,"b":[true]}));
    assert_eq!(m["seq"], r["seq"]);
    assert_eq!(m["messageId"], r["messageId"]);
    assert!(m.get("title").is_none() && m.get("type").is_none(), "{m}");
    assert!(sync(&mut b).is_empty(), "bob got alice's push");
}

#[test]
fn cli_send_plain_string_title_type_and_multiple_users() {
    let s = Server::start(&[]);
    s.grant("t", "alice");
    s.grant("u", "bob");
    let mut a = s.ws_connect("t");
    let mut b = s.ws_connect("u");
    let c = ctl(&s);
    let out = s.cli(&[
        "send",
        "--control",
        &c,
        "--user",
        "alice",
        "--user",
        "bob",
        "--title",
        "Hello",
        "--type",
        "5",
        "not json here",
    ]);
    let r = stdout_json(&out);
    assert_eq!(r["delivered"], json!(2), "{r}");
    for ws in [&mut a, &mut b] {
        let m = recv_json(ws);
        assert_eq!(m["content"], json!("not json here"));
        assert_eq!(m["title"], json!("Hello"));
        assert_eq!(m["type"], json!(5));
    }
    // numbers are JSON too
    let r = stdout_json(&s.cli(&["send", "--control", &c, "--user", "alice", "42"]));
    assert_eq!(r["ok"], json!(true));
    assert_eq!(recv_json(&mut a)["content"], json!(42));
}

#[test]
fn cli_send_broadcast() {
    let s = Server::start(&[]);
    s.grant("t", "alice");
    s.grant("u", "bob");
    let mut a = s.ws_connect("t");
    let mut b = s.ws_connect("u");
    let r = stdout_json(&s.cli(&["send", "--control", &ctl(&s), "[1,2]"]));
    assert_eq!(r["delivered"], json!(2), "{r}");
    assert_eq!(recv_json(&mut a)["content"], json!([1, 2]));
    assert_eq!(recv_json(&mut b)["content"], json!([1, 2]));
}

#[test]
fn cli_clients_and_stats() {
    let s = Server::start(&[]);
    s.grant("t", "alice");
    s.grant("u", "bob");
    let _a = s.ws_connect("t");
    let _b = s.ws_connect("u");
    let c = ctl(&s);
    let r = stdout_json(&s.cli(&["clients", "--control", &c]));
    assert_eq!(r["ok"], json!(true));
    assert_eq!(r["clients"].as_array().unwrap().len(), 2, "{r}");
    let r = stdout_json(&s.cli(&["clients", "--control", &c, "--user", "bob"]));
    let cl = r["clients"].as_array().unwrap();
    assert_eq!(cl.len(), 1, "{r}");
    assert_eq!(cl[0]["user"], json!("bob"));
    let r = stdout_json(&s.cli(&["stats", "--control", &c]));
    assert_eq!(r["connections"], json!(2), "{r}");
    assert_eq!(r["users"], json!(2), "{r}");
}

#[test]
fn cli_token_grant_and_revoke() {
    let s = Server::start(&[]);
    let c = ctl(&s);
    let r = stdout_json(&s.cli(&["token", "grant", "--control", &c, "clitok", "carl"]));
    assert_eq!(r, json!({"ok":true}));
    let mut ws = s.ws_connect("clitok");
    let r = stdout_json(&s.cli(&["token", "revoke", "--control", &c, "clitok"]));
    assert_eq!(r, json!({"ok":true,"closed":1}));
    assert_eq!(expect_close(&mut ws), 4401);
    assert_eq!(s.raw_ws("/push/clitok").expect_close(), 4401);
}

#[test]
fn cli_kick_user_and_connection() {
    let s = Server::start(&[]);
    s.grant("t", "alice");
    let c = ctl(&s);
    let mut a1 = s.ws_connect("t");
    let mut a2 = s.ws_connect("t");
    let local = a1.get_ref().local_addr().unwrap().to_string();
    let id = s
        .clients(Some("alice"))
        .iter()
        .find(|x| x["peer"] == json!(local))
        .unwrap()["id"]
        .to_string();
    let r = stdout_json(&s.cli(&["kick", "--control", &c, "--connection", &id]));
    assert_eq!(r, json!({"ok":true,"closed":1}));
    assert_eq!(expect_close(&mut a1), 1008);
    let r = stdout_json(&s.cli(&["kick", "--control", &c, "--user", "alice"]));
    assert_eq!(r, json!({"ok":true,"closed":1}));
    assert_eq!(expect_close(&mut a2), 1008);
}

#[test]
fn cli_control_from_env() {
    let s = Server::start(&[]);
    let mut cmd = Command::new(BIN);
    cmd.arg("stats").env("WSPUSH_CONTROL", &s.control_path);
    let out = run_with_timeout(cmd, Duration::from_secs(10));
    let r = stdout_json(&out);
    assert_eq!(r["ok"], json!(true));
}

#[test]
fn cli_fails_without_server() {
    let dir = tempdir();
    let p = dir.path().join("nothing.sock");
    let p = p.to_str().unwrap();
    for args in [
        vec!["stats", "--control", p],
        vec!["send", "--control", p, "hi"],
        vec!["clients", "--control", p],
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(&args);
        let out = run_with_timeout(cmd, Duration::from_secs(10));
        assert!(!out.status.success(), "{args:?} succeeded without a server");
        assert!(!out.stderr.is_empty(), "{args:?}: no error on stderr");
    }
}

#[test]
fn cli_error_is_nonzero_with_stderr() {
    // kick needs --user or --connection: whether the CLI refuses it itself or
    // the server answers ok:false, the CLI exits non-zero with the error on stderr.
    let s = Server::start(&[]);
    let c = ctl(&s);
    let out = s.cli(&["kick", "--control", &c]);
    assert!(
        !out.status.success(),
        "kick without target succeeded: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!out.stderr.is_empty(), "no error on stderr");
}

fn help(args: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    let out = run_with_timeout(cmd, Duration::from_secs(10));
    assert!(out.status.success(), "{args:?} exited {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn help_texts() {
    let top = help(&["--help"]);
    for w in ["serve", "send", "clients", "stats", "token", "kick"] {
        assert!(top.contains(w), "--help lacks {w}:\n{top}");
    }
    let serve = help(&["serve", "--help"]);
    for f in [
        "--listen",
        "--ws-path",
        "--control",
        "--control-mode",
        "--tokens",
        "--idle-timeout",
        "--ping-interval",
        "--handshake-timeout",
        "--max-connections",
        "--max-message-size",
        "--max-outbound",
        "--echo",
    ] {
        assert!(serve.contains(f), "serve --help lacks {f}:\n{serve}");
    }
    let send = help(&["send", "--help"]);
    for f in ["--user", "--title", "--type", "--control"] {
        assert!(send.contains(f), "send --help lacks {f}:\n{send}");
    }
    let clients = help(&["clients", "--help"]);
    for f in ["--user", "--control"] {
        assert!(clients.contains(f), "clients --help lacks {f}:\n{clients}");
    }
    assert!(help(&["stats", "--help"]).contains("--control"));
    let kick = help(&["kick", "--help"]);
    for f in ["--user", "--connection", "--control"] {
        assert!(kick.contains(f), "kick --help lacks {f}:\n{kick}");
    }
    let token = help(&["token", "--help"]);
    assert!(
        token.contains("grant") && token.contains("revoke"),
        "{token}"
    );
    assert!(help(&["token", "grant", "--help"]).contains("--control"));
    assert!(help(&["token", "revoke", "--help"]).contains("--control"));
}

#[test]
fn stats_does_not_count_unfinished_handshakes() {
    let s = Server::start(&[]);
    s.grant("ta", "alice");
    let mut half = std::net::TcpStream::connect(s.addr).unwrap();
    half.write_all(b"GET /push/ta HTTP/1.1\r\n").unwrap();
    let _plain = std::net::TcpStream::connect(s.addr).unwrap();
    let _ws = s.ws_connect("ta");
    let st = s.stats();
    assert_eq!(st["connections"], json!(1), "{st}");
    assert_eq!(s.clients(None).len(), 1);
}

#[test]
fn a_reading_client_with_megabytes_of_pipelined_replies_is_served_to_the_end() {
    // 20,000 stats requests in one stream: their replies (~8 MB) pass the
    // 1 MiB bound on unsent replies many times. The server pauses reading
    // while replies wait, and must resume on its own once they drain.
    let s = Server::start(&[]);
    let mut c = s.control_conn();
    let mut writer = c.writer.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let line = b"{\"op\":\"stats\"}\n".repeat(20_000);
        writer.write_all(&line).unwrap();
    });
    for i in 0..20_000 {
        let r = c.read_reply();
        assert_eq!(r["ok"], json!(true), "reply {i}: {r}");
    }
    sender.join().unwrap();
}
