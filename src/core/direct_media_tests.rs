//! Direct media (`direct_media = true`) at message level, in virtual time: the re-INVITE pair, 488 at either
//! step, glare both ways with the RFC 3261 §14.1 back-off, no direct media for a NAT-latched leg, a refresh and a
//! new offer afterwards, and a re-park by REFER bringing the kept phone back to parkd.

use super::testkit::{ParkAs, Phone, World, LEG_20000, LEG_20002};
use super::direct_media::SETTLE;
use crate::config::LotConfig;
use crate::media::MediaCommand;
use crate::sip::{Method, Request};
use std::time::Duration;

fn phone(name: &'static str, port: u16) -> Phone {
    Phone { call_id: format!("{name}-call"), ..Phone::new(name, port) }
}

fn world() -> World {
    let mut lot = LotConfig::default_lot();
    lot.direct_media = true;
    lot.keepalive_interval = 0;
    World::with_lots(vec![lot])
}

fn invites(w: &World, p: &Phone, since: usize) -> Vec<Request> {
    let mut out: Vec<Request> = w.requests_to(p.peer, since).into_iter().filter(|r| r.method == Method::Invite).collect();
    out.dedup_by_key(|r| r.common.cseq.seq);
    out
}

fn acks(w: &World, p: &Phone, since: usize) -> usize {
    w.requests_to(p.peer, since).iter().filter(|r| r.method == Method::Ack).count()
}

fn media_line(r: &Request) -> String {
    String::from_utf8_lossy(&r.common.body).lines().filter(|l| l.starts_with("c=") || l.starts_with("m=")).collect::<Vec<_>>().join("|")
}

/// Bob parked in 701 (blind transfer), Carol retrieves him: parkd's tag of Carol's dialog and of Bob's.
fn bridged(w: &mut World, bob: &Phone, carol: &Phone) -> (String, String) {
    let bob_tag = w.park(bob, "700", ParkAs::ALICE).tag;
    let carol_tag = w.park(carol, "701", ParkAs::SELF).tag;
    assert!(w.media.iter().any(|m| matches!(m, MediaCommand::Bridge { .. })), "relaying first");
    (carol_tag, bob_tag)
}

/// The pair up to the re-INVITE to Bob: returns it.
fn first_reinvite(w: &mut World, bob: &Phone) -> Request {
    let since = w.sent.len();
    w.advance(SETTLE);
    let inv = invites(w, bob, since);
    assert_eq!(inv.len(), 1, "a re-INVITE to the parked phone once the bridge settled");
    inv[0].clone()
}

#[test]
fn the_pair_gives_each_phone_the_others_address_then_parkd_stops_relaying_and_a_hangup_still_works() {
    let mut w = world();
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    let (carol_tag, _) = bridged(&mut w, &bob, &carol);
    let inv = first_reinvite(&mut w, &bob);
    assert_eq!(media_line(&inv), "c=IN IP4 127.0.0.1|m=audio 15071 RTP/AVP 0", "Carol's c=/m= address");
    assert_eq!(inv.common.to.tag(), Some("bob-tag"), "in Bob's dialog");
    let since = w.sent.len();
    let media_before = w.media.len();
    w.deliver(bob.peer, &bob.answer(&inv, 200, "OK", Some(&bob.sdp("0", "sendrecv"))));
    assert_eq!(acks(&w, &bob, since), 1, "Bob's 2xx is ACKed");
    let to_carol = invites(&w, &carol, since);
    assert_eq!(to_carol.len(), 1, "then Carol is re-INVITEd");
    assert_eq!(media_line(&to_carol[0]), "c=IN IP4 127.0.0.1|m=audio 15070 RTP/AVP 0", "with Bob's address");
    assert!(!w.media[media_before..].iter().any(|m| matches!(m, MediaCommand::Stop { .. })), "still relaying until both answered");
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.answer(&to_carol[0], 200, "OK", Some(&carol.sdp("0", "sendrecv"))));
    assert_eq!(acks(&w, &carol, since), 1);
    let stops: Vec<_> = w.media[media_before..].iter().filter_map(|m| if let MediaCommand::Stop { leg } = m { Some(*leg) } else { None }).collect();
    assert_eq!(stops, [LEG_20000, LEG_20002], "both media-plane legs freed");
    // A retransmitted 2xx is ACKed again.
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.answer(&to_carol[0], 200, "OK", Some(&carol.sdp("0", "sendrecv"))));
    assert_eq!(acks(&w, &carol, since), 1);
    // A re-INVITE from Carol with the same SDP (a refresh) is answered with Bob's address again.
    let since = w.sent.len();
    let media_before = w.media.len();
    w.deliver(carol.peer, &carol.in_dialog("INVITE", "701", &carol_tag, 2, Some(&carol.sdp("0", "sendrecv"))));
    assert!(w.media[media_before..].is_empty(), "a refresh in direct media does not wake the relay: {:?}", &w.media[media_before..]);
    let ok = w.last_response_to(carol.peer, since);
    assert_eq!(ok.status, 200);
    assert!(String::from_utf8_lossy(&ok.common.body).contains("m=audio 15070 "), "still direct");
    w.deliver(carol.peer, &carol.ack("701", &carol_tag, 2, None));
    // Carol hangs up: Bob gets a BYE, everything is released.
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.in_dialog("BYE", "701", &carol_tag, 3, None));
    assert!(w.requests_to(bob.peer, since).iter().any(|r| r.method == Method::Bye));
    assert_eq!((w.core.live().legs, w.core.live().rtp_ports_in_use), (0, 0));
}

