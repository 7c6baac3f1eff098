//! The `--redis URL` value: where the Redis server is, how to log in, which
//! database to use, and the commands that say so right after connecting.
//!
//! Accepted forms (the scheme is case-insensitive):
//!
//! - `redis://host`, `redis://host:port` (port 6379 by default),
//!   `redis://[::1]:6380` (IPv6 addresses in brackets);
//! - `redis://:password@host:port/db` (the default user),
//!   `redis://user:password@host/2` (an ACL user); the user name and the
//!   password are percent-decoded (`%40` is `@`), and since the last `@`
//!   ends them, a raw `@`, `:` or `/` in the password works too;
//! - `unix:///run/redis.sock`, `unix:/run/redis.sock`,
//!   `redis+unix:///run/redis.sock`, with the database and credentials in
//!   the query: `?db=3&password=secret&user=name` (`pass` and `username`
//!   are accepted as aliases; values are percent-decoded, `+` stays `+`).
//!
//! The database is any u32: Redis has 16 (0-15) by default, but the
//! `databases` setting changes that, so the server's answer to `SELECT`
//! decides. TLS (`rediss://`) is not spoken. Error messages never repeat
//! the URL, which may hold a password; [`RedisAddr`]'s `Display` and `Debug`
//! print `***` in its place, so an address can be logged.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;

use super::resp;

/// Port used when a `redis://` URL names none.
pub const DEFAULT_PORT: u16 = 6379;

/// The forms accepted, for error messages.
const EXPECTED: &str = "expected redis://[[user]:password@]host[:port][/db] or unix:///path/to/redis.sock[?db=N&password=...]";

/// A parsed `--redis URL`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisAddr {
    /// Where to connect.
    pub target: Target,
    /// Password for `AUTH`; None: no `AUTH` is sent.
    pub password: Option<String>,
    /// ACL user for `AUTH user password`; None: the default user. Only
    /// used together with a password.
    pub username: Option<String>,
    /// Database for `SELECT`; 0 (Redis' default) sends no `SELECT`.
    pub db: u32,
}

/// Where the Redis server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A TCP address: a host name or IP address (IPv6 without brackets) and a port.
    Tcp {
        /// Host name, IPv4 or IPv6 address.
        host: String,
        /// TCP port, never 0.
        port: u16,
    },
    /// A Unix socket path, absolute.
    Unix(PathBuf),
}

/// Parse a `--redis` value (forms in the module doc). The error is a
/// sentence for the operator, without the URL itself.
pub fn parse(s: &str) -> Result<RedisAddr, String> {
    let Some((scheme, rest)) = s.split_once(':') else {
        return Err(EXPECTED.to_owned());
    };
    match scheme.to_ascii_lowercase().as_str() {
        "redis" => match rest.strip_prefix("//") {
            Some(rest) => tcp(rest),
            None => Err(EXPECTED.to_owned()),
        },
        "unix" | "redis+unix" => unix(rest.strip_prefix("//").unwrap_or(rest)),
        "rediss" => Err("rediss://: TLS is not supported; put a TLS tunnel in front".to_owned()),
        _ if scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)) =>
        {
            Err(format!("unknown scheme {scheme}:, {EXPECTED}"))
        }
        _ => Err(EXPECTED.to_owned()),
    }
}

