//! Keys pressed while parked (README "DTMF keys while parked") and the courtesy tone on pickup (README "Courtesy
//! tone"), end to end: SIPp plays the signalling, the test's RTP endpoints the media; the parked party presses
//! keys as RFC 4733 telephone-events in its RTP ([`RtpEndpoint::press`]) or as a SIP INFO
//! (`scenarios/parked_dtmf_info.xml`).

use serde_json::Value;
use sip_tests::checks::{expect_hold_music, expect_peer_audio, music_after_bridge, response_header};
use sip_tests::harness::sse::SseTap;
use sip_tests::media::audio_check::analyse;
use sip_tests::sip::sipp::{self, header};
use sip_tests::{Parkd, ParkdOptions, PayloadClass, RtpEndpoint, Sipp, StreamReport};
use std::time::{Duration, Instant};

const BOB: u8 = 0xB0;
const CAROL: u8 = 0xC0;
const ALICE: u8 = 0xA0;
/// The telephone-event payload type the scenarios offer (parkd's answer keeps it).
const EVENT_PT: u8 = 101;
const WAIT: Duration = Duration::from_secs(15);
const SIPP_TIMEOUT: Duration = Duration::from_secs(60);

/// parkd whose default lot has the extra TOML `lot_keys` (parking time 600 s: no recall unless a key asks).
fn parkd_with(test: &str, lot_keys: &str, http: bool) -> Parkd {
    let config = format!("[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\n{lot_keys}\n");
    Parkd::start_with(test, ParkdOptions { config: Some(config), http, ..Default::default() })
}

fn sse(parkd: &Parkd) -> SseTap {
    SseTap::connect(parkd.http_addr.expect("http"), &parkd.http_token(), None)
}

