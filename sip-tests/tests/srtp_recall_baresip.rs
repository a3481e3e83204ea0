//! An outgoing call with SDES SRTP to a real softphone (issue 19): two baresip 1.0 phones (Debian baresip-core,
//! its `srtp` module, account `mediaenc=srtp-mand`: `RTP/SAVP` only) over SIP over TLS. B parks itself over TLS
//! (701); C, which has no TLS listener of its own (no certificate), parks too (702), so its TLS connection to
//! parkd stays open (a phone registered over TLS keeps one the same way); an application unparks 701 to C (HTTP API),
//! and parkd calls C over C's own connection (RFC 5923 style: C's Via names C's address) offering `RTP/SAVP` with
//! its `a=crypto` lines. C's srtp module takes them (an `srtp-mand` phone refuses anything else), C answers, and B
//! and C hear each other's tone, checked by frequency in what each phone decrypted and recorded. A recall to the
//! parker or the fallback URI goes through the same code (`core::originate`); the unpark is used here because the
//! phone's TLS port is known only once it runs.

use serde_json::json;
use sip_tests::clients::baresip::Security;
use sip_tests::harness::park_events::wait_park_event;
use sip_tests::media::audio_check::{analyse, read_wav};
use sip_tests::sip::tls::{self, TestPki};
use sip_tests::{Baresip, Parkd, ParkdOptions};
use std::net::Ipv4Addr;
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
const TOKEN: &str = "srtp-recall-token";

/// The SIP message in a baresip SIP trace (`-s`) that starts with `start` (the first one).
fn message_in_trace<'a>(log: &'a str, start: &str) -> Option<&'a str> {
    let i = log.find(start)?;
    let msg = &log[i..];
    let end = msg[1..].find("SIP/2.0 ").map_or(msg.len(), |e| e + 1);
    Some(&msg[..end])
}

#[test]
fn an_srtp_baresip_called_over_tls_gets_srtp_and_talks_to_the_parked_srtp_baresip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::new(dir.path(), "parkd test CA srtp recall baresip");
    let tls = tls::free_tls_addr();
    // baresip's TLS client socket is not bound to the phone's address: its connections come from 127.0.0.1, and
    // parkd takes a Via sent-by as the connection's alias only on the connection's own IP (RFC 5923 caution).
    let c_ip = Ipv4Addr::new(127, 0, 0, 1);
    let mut extra_args = pki.parkd_args(tls, false);
    extra_args.extend(["--http-token".to_string(), TOKEN.to_string()]);
    let config = format!("[http]\ndial_allow = [\"c@{c_ip}\"]\n");
    let parkd = Parkd::start_with("srtp_recall_baresip", ParkdOptions { extra_args, config: Some(config), http: true, ..Default::default() });
    let security = Security { mediaenc: Some("srtp-mand"), ca_file: Some(pki.ca_pem.clone()), sip_trace: true };
    let b = Baresip::start_secure(&parkd, "b", Ipv4Addr::new(127, 0, 0, 21), B_HZ, &security);
    let c = Baresip::start_secure(&parkd, "c", c_ip, C_HZ, &security);

    b.dial(&format!("sip:700@{tls};transport=tls"));
    b.wait_event("CALL_ESTABLISHED", "700@");
    wait_park_event(&parkd, "parked", EVENT_WAIT, |e| e["orbit"] == "701");

    // C's TLS connection to parkd (C parked in 702 keeps it open), and the address C names in its Via on it.
    c.dial(&format!("sip:700@{tls};transport=tls"));
    c.wait_event("CALL_ESTABLISHED", "700@");
    wait_park_event(&parkd, "parked", EVENT_WAIT, |e| e["orbit"] == "702");
    let c_log = c.log_all();
    let invite = message_in_trace(&c_log, "INVITE sip:700@").unwrap_or_else(|| panic!("C's INVITE in its trace:\n{}", c.log_tail(40)));
    let via = invite.lines().find_map(|l| l.strip_prefix("Via: SIP/2.0/TLS ")).unwrap_or_else(|| panic!("C's TLS Via:\n{invite}"));
    let c_sent_by = via.split(';').next().unwrap().trim().to_string();
    std::thread::sleep(Duration::from_secs(3)); // B hears the orbit announcement, then music

    let to = format!("sip:c@{c_sent_by};transport=tls");
    let url = format!("http://{}/v1/orbits/701/unpark", parkd.http_addr.expect("http"));
    let resp = ureq::post(&url).timeout(Duration::from_secs(10)).set("Authorization", &format!("Bearer {TOKEN}")).send_json(json!({ "to": to }));
    let status = match resp {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, r)) => panic!("unpark: {s} {}", r.into_string().unwrap_or_default()),
        Err(e) => panic!("unpark: {e}"),
    };
    assert_eq!(status, 202);
    c.wait_event("CALL_INCOMING", "701@");
    c.accept();
    c.wait_event("CALL_ESTABLISHED", "701@");
    wait_park_event(&parkd, "recall_answered", EVENT_WAIT, |e| e["target"] == "api_unpark");
    std::thread::sleep(Duration::from_secs(4)); // B and C talk
    b.hangup();
    b.wait_event("CALL_CLOSED", "700@");
    c.wait_event("CALL_CLOSED", "701@");

    // parkd's INVITE to C: RTP/SAVP with its a=crypto lines; C's srtp module took it.
    let c_log = c.log_all();
    let offer = message_in_trace(&c_log, "INVITE sip:c@").unwrap_or_else(|| panic!("parkd's INVITE in C's trace:\n{}", c.log_tail(60)));
    assert!(offer.contains("RTP/SAVP") && offer.matches("a=crypto:").count() == 3, "parkd's offer to C:\n{offer}");
    assert!(c_log.contains("SRTP is Enabled"), "C's srtp module:\n{}", c.log_tail(60));

    // What each phone decrypted: C heard B's tone only; B heard music, then C's tone.
    let c_files = c.recordings();
    assert_eq!(c_files.len(), 2, "C's parked call and the unpark: {c_files:?}");
    let c_call = analyse("C (SRTP), called by parkd", &read_wav(&c_files[1], FILE_WAIT), &TONES);
    eprintln!("{c_call}");
    c_call.assert_tone_only(B_TONE, SETTLE, Duration::from_secs(2));
    let b_files = b.recordings();
    assert_eq!(b_files.len(), 1, "{b_files:?}");
    let b_call = analyse("B (SRTP), parked then bridged to C", &read_wav(&b_files[0], FILE_WAIT), &TONES);
    eprintln!("{b_call}");
    let Some(bridged) = b_call.first_tone(C_TONE) else { panic!("B never heard C's tone\n{b_call}") };
    b_call.slice("B bridged to C", bridged..b_call.windows.len()).assert_tone_only(C_TONE, 0, Duration::from_secs(2));
    let log = parkd.stderr_all();
    for k in offer.lines().filter_map(|l| l.split("inline:").nth(1)) {
        assert!(!log.contains(k.trim()), "a key in parkd's log");
    }
}
