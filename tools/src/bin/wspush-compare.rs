//! `wspush-compare`: the report of `tools/compare/run`: one Markdown table
//! (`results.md`) and SVG charts from the `wspush-load` results of wspush
//! and its peers, all driven the same way.
//!
//! ```text
//! wspush-compare --dir target/compare/results
//! ```
//!
//! The directory holds `peers.txt` (the servers measured, one a line, in
//! table order), `skipped.txt` (`NAME: reason` lines), `run.txt` (lines
//! copied under the title: date, machine, sizes) and, per server,
//! `NAME/meta.json` (`version`, `rss_start_kib`) with `NAME/idle.json`,
//! `churn.json`, `fanout.json` and `burst.json` (`burst --window 1,8,64`).
//! A missing or failed file shows as `–` in the table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::Value;
use wspush_tools::chart::{self, Series};

/// Write results.md and charts from a tools/compare/run output directory.
#[derive(Parser, Debug)]
struct Args {
    /// The output directory of tools/compare/run.
    #[arg(long)]
    dir: PathBuf,
    /// The windows whose burst results make columns.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    windows: Vec<u64>,
}

/// One server's results.
struct Server {
    name: String,
    meta: Value,
    idle: Value,
    churn: Value,
    fanout: Value,
    burst: Value,
}

fn read(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn main() {
    let args = Args::parse();
    let servers: Vec<Server> = lines_of(&args.dir.join("peers.txt"))
        .into_iter()
        .map(|name| {
            let d = args.dir.join(&name);
            Server {
                meta: read(&d.join("meta.json")),
                idle: read(&d.join("idle.json")),
                churn: read(&d.join("churn.json")),
                fanout: read(&d.join("fanout.json")),
                burst: read(&d.join("burst.json")),
                name,
            }
        })
        .collect();
    let md = table(&args, &servers);
    write(&args.dir.join("results.md"), &md);
    charts(&args, &servers);
    print!("{md}");
}

fn write(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("wspush-compare: {}: {e}", path.display());
        std::process::exit(1);
    }
}

fn points(v: &Value) -> &[Value] {
    v["points"].as_array().map_or(&[], Vec::as_slice)
}

/// The burst point measured at `window`.
fn window(s: &Server, w: u64) -> Option<&Value> {
    points(&s.burst)
        .iter()
        .find(|p| p["window"].as_u64() == Some(w))
}

fn cell(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.filter(|x| x.is_finite()).map_or("–".into(), f)
}

fn table(args: &Args, servers: &[Server]) -> String {
    let mut s = String::from("# wspush beside other push servers\n\n");
    for l in lines_of(&args.dir.join("run.txt")) {
        let _ = writeln!(s, "- {l}");
    }
    let fan_n = servers
        .iter()
        .filter_map(|x| points(&x.fanout).last()?["conns"].as_u64())
        .max()
        .unwrap_or(0);
    let burst_n = servers
        .iter()
        .filter_map(|x| points(&x.burst).first()?["conns"].as_u64())
        .max()
        .unwrap_or(0);
    let k = servers
        .iter()
        .find_map(|x| points(&x.burst).first()?["burst"].as_u64())
        .unwrap_or(0);
    let _ = write!(
        s,
        "\n| server | version | RSS at start | idle B/conn | handshakes/s | CPU µs/handshake \
         | fan-out to {fan_n}: last delivery ms |"
    );
    for w in &args.windows {
        let _ = write!(s, " W={w} msg/s |");
    }
    for w in &args.windows {
        let _ = write!(s, " W={w} CPU s/1M |");
    }
    s.push_str(" lost / dup |\n|");
    for _ in 0..(8 + 2 * args.windows.len()) {
        s.push_str(" --- |");
    }
    s.push('\n');
    for x in servers {
        let fan = points(&x.fanout).last();
        let (mut lost, mut dups) = (0, 0);
        for p in points(&x.fanout).iter().chain(points(&x.burst)) {
            lost += p["lost"].as_u64().unwrap_or(0);
            dups += p["dups"].as_u64().unwrap_or(0);
        }
        let _ = write!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            x.name,
            x.meta["version"].as_str().unwrap_or("–"),
            cell(x.meta["rss_start_kib"].as_f64(), |v| format!(
                "{:.1} MiB",
                v / 1024.0
            )),
            cell(x.idle["rss_slope_bytes_per_conn"].as_f64(), |v| format!(
                "{v:.0}"
            )),
            cell(x.churn["churn"]["per_second"].as_f64(), |v| format!(
                "{v:.0}"
            )),
            cell(x.churn["churn"]["server_cpu_us_per_churn"].as_f64(), |v| {
                format!("{v:.0}")
            }),
            cell(
                fan.and_then(|p| p["last_delivery_ms"]["median"].as_f64()),
                |v| format!("{v:.1}")
            ),
        );
        for &w in &args.windows {
            let v = window(x, w).and_then(|p| p["burst_msgs_per_s"]["median"].as_f64());
            let _ = write!(s, " {} |", cell(v, chart::short));
        }
        for &w in &args.windows {
            let v = window(x, w).and_then(|p| p["server_cpu_us_per_1m_messages"].as_f64());
            let _ = write!(s, " {} |", cell(v, |v| format!("{:.2}", v / 1e6)));
        }
        let any = !points(&x.fanout).is_empty() || !points(&x.burst).is_empty();
        let _ = writeln!(
            s,
            " {} |",
            if any {
                format!("{lost} / {dups}")
            } else {
                "–".into()
            }
        );
    }
    s.push_str(&format!(
        "\nRSS at start: the server's RSS once it listens. Idle B/conn: least-squares slope of \
         RSS over the idle steps. Handshakes: connect, upgrade, close frame and the server's \
         answer, one after the other. Fan-out: one broadcast at a time, median time from \
         injection to the last receipt. W=*: rounds of {k} pushes to {burst_n} connections with \
         at most W unanswered on the control socket; msg/s delivered at the clients (median), \
         server CPU seconds per million delivered messages. `–`: not measured or failed.\n"
    ));
    let skipped = lines_of(&args.dir.join("skipped.txt"));
    if !skipped.is_empty() {
        s.push_str("\nSkipped:\n\n");
        for l in skipped {
            let _ = writeln!(s, "- {l}");
        }
    }
    s.push_str(
        "\n![RSS against idle connections](memory.svg)\n\n\
         ![Time to last delivery against connections](fanout.svg)\n\n\
         ![Burst throughput by window](burst.svg)\n\n\
         ![Server CPU per million messages by window](cpu.svg)\n\n\
         ![Handshakes per second](churn.svg)\n",
    );
    s
}

