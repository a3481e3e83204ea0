//! What could be read of a malformed request: just enough to answer it (RFC 3261 §8.2, hickory-style staged
//! decode). Built from the raw header fields, written as a 400 or 505 that echoes the request's own text.

use super::normalize::Head;
use bytes::Bytes;
use std::fmt::Write as _;

/// What could be read of a malformed request: just enough to answer it with a 400 (RFC 3261 §8.2,
/// hickory-style staged decode). Values are raw header text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyContext {
    pub via: Vec<String>,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: String,
}

impl ReplyContext {
    /// The Via values and the first From, To, Call-ID and CSeq, as text; `None` when one is missing.
    pub(crate) fn from_head(head: &Head<'_>) -> Option<ReplyContext> {
        let first = |name| head.all(name).next().filter(|v| !v.is_empty()).map(str::to_string);
        let via: Vec<String> = head.all("Via").filter(|v| !v.is_empty()).map(str::to_string).collect();
        if via.is_empty() {
            return None;
        }
        Some(ReplyContext { via, from: first("From")?, to: first("To")?, call_id: first("Call-ID")?, cseq: first("CSeq")? })
    }

    /// `SIP/2.0 400 <why>` echoing the request's own header text.
    pub fn bad_request(&self, why: &str) -> Bytes {
        self.error_response(400, why)
    }

    /// `SIP/2.0 <status> <why>` echoing the request's own header text (e.g. 505 for a bad SIP version).
    /// The method of the offending request's CSeq (the method its answer is counted under); `Other` when the
    /// CSeq names none.
    pub fn method(&self) -> super::Method {
        super::Method::from_token(self.cseq.split_whitespace().nth(1).unwrap_or(""))
    }

    pub fn error_response(&self, status: u16, why: &str) -> Bytes {
        let mut s = String::with_capacity(256);
        let why: String = why.chars().filter(|c| !c.is_control()).take(100).collect();
        let _ = write!(s, "SIP/2.0 {status} {why}\r\n");
        for v in &self.via {
            let _ = write!(s, "Via: {v}\r\n");
        }
        let _ = write!(s, "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n", self.from, self.to, self.call_id, self.cseq);
        Bytes::from(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::normalize::parse_head;

    #[test]
    fn needs_via_from_to_call_id_and_cseq() {
        let full = "BAD sip:p SIP/2.0\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\nVia: SIP/2.0/UDP b\nFrom: <sip:a@h>;tag=1\nTo: <sip:p>\nCall-ID: c\nCSeq: 1 BAD";
        let ctx = ReplyContext::from_head(&parse_head(full)).unwrap();
        assert_eq!(ctx.via.len(), 2);
        let text = String::from_utf8(ctx.error_response(505, "Version\r\nNot Supported").to_vec()).unwrap();
        assert!(text.starts_with("SIP/2.0 505 VersionNot Supported\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n"), "{text}");
        for missing in ["Via: SIP/2.0/UDP a;branch=z9hG4bK1\nVia: SIP/2.0/UDP b\n", "\nCSeq: 1 BAD"] {
            assert_eq!(ReplyContext::from_head(&parse_head(&full.replace(missing, ""))), None, "{missing:?}");
        }
    }
}
