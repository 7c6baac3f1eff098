//! The hub: all routing state and every routing decision, as a state
//! machine that does no I/O.
//!
//! Everything that happens to wspush reaches the hub through one call,
//! [`Hub::handle`]`(now, input, out)`: a connection finished its upgrade
//! request, sent a message or left; a control line (and later an HTTP
//! request or a Redis message) arrived; time passed; the data log was
//! written. The hub answers by calling its sink, [`Out`]: frames for
//! connection ids (a push is encoded once and shared by every recipient),
//! closes with a code, replies, event lines, log records. It is given `now`
//! and never reads a clock; its own deadlines (mailbox expiry, scheduled
//! jobs) sit in its own timer wheel, and the loop asks [`Hub::poll_timeout`]
//! how long it may sleep, then feeds [`Input::Tick`].
//!
//! The I/O side (`crate::io`) owns the sockets, the buffers, the data-log
//! file and the clock, and implements [`Out`]. The hub's tests drive it on
//! virtual time with a recording sink.
//!
//! Files: [`session`] (connections and users), [`topics`], `deliver` (the
//! envelope, seqs, fan-out), [`mailbox`], `schedule` (delayed and periodic
//! jobs), `ops` (control requests and queries), `events` (listener lines),
//! [`journal`] (log records, replay, snapshot), [`tokens`].

use std::net::SocketAddr;
use std::rc::Rc;

use log::debug;

use crate::proto::control;
use crate::proto::handshake::Upgrade;
use crate::wheel::Wheel;

mod deliver;
mod events;
pub mod journal;
pub mod mailbox;
mod ops;
mod schedule;
pub mod session;
#[cfg(test)]
mod tests;
pub mod tokens;
pub mod topics;

pub use journal::LogRecord;
pub use ops::StatRow;

use mailbox::Mailbox;
use schedule::Jobs;
use session::{Session, Sessions, Users};
use tokens::Tokens;
use topics::Topics;

/// Granularity of the hub's deadlines (mailbox expiry, jobs), in ms.
const TICK_MS: u64 = 1000;
/// Slots of the hub's wheel (17 minutes per rotation at 1 s).
const WHEEL_SLOTS: usize = 1024;
/// Seqs reserved in the log at a time. A new reservation is appended when
/// less than half of the current one is left, so it is normally durable
/// (synced at the end of its turn) long before a seq needs it.
pub const SEQ_BLOCK: u64 = 4096;

/// A connection, as the hub names it: the I/O side's slot `key` and a
/// `generation` that changes whenever the slot is reused, so an effect
/// aimed at a connection that left never reaches its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// Slot of the connection on the I/O side.
    pub key: u32,
    /// Changes with every connection that takes the slot.
    pub generation: u32,
}

/// Where a job came from, and so where its reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A control-socket client (its slot and generation).
    Control(ConnId),
    /// One of the hub's own timers (a scheduled job): nobody to answer.
    Timer,
}

/// A latest-value key, hashed (0 = none). A push with a key replaces an
/// unsent frame with the same key in a connection's queue.
pub type Key = u64;

/// Hash a producer's `key` string into a [`Key`] (never 0).
pub fn key_of(key: &str) -> Key {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    h.finish().max(1)
}

/// A frame registered with [`Out::shared`] for the current turn: every
/// recipient gets this reference, not a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef(pub u32);

/// Everything that can happen to the hub.
#[derive(Debug)]
pub enum Input<'a> {
    /// A connection sent a valid upgrade request: authenticate it, then
    /// open it (or refuse it).
    Upgrade {
        /// The connection.
        conn: ConnId,
        /// What the request asked for.
        request: &'a Upgrade,
        /// Its serial number (the `id` of `clients` and events).
        serial: u64,
    },
    /// A connection stopped receiving pushes (closed, failed, too slow).
    Left {
        /// The connection.
        conn: ConnId,
    },
    /// A whole text message from a client.
    Text {
        /// The connection.
        conn: ConnId,
        /// The message.
        text: &'a str,
    },
    /// A whole binary message from a client.
    Binary {
        /// The connection.
        conn: ConnId,
        /// The message.
        data: &'a [u8],
    },
    /// One control request (a line of the control socket).
    Request {
        /// Where the reply goes.
        origin: Origin,
        /// The request's JSON.
        line: &'a [u8],
    },
    /// A control line longer than the line cap (answered with an error).
    TooLong {
        /// Where the reply goes.
        origin: Origin,
    },
    /// A control client went away.
    ControlGone {
        /// Which one.
        origin: Origin,
    },
    /// Time passed: run what is due.
    Tick,
    /// The records logged so far were written and synced (`true`), or the
    /// data log failed and dropped them (`false`).
    LogWritten {
        /// Whether they reached the disk.
        ok: bool,
    },
    /// The tokens file was read again (SIGHUP): its new contents.
    ReloadTokens {
        /// The file's text.
        text: &'a str,
        /// Its name, for messages.
        name: &'a str,
    },
    /// SIGINT/SIGTERM: refuse new jobs and close every client with 1001.
    Shutdown,
}

