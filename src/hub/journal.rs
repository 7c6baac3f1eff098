//! The data log's records: what they say, their byte format, replaying
//! them into a hub at start, and the snapshot of the live state that
//! replaces the log when it is compacted (or recovered after a failure):
//! the mailbox, seqs, jobs, and the tokens granted over the control socket
//! (by digest only).
//!
//! A record is `[len: u32 LE][crc32: u32 LE][JSON]`. Replay stops at the
//! first record that is short or fails its checksum (a torn write at a
//! crash); what came before it is intact. The file itself is the I/O
//! side's (`crate::io::store`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::mailbox::{Record, Status};
use super::{Hub, SEQ_BLOCK, tokens};
use crate::proto::control::Message;
use crate::proto::frame::{self, OpCode};

/// Largest record accepted at replay (a corrupt length must not make us
/// allocate gigabytes).
const MAX_RECORD: usize = 64 << 20;

/// One log record. Fields borrow where they can, so that logging a push
/// to many users copies nothing per user but the encoded bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "k", rename_all = "lowercase")]
pub enum LogRecord<'a> {
    /// Seqs up to `upto` may have been handed out.
    Seq {
        /// Highest reserved seq.
        upto: u64,
    },
    /// A mailbox record for one user.
    Msg {
        /// The user.
        #[serde(borrow)]
        user: Cow<'a, str>,
        /// The message's seq.
        seq: u64,
        /// The message id.
        #[serde(borrow)]
        id: Cow<'a, str>,
        /// Unix ms pushed.
        ts: u64,
        /// Unix ms when its frame expires.
        exp: u64,
        /// Latest-value key hash (0: none).
        key: u64,
        /// Held (true) or delivered (false) when written.
        held: bool,
        /// The envelope JSON (the frame's payload); empty once expired.
        #[serde(borrow)]
        body: Cow<'a, str>,
    },
    /// A held record was delivered.
    Dlv {
        /// The user.
        #[serde(borrow)]
        user: Cow<'a, str>,
        /// The message's seq.
        seq: u64,
    },
    /// Every record of a message was deleted.
    Del {
        /// The message id.
        #[serde(borrow)]
        id: Cow<'a, str>,
    },
    /// A scheduled job (re)written: its latest state replaces earlier ones.
    Job {
        /// The job's message id.
        #[serde(borrow)]
        id: Cow<'a, str>,
        /// Unix ms of the next run.
        next: u64,
        /// Seconds between runs (0: once).
        every: u64,
        /// Runs so far.
        n: u64,
        /// What it sends.
        message: Cow<'a, Message>,
    },
    /// A job ended (cancelled, or a one-shot that ran).
    Done {
        /// The job's message id.
        #[serde(borrow)]
        id: Cow<'a, str>,
    },
    /// A token granted over the control socket (latest wins). The token
    /// itself is never written: only the first 128 bits of its SHA-1 digest.
    Grant {
        /// The token's key, 32 hex digits (40 in logs from before the key
        /// was shortened: the whole SHA-1, of which the first 32 count).
        #[serde(borrow)]
        digest: Cow<'a, str>,
        /// The user it authenticates.
        #[serde(borrow)]
        user: Cow<'a, str>,
        /// The topic patterns it allows; absent: `--topics-default`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topics: Option<Cow<'a, [Box<str>]>>,
        /// Unix ms granted.
        at: u64,
    },
    /// A granted token was revoked (or the tokens file took it over).
    Revoke {
        /// The token's key, 32 hex digits (40 in logs from before the key
        /// was shortened: the whole SHA-1, of which the first 32 count).
        #[serde(borrow)]
        digest: Cow<'a, str>,
    },
}

impl<'a> LogRecord<'a> {
    /// The log record of `user`'s mailbox record; `body` is the envelope
    /// JSON (empty once the frame has expired). Expired records are written
    /// as held: replay expires them again from `exp`.
    pub fn of(user: Cow<'a, str>, record: &'a Record, body: &'a [u8]) -> LogRecord<'a> {
        LogRecord::Msg {
            user,
            seq: record.seq,
            id: Cow::Borrowed(&record.message_id),
            ts: record.ts,
            exp: record.expires,
            key: record.key,
            held: record.status != Status::Delivered,
            body: String::from_utf8_lossy(body),
        }
    }
}

/// Append one record, framed and checksummed, to `out`.
pub fn encode(record: &LogRecord<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    serde_json::to_writer(&mut *out, record).expect("a log record always serialises");
    let json = &out[start + 8..];
    let len = u32::try_from(json.len()).expect("records are far below 4 GiB");
    let crc = crc32(json);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decode records until the first bad one; returns them and the intact length.
pub fn decode(bytes: &[u8]) -> (Vec<LogRecord<'static>>, usize) {
    let mut records = Vec::new();
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
        match serde_json::from_slice::<LogRecord<'_>>(json) {
            Ok(record) => records.push(record.into_owned()),
            Err(_) => break,
        }
        pos += 8 + len;
    }
    (records, pos)
}

