//! Recall (README "Recall: parkd calls the parker back"): when the parking time runs out parkd INVITEs the
//! parker (the park's Referred-By); a SIPp UAS plays the parker. Answered → bridged; not answered → the lot's
//! `recall_fallback`; retrieved while ringing → the recall is CANCELled.

use sip_tests::checks::{expect_hold_music, expect_media_stops, expect_peer_audio, music_after_bridge, response_header};
use sip_tests::sip::sipp::{self, header, SippOutcome};
use sip_tests::{Parkd, ParkdOptions, PayloadClass, RtpEndpoint, Sipp};
use std::time::Duration;

const BOB: u8 = 0xB0;
const ALICE: u8 = 0xA0;
const CAROL: u8 = 0xC0;

/// Parking time of every test here: short, so the recall comes quickly.
const PARKING_TIME: u32 = 3;
/// Bound on each SIPp run (a healthy run needs at most ~15 s).
const SIPP_TIMEOUT: Duration = Duration::from_secs(60);

/// parkd with a 3 s parking time and, optionally, a `[[lot]]` table for the default lot (extra TOML keys).
fn parkd_with_lot(test: &str, lot_keys: Option<&str>) -> Parkd {
    let config = lot_keys.map(|keys| format!("[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\n{keys}\n"));
    Parkd::start_with(test, ParkdOptions { parking_time: PARKING_TIME, config, ..Default::default() })
}

/// The arrival time (seconds since midnight) of the first received message for which `pred` holds.
fn arrival(outcome: &SippOutcome, what: &str, pred: impl Fn(&str) -> bool) -> f64 {
    match outcome.received_timed().into_iter().find(|(_, m)| pred(m)) {
        Some((t, _)) => t,
        None => panic!("{}: no {what} in the message log:\n{}", outcome.label, sipp::tail(&outcome.messages, 60)),
    }
}

fn is_request(method: &'static str) -> impl Fn(&str) -> bool {
    move |m: &str| m.starts_with(&format!("{method} "))
}

/// Every header line `name: ...` of a message (for headers that appear more than once).
fn header_lines<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
    message
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// The recall carries the documented markings, the parker answers, the two hear each other; the parker
/// hangs up → parkd BYEs the parked party and all media stops.
#[test]
fn answered_recall_bridges_parker_and_parked_party() {
    let parkd = parkd_with_lot("recall_answered", None);
    let alice = RtpEndpoint::bind("alice (parker)");
    alice.start_talking(ALICE);
    let alice_run = Sipp::new("recall_parker_answers").rtp_port(alice.port()).hold_ms(4000).timeout(SIPP_TIMEOUT).spawn(&parkd);
    let alice_port = alice_run.local_port;

    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::parked_recallable(bob.port(), alice_port).timeout(SIPP_TIMEOUT).spawn(&parkd);
    let bob_port = bob_run.local_port;
    expect_hold_music(&bob, 75);

    let at_alice = expect_peer_audio(&alice, BOB, 100);
    expect_peer_audio(&bob, ALICE, 100);
    let alice_out = alice_run.wait();
    alice_out.assert_passed(&parkd, "parker answers the recall, talks, hangs up");
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "parked bob is recalled to alice, then gets parkd's BYE");
    assert_eq!(response_header(&bob_out, 200, "Park-Orbit"), "701");

    // The recall INVITE, as the parker received it (the scenario checked the same with regexes).
    let Some(invite) = alice_out.request("INVITE") else { panic!("alice got no recall INVITE:\n{}", alice_out.messages) };
    let from = header(&invite, "From").unwrap_or_default();
    assert!(from.starts_with("\"Parked 701: "), "recall From {from:?} must show \"Parked 701: <who>\"");
    assert!(invite.starts_with(&format!("INVITE sip:alice@127.0.0.1:{alice_port}")), "recall Request-URI must be the parker:\n{invite}");
    let alerts = header_lines(&invite, "Alert-Info");
    assert!(alerts.contains(&"<urn:alert:service:recall:callback>"), "Alert-Info {alerts:?}");
    let park_recall = header(&invite, "Park-Recall").unwrap_or_default();
    assert!(park_recall.starts_with("callback;orbit=701") && park_recall.contains("round=1"), "Park-Recall {park_recall:?}");
    let pai = header(&invite, "P-Asserted-Identity").unwrap_or_default();
    assert!(pai.contains(&format!("sip:bob@127.0.0.1:{bob_port}")), "P-Asserted-Identity {pai:?} must name bob");
    let history = header_lines(&invite, "History-Info");
    assert!(history.iter().any(|h| h.starts_with("<sip:701@") && h.ends_with(";index=1")), "History-Info {history:?}");
    assert!(history.iter().any(|h| h.starts_with("<sip:alice@") && h.ends_with(";index=1.1")), "History-Info {history:?}");

    // The recall came about one parking time after the park.
    let parked_at = arrival(&bob_out, "200 OK", |m| m.starts_with("SIP/2.0 200"));
    let recalled_at = arrival(&alice_out, "recall INVITE", is_request("INVITE"));
    let delay = recalled_at - parked_at;
    assert!((2.5..12.0).contains(&delay), "recall {delay:.2} s after the park, expected about {PARKING_TIME} s");

    // Alice's BYE ended bob's leg.
    assert!(bob_out.request("BYE").is_some(), "bob must get parkd's BYE after alice hung up");
    assert_eq!(music_after_bridge(&bob.packets(), ALICE), 0, "hold music reached bob after alice's audio started");
    assert_eq!(alice.report(PayloadClass::Other).count, 0, "the parker must hear bob, not music: {}", alice.report(PayloadClass::Other));
    assert_eq!(at_alice.sources.len(), 1, "{at_alice}");
    expect_media_stops(&bob, "bob after alice hung up");
    expect_media_stops(&alice, "alice after her BYE");
}

