//! What goes into the hub and what comes out: [`Input`], the sink [`Out`]
//! with the facts it may ask of the I/O side, the ids, and [`Config`].

use core::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use super::journal::LogRecord;
use super::stats::Histogram;
use crate::proto::handshake::Upgrade;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A control-socket client (its slot and generation).
    Control(ConnId),
    /// An HTTP API request on the WebSocket port (the connection's id):
    /// one request, one reply.
    Http(ConnId),
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
        /// What the request asked for (the hub keeps what it needs).
        request: Upgrade,
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
    /// `GET /api/collect`: a client with its own token asks for what its
    /// user's mailbox holds.
    Collect {
        /// Where the answer goes (an HTTP connection).
        origin: Origin,
        /// The client's token (granted or a JWT).
        token: &'a str,
        /// As `?since=` on the WebSocket URL.
        since: Option<u64>,
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
    /// The Redis link became ready (connected, subscribed, its counter
    /// seeded) or was lost.
    RedisLink {
        /// Which.
        up: bool,
        /// When up: Redis's seq counter after the seed; seqs between the
        /// last delivered here and it were missed while the link was down.
        counter: u64,
    },
    /// Redis answered a job relayed with [`Out::relay`]: its seq, or the
    /// error Redis gave.
    Relayed {
        /// The reference given to [`Out::relay`].
        reference: u64,
        /// The seq, or the error text.
        result: Result<u64, &'a str>,
    },
    /// A message arrived on the cluster's Redis channel.
    Remote {
        /// Its payload: a header line, then the job.
        payload: &'a [u8],
    },
    /// The nodes alive in the cluster, as this node's lease renewal saw
    /// them.
    RedisNodes {
        /// How many.
        alive: usize,
        /// Whether this node sorts first: it relays plain `PUBLISH`ed jobs.
        leader: bool,
    },
    /// The recent window answered [`Out::fetch`]: the messages it still
    /// had of those seqs, in seq order (none if it failed).
    Recovered {
        /// Channel payloads, as [`Input::Remote`] carries them.
        payloads: &'a [&'a [u8]],
    },
    /// Redis answered a [`Out::call`] made with a reference.
    Called {
        /// The reference given to [`Out::call`].
        reference: u64,
        /// The function's answer as a list of strings (an array's items;
        /// a string or number as one item), or the error Redis gave.
        result: Result<&'a [&'a [u8]], &'a str>,
    },
}

/// What a cluster node with `--mailbox` asks of Redis's functions
/// (docs/cluster.md, "Mailbox"): the held messages and history live there.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    /// A connection of `user` opened here (or `collect`: an HTTP collect):
    /// answered with the payloads it must get first.
    Online {
        /// The user.
        user: &'a str,
        /// `?since=`.
        since: Option<u64>,
        /// Only collect: the user is not online because of it.
        collect: bool,
    },
    /// The last connection of `user` here closed.
    Offline {
        /// The user.
        user: &'a str,
    },
    /// These users have connections here (after the link came back).
    Present {
        /// The users.
        users: &'a [&'a str],
    },
    /// A message held for `user` reached one of its connections here live.
    Claim {
        /// The user.
        user: &'a str,
        /// The message's seq.
        seq: u64,
    },
    /// A page of the shared records (`messages`), answered as its JSON.
    Messages {
        /// Only this user's.
        user: Option<&'a str>,
        /// Only records with this status.
        status: Option<&'a str>,
        /// Seqs above this one.
        after: u64,
        /// Records at most.
        limit: usize,
    },
    /// Delete every record of a message (`delete`), answered with the count.
    Delete {
        /// Its message id.
        message_id: &'a str,
    },
}

/// What the hub may ask of the I/O side about a connection.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The peer's address (none once the peer has reset the connection).
    pub peer: Option<SocketAddr>,
    /// The client a trusted proxy forwarded this connection for
    /// (`--trusted-proxy`); `peer` is then that proxy.
    pub forwarded: Option<IpAddr>,
    /// Virtual ms of the last byte received.
    pub last_seen_ms: u64,
}

/// Counters and facts the I/O side keeps, for `stats` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Transport<'a> {
    /// Close frames the server started, by code (ascending).
    pub closes: &'a [(u16, u64)],
    /// HTTP error answers, by status (ascending).
    pub http_errors: &'a [(u16, u64)],
    /// How long writing each turn's push frames took.
    pub fanout: Histogram,
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
    /// Queue a shared frame for each of `conns`: the fan-out of one push,
    /// in one call so that what is per frame is done once. A keyed frame
    /// drops each connection's unsent frame with the same key.
    fn push(&mut self, conns: impl Iterator<Item = ConnId>, frame: FrameRef);
    /// Close connection `conn` with a close frame. The hub has already
    /// forgotten it: it receives nothing more.
    fn close(&mut self, conn: ConnId, code: u16, reason: &'static str);
    /// Answer a job. `logged`: the reply depends on log records the job
    /// wrote, so it must wait for them to be synced (and becomes an error
    /// if they could not be).
    fn reply(&mut self, to: Origin, line: Vec<u8>, logged: bool);
    /// A complete HTTP answer for an HTTP origin: a status and a JSON body
    /// (`collect`, whose answer is not a control reply).
    fn answer(&mut self, to: Origin, status: u16, body: Vec<u8>);
    /// Queue an event line for listener `to`; false if it is gone.
    fn event(&mut self, to: Origin, line: &[u8]) -> bool;
    /// Append a record to the data log.
    fn log(&mut self, record: &LogRecord<'_>);
    /// Write and sync the data log now (a turn outran its seq
    /// reservation); false if it failed.
    fn sync_now(&mut self) -> bool;
    /// Cluster only: send a message job to Redis (its function gives it
    /// a seq and publishes it); the answer comes back as
    /// [`Input::Relayed`] with `reference`. `message_id` names a
    /// scheduled run.
    fn relay(&mut self, reference: u64, job: &[u8], message_id: Option<&str>);
    /// Cluster only: ask Redis's recent window for seqs `from..=to`
    /// (answered as [`Input::Recovered`]).
    fn fetch(&mut self, from: u64, to: u64);
    /// Cluster only: call one of Redis's mailbox functions. With a
    /// `reference` other than 0 the answer comes back as [`Input::Called`].
    fn call(&mut self, reference: u64, call: Call<'_>);
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
    /// Whether a token without a topic list may follow every topic
    /// (`--topics-default all`) or none (`none`).
    pub topics_default_all: bool,
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
    /// The HS256 key JWTs are verified with (`--jwt-secret-file`).
    pub jwt: Option<crate::proto::jwt::Key>,
    /// Refuse bad tokens with HTTP 401 instead of a close code after the
    /// upgrade (`--token-rejection http`).
    pub token_http: bool,
    /// This node's id in a cluster (`--redis`, `--node-id`); `None` on a
    /// node of its own.
    pub node: Option<String>,
}
