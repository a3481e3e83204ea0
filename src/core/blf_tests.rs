//! Engine tests for BLF (RFC 6665 SUBSCRIBE/NOTIFY, RFC 4235 dialog-info) and per-lot access lists, in
//! virtual time with scripted phones.

use super::testkit::{ParkAs, Phone, World};
use crate::config::{BlfOccupiedState, LotConfig, NumRange};
use crate::sip::{Request, Response};
use std::time::Duration;

/// A watcher phone: its own Call-ID for the subscription dialog.
fn watcher(name: &'static str, port: u16) -> Phone {
    Phone { call_id: format!("{name}-sub@test"), ..Phone::new(name, port) }
}

/// An initial SUBSCRIBE to `user` with extra header lines (`Event`, `Expires`, ...).
fn subscribe_text(p: &Phone, user: &str, extra: &str) -> String {
    p.request("SUBSCRIBE", user, &format!("Accept: application/dialog-info+xml\n{extra}"), None)
}

/// A refresh (or unsubscribe with `expires` 0) inside the subscription dialog.
fn refresh_text(p: &Phone, user: &str, to_tag: &str, cseq: u32, expires: u32) -> String {
    let mut text = p.in_dialog("SUBSCRIBE", user, to_tag, cseq, None);
    let at = text.find("\n\n").unwrap();
    text.insert_str(at, &format!("\nEvent: dialog\nExpires: {expires}"));
    text
}

/// parkd's responses and NOTIFYs to `p` since `since`.
fn notifies(w: &World, p: &Phone, since: usize) -> Vec<Request> {
    let mut seen = std::collections::HashSet::new();
    // Retransmissions (same CSeq) are counted once.
    w.requests_to(p.peer, since).into_iter().filter(|r| r.method == crate::sip::Method::Notify && seen.insert(r.common.cseq.seq)).collect()
}

fn reply_text(req: &Request, status: u16, reason: &str) -> String {
    let mut t = Phone::new("x", 1).ok_to(req);
    t = t.replacen("200 OK", &format!("{status} {reason}"), 1);
    t
}

fn body(r: &Request) -> String {
    String::from_utf8_lossy(&r.common.body).into_owned()
}

fn version(r: &Request) -> u32 {
    let b = body(r);
    let v = b.split("<dialog-info").nth(1).and_then(|s| s.split(" version=\"").nth(1)).and_then(|s| s.split('"').next()).expect("version attribute");
    v.parse().unwrap()
}

fn attr<'a>(body: &'a str, name: &str) -> &'a str {
    body.split(&format!(" {name}=\"")).nth(1).and_then(|s| s.split('"').next()).unwrap_or("")
}

/// Subscribes `p` to `user`; returns the 200 and the first NOTIFY (not yet answered).
fn subscribe(w: &mut World, p: &Phone, user: &str, extra: &str) -> (Response, Request) {
    let since = w.sent.len();
    w.deliver(p.peer, &subscribe_text(p, user, &format!("Event: dialog\n{extra}")));
    let ok = w.last_response_to(p.peer, since);
    assert_eq!(ok.status, 200, "SUBSCRIBE accepted");
    let n = notifies(w, p, since);
    assert_eq!(n.len(), 1, "one immediate NOTIFY (RFC 6665 §4.2.2)");
    (ok, n.into_iter().next().unwrap())
}

fn bob() -> Phone {
    let mut b = Phone::new("bob", 5070);
    b.call_id = "bob-call@test".into();
    b
}

