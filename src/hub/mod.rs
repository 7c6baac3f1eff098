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
//! Files: `api` (inputs, effects, settings), [`session`] (connections and users), [`topics`], `deliver` (the
//! envelope, seqs, fan-out), [`mailbox`], `schedule` (delayed and periodic
//! jobs), `ops` (control requests and queries), `events` (listener lines),
//! [`journal`] (log records, replay, snapshot), [`tokens`], [`auth`] (admission:
//! granted tokens and JWTs, refusals told by close code).

use log::debug;

use crate::proto::control;
use crate::wheel::Wheel;

mod api;
pub mod auth;
pub mod cluster;
mod deliver;
pub mod devices;
mod events;
pub mod journal;
pub mod mailbox;
pub mod name;
mod nodes;
mod ops;
mod repair;
mod schedule;
pub mod session;
mod shared;
pub mod stats;
#[cfg(test)]
mod tests;
pub mod tokens;
pub mod topics;

pub use api::{
    Call, Config, ConnId, FrameRef, Input, Key, Link, LogHealth, Origin, Out, Transport, key_of,
};
pub use journal::LogRecord;
pub use stats::{Histogram, LogBudget, StatRow, suppressed_note};

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
    /// Upgrades whose token was refused (closed with 4401/4402, or 401).
    pub token_refusals: u64,
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
    /// The JWT of connection `key` expires (while its generation matches).
    Expiry { key: u32, generation: u32 },
    /// Relayed jobs may have waited too long for Redis.
    Relays,
}

/// All routing state.
pub struct Hub {
    /// Settings.
    config: Config,
    /// Virtual ms of the input being handled.
    now: u64,
    /// Who may connect as whom.
    tokens: Tokens,
    /// Connections admitted by a JWT: their claims and expiry.
    signed: auth::Signed,
    /// Rate limit of the info lines about refused tokens.
    refusal_log: LogBudget,
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
    /// The Redis link's side of a cluster node (`--redis`).
    cluster: Option<cluster::Cluster>,
}

impl Hub {
    /// An empty hub with these settings and tokens.
    pub fn new(config: Config, tokens: Tokens) -> Hub {
        let sessions = Sessions::with_capacity(config.max_connections);
        // In a cluster the mailbox lives in Redis (`shared`).
        let local = if config.node.is_some() {
            0
        } else {
            config.mailbox
        };
        let mailbox = Mailbox::new(local, config.mailbox_ttl * 1000, config.mailbox_bytes);
        let cluster =
            (config.node.as_deref()).map(|node| cluster::Cluster::new(node, config.mailbox > 0));
        Hub {
            config,
            now: 0,
            tokens,
            signed: auth::Signed::default(),
            refusal_log: LogBudget::default(),
            sessions,
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
            cluster,
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
                let outcome = request.and_then(|r| self.apply(origin, r, out));
                if self.cluster.is_some() {
                    return self.settle_request(origin, id, outcome, out);
                }
                let reply = match outcome {
                    Ok(fields) => control::ok(id, fields),
                    Err(e) => {
                        debug!("{origin:?}: refused request: {e}");
                        control::error(id, &e)
                    }
                };
                out.reply(origin, reply, self.logged);
            }
            Input::Collect {
                origin,
                token,
                since,
            } => self.collect(origin, token, since, out),
            Input::TooLong { origin } => {
                let reply = control::error(None, "line longer than 1 MiB refused");
                out.reply(origin, reply, false);
            }
            Input::ControlGone { origin } => {
                self.listeners.retain(|&l| l != origin);
                self.cluster_forget(origin);
            }
            Input::Tick => self.expire(out),
            Input::LogWritten { ok } => self.handle_log_written(ok),
            Input::ReloadTokens { text, name } => self.reload_tokens(text, name, out),
            Input::Shutdown => self.shut_down(out),
            Input::RedisLink { up, counter } => self.link_changed(up, counter, out),
            Input::Relayed { reference, result } => self.relay_answered(reference, result, out),
            Input::Remote { payload } => self.remote(payload, out),
            Input::Recovered { payloads } => self.end_repair(payloads, out),
            Input::RedisNodes { alive, leader } => self.nodes_seen(alive, leader),
            Input::Called { reference, result } => self.called(reference, result, out),
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
                Deadline::Expiry { key, generation } => {
                    self.expire_signed(ConnId { key, generation }, out)
                }
                Deadline::Relays => self.sweep_relays(out),
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
        if self.sessions.get(conn).is_none() {
            return;
        }
        match text {
            "--" => {}
            "subscribe" => self.sessions.set_pushing(conn, true),
            "unsubscribe" => self.sessions.set_pushing(conn, false),
            _ => match topics::Command::parse(text) {
                Some(command) => self.topic_command(conn, command, out),
                None => self.upstream(conn, Some(text), None, out),
            },
        }
    }

    /// Re-read tokens: close the connections of tokens that are gone, and
    /// log the grants the file took over as revoked (the file wins, now and
    /// at every start, so a grant it replaced must not come back later).
    fn reload_tokens(&mut self, text: &str, name: &str, out: &mut impl Out) {
        match self.tokens.load(text, name) {
            Ok(changed) => {
                log::info!(
                    "SIGHUP: reloaded {name}: {} tokens, {} removed, {} grants replaced",
                    self.tokens.len(),
                    changed.gone.len(),
                    changed.replaced.len()
                );
                for digest in &changed.replaced {
                    let digest = tokens::hex(digest).into();
                    self.log(&LogRecord::Revoke { digest }, out);
                }
                for tag in changed.gone {
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
        let session = self.sessions.get(conn)?;
        let shared = self
            .shared_mailbox()
            .then(|| self.users.name_of(session).clone());
        self.untrack_signed(conn);
        self.presence(conn, false, out);
        self.topics.leave_all(conn, &mut self.sessions);
        self.users.leave(conn, &mut self.sessions);
        if let Some(user) = shared {
            self.shared_leave(conn, &user, out);
        }
        self.sessions.remove(conn)
    }
}
