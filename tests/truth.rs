//! The truth of a reply: `"ok":true` from a server with `--data-dir` means
//! the records are on disk, a frame never carries a seq the log has not
//! reserved, a full disk is an error the producer sees and heals, memory is
//! given back when nobody listens, every control line is held to 1 MiB,
//! SIGTERM refuses new jobs, and a last line without a newline is answered.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The records of a data log as a `kill -9` would leave them: every whole,
/// checksummed record, up to the first torn one.
fn log_records(data: &Path) -> Vec<Value> {
    let bytes = std::fs::read(data.join("wspush.log")).unwrap_or_default();
    let mut records = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= 8 {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
        if bytes.len() - pos - 8 < len {
            break;
        }
        let body = &bytes[pos + 8..pos + 8 + len];
        if crc32(body) != crc {
            break;
        }
        records.push(serde_json::from_slice(body).expect("a record is JSON"));
        pos += 8 + len;
    }
    records
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                0xEDB8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn held_records(data: &Path) -> usize {
    log_records(data)
        .iter()
        .filter(|r| r["k"] == "msg" && r["held"] == true)
        .count()
}

fn reserved(data: &Path) -> u64 {
    log_records(data)
        .iter()
        .filter(|r| r["k"] == "seq")
        .filter_map(|r| r["upto"].as_u64())
        .max()
        .unwrap_or(0)
}

fn start(data: &Path, extra: &[&str]) -> Server {
    let data = data.to_str().unwrap();
    let mut args = vec!["--data-dir", data];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn kill9(s: &mut Server) {
    s.signal(libc::SIGKILL);
    s.wait_exit(Duration::from_secs(5));
}

/// `n` pushes to offline users u0..u99, as one pipelined stream.
fn pipelined_pushes(n: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for i in 0..n {
        let line = json!({"op":"push","users":[format!("u{}", i % 100)],"content":{"i":i}});
        bytes.extend_from_slice(line.to_string().as_bytes());
        bytes.push(b'\n');
    }
    bytes
}

/// Write `bytes` from a thread while the caller reads replies.
fn send_in_background(c: &ControlConn, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
    let mut writer = c.writer.try_clone().unwrap();
    std::thread::spawn(move || writer.write_all(&bytes).expect("write pushes"))
}

/// Run the server under strace with every `write(2)` slowed down by
/// `delay_us`, so that whatever it writes first is seen first by the test
/// for a while: a reply or frame written before the log's records would be
/// read while the records are not in the file yet. None (skipped) without
/// strace.
fn start_slowed(data: &Path, extra: &[&str], delay_us: u32) -> Option<Server> {
    if find_program("strace").is_none() {
        skip_missing("strace is not installed");
        return None;
    }
    let mut args = vec!["--data-dir".to_string(), data.to_str().unwrap().to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let inject = format!("inject=write:delay_enter={delay_us}");
    let wrapper = [
        "strace",
        "-f",
        "-o",
        "/dev/null",
        "-e",
        "trace=write",
        "-e",
        &inject,
    ];
    Some(Server::start_opts(ServerOpts {
        args,
        wrapper: wrapper.map(String::from).to_vec(),
        ..Default::default()
    }))
}

/// The server's own pid when it runs under a wrapper such as strace.
fn traced_pid(s: &Server) -> i32 {
    let pid = s.pid();
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .next()
        .map_or(pid, |c| c.parse().unwrap())
}

/// Every reply a producer has read is backed by a record already in the
/// log file: read the file the way a `kill -9` at that instant would leave it.
#[test]
fn no_reply_is_readable_before_its_record_is_in_the_log() {
    let data = tempdir();
    let Some(s) = start_slowed(data.path(), &["--mailbox", "100"], 20_000) else {
        return;
    };
    let mut c = s.control_conn();
    let writer = send_in_background(&c, pipelined_pushes(2000));
    // Records only grow here, so the file is read again only when the
    // replies overtake what it was last seen to hold.
    let mut on_disk = 0;
    for read in 1..=2000 {
        let r = c.read_reply();
        assert_eq!(r["ok"], true, "{r}");
        if on_disk < read {
            on_disk = held_records(data.path());
            assert!(
                on_disk >= read,
                "{read} ok:true replies read, only {on_disk} held records in the log"
            );
        }
    }
    writer.join().unwrap();
}

/// A `kill -9` right after the last of 2,000 pipelined replies loses none
/// of them, run after run (the server slowed down as above, so that a
/// reply sent ahead of its records would lose them).
#[test]
fn kill_9_after_the_last_reply_loses_nothing() {
    for run in 0..3 {
        let data = tempdir();
        let Some(mut s) = start_slowed(data.path(), &["--mailbox", "100"], 20_000) else {
            return;
        };
        let mut c = s.control_conn();
        let writer = send_in_background(&c, pipelined_pushes(2000));
        for _ in 0..2000 {
            assert_eq!(c.read_reply()["ok"], true);
        }
        unsafe { libc::kill(traced_pid(&s), libc::SIGKILL) };
        s.wait_exit(Duration::from_secs(5));
        writer.join().unwrap();
        let s = start(data.path(), &["--mailbox", "100"]);
        assert_eq!(s.stats()["mailbox"], 2000, "run {run}");
    }
}

/// A frame leaves only once the reservation of its seq (and its record) is
/// in the log.
#[test]
fn frames_never_leave_before_their_seq_is_reserved_in_the_log() {
    let data = tempdir();
    let Some(s) = start_slowed(data.path(), &["--mailbox", "10"], 300_000) else {
        return;
    };
    s.grant("t1", "alice");
    let mut ws = s.ws_connect("t1");
    let mut c = s.control_conn();
    for i in 0..3 {
        c.send(&json!({"op":"push","users":["alice"],"content":{"i":i}}));
        let push = recv_json(&mut ws);
        let seq = push["seq"].as_u64().unwrap();
        let upto = reserved(data.path());
        assert!(
            seq <= upto,
            "frame with seq {seq} arrived while the log reserves only up to {upto}"
        );
        let recorded = log_records(data.path())
            .iter()
            .any(|r| r["k"] == "msg" && r["seq"] == seq);
        assert!(recorded, "frame with seq {seq} arrived before its record");
        assert_eq!(c.read_reply()["ok"], true);
    }
}

fn wait_for_log(s: &Server, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = s.stats();
        if stats["data_log"] == state {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "data_log never became {state}: {stats}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn healthz(s: &Server) -> HttpResponse {
    s.http(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
}

fn held_ids(s: &Server) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let r = s.control(json!({"op":"messages","status":"held","limit":1000,"after":after}));
        for m in r["messages"].as_array().unwrap() {
            ids.push(m["messageId"].as_str().unwrap().to_string());
        }
        match r["next"].as_u64() {
            Some(next) => after = next,
            None => return ids,
        }
    }
}

/// A full disk is an error the producer sees, the log shows it, the file
/// stays replayable, and the server heals once there is room: every push
/// acknowledged with `ok:true`, before and after, survives a `kill -9`.
#[test]
fn a_full_disk_is_an_error_and_the_log_heals() {
    let Some(fs) = small_tmpfs() else { return };
    let data = fs.0.join("data");
    let args = ["--mailbox", "1000"];
    let mut s = start(&data, &args);
    let mut c = s.control_conn();
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        let r =
            c.request(&json!({"op":"push","users":[format!("u{i}")],"content":"x".repeat(8000)}));
        if r["ok"] == true {
            acked.push(r["messageId"].as_str().unwrap().to_string());
            continue;
        }
        let error = r["error"].as_str().unwrap();
        assert!(error.starts_with("data log: "), "{r}");
        assert_eq!(r["durable"], false, "{r}");
        assert!(r["messageId"].is_string() && r["seq"].is_u64(), "{r}");
        refused += 1;
        if refused == 3 {
            break;
        }
    }
    assert_eq!(refused, 3, "a 256 KiB disk never filled up");
    let stats = s.stats();
    assert_eq!(stats["data_log"], "failed", "{stats}");
    assert!(
        stats["data_log_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    assert!(stats["data_log_failures"].as_u64().unwrap() >= 1);
    let health = healthz(&s);
    assert_eq!(health.status, 503, "{}", health.raw);
    assert!(
        health.body.starts_with("data log failed"),
        "{}",
        health.body
    );

    fs.resize("16m");
    wait_for_log(&s, "ok");
    assert_eq!(healthz(&s).status, 200);
    for i in 0..20 {
        let r =
            c.request(&json!({"op":"push","users":[format!("v{i}")],"content":"y".repeat(8000)}));
        assert_eq!(r["ok"], true, "after recovery: {r}");
        acked.push(r["messageId"].as_str().unwrap().to_string());
    }
    kill9(&mut s);

    let s = start(&data, &args);
    let held = held_ids(&s);
    let lost: Vec<&String> = acked.iter().filter(|id| !held.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    assert!(!s.stderr_text().contains("torn or corrupt"));
}

/// On a disk with no room left the server still starts, with the log shown
/// as failed, and heals by itself when space comes back.
#[test]
fn starting_on_a_full_disk_shows_the_log_failed_and_heals() {
    let Some(fs) = small_tmpfs() else { return };
    let data = fs.0.join("data");
    let mut s = start(&data, &["--mailbox", "10"]);
    s.push(&["bob"], json!("held before the disk filled"));
    kill9(&mut s);
    let filler = fs.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[0; 4096]).is_ok() {}
    drop(f);

    let s = start(&data, &["--mailbox", "10"]);
    let stats = s.stats();
    assert_eq!(stats["data_log"], "failed", "{stats}");
    assert_eq!(stats["mailbox"], 1, "the old log was still read");
    std::fs::remove_file(&filler).unwrap();
    wait_for_log(&s, "ok");
    let r = s.push(&["bob"], json!("held after the disk healed"));
    assert_eq!(r["queued"], 1);
}

fn rss_mib(s: &Server) -> f64 {
    rss_bytes(s.pid()) as f64 / (1 << 20) as f64
}

/// Wait up to 3 s for RSS to come back within `slack` MiB of `start`.
fn assert_rss_returns(s: &Server, start: f64, slack: f64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = rss_mib(s);
        if now <= start + slack {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: RSS {now:.1} MiB, at start {start:.1} MiB"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Frames that reach nobody are freed with their turn.
#[test]
fn pushes_to_nobody_keep_nothing() {
    let s = Server::start(&[]);
    let mut c = s.control_conn();
    c.request(&json!({"op":"push","users":["nobody"],"content":"warm up"}));
    let start = rss_mib(&s);
    let big = json!({"op":"push","users":["nobody"],"content":"x".repeat(500_000)});
    for _ in 0..200 {
        assert_eq!(c.request(&big)["delivered"], 0);
    }
    assert_rss_returns(&s, start, 8.0, "after 200 pushes of 500 KB to nobody");
    let small = pipelined_pushes(100);
    for _ in 0..200 {
        c.send_raw(&small).unwrap();
        for _ in 0..100 {
            c.read_reply();
        }
    }
    assert_rss_returns(&s, start, 8.0, "after 20,000 small pushes to nobody");
}

/// Once clients have read a burst of large pushes, the memory goes back.
/// The clients read only after the whole burst is queued, so it piles up
/// in their backlogs first (100 KB frames: below glibc's default mmap
/// threshold, so they come from the heap).
#[test]
fn memory_returns_after_clients_read_a_burst() {
    const PUSHES: usize = 400;
    let s = Server::start(&["--max-outbound", "268435456"]);
    s.grant("t1", "alice");
    let clients: Vec<Ws> = (0..5).map(|_| s.ws_connect("t1")).collect();
    s.wait_connections(5);
    let mut c = s.control_conn();
    c.request(&json!({"op":"push","users":["nobody"],"content":"warm up"}));
    let start = rss_mib(&s);
    let big =
        json!({"op":"push","users":["alice"],"content":"x".repeat(100_000)}).to_string() + "\n";
    let writer = send_in_background(&c, big.repeat(PUSHES).into_bytes());
    for _ in 0..PUSHES {
        assert_eq!(c.read_reply()["delivered"], 5);
    }
    writer.join().unwrap();
    let piled = rss_mib(&s);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            std::thread::spawn(move || {
                for _ in 0..PUSHES {
                    let push = recv_json(&mut ws);
                    assert_eq!(push["content"].as_str().unwrap().len(), 100_000);
                }
                ws
            })
        })
        .collect();
    let _clients: Vec<Ws> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(
        piled > start + 16.0,
        "the burst never piled up: {piled:.1} MiB"
    );
    assert_rss_returns(&s, start, 8.0, "after 5 clients read 400 pushes of 100 KB");
}

/// A push line padded to exactly `len` bytes (newline excluded).
fn line_of(len: usize) -> Vec<u8> {
    let empty = json!({"op":"push","users":["nobody"],"content":""}).to_string();
    let pad = len - empty.len();
    let line = json!({"op":"push","users":["nobody"],"content":"x".repeat(pad)}).to_string();
    assert_eq!(line.len(), len);
    line.into_bytes()
}

/// The 1 MiB cap holds for every line, whether its newline comes in the same
/// read or a later one.
#[test]
fn the_line_cap_holds_wherever_the_reads_split() {
    let s = Server::start(&[]);
    for newline_later in [false, true] {
        for (len, ok) in [(1_048_576, true), (1_048_577, false)] {
            let mut c = s.control_conn();
            let mut line = line_of(len);
            if newline_later {
                c.send_raw(&line).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                c.send_raw(b"\n").unwrap();
            } else {
                line.push(b'\n');
                c.send_raw(&line).unwrap();
            }
            let r = c.read_reply();
            let what = format!("{len} bytes, newline later: {newline_later}: {r}");
            if ok {
                assert_eq!(r["ok"], true, "{what}");
            } else {
                assert_eq!(r["ok"], false, "{what}");
                assert_eq!(r["error"], "line longer than 1 MiB refused", "{what}");
            }
            assert_eq!(c.request(&json!({"op":"stats"}))["ok"], true, "{what}");
        }
    }
}

/// After SIGTERM a push is refused, queries still answer, and what was
/// acknowledged before reaches the client ahead of its 1001 close.
#[test]
fn after_sigterm_new_jobs_are_refused() {
    let s = Server::start(&["--mailbox", "10"]);
    s.grant("t1", "alice");
    s.grant("t2", "carol");
    let mut ws = s.ws_connect("t1");
    // Never answers the close, so the server stays up for its 5 s.
    let _silent = s.raw_ws("/push/t2");
    s.wait_connections(2);
    let mut c = s.control_conn();
    for i in 0..3 {
        let r = c.request(&json!({"op":"push","users":["alice"],"content":i}));
        assert_eq!(r["delivered"], 1);
    }
    s.sigterm();
    let (code, before) = expect_close_collect(&mut ws);
    assert_eq!(code, 1001);
    assert_eq!(before.len(), 3, "acknowledged pushes before the close");
    let r = c.request(&json!({"op":"push","users":["bob"],"content":"late"}));
    assert_eq!(r, json!({"ok":false,"error":"shutting down"}));
    let r = c.request(&json!({"op":"grant","token":"t3","user":"bob"}));
    assert_eq!(r["error"], "shutting down");
    assert_eq!(c.request(&json!({"op":"stats"}))["ok"], true);
}

/// `printf '{"op":"stats"}' | socat - UNIX-CONNECT:...`: a last line without
/// a newline is executed and answered before the connection closes.
#[test]
fn a_final_line_without_newline_is_answered() {
    let s = Server::start(&[]);
    let mut sock = UnixStream::connect(&s.control_path).unwrap();
    sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    sock.write_all(br#"{"op":"stats","id":9}"#).unwrap();
    sock.shutdown(Shutdown::Write).unwrap();
    let mut reader = std::io::BufReader::new(sock);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let r: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((r["ok"].clone(), r["id"].clone()), (json!(true), json!(9)));
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "then EOF");
}
