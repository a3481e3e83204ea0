//! Admission through the whole core in virtual time: floods, scanners, caps, REGISTER, digest answers.

use super::admission::Reason;
use super::admission::digest::{Algorithm, Credentials};
use super::testkit::{Phone, World};
use crate::config::{AccessConfig, AuthConfig, LimitsConfig, LotConfig, NumRange, ServerConfig};
use crate::sip::{Peer, Response, Transport};
use std::time::Duration;

fn peer(addr: &str) -> Peer {
    Peer { transport: Transport::Udp, addr: addr.parse().unwrap() }
}

/// A world whose lot has orbits 701-720 (the default lot's size).
fn world() -> World {
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-720").unwrap();
    World::with_lots(vec![lot])
}

const REFERRED: &str = "Referred-By: <sip:alice@127.0.0.1:5999>\n";

/// `phone` sends a dialog-creating INVITE to `user`; returns the final response.
fn invite(w: &mut World, phone: &Phone, user: &str, extra: &str) -> Option<Response> {
    let since = w.sent.len();
    w.deliver(phone.peer, &phone.invite(user, extra, Some(&phone.sdp("0", "sendrecv"))));
    w.responses_to(phone.peer, since).into_iter().rev().find(|r| r.status >= 200)
}

/// Parks `phone` on the park code and ACKs; returns (orbit, parkd's tag).
fn park_and_ack(w: &mut World, phone: &Phone) -> (String, String) {
    let ok = invite(w, phone, "700", REFERRED).expect("an answer to the park");
    assert_eq!(ok.status, 200, "park answered");
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(phone.peer, &phone.ack("700", &tag, phone.cseq, None));
    (ok.common.header("Park-Orbit").unwrap().to_string(), tag)
}

/// One legitimate cycle from 127.0.0.1: Bob parks, Carol retrieves him, Carol hangs up (parkd then hangs up
/// Bob, who answers). Returns whether every step got the answer it should.
fn cycle(w: &mut World, n: usize) -> bool {
    let bob = Phone { call_id: format!("bob-{n}@legit"), tag: format!("bob-{n}"), ..Phone::new("bob", 5070) };
    let carol = Phone { call_id: format!("carol-{n}@legit"), tag: format!("carol-{n}"), ..Phone::new("carol", 5071) };
    let Some(ok) = invite(w, &bob, "700", REFERRED).filter(|r| r.status == 200) else { return false };
    let bob_tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(bob.peer, &bob.ack("700", &bob_tag, 1, None));
    let orbit = ok.common.header("Park-Orbit").unwrap().to_string();
    let Some(got) = invite(w, &carol, &orbit, "").filter(|r| r.status == 200) else { return false };
    let carol_tag = got.common.to.tag().unwrap().to_string();
    w.deliver(carol.peer, &carol.ack(&orbit, &carol_tag, 1, None));
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.in_dialog("BYE", &orbit, &carol_tag, 2, None));
    let Some(bye) = w.requests_to(bob.peer, since).into_iter().find(|r| r.method == crate::sip::Method::Bye) else { return false };
    w.deliver(bob.peer, &bob.ok_to(&bye));
    w.last_response_to(carol.peer, since).status == 200
}

#[test]
fn an_invite_flood_from_one_address_never_stops_another_from_parking_and_retrieving() {
    let mut w = world();
    let flood_peer = peer("127.0.0.2:5099");
    let (mut ok, mut cycles, mut max_txns) = (0, 0, 0);
    // 2,000 INVITEs to the park code in 2 s from 127.0.0.2, never ACKed; a park + retrieve cycle from
    // 127.0.0.1 every 200 ms.
    for i in 0..2_000 {
        let f = Phone { peer: flood_peer, call_id: format!("flood-{i}"), tag: format!("f{i}"), ..Phone::new("flood", 5099) };
        w.deliver(f.peer, &f.invite("700", REFERRED, Some(&f.sdp("0", "sendrecv"))));
        if i % 200 == 100 {
            cycles += 1;
            ok += usize::from(cycle(&mut w, i));
        }
        max_txns = max_txns.max(w.core.live().server_txns);
        w.advance(Duration::from_millis(1));
    }
    assert_eq!((ok, cycles), (10, 10), "every legitimate cycle succeeded");
    let answered: Vec<Response> = w.responses_to(flood_peer, 0);
    let distinct = |status: u16| answered.iter().filter(|r| r.status == status).map(|r| r.common.call_id.clone()).collect::<std::collections::HashSet<_>>().len();
    assert_eq!(distinct(200), 4, "the flood parked 4 calls (the cap on unconfirmed calls), holding 4 of 20 orbits");
    assert_eq!(distinct(503), 10, "five 503s per second, then silence");
    assert!(answered.iter().filter(|r| r.status == 503).all(|r| r.common.header("Retry-After") == Some("5")));
    assert_eq!(w.core.refusals().get(Reason::Unconfirmed), 1_996);
    assert!(max_txns < 200, "dropped INVITEs keep no transaction: at most {max_txns} alive");
    assert_eq!(w.core.live().orbits_occupied, 4);
    // 64·T1 after their 200s the flood's calls are torn down and their orbits come back.
    w.advance(Duration::from_secs(40));
    assert_eq!(w.core.live().orbits_occupied, 0);
    w.advance(Duration::from_secs(60));
    assert_eq!(w.core.live(), super::Live::default(), "nothing left behind, no hold counted");
    assert!(w.core.tracked_sources() <= 2);
}

