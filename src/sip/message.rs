//! parkd's own typed view of SIP messages, and how they are written to the wire.
//!
//! parkd has its own codec (rsip was evaluated and rejected: see [`super::parse`]). The codec ([`super::parse`]) turns bytes into these types; the
//! writer here turns them back into bytes. The most used headers are typed fields; everything else is kept in
//! order in `headers`, with its name in canonical long form (`v` → `Via`, `call-id` → `Call-ID`).

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;

/// The transport a message arrived on or leaves by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
    /// Reliable transports run with timers E/G/A at zero and short K/J/D (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }
}

/// The far end of a hop: where a message came from or where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Refer,
    Notify,
    Subscribe,
    Message,
    Info,
    Update,
    Prack,
    Publish,
    /// Any other token, kept as written (methods are case-sensitive).
    Other(String),
}

impl Method {
    pub fn from_token(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "MESSAGE" => Method::Message,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_string()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `;name=value` parameters, in order. Names compare case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref())
    }
    /// The value of `name` when present with a value.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).flatten()
    }
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        let v = value.map(str::to_string);
        match self.0.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(slot) => slot.1 = v,
            None => self.0.push((name.to_string(), v)),
        }
    }
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
    fn write(&self, out: &mut String) {
        for (n, v) in &self.0 {
            out.push(';');
            out.push_str(n);
            if let Some(v) = v {
                out.push('=');
                out.push_str(v);
            }
        }
    }
}

/// A SIP/SIPS/TEL URI. `user` and header values are stored unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    /// Lower-case scheme: `sip`, `sips`, `tel`, ...
    pub scheme: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Host as written (IPv6 references keep their brackets).
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
    /// URI headers (`?Replaces=...&Referred-By=...`), names as written, values unescaped.
    pub headers: Vec<(String, String)>,
}

impl Uri {
    pub fn sip(user: Option<&str>, host: &str, port: Option<u16>) -> Uri {
        Uri {
            scheme: "sip".into(),
            user: user.map(str::to_string),
            password: None,
            host: host.to_string(),
            port,
            params: Params::default(),
            headers: Vec::new(),
        }
    }
    /// A `sip:` URI pointing at a socket address (`sip:user@1.2.3.4:5060`).
    pub fn from_addr(user: Option<&str>, addr: SocketAddr) -> Uri {
        let host = match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        Uri::sip(user, &host, Some(addr.port()))
    }
    /// Value of a URI header, case-insensitive on the name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The URI without its headers (what a Request-URI built from it may carry).
    pub fn without_headers(&self) -> Uri {
        Uri { headers: Vec::new(), ..self.clone() }
    }
    /// The transport named by `;transport=`, UDP when absent.
    pub fn transport(&self) -> Transport {
        match self.params.value("transport") {
            Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
            _ => Transport::Udp,
        }
    }
}

const USER_UNRESERVED: &[u8] = b"-_.!~*'()&=+$,;?/";
const HVALUE_UNRESERVED: &[u8] = b"-_.!~*'()[]/?:+$";

fn escape_into(out: &mut String, s: &str, keep: &[u8]) {
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{:02X}", b);
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(48);
        s.push_str(&self.scheme);
        s.push(':');
        if let Some(u) = &self.user {
            escape_into(&mut s, u, USER_UNRESERVED);
            if let Some(p) = &self.password {
                s.push(':');
                escape_into(&mut s, p, USER_UNRESERVED);
            }
            s.push('@');
        }
        s.push_str(&self.host);
        if let Some(p) = self.port {
            let _ = write!(s, ":{p}");
        }
        self.params.write(&mut s);
        for (i, (n, v)) in self.headers.iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            s.push_str(n);
            s.push('=');
            escape_into(&mut s, v, HVALUE_UNRESERVED);
        }
        f.write_str(&s)
    }
}

/// `"Display" <uri>;params` (From, To, Contact, Referred-By, Refer-To, Route, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Params,
}

impl NameAddr {
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr { display: None, uri, params: Params::default() }
    }
    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }
    pub fn with_tag(mut self, tag: &str) -> NameAddr {
        self.params.set("tag", Some(tag));
        self
    }
    /// A short human label: the display name, else the URI's user, else the URI.
    pub fn label(&self) -> String {
        match (&self.display, &self.uri.user) {
            (Some(d), _) if !d.is_empty() => d.clone(),
            (_, Some(u)) => u.clone(),
            _ => self.uri.to_string(),
        }
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(64);
        if let Some(d) = &self.display {
            s.push('"');
            for c in d.chars() {
                if c == '"' || c == '\\' {
                    s.push('\\');
                }
                s.push(c);
            }
            s.push_str("\" ");
        }
        s.push('<');
        let _ = write!(s, "{}", self.uri);
        s.push('>');
        self.params.write(&mut s);
        f.write_str(&s)
    }
}

