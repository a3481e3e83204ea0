//! SRTP with SDES keys (issue 19) against the real binary. The test phone offers `RTP/SAVP` with its own
//! `a=crypto` key (over UDP: the lot sets `srtp_over_plain = true`, TLS is another branch), reads parkd's key from
//! the 200, and opens parkd's packets with it. Hold music: every packet authenticates and decrypts to a frame of
//! the built-in loop, and no raw payload is one. Bridge: the SRTP phone and a plain-RTP SIPp retriever hear each
//! other's patterns. Without `srtp_over_plain` the same offer gets 488. Across `kill -9` and a restart, the
//! parked SRTP call's hold music goes on under the same keys (journaled, issue 17): the phone's same context
//! opens every packet.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use parkd::media::srtp::{MasterKey, SrtpKeys, SrtpLeg, SrtpSuite};
use parkd::media::{Codec, HoldMusic};
use parkd::sdp::crypto::offer_security;
use parkd::sip::{parse_message, Message, Response};
use sip_tests::checks::expect_peer_audio;
use sip_tests::media::rtp_endpoint::{classify, pattern_payload};
use sip_tests::{Parkd, ParkdOptions, PayloadClass, RtpEndpoint, Sipp};

const BOB: u8 = 0xB0;
const CAROL: u8 = 0xC0;
const SUITE: SrtpSuite = SrtpSuite::AesCm128HmacSha1_80;
/// The phone's key||salt (30 bytes) in base64.
const PHONE_KEY: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk";

fn config(over_plain: bool) -> String {
    format!("[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\nsrtp_over_plain = {over_plain}\n")
}

/// The SRTP phone: one SIP socket, one RTP socket.
struct SrtpPhone {
    sip: UdpSocket,
    rtp: UdpSocket,
    server: SocketAddr,
    call_id: String,
}

impl SrtpPhone {
    fn new(parkd: &Parkd) -> SrtpPhone {
        let sock = || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            s
        };
        SrtpPhone { sip: sock(), rtp: sock(), server: parkd.sip_addr(), call_id: format!("srtp-{}@test", std::process::id()) }
    }

    fn head(&self, method: &str, cseq: u32, to_tag: Option<&str>) -> String {
        let l = self.sip.local_addr().unwrap();
        let tt = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} sip:700@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-{cseq}-{method};rport\r\nMax-Forwards: 70\r\nFrom: <sip:bob@{l}>;tag=bobtag\r\nTo: <sip:700@{s}>{tt}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:bob@{l}>\r\n",
            s = self.server,
            cid = self.call_id
        )
    }

    /// INVITEs the park code (a blind transfer: Referred-By, so no announcement) offering RTP/SAVP; returns the
    /// final response.
    fn invite(&self) -> Response {
        let sdp = format!(
            "v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 {} inline:{PHONE_KEY}\r\na=sendrecv\r\n",
            self.rtp.local_addr().unwrap().port(),
            SUITE.name()
        );
        let text = format!("{}Referred-By: <sip:alice@127.0.0.1>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", self.head("INVITE", 1, None), sdp.len());
        self.sip.send_to(text.as_bytes(), self.server).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            let Ok((n, _)) = self.sip.recv_from(&mut buf) else { continue };
            if let Ok(Message::Response(r)) = parse_message(&buf[..n]) {
                if r.status >= 200 {
                    return r;
                }
            }
        }
        panic!("no final response to the SRTP INVITE");
    }

    fn ack(&self, to_tag: &str) {
        let text = format!("{}Content-Length: 0\r\n\r\n", self.head("ACK", 1, Some(to_tag)));
        self.sip.send_to(text.as_bytes(), self.server).unwrap();
    }
}

/// The phone's SRTP state from parkd's 200: its own key protects, parkd's answered key opens.
fn phone_srtp(ok: &Response) -> (SrtpLeg, u16) {
    use base64::Engine as _;
    let sec = offer_security(&ok.common.body);
    assert!(sec.savp, "parkd answers RTP/SAVP:\n{}", String::from_utf8_lossy(&ok.common.body));
    assert_eq!(sec.crypto.len(), 1, "one a=crypto in the answer");
    let parkd_key = sec.crypto[0].key.clone();
    assert_eq!((sec.crypto[0].tag, sec.crypto[0].suite), (1, SUITE));
    let phone_key = MasterKey::new(SUITE, &base64::engine::general_purpose::STANDARD.decode(PHONE_KEY).unwrap()).unwrap();
    assert_ne!(parkd_key, phone_key, "parkd answers with its own key");
    let port = sip_tests::sip::ua::sdp_audio_port(ok).expect("an audio port in the answer");
    (SrtpLeg::new(&SrtpKeys { suite: SUITE, local: phone_key, remote: parkd_key }).unwrap(), port)
}

