//! [`Ua`]: a tiny SIP user agent that speaks for many calls over one UDP socket. Requests are built as text
//! (INVITE with a PCMU offer, ACK, BYE, a 200 to parkd's BYE), and what parkd sends is parsed with parkd's own
//! codec ([`parkd::sip::parse_message`]). It never blocks: [`Ua::try_recv`] returns what has arrived.
//!
//! Used where SIPp is too slow or too rigid: the flood test's legitimate phone ([`LegitPhone`](super::flood::LegitPhone))
//! and the benchmark (`sip-tests/bench`), which runs thousands of calls from one socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use parkd::sip::{parse_message, Message, Method, Request, Response};

use crate::harness::udp;

/// One SIP endpoint (one UDP socket) that can speak for many calls.
pub struct Ua {
    pub sock: UdpSocket,
    pub local: SocketAddr,
    pub server: SocketAddr,
    buf: Vec<u8>,
    /// Datagrams that failed to parse.
    pub garbage: u64,
}

/// The dialog-identifying parts of one call leg of ours.
#[derive(Clone, Debug)]
pub struct CallIds {
    pub call_id: String,
    pub from_tag: String,
    pub user: String,
    /// Request-URI user (park code or orbit).
    pub target: String,
    /// parkd's To tag once answered.
    pub to_tag: Option<String>,
}

impl Ua {
    pub fn new(server: SocketAddr) -> io::Result<Ua> {
        Ua::new_on(Ipv4Addr::LOCALHOST, server)
    }

    /// A UA whose socket is bound on another loopback address (a second source).
    pub fn new_on(ip: Ipv4Addr, server: SocketAddr) -> io::Result<Ua> {
        Ua::new_at(IpAddr::V4(ip), server)
    }

    /// A UA on any local address: on `::1` it speaks IPv6 (Via, Contact and SDP `c=IN IP6 ::1`).
    pub fn new_at(ip: IpAddr, server: SocketAddr) -> io::Result<Ua> {
        let sock = udp::socket_on(ip, 8 << 20)?;
        let local = sock.local_addr()?;
        Ok(Ua { sock, local, server, buf: vec![0; 65_536], garbage: 0 })
    }

    fn send(&self, text: &str) {
        let _ = self.sock.send_to(text.as_bytes(), self.server);
    }

    /// Sends (or retransmits) the INVITE of `c` with CSeq 1, offering PCMU on `rtp_port`.
    pub fn invite(&self, c: &CallIds, rtp_port: u16, extra: &str) {
        let sdp = self.sdp(rtp_port);
        let head = self.head("INVITE", c, 1, &format!("{}-inv", token(&c.call_id)), false);
        let text = format!("{head}Contact: <sip:{u}@{l}>\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}", u = c.user, l = self.local, len = sdp.len());
        self.send(&text);
    }

    /// A PCMU offer/answer for `rtp_port` on our address (`c=IN IP4 127.0.0.1` or `c=IN IP6 ::1`).
    pub fn sdp(&self, rtp_port: u16) -> String {
        let (family, ip) = match self.local.ip() {
            IpAddr::V4(ip) => ("IP4", ip.to_string()),
            IpAddr::V6(ip) => ("IP6", ip.to_string()),
        };
        format!("v=0\r\no=bench 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")
    }

    /// Answers a dialog-creating INVITE from parkd (a recall) with `200 OK`: our To tag, Contact and a PCMU answer
    /// on `rtp_port`.
    pub fn answer_invite(&self, req: &Request, rtp_port: u16) {
        let sdp = self.sdp(rtp_port);
        let mut text = String::from("SIP/2.0 200 OK\r\n");
        for v in &req.common.via {
            text.push_str(&format!("Via: {v}\r\n"));
        }
        let to = match req.common.to.tag() {
            Some(_) => req.common.to.to_string(),
            None => format!("{};tag=answer-{}", req.common.to, token(&req.common.call_id)),
        };
        text.push_str(&format!(
            "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} {}\r\nContact: <sip:answer@{l}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            req.common.from, req.common.call_id, req.common.cseq.seq, req.common.cseq.method, l = self.local, len = sdp.len()
        ));
        let _ = self.sock.send_to(text.as_bytes(), self.server);
    }

    /// ACK for a 2xx (new branch) or for a failure response (INVITE's branch, RFC 3261 §17.1.1.3).
    pub fn ack(&self, c: &CallIds, for_2xx: bool) {
        let branch = if for_2xx { format!("{}-ack", token(&c.call_id)) } else { format!("{}-inv", token(&c.call_id)) };
        self.in_dialog("ACK", c, 1, &branch);
    }

    /// BYE with CSeq 2.
    pub fn bye(&self, c: &CallIds) {
        self.in_dialog("BYE", c, 2, &format!("{}-bye", token(&c.call_id)));
    }

    fn in_dialog(&self, method: &str, c: &CallIds, cseq: u32, branch: &str) {
        let head = self.head(method, c, cseq, branch, true);
        self.send(&format!("{head}Content-Length: 0\r\n\r\n"));
    }

    /// Request line and the headers every request of `c` carries (Via, Max-Forwards, From, To, Call-ID,
    /// CSeq); the To tag only when `with_to_tag` (in-dialog requests) and parkd has given one.
    fn head(&self, method: &str, c: &CallIds, cseq: u32, branch: &str, with_to_tag: bool) -> String {
        let tt = c.to_tag.as_deref().filter(|_| with_to_tag).map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} sip:{t}@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-{branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{u}@{l}>;tag={ft}\r\nTo: <sip:{t}@{s}>{tt}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n",
            t = c.target,
            s = self.server,
            l = self.local,
            cid = c.call_id,
            u = c.user,
            ft = c.from_tag,
        )
    }

    /// 200 OK to a request from parkd (its BYE), echoing the dialog headers.
    pub fn ok_to(&self, req: &Request) {
        let mut text = String::from("SIP/2.0 200 OK\r\n");
        for v in &req.common.via {
            text.push_str(&format!("Via: {v}\r\n"));
        }
        text.push_str(&format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {}\r\nContent-Length: 0\r\n\r\n",
            req.common.from, req.common.to, req.common.call_id, req.common.cseq.seq, req.common.cseq.method
        ));
        let _ = self.sock.send_to(text.as_bytes(), self.server);
    }

    /// Receives one message without blocking.
    pub fn try_recv(&mut self) -> Option<Message> {
        loop {
            let n = match self.sock.recv_from(&mut self.buf) {
                Ok((n, _)) => n,
                Err(_) => return None,
            };
            match parse_message(self.buf.get(..n).unwrap_or_default()) {
                Ok(m) => return Some(m),
                Err(_) => self.garbage += 1,
            }
        }
    }
}

/// `call_id` with only token characters, for Via branches.
fn token(call_id: &str) -> String {
    call_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect()
}

/// The RTP port of the `m=audio` line of a response's SDP body.
pub fn sdp_audio_port(resp: &Response) -> Option<u16> {
    super::sipp::sdp_audio_port(std::str::from_utf8(&resp.common.body).ok()?)
}

/// True when `resp` answers an INVITE.
pub fn answers_invite(resp: &Response) -> bool {
    resp.common.cseq.method == Method::Invite
}
