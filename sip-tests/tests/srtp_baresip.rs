//! Real softphones with SDES SRTP (issue 19): baresip 1.0 (Debian baresip-core: its `srtp` module, libre with
//! OpenSSL) over SIP over TLS, trusting the test CA (`sip_cafile`), its account set to `mediaenc=srtp-mand`
//! (offers `RTP/SAVP` with `a=crypto`, refuses plain).
//!
//! 1. B (SRTP) parks itself by dialling 700 over TLS; C (SRTP) retrieves 701 over TLS: B hears hold music, then
//!    B and C hear each other's tone (checked by frequency). parkd logs "SRTP (SDES) negotiated" for each leg,
//!    and the SIP trace in each phone's log shows parkd's answer: `RTP/SAVP` with parkd's own `a=crypto`.
//! 2. B (SRTP over TLS) parked; D, a plain-RTP baresip over UDP, retrieves 701: parkd bridges SRTP to RTP, both
//!    hear each other's tone; D's trace shows a plain `RTP/AVP` answer without `a=crypto`.
//!
//! Measured: baresip 1.0 loads `sip_cafile` ("ua: adding SIP CA") but does not verify the server's certificate
//! (a phone trusting an unrelated CA still connects): the CA is configured as a phone would be, yet these tests do
//! not prove certificate checking by baresip (sip-tests/tests/tls.rs does that with the harness's TLS client).
//!
//! linphone (issue 19's transferor over TLS+SRTP): sip-tests/tests/linphone_tls.rs.

use sip_tests::clients::baresip::Security;
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
const NEGOTIATED: &str = "SRTP (SDES) negotiated";

fn recording(phone: &Baresip, label: &str) -> Analysis {
    let files = phone.recordings();
    assert_eq!(files.len(), 1, "{}: expected one recording, got {files:?}", phone.name);
    analyse(label, &read_wav(&files[0], FILE_WAIT), &TONES)
}

fn tls_uri(tls: SocketAddr, user: &str) -> String {
    format!("sip:{user}@{tls};transport=tls")
}

fn srtp_phone(pki: &TestPki) -> Security {
    Security { mediaenc: Some("srtp-mand"), ca_file: Some(pki.ca_pem.clone()), sip_trace: true }
}

/// The SDP bodies of the `200 OK`s to INVITE in a baresip SIP trace (`-s`), i.e. parkd's answers.
fn answers_in_trace(log: &str) -> Vec<String> {
    let mut answers = Vec::new();
    for (i, _) in log.match_indices("SIP/2.0 200 OK") {
        let msg = &log[i..];
        let end = msg[1..].find("SIP/2.0 ").map_or(msg.len(), |e| e + 1);
        let msg = &msg[..end];
        if msg.contains("CSeq:") && msg.lines().any(|l| l.starts_with("CSeq:") && l.contains("INVITE")) {
            if let Some(body) = msg.find("v=0") {
                answers.push(msg[body..].to_string());
            }
        }
    }
    answers
}

/// Asserts that parkd answered `phone` with SDES SRTP (`RTP/SAVP` and an `a=crypto` line) and that the
/// phone's srtp module took it.
fn assert_srtp_answer(phone: &Baresip) {
    let log = phone.log_all();
    assert!(log.contains("SRTP is Enabled"), "{}: its srtp module did not start SRTP:\n{}", phone.name, phone.log_tail(60));
    let answers = answers_in_trace(&log);
    assert!(!answers.is_empty(), "{}: no 200 OK with SDP in its SIP trace:\n{}", phone.name, phone.log_tail(60));
    for sdp in &answers {
        assert!(sdp.contains("RTP/SAVP"), "{}: parkd's answer is not RTP/SAVP:\n{sdp}", phone.name);
        assert!(sdp.contains("a=crypto:"), "{}: parkd's answer has no a=crypto:\n{sdp}", phone.name);
    }
}

/// Asserts that parkd answered `phone` with plain RTP.
fn assert_plain_answer(phone: &Baresip) {
    let log = phone.log_all();
    assert!(!log.contains("SRTP is Enabled"), "{}: SRTP on the plain phone:\n{}", phone.name, phone.log_tail(60));
    let answers = answers_in_trace(&log);
    assert!(!answers.is_empty(), "{}: no 200 OK with SDP in its SIP trace:\n{}", phone.name, phone.log_tail(60));
    for sdp in &answers {
        assert!(sdp.contains("RTP/AVP") && !sdp.contains("RTP/SAVP"), "{}: not a plain answer:\n{sdp}", phone.name);
        assert!(!sdp.contains("a=crypto:"), "{}: a plain answer with a=crypto:\n{sdp}", phone.name);
    }
}

/// Parks `b` over TLS, waits for the announcement and some hold music.
fn park(parkd: &Parkd, b: &Baresip, tls: SocketAddr) {
    b.dial(&tls_uri(tls, "700"));
    b.wait_event("CALL_ESTABLISHED", "700@");
    let parked = wait_park_event(parkd, "parked", EVENT_WAIT, |e| e["orbit"] == "701");
    eprintln!("parked: {parked}");
    std::thread::sleep(Duration::from_secs(6)); // "parked on 7 0 1", then hold music
}

