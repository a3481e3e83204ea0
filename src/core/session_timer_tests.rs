//! Session timers (RFC 4028) at message level, in virtual time: 422, the phone refreshing (re-INVITE, UPDATE),
//! parkd refreshing (UPDATE, re-INVITE with the same SDP version), expiry → BYE with the orbit freed, a refresh
//! surviving a restore, and calls parkd makes offering timers.

use super::testkit::{ParkAs, Phone, World};
use super::ParkEvent;
use crate::sip::{Method, Request};
use std::time::Duration;

fn bob() -> Phone {
    Phone { call_id: "bob-call".into(), ..Phone::new("bob", 5070) }
}

fn world() -> World {
    let mut lot = crate::config::LotConfig::default_lot();
    lot.orbits = crate::config::NumRange::parse("701-705").unwrap();
    lot.parking_time = 0;
    lot.keepalive_interval = 0;
    lot.max_park_time = 0;
    World::with_lots(vec![lot])
}

/// The requests of `method` parkd sent to `p` since `since`, retransmissions left out.
fn sent(w: &World, p: &Phone, since: usize, method: Method) -> Vec<Request> {
    let mut out: Vec<Request> = w.requests_to(p.peer, since).into_iter().filter(|r| r.method == method).collect();
    out.dedup_by_key(|r| (r.common.call_id.clone(), r.common.cseq.seq));
    out
}

fn sdp_origin(body: &[u8]) -> String {
    String::from_utf8_lossy(body).lines().find(|l| l.starts_with("o=")).unwrap_or("").to_string()
}

#[test]
fn a_session_interval_below_the_minimum_gets_422_with_min_se() {
    let mut w = world();
    let b = bob();
    let since = w.sent.len();
    w.deliver(b.peer, &b.invite("700", "Session-Expires: 60\nSupported: timer\n", Some(&b.sdp("0", "sendrecv"))));
    let r = w.last_response_to(b.peer, since);
    assert_eq!(r.status, 422);
    assert_eq!(r.common.header("Min-SE"), Some("90"));
    assert_eq!(w.core.live().orbits_occupied, 0, "nothing was parked");
}

#[test]
fn the_phone_refreshes_by_reinvite_and_update_then_stops_and_its_leg_is_ended_with_the_orbit_freed() {
    let mut w = world();
    let mut b = bob();
    let since = w.sent.len();
    w.deliver(b.peer, &b.invite("700", "Session-Expires: 90\nSupported: timer\n", Some(&b.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(b.peer, since);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.common.header("Session-Expires"), Some("90;refresher=uac"));
    assert!(ok.common.headers_named("Require").any(|v| v.contains("timer")), "RFC 4028 §9: Require: timer when the UAC refreshes");
    assert!(ok.common.headers_named("Supported").any(|v| v.contains("timer")));
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(b.peer, &b.ack("700", &tag, 1, None));

    // A refresh by re-INVITE (same SDP) at 45 s, one by UPDATE at 90 s: the leg lives on past the first expiry.
    w.advance(Duration::from_secs(45));
    b.cseq = 2;
    let since = w.sent.len();
    let reinvite = b.in_dialog("INVITE", "700", &tag, 2, Some(&b.sdp("0", "sendrecv"))).replacen("Contact:", "Session-Expires: 90;refresher=uac\nSupported: timer\nContact:", 1);
    w.deliver(b.peer, &reinvite);
    let r = w.last_response_to(b.peer, since);
    assert_eq!((r.status, r.common.header("Session-Expires")), (200, Some("90;refresher=uac")));
    w.deliver(b.peer, &b.ack("700", &tag, 2, None));
    w.advance(Duration::from_secs(45));
    let since = w.sent.len();
    let update = b.in_dialog("UPDATE", "700", &tag, 3, None).replacen("Contact:", "Session-Expires: 90;refresher=uac\nSupported: timer\nContact:", 1);
    w.deliver(b.peer, &update);
    let r = w.last_response_to(b.peer, since);
    assert_eq!((r.status, r.common.header("Session-Expires")), (200, Some("90;refresher=uac")));
    assert!(r.common.body.is_empty(), "an UPDATE without SDP is answered without");
    assert!(sent(&w, &b, 0, Method::Bye).is_empty(), "refreshed: no BYE");
    assert_eq!(w.core.live().orbits_occupied, 1);

    // No more refreshes: the BYE goes out at interval - min(32, interval/3) = 60 s after the last one.
    let since = w.sent.len();
    w.advance(Duration::from_secs(59));
    assert!(sent(&w, &b, since, Method::Bye).is_empty(), "not before the expiry");
    w.advance(Duration::from_secs(1));
    let bye = sent(&w, &b, since, Method::Bye);
    assert_eq!(bye.len(), 1, "the expired leg gets a BYE");
    assert!(bye[0].common.header("Reason").is_some_and(|r| r.contains("Session expired")));
    assert_eq!(w.core.live().orbits_occupied, 0, "its orbit is free");
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::Abandoned { .. })), "reported as when the caller hangs up");
}

