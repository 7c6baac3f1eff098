//! The one table of counters and gauges, read by both the `stats` op and
//! `/metrics` (so they cannot drift), and the Prometheus text format
//! (version 0.0.4: every family with `# HELP` and `# TYPE`).

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{Hub, Transport};

/// One counter or gauge: its `stats` name, its `/metrics` name (without
/// the `wspush_` prefix), its kind, what it means, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatRow {
    /// Field of the `stats` reply.
    pub stat: &'static str,
    /// Metric name after `wspush_`.
    pub metric: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The value now.
    pub value: u64,
}

const fn row(
    kind: &'static str,
    stat: &'static str,
    metric: &'static str,
    help: &'static str,
    value: u64,
) -> StatRow {
    StatRow {
        stat,
        metric,
        kind,
        help,
        value,
    }
}

pub(super) const fn counter(
    stat: &'static str,
    metric: &'static str,
    help: &'static str,
    value: u64,
) -> StatRow {
    row("counter", stat, metric, help, value)
}

pub(super) const fn gauge(
    stat: &'static str,
    metric: &'static str,
    help: &'static str,
    value: u64,
) -> StatRow {
    row("gauge", stat, metric, help, value)
}

/// Upper bounds of the fan-out duration buckets, in microseconds.
pub const FANOUT_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// A histogram of durations in microseconds (cumulative buckets as
/// Prometheus wants them are computed when printed).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Observations per bucket of [`FANOUT_BUCKETS_US`]; the last slot is
    /// for those above every bound.
    counts: [u64; FANOUT_BUCKETS_US.len() + 1],
    /// Sum of the observations, in microseconds.
    sum_us: u64,
}

