//! Restoring state from `--data-dir` at start, and writing the compacted
//! snapshot that replaces the log (see `store.rs` for the file format).

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use log::{debug, error, info};

use crate::control::Message;
use crate::delivery::SEQ_BLOCK;
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
        // A fresh reservation, durable with the snapshot before any seq of
        // this run is handed out.
        store.reserve(seq + SEQ_BLOCK);
        self.store = Some(store);
        let snapshot = self.snapshot();
        let store = self.store.as_mut().expect("attached above");
        match store.rewrite(&snapshot) {
            Ok(()) => {}
            Err(e) if is_disk_full(&e) => {
                // Start anyway: clients still get what is held and what is
                // pushed to them online; replies that need the log say it
                // failed, and the retry timer recovers once there is room.
                error!("{e}: starting with the data log failed");
                store.fail(e.to_string());
                self.on_log_failure();
            }
            Err(e) => return Err(e.to_string()),
        }
        info!(
            "{}: restored {count} log records: seq {seq}, {} held messages, {} jobs",
            dir.display(),
            self.mailbox.held(),
            self.job_count()
        );
        Ok(())
    }

    /// Rewrite the log as a snapshot of the live state (it has grown, or it
    /// failed and this is the retry). Returns whether it is healthy now.
    pub(crate) fn compact_log(&mut self) -> bool {
        let snapshot = self.snapshot();
        let Some(store) = &mut self.store else {
            return true;
        };
        let was_failed = store.failed().is_some();
        match store.rewrite(&snapshot) {
            Ok(()) if was_failed => info!(
                "data log recovered: rewrote {} records of live state",
                snapshot.len()
            ),
            Ok(()) => info!("compacted the data log to {} records", snapshot.len()),
            Err(e) if was_failed => debug!("data log still failed: {e}"),
            // The old log is intact: compaction waits for the next growth.
            Err(e) => error!("{e}"),
        }
        store.failed().is_none()
    }

    /// The live state as log records.
    fn snapshot(&self) -> Vec<Entry> {
        // The reservation, not the last seq: seqs up to it may be handed out
        // without another log record.
        let reserved = self.store.as_ref().map_or(0, Store::reserved);
        let mut entries = vec![Entry::Seq {
            upto: reserved.max(self.seq),
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

/// ENOSPC or EDQUOT: space may come back, so the server runs on.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}
