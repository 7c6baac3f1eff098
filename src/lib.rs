//! wspush: a tiny, single-threaded WebSocket push server on `mio`.
//!
//! Local producers write push jobs into a Unix control socket
//! (newline-delimited JSON); wspush fans each one out, encoded once, to
//! every WebSocket connection of the users it names. One thread, one
//! `mio::Poll`, no async runtime. `docs/protocol.md` is the wire contract,
//! `docs/architecture.md` the design, README.md the user's guide.
//!
//! # Layout
//!
//! - [`cli`]: the `wspush` command line; every flag and its default.
//! - [`client`]: the control-socket client behind `send`, `stats`, ...
//! - [`hub`]: all routing state and decisions, with no I/O: one entry
//!   point (`Hub::handle`) taking inputs, effects into a sink (`Out`).
//!   - `hub/session.rs`: open connections and online users;
//!     `hub/topics.rs`; `hub/deliver.rs`: the upgrade, the envelope,
//!     fan-out; `hub/mailbox.rs`; `hub/schedule.rs`: delayed and periodic
//!     jobs; `hub/ops.rs`: control requests and queries;
//!     `hub/events.rs`; `hub/journal.rs`: log records, replay, snapshot;
//!     `hub/stats.rs`: the one table of counters, `/metrics`;
//!     `hub/tokens.rs`; `hub/auth.rs`: admission (granted tokens and
//!     JWTs) and the close codes of refused tokens; `hub/cluster.rs`:
//!     a cluster node's jobs relayed to Redis, deliveries from the channel.
//! - [`io`]: the loop and everything that touches the OS.
//!   - `io/event_loop.rs`: the loop, accept paths, signals, turn order;
//!     `io/wire.rs`: the hub's effects carried out on sockets and the log;
//!     `io/ws_conn.rs`: reading WebSocket connections, their deadlines;
//!     `io/conn.rs`: one connection's I/O state, frames → messages;
//!     `io/http_conn.rs`: HTTP API requests, their bodies and answers;
//!     `io/ctrl_conn.rs`: control clients; `io/outbox.rs`: coalesced
//!     vectored writes; `io/store.rs`: the log file; `io/heap.rs`;
//!     `io/tallies.rs`: closes by code, HTTP errors by status, fan-out times;
//!     `io/setup.rs`: sockets and limits at start; `io/redis_link.rs`,
//!     `io/redis_read.rs` and `io/redis_sock.rs`: the Redis link's two
//!     sockets in the loop.
//! - [`proto`]: wire formats on byte slices: `proto/handshake.rs` (the HTTP
//!   upgrade), `proto/response.rs` (plain HTTP answers), `proto/demo.rs`
//!   (the embedded demo page), `proto/http.rs` (the HTTP API's requests and answers),
//!   `proto/jwt.rs` (HS256 JSON Web Tokens),
//!   `proto/frame.rs` (RFC 6455 frames), `proto/control.rs` (the control
//!   protocol).
//! - [`redis`]: the Redis link's wire format and address, with no sockets:
//!   `redis/resp.rs` (the RESP2 codec), `redis/addr.rs` (`--redis URL`),
//!   `redis/functions.lua` (the function library the nodes load).
//! - [`wheel`]: the hashed timer wheel on virtual milliseconds (both the
//!   loop and the hub keep one).
//!
//! `frame`, `handshake`, `control`, `outbox`, `store` and `server` are
//! re-exported at the crate root for the benches and tools.

#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod hub;
pub mod io;
pub mod proto;
pub mod redis;
pub mod wheel;

pub use io::event_loop as server;
pub use io::{outbox, store};
pub use proto::{control, frame, handshake, jwt};

use std::io::Write;

use cli::ServeArgs;

/// Run `wspush serve`: bind, announce the addresses on stdout, loop until a
/// shutdown signal. Errors are operator-facing messages.
pub fn serve(args: ServeArgs) -> Result<(), String> {
    let control = args.control.clone();
    let server = server::Server::bind(args)?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    log::info!(
        "listening on ws://{addr}, control socket {}",
        control.display()
    );
    // Scripts and tests wait for this exact line (README "Starting").
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "wspush: listening on ws://{addr}, control socket {}",
        control.display()
    );
    let _ = out.flush();
    drop(out);
    server.run().map_err(|e| format!("event loop failed: {e}"))
}
