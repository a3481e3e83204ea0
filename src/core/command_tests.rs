//! Engine tests for application commands (park a bridged call, unpark to a URI, hang up), in virtual time.

use super::commands::{Command, CommandError, CommandOutcome};
use super::{ParkHow, RecallTarget};
use super::orbit_view::OrbitState;
use super::testkit::{udp, ParkAs, Phone, World, LEG_20000, LEG_20002};
use super::ParkEvent;
use crate::config::{NumRange, ServerConfig};
use crate::media::MediaCommand;
use crate::sip::{Method, NameAddr, Request, Response, Uri};
use crate::txn::TimerConfig;
use bytes::Bytes;
use std::time::Duration;

/// A blind transfer by Alice, offering PCMU, PCMA and telephone-event.
const BLIND: ParkAs = ParkAs::ALICE.pts("0 8 101");

/// `phone` dials `orbit` (retrieve) and ACKs; returns parkd's tag for that dialog.
fn retrieve(w: &mut World, phone: &Phone, orbit: &str) -> String {
    let since = w.sent.len();
    w.deliver(phone.peer, &phone.invite(orbit, "", Some(&phone.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(phone.peer, since);
    assert_eq!(ok.status, 200, "retrieve answered");
    let tag = ok.common.to.tag().expect("to tag").to_string();
    w.deliver(phone.peer, &phone.ack(orbit, &tag, phone.cseq, None));
    tag
}

/// The destination's answer to parkd's INVITE: `status`, with a To tag, Contact and (for 2xx) an SDP answer.
fn answer(w: &mut World, phone: &Phone, invite: &Request, status: u16) {
    let mut r = Response::to_request(invite, status, crate::sip::reason_phrase(status), Some("dest-tag"));
    if (200..300).contains(&status) {
        r.common.contact.push(NameAddr::new(Uri::from_addr(Some(phone.name), phone.peer.addr)));
        r.common.set_body("application/sdp", Bytes::from(phone.sdp("0", "sendrecv")));
    }
    w.deliver_raw(phone.peer, &r.encode());
}

/// Lets the tests' destinations (carol, dave on 127.0.0.1, carol at pbx.example) through `[http] dial_allow`.
fn allow_test_destinations(w: &mut World) {
    let patterns = ["*@127.0.0.1", "carol@pbx.example"].iter().map(|p| crate::config::DialPattern::parse(p).expect("pattern")).collect();
    w.core.set_dial_allow(patterns);
}

/// Runs a command and drains the core's outputs into the world, like the io driver does.
fn run(w: &mut World, cmd: Command) -> super::CommandResult {
    let r = w.core.handle_command(w.now, cmd);
    while let Some(o) = w.core.poll_output() {
        match o {
            super::Output::Sip { to, bytes } => w.sent.push((to, bytes)),
            super::Output::Media(m) => w.media.push(m),
            super::Output::Event(e) => w.events.push(e),
            super::Output::Journal { .. } | super::Output::Cluster { .. } | super::Output::CommandDone { .. } => {}
        }
    }
    r
}

fn invites_to(w: &World, phone: &Phone, since: usize) -> Vec<Request> {
    w.requests_to(phone.peer, since).into_iter().filter(|r| r.method == Method::Invite).collect()
}

fn parked_in(w: &World, orbit: &str) -> Option<super::orbit_view::ParkedView> {
    let (lot, idx) = w.core.find_orbit(orbit)?;
    match w.core.orbit_state(lot, idx) {
        OrbitState::Parked(v) => Some(v),
        OrbitState::Free => None,
    }
}

#[test]
fn hangup_ends_the_parked_call_with_bye_and_reason_and_frees_the_orbit() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    w.park(&bob, "700", BLIND);
    let since = w.sent.len();
    let r = run(&mut w, Command::Hangup { orbit: "701".into() });
    assert!(matches!(r, Ok(CommandOutcome::HungUp { ref orbit, ref call_id, .. }) if orbit == "701" && call_id == "bob-call@test"), "{r:?}");
    let byes = w.requests_to(bob.peer, since);
    assert_eq!(byes.len(), 1, "one BYE to the parked party");
    assert_eq!(byes[0].method, Method::Bye);
    // RFC 3326: the BYE says why.
    assert!(byes[0].common.header("Reason").is_some_and(|v| v.contains("attendant")));
    assert!(parked_in(&w, "701").is_none());
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::HungUp { orbit, .. } if orbit == "701")));
    assert!(w.media.contains(&MediaCommand::Stop { leg: LEG_20000 }));
    w.deliver(bob.peer, &bob.ok_to(&byes[0]));
    w.advance(Duration::from_secs(40));
    assert_eq!(w.core.live(), super::Live::default(), "nothing left behind");
}

