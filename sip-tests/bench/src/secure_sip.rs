//! SIP links for the secure step: one phone's connection to parkd over UDP, TCP or TLS, non-blocking, many calls
//! on one link (as a phone or a PBX trunk reuses its connection), and the text of the requests a cycle sends.
//!
//! TLS is a rustls client (ring, as parkd) trusting the step's test CA ([`sip_tests::sip::tls::TestPki`]); the
//! handshake is done blocking in [`Link::connect`], then the socket turns non-blocking and the records are pumped
//! by hand. Messages are framed by Content-Length and parsed with parkd's own codec.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use parkd::sip::{parse_message, Message, Request};
use rustls::pki_types::ServerName;

use crate::net;

/// The SIP transport of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

enum Io {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<rustls::ClientConnection>, TcpStream),
}

/// One connection (or UDP socket) to parkd.
pub struct Link {
    io: Io,
    pub transport: Transport,
    pub local: SocketAddr,
    pub server: SocketAddr,
    /// Stream bytes read and not yet framed.
    pending: Vec<u8>,
    /// Stream bytes not yet written (the socket was full).
    out: Vec<u8>,
    buf: Vec<u8>,
    /// Messages that failed to parse.
    pub garbage: u64,
    pub closed: bool,
}

impl Link {
    /// Connects to `server` (for TLS: handshake done, certificate verified with `tls`).
    pub fn connect(transport: Transport, server: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> io::Result<Link> {
        let io = match transport {
            Transport::Udp => {
                let s = net::loopback_socket(8 << 20)?;
                s.set_nonblocking(true)?;
                Io::Udp(s)
            }
            Transport::Tcp => Io::Tcp(stream(server)?),
            Transport::Tls => {
                let config = tls.ok_or_else(|| io::Error::other("TLS link without a client configuration"))?.clone();
                let mut tcp = stream(server)?;
                tcp.set_nonblocking(false)?;
                tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut conn = rustls::ClientConnection::new(config, ServerName::IpAddress(server.ip().into())).map_err(io::Error::other)?;
                while conn.is_handshaking() {
                    conn.complete_io(&mut tcp)?;
                }
                tcp.set_nonblocking(true)?;
                Io::Tls(Box::new(conn), tcp)
            }
        };
        let local = match &io {
            Io::Udp(s) => s.local_addr()?,
            Io::Tcp(s) | Io::Tls(_, s) => s.local_addr()?,
        };
        Ok(Link { io, transport, local, server, pending: Vec::new(), out: Vec::new(), buf: vec![0; 65_536], garbage: 0, closed: false })
    }

    pub fn fd(&self) -> RawFd {
        match &self.io {
            Io::Udp(s) => s.as_raw_fd(),
            Io::Tcp(s) | Io::Tls(_, s) => s.as_raw_fd(),
        }
    }

    /// Sends one message (a stream keeps what the socket would not take and writes it on the next call).
    pub fn send(&mut self, text: &str) {
        match &mut self.io {
            Io::Udp(s) => {
                let _ = s.send_to(text.as_bytes(), self.server);
            }
            Io::Tcp(_) => {
                self.out.extend_from_slice(text.as_bytes());
                self.flush();
            }
            Io::Tls(conn, _) => {
                let _ = conn.writer().write_all(text.as_bytes());
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        match &mut self.io {
            Io::Udp(_) => {}
            Io::Tcp(s) => {
                while !self.out.is_empty() {
                    match s.write(&self.out) {
                        Ok(0) => break,
                        Ok(n) => {
                            self.out.drain(..n);
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => {
                            self.closed = true;
                            break;
                        }
                    }
                }
            }
            Io::Tls(conn, s) => {
                while conn.wants_write() {
                    match conn.write_tls(s) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => {
                            self.closed = true;
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Reads what has arrived without blocking and pushes every whole message onto `out`; returns how many.
    pub fn poll(&mut self, out: &mut Vec<Message>) -> usize {
        let before = out.len();
        self.flush();
        match &mut self.io {
            Io::Udp(s) => {
                while let Ok((n, _)) = s.recv_from(&mut self.buf) {
                    match parse_message(self.buf.get(..n).unwrap_or_default()) {
                        Ok(m) => out.push(m),
                        Err(_) => self.garbage += 1,
                    }
                }
                return out.len() - before;
            }
            Io::Tcp(s) => loop {
                match s.read(&mut self.buf) {
                    Ok(0) => {
                        self.closed = true;
                        break;
                    }
                    Ok(n) => self.pending.extend_from_slice(self.buf.get(..n).unwrap_or_default()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.closed = true;
                        break;
                    }
                }
            },
            Io::Tls(conn, s) => loop {
                match conn.read_tls(s) {
                    Ok(0) => {
                        self.closed = true;
                        break;
                    }
                    Ok(_) => {
                        if conn.process_new_packets().is_err() {
                            self.closed = true;
                            break;
                        }
                        loop {
                            match conn.reader().read(&mut self.buf) {
                                Ok(0) => break,
                                Ok(n) => self.pending.extend_from_slice(self.buf.get(..n).unwrap_or_default()),
                                Err(_) => break,
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.closed = true;
                        break;
                    }
                }
            },
        }
        loop {
            let skip = self.pending.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            self.pending.drain(..skip);
            let Some(len) = message_len(&self.pending) else { break };
            match parse_message(self.pending.get(..len).unwrap_or_default()) {
                Ok(m) => out.push(m),
                Err(_) => self.garbage += 1,
            }
            self.pending.drain(..len);
        }
        out.len() - before
    }

    /// Whether this TLS connection resumed an earlier session (no certificate, no signature).
    pub fn resumed(&self) -> bool {
        matches!(&self.io, Io::Tls(c, _) if c.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
    }

    /// `;transport=tcp|tls` for URIs (nothing for UDP).
    fn uri_param(&self) -> &'static str {
        match self.transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        }
    }

    /// A request of call `call_id` (CSeq `cseq`) to `user` at parkd, with our Via and Contact for this transport.
    #[allow(clippy::too_many_arguments)]
    pub fn request(&self, method: &str, user: &str, from_user: &str, from_tag: &str, to_tag: Option<&str>, call_id: &str, cseq: u32, branch: &str, extra: &str, sdp: &str) -> String {
        let tt = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let ctype = if sdp.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
        let rport = if self.transport == Transport::Udp { ";rport" } else { "" };
        format!(
            "{method} sip:{user}@{s}{p} SIP/2.0\r\nVia: SIP/2.0/{t} {l};branch=z9hG4bK-{branch}{rport}\r\nMax-Forwards: 70\r\nFrom: <sip:{from_user}@{l}>;tag={from_tag}\r\nTo: <sip:{user}@{s}>{tt}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:{from_user}@{l}{p}>\r\n{extra}{ctype}Content-Length: {len}\r\n\r\n{sdp}",
            s = self.server,
            p = self.uri_param(),
            t = self.transport.name(),
            l = self.local,
            len = sdp.len(),
        )
    }

    /// 200 OK to a request from parkd (its BYE), echoing the dialog headers.
    pub fn ok_to(&mut self, req: &Request) {
        let mut text = String::from("SIP/2.0 200 OK\r\n");
        for v in &req.common.via {
            text.push_str(&format!("Via: {v}\r\n"));
        }
        text.push_str(&format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {}\r\nContent-Length: 0\r\n\r\n",
            req.common.from, req.common.to, req.common.call_id, req.common.cseq.seq, req.common.cseq.method
        ));
        self.send(&text);
    }
}

fn stream(server: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The length of the first whole message in `buf` (header section + Content-Length body).
fn message_len(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(buf.get(..head_end)?).ok()?;
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

/// Waits up to `timeout_ms` for any of `fds` to become readable.
pub fn wait_readable(fds: &[RawFd], timeout_ms: i32) {
    let mut p: Vec<libc::pollfd> = fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: p is a live array of pollfd.
    unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
}

#[cfg(test)]
mod tests {
    use super::message_len;

    #[test]
    fn frames_by_content_length() {
        assert_eq!(message_len(b"SIP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nokSIP"), Some(39));
        assert_eq!(message_len(b"SIP/2.0 200 OK\r\nl: 3\r\n\r\nok"), None);
        assert_eq!(message_len(b"SIP/2.0 200 OK\r\n\r\n"), Some(18));
    }
}
