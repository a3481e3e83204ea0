//! A real softphone pressing a key while parked, and the courtesy tone as a real softphone hears it (issue 21):
//! baresip 1.0 B parks itself (dials 700), sends DTMF with ctrl_tcp's `sndcode` (RFC 4733, the telephone-event
//! parkd's answer offers), and the lot's `callback` key leaves a `callback_requested` event; C then retrieves 701
//! with `courtesy_tone = "retriever"` and its recording starts with the 440 Hz beeps, then B's tone.

use sip_tests::harness::park_events::{park_events, wait_park_event};
use sip_tests::media::audio_check::{analyse, read_wav};
use sip_tests::{Baresip, Parkd, ParkdOptions};
use std::net::Ipv4Addr;
use std::time::Duration;

const BEEP_HZ: f64 = 440.0;
const B_HZ: f64 = 880.0;
const C_HZ: f64 = 1320.0;
const EVENT_WAIT: Duration = Duration::from_secs(20);
const FILE_WAIT: Duration = Duration::from_secs(10);

#[test]
fn baresip_presses_a_key_while_parked_and_the_retriever_hears_the_courtesy_tone() {
    let config = "[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\nannounce_orbit = false\n\
                  dtmf_keys = { \"5\" = \"callback\" }\ncourtesy_tone = \"retriever\"\n";
    let parkd = Parkd::start_with("baresip_dtmf", ParkdOptions { config: Some(config.into()), ..Default::default() });
    let b = Baresip::start(&parkd, "b", Ipv4Addr::new(127, 0, 0, 12), B_HZ);
    let c = Baresip::start(&parkd, "c", Ipv4Addr::new(127, 0, 0, 13), C_HZ);
    let park_uri = format!("sip:700@{}", parkd.sip_addr());
    b.dial(&park_uri);
    b.wait_event("CALL_ESTABLISHED", &park_uri);
    wait_park_event(&parkd, "parked", EVENT_WAIT, |e| e["orbit"] == "701");
    std::thread::sleep(Duration::from_secs(1)); // B's RTP is flowing (parkd latched to it)

    b.command("sndcode", "5");
    let key = wait_park_event(&parkd, "dtmf_key", EVENT_WAIT, |e| e["orbit"] == "701");
    assert_eq!((key["key"].as_str(), key["via"].as_str(), key["action"].as_str()), (Some("5"), Some("rfc4733"), Some("callback")), "{key}");
    let cb = wait_park_event(&parkd, "callback_requested", EVENT_WAIT, |e| e["orbit"] == "701");
    assert!(cb["caller"].as_str().is_some_and(|u| u.contains("b@127.0.0.12")), "{cb}");
    std::thread::sleep(Duration::from_millis(500));
    let presses = park_events(&parkd).iter().filter(|e| e["event"] == "dtmf_key").count();
    assert_eq!(presses, 1, "one key press, one action (baresip's RFC 4733 end packets are not new presses)");

    let orbit_uri = format!("sip:701@{}", parkd.sip_addr());
    c.dial(&orbit_uri);
    c.wait_event("CALL_ESTABLISHED", &orbit_uri);
    wait_park_event(&parkd, "retrieved", EVENT_WAIT, |e| e["orbit"] == "701");
    std::thread::sleep(Duration::from_secs(3));
    c.hangup();
    c.wait_event("CALL_CLOSED", &orbit_uri);
    b.wait_event("CALL_CLOSED", &park_uri);

    let files = c.recordings();
    assert_eq!(files.len(), 1, "C made one call: {files:?}");
    let heard = analyse("C, retrieved B", &read_wav(&files[0], FILE_WAIT), &[BEEP_HZ, B_HZ, C_HZ]);
    eprintln!("{heard}");
    let Some(beep) = heard.first_tone(0) else { panic!("C never heard the 440 Hz courtesy tone\n{heard}") };
    let Some(b_tone) = heard.first_tone(1) else { panic!("C never heard B\n{heard}") };
    assert!(beep < b_tone, "the courtesy tone comes before B's audio (first beep window {beep}, first B window {b_tone})\n{heard}");
    let beeps = heard.windows.iter().filter(|w| w.is_tone(0)).count();
    assert!(beeps <= 8, "the tone is short (≤ 300 ms + jitter), not a stream: {beeps} windows of 440 Hz\n{heard}");
    heard.slice("C after the tone", b_tone..heard.windows.len()).assert_tone_only(1, 2, Duration::from_secs(2));
}
