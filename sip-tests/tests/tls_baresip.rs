//! A real softphone over TLS (issue 19): baresip 1.0 (Debian baresip-core, libre with OpenSSL) B parks itself
//! by dialling `sip:700@<parkd's TLS address>;transport=tls`, hears the announcement and hold music; C
//! retrieves 701 over TLS; B and C hear each other's tone (checked by frequency); C hangs up and parkd's BYE
//! reaches B over B's TLS connection.

use sip_tests::harness::park_events::wait_park_event;
use sip_tests::media::audio_check::{analyse, read_wav, Analysis};
use sip_tests::sip::tls::{self, TestPki};
use sip_tests::{Baresip, Parkd, ParkdOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const B_HZ: f64 = 880.0;
const C_HZ: f64 = 1320.0;
const TONES: [f64; 2] = [B_HZ, C_HZ];
const B_TONE: usize = 0;
const C_TONE: usize = 1;
/// Windows (50 ms each) skipped at a switch of audio source.
const SETTLE: usize = 6;
const EVENT_WAIT: Duration = Duration::from_secs(20);
const FILE_WAIT: Duration = Duration::from_secs(10);

fn recording(phone: &Baresip, label: &str) -> Analysis {
    let files = phone.recordings();
    assert_eq!(files.len(), 1, "{}: expected one recording, got {files:?}", phone.name);
    analyse(label, &read_wav(&files[0], FILE_WAIT), &TONES)
}

fn tls_uri(tls: SocketAddr, user: &str) -> String {
    format!("sip:{user}@{tls};transport=tls")
}

#[test]
fn baresip_parks_and_retrieves_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::new(dir.path(), "parkd test CA baresip");
    let tls = tls::free_tls_addr();
    let parkd = Parkd::start_with("tls_baresip", ParkdOptions { extra_args: pki.parkd_args(tls, false), http: true, ..Default::default() });
    let b = Baresip::start(&parkd, "b", Ipv4Addr::new(127, 0, 0, 12), B_HZ);
    let c = Baresip::start(&parkd, "c", Ipv4Addr::new(127, 0, 0, 13), C_HZ);
    let (park_uri, orbit_uri) = (tls_uri(tls, "700"), tls_uri(tls, "701"));

    b.dial(&park_uri);
    b.wait_event("CALL_ESTABLISHED", "700@");
    let parked = wait_park_event(&parkd, "parked", EVENT_WAIT, |e| e["orbit"] == "701");
    eprintln!("parked over TLS: {parked}");
    std::thread::sleep(Duration::from_secs(6)); // "parked on 7 0 1", then hold music

    c.dial(&orbit_uri);
    c.wait_event("CALL_ESTABLISHED", "701@");
    wait_park_event(&parkd, "retrieved", EVENT_WAIT, |e| e["orbit"] == "701");
    std::thread::sleep(Duration::from_secs(4)); // B and C talk
    c.hangup();
    c.wait_event("CALL_CLOSED", "701@");
    b.wait_event("CALL_CLOSED", "700@"); // parkd's BYE, over B's TLS connection
    wait_park_event(&parkd, "ended", EVENT_WAIT, |e| e["orbit"] == "701");

    let b_call = recording(&b, "B, parked over TLS then retrieved by C");
    eprintln!("{b_call}");
    let Some(bridged) = b_call.first_tone(C_TONE) else { panic!("B never heard C's tone\n{b_call}") };
    let music = b_call.slice("B on hold", SETTLE.min(bridged)..bridged.saturating_sub(SETTLE));
    music.assert_hold_audio(Duration::from_secs(3));
    b_call.slice("B bridged to C", bridged..b_call.windows.len()).assert_tone_only(C_TONE, 0, Duration::from_secs(2));
    let c_call = recording(&c, "C, retrieved B over TLS");
    eprintln!("{c_call}");
    c_call.assert_tone_only(B_TONE, SETTLE, Duration::from_secs(2));
    let log = parkd.stderr_all();
    assert!(log.contains("SIP over TLS ready"), "{}", parkd.stderr_tail(20));
}
