//! Recall (issue: parking timeout and recall) in virtual time: 45 s of parking and 30 s of ringing take
//! microseconds.

use super::testkit::{alice, udp, ParkAs, Phone, World, LEG_20000, LEG_20002};
use super::ParkEvent;
use crate::config::{LotConfig, NumRange, RecallFallback};
use crate::media::MediaCommand;
use crate::sip::{Method, Request};
use std::time::Duration;

fn world(fallback: RecallFallback, rounds: u32) -> World {
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    lot.recall_fallback = fallback;
    lot.recall_rounds = rounds;
    lot.fallback_uri = Some("sip:operator@127.0.0.1:5998".into());
    lot.keepalive_interval = 0; // scripted phones do not answer OPTIONS; keepalive has its own tests
    World::with_lots(vec![lot])
}

/// Bob parked on 700 by Alice's blind transfer.
const BY_ALICE: ParkAs = ParkAs::ALICE.referred_by("\"Alice\" <sip:alice@127.0.0.1:5999>");

fn invites_to(w: &World, who: &Phone, since: usize) -> Vec<Request> {
    w.requests_to(who.peer, since).into_iter().filter(|r| r.method == Method::Invite).collect()
}

fn bob() -> Phone {
    Phone::new("bob", 5070)
}

/// Bob parked without a parking-time override, 45 s later: the recall INVITE ringing Alice (the parker).
fn recall_ringing(fallback: RecallFallback, rounds: u32) -> (World, Phone, Phone, Request) {
    let mut w = world(fallback, rounds);
    let r = w.recall_ringing(bob(), BY_ALICE, Duration::from_secs(45));
    (w, r.bob, r.alice, r.invite)
}

#[test]
fn recall_invite_after_parking_time_says_what_it_is() {
    let mut w = world(RecallFallback::Repark, 3);
    let bob = bob();
    w.park(&bob, "700", BY_ALICE);
    w.advance(Duration::from_millis(44_900));
    assert!(invites_to(&w, &alice(), 0).is_empty(), "nothing before 45 s");
    w.advance(Duration::from_millis(100));
    let inv = invites_to(&w, &alice(), 0);
    assert_eq!(inv.len(), 1, "one recall INVITE at 45 s");
    let r = &inv[0];
    assert_eq!(r.uri.to_string(), "sip:alice@127.0.0.1:5999", "Request-URI is the parker's URI from Referred-By");
    assert_eq!(r.common.from.display.as_deref(), Some("Parked 701: bob"));
    assert_eq!(r.common.from.uri.user.as_deref(), Some("701"));
    assert!(r.common.headers_named("Alert-Info").any(|v| v == "<urn:alert:service:recall:callback>"));
    assert_eq!(r.common.header("Park-Recall"), Some("callback;orbit=701;lot=default;round=1"));
    assert_eq!(r.common.header("P-Asserted-Identity"), Some("<sip:bob@127.0.0.1:5070>"));
    assert!(r.common.header("History-Info").is_some_and(|h| h.contains("cause%3D408")), "History-Info with the cause");
    assert_eq!(r.common.content_type.as_deref(), Some("application/sdp"));
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallStarted { orbit, round: 1, .. } if orbit == "701")));
}

