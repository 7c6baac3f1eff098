//! The event loop: one thread, one `mio::Poll`, every source registered once
//! for edge-triggered readiness. It moves bytes and time in and out of the
//! hub and decides nothing about routing.
//!
//! One turn, always in this order (see [`Server::run`]):
//!
//! 1. poll, with the timeout the wheels ask for (the loop's and the hub's);
//! 2. handle input: accept, read, feed the hub. Nothing is sent for it
//!    yet: pushes *queue* frames, requests queue log records, and replies
//!    are *held* on their control connection;
//! 3. expire timers (connection deadlines here, [`Input::Tick`] for the
//!    hub's), which may queue more of the same;
//! 4. write + `fdatasync` the turn's log records, once;
//! 5. only then release the held replies, each one rewritten as an error
//!    if the log records it depends on could not be written, and flush the
//!    turn's frames (one `sendmsg` per connection): replies first, so that
//!    a producer with requests in flight refills its window while the
//!    frames are written.
//!
//! So a reply or a frame can never leave before the records and the seq
//! reservation it depends on are on disk: the order is the structure of the
//! loop, not a convention of the callers. Handling a batch of control lines
//! before flushing is also what coalesces back-to-back pushes into one
//! syscall per connection.

use std::io::{self, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::conn::{Conn, Phase};
use super::ctrl_conn::ControlConn;
use super::outbox::Turn;
use super::wire::{LOG_RETRY_MS, Limits, Traffic, Wire};
use super::{
    Again, CONN_BASE, CONTROL, CTRL_BASE, LISTENER, SIGNALS, Source, Timer, heap, setup, source,
};
use crate::cli::ServeArgs;
use crate::hub::{Hub, Input, tokens::Tokens};
use crate::proto::demo::Demo;
use crate::proto::frame::{self, OpCode};
use crate::proto::{handshake, http};
use crate::wheel::Wheel;

/// Timer wheel granularity (docs/protocol.md, "Timers").
pub const TICK_MS: u64 = 1000;
/// Slots in the wheel: one rotation covers 17 minutes at 1 s ticks, longer
/// than the default idle timeout, so idle entries never wrap.
const WHEEL_SLOTS: usize = 1024;
/// Open files kept back from `--max-connections`' default for listeners,
/// control clients, the poll and signal pipes, and the tokens file.
const FD_RESERVE: usize = 32;
/// Connections still in their handshake allowed beyond `--max-connections`
/// so that refused clients get their 503 instead of a silent drop.
const HANDSHAKE_SLACK: usize = 64;
/// Size of the loop-wide read buffer every socket reads into.
const SCRATCH: usize = 64 * 1024;
/// Largest client message unless `--max-message-size` says otherwise.
const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;
/// Largest message `--echo` accepts by default (Autobahn case 9 sends 16 MiB).
const ECHO_MAX_MESSAGE: usize = 16 << 20;

/// The listening sockets and the signal pipe.
struct Listeners {
    /// WebSocket/HTTP; `None` once shutting down (no new clients).
    ws: Option<TcpListener>,
    /// The control socket; `None` once shutting down.
    control: Option<UnixListener>,
    /// Where the control socket lives (removed at exit).
    control_path: PathBuf,
    /// SIGINT, SIGTERM, SIGHUP.
    signals: Signals,
    /// Accepting paused after EMFILE/ENFILE, until `Timer::ResumeAccept`.
    paused: bool,
}

/// The server: the hub and the I/O around it, owned by the loop.
pub struct Server {
    /// The readiness poll every socket is registered with.
    pub(super) poll: Poll,
    /// The command line, for the settings the I/O side reads as it goes.
    pub(super) args: ServeArgs,
    /// Listening sockets and signals.
    listeners: Listeners,
    /// All routing state; every input goes through [`Hub::handle`].
    pub(super) hub: Hub,
    /// Sockets, buffers, deadlines and the data log: where the hub's
    /// effects land.
    pub(super) wire: Wire,
    /// When to hand freed memory back to the OS.
    heap: heap::Trim,
    /// Sources to resume next turn (budget used up, input maybe left).
    pub(super) again: Vec<Again>,
    /// Loop-wide read buffer: no connection owns one while idle.
    pub(super) scratch: Vec<u8>,
    /// The one ping frame every connection shares.
    pub(super) ping_frame: Rc<[u8]>,
    /// Serial number of the next accepted connection.
    next_serial: u64,
    /// Largest client message (`--max-message-size`, or the echo default).
    pub(super) max_message: usize,
    /// SIGINT/SIGTERM arrived: no new clients, closing every client.
    pub(super) shutting_down: bool,
    /// The HTTP API key's digest (`--api-key-file`); no API without it.
    pub(super) api_key: Option<http::KeyDigest>,
    /// The demo page's answers (`--demo`).
    pub(super) demo: Option<Demo>,
}

impl Server {
    /// Bind the listeners, load tokens and the data log, and get ready to
    /// run. Errors are meant for the operator (refused control path, port
    /// in use, bad tokens file).
    pub fn bind(mut args: ServeArgs) -> Result<Server, String> {
        heap::configure();
        let fd_limit = setup::raise_fd_limit();
        let max_connections = args
            .max_connections
            .unwrap_or_else(|| fd_limit.saturating_sub(FD_RESERVE).max(1));
        let mut tokens = Tokens::default();
        if let Some(path) = &args.tokens {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            tokens.load(&text, &path.display().to_string())?;
        }
        // Every file a flag names is read before anything is bound.
        let started_unix_ms = unix_ms();
        let config = setup::hub_config(&args, max_connections, started_unix_ms)?;
        let api_key = args
            .api_key_file
            .as_deref()
            .map(setup::api_key)
            .transpose()?;
        let poll = Poll::new().map_err(|e| format!("cannot create poll: {e}"))?;
        let mut listener = TcpListener::bind(args.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        setup::raise_backlog(&listener);
        let mut control = setup::bind_control(&args.control, args.control_mode)?;
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let registry = poll.registry();
        let mut register = || -> io::Result<()> {
            registry.register(&mut listener, LISTENER, Interest::READABLE)?;
            registry.register(&mut control, CONTROL, Interest::READABLE)?;
            registry.register(&mut signals, SIGNALS, Interest::READABLE)
        };
        register().map_err(|e| format!("cannot register with poll: {e}"))?;
        let started = Instant::now();
        let max_message = match args.max_message_size {
            Some(explicit) => explicit,
            None if args.echo => ECHO_MAX_MESSAGE,
            None => DEFAULT_MAX_MESSAGE,
        };
        if args.echo {
            // An echo server must be able to hold the echo of the largest
            // message it accepts (two, pipelined), or it would close every
            // client that sends one as a slow consumer (Autobahn 9.1.5).
            args.max_outbound = args.max_outbound.max(2 * max_message + 64);
        }
        info!(
            "open-file limit {fd_limit}: up to {max_connections} connections; {} tokens loaded",
            tokens.len()
        );
        let wire = Wire {
            conns: Slab::new(),
            ctrls: Slab::new(),
            turn: Turn::default(),
            wheel: Wheel::new(TICK_MS, WHEEL_SLOTS),
            store: None,
            ctrl_dirty: Vec::new(),
            gone: Vec::new(),
            http_held: Vec::new(),
            forwarded: Default::default(),
            traffic: Traffic::default(),
            tallies: Default::default(),
            limits: Limits {
                idle_ms: args.idle_timeout * 1000,
                ping_ms: args.ping_interval * 1000,
                max_outbound: args.max_outbound,
            },
            now: 0,
            started,
            redis: setup::redis_link(&args, config.node.as_deref()),
        };
        let mut server = Server {
            poll,
            listeners: Listeners {
                ws: Some(listener),
                control: Some(control),
                control_path: args.control.clone(),
                signals,
                paused: false,
            },
            hub: Hub::new(config, tokens),
            wire,
            heap: heap::Trim::default(),
            again: Vec::new(),
            scratch: vec![0; SCRATCH],
            ping_frame: frame::encode(OpCode::Ping, b"").into(),
            next_serial: 1,
            max_message,
            shutting_down: false,
            api_key,
            demo: args.demo.then(|| Demo::new(&args.ws_path)),
            args,
        };
        if let Some(dir) = server.args.data_dir.clone() {
            server.restore(&dir)?;
        }
        server.redis_start();
        Ok(server)
    }

    /// The address the WebSocket listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match &self.listeners.ws {
            Some(l) => l.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Run until SIGINT/SIGTERM has closed every client.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let started = self.wire.started;
        // Bound, restored and announced (`serve` printed its listening line).
        setup::notify("READY=1");
        loop {
            let now = self.wire.now;
            let timeout = if self.again.is_empty() {
                let wire = self.wire.wheel.next_timeout(now);
                let hub = self.hub.poll_timeout(now);
                wire.into_iter().chain(hub).min().map(Duration::from_millis)
            } else {
                // Deferred input waits: only look for other ready sources.
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.wire.now = started.elapsed().as_millis() as u64;
            // Sources deferred last turn go after this turn's events, and
            // whatever they defer again waits for the next turn.
            let again = std::mem::take(&mut self.again);
            for event in events.iter() {
                match source(event.token()) {
                    Source::Listener => self.accept(),
                    Source::Control => self.accept_control(),
                    Source::Signals => self.on_signals(),
                    Source::Redis(which) => self.redis_ready(which),
                    Source::Ws(key) => self.ws_ready(key, event.is_writable()),
                    Source::Ctrl(key) => self.ctrl_ready(key),
                }
            }
            for source in again {
                match source {
                    Again::Ws { key, serial } => {
                        if self.wire.conns.get(key).is_some_and(|c| c.serial == serial) {
                            self.ws_read(key);
                        }
                    }
                    Again::Ctrl(key) => self.ctrl_ready(key),
                    Again::Http { key, serial } => {
                        if self.wire.conns.get(key).is_some_and(|c| c.serial == serial) {
                            self.handshake_bytes(key, &mut []);
                        }
                    }
                }
            }
            self.expire_timers();
            self.sync_log();
            self.release_http();
            // Replies leave before the turn's frames: a producer with
            // requests in flight sends its next ones while the frames are
            // written, and the next turn finds them all (with the replies
            // after the writes it found about half). What the writes
            // produce (event lines) leaves with the second call.
            self.release_replies();
            self.flush_turn();
            self.redis_flush();
            self.release_replies();
            if self.shutting_down && self.wire.conns.is_empty() {
                break;
            }
        }
        let _ = std::fs::remove_file(&self.listeners.control_path);
        info!("stopped");
        Ok(())
    }

    /// Hand one input to the hub, then tell it which connections the I/O
    /// side lost meanwhile.
    pub(super) fn feed(&mut self, input: Input<'_>) {
        self.hub.handle(self.wire.now, input, &mut self.wire);
        self.settle();
    }

    /// Tell the hub about the connections the I/O side lost.
    pub(super) fn settle(&mut self) {
        while let Some(conn) = self.wire.gone.pop() {
            self.hub
                .handle(self.wire.now, Input::Left { conn }, &mut self.wire);
        }
    }

    /// Drop a connection's socket now (the hub hears that it left).
    pub(super) fn drop_conn(&mut self, key: usize, why: &str) {
        self.wire.drop_conn(key, why);
        self.settle();
    }

    fn accept(&mut self) {
        while !self.listeners.paused {
            let Some(listener) = &self.listeners.ws else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if setup::out_of_fds(&e) => return self.pause_accepting(&e),
                Err(e) => {
                    debug!("accept: {e}");
                    continue;
                }
            };
            let conns = &mut self.wire.conns;
            if conns.len() >= self.hub.max_connections() + HANDSHAKE_SLACK {
                self.wire.traffic.rejected += 1;
                self.wire.tallies.http_error(503);
                let _ = stream.write(&handshake::http_response(503, &[], "server full\n"));
                continue;
            }
            let _ = stream.set_nodelay(true);
            let serial = self.next_serial;
            self.next_serial += 1;
            let entry = conns.vacant_entry();
            let key = entry.key();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut stream, Token(CONN_BASE + key), interest)
            {
                warn!("register: {e}");
                continue;
            }
            entry.insert(Conn::new(stream, serial, self.wire.now));
            debug!("conn {serial}: accepted from {peer}");
            let deadline = self.wire.now + self.args.handshake_timeout * 1000;
            self.wire.arm(key, deadline);
        }
    }

    /// Out of descriptors: pending connections stay in the listeners'
    /// backlogs. Spinning on them would burn the CPU, so both listeners
    /// pause until the `ResumeAccept` timer retries them.
    pub(super) fn pause_accepting(&mut self, e: &io::Error) {
        if self.listeners.paused {
            return;
        }
        warn!("accept: {e}; pausing accepts for {TICK_MS} ms");
        self.listeners.paused = true;
        let at = self.wire.now + TICK_MS;
        self.wire.wheel.insert(at, Timer::ResumeAccept);
    }

    fn accept_control(&mut self) {
        loop {
            let Some(listener) = &self.listeners.control else {
                return;
            };
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The control client waits in the backlog; no new edge will
                // report it, so the resume timer retries this listener too.
                Err(e) if setup::out_of_fds(&e) => return self.pause_accepting(&e),
                Err(e) => {
                    warn!("control accept: {e}");
                    return;
                }
            };
            let serial = self.next_serial;
            self.next_serial += 1;
            let entry = self.wire.ctrls.vacant_entry();
            let token = Token(CTRL_BASE + entry.key());
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("register control: {e}");
                continue;
            }
            debug!("control {}: connected", entry.key());
            entry.insert(ControlConn::new(stream, serial as u32));
        }
    }

    fn on_signals(&mut self) {
        let pending: Vec<i32> = self.listeners.signals.pending().collect();
        for signal in pending {
            match signal {
                SIGHUP => self.reload_tokens(),
                _ => self.begin_shutdown(),
            }
        }
    }

    fn reload_tokens(&mut self) {
        let Some(path) = self.args.tokens.clone() else {
            info!("SIGHUP: no --tokens file to reload");
            return;
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => self.feed(Input::ReloadTokens {
                text: &text,
                name: &path.display().to_string(),
            }),
            Err(e) => warn!(
                "SIGHUP: keeping the current tokens: cannot read {}: {e}",
                path.display()
            ),
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        info!(
            "shutting down: closing {} connections",
            self.wire.conns.len()
        );
        self.shutting_down = true;
        setup::notify("STOPPING=1");
        self.listeners.ws = None;
        self.listeners.control = None;
        let _ = std::fs::remove_file(&self.listeners.control_path);
        self.feed(Input::Shutdown);
        let handshaking: Vec<usize> = self
            .wire
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Handshake)
            .map(|(k, _)| k)
            .collect();
        for key in handshaking {
            self.drop_conn(key, "shutdown");
        }
    }

    fn expire_timers(&mut self) {
        let now = self.wire.now;
        while let Some(timer) = self.wire.wheel.expire(now) {
            match timer {
                Timer::Conn { key } => self.on_conn_timer(key as usize),
                Timer::ResumeAccept => {
                    self.listeners.paused = false;
                    self.accept();
                    self.accept_control();
                }
                Timer::Trim => self.heap.run(),
                Timer::Redis { generation } => self.redis_timer(generation),
                Timer::DataLog => {
                    if !self.compact_log() {
                        self.wire.wheel.insert(now + LOG_RETRY_MS, Timer::DataLog);
                    }
                }
            }
        }
        self.feed(Input::Tick);
    }

    /// Write every frame queued this turn; note freed bytes for the heap.
    fn flush_turn(&mut self) {
        let bytes = self.wire.flush_turn();
        self.note_freed(bytes);
        self.settle();
    }

    /// Frame bytes were freed (a turn's frames, a drained backlog): once
    /// enough have been, hand the heap's free pages back a tick later.
    pub(super) fn note_freed(&mut self, bytes: u64) {
        if self.heap.note(bytes) {
            let at = self.wire.now + TICK_MS;
            self.wire.wheel.insert(at, Timer::Trim);
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