#[test]
fn subscribe_notify_park_retrieve_versions_rfc6665_rfc4235() {
    let mut w = World::new();
    let wa = watcher("w1", 5090);
    let (ok, n0) = subscribe(&mut w, &wa, "701", "");
    // RFC 6665 §4.2.1.1: 200 with the granted Expires (default 3600) and a Contact; the dialog gets parkd's tag.
    assert_eq!(ok.common.header("Expires"), Some("3600"));
    assert_eq!(ok.common.contact.len(), 1);
    let tag = ok.common.to.tag().unwrap().to_string();
    assert_eq!(n0.common.from.tag(), Some(tag.as_str()), "NOTIFY in the SUBSCRIBE's dialog");
    assert_eq!(n0.common.to.tag(), Some("w1-tag"));
    assert_eq!(n0.common.header("Event"), Some("dialog"));
    assert_eq!(n0.common.header("Subscription-State"), Some("active;expires=3600"));
    assert_eq!(n0.common.content_type.as_deref(), Some("application/dialog-info+xml"));
    assert_eq!(n0.uri.to_string(), "sip:w1@127.0.0.1:5090", "sent to the subscriber's Contact");
    assert_eq!(version(&n0), 0);
    let b0 = body(&n0);
    assert!(b0.contains(r#"entity="sip:701@127.0.0.1:5060""#), "{b0}");
    assert!(b0.contains("<state>terminated</state>") && !b0.contains("call-id"), "empty orbit: {b0}");
    w.deliver(wa.peer, &reply_text(&n0, 200, "OK"));

    let since = w.sent.len();
    let bob = bob();
    let parkd_tag = w.park(&bob, "701", ParkAs::ALICE).tag;
    let n = notifies(&w, &wa, since);
    assert_eq!(n.len(), 1, "one NOTIFY per change");
    let b1 = body(&n[0]);
    assert_eq!(version(&n[0]), 1);
    assert!(b1.contains("<state>confirmed</state>"), "{b1}");
    // RFC 4235 §4.1.2: local-tag is parkd's (the observed orbit), remote-tag the parked party's.
    assert_eq!(attr(&b1, "call-id"), "bob-call@test");
    assert_eq!(attr(&b1, "local-tag"), parkd_tag);
    assert_eq!(attr(&b1, "remote-tag"), "bob-tag");
    assert_eq!(attr(&b1, "direction"), "recipient");
    assert!(b1.contains("<remote><identity>sip:bob@127.0.0.1:5070</identity>"), "{b1}");
    assert!(n[0].common.cseq.seq > n0.common.cseq.seq);
    w.deliver(wa.peer, &reply_text(&n[0], 200, "OK"));

    let since = w.sent.len();
    let carol = Phone { call_id: "carol-call@test".into(), ..Phone::new("carol", 5071) };
    w.deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(carol.peer, since).status, 200, "retrieved");
    let n = notifies(&w, &wa, since);
    assert_eq!(n.len(), 1);
    assert_eq!(version(&n[0]), 2);
    assert!(body(&n[0]).contains("<state>terminated</state>"));
    w.deliver(wa.peer, &reply_text(&n[0], 200, "OK"));
}

#[test]
fn changes_while_a_notify_is_pending_are_sent_after_it_in_order_rfc6665_4_2_1() {
    let mut w = World::new();
    let wa = watcher("w1", 5090);
    let (_, n0) = subscribe(&mut w, &wa, "701", "");
    let since = w.sent.len();
    let bob = bob();
    let parkd_tag = w.park(&bob, "701", ParkAs::ALICE).tag;
    w.deliver(bob.peer, &bob.in_dialog("BYE", "701", &parkd_tag, 2, None));
    assert!(notifies(&w, &wa, since).is_empty(), "no second NOTIFY while the first is unanswered");
    w.deliver(wa.peer, &reply_text(&n0, 200, "OK"));
    let n = notifies(&w, &wa, since);
    assert_eq!(n.len(), 1, "the two changes collapse into the latest state");
    assert_eq!(version(&n[0]), 1);
    assert!(body(&n[0]).contains("<state>terminated</state>"), "latest state: orbit empty again");
}

#[test]
fn refresh_resets_expiry_and_renotifies_rfc6665_4_2_1_2() {
    let mut w = World::new();
    let wa = watcher("w1", 5090);
    let (ok, n0) = subscribe(&mut w, &wa, "701", "Expires: 600\n");
    assert_eq!(ok.common.header("Expires"), Some("600"));
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(wa.peer, &reply_text(&n0, 200, "OK"));
    w.advance(Duration::from_secs(500));
    let since = w.sent.len();
    w.deliver(wa.peer, &refresh_text(&wa, "701", &tag, 2, 7200));
    let r = w.last_response_to(wa.peer, since);
    assert_eq!((r.status, r.common.header("Expires")), (200, Some("3600")), "capped at 3600");
    let n = notifies(&w, &wa, since);
    assert_eq!(n.len(), 1, "a refresh is followed by a NOTIFY");
    assert_eq!(n[0].common.header("Subscription-State"), Some("active;expires=3600"));
    assert_eq!(version(&n[0]), 1);
    w.deliver(wa.peer, &reply_text(&n[0], 200, "OK"));
    // The old deadline (600 s after the SUBSCRIBE) passes without effect.
    let since = w.sent.len();
    w.advance(Duration::from_secs(200));
    assert!(notifies(&w, &wa, since).is_empty());
    assert_eq!(w.core.live().subscriptions, 1);
}

#[test]
fn unsubscribe_with_expires_zero_sends_terminated_notify_rfc6665_4_2_1_4() {
    let mut w = World::new();
    let wa = watcher("w1", 5090);
    let (ok, n0) = subscribe(&mut w, &wa, "701", "");
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(wa.peer, &reply_text(&n0, 200, "OK"));
    let since = w.sent.len();
    w.deliver(wa.peer, &refresh_text(&wa, "701", &tag, 2, 0));
    let r = w.last_response_to(wa.peer, since);
    assert_eq!((r.status, r.common.header("Expires")), (200, Some("0")));
    let n = notifies(&w, &wa, since);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].common.header("Subscription-State"), Some("terminated;reason=timeout"));
    assert_eq!(version(&n[0]), 1);
    w.deliver(wa.peer, &reply_text(&n[0], 200, "OK"));
    assert_eq!(w.core.live().subscriptions, 0);
    // The dialog is gone: a later refresh gets 481, a park no NOTIFY.
    let since = w.sent.len();
    w.deliver(wa.peer, &refresh_text(&wa, "701", &tag, 3, 600));
    assert_eq!(w.last_response_to(wa.peer, since).status, 481);
    w.park(&bob(), "701", ParkAs::ALICE);
    assert!(notifies(&w, &wa, since).is_empty());
}

