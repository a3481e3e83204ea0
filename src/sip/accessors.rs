//! Typed access to the text headers parkd reads on demand: Refer-To, Referred-By, Replaces (also inside a
//! Refer-To URI), Expires and Event. Each is kept as text in [`Common::headers`] and parsed when asked for.

use super::error::DecodeError;
use super::headers::Common;
use super::message::Request;
use super::name_addr::{parse_name_addr, NameAddr};
use super::params::{parse_header_params, Params};
use super::replaces::{parse_replaces, Replaces};
use super::uri::Uri;

impl Request {
    /// The Refer-To target (RFC 3515 §2.1), with or without angle brackets.
    pub fn refer_to(&self) -> Option<Result<NameAddr, DecodeError>> {
        self.common.header("Refer-To").map(parse_name_addr)
    }
    /// The Referred-By identity (RFC 3892 §3).
    pub fn referred_by(&self) -> Option<Result<NameAddr, DecodeError>> {
        self.common.header("Referred-By").map(parse_name_addr)
    }
    /// The Replaces header of this request (RFC 3891 §3).
    pub fn replaces(&self) -> Option<Result<Replaces, DecodeError>> {
        self.common.header("Replaces").map(parse_replaces)
    }
}

impl Common {
    /// `Expires` in seconds (RFC 3261 §20.19); `None` when absent or not a number in 0..2^32.
    pub fn expires(&self) -> Option<u32> {
        let v = self.header("Expires")?.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.parse().ok()
    }
    /// `Event` as (package, parameters), e.g. `refer;id=93809824` (RFC 6665 §8.2.1); `None` when absent or
    /// malformed.
    pub fn event(&self) -> Option<(String, Params)> {
        let v = self.header("Event")?.trim();
        let (package, params) = match v.find(';') {
            Some(i) => v.split_at(i),
            None => (v, ""),
        };
        let package = package.trim_end_matches([' ', '\t']);
        if !super::normalize::is_token(package) {
            return None;
        }
        Some((package.to_string(), parse_header_params(params).ok()?))
    }
}

impl Uri {
    /// The `Replaces` URI header (as in a Refer-To for an attended transfer, RFC 3891 §7), already unescaped.
    pub fn replaces(&self) -> Option<Result<Replaces, DecodeError>> {
        self.header("Replaces").map(parse_replaces)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse_message, Message};

    fn request(extra: &str) -> Request {
        let text = format!(
            "REFER sip:700@parkd SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK7\r\nFrom: <sip:201@pbx>;tag=a\r\n\
             To: <sip:700@parkd>;tag=b\r\nCall-ID: r1\r\nCSeq: 3 REFER\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match parse_message(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refer_to_with_escaped_replaces_rfc3515_rfc3891_7() {
        for (raw, mixed) in [
            ("<sip:700@h?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>", false),
            ("<sip:700@h;transport=udp?replaces=abc%40h%3bTo-Tag%3d1%3BFrom-tag%3D2%3Bearly-only>", true),
        ] {
            let r = request(&format!("Refer-To: {raw}\r\n"));
            let target = r.refer_to().unwrap().unwrap();
            assert_eq!(target.uri.user.as_deref(), Some("700"));
            let rep = target.uri.replaces().unwrap().unwrap();
            assert_eq!((rep.call_id.as_str(), rep.to_tag.as_str(), rep.from_tag.as_str(), rep.early_only), ("abc@h", "1", "2", mixed));
        }
    }

    #[test]
    fn refer_to_and_referred_by_without_brackets_rfc3261_20_10() {
        let r = request("r: sip:701@parkd.example:5060;method=INVITE\r\nb: sip:201@pbx;cid=x\r\n");
        let to = r.refer_to().unwrap().unwrap();
        assert_eq!((to.uri.user.as_deref(), to.uri.port), (Some("701"), Some(5060)));
        assert_eq!(to.params.value("method"), Some("INVITE"));
        let by = r.referred_by().unwrap().unwrap();
        assert_eq!((by.uri.user.as_deref(), by.params.value("cid")), (Some("201"), Some("x")));
        let r = request("Referred-By: \"Alice\" <sip:201@pbx;user=phone>\r\n");
        let by = r.referred_by().unwrap().unwrap();
        assert_eq!((by.display.as_deref(), by.uri.params.value("user")), (Some("Alice"), Some("phone")));
        assert!(r.refer_to().is_none());
        let r = request("Refer-To: <sip:broken\r\n");
        assert_eq!(r.refer_to(), Some(Err(DecodeError::BadNameAddr)));
    }

    #[test]
    fn replaces_header_expires_and_event() {
        let r = request("Replaces: c1@h;from-tag=f;to-tag=t\r\nExpires: 0060\r\nEvent: refer ; id=93809824\r\n");
        assert_eq!(r.replaces().unwrap().unwrap().to_tag, "t");
        assert_eq!(r.expires(), Some(60));
        let (package, params) = r.event().unwrap();
        assert_eq!((package.as_str(), params.value("id")), ("refer", Some("93809824")));
        let r = request("Expires: 10000000000000000000000\r\nEvent: ;x\r\n");
        assert_eq!(r.expires(), None);
        assert_eq!(r.event(), None);
        assert_eq!(request("").expires(), None);
    }
}
