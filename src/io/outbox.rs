//! Outbound bytes: the per-turn queue that coalesces frames into one vectored
//! write per connection, and the per-connection backlog that holds what the
//! kernel would not take.
//!
//! The common case costs no per-connection allocation. During one loop turn,
//! every frame a connection must receive (pushes, pongs, pings, closes) is
//! recorded in the loop-wide [`Turn`]: the frame itself once (`Rc<[u8]>`,
//! shared by all its recipients) and, per recipient, an 8-byte link in a
//! loop-wide vector that is reused turn after turn. Each connection only keeps
//! the head and tail of its chain ([`Chain`], 8 bytes). Before the loop sleeps
//! it calls [`Turn::take_dirty`] and writes each connection's chain with
//! one vectored write (`sendmsg`, `io/send.rs`), so ten back-to-back pushes
//! leave in one syscall. Only bytes the
//! socket refuses (`WouldBlock` or a short write) move into that connection's
//! heap [`Backlog`], which is freed again as soon as it drains: an idle
//! connection owns no buffer at all.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

/// Most slices handed to one `writev` (Linux `IOV_MAX` is 1024; 64 keeps the
/// stack array small and already amortises the syscall well).
const MAX_IOV: usize = 64;

/// "No link" marker in [`Chain`] and [`Link`].
const NIL: u32 = u32::MAX;

pub use crate::hub::{FrameRef, Key, key_of};

/// A connection's chain of frames queued in the current turn.
#[derive(Debug, Clone, Copy)]
pub struct Chain {
    head: u32,
    tail: u32,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            head: NIL,
            tail: NIL,
        }
    }
}

impl Chain {
    /// Whether nothing is queued for this connection in the current turn.
    pub fn is_empty(&self) -> bool {
        self.head == NIL
    }
}

/// One recipient's reference to one frame of the turn.
#[derive(Debug, Clone, Copy)]
struct Link {
    frame: u32,
    next: u32,
}

/// The loop-wide queue of frames produced during one turn of the event loop.
#[derive(Debug, Default)]
pub struct Turn {
    /// Every frame produced this turn, once, with its latest-value key.
    frames: Vec<(Rc<[u8]>, Key)>,
    /// Per-recipient links, threaded into each connection's [`Chain`].
    links: Vec<Link>,
    /// Slab keys of connections with a non-empty chain (each listed once).
    dirty: Vec<usize>,
    /// Bytes of the frames added since [`Turn::take_bytes`].
    bytes: u64,
}

impl Turn {
    /// Store a frame for this turn (with its latest-value key, 0 for none);
    /// enqueue it to recipients with [`Turn::enqueue`].
    pub fn add(&mut self, frame: Rc<[u8]>, key: Key) -> FrameRef {
        let index = u32::try_from(self.frames.len()).expect("fewer than 4G frames a turn");
        self.bytes += frame.len() as u64;
        self.frames.push((frame, key));
        FrameRef(index)
    }

    /// The frame's bytes and key.
    pub fn frame(&self, frame: FrameRef) -> (&Rc<[u8]>, Key) {
        let (bytes, key) = &self.frames[frame.0 as usize];
        (bytes, *key)
    }

    /// Append `frame` to the chain of connection `key`. O(1), no allocation
    /// beyond amortised growth of the loop-wide link vector; a keyed frame
    /// first unlinks an earlier frame with the same key (a walk of this
    /// connection's chain, which holds only this turn's frames).
    pub fn enqueue(&mut self, key: usize, chain: &mut Chain, frame: FrameRef) {
        let value_key = self.frames[frame.0 as usize].1;
        self.enqueue_keyed(key, chain, frame, value_key);
    }

