//! Interop: the Node `ws` library's client against the real server, driven
//! through tests/interop/node_client.mjs (cases in
//! tests/interop/common.rs): deliveries, upstream messages, and every close
//! code a conforming client can provoke, as the library reports it.
//!
//! `ws` is looked up in `target/node/node_modules` first (`npm install
//! --prefix target/node --no-save ws`, found through `NODE_PATH`), then
//! wherever node finds it. Without node or `ws` every test skips (or fails
//! under `WSPUSH_REQUIRE_EXTERNAL=1`).
mod common;
#[path = "interop/common.rs"]
#[macro_use]
mod interop;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use interop::Driver;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn node() -> Command {
    let mut cmd = Command::new("node");
    let modules = Path::new(ROOT).join("target/node/node_modules");
    if modules.is_dir() {
        cmd.env("NODE_PATH", &modules);
    }
    cmd
}

/// Whether node and `ws` are there (asked once per test binary).
fn available() -> &'static Result<String, String> {
    static PROBE: OnceLock<Result<String, String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        if common::find_program("node").is_none() {
            return Err("node not found on PATH".into());
        }
        let mut cmd = node();
        cmd.args([
            "-e",
            "require('ws'); console.log(require('ws/package.json').version)",
        ]);
        interop::probe(cmd).map_err(|e| {
            format!(
                "node module ws not found: {e} \
                 (npm install --prefix target/node --no-save ws)"
            )
        })
    })
}

fn driver() -> Option<Driver> {
    if let Err(why) = available() {
        common::skip_missing(why);
        return None;
    }
    let mut cmd = node();
    cmd.arg(Path::new(ROOT).join("tests/interop/node_client.mjs"));
    Some(Driver::spawn(cmd))
}

interop_tests!(driver);
