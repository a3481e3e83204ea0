//! Transfers into parkd (README "How a call is parked", "REFER to parkd"): a REFER from a bridged leg
//! re-parks the other party (NOTIFY sipfrag names the orbit); attended park swaps the transferee into the
//! parker's self-parked consultation call by `Replaces`; foreign Refer-To targets and unmatched Replaces are
//! refused without disturbing anything.

use sip_tests::checks::{
    expect_hold_music, expect_media_stops, expect_peer_audio, music_after_bridge, pattern_count, response_header, MEDIA_WAIT,
};
use sip_tests::sip::sipp::{self, body, header};
use sip_tests::{paths, Parkd, PayloadClass, ReceivedPacket, RtpEndpoint, Sipp};
use std::collections::HashSet;
use std::time::Duration;

const BOB: u8 = 0xB0;
const CAROL: u8 = 0xC0;
const DAVE: u8 = 0xD0;
/// Bound on each SIPp run (a healthy run needs well under 15 s).
const SIPP_TIMEOUT: Duration = Duration::from_secs(60);

/// The value of parameter `name` (e.g. `tag`) in a header value.
fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(';').skip(1).filter_map(|p| p.trim().split_once('=')).find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim_end_matches('>'))
}

/// A retrieve (`retrieve_uac`) of `orbit` by Dave gets Bob back: P-Asserted-Identity names him, both hear
/// each other, and Dave's hang-up ends Bob's leg (checked by the caller through Bob's scenario).
fn retrieve_bob(parkd: &Parkd, orbit: &str, bob: &RtpEndpoint, bob_uri: &str) {
    let dave = RtpEndpoint::bind("dave (retriever)");
    dave.start_talking(DAVE);
    let run = Sipp::new("retrieve_uac").service(orbit).rtp_port(dave.port()).hold_ms(2000).timeout(SIPP_TIMEOUT).spawn(parkd);
    expect_peer_audio(&dave, BOB, 50);
    expect_peer_audio(bob, DAVE, 50);
    let out = run.wait();
    out.assert_passed(parkd, &format!("dave retrieves {orbit}"));
    let pai = response_header(&out, 200, "P-Asserted-Identity");
    assert!(pai.contains(bob_uri), "P-Asserted-Identity {pai:?} must name bob ({bob_uri})");
    assert_eq!(dave.report(PayloadClass::Other).count, 0, "dave must hear bob, not music: {}", dave.report(PayloadClass::Other));
    assert_eq!(music_after_bridge(&bob.packets(), DAVE), 0, "hold music reached bob after dave's audio started");
}

/// Carol retrieves Bob, then REFERs him to the park code: 202, NOTIFY `100 Trying`, NOTIFY `200 OK` with
/// `Park-Orbit` (RFC 3515 §2.4.4 sipfrag); Bob hears music again after Carol's relayed audio, and a retrieve of
/// the orbit named in the sipfrag gets him back.
#[test]
fn refer_to_the_park_code_reparks_the_other_party() {
    let parkd = Parkd::start("refer_repark");
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::new("parked_waits_for_bye").service("700").rtp_port(bob.port()).timeout(SIPP_TIMEOUT).spawn(&parkd);
    let bob_uri = format!("sip:bob@127.0.0.1:{}", bob_run.local_port);
    expect_hold_music(&bob, 25);

    let carol = RtpEndpoint::bind("carol (retriever, then parker)");
    carol.start_talking(CAROL);
    let carol_run = Sipp::new("retrieve_refer_repark")
        .service("701")
        .rtp_port(carol.port())
        .key("refer_to", "700")
        .hold_ms(2000)
        .timeout(SIPP_TIMEOUT)
        .spawn(&parkd);
    expect_peer_audio(&carol, BOB, 50);
    expect_peer_audio(&bob, CAROL, 50);
    let carol_out = carol_run.wait();
    carol_out.assert_passed(&parkd, "carol retrieves 701, REFERs bob to 700, hangs up");

    assert!(carol_out.response_for(202, "REFER").is_some(), "no 202 to the REFER:\n{}", sipp::tail(&carol_out.messages, 60));
    let notifies = carol_out.requests("NOTIFY");
    assert_eq!(notifies.len(), 2, "expected NOTIFY 100 then NOTIFY 200:\n{}", carol_out.messages);
    assert!(body(&notifies[0]).starts_with("SIP/2.0 100 Trying"), "first NOTIFY:\n{}", notifies[0]);
    assert!(header(&notifies[0], "Subscription-State").unwrap_or_default().starts_with("active"), "{}", notifies[0]);
    let last = body(&notifies[1]);
    assert!(last.starts_with("SIP/2.0 200 OK"), "final NOTIFY:\n{}", notifies[1]);
    assert!(header(&notifies[1], "Subscription-State").unwrap_or_default().starts_with("terminated"), "{}", notifies[1]);
    let orbit = last
        .lines()
        .find_map(|l| l.trim().strip_prefix("Park-Orbit:"))
        .map(|o| o.trim().to_string())
        .unwrap_or_else(|| panic!("the final sipfrag names no Park-Orbit:\n{last}"));
    assert!(orbit.parse::<u32>().is_ok_and(|o| (701..=720).contains(&o)), "sipfrag Park-Orbit {orbit:?}");

    // Bob is parked again: music after carol's audio.
    if !bob.wait_until(MEDIA_WAIT, |p| music_after_bridge(p, CAROL) >= 50) {
        panic!("bob got no hold music after the REFER re-park: {}", bob.report(PayloadClass::Other));
    }
    assert_eq!(carol.report(PayloadClass::Other).count, 0, "carol must never get music: {}", carol.report(PayloadClass::Other));
    expect_media_stops(&carol, "carol after her BYE");

    retrieve_bob(&parkd, &orbit, &bob, &bob_uri);
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "bob parked, retrieved, re-parked by REFER, retrieved again, BYE");
    assert!(bob_out.request("BYE").is_some(), "bob must get parkd's BYE when dave hangs up");
    expect_media_stops(&bob, "bob after dave hung up");
}