/// What the hub may ask of the I/O side about a connection.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Virtual ms of the last byte received.
    pub last_seen_ms: u64,
}

/// Counters and facts the I/O side keeps, for `stats` and `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transport<'a> {
    /// Connections still in their HTTP request.
    pub handshaking: usize,
    /// Bytes read from WebSocket connections.
    pub bytes_in: u64,
    /// Bytes queued to WebSocket connections.
    pub bytes_out: u64,
    /// Upgrade requests answered with an HTTP error.
    pub rejected: u64,
    /// Connections closed with 4001 after the idle timeout.
    pub idle_evictions: u64,
    /// Connections closed with 4000 for not reading.
    pub slow_consumers: u64,
    /// Seconds since start.
    pub uptime: u64,
    /// The data log: `None` without `--data-dir`.
    pub data_log: Option<LogHealth<'a>>,
}

/// The data log's health.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogHealth<'a> {
    /// Why it is failed, if it is.
    pub failed: Option<&'a str>,
    /// Failed writes, fsyncs and rewrites since start.
    pub failures: u64,
}

/// The effects of the hub, carried out by the I/O side. A sink rather
/// than a returned list, so that fanning a push out to N connections
/// allocates nothing per connection.
pub trait Out {
    /// Accept connection `conn`'s upgrade: send `101` with this
    /// `Sec-WebSocket-Accept`, and treat it as a WebSocket from now on.
    fn open(&mut self, conn: ConnId, accept: &str);
    /// Refuse connection `conn`'s upgrade with an HTTP error.
    fn refuse(&mut self, conn: ConnId, status: u16, reason: &'static str);
    /// Queue a frame for one connection (replies to its own messages,
    /// held messages on connect).
    fn send(&mut self, conn: ConnId, frame: Rc<[u8]>);
    /// Register a push frame for this turn, shared by all its recipients.
    fn shared(&mut self, frame: Rc<[u8]>, key: Key) -> FrameRef;
    /// Queue a shared frame for a connection; a keyed frame drops the
    /// connection's unsent frame with the same key.
    fn push(&mut self, conn: ConnId, frame: FrameRef);
    /// Close connection `conn` with a close frame. The hub has already
    /// forgotten it: it receives nothing more.
    fn close(&mut self, conn: ConnId, code: u16, reason: &'static str);
    /// Answer a job. `logged`: the reply depends on log records the job
    /// wrote, so it must wait for them to be synced (and becomes an error
    /// if they could not be).
    fn reply(&mut self, to: Origin, line: Vec<u8>, logged: bool);
    /// Queue an event line for listener `to`; false if it is gone.
    fn event(&mut self, to: Origin, line: &[u8]) -> bool;
    /// Append a record to the data log.
    fn log(&mut self, record: &LogRecord<'_>);
    /// Write and sync the data log now (a turn outran its seq
    /// reservation); false if it failed.
    fn sync_now(&mut self) -> bool;
    /// The I/O facts of an open connection.
    fn link(&self, conn: ConnId) -> Option<Link>;
    /// The I/O side's counters.
    fn transport(&self) -> Transport<'_>;
}

/// The hub's settings, fixed at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Open WebSocket connections at most (`--max-connections`).
    pub max_connections: usize,
    /// Connections per user at most, 0 = no cap (`--max-conns-per-user`).
    pub max_conns_per_user: usize,
    /// Topics per connection at most (`--max-topics`).
    pub max_topics: usize,
    /// Scheduled jobs at most (`--max-jobs`).
    pub max_jobs: usize,
    /// Mailbox records per user, 0 = off (`--mailbox`).
    pub mailbox: usize,
    /// Mailbox TTL in seconds (`--mailbox-ttl`).
    pub mailbox_ttl: u64,
    /// Mailbox bytes at most (`--mailbox-bytes`).
    pub mailbox_bytes: usize,
    /// Whether a data log is attached (`--data-dir`): seqs then come from
    /// durable reservations.
    pub data_log: bool,
    /// Wall-clock Unix ms at virtual ms 0 (timestamps = this + now).
    pub started_unix_ms: u64,
    /// Prefix of message ids (`{prefix}-{seq}`).
    pub id_prefix: String,
}

/// Counters of the routing layer (the I/O side keeps [`Transport`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Connections upgraded.
    pub upgrades: u64,
    /// Pushes and publishes sent.
    pub pushes: u64,
    /// Messages received from clients (upstream).
    pub messages_in: u64,
    /// Frames of pushes queued to connections.
    pub messages_out: u64,
    /// Connections closed by `kick`.
    pub kicked: u64,
}

/// The seq counter and its reservation in the data log.
#[derive(Debug, Default)]
struct Seqs {
    /// Last seq handed out.
    last: u64,
    /// Highest reservation appended to the log (durable or not).
    reserved: u64,
    /// Highest reservation known to be on disk: no seq above it is used.
    durable: u64,
}

/// A deadline in the hub's wheel.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    /// The oldest mailbox record is due to expire.
    Mailbox,
    /// Scheduled job `key` is due, valid while its generation matches.
    Job { key: u32, generation: u32 },
}