/// `retriever` dials `orbit_uri`; B and it talk; it hangs up; parkd's BYE reaches B. Then checks both recordings.
fn retrieve_and_check(parkd: &Parkd, b: &Baresip, retriever: &Baresip, orbit_uri: &str, what: &str) {
    retriever.dial(orbit_uri);
    retriever.wait_event("CALL_ESTABLISHED", "701@");
    wait_park_event(parkd, "retrieved", EVENT_WAIT, |e| e["orbit"] == "701");
    std::thread::sleep(Duration::from_secs(4)); // B and the retriever talk
    retriever.hangup();
    retriever.wait_event("CALL_CLOSED", "701@");
    b.wait_event("CALL_CLOSED", "700@");
    wait_park_event(parkd, "ended", EVENT_WAIT, |e| e["orbit"] == "701");

    let b_call = recording(b, &format!("B (SRTP), parked then retrieved by {what}"));
    eprintln!("{b_call}");
    let Some(bridged) = b_call.first_tone(C_TONE) else { panic!("B never heard the retriever's tone\n{b_call}") };
    let music = b_call.slice("B on hold (SRTP)", SETTLE.min(bridged)..bridged.saturating_sub(SETTLE));
    music.assert_hold_audio(Duration::from_secs(3));
    b_call.slice("B bridged", bridged..b_call.windows.len()).assert_tone_only(C_TONE, 0, Duration::from_secs(2));
    let r_call = recording(retriever, &format!("{what}, retrieved B"));
    eprintln!("{r_call}");
    r_call.assert_tone_only(B_TONE, SETTLE, Duration::from_secs(2));
}

#[test]
fn baresip_parks_and_retrieves_over_tls_with_sdes_srtp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::new(dir.path(), "parkd test CA srtp baresip");
    let tls = tls::free_tls_addr();
    let parkd = Parkd::start_with("srtp_baresip", ParkdOptions { extra_args: pki.parkd_args(tls, false), http: true, ..Default::default() });
    let b = Baresip::start_secure(&parkd, "b", Ipv4Addr::new(127, 0, 0, 14), B_HZ, &srtp_phone(&pki));
    let c = Baresip::start_secure(&parkd, "c", Ipv4Addr::new(127, 0, 0, 15), C_HZ, &srtp_phone(&pki));

    park(&parkd, &b, tls);
    retrieve_and_check(&parkd, &b, &c, &tls_uri(tls, "701"), "C (SRTP)");

    assert_srtp_answer(&b);
    assert_srtp_answer(&c);
    let log = parkd.stderr_all();
    assert_eq!(log.matches(NEGOTIATED).count(), 2, "one SDES negotiation per leg:\n{}", parkd.stderr_tail(40));
    assert!(!log.contains("SRTP offer not taken"), "{}", parkd.stderr_tail(40));
}

#[test]
fn srtp_baresip_parked_is_retrieved_by_a_plain_rtp_baresip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::new(dir.path(), "parkd test CA srtp bridge");
    let tls = tls::free_tls_addr();
    let parkd = Parkd::start_with("srtp_baresip_plain", ParkdOptions { extra_args: pki.parkd_args(tls, false), http: true, ..Default::default() });
    let b = Baresip::start_secure(&parkd, "b", Ipv4Addr::new(127, 0, 0, 16), B_HZ, &srtp_phone(&pki));
    let plain = Security { sip_trace: true, ..Security::default() };
    let d = Baresip::start_secure(&parkd, "d", Ipv4Addr::new(127, 0, 0, 17), C_HZ, &plain);

    park(&parkd, &b, tls);
    let orbit = format!("sip:701@{}", parkd.sip_addr()); // plain SIP over UDP, plain RTP
    retrieve_and_check(&parkd, &b, &d, &orbit, "D (plain RTP)");

    assert_srtp_answer(&b);
    assert_plain_answer(&d);
    let log = parkd.stderr_all();
    assert_eq!(log.matches(NEGOTIATED).count(), 1, "SDES on B's leg only:\n{}", parkd.stderr_tail(40));
}

/// A lot with `srtp = "required"`: a plain-RTP baresip can neither park (488 with the policy's reason, seen in
/// the phone's close event) nor retrieve; an SRTP baresip parks and an SRTP baresip retrieves it.
#[test]
fn srtp_required_lot_refuses_a_plain_baresip_and_takes_srtp_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::new(dir.path(), "parkd test CA srtp required");
    let tls = tls::free_tls_addr();
    let config = "[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\nsrtp = \"required\"\n".to_string();
    let options = ParkdOptions { extra_args: pki.parkd_args(tls, false), config: Some(config), http: true, ..Default::default() };
    let parkd = Parkd::start_with("srtp_baresip_required", options);
    let plain = Security { sip_trace: true, ..Security::default() };
    let d = Baresip::start_secure(&parkd, "d", Ipv4Addr::new(127, 0, 0, 18), C_HZ, &plain);
    let b = Baresip::start_secure(&parkd, "b", Ipv4Addr::new(127, 0, 0, 19), B_HZ, &srtp_phone(&pki));
    let c = Baresip::start_secure(&parkd, "c", Ipv4Addr::new(127, 0, 0, 20), C_HZ, &srtp_phone(&pki));

    d.dial(&format!("sip:700@{}", parkd.sip_addr()));
    let closed = d.wait_event("CALL_CLOSED", "700@");
    eprintln!("plain park refused: {}", closed.param);
    assert!(closed.param.contains("488"), "plain park: {closed:?}");
    assert!(d.log_all().contains("488 Not Acceptable Here: SRTP (RTP/SAVP) required"), "{}", d.log_tail(40));

    park(&parkd, &b, tls);
    d.dial(&format!("sip:701@{}", parkd.sip_addr()));
    let closed = d.wait_event("CALL_CLOSED", "701@");
    assert!(closed.param.contains("488"), "plain retrieve: {closed:?}");
    retrieve_and_check(&parkd, &b, &c, &tls_uri(tls, "701"), "C (SRTP)");
    assert_srtp_answer(&b);
    assert_srtp_answer(&c);
    assert!(d.recordings().is_empty(), "the refused phone got no audio: {:?}", d.recordings());
}
