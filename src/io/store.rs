//! Durability (`--data-dir`): an append-only log of what must survive a
//! restart — mailbox records, delivery marks, deletions, the seq counter and
//! scheduled jobs.
//!
//! Why a hand-written log and not an embedded database: the state is small
//! and bounded (`--mailbox-bytes`), it is always read whole at start, and the
//! only query at run time is "append". A log with a checksum per record is a
//! few dozen lines, adds no dependency to a binary meant for small hosts,
//! and its crash story is easy to state: each record is
//! `[len: u32 LE][crc32: u32 LE][JSON]`; replay stops at the first record
//! that is short or fails its checksum (a torn write at a crash), and what
//! came before it is intact. At start the live state is rewritten into a
//! fresh file (temp file, fsync, rename, fsync of the directory), which
//! both compacts the log and cuts any torn tail.
//!
//! The loop appends into a memory buffer while it handles a turn's events
//! and calls [`Store::sync`] once before it sleeps: one `write` and one
//! `fdatasync` per batch of jobs. Control replies are flushed only after
//! that, so a producer that has read `{"ok":true,...}` knows the message is
//! on disk, even if the server is killed the next instant.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use log::{debug, error, info};

use super::event_loop::Server;
use super::wire::LOG_RETRY_MS;
use super::{Timer, setup};
use crate::hub::Input;
use crate::hub::journal::{LogRecord, decode, encode};

/// The log file inside `--data-dir`.
const LOG_NAME: &str = "wspush.log";

/// The open log.
///
/// Positions (`appended`, `durable`, `required`) count bytes ever appended
/// since start, across rewrites: a reply that depends on records up to
/// position `p` is true once `durable >= p`.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    file: File,
    /// Records appended this turn, written and fsync'd by [`Store::sync`].
    pending: Vec<u8>,
    /// Bytes in the file: the last snapshot plus what was appended since.
    size: u64,
    /// Size of the last snapshot.
    snapshot_size: u64,
    /// Bytes appended since start.
    appended: u64,
    /// Position known to be on disk.
    durable: u64,
    /// Position after the last record a reply depends on (every record but
    /// seq reservations).
    required: u64,
    /// Why the last write or fsync failed, until a rewrite succeeds.
    failed: Option<String>,
    /// Failed writes, fsyncs and rewrites since start.
    failures: u64,
}