#[test]
fn a_488_from_the_parked_phone_keeps_parkd_relaying_and_nothing_else_is_sent() {
    let mut w = world();
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    bridged(&mut w, &bob, &carol);
    let inv = first_reinvite(&mut w, &bob);
    let since = w.sent.len();
    let media_before = w.media.len();
    w.deliver(bob.peer, &bob.answer(&inv, 488, "Not Acceptable Here", None));
    w.advance(Duration::from_secs(10));
    assert!(invites(&w, &carol, since).is_empty() && invites(&w, &bob, since).is_empty(), "not tried again");
    assert!(!w.media[media_before..].iter().any(|m| matches!(m, MediaCommand::Stop { .. })), "the relay stays");
}

#[test]
fn a_488_from_the_second_phone_brings_the_first_back_to_parkds_address() {
    let mut w = world();
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    bridged(&mut w, &bob, &carol);
    let inv = first_reinvite(&mut w, &bob);
    w.deliver(bob.peer, &bob.answer(&inv, 200, "OK", Some(&bob.sdp("0", "sendrecv"))));
    let to_carol = invites(&w, &carol, 0).pop().unwrap();
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.answer(&to_carol, 488, "Not Acceptable Here", None));
    let back = invites(&w, &bob, since);
    assert_eq!(back.len(), 1, "Bob is re-INVITEd back");
    assert_eq!(media_line(&back[0]), "c=IN IP4 127.0.0.1|m=audio 20000 RTP/AVP 0", "to parkd's own RTP port");
    let media_before = w.media.len();
    w.deliver(bob.peer, &bob.answer(&back[0], 200, "OK", Some(&bob.sdp("0", "sendrecv"))));
    assert!(w.media[media_before..].iter().any(|m| matches!(m, MediaCommand::Bridge { .. })), "the relay bridge is set up again");
}

#[test]
fn glare_as_sender_retries_after_the_back_off_and_as_receiver_answers_491() {
    let mut w = world();
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    let (_, bob_tag) = bridged(&mut w, &bob, &carol);
    let inv = first_reinvite(&mut w, &bob);
    // Bob's own re-INVITE crosses parkd's: parkd answers it 491 (RFC 3261 §14.2)...
    let since = w.sent.len();
    w.deliver(bob.peer, &bob.in_dialog("INVITE", "700", &bob_tag, 2, Some(&bob.sdp("0", "sendonly"))));
    assert_eq!(w.last_response_to(bob.peer, since).status, 491);
    // ...and Bob answers parkd's 491 too: parkd sends again within 0–2 s (Bob chose the Call-ID).
    w.deliver(bob.peer, &bob.answer(&inv, 491, "Request Pending", None));
    let since = w.sent.len();
    w.advance(Duration::from_millis(2001));
    let again = invites(&w, &bob, since);
    assert_eq!(again.len(), 1, "sent again after the back-off");
    assert!(again[0].common.cseq.seq > inv.common.cseq.seq);
    assert_eq!(media_line(&again[0]), media_line(&inv), "the same offer");
}

#[test]
fn glare_on_a_dialog_parkd_started_backs_off_2_1_to_4_seconds() {
    let mut lot = LotConfig::default_lot();
    lot.direct_media = true;
    lot.keepalive_interval = 0;
    let mut w = World::with_lots(vec![lot]);
    let bob = phone("bob", 5070);
    let r = w.recall_ringing(bob, ParkAs::ALICE, Duration::from_secs(45));
    w.deliver(r.alice.peer, &r.alice.answer(&r.invite, 200, "OK", Some(&r.alice.sdp("0", "sendrecv"))));
    let inv = first_reinvite(&mut w, &r.bob);
    w.deliver(r.bob.peer, &r.bob.answer(&inv, 200, "OK", Some(&r.bob.sdp("0", "sendrecv"))));
    let to_alice = invites(&w, &r.alice, 0).into_iter().rfind(|i| i.common.to.tag().is_some()).expect("re-INVITE to Alice");
    assert!(String::from_utf8_lossy(&to_alice.common.body).contains("m=audio 15070 "), "Bob's address");
    w.deliver(r.alice.peer, &r.alice.answer(&to_alice, 491, "Request Pending", None));
    let since = w.sent.len();
    w.advance(Duration::from_millis(2099));
    assert!(invites(&w, &r.alice, since).is_empty(), "not before 2.1 s: parkd owns the Call-ID");
    w.advance(Duration::from_millis(1901));
    assert_eq!(invites(&w, &r.alice, since).len(), 1, "by 4 s");
}