/// A REFER whose Refer-To is not one of parkd's numbers → 403 and no NOTIFY; the bridge goes on carrying
/// audio both ways.
#[test]
fn refer_to_a_foreign_number_is_403_and_the_bridge_stays() {
    let parkd = Parkd::start("refer_foreign");
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::new("parked_waits_for_bye").service("700").rtp_port(bob.port()).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_hold_music(&bob, 25);
    let carol = RtpEndpoint::bind("carol (retriever)");
    carol.start_talking(CAROL);
    let carol_run = Sipp::new("retrieve_refer_refused")
        .service("701")
        .rtp_port(carol.port())
        .key("refer_to", "555")
        .hold_ms(2500)
        .timeout(SIPP_TIMEOUT)
        .spawn(&parkd);
    expect_peer_audio(&carol, BOB, 25);
    expect_peer_audio(&bob, CAROL, 25);
    if carol_run.wait_for_received(MEDIA_WAIT, |m| m.starts_with("SIP/2.0 403")).is_none() {
        panic!("no 403 to the REFER within {MEDIA_WAIT:?}; parkd stderr:\n{}", parkd.stderr_tail(40));
    }
    let (at_carol, at_bob) = (pattern_count(&carol, BOB), pattern_count(&bob, CAROL));
    let more = 50;
    let count = |p: &[ReceivedPacket], tag: u8| p.iter().filter(|x| x.class == PayloadClass::Pattern(tag)).count();
    let flowing = carol.wait_until(MEDIA_WAIT, |p| count(p, BOB) >= at_carol + more)
        && bob.wait_until(MEDIA_WAIT, |p| count(p, CAROL) >= at_bob + more);
    assert!(
        flowing,
        "audio must keep flowing after the 403: carol got {} -> {} of bob's, bob {} -> {} of carol's",
        at_carol,
        pattern_count(&carol, BOB),
        at_bob,
        pattern_count(&bob, CAROL)
    );
    let carol_out = carol_run.wait();
    carol_out.assert_passed(&parkd, "REFER to 555 refused, call goes on, BYE");
    assert!(carol_out.requests("NOTIFY").is_empty(), "a refused REFER creates no subscription:\n{}", carol_out.messages);
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "bob gets parkd's BYE when carol hangs up");
    assert_eq!(music_after_bridge(&bob.packets(), CAROL), 0, "bob must not be put back on music");
    expect_peer_audio(&carol, BOB, at_carol + more).assert_g711_20ms_stream("bob's audio at carol across the REFER", at_carol + more);
    expect_media_stops(&bob, "bob after carol hung up");
}

