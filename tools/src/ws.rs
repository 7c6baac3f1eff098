//! The client side of the WebSocket wire, as much as a load generator needs:
//! where connection `i` goes and from which source address, the upgrade, and
//! scanning the server's (unmasked) frames for the injection marker.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// Connections per source address: below the 28,232 ports of Linux's
/// default ephemeral range (per destination), with room to spare.
pub const PER_SOURCE: usize = 25_000;

/// Where connection `i` goes: `ws://HOST:PORT/PATH` with `{i}` and `{token}`
/// replaced. Only plain `ws://` (no TLS).
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's address.
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
    /// The request path template (`{i}`, `{token}`).
    pub path: String,
}

impl Target {
    /// Parse `ws://host:port/path...`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
        let (host, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let with_port = if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host}: no address"))?;
        if !addr.ip().is_loopback() {
            return Err(format!("{host}: only loopback targets are allowed"));
        }
        Ok(Target {
            addr,
            host: host.to_string(),
            path: path.to_string(),
        })
    }

    /// The request path of connection `i` using `token`.
    pub fn path_for(&self, i: usize, token: &str) -> String {
        self.path
            .replace("{i}", &i.to_string())
            .replace("{token}", token)
    }
}

/// Source address of connection `i`: 127.0.0.2, then .3 after
/// [`PER_SOURCE`] connections, and so on (for an IPv4 loopback target).
pub fn source_for(target: &SocketAddr, i: usize) -> Option<IpAddr> {
    match target {
        SocketAddr::V4(_) => {
            let n = 2 + (i / PER_SOURCE) as u8;
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
        }
        SocketAddr::V6(_) => None,
    }
}

/// Connect (from `source` when given) and complete the upgrade, blocking at
/// most `timeout` per step. Returns the stream (now non-blocking) and any
/// bytes that arrived behind the `101` head.
pub fn open(
    target: &Target,
    source: Option<IpAddr>,
    path: &str,
    timeout: Duration,
) -> io::Result<(TcpStream, Vec<u8>)> {
    let socket = Socket::new(Domain::for_address(target.addr), Type::STREAM, None)?;
    if let Some(ip) = source {
        no_port_at_bind(&socket)?;
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&target.addr.into(), timeout)?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.host
    );
    stream.write_all(request.as_bytes())?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    let end = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > 8192 {
            return Err(io::Error::other("response head over 8 KiB"));
        }
    };
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(io::Error::other(format!(
            "upgrade refused: {}",
            String::from_utf8_lossy(line)
        )));
    }
    stream.set_nonblocking(true)?;
    Ok((stream, head.split_off(end)))
}

/// `IP_BIND_ADDRESS_NO_PORT`: let `connect` pick the source port, so a port
/// only has to be free for this destination. Without it, `bind` reserves a
/// port for every destination, and client sockets left in TIME_WAIT by an
/// earlier run exhaust a source address's ports.
fn no_port_at_bind(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `on`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A complete frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A text or binary message (or fragment) payload.
    Data(&'a [u8]),
    /// A ping with its payload (answer with [`pong`]).
    Ping(&'a [u8]),
    /// A close frame.
    Close,
    /// A pong or anything else.
    Other,
}

/// Decode the first frame of `buf`: `Some((frame, consumed))`, or `None`
/// while incomplete. Server frames are unmasked; a masked one is skipped
/// as [`Frame::Other`].
pub fn next_frame(buf: &[u8]) -> Option<(Frame<'_>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at): (usize, usize) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    if masked {
        at += 4;
    }
    let payload = buf.get(at..at.checked_add(len)?)?;
    let frame = match (opcode, masked) {
        (_, true) => Frame::Other,
        (0..=2, _) => Frame::Data(payload),
        (8, _) => Frame::Close,
        (9, _) => Frame::Ping(payload),
        _ => Frame::Other,
    };
    Some((frame, at + len))
}

/// A masked client frame (`opcode`, short payload).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126, "control-sized payloads only");
    let key = [0x5a, 0xa5, 0x3c, 0xc3];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// The answer to a ping.
pub fn pong(payload: &[u8]) -> Vec<u8> {
    client_frame(0xA, payload)
}

/// The JSON value a broadcast carries so receivers can time it:
/// `{"wl":[SEQ,T]}`, SEQ numbering broadcasts, T the injection time in
/// Unix microseconds.
pub fn marker(seq: u64, t_us: u64) -> String {
    format!("{{\"wl\":[{seq},{t_us}]}}")
}

/// Find the marker in a message however the server wrapped it: after the
/// key `wl`, skip quotes, backslashes, colons, brackets and spaces, then
/// read two integers.
pub fn find_marker(payload: &[u8]) -> Option<(u64, u64)> {
    let at = payload.windows(2).position(|w| w == b"wl")?;
    let mut rest = &payload[at + 2..];
    let mut numbers = [0u64; 2];
    for n in &mut numbers {
        let skip = rest
            .iter()
            .position(|b| b.is_ascii_digit())
            .filter(|&s| rest[..s].iter().all(|b| b"\\\":[, ".contains(b)))?;
        rest = &rest[skip..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        *n = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        rest = &rest[digits..];
    }
    Some((numbers[0], numbers[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_found_plain_or_escaped() {
        let plain = format!("{{\"messageId\":\"a-1\",\"content\":{}}}", marker(7, 123));
        assert_eq!(find_marker(plain.as_bytes()), Some((7, 123)));
        let escaped = br#"{"data":"{\"wl\":[8,456]}"}"#;
        assert_eq!(find_marker(escaped), Some((8, 456)));
        assert_eq!(find_marker(b"{\"wl\":\"x\"}"), None);
    }

    #[test]
    fn frames_decode_and_wait_for_more() {
        let mut buf = vec![0x81, 3, b'a', b'b', b'c', 0x89, 0];
        assert_eq!(next_frame(&buf), Some((Frame::Data(b"abc"), 5)));
        assert_eq!(next_frame(&buf[5..]), Some((Frame::Ping(b""), 2)));
        buf.truncate(4);
        assert_eq!(next_frame(&buf), None);
        let mut long = vec![0x81, 126, 0, 200];
        long.resize(204, b'x');
        assert_eq!(next_frame(&long).map(|f| f.1), Some(204));
    }

    #[test]
    fn urls_take_templates_and_refuse_remote_hosts() {
        let t = Target::parse("ws://127.0.0.1:7001/push/{token}?i={i}").unwrap();
        assert_eq!(t.path_for(3, "tk"), "/push/tk?i=3");
        assert!(Target::parse("ws://10.0.0.1:80/").is_err());
        assert_eq!(
            source_for(&t.addr, PER_SOURCE),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
        );
    }
}