/// `redis://` after the `//`.
fn tcp(rest: &str) -> Result<RedisAddr, String> {
    // The last `@` ends the credentials: a raw `@` in a password then works,
    // and a TCP URL has no other place for one.
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) => (Some(userinfo), rest),
        None => (None, rest),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (host, port) = host_port(authority)?;
    let db = match tail {
        "" | "/" => 0,
        _ if tail.contains('?') => {
            return Err("redis:// URLs take no query parameters; put the db in the path (redis://host/2) and the password before the host (redis://:password@host)".to_owned());
        }
        _ => match tail.strip_prefix('/') {
            Some(n) if n.bytes().all(|b| b.is_ascii_digit()) => db(n)?,
            _ => return Err(format!("the path must be /<db number>, not {tail}")),
        },
    };
    let (username, password) = match userinfo {
        None | Some("") => (None, None),
        Some(userinfo) => credentials(userinfo)?,
    };
    Ok(RedisAddr {
        target: Target::Tcp { host, port },
        password,
        username,
        db,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or("unclosed [ in the host")?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("[{host}] is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("expected :port after ]")?),
        };
        (host, port)
    } else {
        let (host, port) = match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err("IPv6 addresses go in brackets: redis://[::1]:6379".to_owned());
        }
        let name_char = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
        if !host.chars().all(name_char) {
            return Err(format!("bad host name {host:?}"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("empty host".to_owned());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .filter(|_| p.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("bad port {p:?}: expected 1-65535"))?,
    };
    Ok((host.to_owned(), port))
}

/// `user:password` or `:password`, percent-decoded.
fn credentials(userinfo: &str) -> Result<(Option<String>, Option<String>), String> {
    let Some((user, password)) = userinfo.split_once(':') else {
        return Err("a user name needs a password: redis://user:password@host, or redis://:password@host for the default user".to_owned());
    };
    let username = decode(user, "user name")?;
    let password = decode(password, "password")?;
    if password.is_empty() {
        return Err("empty password".to_owned());
    }
    Ok(((!username.is_empty()).then_some(username), Some(password)))
}

/// `unix:` after the optional `//`: an absolute path and a query.
fn unix(rest: &str) -> Result<RedisAddr, String> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = decode(path, "socket path")?;
    if path.is_empty() || path == "/" {
        return Err("empty unix socket path".to_owned());
    }
    if !path.starts_with('/') {
        let hint = if path.contains('@') {
            "; credentials go in the query: unix:///path?password=..."
        } else {
            ""
        };
        return Err(format!(
            "the unix socket path must be absolute (unix:///run/redis.sock){hint}"
        ));
    }
    let mut addr = RedisAddr {
        target: Target::Unix(PathBuf::from(path)),
        password: None,
        username: None,
        db: 0,
    };
    let mut seen_db = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(format!("query parameter {name} needs a value", name = pair));
        };
        let twice = || format!("query parameter {name} given twice");
        match name {
            "db" => {
                if std::mem::replace(&mut seen_db, true) {
                    return Err(twice());
                }
                addr.db = db(value)?;
            }
            "password" | "pass" => {
                let password = decode(value, "password")?;
                if password.is_empty() {
                    return Err("empty password".to_owned());
                }
                if addr.password.replace(password).is_some() {
                    return Err(twice());
                }
            }
            "user" | "username" => {
                let user = decode(value, "user name")?;
                if addr.username.replace(user).is_some() {
                    return Err(twice());
                }
            }
            _ => {
                return Err(format!(
                    "unknown query parameter {name} (known: db, password, user)"
                ));
            }
        }
    }
    if addr.username.as_deref() == Some("") {
        addr.username = None;
    }
    if addr.username.is_some() && addr.password.is_none() {
        return Err("a user name needs a password: ?user=name&password=...".to_owned());
    }
    Ok(addr)
}

/// A database number: decimal digits, any u32.
fn db(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("bad db {s:?}: expected a number from 0 to {}", u32::MAX))
}

/// Percent-decoding (`%XX`; `+` is left alone); the result must be UTF-8.
/// `what` names the part for the error, whose value is never repeated.
fn decode(s: &str, what: &str) -> Result<String, String> {
    let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                return Err(format!("bad percent-encoding in the {what}"));
            };
            out.push((hi << 4 | lo) as u8);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("the {what} is not UTF-8 once percent-decoded"))
}

impl RedisAddr {
    /// Append what to send right after connecting, before anything else:
    /// `AUTH password` (or `AUTH user password`) when a password is set,
    /// then `SELECT db` when db is not 0. Each is answered by one reply,
    /// [`RedisAddr::connect_reply_count`] in all, each `+OK` when all is
    /// well; an error reply (`WRONGPASS`, `ERR DB index is out of range`)
    /// means the address is wrong: log it and retry later.
    pub fn connect_commands(&self, out: &mut Vec<u8>) {
        if let Some(password) = &self.password {
            match &self.username {
                Some(user) => resp::command(out, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => resp::command(out, &[b"AUTH", password.as_bytes()]),
            }
        }
        if self.db != 0 {
            let mut digits = [0; 20];
            resp::command(
                out,
                &[b"SELECT", resp::decimal(self.db.into(), &mut digits)],
            );
        }
    }

    /// How many replies [`RedisAddr::connect_commands`] asks for (0 to 2).
    pub fn connect_reply_count(&self) -> usize {
        usize::from(self.password.is_some()) + usize::from(self.db != 0)
    }
}

/// For logs: the URL with `***` for the password, the port and db always
/// shown (`redis://:***@10.0.0.5:6379/2`, `unix:///run/redis.sock?db=3&password=***`).
impl fmt::Display for RedisAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = self.password.as_ref().map(|_| "***");
        match &self.target {
            Target::Tcp { host, port } => {
                f.write_str("redis://")?;
                if let Some(hidden) = hidden {
                    write!(f, "{}:{hidden}@", self.username.as_deref().unwrap_or(""))?;
                }
                if host.contains(':') {
                    write!(f, "[{host}]:{port}/{}", self.db)
                } else {
                    write!(f, "{host}:{port}/{}", self.db)
                }
            }
            Target::Unix(path) => {
                write!(f, "unix://{}", path.display())?;
                let mut sep = '?';
                let mut param = |name: &str, value: &dyn fmt::Display| {
                    let r = write!(f, "{sep}{name}={value}");
                    sep = '&';
                    r
                };
                if self.db != 0 {
                    param("db", &self.db)?;
                }
                if let (Some(hidden), user) = (hidden, &self.username) {
                    if let Some(user) = user {
                        param("user", user)?;
                    }
                    param("password", &hidden)?;
                }
                Ok(())
            }
        }
    }
}

/// Like `Display`, the password is `***`: a `{:?}` in a log line is safe too.
impl fmt::Debug for RedisAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAddr")
            .field("target", &self.target)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("username", &self.username)
            .field("db", &self.db)
            .finish()
    }
}

#[cfg(test)]
#[path = "addr_tests.rs"]
mod tests;
