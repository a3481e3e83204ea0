//! Name-addr / addr-spec (RFC 3261 §20.10, §25.1): the [`NameAddr`] type of From, To, Contact, Route,
//! Record-Route, Refer-To and Referred-By, its writer and its parser.

use super::error::DecodeError;
use super::normalize::{find_byte, is_token, is_wsp, split_at_byte};
use super::params::{parse_header_params, quoted_end, Params};
use super::uri::{parse_uri_strict, Uri};
use super::SipStr;
use std::fmt;

/// `"Display" <uri>;params` (From, To, Contact, Referred-By, Refer-To, Route, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<SipStr>,
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
            (Some(d), _) if !d.is_empty() => d.to_string(),
            (_, Some(u)) => u.to_string(),
            _ => self.uri.to_string(),
        }
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(64);
        self.write_to(&mut s);
        f.write_str(&s)
    }
}

impl NameAddr {
    /// Appends the name-addr as [`fmt::Display`] writes it (the encoder's path: no temporary string).
    pub(crate) fn write_to(&self, s: &mut String) {
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
        self.uri.write_to(s);
        s.push('>');
        self.params.write(s);
    }
}

/// The content of a quoted string, quoted-pairs resolved.
fn unquote(q: &str) -> SipStr {
    let inner = q.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(q);
    if !inner.contains('\\') {
        return SipStr::from(inner);
    }
    let mut out = SipStr::with_capacity(inner.len());
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
    } else if let Some(lt) = find_byte(s, b'<') {
        let (disp, rest) = s.split_at(lt);
        let disp = disp.trim_matches(is_wsp);
        if !disp.split(is_wsp).filter(|t| !t.is_empty()).all(is_token) {
            return Err(bad());
        }
        ((!disp.is_empty()).then(|| SipStr::from(disp)), rest)
    } else {
        let (spec, params) = match find_byte(s, b';') {
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
    let (inner, rest) = split_at_byte(inner_and_rest, b'>').ok_or(bad())?;
    let uri = parse_uri_strict(inner).map_err(|_| bad())?;
    let params = parse_header_params(rest).map_err(|_| bad())?;
    Ok(NameAddr { display, uri, params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_display_quotes_display_name() {
        let mut na = NameAddr::new(Uri::sip(Some("bob"), "h", Some(5062)));
        na.display = Some("Parked 701: \"Bob\"".into());
        let na = na.with_tag("x1");
        assert_eq!(na.to_string(), "\"Parked 701: \\\"Bob\\\"\" <sip:bob@h:5062>;tag=x1");
    }

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
}
