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

use std::fmt::Write as _;

use clap::Parser;
use serde_json::Value;

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

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#555555",
];

struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
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
    let svg = draw(&args, &all);
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

/// A "nice" tick step for the range 0..max (1, 2 or 5 times a power of 10).
fn step(max: f64) -> f64 {
    let raw = max / 5.0;
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

fn draw(args: &Args, all: &[Series]) -> String {
    let pts = all.iter().flat_map(|s| s.points.iter());
    let (xmax, ymax) = pts.fold((1e-9f64, 1e-9f64), |(a, b), &(x, y)| (a.max(x), b.max(y)));
    let (xs, ys) = (step(xmax), step(ymax));
    let (xtop, ytop) = ((xmax / xs).ceil() * xs, (ymax / ys).ceil() * ys);
    let px = |x: f64| LEFT + x / xtop * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - y / ytop * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        W / 2.0,
        esc(&args.title)
    );
    let mut x = 0.0;
    while x <= xtop + xs / 2.0 {
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1}" x2="{0}" y2="{2}" stroke="#ddd"/><text x="{0}" y="{3}" text-anchor="middle">{4}</text>"##,
            px(x),
            TOP,
            H - BOTTOM,
            H - BOTTOM + 16.0,
            fmt(x)
        );
        x += xs;
    }
    let mut y = 0.0;
    while y <= ytop + ys / 2.0 {
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#ddd"/><text x="{3}" y="{4}" text-anchor="end">{5}</text>"##,
            LEFT,
            py(y),
            W - RIGHT,
            LEFT - 6.0,
            py(y) + 4.0,
            fmt(y)
        );
        y += ys;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 12.0,
        esc(&args.x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>"#,
        (TOP + H - BOTTOM) / 2.0,
        esc(&args.y_label)
    );
    for (i, series) in all.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let dash = if series.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let path: Vec<String> = series
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            path.join(" ")
        );
        if !series.dashed {
            for &(x, y) in &series.points {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    px(x),
                    py(y)
                );
            }
        }
        let ly = TOP + 8.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            LEFT + 12.0,
            LEFT + 36.0,
            LEFT + 42.0,
            ly + 4.0,
            esc(&series.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt(v: f64) -> String {
    if v >= 1000.0 && v % 1000.0 == 0.0 {
        format!("{}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.1}")
    }
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