#[test]
fn answered_recall_bridges_parker_and_parked_and_frees_the_orbit() {
    let (mut w, bob, a, inv) = recall_ringing(RecallFallback::Repark, 3);
    w.deliver(a.peer, &a.answer(&inv, 180, "Ringing", None));
    let since = w.sent.len();
    let media_before = w.media.len();
    w.deliver(a.peer, &a.answer(&inv, 200, "OK", Some(&a.sdp("0", "sendrecv"))));
    let acks: Vec<_> = w.requests_to(a.peer, since).into_iter().filter(|r| r.method == Method::Ack).collect();
    assert_eq!(acks.len(), 1, "parkd ACKs the 2xx");
    assert_eq!(acks[0].common.cseq.seq, inv.common.cseq.seq);
    assert!(w.media[media_before..].contains(&MediaCommand::Bridge { a: LEG_20000, b: LEG_20002 }), "{:?}", &w.media[media_before..]);
    assert_eq!(w.core.live().orbits_occupied, 0);
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallAnswered { .. })));
    // A retransmitted 2xx is ACKed again (RFC 3261 §13.2.2.4).
    let since = w.sent.len();
    w.deliver(a.peer, &a.answer(&inv, 200, "OK", Some(&a.sdp("0", "sendrecv"))));
    assert_eq!(w.requests_to(a.peer, since).iter().filter(|r| r.method == Method::Ack).count(), 1);
    // The parker hangs up: parkd BYEs Bob.
    let tag = inv.common.from.tag().unwrap().to_string();
    let bye = format!(
        "BYE sip:parkd@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKab1\nFrom: <sip:alice@127.0.0.1:5999>;tag={}\nTo: {}\nCall-ID: {}\nCSeq: 1 BYE\nMax-Forwards: 70\n",
        a.tag, inv.common.from, inv.common.call_id
    );
    assert!(bye.contains(&tag));
    let since = w.sent.len();
    w.deliver(a.peer, &bye);
    assert_eq!(w.last_response_to(a.peer, since).status, 200);
    assert!(w.requests_to(bob.peer, since).iter().any(|r| r.method == Method::Bye));
}

#[test]
fn unanswered_recall_is_cancelled_and_reparked_then_ended_after_the_last_round() {
    let (mut w, bob, a, inv) = recall_ringing(RecallFallback::Repark, 2);
    w.deliver(a.peer, &a.answer(&inv, 180, "Ringing", None));
    let since = w.sent.len();
    w.advance(Duration::from_secs(30));
    let cancels: Vec<_> = w.requests_to(a.peer, since).into_iter().filter(|r| r.method == Method::Cancel).collect();
    assert_eq!(cancels.len(), 1, "CANCEL after the 30 s ring time");
    assert_eq!(cancels[0].common.via[0].branch(), inv.common.via[0].branch(), "CANCEL shares the INVITE's branch (RFC 3261 §9.1)");
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallFailed { status: 408, .. })));
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::Reparked { round: 1, .. })));
    assert_eq!(w.core.live().orbits_occupied, 1, "still parked, still hearing music");
    w.deliver(a.peer, &a.answer(&cancels[0], 200, "OK", None));
    w.deliver(a.peer, &a.answer(&inv, 487, "Request Terminated", None));
    // Round 2, 45 s later: a busy parker.
    let since = w.sent.len();
    w.advance(Duration::from_secs(45));
    let inv2 = invites_to(&w, &a, since).remove(0);
    assert_eq!(inv2.common.header("Park-Recall"), Some("callback;orbit=701;lot=default;round=2"));
    let since = w.sent.len();
    w.deliver(a.peer, &a.answer(&inv2, 486, "Busy Here", None));
    let byes: Vec<_> = w.requests_to(bob.peer, since).into_iter().filter(|r| r.method == Method::Bye).collect();
    assert_eq!(byes.len(), 1, "after the last round the parked call is ended politely");
    assert!(byes[0].common.header("Reason").is_some_and(|r| r.contains("Recall Not Answered")));
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::TimedOut { .. })));
    assert_eq!(w.core.live().orbits_occupied, 0);
}

#[test]
fn fallback_uri_is_called_when_the_parker_does_not_answer() {
    let (mut w, _bob, a, inv) = recall_ringing(RecallFallback::FallbackUri, 1);
    let op = Phone::new("operator", 5998);
    w.deliver(a.peer, &a.answer(&inv, 480, "Temporarily Unavailable", None));
    let to_op = invites_to(&w, &op, 0);
    assert_eq!(to_op.len(), 1, "the operator is called");
    assert_eq!(to_op[0].common.header("Park-Recall"), Some("fallback;orbit=701;lot=default;round=1"));
    w.deliver(op.peer, &op.answer(&to_op[0], 200, "OK", Some(&op.sdp("8", "sendrecv"))));
    assert!(w.media.iter().any(|m| matches!(m, MediaCommand::Bridge { .. })));
}

