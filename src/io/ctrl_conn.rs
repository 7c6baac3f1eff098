//! One control-socket client: its input split into lines under the line
//! cap, and its replies *held* until the end of the turn.
//!
//! Replies are held ([`ControlConn::hold`]) until the loop has synced the
//! data log; only then are they released to the socket
//! ([`ControlConn::release`]), each one that depends on records the log
//! could not write turned into an error. [`ControlConn::flush`] writes
//! released bytes only, so no path can send a reply early. A last line
//! without a newline is executed when the client shuts its side. A client
//! that sends requests but does not read the replies stops being read once
//! [`MAX_PENDING_REPLIES`] bytes of replies are waiting, so it can never
//! grow the server's memory.

use std::io::{self, Read, Write};

use mio::net::UnixStream;

use log::debug;

use super::event_loop::Server;
use super::{Again, CTRL_LINE_BUDGET};
use crate::hub::{ConnId, Input, Origin};
use crate::proto::control::{MAX_LINE, MAX_PENDING_REPLIES, not_durable};

/// Buffers above this capacity are given back once they empty out.
const SMALL_BUFFER: usize = 64 * 1024;

/// A reply waiting for the end of its turn.
#[derive(Debug)]
struct Held {
    line: Vec<u8>,
    /// Log position the reply's records end at, if it wrote any.
    needs: Option<u64>,
}

/// What [`ControlConn::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete request line (newline stripped).
    Request(Vec<u8>),
    /// A line passed [`MAX_LINE`]; it is being skipped.
    TooLong,
}

/// What a read turn ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// The socket has nothing more for now.
    WouldBlock,
    /// The client closed its side (replies may still be flushed).
    Eof,
    /// Reading paused: too many unsent replies or too many unprocessed bytes.
    Paused,
}

/// One control client.
#[derive(Debug)]
pub struct ControlConn {
    /// The socket.
    pub stream: UnixStream,
    /// Changes with every client that takes the slot (the generation of
    /// its [`Origin::Control`] id).
    pub generation: u32,
    /// Received bytes not yet split into lines.
    inbuf: Vec<u8>,
    /// Where the newline search resumes in `inbuf`.
    scanned: usize,
    /// Discarding an over-long line up to its newline.
    skipping: bool,
    /// Released reply bytes not yet written, from `sent` on.
    outbuf: Vec<u8>,
    sent: usize,
    /// Replies of this turn, in order, waiting for the log sync.
    held: Vec<Held>,
    /// Bytes in `held`.
    held_bytes: usize,
    /// The client shut its write side; close once replies are out.
    pub eof: bool,
    /// Reading stopped with input possibly left in the socket: whoever
    /// drains the replies must resume reading (no new edge will say so).
    pub paused: bool,
    /// Requests handed to the hub whose reply has not come yet (in a
    /// cluster a reply waits for Redis): each counts as
    /// [`UNANSWERED_BYTES`] toward the backpressure bound.
    pub unanswered: usize,
}

/// What one unanswered request weighs against [`MAX_PENDING_REPLIES`]:
/// at most 4,096 wait per connection.
const UNANSWERED_BYTES: usize = 256;

impl ControlConn {
    /// Wrap an accepted socket.
    pub fn new(stream: UnixStream, generation: u32) -> Self {
        ControlConn {
            stream,
            generation,
            inbuf: Vec::new(),
            scanned: 0,
            skipping: false,
            outbuf: Vec::new(),
            sent: 0,
            held: Vec::new(),
            held_bytes: 0,
            eof: false,
            paused: false,
            unanswered: 0,
        }
    }

