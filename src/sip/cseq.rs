//! The CSeq header (RFC 3261 §20.16): `1*DIGIT LWS Method`.

use super::method::Method;
use super::normalize::is_token;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
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
    fn cseq_number_and_method() {
        assert_eq!(parse_cseq("0009 INVITE").unwrap(), CSeq { seq: 9, method: Method::Invite });
        assert_eq!(parse_cseq("1 NEWMETHOD").unwrap().method, Method::Other("NEWMETHOD".into()));
        for bad in ["36893488147419103232 REGISTER", "-1 INVITE", "1", "1 INVITE x", "a INVITE"] {
            assert!(parse_cseq(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_cseq("0009 INVITE").unwrap().to_string(), "9 INVITE");
    }
}