#[test]
fn a_scanner_user_agent_gets_no_answer_and_leaves_nothing() {
    let mut w = world();
    let scanner = Phone::new("scan", 5080);
    let options = scanner.request("OPTIONS", "100", "User-Agent: friendly-scanner\n", None);
    w.deliver(scanner.peer, &options);
    assert!(w.sent.is_empty(), "not even a 200: the scanner learns nothing");
    assert_eq!(w.core.live().server_txns, 0);
    assert_eq!(w.core.refusals().get(Reason::ScannerUserAgent), 1);
    let phone = Phone::new("phone", 5081);
    w.deliver(phone.peer, &phone.request("OPTIONS", "100", "User-Agent: Yealink SIP-T46S\n", None));
    assert_eq!(w.last_response_to(phone.peer, 0).status, 200);
    // With the list emptied, the same OPTIONS is answered.
    w.core.set_limits(&LimitsConfig::default(), &AccessConfig { drop_user_agents: vec![] });
    let since = w.sent.len();
    w.deliver(scanner.peer, &options.replace("-options-1", "-options-2"));
    assert_eq!(w.last_response_to(scanner.peer, since).status, 200);
}

#[test]
fn register_is_405_with_allow() {
    let mut w = world();
    let phone = Phone::new("phone", 5070);
    w.deliver(phone.peer, &phone.request("REGISTER", "phone", "Expires: 3600\n", None));
    let r = w.last_response_to(phone.peer, 0);
    assert_eq!(r.status, 405);
    let allow = r.common.header("Allow").expect("405 carries Allow (RFC 3261 §21.4.6)");
    assert!(allow.contains("INVITE") && allow.contains("SUBSCRIBE") && !allow.contains("REGISTER"), "{allow}");
}

#[test]
fn out_of_dialog_floods_are_limited_and_a_sources_own_dialogs_have_their_own_bucket() {
    let mut w = world();
    let bob = Phone::new("bob", 5070);
    let (_, tag) = park_and_ack(&mut w, &bob);
    let since = w.sent.len();
    for n in 0..100 {
        w.deliver(bob.peer, &bob.request("OPTIONS", "700", "", None).replace("-options-1", &format!("-options-{n}")));
    }
    let answers = w.responses_to(bob.peer, since);
    assert_eq!(answers.iter().filter(|r| r.status == 200).count(), 40, "the out-of-dialog burst");
    assert_eq!(answers.iter().filter(|r| r.status == 503).count(), 5);
    assert_eq!(w.core.refusals().get(Reason::RateOutOfDialog), 60);
    let since = w.sent.len();
    w.deliver(bob.peer, &bob.in_dialog("BYE", "700", &tag, 2, None));
    assert_eq!(w.last_response_to(bob.peer, since).status, 200, "the BYE comes from the in-dialog bucket");
}

#[test]
fn requests_inside_ones_own_dialog_are_limited_too() {
    let mut w = world();
    let bob = Phone::new("bob", 5070);
    let (_, tag) = park_and_ack(&mut w, &bob);
    let since = w.sent.len();
    // In-dialog OPTIONS in a loop: each would keep a transaction for 32 s.
    for n in 0..300 {
        w.deliver(bob.peer, &bob.in_dialog("OPTIONS", "700", &tag, 10 + n, None));
    }
    let answers = w.responses_to(bob.peer, since);
    assert_eq!(answers.iter().filter(|r| r.status == 200).count(), 100, "the in-dialog burst");
    assert_eq!(answers.iter().filter(|r| r.status == 503).count(), 5);
    assert_eq!(w.core.refusals().get(Reason::RateInDialog), 200);
    assert!(w.core.live().server_txns <= 110, "refused requests keep no transaction: {:?}", w.core.live());
    w.advance(Duration::from_secs(1));
    let since = w.sent.len();
    w.deliver(bob.peer, &bob.in_dialog("BYE", "700", &tag, 1_000, None));
    assert_eq!(w.last_response_to(bob.peer, since).status, 200, "a second later the phone can hang up");
}

