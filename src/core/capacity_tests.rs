//! The capacity guard in the core, in virtual time (issue 20): parks refused 503 + Retry-After while the media
//! load input is high (INVITE, REFER, API), accepted after it drops and the hold-off passed; retrieves, parked
//! calls and recalls never refused; the static cap; the events and the refusal count.

use super::admission::capacity::{GuardState, MediaLoad};
use super::testkit::{ParkAs, Phone, World};
use super::ParkEvent;
use crate::config::{AccessConfig, LimitsConfig};
use crate::media::MediaCommand;
use crate::sip::Method;
use std::time::Duration;

fn phone(name: &'static str, port: u16) -> Phone {
    Phone { call_id: format!("{name}-call"), ..Phone::new(name, port) }
}

fn world(limits: LimitsConfig) -> World {
    let mut w = World::new();
    w.core.set_limits(&limits, &AccessConfig::default());
    w
}

fn load(w: &mut World, busy: f64) {
    w.media_load(&[MediaLoad { busy, late_ms: 0.2 }]);
}

fn capacity_events(w: &World) -> Vec<(String, String)> {
    w.events.iter().filter_map(|e| match e {
        ParkEvent::Capacity { state, cause, .. } => Some((state.clone(), cause.clone())),
        _ => None,
    }).collect()
}

fn refused(w: &World) -> u64 {
    w.core.refusals().iter().find(|(r, _)| *r == "media_capacity").map_or(0, |(_, n)| n)
}

#[test]
fn park_refused_503_with_retry_after_while_load_is_high_and_accepted_after_it_drops() {
    let mut w = world(LimitsConfig { retry_after: 7, ..LimitsConfig::default() });
    let bob = phone("bob", 5070);
    w.park(&bob, "700", ParkAs::ALICE);
    load(&mut w, 0.92);
    assert_eq!(w.core.capacity_state(), GuardState::Refusing);
    assert_eq!(capacity_events(&w), [("refusing".into(), "media_busy".into())]);
    let dave = phone("dave", 5072);
    let since = w.sent.len();
    w.deliver(dave.peer, &dave.invite("700", "", Some(&dave.sdp("0", "sendrecv"))));
    let r = w.last_response_to(dave.peer, since);
    assert_eq!((r.status, r.common.header("Retry-After")), (503, Some("7")));
    assert!(r.reason.contains("Media Capacity"), "{}", r.reason);
    assert_eq!(refused(&w), 1);
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::Refused { status: 503, reason, .. } if reason == "Media Capacity")));
    // A directed park too.
    let erin = phone("erin", 5073);
    let since = w.sent.len();
    w.deliver(erin.peer, &erin.invite("703", "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&erin.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(erin.peer, since).status, 503);
    // Bob, parked before, hears music all along: nothing stopped his stream.
    assert!(!w.media.iter().any(|m| matches!(m, MediaCommand::Stop { .. })));
    // Load down between resume and max: still refusing (hysteresis).
    w.advance(Duration::from_secs(5));
    load(&mut w, 0.80);
    assert_eq!(w.core.capacity_state(), GuardState::Refusing);
    // Below resume: accepting, one event, and parks go through.
    load(&mut w, 0.60);
    assert_eq!(w.core.capacity_state(), GuardState::Accepting);
    assert_eq!(capacity_events(&w), [("refusing".into(), "media_busy".into()), ("accepting".into(), "recovered".into())]);
    w.park(&phone("fred", 5074), "700", ParkAs::ALICE);
    assert_eq!(refused(&w), 2);
}

#[test]
fn retrieve_and_recall_still_work_while_refusing() {
    let mut lot = crate::config::LotConfig::default_lot();
    lot.orbits = crate::config::NumRange::parse("701-705").unwrap();
    lot.parking_time = 30;
    let mut w = World::with_lots(vec![lot]);
    let bob = phone("bob", 5070);
    w.park(&bob, "700", ParkAs::ALICE);
    load(&mut w, 0.99);
    let alice = super::testkit::alice();
    let since = w.sent.len();
    w.advance(Duration::from_secs(31));
    assert!(w.requests_to(alice.peer, since).iter().any(|r| r.method == Method::Invite), "the recall rings while refusing");
    // Before it is answered, Carol dials the orbit: a retrieve is not a park.
    let carol = phone("carol", 5071);
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(carol.peer, since).status, 200, "retrieve answered while refusing");
    assert_eq!(refused(&w), 0);
}

#[test]
fn refer_park_gets_a_503_sipfrag_and_api_park_a_503_while_refusing() {
    let mut w = world(LimitsConfig::default());
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    w.park(&bob, "700", ParkAs::ALICE);
    let tag = w.park(&carol, "701", ParkAs::SELF).tag;
    load(&mut w, 0.95);
    let since = w.sent.len();
    let refer = carol.in_dialog("REFER", "701", &tag, 2, None).replacen("Contact:", "Refer-To: <sip:700@127.0.0.1:5060>\nContact:", 1);
    w.deliver(carol.peer, &refer);
    assert_eq!(w.responses_to(carol.peer, since)[0].status, 202);
    let n: Vec<_> = w.requests_to(carol.peer, since).into_iter().filter(|r| r.method == Method::Notify).collect();
    assert_eq!(&n.last().expect("a final NOTIFY").common.body[..], b"SIP/2.0 503 Service Unavailable\r\n");
    assert_eq!(w.core.live().orbits_occupied, 0, "still bridged, nobody re-parked");
    let r = w.command(1, crate::core::Command::ParkCall { call_id: "carol-call".into(), orbit: None, lot: None });
    let e = r.expect("answered now").expect_err("refused");
    assert_eq!((e.http_status(), e), (503, crate::core::CommandError::MediaCapacity { retry_after: 5 }));
    assert_eq!(refused(&w), 2);
}

#[test]
fn static_cap_refuses_exactly_at_max_parked_per_thread_and_reopens_when_a_call_leaves() {
    // The test world has one media shard.
    let mut w = world(LimitsConfig { media_guard: false, media_max_parked_per_thread: 2, ..LimitsConfig::default() });
    load(&mut w, 1.0); // ignored: media_guard = false
    assert_eq!(w.core.capacity_state(), GuardState::Accepting);
    let bob = phone("bob", 5070);
    let parked = w.park(&bob, "700", ParkAs::ALICE);
    w.park(&phone("carol", 5071), "700", ParkAs::ALICE);
    let dave = phone("dave", 5072);
    let since = w.sent.len();
    w.deliver(dave.peer, &dave.invite("700", "", Some(&dave.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(dave.peer, since).status, 503);
    assert_eq!(capacity_events(&w), [("refusing".into(), "max_parked".into())]);
    // Bob hangs up: room for one again, at once.
    w.deliver(bob.peer, &bob.in_dialog("BYE", "700", &parked.tag, bob.cseq + 1, None));
    w.park(&phone("erin", 5073), "700", ParkAs::ALICE);
    assert_eq!(capacity_events(&w).last().map(|e| e.0.as_str()), Some("accepting"));
}