/// The JSON data of every SSE event named `name` received so far.
fn sse_events(tap: &SseTap, name: &str) -> Vec<Value> {
    let text = tap.text();
    let mut out = Vec::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(ev) = line.strip_prefix("event: ") {
            current = Some(ev.trim().to_string());
        } else if let Some(data) = line.strip_prefix("data: ") {
            if current.as_deref() == Some(name) {
                if let Ok(v) = serde_json::from_str(data) {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// Bob, parked on 700 offering telephone-event, presses 0 (RFC 4733): parkd calls the key's URI (Carol, a SIPp
/// UAS), Bob hears music until Carol answers, then the two hear each other; the events say what happened.
#[test]
fn rfc4733_key_calls_its_uri_and_bridges_the_caller() {
    let carol_port = sipp::free_udp_port();
    let parkd = parkd_with("dtmf_dial", &format!("dtmf_keys = {{ \"0\" = \"sip:carol@127.0.0.1:{carol_port}\" }}"), true);
    let tap = sse(&parkd);
    let carol = RtpEndpoint::bind("carol (the key's URI)");
    carol.start_talking(CAROL);
    let carol_run = Sipp::new("unpark_uas").local_port(carol_port).rtp_port(carol.port()).hold_ms(3000).timeout(SIPP_TIMEOUT).spawn(&parkd);
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::new("parked_dtmf").service("700").rtp_port(bob.port()).key("parker_port", &sipp::free_udp_port().to_string()).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_hold_music(&bob, 25);
    assert!(sse_events(&tap, "recall_started").is_empty(), "nothing rings before the key");

    let pressed = Instant::now();
    bob.press('0', EVENT_PT);
    // Carol may answer before the press's last packets (its end packets) left Bob: those are relayed to her as
    // telephone-events (pass-through across the bridge), in the same stream. So her stream is checked whole.
    assert!(carol.wait_for_class(PayloadClass::Pattern(BOB), 50, WAIT), "carol hears bob: {}", carol.report(PayloadClass::Pattern(BOB)));
    let at_carol = StreamReport::of("carol, everything relayed", &carol.packets());
    assert_eq!((at_carol.ssrcs.len(), at_carol.seq_breaks), (1, 0), "one continuous stream: {at_carol}");
    let events_relayed = carol.packets().iter().filter(|p| p.payload_type == EVENT_PT).count();
    eprintln!("telephone-event packets of the press relayed to carol after the bridge: {events_relayed}");
    expect_peer_audio(&bob, CAROL, 50);
    eprintln!("key press to Carol hearing Bob: {:?} (ring + answer of the SIPp UAS included)", pressed.elapsed());
    assert!(tap.wait_for("event: recall_answered", WAIT), "SSE: {}", tap.text());
    let keys = sse_events(&tap, "dtmf_key");
    assert_eq!(keys.len(), 1, "one press, one action: {keys:?}");
    assert_eq!((keys[0]["key"].as_str(), keys[0]["action"].as_str(), keys[0]["via"].as_str()), (Some("0"), Some("dial"), Some("rfc4733")), "{}", keys[0]);
    assert!(sse_events(&tap, "recall_answered").iter().any(|e| e["target"] == "dtmf_key"), "{}", tap.text());

    let carol_out = carol_run.wait();
    carol_out.assert_passed(&parkd, "carol answers the key's call and hangs up");
    let Some(invite) = carol_out.request("INVITE") else { panic!("carol got no INVITE:\n{}", carol_out.messages) };
    assert!(invite.starts_with(&format!("INVITE sip:carol@127.0.0.1:{carol_port}")), "{invite}");
    assert!(header(&invite, "P-Asserted-Identity").is_some_and(|p| p.contains("sip:bob@")), "Carol sees who calls: {invite}");
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "bob is hung up after carol's BYE");
    assert_eq!(response_header(&bob_out, 200, "Park-Orbit"), "701");
    assert_eq!(music_after_bridge(&bob.packets(), CAROL), 0, "no music once Carol's audio flows");
    assert_eq!(at_carol.sources.len(), 1, "{at_carol}");
}

/// Bob presses * as a SIP INFO (application/dtmf-relay): the recall key rings the parker (Alice) at once, 600 s
/// early; she answers and the two talk.
#[test]
fn sip_info_recall_key_recalls_the_parker_now() {
    let parkd = parkd_with("dtmf_info_recall", "dtmf_keys = { \"*\" = \"recall\" }", false);
    let alice = RtpEndpoint::bind("alice (parker)");
    alice.start_talking(ALICE);
    let alice_run = Sipp::new("recall_parker_answers").rtp_port(alice.port()).hold_ms(3000).timeout(SIPP_TIMEOUT).spawn(&parkd);
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let started = Instant::now();
    let bob_run = Sipp::new("parked_dtmf_info")
        .service("700")
        .rtp_port(bob.port())
        .key("parker_port", &alice_run.local_port.to_string())
        .key("info_key", "*")
        .hold_ms(1500)
        .timeout(SIPP_TIMEOUT)
        .spawn(&parkd);
    expect_hold_music(&bob, 25);
    expect_peer_audio(&alice, BOB, 50);
    expect_peer_audio(&bob, ALICE, 50);
    eprintln!("park to the parker hearing Bob: {:?} (1.5 s parked before the INFO; parking time 600 s)", started.elapsed());
    let alice_out = alice_run.wait();
    alice_out.assert_passed(&parkd, "the parker answers the recall the key asked for");
    let invite = alice_out.request("INVITE").expect("a recall INVITE");
    assert!(header(&invite, "Park-Recall").is_some_and(|v| v.starts_with("callback;orbit=701") && v.contains("round=1")), "{invite}");
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "bob's INFO is answered 200; bob is hung up after alice's BYE");
    assert!(bob_out.received().iter().any(|m| m.starts_with("SIP/2.0 200") && m.contains("CSeq: 2 INFO")), "INFO answered 200");
}

/// A burst of presses of the callback key (RFC 4733, then the same key as INFO) within `dtmf_min_gap_ms` is one
/// `callback_requested` event; an unmapped key does nothing; the caller stays parked with music.
#[test]
fn callback_key_is_one_event_per_burst_and_the_caller_stays_parked() {
    let parkd = parkd_with("dtmf_callback", "dtmf_keys = { \"5\" = \"callback\" }\ndtmf_min_gap_ms = 30000", true);
    let tap = sse(&parkd);
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::new("parked_dtmf_info")
        .service("700")
        .rtp_port(bob.port())
        .key("parker_port", &sipp::free_udp_port().to_string())
        .key("info_key", "5")
        .hold_ms(4000)
        .timeout(SIPP_TIMEOUT)
        .spawn(&parkd);
    expect_hold_music(&bob, 25);
    bob.press('9', EVENT_PT);
    for _ in 0..3 {
        bob.press('5', EVENT_PT);
    }
    assert!(tap.wait_for("event: callback_requested", WAIT), "SSE: {}", tap.text());
    // The INFO (4 s after the park) comes within the 30 s gap too.
    assert!(bob_run.wait_for_received(WAIT, |m| m.contains("CSeq: 2 INFO")).is_some(), "the INFO was answered");
    std::thread::sleep(Duration::from_millis(500));
    let cb = sse_events(&tap, "callback_requested");
    assert_eq!(cb.len(), 1, "one callback request for the burst: {}", tap.text());
    assert_eq!((cb[0]["orbit"].as_str(), cb[0]["key"].as_str()), (Some("701"), Some("5")), "{}", cb[0]);
    assert!(cb[0]["caller"].as_str().is_some_and(|c| c.starts_with("sip:bob@")), "{}", cb[0]);
    assert_eq!(sse_events(&tap, "dtmf_key").len(), 1, "the unmapped 9 and the repeats did nothing: {}", tap.text());
    // Still parked: music keeps coming.
    let before = bob.report(PayloadClass::Other).count;
    assert!(bob.wait_for_class(PayloadClass::Other, before + 25, WAIT), "music after the key");

    let (status, _) = http_delete(&parkd, "/v1/orbits/701");
    assert_eq!(status, 200, "the attendant ends the call");
    bob_run.wait().assert_passed(&parkd, "bob parked, pressed keys, was hung up by the API");
}

fn http_delete(parkd: &Parkd, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", parkd.http_addr.expect("http"));
    match ureq::delete(&url).set("Authorization", &format!("Bearer {}", parkd.http_token())).timeout(Duration::from_secs(10)).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("DELETE {url}: {e}"),
    }
}

/// G.711 payload → linear samples.
fn decode(payload_type: u8, payload: &[u8]) -> Vec<i16> {
    let f = if payload_type == 8 { parkd::media::g711::alaw_to_linear } else { parkd::media::g711::ulaw_to_linear };
    payload.iter().map(|b| f(*b)).collect()
}

/// `courtesy_tone = "retriever"`: Carol retrieves Bob and first hears the two 440 Hz beeps, in the same RTP
/// stream as Bob's audio after them (one SSRC, no sequence or timestamp break); Bob hears no tone.
#[test]
fn courtesy_tone_is_heard_by_the_retriever_in_one_continuous_stream() {
    let parkd = parkd_with("courtesy_retriever", "courtesy_tone = \"retriever\"", false);
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::new("parked_waits_for_bye").service("700").rtp_port(bob.port()).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_hold_music(&bob, 25);
    let carol = RtpEndpoint::bind("carol (retriever)");
    carol.start_talking(CAROL);
    let carol_run = Sipp::new("retrieve_uac").service("701").rtp_port(carol.port()).hold_ms(3000).spawn(&parkd);
    expect_peer_audio(&carol, BOB, 50);
    expect_peer_audio(&bob, CAROL, 50);
    carol_run.wait().assert_passed(&parkd, "carol retrieves 701");
    bob_run.wait().assert_passed(&parkd, "bob waits for parkd's BYE");

    let got = carol.packets();
    let Some(first_bob) = got.iter().position(|p| p.class == PayloadClass::Pattern(BOB)) else { panic!("carol never heard bob") };
    let before = &got[..first_bob];
    eprintln!("carol: {} packets before Bob's audio (the tone is 15 × 20 ms)", before.len());
    assert!(!before.is_empty() && before.len() <= 15, "the tone comes first, and only the tone: {} packets", before.len());
    let samples: Vec<i16> = before.iter().flat_map(|p| decode(p.payload_type, &p.payload)).collect();
    let a = analyse("carol, before bob's audio", &samples, &[440.0, 1000.0]);
    eprintln!("{a}");
    let beeps = a.windows.iter().filter(|w| w.is_tone(0)).count();
    assert!(beeps >= 2, "carol must hear 440 Hz first (windows of pure 440 Hz: {beeps})\n{a}");
    let all = StreamReport::of("carol, tone + bob", &got);
    eprintln!("{all}");
    assert_eq!(all.ssrcs.len(), 1, "one stream across the tone: {all}");
    assert_eq!((all.seq_breaks, all.ts_breaks), (0, 0), "no gap or jump between tone and audio: {all}");
    // Bob heard no tone: after the bridge only Carol's pattern.
    assert_eq!(music_after_bridge(&bob.packets(), CAROL), 0);
}

/// `courtesy_tone = "both"` with `courtesy_tone_file` (a 1 s 1000 Hz WAV): both parties hear the file's tone when
/// the retrieve bridges — Bob after his hold music, Carol first — each before the other's audio.
#[test]
fn courtesy_tone_file_plays_to_both_parties() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("tone.wav");
    sip_tests::media::audio_check::write_tone_wav(&wav, 1000.0, 1);
    let parkd = parkd_with("courtesy_both_file", &format!("courtesy_tone = \"both\"\ncourtesy_tone_file = \"{}\"", wav.display()), false);
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::new("parked_waits_for_bye").service("700").rtp_port(bob.port()).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_hold_music(&bob, 25);
    let carol = RtpEndpoint::bind("carol (retriever)");
    carol.start_talking(CAROL);
    let carol_run = Sipp::new("retrieve_uac").service("701").rtp_port(carol.port()).hold_ms(4000).spawn(&parkd);
    expect_peer_audio(&carol, BOB, 50);
    expect_peer_audio(&bob, CAROL, 50);
    carol_run.wait().assert_passed(&parkd, "carol retrieves 701");
    bob_run.wait().assert_passed(&parkd, "bob waits for parkd's BYE");

    for (ep, other) in [(&carol, BOB), (&bob, CAROL)] {
        let got = ep.packets();
        let first_other = got.iter().position(|p| p.class == PayloadClass::Pattern(other)).expect("the other party's audio");
        // The second before the other party's audio: the tone (for Bob, after his music).
        let tail = &got[first_other.saturating_sub(50)..first_other];
        let samples: Vec<i16> = tail.iter().flat_map(|p| decode(p.payload_type, &p.payload)).collect();
        let a = analyse(&format!("{}, just before the other party", ep.name()), &samples, &[1000.0, 440.0]);
        eprintln!("{a}");
        let tone = a.windows.iter().filter(|w| w.is_tone(0)).count();
        assert!(tone >= 10, "{} must hear the 1000 Hz file tone before the other party ({tone} windows)\n{a}", ep.name());
        assert_eq!(a.windows.iter().filter(|w| w.is_tone(1)).count(), 0, "the file replaces the built-in beeps");
    }
}
