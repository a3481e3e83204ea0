//! The header section every SIP message carries: the [`Common`] container (the headers parkd reads on every
//! message, typed; all others kept as text [`Header`]s in arrival order), its writer and the parser that types
//! it from normalized header fields.

use super::cseq::{parse_cseq, CSeq};
use super::error::DecodeError;
use super::name_addr::{parse_name_addr, NameAddr};
use super::normalize::{each_list_element, Head};
use super::via::{parse_via, Via};
use super::SipStr;
use bytes::Bytes;

/// A header kept as text: canonical long-form name, unfolded value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: SipStr,
    pub value: SipStr,
}

/// Fields every SIP message carries, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Common {
    pub via: Vec<Via>,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: SipStr,
    pub cseq: CSeq,
    pub max_forwards: Option<u32>,
    pub contact: Vec<NameAddr>,
    pub route: Vec<NameAddr>,
    pub record_route: Vec<NameAddr>,
    pub content_type: Option<SipStr>,
    /// Every other header, in arrival order.
    pub headers: Vec<Header>,
    pub body: Bytes,
}

impl Common {
    /// A message's fields with the five every SIP message needs; no Max-Forwards, Contact, routes, other
    /// headers or body. Build with struct-update syntax: `Common { max_forwards: Some(70), ..Common::new(..) }`.
    pub fn new(via: Vec<Via>, from: NameAddr, to: NameAddr, call_id: SipStr, cseq: CSeq) -> Common {
        Common {
            via,
            from,
            to,
            call_id,
            cseq,
            max_forwards: None,
            contact: Vec::new(),
            route: Vec::new(),
            record_route: Vec::new(),
            content_type: None,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// First value of a header not typed above; `name` is matched case-insensitively against the long form.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }
    pub fn push_header(&mut self, name: &str, value: impl Into<SipStr>) {
        self.headers.push(Header { name: SipStr::from(name), value: value.into() });
    }
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }
    pub fn set_body(&mut self, content_type: &str, body: Bytes) {
        self.content_type = Some(SipStr::from(content_type));
        self.body = body;
    }

    /// Writes the headers and the blank line that ends them (Content-Length computed from the body);
    /// `top_via`, when given, is written in place of the first Via.
    pub(crate) fn write_headers(&self, buf: &mut String, top_via: Option<&Via>) {
        for (i, v) in self.via.iter().enumerate() {
            let v = if i == 0 { top_via.unwrap_or(v) } else { v };
            buf.push_str("Via: ");
            v.write_to(buf);
            buf.push_str("\r\n");
        }
        if let Some(mf) = self.max_forwards {
            buf.push_str("Max-Forwards: ");
            buf.push_str(itoa::Buffer::new().format(mf));
            buf.push_str("\r\n");
        }
        let name_addr = |buf: &mut String, name: &str, a: &NameAddr| {
            buf.push_str(name);
            a.write_to(buf);
            buf.push_str("\r\n");
        };
        for r in &self.route {
            name_addr(buf, "Route: ", r);
        }
        for r in &self.record_route {
            name_addr(buf, "Record-Route: ", r);
        }
        name_addr(buf, "From: ", &self.from);
        name_addr(buf, "To: ", &self.to);
        buf.push_str("Call-ID: ");
        buf.push_str(&self.call_id);
        buf.push_str("\r\nCSeq: ");
        buf.push_str(itoa::Buffer::new().format(self.cseq.seq));
        buf.push(' ');
        buf.push_str(self.cseq.method.as_str());
        buf.push_str("\r\n");
        for c in &self.contact {
            name_addr(buf, "Contact: ", c);
        }
        for h in &self.headers {
            buf.push_str(&h.name);
            buf.push_str(": ");
            buf.push_str(&h.value);
            buf.push_str("\r\n");
        }
        if let Some(ct) = &self.content_type {
            buf.push_str("Content-Type: ");
            buf.push_str(ct);
            buf.push_str("\r\n");
        }
        buf.push_str("Content-Length: ");
        buf.push_str(itoa::Buffer::new().format(self.body.len()));
        buf.push_str("\r\n\r\n");
    }

    /// Types the headers parkd reads on every message; the rest are kept as text in arrival order.
    pub(crate) fn parse(head: &Head<'_>, body: Bytes) -> Result<Common, DecodeError> {
        let mut via: Vec<Via> = Vec::with_capacity(2);
        let (mut from, mut to, mut call_id, mut cseq): (Option<NameAddr>, Option<NameAddr>, Option<SipStr>, Option<CSeq>) =
            (None, None, None, None);
        let (mut max_forwards, mut content_type) = (None, None);
        let (mut contact, mut route, mut record_route) = (Vec::new(), Vec::new(), Vec::new());
        let mut headers = Vec::with_capacity(head.headers.len());
        for h in &head.headers {
            let v = h.value.as_ref();
            match h.name {
                "Via" => {
                    let bad = || DecodeError::BadHeader { name: "Via" };
                    each_list_element(v, |element| {
                        via.push(parse_via(element)?);
                        Ok(())
                    })
                    .map_err(|_| bad())?;
                }
                "From" => set_once(&mut from, "From", parse_name_addr(v).map_err(|_| DecodeError::BadHeader { name: "From" })?)?,
                "To" => set_once(&mut to, "To", parse_name_addr(v).map_err(|_| DecodeError::BadHeader { name: "To" })?)?,
                "Call-ID" => {
                    if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c.is_control()) {
                        return Err(DecodeError::BadHeader { name: "Call-ID" });
                    }
                    set_once(&mut call_id, "Call-ID", SipStr::from(v))?
                }
                "CSeq" => set_once(&mut cseq, "CSeq", parse_cseq(v).map_err(|_| DecodeError::BadHeader { name: "CSeq" })?)?,
                "Max-Forwards" => {
                    // 0..=255 (RFC 3261 §20.22; RFC 4475 §3.1.2.4 has 300 as invalid).
                    let mf = Some(v)
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<u32>().ok())
                        .filter(|&n| n <= 255)
                        .ok_or(DecodeError::BadHeader { name: "Max-Forwards" })?;
                    set_once(&mut max_forwards, "Max-Forwards", mf)?
                }
                "Contact" if v == "*" => headers.push(Header { name: "Contact".into(), value: "*".into() }),
                "Contact" => name_addr_list(v, "Contact", &mut contact)?,
                "Route" => name_addr_list(v, "Route", &mut route)?,
                "Record-Route" => name_addr_list(v, "Record-Route", &mut record_route)?,
                "Content-Type" => set_once(&mut content_type, "Content-Type", SipStr::from(v))?,
                "Content-Length" => {} // applied by framing; the writer recomputes it
                name => headers.push(Header { name: SipStr::from(name), value: SipStr::from(v) }),
            }
        }
        if via.is_empty() {
            return Err(DecodeError::MissingHeader("Via"));
        }
        Ok(Common {
            via,
            from: from.ok_or(DecodeError::MissingHeader("From"))?,
            to: to.ok_or(DecodeError::MissingHeader("To"))?,
            call_id: call_id.ok_or(DecodeError::MissingHeader("Call-ID"))?,
            cseq: cseq.ok_or(DecodeError::MissingHeader("CSeq"))?,
            max_forwards,
            contact,
            route,
            record_route,
            content_type,
            headers,
            body,
        })
    }
}

