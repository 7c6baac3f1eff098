//! Shared by `benches/fanout.rs` and `tests/alloc.rs`: a counting global
//! allocator and one push fanned out to in-memory connections through the
//! server's own outbox path (encode once, `Turn::add`, one `Turn::enqueue`
//! per recipient, one `Turn::write_chain` per connection, `Turn::clear`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, IoSlice, Write};

use serde::Serialize;
use serde_json::{Value, json};
use wspush::frame::{self, OpCode};
use wspush::outbox::{Backlog, Chain, Turn};

/// The system allocator, counting allocations made by the current thread
/// (per thread, so the test harness's other threads do not disturb counts).
pub struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations (and reallocations) made by this thread so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// A socket that takes everything and keeps only a byte count.
#[derive(Default)]
pub struct Sink {
    pub bytes: u64,
    pub calls: u64,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        self.bytes += n as u64;
        self.calls += 1;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The per-connection state the outbox path touches.
#[derive(Default)]
pub struct MemConn {
    pub chain: Chain,
    pub backlog: Option<Box<Backlog>>,
    pub sink: Sink,
}

/// The envelope as `ops.rs` serialises it (its struct is private there).
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "messageId")]
    message_id: &'a str,
    seq: u64,
    content: &'a Value,
    ts: u64,
}

/// In-memory connections and the loop-wide turn, as the server holds them.
pub struct Fanout {
    pub turn: Turn,
    pub conns: Vec<MemConn>,
    seq: u64,
    content: Value,
}

impl Fanout {
    /// `n` upgraded, idle connections.
    pub fn new(n: usize) -> Fanout {
        Fanout {
            turn: Turn::default(),
            conns: (0..n).map(|_| MemConn::default()).collect(),
            seq: 0,
            content: json!({"open": true}),
        }
    }

    /// `pushes` broadcasts handled in one loop turn, then the flush.
    /// Returns the bytes written.
    pub fn turn(&mut self, pushes: usize) -> u64 {
        for _ in 0..pushes {
            self.seq += 1;
            let message_id = format!("7f3a-{}", self.seq);
            let payload = serde_json::to_vec(&Envelope {
                message_id: &message_id,
                seq: self.seq,
                content: &self.content,
                ts: 1_763_768_000_123,
            })
            .expect("serialises");
            let mut bytes = Vec::with_capacity(frame::header_len(payload.len()) + payload.len());
            frame::write_header(OpCode::Text, payload.len(), &mut bytes);
            bytes.extend_from_slice(&payload);
            let shared = self.turn.add(bytes.into(), 0);
            for (key, conn) in self.conns.iter_mut().enumerate() {
                self.turn.enqueue(key, &mut conn.chain, shared);
            }
        }
        let dirty = self.turn.take_dirty();
        let mut written = 0;
        for &key in &dirty {
            let conn = &mut self.conns[key];
            let before = conn.sink.bytes;
            self.turn
                .write_chain(&mut conn.chain, &mut conn.backlog, &mut conn.sink)
                .expect("an in-memory sink takes everything");
            written += conn.sink.bytes - before;
        }
        self.turn.clear(dirty);
        written
    }
}