    /// [`Turn::enqueue`] for a caller that looked the frame's key up once
    /// for all its recipients: `value_key` must be the frame's own.
    // The per-recipient step of every fan-out: a call here per recipient
    // cost about a third of a 10k broadcast (benches/fanout, perf).
    #[inline(always)]
    pub fn enqueue_keyed(
        &mut self,
        key: usize,
        chain: &mut Chain,
        frame: FrameRef,
        value_key: Key,
    ) {
        debug_assert_eq!(value_key, self.frames[frame.0 as usize].1);
        if value_key != 0 {
            self.unlink_key(chain, value_key);
        }
        let index = u32::try_from(self.links.len()).expect("fewer than 4G links a turn");
        self.links.push(Link {
            frame: frame.0,
            next: NIL,
        });
        if chain.head == NIL {
            chain.head = index;
            self.dirty.push(key);
        } else {
            self.links[chain.tail as usize].next = index;
        }
        chain.tail = index;
    }

    // Kept out of line: rare (keyed pushes only), and inlined it makes
    // `enqueue`, the per-recipient step of every fan-out, too big to inline.
    #[inline(never)]
    fn unlink_key(&mut self, chain: &mut Chain, value_key: Key) {
        let (mut prev, mut cursor) = (NIL, chain.head);
        while cursor != NIL {
            let link = self.links[cursor as usize];
            if self.frames[link.frame as usize].1 == value_key {
                if prev == NIL {
                    chain.head = link.next;
                } else {
                    self.links[prev as usize].next = link.next;
                }
                if chain.tail == cursor {
                    chain.tail = prev;
                }
                // The key is dirty-listed already; an emptied chain is skipped at flush.
                return;
            }
            prev = cursor;
            cursor = link.next;
        }
    }

    /// Bytes of the frames added since the last call.
    pub fn take_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.bytes)
    }

    /// Whether any connection has frames queued this turn.
    pub fn is_idle(&self) -> bool {
        self.dirty.is_empty()
    }

    /// The keys of connections with queued frames. The caller flushes each
    /// one with [`Turn::write_chain`] and then calls [`Turn::clear`]. A key
    /// may name a slot whose connection has gone (its chain is then empty,
    /// since a new tenant starts with an empty chain), so callers check.
    pub fn take_dirty(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.dirty)
    }

    /// Forget this turn's frames and links, keeping the vectors' capacity.
    /// `dirty` is handed back so its allocation is reused too.
    pub fn clear(&mut self, mut dirty: Vec<usize>) {
        self.frames.clear();
        self.links.clear();
        dirty.clear();
        self.dirty = dirty;
    }

    /// Write a connection's chain (after whatever its backlog holds) and empty
    /// the chain. Returns the connection's unsent byte count afterwards.
    pub fn write_chain<W: Write>(
        &self,
        chain: &mut Chain,
        backlog: &mut Option<Backlog>,
        sink: &mut W,
    ) -> io::Result<usize> {
        let mut link = std::mem::take(chain).head;
        if let Some(queue) = backlog {
            // Order matters: older bytes first. The slow path may allocate.
            while link != NIL {
                let l = self.links[link as usize];
                let (bytes, value_key) = &self.frames[l.frame as usize];
                queue.push_keyed(bytes.clone(), *value_key);
                link = l.next;
            }
            return write_backlog(backlog, sink);
        }
        while link != NIL {
            let (result, total, cursor) = self.write_some(link, sink);
            let written = match result {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            if written == total {
                link = cursor;
                continue;
            }
            // Short write: everything not yet taken moves to the backlog.
            let mut queue = Backlog::default();
            let mut skip = written;
            while link != NIL {
                let l = self.links[link as usize];
                let (frame, value_key) = &self.frames[l.frame as usize];
                if skip >= frame.len() {
                    skip -= frame.len();
                } else {
                    queue.push_keyed(frame.clone(), *value_key);
                    if skip > 0 {
                        queue.offset = skip;
                        queue.bytes -= skip;
                        skip = 0;
                    }
                }
                link = l.next;
            }
            let unsent = queue.bytes;
            *backlog = Some(queue);
            return Ok(unsent);
        }
        Ok(0)
    }

    /// Offer the frames from `link` on (at most [`MAX_IOV`]) to one
    /// `writev`. Returns its result, the bytes offered and the first link
    /// not offered.
    fn write_some<W: Write>(&self, link: u32, sink: &mut W) -> (io::Result<usize>, usize, u32) {
        let first = self.links[link as usize];
        if first.next == NIL {
            // One frame, the common case of a lone broadcast: skip building
            // (and zeroing) the 1 KiB slice array below, which profiling
            // showed as a fifth of the loop's own time in a fan-out.
            let frame = &self.frames[first.frame as usize].0;
            return (
                write_vectored(sink, &[IoSlice::new(frame)]),
                frame.len(),
                NIL,
            );
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut count = 0;
        let mut cursor = link;
        while cursor != NIL && count < MAX_IOV {
            let l = self.links[cursor as usize];
            slices[count] = IoSlice::new(&self.frames[l.frame as usize].0);
            count += 1;
            cursor = l.next;
        }
        let total = slices[..count].iter().map(|s| s.len()).sum();
        (write_vectored(sink, &slices[..count]), total, cursor)
    }
}

/// Bytes a connection could not write yet, oldest first.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Unsent frames with their latest-value keys.
    chunks: VecDeque<(Rc<[u8]>, Key)>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Unsent bytes in total (the figure `--max-outbound` bounds).
    bytes: usize,
}

