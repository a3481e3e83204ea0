//! A whole SIP message: [`Request`] (Request-Line + headers + body), [`Response`] (Status-Line + headers +
//! body) and the [`Message`] enum, with the writer that encodes them to the wire. Decoding is
//! [`super::parse`]; each part (start line, Via, CSeq, name-addr, URI, the headers container) sits in its own
//! module with its parser and writer.

use super::headers::Common;
use super::method::Method;
use super::start_line::{write_request_line, write_status_line};
use super::uri::Uri;
use super::via::Via;
use bytes::{BufMut, Bytes, BytesMut};

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
        write_request_line(&mut head, &self.method, &self.uri);
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
        write_status_line(&mut head, self.status, &self.reason);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{CSeq, NameAddr, Transport};

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