#[test]
fn hangup_all_ends_parked_and_bridged_calls_and_leaves_nothing_behind() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    let dave = Phone::new("dave", 5072);
    let carol = Phone::new("carol", 5074);
    w.park(&bob, "700", BLIND);
    w.park(&dave, "700", BLIND);
    retrieve(&mut w, &carol, "702");
    let since = w.sent.len();
    let r = run(&mut w, Command::HangupAll);
    assert_eq!(r, Ok(CommandOutcome::HungUpAll { parked: 1, bridged: 1 }));
    for phone in [&bob, &dave, &carol] {
        let byes: Vec<Request> = w.requests_to(phone.peer, since).into_iter().filter(|r| r.method == Method::Bye).collect();
        assert_eq!(byes.len(), 1, "one BYE to {}", phone.name);
        assert!(byes[0].common.header("Reason").is_some_and(|v| v.contains("attendant")));
        w.deliver(phone.peer, &phone.ok_to(&byes[0]));
    }
    assert!(parked_in(&w, "701").is_none());
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::Ended { by, .. } if by == "api")));
    w.advance(Duration::from_secs(40));
    assert_eq!(w.core.live(), super::Live::default(), "nothing left behind");
    assert_eq!(run(&mut w, Command::HangupAll), Ok(CommandOutcome::HungUpAll { parked: 0, bridged: 0 }), "idempotent");
}

#[test]
fn hangup_of_empty_or_unknown_orbit_is_404() {
    let mut w = World::new();
    let empty = run(&mut w, Command::Hangup { orbit: "702".into() }).unwrap_err();
    assert_eq!((empty.clone(), empty.http_status()), (CommandError::OrbitEmpty("702".into()), 404));
    let unknown = run(&mut w, Command::Hangup { orbit: "799".into() }).unwrap_err();
    assert_eq!((unknown.clone(), unknown.http_status()), (CommandError::UnknownOrbit("799".into()), 404));
}

#[test]
fn unpark_calls_the_destination_and_bridges_on_answer() {
    let mut w = World::new();
    allow_test_destinations(&mut w);
    let bob = Phone::new("bob", 5070);
    let carol = Phone::new("carol", 5090);
    w.park(&bob, "700", BLIND);
    let since = w.sent.len();
    let r = run(&mut w, Command::Unpark { orbit: "701".into(), to: "sip:carol@127.0.0.1:5090".into() });
    assert!(matches!(r, Ok(CommandOutcome::Unparking { ref orbit, ring_secs: 30, .. }) if orbit == "701"), "{r:?}");
    let inv = invites_to(&w, &carol, since);
    assert_eq!(inv.len(), 1, "one INVITE to carol");
    let inv = &inv[0];
    assert_eq!(inv.uri.to_string(), "sip:carol@127.0.0.1:5090");
    assert_eq!(inv.common.header("P-Asserted-Identity"), Some("<sip:bob@127.0.0.1:5070>"), "carol sees who is calling");
    assert!(inv.common.header("Park-Recall").is_none(), "an unpark is not a recall");
    assert!(inv.common.header("Alert-Info").is_none());
    assert!(String::from_utf8_lossy(&inv.common.body).contains("m=audio"), "SDP offer");
    assert!(matches!(parked_in(&w, "701"), Some(v) if v.recalling == Some(RecallTarget::ApiUnpark)));

    let media_before = w.media.len();
    answer(&mut w, &carol, inv, 200);
    let acks: Vec<_> = w.requests_to(carol.peer, since).into_iter().filter(|r| r.method == Method::Ack).collect();
    assert_eq!(acks.len(), 1, "2xx ACKed (RFC 3261 §13.2.2.4)");
    assert!(parked_in(&w, "701").is_none(), "orbit freed on answer");
    assert!(w.media[media_before..].iter().any(|m| matches!(m, MediaCommand::Bridge { a: LEG_20000, .. })), "bridged: {:?}", &w.media[media_before..]);
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallAnswered { target: RecallTarget::ApiUnpark, orbit, .. } if orbit == "701")));
    assert_eq!(w.core.bridged_snapshot().len(), 1);
}

