//! SVG charts for the measurement tools: line charts against the
//! connection count (`wspush-plot`) and grouped bar charts, one group per
//! server (`wspush-compare`). Plain SVG 1.1, no scripts, white background.

use std::fmt::Write as _;

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#555555", "#17becf", "#8c564b",
];

/// One line of a line chart.
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (x, y) points in drawing order.
    pub points: Vec<(f64, f64)>,
    /// A dashed reference line without markers.
    pub dashed: bool,
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

fn header(s: &mut String, title: &str) {
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        W / 2.0,
        esc(title)
    );
}

/// Horizontal grid lines and y tick labels up to `ytop` in steps of `ys`.
fn y_axis(s: &mut String, ytop: f64, ys: f64, y_label: &str) {
    let py = |y: f64| H - BOTTOM - y / ytop * (H - TOP - BOTTOM);
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
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>"#,
        (TOP + H - BOTTOM) / 2.0,
        esc(y_label)
    );
}

fn legend(s: &mut String, i: usize, label: &str, color: &str, dash: &str) {
    let ly = TOP + 8.0 + 18.0 * i as f64;
    let _ = writeln!(
        s,
        r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
        LEFT + 12.0,
        LEFT + 36.0,
        LEFT + 42.0,
        ly + 4.0,
        esc(label)
    );
}

/// A line chart of `all` (x from 0, y from 0).
pub fn lines(title: &str, x_label: &str, y_label: &str, all: &[Series]) -> String {
    let pts = all.iter().flat_map(|s| s.points.iter());
    let (xmax, ymax) = pts.fold((1e-9f64, 1e-9f64), |(a, b), &(x, y)| (a.max(x), b.max(y)));
    let (xs, ys) = (step(xmax), step(ymax));
    let (xtop, ytop) = ((xmax / xs).ceil() * xs, (ymax / ys).ceil() * ys);
    let px = |x: f64| LEFT + x / xtop * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - y / ytop * (H - TOP - BOTTOM);
    let mut s = String::new();
    header(&mut s, title);
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
    y_axis(&mut s, ytop, ys, y_label);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 12.0,
        esc(x_label)
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
        legend(&mut s, i, &series.label, color, dash);
    }
    s.push_str("</svg>\n");
    s
}

/// A grouped bar chart: one group per entry of `groups` (servers), one bar
/// per series in each group, its value written above it (`None`: no bar).
pub fn bars(
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> String {
    let ymax = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(1e-9f64, |a, &b| a.max(b));
    let ys = step(ymax * 1.15);
    let ytop = (ymax * 1.15 / ys).ceil() * ys;
    let py = |y: f64| H - BOTTOM - y / ytop * (H - TOP - BOTTOM);
    let mut s = String::new();
    header(&mut s, title);
    y_axis(&mut s, ytop, ys, y_label);
    let width = (W - LEFT - RIGHT) / groups.len().max(1) as f64;
    let bar = width * 0.8 / series.len().max(1) as f64;
    for (g, name) in groups.iter().enumerate() {
        let x0 = LEFT + g as f64 * width;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x0 + width / 2.0,
            H - BOTTOM + 16.0,
            esc(name)
        );
        for (k, (_, values)) in series.iter().enumerate() {
            let Some(v) = values.get(g).copied().flatten() else {
                continue;
            };
            let x = x0 + width * 0.1 + k as f64 * bar;
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"#,
                x,
                py(v),
                bar * 0.9,
                (H - BOTTOM - py(v)).max(0.5),
                COLORS[k % COLORS.len()],
                x + bar * 0.45,
                py(v) - 3.0,
                short(v)
            );
        }
    }
    let legend_x = W - RIGHT - 150.0;
    for (k, (label, _)) in series.iter().enumerate() {
        let ly = TOP + 8.0 + 16.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{legend_x}" y="{}" width="12" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            ly - 5.0,
            COLORS[k % COLORS.len()],
            legend_x + 18.0,
            ly + 4.0,
            esc(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A value in 3 significant figures with k / M suffixes.
pub fn short(v: f64) -> String {
    let (v, unit) = match v.abs() {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let digits = match v.abs() {
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        _ => 2,
    };
    format!("{v:.digits$}{unit}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_short() {
        assert_eq!(short(4_304_963.6), "4.30M");
        assert_eq!(short(38_769.9), "38.8k");
        assert_eq!(short(0.2), "0.20");
        assert_eq!(step(97.0), 20.0);
    }

    #[test]
    fn bars_skip_missing_values() {
        let svg = bars(
            "t",
            "y",
            &["a".into(), "b".into()],
            &[("w=1".into(), vec![Some(2.0), None])],
        );
        assert_eq!(
            svg.matches("<rect x=").count(),
            2,
            "one bar and one legend key"
        );
    }
}
