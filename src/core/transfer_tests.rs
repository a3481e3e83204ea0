//! REFER re-park, attended park (swap by Replaces), retrieve code, empty-orbit policy and overflow, in virtual time.

use super::testkit::{ParkAs, Parked, Phone, World, LEG_20000, LEG_20002};
use super::ParkEvent;
use crate::config::{EmptyOrbit, LotConfig, NumRange};
use crate::media::MediaCommand;
use crate::sip::{Method, Request};
use std::time::Duration;

/// A blind transfer by Alice (Referred-By) and a self-park (none), offering PCMU.
const BLIND: ParkAs = ParkAs::ALICE;
const SELF_PARK: ParkAs = ParkAs::SELF;

fn phone(name: &'static str, port: u16) -> Phone {
    Phone { call_id: format!("{name}-call"), ..Phone::new(name, port) }
}

fn notifies(w: &World, to: &Phone, since: usize) -> Vec<Request> {
    w.requests_to(to.peer, since).into_iter().filter(|r| r.method == Method::Notify).collect()
}

/// Bob parked in 701, retrieved by Carol: returns parkd's tag of Carol's dialog.
fn bridged(w: &mut World, bob: &Phone, carol: &Phone) -> String {
    w.park(bob, "700", BLIND);
    let tag = w.park(carol, "701", SELF_PARK).tag;
    assert!(w.media.iter().any(|m| matches!(m, MediaCommand::Bridge { .. })));
    tag
}

fn refer(carol: &Phone, tag: &str, cseq: u32, refer_to: &str, extra: &str) -> String {
    carol.in_dialog("REFER", "701", tag, cseq, None).replacen("Contact:", &format!("Refer-To: {refer_to}\n{extra}Contact:"), 1)
}