/// `recall_fallback = "hangup"`: the parker only rings; after `recall_ring_time` parkd CANCELs (the UAS
/// answers 200 + 487) and ends the parked call with a BYE carrying a Reason. Music until then.
#[test]
fn unanswered_recall_with_hangup_fallback_ends_the_call_with_a_reason() {
    let parkd = parkd_with_lot("recall_hangup", Some("recall_ring_time = 2\nrecall_fallback = \"hangup\""));
    let alice_run = Sipp::new("recall_parker_rings").timeout(SIPP_TIMEOUT).spawn(&parkd);
    let bob = RtpEndpoint::bind("bob (parked)");
    let bob_run = Sipp::parked_recallable(bob.port(), alice_run.local_port).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_hold_music(&bob, 50);
    let alice_out = alice_run.wait();
    alice_out.assert_passed(&parkd, "parker rings, gets CANCEL, answers 200 + 487");
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "parked bob gets parkd's BYE");

    let invited = arrival(&alice_out, "recall INVITE", is_request("INVITE"));
    let cancelled = arrival(&alice_out, "CANCEL", is_request("CANCEL"));
    let ring = cancelled - invited;
    assert!((1.5..8.0).contains(&ring), "CANCEL {ring:.2} s after the recall INVITE, expected about recall_ring_time = 2 s");
    // Nobody took the call: the CANCEL must not tell the parker's phone it was answered elsewhere (RFC 3326).
    let Some(cancel) = alice_out.request("CANCEL") else { panic!("no CANCEL at the parker") };
    let cancel_reason = header(&cancel, "Reason").unwrap_or_default();
    assert!(!cancel_reason.contains("completed elsewhere"), "ring-timeout CANCEL Reason {cancel_reason:?}");
    let Some(bye) = bob_out.request("BYE") else { panic!("bob got no BYE:\n{}", bob_out.messages) };
    let reason = header(&bye, "Reason").unwrap_or_default();
    assert!(reason.contains("cause=408") && reason.contains("Recall Not Answered"), "BYE Reason {reason:?}");
    let byed = arrival(&bob_out, "BYE", is_request("BYE"));
    assert!(byed >= cancelled - 0.5 && byed - cancelled < 3.0, "BYE at {byed:.2}, CANCEL at {cancelled:.2}: hangup must follow the failed recall");

    // Music all along (~5 s parked), one clean stream, then nothing.
    let music = bob.report(PayloadClass::Other);
    music.assert_g711_20ms_stream("bob's hold music through the recall", 150);
    expect_media_stops(&bob, "bob after the BYE");
}

