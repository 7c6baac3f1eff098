//! Command-line interface: `wspush serve` and the control-socket client
//! subcommands. Every `serve` flag can also come from the environment
//! (`WSPUSH_LISTEN`, `WSPUSH_IDLE_TIMEOUT`, ...); docs/protocol.md ("Command line and environment") is the contract
//! for names and defaults, and this file is the one place they are written.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default control socket path, shared by `serve` and the client subcommands.
pub const DEFAULT_CONTROL: &str = "./wspush.sock";

/// wspush: a tiny single-threaded WebSocket push server.
///
/// Local producers write push jobs into a Unix control socket; wspush fans
/// them out over WebSocket to every connection of the users they are meant
/// for. Clients connect to `ws://HOST:PORT/push/{token}`.
#[derive(Debug, Parser)]
#[command(name = "wspush", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the push server (WebSocket + HTTP port, control socket).
    Serve(Box<ServeArgs>),
    /// Push a message to users, or to every online client when no --user is given.
    Send(SendArgs),
    /// Push a message to every connection subscribed to a topic.
    Publish(PublishArgs),
    /// Stop a delayed or periodic push.
    Cancel(CancelArgs),
    /// List message records (needs --mailbox on the server).
    Messages(MessagesArgs),
    /// Delete a message's records; a held message is then never sent.
    Delete(DeleteArgs),
    /// Stream online, offline and upstream-message events as JSON lines until interrupted
    /// (exit 1 if the server closes the stream).
    Events(ControlArg),
    /// List connected clients.
    Clients(ClientsArgs),
    /// Print server counters (connections, users, messages, bytes, evictions).
    Stats(ControlArg),
    /// Grant, revoke or list client tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Close the connections of a user, or one connection, with close code 1008.
    Kick(KickArgs),
}

/// The control socket a client subcommand talks to.
#[derive(Debug, Args)]
pub struct ControlArg {
    /// Control socket of the running server.
    #[arg(long, env = "WSPUSH_CONTROL", default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
}

/// `wspush send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Recipient user; repeat for several. None: every online client.
    #[arg(long = "user", short = 'u')]
    pub users: Vec<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub message: PushOptions,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub control: ControlArg,
}

/// What `send` and `publish` share: the envelope fields and the options.
#[derive(Debug, Args)]
pub struct PushOptions {
    /// Optional title field of the envelope.
    #[arg(long)]
    pub title: Option<String>,
    /// Optional numeric type field of the envelope.
    #[arg(long = "type")]
    pub kind: Option<i64>,
    /// The content: sent as JSON when it parses as JSON, else as a string (with a note on
    /// stderr); see --json and --text.
    pub content: String,
    /// CONTENT must be valid JSON; otherwise nothing is sent (exit 2).
    #[arg(long, conflicts_with = "text")]
    pub json: bool,
    /// Send CONTENT as a JSON string, even if it parses as JSON.
    #[arg(long)]
    pub text: bool,
    /// Latest-value key: replaces an unsent message with the same key.
    #[arg(long)]
    pub key: Option<String>,
    /// Send after this many seconds (once, unless --every is given too).
    #[arg(long)]
    pub delay: Option<u64>,
    /// Send every this many seconds (after --delay, or one period from now).
    #[arg(long)]
    pub every: Option<u64>,
}

/// `wspush publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The topic; every connection subscribed to it receives the message.
    #[arg(long, short = 't')]
    pub topic: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub message: PushOptions,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub control: ControlArg,
}

/// `wspush cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The messageId of the scheduled push (the one its `--delay`/`--every` reply gave).
    pub message_id: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub control: ControlArg,
}

/// `wspush delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The messageId whose records to delete (as `wspush messages` lists them).
    pub message_id: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub control: ControlArg,
}

/// `wspush messages`.
#[derive(Debug, Args)]
pub struct MessagesArgs {
    /// Only this user's records.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Only records in this status: delivered, held or expired.
    #[arg(long)]
    pub status: Option<String>,
    /// Page size (default 100, at most 1000).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Records after this seq (the previous page's `next`).
    #[arg(long)]
    pub after: Option<u64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub control: ControlArg,
}

/// `wspush clients`.
#[derive(Debug, Args)]
pub struct ClientsArgs {
    /// Only this user's connections.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub control: ControlArg,
}

