//! A real nginx for the tests that put wspush behind one: the site (a
//! shipped config with its `# test:` lines rewritten) inside a minimal
//! main config whose every path is in the test's directory. Included with
//! `#[path = "common/nginx.rs"] mod nginx;`.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// nginx in the foreground; stopped on drop.
pub struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers, which
        // a killed master would leave running.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// A shipped file of `tools/nginx/`, with each line containing a key of
/// `replace` swapped for its value.
pub fn site(file: &str, replace: &[(&str, String)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools/nginx")
        .join(file);
    let shipped = std::fs::read_to_string(path).unwrap();
    shipped
        .lines()
        .map(|line| {
            replace
                .iter()
                .find(|(mark, _)| line.contains(mark))
                .map_or_else(|| line.to_string(), |(_, with)| with.clone())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Start nginx in `dir` with `site`, and wait until it listens on `port`.
pub fn start(dir: &Path, site: &str, port: u16) -> Nginx {
    let d = dir.display();
    let main = format!(
        "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n access_log {d}/access.log;\n client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n{site}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let nginx = Nginx(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not listen: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nginx
}
