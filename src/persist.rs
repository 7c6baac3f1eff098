//! Restoring state from `--data-dir` at start, and writing the compacted
//! snapshot that replaces the log (see `store.rs` for the file format).

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use log::info;

use crate::control::Message;
use crate::frame::{self, OpCode};
use crate::mailbox::{Record, Status};
use crate::server::Server;
use crate::store::{Entry, Store};

impl Server {
    /// Replay the log in `dir`, then rewrite it as a compact snapshot.
    pub(crate) fn restore(&mut self, dir: &Path) -> Result<(), String> {
        let (mut store, entries) = Store::open(dir)?;
        let mut seq = 0;
        let mut jobs: Vec<(String, u64, u64, u64, Message)> = Vec::new();
        let mut job_index: HashMap<String, usize> = HashMap::new();
        let count = entries.len();
        for entry in entries {
            match entry {
                Entry::Seq { upto } => seq = seq.max(upto),
                Entry::Msg {
                    user,
                    seq: s,
                    id,
                    ts,
                    exp,
                    key,
                    held,
                    body,
                } => {
                    seq = seq.max(s);
                    let frame = (!body.is_empty())
                        .then(|| frame::encode(OpCode::Text, body.as_bytes()).into());
                    let record = Record {
                        message_id: Rc::from(id.as_str()),
                        seq: s,
                        status: if held {
                            Status::Held
                        } else {
                            Status::Delivered
                        },
                        ts,
                        expires: exp,
                        frame,
                        key,
                    };
                    self.mailbox.record(&Rc::from(user.as_str()), record);
                }
                Entry::Dlv { user, seq: s } => self.mailbox.mark_delivered(&user, s),
                Entry::Del { id } => {
                    self.mailbox.delete(&id);
                }
                Entry::Job {
                    id,
                    next,
                    every,
                    n,
                    message,
                } => match job_index.get(&id) {
                    Some(&i) => jobs[i] = (id, next, every, n, message),
                    None => {
                        job_index.insert(id.clone(), jobs.len());
                        jobs.push((id, next, every, n, message));
                    }
                },
                Entry::Done { id } => {
                    job_index.remove(&id);
                }
            }
        }
        self.seq = seq;
        self.seq_reserved = seq;
        let now = self.unix_ms(self.now);
        if let Some(next) = self.mailbox.expire(now) {
            self.arm_mailbox(next);
        }
        // Jobs go in before the store is attached: they are in the snapshot.
        let mut live: Vec<usize> = job_index.into_values().collect();
        live.sort_unstable();
        for i in live {
            let (id, next, every, n, message) = jobs[i].clone();
            self.add_job(Rc::from(id.as_str()), message, every, next.max(now), n);
        }
        store.rewrite(&self.snapshot())?;
        info!(
            "{}: restored {count} log records: seq {seq}, {} held messages, {} jobs",
            dir.display(),
            self.mailbox.held(),
            self.job_count()
        );
        self.store = Some(store);
        Ok(())
    }

    /// Rewrite the log as a snapshot of the live state.
    pub(crate) fn compact_log(&mut self) {
        let snapshot = self.snapshot();
        if let Some(store) = &mut self.store {
            match store.rewrite(&snapshot) {
                Ok(()) => info!("compacted the data log to {} records", snapshot.len()),
                Err(e) => log::error!("{e}"),
            }
        }
    }

    /// The live state as log records.
    fn snapshot(&self) -> Vec<Entry> {
        // The reservation, not the last seq: seqs up to it may be handed out
        // without another log record.
        let mut entries = vec![Entry::Seq {
            upto: self.seq_reserved.max(self.seq),
        }];
        for (user, record) in self.mailbox.list(None, None, 0, usize::MAX) {
            let body = record.frame.as_deref().map_or(&[][..], payload);
            entries.push(Entry::record(&user, record, body));
        }
        entries.extend(self.job_entries());
        entries
    }
}

/// The payload of an unmasked server frame.
fn payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.get(header..).unwrap_or_default()
}
