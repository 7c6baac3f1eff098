//! A blocking client of the wspush control socket (newline-delimited JSON).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

/// One control connection used for many requests.
pub struct Control {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Control {
    /// Connect to the socket at `path`; every reply must come within 60 s.
    pub fn open(path: &str) -> io::Result<Control> {
        let writer = UnixStream::connect(path)?;
        writer.set_read_timeout(Some(Duration::from_secs(60)))?;
        let reader = BufReader::new(writer.try_clone()?);
        Ok(Control { writer, reader })
    }

    /// Bound every reply (and write) by `timeout` instead.
    pub fn with_timeout(self, timeout: Duration) -> io::Result<Control> {
        self.writer.set_read_timeout(Some(timeout))?;
        self.writer.set_write_timeout(Some(timeout))?;
        Ok(self)
    }

    /// Send raw request lines (each ending in `\n`) in one write: the server
    /// reads them in one loop turn, which is what coalesces a burst.
    pub fn send_raw(&mut self, lines: &[u8]) -> io::Result<()> {
        self.writer.write_all(lines)
    }

    /// Read one reply line.
    pub fn reply(&mut self) -> io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Send requests pipelined, then read their replies.
    pub fn batch(&mut self, requests: &[Value]) -> io::Result<Vec<Value>> {
        let mut out = Vec::new();
        for r in requests {
            out.extend_from_slice(r.to_string().as_bytes());
            out.push(b'\n');
        }
        self.send_raw(&out)?;
        (0..requests.len()).map(|_| self.reply()).collect()
    }
}
