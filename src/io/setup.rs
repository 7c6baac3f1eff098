//! Setting up the sockets and the process: the control socket's file,
//! the open-file limit, the listen backlog, the errors that mean
//! "out of descriptors" or "out of disk", and telling systemd we are ready.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use log::{debug, info, warn};
use mio::net::{TcpListener, UnixListener};

use crate::cli::ServeArgs;
use crate::hub;
use crate::proto::http;

/// Pending connections the kernel may hold for the listener.
const LISTEN_BACKLOG: libc::c_int = 4096;

/// Bind the control socket: replace a stale file, refuse a live server.
pub fn bind_control(path: &Path, mode: u32) -> Result<UnixListener, String> {
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

/// Tell the service manager about a state change (the sd_notify protocol):
/// `READY=1` once listening, `STOPPING=1` when a graceful shutdown begins.
/// One datagram to the Unix socket named by `NOTIFY_SOCKET`: a path, or an
/// abstract name when it starts with `@`. Without the variable (not run by
/// systemd with `Type=notify`) nothing happens; failures are logged at debug
/// and otherwise ignored, as the server runs the same either way.
pub fn notify(state: &str) {
    let Some(name) = std::env::var_os("NOTIFY_SOCKET").filter(|n| !n.is_empty()) else {
        return;
    };
    match send_notify(&name, state) {
        Ok(()) => debug!("sd_notify {state:?} sent to {}", name.display()),
        Err(e) => debug!("sd_notify {state:?} to {}: {e}", name.display()),
    }
}

/// One unbound datagram socket per message: sent twice in a run, not worth
/// keeping a descriptor for.
fn send_notify(name: &OsStr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    match name.as_bytes().strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        #[cfg(not(target_os = "linux"))]
        Some(_) => return Err(io::ErrorKind::Unsupported.into()),
        None => {
            socket.send_to(state.as_bytes(), Path::new(name))?;
        }
    }
    Ok(())
}

/// Raise the soft open-file limit to the hard one; returns the limit in force.
pub fn raise_fd_limit() -> usize {
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
pub fn raise_backlog(listener: &TcpListener) {
    // SAFETY: listen() on a descriptor we own; no memory is involved.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        warn!(
            "cannot raise the listen backlog: {}",
            io::Error::last_os_error()
        );
    }
}

/// EMFILE / ENFILE: this process or the system is out of descriptors.
pub fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// ENOSPC or EDQUOT: space may come back, so the server runs on.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Shortest API key accepted: a guessable key would open every op to the
/// network.
const MIN_API_KEY: usize = 16;

/// Read the HTTP API key (`--api-key-file`), surrounding whitespace
/// ignored, and keep only its digest.
pub fn api_key(path: &Path) -> Result<http::KeyDigest, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = text.trim_ascii();
    if key.len() < MIN_API_KEY {
        return Err(format!(
            "{}: the API key must be at least {MIN_API_KEY} bytes",
            path.display()
        ));
    }
    if key.iter().any(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "{}: the API key must be printable ASCII without spaces",
            path.display()
        ));
    }
    info!("HTTP API on (key from {})", path.display());
    Ok(http::digest(key))
}

/// Read the JWT secret (`--jwt-secret-file`): the file's bytes, one
/// trailing newline dropped.
pub fn jwt_key(path: &Path) -> Result<crate::proto::jwt::Key, String> {
    let secret = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key =
        crate::proto::jwt::Key::new(&secret).map_err(|e| format!("{}: {e}", path.display()))?;
    info!(
        "JWT tokens accepted (HS256, secret from {})",
        path.display()
    );
    Ok(key)
}

/// The hub's settings from the command line.
pub fn hub_config(
    args: &ServeArgs,
    max_connections: usize,
    started_unix_ms: u64,
) -> Result<hub::Config, String> {
    Ok(hub::Config {
        max_connections,
        max_conns_per_user: args.max_conns_per_user,
        max_topics: args.max_topics,
        topics_default_all: args.topics_default.allows_all(),
        max_jobs: args.max_jobs,
        mailbox: args.mailbox,
        mailbox_ttl: args.mailbox_ttl,
        mailbox_bytes: args.mailbox_bytes,
        data_log: args.data_dir.is_some(),
        started_unix_ms,
        id_prefix: format!(
            "{:04x}",
            (started_unix_ms ^ u64::from(std::process::id())) & 0xffff
        ),
        jwt: args.jwt_secret_file.as_deref().map(jwt_key).transpose()?,
        token_http: args.token_rejection == "http",
        node: cluster_node(args, started_unix_ms)?,
    })
}

/// This node's id in a cluster (`--node-id`, or made up at start), and
/// the combinations a cluster does not support yet.
fn cluster_node(args: &ServeArgs, started_unix_ms: u64) -> Result<Option<String>, String> {
    if args.redis.is_none() {
        return Ok(None);
    }
    let made_up = || {
        let mixed =
            started_unix_ms.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(std::process::id());
        format!("n{:08x}", mixed as u32)
    };
    Ok(Some(args.node_id.clone().unwrap_or_else(made_up)))
}

/// The Redis link (`--redis`), not connected yet.
pub fn redis_link(args: &ServeArgs, node: Option<&str>) -> Option<super::redis_link::RedisLink> {
    let addr = args.redis.clone()?;
    let node = node.unwrap_or_default().to_owned();
    Some(super::redis_link::RedisLink::new(
        addr,
        args.redis_channel.clone(),
        node,
        (args.mailbox > 0).then_some([
            args.mailbox as u64,
            args.mailbox_ttl * 1000,
            args.mailbox_bytes as u64,
        ]),
    ))
}
