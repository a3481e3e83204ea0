//! [`SipTcp`]: a raw SIP-over-TCP client for tests of stream framing and connection limits: write exact bytes,
//! read back whole messages (framed by Content-Length) or raw bytes, and see when parkd closes.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One TCP connection to parkd.
pub struct SipTcp {
    stream: TcpStream,
    /// Bytes read and not yet returned.
    pending: Vec<u8>,
    closed: bool,
    /// CR and LF bytes [`SipTcp::read_message`] skipped before messages (a pong would show up here).
    pub skipped_line_ends: usize,
}

/// What came back on a connection within a wait.
#[derive(Debug, PartialEq, Eq)]
pub enum Read2 {
    /// Some bytes.
    Bytes(Vec<u8>),
    /// parkd closed the connection (EOF or reset) and nothing more is pending.
    Closed,
    /// Nothing within the wait.
    Nothing,
}

impl SipTcp {
    /// Connects from an ephemeral port of 127.0.0.1.
    pub fn connect(target: SocketAddr) -> std::io::Result<SipTcp> {
        Ok(SipTcp::from_stream(TcpStream::connect_timeout(&target, Duration::from_secs(5))?))
    }

    /// Connects from `local` (e.g. 127.0.0.2, to stand for another source address).
    pub fn connect_from(local: IpAddr, target: SocketAddr) -> std::io::Result<SipTcp> {
        Ok(SipTcp::from_stream(connect_from(local, target)?))
    }

    fn from_stream(stream: TcpStream) -> SipTcp {
        let _ = stream.set_nodelay(true);
        SipTcp { stream, pending: Vec::new(), closed: false, skipped_line_ends: 0 }
    }

    /// This end's address (for Via and Contact).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"))
    }

    /// Writes `bytes` in one call.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads whatever arrives within `wait` (returns as soon as something did).
    pub fn read_some(&mut self, wait: Duration) -> Read2 {
        if !self.pending.is_empty() {
            return Read2::Bytes(std::mem::take(&mut self.pending));
        }
        if self.closed {
            return Read2::Closed;
        }
        match self.fill(wait) {
            true => Read2::Bytes(std::mem::take(&mut self.pending)),
            false if self.closed => Read2::Closed,
            false => Read2::Nothing,
        }
    }

    /// The next whole SIP message (leading CRLFs skipped), or `None` when the connection closed or nothing
    /// complete came within `wait`.
    pub fn read_message(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            let skip = self.pending.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            self.pending.drain(..skip);
            self.skipped_line_ends += skip;
            if let Some(len) = message_len(&self.pending) {
                let msg: Vec<u8> = self.pending.drain(..len).collect();
                return Some(String::from_utf8_lossy(&msg).into_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.closed || left.is_zero() || !self.fill(left) {
                return None;
            }
        }
    }

    /// Waits (at most `wait`) until parkd closes the connection; returns every byte that came before the close,
    /// or `None` if it was still open at the end of the wait.
    pub fn read_until_closed(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        while !self.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.fill(left);
        }
        Some(std::mem::take(&mut self.pending))
    }

    /// Reads once (at most `wait`): true when bytes arrived. Sets `closed` on EOF or a reset.
    fn fill(&mut self, wait: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        let mut buf = [0u8; 16 * 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                self.pending.extend_from_slice(buf.get(..n).unwrap_or_default());
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => false,
            Err(_) => {
                self.closed = true;
                false
            }
        }
    }
}

/// The length of the first whole message in `buf` (header section + Content-Length body).
pub(crate) fn message_len(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(buf.get(..head_end)?);
    let body = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l")).then(|| v.trim().parse::<usize>().ok()).flatten()
        })
        .unwrap_or(0);
    let len = head_end + 4 + body;
    (buf.len() >= len).then_some(len)
}

/// A TCP connection to `target` from address `local` (any port), via tokio's socket builder.
fn connect_from(local: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stream = rt.block_on(async {
        let socket = if local.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.bind(SocketAddr::new(local, 0))?;
        tokio::time::timeout(Duration::from_secs(5), socket.connect(target))
            .await
            .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "connect timed out"))?
    })?;
    let std = stream.into_std()?;
    std.set_nonblocking(false)?;
    Ok(std)
}

/// An OPTIONS over TCP from `local` to `sip:700@target`, with CSeq `cseq` and a unique branch and Call-ID;
/// `content_length: false` leaves the Content-Length header out.
pub fn options(target: SocketAddr, local: SocketAddr, cseq: u32, content_length: bool) -> String {
    let id = format!("{}-{}-{cseq}", std::process::id(), local.port());
    let cl = if content_length { "Content-Length: 0\r\n" } else { "" };
    format!(
        "OPTIONS sip:700@{target} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-tcp-{id}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tester@{local}>;tag=t{id}\r\n\
         To: <sip:700@{target}>\r\n\
         Call-ID: tcp-{id}@127.0.0.1\r\n\
         CSeq: {cseq} OPTIONS\r\n\
         {cl}\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_len_frames_by_content_length() {
        assert_eq!(message_len(b"SIP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nokSIP"), Some(39));
        assert_eq!(message_len(b"SIP/2.0 200 OK\r\nl: 3\r\n\r\nok"), None);
        assert_eq!(message_len(b"SIP/2.0 200 OK\r\n\r\n"), Some(18));
        assert_eq!(message_len(b"SIP/2.0 200 OK\r\n"), None);
    }
}