/// `recall_fallback = "repark"`, `recall_rounds = 2`: the first recall is not answered, the call is parked
/// again and a second recall (round=2) comes one parking time after the first CANCEL; after the second
/// failure the call is ended politely. Bob hears one continuous music stream throughout.
#[test]
fn unanswered_recall_with_repark_recalls_again_then_ends() {
    let parkd = parkd_with_lot("recall_repark", Some("recall_ring_time = 2\nrecall_fallback = \"repark\"\nrecall_rounds = 2"));
    let alice_run = Sipp::new("recall_parker_rings").calls(2).timeout(SIPP_TIMEOUT).spawn(&parkd);
    let bob = RtpEndpoint::bind("bob (parked)");
    let bob_run = Sipp::parked_recallable(bob.port(), alice_run.local_port).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_hold_music(&bob, 50);
    let alice_out = alice_run.wait();
    alice_out.assert_passed(&parkd, "two recall rounds, both ring unanswered");
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "parked bob gets parkd's BYE after two rounds");

    let invites: Vec<(f64, String)> = alice_out.received_timed().into_iter().filter(|(_, m)| m.starts_with("INVITE ")).collect();
    let cancels: Vec<f64> = alice_out.received_timed().into_iter().filter(|(_, m)| m.starts_with("CANCEL ")).map(|(t, _)| t).collect();
    assert_eq!(invites.len(), 2, "two recall rounds expected:\n{}", alice_out.messages);
    assert_eq!(cancels.len(), 2, "each round CANCELled:\n{}", alice_out.messages);
    for (i, (_, invite)) in invites.iter().enumerate() {
        let park_recall = header(invite, "Park-Recall").unwrap_or_default();
        assert!(park_recall.contains(&format!("round={}", i + 1)), "round {} Park-Recall {park_recall:?}", i + 1);
    }
    assert_ne!(header(&invites[0].1, "Call-ID"), header(&invites[1].1, "Call-ID"), "each round is a new call");
    let reparked_for = invites[1].0 - cancels[0];
    assert!((2.0..10.0).contains(&reparked_for), "second recall {reparked_for:.2} s after the first CANCEL, expected about {PARKING_TIME} s");
    let Some(bye) = bob_out.request("BYE") else { panic!("bob got no BYE:\n{}", bob_out.messages) };
    let reason = header(&bye, "Reason").unwrap_or_default();
    assert!(reason.contains("Recall Not Answered"), "BYE Reason {reason:?}");
    let byed = arrival(&bob_out, "BYE", is_request("BYE"));
    assert!(byed >= cancels[1] - 0.5, "BYE at {byed:.2} before the second round ended at {:.2}", cancels[1]);

    let music = bob.report(PayloadClass::Other);
    music.assert_g711_20ms_stream("bob's hold music across two recall rounds", 300);
    expect_media_stops(&bob, "bob after the BYE");
}

