//! The I/O side: the event loop, the sockets and their buffers, the
//! data-log file, and the clock. It moves bytes and time in and out of the
//! hub ([`crate::hub`]) and decides nothing about routing.
//!
//! Files: [`event_loop`] (the loop, accept paths, signals, the turn order),
//! `wire` (the state the hub's effects act on, and `Out` carried out on
//! it), `ws_conn` (reading WebSocket connections, the upgrade, inbound
//! frames, connection deadlines), [`conn`] (one connection's I/O state and
//! the frame → message decoder), [`ctrl_conn`] (control clients: lines in,
//! held replies out), [`outbox`] (coalesced vectored writes and the
//! backlog), [`store`] (the log file), `redis_link`, `redis_read` and `redis_sock` (the
//! Redis link of a cluster node), [`heap`], `setup`.

pub mod conn;
pub mod ctrl_conn;
pub mod event_loop;
pub mod heap;
mod http_conn;
pub mod outbox;
mod redis_link;
mod redis_read;
mod redis_sock;
mod send;
mod setup;
pub mod store;
mod tallies;
mod wire;
mod ws_conn;

use mio::Token;

/// The WebSocket/HTTP listener.
const LISTENER: Token = Token(0);
/// The control socket listener.
const CONTROL: Token = Token(1);
/// SIGINT, SIGTERM and SIGHUP, delivered through a self-pipe.
const SIGNALS: Token = Token(2);
/// The Redis link's command socket (`--redis`).
const REDIS_CMD: Token = Token(3);
/// The Redis link's subscriber socket.
const REDIS_SUB: Token = Token(4);
/// WebSocket connection `key` is `Token(CONN_BASE + key)`.
const CONN_BASE: usize = 16;
/// Control connection `key` is `Token(CTRL_BASE + key)`.
const CTRL_BASE: usize = 1 << 40;

/// What a token refers to.
enum Source {
    Listener,
    Control,
    Signals,
    Redis(redis_link::Which),
    Ws(usize),
    Ctrl(usize),
}

fn source(token: Token) -> Source {
    match token {
        LISTENER => Source::Listener,
        CONTROL => Source::Control,
        SIGNALS => Source::Signals,
        REDIS_CMD => Source::Redis(redis_link::Which::Cmd),
        REDIS_SUB => Source::Redis(redis_link::Which::Sub),
        Token(t) if t >= CTRL_BASE => Source::Ctrl(t - CTRL_BASE),
        Token(t) => Source::Ws(t - CONN_BASE),
    }
}

/// Reads of the loop's 64 KiB scratch buffer one WebSocket connection gets
/// per loop turn (256 KiB) before the others get their turn. Also bounds
/// what one turn can queue in reply (pongs, echoes) before the flush checks
/// `--max-outbound`.
const WS_READ_BUDGET: usize = 4;
/// Control lines one control connection gets executed per loop turn; keeps
/// the coalescing of a batch of pushes while bounding what one turn queues.
const CTRL_LINE_BUDGET: usize = 256;

/// An entry in the loop's timer wheel (the hub has its own deadlines).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Timer {
    /// The single timer of the connection in slab slot `key`. It needs no
    /// generation: a connection's timer is cancelled whenever it is
    /// replaced and when the connection is dropped (`Wire::drop_conn`), so
    /// one that fires belongs to the connection in the slot now.
    Conn {
        /// Slab key.
        key: u32,
    },
    /// Accepting was paused after EMFILE/ENFILE; try again.
    ResumeAccept,
    /// The data log is failed: try to rewrite it from the live state.
    DataLog,
    /// Return freed heap memory to the OS (see `heap.rs`).
    Trim,
    /// Connect the Redis link again, or give up on a slow attempt (valid
    /// while the link's generation matches).
    Redis {
        /// The link's generation when armed.
        generation: u32,
    },
}

/// A source that used up its per-turn budget while it may still have input:
/// edge-triggered readiness will not report it again, so the loop resumes it
/// next turn, after every other ready source had its turn.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Again {
    /// WebSocket connection `key`, if still the one with this serial.
    Ws {
        /// Slab key.
        key: usize,
        /// `Conn::serial` when deferred, so a reused slot is not mistaken.
        serial: u64,
    },
    /// Control connection `key` (a reused slot only costs one spare read).
    Ctrl(usize),
    /// HTTP connection `key` has a pipelined request in its input, to be
    /// examined now that the previous one is answered.
    Http {
        /// Slab key.
        key: usize,
        /// As for `Ws`.
        serial: u64,
    },
}
