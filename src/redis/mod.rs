//! The Redis link's wire format and address, with no sockets.
//!
//! wspush talks to Redis from its one event loop; the link (in `io`) owns
//! the socket and its buffers, and uses what is here to turn commands into
//! bytes and bytes into replies:
//!
//! - [`resp`]: the RESP2 codec: commands as arrays of bulk strings, replies
//!   parsed in place out of the link's read buffer, under fixed limits.
//! - [`addr`]: the `--redis URL` value (`redis://`, `unix://`) and the
//!   commands to send right after connecting (`AUTH`, `SELECT`).

pub mod addr;
pub mod resp;