#[test]
fn fetch_with_expires_zero_gets_state_once() {
    // RFC 6665 §4.4.3: an initial SUBSCRIBE with Expires: 0 fetches the state in one terminating NOTIFY.
    let mut w = World::new();
    w.park(&bob(), "701", ParkAs::ALICE);
    let wa = watcher("w1", 5090);
    let (ok, n0) = subscribe(&mut w, &wa, "701", "Expires: 0\n");
    assert_eq!(ok.common.header("Expires"), Some("0"));
    assert_eq!(n0.common.header("Subscription-State"), Some("terminated;reason=timeout"));
    assert!(body(&n0).contains("<state>confirmed</state>"));
    w.deliver(wa.peer, &reply_text(&n0, 200, "OK"));
    assert_eq!(w.core.live().subscriptions, 0);
}

#[test]
fn subscription_expires_exactly_at_expires_seconds() {
    let mut w = World::new();
    let wa = watcher("w1", 5090);
    let (_, n0) = subscribe(&mut w, &wa, "701", "Expires: 120\n");
    w.deliver(wa.peer, &reply_text(&n0, 200, "OK"));
    let since = w.sent.len();
    w.advance(Duration::from_micros(120_000_000 - 1));
    assert!(notifies(&w, &wa, since).is_empty(), "nothing before the deadline");
    assert!(w.core.poll_timeout().is_some(), "poll_timeout includes the subscription expiry");
    w.advance(Duration::from_micros(1));
    let n = notifies(&w, &wa, since);
    assert_eq!(n.len(), 1, "expired at exactly 120 s");
    assert_eq!(n[0].common.header("Subscription-State"), Some("terminated;reason=timeout"));
    w.deliver(wa.peer, &reply_text(&n[0], 200, "OK"));
    w.advance(Duration::from_secs(60));
    assert_eq!(w.core.live(), super::Live::default(), "everything released");
}

#[test]
fn broken_subscribes_are_refused_400_404_423_489() {
    let mut w = World::new();
    let wa = watcher("w1", 5090);
    let cases: [(&str, &str, u16); 6] = [
        ("701", "Event: presence\n", 489),
        ("701", "", 400),
        ("701", "Event: ;x\n", 400),
        ("799", "Event: dialog\n", 404),
        ("701", "Event: dialog\nExpires: 10\n", 423),
        ("701", "Event: dialog\nExpires: soon\n", 400),
    ];
    for (i, (user, extra, status)) in cases.into_iter().enumerate() {
        let p = Phone { call_id: format!("bad-{i}"), ..watcher("w1", 5090) };
        let since = w.sent.len();
        w.deliver(p.peer, &subscribe_text(&p, user, extra));
        let r = w.last_response_to(p.peer, since);
        assert_eq!(r.status, status, "{extra:?}");
        if status == 489 {
            // RFC 6665 §8.2.2: 489 lists the packages parkd serves.
            assert_eq!(r.common.header("Allow-Events"), Some("dialog"));
        }
        if status == 423 {
            assert_eq!(r.common.header("Min-Expires"), Some("60"), "RFC 6665 §4.2.1.1");
        }
    }
    assert!(notifies(&w, &wa, 0).is_empty());
    assert_eq!(w.core.live().subscriptions, 0);
}