/// The 160-byte frames of a committed prompt (`assets/prompts/<name>.ulaw`), whole frames only.
fn prompt_frames(name: &str) -> Vec<Vec<u8>> {
    let path = paths::workspace_dir().join("assets").join("prompts").join(format!("{name}.ulaw"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    bytes.chunks_exact(160).map(<[u8]>::to_vec).collect()
}

/// How many of `frames` occur among the payloads of `packets`.
fn frames_heard(packets: &[ReceivedPacket], frames: &[Vec<u8>]) -> usize {
    let heard: HashSet<&[u8]> = packets.iter().map(|p| p.payload.as_slice()).collect();
    frames.iter().filter(|f| heard.contains(f.as_slice())).count()
}

/// Attended park (RFC 3891): Alice calls 700 herself (no Referred-By) → 200 with Park-Orbit, hears "parked on
/// 7 0 1" then music. A Replaces with a wrong from-tag → 481 and nothing changes. Bob INVITEs 700 with the
/// right Replaces → 200 with the same Park-Orbit, Alice gets a BYE, Bob hears music; a stale Replaces then
/// → 481; retrieving the orbit gets Bob (P-Asserted-Identity).
#[test]
fn attended_park_by_replaces_swaps_the_transferee_in() {
    let parkd = Parkd::start("attended_park");
    let alice = RtpEndpoint::bind("alice (consultation)");
    let alice_run = Sipp::new("attended_park_consult").service("700").rtp_port(alice.port()).timeout(SIPP_TIMEOUT).spawn(&parkd);
    let Some(ok) = alice_run.wait_for_received(MEDIA_WAIT, |m| m.starts_with("SIP/2.0 200") && header(m, "Park-Orbit").is_some()) else {
        panic!("alice's park of 700 got no 200 with Park-Orbit; parkd stderr:\n{}", parkd.stderr_tail(40));
    };
    let orbit = header(&ok, "Park-Orbit").unwrap_or_default().to_string();
    assert_eq!(orbit, "701");
    let call_id = header(&ok, "Call-ID").unwrap_or_default().to_string();
    let parkd_tag = header(&ok, "To").and_then(|v| param(v, "tag")).unwrap_or_default().to_string();
    let alice_tag = header(&ok, "From").and_then(|v| param(v, "tag")).unwrap_or_default().to_string();
    assert!(!call_id.is_empty() && !parkd_tag.is_empty() && !alice_tag.is_empty(), "dialog identifiers from:\n{ok}");

    // The announcement ("parked on" 7 0 1), then music.
    let parked_on = prompt_frames("parked_on");
    let announcement: Vec<Vec<u8>> = ["parked_on", "digit_7", "digit_0", "digit_1"].iter().flat_map(|p| prompt_frames(p)).collect();
    let all_prompts: HashSet<Vec<u8>> = announcement.iter().cloned().collect();
    let after_announcement = |p: &[ReceivedPacket]| p.iter().skip_while(|x| !all_prompts.contains(&x.payload)).filter(|x| !all_prompts.contains(&x.payload)).count();
    if !alice.wait_until(MEDIA_WAIT, |p| after_announcement(p) >= 75) {
        panic!(
            "alice should hear the announcement then music: {} of {} 'parked on' frames heard, {} packets after it; {}",
            frames_heard(&alice.packets(), &parked_on),
            parked_on.len(),
            after_announcement(&alice.packets()),
            alice.report(PayloadClass::Other)
        );
    }
    let packets = alice.packets();
    let heard = frames_heard(&packets, &announcement);
    assert!(heard * 10 >= announcement.len() * 9, "only {heard} of the {} announcement frames reached alice", announcement.len());
    assert!(
        packets.first().is_some_and(|p| p.payload == parked_on[0]),
        "alice's first packet must be the start of \"parked on\""
    );
    alice.report(PayloadClass::Other).assert_g711_20ms_stream("announcement + music at alice", 100);

    // A Replaces naming alice's call with the wrong from-tag matches nothing.
    let carl = RtpEndpoint::bind("carl");
    let wrong = format!("{call_id};to-tag={parkd_tag};from-tag=not-{alice_tag}");
    Sipp::new("replaces_unmatched_481").service("700").rtp_port(carl.port()).key("replaces", &wrong).run(&parkd).assert_passed(&parkd, "Replaces with a wrong from-tag → 481");
    assert!(alice_run.received_so_far().iter().all(|m| !m.starts_with("BYE ")), "a refused Replaces must not end alice's call");

    let bob = RtpEndpoint::bind("bob (transferee)");
    bob.start_talking(BOB);
    let replaces = format!("{call_id};to-tag={parkd_tag};from-tag={alice_tag}");
    let bob_run = Sipp::new("attended_park_replaces").service("700").rtp_port(bob.port()).key("replaces", &replaces).timeout(SIPP_TIMEOUT).spawn(&parkd);
    let bob_uri = format!("sip:bob@127.0.0.1:{}", bob_run.local_port);
    let alice_out = alice_run.wait();
    alice_out.assert_passed(&parkd, "alice's consultation call is released by parkd's BYE");
    assert!(alice_out.request("BYE").is_some(), "alice must get parkd's BYE");
    expect_media_stops(&alice, "alice after the swap");
    let bob_music = expect_hold_music(&bob, 50);
    assert!(frames_heard(&bob.packets(), &parked_on) == 0, "the transferee must not hear the announcement: {bob_music}");

    let stale = RtpEndpoint::bind("carl again");
    Sipp::new("replaces_unmatched_481").service("700").rtp_port(stale.port()).key("replaces", &replaces).run(&parkd).assert_passed(&parkd, "stale Replaces (alice's released call) → 481");

    retrieve_bob(&parkd, &orbit, &bob, &bob_uri);
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "bob swapped in, retrieved, BYE");
    assert_eq!(response_header(&bob_out, 200, "Park-Orbit"), orbit, "the transferee takes alice's orbit");
    assert!(carl.packets().is_empty() && stale.packets().is_empty(), "refused INVITEs get no media");
}