/// One Via header field value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// Upper-case transport token: `UDP`, `TCP`, `TLS`, ...
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn new(transport: Transport, addr: SocketAddr, branch: &str) -> Via {
        let host = match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        let mut params = Params::default();
        params.set("branch", Some(branch));
        params.set("rport", None);
        Via { transport: transport.as_str().to_string(), host, port: Some(addr.port()), params }
    }
    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }
    /// `host:port` as a comparable key (the RFC 3261 §17.2.3 "sent-by").
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", self.host.to_ascii_lowercase(), p),
            None => self.host.to_ascii_lowercase(),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(64);
        let _ = write!(s, "SIP/2.0/{} {}", self.transport, self.host);
        if let Some(p) = self.port {
            let _ = write!(s, ":{p}");
        }
        self.params.write(&mut s);
        f.write_str(&s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

/// A header kept as text: canonical long-form name, unfolded value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// The `Replaces` header (RFC 3891), also found escaped inside a Refer-To URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaces {
    pub call_id: String,
    pub to_tag: String,
    pub from_tag: String,
    pub early_only: bool,
}

impl fmt::Display for Replaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};to-tag={};from-tag={}", self.call_id, self.to_tag, self.from_tag)?;
        if self.early_only {
            f.write_str(";early-only")?;
        }
        Ok(())
    }
}

/// Fields every SIP message carries, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Common {
    pub via: Vec<Via>,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: String,
    pub cseq: CSeq,
    pub max_forwards: Option<u32>,
    pub contact: Vec<NameAddr>,
    pub route: Vec<NameAddr>,
    pub record_route: Vec<NameAddr>,
    pub content_type: Option<String>,
    /// Every other header, in arrival order.
    pub headers: Vec<Header>,
    pub body: Bytes,
}

impl Common {
    /// A message's fields with the five every SIP message needs; no Max-Forwards, Contact, routes, other
    /// headers or body. Build with struct-update syntax: `Common { max_forwards: Some(70), ..Common::new(..) }`.
    pub fn new(via: Vec<Via>, from: NameAddr, to: NameAddr, call_id: String, cseq: CSeq) -> Common {
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
    pub fn push_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push(Header { name: name.to_string(), value: value.into() });
    }
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }
    pub fn set_body(&mut self, content_type: &str, body: Bytes) {
        self.content_type = Some(content_type.to_string());
        self.body = body;
    }

    /// Writes the headers; `top_via`, when given, is written in place of the first Via.
    fn write_headers(&self, buf: &mut String, top_via: Option<&Via>) {
        for (i, v) in self.via.iter().enumerate() {
            let v = if i == 0 { top_via.unwrap_or(v) } else { v };
            let _ = write!(buf, "Via: {v}\r\n");
        }
        if let Some(mf) = self.max_forwards {
            let _ = write!(buf, "Max-Forwards: {mf}\r\n");
        }
        for r in &self.route {
            let _ = write!(buf, "Route: {r}\r\n");
        }
        for r in &self.record_route {
            let _ = write!(buf, "Record-Route: {r}\r\n");
        }
        let _ = write!(buf, "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {}\r\n", self.from, self.to, self.call_id, self.cseq.seq, self.cseq.method);
        for c in &self.contact {
            let _ = write!(buf, "Contact: {c}\r\n");
        }
        for h in &self.headers {
            let _ = write!(buf, "{}: {}\r\n", h.name, h.value);
        }
        if let Some(ct) = &self.content_type {
            let _ = write!(buf, "Content-Type: {ct}\r\n");
        }
        let _ = write!(buf, "Content-Length: {}\r\n\r\n", self.body.len());
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub common: Common,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub common: Common,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    pub fn common(&self) -> &Common {
        match self {
            Message::Request(r) => &r.common,
            Message::Response(r) => &r.common,
        }
    }
}

impl std::ops::Deref for Request {
    type Target = Common;
    fn deref(&self) -> &Common {
        &self.common
    }
}
impl std::ops::DerefMut for Request {
    fn deref_mut(&mut self) -> &mut Common {
        &mut self.common
    }
}
impl std::ops::Deref for Response {
    type Target = Common;
    fn deref(&self) -> &Common {
        &self.common
    }
}
impl std::ops::DerefMut for Response {
    fn deref_mut(&mut self) -> &mut Common {
        &mut self.common
    }
}

