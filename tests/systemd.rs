//! Running under systemd: `wspush serve` tells `$NOTIFY_SOCKET` `READY=1`
//! once it accepts connections and `STOPPING=1` when SIGTERM begins the
//! shutdown (the sd_notify protocol, to a path or an `@abstract` socket),
//! and tools/systemd/wspush.service passes `systemd-analyze verify` with no
//! complaint. Without systemd-analyze the last check skips (and fails under
//! `WSPUSH_REQUIRE_EXTERNAL=1`).

mod common;

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// How long a test waits for one notification before failing.
const NOTIFY_WAIT: Duration = Duration::from_secs(10);

/// The next datagram on `socket` as text; panics after `NOTIFY_WAIT`.
fn next_notification(socket: &UnixDatagram, s: &Server, what: &str) -> String {
    socket
        .set_read_timeout(Some(NOTIFY_WAIT))
        .expect("set read timeout");
    let mut buf = [0u8; 1024];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!(
            "no {what} on NOTIFY_SOCKET within {NOTIFY_WAIT:?} ({e}); stderr:\n{}",
            tail_file(&s.stderr_path)
        ),
    }
}

/// A server started with `NOTIFY_SOCKET=name`.
fn start_notified(name: &str) -> Server {
    Server::start_opts(ServerOpts {
        env: vec![("NOTIFY_SOCKET".into(), name.into())],
        ..Default::default()
    })
}

/// READY=1 came, and the server accepts on both listeners.
fn assert_ready_and_listening(socket: &UnixDatagram, s: &Server) {
    assert_eq!(next_notification(socket, s, "READY=1"), "READY=1");
    TcpStream::connect(s.addr).expect("TCP connect after READY=1");
    let health = s.http(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(health.status, 200, "/healthz after READY=1");
    assert_eq!(s.stats()["ok"], true, "control socket after READY=1");
}

#[test]
fn ready_then_stopping_on_a_path_socket() {
    let dir = tempdir();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    let mut s = start_notified(path.to_str().unwrap());
    assert_ready_and_listening(&socket, &s);

    s.sigterm();
    assert_eq!(next_notification(&socket, &s, "STOPPING=1"), "STOPPING=1");
    let st = s.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "exit status {st:?}");
    // Nothing else was sent.
    socket.set_nonblocking(true).unwrap();
    assert!(
        socket.recv(&mut [0u8; 64]).is_err(),
        "an extra notification"
    );
}

#[test]
fn ready_on_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    let name = format!("wspush-test-notify-{}-abstract", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).expect("bind abstract notify socket");
    let s = start_notified(&format!("@{name}"));
    assert_ready_and_listening(&socket, &s);
}

#[test]
fn an_unreachable_notify_socket_is_logged_and_ignored() {
    let dir = tempdir();
    let missing = dir.path().join("nobody-listens.sock");
    let s = start_notified(missing.to_str().unwrap());
    assert_eq!(s.stats()["ok"], true);
    let log = s.stderr_text();
    assert!(
        log.lines()
            .any(|l| l.contains("DEBUG") && l.contains("sd_notify \"READY=1\"")),
        "no debug line about the failed notification; stderr:\n{log}"
    );
}

/// `systemd-analyze verify` on a copy of `unit` (ExecStart pointed at the
/// test's binary, since verify requires it to exist): every line it printed
/// that is about this unit. The file name stays `wspush.service`.
///
/// In a container without a running systemd (this one: systemd 252 in a
/// Debian 12 container, PID 1 not systemd) verify loads the unit offline
/// and prints nothing at all for a good one: no D-Bus or manager noise to
/// excuse. It exits 0 even for unknown keys or bad values, which it only
/// reports ("…:22: Failed to parse service type, ignoring"), so the output
/// is the verdict, not the exit code. The one kind of line dropped is a
/// complaint about a *different* unit file, "/other/path/x.service:N: …",
/// which verify prints when a dependency (network.target,
/// multi-user.target) pulls in a host unit that is itself broken.
fn verify_complaints(verify: &Path, unit: &str) -> Vec<String> {
    let dir = tempdir();
    let path = dir.path().join("wspush.service");
    let unit = unit.replace("ExecStart=/usr/bin/wspush ", &format!("ExecStart={BIN} "));
    assert!(unit.contains(BIN), "ExecStart was not rewritten");
    std::fs::write(&path, unit).unwrap();
    let mut cmd = Command::new(verify);
    cmd.arg("verify").arg(&path);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let ours = path.display().to_string();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut complaints: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !about_another_unit_file(l, &ours))
        .map(str::to_string)
        .collect();
    if !out.status.success() {
        complaints.push(format!("systemd-analyze verify exited with {}", out.status));
    }
    complaints
}

/// "/lib/systemd/system/foo.service:12: …" where the path is not `ours`.
fn about_another_unit_file(line: &str, ours: &str) -> bool {
    let Some((file, rest)) = line.split_once(':') else {
        return false;
    };
    let numbered = rest
        .split_once(':')
        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    file.starts_with('/') && file != ours && numbered
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Some(verify) = find_program("systemd-analyze") else {
        return skip_missing("systemd-analyze not found (Debian package systemd)");
    };
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/systemd/wspush.service"),
    )
    .expect("read tools/systemd/wspush.service");
    for key in [
        "Type=notify",
        "EnvironmentFile=-/etc/default/wspush",
        "Environment=WSPUSH_CONTROL=/run/wspush/wspush.sock",
        "Environment=WSPUSH_CONTROL_MODE=660",
        "Environment=WSPUSH_DATA_DIR=/var/lib/wspush",
        "RuntimeDirectory=wspush",
        "StateDirectory=wspush",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.lines().any(|l| l == key), "the unit lacks {key}");
    }
    let complaints = verify_complaints(&verify, &unit);
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complained:\n{}",
        complaints.join("\n")
    );

    // The check can fail: a broken copy is reported.
    let broken = unit.replace("Type=notify", "Type=notifyy") + "Bogus=1\n";
    let complaints = verify_complaints(&verify, &broken);
    assert!(
        complaints
            .iter()
            .any(|l| l.contains("notifyy") || l.contains("service type"))
            && complaints.iter().any(|l| l.contains("Bogus")),
        "a broken unit passed: {complaints:?}"
    );
}

#[test]
fn the_default_file_sets_only_known_variables() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/systemd/wspush.default"),
    )
    .expect("read tools/systemd/wspush.default");
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("wspush serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let mut seen = 0;
    for line in text.lines() {
        let line = line.strip_prefix('#').unwrap_or(line);
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        if !name.starts_with("WSPUSH_") || name.contains(' ') {
            continue;
        }
        seen += 1;
        assert!(
            help.contains(&format!("[env: {name}=")),
            "{name} in wspush.default is not a `wspush serve` variable"
        );
    }
    assert!(
        seen >= 20,
        "only {seen} WSPUSH_* variables in wspush.default"
    );
    assert!(
        text.lines().any(|l| l == "WSPUSH_LISTEN=127.0.0.1:7001"),
        "wspush.default does not listen on 127.0.0.1:7001"
    );
}
