//! Autobahn|Testsuite against the debug binary, cases 1–7 and 10 (the
//! protocol cases; about 15 s). `.ci/run` also runs the whole suite,
//! 9.* included, against the release build; see tools/autobahn/run.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn autobahn_protocol_cases_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reports = tempdir();
    let mut cmd = Command::new(root.join("tools/autobahn/run"));
    cmd.args(["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"])
        .env("WSPUSH_BIN", BIN)
        .env("AUTOBAHN_REPORTS", reports.path());
    let out = run_with_timeout(cmd, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    if out.status.code() == Some(2) {
        // No Python 2.7 or no suite: `tools/autobahn/run --install-only`.
        return skip_missing(stderr.trim());
    }
    assert!(out.status.success(), "autobahn failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");
}
