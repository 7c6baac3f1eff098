//! Delayed and periodic pushes (`delay` / `every` on `push` and `publish`),
//! on the hub's own deadlines and, with a data log, kept across restarts.
//!
//! A scheduled job gets a message id when it is accepted. A delayed push is
//! sent once with that id; a periodic one sends `ID.1`, `ID.2`, ... each with
//! a fresh seq. A job whose time passed while the server was down runs once
//! right after start (a periodic one then keeps its period from there).

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

use log::{debug, warn};
use serde_json::{Value, json};
use slab::Slab;

use super::journal::LogRecord;
use super::{Deadline, Hub, Out};
use crate::proto::control::{Message, Schedule};
use crate::wheel::TimerId;

/// Longest `delay` / `every`, in seconds (30 days).
pub const MAX_PERIOD: u64 = 30 * 24 * 3600;
/// How long a run waits when no seq can be handed out (failed data log).
const RETRY_MS: u64 = 1000;

/// One pending job.
#[derive(Debug)]
struct Job {
    id: Rc<str>,
    message: Message,
    /// Seconds between runs; 0 for a one-shot.
    every: u64,
    /// Unix ms of the next run.
    next: u64,
    /// Runs so far.
    n: u64,
    timer: Option<TimerId>,
    /// Checked against the deadline, so a reused slot is never run.
    generation: u32,
}

impl Job {
    fn record(&self) -> LogRecord<'_> {
        LogRecord::Job {
            id: Cow::Borrowed(&self.id),
            next: self.next,
            every: self.every,
            n: self.n,
            message: Cow::Borrowed(&self.message),
        }
    }
}

/// The pending jobs.
#[derive(Debug, Default)]
pub struct Jobs {
    slab: Slab<Job>,
    by_id: HashMap<Rc<str>, usize>,
    /// Jobs accepted since start (the `jobN` of their ids).
    serial: u64,
    /// Last generation handed out.
    generation: u32,
}

impl Jobs {
    /// Jobs pending now.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Insert a job (not armed yet); returns its key.
    pub fn add(
        &mut self,
        id: Rc<str>,
        mut message: Message,
        every: u64,
        next: u64,
        n: u64,
    ) -> usize {
        message.dedupe_users();
        self.generation = self.generation.wrapping_add(1);
        let key = self.slab.insert(Job {
            id: id.clone(),
            message,
            every,
            next,
            n,
            timer: None,
            generation: self.generation,
        });
        self.by_id.insert(id, key);
        key
    }

    /// Keys of every pending job.
    pub fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.slab.iter().map(|(k, _)| k)
    }

    /// The pending jobs as log records (for the snapshot).
    pub fn records(&self) -> impl Iterator<Item = LogRecord<'_>> {
        self.slab.iter().map(|(_, job)| job.record())
    }
}

impl Hub {
    /// Accept a `delay`/`every` push or publish.
    pub(super) fn schedule(
        &mut self,
        message: Message,
        schedule: Schedule,
        out: &mut impl Out,
    ) -> Result<Value, String> {
        for (name, value) in [("delay", schedule.delay), ("every", schedule.every)] {
            if let Some(v) = value
                && !(1..=MAX_PERIOD).contains(&v)
            {
                return Err(format!("{name} must be 1 to {MAX_PERIOD} seconds"));
            }
        }
        if self.jobs.len() >= self.config.max_jobs {
            return Err(format!(
                "too many scheduled jobs (--max-jobs {})",
                self.config.max_jobs
            ));
        }
        self.jobs.serial += 1;
        let id = format!("{}-job{}", self.config.id_prefix, self.jobs.serial);
        let every = schedule.every.unwrap_or(0);
        let first = self.unix_ms() + schedule.delay.unwrap_or(every) * 1000;
        let key = self
            .jobs
            .add(Rc::from(id.as_str()), message, every, first, 0);
        self.log_job(key, out);
        self.arm_job(key);
        Ok(json!({ "messageId": id, "scheduled": true, "at": first }))
    }

    fn log_job(&mut self, key: usize, out: &mut impl Out) {
        if self.config.data_log {
            self.logged = true;
            out.log(&self.jobs.slab[key].record());
        }
    }

    /// Arm job `key`'s deadline for its next run.
    pub(super) fn arm_job(&mut self, key: usize) {
        let job = &mut self.jobs.slab[key];
        let at = job.next.saturating_sub(self.config.started_unix_ms);
        let deadline = Deadline::Job {
            key: key as u32,
            generation: job.generation,
        };
        job.timer = Some(self.wheel.insert(at, deadline));
    }

    /// `cancel`: stop a job. Returns whether it existed.
    pub(super) fn cancel(&mut self, id: &str, out: &mut impl Out) -> bool {
        let Some(key) = self.jobs.by_id.remove(id) else {
            return false;
        };
        let job = self.jobs.slab.remove(key);
        if let Some(timer) = job.timer {
            self.wheel.cancel(timer);
        }
        self.log(&LogRecord::Done { id: id.into() }, out);
        true
    }

    /// A job's deadline passed: send, then re-arm or finish.
    pub(super) fn run_job(&mut self, key: usize, generation: u32, out: &mut impl Out) {
        let Some(job) = self.jobs.slab.get_mut(key) else {
            return;
        };
        if job.generation != generation {
            return;
        }
        job.timer = None;
        let n = job.n + 1;
        let message_id = if job.every == 0 {
            job.id.to_string()
        } else {
            format!("{}.{n}", job.id)
        };
        let message = job.message.clone();
        let now = self.unix_ms();
        let sent = match self.cluster {
            Some(_) => self.relay(&message, Some(&message_id), out).map(|_| ()),
            None => self
                .deliver(&message, Some(&message_id), out)
                .map(|report| {
                    debug!(
                        "job {message_id}: sent as seq {}, delivered {}",
                        report.seq, report.delivered
                    )
                }),
        };
        match sent {
            Ok(()) => {}
            Err(e) => {
                // No seq can be handed out (the data log is failed, or
                // the Redis link is down): this run waits rather than
                // being lost.
                warn!("job {message_id}: not sent, retrying in 1 s: {e}");
                self.jobs.slab[key].next = now + RETRY_MS;
                self.arm_job(key);
                return;
            }
        }
        let job = &mut self.jobs.slab[key];
        job.n = n;
        if job.every == 0 {
            let id = job.id.clone();
            self.cancel(&id, out);
            return;
        }
        let period = job.every * 1000;
        job.next += period;
        if job.next + period <= now {
            // More than a whole run missed (a stall, or a restart): keep the
            // period from now rather than firing a burst of catch-up runs.
            // Smaller lateness (the 1 s wheel) is absorbed by the next run.
            job.next = now + period;
        }
        self.log_job(key, out);
        self.arm_job(key);
    }
}