fn music_frames() -> HashSet<Vec<u8>> {
    let m = HoldMusic::builtin();
    (0..5000).map(|i| m.frame(Codec::Pcmu, i).to_vec()).collect()
}

#[test]
fn srtp_hold_music_decrypts_with_the_answered_key_and_is_not_in_clear() {
    let parkd = Parkd::start_with("srtp_hold", ParkdOptions { config: Some(config(true)), ..ParkdOptions::default() });
    let phone = SrtpPhone::new(&parkd);
    let ok = phone.invite();
    assert_eq!(ok.status, 200, "{} {}", ok.status, ok.reason);
    let (mut srtp, _) = phone_srtp(&ok);
    phone.ack(ok.common.to.tag().unwrap());
    let music = music_frames();
    let mut buf = [0u8; 2048];
    let (mut opened, mut clear) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while opened < 50 && Instant::now() < deadline {
        let Ok((n, _)) = phone.rtp.recv_from(&mut buf) else { continue };
        assert_eq!(n, 172 + SUITE.overhead(), "RTP header + 160 bytes + the 80-bit tag");
        if music.contains(&buf[12..172]) {
            clear += 1;
        }
        let m = srtp.unprotect(&mut buf, n).unwrap_or_else(|e| panic!("packet {opened}: {e}"));
        assert_eq!(m, 172);
        assert!(music.contains(&buf[12..172]), "packet {opened} decrypts to a frame of the hold music");
        opened += 1;
    }
    assert_eq!(opened, 50, "50 hold packets within 10 s");
    assert_eq!(clear, 0, "no packet carried the music in clear");
}

/// One hold packet at the phone, opened: `(ssrc, seq)`; panics on one that does not authenticate or is not music.
fn open_hold(srtp: &mut SrtpLeg, music: &HashSet<Vec<u8>>, buf: &mut [u8], n: usize, what: &str) -> (u32, u16) {
    assert_eq!(n, 172 + SUITE.overhead(), "{what}: RTP header + 160 bytes + the 80-bit tag");
    assert!(!music.contains(&buf[12..172]), "{what}: the music in clear");
    let m = srtp.unprotect(buf, n).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(m == 172 && music.contains(&buf[12..172]), "{what} decrypts to a frame of the hold music");
    (u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]), u16::from_be_bytes([buf[2], buf[3]]))
}

#[test]
fn a_parked_srtp_call_survives_kill_9_with_the_same_keys() {
    use std::os::unix::fs::PermissionsExt;
    let mut parkd = Parkd::start_with("srtp_restart", ParkdOptions { config: Some(config(true)), ..ParkdOptions::default() });
    let phone = SrtpPhone::new(&parkd);
    let ok = phone.invite();
    assert_eq!(ok.status, 200, "{} {}", ok.status, ok.reason);
    let (mut srtp, _) = phone_srtp(&ok);
    phone.ack(ok.common.to.tag().unwrap());
    let music = music_frames();
    let mut buf = [0u8; 2048];
    let mut before = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while before.len() < 50 && Instant::now() < deadline {
        let Ok((n, _)) = phone.rtp.recv_from(&mut buf) else { continue };
        before.push(open_hold(&mut srtp, &music, &mut buf, n, &format!("packet {} before the restart", before.len())));
    }
    assert_eq!(before.len(), 50, "50 hold packets within 10 s");

    parkd.kill9();
    // What was on its way before the kill is read (and opened) before the restart.
    while let Ok((n, _)) = phone.rtp.recv_from(&mut buf) {
        before.push(open_hold(&mut srtp, &music, &mut buf, n, "a packet sent before the kill"));
    }
    let journal = parkd.state_dir().join("journal");
    let modes = (std::fs::metadata(parkd.state_dir()).unwrap().permissions().mode() & 0o777, std::fs::metadata(&journal).unwrap().permissions().mode() & 0o777);
    assert_eq!(modes, (0o700, 0o600), "the state directory and the journal (it holds the SRTP keys) are private");
    std::thread::sleep(Duration::from_millis(300));
    let ready = parkd.restart();
    let restarted = Instant::now();

    // The phone keeps the context that opened the stream before: every packet after the restart opens with it.
    let &(ssrc, last_seq) = before.last().unwrap();
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut first_after = None;
    while after.len() < 50 && Instant::now() < deadline {
        let Ok((n, _)) = phone.rtp.recv_from(&mut buf) else { continue };
        first_after.get_or_insert_with(|| restarted.elapsed());
        after.push(open_hold(&mut srtp, &music, &mut buf, n, &format!("packet {} after the restart", after.len())));
    }
    assert_eq!(after.len(), 50, "50 hold packets within 10 s of the restart");
    assert!(after.iter().all(|(s, _)| *s == ssrc), "the same SSRC after the restart");
    let gap = after[0].1.wrapping_sub(last_seq);
    assert!(gap > 0 && gap < 3_000, "the sequence goes on: {last_seq} then {}", after[0].1);
    let log = parkd.stderr_of_every_start();
    assert!(!log.contains(PHONE_KEY), "the phone's key is never logged");
    eprintln!("SRTP across kill -9: ready {ready:?} after the spawn, first hold packet {first_after:?} after ready, sequence gap {gap}; {} + {} packets opened with the same keys", before.len(), after.len());
}