#[test]
fn unpark_not_answered_in_ring_time_is_cancelled_and_the_call_stays_parked() {
    let mut w = World::new();
    allow_test_destinations(&mut w);
    let bob = Phone::new("bob", 5070);
    let carol = Phone::new("carol", 5090);
    w.park(&bob, "700", BLIND);
    let since = w.sent.len();
    run(&mut w, Command::Unpark { orbit: "701".into(), to: "sip:carol@127.0.0.1:5090".into() }).unwrap();
    let inv = invites_to(&w, &carol, since).remove(0);
    answer(&mut w, &carol, &inv, 180);
    w.advance(Duration::from_secs(29));
    assert!(w.requests_to(carol.peer, since).iter().all(|r| r.method != Method::Cancel), "still ringing at 29 s");
    w.advance(Duration::from_secs(2));
    // RFC 3261 §9.1: a CANCEL once a provisional response was seen.
    assert!(w.requests_to(carol.peer, since).iter().any(|r| r.method == Method::Cancel), "CANCEL after the ring time");
    let v = parked_in(&w, "701").expect("still parked");
    assert_eq!(v.recalling, None);
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallFailed { target: RecallTarget::ApiUnpark, status: 408, .. })));
    assert!(w.requests_to(bob.peer, since).is_empty(), "the parked party is not disturbed");
}

#[test]
fn unpark_refused_by_destination_leaves_the_call_parked_and_reports_the_status() {
    let mut w = World::new();
    allow_test_destinations(&mut w);
    let bob = Phone::new("bob", 5070);
    let carol = Phone::new("carol", 5090);
    w.park(&bob, "700", BLIND);
    let since = w.sent.len();
    run(&mut w, Command::Unpark { orbit: "701".into(), to: "sip:carol@127.0.0.1:5090".into() }).unwrap();
    let inv = invites_to(&w, &carol, since).remove(0);
    answer(&mut w, &carol, &inv, 486);
    assert!(parked_in(&w, "701").is_some_and(|v| v.recalling.is_none()));
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallFailed { target: RecallTarget::ApiUnpark, status: 486, .. })));
    // A second attempt may go ahead at once.
    assert!(run(&mut w, Command::Unpark { orbit: "701".into(), to: "sip:carol@127.0.0.1:5090".into() }).is_ok());
}

#[test]
fn unpark_refusals_bad_uri_empty_orbit_and_already_ringing() {
    let mut w = World::new();
    allow_test_destinations(&mut w);
    let bob = Phone::new("bob", 5070);
    w.park(&bob, "700", BLIND);
    let bad = run(&mut w, Command::Unpark { orbit: "701".into(), to: "carol".into() }).unwrap_err();
    assert_eq!(bad.http_status(), 400);
    let empty = run(&mut w, Command::Unpark { orbit: "702".into(), to: "sip:carol@127.0.0.1:5090".into() }).unwrap_err();
    assert_eq!(empty.http_status(), 404);
    run(&mut w, Command::Unpark { orbit: "701".into(), to: "sip:carol@127.0.0.1:5090".into() }).unwrap();
    let busy = run(&mut w, Command::Unpark { orbit: "701".into(), to: "sip:dave@127.0.0.1:5091".into() }).unwrap_err();
    assert_eq!((busy.clone(), busy.http_status()), (CommandError::Ringing("701".into()), 409));
    let no_route = run(&mut w, Command::Unpark { orbit: "701".into(), to: "sip:carol@pbx.example".into() });
    assert!(no_route.is_err());
}