    /// Read what the socket has, up to the backpressure bounds.
    pub fn fill(&mut self, scratch: &mut [u8]) -> io::Result<Fill> {
        self.paused = false;
        loop {
            if self.pending_replies() >= MAX_PENDING_REPLIES || self.inbuf.len() > MAX_LINE {
                self.paused = true;
                return Ok(Fill::Paused);
            }
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(Fill::Eof);
                }
                Ok(n) => self.inbuf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Fill::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next complete line, if any; after EOF, also the unterminated
    /// rest. Every line is held to [`MAX_LINE`] (terminator excluded),
    /// wherever the reads that brought it happened to end.
    pub fn next_line(&mut self) -> Option<Line> {
        loop {
            let found = memchr(&self.inbuf[self.scanned..]).map(|i| self.scanned + i);
            let mut line = match found {
                Some(end) => {
                    let mut line: Vec<u8> = self.inbuf.drain(..=end).collect();
                    self.scanned = 0;
                    line.pop();
                    if std::mem::take(&mut self.skipping) {
                        continue;
                    }
                    line
                }
                None if self.inbuf.len() > MAX_LINE => {
                    self.release_inbuf();
                    if !std::mem::replace(&mut self.skipping, true) {
                        return Some(Line::TooLong);
                    }
                    return None;
                }
                None if self.eof && !self.skipping && !self.inbuf.is_empty() => {
                    self.scanned = 0;
                    std::mem::take(&mut self.inbuf)
                }
                None => {
                    if self.skipping {
                        self.inbuf.clear();
                    }
                    if self.inbuf.capacity() > SMALL_BUFFER && self.inbuf.len() < SMALL_BUFFER {
                        self.inbuf.shrink_to(SMALL_BUFFER);
                    }
                    self.scanned = self.inbuf.len();
                    return None;
                }
            };
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > MAX_LINE {
                return Some(Line::TooLong);
            }
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            return Some(Line::Request(line));
        }
    }

    fn release_inbuf(&mut self) {
        self.inbuf = Vec::new();
        self.scanned = 0;
    }

    /// Hold a reply until the end of the turn; `needs` is the log position
    /// its records end at, if the request wrote any.
    pub fn hold(&mut self, line: Vec<u8>, needs: Option<u64>) {
        self.unanswered = self.unanswered.saturating_sub(1);
        self.held_bytes += line.len();
        self.held.push(Held { line, needs });
    }

    /// Queue an event line: it promises nothing durable, so it goes out
    /// with the next flush, unless replies are held, which it must follow.
    pub fn queue_event(&mut self, line: &[u8]) {
        if self.held.is_empty() {
            self.outbuf.extend_from_slice(line);
        } else {
            self.hold(line.to_vec(), None);
        }
    }

    /// The log is synced up to `durable`: release the held replies, each
    /// one whose records lie beyond it answered as [`not_durable`].
    pub fn release(&mut self, durable: u64, reason: &str) {
        for held in self.held.drain(..) {
            if held.needs.is_some_and(|needs| needs > durable) {
                self.outbuf
                    .extend_from_slice(&not_durable(&held.line, reason));
            } else {
                self.outbuf.extend_from_slice(&held.line);
            }
        }
        self.held_bytes = 0;
        if self.held.capacity() > 1024 {
            self.held = Vec::new();
        }
    }

    /// Reply bytes not yet written, held ones included.
    pub fn pending_replies(&self) -> usize {
        self.outbuf.len() - self.sent + self.held_bytes + self.unanswered * UNANSWERED_BYTES
    }

    /// Write released replies until done or `WouldBlock`.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.outbuf.len() {
            match self.stream.write(&self.outbuf[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.outbuf.len() {
            // Release big buffers; keep small ones for the next replies.
            if self.outbuf.capacity() > SMALL_BUFFER {
                self.outbuf = Vec::new();
            } else {
                self.outbuf.clear();
            }
            self.sent = 0;
        }
        Ok(())
    }
}

fn memchr(haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == b'\n')
}

impl Server {
    /// Readiness on control connection `key`: flush released replies, read
    /// requests, feed complete lines to the hub while the unsent replies
    /// stay under the bound. Replies are held, and released at the end of
    /// the turn once the log is synced ([`Server::release_replies`]). At
    /// most [`CTRL_LINE_BUDGET`] lines run per turn; a client with more
    /// waiting is resumed next turn (`again`), so a huge pipelined stream
    /// neither starves other sources nor postpones the flush of its pushes.
    pub(super) fn ctrl_ready(&mut self, key: usize) {
        let mut budget = CTRL_LINE_BUDGET;
        // Only replies released by earlier turns go out here; this turn's
        // are held until its log sync.
        let Some(ctrl) = self.wire.ctrls.get_mut(key) else {
            return;
        };
        if ctrl.flush().is_err() {
            return self.drop_ctrl(key);
        }
        let origin = Origin::Control(ConnId {
            key: key as u32,
            generation: ctrl.generation,
        });
        loop {
            let Some(ctrl) = self.wire.ctrls.get_mut(key) else {
                return;
            };
            let fill = match ctrl.fill(&mut self.scratch) {
                Ok(fill) => fill,
                Err(_) => return self.drop_ctrl(key),
            };
            while let Some(ctrl) = self.wire.ctrls.get_mut(key)
                && ctrl.pending_replies() < MAX_PENDING_REPLIES
            {
                if budget == 0 {
                    self.again.push(Again::Ctrl(key));
                    return;
                }
                let Some(line) = ctrl.next_line() else {
                    break;
                };
                budget -= 1;
                if self.hub.is_listener(origin) {
                    continue; // a stream of events takes no more requests
                }
                ctrl.unanswered += 1;
                match line {
                    Line::Request(line) => self.feed(Input::Request {
                        origin,
                        line: &line,
                    }),
                    Line::TooLong => self.feed(Input::TooLong { origin }),
                }
            }
            let Some(ctrl) = self.wire.ctrls.get(key) else {
                return;
            };
            match fill {
                Fill::WouldBlock => return,
                Fill::Eof => {
                    if ctrl.pending_replies() == 0 && !self.wire.ctrl_dirty.contains(&key) {
                        self.drop_ctrl(key);
                    }
                    return;
                }
                Fill::Paused if ctrl.pending_replies() >= MAX_PENDING_REPLIES => return,
                Fill::Paused => {}
            }
        }
    }

    /// Send the replies held this turn, now that the log is synced: each
    /// reply whose records did not reach the disk becomes an error.
    pub(super) fn release_replies(&mut self) {
        let (durable, failure) = match &self.wire.store {
            Some(store) => (store.durable(), store.failed()),
            None => (u64::MAX, None),
        };
        let failure = failure.unwrap_or("records not written").to_string();
        let dirty = std::mem::take(&mut self.wire.ctrl_dirty);
        for key in dirty {
            if let Some(ctrl) = self.wire.ctrls.get_mut(key) {
                ctrl.release(durable, &failure);
            }
            self.flush_ctrl(key);
        }
    }

    /// Write a control connection's released replies (end of turn).
    fn flush_ctrl(&mut self, key: usize) {
        let Some(ctrl) = self.wire.ctrls.get_mut(key) else {
            return;
        };
        if ctrl.flush().is_err() || (ctrl.eof && ctrl.pending_replies() == 0) {
            self.drop_ctrl(key);
        } else if ctrl.paused && ctrl.pending_replies() < MAX_PENDING_REPLIES {
            self.again.push(Again::Ctrl(key));
        }
    }

    /// Close a control connection; the hub forgets it as a listener.
    fn drop_ctrl(&mut self, key: usize) {
        debug!("control {key}: closed");
        let ctrl = self.wire.ctrls.remove(key);
        let origin = Origin::Control(ConnId {
            key: key as u32,
            generation: ctrl.generation,
        });
        self.feed(Input::ControlGone { origin });
    }
}