#[test]
fn hangup_fallback_ends_the_call_after_one_unanswered_recall() {
    let (mut w, bob, a, inv) = recall_ringing(RecallFallback::Hangup, 3);
    let since = w.sent.len();
    w.deliver(a.peer, &a.answer(&inv, 603, "Decline", None));
    assert!(w.requests_to(bob.peer, since).iter().any(|r| r.method == Method::Bye));
    assert_eq!(w.core.live().orbits_occupied, 0);
}

#[test]
fn retrieve_during_recall_cancels_it_and_a_late_2xx_is_acked_and_byed() {
    let (mut w, _bob, a, inv) = recall_ringing(RecallFallback::Repark, 3);
    w.deliver(a.peer, &a.answer(&inv, 180, "Ringing", None));
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(carol.peer, since).status, 200, "the retriever gets the call");
    assert!(w.requests_to(a.peer, since).iter().any(|r| r.method == Method::Cancel), "the recall is cancelled");
    // The parker answered at the same moment: exactly one wins; the late 2xx is ACKed then BYEd.
    let since = w.sent.len();
    w.deliver(a.peer, &a.answer(&inv, 200, "OK", Some(&a.sdp("0", "sendrecv"))));
    let reqs = w.requests_to(a.peer, since);
    assert!(reqs.iter().any(|r| r.method == Method::Ack) && reqs.iter().any(|r| r.method == Method::Bye), "{reqs:?}");
    assert_eq!(w.core.live().calls, 1);
}

#[test]
fn parker_answering_first_wins_and_a_later_retrieve_finds_the_orbit_empty() {
    let (mut w, _bob, a, inv) = recall_ringing(RecallFallback::Repark, 3);
    w.deliver(a.peer, &a.answer(&inv, 200, "OK", Some(&a.sdp("0", "sendrecv"))));
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(carol.peer, since).status, 404);
}

#[test]
fn parked_party_hanging_up_during_recall_cancels_it() {
    let mut w = world(RecallFallback::Repark, 3);
    let super::testkit::Recall { bob, alice: a, tag, invite: inv } = w.recall_ringing(bob(), BY_ALICE, Duration::from_secs(45));
    w.deliver(a.peer, &a.answer(&inv, 183, "Session Progress", None));
    let since = w.sent.len();
    w.deliver(bob.peer, &bob.in_dialog("BYE", "700", &tag, 2, None));
    assert!(w.requests_to(a.peer, since).iter().any(|r| r.method == Method::Cancel));
    w.advance(Duration::from_secs(120));
    assert_eq!(w.core.live().orbits_occupied, 0);
    assert!(invites_to(&w, &a, since).is_empty(), "no further recall for a call that is gone");
}

#[test]
fn cancel_waits_for_a_provisional_response() {
    // RFC 3261 §9.1: a CANCEL is not sent before a provisional response arrives.
    let (mut w, _bob, a, inv) = recall_ringing(RecallFallback::Repark, 3);
    let since = w.sent.len();
    w.advance(Duration::from_secs(30));
    assert!(!w.requests_to(a.peer, since).iter().any(|r| r.method == Method::Cancel), "no CANCEL yet");
    w.deliver(a.peer, &a.answer(&inv, 180, "Ringing", None));
    assert!(w.requests_to(a.peer, since).iter().any(|r| r.method == Method::Cancel), "CANCEL once the 180 arrived");
}