#[test]
fn a_nat_latched_leg_gets_no_direct_media() {
    let mut w = world();
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    bridged(&mut w, &bob, &carol);
    // Carol's RTP comes from another address than her SDP names (the media plane latched to it).
    let now = w.now;
    w.core.handle_media_report(now, crate::media::MediaReport::Latched { leg: LEG_20002, source: "127.0.0.9:40000".parse().unwrap() });
    let since = w.sent.len();
    w.advance(Duration::from_secs(5));
    assert!(invites(&w, &bob, since).is_empty() && invites(&w, &carol, since).is_empty());
}

#[test]
fn a_refer_repark_after_direct_media_brings_the_kept_phone_back_to_parkd() {
    let mut w = world();
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    let (carol_tag, _) = bridged(&mut w, &bob, &carol);
    let inv = first_reinvite(&mut w, &bob);
    w.deliver(bob.peer, &bob.answer(&inv, 200, "OK", Some(&bob.sdp("0", "sendrecv"))));
    let to_carol = invites(&w, &carol, 0).pop().unwrap();
    w.deliver(carol.peer, &carol.answer(&to_carol, 200, "OK", Some(&carol.sdp("0", "sendrecv"))));
    let since = w.sent.len();
    let refer = carol.in_dialog("REFER", "701", &carol_tag, 2, None).replacen("Contact:", "Refer-To: <sip:700@127.0.0.1:5060>\nContact:", 1);
    w.deliver(carol.peer, &refer);
    assert!(w.media.iter().rev().any(|m| matches!(m, MediaCommand::Hold { leg: LEG_20000, .. })), "music for Bob");
    let back = invites(&w, &bob, since);
    assert_eq!(back.len(), 1, "Bob is re-INVITEd back to parkd");
    assert_eq!(media_line(&back[0]), "c=IN IP4 127.0.0.1|m=audio 20000 RTP/AVP 0");
    w.deliver(bob.peer, &bob.answer(&back[0], 200, "OK", Some(&bob.sdp("0", "sendrecv"))));
    assert_eq!(w.core.live().orbits_occupied, 1, "Bob is parked again");
}

#[test]
fn a_new_offer_after_direct_media_takes_the_call_back_to_relaying() {
    let mut w = world();
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    let (carol_tag, _) = bridged(&mut w, &bob, &carol);
    let inv = first_reinvite(&mut w, &bob);
    w.deliver(bob.peer, &bob.answer(&inv, 200, "OK", Some(&bob.sdp("0", "sendrecv"))));
    let to_carol = invites(&w, &carol, 0).pop().unwrap();
    w.deliver(carol.peer, &carol.answer(&to_carol, 200, "OK", Some(&carol.sdp("0", "sendrecv"))));
    // Carol puts the call on hold: a new SDP version.
    let hold = carol.sdp("0", "sendonly").replace("o=carol 1 1", "o=carol 1 2");
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.in_dialog("INVITE", "701", &carol_tag, 2, Some(&hold)));
    let ok = w.last_response_to(carol.peer, since);
    assert_eq!(ok.status, 200);
    assert!(String::from_utf8_lossy(&ok.common.body).contains("m=audio 20002 "), "answered with parkd's own address");
    w.deliver(carol.peer, &carol.ack("701", &carol_tag, 2, None));
    w.advance(Duration::from_millis(1));
    let back = invites(&w, &bob, since);
    assert_eq!(back.len(), 1, "Bob is re-INVITEd back to parkd");
    assert_eq!(media_line(&back[0]), "c=IN IP4 127.0.0.1|m=audio 20000 RTP/AVP 0");
    let media_before = w.media.len();
    w.deliver(bob.peer, &bob.answer(&back[0], 200, "OK", Some(&bob.sdp("0", "sendrecv"))));
    assert!(w.media[media_before..].iter().any(|m| matches!(m, MediaCommand::Bridge { a: LEG_20000, b: LEG_20002 })), "relaying again");
    // And it is not tried again for this bridge.
    let since = w.sent.len();
    w.advance(Duration::from_secs(10));
    assert!(invites(&w, &bob, since).is_empty() && invites(&w, &carol, since).is_empty());
}

#[test]
fn differing_codecs_get_no_direct_media() {
    let mut w = world();
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    w.park(&bob, "700", ParkAs::ALICE);
    w.park(&carol, "701", ParkAs::SELF.pts("8"));
    let since = w.sent.len();
    w.advance(Duration::from_secs(5));
    assert!(invites(&w, &bob, since).is_empty() && invites(&w, &carol, since).is_empty(), "PCMU to PCMA: parkd keeps transcoding");
}