#[test]
fn two_watchers_are_both_notified_and_others_orbits_are_not() {
    let mut w = World::new();
    let wa = watcher("w1", 5090);
    let wb = watcher("w2", 5091);
    let wc = watcher("w3", 5092);
    for (p, user) in [(&wa, "701"), (&wb, "701"), (&wc, "702")] {
        let (_, n0) = subscribe(&mut w, p, user, "");
        w.deliver(p.peer, &reply_text(&n0, 200, "OK"));
    }
    let since = w.sent.len();
    w.park(&bob(), "701", ParkAs::ALICE);
    assert_eq!(notifies(&w, &wa, since).len(), 1);
    assert_eq!(notifies(&w, &wb, since).len(), 1);
    assert!(notifies(&w, &wc, since).is_empty(), "a change costs only the watchers of that orbit");
}

#[test]
fn park_code_subscription_lists_every_occupied_orbit() {
    let mut w = World::new();
    let wa = watcher("w1", 5090);
    let (_, n0) = subscribe(&mut w, &wa, "700", "");
    assert!(!body(&n0).contains("<dialog "), "empty lot: no dialog");
    assert!(body(&n0).contains(r#"entity="sip:700@127.0.0.1:5060""#));
    w.deliver(wa.peer, &reply_text(&n0, 200, "OK"));
    w.park(&bob(), "701", ParkAs::ALICE);
    let n1 = notifies(&w, &wa, 0).pop().unwrap();
    w.deliver(wa.peer, &reply_text(&n1, 200, "OK"));
    let since = w.sent.len();
    let dave = Phone { call_id: "dave-call@test".into(), ..Phone::new("dave", 5073) };
    w.park(&dave, "703", ParkAs::ALICE);
    let n2 = notifies(&w, &wa, since);
    assert_eq!(n2.len(), 1);
    let b = body(&n2[0]);
    assert_eq!(b.matches("<dialog ").count(), 2, "{b}");
    assert!(b.contains("<local><identity>sip:701@127.0.0.1:5060</identity>") && b.contains("sip:703@127.0.0.1:5060"), "{b}");
}

#[test]
fn notify_481_or_timeout_ends_the_subscription_rfc6665_4_2_2() {
    let mut w = World::new();
    let wa = watcher("w1", 5090);
    let (_, n0) = subscribe(&mut w, &wa, "701", "");
    w.deliver(wa.peer, &reply_text(&n0, 481, "Call/Transaction Does Not Exist"));
    assert_eq!(w.core.live().subscriptions, 0);
    let since = w.sent.len();
    w.park(&bob(), "701", ParkAs::ALICE);
    assert!(notifies(&w, &wa, since).is_empty(), "no NOTIFY after a 481");

    // A watcher that never answers: Timer F (32 s) ends its subscription.
    let wb = watcher("w2", 5091);
    subscribe(&mut w, &wb, "702", "");
    assert_eq!(w.core.live().subscriptions, 1);
    w.advance(Duration::from_secs(33));
    assert_eq!(w.core.live().subscriptions, 0);
}

#[test]
fn early_state_is_configurable_per_lot() {
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    lot.blf_occupied_state = BlfOccupiedState::Early;
    let mut w = World::with_lots(vec![lot]);
    let wa = watcher("w1", 5090);
    let (_, n0) = subscribe(&mut w, &wa, "701", "");
    w.deliver(wa.peer, &reply_text(&n0, 200, "OK"));
    w.park(&bob(), "701", ParkAs::ALICE);
    let n = notifies(&w, &wa, 0);
    assert!(body(n.last().unwrap()).contains("<state>early</state>"));
}

#[test]
fn retrieve_with_replaces_built_from_the_blf_body_rfc3891() {
    let mut w = World::new();
    let wa = watcher("w1", 5090);
    let (_, n0) = subscribe(&mut w, &wa, "701", "");
    w.deliver(wa.peer, &reply_text(&n0, 200, "OK"));
    w.park(&bob(), "701", ParkAs::ALICE);
    let b = body(&notifies(&w, &wa, 0).pop().unwrap());
    // What a phone does with a `recipient` dialog: to-tag = local-tag (parkd), from-tag = remote-tag.
    let replaces = format!("Replaces: {};to-tag={};from-tag={}\n", attr(&b, "call-id"), attr(&b, "local-tag"), attr(&b, "remote-tag"));
    let carol = Phone { call_id: "carol-call@test".into(), ..Phone::new("carol", 5071) };
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("701", &replaces, Some(&carol.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(carol.peer, since).status, 200);
}

fn restricted_world() -> World {
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    let only = |n: &str| Some(vec![n.parse().unwrap()]);
    // The test phones are all on 127.0.0.1; 127.0.0.2 is "another source".
    lot.allow_park = only("127.0.0.1/32");
    lot.allow_retrieve = only("127.0.0.1/32");
    lot.allow_subscribe = only("10.0.0.0/8");
    World::with_lots(vec![lot])
}

#[test]
fn forbidden_sources_get_403_for_park_retrieve_and_subscribe() {
    let mut w = restricted_world();
    let wa = watcher("w1", 5090);
    w.deliver(wa.peer, &subscribe_text(&wa, "701", "Event: dialog\n"));
    let r = w.last_response_to(wa.peer, 0);
    assert_eq!(r.status, 403);
    assert!(r.reason.contains("Subscribe"), "{}", r.reason);

    let mut eve = Phone { call_id: "eve-call@test".into(), ..Phone::new("eve", 5075) };
    eve.peer.addr = "127.0.0.2:5075".parse().unwrap();
    let since = w.sent.len();
    w.deliver(eve.peer, &eve.invite("701", "Referred-By: <sip:alice@h>\n", Some(&eve.sdp("0", "sendrecv"))));
    let r = w.last_response_to(eve.peer, since);
    assert_eq!(r.status, 403);
    assert!(r.reason.contains("Park"), "{}", r.reason);

    let bob = bob();
    let parkd_tag = w.park(&bob, "702", ParkAs::ALICE).tag;
    let since = w.sent.len();
    let eve2 = Phone { call_id: "eve2-call@test".into(), ..eve };
    w.deliver(eve2.peer, &eve2.invite("702", "", Some(&eve2.sdp("0", "sendrecv"))));
    let r = w.last_response_to(eve2.peer, since);
    assert_eq!(r.status, 403);
    assert!(r.reason.contains("Retrieve"), "{}", r.reason);
    let eve3 = Phone { call_id: "eve3-call@test".into(), ..eve2 };
    let since = w.sent.len();
    let replaces = format!("Replaces: bob-call@test;to-tag={parkd_tag};from-tag=bob-tag\n");
    w.deliver(eve3.peer, &eve3.invite("702", &replaces, Some(&eve3.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(eve3.peer, since).status, 403, "retrieve by Replaces is guarded too");
    assert_eq!(w.core.live().orbits_occupied, 1, "the parked call stays parked");
}

#[test]
fn options_advertises_subscribe_and_dialog_events() {
    let mut w = World::new();
    let p = watcher("w1", 5090);
    let text = subscribe_text(&p, "701", "").replace("SUBSCRIBE", "OPTIONS");
    w.deliver(p.peer, &text);
    let r = w.last_response_to(p.peer, 0);
    assert!(r.common.header("Allow").unwrap().contains("SUBSCRIBE"));
    assert_eq!(r.common.header("Allow-Events"), Some("dialog"));
}

/// The sections of a `multipart/related` NOTIFY body, split on its boundary (preamble and closing dropped).
fn parts(r: &Request) -> Vec<String> {
    let ct = r.common.content_type.clone().unwrap_or_default();
    let boundary = ct.split("boundary=\"").nth(1).and_then(|s| s.split('"').next()).expect("a boundary");
    let b = body(r);
    let sections: Vec<String> = b.split(&format!("--{boundary}")).map(str::to_string).collect();
    assert_eq!(sections.last().map(String::as_str), Some("--\r\n"), "closing delimiter: {b}");
    sections[1..sections.len() - 1].to_vec()
}

#[test]
fn eventlist_subscription_gets_rfc4662_full_then_partial_state() {
    let mut w = World::new();
    let wa = watcher("w1", 5090);
    let list = "Supported: eventlist\nAccept: application/rlmi+xml, multipart/related\n";
    let (ok, n0) = subscribe(&mut w, &wa, "700", list);
    let tag = ok.common.to.tag().unwrap().to_string();
    assert_eq!(ok.common.header("Require"), Some("eventlist"), "RFC 4662 §5.1: the list is acknowledged");
    assert_eq!(n0.common.header("Require"), Some("eventlist"));
    let ct = n0.common.content_type.clone().unwrap();
    assert!(ct.starts_with("multipart/related;type=\"application/rlmi+xml\";start=\"<"), "{ct}");
    // Full state: the RLMI root, then one dialog-info per orbit of the lot (701-705), each at its version 0.
    let p = parts(&n0);
    assert_eq!(p.len(), 6, "root + 5 orbits");
    assert!(p[0].contains("Content-Type: application/rlmi+xml") && p[0].contains(r#"uri="sip:700@127.0.0.1:5060" version="0" fullState="true""#), "{}", p[0]);
    assert_eq!(p[0].matches("<resource ").count(), 5);
    let root_cid = ct.split("start=\"<").nth(1).unwrap().split('>').next().unwrap();
    assert!(p[0].contains(&format!("Content-ID: <{root_cid}>")), "start names the root");
    for (i, orbit) in ["701", "702", "703", "704", "705"].iter().enumerate() {
        let cid = p[0].split(&format!("<resource uri=\"sip:{orbit}@127.0.0.1:5060\">")).nth(1).and_then(|s| s.split("cid=\"").nth(1)).and_then(|s| s.split('"').next()).unwrap();
        assert!(p[i + 1].contains(&format!("Content-ID: <{cid}>")), "resource {orbit}'s cid names its part");
        assert!(p[i + 1].contains(&format!(r#"version="0" state="full" entity="sip:{orbit}@127.0.0.1:5060""#)), "{}", p[i + 1]);
        assert!(p[i + 1].contains("<state>terminated</state>"), "free orbit");
    }
    w.deliver(wa.peer, &reply_text(&n0, 200, "OK"));

    // A park in 703: partial state with 703 alone, confirmed, at its version 1.
    let since = w.sent.len();
    w.park(&bob(), "703", ParkAs::ALICE);
    let n1 = notifies(&w, &wa, since);
    assert_eq!(n1.len(), 1);
    let p = parts(&n1[0]);
    assert_eq!(p.len(), 2, "root + the one orbit that changed");
    assert!(p[0].contains(r#"version="1" fullState="false""#) && p[0].matches("<resource ").count() == 1, "{}", p[0]);
    assert!(p[1].contains(r#"version="1" state="full" entity="sip:703@127.0.0.1:5060""#) && p[1].contains("<state>confirmed</state>"), "{}", p[1]);
    assert!(p[1].contains(r#"call-id="bob-call@test""#));
    w.deliver(wa.peer, &reply_text(&n1[0], 200, "OK"));

    // A refresh brings the full state back; 703 is at its version 2, the others at 1.
    let since = w.sent.len();
    w.deliver(wa.peer, &refresh_text(&wa, "700", &tag, 2, 600));
    assert_eq!(w.last_response_to(wa.peer, since).common.header("Require"), Some("eventlist"));
    let n2 = notifies(&w, &wa, since);
    let p = parts(&n2[0]);
    assert_eq!(p.len(), 6);
    assert!(p[0].contains(r#"version="2" fullState="true""#));
    assert!(p[3].contains(r#"version="2" state="full" entity="sip:703@"#) && p[1].contains(r#"version="1" state="full" entity="sip:701@"#));
    w.deliver(wa.peer, &reply_text(&n2[0], 200, "OK"));

    // A phone that does not ask keeps the one-body form for the same lot.
    let wb = watcher("w2", 5091);
    let (ok, n) = subscribe(&mut w, &wb, "700", "");
    assert_eq!(ok.common.header("Require"), None);
    assert_eq!(n.common.content_type.as_deref(), Some("application/dialog-info+xml"));
    assert_eq!(body(&n).matches("<dialog ").count(), 1, "the occupied orbit only");
}