/// `wspush token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Allow TOKEN to connect as USER (`/push/TOKEN`); durable with the server's --data-dir.
    Grant {
        /// The secret a client puts in its URL.
        token: String,
        /// The user it authenticates as.
        user: String,
        /// A topic its connections may subscribe to: an exact name or a prefix ending in `*`;
        /// repeatable. None: the server's --topics-default.
        #[arg(long = "topic", short = 't', value_name = "PATTERN")]
        topics: Vec<String>,
        #[command(flatten)]
        #[allow(missing_docs)]
        control: ControlArg,
    },
    /// Forget TOKEN and close its live connections with 4401.
    Revoke {
        /// The token to revoke.
        token: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        control: ControlArg,
    },
    /// List the known tokens by fingerprint (never in full): user, topics, grant time, source.
    List {
        #[command(flatten)]
        #[allow(missing_docs)]
        control: ControlArg,
    },
}

/// `--topics-default`: what a token without a topic list may subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopicsDefault {
    /// Every topic.
    All,
    /// No topic.
    None,
}

impl TopicsDefault {
    /// Whether tokens without a list may follow every topic.
    pub fn allows_all(self) -> bool {
        self == TopicsDefault::All
    }
}

/// `wspush kick`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["user", "connection"])))]
pub struct KickArgs {
    /// Close every connection of this user.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Close this one connection (the `id` shown by `wspush clients`).
    #[arg(long)]
    pub connection: Option<u64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub control: ControlArg,
}

