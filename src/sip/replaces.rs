//! The Replaces header (RFC 3891), also found escaped inside a Refer-To URI: the [`Replaces`] type, its writer
//! and its parser.

use super::error::DecodeError;
use super::params::parse_header_params;
use std::fmt;

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

/// Parses a Replaces value (RFC 3891 §6.1): `callid;to-tag=..;from-tag=..[;early-only]`, parameters in any
/// order, names case-insensitive, LWS allowed around `;` and `=`, unknown parameters ignored.
pub fn parse_replaces(s: &str) -> Result<Replaces, DecodeError> {
    let bad = || DecodeError::BadReplaces;
    let s = s.trim();
    let (call_id, params) = match s.find(';') {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let call_id = call_id.trim_end_matches([' ', '\t']);
    if call_id.is_empty() || call_id.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let params = parse_header_params(params).map_err(|_| bad())?;
    let tag = |name| params.value(name).filter(|v| !v.starts_with('"')).map(str::to_string).ok_or(bad());
    Ok(Replaces { call_id: call_id.to_string(), to_tag: tag("to-tag")?, from_tag: tag("from-tag")?, early_only: params.has("early-only") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_param_orders_and_flags_rfc3891_6_1() {
        let want = Replaces { call_id: "abc@h".into(), to_tag: "1".into(), from_tag: "2".into(), early_only: false };
        for s in ["abc@h;to-tag=1;from-tag=2", "abc@h;from-tag=2;to-tag=1", "abc@h ; FROM-TAG = 2 ; To-Tag=1 ; x=y"] {
            assert_eq!(parse_replaces(s).unwrap(), want, "{s}");
        }
        let r = parse_replaces("abc@h;early-only;from-tag=2;to-tag=1").unwrap();
        assert!(r.early_only);
        assert_eq!(parse_replaces(&r.to_string()).unwrap(), r);
        for bad in ["", ";to-tag=1;from-tag=2", "abc;to-tag=1", "abc;from-tag=2", "a b;to-tag=1;from-tag=2", "abc;to-tag=;from-tag=2"] {
            assert_eq!(parse_replaces(bad), Err(DecodeError::BadReplaces), "{bad:?}");
        }
    }
}
