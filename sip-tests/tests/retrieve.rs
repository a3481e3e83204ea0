//! Retrieving: a plain INVITE to an orbit takes the parked call; parkd bridges the RTP of both legs.

use sip_tests::checks::{expect_hold_music, expect_media_stops, expect_peer_audio, music_after_bridge, response_header};
use sip_tests::{Parkd, PayloadClass, RtpEndpoint, Sipp};

const BOB: u8 = 0xB0;
const CAROL: u8 = 0xC0;

/// Bob is parked on 701 (music); Carol dials 701: 200 with P-Asserted-Identity = Bob's From URI; Bob's music
/// stops; each hears the other's pattern (never music after the bridge starts), one SSRC per stream,
/// continuous seq/ts; Carol hangs up → parkd BYEs Bob (the scenario answers it) and 701 is empty again.
#[test]
fn retrieve_bridges_audio_both_ways_and_retriever_hangup_ends_both() {
    let parkd = Parkd::start("retrieve_bridge");
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::new("parked_waits_for_bye").service("700").rtp_port(bob.port()).timeout(std::time::Duration::from_secs(90)).spawn(&parkd);
    let bob_port = bob_run.local_port;
    expect_hold_music(&bob, 50);

    let carol = RtpEndpoint::bind("carol (retriever)");
    carol.start_talking(CAROL);
    let carol_run = Sipp::new("retrieve_uac").service("701").rtp_port(carol.port()).hold_ms(5000).spawn(&parkd);
    let at_carol = expect_peer_audio(&carol, BOB, 100);
    let at_bob = expect_peer_audio(&bob, CAROL, 100);
    let carol_out = carol_run.wait();
    carol_out.assert_passed(&parkd, "retrieve of 701");
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "parked bob waits for parkd's BYE");

    let pai = response_header(&carol_out, 200, "P-Asserted-Identity");
    let bob_uri = format!("sip:bob@127.0.0.1:{bob_port}");
    assert!(pai.contains(&bob_uri), "P-Asserted-Identity {pai:?} must name the parked party {bob_uri}");
    assert!(bob_out.request("BYE").is_some(), "bob must have received parkd's BYE");

    let late_music = music_after_bridge(&bob.packets(), CAROL);
    assert_eq!(late_music, 0, "hold music reached bob after carol's audio started");
    assert_eq!(music_after_bridge(&carol.packets(), BOB), 0, "carol must never get music");
    assert_eq!(carol.report(PayloadClass::Other).count, 0, "carol got non-pattern packets: {}", carol.report(PayloadClass::Other));
    // Symmetric RTP: each leg's relayed audio comes from one parkd port (the one in its SDP answer).
    assert_eq!(at_carol.sources.len(), 1, "{at_carol}");
    assert_eq!(at_bob.sources.len(), 1, "{at_bob}");
    // Informational: does bob see one continuous stream across the switch from music to carol's audio?
    eprintln!("everything bob received: {}", sip_tests::StreamReport::of("bob, music + relay", &bob.packets()));
    eprintln!("relayed to carol: {at_carol}\nrelayed to bob: {at_bob}\nbob's music: {}", bob.report(PayloadClass::Other));

    expect_media_stops(&bob, "bob after the hang-up");
    expect_media_stops(&carol, "carol after the hang-up");
    let again = RtpEndpoint::bind("frank");
    Sipp::new("retrieve_empty_404").service("701").rtp_port(again.port()).run(&parkd).assert_passed(&parkd, "701 empty after the call ended");
}

