//! DTMF keys of a parked caller (issue 21) in virtual time: RFC 4733 key reports from the media plane and SIP INFO,
//! each key's action, the debounce; and the courtesy tone command after a bridge.

use super::testkit::{alice, ParkAs, Phone, World, LEG_20000, LEG_20002};
use super::{ParkEvent, RecallTarget};
use crate::config::{CourtesyTone, DtmfKeys, LotConfig, NumRange};
use crate::media::dtmf::DtmfKey;
use crate::media::{MediaCommand, MediaReport, MusicId};
use crate::sip::{Method, Request};
use std::collections::BTreeMap;
use std::time::Duration;

/// The operator a `0` calls.
fn operator() -> Phone {
    Phone { call_id: "operator-unused".into(), ..Phone::new("operator", 5998) }
}

fn world_with(tone: CourtesyTone) -> World {
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    lot.keepalive_interval = 0;
    let keys: BTreeMap<String, String> =
        [("0", "sip:operator@127.0.0.1:5998"), ("*", "recall"), ("5", "callback")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    lot.dtmf_keys = DtmfKeys::try_from(keys).unwrap();
    lot.courtesy_tone = tone;
    World::with_lots(vec![lot])
}

/// Bob parked on 701 by Alice, offering telephone-event.
fn parked() -> (World, Phone, String) {
    let mut w = world_with(CourtesyTone::None);
    let bob = Phone::new("bob", 5070);
    let tag = w.park(&bob, "700", ParkAs::ALICE.pts("0 101")).tag;
    (w, bob, tag)
}

fn press(w: &mut World, c: char) {
    w.media_report(MediaReport::Dtmf { leg: LEG_20000, key: DtmfKey::from_char(c).unwrap() });
}

fn invites_to(w: &World, who: &Phone, since: usize) -> Vec<Request> {
    w.requests_to(who.peer, since).into_iter().filter(|r| r.method == Method::Invite).collect()
}

fn key_events(w: &World) -> Vec<(String, String)> {
    w.events.iter().filter_map(|e| match e { ParkEvent::DtmfKey { key, action, .. } => Some((key.clone(), action.clone())), _ => None }).collect()
}

#[test]
fn uri_key_calls_it_with_music_on_and_bridges_on_answer() {
    let (mut w, _bob, _) = parked();
    let since = w.sent.len();
    let media_before = w.media.len();
    press(&mut w, '0');
    assert_eq!(key_events(&w), vec![("0".into(), "dial".into())]);
    let op = operator();
    let inv = invites_to(&w, &op, since);
    assert_eq!(inv.len(), 1, "parkd calls the key's URI");
    assert_eq!(inv[0].uri.to_string(), "sip:operator@127.0.0.1:5998");
    assert_eq!(inv[0].common.header("P-Asserted-Identity"), Some("<sip:bob@127.0.0.1:5070>"));
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallStarted { target: RecallTarget::DtmfKey, .. })));
    assert!(!w.media[media_before..].iter().any(|m| matches!(m, MediaCommand::Stop { leg: LEG_20000 } | MediaCommand::Bridge { .. })), "music goes on while it rings");
    assert_eq!(w.core.live().orbits_occupied, 1);
    w.deliver(op.peer, &op.answer(&inv[0], 200, "OK", Some(&op.sdp("0", "sendrecv"))));
    assert!(w.media.contains(&MediaCommand::Bridge { a: LEG_20000, b: LEG_20002 }), "{:?}", w.media);
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallAnswered { target: RecallTarget::DtmfKey, .. })));
    assert_eq!(w.core.live().orbits_occupied, 0, "the call left its orbit");
    assert!(!w.media.iter().any(|m| matches!(m, MediaCommand::Courtesy { .. })), "courtesy_tone = none");
}

#[test]
fn unanswered_uri_key_leaves_the_call_parked_in_its_orbit() {
    let (mut w, bob, tag) = parked();
    let since = w.sent.len();
    press(&mut w, '0');
    let op = operator();
    let inv = invites_to(&w, &op, since).remove(0);
    w.deliver(op.peer, &op.answer(&inv, 486, "Busy Here", None));
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallFailed { target: RecallTarget::DtmfKey, status: 486, .. })));
    assert_eq!(w.core.live().orbits_occupied, 1, "still parked on 701");
    assert!(!w.media.iter().any(|m| matches!(m, MediaCommand::Stop { leg: LEG_20000 })), "music never stopped");
    // Ringing out (30 s) is the same: parked, and the key works again afterwards.
    w.advance(Duration::from_secs(2));
    let since = w.sent.len();
    press(&mut w, '0');
    let inv = invites_to(&w, &op, since);
    assert_eq!(inv.len(), 1, "the key calls again");
    w.advance(Duration::from_secs(31));
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallFailed { target: RecallTarget::DtmfKey, status: 408, .. })));
    assert_eq!(w.core.live().orbits_occupied, 1);
    // Retrieving still works.
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(carol.peer, since).status, 200);
    let _ = (bob, tag);
}

