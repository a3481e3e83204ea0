//! Direct media after a retrieve (`direct_media = true`) end to end with SIPp: parkd re-INVITEs the parked
//! phone with the retriever's SDP and the retriever with the parked phone's (each checked by its m= port), a
//! hang-up afterwards still ends both legs; and a 491 (glare) is answered by a second re-INVITE after the
//! RFC 3261 §14.1 back-off.

use sip_tests::{Parkd, ParkdOptions, RtpEndpoint, Sipp};
use std::time::Duration;

const CONFIG: &str = "[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\ndirect_media = true\n";

fn parkd(name: &str) -> Parkd {
    Parkd::start_with(name, ParkdOptions { config: Some(CONFIG.into()), ..Default::default() })
}

/// The port of the `m=audio` line in a message body.
fn m_port(msg: &str) -> Option<u16> {
    msg.lines().find_map(|l| l.trim().strip_prefix("m=audio ")).and_then(|r| r.split_whitespace().next()).and_then(|p| p.parse().ok())
}

fn pair(name: &str, parked_scenario: &str) {
    let parkd = parkd(name);
    let (bob, carol) = (RtpEndpoint::bind("bob (parked)"), RtpEndpoint::bind("carol (retriever)"));
    let limit = Duration::from_secs(60);
    let bob_run = Sipp::new(parked_scenario).service("700").rtp_port(bob.port()).timeout(limit).spawn(&parkd);
    // Bob is parked in 701 once his 200 came.
    bob_run.wait_for_received(Duration::from_secs(10), |m| m.starts_with("SIP/2.0 200")).expect("bob parked");
    let carol_out = Sipp::new("retrieve_direct_media").service("701").rtp_port(carol.port()).hold_ms(2000).timeout(limit).run(&parkd);
    carol_out.assert_passed(&parkd, "carol retrieves, is re-INVITEd with bob's SDP, hangs up");
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "bob is re-INVITEd with carol's SDP, then gets parkd's BYE");

    let to_bob = bob_out.requests("INVITE");
    let last = to_bob.last().expect("a re-INVITE to bob");
    assert_eq!(m_port(last), Some(carol.port()), "bob's re-INVITE carries carol's m= port: {last}");
    assert!(last.contains("c=IN IP4 127.0.0.1"), "and her c= address");
    let to_carol = carol_out.requests("INVITE");
    assert_eq!(to_carol.first().and_then(|m| m_port(m)), Some(bob.port()), "carol's re-INVITE carries bob's m= port");
    assert!(bob_out.request("BYE").is_some(), "carol's hang-up still ends bob's leg");
    if to_bob.len() > 1 {
        let times = bob_out.received_timed();
        let invites: Vec<f64> = times.iter().filter(|(_, m)| m.starts_with("INVITE ")).map(|(t, _)| *t).collect();
        if let (Some(first), Some(again)) = (invites.first(), invites.iter().find(|t| **t > invites[0] + 0.001)) {
            eprintln!("figure: re-INVITE sent again {:.2} s after the first (491 back-off 0–2 s, plus retransmission noise)", again - first);
        }
    }
}

#[test]
fn retrieve_with_direct_media_reinvites_both_phones_with_each_others_address() {
    pair("direct_media_pair", "parked_direct_media");
}

#[test]
fn a_491_to_the_direct_media_reinvite_is_retried_after_the_back_off() {
    pair("direct_media_glare", "parked_direct_media_glare");
}