impl Histogram {
    /// Record one duration.
    pub fn observe(&mut self, us: u64) {
        let slot = FANOUT_BUCKETS_US.partition_point(|&bound| bound < us);
        self.counts[slot] += 1;
        self.sum_us += us;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Log lines a second at most for one kind of refusal: a scanner must not
/// flood the log.
pub const LOG_LINES_PER_SEC: u32 = 10;

/// A budget of [`LOG_LINES_PER_SEC`] log lines per second of virtual time;
/// what it refuses is counted and reported with the next line it allows.
#[derive(Debug, Default)]
pub struct LogBudget {
    second: u64,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    /// Whether a line may be logged at virtual ms `now`; when it may, how
    /// many were suppressed since the last one.
    pub fn take(&mut self, now_ms: u64) -> Option<u64> {
        let second = now_ms / 1000;
        if second != self.second {
            self.second = second;
            self.used = 0;
        }
        if self.used < LOG_LINES_PER_SEC {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// `" (N more not logged)"` when lines were suppressed.
pub fn suppressed_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more not logged)")
    }
}

impl Hub {
    /// Every counter and gauge, once: `stats` and `/metrics` both read it.
    pub fn stat_rows(&self, t: &Transport<'_>) -> Vec<StatRow> {
        let s = &self.stats;
        let mut rows = vec![
            gauge(
                "connections",
                "connections",
                "Open WebSocket connections.",
                self.sessions.len() as u64,
            ),
            gauge(
                "handshaking",
                "handshaking",
                "Connections still in an HTTP request (upgrade or API).",
                t.handshaking as u64,
            ),
            gauge(
                "users",
                "users",
                "Users with at least one open connection.",
                self.users.len() as u64,
            ),
            gauge(
                "tokens",
                "tokens",
                "Granted and file tokens.",
                self.tokens.len() as u64,
            ),
            gauge(
                "topics",
                "topics",
                "Topics with at least one follower.",
                self.topics.len() as u64,
            ),
            counter(
                "upgrades",
                "upgrades_total",
                "Connections upgraded.",
                s.upgrades,
            ),
            counter(
                "rejected",
                "rejected_total",
                "HTTP requests answered with an error status.",
                t.rejected,
            ),
            counter(
                "token_refusals",
                "token_refusals_total",
                "Upgrades or collects whose token was refused.",
                s.token_refusals,
            ),
            counter(
                "pushes",
                "pushes_total",
                "Pushes and publishes sent.",
                s.pushes,
            ),
            gauge(
                "seq",
                "seq",
                "Last sequence number handed out (in a cluster: delivered here).",
                self.cluster.as_ref().map_or(self.seq.last, |c| c.high()),
            ),
            counter(
                "messages_in",
                "messages_in_total",
                "Messages received from clients.",
                s.messages_in,
            ),
            counter(
                "messages_out",
                "messages_out_total",
                "Push frames queued to connections.",
                s.messages_out,
            ),
            counter(
                "bytes_in",
                "bytes_in_total",
                "Bytes read from WebSocket connections.",
                t.bytes_in,
            ),
            counter(
                "bytes_out",
                "bytes_out_total",
                "Bytes queued to WebSocket connections.",
                t.bytes_out,
            ),
            counter(
                "evictions",
                "idle_evictions_total",
                "Connections closed after the idle timeout.",
                t.idle_evictions,
            ),
            counter(
                "slow_consumers",
                "slow_consumers_total",
                "Connections closed for not reading.",
                t.slow_consumers,
            ),
            counter(
                "kicked",
                "kicked_total",
                "Connections closed by kick.",
                s.kicked,
            ),
            gauge(
                "mailbox",
                "mailbox_held",
                "Messages held for offline users.",
                self.mailbox.held() as u64,
            ),
            gauge(
                "mailbox_bytes",
                "mailbox_bytes",
                "Bytes the mailbox holds.",
                self.mailbox.bytes() as u64,
            ),
            counter(
                "mailbox_evicted",
                "mailbox_evicted_total",
                "Mailbox records evicted by a bound.",
                self.mailbox.evicted,
            ),
            counter(
                "mailbox_expired",
                "mailbox_expired_total",
                "Held messages that expired.",
                self.mailbox.expired,
            ),
            gauge(
                "jobs",
                "jobs",
                "Delayed and periodic pushes pending.",
                self.jobs.len() as u64,
            ),
            gauge(
                "listeners",
                "listeners",
                "Control connections streaming events.",
                self.listeners.len() as u64,
            ),
            gauge(
                "uptime",
                "uptime_seconds",
                "Seconds since the server started.",
                t.uptime,
            ),
        ];
        if let Some(log) = &t.data_log {
            let ok = u64::from(log.failed.is_none());
            rows.push(gauge(
                "data_log_ok",
                "data_log_ok",
                "1 while the data log is written, 0 while it is failed.",
                ok,
            ));
            rows.push(counter(
                "data_log_failures",
                "data_log_failures_total",
                "Times the data log failed.",
                log.failures,
            ));
        }
        if self.cluster.is_some() {
            // A node's own mailbox is empty in a cluster: the shared one is
            // in Redis (`messages` reads it), so its rows would only mislead.
            rows.retain(|r| !r.stat.starts_with("mailbox"));
        }
        self.cluster_rows(&mut rows);
        rows
    }

    /// The `stats` reply's fields.
    pub(super) fn stats_json(&self, t: &Transport<'_>) -> Value {
        let mut map = serde_json::Map::new();
        for r in self.stat_rows(t) {
            map.insert(r.stat.into(), json!(r.value));
        }
        map.remove("data_log_ok");
        let (state, error, failures) = match &t.data_log {
            None => ("off", None, 0),
            Some(log) if log.failed.is_some() => ("failed", log.failed, log.failures),
            Some(log) => ("ok", None, log.failures),
        };
        map.insert("data_log".into(), json!(state));
        map.insert("data_log_error".into(), json!(error));
        map.insert("data_log_failures".into(), json!(failures));
        if let Some(up) = self.redis_up() {
            map.remove("redis_up");
            map.insert("redis".into(), json!(if up { "up" } else { "down" }));
        }
        Value::Object(map)
    }

    /// `/metrics` in the Prometheus text format 0.0.4: the table above,
    /// closes by code, HTTP errors by status, and the fan-out histogram.
    pub fn metrics(&self, t: &Transport<'_>) -> String {
        let mut out = String::new();
        for r in self.stat_rows(t) {
            let (name, kind, help, value) = (r.metric, r.kind, r.help, r.value);
            let _ = writeln!(
                out,
                "# HELP wspush_{name} {help}\n# TYPE wspush_{name} {kind}\nwspush_{name} {value}"
            );
        }
        labelled(
            &mut out,
            "closes_total",
            "Close frames the server started, by close code.",
            "code",
            t.closes,
        );
        labelled(
            &mut out,
            "http_errors_total",
            "HTTP requests answered with an error, by status.",
            "status",
            t.http_errors,
        );
        histogram(&mut out, &t.fanout);
        out
    }
}

/// A counter family with one label.
fn labelled(out: &mut String, name: &str, help: &str, label: &str, values: &[(u16, u64)]) {
    let _ = writeln!(
        out,
        "# HELP wspush_{name} {help}\n# TYPE wspush_{name} counter"
    );
    for (key, value) in values {
        let _ = writeln!(out, "wspush_{name}{{{label}=\"{key}\"}} {value}");
    }
}

/// The fan-out duration histogram, in seconds.
fn histogram(out: &mut String, h: &Histogram) {
    let name = "wspush_fanout_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from a loop turn's first push being routed to its frames being written (the data log's sync included).\n# TYPE {name} histogram"
    );
    let mut cumulative = 0;
    for (bound, count) in FANOUT_BUCKETS_US.iter().zip(h.counts) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {cumulative}",
            seconds(*bound)
        );
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(out, "{name}_sum {}", seconds(h.sum_us));
    let _ = writeln!(out, "{name}_count {}", h.count());
}

/// Microseconds as a decimal number of seconds.
fn seconds(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_budget_allows_ten_a_second_and_counts_the_rest() {
        let mut b = LogBudget::default();
        let allowed = (0..25).filter(|_| b.take(5_000).is_some()).count();
        assert_eq!(allowed, 10);
        assert_eq!(b.take(5_999), None);
        assert_eq!(b.take(6_000), Some(16), "the suppressed ones are reported");
        assert_eq!(b.take(6_001), Some(0));
    }

    #[test]
    fn observations_land_in_their_bucket_and_print_cumulatively() {
        let mut h = Histogram::default();
        for us in [50, 100, 101, 2_000_000] {
            h.observe(us);
        }
        assert_eq!(h.count(), 4);
        let mut out = String::new();
        histogram(&mut out, &h);
        assert!(
            out.contains("wspush_fanout_seconds_bucket{le=\"0.000100\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("wspush_fanout_seconds_bucket{le=\"0.000250\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("wspush_fanout_seconds_bucket{le=\"1.000000\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("wspush_fanout_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{out}"
        );
        assert!(
            out.contains("wspush_fanout_seconds_sum 2.000251\n"),
            "{out}"
        );
    }
}