impl LogRecord<'_> {
    /// The same record owning its strings.
    pub fn into_owned(self) -> LogRecord<'static> {
        fn own(s: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(s.into_owned())
        }
        match self {
            LogRecord::Seq { upto } => LogRecord::Seq { upto },
            LogRecord::Msg {
                user,
                seq,
                id,
                ts,
                exp,
                key,
                held,
                body,
            } => LogRecord::Msg {
                user: own(user),
                seq,
                id: own(id),
                ts,
                exp,
                key,
                held,
                body: own(body),
            },
            LogRecord::Dlv { user, seq } => LogRecord::Dlv {
                user: own(user),
                seq,
            },
            LogRecord::Del { id } => LogRecord::Del { id: own(id) },
            LogRecord::Job {
                id,
                next,
                every,
                n,
                message,
            } => LogRecord::Job {
                id: own(id),
                next,
                every,
                n,
                message: Cow::Owned(message.into_owned()),
            },
            LogRecord::Done { id } => LogRecord::Done { id: own(id) },
            LogRecord::Grant {
                digest,
                user,
                topics,
                at,
            } => LogRecord::Grant {
                digest: own(digest),
                user: own(user),
                topics: topics.map(|t| Cow::Owned(t.into_owned())),
                at,
            },
            LogRecord::Revoke { digest } => LogRecord::Revoke {
                digest: own(digest),
            },
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it), table-driven.
pub fn crc32(data: &[u8]) -> u32 {
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

/// A job as the log last described it.
struct Saved {
    next: u64,
    every: u64,
    n: u64,
    message: Message,
}

impl Hub {
    /// Replay the records of the log into an empty hub (at start, before
    /// any input). Jobs whose time passed are due at once. Returns how many
    /// records there were. The snapshot ([`Hub::snapshot`]) then holds the
    /// whole restored state, and a fresh seq reservation.
    pub fn restore(&mut self, records: Vec<LogRecord<'static>>, now: u64) -> usize {
        self.now = now;
        let count = records.len();
        let mut seq = 0;
        let mut jobs: Vec<(String, Saved)> = Vec::new();
        let mut job_index: HashMap<String, usize> = HashMap::new();
        for record in records {
            match record {
                LogRecord::Seq { upto } => seq = seq.max(upto),
                LogRecord::Msg {
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
                        message_id: Rc::from(&*id),
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
                    self.mailbox.record(&user, record);
                }
                LogRecord::Dlv { user, seq: s } => self.mailbox.mark_delivered(&user, s),
                LogRecord::Del { id } => {
                    self.mailbox.delete(&id);
                }
                LogRecord::Job {
                    id,
                    next,
                    every,
                    n,
                    message,
                } => {
                    let saved = Saved {
                        next,
                        every,
                        n,
                        message: message.into_owned(),
                    };
                    match job_index.get(&*id) {
                        Some(&i) => jobs[i].1 = saved,
                        None => {
                            job_index.insert(id.to_string(), jobs.len());
                            jobs.push((id.into_owned(), saved));
                        }
                    }
                }
                LogRecord::Done { id } => {
                    job_index.remove(&*id);
                }
                LogRecord::Grant {
                    digest,
                    user,
                    topics,
                    at,
                } => {
                    let topics = topics.map(|t| Rc::from(t.into_owned()));
                    self.tokens.restore(&digest, &user, topics, at);
                }
                LogRecord::Revoke { digest } => self.tokens.forget(&digest),
            }
        }
        // Seqs up to `seq` may have been handed out: this run starts above
        // it, and only once a fresh reservation is durable.
        self.seq.last = seq;
        self.seq.durable = seq;
        self.seq.reserved = seq + SEQ_BLOCK;
        let now_unix = self.unix_ms();
        if let Some(next) = self.mailbox.expire(now_unix) {
            self.arm_mailbox(next);
        }
        let mut live: Vec<usize> = job_index.into_values().collect();
        live.sort_unstable();
        for i in live {
            let (id, saved) = &jobs[i];
            let next = saved.next.max(now_unix);
            let message = saved.message.clone();
            self.jobs
                .add(Rc::from(id.as_str()), message, saved.every, next, saved.n);
        }
        let keys: Vec<usize> = self.jobs.keys().collect();
        for key in keys {
            self.arm_job(key);
        }
        count
    }

    /// The live state as log records, the seq reservation first, granted
    /// tokens last.
    pub fn snapshot(&self) -> Vec<LogRecord<'_>> {
        // The reservation, not the last seq: seqs up to it may be handed
        // out without another log record.
        let mut records = vec![LogRecord::Seq {
            upto: self.seq.reserved.max(self.seq.last),
        }];
        for (user, record) in self.mailbox.list(None, None, 0, usize::MAX) {
            let body = record
                .frame
                .as_deref()
                .map_or(&[][..], frame::server_payload);
            records.push(LogRecord::of(Cow::Owned(user.to_string()), record, body));
        }
        records.extend(self.jobs.records());
        // Granted tokens (file tokens come from the file at every start).
        for entry in self.tokens.entries() {
            if let Some(at) = entry.granted_at {
                records.push(LogRecord::Grant {
                    digest: Cow::Owned(tokens::hex(entry.digest)),
                    user: Cow::Borrowed(entry.user),
                    topics: entry.topics.map(Cow::Borrowed),
                    at,
                });
            }
        }
        records
    }

    /// Held messages and pending jobs (for the start-up log line).
    pub fn restored(&self) -> (u64, usize, usize) {
        (self.seq.last, self.mailbox.held(), self.jobs.len())
    }
}
