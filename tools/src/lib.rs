//! Measurement tools for wspush (and for other WebSocket push servers).
//!
//! # Layout
//!
//! - [`chart`]: SVG line and grouped bar charts.
//! - [`ws`]: the client side of the WebSocket wire: URL templates, source
//!   addresses, the upgrade, server frames, the injection marker.
//! - [`control`]: a blocking client of wspush's control socket.
//! - [`procfs`]: a server process's CPU time and RSS, read from `/proc`.
//! - [`summary`]: percentiles, medians, least-squares slopes.
//! - [`worker`]: a `wspush-load` worker process holding connections and
//!   timing receipts, driven over stdin/stdout.
//!
//! The binaries: `wspush-load` (the load generator: `idle`, `fanout`,
//! `burst`, `churn`), `wspush-floor` (the raw `write` floor a broadcast is
//! compared with), `wspush-plot` (SVG charts from their JSON) and
//! `wspush-compare` (the table and charts of `compare/run`, wspush beside
//! other servers); `measure.sh` runs them all and draws README.md's charts.

#![warn(missing_docs)]

pub mod chart;
pub mod control;
pub mod procfs;
pub mod summary;
pub mod worker;
pub mod ws;

/// Wall-clock microseconds since the Unix epoch: injection and receipt times
/// are compared across processes, so they use the shared realtime clock.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
