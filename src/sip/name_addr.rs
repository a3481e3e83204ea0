//! Header-value grammars shared by several headers: header parameters with LWS and quoted values,
//! name-addr / addr-spec (RFC 3261 §20.10, §25.1), Via (§20.42) and CSeq (§20.16).

use super::error::DecodeError;
use super::message::{CSeq, Method, NameAddr, Params, Via};
use super::normalize::{is_token, is_token_char};
use super::uri::{parse_hostport, parse_uri_strict};

fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Byte index just past the closing quote of the quoted string `s` starts with (handles `\` quoted-pairs).
fn quoted_end(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// The content of a quoted string, quoted-pairs resolved.
fn unquote(q: &str) -> String {
    let inner = q.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(q);
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if !escaped && c == '\\' {
            escaped = true;
        } else {
            out.push(c);
            escaped = false;
        }
    }
    out
}

/// Characters of an unquoted `gen-value`: token or host (IPv6 references included).
fn is_value_char(c: char) -> bool {
    is_token_char(c) || matches!(c, '[' | ']' | ':')
}

/// Parses `*( SEMI generic-param )` with LWS allowed around `;` and `=`. Quoted values keep their quotes so
/// they are written back as they came.
pub(crate) fn parse_header_params(s: &str) -> Result<Params, ()> {
    let mut params = Params::default();
    let mut rest = s.trim_start_matches(is_wsp);
    while !rest.is_empty() {
        rest = rest.strip_prefix(';').ok_or(())?.trim_start_matches(is_wsp);
        let name_len = rest.find(|c| !is_token_char(c)).unwrap_or(rest.len());
        let (name, after) = rest.split_at(name_len);
        if name.is_empty() {
            return Err(());
        }
        let after = after.trim_start_matches(is_wsp);
        match after.strip_prefix('=') {
            Some(v) => {
                let v = v.trim_start_matches(is_wsp);
                let end = if v.starts_with('"') {
                    quoted_end(v).ok_or(())?
                } else {
                    v.find(|c| !is_value_char(c)).unwrap_or(v.len())
                };
                let (value, after) = v.split_at(end);
                if value.is_empty() {
                    return Err(());
                }
                params.0.push((name.to_string(), Some(value.to_string())));
                rest = after.trim_start_matches(is_wsp);
            }
            None => {
                params.0.push((name.to_string(), None));
                rest = after;
            }
        }
    }
    Ok(params)
}

/// Parses a name-addr or addr-spec with its header parameters: `"Bob" <sip:bob@h>;tag=x`,
/// `<sip:a@h;transport=tcp>;p=1`, `Bob <sip:bob@h>`, or bare `sip:700@host:5060;tag=x`. Per RFC 3261 §20.10
/// a bare addr-spec's `;` parameters are header parameters, and a bare addr-spec must not contain `?` or `,`
/// (RFC 4475 §3.1.2.13). Spaces inside `<...>` are rejected (RFC 4475 §3.1.2.14), as is an unquoted display
/// name that is not a sequence of tokens (§3.1.2.15).
pub fn parse_name_addr(s: &str) -> Result<NameAddr, DecodeError> {
    let bad = || DecodeError::BadNameAddr;
    let s = s.trim_matches(is_wsp);
    let (display, bracketed) = if s.starts_with('"') {
        let end = quoted_end(s).ok_or(bad())?;
        let (q, rest) = s.split_at(end);
        (Some(unquote(q)), rest.trim_start_matches(is_wsp))
    } else if let Some(lt) = s.find('<') {
        let (disp, rest) = s.split_at(lt);
        let disp = disp.trim_matches(is_wsp);
        if !disp.split(is_wsp).filter(|t| !t.is_empty()).all(is_token) {
            return Err(bad());
        }
        ((!disp.is_empty()).then(|| disp.to_string()), rest)
    } else {
        let (spec, params) = match s.find(';') {
            Some(i) => s.split_at(i),
            None => (s, ""),
        };
        let spec = spec.trim_end_matches(is_wsp);
        if spec.contains(['?', ',']) {
            return Err(bad());
        }
        let uri = parse_uri_strict(spec).map_err(|_| bad())?;
        let params = parse_header_params(params).map_err(|_| bad())?;
        return Ok(NameAddr { display: None, uri, params });
    };
    let inner_and_rest = bracketed.strip_prefix('<').ok_or(bad())?;
    let (inner, rest) = inner_and_rest.split_once('>').ok_or(bad())?;
    let uri = parse_uri_strict(inner).map_err(|_| bad())?;
    let params = parse_header_params(rest).map_err(|_| bad())?;
    Ok(NameAddr { display, uri, params })
}

/// Parses one via-parm: `SIP / 2.0 / UDP host:port ;params` (LWS allowed around the slashes, RFC 3261 §25.1).
pub(crate) fn parse_via(s: &str) -> Result<Via, ()> {
    let mut parts = s.splitn(3, '/');
    let (proto, version, rest) = (parts.next().ok_or(())?, parts.next().ok_or(())?, parts.next().ok_or(())?);
    if !proto.trim_matches(is_wsp).eq_ignore_ascii_case("SIP") || version.trim_matches(is_wsp) != "2.0" {
        return Err(());
    }
    let rest = rest.trim_start_matches(is_wsp);
    let n = rest.find(|c| !is_token_char(c)).unwrap_or(rest.len());
    let (transport, rest) = rest.split_at(n);
    if transport.is_empty() || !rest.starts_with(is_wsp) {
        return Err(());
    }
    let rest = rest.trim_start_matches(is_wsp);
    let n = rest.find(|c| c == ';' || is_wsp(c)).unwrap_or(rest.len());
    let (sent_by, params) = rest.split_at(n);
    let (host, port) = parse_hostport(sent_by).ok_or(())?;
    Ok(Via { transport: transport.to_ascii_uppercase(), host: host.to_string(), port, params: parse_header_params(params)? })
}

/// Parses `CSeq: 1*DIGIT LWS Method`. The number must fit 32 bits (RFC 3261 §8.1.1.5, RFC 4475 §3.1.2.4).
pub(crate) fn parse_cseq(s: &str) -> Result<CSeq, ()> {
    let mut it = s.split([' ', '\t']).filter(|t| !t.is_empty());
    let (seq, method) = (it.next().ok_or(())?, it.next().ok_or(())?);
    if it.next().is_some() || !seq.bytes().all(|b| b.is_ascii_digit()) || !is_token(method) {
        return Err(());
    }
    Ok(CSeq { seq: seq.parse().map_err(|_| ())?, method: Method::from_token(method) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_forms_rfc3261_20_10() {
        let na = parse_name_addr("\"Bob\" <sip:bob@h>;tag=x").unwrap();
        assert_eq!((na.display.as_deref(), na.uri.user.as_deref(), na.tag()), (Some("Bob"), Some("bob"), Some("x")));
        let na = parse_name_addr("<sip:a@h;transport=tcp>;p=1").unwrap();
        assert_eq!(na.uri.params.value("transport"), Some("tcp"));
        assert_eq!(na.params.value("p"), Some("1"));
        assert_eq!(na.display, None);
        // bare addr-spec: its parameters belong to the header, not the URI
        let na = parse_name_addr("sip:700@host:5060;tag=abc;transport=tcp").unwrap();
        assert_eq!((na.uri.host.as_str(), na.uri.port), ("host", Some(5060)));
        assert!(na.uri.params.0.is_empty());
        assert_eq!((na.tag(), na.params.value("transport")), (Some("abc"), Some("tcp")));
        let na = parse_name_addr("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(na.display.as_deref(), Some("caller"));
        let na = parse_name_addr("token1~` token2'+_ <sip:m@e.com> ; a = \"q;v\" ;b").unwrap();
        assert_eq!(na.display.as_deref(), Some("token1~` token2'+_"));
        assert_eq!(na.params.value("a"), Some("\"q;v\""));
        assert!(na.params.has("b"));
    }

    #[test]
    fn display_name_quoted_pairs_are_resolved_and_rewritten() {
        let na = parse_name_addr(r#""J Rosenberg \\\"" <sip:j@e.com>"#).unwrap();
        assert_eq!(na.display.as_deref(), Some("J Rosenberg \\\""));
        assert_eq!(parse_name_addr(&na.to_string()).unwrap(), na);
    }

    #[test]
    fn malformed_name_addrs_rfc4475_3_1_2() {
        for s in [
            "\"Mr. J. User <sip:j.user@example.com>",                    // §3.1.2.6 unterminated quote
            "\"Watson, Thomas\" < sip:t.watson@example.org >",            // §3.1.2.14 spaces in addr-spec
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",          // §3.1.2.15 non-token display name
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",       // §3.1.2.13 bare URI with headers
            "\"Joe\" <sip:joe@example.org>;;;;",                          // §3.1.2.1 empty parameters
            "<sip:a@h",
            "<sip:a@h>;tag=",
            "",
        ] {
            assert_eq!(parse_name_addr(s), Err(DecodeError::BadNameAddr), "{s:?}");
        }
    }

    #[test]
    fn via_with_lws_everywhere_rfc4475_3_1_1_1() {
        let v = parse_via("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8").unwrap();
        assert_eq!((v.transport.as_str(), v.host.as_str(), v.port, v.branch()), ("TCP", "spindle.example.com", None, Some("z9hG4bK9ikj8")));
        let v = parse_via("SIP/2.0/udp [::1]:5070;rport;received=[::2];branch=z9hG4bK1").unwrap();
        assert_eq!((v.transport.as_str(), v.host.as_str(), v.port), ("UDP", "[::1]", Some(5070)));
        assert_eq!(v.params.get("rport"), Some(None));
        assert_eq!(v.params.value("received"), Some("[::2]"));
        for bad in ["SIP/7.0/UDP h", "SIP/2.0/UDP", "SIP/2.0 UDP h", "SIP/2.0/UDP 192.0.2.15;;", "SIP/2.0/UDP h:x", "SIP/2.0/UDPh"] {
            assert!(parse_via(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cseq_number_and_method() {
        assert_eq!(parse_cseq("0009 INVITE").unwrap(), CSeq { seq: 9, method: Method::Invite });
        assert_eq!(parse_cseq("1 NEWMETHOD").unwrap().method, Method::Other("NEWMETHOD".into()));
        for bad in ["36893488147419103232 REGISTER", "-1 INVITE", "1", "1 INVITE x", "a INVITE"] {
            assert!(parse_cseq(bad).is_err(), "{bad:?}");
        }
    }
}
