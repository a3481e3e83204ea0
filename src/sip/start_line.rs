//! The first line of a message (RFC 3261 §7.1, §7.2): Request-Line `METHOD uri SIP/2.0` or Status-Line
//! `SIP/2.0 code reason`, parsed and written.

use super::error::DecodeError;
use super::method::Method;
use super::normalize::is_token;
use super::uri::{parse_uri_strict, Uri};
use std::fmt::Write as _;

pub(crate) enum StartLine {
    Request(Method, Uri),
    Response(u16, String),
}

/// Whether a start line is a Status-Line (begins with `SIP/`, any case).
pub(crate) fn is_status_line(line: &str) -> bool {
    line.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
}

fn check_version(v: &str) -> Result<(), DecodeError> {
    match v.eq_ignore_ascii_case("SIP/2.0") {
        true => Ok(()),
        false if is_status_line(v) => Err(DecodeError::UnsupportedVersion),
        false => Err(DecodeError::BadStartLine),
    }
}

impl StartLine {
    /// Request-Line (RFC 3261 §7.1) or Status-Line (§7.2). Extra SP between or after the Request-Line elements
    /// is accepted, as RFC 4475 §3.1.2.9 and §3.1.2.10 allow a liberal parser to.
    pub(crate) fn parse(line: &str) -> Result<StartLine, DecodeError> {
        if line.contains(|c: char| c.is_control() && c != '\t') {
            return Err(DecodeError::BadStartLine);
        }
        if is_status_line(line) {
            let (version, rest) = line.split_once(' ').ok_or(DecodeError::BadStartLine)?;
            check_version(version)?;
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DecodeError::BadStatusCode);
            }
            let status: u16 = code.parse().map_err(|_| DecodeError::BadStatusCode)?;
            if !(100..=699).contains(&status) {
                return Err(DecodeError::BadStatusCode);
            }
            return Ok(StartLine::Response(status, reason.trim_end_matches([' ', '\t']).to_string()));
        }
        let mut it = line.split([' ', '\t']).filter(|t| !t.is_empty());
        let (method, uri, version) = match (it.next(), it.next(), it.next(), it.next()) {
            (Some(m), Some(u), Some(v), None) => (m, u, v),
            _ => return Err(DecodeError::BadStartLine),
        };
        if !is_token(method) {
            return Err(DecodeError::BadStartLine);
        }
        check_version(version)?;
        // `<sip:...>` (RFC 4475 §3.1.2.7) and URI headers (§3.1.2.11, RFC 3261 §19.1.1) are not allowed here.
        let uri = parse_uri_strict(uri).map_err(|_| DecodeError::BadRequestUri)?;
        if !uri.headers.is_empty() {
            return Err(DecodeError::BadRequestUri);
        }
        Ok(StartLine::Request(Method::from_token(method), uri))
    }
}

/// Writes `METHOD uri SIP/2.0\r\n`.
pub(crate) fn write_request_line(out: &mut String, method: &Method, uri: &Uri) {
    out.push_str(method.as_str());
    out.push(' ');
    uri.write_to(out);
    out.push_str(" SIP/2.0\r\n");
}

/// Writes `SIP/2.0 code reason\r\n`.
pub(crate) fn write_status_line(out: &mut String, status: u16, reason: &str) {
    let _ = write!(out, "SIP/2.0 {status} {reason}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(line: &str) -> Result<(Method, Uri), DecodeError> {
        match StartLine::parse(line)? {
            StartLine::Request(m, u) => Ok((m, u)),
            StartLine::Response(..) => panic!("{line:?} read as a Status-Line"),
        }
    }

    #[test]
    fn request_lines_parse_and_write_back() {
        let (m, u) = request("INVITE  sip:700@p:5060 \tSIP/2.0 ").unwrap();
        let mut out = String::new();
        write_request_line(&mut out, &m, &u);
        assert_eq!(out, "INVITE sip:700@p:5060 SIP/2.0\r\n");
        assert_eq!(request("invite sip:p SIP/2.0").unwrap().0, Method::Other("invite".into()));
        assert_eq!(request("INVITE sip:p SIP/7.0").err(), Some(DecodeError::UnsupportedVersion));
        assert_eq!(request("INVITE sip:p HTTP/1.1").err(), Some(DecodeError::BadStartLine));
        assert_eq!(request("INVITE <sip:p> SIP/2.0").err(), Some(DecodeError::BadRequestUri));
        assert_eq!(request("INVITE sip:p?X=1 SIP/2.0").err(), Some(DecodeError::BadRequestUri));
        assert_eq!(request("INV@TE sip:p SIP/2.0").err(), Some(DecodeError::BadStartLine));
    }

    #[test]
    fn status_lines_parse_and_write_back() {
        let Ok(StartLine::Response(status, reason)) = StartLine::parse("SIP/2.0 486 Busy Here ") else { panic!() };
        let mut out = String::new();
        write_status_line(&mut out, status, &reason);
        assert_eq!(out, "SIP/2.0 486 Busy Here\r\n");
        for (line, want) in [("SIP/2.0 4861 x", DecodeError::BadStatusCode), ("SIP/2.0 099 x", DecodeError::BadStatusCode), ("SIP/3.0 200 OK", DecodeError::UnsupportedVersion)] {
            assert_eq!(StartLine::parse(line).err(), Some(want), "{line:?}");
        }
    }
}
