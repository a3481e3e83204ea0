//! SIP text for test phones: requests and responses written as readable text (`\n` line ends),
//! turned into wire bytes with CRLF and a correct Content-Length. Written by hand on purpose, so
//! that what parkd parses in tests does not come from parkd's own message writer.

use crate::sip::{NameAddr, Request};
use std::net::SocketAddr;

/// Makes a wire message from readable text: CRLF line ends, a correct Content-Length. The header
/// block and the body are separated by an empty line; text without one has no body.
pub fn crlf(text: &str) -> Vec<u8> {
    let text = text.trim_start_matches('\n');
    let (head, body) = match text.split_once("\n\n") {
        Some((h, b)) => (h.to_string(), b.replace('\n', "\r\n")),
        None => (text.trim_end().to_string(), String::new()),
    };
    let mut out = head.trim_end().replace('\n', "\r\n");
    out.push_str(&format!("\r\nContent-Length: {}\r\n\r\n", body.len()));
    out.push_str(&body);
    out.into_bytes()
}

/// An SDP body for an audio stream at `rtp` with payload types `pts` (e.g. `"0 8 101"`) and
/// direction `dir` (`sendrecv`, `sendonly`, `recvonly`, `inactive`).
pub fn sdp(name: &str, rtp: SocketAddr, pts: &str, dir: &str) -> String {
    let rtpmaps: String = pts
        .split(' ')
        .map(|pt| match pt {
            "0" => "a=rtpmap:0 PCMU/8000\n",
            "8" => "a=rtpmap:8 PCMA/8000\n",
            "101" => "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16\n",
            _ => "",
        })
        .collect();
    format!(
        "v=0\no={name} 1 1 IN IP4 {ip}\ns=-\nc=IN IP4 {ip}\nt=0 0\nm=audio {port} RTP/AVP {pts}\n{rtpmaps}a={dir}\n",
        ip = rtp.ip(),
        port = rtp.port()
    )
}

/// The header lines of a request (no Content-Length, no body).
pub struct RequestHead<'a> {
    pub method: &'a str,
    pub ruri: &'a str,
    pub via: SocketAddr,
    pub branch: &'a str,
    /// From, with its tag.
    pub from: &'a str,
    /// To, with a tag inside a dialog.
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub contact: &'a str,
    /// Extra header lines, each ending in `\n`.
    pub extra: &'a str,
}

impl RequestHead<'_> {
    /// The request as readable text, with an optional body of content type `ctype`.
    pub fn text(&self, body: Option<(&str, &str)>) -> String {
        let RequestHead { method, ruri, via, branch, from, to, call_id, cseq, contact, extra } = self;
        let mut t = format!(
            "{method} {ruri} SIP/2.0\nVia: SIP/2.0/UDP {via};branch={branch};rport\nMax-Forwards: 70\nFrom: {from}\nTo: {to}\nCall-ID: {call_id}\nCSeq: {cseq} {method}\nContact: {contact}\n{extra}"
        );
        if let Some((ctype, b)) = body {
            t.push_str(&format!("Content-Type: {ctype}\n\n{b}"));
        }
        t
    }
}

/// `na` without its tag parameter, as header text.
pub fn untagged(na: &NameAddr) -> String {
    let mut na = na.clone();
    na.params.remove("tag");
    na.to_string()
}

/// A response to `req`: its Vias, From, Call-ID and CSeq copied, `to_tag` added to To when the request
/// had none (not on 100), our `contact` on responses to INVITE and SUBSCRIBE, and an optional body.
pub fn response(req: &Request, status: u16, reason: &str, to_tag: &str, contact: &str, body: Option<(&str, &str)>) -> String {
    let mut t = format!("SIP/2.0 {status} {reason}\n");
    for v in &req.common.via {
        t.push_str(&format!("Via: {v}\n"));
    }
    let to = if req.common.to.tag().is_none() && status > 100 { format!("{};tag={to_tag}", req.common.to) } else { req.common.to.to_string() };
    t.push_str(&format!("From: {}\nTo: {to}\nCall-ID: {}\nCSeq: {} {}\n", req.common.from, req.common.call_id, req.common.cseq.seq, req.common.cseq.method));
    if status > 100 && matches!(req.method, crate::sip::Method::Invite | crate::sip::Method::Subscribe) {
        t.push_str(&format!("Contact: {contact}\n"));
    }
    if let Some((ctype, b)) = body {
        t.push_str(&format!("Content-Type: {ctype}\n\n{b}"));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse_message, Message};

    #[test]
    fn request_text_parses_with_parkds_codec() {
        let rtp: SocketAddr = "127.0.0.1:15070".parse().unwrap();
        let body = sdp("bob", rtp, "0", "sendrecv");
        let head = RequestHead {
            method: "INVITE",
            ruri: "sip:700@127.0.0.1:5060",
            via: "127.0.0.1:5070".parse().unwrap(),
            branch: "z9hG4bK-1",
            from: "<sip:bob@127.0.0.1:5070>;tag=b1",
            to: "<sip:700@127.0.0.1:5060>",
            call_id: "c1@sim",
            cseq: 1,
            contact: "<sip:bob@127.0.0.1:5070>",
            extra: "Referred-By: <sip:alice@127.0.0.1:5999>\n",
        };
        let Ok(Message::Request(r)) = parse_message(&crlf(&head.text(Some(("application/sdp", &body))))) else { panic!("parse") };
        assert_eq!(r.common.body.len(), body.replace('\n', "\r\n").len());
        assert_eq!(crate::sdp::parse_sdp(&r.common.body).unwrap().addr, rtp);
        let ok = response(&r, 200, "OK", "p1", "<sip:parkd@127.0.0.1:5060>", None);
        let Ok(Message::Response(ok)) = parse_message(&crlf(&ok)) else { panic!("parse") };
        assert_eq!((ok.status, ok.common.to.tag(), ok.common.contact.len()), (200, Some("p1"), 1));
        assert_eq!(untagged(&ok.common.from), "<sip:bob@127.0.0.1:5070>");
    }
}