fn set_once<T>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), DecodeError> {
    match slot {
        Some(_) => Err(DecodeError::DuplicateHeader(name)),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

fn name_addr_list(value: &str, name: &'static str, out: &mut Vec<NameAddr>) -> Result<(), DecodeError> {
    let bad = || DecodeError::BadHeader { name };
    each_list_element(value, |element| {
        out.push(parse_name_addr(element).map_err(|_| ())?);
        Ok(())
    })
    .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::normalize::parse_head;

    fn common(head: &str) -> Result<Common, DecodeError> {
        Common::parse(&parse_head(head), Bytes::new())
    }

    const ESSENTIALS: &str = "OPTIONS sip:p SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@h>;tag=1\nTo: <sip:p>\nCall-ID: c\nCSeq: 1 OPTIONS\n";

    #[test]
    fn typed_headers_and_the_rest_in_order_round_trip() {
        let c = common(&format!("{ESSENTIALS}X-B: 2\nContact: <sip:a@h>, <sip:b@h>\nX-A: 1\nContact: *")).unwrap();
        assert_eq!(c.contact.len(), 2);
        let names: Vec<&str> = c.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["X-B", "X-A", "Contact"]);
        let mut text = String::new();
        c.write_headers(&mut text, None);
        assert!(text.ends_with("X-B: 2\r\nX-A: 1\r\nContact: *\r\nContent-Length: 0\r\n\r\n"), "{text}");
        let again = common(&format!("OPTIONS sip:p SIP/2.0\n{}", text.trim_end().replace("\r\n", "\n"))).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn single_headers_once_and_essentials_present() {
        assert_eq!(common(&format!("{ESSENTIALS}Call-ID: d")), Err(DecodeError::DuplicateHeader("Call-ID")));
        assert_eq!(common(&format!("{ESSENTIALS}Max-Forwards: 256")), Err(DecodeError::BadHeader { name: "Max-Forwards" }));
        assert_eq!(common(&ESSENTIALS.replace("Call-ID: c\n", "")), Err(DecodeError::MissingHeader("Call-ID")));
    }

    #[test]
    fn top_via_is_written_in_place_of_the_first() {
        let c = common(&format!("{ESSENTIALS}Via: SIP/2.0/UDP second;branch=z9hG4bK2")).unwrap();
        let top = Via { params: crate::sip::Params(vec![("received".into(), Some("10.0.0.9".into()))]), ..c.via[0].clone() };
        let mut text = String::new();
        c.write_headers(&mut text, Some(&top));
        assert!(text.starts_with("Via: SIP/2.0/UDP h;received=10.0.0.9\r\nVia: SIP/2.0/UDP second;branch=z9hG4bK2\r\n"), "{text}");
    }
}