impl Backlog {
    /// Queue a chunk behind everything else.
    pub fn push(&mut self, chunk: Rc<[u8]>) {
        self.push_keyed(chunk, 0);
    }

    fn push_keyed(&mut self, chunk: Rc<[u8]>, key: Key) {
        self.bytes += chunk.len();
        self.chunks.push_back((chunk, key));
    }

    /// Drop an unsent frame with this latest-value key (never the front one
    /// once it is half written). Returns whether one was dropped.
    pub fn drop_key(&mut self, key: Key) -> bool {
        let first = usize::from(self.offset > 0);
        let found = self.chunks.iter().skip(first).position(|(_, k)| *k == key);
        match found.and_then(|i| self.chunks.remove(i + first)) {
            Some((chunk, _)) => {
                self.bytes -= chunk.len();
                true
            }
            None => false,
        }
    }

    /// Drop everything not yet started, keeping the remainder of a frame that
    /// is half on the wire (cutting it would corrupt the stream). Used before
    /// queueing a close frame for a slow consumer.
    pub fn truncate_to_partial(&mut self) {
        if self.offset > 0 {
            let front = self.chunks.pop_front();
            self.chunks.clear();
            if let Some(front) = front {
                self.bytes = front.0.len() - self.offset;
                self.chunks.push_back(front);
            }
        } else {
            self.chunks.clear();
            self.bytes = 0;
        }
    }

    /// Unsent bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Write as much of the backlog as the socket takes; free it once empty.
/// Returns the unsent byte count afterwards.
pub fn write_backlog<W: Write>(backlog: &mut Option<Backlog>, sink: &mut W) -> io::Result<usize> {
    let Some(queue) = backlog else {
        return Ok(0);
    };
    while !queue.chunks.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut count = 0;
        for (i, chunk) in queue.chunks.iter().take(MAX_IOV).enumerate() {
            let start = if i == 0 { queue.offset } else { 0 };
            slices[i] = IoSlice::new(&chunk.0[start..]);
            count += 1;
        }
        let mut written = match write_vectored(sink, &slices[..count]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(queue.bytes),
            Err(e) => return Err(e),
        };
        queue.bytes -= written;
        while written > 0 {
            let left = queue.chunks[0].0.len() - queue.offset;
            if written >= left {
                written -= left;
                queue.offset = 0;
                queue.chunks.pop_front();
            } else {
                queue.offset += written;
                written = 0;
            }
        }
    }
    *backlog = None;
    Ok(0)
}

/// `write_vectored`, retrying on EINTR; a zero-length write of a non-empty
/// batch is reported as `WriteZero` so the caller closes the connection.
fn write_vectored<W: Write>(sink: &mut W, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    loop {
        match sink.write_vectored(slices) {
            Ok(0) if slices.iter().any(|s| !s.is_empty()) => {
                return Err(io::ErrorKind::WriteZero.into());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