/// RFC 3326: "Call completed elsewhere" tells the parker's phone not to log a missed call, so it belongs on
/// the CANCEL only when someone else took the call (a retrieve), not when the recall simply rang out.
#[test]
fn cancel_says_completed_elsewhere_only_when_the_call_was_taken() {
    let reason_of_cancel = |w: &World, a: &Phone, since: usize| {
        let cancels: Vec<Request> = w.requests_to(a.peer, since).into_iter().filter(|r| r.method == Method::Cancel).collect();
        assert_eq!(cancels.len(), 1, "one CANCEL expected");
        cancels[0].common.header("Reason").map(str::to_string)
    };
    // Rang out (30 s ring time): CANCEL without the "completed elsewhere" Reason.
    let (mut w, _bob, a, inv) = recall_ringing(RecallFallback::Repark, 3);
    w.deliver(a.peer, &a.answer(&inv, 180, "Ringing", None));
    let since = w.sent.len();
    w.advance(Duration::from_secs(30));
    let reason = reason_of_cancel(&w, &a, since);
    assert!(!reason.as_deref().unwrap_or_default().contains("completed elsewhere"), "ring timeout CANCEL Reason {reason:?}");

    // Retrieved while ringing: the CANCEL says the call was completed elsewhere.
    let (mut w, _bob, a, inv) = recall_ringing(RecallFallback::Repark, 3);
    w.deliver(a.peer, &a.answer(&inv, 180, "Ringing", None));
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
    let reason = reason_of_cancel(&w, &a, since);
    assert_eq!(reason.as_deref(), Some("SIP;cause=200;text=\"Call completed elsewhere\""));
}

#[test]
fn unknown_parker_follows_the_fallback_without_calling_anyone() {
    let mut w = world(RecallFallback::Hangup, 3);
    let bob = bob();
    w.park(&bob, "700", ParkAs::SELF);
    let since = w.sent.len();
    w.advance(Duration::from_secs(45));
    let reqs = w.requests_to(bob.peer, since);
    assert!(reqs.iter().any(|r| r.method == Method::Bye), "hangup fallback applies at once for an unknown parker");
    assert!(!w.sent[since..].iter().any(|(p, _)| *p == udp(5999)));
}

#[test]
fn unknown_parker_with_repark_stays_parked_until_rounds_run_out() {
    let mut w = world(RecallFallback::Repark, 2);
    let bob = bob();
    w.park(&bob, "700", ParkAs::SELF);
    w.advance(Duration::from_secs(46));
    assert_eq!(w.core.live().orbits_occupied, 1, "round 1 reparks");
    let since = w.sent.len();
    w.advance(Duration::from_secs(45));
    assert!(w.requests_to(bob.peer, since).iter().any(|r| r.method == Method::Bye), "ended after round 2");
}

#[test]
fn max_park_time_ends_a_forgotten_call() {
    let mut lot = LotConfig::default_lot();
    lot.parking_time = 0; // never recall
    lot.max_park_time = 600;
    lot.keepalive_interval = 0;
    let mut w = World::with_lots(vec![lot]);
    let bob = bob();
    w.park(&bob, "700", BY_ALICE);
    let since = w.sent.len();
    w.advance(Duration::from_secs(599));
    assert!(w.requests_to(bob.peer, since).is_empty());
    w.advance(Duration::from_secs(1));
    let byes: Vec<_> = w.requests_to(bob.peer, since).into_iter().filter(|r| r.method == Method::Bye).collect();
    assert_eq!(byes.len(), 1);
    assert!(byes[0].common.header("Reason").is_some_and(|r| r.contains("Maximum Park Time")));
}

#[test]
fn park_request_can_override_the_parking_time() {
    let mut w = world(RecallFallback::Repark, 3);
    let bob = bob();
    w.park(&bob, "700", BY_ALICE.extra("Park-Timeout: 10\n"));
    w.advance(Duration::from_secs(10));
    assert_eq!(invites_to(&w, &alice(), 0).len(), 1, "recall after the requested 10 s");
}

#[test]
fn recall_goes_through_the_outbound_proxy_when_configured() {
    let mut w = world(RecallFallback::Repark, 3);
    w.core.set_outbound_proxy_for_tests("sip:127.0.0.1:5080");
    let bob = bob();
    w.park(&bob, "700", BY_ALICE);
    w.advance(Duration::from_secs(45));
    let via_proxy = w.requests_to(udp(5080), 0);
    assert_eq!(via_proxy.len(), 1, "sent to the proxy");
    assert_eq!(via_proxy[0].uri.to_string(), "sip:alice@127.0.0.1:5999", "Request-URI stays the parker's AOR");
    assert_eq!(via_proxy[0].common.route[0].uri.to_string(), "sip:127.0.0.1:5080;lr");
}

fn keepalive_world() -> World {
    let mut lot = LotConfig::default_lot();
    lot.parking_time = 0;
    lot.keepalive_interval = 60;
    World::with_lots(vec![lot])
}