/// Parks Bob with `Session-Expires: 90;refresher=uas` (parkd refreshes) and `allow` as his Allow.
fn parked_parkd_refreshes(w: &mut World, b: &Phone, allow: &str) -> (String, String) {
    let since = w.sent.len();
    w.deliver(b.peer, &b.invite("700", &format!("Session-Expires: 90;refresher=uas\nSupported: timer\nAllow: {allow}\n"), Some(&b.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(b.peer, since);
    assert_eq!(ok.common.header("Session-Expires"), Some("90;refresher=uas"));
    assert!(!ok.common.headers_named("Require").any(|v| v.contains("timer")), "parkd refreshes: no Require");
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(b.peer, &b.ack("700", &tag, 1, None));
    (tag, sdp_origin(&ok.common.body))
}

#[test]
fn parkd_refreshes_by_update_when_the_phone_allows_it() {
    let mut w = world();
    let b = bob();
    parked_parkd_refreshes(&mut w, &b, "INVITE, ACK, BYE, UPDATE");
    let since = w.sent.len();
    w.advance(Duration::from_secs(44));
    assert!(sent(&w, &b, since, Method::Update).is_empty());
    w.advance(Duration::from_secs(1));
    let up = sent(&w, &b, since, Method::Update);
    assert_eq!(up.len(), 1, "an UPDATE at half the interval");
    assert_eq!(up[0].common.header("Session-Expires"), Some("90;refresher=uac"));
    assert!(up[0].common.body.is_empty());
    w.deliver(b.peer, &(b.ok_to(&up[0]) + "Session-Expires: 90;refresher=uac\n"));
    // Refreshed: the next at 45 s after this one, and no BYE for as long as the phone answers.
    for round in 0..4 {
        let since = w.sent.len();
        w.advance(Duration::from_secs(45));
        let up = sent(&w, &b, since, Method::Update);
        assert_eq!(up.len(), 1, "round {round}");
        w.deliver(b.peer, &b.ok_to(&up[0]));
    }
    assert!(sent(&w, &b, 0, Method::Bye).is_empty());
    assert_eq!(w.core.live().orbits_occupied, 1);
}

#[test]
fn parkd_refreshes_by_reinvite_with_the_same_sdp_version_and_acks_it() {
    let mut w = world();
    let b = bob();
    let (tag, origin) = parked_parkd_refreshes(&mut w, &b, "INVITE, ACK, BYE");
    let since = w.sent.len();
    w.advance(Duration::from_secs(45));
    let inv = sent(&w, &b, since, Method::Invite);
    assert_eq!(inv.len(), 1, "a re-INVITE: the phone does not allow UPDATE");
    assert_eq!(inv[0].common.to.tag(), Some("bob-tag"));
    assert_eq!(inv[0].common.from.tag(), Some(tag.as_str()));
    assert_eq!(sdp_origin(&inv[0].common.body), origin, "same o= line: the session did not change (RFC 3264 §8)");
    let since = w.sent.len();
    w.deliver(b.peer, &(b.answer(&inv[0], 200, "OK", Some(&b.sdp("0", "sendrecv")))));
    let acks = sent(&w, &b, since, Method::Ack);
    assert_eq!(acks.len(), 1, "the 2xx is ACKed");
    assert_eq!(acks[0].common.cseq.seq, inv[0].common.cseq.seq);
    // A refresh answered 481 ends the leg (RFC 4028 §10).
    let since = w.sent.len();
    w.advance(Duration::from_secs(45));
    let inv = sent(&w, &b, since, Method::Invite);
    assert_eq!(inv.len(), 1);
    w.deliver(b.peer, &b.answer(&inv[0], 481, "Call/Transaction Does Not Exist", None));
    assert_eq!(w.core.live().orbits_occupied, 0, "the failed refresh ended the parked call");
}

#[test]
fn a_refresh_owed_survives_a_restore_and_an_unrefreshed_session_still_expires() {
    let server = crate::config::ServerConfig {
        listen: "127.0.0.1:5060".parse().unwrap(),
        rtp_ports: crate::config::NumRange::parse("20000-20099").unwrap(),
        ..crate::config::ServerConfig::default()
    };
    let lot = {
        let mut l = crate::config::LotConfig::default_lot();
        l.parking_time = 0;
        l.keepalive_interval = 0;
        l.max_park_time = 0;
        l
    };
    let mut w = World::with_server(server.clone(), vec![lot.clone()]);
    w.core.set_journaling(true);
    let b = bob();
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    // Bob: parkd refreshes (UPDATE). Carol: she refreshes.
    for (p, se) in [(&b, "90;refresher=uas"), (&carol, "120")] {
        let since = w.sent.len();
        w.deliver(p.peer, &p.invite("700", &format!("Session-Expires: {se}\nSupported: timer\nAllow: INVITE, ACK, BYE, UPDATE\n"), Some(&p.sdp("0", "sendrecv"))));
        let token = w.last_token().unwrap();
        w.durable(token, true);
        let ok = w.last_response_to(p.peer, since);
        w.deliver(p.peer, &p.ack("700", ok.common.to.tag().unwrap(), 1, None));
    }
    assert!(w.journal.iter().flat_map(|(g, _)| g).any(|r| r.key().kind == crate::journal::RecordKind::SESSION_TIMERS));
    w.advance(Duration::from_secs(30));
    let live = crate::journal::LiveSet::replay(w.journal.iter().flat_map(|(g, _)| g.iter().cloned()));

    // parkd restarts 10 s later.
    let mut fresh = World::with_server(server, vec![lot]);
    fresh.now = w.now + Duration::from_secs(10);
    fresh.core.set_journaling(true);
    let report = fresh.core.restore(&live, fresh.now);
    assert_eq!(report.parked, 2);
    fresh.advance(Duration::from_millis(1));
    let since = fresh.sent.len();
    // Bob's refresh was due 45 s after his park (5 s from now).
    fresh.advance(Duration::from_secs(5));
    let up = sent(&fresh, &b, since, Method::Update);
    assert_eq!(up.len(), 1, "the refresh parkd owed Bob is sent at its original time after the restore");
    fresh.deliver(b.peer, &fresh_ok(&b, &up[0]));
    // Carol never refreshes: her session (120 s, BYE at 120 - 32 = 88 s after her park) ends.
    let since = fresh.sent.len();
    fresh.advance(Duration::from_secs(50));
    assert_eq!(sent(&fresh, &carol, since, Method::Bye).len(), 1, "Carol's unrefreshed session expired across the restore");
    assert!(sent(&fresh, &b, since, Method::Bye).is_empty(), "Bob's was refreshed");
    assert_eq!(fresh.core.live().orbits_occupied, 1);
}

fn fresh_ok(p: &Phone, req: &Request) -> String {
    p.ok_to(req)
}

#[test]
fn calls_parkd_makes_offer_timers_and_follow_the_answer() {
    let mut lot = crate::config::LotConfig::default_lot();
    lot.keepalive_interval = 0;
    let mut w = World::with_lots(vec![lot]);
    let r = w.recall_ringing(bob(), ParkAs::ALICE, Duration::from_secs(45));
    assert!(r.invite.common.headers_named("Supported").any(|v| v.contains("timer")));
    assert_eq!(r.invite.common.header("Session-Expires"), Some("1800"));
    // Alice answers and makes parkd the refresher with 90 s; she allows UPDATE.
    let answer = r.alice.answer(&r.invite, 200, "OK", Some(&r.alice.sdp("0", "sendrecv"))).replacen("Contact:", "Session-Expires: 90;refresher=uac\nAllow: INVITE, ACK, BYE, UPDATE\nContact:", 1);
    w.deliver(r.alice.peer, &answer);
    let since = w.sent.len();
    w.advance(Duration::from_secs(45));
    let up = sent(&w, &r.alice, since, Method::Update);
    assert_eq!(up.len(), 1, "parkd refreshes the recall leg by UPDATE");
    w.deliver(r.alice.peer, &r.alice.ok_to(&up[0]));
    // No Session-Expires in a 2xx: no timer (RFC 4028 §7.2), so nothing is sent to Bob's leg.
    assert!(sent(&w, &r.bob, since, Method::Update).is_empty() && sent(&w, &r.bob, since, Method::Invite).is_empty());
}

#[test]
fn a_491_to_parkds_refresh_is_retried_after_the_back_off() {
    let mut w = world();
    let b = bob();
    parked_parkd_refreshes(&mut w, &b, "INVITE, ACK, BYE");
    let since = w.sent.len();
    w.advance(Duration::from_secs(45));
    let inv = sent(&w, &b, since, Method::Invite);
    w.deliver(b.peer, &b.answer(&inv[0], 491, "Request Pending", None));
    let since = w.sent.len();
    w.advance(Duration::from_millis(2010));
    let again = sent(&w, &b, since, Method::Invite);
    assert_eq!(again.len(), 1, "sent again within 2 s (parkd does not own Bob's Call-ID)");
    assert!(again[0].common.cseq.seq > inv[0].common.cseq.seq);
}
