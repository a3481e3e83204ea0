//! Parking: indirect (park code) and directed (orbit) parks, refusals, hold music on the wire.

use sip_tests::checks::{answer_rtp_port, expect_hold_music, expect_media_stops, response_header};
use sip_tests::{Parkd, ParkdOptions, RtpEndpoint, Sipp};
use std::net::SocketAddr;

/// Indirect park: 200 OK with `Park-Orbit: 701` (lowest free) and an SDP answer; hold music at 50 packets/s,
/// one SSRC, seq +1, ts +160, 172-byte PCMU/PCMA packets, sent from the port the SDP answer names; music
/// stops once the parked party hangs up.
#[test]
fn indirect_park_gets_lowest_orbit_and_hold_music() {
    let parkd = Parkd::start("indirect_park");
    let bob = RtpEndpoint::bind("bob");
    let run = Sipp::new("park_indirect_uac").service("700").rtp_port(bob.port()).hold_ms(3000).spawn(&parkd);
    let music = expect_hold_music(&bob, 75);
    let outcome = run.wait();
    outcome.assert_passed(&parkd, "indirect park");
    assert_eq!(response_header(&outcome, 200, "Park-Orbit"), "701", "lowest free orbit");
    let answer_port = answer_rtp_port(&outcome);
    let expected_source = SocketAddr::from(([127, 0, 0, 1], answer_port));
    assert!(
        music.sources.iter().all(|s| *s == expected_source),
        "hold music must come from the port of parkd's SDP answer ({expected_source}): {music}"
    );
    assert!(
        (parkd.ports.rtp_lo..=parkd.ports.rtp_hi).contains(&answer_port),
        "answer port {answer_port} outside --rtp-ports {}-{}",
        parkd.ports.rtp_lo,
        parkd.ports.rtp_hi
    );
    expect_media_stops(&bob, "after the parked party's BYE");
}

/// Two calls parked on 700 at once get 701 and 702; once both left, the next one gets 701 again.
#[test]
fn indirect_parks_take_the_lowest_free_orbits() {
    let parkd = Parkd::start("lowest_free");
    let bob = RtpEndpoint::bind("bob");
    let bob_run = Sipp::new("park_indirect_uac").service("700").rtp_port(bob.port()).hold_ms(4000).spawn(&parkd);
    expect_hold_music(&bob, 10);
    let dave = RtpEndpoint::bind("dave");
    let dave_out = Sipp::new("park_indirect_uac").service("700").rtp_port(dave.port()).hold_ms(500).run(&parkd);
    dave_out.assert_passed(&parkd, "second park");
    assert_eq!(response_header(&dave_out, 200, "Park-Orbit"), "702", "701 is taken by bob");
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "first park");
    assert_eq!(response_header(&bob_out, 200, "Park-Orbit"), "701");
    let erin = RtpEndpoint::bind("erin");
    let erin_out = Sipp::new("park_indirect_uac").service("700").rtp_port(erin.port()).hold_ms(300).run(&parkd);
    erin_out.assert_passed(&parkd, "third park");
    assert_eq!(response_header(&erin_out, 200, "Park-Orbit"), "701", "701 was freed by bob's BYE");
}

/// Directed park to 705: 200 OK with `Park-Orbit: 705` (the scenario checks it equals the dialled orbit).
#[test]
fn directed_park_gets_the_dialled_orbit() {
    let parkd = Parkd::start("directed_park");
    let bob = RtpEndpoint::bind("bob");
    let run = Sipp::new("park_directed_uac").service("705").rtp_port(bob.port()).hold_ms(2000).spawn(&parkd);
    expect_hold_music(&bob, 50);
    let outcome = run.wait();
    outcome.assert_passed(&parkd, "directed park");
    assert_eq!(response_header(&outcome, 200, "Park-Orbit"), "705");
}

/// Directed park to an occupied orbit → 486; the call already parked there is not disturbed.
#[test]
fn directed_park_to_occupied_orbit_is_486() {
    let parkd = Parkd::start("occupied_486");
    let bob = RtpEndpoint::bind("bob");
    let bob_run = Sipp::new("park_directed_uac").service("705").rtp_port(bob.port()).hold_ms(4000).spawn(&parkd);
    expect_hold_music(&bob, 10);
    let carl = RtpEndpoint::bind("carl");
    let refused = Sipp::new("park_occupied_486").service("705").rtp_port(carl.port()).run(&parkd);
    refused.assert_passed(&parkd, "park to occupied 705");
    assert!(carl.packets().is_empty(), "the refused caller must get no media");
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "bob parked on 705");
    expect_hold_music(&bob, 100);
}

/// Full lot (2 orbits, 2 parked) → `486 Parking Lot Full`.
#[test]
fn full_lot_is_486_parking_lot_full() {
    let options = ParkdOptions { orbits: "701-702".into(), ..Default::default() };
    let parkd = Parkd::start_with("lot_full", options);
    let bob = RtpEndpoint::bind("bob");
    let dave = RtpEndpoint::bind("dave");
    let bob_run = Sipp::new("park_indirect_uac").service("700").rtp_port(bob.port()).hold_ms(5000).spawn(&parkd);
    expect_hold_music(&bob, 5);
    let dave_run = Sipp::new("park_indirect_uac").service("700").rtp_port(dave.port()).hold_ms(5000).spawn(&parkd);
    expect_hold_music(&dave, 5);
    let carl = RtpEndpoint::bind("carl");
    let refused = Sipp::new("park_occupied_486").service("700").rtp_port(carl.port()).run(&parkd);
    refused.assert_passed(&parkd, "park into a full lot");
    let Some(status) = refused.response(486) else { panic!("no 486 in {}", refused.messages) };
    let status_line = status.lines().next().unwrap_or_default().trim().to_string();
    assert_eq!(status_line, "SIP/2.0 486 Parking Lot Full");
    bob_run.wait().assert_passed(&parkd, "bob parked");
    dave_run.wait().assert_passed(&parkd, "dave parked");
}

/// A number that is neither the park code nor an orbit → 404.
#[test]
fn unknown_number_is_404() {
    let parkd = Parkd::start("unknown_404");
    let eve = RtpEndpoint::bind("eve");
    Sipp::new("retrieve_empty_404").service("555").rtp_port(eve.port()).run(&parkd).assert_passed(&parkd, "INVITE 555");
}
