//! The Redis link's two sockets (TCP or Unix) and their buffers: written
//! until the kernel takes no more, read until it has nothing more.

use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;

use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::redis::addr::{RedisAddr, Target};

/// Buffers above this are given back once drained.
pub(super) const KEEP_BUFFER: usize = 64 << 10;

/// A socket to Redis.
pub(super) enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub(super) fn open(addr: &RedisAddr) -> io::Result<Sock> {
        Ok(match &addr.target {
            Target::Tcp { host, port } => {
                let to = (host.as_str(), *port)
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| io::Error::other("the host name has no address"))?;
                Sock::Tcp(TcpStream::connect(to)?)
            }
            Target::Unix(path) => Sock::Unix(UnixStream::connect(path)?),
        })
    }

    pub(super) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self {
            Sock::Tcp(s) => registry.register(s, token, interest),
            Sock::Unix(s) => registry.register(s, token, interest),
        }
    }

    pub(super) fn deregister(&mut self, registry: &Registry) {
        let _ = match self {
            Sock::Tcp(s) => registry.deregister(s),
            Sock::Unix(s) => registry.deregister(s),
        };
    }

    /// A pending error of a non-blocking connect, if any.
    pub(super) fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Sock::Tcp(s) => s.take_error(),
            Sock::Unix(s) => s.take_error(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }
}

/// One of the two sockets and its buffers.
pub(super) struct Side {
    pub(super) sock: Sock,
    /// Commands not yet written, from `written` on.
    pub(super) out: Vec<u8>,
    pub(super) written: usize,
    /// Received bytes not yet parsed into replies.
    pub(super) input: Vec<u8>,
}

impl Side {
    /// Write what is queued; `Ok(())` also when the socket is full.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            match self.sock.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Not connected yet: the writable edge of the connect retries.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.written = 0;
        if self.out.capacity() > KEEP_BUFFER {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Read what the socket has into `input`; false at EOF.
    pub(super) fn fill(&mut self, scratch: &mut [u8]) -> io::Result<bool> {
        loop {
            match self.sock.read(scratch) {
                Ok(0) => return Ok(false),
                Ok(n) => self.input.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }
}
