//! Interop: the Python `websockets` library's asyncio client against the
//! real server, driven through tests/interop/python_client.py (cases in
//! tests/interop/common.rs): deliveries, upstream messages, and every close
//! code a conforming client can provoke, as the library reports it.
//!
//! `websockets` (13.0 or later, for `websockets.asyncio.client`) is looked
//! up in `target/py` first (`pip install --target target/py websockets`),
//! then wherever python3 finds it. Without python3 or the library every
//! test skips (or fails under `WSPUSH_REQUIRE_EXTERNAL=1`).
mod common;
#[path = "interop/common.rs"]
#[macro_use]
mod interop;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use interop::Driver;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn python() -> Command {
    let mut cmd = Command::new("python3");
    let py_dir = Path::new(ROOT).join("target/py");
    if py_dir.is_dir() {
        cmd.env("PYTHONPATH", &py_dir);
    }
    cmd
}

/// Whether python3 and `websockets` with its asyncio client are there
/// (asked once per test binary).
fn available() -> &'static Result<String, String> {
    static PROBE: OnceLock<Result<String, String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        if common::find_program("python3").is_none() {
            return Err("python3 not found on PATH".into());
        }
        let mut cmd = python();
        cmd.args([
            "-c",
            "import websockets, websockets.asyncio.client; print(websockets.__version__)",
        ]);
        interop::probe(cmd).map_err(|e| {
            format!(
                "python websockets (13.0+) not importable: {e} \
                 (pip install --target target/py websockets)"
            )
        })
    })
}

fn driver() -> Option<Driver> {
    if let Err(why) = available() {
        common::skip_missing(why);
        return None;
    }
    let mut cmd = python();
    cmd.arg("-u")
        .arg(Path::new(ROOT).join("tests/interop/python_client.py"));
    Some(Driver::spawn(cmd))
}

interop_tests!(driver);