fn line_series(
    servers: &[Server],
    of: impl Fn(&Server) -> &Value,
    y: impl Fn(&Value) -> Option<f64>,
) -> Vec<Series> {
    servers
        .iter()
        .map(|x| Series {
            label: x.name.clone(),
            points: points(of(x))
                .iter()
                .filter_map(|p| Some((p["conns"].as_f64()?, y(p)?)))
                .collect(),
            dashed: false,
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

fn charts(args: &Args, servers: &[Server]) {
    let dir = &args.dir;
    let names: Vec<String> = servers.iter().map(|x| x.name.clone()).collect();
    let memory = line_series(
        servers,
        |x| &x.idle,
        |p| Some(p["rss_kib"].as_f64()? / 1024.0),
    );
    write(
        &dir.join("memory.svg"),
        &chart::lines(
            "Server RSS with N idle connections",
            "connections",
            "RSS (MiB)",
            &memory,
        ),
    );
    let fan = line_series(
        servers,
        |x| &x.fanout,
        |p| p["last_delivery_ms"]["median"].as_f64(),
    );
    write(
        &dir.join("fanout.svg"),
        &chart::lines(
            "One broadcast: time to last delivery (median)",
            "connections",
            "milliseconds",
            &fan,
        ),
    );
    let per_window = |field: &str, scale: f64| -> Vec<(String, Vec<Option<f64>>)> {
        args.windows
            .iter()
            .map(|&w| {
                let v = servers
                    .iter()
                    .map(|x| {
                        let p = window(x, w)?;
                        let v = if field == "rate" {
                            p["burst_msgs_per_s"]["median"].as_f64()
                        } else {
                            p["server_cpu_us_per_1m_messages"].as_f64()
                        };
                        v.map(|v| v / scale)
                    })
                    .collect();
                (format!("window {w}"), v)
            })
            .collect()
    };
    write(
        &dir.join("burst.svg"),
        &chart::bars(
            "Bursts: delivered messages per second (median)",
            "messages per second",
            &names,
            &per_window("rate", 1.0),
        ),
    );
    write(
        &dir.join("cpu.svg"),
        &chart::bars(
            "Bursts: server CPU per million delivered messages",
            "CPU seconds",
            &names,
            &per_window("cpu", 1e6),
        ),
    );
    let churn = vec![(
        "handshakes per second".to_string(),
        servers
            .iter()
            .map(|x| x.churn["churn"]["per_second"].as_f64())
            .collect(),
    )];
    write(
        &dir.join("churn.svg"),
        &chart::bars(
            "Connect, upgrade, close: per second",
            "per second",
            &names,
            &churn,
        ),
    );
}