/// Carol retrieved Bob; Bob hangs up → parkd BYEs Carol (the scenario answers 200); 701 is free again: a
/// directed park to it succeeds.
#[test]
fn parked_hangup_byes_retriever_and_frees_the_orbit() {
    let parkd = Parkd::start("parked_hangup");
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::new("park_indirect_uac").service("700").rtp_port(bob.port()).hold_ms(8000).spawn(&parkd);
    expect_hold_music(&bob, 10);
    let carol = RtpEndpoint::bind("carol (retriever)");
    carol.start_talking(CAROL);
    let carol_run = Sipp::new("retrieve_waits_for_bye").service("701").rtp_port(carol.port()).timeout(std::time::Duration::from_secs(90)).spawn(&parkd);
    expect_peer_audio(&carol, BOB, 25);
    expect_peer_audio(&bob, CAROL, 25);
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "bob parks, is retrieved, hangs up");
    let carol_out = carol_run.wait();
    carol_out.assert_passed(&parkd, "carol gets parkd's BYE when bob hangs up");
    assert!(carol_out.request("BYE").is_some(), "carol must have received parkd's BYE");
    expect_media_stops(&carol, "carol after bob hung up");

    let erin = RtpEndpoint::bind("erin");
    let erin_out = Sipp::new("park_directed_uac").service("701").rtp_port(erin.port()).hold_ms(300).run(&parkd);
    erin_out.assert_passed(&parkd, "directed park to the freed 701");
    assert_eq!(response_header(&erin_out, 200, "Park-Orbit"), "701");
}

/// A parked party hanging up (no retrieve) frees its orbit: a directed park to it succeeds afterwards.
#[test]
fn parked_hangup_frees_the_orbit() {
    let parkd = Parkd::start("parked_hangup_frees");
    let bob = RtpEndpoint::bind("bob");
    Sipp::new("park_directed_uac").service("703").rtp_port(bob.port()).hold_ms(500).run(&parkd).assert_passed(&parkd, "bob parks on 703 and hangs up");
    let dave = RtpEndpoint::bind("dave");
    Sipp::new("park_directed_uac").service("703").rtp_port(dave.port()).hold_ms(300).run(&parkd).assert_passed(&parkd, "dave parks on the freed 703");
}

/// Retrieve of an empty orbit → 404.
#[test]
fn retrieve_of_empty_orbit_is_404() {
    let parkd = Parkd::start("retrieve_empty");
    let carol = RtpEndpoint::bind("carol");
    Sipp::new("retrieve_empty_404").service("710").rtp_port(carol.port()).run(&parkd).assert_passed(&parkd, "retrieve 710 (empty)");
    assert!(carol.packets().is_empty(), "a refused retrieve must get no media");
}

/// `--rtp-legs-per-port 8` (legs share RTP ports, hold music goes out with `sendmmsg`): the indirect park +
/// retrieve flow still gives Bob hold music, then each party the other's audio from the port in its SDP answer.
#[test]
fn shared_rtp_ports_park_and_retrieve_bridge_audio() {
    let options = sip_tests::ParkdOptions { extra_args: vec!["--rtp-legs-per-port".into(), "8".into()], ..Default::default() };
    let parkd = Parkd::start_with("shared_rtp_ports", options);
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::new("parked_waits_for_bye").service("700").rtp_port(bob.port()).timeout(std::time::Duration::from_secs(90)).spawn(&parkd);
    expect_hold_music(&bob, 50);
    let carol = RtpEndpoint::bind("carol (retriever)");
    carol.start_talking(CAROL);
    let carol_run = Sipp::new("retrieve_uac").service("701").rtp_port(carol.port()).hold_ms(3000).spawn(&parkd);
    let at_carol = expect_peer_audio(&carol, BOB, 50);
    let at_bob = expect_peer_audio(&bob, CAROL, 50);
    carol_run.wait().assert_passed(&parkd, "retrieve of 701");
    bob_run.wait().assert_passed(&parkd, "parked bob waits for parkd's BYE");
    assert_eq!(music_after_bridge(&bob.packets(), CAROL), 0, "hold music reached bob after carol's audio started");
    assert_eq!(at_carol.sources.len(), 1, "{at_carol}");
    assert_eq!(at_bob.sources.len(), 1, "{at_bob}");
}
