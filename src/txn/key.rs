//! Transaction keys: how a message finds its transaction.
//!
//! * Server side (RFC 3261 §17.2.3): top-Via branch + sent-by + method, with ACK folded into INVITE. A
//!   branch without the `z9hG4bK` cookie falls back to the RFC 2543 match: Request-URI, To tag, From tag,
//!   Call-ID, CSeq number, top Via (and the method, ACK again folded into INVITE).
//! * Client side (§17.1.3): top-Via branch + CSeq method, so the 200 to a CANCEL never reaches its INVITE.
//!
//! Keys are typed values, never formatted strings. Server keys are chosen by the peer, so they live in a std
//! `HashMap` (SipHash).

use crate::sip::{Method, Request, Response, SipStr};

/// The RFC 3261 branch cookie (§8.1.1.7).
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// The method part of a server key: INVITE and ACK share one class so an ACK finds its INVITE.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MethodClass {
    /// INVITE, and ACK (which belongs to the INVITE transaction for a non-2xx final).
    Invite,
    /// Any other method, CANCEL included (a CANCEL is its own transaction).
    Other(Method),
}

impl MethodClass {
    /// The class of a request method (ACK → [`MethodClass::Invite`]).
    pub fn of(method: &Method) -> MethodClass {
        match method {
            Method::Invite | Method::Ack => MethodClass::Invite,
            other => MethodClass::Other(other.clone()),
        }
    }
}

/// RFC 2543 fallback key for requests whose branch lacks the cookie. URI and Via are kept in written form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LegacyKey {
    pub request_uri: String,
    pub to_tag: Option<String>,
    pub from_tag: Option<String>,
    pub call_id: String,
    pub cseq: u32,
    pub top_via: String,
    pub method: MethodClass,
}

/// A server transaction key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServerKey {
    /// RFC 3261 §17.2.3: branch (with cookie), sent-by (lower-cased `host[:port]`), method class.
    Rfc3261 { branch: SipStr, sent_by: SipStr, method: MethodClass },
    /// RFC 2543 fallback (§17.2.3, last paragraphs).
    Rfc2543(Box<LegacyKey>),
}

impl ServerKey {
    /// The key of a received request; `None` when it has no top Via (such a request cannot be answered).
    pub fn for_request(req: &Request) -> Option<ServerKey> {
        let via = req.common.via.first()?;
        let method = MethodClass::of(&req.method);
        match via.branch() {
            Some(b) if b.starts_with(BRANCH_COOKIE) => {
                Some(ServerKey::Rfc3261 { branch: SipStr::from(b), sent_by: via.sent_by(), method })
            }
            _ => Some(ServerKey::Rfc2543(Box::new(LegacyKey {
                request_uri: req.uri.to_string(),
                to_tag: req.common.to.tag().map(str::to_string),
                from_tag: req.common.from.tag().map(str::to_string),
                call_id: req.common.call_id.to_string(),
                cseq: req.common.cseq.seq,
                top_via: via.to_string(),
                method,
            }))),
        }
    }

    /// The same key with another method class: a CANCEL looks up its INVITE with this (§9.2).
    pub fn with_method(&self, method: MethodClass) -> ServerKey {
        match self {
            ServerKey::Rfc3261 { branch, sent_by, .. } => {
                ServerKey::Rfc3261 { branch: branch.clone(), sent_by: sent_by.clone(), method }
            }
            ServerKey::Rfc2543(k) => ServerKey::Rfc2543(Box::new(LegacyKey { method, ..(**k).clone() })),
        }
    }

    /// For an RFC 2543 ACK: the key of an INVITE that had no To tag. The ACK to a non-2xx carries the tag of
    /// the response, which the INVITE that created the transaction lacked; the caller then checks that tag
    /// against the response's. `None` for RFC 3261 keys (the branch is enough) or when there is no To tag.
    pub fn without_to_tag(&self) -> Option<ServerKey> {
        match self {
            ServerKey::Rfc2543(k) if k.to_tag.is_some() => {
                Some(ServerKey::Rfc2543(Box::new(LegacyKey { to_tag: None, ..(**k).clone() })))
            }
            _ => None,
        }
    }

    /// Whether this is an RFC 2543 fallback key.
    pub fn is_legacy(&self) -> bool {
        matches!(self, ServerKey::Rfc2543(_))
    }
}

/// A client transaction key (§17.1.3): the branch we put in the top Via, and the CSeq method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub branch: String,
    pub method: Method,
}

impl ClientKey {
    /// The key of a request we send (an empty branch if the TU forgot one).
    pub fn for_request(req: &Request) -> ClientKey {
        ClientKey { branch: req.branch().unwrap_or_default().to_string(), method: req.common.cseq.method.clone() }
    }

    /// The key a received response matches; `None` without a top Via branch.
    pub fn for_response(resp: &Response) -> Option<ClientKey> {
        let branch = resp.common.via.first()?.branch()?;
        Some(ClientKey { branch: branch.to_string(), method: resp.common.cseq.method.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::test_support::*;

    #[test]
    fn rfc3261_17_2_3_ack_folds_into_invite_cancel_does_not() {
        let inv = request(Method::Invite, "z9hG4bKa", UA);
        let ack = request(Method::Ack, "z9hG4bKa", UA);
        let cancel = request(Method::Cancel, "z9hG4bKa", UA);
        let k = ServerKey::for_request(&inv).unwrap();
        assert_eq!(ServerKey::for_request(&ack).unwrap(), k);
        let kc = ServerKey::for_request(&cancel).unwrap();
        assert_ne!(kc, k);
        assert_eq!(kc.with_method(MethodClass::Invite), k);
    }

    #[test]
    fn rfc3261_17_2_3_sent_by_is_part_of_the_key() {
        let a = request(Method::Options, "z9hG4bKa", UA);
        let b = request(Method::Options, "z9hG4bKa", UA2);
        assert_ne!(ServerKey::for_request(&a), ServerKey::for_request(&b));
    }

    #[test]
    fn rfc3261_17_2_3_branch_without_cookie_uses_rfc2543_key() {
        let a = request(Method::Invite, "legacy1", UA);
        let k = ServerKey::for_request(&a).unwrap();
        assert!(k.is_legacy());
        let mut b = a.clone();
        b.common.cseq.seq += 1;
        assert_ne!(ServerKey::for_request(&b).unwrap(), k, "CSeq number is part of the legacy key");
        let mut c = a.clone();
        c.common.from = c.common.from.clone().with_tag("other");
        assert_ne!(ServerKey::for_request(&c).unwrap(), k, "From tag is part of the legacy key");
    }

    #[test]
    fn rfc3261_17_1_3_client_key_separates_cancel_from_invite() {
        let inv = request(Method::Invite, "z9hG4bKc", UA);
        let cancel = request(Method::Cancel, "z9hG4bKc", UA);
        assert_ne!(ClientKey::for_request(&inv), ClientKey::for_request(&cancel));
        let resp = response_to(&cancel, 200);
        assert_eq!(ClientKey::for_response(&resp), Some(ClientKey::for_request(&cancel)));
    }

    #[test]
    fn request_without_via_has_no_server_key() {
        let mut r = request(Method::Invite, "z9hG4bKa", UA);
        r.common.via.clear();
        assert_eq!(ServerKey::for_request(&r), None);
    }
}