#[test]
fn refer_from_a_bridged_leg_reparks_the_other_party_with_sipfrag_notifies() {
    let mut w = World::new();
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    let tag = bridged(&mut w, &bob, &carol);
    let since = w.sent.len();
    let media_before = w.media.len();
    w.deliver(carol.peer, &refer(&carol, &tag, 2, "<sip:700@127.0.0.1:5060>", ""));
    assert_eq!(w.responses_to(carol.peer, since)[0].status, 202);
    let n = notifies(&w, &carol, since);
    assert_eq!(n.len(), 2, "100 Trying then the final sipfrag");
    assert_eq!(&n[0].common.body[..], b"SIP/2.0 100 Trying\r\n");
    assert_eq!(n[0].common.header("Event"), Some("refer;id=2"));
    assert_eq!(&n[1].common.body[..], b"SIP/2.0 200 OK\r\nPark-Orbit: 701\r\n");
    assert!(n[1].common.header("Subscription-State").is_some_and(|s| s.starts_with("terminated")));
    assert!(n[1].common.cseq.seq > n[0].common.cseq.seq);
    assert!(w.media[media_before..].iter().any(|m| matches!(m, MediaCommand::Hold { leg: LEG_20000, .. })), "Bob hears music again");
    // Carol hangs up: Bob stays parked, no BYE to Bob.
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.in_dialog("BYE", "701", &tag, 3, None));
    assert_eq!(w.last_response_to(carol.peer, since).status, 200);
    assert!(w.requests_to(bob.peer, since).iter().all(|r| r.method != Method::Bye));
    assert_eq!(w.core.live().orbits_occupied, 1);
    // Dave retrieves Bob from 701.
    let dave = phone("dave", 5072);
    let since = w.sent.len();
    w.deliver(dave.peer, &dave.invite("701", "", Some(&dave.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(dave.peer, since).status, 200);
}

#[test]
fn refer_sub_false_gets_no_notify() {
    // RFC 4488: Refer-Sub: false → no implicit subscription.
    let mut w = World::new();
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    let tag = bridged(&mut w, &bob, &carol);
    let since = w.sent.len();
    w.deliver(carol.peer, &refer(&carol, &tag, 2, "<sip:705@127.0.0.1>", "Refer-Sub: false\n"));
    let r = &w.responses_to(carol.peer, since)[0];
    assert_eq!((r.status, r.common.header("Refer-Sub")), (202, Some("false")));
    assert!(notifies(&w, &carol, since).is_empty());
    assert!(matches!(w.events.last(), Some(ParkEvent::Parked { orbit, .. }) if orbit == "705"));
}

#[test]
fn refer_to_a_foreign_target_is_403_and_the_call_stays_bridged() {
    let mut w = World::new();
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    let tag = bridged(&mut w, &bob, &carol);
    let since = w.sent.len();
    w.deliver(carol.peer, &refer(&carol, &tag, 2, "<sip:+15551234567@pstn.example>", ""));
    assert_eq!(w.responses_to(carol.peer, since)[0].status, 403);
    assert_eq!(w.core.live().calls, 1);
    assert!(w.sent[since..].iter().all(|(p, _)| *p == carol.peer), "parkd dials nobody");
}

#[test]
fn refer_to_an_occupied_orbit_reports_486_in_the_sipfrag() {
    let mut w = World::new();
    let (bob, carol, dave) = (phone("bob", 5070), phone("carol", 5071), phone("dave", 5072));
    let tag = bridged(&mut w, &bob, &carol);
    w.park(&dave, "703", BLIND);
    let since = w.sent.len();
    w.deliver(carol.peer, &refer(&carol, &tag, 2, "sip:703@127.0.0.1", ""));
    let n = notifies(&w, &carol, since);
    assert_eq!(&n.last().unwrap().common.body[..], b"SIP/2.0 486 Busy Here\r\n");
    assert!(w.media.iter().rev().take(1).all(|m| !matches!(m, MediaCommand::Hold { leg: LEG_20000, .. })), "still bridged");
}

#[test]
fn out_of_dialog_refer_is_refused() {
    let mut w = World::new();
    let carol = phone("carol", 5071);
    let text = carol
        .invite("700", "Refer-To: <sip:700@127.0.0.1>\n", None)
        .replace("INVITE sip:", "REFER sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 REFER");
    w.deliver(carol.peer, &text);
    assert_eq!(w.last_response_to(carol.peer, 0).status, 403);
}

#[test]
fn attended_park_swaps_the_transferee_into_the_consultation_orbit() {
    // Alice dials 700 herself (consultation, no Referred-By): self-parked in 701 with parker unknown.
    let mut w = World::new();
    let (alice, bob) = (phone("alice", 5999), phone("bob", 5070));
    let Parked { tag: atag, orbit } = w.park(&alice, "700", SELF_PARK);
    assert_eq!(orbit, "701");
    // Alice REFERs Bob with Replaces naming her dialog with parkd; Bob's INVITE carries it.
    let replaces = format!("Replaces: {};to-tag={};from-tag={}\nReferred-By: <sip:alice@127.0.0.1:5999>\n", alice.call_id, atag, alice.tag);
    let since = w.sent.len();
    w.deliver(bob.peer, &bob.invite("700", &replaces, Some(&bob.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(bob.peer, since);
    assert_eq!((ok.status, ok.common.header("Park-Orbit")), (200, Some("701")));
    assert!(w.requests_to(alice.peer, since).iter().any(|r| r.method == Method::Bye), "the replaced leg is released");
    let media_before = w.media.len();
    w.deliver(bob.peer, &bob.ack("700", ok.common.to.tag().unwrap(), 1, None));
    assert!(w.media[media_before..].iter().any(|m| matches!(m, MediaCommand::Hold { leg: LEG_20002, .. })));
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::Swapped { parker: Some(p), .. } if p.contains("alice"))));
    // The recall goes to Alice, the parker.
    let since = w.sent.len();
    w.advance(Duration::from_secs(45));
    assert!(w.requests_to(alice.peer, since).iter().any(|r| r.method == Method::Invite));
}

#[test]
fn unmatched_replaces_to_the_park_code_is_481() {
    let mut w = World::new();
    let bob = phone("bob", 5070);
    w.deliver(bob.peer, &bob.invite("700", "Replaces: nope@x;to-tag=1;from-tag=2\n", Some(&bob.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(bob.peer, 0).status, 481);
}

#[test]
fn consultation_hangup_without_transfer_releases_the_orbit() {
    let mut w = World::new();
    let alice = phone("alice", 5999);
    let atag = w.park(&alice, "700", SELF_PARK).tag;
    w.deliver(alice.peer, &alice.in_dialog("BYE", "700", &atag, 2, None));
    assert_eq!(w.core.live().orbits_occupied, 0);
}

fn lot(name: &str, code: &str, orbits: &str) -> LotConfig {
    let mut l = LotConfig::default_lot();
    l.name = name.into();
    l.park_code = code.into();
    l.orbits = NumRange::parse(orbits).unwrap();
    l
}

#[test]
fn retrieve_code_takes_the_longest_parked_call() {
    let mut l = lot("default", "700", "701-705");
    l.retrieve_code = Some("799".into());
    let mut w = World::with_lots(vec![l]);
    let (bob, dave, carol) = (phone("bob", 5070), phone("dave", 5072), phone("carol", 5071));
    w.park(&bob, "703", BLIND);
    w.advance(Duration::from_secs(1));
    w.park(&dave, "701", BLIND);
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("799", "", Some(&carol.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(carol.peer, since);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.common.header("P-Asserted-Identity"), Some("<sip:bob@127.0.0.1:5070>"), "Bob was parked first");
    let eve = phone("eve", 5073);
    w.deliver(eve.peer, &eve.invite("799", "", Some(&eve.sdp("0", "sendrecv"))));
    let eve2 = phone("eve2", 5074);
    w.deliver(eve2.peer, &eve2.invite("799", "", Some(&eve2.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(eve2.peer, 0).status, 404, "lot empty");
}

#[test]
fn empty_orbit_policy_park_parks_a_caller_without_referred_by() {
    let mut l = lot("default", "700", "701-705");
    l.empty_orbit = EmptyOrbit::Park;
    let mut w = World::with_lots(vec![l]);
    let bob = phone("bob", 5070);
    let orbit = w.park(&bob, "705", SELF_PARK).orbit;
    assert_eq!(orbit, "705");
    // An occupied orbit still retrieves.
    let carol = phone("carol", 5071);
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("705", "", Some(&carol.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(carol.peer, since);
    assert_eq!(ok.common.header("P-Asserted-Identity"), Some("<sip:bob@127.0.0.1:5070>"));
}

#[test]
fn empty_orbit_default_rejects_with_404() {
    let mut w = World::new();
    let bob = phone("bob", 5070);
    w.deliver(bob.peer, &bob.invite("705", "", Some(&bob.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(bob.peer, 0).status, 404);
}

#[test]
fn full_lot_overflows_into_the_overflow_lot() {
    let mut a = lot("a", "700", "701-701");
    a.overflow_lot = Some("b".into());
    let b = lot("b", "800", "801-802");
    let mut w = World::with_lots(vec![a, b]);
    let (bob, dave) = (phone("bob", 5070), phone("dave", 5072));
    assert_eq!(w.park(&bob, "700", BLIND).orbit, "701");
    assert_eq!(w.park(&dave, "700", BLIND).orbit, "801", "overflow instead of a refusal");
}

#[test]
fn swap_and_empty_orbit_park_are_parks_for_the_access_lists() {
    let mut l = lot("default", "700", "701-705");
    l.empty_orbit = EmptyOrbit::Park;
    let mut w = World::with_lots(vec![l]);
    let (alice, bob, carol) = (phone("alice", 5999), phone("bob", 5070), phone("carol", 5071));
    let atag = w.park(&alice, "700", SELF_PARK).tag;
    // From now on, nobody on loopback may park; retrieving stays open.
    w.core.set_allow_park_for_tests(0, vec!["10.0.0.0/8".parse().unwrap()]);
    let replaces = format!("Replaces: {};to-tag={};from-tag={}\n", alice.call_id, atag, alice.tag);
    w.deliver(bob.peer, &bob.invite("700", &replaces, Some(&bob.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(bob.peer, 0).status, 403, "an attended-park swap is a park");
    w.deliver(carol.peer, &carol.invite("705", "", Some(&carol.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(carol.peer, 0).status, 403, "parking into an empty orbit is a park");
}