#[test]
fn sdes_over_plain_udp_is_refused_unless_allowed() {
    let parkd = Parkd::start_with("srtp_refused", ParkdOptions { config: Some(config(false)), ..ParkdOptions::default() });
    let r = SrtpPhone::new(&parkd).invite();
    assert_eq!((r.status, r.reason.as_str()), (488, "Not Acceptable Here: SDES keys only over TLS"));
}

/// Bob (SRTP) is parked; Carol (plain RTP, SIPp) retrieves 701: each hears the other's pattern, Bob's through
/// his SRTP keys.
#[test]
fn srtp_parked_party_bridged_to_a_plain_rtp_retriever_both_ways() {
    let parkd = Parkd::start_with("srtp_bridge", ParkdOptions { config: Some(config(true)), ..ParkdOptions::default() });
    let bob = SrtpPhone::new(&parkd);
    let ok = bob.invite();
    assert_eq!(ok.status, 200, "{} {}", ok.status, ok.reason);
    let (mut srtp, parkd_port) = phone_srtp(&ok);
    bob.ack(ok.common.to.tag().unwrap());

    let carol = RtpEndpoint::bind("carol (plain retriever)");
    carol.start_talking(CAROL);
    let carol_run = Sipp::new("retrieve_uac").service("701").rtp_port(carol.port()).hold_ms(4000).spawn(&parkd);
    // Bob talks SRTP (his pattern, 20 ms apart) and opens what arrives.
    bob.rtp.set_nonblocking(true).unwrap();
    let to = SocketAddr::from(([127, 0, 0, 1], parkd_port));
    let (mut heard_carol, mut failed) = (0, 0);
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    for seq in 0u16.. {
        if start.elapsed() > Duration::from_secs(4) {
            break;
        }
        let mut pkt = rtp_rs::RtpPacketBuilder::new().payload_type(0).sequence(seq.into()).timestamp(u32::from(seq) * 160).ssrc(0xB0B).payload(&pattern_payload(BOB)).build().unwrap();
        let len = pkt.len();
        pkt.resize(len + 64, 0);
        let n = srtp.protect(&mut pkt, len).unwrap();
        bob.sock_send(&pkt[..n], to);
        std::thread::sleep(Duration::from_millis(20));
        while let Ok((n, _)) = bob.rtp.recv_from(&mut buf) {
            match srtp.unprotect(&mut buf, n) {
                Ok(m) if classify(&buf[12..m]) == PayloadClass::Pattern(CAROL) => heard_carol += 1,
                Ok(_) => {}
                Err(_) => failed += 1,
            }
        }
    }
    let at_carol = expect_peer_audio(&carol, BOB, 50);
    carol_run.wait().assert_passed(&parkd, "plain retriever of 701");
    assert!(heard_carol >= 50, "bob opened {heard_carol} packets of carol's audio (failures {failed})");
    assert_eq!(failed, 0, "every packet to bob authenticated with parkd's key");
    eprintln!("SRTP bridge: bob (SRTP) heard {heard_carol} packets of carol; carol (RTP) got {at_carol}");
}

impl SrtpPhone {
    fn sock_send(&self, data: &[u8], to: SocketAddr) {
        let _ = self.rtp.send_to(data, to);
    }
}
