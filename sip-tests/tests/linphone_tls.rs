//! linphone over SIP over TLS with SDES SRTP (issue 19): Debian's linphone-cli 5.1 (`linphonec`, driven on
//! stdin, audio from and to WAV files: [`Linphone`]) trusting the test CA (`root_ca`, server certificate and
//! name checked), `media_encryption=srtp` mandatory (offers `RTP/SAVP` with `a=crypto`, refuses plain).
//!
//! 1. linphone as the **transferor**: baresip B (SRTP over TLS) parks itself on 701; linphone L retrieves 701
//!    over TLS+SRTP, B and L talk, then L blind-transfers B to the park code 700 (REFER over its TLS
//!    connection). parkd re-parks B with L as the parker (Referred-By), its final NOTIFY names the orbit, and
//!    L's call is released. B hears music again; baresip C (SRTP over TLS) retrieves the new orbit and B and C
//!    hear each other. Every stretch is checked by frequency in the recordings: B hears music, L's tone,
//!    music, C's tone; L hears B's tone; C hears B's tone.
//! 2. linphone as the **parked party**: L dials 700 over TLS+SRTP, hears the announcement and hold music;
//!    C retrieves it over TLS+SRTP; L and C hear each other; C hangs up and parkd's BYE reaches L over L's TLS
//!    connection.
//! 3. linphone trusting another CA: its TLS handshake fails ("Certificate verification failed"), nothing is
//!    parked: the certificate check in 1 and 2 is real.
//!
//! SRTP on linphone's leg is shown three ways: parkd logs "SRTP (SDES) negotiated" once per leg; linphone's
//! log holds its INVITE over TLS (`RTP/SAVP`, `a=crypto`), parkd's 200 OK answer (`RTP/SAVP` with parkd's own
//! `a=crypto`) and its own "Negotiated media encryption is LinphoneMediaEncryptionSRTP"; and linphone's media
//! is mandatory SRTP, so the tones it sends and records could not flow otherwise.

use serde_json::Value;
use sip_tests::clients::baresip::Security;
use sip_tests::clients::linphone::Linphone;
use sip_tests::harness::park_events::{park_events, wait_park_event};
use sip_tests::media::audio_check::{analyse, read_wav, Analysis};
use sip_tests::sip::tls::{self, TestPki};
use sip_tests::{Baresip, Parkd, ParkdOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

const B_HZ: f64 = 880.0;
const L_HZ: f64 = 1320.0;
const C_HZ: f64 = 440.0;
const TONES: [f64; 3] = [B_HZ, L_HZ, C_HZ];
const B_TONE: usize = 0;
const L_TONE: usize = 1;
const C_TONE: usize = 2;
/// Windows (50 ms each) skipped at a switch of audio source.
const SETTLE: usize = 6;
const EVENT_WAIT: Duration = Duration::from_secs(20);
const FILE_WAIT: Duration = Duration::from_secs(10);
const NEGOTIATED: &str = "SRTP (SDES) negotiated";

/// parkd's TLS address as linphone dials it: by name (`localhost`, in the test certificate). linphone 5.1's
/// name check (`verify_server_cn=1`, mbedTLS) does not match an IP address against the certificate's IP
/// subjectAltName (measured: dialling `127.0.0.1` fails with "Certificate verification failed").
fn tls_uri_by_name(tls: SocketAddr, user: &str) -> String {
    format!("sip:{user}@localhost:{};transport=tls", tls.port())
}

fn tls_uri(tls: SocketAddr, user: &str) -> String {
    format!("sip:{user}@{tls};transport=tls")
}

fn srtp_phone(pki: &TestPki) -> Security {
    Security { mediaenc: Some("srtp-mand"), ca_file: Some(pki.ca_pem.clone()), sip_trace: true }
}

fn start_parkd(name: &str, pki: &TestPki, tls: SocketAddr) -> Parkd {
    Parkd::start_with(name, ParkdOptions { extra_args: pki.parkd_args(tls, false), http: true, ..Default::default() })
}

fn analysis_of(path: &Path, label: &str) -> Analysis {
    let a = analyse(label, &read_wav(path, FILE_WAIT), &TONES);
    eprintln!("{a}");
    a
}

fn baresip_recording(phone: &Baresip, label: &str) -> Analysis {
    let files = phone.recordings();
    assert_eq!(files.len(), 1, "{}: expected one recording, got {files:?}", phone.name);
    analysis_of(&files[0], label)
}

/// Index just after the last window that is tone `i`.
fn end_of_tone(a: &Analysis, i: usize) -> Option<usize> {
    a.windows.iter().rposition(|w| w.is_tone(i)).map(|p| p + 1)
}

/// The SIP messages of linphone's log (`-d 6` prints each one after a "message sent to" / "received" line)
/// whose first line starts with `start` and that mention `needle`.
fn sip_messages<'a>(log: &'a str, start: &str, needle: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    for (i, _) in log.match_indices(start) {
        let at_line_start = i == 0 || log.as_bytes().get(i - 1) == Some(&b'\n');
        let msg = &log[i..];
        let end = msg.find("\n20").map_or(msg.len(), |e| e + 1); // up to the next timestamped log line
        let msg = &msg[..end];
        if at_line_start && msg.contains(needle) {
            found.push(msg);
        }
    }
    found
}

