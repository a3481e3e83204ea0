//! What the core reports for metrics, so the io layer reads no message itself: the SIP messages it received
//! and sent (its `Stats`), and how long each call stayed parked (the `dwell_ms` of the events that end a stay).

use super::commands::Command;
use super::testkit::{ParkAs, Phone, World};
use super::{Output, ParkEvent};
use crate::sip::{parse_message, Message};
use crate::txn::{MsgKind, SipCounts};
use std::time::Duration;

const BLIND: ParkAs = ParkAs::ALICE.pts("0 8 101");

/// What a message is, read from its bytes (an oracle independent of the transaction layer's counting).
fn kind_of(bytes: &[u8]) -> MsgKind {
    match parse_message(bytes).expect("a message parkd sent or the test wrote") {
        Message::Request(r) => MsgKind::request(&r.method),
        Message::Response(r) => MsgKind::response(r.status, &r.common.cseq.method),
    }
}

/// Delivers `text` and also counts it in `received`.
fn deliver(w: &mut World, received: &mut SipCounts, from: &Phone, text: &str) {
    w.deliver(from.peer, text);
    received.count_received(kind_of(&super::testkit::crlf(text)));
}

#[test]
fn message_counts_are_every_message_in_and_out_retransmissions_included() {
    let mut w = World::new();
    let mut expected = SipCounts::default();
    let bob = Phone::new("bob", 5070);
    let invite = bob.invite("700", "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&bob.sdp("0", "sendrecv")));
    deliver(&mut w, &mut expected, &bob, &invite);
    // The INVITE again (its 200 is re-sent), then the ACK.
    deliver(&mut w, &mut expected, &bob, &invite);
    let ok = w.last_response_to(bob.peer, 0);
    let tag = ok.common.to.tag().expect("tag").to_string();
    deliver(&mut w, &mut expected, &bob, &bob.ack("700", &tag, 1, None));
    // A retrieve, its ACK, the retriever's BYE: parkd BYEs Bob, who answers.
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    let since = w.sent.len();
    deliver(&mut w, &mut expected, &carol, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
    let ctag = w.last_response_to(carol.peer, since).common.to.tag().expect("tag").to_string();
    deliver(&mut w, &mut expected, &carol, &carol.ack("701", &ctag, 1, None));
    let since = w.sent.len();
    deliver(&mut w, &mut expected, &carol, &carol.in_dialog("BYE", "701", &ctag, 2, None));
    let bye = w.requests_to(bob.peer, since).pop().expect("parkd's BYE to Bob");
    // Bob is slow: parkd sends its BYE again (Timer E) before the 200 arrives.
    w.advance(Duration::from_millis(600));
    deliver(&mut w, &mut expected, &bob, &bob.ok_to(&bye));
    // A malformed request is answered 400 but is not a message received (it counts as malformed).
    w.deliver_raw(bob.peer, b"INVITE sip:700@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKm\r\nFrom: <sip:b@h>;tag=1\r\nTo: <sip:700@h>\r\nCall-ID: m\r\nCSeq: 1 INVITE\r\nContent-Length: 9999\r\n\r\n");
    for (_, bytes) in &w.sent {
        expected.count_sent(kind_of(bytes));
    }
    let stats = w.core.stats();
    assert_eq!(stats.malformed, 1);
    assert_eq!(stats.messages, expected, "counted {:?}\nwire {:?}", stats.messages.iter().collect::<Vec<_>>(), expected.iter().collect::<Vec<_>>());
    let invite = MsgKind::request(&crate::sip::Method::Invite);
    assert_eq!(stats.messages.get(false, invite), 3, "Bob's INVITE twice, Carol's once");
    assert!(stats.messages.get(true, MsgKind::request(&crate::sip::Method::Bye)) >= 2, "the BYE and its re-send");
    assert_eq!(stats.messages.get(true, MsgKind::response(400, &crate::sip::Method::Invite)), 1, "the answer to the malformed INVITE");
}

/// The dwell of the last event matching `pick`.
fn dwell_of(w: &World, pick: impl Fn(&ParkEvent) -> bool) -> u64 {
    let ev = w.events.iter().rev().find(|e| pick(e)).unwrap_or_else(|| panic!("no such event in {:?}", w.events));
    u64::try_from(ev.dwell().expect("an event that ends a stay").as_millis()).expect("small")
}

#[test]
fn events_that_end_a_stay_carry_how_long_the_call_was_parked() {
    let mut w = World::new();
    // Retrieved after 12.5 s.
    let bob = Phone::new("bob", 5070);
    w.park(&bob, "700", BLIND);
    w.advance(Duration::from_millis(12_500));
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    w.deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
    assert_eq!(dwell_of(&w, |e| matches!(e, ParkEvent::Retrieved { .. })), 12_500);
    // Abandoned after 7 s.
    let dave = Phone { call_id: "dave-call".into(), ..Phone::new("dave", 5072) };
    let tag = w.park(&dave, "702", BLIND).tag;
    w.advance(Duration::from_secs(7));
    w.deliver(dave.peer, &dave.in_dialog("BYE", "702", &tag, 2, None));
    assert_eq!(dwell_of(&w, |e| matches!(e, ParkEvent::Abandoned { .. })), 7_000);
    // Hung up by an application after 3 s.
    let erin = Phone { call_id: "erin-call".into(), ..Phone::new("erin", 5073) };
    w.park(&erin, "703", BLIND);
    w.advance(Duration::from_secs(3));
    w.core.handle_command(w.now, Command::Hangup { orbit: "703".into() }).expect("hung up");
    while let Some(o) = w.core.poll_output() {
        if let Output::Event(e) = o {
            w.events.push(e);
        }
    }
    assert_eq!(dwell_of(&w, |e| matches!(e, ParkEvent::HungUp { .. })), 3_000);
    // Events that do not end a stay carry none.
    assert!(w.events.iter().filter(|e| matches!(e, ParkEvent::Parked { .. })).all(|e| e.dwell().is_none()));
}

#[test]
fn a_recall_answered_counts_the_whole_stay_ringing_included() {
    let mut w = World::new();
    let r = w.recall_ringing(Phone::new("bob", 5070), BLIND, Duration::from_secs(45));
    w.advance(Duration::from_secs(2));
    let answer = r.alice.answer(&r.invite, 200, "OK", Some(&r.alice.sdp("0", "sendrecv")));
    w.deliver(r.alice.peer, &answer);
    assert_eq!(dwell_of(&w, |e| matches!(e, ParkEvent::RecallAnswered { .. })), 47_000);
}
