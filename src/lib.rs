//! wspush: a tiny, single-threaded WebSocket push server on `mio`.
//!
//! Local producers write push jobs into a Unix control socket
//! (newline-delimited JSON); wspush fans each one out, encoded once, to
//! every WebSocket connection of the users it names. One thread, one
//! `mio::Poll`, no async runtime. `../shared/DESIGN.md` (in the repository's
//! workspace) is the contract; README.md is the user's guide.
//!
//! # Layout
//!
//! - [`cli`]: the `wspush` command line; every flag and its default.
//! - `server`: the event loop, accept paths, signals, timers, flushing.
//! - `ws`: the WebSocket side of a connection: upgrade, frames, closing,
//!   idle eviction and pings.
//! - `ops`: control requests executed against the server state, `events`
//!   listeners, `/metrics`.
//! - `delivery`: the envelope, fan-out to users, topics or everyone,
//!   latest-value keys, the mailbox on push and connect, event lines.
//! - `schedule`: delayed and periodic pushes on the timer wheel.
//! - `persist`: restoring `--data-dir` at start and the compacted snapshot.
//! - [`mailbox`]: held messages and per-user history, with their bounds.
//! - [`store`]: the checksummed append-only log behind `--data-dir`.
//! - [`heap`]: handing freed memory back to the OS.
//! - [`conn`]: one connection's state and the inbound frame → message path.
//! - [`handshake`]: the HTTP upgrade, on byte slices.
//! - [`frame`]: the RFC 6455 frame codec.
//! - [`outbox`]: coalesced vectored writes and the per-connection backlog.
//! - [`wheel`]: the hashed timer wheel on virtual milliseconds.
//! - [`tokens`]: the token table (constant-time, fingerprinted in logs).
//! - [`users`]: online users and their connection lists.
//! - [`control`]: the control protocol's wire format and buffers.
//! - [`client`]: the control-socket client behind `send`, `stats`, ...

#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod conn;
pub mod control;
mod delivery;
pub mod frame;
pub mod handshake;
pub mod heap;
pub mod mailbox;
mod ops;
pub mod outbox;
mod persist;
mod schedule;
pub mod server;
pub mod store;
pub mod tokens;
pub mod users;
pub mod wheel;
mod ws;

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