#[test]
fn junk_and_cancels_for_nothing_take_from_the_out_of_dialog_bucket() {
    let mut w = world();
    let scanner = Phone::new("scan", 5080);
    let since = w.sent.len();
    for n in 0..30 {
        let c = Phone { call_id: format!("junk-{n}"), ..Phone::new("scan", 5080) };
        w.deliver(c.peer, &c.invite("700", "", None).replace("Max-Forwards: 70", "Max-Forwards: many"));
        let c = Phone { call_id: format!("cancel-{n}"), ..Phone::new("scan", 5080) };
        w.deliver(c.peer, &c.request("CANCEL", "700", "", None));
    }
    let statuses: Vec<u16> = w.responses_to(scanner.peer, since).iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..40].iter().filter(|s| **s == 400).count(), &20, "{statuses:?}");
    assert_eq!(&statuses[..40].iter().filter(|s| **s == 481).count(), &20, "the burst of 40, shared: {statuses:?}");
    // Over the limit: five answers in the second (a CANCEL's 503, junk's 400 in its stead), then silence.
    assert_eq!(&statuses[40..], &[400, 503, 400, 503, 400], "{statuses:?}");
    assert_eq!(w.core.refusals().get(Reason::RateOutOfDialog), 20);
}

#[test]
fn parks_per_source_are_capped_until_one_leaves() {
    let mut w = world();
    let mut tags = Vec::new();
    for n in 0..10 {
        let p = Phone { call_id: format!("p{n}"), tag: format!("t{n}"), ..Phone::new("p", 5070 + n) };
        tags.push((p.call_id.clone(), park_and_ack(&mut w, &p).1));
    }
    let eleventh = Phone { call_id: "p10".into(), ..Phone::new("p", 5090) };
    let r = invite(&mut w, &eleventh, "700", REFERRED).unwrap();
    assert_eq!((r.status, r.common.header("Retry-After")), (503, Some("5")), "default: 10 parked calls per source");
    assert_eq!(w.core.refusals().get(Reason::ParkedPerSource), 1);
    let retrieve = Phone { call_id: "r1".into(), ..Phone::new("carol", 5091) };
    assert_eq!(invite(&mut w, &retrieve, "705", "").unwrap().status, 200, "retrieves are not parks");
    let again = Phone { call_id: "p11".into(), ..Phone::new("p", 5092) };
    assert_eq!(invite(&mut w, &again, "700", REFERRED).unwrap().status, 200, "705 left its orbit: room for one more");
}

#[test]
fn trusted_proxies_get_their_own_limits_and_subscriptions_are_capped() {
    let server = ServerConfig {
        listen: "127.0.0.1:5060".parse().unwrap(),
        rtp_ports: NumRange::parse("20000-20999").unwrap(),
        trusted_proxies: vec!["127.0.0.2/32".parse().unwrap()],
        ..ServerConfig::default()
    };
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-720").unwrap();
    let mut w = World::with_server(server, vec![lot]);
    let limits = LimitsConfig { subscriptions_per_source: 2, ..LimitsConfig::default() };
    w.core.set_limits(&limits, &AccessConfig::default());
    let pbx = peer("127.0.0.2:5060");
    let statuses: Vec<u16> = (0..25)
        .map(|n| {
            let p = Phone { peer: pbx, call_id: format!("via-pbx-{n}"), ..Phone::new("p", 5060) };
            invite(&mut w, &p, "700", REFERRED).unwrap().status
        })
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 20, "20 unACKed parks from the PBX: every orbit");
    assert!(statuses[20..].iter().all(|s| *s == 486), "then Parking Lot Full, not a source limit: {statuses:?}");
    let watcher = Phone::new("w", 5095);
    let sub = |n: u32, expires: u32| {
        let p = Phone { call_id: format!("sub-{n}"), ..Phone::new("w", 5095) };
        p.request("SUBSCRIBE", "701", &format!("Event: dialog\nAccept: application/dialog-info+xml\nExpires: {expires}\n"), None)
    };
    let mut statuses = Vec::new();
    for (n, expires) in [(0, 600), (1, 600), (2, 600), (3, 0)] {
        let since = w.sent.len();
        w.deliver(watcher.peer, &sub(n, expires));
        statuses.push(w.last_response_to(watcher.peer, since).status);
    }
    assert_eq!(statuses, [200, 200, 503, 200], "two subscriptions, the third refused; a fetch holds nothing");
    assert_eq!(w.core.refusals().get(Reason::Subscriptions), 1);
}

