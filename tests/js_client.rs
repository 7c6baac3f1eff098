//! The reference JavaScript client (tools/client/wspush.js): its unit tests
//! under `node --test`, and tools/client/test/live.mjs against a real
//! server. Skipped (with a printed reason) without Node 20 or newer.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "live-client-token";
const USER: &str = "alice";

struct Node {
    program: PathBuf,
    major: u32,
}

impl Node {
    /// `node`, at least version 20, or a skip.
    fn find() -> Option<Node> {
        let Some(program) = find_program("node") else {
            skip_missing("node is not installed");
            return None;
        };
        let mut cmd = Command::new(&program);
        cmd.arg("--version");
        let out = run_with_timeout(cmd, Duration::from_secs(10));
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let major = version
            .strip_prefix('v')
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok());
        match major {
            Some(major) if major >= 20 => Some(Node { program, major }),
            _ => {
                skip_missing(&format!("node {version:?} is older than 20"));
                None
            }
        }
    }

    /// A command running node in the repository root.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        cmd
    }

    /// Node before 22 keeps its global WebSocket behind a flag.
    fn websocket_flag(&self) -> Option<&'static str> {
        (self.major < 22).then_some("--experimental-websocket")
    }
}

#[test]
fn unit_tests_pass() {
    let Some(node) = Node::find() else { return };
    let mut cmd = node.command();
    cmd.args(["--test", "tools/client/test/"]);
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
}

/// The node process, killed if the test ends early.
struct Script {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Script {
    fn spawn(mut cmd: Command) -> Script {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn node");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Script {
            child,
            stdin,
            lines,
            stderr: Some(stderr),
        }
    }

    fn reply(&mut self, value: &Value) {
        let mut line = serde_json::to_vec(value).unwrap();
        line.push(b'\n');
        self.stdin.write_all(&line).expect("write to node");
        self.stdin.flush().expect("flush to node");
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_args(listen: &str, data: &Path) -> Vec<String> {
    [
        "--listen",
        listen,
        "--data-dir",
        data.to_str().unwrap(),
        "--mailbox",
        "16",
        "--topics-default",
        "none",
    ]
    .map(String::from)
    .to_vec()
}

fn start_server(listen: &str, data: &Path) -> Server {
    Server::start_opts(ServerOpts {
        args: serve_args(listen, data),
        listen_arg: false,
        ..Default::default()
    })
}

#[test]
fn live_client_against_a_real_server() {
    let Some(node) = Node::find() else { return };
    let started = Instant::now();
    let data = tempdir();
    let mut server = start_server("127.0.0.1:0", data.path());
    let listen = server.addr.to_string();
    let r = server.control(json!({"op":"grant","token":TOKEN,"user":USER,"topics":["dev/*"]}));
    assert_eq!(r["ok"], json!(true), "grant: {r}");

    let mut cmd = node.command();
    cmd.args(node.websocket_flag())
        .arg("tools/client/test/live.mjs")
        .arg(server.url("/push"))
        .args([TOKEN, USER]);
    let mut script = Script::spawn(cmd);

    let deadline = started + Duration::from_secs(90);
    let mut transcript = Vec::new();
    let mut passed = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match script.lines.recv_timeout(left.min(Duration::from_secs(30))) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("live.mjs went quiet; so far:\n{}", transcript.join("\n"))
            }
        };
        println!("live.mjs: {line}");
        transcript.push(line.clone());
        if line == "PASS" {
            passed = true;
        }
        let Some(request) = line.strip_prefix("NEED ") else {
            continue;
        };
        let request: Value = serde_json::from_str(request).expect("a NEED line is JSON");
        let answer = if let Some(req) = request.get("control") {
            server.control(req.clone())
        } else if request["server"] == "stop" {
            server.term();
            json!({"ok": true})
        } else if request["server"] == "start" {
            server = start_server(&listen, data.path());
            assert_eq!(
                server.addr.to_string(),
                listen,
                "restarted on the same port"
            );
            json!({"ok": true})
        } else {
            panic!("unknown request from live.mjs: {request}")
        };
        script.reply(&answer);
    }

    let status = loop {
        if let Some(status) = script.child.try_wait().expect("try_wait node") {
            break status;
        }
        assert!(Instant::now() < deadline, "node did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = script.stderr.take().unwrap().join().unwrap_or_default();
    assert!(
        status.success() && passed,
        "live.mjs failed ({status:?}):\n{}\n---- node stderr ----\n{stderr}",
        transcript.join("\n")
    );
    println!("live client run: {:?}", started.elapsed());
}