fn finish(head: String, body: &Bytes) -> Bytes {
    let mut out = BytesMut::with_capacity(head.len() + body.len());
    out.put_slice(head.as_bytes());
    out.put_slice(body);
    out.freeze()
}

impl Request {
    pub fn encode(&self) -> Bytes {
        let mut head = String::with_capacity(512);
        let _ = write!(head, "{} {} SIP/2.0\r\n", self.method, self.uri);
        self.common.write_headers(&mut head, None);
        finish(head, &self.common.body)
    }
    /// The top Via's branch, if any.
    pub fn branch(&self) -> Option<&str> {
        self.common.via.first().and_then(Via::branch)
    }
}

impl Response {
    pub fn encode(&self) -> Bytes {
        self.encode_with_top_via(None)
    }

    /// Encodes with `top_via` written in place of the first Via (a server transaction echoing the
    /// `received`/`rport` it stamped on the request, without copying the whole response).
    pub fn encode_with_top_via(&self, top_via: Option<&Via>) -> Bytes {
        let mut head = String::with_capacity(512);
        let _ = write!(head, "SIP/2.0 {} {}\r\n", self.status, self.reason);
        self.common.write_headers(&mut head, top_via);
        finish(head, &self.common.body)
    }

    /// A response to `req` as RFC 3261 §8.2.6 builds it: Via, From, To, Call-ID and CSeq copied, the To tag
    /// added when the request's To had none and `to_tag` is given, Record-Route copied for dialog-creating 2xx/1xx.
    pub fn to_request(req: &Request, status: u16, reason: &str, to_tag: Option<&str>) -> Response {
        let mut to = req.common.to.clone();
        if to.tag().is_none() && status != 100 {
            if let Some(t) = to_tag {
                to.params.set("tag", Some(t));
            }
        }
        let record_route = if status > 100 && status < 300 { req.common.record_route.clone() } else { Vec::new() };
        Response {
            status,
            reason: reason.to_string(),
            common: Common {
                record_route,
                ..Common::new(
                    req.common.via.clone(),
                    req.common.from.clone(),
                    to,
                    req.common.call_id.clone(),
                    req.common.cseq.clone(),
                )
            },
        }
    }

    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Standard reason phrases for the statuses parkd sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Unknown",
    }
}

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
    /// `SIP/2.0 400 <why>` echoing the request's own header text.
    pub fn bad_request(&self, why: &str) -> Bytes {
        self.error_response(400, why)
    }

    /// `SIP/2.0 <status> <why>` echoing the request's own header text (e.g. 505 for a bad SIP version).
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

    #[test]
    fn uri_display_escapes_header_values() {
        let mut u = Uri::sip(Some("700"), "parkd.example", None);
        u.headers.push(("Replaces".into(), "abc@h;to-tag=1;from-tag=2".into()));
        assert_eq!(u.to_string(), "sip:700@parkd.example?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2");
    }

    #[test]
    fn name_addr_display_quotes_display_name() {
        let mut na = NameAddr::new(Uri::sip(Some("bob"), "h", Some(5062)));
        na.display = Some("Parked 701: \"Bob\"".into());
        let na = na.with_tag("x1");
        assert_eq!(na.to_string(), "\"Parked 701: \\\"Bob\\\"\" <sip:bob@h:5062>;tag=x1");
    }

    #[test]
    fn response_copies_dialog_fields_and_adds_tag() {
        let req = Request {
            method: Method::Invite,
            uri: Uri::sip(Some("700"), "p", None),
            common: Common {
                max_forwards: Some(70),
                ..Common::new(
                    vec![Via::new(Transport::Udp, "127.0.0.1:5070".parse().unwrap(), "z9hG4bK1")],
                    NameAddr::new(Uri::sip(Some("a"), "h", None)).with_tag("f"),
                    NameAddr::new(Uri::sip(Some("700"), "p", None)),
                    "c1".into(),
                    CSeq { seq: 1, method: Method::Invite },
                )
            },
        };
        let r = Response::to_request(&req, 486, "Busy Here", Some("t9"));
        let text = String::from_utf8(r.encode().to_vec()).unwrap();
        assert!(text.starts_with("SIP/2.0 486 Busy Here\r\n"));
        assert!(text.contains("To: <sip:700@p>;tag=t9\r\n"));
        assert!(text.contains("CSeq: 1 INVITE\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    }
}
