//! SIP/SIPS/TEL URIs (RFC 3261 §19.1, §25.1): the [`Uri`] type, its writer and its parser. `sip:`/`sips:` URIs
//! are parsed fully, `tel:` URIs as number + parameters, any other scheme as opaque text (RFC 4475
//! §3.3.2–3.3.4 require such URIs to parse).
//!
//! The user part, the password and URI header values are stored unescaped; parameters are kept as written
//! (the writer below does not re-escape them, so unescaping them would break round trips).

use super::error::DecodeError;
use super::normalize::{find_byte, split_at_byte};
use super::params::Params;
use super::SipStr;
use super::transport::Transport;
use percent_encoding::percent_decode_str;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;

/// A SIP/SIPS/TEL URI. `user` and header values are stored unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    /// Lower-case scheme: `sip`, `sips`, `tel`, ...
    pub scheme: SipStr,
    pub user: Option<SipStr>,
    pub password: Option<SipStr>,
    /// Host as written (IPv6 references keep their brackets).
    pub host: SipStr,
    pub port: Option<u16>,
    pub params: Params,
    /// URI headers (`?Replaces=...&Referred-By=...`), names as written, values unescaped.
    pub headers: Vec<(String, String)>,
}

impl Uri {
    pub fn sip(user: Option<&str>, host: &str, port: Option<u16>) -> Uri {
        Uri {
            scheme: "sip".into(),
            user: user.map(SipStr::from),
            password: None,
            host: SipStr::from(host),
            port,
            params: Params::default(),
            headers: Vec::new(),
        }
    }
    /// A `sip:` URI pointing at a socket address (`sip:user@1.2.3.4:5060`).
    pub fn from_addr(user: Option<&str>, addr: SocketAddr) -> Uri {
        Uri::sip(user, &super::ip_text::host_str(addr.ip()), Some(addr.port()))
    }
    /// Value of a URI header, case-insensitive on the name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// The URI without its headers (what a Request-URI built from it may carry).
    pub fn without_headers(&self) -> Uri {
        Uri { headers: Vec::new(), ..self.clone() }
    }
    /// The transport named by `;transport=`, UDP when absent; TLS for `transport=tls` and for any `sips:` URI
    /// (RFC 3261 §19.1.2, §26.2.2: `sips:...;transport=tcp` is TLS over TCP).
    pub fn transport(&self) -> Transport {
        if self.is_sips() {
            return Transport::Tls;
        }
        match self.params.value("transport") {
            Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
            Some(t) if t.eq_ignore_ascii_case("tls") => Transport::Tls,
            _ => Transport::Udp,
        }
    }
    /// Whether the URI names a transport: a `transport=` parameter, or the `sips:` scheme.
    pub fn names_transport(&self) -> bool {
        self.is_sips() || self.params.value("transport").is_some()
    }
    /// A `sips:` URI (TLS on every hop).
    pub fn is_sips(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("sips")
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
        self.write_to(&mut s);
        f.write_str(&s)
    }
}

impl Uri {
    /// Appends the URI as [`fmt::Display`] writes it (the encoder's path: no temporary string).
    pub(crate) fn write_to(&self, s: &mut String) {
        s.push_str(&self.scheme);
        s.push(':');
        if let Some(u) = &self.user {
            escape_into(s, u, USER_UNRESERVED);
            if let Some(p) = &self.password {
                s.push(':');
                escape_into(s, p, USER_UNRESERVED);
            }
            s.push('@');
        }
        s.push_str(&self.host);
        if let Some(p) = self.port {
            s.push(':');
            s.push_str(itoa::Buffer::new().format(p));
        }
        self.params.write(s);
        for (i, (n, v)) in self.headers.iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            s.push_str(n);
            s.push('=');
            escape_into(s, v, HVALUE_UNRESERVED);
        }
    }
}

/// Parses a URI, ignoring surrounding whitespace: `sip:700@10.0.0.1:5060;transport=tcp?Replaces=a%40h%3B...`.
pub fn parse_uri(s: &str) -> Result<Uri, DecodeError> {
    parse_uri_strict(s.trim())
}

/// Parses a URI that must not contain any whitespace (inside `<...>`, in a Request-Line).
pub(crate) fn parse_uri_strict(s: &str) -> Result<Uri, DecodeError> {
    let bad = DecodeError::BadUri;
    if has_forbidden(s) {
        return Err(bad);
    }
    let (scheme, rest) = split_at_byte(s, b':').ok_or(DecodeError::BadUri)?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok || rest.is_empty() {
        return Err(bad);
    }
    let scheme = lower(scheme);
    match scheme.as_str() {
        "sip" | "sips" => parse_sip(scheme, rest),
        "tel" => {
            let (number, params) = split_at_byte(rest, b';').unwrap_or((rest, ""));
            if number.is_empty() {
                return Err(bad);
            }
            Ok(Uri { host: SipStr::from(number), params: parse_uri_params(params)?, ..opaque(scheme, "") })
        }
        _ => Ok(opaque(scheme, rest)),
    }
}

