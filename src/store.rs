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

use serde::{Deserialize, Serialize};

use crate::control::Message;
use crate::mailbox::{Record, Status};

/// The log file inside `--data-dir`.
const LOG_NAME: &str = "wspush.log";
/// Largest record accepted at replay (a corrupt length must not make us
/// allocate gigabytes).
const MAX_RECORD: usize = 64 << 20;

/// One log record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "k", rename_all = "lowercase")]
pub enum Entry {
    /// Seqs up to `upto` may have been handed out.
    Seq {
        /// Highest reserved seq.
        upto: u64,
    },
    /// A mailbox record for one user.
    Msg {
        /// The user.
        user: String,
        /// The message's seq.
        seq: u64,
        /// The message id.
        id: String,
        /// Unix ms pushed.
        ts: u64,
        /// Unix ms when its frame expires.
        exp: u64,
        /// Latest-value key hash (0: none).
        key: u64,
        /// Held (true) or delivered (false) when written.
        held: bool,
        /// The envelope JSON (the frame's payload).
        body: String,
    },
    /// A held record was delivered.
    Dlv {
        /// The user.
        user: String,
        /// The message's seq.
        seq: u64,
    },
    /// Every record of a message was deleted.
    Del {
        /// The message id.
        id: String,
    },
    /// A scheduled job (re)written: its latest state replaces earlier ones.
    Job {
        /// The job's message id.
        id: String,
        /// Unix ms of the next run.
        next: u64,
        /// Seconds between runs (0: once).
        every: u64,
        /// Runs so far.
        n: u64,
        /// What it sends.
        message: Message,
    },
    /// A job ended (cancelled, or a one-shot that ran).
    Done {
        /// The job's message id.
        id: String,
    },
}

impl Entry {
    /// The log record of a mailbox record; `body` is the envelope JSON
    /// (empty once the frame has expired). Expired records are written as
    /// held: replay expires them again from `exp`.
    pub fn record(user: &str, record: &Record, body: &[u8]) -> Entry {
        Entry::Msg {
            user: user.to_string(),
            seq: record.seq,
            id: record.message_id.to_string(),
            ts: record.ts,
            exp: record.expires,
            key: record.key,
            held: record.status != Status::Delivered,
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }
}

/// The open log.
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
}

impl Store {
    /// Open (creating) `dir` and replay its log. Returns the store and the
    /// intact records; a torn or corrupt tail is reported and ignored.
    pub fn open(dir: &Path) -> Result<(Store, Vec<Entry>), String> {
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
            size: bytes.len() as u64,
            snapshot_size: bytes.len() as u64,
        };
        Ok((store, entries))
    }

    /// Replace the log with `entries` (the live state), crash-safely.
    pub fn rewrite(&mut self, entries: &[Entry]) -> Result<(), String> {
        let fail = |e: io::Error| format!("cannot rewrite the log in {}: {e}", self.dir.display());
        let tmp = self.dir.join(format!("{LOG_NAME}.tmp"));
        let mut bytes = Vec::new();
        for entry in entries {
            encode(entry, &mut bytes);
        }
        let mut f = File::create(&tmp).map_err(fail)?;
        f.write_all(&bytes).map_err(fail)?;
        f.sync_all().map_err(fail)?;
        let path = self.dir.join(LOG_NAME);
        std::fs::rename(&tmp, &path).map_err(fail)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(fail)?;
        self.file = OpenOptions::new().append(true).open(&path).map_err(fail)?;
        self.pending.clear();
        self.size = bytes.len() as u64;
        self.snapshot_size = self.size;
        Ok(())
    }

    /// Queue a record; it reaches the disk at the next [`Store::sync`].
    pub fn append(&mut self, entry: &Entry) {
        encode(entry, &mut self.pending);
    }

    /// Whether the log has grown enough past its last snapshot that
    /// rewriting it is worth one extra write (periodic jobs and delivery
    /// marks append forever; the live state does not grow with them).
    pub fn wants_compaction(&self) -> bool {
        self.size > 4 * self.snapshot_size + (1 << 20)
    }

    /// Write and fsync what this turn appended (one write, one fdatasync).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self
            .file
            .write_all(&self.pending)
            .and_then(|()| self.file.sync_data());
        self.size += self.pending.len() as u64;
        self.pending.clear();
        result
    }
}

fn encode(entry: &Entry, out: &mut Vec<u8>) {
    let json = serde_json::to_vec(entry).expect("a log entry always serialises");
    let len = u32::try_from(json.len()).expect("records are far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32(&json).to_le_bytes());
    out.extend_from_slice(&json);
}

/// Decode records until the first bad one; returns them and the intact length.
fn decode(bytes: &[u8]) -> (Vec<Entry>, usize) {
    let mut entries = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= 8 {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len > MAX_RECORD || bytes.len() - pos - 8 < len {
            break;
        }
        let json = &bytes[pos + 8..pos + 8 + len];
        if crc32(json) != crc {
            break;
        }
        match serde_json::from_slice(json) {
            Ok(entry) => entries.push(entry),
            Err(_) => break,
        }
        pos += 8 + len;
    }
    (entries, pos)
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it), table-driven.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_survive_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, entries) = Store::open(dir.path()).unwrap();
        assert!(entries.is_empty());
        store.append(&Entry::Seq { upto: 1000 });
        store.append(&Entry::Del { id: "x".into() });
        store.sync().unwrap();
        drop(store);
        // A torn record at the end: a length that promises more than is there.
        let path = dir.path().join(LOG_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{']).unwrap();
        let (mut store, entries) = Store::open(dir.path()).unwrap();
        assert_eq!(
            entries,
            vec![Entry::Seq { upto: 1000 }, Entry::Del { id: "x".into() }]
        );
        store.rewrite(&entries[..1]).unwrap();
        store.append(&Entry::Seq { upto: 2000 });
        store.sync().unwrap();
        let (_, entries) = Store::open(dir.path()).unwrap();
        assert_eq!(
            entries,
            vec![Entry::Seq { upto: 1000 }, Entry::Seq { upto: 2000 }]
        );
    }

    #[test]
    fn a_flipped_byte_stops_replay_there() {
        let mut bytes = Vec::new();
        encode(&Entry::Seq { upto: 1 }, &mut bytes);
        let first = bytes.len();
        encode(&Entry::Seq { upto: 2 }, &mut bytes);
        bytes[first + 10] ^= 0x40;
        let (entries, intact) = decode(&bytes);
        assert_eq!(entries, vec![Entry::Seq { upto: 1 }]);
        assert_eq!(intact, first);
    }

    #[test]
    fn growth_past_the_snapshot_asks_for_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.rewrite(&[Entry::Seq { upto: 1 }]).unwrap();
        assert!(!store.wants_compaction());
        for _ in 0..2000 {
            if store.wants_compaction() {
                break;
            }
            store.append(&Entry::Del {
                id: "x".repeat(1000),
            });
            store.sync().unwrap();
        }
        assert!(store.wants_compaction());
        store.rewrite(&[Entry::Seq { upto: 2 }]).unwrap();
        assert!(!store.wants_compaction());
        let (_, entries) = Store::open(dir.path()).unwrap();
        assert_eq!(entries, vec![Entry::Seq { upto: 2 }]);
    }
}
