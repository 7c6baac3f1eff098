//! Counters by key for `/metrics` (closes by code, HTTP errors by status)
//! and the fan-out histogram: kept by the I/O side, which sees them.

use std::time::Instant;

use crate::hub::{Histogram, LogBudget};

/// Counters by key, for `/metrics`.
#[derive(Debug, Default)]
pub struct Tallies {
    /// Close frames the server started, by code, ascending.
    pub closes: Vec<(u16, u64)>,
    /// HTTP error answers, by status, ascending.
    pub http_errors: Vec<(u16, u64)>,
    /// From a turn's first push to its frames written.
    pub fanout: Histogram,
    /// When this turn's first push was routed, if it has one.
    pub first_push: Option<Instant>,
    /// Rate limit of the info lines about refused HTTP requests.
    pub refusal_log: LogBudget,
}

impl Tallies {
    /// Count one more close frame with `code`.
    pub fn close(&mut self, code: u16) {
        tally(&mut self.closes, code);
    }

    /// Count one more HTTP error answer with `status`.
    pub fn http_error(&mut self, status: u16) {
        tally(&mut self.http_errors, status);
    }
}

/// One more for `key` in a short sorted list of counts.
fn tally(counts: &mut Vec<(u16, u64)>, key: u16) {
    match counts.binary_search_by_key(&key, |&(k, _)| k) {
        Ok(i) => counts[i].1 += 1,
        Err(i) => counts.insert(i, (key, 1)),
    }
}