/// Asserts linphone's call to parkd was SDES SRTP over TLS: its INVITE went over TLS offering `RTP/SAVP` with
/// `a=crypto`, and parkd's 200 OK answered `RTP/SAVP` with its own `a=crypto`.
fn assert_linphone_srtp_over_tls(l: &Linphone) {
    let log = l.log_all();
    let invites = sip_messages(&log, "INVITE sip:", "m=audio");
    assert!(!invites.is_empty(), "linphone sent no INVITE with SDP:\n{}", l.log_tail(60));
    for invite in &invites {
        assert!(invite.contains("Via: SIP/2.0/TLS"), "linphone's INVITE is not over TLS:\n{invite}");
        assert!(invite.contains("RTP/SAVP") && invite.contains("a=crypto:"), "linphone did not offer SDES SRTP:\n{invite}");
    }
    assert!(log.contains("Negotiated media encryption is LinphoneMediaEncryptionSRTP"), "linphone did not negotiate SRTP:\n{}", l.log_tail(60));
    let answers = sip_messages(&log, "SIP/2.0 200 OK", "INVITE");
    let answers: Vec<&&str> = answers.iter().filter(|m| m.contains("m=audio")).collect();
    assert!(!answers.is_empty(), "no 200 OK with SDP from parkd in linphone's log:\n{}", l.log_tail(60));
    for sdp in answers {
        assert!(sdp.contains("RTP/SAVP"), "parkd's answer to linphone is not RTP/SAVP:\n{sdp}");
        assert!(sdp.contains("a=crypto:"), "parkd's answer to linphone has no a=crypto:\n{sdp}");
    }
}