fn options_to(w: &World, who: &Phone, since: usize) -> Vec<Request> {
    w.requests_to(who.peer, since).into_iter().filter(|r| r.method == Method::Options).collect()
}

#[test]
fn keepalive_answered_keeps_the_call_parked() {
    let mut w = keepalive_world();
    let bob = bob();
    let tag = w.park(&bob, "700", BY_ALICE).tag;
    w.advance(Duration::from_secs(59));
    assert!(options_to(&w, &bob, 0).is_empty());
    w.advance(Duration::from_secs(1));
    let opts = options_to(&w, &bob, 0);
    assert_eq!(opts.len(), 1, "an in-dialog OPTIONS at 60 s");
    assert_eq!(opts[0].common.from.tag(), Some(tag.as_str()), "inside the parked dialog");
    w.deliver(bob.peer, &bob.answer(&opts[0], 200, "OK", None));
    w.advance(Duration::from_secs(60));
    assert_eq!(options_to(&w, &bob, 0).len(), 2, "and again 60 s later");
    assert_eq!(w.core.live().orbits_occupied, 1);
}

#[test]
fn keepalive_481_ends_a_parked_call_whose_phone_forgot_it() {
    let mut w = keepalive_world();
    let bob = bob();
    w.park(&bob, "700", BY_ALICE);
    w.advance(Duration::from_secs(60));
    let opts = options_to(&w, &bob, 0);
    w.deliver(bob.peer, &bob.answer(&opts[0], 481, "Call/Transaction Does Not Exist", None));
    assert_eq!(w.core.live().orbits_occupied, 0);
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::Abandoned { .. })));
}

#[test]
fn keepalive_unanswered_ends_the_call_after_timer_f() {
    let mut w = keepalive_world();
    let bob = bob();
    w.park(&bob, "700", BY_ALICE);
    w.advance(Duration::from_secs(60 + 31));
    assert_eq!(w.core.live().orbits_occupied, 1, "still waiting for the OPTIONS (Timer F = 32 s)");
    w.advance(Duration::from_secs(1));
    assert_eq!(w.core.live().orbits_occupied, 0, "a phone that answers nothing is gone");
}

/// parkd's own offers (issue 19, RTCP): the recall INVITE offers `a=rtcp-mux` with parkd's RTCP port (RFC 5761
/// §5.1.3); an answer with `a=rtcp-mux` makes the leg mux, one without gives the plane the answerer's RTCP
/// port (its `a=rtcp:`, RFC 3605).
#[test]
fn a_recall_offers_rtcp_mux_and_follows_the_answer() {
    for mux in [true, false] {
        let (mut w, _bob, alice, invite) = recall_ringing(RecallFallback::Repark, 1);
        let offer = crate::sdp::parse_sdp(&invite.common.body).unwrap();
        assert!(offer.rtcp_mux, "{}", String::from_utf8_lossy(&invite.common.body));
        assert_eq!(offer.rtcp_port, Some(20_001), "the RTCP port of the block of the recall's RTP port");
        let attrs = if mux { "a=rtcp-mux\n" } else { "a=rtcp:17777\n" };
        let sdp = format!("{}{attrs}", alice.sdp("0", "sendrecv"));
        let since = w.media.len();
        w.deliver(alice.peer, &alice.answer(&invite, 200, "OK", Some(&sdp)));
        let cmds = &w.media[since..];
        assert!(cmds.iter().any(|m| matches!(m, MediaCommand::Bridge { .. })), "{cmds:?}");
        let rtcp: Vec<&MediaCommand> = cmds.iter().filter(|m| matches!(m, MediaCommand::RtcpMux { .. } | MediaCommand::RtcpPort { .. })).collect();
        match mux {
            true => assert!(matches!(rtcp[..], [MediaCommand::RtcpMux { leg, on: true }] if *leg == LEG_20002), "{cmds:?}"),
            false => assert!(matches!(rtcp[..], [MediaCommand::RtcpPort { leg, port: 17777 }] if *leg == LEG_20002), "{cmds:?}"),
        }
    }
}
