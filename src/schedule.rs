//! Delayed and periodic pushes (`delay` / `every` on `push` and `publish`),
//! driven by the timer wheel and, with `--data-dir`, kept across restarts.
//!
//! A scheduled job gets a message id when it is accepted. A delayed push is
//! sent once with that id; a periodic one sends `ID.1`, `ID.2`, ... each with
//! a fresh seq. A job whose time passed while the server was down runs once
//! right after start (a periodic one then keeps its period from there).

use std::rc::Rc;

use log::{debug, warn};
use serde_json::{Value, json};

use crate::control::{Message, Schedule};
use crate::server::{Server, Timer};
use crate::store::Entry;
use crate::wheel::TimerId;

/// Longest `delay` / `every`, in seconds (30 days).
pub const MAX_PERIOD: u64 = 30 * 24 * 3600;

/// One pending job.
#[derive(Debug)]
pub(crate) struct Job {
    id: Rc<str>,
    message: Message,
    /// Seconds between runs; 0 for a one-shot.
    every: u64,
    /// Unix ms of the next run.
    next: u64,
    /// Runs so far.
    n: u64,
    timer: Option<TimerId>,
    /// Checked against the timer entry, so a reused slot is never run.
    generation: u32,
}

impl Server {
    /// Accept a `delay`/`every` push or publish.
    pub(crate) fn schedule(
        &mut self,
        message: Message,
        schedule: Schedule,
    ) -> Result<Value, String> {
        for (name, value) in [("delay", schedule.delay), ("every", schedule.every)] {
            if let Some(v) = value
                && !(1..=MAX_PERIOD).contains(&v)
            {
                return Err(format!("{name} must be 1 to {MAX_PERIOD} seconds"));
            }
        }
        if self.jobs.len() >= self.args.max_jobs {
            return Err(format!(
                "too many scheduled jobs (--max-jobs {})",
                self.args.max_jobs
            ));
        }
        self.job_serial += 1;
        let id = format!("{}-job{}", self.id_prefix, self.job_serial);
        let every = schedule.every.unwrap_or(0);
        let first = self.unix_ms(self.now) + schedule.delay.unwrap_or(every) * 1000;
        self.add_job(Rc::from(id.as_str()), message, every, first, 0);
        Ok(json!({ "messageId": id, "scheduled": true, "at": first }))
    }

    /// Insert a job, persist it and arm its timer.
    pub(crate) fn add_job(&mut self, id: Rc<str>, message: Message, every: u64, next: u64, n: u64) {
        self.job_generation = self.job_generation.wrapping_add(1);
        let key = self.jobs.insert(Job {
            id: id.clone(),
            message,
            every,
            next,
            n,
            timer: None,
            generation: self.job_generation,
        });
        self.job_ids.insert(id, key);
        self.persist_job(key);
        self.arm_job(key);
    }

    fn persist_job(&mut self, key: usize) {
        let job = &self.jobs[key];
        if let Some(store) = &mut self.store {
            store.append(&Entry::Job {
                id: job.id.to_string(),
                next: job.next,
                every: job.every,
                n: job.n,
                message: job.message.clone(),
            });
        }
    }

    fn arm_job(&mut self, key: usize) {
        let job = &mut self.jobs[key];
        let at = job.next.saturating_sub(self.started_unix_ms);
        let timer = Timer::Job {
            key: key as u32,
            generation: job.generation,
        };
        job.timer = Some(self.wheel.insert(at, timer));
    }

    /// `cancel`: stop a job. Returns whether it existed.
    pub(crate) fn cancel(&mut self, id: &str) -> bool {
        let Some(key) = self.job_ids.remove(id) else {
            return false;
        };
        let job = self.jobs.remove(key);
        if let Some(timer) = job.timer {
            self.wheel.cancel(timer);
        }
        if let Some(store) = &mut self.store {
            store.append(&Entry::Done { id: id.to_string() });
        }
        true
    }

    /// A job's timer fired: send, then re-arm or finish.
    pub(crate) fn on_job_timer(&mut self, key: usize, generation: u32) {
        let Some(job) = self.jobs.get_mut(key) else {
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
        let now = self.unix_ms(self.now);
        match self.deliver(&message, Some(&message_id)) {
            Ok(report) => debug!(
                "job {message_id}: sent as seq {}, delivered {}",
                report.seq, report.delivered
            ),
            Err(e) => {
                // No seq can be handed out (the data log is failed): this
                // run waits for the log rather than being lost.
                warn!("job {message_id}: not sent, retrying in 1 s: {e}");
                let job = &mut self.jobs[key];
                job.next = now + 1000;
                self.arm_job(key);
                return;
            }
        }
        let job = &mut self.jobs[key];
        job.n = n;
        if job.every == 0 {
            let id = job.id.clone();
            self.cancel(&id);
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
        self.persist_job(key);
        self.arm_job(key);
    }

    /// The pending jobs as log records (for the snapshot).
    pub(crate) fn job_entries(&self) -> Vec<Entry> {
        self.jobs
            .iter()
            .map(|(_, job)| Entry::Job {
                id: job.id.to_string(),
                next: job.next,
                every: job.every,
                n: job.n,
                message: job.message.clone(),
            })
            .collect()
    }

    /// Jobs pending now.
    pub(crate) fn job_count(&self) -> usize {
        self.jobs.len()
    }
}