/// Waits for the `n`-th park event of kind `kind` and returns it.
fn wait_nth_event(parkd: &Parkd, kind: &str, n: usize) -> Value {
    let deadline = Instant::now() + EVENT_WAIT;
    loop {
        let events: Vec<Value> = park_events(parkd).into_iter().filter(|e| e["event"] == kind).collect();
        if let Some(ev) = events.get(n - 1) {
            return ev.clone();
        }
        assert!(Instant::now() < deadline, "no {kind} event #{n} within {EVENT_WAIT:?}; parkd log:\n{}", parkd.stderr_tail(40));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn linphone_over_tls_and_srtp_blind_transfers_a_call_to_the_park_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::new(dir.path(), "parkd test CA linphone transfer");
    let tls = tls::free_tls_addr();
    let parkd = start_parkd("linphone_tls_transfer", &pki, tls);
    let b = Baresip::start_secure(&parkd, "b", Ipv4Addr::new(127, 0, 0, 41), B_HZ, &srtp_phone(&pki));
    let c = Baresip::start_secure(&parkd, "c", Ipv4Addr::new(127, 0, 0, 42), C_HZ, &srtp_phone(&pki));
    let mut l = Linphone::start(&parkd, "lin", L_HZ, &pki.ca_pem);

    // B parks itself; L retrieves it over TLS+SRTP and they talk.
    b.dial(&tls_uri(tls, "700"));
    b.wait_event("CALL_ESTABLISHED", "700@");
    wait_park_event(&parkd, "parked", EVENT_WAIT, |e| e["orbit"] == "701");
    std::thread::sleep(Duration::from_secs(5)); // "parked on 7 0 1", then hold music
    l.call(&tls_uri_by_name(tls, "701"));
    wait_park_event(&parkd, "retrieved", EVENT_WAIT, |e| e["orbit"] == "701");
    std::thread::sleep(Duration::from_secs(4)); // B and L talk

    // L blind-transfers B to the park code: B is parked again with L as the parker, L's call is released.
    let started = Instant::now();
    l.transfer(&tls_uri_by_name(tls, "700"));
    let reparked = wait_nth_event(&parkd, "parked", 2);
    eprintln!("re-parked by linphone's REFER after {:?}: {reparked}", started.elapsed());
    let orbit = reparked["orbit"].as_str().unwrap_or_default().to_string();
    assert!(!orbit.is_empty(), "re-park event without an orbit: {reparked}");
    let parker = reparked["parker"].as_str().unwrap_or_default();
    assert!(parker.contains("lin@"), "the parker must be linphone (its Referred-By), got {reparked}");
    let ended = l.wait_call_ended();
    eprintln!("linphone's call released {:?} after its REFER: {ended}", started.elapsed());
    let log = l.log_all();
    let refers = sip_messages(&log, "REFER sip:", "Refer-To:");
    assert!(refers.iter().any(|r| r.contains("Via: SIP/2.0/TLS") && r.contains("700@")), "no REFER to 700 over TLS in linphone's log");
    let notifies = sip_messages(&log, "NOTIFY sip:", "SIP/2.0 200");
    assert!(
        notifies.iter().any(|n| n.contains(&format!("Park-Orbit: {orbit}"))),
        "no final NOTIFY naming orbit {orbit} in linphone's log:\n{}",
        l.log_tail(60)
    );

    std::thread::sleep(Duration::from_secs(5)); // B on hold again
    c.dial(&tls_uri(tls, &orbit));
    c.wait_event("CALL_ESTABLISHED", &format!("{orbit}@"));
    let retrieved = wait_nth_event(&parkd, "retrieved", 2);
    assert_eq!(retrieved["orbit"], orbit.as_str(), "C retrieved B's new orbit: {retrieved}");
    std::thread::sleep(Duration::from_secs(4)); // B and C talk
    c.hangup();
    c.wait_event("CALL_CLOSED", &format!("{orbit}@"));
    b.wait_event("CALL_CLOSED", "700@");
    l.quit(); // linphone closes its recording

    // What B heard: music, L's tone, music again, C's tone.
    let b_call = baresip_recording(&b, "B: parked, retrieved by linphone, transferred to 700 by it, retrieved by C");
    let Some(l_start) = b_call.first_tone(L_TONE) else { panic!("B never heard linphone's tone\n{b_call}") };
    let Some(l_end) = end_of_tone(&b_call, L_TONE) else { panic!("B never heard linphone's tone\n{b_call}") };
    let Some(c_start) = b_call.first_tone(C_TONE) else { panic!("B never heard C's tone\n{b_call}") };
    assert!(l_end < c_start, "B heard C before linphone's transfer ended\n{b_call}");
    b_call.slice("B on hold (first park)", SETTLE.min(l_start)..l_start.saturating_sub(SETTLE)).assert_hold_audio(Duration::from_secs(2));
    b_call.slice("B bridged to linphone", l_start..l_end).assert_tone_only(L_TONE, 0, Duration::from_secs(2));
    b_call.slice("B on hold (parked by linphone's REFER)", l_end + SETTLE..c_start.saturating_sub(SETTLE)).assert_hold_audio(Duration::from_secs(3));
    b_call.slice("B bridged to C", c_start..b_call.windows.len()).assert_tone_only(C_TONE, 0, Duration::from_secs(2));

    // What linphone heard (over SRTP): B's tone only, no music.
    let l_call = analyse("linphone: retrieved B, then transferred it", &l.recording(0, FILE_WAIT), &TONES);
    eprintln!("{l_call}");
    l_call.assert_tone_only(B_TONE, SETTLE, Duration::from_secs(2));
    baresip_recording(&c, "C: retrieved B after linphone's transfer").assert_tone_only(B_TONE, SETTLE, Duration::from_secs(2));

    assert_linphone_srtp_over_tls(&l);
    let parkd_log = parkd.stderr_all();
    assert_eq!(parkd_log.matches(NEGOTIATED).count(), 3, "one SDES negotiation per leg (B, linphone, C):\n{}", parkd.stderr_tail(40));
    assert!(!parkd_log.contains("SRTP offer not taken"), "{}", parkd.stderr_tail(40));
}


#[test]
fn linphone_over_tls_and_srtp_is_parked_and_retrieved() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::new(dir.path(), "parkd test CA linphone parked");
    let tls = tls::free_tls_addr();
    let parkd = start_parkd("linphone_tls_parked", &pki, tls);
    let c = Baresip::start_secure(&parkd, "c", Ipv4Addr::new(127, 0, 0, 43), C_HZ, &srtp_phone(&pki));
    let mut l = Linphone::start(&parkd, "lin", L_HZ, &pki.ca_pem);

    l.call(&tls_uri_by_name(tls, "700"));
    let parked = wait_park_event(&parkd, "parked", EVENT_WAIT, |e| e["orbit"] == "701");
    eprintln!("linphone parked over TLS+SRTP: {parked}");
    assert!(parked["parked"].as_str().unwrap_or_default().contains("lin@"), "{parked}");
    std::thread::sleep(Duration::from_secs(6)); // "parked on 7 0 1", then hold music

    c.dial(&tls_uri(tls, "701"));
    c.wait_event("CALL_ESTABLISHED", "701@");
    let retrieved = wait_park_event(&parkd, "retrieved", EVENT_WAIT, |e| e["orbit"] == "701");
    eprintln!("retrieved: {retrieved}");
    std::thread::sleep(Duration::from_secs(4)); // L and C talk
    c.hangup();
    c.wait_event("CALL_CLOSED", "701@");
    let ended = l.wait_call_ended(); // parkd's BYE, over linphone's TLS connection
    eprintln!("linphone: {ended}");
    wait_park_event(&parkd, "ended", EVENT_WAIT, |e| e["orbit"] == "701");
    l.quit();

    // What linphone heard over SRTP: the announcement and hold music, then C's tone.
    let l_call = analyse("linphone: parked over TLS+SRTP, then retrieved by C", &l.recording(0, FILE_WAIT), &TONES);
    eprintln!("{l_call}");
    let Some(bridged) = l_call.first_tone(C_TONE) else { panic!("linphone never heard C's tone\n{l_call}") };
    l_call.slice("linphone on hold", SETTLE.min(bridged)..bridged.saturating_sub(SETTLE)).assert_hold_audio(Duration::from_secs(3));
    l_call.slice("linphone bridged to C", bridged..l_call.windows.len()).assert_tone_only(C_TONE, 0, Duration::from_secs(2));
    baresip_recording(&c, "C: retrieved linphone").assert_tone_only(L_TONE, SETTLE, Duration::from_secs(2));

    assert_linphone_srtp_over_tls(&l);
    let parkd_log = parkd.stderr_all();
    assert_eq!(parkd_log.matches(NEGOTIATED).count(), 2, "one SDES negotiation per leg (linphone, C):\n{}", parkd.stderr_tail(40));
}

/// The certificate check in the tests above is real: a linphone trusting another CA does not reach parkd (its
/// TLS handshake fails, no call, nothing parked).
#[test]
fn linphone_trusting_another_ca_refuses_parkds_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::new(&dir.path().join("parkd"), "parkd test CA linphone");
    let other = TestPki::new(&dir.path().join("other"), "another CA");
    let tls = tls::free_tls_addr();
    let parkd = start_parkd("linphone_tls_other_ca", &pki, tls);
    let l = Linphone::start(&parkd, "lin", L_HZ, &other.ca_pem);
    l.send(&format!("call {}", tls_uri_by_name(tls, "700")));
    let failed = l.wait_output("error");
    eprintln!("linphone trusting another CA: {failed}");
    let log = l.log_all();
    assert!(log.contains("Certificate verification failed"), "linphone's log does not say why:\n{}", l.log_tail(40));
    assert!(!l.output_tail(40).contains("connected."), "{}", l.output_tail(40));
    std::thread::sleep(Duration::from_secs(1));
    assert!(park_events(&parkd).is_empty(), "nothing may be parked: {:?}", park_events(&parkd));
}
