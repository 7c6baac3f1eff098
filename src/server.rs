//! The event loop: one thread, one `mio::Poll`, every source registered once
//! for edge-triggered readiness.
//!
//! One turn, always in this order (see [`Server::run`]):
//!
//! 1. poll, with the timeout the timer wheel asks for;
//! 2. handle input: accept, read, execute control requests. Nothing is sent
//!    for them yet: pushes *queue* frames, requests queue log records, and
//!    replies are *held* on their control connection;
//! 3. expire timers (which may queue more of the same);
//! 4. write + `fdatasync` the turn's log records, once;
//! 5. only then flush the turn's frames (one `writev` per connection) and
//!    release the held replies, each one rewritten as an error if the log
//!    records it depends on could not be written.
//!
//! So a reply or a frame can never leave before the records and the seq
//! reservation it depends on are on disk: the order is the structure of the
//! loop, not a convention of the callers. Handling a batch of control lines
//! before flushing is also what coalesces back-to-back pushes into one
//! syscall per connection.
//!
//! The WebSocket side of a connection lives in `ws.rs`, the control requests
//! in `ops.rs`; both are `impl Server` blocks over the state defined here.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::cli::ServeArgs;
use crate::conn::{Conn, Phase};
use crate::control::ControlConn;
use crate::frame::{self, OpCode};
use crate::handshake;
use crate::heap;
use crate::mailbox::Mailbox;
use crate::outbox::{self, Turn};
use crate::schedule::Job;
use crate::store::Store;
use crate::tokens::Tokens;
use crate::users::Users;
use crate::wheel::Wheel;

/// The WebSocket/HTTP listener.
const LISTENER: Token = Token(0);
/// The control socket listener.
const CONTROL: Token = Token(1);
/// SIGINT, SIGTERM and SIGHUP, delivered through a self-pipe.
const SIGNALS: Token = Token(2);
/// WebSocket connection `key` is `Token(CONN_BASE + key)`.
const CONN_BASE: usize = 16;
/// Control connection `key` is `Token(CTRL_BASE + key)`.
const CTRL_BASE: usize = 1 << 40;

/// Timer wheel granularity (DESIGN.md §3).
pub const TICK_MS: u64 = 1000;
/// Slots in the wheel: one rotation covers 17 minutes at 1 s ticks, longer
/// than the default idle timeout, so idle entries never wrap.
const WHEEL_SLOTS: usize = 1024;
/// How long a closing connection may take to answer our close frame, and
/// how long an HTTP answer may take to leave, before the socket is dropped.
pub const CLOSE_TIMEOUT_MS: u64 = 5000;
/// Open files kept back from `--max-connections`' default for listeners,
/// control clients, the poll and signal pipes, and the tokens file.
const FD_RESERVE: usize = 32;
/// Connections still in their handshake allowed beyond `--max-connections`
/// so that refused clients get their 503 instead of a silent drop.
const HANDSHAKE_SLACK: usize = 64;
/// How often a failed data log is retried.
const LOG_RETRY_MS: u64 = 1000;
/// Pending connections the kernel may hold for the listener.
const LISTEN_BACKLOG: libc::c_int = 4096;
/// Size of the loop-wide read buffer every socket reads into.
const SCRATCH: usize = 64 * 1024;
/// Largest client message unless `--max-message-size` says otherwise.
const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;
/// Largest message `--echo` accepts by default (Autobahn case 9 sends 16 MiB).
const ECHO_MAX_MESSAGE: usize = 16 << 20;
/// Reads of [`SCRATCH`] bytes one WebSocket connection gets per loop turn
/// (256 KiB) before the others get their turn. Also bounds what one turn can
/// queue in reply (pongs, echoes) before the flush checks `--max-outbound`.
pub(crate) const WS_READ_BUDGET: usize = 4;
/// Control lines one control connection gets executed per loop turn; keeps
/// the coalescing of a batch of pushes while bounding what one turn queues.
pub(crate) const CTRL_LINE_BUDGET: usize = 256;

/// What a token refers to.
enum Source {
    Listener,
    Control,
    Signals,
    Ws(usize),
    Ctrl(usize),
}

