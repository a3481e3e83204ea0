//! The rooms' state is plain data: what issue 17's journal will write survives a serde round trip unchanged
//! (postcard, the journal's format), taken from a core in the middle of real flows.

use super::testkit::{ParkAs, Phone, World};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;
use std::time::Duration;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(what: &str, v: &T) {
    let bytes = postcard::to_allocvec(v).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back: T = postcard::from_bytes(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(&back, v, "{what} survives a round trip");
}

#[test]
fn legs_parked_calls_recalls_and_bridges_round_trip() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    w.park(&bob, "700", ParkAs::ALICE.pts("0 8 101"));
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    w.park(&carol, "700", ParkAs::SELF);
    // Bob's recall rings Alice, who answers: a leg parkd started (UAC dialog, its ACK kept).
    let since = w.sent.len();
    w.advance(Duration::from_secs(45));
    let alice = super::testkit::alice();
    let invite = w.requests_to(alice.peer, since).into_iter().find(|r| r.method == crate::sip::Method::Invite).expect("recall");
    let calls: Vec<_> = w.core.parking.iter().cloned().collect();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().any(|c| c.parker.is_some() && w.core.bridging.ringing(c.id).is_some()), "bob's call: parker known, recall ringing");
    assert!(calls.iter().any(|c| c.parker.is_none()), "carol parked herself");
    for call in &calls {
        round_trip("parked call", call);
        if let Some(recall) = w.core.bridging.ringing(call.id) {
            round_trip("recall", recall);
        }
    }
    w.deliver(alice.peer, &alice.answer(&invite, 200, "OK", Some(&alice.sdp("8", "sendrecv"))));
    let bridges: Vec<_> = w.core.bridging.iter().cloned().collect();
    assert_eq!(bridges.len(), 1, "bob's call is bridged to alice");
    round_trip("bridge", &bridges[0]);
    let legs: Vec<_> = w.core.dialogs.iter().cloned().collect();
    assert_eq!(legs.len(), 3, "bob, carol and alice's recall leg");
    assert!(legs.iter().any(|l| l.uac_ack.is_some()), "the recall leg keeps its ACK");
    for leg in &legs {
        assert!(leg.media.rtcp_port == 20_001 && leg.media.peer_rtcp != 0, "{:?}", leg.media);
        // Not journaled (restored from the port plan and the phone's RTP port: `persist::restore`).
        let mut leg = leg.clone();
        (leg.media.rtcp_port, leg.media.peer_rtcp) = (0, 0);
        round_trip("leg", &leg);
    }
}

#[test]
fn blf_subscriptions_and_orphaned_recalls_round_trip() {
    let mut w = World::new();
    let watcher = Phone { call_id: "watch@test".into(), ..Phone::new("watcher", 5080) };
    w.deliver(watcher.peer, &watcher.request("SUBSCRIBE", "700", "Accept: application/dialog-info+xml\nEvent: dialog;id=7\nExpires: 600\n", None));
    let bob = Phone::new("bob", 5070);
    w.park(&bob, "700", ParkAs::ALICE);
    let subs: Vec<_> = w.core.blf.iter().map(|(_, s)| s.clone()).collect();
    assert_eq!(subs.len(), 1);
    assert!(subs[0].in_flight.is_some() && subs[0].event_id.as_deref() == Some("7"), "{:?}", subs[0]);
    round_trip("subscription", &subs[0]);
    // Bob's recall rings Alice; Carol retrieves him meanwhile: the recall becomes an orphan to CANCEL.
    w.advance(Duration::from_secs(45));
    let alice = super::testkit::alice();
    let invite = w.requests_to(alice.peer, 0).into_iter().find(|r| r.method == crate::sip::Method::Invite).expect("recall");
    w.deliver(alice.peer, &alice.answer(&invite, 180, "Ringing", None));
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    w.deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
    let orphan = w.core.bridging.orphans().next().cloned().expect("the recall, given up on");
    assert!(orphan.cancel_sent && orphan.completed_elsewhere, "{orphan:?}");
    round_trip("orphan", &orphan);
}