/// All routing state.
pub struct Hub {
    /// Settings.
    config: Config,
    /// Virtual ms of the input being handled.
    now: u64,
    /// Who may connect as whom.
    tokens: Tokens,
    /// Open connections, by slot.
    sessions: Sessions,
    /// Online users and their connection lists.
    users: Users,
    /// Topic subscriptions.
    topics: Topics,
    /// Held messages and per-user history.
    mailbox: Mailbox,
    /// Whether a [`Deadline::Mailbox`] is pending.
    mailbox_armed: bool,
    /// Delayed and periodic jobs.
    jobs: Jobs,
    /// The hub's own deadlines.
    wheel: Wheel<Deadline>,
    /// Seqs handed out and reserved.
    seq: Seqs,
    /// Control clients that asked for `events`.
    listeners: Vec<Origin>,
    /// Whether the job being handled appended log records.
    logged: bool,
    /// No new jobs: shutting down.
    shutting_down: bool,
    /// Counters.
    stats: Stats,
}

impl Hub {
    /// An empty hub with these settings and tokens.
    pub fn new(config: Config, tokens: Tokens) -> Hub {
        let mailbox = Mailbox::new(
            config.mailbox,
            config.mailbox_ttl * 1000,
            config.mailbox_bytes,
        );
        Hub {
            config,
            now: 0,
            tokens,
            sessions: Sessions::default(),
            users: Users::default(),
            topics: Topics::default(),
            mailbox,
            mailbox_armed: false,
            jobs: Jobs::default(),
            wheel: Wheel::new(TICK_MS, WHEEL_SLOTS),
            seq: Seqs::default(),
            listeners: Vec::new(),
            logged: false,
            shutting_down: false,
            stats: Stats::default(),
        }
    }

    /// The one entry point: handle `input` at virtual ms `now`, carrying
    /// out the effects through `out`.
    pub fn handle(&mut self, now: u64, input: Input<'_>, out: &mut impl Out) {
        self.now = now;
        match input {
            Input::Upgrade {
                conn,
                request,
                serial,
            } => self.upgrade(conn, request, serial, out),
            Input::Left { conn } => self.leave(conn, out),
            Input::Text { conn, text } => self.text(conn, text, out),
            Input::Binary { conn, data } => self.upstream(conn, None, Some(data), out),
            Input::Request { origin, line } => {
                self.logged = false;
                let (id, request) = control::parse(line);
                let reply = match request.and_then(|r| self.apply(origin, r, out)) {
                    Ok(fields) => control::ok(id, fields),
                    Err(e) => {
                        debug!("{origin:?}: refused request: {e}");
                        control::error(id, &e)
                    }
                };
                out.reply(origin, reply, self.logged);
            }
            Input::TooLong { origin } => {
                let reply = control::error(None, "line longer than 1 MiB refused");
                out.reply(origin, reply, false);
            }
            Input::ControlGone { origin } => self.listeners.retain(|&l| l != origin),
            Input::Tick => self.expire(out),
            Input::LogWritten { ok } => self.handle_log_written(ok),
            Input::ReloadTokens { text, name } => self.reload_tokens(text, name, out),
            Input::Shutdown => self.shut_down(out),
        }
    }

    /// How long the loop may sleep before [`Input::Tick`] is due, in ms.
    pub fn poll_timeout(&self, now: u64) -> Option<u64> {
        self.wheel.next_timeout(now)
    }

    /// `--max-connections`.
    pub fn max_connections(&self) -> usize {
        self.config.max_connections
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.sessions.len()
    }