/// A retrieve while the recall rings wins: the parker's phone gets CANCEL (Reason: call completed
/// elsewhere), the retriever gets 200 with the parked party's identity and two-way audio.
#[test]
fn retrieve_during_recall_cancels_the_recall() {
    let parkd = parkd_with_lot("recall_retrieved", Some("recall_ring_time = 30"));
    let alice_run = Sipp::new("recall_parker_rings").timeout(SIPP_TIMEOUT).spawn(&parkd);
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::parked_recallable(bob.port(), alice_run.local_port).timeout(SIPP_TIMEOUT).spawn(&parkd);
    let bob_port = bob_run.local_port;
    expect_hold_music(&bob, 25);
    if alice_run.wait_for_received(Duration::from_secs(20), |m| m.starts_with("INVITE ")).is_none() {
        panic!("no recall INVITE reached the parker within 20 s; parkd stderr:\n{}", parkd.stderr_tail(40));
    }

    let carol = RtpEndpoint::bind("carol (retriever)");
    carol.start_talking(CAROL);
    let carol_run = Sipp::new("retrieve_uac").service("701").rtp_port(carol.port()).hold_ms(3000).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_peer_audio(&carol, BOB, 50);
    expect_peer_audio(&bob, CAROL, 50);
    let carol_out = carol_run.wait();
    carol_out.assert_passed(&parkd, "retrieve 701 while the recall rings");
    let alice_out = alice_run.wait();
    alice_out.assert_passed(&parkd, "ringing parker gets CANCEL");
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "bob retrieved by carol, BYE when she hangs up");

    let pai = response_header(&carol_out, 200, "P-Asserted-Identity");
    assert!(pai.contains(&format!("sip:bob@127.0.0.1:{bob_port}")), "P-Asserted-Identity {pai:?}");
    let Some(cancel) = alice_out.request("CANCEL") else { panic!("no CANCEL at the parker") };
    let reason = header(&cancel, "Reason").unwrap_or_default();
    assert!(reason.contains("cause=200"), "CANCEL Reason {reason:?} should say the call was completed elsewhere");
    let cancelled = arrival(&alice_out, "CANCEL", is_request("CANCEL"));
    let retrieved = arrival(&carol_out, "200 OK", |m| m.starts_with("SIP/2.0 200"));
    assert!((cancelled - retrieved).abs() < 3.0, "CANCEL at {cancelled:.2} should follow the retrieve at {retrieved:.2}");
    assert_eq!(music_after_bridge(&bob.packets(), CAROL), 0, "hold music reached bob after carol's audio started");
    assert_eq!(carol.report(PayloadClass::Other).count, 0, "carol got non-pattern packets: {}", carol.report(PayloadClass::Other));
    expect_media_stops(&bob, "bob after carol hung up");
}

/// `recall_fallback = "fallback_uri"`: the parker only rings and is CANCELled after `recall_ring_time`; parkd
/// then calls the lot's `fallback_uri` (the operator), whose INVITE says `Park-Recall: fallback;orbit=701`
/// and names the operator in History-Info; the operator answers and talks with the parked party.
#[test]
fn unanswered_recall_goes_to_the_fallback_uri() {
    let op_port = sipp::free_udp_port();
    let lot = format!("recall_ring_time = 2\nrecall_fallback = \"fallback_uri\"\nfallback_uri = \"sip:operator@127.0.0.1:{op_port}\"");
    let parkd = parkd_with_lot("recall_fallback_uri", Some(&lot));
    let operator = RtpEndpoint::bind("operator");
    operator.start_talking(CAROL);
    let op_run = Sipp::new("fallback_operator_answers").local_port(op_port).rtp_port(operator.port()).hold_ms(3000).timeout(SIPP_TIMEOUT).spawn(&parkd);
    let alice_run = Sipp::new("recall_parker_rings").timeout(SIPP_TIMEOUT).spawn(&parkd);
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::parked_recallable(bob.port(), alice_run.local_port).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_hold_music(&bob, 50);
    expect_peer_audio(&operator, BOB, 50);
    expect_peer_audio(&bob, CAROL, 50);
    alice_run.wait().assert_passed(&parkd, "parker rings, gets CANCEL, answers 200 + 487");
    let op_out = op_run.wait();
    op_out.assert_passed(&parkd, "operator answers the fallback call, talks, hangs up");
    bob_run.wait().assert_passed(&parkd, "parked bob talks to the operator, then gets parkd's BYE");
    let Some(invite) = op_out.request("INVITE") else { panic!("the operator got no INVITE:\n{}", op_out.messages) };
    let park_recall = header(&invite, "Park-Recall").unwrap_or_default();
    assert!(park_recall.starts_with("fallback;orbit=701"), "Park-Recall {park_recall:?}");
    assert!(invite.starts_with(&format!("INVITE sip:operator@127.0.0.1:{op_port}")), "Request-URI is the fallback URI:\n{invite}");
    assert_eq!(music_after_bridge(&bob.packets(), CAROL), 0, "no music after the operator's audio started");
}
