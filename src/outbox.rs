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
//! `writev`, so ten back-to-back pushes leave in one syscall. Only bytes the
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

/// Index of a frame stored in the current [`Turn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef(u32);

/// The loop-wide queue of frames produced during one turn of the event loop.
#[derive(Debug, Default)]
pub struct Turn {
    /// Every frame produced this turn, once.
    frames: Vec<Rc<[u8]>>,
    /// Per-recipient links, threaded into each connection's [`Chain`].
    links: Vec<Link>,
    /// Slab keys of connections with a non-empty chain (each listed once).
    dirty: Vec<usize>,
}

impl Turn {
    /// Store a frame for this turn; enqueue it to recipients with [`Turn::enqueue`].
    pub fn add(&mut self, frame: Rc<[u8]>) -> FrameRef {
        let index = u32::try_from(self.frames.len()).expect("fewer than 4G frames a turn");
        self.frames.push(frame);
        FrameRef(index)
    }

    /// Append `frame` to the chain of connection `key`. O(1), no allocation
    /// beyond amortised growth of the loop-wide link vector.
    pub fn enqueue(&mut self, key: usize, chain: &mut Chain, frame: FrameRef) {
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
        backlog: &mut Option<Box<Backlog>>,
        sink: &mut W,
    ) -> io::Result<usize> {
        let mut link = std::mem::take(chain).head;
        if let Some(queue) = backlog {
            // Order matters: older bytes first. The slow path may allocate.
            while link != NIL {
                let l = self.links[link as usize];
                queue.push(self.frames[l.frame as usize].clone());
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
            let mut queue = Box::<Backlog>::default();
            let mut skip = written;
            while link != NIL {
                let l = self.links[link as usize];
                let frame = &self.frames[l.frame as usize];
                if skip >= frame.len() {
                    skip -= frame.len();
                } else {
                    queue.push(frame.clone());
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
            let frame = &self.frames[first.frame as usize];
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
            slices[count] = IoSlice::new(&self.frames[l.frame as usize]);
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
    chunks: VecDeque<Rc<[u8]>>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Unsent bytes in total (the figure `--max-outbound` bounds).
    bytes: usize,
}

impl Backlog {
    /// Queue a chunk behind everything else.
    pub fn push(&mut self, chunk: Rc<[u8]>) {
        self.bytes += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Drop everything not yet started, keeping the remainder of a frame that
    /// is half on the wire (cutting it would corrupt the stream). Used before
    /// queueing a close frame for a slow consumer.
    pub fn truncate_to_partial(&mut self) {
        if self.offset > 0 {
            let front = self.chunks.pop_front();
            self.chunks.clear();
            if let Some(front) = front {
                self.bytes = front.len() - self.offset;
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
pub fn write_backlog<W: Write>(
    backlog: &mut Option<Box<Backlog>>,
    sink: &mut W,
) -> io::Result<usize> {
    let Some(queue) = backlog else {
        return Ok(0);
    };
    while !queue.chunks.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut count = 0;
        for (i, chunk) in queue.chunks.iter().take(MAX_IOV).enumerate() {
            let start = if i == 0 { queue.offset } else { 0 };
            slices[i] = IoSlice::new(&chunk[start..]);
            count += 1;
        }
        let mut written = match write_vectored(sink, &slices[..count]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(queue.bytes),
            Err(e) => return Err(e),
        };
        queue.bytes -= written;
        while written > 0 {
            let left = queue.chunks[0].len() - queue.offset;
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
mod tests {
    use super::*;

    /// A sink that takes at most `room` bytes, then says WouldBlock.
    struct Throttled {
        room: usize,
        got: Vec<u8>,
        calls: usize,
    }

    impl Write for Throttled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.room);
                self.got.extend_from_slice(&b[..take]);
                self.room -= take;
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frame(bytes: &[u8]) -> Rc<[u8]> {
        Rc::from(bytes)
    }

    #[test]
    fn a_turn_leaves_in_one_writev_and_allocates_no_backlog() {
        let mut turn = Turn::default();
        let (mut a, mut b) = (Chain::default(), Chain::default());
        for text in [b"one".as_slice(), b"two", b"three"] {
            let f = turn.add(frame(text));
            turn.enqueue(0, &mut a, f);
            turn.enqueue(1, &mut b, f);
        }
        assert_eq!(turn.take_dirty(), vec![0, 1]);
        let mut sink = Throttled {
            room: 100,
            got: vec![],
            calls: 0,
        };
        let mut backlog = None;
        assert_eq!(
            turn.write_chain(&mut a, &mut backlog, &mut sink).unwrap(),
            0
        );
        assert_eq!(sink.got, b"onetwothree");
        assert_eq!(sink.calls, 1);
        assert!(backlog.is_none());
        assert!(a.is_empty());
    }

    #[test]
    fn a_short_write_keeps_the_rest_in_order_and_frees_it_when_drained() {
        let mut turn = Turn::default();
        let mut chain = Chain::default();
        for text in [b"abc".as_slice(), b"defg", b"hi"] {
            let f = turn.add(frame(text));
            turn.enqueue(7, &mut chain, f);
        }
        let mut sink = Throttled {
            room: 5,
            got: vec![],
            calls: 0,
        };
        let mut backlog = None;
        assert_eq!(
            turn.write_chain(&mut chain, &mut backlog, &mut sink)
                .unwrap(),
            4
        );
        assert_eq!(backlog.as_ref().unwrap().bytes(), 4);
        sink.room = 1;
        assert_eq!(write_backlog(&mut backlog, &mut sink).unwrap(), 3);
        sink.room = 100;
        assert_eq!(write_backlog(&mut backlog, &mut sink).unwrap(), 0);
        assert!(backlog.is_none());
        assert_eq!(sink.got, b"abcdefghi");
    }

    #[test]
    fn a_lone_frame_cut_short_keeps_its_tail() {
        let mut turn = Turn::default();
        let mut chain = Chain::default();
        let f = turn.add(frame(b"lonely"));
        turn.enqueue(3, &mut chain, f);
        let mut sink = Throttled {
            room: 2,
            got: vec![],
            calls: 0,
        };
        let mut backlog = None;
        assert_eq!(
            turn.write_chain(&mut chain, &mut backlog, &mut sink)
                .unwrap(),
            4
        );
        sink.room = 100;
        assert_eq!(write_backlog(&mut backlog, &mut sink).unwrap(), 0);
        assert_eq!(sink.got, b"lonely");
        assert_eq!(sink.calls, 2);
    }

    #[test]
    fn frames_of_a_later_turn_queue_behind_the_backlog() {
        let mut turn = Turn::default();
        let mut chain = Chain::default();
        let f = turn.add(frame(b"first"));
        turn.enqueue(0, &mut chain, f);
        let mut sink = Throttled {
            room: 2,
            got: vec![],
            calls: 0,
        };
        let mut backlog = None;
        turn.write_chain(&mut chain, &mut backlog, &mut sink)
            .unwrap();
        let dirty = turn.take_dirty();
        turn.clear(dirty);
        let f = turn.add(frame(b"second"));
        turn.enqueue(0, &mut chain, f);
        sink.room = 100;
        assert_eq!(
            turn.write_chain(&mut chain, &mut backlog, &mut sink)
                .unwrap(),
            0
        );
        assert_eq!(sink.got, b"firstsecond");
    }

    #[test]
    fn truncating_keeps_only_the_half_written_frame() {
        let mut backlog = Backlog::default();
        backlog.push(frame(b"12345"));
        backlog.push(frame(b"678"));
        backlog.offset = 2;
        backlog.bytes -= 2;
        backlog.truncate_to_partial();
        assert_eq!(backlog.bytes(), 3);
        assert_eq!(backlog.chunks.len(), 1);
        let mut fresh = Backlog::default();
        fresh.push(frame(b"abc"));
        fresh.truncate_to_partial();
        assert_eq!(fresh.bytes(), 0);
    }
}
