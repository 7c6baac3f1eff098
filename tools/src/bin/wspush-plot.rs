//! `wspush-plot`: draw an SVG line chart from `wspush-load` results, so a
//! person sees memory or latency against the connection count at a glance.
//!
//! ```text
//! wspush-plot --out memory.svg --title "Server RSS" --y-label MiB \
//!     --series 'one token each=idle.json:rss_kib/1024' \
//!     --line '512 B per connection=1000,3.4,19000,12.2'
//! ```
//!
//! A series is `LABEL=FILE:PATH[/DIVISOR]`: for each element of the file's
//! `points`, x is `conns` and y the value at the dotted PATH
//! (e.g. `last_delivery_ms.median`). A `--line` is a dashed reference
//! segment `LABEL=X0,Y0,X1,Y1`.

use clap::Parser;
use serde_json::Value;
use wspush_tools::chart::{self, Series};

/// Draw an SVG line chart from wspush-load JSON results.
#[derive(Parser, Debug)]
struct Args {
    /// The SVG file to write.
    #[arg(long)]
    out: String,
    /// Chart title.
    #[arg(long)]
    title: String,
    /// X axis label.
    #[arg(long, default_value = "connections")]
    x_label: String,
    /// Y axis label.
    #[arg(long)]
    y_label: String,
    /// `LABEL=FILE:PATH[/DIVISOR]`, repeatable.
    #[arg(long, required = true)]
    series: Vec<String>,
    /// `LABEL=X0,Y0,X1,Y1`, a dashed reference segment; repeatable.
    #[arg(long)]
    line: Vec<String>,
}

fn main() {
    let args = Args::parse();
    let mut all: Vec<Series> = args.series.iter().map(|s| load(s)).collect();
    for l in &args.line {
        let (label, nums) = l.split_once('=').unwrap_or_else(|| fail(l));
        let v: Vec<f64> = nums.split(',').filter_map(|n| n.parse().ok()).collect();
        if v.len() != 4 {
            fail(l);
        }
        all.push(Series {
            label: label.into(),
            points: vec![(v[0], v[1]), (v[2], v[3])],
            dashed: true,
        });
    }
    let svg = chart::lines(&args.title, &args.x_label, &args.y_label, &all);
    std::fs::write(&args.out, svg).unwrap_or_else(|e| fail(&format!("{}: {e}", args.out)));
}

fn fail(what: &str) -> ! {
    eprintln!("wspush-plot: cannot use {what:?} (see --help)");
    std::process::exit(1)
}

fn load(spec: &str) -> Series {
    let (label, rest) = spec.split_once('=').unwrap_or_else(|| fail(spec));
    let (file, path) = rest.rsplit_once(':').unwrap_or_else(|| fail(spec));
    let (path, divisor) = match path.split_once('/') {
        Some((p, d)) => (p, d.parse::<f64>().unwrap_or_else(|_| fail(spec))),
        None => (path, 1.0),
    };
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| fail(&format!("{file}: {e}")));
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|_| fail(file));
    let points = json["points"]
        .as_array()
        .unwrap_or_else(|| fail(file))
        .iter()
        .filter_map(|p| {
            let y = path.split('.').fold(p, |v, k| &v[k]).as_f64()?;
            Some((p["conns"].as_f64()?, y / divisor))
        })
        .collect();
    Series {
        label: label.into(),
        points,
        dashed: false,
    }
}