/// Toll fraud (issue 15): without `dial_allow`, an unpark may only ring what parkd already calls; anything else
/// is refused with 403 and not a byte leaves parkd. The parker of that very call is allowed.
#[test]
fn unpark_to_a_destination_not_allowed_is_refused_and_nothing_is_sent() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    w.park(&bob, "700", BLIND);
    let (sent, events) = (w.sent.len(), w.events.len());
    for to in ["sip:19005550100@127.0.0.3", "sip:carol@127.0.0.1:5090", "sip:701@evil.example", "sip:alice@127.0.0.1:6000"] {
        let e = run(&mut w, Command::Unpark { orbit: "701".into(), to: to.into() }).unwrap_err();
        assert!(matches!(e, CommandError::DialNotAllowed { .. }), "{to}: {e:?}");
        assert_eq!(e.http_status(), 403);
        assert!(e.to_string().contains("dial_allow"), "{e}");
    }
    assert_eq!(w.sent.len(), sent, "nothing was sent");
    assert_eq!(w.events.len(), events, "no recall_started");
    assert!(parked_in(&w, "701").is_some_and(|v| v.recalling.is_none()), "the call stays parked, nothing rings");

    let alice = Phone::new("alice", 5999);
    let r = run(&mut w, Command::Unpark { orbit: "701".into(), to: "sip:alice@127.0.0.1:5999".into() });
    assert!(r.is_ok(), "the parker (Referred-By) may be rung: {r:?}");
    assert_eq!(invites_to(&w, &alice, sent).len(), 1, "one INVITE to the parker");
}

#[test]
fn unpark_to_a_host_name_goes_through_the_outbound_proxy() {
    let mut w = World::new();
    let server = ServerConfig {
        listen: "127.0.0.1:5060".parse().unwrap(),
        advertise: None,
        rtp_ports: NumRange::parse("20000-20099").unwrap(),
        outbound_proxy: Some("sip:127.0.0.1:5080".into()),
        ..ServerConfig::default()
    };
    let mut lot = crate::config::LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    w.core = super::Core::new(server, vec![lot], TimerConfig::default(), 7);
    allow_test_destinations(&mut w);
    let bob = Phone::new("bob", 5070);
    w.park(&bob, "700", BLIND);
    let since = w.sent.len();
    run(&mut w, Command::Unpark { orbit: "701".into(), to: "sip:carol@pbx.example".into() }).unwrap();
    let inv: Vec<_> = w.requests_to(udp(5080), since).into_iter().filter(|r| r.method == Method::Invite).collect();
    assert_eq!(inv.len(), 1, "INVITE sent to the proxy");
    assert_eq!(inv[0].uri.to_string(), "sip:carol@pbx.example");
    assert!(inv[0].common.route.first().is_some_and(|r| r.uri.params.has("lr")), "loose Route to the proxy (RFC 3261 §16.12)");
}

#[test]
fn park_call_indirect_reparks_the_other_party_and_releases_the_given_leg() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    let alice = Phone { call_id: "alice-call".into(), ..Phone::new("alice", 5071) };
    w.park(&bob, "700", BLIND);
    retrieve(&mut w, &alice, "701");
    assert!(parked_in(&w, "701").is_none());
    let since = w.sent.len();
    let media_before = w.media.len();
    let r = run(&mut w, Command::ParkCall { call_id: "alice-call".into(), orbit: None, lot: None });
    assert_eq!(r, Ok(CommandOutcome::Parked { lot: "default".into(), orbit: "701".into(), how: ParkHow::Indirect, released: "alice-call".into() }));
    let byes: Vec<_> = w.requests_to(alice.peer, since).into_iter().filter(|r| r.method == Method::Bye).collect();
    assert_eq!(byes.len(), 1, "the application's leg is released");
    assert!(w.requests_to(bob.peer, since).is_empty(), "bob is not disturbed");
    let v = parked_in(&w, "701").expect("bob parked again");
    assert_eq!(v.call_id, "bob-call@test");
    assert!(v.parker.is_some_and(|p| p.uri.user.as_deref() == Some("alice")), "the releasing party is the parker (recall target)");
    assert!(v.recall_at.is_some(), "recall armed");
    assert!(w.media[media_before..].iter().any(|m| matches!(m, MediaCommand::Hold { leg: LEG_20000, .. })), "bob hears music again");
    assert!(w.media[media_before..].contains(&MediaCommand::Stop { leg: LEG_20002 }));
    assert!(matches!(w.events.iter().rev().find(|e| matches!(e, ParkEvent::Parked { .. })), Some(ParkEvent::Parked { how: ParkHow::Indirect, .. })));
}