    /// Known tokens.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Whether `conn` is open (upgraded and not closing).
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.sessions.get(conn).is_some()
    }

    fn unix_ms(&self) -> u64 {
        self.config.started_unix_ms + self.now
    }

    /// Run the deadlines that are due.
    fn expire(&mut self, out: &mut impl Out) {
        while let Some(deadline) = self.wheel.expire(self.now) {
            match deadline {
                Deadline::Mailbox => {
                    self.mailbox_armed = false;
                    if let Some(next) = self.mailbox.expire(self.unix_ms()) {
                        self.arm_mailbox(next);
                    }
                }
                // Jobs stay in the log and run after the restart.
                Deadline::Job { .. } if self.shutting_down => {}
                Deadline::Job { key, generation } => self.run_job(key as usize, generation, out),
            }
        }
    }

    /// Arm the mailbox expiry deadline for Unix ms `at` unless one is pending.
    fn arm_mailbox(&mut self, at_unix_ms: u64) {
        if !self.mailbox_armed {
            self.mailbox_armed = true;
            let at = at_unix_ms.saturating_sub(self.config.started_unix_ms);
            self.wheel.insert(at, Deadline::Mailbox);
        }
    }

    /// Append a record the current job's reply depends on.
    fn log(&mut self, record: &LogRecord<'_>, out: &mut impl Out) {
        if self.config.data_log {
            self.logged = true;
            out.log(record);
        }
    }

    /// Hand out the next seq. With a data log it comes only from a durable
    /// reservation, so a restart never hands out a seq a client already
    /// holds: when a turn would outrun the reservation, the log is synced
    /// right away, and while the log is failed the push is refused once the
    /// durable reservation is used up.
    fn next_seq(&mut self, out: &mut impl Out) -> Result<u64, String> {
        let seq = self.seq.last + 1;
        if self.config.data_log {
            if seq + SEQ_BLOCK / 2 > self.seq.reserved {
                self.seq.reserved = seq + SEQ_BLOCK;
                out.log(&LogRecord::Seq {
                    upto: self.seq.reserved,
                });
            }
            if seq > self.seq.durable {
                let ok = out.sync_now();
                self.handle_log_written(ok);
            }
            if seq > self.seq.durable {
                let reason = out
                    .transport()
                    .data_log
                    .and_then(|h| h.failed)
                    .unwrap_or("seq reservation not written")
                    .to_string();
                return Err(format!("data log: {reason}"));
            }
        }
        self.seq.last = seq;
        Ok(seq)
    }

    /// The log's records reached the disk (`ok`) or were dropped: so did
    /// the reservation among them.
    fn handle_log_written(&mut self, ok: bool) {
        if ok {
            self.seq.durable = self.seq.reserved;
        } else {
            self.seq.reserved = self.seq.durable;
        }
    }

    /// A text message: pushes off/on, a topic command, or upstream.
    fn text(&mut self, conn: ConnId, text: &str, out: &mut impl Out) {
        let Some(session) = self.sessions.get_mut(conn) else {
            return;
        };
        match text {
            "--" => {}
            "subscribe" => session.subscribed = true,
            "unsubscribe" => session.subscribed = false,
            _ => match topics::Command::parse(text) {
                Some(command) => self.topic_command(conn, command, out),
                None => self.upstream(conn, Some(text), None, out),
            },
        }
    }

    /// Re-read tokens: close the connections of tokens that are gone.
    fn reload_tokens(&mut self, text: &str, name: &str, out: &mut impl Out) {
        match self.tokens.load(text, name) {
            Ok(gone) => {
                log::info!(
                    "SIGHUP: reloaded {name}: {} tokens, {} removed",
                    self.tokens.len(),
                    gone.len()
                );
                for tag in gone {
                    self.close_token(tag, out);
                }
            }
            Err(e) => log::warn!("SIGHUP: keeping the current tokens: {e}"),
        }
    }

    fn shut_down(&mut self, out: &mut impl Out) {
        self.shutting_down = true;
        let open: Vec<ConnId> = self.sessions.ids().collect();
        for conn in open {
            self.close(conn, 1001, "server shutting down", out);
        }
    }

    /// Forget an open connection and close it with `code`.
    fn close(&mut self, conn: ConnId, code: u16, reason: &'static str, out: &mut impl Out) {
        if self.forget(conn, out).is_some() {
            out.close(conn, code, reason);
        }
    }

    /// A connection left on its own: forget it.
    fn leave(&mut self, conn: ConnId, out: &mut impl Out) {
        self.forget(conn, out);
    }

    /// Remove an open connection from every table; `offline` goes to the
    /// listeners.
    fn forget(&mut self, conn: ConnId, out: &mut impl Out) -> Option<Session> {
        self.sessions.get(conn)?;
        self.presence(conn, false, out);
        self.topics.leave_all(conn, &mut self.sessions);
        self.users.leave(conn, &mut self.sessions);
        self.sessions.remove(conn)
    }
}