fn source(token: Token) -> Source {
    match token {
        LISTENER => Source::Listener,
        CONTROL => Source::Control,
        SIGNALS => Source::Signals,
        Token(t) if t >= CTRL_BASE => Source::Ctrl(t - CTRL_BASE),
        Token(t) => Source::Ws(t - CONN_BASE),
    }
}

/// An entry in the timer wheel.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Timer {
    /// The single timer of connection `key`, valid while its generation matches.
    Conn {
        /// Slab key.
        key: u32,
        /// `Conn::generation` when armed.
        generation: u32,
    },
    /// Accepting was paused after EMFILE/ENFILE; try again.
    ResumeAccept,
    /// The oldest mailbox record is due to expire.
    Mailbox,
    /// Scheduled job `key` is due, valid while its generation matches.
    Job {
        /// Slab key in `jobs`.
        key: u32,
        /// `Job::generation` when armed.
        generation: u32,
    },
    /// The data log is failed: try to rewrite it from the live state.
    DataLog,
    /// Return freed heap memory to the OS (see `heap.rs`).
    Trim,
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
}

/// Counters reported by `stats` and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub upgrades: u64,
    pub rejected: u64,
    pub pushes: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub idle_evictions: u64,
    pub slow_consumers: u64,
    pub kicked: u64,
}

/// The whole server state, owned by the loop.
pub struct Server {
    pub(crate) poll: Poll,
    pub(crate) args: ServeArgs,
    /// None once shutting down (no new clients).
    listener: Option<TcpListener>,
    control: Option<UnixListener>,
    control_path: PathBuf,
    signals: Signals,
    pub(crate) conns: Slab<Conn>,
    pub(crate) ctrls: Slab<ControlConn>,
    pub(crate) users: Users,
    pub(crate) tokens: Tokens,
    pub(crate) wheel: Wheel<Timer>,
    pub(crate) turn: Turn,
    /// When to hand freed memory back to the OS.
    heap: heap::Trim,
    /// Sources to resume next turn (budget used up, input maybe left).
    pub(crate) again: Vec<Again>,
    /// Loop-wide read buffer: no connection owns one while idle.
    pub(crate) scratch: Vec<u8>,
    pub(crate) stats: Stats,
    /// The one ping frame every connection shares.
    pub(crate) ping_frame: Rc<[u8]>,
    started: Instant,
    /// Wall-clock ms at `started`, to turn virtual ms into timestamps.
    pub(crate) started_unix_ms: u64,
    /// Virtual ms since start, read once per loop turn.
    pub(crate) now: u64,
    next_serial: u64,
    /// Last push sequence number handed out.
    pub(crate) seq: u64,
    /// Per-process prefix of message ids (`{prefix}-{seq}`).
    pub(crate) id_prefix: String,
    pub(crate) max_connections: usize,
    pub(crate) max_message: usize,
    /// Topic → keys of the connections subscribed to it.
    pub(crate) topics: HashMap<Rc<str>, Vec<u32>>,
    pub(crate) mailbox: Mailbox,
    /// Whether a `Timer::Mailbox` entry is pending.
    pub(crate) mailbox_timer: bool,
    /// The durable log (`--data-dir`).
    pub(crate) store: Option<Store>,
    pub(crate) jobs: Slab<Job>,
    pub(crate) job_ids: HashMap<Rc<str>, usize>,
    pub(crate) job_serial: u64,
    pub(crate) job_generation: u32,
    /// Control connections that asked for `events`.
    pub(crate) listeners: Vec<usize>,
    /// Control connections with replies to flush after the log is synced.
    pub(crate) ctrl_dirty: Vec<usize>,
    /// Upgraded connections that are not closing.
    pub(crate) open: usize,
    accept_paused: bool,
    /// SIGINT/SIGTERM arrived: no new jobs, closing every client.
    pub(crate) shutting_down: bool,
}

