//! Engine tests for per-lot Digest authentication (RFC 3261 §22.2, RFC 8760, RFC 2617) in virtual time.

use super::admission::digest::{Algorithm, Credentials};
use super::testkit::{Phone, World};
use crate::config::{AuthConfig, LotConfig, NumRange};
use crate::sip::Response;
use std::time::Duration;

fn world(actions: &str) -> World {
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    let text = format!("realm = \"parkd\"\nactions = [{actions}]\nusers = {{ alice = \"secret\" }}\n");
    lot.auth = Some(toml::from_str::<AuthConfig>(&text).unwrap());
    World::with_lots(vec![lot])
}

/// The challenges of a 401, in order: (algorithm, nonce, stale).
fn challenges(r: &Response) -> Vec<(String, String, bool)> {
    r.common
        .headers_named("WWW-Authenticate")
        .map(|h| {
            let c = Credentials::parse(h).expect("a Digest challenge");
            assert_eq!(c.get("qop"), Some("auth"));
            assert_eq!(c.get("realm"), Some("parkd"));
            (c.get("algorithm").unwrap().to_string(), c.get("nonce").unwrap().to_string(), c.get("stale") == Some("true"))
        })
        .collect()
}

/// An `Authorization` header line answering `nonce` as a phone would.
fn authorization(alg: Algorithm, user: &str, password: &str, method: &str, uri: &str, nonce: &str) -> String {
    let ha1 = alg.hex(&format!("{user}:parkd:{password}"));
    let ha2 = alg.hex(&format!("{method}:{uri}"));
    let resp = alg.hex(&format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"parkd\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm={}, qop=auth, nc=00000001, cnonce=\"c0ffee\"\n",
        alg.as_str()
    )
}

#[test]
fn park_is_challenged_with_sha256_then_md5_and_accepted_with_credentials_rfc8760_2_4() {
    let mut w = world("\"park\"");
    let mut bob = Phone { call_id: "bob-call@test".into(), ..Phone::new("bob", 5070) };
    let rb = "Referred-By: <sip:alice@127.0.0.1:5999>\n";
    w.deliver(bob.peer, &bob.invite("701", rb, Some(&bob.sdp("0", "sendrecv"))));
    let r = w.last_response_to(bob.peer, 0);
    assert_eq!(r.status, 401);
    let ch = challenges(&r);
    assert_eq!(ch.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["SHA-256", "MD5"], "most preferred first");
    assert!(!ch[0].2);
    w.deliver(bob.peer, &bob.ack("701", r.common.to.tag().unwrap(), 1, None));

    // Wrong password: challenged again.
    bob.cseq = 2;
    let uri = "sip:701@127.0.0.1:5060";
    let since = w.sent.len();
    let bad = authorization(Algorithm::Sha256, "alice", "wrong", "INVITE", uri, &ch[0].1);
    w.deliver(bob.peer, &bob.invite("701", &format!("{rb}{bad}"), Some(&bob.sdp("0", "sendrecv"))));
    let r = w.last_response_to(bob.peer, since);
    assert_eq!(r.status, 401);
    w.deliver(bob.peer, &bob.ack("701", r.common.to.tag().unwrap(), 2, None));

    bob.cseq = 3;
    let since = w.sent.len();
    let good = authorization(Algorithm::Sha256, "alice", "secret", "INVITE", uri, &ch[0].1);
    w.deliver(bob.peer, &bob.invite("701", &format!("{rb}{good}"), Some(&bob.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(bob.peer, since).status, 200, "parked after authenticating");
    assert_eq!(w.core.live().orbits_occupied, 1);
}

#[test]
fn md5_credentials_work_and_stale_nonces_are_flagged_rfc2617() {
    let mut w = world("\"retrieve\", \"subscribe\"");
    let mut carol = Phone { call_id: "carol-call@test".into(), ..Phone::new("carol", 5071) };
    w.deliver(carol.peer, &carol.invite("799", "", None));
    let r = w.last_response_to(carol.peer, 0);
    assert_eq!(r.status, 401, "unknown numbers are challenged like guarded ones: a scanner cannot tell them apart");
    w.deliver(carol.peer, &carol.ack("799", r.common.to.tag().unwrap(), 1, None));
    carol.cseq = 2;
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("701", "", None));
    let r = w.last_response_to(carol.peer, since);
    assert_eq!(r.status, 401, "retrieve is guarded");
    let nonce = challenges(&r)[1].1.clone();
    w.advance(Duration::from_secs(301));
    carol.cseq = 3;
    let since = w.sent.len();
    let late = authorization(Algorithm::Md5, "alice", "secret", "INVITE", "sip:701@127.0.0.1:5060", &nonce);
    w.deliver(carol.peer, &carol.invite("701", &late, None));
    let r = w.last_response_to(carol.peer, since);
    assert_eq!(r.status, 401);
    let ch = challenges(&r);
    assert!(ch.iter().all(|c| c.2), "a correct answer to an expired nonce gets stale=true");
    carol.cseq = 4;
    let since = w.sent.len();
    let fresh = authorization(Algorithm::Md5, "alice", "secret", "INVITE", "sip:701@127.0.0.1:5060", &ch[1].1);
    w.deliver(carol.peer, &carol.invite("701", &fresh, None));
    assert_eq!(w.last_response_to(carol.peer, since).status, 404, "authenticated, then the empty orbit is reported");
    carol.cseq = 5;
    let since = w.sent.len();
    let creds = authorization(Algorithm::Md5, "alice", "secret", "INVITE", "sip:799@127.0.0.1:5060", &ch[1].1);
    w.deliver(carol.peer, &carol.invite("799", &creds, None));
    assert_eq!(w.last_response_to(carol.peer, since).status, 404, "authenticated: an unknown number is reported as such");

    let wa = Phone { call_id: "w1-sub@test".into(), ..Phone::new("w1", 5090) };
    let sub = wa.invite("701", "Event: dialog\n", None).replace("INVITE", "SUBSCRIBE");
    let since = w.sent.len();
    w.deliver(wa.peer, &sub);
    assert_eq!(w.last_response_to(wa.peer, since).status, 401, "subscribe is guarded");
    assert_eq!(w.core.live().subscriptions, 0);
}
