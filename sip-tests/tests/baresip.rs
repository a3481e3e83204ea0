//! Parking with real softphones (issue 8): three baresip 1.0 phones A, B, C on 127.0.0.11/12/13, each
//! sending its own pure tone and recording what it hears; the audio is checked by frequency.
//!
//! baresip 1.0 as transferee sends no Referred-By (see ../shared/sip-notes.md, "Phones that send no
//! Referred-By"), so these tests prove that an INVITE to the park code is always a park, and that the
//! `empty_orbit = "park"` lot setting makes a blind transfer to an empty orbit park there.

use sip_tests::harness::park_events::wait_park_event;
use sip_tests::media::audio_check::{analyse, read_wav, Analysis};
use sip_tests::{Baresip, Parkd, ParkdOptions};
use std::net::Ipv4Addr;
use std::time::Duration;

const A_HZ: f64 = 440.0;
const B_HZ: f64 = 880.0;
const C_HZ: f64 = 1320.0;
/// Indexes of the tones in every analysis.
const TONES: [f64; 3] = [A_HZ, B_HZ, C_HZ];
const A_TONE: usize = 0;
const B_TONE: usize = 1;
const C_TONE: usize = 2;
/// Windows (50 ms each) skipped at a switch of audio source.
const SETTLE: usize = 6;
const EVENT_WAIT: Duration = Duration::from_secs(20);
const FILE_WAIT: Duration = Duration::from_secs(10);

fn phones(parkd: &Parkd) -> (Baresip, Baresip, Baresip) {
    (
        Baresip::start(parkd, "a", Ipv4Addr::new(127, 0, 0, 11), A_HZ),
        Baresip::start(parkd, "b", Ipv4Addr::new(127, 0, 0, 12), B_HZ),
        Baresip::start(parkd, "c", Ipv4Addr::new(127, 0, 0, 13), C_HZ),
    )
}

fn parkd_uri(parkd: &Parkd, user: &str) -> String {
    format!("sip:{user}@{}", parkd.sip_addr())
}

/// A calls B peer to peer; B answers; they talk for `talk`. Returns when both report the call established.
fn a_calls_b(a: &Baresip, b: &Baresip, talk: Duration) {
    a.dial(&b.aor());
    b.wait_event("CALL_INCOMING", &a.aor());
    b.accept();
    a.wait_event("CALL_ESTABLISHED", &b.aor());
    b.wait_event("CALL_ESTABLISHED", &a.aor());
    // Also keeps B's next call (to parkd) in a later second: sndfile names recordings by the second.
    std::thread::sleep(talk);
}

/// The single recording of `phone`'s `n`-th call (0-based), analysed at the three tones.
fn recording(phone: &Baresip, n: usize, calls: usize, label: &str) -> Analysis {
    let files = phone.recordings();
    assert_eq!(files.len(), calls, "{}: expected one recording per call ({calls}), got {files:?}", phone.name);
    let samples = read_wav(&files[n], FILE_WAIT);
    analyse(label, &samples, &TONES)
}