impl Server {
    /// Bind the listeners, load tokens and get ready to run. Errors are
    /// meant for the operator (refused control path, port in use, bad tokens file).
    pub fn bind(mut args: ServeArgs) -> Result<Server, String> {
        heap::configure();
        let fd_limit = raise_fd_limit();
        let max_connections = args
            .max_connections
            .unwrap_or_else(|| fd_limit.saturating_sub(FD_RESERVE).max(1));
        let mut tokens = Tokens::default();
        if let Some(path) = &args.tokens {
            tokens.load_file(path)?;
        }
        let poll = Poll::new().map_err(|e| format!("cannot create poll: {e}"))?;
        let mut listener = TcpListener::bind(args.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        raise_backlog(&listener);
        let mut control = bind_control(&args.control, args.control_mode)?;
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let registry = poll.registry();
        let mut setup = || -> io::Result<()> {
            registry.register(&mut listener, LISTENER, Interest::READABLE)?;
            registry.register(&mut control, CONTROL, Interest::READABLE)?;
            registry.register(&mut signals, SIGNALS, Interest::READABLE)
        };
        setup().map_err(|e| format!("cannot register with poll: {e}"))?;
        let started_unix_ms = unix_ms();
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
        let mailbox = Mailbox::new(args.mailbox, args.mailbox_ttl * 1000, args.mailbox_bytes);
        let data_dir = args.data_dir.clone();
        let mut server = Server {
            poll,
            listener: Some(listener),
            control: Some(control),
            control_path: args.control.clone(),
            args,
            signals,
            conns: Slab::new(),
            ctrls: Slab::new(),
            users: Users::default(),
            tokens,
            wheel: Wheel::new(TICK_MS, WHEEL_SLOTS),
            turn: Turn::default(),
            heap: heap::Trim::default(),
            again: Vec::new(),
            scratch: vec![0; SCRATCH],
            stats: Stats::default(),
            ping_frame: frame::encode(OpCode::Ping, b"").into(),
            started: Instant::now(),
            started_unix_ms,
            now: 0,
            next_serial: 1,
            seq: 0,
            id_prefix: format!(
                "{:04x}",
                (started_unix_ms ^ u64::from(std::process::id())) & 0xffff
            ),
            max_connections,
            max_message,
            topics: HashMap::new(),
            mailbox,
            mailbox_timer: false,
            store: None,
            jobs: Slab::new(),
            job_ids: HashMap::new(),
            job_serial: 0,
            job_generation: 0,
            listeners: Vec::new(),
            ctrl_dirty: Vec::new(),
            open: 0,
            accept_paused: false,
            shutting_down: false,
        };
        if let Some(dir) = data_dir {
            server.restore(&dir)?;
        }
        Ok(server)
    }

    /// The address the WebSocket listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Run until SIGINT/SIGTERM has closed every client.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.again.is_empty() {
                self.wheel.next_timeout(self.now).map(Duration::from_millis)
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
            self.now = self.started.elapsed().as_millis() as u64;
            // Sources deferred last turn go after this turn's events, and
            // whatever they defer again waits for the next turn.
            let again = std::mem::take(&mut self.again);
            for event in events.iter() {
                match source(event.token()) {
                    Source::Listener => self.accept(),
                    Source::Control => self.accept_control(),
                    Source::Signals => self.on_signals(),
                    Source::Ws(key) => self.ws_ready(key, event.is_writable()),
                    Source::Ctrl(key) => self.ctrl_ready(key),
                }
            }
            for source in again {
                match source {
                    Again::Ws { key, serial } => {
                        if self.conns.get(key).is_some_and(|c| c.serial == serial) {
                            self.ws_read(key);
                        }
                    }
                    Again::Ctrl(key) => self.ctrl_ready(key),
                }
            }
            self.expire_timers();
            self.sync_log();
            self.flush_turn();
            self.release_replies();
            if self.shutting_down && self.conns.is_empty() {
                break;
            }
        }
        let _ = std::fs::remove_file(&self.control_path);
        info!("stopped");
        Ok(())
    }

    fn accept(&mut self) {
        while !self.accept_paused {
            let Some(listener) = &self.listener else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if out_of_fds(&e) => return self.pause_accepting(&e),
                Err(e) => {
                    debug!("accept: {e}");
                    continue;
                }
            };
            if self.conns.len() >= self.max_connections + HANDSHAKE_SLACK {
                self.stats.rejected += 1;
                let _ = stream.write(&handshake::http_response(503, &[], "server full\n"));
                continue;
            }
            let _ = stream.set_nodelay(true);
            let serial = self.next_serial;
            self.next_serial += 1;
            let entry = self.conns.vacant_entry();
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
            entry.insert(Conn::new(stream, peer, serial, self.now));
            debug!("conn {serial}: accepted from {peer}");
            let deadline = self.now + self.args.handshake_timeout * 1000;
            self.arm(key, deadline);
        }
    }

    /// Out of descriptors: pending connections stay in the listeners'
    /// backlogs. Spinning on them would burn the CPU, so both listeners
    /// pause until the `ResumeAccept` timer retries them.
    fn pause_accepting(&mut self, e: &io::Error) {
        if self.accept_paused {
            return;
        }
        warn!("accept: {e}; pausing accepts for {TICK_MS} ms");
        self.accept_paused = true;
        self.wheel.insert(self.now + TICK_MS, Timer::ResumeAccept);
    }

    fn accept_control(&mut self) {
        loop {
            let Some(listener) = &self.control else {
                return;
            };
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The control client waits in the backlog; no new edge will
                // report it, so the resume timer retries this listener too.
                Err(e) if out_of_fds(&e) => return self.pause_accepting(&e),
                Err(e) => {
                    warn!("control accept: {e}");
                    return;
                }
            };
            let entry = self.ctrls.vacant_entry();
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
            entry.insert(ControlConn::new(stream));
        }
    }

    fn on_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
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
        match self.tokens.load_file(&path) {
            Ok(gone) => {
                info!(
                    "SIGHUP: reloaded {}: {} tokens, {} removed",
                    path.display(),
                    self.tokens.len(),
                    gone.len()
                );
                for tag in gone {
                    self.close_token(tag);
                }
            }
            Err(e) => warn!("SIGHUP: keeping the current tokens: {e}"),
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        info!("shutting down: closing {} connections", self.conns.len());
        self.shutting_down = true;
        self.listener = None;
        self.control = None;
        let _ = std::fs::remove_file(&self.control_path);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.conns[key].phase {
                Phase::Open => self.start_close(key, 1001, "server shutting down"),
                Phase::Handshake => self.drop_conn(key, "shutdown"),
                Phase::Closing | Phase::Finishing => {}
            }
        }
    }

    fn expire_timers(&mut self) {
        while let Some(timer) = self.wheel.expire(self.now) {
            match timer {
                Timer::Conn { key, generation } => self.on_conn_timer(key as usize, generation),
                Timer::ResumeAccept => {
                    self.accept_paused = false;
                    self.accept();
                    self.accept_control();
                }
                Timer::Mailbox => self.on_mailbox_timer(),
                // Jobs stay in the log and run after the restart.
                Timer::Job { .. } if self.shutting_down => {}
                Timer::Job { key, generation } => self.on_job_timer(key as usize, generation),
                Timer::Trim => self.heap.run(),
                Timer::DataLog => {
                    if !self.compact_log() {
                        self.wheel.insert(self.now + LOG_RETRY_MS, Timer::DataLog);
                    }
                }
            }
        }
    }

    /// (Re)arm connection `key`'s single timer.
    pub(crate) fn arm(&mut self, key: usize, at_ms: u64) {
        let conn = &mut self.conns[key];
        if let Some(old) = conn.timer.take() {
            self.wheel.cancel(old);
        }
        let timer = Timer::Conn {
            key: key as u32,
            generation: conn.generation(),
        };
        conn.timer = Some(self.wheel.insert(at_ms, timer));
    }

    /// Write every frame queued this turn: one vectored write per
    /// connection. Frames no connection took are freed here too.
    fn flush_turn(&mut self) {
        let dirty = self.turn.take_dirty();
        for &key in &dirty {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.chain.is_empty() {
                continue;
            }
            let result =
                self.turn
                    .write_chain(&mut conn.chain, &mut conn.backlog, &mut conn.stream);
            self.after_write(key, result);
        }
        if self.heap.note(self.turn.take_bytes()) {
            self.wheel.insert(self.now + TICK_MS, Timer::Trim);
        }
        self.turn.clear(dirty);
    }

    /// Write a connection's backlog after a WRITABLE event.
    pub(crate) fn write_backlog(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let result = outbox::write_backlog(&mut conn.backlog, &mut conn.stream);
        self.after_write(key, result);
    }

    fn after_write(&mut self, key: usize, result: io::Result<usize>) {
        let unsent = match result {
            Ok(unsent) => unsent,
            Err(e) => return self.drop_conn(key, &format!("write error: {e}")),
        };
        let conn = &mut self.conns[key];
        if unsent == 0 && conn.phase == Phase::Finishing {
            self.drop_conn(key, "done");
        } else if unsent > self.args.max_outbound && conn.phase == Phase::Open {
            self.slow_consumer(key);
        }
    }

    /// Write and fsync the records queued so far (end of turn, or earlier
    /// when a turn outruns its seq reservation).
    pub(crate) fn sync_log(&mut self) {
        let Some(store) = &mut self.store else {
            return;
        };
        let was_failed = store.failed().is_some();
        match store.sync() {
            Err(e) if !was_failed => {
                error!(
                    "cannot write the data log: {e}; replies that need it are errors until it recovers"
                );
                self.on_log_failure();
            }
            Err(_) => {}
            Ok(()) if store.wants_compaction() => {
                self.compact_log();
            }
            Ok(()) => {}
        }
    }

    /// The data log just failed: retry it until it is healthy again.
    pub(crate) fn on_log_failure(&mut self) {
        self.wheel.insert(self.now + LOG_RETRY_MS, Timer::DataLog);
    }

    /// Send the replies held this turn, now that the log is synced: each
    /// reply whose records did not reach the disk becomes an error.
    fn release_replies(&mut self) {
        let (durable, failure) = match &self.store {
            Some(store) => (store.durable(), store.failed()),
            None => (u64::MAX, None),
        };
        let failure = failure.unwrap_or("records not written").to_string();
        let dirty = std::mem::take(&mut self.ctrl_dirty);
        for key in dirty {
            if let Some(ctrl) = self.ctrls.get_mut(key) {
                ctrl.release(durable, &failure);
            }
            self.flush_ctrl(key);
        }
    }

    pub(crate) fn drop_ctrl(&mut self, key: usize) {
        debug!("control {key}: closed");
        self.listeners.retain(|&k| k != key);
        self.ctrls.remove(key);
    }

    /// Virtual ms to wall-clock Unix ms.
    pub(crate) fn unix_ms(&self, virtual_ms: u64) -> u64 {
        self.started_unix_ms + virtual_ms
    }

    /// Seconds since start.
    pub(crate) fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// Bind the control socket: replace a stale file, refuse a live server.
fn bind_control(path: &Path, mode: u32) -> Result<UnixListener, String> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another wspush is already listening on {}",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
        info!("replaced stale control socket {}", path.display());
    }
    // Create the socket with its final mode, so it is never reachable by
    // others even for a moment; the umask is process-wide, but we are still
    // single-threaded here.
    let old = unsafe { libc::umask(!mode & 0o777) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener =
        bound.map_err(|e| format!("cannot bind control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    Ok(listener)
}

/// Raise the soft open-file limit to the hard one; returns the limit in force.
fn raise_fd_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

/// mio listens with the standard library's backlog of 128. A reconnect
/// storm (every client of a restarted server) or a pause in accepting
/// (EMFILE) overflows it, and the kernel then drops SYNs that clients only
/// retry after 1, 3, 7, ... s. Calling listen() again raises the backlog
/// (the kernel caps it at `net.core.somaxconn`); failing that, 128 stays.
fn raise_backlog(listener: &TcpListener) {
    // SAFETY: listen() on a descriptor we own; no memory is involved.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        warn!(
            "cannot raise the listen backlog: {}",
            io::Error::last_os_error()
        );
    }
}

/// EMFILE / ENFILE: this process or the system is out of descriptors.
fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
