//! `;name=value` parameters (RFC 3261 §25.1 `generic-param`), as header parameters carry them (From/To tags,
//! Via branch, Event id, ...): the container, its writer and the header-parameter grammar. URI parameters use
//! the same container but their own, simpler grammar (in [`super::uri`]).

use super::normalize::{is_token_char, is_wsp};
use super::SipStr;

/// `;name=value` parameters, in order. Names compare case-insensitively. Names and values are [`SipStr`]s: the
/// usual ones (`tag`, `branch`, `lr`, a 16-character tag or branch) are kept inline, without an allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(SipStr, Option<SipStr>)>);

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
        let v = value.map(SipStr::from);
        match self.0.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(slot) => slot.1 = v,
            None => {
                // Exactly one more: a dialog's local NameAddr gets its tag this way and keeps it for the call
                // (a plain push would allocate room for four).
                self.0.reserve_exact(1);
                self.0.push((SipStr::from(name), v))
            }
        }
    }
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
    /// Writes `;name[=value]` for each parameter, values as stored.
    pub(crate) fn write(&self, out: &mut String) {
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

/// Byte index just past the closing quote of the quoted string `s` starts with (handles `\` quoted-pairs).
pub(crate) fn quoted_end(s: &str) -> Option<usize> {
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
                params.0.push((SipStr::from(name), Some(SipStr::from(value))));
                rest = after.trim_start_matches(is_wsp);
            }
            None => {
                params.0.push((SipStr::from(name), None));
                rest = after;
            }
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_params_with_lws_and_quotes_round_trip() {
        let p = parse_header_params(" ; a = \"q;v\" ;b;Tag=x").unwrap();
        assert_eq!((p.value("a"), p.get("b"), p.value("tag")), (Some("\"q;v\""), Some(None), Some("x")));
        let mut out = String::new();
        p.write(&mut out);
        assert_eq!(out, ";a=\"q;v\";b;Tag=x");
        for bad in [";", ";;", ";a=", "a", ";a=\"open"] {
            assert!(parse_header_params(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn set_replaces_case_insensitively_and_remove_drops() {
        let mut p = Params::default();
        p.set("Branch", Some("z9hG4bK1"));
        p.set("branch", Some("z9hG4bK2"));
        p.set("rport", None);
        assert_eq!(p.0, Vec::<(crate::sip::SipStr, Option<crate::sip::SipStr>)>::from([("Branch".into(), Some("z9hG4bK2".into())), ("rport".into(), None)]));
        p.remove("RPORT");
        assert!(!p.has("rport"));
    }
}