/// The scenario of issue 8: A blind-transfers B to 700 (no Referred-By: B parks itself, parker unknown),
/// B hears hold music, A's call ends; C dials 701 and C and B hear each other's tone and nothing else;
/// C hangs up and B's call ends.
#[test]
fn baresip_blind_transfer_to_park_code_then_retrieve() {
    let parkd = Parkd::start("baresip_park_retrieve");
    let (a, b, c) = phones(&parkd);
    let park_uri = parkd_uri(&parkd, "700");

    a_calls_b(&a, &b, Duration::from_secs(2));
    a.transfer(&park_uri);
    let closed = a.wait_event("CALL_CLOSED", &b.aor());
    eprintln!("A's call ended: {}", closed.param);
    b.wait_event("CALL_CLOSED", &a.aor());
    let parked_at = b.wait_event("CALL_ESTABLISHED", &park_uri).at;
    let parked = wait_park_event(&parkd, "parked", EVENT_WAIT, |e| e["orbit"] == "701");
    assert_eq!(parked["parked"], b.aor().as_str(), "B is the parked party: {parked}");
    assert!(parked["parker"].is_null(), "baresip sends no Referred-By, so the parker is unknown: {parked}");

    std::thread::sleep(Duration::from_secs(6)); // B hears "parked on 7 0 1", then hold music
    let orbit_uri = parkd_uri(&parkd, "701");
    c.dial(&orbit_uri);
    let retrieved_at = c.wait_event("CALL_ESTABLISHED", &orbit_uri).at;
    wait_park_event(&parkd, "retrieved", EVENT_WAIT, |e| e["orbit"] == "701" && e["by"] == c.aor().as_str());
    std::thread::sleep(Duration::from_secs(4)); // B and C talk
    c.hangup();
    c.wait_event("CALL_CLOSED", &orbit_uri);
    b.wait_event("CALL_CLOSED", &park_uri);
    wait_park_event(&parkd, "ended", EVENT_WAIT, |e| e["orbit"] == "701");

    // The phones really talk to each other: A heard B and B heard A before the transfer.
    recording(&a, 0, 1, "A, call with B").assert_tone_only(B_TONE, SETTLE, Duration::from_secs(1));
    recording(&b, 0, 2, "B, call with A").assert_tone_only(A_TONE, SETTLE, Duration::from_secs(1));

    // B's call to parkd: the orbit announcement and hold music (none of the tones; the announcement has
    // pauses, the music none), then C's tone and nothing else.
    let b_park = recording(&b, 1, 2, "B, parked then retrieved by C");
    eprintln!("{b_park}");
    let Some(bridged) = b_park.first_tone(C_TONE) else { panic!("B never heard C's tone\n{b_park}") };
    let music = b_park.slice("B on hold", SETTLE.min(bridged)..bridged.saturating_sub(SETTLE));
    music.assert_hold_audio(Duration::from_secs(3));
    music.tail("B on hold, last 2 s", Duration::from_secs(2)).assert_music(Duration::from_secs(2));
    let on_hold = retrieved_at.duration_since(parked_at);
    let heard = music.duration() + Duration::from_millis(100 * SETTLE as u64);
    assert!(
        heard >= on_hold / 2 && heard <= on_hold * 3 / 2 + Duration::from_secs(1),
        "hold music must be real time: B was parked for {on_hold:?} but {heard:?} of music was decoded\n{b_park}"
    );
    b_park.slice("B bridged to C", bridged..b_park.windows.len()).assert_tone_only(C_TONE, 0, Duration::from_secs(2));

    // C heard B's tone from the start, no music.
    let c_call = recording(&c, 0, 1, "C, retrieved B");
    eprintln!("{c_call}");
    c_call.assert_tone_only(B_TONE, SETTLE, Duration::from_secs(2));
}

/// With `empty_orbit = "park"` for the lot, a blind transfer of B to the empty orbit 705 parks B in 705
/// (its INVITE has no Referred-By, which would otherwise make it a retrieve of an empty orbit: 404).
#[test]
fn baresip_blind_transfer_to_empty_orbit_parks_with_park_policy() {
    let config_dir = tempfile::tempdir().expect("temp dir for the parkd config");
    let config = config_dir.path().join("parkd.toml");
    std::fs::write(
        &config,
        "[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\nparking_time = 600\nempty_orbit = \"park\"\n",
    )
    .expect("write parkd config");
    let options = ParkdOptions { extra_args: vec!["--config".into(), config.display().to_string()], ..ParkdOptions::default() };
    let parkd = Parkd::start_with("baresip_empty_orbit_park", options);
    let (a, b, _c) = phones(&parkd);
    let orbit_uri = parkd_uri(&parkd, "705");

    a_calls_b(&a, &b, Duration::from_millis(1500));
    a.transfer(&orbit_uri);
    a.wait_event("CALL_CLOSED", &b.aor());
    b.wait_event("CALL_ESTABLISHED", &orbit_uri);
    let parked = wait_park_event(&parkd, "parked", EVENT_WAIT, |e| e["orbit"] == "705");
    assert_eq!(parked["parked"], b.aor().as_str(), "B is parked in 705: {parked}");
    assert!(parked["parker"].is_null(), "no Referred-By, parker unknown: {parked}");

    std::thread::sleep(Duration::from_secs(5));
    b.hangup();
    b.wait_event("CALL_CLOSED", &orbit_uri);
    wait_park_event(&parkd, "abandoned", EVENT_WAIT, |e| e["orbit"] == "705");
    let b_park = recording(&b, 1, 2, "B, parked in 705");
    eprintln!("{b_park}");
    let on_hold = b_park.slice("B on hold in 705", SETTLE..b_park.windows.len());
    on_hold.assert_hold_audio(Duration::from_secs(2));
    on_hold.tail("B on hold in 705, last 2 s", Duration::from_secs(2)).assert_music(Duration::from_secs(2));
}
