//! Shared by `benches/fanout.rs` and `tests/alloc.rs`: a counting global
//! allocator, and pushes carried out by the real hub (`Hub::handle` with a
//! control request: parse, seq, envelope, fan-out) into in-memory
//! connections through the server's own outbox path (`Turn::add` once,
//! one `Turn::enqueue` per recipient, one `Turn::write_chain` per
//! connection, `Turn::clear`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, IoSlice, Write};

use std::rc::Rc;

use serde_json::json;
use wspush::handshake::Upgrade;
use wspush::hub::tokens::Tokens;
use wspush::hub::{
    Config, ConnId, FrameRef, Hub, Input, Key, Link, LogRecord, Origin, Out, Transport,
};
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
    pub backlog: Option<Backlog>,
    pub sink: Sink,
}

/// Who a push goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every connection (a broadcast).
    Everyone,
    /// Every follower of one topic (all connections follow it).
    Topic,
    /// A push naming every user.
    Users,
}

/// The I/O side of the bench: in-memory connections and the loop-wide turn.
pub struct Mem {
    pub turn: Turn,
    pub conns: Vec<MemConn>,
}

impl Out for Mem {
    fn open(&mut self, _conn: ConnId, _accept: &str) {}
    fn refuse(&mut self, conn: ConnId, status: u16, reason: &'static str) {
        panic!("{conn:?} refused: {status} {reason}");
    }
    fn send(&mut self, conn: ConnId, frame: Rc<[u8]>) {
        let frame = self.turn.add(frame, 0);
        let key = conn.key as usize;
        self.turn.enqueue(key, &mut self.conns[key].chain, frame);
    }
    fn shared(&mut self, frame: Rc<[u8]>, key: Key) -> FrameRef {
        self.turn.add(frame, key)
    }
    fn push(&mut self, conns: impl Iterator<Item = ConnId>, frame: FrameRef) {
        let (_, value_key) = self.turn.frame(frame);
        for conn in conns {
            let key = conn.key as usize;
            let chain = &mut self.conns[key].chain;
            self.turn.enqueue_keyed(key, chain, frame, value_key);
        }
    }
    fn close(&mut self, _conn: ConnId, _code: u16, _reason: &'static str) {}
    fn reply(&mut self, _to: Origin, line: Vec<u8>, _logged: bool) {
        assert!(
            line.starts_with(br#"{"ok":true"#) || line.windows(9).any(|w| w == br#""ok":true"#)
        );
    }
    fn answer(&mut self, _to: Origin, _status: u16, _body: Vec<u8>) {}
    fn event(&mut self, _to: Origin, _line: &[u8]) -> bool {
        true
    }
    fn log(&mut self, _record: &LogRecord<'_>) {}
    fn relay(&mut self, _reference: u64, _job: &[u8], _message_id: Option<&str>) {}
    fn fetch(&mut self, _from: u64, _to: u64) {}
    fn call(&mut self, _reference: u64, _call: wspush::hub::Call<'_>) {}
    fn sync_now(&mut self) -> bool {
        true
    }
    fn link(&self, _conn: ConnId) -> Option<Link> {
        None
    }
    fn transport(&self) -> Transport<'_> {
        Transport::default()
    }
}

const CTRL: Origin = Origin::Control(ConnId {
    key: 0,
    generation: 1,
});

/// A hub with `n` open in-memory connections, one user each.
pub struct Fanout {
    pub hub: Hub,
    pub mem: Mem,
    /// The control line of one push to the target.
    line: Vec<u8>,
}

impl Fanout {
    /// `n` upgraded, idle connections (user `u{i}` each), all following
    /// topic `t`; pushes go to `target`.
    pub fn new(n: usize, target: Target) -> Fanout {
        let mut tokens = Tokens::default();
        for i in 0..n {
            tokens.grant(&format!("t{i}"), &format!("u{i}")).unwrap();
        }
        let config = Config {
            max_connections: n,
            max_conns_per_user: 0,
            max_topics: 1,
            topics_default_all: true,
            max_jobs: 0,
            mailbox: 0,
            mailbox_ttl: 60,
            mailbox_bytes: 0,
            data_log: false,
            started_unix_ms: 1_763_768_000_123,
            id_prefix: "7f3a".into(),
            jwt: None,
            token_http: false,
            node: None,
        };
        let mut hub = Hub::new(config, tokens);
        let mut mem = Mem {
            turn: Turn::default(),
            conns: (0..n).map(|_| MemConn::default()).collect(),
        };
        for i in 0..n {
            let conn = ConnId {
                key: i as u32,
                generation: i as u32 + 1,
            };
            let request = Upgrade {
                token: format!("t{i}"),
                accept: String::new(),
                since: None,
                device: None,
                user_agent: None,
                forwarded_for: None,
            };
            let serial = i as u64 + 1;
            hub.handle(
                0,
                Input::Upgrade {
                    conn,
                    request,
                    serial,
                },
                &mut mem,
            );
            let text = r#"{"op":"subscribe","topic":"t"}"#;
            hub.handle(0, Input::Text { conn, text }, &mut mem);
        }
        let content = json!({"open": true});
        let line = match target {
            Target::Everyone => json!({"op": "push", "content": content}),
            Target::Topic => json!({"op": "publish", "topic": "t", "content": content}),
            Target::Users => {
                let users: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
                json!({"op": "push", "users": users, "content": content})
            }
        };
        let mut f = Fanout {
            hub,
            mem,
            line: line.to_string().into_bytes(),
        };
        f.turn(0); // the subscribe acknowledgements
        for conn in &mut f.mem.conns {
            conn.sink = Sink::default();
        }
        f
    }

    /// `pushes` pushes handled in one loop turn, then the flush. Returns
    /// the bytes written.
    pub fn turn(&mut self, pushes: usize) -> u64 {
        for _ in 0..pushes {
            let input = Input::Request {
                origin: CTRL,
                line: &self.line,
            };
            self.hub.handle(0, input, &mut self.mem);
        }
        let turn = &mut self.mem.turn;
        let dirty = turn.take_dirty();
        let mut written = 0;
        for &key in &dirty {
            let conn = &mut self.mem.conns[key];
            let before = conn.sink.bytes;
            turn.write_chain(&mut conn.chain, &mut conn.backlog, &mut conn.sink)
                .expect("an in-memory sink takes everything");
            written += conn.sink.bytes - before;
        }
        turn.clear(dirty);
        written
    }

    /// Allocations that parsing this push's request line makes by itself
    /// (one per user name for [`Target::Users`]: the request's own data).
    pub fn parse_allocations(&self) -> u64 {
        let before = allocations();
        let parsed = wspush::control::parse(&self.line);
        let used = allocations() - before;
        drop(parsed);
        used
    }
}