#[test]
fn recall_key_recalls_the_parker_now() {
    let (mut w, _bob, _) = parked();
    w.advance(Duration::from_secs(5));
    let since = w.sent.len();
    press(&mut w, '*');
    let inv = invites_to(&w, &alice(), since);
    assert_eq!(inv.len(), 1, "the parker is called at once, 40 s early");
    assert_eq!(inv[0].common.header("Park-Recall"), Some("callback;orbit=701;lot=default;round=1"));
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallStarted { target: RecallTarget::Parker, round: 1, .. })));
    // Pressed again while the recall rings: nothing more rings.
    w.advance(Duration::from_secs(2));
    let since = w.sent.len();
    press(&mut w, '*');
    assert!(invites_to(&w, &alice(), since).is_empty());
}

#[test]
fn callback_key_reports_and_keeps_the_call_parked() {
    let (mut w, _bob, _) = parked();
    press(&mut w, '5');
    let cb: Vec<_> = w.events.iter().filter_map(|e| match e { ParkEvent::CallbackRequested { orbit, caller, key, .. } => Some((orbit.to_string(), caller.clone(), key.clone())), _ => None }).collect();
    assert_eq!(cb, vec![("701".into(), "sip:bob@127.0.0.1:5070".into(), "5".into())]);
    assert_eq!(w.core.live().orbits_occupied, 1);
}

#[test]
fn unknown_keys_are_ignored_and_a_burst_acts_once_per_gap() {
    let (mut w, _bob, _) = parked();
    press(&mut w, '9');
    press(&mut w, '#');
    assert!(key_events(&w).is_empty(), "keys the lot does not map do nothing");
    press(&mut w, '5');
    for _ in 0..4 {
        w.advance(Duration::from_millis(200));
        press(&mut w, '5');
    }
    assert_eq!(key_events(&w).len(), 1, "a burst within dtmf_min_gap_ms (1 s) acts once");
    w.advance(Duration::from_millis(200));
    press(&mut w, '5');
    assert_eq!(key_events(&w).len(), 2, "1 s after the first action the key acts again");
    // A key for a leg that is not parked (unknown media leg) is ignored.
    w.media_report(MediaReport::Dtmf { leg: LEG_20002, key: DtmfKey::from_char('5').unwrap() });
    assert_eq!(key_events(&w).len(), 2);
    assert_eq!(w.core.dtmf.len(), 1);
}

/// An in-dialog INFO from a parked leg with a DTMF body.
fn info(bob: &Phone, tag: &str, cseq: u32, content_type: &str, body: &str) -> String {
    bob.in_dialog("INFO", "700", tag, cseq, Some(body)).replace("Content-Type: application/sdp", &format!("Content-Type: {content_type}"))
}

#[test]
fn sip_info_dtmf_relay_and_dtmf_bodies_act_like_rfc4733() {
    let (mut w, bob, tag) = parked();
    let since = w.sent.len();
    w.deliver(bob.peer, &info(&bob, &tag, 2, "application/dtmf-relay", "Signal=5\nDuration=160\n"));
    assert_eq!(w.last_response_to(bob.peer, since).status, 200);
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::DtmfKey { via, action, .. } if via == "info" && action == "callback")));
    assert_eq!(w.events.iter().filter(|e| matches!(e, ParkEvent::CallbackRequested { .. })).count(), 1);
    // The same press as RFC 4733 right after (phones that send both): within the gap, once.
    press(&mut w, '5');
    assert_eq!(w.events.iter().filter(|e| matches!(e, ParkEvent::CallbackRequested { .. })).count(), 1);
    w.advance(Duration::from_secs(2));
    let since = w.sent.len();
    w.deliver(bob.peer, &info(&bob, &tag, 3, "application/dtmf", "0"));
    assert_eq!(w.last_response_to(bob.peer, since).status, 200);
    assert_eq!(invites_to(&w, &operator(), since).len(), 1, "INFO 0 calls the operator");
    // A non-DTMF INFO is answered 200 and does nothing.
    w.advance(Duration::from_secs(2));
    let since = w.sent.len();
    w.deliver(bob.peer, &info(&bob, &tag, 4, "application/x-other", "hello"));
    assert_eq!(w.last_response_to(bob.peer, since).status, 200);
    assert_eq!(key_events(&w).len(), 2);
}

#[test]
fn courtesy_tone_goes_to_the_parties_the_lot_names_after_the_bridge() {
    for (tone, want) in [(CourtesyTone::Retriever, vec![LEG_20002]), (CourtesyTone::Parked, vec![LEG_20000]), (CourtesyTone::Both, vec![LEG_20000, LEG_20002]), (CourtesyTone::None, vec![])] {
        let mut w = world_with(tone);
        let bob = Phone::new("bob", 5070);
        w.park(&bob, "700", ParkAs::ALICE);
        let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
        let since = w.sent.len();
        w.deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
        let ok = w.last_response_to(carol.peer, since);
        let before = w.media.len();
        w.deliver(carol.peer, &carol.ack("701", ok.common.to.tag().unwrap(), 1, None));
        let after = &w.media[before..];
        let bridge = after.iter().position(|m| matches!(m, MediaCommand::Bridge { .. })).expect("bridged");
        let tones: Vec<_> = after.iter().enumerate().filter_map(|(i, m)| match m { MediaCommand::Courtesy { leg, tone: MusicId(0) } => Some((i, *leg)), _ => None }).collect();
        assert!(tones.iter().all(|(i, _)| *i > bridge), "{tone:?}: the tone follows the Bridge");
        assert_eq!(tones.into_iter().map(|(_, l)| l).collect::<Vec<_>>(), want, "{tone:?}");
    }
}
