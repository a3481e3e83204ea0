//! A real softphone parked across a restart (issue 17): baresip B dials the park code and hears hold music;
//! parkd is killed with `kill -9` and started again on the same ports and state directory; B's call goes on
//! (no re-INVITE, no BYE), its music comes back, and C retrieves B from the same orbit: the two hear each
//! other's tone, checked by frequency in the phones' recordings.

use sip_tests::harness::park_events::wait_park_event;
use sip_tests::media::audio_check::{analyse, read_wav};
use sip_tests::{Baresip, Parkd};
use std::net::Ipv4Addr;
use std::time::Duration;

const B_HZ: f64 = 880.0;
const C_HZ: f64 = 1320.0;
const TONES: [f64; 2] = [B_HZ, C_HZ];
const B_TONE: usize = 0;
const C_TONE: usize = 1;
const SETTLE: usize = 6;
const EVENT_WAIT: Duration = Duration::from_secs(20);

#[test]
fn baresip_parked_across_kill_9_is_retrieved_with_audio_both_ways() {
    let mut parkd = Parkd::start("restart_baresip");
    let b = Baresip::start(&parkd, "b", Ipv4Addr::new(127, 0, 0, 12), B_HZ);
    let c = Baresip::start(&parkd, "c", Ipv4Addr::new(127, 0, 0, 13), C_HZ);
    let park_uri = format!("sip:700@{}", parkd.sip_addr());
    b.dial(&park_uri);
    b.wait_event("CALL_ESTABLISHED", &park_uri);
    wait_park_event(&parkd, "parked", EVENT_WAIT, |e| e["orbit"] == "701");
    std::thread::sleep(Duration::from_secs(6)); // the orbit announcement, then hold music

    parkd.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let ready = parkd.restart();
    eprintln!("parkd ready {ready:?} after the restart");
    std::thread::sleep(Duration::from_secs(3)); // hold music again

    let orbit_uri = format!("sip:701@{}", parkd.sip_addr());
    c.dial(&orbit_uri);
    c.wait_event("CALL_ESTABLISHED", &orbit_uri);
    wait_park_event(&parkd, "retrieved", EVENT_WAIT, |e| e["orbit"] == "701" && e["by"] == c.aor().as_str());
    std::thread::sleep(Duration::from_secs(4));
    c.hangup();
    c.wait_event("CALL_CLOSED", &orbit_uri);
    b.wait_event("CALL_CLOSED", &park_uri);

    // B's one call: hold music (before and after the restart), then C's tone only.
    let files = b.recordings();
    assert_eq!(files.len(), 1, "B made one call, kept across the restart: {files:?}");
    let b_call = analyse("B, parked across a restart, then retrieved by C", &read_wav(&files[0], Duration::from_secs(10)), &TONES);
    eprintln!("{b_call}");
    let Some(bridged) = b_call.first_tone(C_TONE) else { panic!("B never heard C's tone\n{b_call}") };
    b_call.slice("B on hold", SETTLE..bridged.saturating_sub(SETTLE)).assert_hold_audio(Duration::from_secs(5));
    b_call.slice("B on hold, after the restart", bridged.saturating_sub(2 * SETTLE + 40)..bridged.saturating_sub(SETTLE)).assert_music(Duration::from_secs(1));
    b_call.slice("B bridged to C", bridged..b_call.windows.len()).assert_tone_only(C_TONE, 0, Duration::from_secs(2));
    let files = c.recordings();
    assert_eq!(files.len(), 1, "{files:?}");
    let c_call = analyse("C, retrieved B after the restart", &read_wav(&files[0], Duration::from_secs(10)), &TONES);
    eprintln!("{c_call}");
    c_call.assert_tone_only(B_TONE, SETTLE, Duration::from_secs(2));
}