/// A lot whose parks need digest authentication (user alice).
fn auth_world() -> World {
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    lot.auth = Some(toml::from_str::<AuthConfig>("realm = \"parkd\"\nactions = [\"park\"]\nusers = { alice = \"secret\" }\n").unwrap());
    World::with_lots(vec![lot])
}

fn authorization(user: &str, password: &str, nonce: &str) -> String {
    let alg = Algorithm::Md5;
    let uri = "sip:700@127.0.0.1:5060";
    let ha1 = alg.hex(&format!("{user}:parkd:{password}"));
    let ha2 = alg.hex(&format!("INVITE:{uri}"));
    let resp = alg.hex(&format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
    format!("Authorization: Digest username=\"{user}\", realm=\"parkd\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\"\n")
}

/// The 401's bytes with its nonces and To tag masked (both are fresh on every answer by design).
fn masked(r: &Response) -> String {
    let mut text = String::from_utf8_lossy(&r.encode()).into_owned();
    for h in r.common.headers_named("WWW-Authenticate") {
        if let Some(n) = Credentials::parse(h).and_then(|c| c.get("nonce").map(str::to_string)) {
            text = text.replace(&n, "NONCE");
        }
    }
    text.replace(r.common.to.tag().unwrap_or("no-tag"), "TAG")
}

#[test]
fn digest_failures_answer_unknown_and_known_users_alike() {
    let mut w = auth_world();
    let bob = Phone::new("bob", 5070);
    let first = invite(&mut w, &bob, "700", REFERRED).unwrap();
    assert_eq!(first.status, 401);
    let nonce = Credentials::parse(first.common.header("WWW-Authenticate").unwrap()).unwrap().get("nonce").unwrap().to_string();
    w.deliver(bob.peer, &bob.ack("700", first.common.to.tag().unwrap(), 1, None));
    // The same request twice, once with an unknown user, once with alice and a wrong password; the first
    // transaction is gone (Timer H, 32 s) before the second, so the second is a new request with the same
    // branch and CSeq.
    let mut answers = Vec::new();
    for (user, password, at) in [("mallory", "secret", 10u64), ("alice", "wrong", 50), ("mallory", "x", 400), ("alice", "secret", 450)] {
        w.advance(Duration::from_secs(at) - (w.now - crate::time::Time::from_secs(1_000_000)));
        let b = Phone { cseq: 2, ..Phone::new("bob", 5070) };
        let r = invite(&mut w, &b, "700", &format!("{REFERRED}{}", authorization(user, password, &nonce))).unwrap();
        w.deliver(b.peer, &b.ack("700", r.common.to.tag().unwrap(), 2, None));
        answers.push(r);
    }
    assert_eq!(answers[0].status, 401);
    assert_eq!(masked(&answers[0]), masked(&answers[1]), "unknown user and wrong password: the same bytes");
    assert_eq!(w.core.refusals().get(Reason::AuthFailed), 2);
    // An expired nonce: stale=true for an unknown user exactly as for a known one.
    assert!(answers[2].common.headers_named("WWW-Authenticate").all(|h| h.contains("stale=true")), "{}", masked(&answers[2]));
    assert_eq!(masked(&answers[2]), masked(&answers[3]));
    assert_eq!(w.core.refusals().get(Reason::AuthFailed), 2, "a stale nonce is not a failure");
}

#[test]
fn unknown_numbers_are_challenged_like_guarded_ones_when_a_lot_authenticates() {
    let mut w = auth_world();
    let probe = |w: &mut World, user: &str, n: u32| {
        let p = Phone { call_id: format!("probe-{n}"), ..Phone::new("scan", 5080) };
        let r = invite(w, &p, user, "").unwrap();
        let challenges: Vec<String> = r.common.headers_named("WWW-Authenticate").map(|h| h.split(", nonce=").next().unwrap_or("").to_string()).collect();
        (r.status, r.reason.clone(), challenges)
    };
    let known = probe(&mut w, "700", 1);
    let unknown = probe(&mut w, "31337", 2);
    assert_eq!(known.0, 401);
    assert_eq!(known, unknown, "the same status, reason and challenges for a number that does not exist");
    let sub = Phone { call_id: "probe-sub".into(), ..Phone::new("scan", 5081) };
    w.deliver(sub.peer, &sub.request("SUBSCRIBE", "31337", "Event: dialog\n", None));
    assert_eq!(w.last_response_to(sub.peer, 0).status, 401, "SUBSCRIBE too");
    // Without any lot authenticating, an unknown number is a plain 404.
    let mut open = world();
    let p = Phone::new("scan", 5082);
    assert_eq!(invite(&mut open, &p, "31337", "").unwrap().status, 404);
}