/// `wspush serve`: every knob of the server. Defaults suit a small embedded host.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// WebSocket + HTTP listen address (loopback by default; put a TLS proxy in front for the world).
    #[arg(long, env = "WSPUSH_LISTEN", default_value = "127.0.0.1:7001", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Clients connect to PATH/{token}.
    #[arg(long, env = "WSPUSH_WS_PATH", default_value = "/push", value_parser = parse_ws_path)]
    pub ws_path: String,
    /// Control socket path (Unix stream socket, newline-delimited JSON).
    #[arg(long, env = "WSPUSH_CONTROL", default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
    /// File mode of the control socket, in octal.
    #[arg(long, env = "WSPUSH_CONTROL_MODE", default_value = "600", value_parser = parse_octal)]
    pub control_mode: u32,
    /// JSON object {"token": "user", ...}; re-read on SIGHUP.
    #[arg(long, env = "WSPUSH_TOKENS")]
    pub tokens: Option<PathBuf>,
    /// Turn on the HTTP API (`POST /api/{op}` on the listen port) with the key in FILE
    /// (sent as `Authorization: Bearer KEY`; at least 16 bytes; surrounding whitespace ignored).
    #[arg(long, env = "WSPUSH_API_KEY_FILE", value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Also admit HS256 JWTs as URL tokens (`sub` = user, `exp` closes the connection with 4402),
    /// verified with the secret in FILE (at least 32 bytes).
    #[arg(long, env = "WSPUSH_JWT_SECRET_FILE", value_name = "FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// How a refused token is told: `close` (upgrade, then close 4401 "never retry" or 4402
    /// "expired: get a new token") or `http` (HTTP 401, which page scripts cannot see).
    #[arg(long, env = "WSPUSH_TOKEN_REJECTION", default_value = "close", value_parser = ["close", "http"])]
    pub token_rejection: String,
    /// Close connections that sent nothing for this many seconds (code 4001; at most 24 days).
    #[arg(long, env = "WSPUSH_IDLE_TIMEOUT", default_value_t = 605,
          value_parser = clap::value_parser!(u64).range(..=crate::io::conn::MAX_INTERVAL_S))]
    pub idle_timeout: u64,
    /// Send a ping every this many seconds (keeps proxies and NATs open; at most 24 days); 0 = off.
    #[arg(long, env = "WSPUSH_PING_INTERVAL", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(..=crate::io::conn::MAX_INTERVAL_S))]
    pub ping_interval: u64,
    /// Seconds a client has to complete the HTTP upgrade (then 408).
    #[arg(long, env = "WSPUSH_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub handshake_timeout: u64,
    /// Most WebSocket connections; beyond it upgrades get HTTP 503. Default: open-file limit minus a reserve.
    #[arg(long, env = "WSPUSH_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most connections per user; beyond it the oldest is closed (1008). 0 = no limit.
    #[arg(long, env = "WSPUSH_MAX_CONNS_PER_USER", default_value_t = 0)]
    pub max_conns_per_user: usize,
    /// Largest client message in bytes (bigger: close 1009). Default 65536,
    /// or 16 MiB with --echo.
    #[arg(long, env = "WSPUSH_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// Unsent bytes a connection may queue before it is closed as a slow consumer (4000).
    /// With --echo, at least twice the message size limit.
    #[arg(long, env = "WSPUSH_MAX_OUTBOUND", default_value_t = 1 << 20)]
    pub max_outbound: usize,
    /// Allowed browser Origin, http(s)://host[:port] (case and default port do not matter; no path);
    /// repeatable. None: any.
    #[arg(
        long = "allowed-origin",
        env = "WSPUSH_ALLOWED_ORIGIN",
        value_delimiter = ',',
        value_parser = parse_origin
    )]
    pub allowed_origins: Vec<String>,
    /// A proxy (ADDR or ADDR/BITS) whose X-Forwarded-For is believed: clients, events and logs
    /// then show the forwarded client; repeatable. None: the header is never believed.
    #[arg(
        long = "trusted-proxy",
        env = "WSPUSH_TRUSTED_PROXY",
        value_delimiter = ',',
        value_parser = crate::proto::proxy::Cidr::parse
    )]
    pub trusted_proxies: Vec<crate::proto::proxy::Cidr>,
    /// Messages held per offline user (and history kept for `?since=`); 0 = off.
    #[arg(long, env = "WSPUSH_MAILBOX", default_value_t = 0)]
    pub mailbox: usize,
    /// Seconds a held message is kept before it expires.
    #[arg(long, env = "WSPUSH_MAILBOX_TTL", default_value_t = 3600)]
    pub mailbox_ttl: u64,
    /// Total bytes the mailbox may hold (oldest records go first).
    #[arg(long, env = "WSPUSH_MAILBOX_BYTES", default_value_t = 64 << 20)]
    pub mailbox_bytes: usize,
    /// Directory where held messages, the seq counter and scheduled jobs survive restarts.
    #[arg(long, env = "WSPUSH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Topics one connection may subscribe to.
    #[arg(long, env = "WSPUSH_MAX_TOPICS", default_value_t = 64)]
    pub max_topics: usize,
    /// Topics a token without a topic list (every --tokens file token, a grant without one) may subscribe to.
    #[arg(long, env = "WSPUSH_TOPICS_DEFAULT", value_enum, default_value_t = TopicsDefault::All)]
    pub topics_default: TopicsDefault,
    /// Delayed and periodic pushes pending at once.
    #[arg(long, env = "WSPUSH_MAX_JOBS", default_value_t = 10_000)]
    pub max_jobs: usize,
    /// Join a cluster of nodes sharing this Redis (redis://[user:password@]host[:port][/db], or
    /// unix:///path?db=N&password=P): every push gets its seq from Redis and reaches the
    /// clients of every node (docs/cluster.md); with --mailbox, held messages and history live there.
    #[arg(long, env = "WSPUSH_REDIS", value_name = "URL", value_parser = crate::redis::addr::parse)]
    pub redis: Option<crate::redis::addr::RedisAddr>,
    /// The Redis channel (and key prefix) the nodes of one cluster share.
    #[arg(long, env = "WSPUSH_REDIS_CHANNEL", default_value = "wspush", value_parser = parse_name)]
    pub redis_channel: String,
    /// This node's name in the cluster (letters, digits, '_', '.', '-'; at most 64). Default:
    /// generated at start.
    #[arg(long, env = "WSPUSH_NODE_ID", value_parser = parse_name)]
    pub node_id: Option<String>,
    /// Serve a demo page at / (and the reference client at /wspush.js).
    #[arg(long, env = "WSPUSH_DEMO")]
    pub demo: bool,
    /// Testing only (Autobahn): echo client messages back; allows 16 MiB messages.
    #[arg(long, env = "WSPUSH_ECHO")]
    pub echo: bool,
}

impl ServeArgs {
    /// The arguments with every default, for tests and benches.
    pub fn defaults() -> ServeArgs {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Only::parse_from(["wspush"]).serve
    }
}

fn parse_origin(s: &str) -> Result<String, String> {
    crate::proto::handshake::normalize_origin(s).ok_or_else(|| {
        format!("{s:?} is not an origin: scheme://host[:port] with scheme http or https, no path")
    })
}

/// A channel or node name: 1 to 64 letters, digits, `_`, `.` or `-`.
fn parse_name(s: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?}: use 1 to 64 letters, digits, '_', '.' or '-'"
        ))
    }
}

fn parse_ws_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && !s.contains(['?', '#', ' ']) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a path: it must start with '/', e.g. /push"
        ))
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    let mut found = s
        .to_socket_addrs()
        .map_err(|e| format!("{s:?} is not HOST:PORT ({e})"))?;
    found
        .next()
        .ok_or_else(|| format!("{s:?} names no address"))
}

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 600"))
}
