//! `tools/compare/run` end to end at a tiny size: wspush and the raw write
//! floor, 16 connections, every experiment, the table and the charts. The
//! figures at this size mean nothing; what this checks is that the command
//! users run still drives both servers the same way, loses nothing, and
//! writes every cell of its table.
//!
//! It takes this build's binaries (`--prebuilt`): `wspush-load`,
//! `wspush-floor` and `wspush-compare` of this package and the `wspush`
//! beside them, which `cargo test --workspace` builds. Without `jq` or
//! `taskset` (util-linux) the test skips, and fails under
//! `WSPUSH_REQUIRE_EXTERNAL=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn points(v: &Value) -> &[Value] {
    v["points"].as_array().map_or(&[], |p| p.as_slice())
}

/// The whole-number field `key` of every point of a `wspush-load` result.
fn each(v: &Value, key: &str) -> Vec<u64> {
    points(v).iter().filter_map(|p| p[key].as_u64()).collect()
}

fn positive(v: &Value) -> bool {
    v.as_f64().is_some_and(|x| x > 0.0)
}

/// A folder of links to the binaries this build made, for `--prebuilt`.
fn prebuilt(dir: &Path) -> PathBuf {
    let load = Path::new(env!("CARGO_BIN_EXE_wspush-load"));
    let wspush = load.with_file_name("wspush");
    assert!(
        wspush.is_file(),
        "{} is not built; run the whole workspace's tests (cargo test --workspace)",
        wspush.display()
    );
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    for (name, path) in [
        ("wspush", wspush.as_path()),
        ("wspush-load", load),
        (
            "wspush-floor",
            Path::new(env!("CARGO_BIN_EXE_wspush-floor")),
        ),
        (
            "wspush-compare",
            Path::new(env!("CARGO_BIN_EXE_wspush-compare")),
        ),
    ] {
        std::os::unix::fs::symlink(path, bin.join(name)).unwrap();
    }
    bin
}

#[test]
fn the_comparison_runs_wspush_and_the_floor_and_fills_its_table() {
    for program in ["jq", "taskset", "timeout"] {
        if !have(program) {
            let why = format!("tools/compare/run needs {program}");
            if std::env::var("WSPUSH_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1") {
                panic!("{why} (required: WSPUSH_REQUIRE_EXTERNAL=1)");
            }
            println!("SKIPPED: {why}");
            return;
        }
    }
    let dir = std::env::temp_dir().join(format!("wspush-compare-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = prebuilt(&dir);
    let out = dir.join("results");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("compare/run");
    let run = Command::new("timeout")
        .arg("600")
        .arg(&script)
        .args(["--quick", "--count", "16", "--peers", "wspush,floor"])
        .arg("--prebuilt")
        .arg(&bin)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "compare/run failed: {}\n{stderr}",
        run.status
    );

    let peers = std::fs::read_to_string(out.join("peers.txt")).unwrap();
    assert_eq!(
        peers.lines().collect::<Vec<_>>(),
        ["wspush", "floor"],
        "{stderr}"
    );
    assert!(!out.join("skipped.txt").exists(), "{stderr}");

    for name in ["wspush", "floor"] {
        let at = out.join(name);
        let meta = read_json(&at.join("meta.json"));
        assert_eq!(meta["failed"], "", "{name}: experiments failed: {meta}");
        assert!(
            meta["rss_start_kib"].as_u64().is_some_and(|k| k > 0),
            "{name}: {meta}"
        );

        let idle = read_json(&at.join("idle.json"));
        assert_eq!(
            each(&idle, "conns"),
            [4, 8, 12, 16],
            "{name}: idle steps: {idle}"
        );
        assert!(
            idle["rss_slope_bytes_per_conn"]
                .as_f64()
                .is_some_and(f64::is_finite),
            "{name}: {idle}"
        );

        let churn = read_json(&at.join("churn.json"));
        assert!(positive(&churn["churn"]["per_second"]), "{name}: {churn}");

        let fanout = read_json(&at.join("fanout.json"));
        let last = points(&fanout)
            .last()
            .unwrap_or_else(|| panic!("{name}: no fan-out: {fanout}"));
        assert_eq!(last["conns"], 16, "{name}: {last}");
        assert!(
            positive(&last["last_delivery_ms"]["median"]),
            "{name}: {last}"
        );

        let burst = read_json(&at.join("burst.json"));
        assert_eq!(
            each(&burst, "window"),
            [1, 8, 64],
            "{name}: burst windows: {burst}"
        );
        for p in points(&fanout).iter().chain(points(&burst)) {
            assert_eq!(
                (&p["lost"], &p["dups"]),
                (&Value::from(0), &Value::from(0)),
                "{name}: {p}"
            );
        }
        for p in points(&burst) {
            assert!(positive(&p["burst_msgs_per_s"]["median"]), "{name}: {p}");
        }
    }

    // Every cell of both rows is filled: `–` marks a figure that is missing.
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    for name in ["wspush", "floor"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no {name} row in\n{table}"));
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 14, "{row}");
        assert!(!cells.contains(&"–"), "a figure is missing: {row}");
        assert_eq!(cells[13], "0 / 0", "{row}");
    }
    for chart in ["memory", "fanout", "burst", "cpu", "churn"] {
        let svg = std::fs::read_to_string(out.join(format!("{chart}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{chart}.svg"
        );
        assert!(
            svg.contains("wspush") && svg.contains("floor"),
            "{chart}.svg names both servers"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