impl Store {
    /// Open (creating) `dir` and replay its log. Returns the store and the
    /// intact records; a torn or corrupt tail is reported and ignored.
    pub fn open(dir: &Path) -> Result<(Store, Vec<LogRecord<'static>>), String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(LOG_NAME);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        }
        let (entries, intact) = decode(&bytes);
        if intact < bytes.len() {
            log::warn!(
                "{}: ignoring {} bytes of torn or corrupt records after offset {intact}",
                path.display(),
                bytes.len() - intact
            );
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let store = Store {
            dir: dir.to_path_buf(),
            file,
            pending: Vec::new(),
            size: intact as u64,
            snapshot_size: intact as u64,
            appended: 0,
            durable: 0,
            required: 0,
            failed: None,
            failures: 0,
        };
        Ok((store, entries))
    }

    /// Replace the log with `entries` (the live state), crash-safely. On
    /// success everything appended so far is durable (the snapshot holds
    /// it) and a failed log is healthy again.
    /// The error keeps its kind, so a caller can tell a full disk apart.
    pub fn rewrite(&mut self, entries: &[LogRecord<'_>]) -> io::Result<()> {
        let tmp = self.dir.join(format!("{LOG_NAME}.tmp"));
        let mut bytes = Vec::new();
        for entry in entries {
            encode(entry, &mut bytes);
        }
        let path = self.dir.join(LOG_NAME);
        let written = (|| -> io::Result<File> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()?;
            OpenOptions::new().append(true).open(&path)
        })();
        let file = match written {
            Ok(file) => file,
            Err(e) => {
                // A half-written temp file would keep the space we lack.
                let _ = std::fs::remove_file(&tmp);
                self.failures += 1;
                let message = format!("cannot rewrite the log in {}: {e}", self.dir.display());
                return Err(io::Error::new(e.kind(), message));
            }
        };
        self.file = file;
        self.pending.clear();
        self.size = bytes.len() as u64;
        self.snapshot_size = self.size;
        self.durable = self.appended;
        self.failed = None;
        Ok(())
    }

    /// Mark the log failed (the rewrite at start could not be written): the
    /// file is cut back to its intact records, and later records wait for a
    /// successful [`Store::rewrite`].
    pub fn fail(&mut self, reason: String) {
        let _ = self.file.set_len(self.size);
        self.failed = Some(reason);
    }

    /// Queue a record; it reaches the disk at the next [`Store::sync`].
    /// Replies of the request that appended it wait for that sync, except
    /// for a seq reservation, which no reply waits for (the hub hands out
    /// no seq above a reservation before it is durable).
    pub fn append(&mut self, record: &LogRecord<'_>) {
        let before = self.pending.len();
        encode(record, &mut self.pending);
        self.appended += (self.pending.len() - before) as u64;
        if !matches!(record, LogRecord::Seq { .. }) {
            self.required = self.appended;
        }
    }

    /// Position after the last record a reply depends on.
    pub fn required(&self) -> u64 {
        self.required
    }

    /// Position known to be on disk.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// Why the log is failed, if it is.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Failed writes, fsyncs and rewrites since start.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Whether the log has grown enough past its last snapshot that
    /// rewriting it is worth one extra write (periodic jobs and delivery
    /// marks append forever; the live state does not grow with them).
    pub fn wants_compaction(&self) -> bool {
        self.size > 4 * self.snapshot_size + (1 << 20)
    }

    /// Write and fsync what this turn appended (one write, one fdatasync).
    ///
    /// On failure the file is cut back to its last whole record, so that a
    /// partial record never sits in front of later ones, the pending records
    /// are dropped and the log is marked failed; while it is failed nothing
    /// is written until a [`Store::rewrite`] of the live state succeeds.
    pub fn sync(&mut self) -> Result<(), String> {
        if let Some(reason) = &self.failed {
            self.pending.clear();
            return Err(reason.clone());
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self
            .file
            .write_all(&self.pending)
            .and_then(|()| self.file.sync_data());
        let written = self.pending.len() as u64;
        self.pending.clear();
        if self.pending.capacity() > 1 << 20 {
            self.pending = Vec::new();
        }
        match result {
            Ok(()) => {
                self.size += written;
                self.durable = self.appended;
                Ok(())
            }
            Err(e) => {
                self.failures += 1;
                let reason = e.to_string();
                if let Err(cut) = self.file.set_len(self.size) {
                    log::error!("cannot cut the data log back to {} bytes: {cut}", self.size);
                }
                self.failed = Some(reason.clone());
                Err(reason)
            }
        }
    }
}

impl Server {
    /// Write and fsync the turn's log records, once, and tell the hub.
    pub(super) fn sync_log(&mut self) {
        if self.wire.store.is_none() {
            return;
        }
        let ok = self.wire.sync_log();
        self.feed(Input::LogWritten { ok });
        if ok
            && self
                .wire
                .store
                .as_ref()
                .is_some_and(Store::wants_compaction)
        {
            self.compact_log();
        }
    }

    /// Replay `--data-dir` into the hub, then rewrite the log as a snapshot
    /// of the restored state.
    pub(super) fn restore(&mut self, dir: &std::path::Path) -> Result<(), String> {
        let (store, records) = Store::open(dir)?;
        let count = self.hub.restore(records, self.wire.now);
        let store = self.wire.store.insert(store);
        let written = store.rewrite(&self.hub.snapshot());
        let ok = match written {
            Ok(()) => true,
            Err(e) if setup::is_disk_full(&e) => {
                // Start anyway: clients still get what is held and what is
                // pushed to them online; replies that need the log say it
                // failed, and the retry timer recovers once there is room.
                error!("{e}: starting with the data log failed");
                store.fail(e.to_string());
                self.wire.wheel.insert(LOG_RETRY_MS, Timer::DataLog);
                false
            }
            Err(e) => return Err(e.to_string()),
        };
        self.feed(Input::LogWritten { ok });
        let (seq, held, jobs) = self.hub.restored();
        info!(
            "{}: restored {count} log records: seq {seq}, {held} held messages, {jobs} jobs",
            dir.display()
        );
        Ok(())
    }

    /// Rewrite the log as a snapshot of the live state (it has grown, or it
    /// failed and this is the retry). Returns whether it is healthy now.
    pub(super) fn compact_log(&mut self) -> bool {
        let snapshot = self.hub.snapshot();
        let Some(store) = &mut self.wire.store else {
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
        drop(snapshot);
        let ok = store.failed().is_none();
        self.feed(Input::LogWritten { ok });
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, entries) = Store::open(dir.path()).unwrap();
        assert!(entries.is_empty());
        store.append(&LogRecord::Seq { upto: 1000 });
        store.append(&LogRecord::Del { id: "x".into() });
        store.sync().unwrap();
        drop(store);
        // A torn record at the end: a length that promises more than is there.
        let path = dir.path().join(LOG_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{']).unwrap();
        let (mut store, entries) = Store::open(dir.path()).unwrap();
        assert_eq!(
            entries,
            vec![
                LogRecord::Seq { upto: 1000 },
                LogRecord::Del { id: "x".into() }
            ]
        );
        store.rewrite(&entries[..1]).unwrap();
        store.append(&LogRecord::Seq { upto: 2000 });
        store.sync().unwrap();
        let (_, entries) = Store::open(dir.path()).unwrap();
        assert_eq!(
            entries,
            vec![LogRecord::Seq { upto: 1000 }, LogRecord::Seq { upto: 2000 }]
        );
    }

    #[test]
    fn a_flipped_byte_stops_replay_there() {
        let mut bytes = Vec::new();
        encode(&LogRecord::Seq { upto: 1 }, &mut bytes);
        let first = bytes.len();
        encode(&LogRecord::Seq { upto: 2 }, &mut bytes);
        bytes[first + 10] ^= 0x40;
        let (entries, intact) = decode(&bytes);
        assert_eq!(entries, vec![LogRecord::Seq { upto: 1 }]);
        assert_eq!(intact, first);
    }

    #[test]
    fn growth_past_the_snapshot_asks_for_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.rewrite(&[LogRecord::Seq { upto: 1 }]).unwrap();
        assert!(!store.wants_compaction());
        for _ in 0..2000 {
            if store.wants_compaction() {
                break;
            }
            store.append(&LogRecord::Del {
                id: "x".repeat(1000).into(),
            });
            store.sync().unwrap();
        }
        assert!(store.wants_compaction());
        store.rewrite(&[LogRecord::Seq { upto: 2 }]).unwrap();
        assert!(!store.wants_compaction());
        let (_, entries) = Store::open(dir.path()).unwrap();
        assert_eq!(entries, vec![LogRecord::Seq { upto: 2 }]);
    }
}