/// Whitespace, a control character, `<`, `>` or `"` anywhere in `s` (none may appear in a URI). Byte by byte
/// for ASCII (every URI parkd meets); Unicode's other spaces and controls only when `s` is not ASCII.
fn has_forbidden(s: &str) -> bool {
    s.bytes().any(|b| b <= b' ' || b == 0x7f || matches!(b, b'<' | b'>' | b'"'))
        || (!s.is_ascii() && s.chars().any(|c| c.is_whitespace() || c.is_control()))
}

/// `s` in lower case (inline when short, as schemes are; no allocation when it already is).
fn lower(s: &str) -> SipStr {
    let mut out = SipStr::from(s);
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        out.make_ascii_lowercase();
    }
    out
}

fn opaque(scheme: SipStr, rest: &str) -> Uri {
    Uri { scheme, user: None, password: None, host: SipStr::from(rest), port: None, params: Params::default(), headers: Vec::new() }
}

fn parse_sip(scheme: SipStr, rest: &str) -> Result<Uri, DecodeError> {
    let bad = || DecodeError::BadUri;
    // '@' is never allowed unescaped in user, password, host, params or headers: the first one ends userinfo
    // (the user may hold ';' '?' '/' ',' — RFC 4475 §3.1.1.2 and §3.1.1.9).
    let (userinfo, hostpart) = match split_at_byte(rest, b'@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pw) = match split_at_byte(u, b':') {
                Some((user, pw)) => (user, Some(unescape(pw)?)),
                None => (u, None),
            };
            if user.is_empty() {
                return Err(bad());
            }
            (Some(unescape(user)?), pw)
        }
    };
    let (hostpart, headers) = split_at_byte(hostpart, b'?').unwrap_or((hostpart, ""));
    let (hostport, params) = split_at_byte(hostpart, b';').unwrap_or((hostpart, ""));
    let (host, port) = parse_hostport(hostport).ok_or(bad())?;
    let headers = if headers.is_empty() {
        Vec::new()
    } else {
        headers
            .split('&')
            .map(|h| {
                let (n, v) = h.split_once('=').unwrap_or((h, ""));
                if n.is_empty() {
                    return Err(bad());
                }
                Ok((n.to_string(), unescape(v)?.into()))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok(Uri { scheme, user, password, host: SipStr::from(host), port, params: parse_uri_params(params)?, headers })
}

/// `;name[=value]` URI parameters as written. Empty segments (`;;`) are skipped.
fn parse_uri_params(s: &str) -> Result<Params, DecodeError> {
    let mut params = Params::default();
    for seg in s.split(';').filter(|seg| !seg.is_empty()) {
        match split_at_byte(seg, b'=') {
            Some(("", _)) => return Err(DecodeError::BadUri),
            Some((n, v)) => params.0.push((SipStr::from(n), Some(SipStr::from(v)))),
            None => params.0.push((SipStr::from(seg), None)),
        }
    }
    Ok(params)
}

/// `host[:port]`, host a name, an IPv4 address or a bracketed IPv6 reference (kept with its brackets).
pub(crate) fn parse_hostport(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let close = find_byte(s, b']')?;
        let (host, after) = s.split_at(close + 1);
        let inner = host.strip_prefix('[')?.strip_suffix(']')?;
        // A real IPv6 address (RFC 5118 §4.10: `2001:db8:::192.0.2.1` is not one, whatever RFC 3261's ABNF
        // let through).
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        let (host, port) = match split_at_byte(s, b':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
}

/// `%XX` unescaping (either hex case); malformed escapes are kept literally; the result must be UTF-8.
pub(crate) fn unescape(s: &str) -> Result<SipStr, DecodeError> {
    if !s.contains('%') {
        return Ok(SipStr::from(s));
    }
    percent_decode_str(s).decode_utf8().map(|c| SipStr::from(c.as_ref())).map_err(|_| DecodeError::BadUri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_characters_are_found_in_ascii_and_beyond() {
        for ok in ["sip:701@10.0.0.1:5060;transport=tcp", "sip:%C3%A9@h", "sip:é@h", "tel:+1-201-555-0123"] {
            assert!(!has_forbidden(ok), "{ok}");
        }
        for bad in ["sip:a b@h", "sip:a\t@h", "sip:a\r\n@h", "sip:a\x7f@h", "sip:a\x00@h", "sip:<a>@h", "sip:\"a\"@h", "sip:a\u{a0}@h", "sip:a\u{85}@h", "sip:a\u{2028}@h", "sip:a\u{3000}@h"] {
            assert!(has_forbidden(bad), "{bad:?}");
            assert_eq!(parse_uri_strict(bad), Err(DecodeError::BadUri), "{bad:?}");
        }
        // The same verdict as the char-by-char rule it replaced, over every character up to U+3000.
        let old = |s: &str| s.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'));
        for c in (0u32..=0x3000).filter_map(char::from_u32) {
            let s = format!("sip:a{c}@h");
            assert_eq!(has_forbidden(&s), old(&s), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn uri_display_escapes_header_values() {
        let mut u = Uri::sip(Some("700"), "parkd.example", None);
        u.headers.push(("Replaces".into(), "abc@h;to-tag=1;from-tag=2".into()));
        assert_eq!(u.to_string(), "sip:700@parkd.example?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2");
    }

    #[test]
    fn sip_uri_parts_rfc3261_19_1_1() {
        let u = parse_uri("sip:alice:secret@[2001:db8::1]:5070;transport=tcp;lr?Subject=hi%20there&X=1").unwrap();
        assert_eq!(u.scheme, "sip");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport(), crate::sip::Transport::Tcp);
        assert!(u.params.has("lr"));
        assert_eq!(u.headers, vec![("Subject".to_string(), "hi there".to_string()), ("X".to_string(), "1".to_string())]);
        let u = parse_uri("sip:a@127.0.0.1;transport=TLS").unwrap();
        assert_eq!((u.transport(), u.names_transport()), (crate::sip::Transport::Tls, true));
        assert_eq!(crate::dialog::uri_addr(&u), Some("127.0.0.1:5061".parse().unwrap()), "TLS's default port");
        let u = parse_uri("sips:a@127.0.0.1:5071;transport=tcp").unwrap();
        assert_eq!((u.transport(), u.is_sips()), (crate::sip::Transport::Tls, true), "sips: is TLS over TCP");
        assert!(!parse_uri("sip:a@127.0.0.1").unwrap().names_transport());
        let u = parse_uri("SIPS:example.com").unwrap();
        assert_eq!((u.scheme.as_str(), u.user, u.host.as_str(), u.port), ("sips", None, "example.com", None));
    }

    #[test]
    fn escaped_replaces_header_is_unescaped_rfc3891_rfc3515() {
        for raw in [
            "sip:700@h?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2",
            "sip:700@h?replaces=abc%40h%3bto-tag%3d1%3Bfrom-tag%3d2",
        ] {
            let u = parse_uri(raw).unwrap();
            assert_eq!(u.header("Replaces"), Some("abc@h;to-tag=1;from-tag=2"), "{raw}");
        }
    }

    #[test]
    fn user_is_unescaped_and_reescaped_on_write_rfc4475_3_1_1_3() {
        let u = parse_uri("sip:sips%3Auser%40example.com@example.net").unwrap();
        assert_eq!(u.user.as_deref(), Some("sips:user@example.com"));
        assert_eq!(u.host, "example.net");
        assert_eq!(parse_uri(&u.to_string()).unwrap(), u);
        let u = parse_uri("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user.as_deref(), Some("user;par=u@example.net"));
        assert_eq!(parse_uri(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn other_schemes_are_opaque_rfc4475_3_3_2() {
        let u = parse_uri("nobodyKnowsThisScheme:totallyopaquecontent").unwrap();
        assert_eq!((u.scheme.as_str(), u.host.as_str()), ("nobodyknowsthisscheme", "totallyopaquecontent"));
        let u = parse_uri("soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(u.to_string(), "soap.beep://192.0.2.103:3002");
        let u = parse_uri("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(u.host, "+1-201-555-0123");
        assert_eq!(u.params.value("phone-context"), Some("example.com"));
        assert_eq!(u.to_string(), "tel:+1-201-555-0123;phone-context=example.com");
    }

    #[test]
    fn malformed_uris_are_rejected() {
        for s in ["", "sip:", "sip:@h", "sip:a@", "sip:a@h:", "sip:a@h:99999", "sip:a@h:5x", "sip:a @h", "sip:a@[zz]", "sip:a@[2001:db8:::1]", "sip:a@[::1", "sip:a@[1.2.3.4]", "sip:a@[::1]x", "1sip:a@h", "sip:a@h;=v", "noscheme", "sip:a@h<", "sip:a@h?=v"] {
            assert_eq!(parse_uri(s), Err(DecodeError::BadUri), "{s:?}");
        }
    }
}
