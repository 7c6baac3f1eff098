//! A real `redis-server` for the cluster tests: each test starts its own
//! on a free loopback port in a temporary directory, without persistence,
//! so that a restart comes back empty. Included with
//! `#[path = "common/redis.rs"] mod redis;`.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{find_program, skip_missing, tempdir};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(port: u16, dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server")
}

impl RedisServer {
    /// A fresh Redis, or `None` (after [`skip_missing`]) without one.
    pub fn start() -> Option<RedisServer> {
        for program in ["redis-server", "redis-cli"] {
            if find_program(program).is_none() {
                skip_missing(&format!(
                    "{program} not found (Debian packages redis-server, redis-tools)"
                ));
                return None;
            }
        }
        let dir = tempdir();
        let port = free_port();
        let child = spawn(port, dir.path());
        let redis = RedisServer { child, port, dir };
        redis.wait_ready();
        Some(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.try_cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start again on the same port: empty (no persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(self.port, self.dir.path());
        self.wait_ready();
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `redis-cli -p PORT ARGS...`: its trimmed stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }
}