#[test]
fn park_call_directed_by_the_parked_legs_call_id_parks_the_retriever() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    let alice = Phone { call_id: "alice-call".into(), ..Phone::new("alice", 5071) };
    w.park(&bob, "700", BLIND);
    retrieve(&mut w, &alice, "701");
    let since = w.sent.len();
    let r = run(&mut w, Command::ParkCall { call_id: "bob-call@test".into(), orbit: Some("705".into()), lot: None });
    assert!(matches!(r, Ok(CommandOutcome::Parked { ref orbit, how: ParkHow::Directed, .. }) if orbit == "705"), "{r:?}");
    assert!(w.requests_to(bob.peer, since).iter().any(|r| r.method == Method::Bye));
    let v = parked_in(&w, "705").expect("alice parked in 705");
    assert_eq!(v.call_id, "alice-call");
    // The re-parked call can be retrieved like any other.
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5072) };
    retrieve(&mut w, &carol, "705");
    assert!(parked_in(&w, "705").is_none());
}

#[test]
fn park_call_refusals_unknown_call_occupied_orbit_and_full_lot() {
    let mut w = World::new();
    let unknown = run(&mut w, Command::ParkCall { call_id: "nope".into(), orbit: None, lot: None }).unwrap_err();
    assert_eq!(unknown.http_status(), 404);
    let bob = Phone::new("bob", 5070);
    let alice = Phone { call_id: "alice-call".into(), ..Phone::new("alice", 5071) };
    w.park(&bob, "700", BLIND);
    // A parked (not bridged) call cannot be parked again through the API.
    let parked = run(&mut w, Command::ParkCall { call_id: "bob-call@test".into(), orbit: None, lot: None }).unwrap_err();
    assert_eq!(parked.http_status(), 404);
    retrieve(&mut w, &alice, "701");
    for (i, port) in (5080..5085).enumerate() {
        let p = Phone { call_id: format!("filler-{i}"), ..Phone::new("p", port) };
        w.park(&p, "700", BLIND);
    }
    let occupied = run(&mut w, Command::ParkCall { call_id: "alice-call".into(), orbit: Some("703".into()), lot: None }).unwrap_err();
    assert_eq!((occupied.clone(), occupied.http_status()), (CommandError::OrbitOccupied("703".into()), 409));
    let full = run(&mut w, Command::ParkCall { call_id: "alice-call".into(), orbit: None, lot: None }).unwrap_err();
    assert_eq!(full.http_status(), 503);
    let no_lot = run(&mut w, Command::ParkCall { call_id: "alice-call".into(), orbit: None, lot: Some("x".into()) }).unwrap_err();
    assert_eq!(no_lot.http_status(), 404);
    assert_eq!(w.core.bridged_snapshot().len(), 1, "refusals leave the bridge alone");
}

#[test]
fn snapshot_shows_parked_state_parker_and_times() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    w.park(&bob, "703", BLIND);
    let lots = w.core.lots_snapshot();
    assert_eq!(lots.len(), 1);
    assert_eq!((lots[0].capacity, lots[0].occupied), (5, 1));
    let o = &lots[0].orbits[2];
    assert_eq!((o.orbit.as_str(), o.state), ("703", "parked"));
    assert_eq!(o.parker.as_deref(), Some("<sip:alice@127.0.0.1:5999>"));
    assert_eq!(o.parked_since_ms, Some(w.now.as_millis()));
    assert_eq!(o.recall_at_ms, Some(w.now.as_millis() + 45_000));
    assert_eq!(lots[0].orbits[0].state, "free");
}
