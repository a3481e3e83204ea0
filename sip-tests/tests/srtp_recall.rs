//! SRTP on the calls parkd starts (issue 19) against the real binary: a parker on TLS gets a recall offering
//! `RTP/SAVP` with SDES keys, answers with its own key, and hears the parked party through SRTP (every packet
//! authenticates with the offered key and decrypts to the parked party's pattern; none is in clear), while the
//! parked party hears the parker's SRTP audio decrypted. A parker refusing SRTP (488) is called again with plain
//! RTP under the default `srtp = "optional"`. The phones are the project's TLS test phone with parkd's own SRTP
//! transform on the parker's side.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use parkd::media::srtp::{MasterKey, SrtpKeys, SrtpLeg, SrtpSuite};
use parkd::sdp::crypto::offer_security;
use sip_tests::checks::{expect_hold_music, expect_peer_audio};
use sip_tests::media::rtp_endpoint::{classify, pattern_payload};
use sip_tests::sip::tls::{self, answer, expect, sdp_port, start_line, TestPki, TlsPhone};
use sip_tests::{Parkd, ParkdOptions, PayloadClass, RtpEndpoint};

const WAIT: Duration = Duration::from_secs(10);
const BOB: u8 = 0xb0;
const ALICE: u8 = 0xa1;
/// Alice's key||salt (30 bytes) in base64.
const ALICE_KEY: &str = "QWxpY2UncyBTUlRQIGtleSBhbmQgc2FsdCEhISEh";

struct TlsParkd {
    parkd: Parkd,
    pki: TestPki,
    tls: SocketAddr,
    _dir: tempfile::TempDir,
}

fn start(name: &str) -> TlsParkd {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::new(dir.path(), &format!("parkd test CA {name}"));
    let tls = tls::free_tls_addr();
    let parkd = Parkd::start_with(name, ParkdOptions { extra_args: pki.parkd_args(tls, false), parking_time: 2, ..Default::default() });
    TlsParkd { parkd, pki, tls, _dir: dir }
}

impl TlsParkd {
    fn phone(&self, user: &str) -> TlsPhone {
        let conn = tls::SipTls::connect(self.tls, self.pki.client_config(None)).unwrap_or_else(|e| panic!("TLS connect: {e}\n{}", self.parkd.stderr_tail(30)));
        TlsPhone::new(conn, user, self.tls)
    }

    /// Alice connects over TLS (her Via and Contact name an address nobody listens on, so only her connection
    /// reaches her); Bob parks over TLS (plain RTP, talking) with alice as the parker. Returns alice waiting for
    /// the recall INVITE (and its text), bob's RTP and bob (his connection stays open for the call).
    fn parked_and_recalling(&self) -> (TlsPhone, String, RtpEndpoint, TlsPhone) {
        let mut alice = self.phone("alice");
        let unreachable = tls::free_tls_addr();
        alice.sent_by = unreachable;
        let opt = alice.options(WAIT).unwrap_or_else(|| panic!("no answer to alice's OPTIONS\n{}", self.parkd.stderr_tail(30)));
        assert!(start_line(&opt).starts_with("SIP/2.0 200"), "{opt}");
        let bob_rtp = RtpEndpoint::bind("bob (parked, plain RTP)");
        bob_rtp.start_talking(BOB);
        let mut bob = self.phone("bob");
        let referred_by = format!("Referred-By: <sip:alice@{unreachable};transport=tls>\r\n");
        bob.invite("700", bob_rtp.port(), &referred_by, WAIT).unwrap_or_else(|e| panic!("park over TLS: {e}"));
        expect_hold_music(&bob_rtp, 10);
        let invite = expect(&mut alice.conn, Duration::from_secs(15), "the recall INVITE on alice's connection", |m| start_line(m).starts_with("INVITE "));
        (alice, invite, bob_rtp, bob)
    }
}

fn sdp_body(m: &str) -> &str {
    m.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default()
}

/// A 200 to `invite` from alice with `body`.
fn ok_with(alice: &TlsPhone, invite: &str, body: &str) -> String {
    let extra = format!("Contact: {}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", alice.contact(), body.len());
    answer(invite, 200, "alicetag", &extra)
}

#[test]
fn a_tls_parker_gets_an_srtp_recall_and_hears_the_parked_party_decrypted_both_ways() {
    let p = start("srtp_recall_tls");
    let (mut alice, invite, bob_rtp, _bob) = p.parked_and_recalling();
    let offer = offer_security(sdp_body(&invite).as_bytes());
    assert!(offer.savp, "the recall offers RTP/SAVP:\n{invite}");
    let suites: Vec<_> = offer.crypto.iter().map(|c| c.suite).collect();
    assert_eq!(suites, SrtpSuite::ALL.to_vec(), "one a=crypto per suite, parkd's preference first:\n{invite}");
    let parkd_port = sdp_port(&invite).expect("an audio port in the offer");

    // Alice takes the first line (AES_CM_128_HMAC_SHA1_80, tag 1) with her own key.
    use base64::Engine as _;
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let alice_key = MasterKey::new(suite, &base64::engine::general_purpose::STANDARD.decode(ALICE_KEY).unwrap()).unwrap();
    let mut srtp = SrtpLeg::new(&SrtpKeys { suite, local: alice_key, remote: offer.crypto[0].key.clone() }).unwrap();
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtp.set_nonblocking(true).unwrap();
    let body = format!(
        "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:{} {} inline:{ALICE_KEY}\r\na=sendrecv\r\n",
        rtp.local_addr().unwrap().port(),
        offer.crypto[0].tag,
        suite.name()
    );
    alice.conn.send(ok_with(&alice, &invite, &body).as_bytes()).expect("200 to the recall");
    expect(&mut alice.conn, WAIT, "parkd's ACK", |m| start_line(m).starts_with("ACK "));

    // Alice talks SRTP (her pattern, 20 ms apart) and opens what arrives.
    let to = SocketAddr::from(([127, 0, 0, 1], parkd_port));
    let (mut heard_bob, mut other, mut failed, mut clear) = (0, 0, 0, 0);
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    for seq in 0u16.. {
        if start.elapsed() > Duration::from_secs(4) {
            break;
        }
        let mut pkt = rtp_rs::RtpPacketBuilder::new().payload_type(0).sequence(seq.into()).timestamp(u32::from(seq) * 160).ssrc(0xA11CE).payload(&pattern_payload(ALICE)).build().unwrap();
        let len = pkt.len();
        pkt.resize(len + 64, 0);
        let n = srtp.protect(&mut pkt, len).unwrap();
        let _ = rtp.send_to(&pkt[..n], to);
        std::thread::sleep(Duration::from_millis(20));
        while let Ok((n, _)) = rtp.recv_from(&mut buf) {
            if n >= 12 && classify(&buf[12..n.min(172)]) == PayloadClass::Pattern(BOB) {
                clear += 1;
            }
            match srtp.unprotect(&mut buf, n) {
                Ok(m) if classify(&buf[12..m]) == PayloadClass::Pattern(BOB) => heard_bob += 1,
                Ok(_) => other += 1,
                Err(_) => failed += 1,
            }
        }
    }
    let at_bob = expect_peer_audio(&bob_rtp, ALICE, 50);
    eprintln!("SRTP recall: alice opened {heard_bob} packets of bob (+{other} other, {failed} failed, {clear} in clear); bob (plain) got alice's: {at_bob:?}");
    assert!(heard_bob >= 50, "alice decrypted {heard_bob} packets of bob's audio");
    assert_eq!((failed, clear), (0, 0), "every packet to alice authenticated with parkd's offered key; none in clear");
    let log = p.parkd.stderr_of_every_start();
    assert!(log.contains("outgoing call started"), "the log was read");
    for k in [ALICE_KEY.to_string()].into_iter().chain(sdp_body(&invite).lines().filter_map(|l| l.split("inline:").nth(1)).map(|k| k.trim().to_string())) {
        assert!(!log.contains(&k), "a key in parkd's log: {k}");
    }
}

#[test]
fn a_parker_refusing_srtp_gets_a_plain_recall_under_optional() {
    let p = start("srtp_recall_488");
    let (mut alice, invite, bob_rtp, _bob) = p.parked_and_recalling();
    assert!(offer_security(sdp_body(&invite).as_bytes()).savp, "{invite}");
    alice.conn.send(answer(&invite, 488, "alicetag", "").as_bytes()).expect("488 to the SRTP recall");
    let plain = expect(&mut alice.conn, WAIT, "the plain recall INVITE", |m| start_line(m).starts_with("INVITE "));
    let sdp = sdp_body(&plain);
    assert!(sdp.contains(" RTP/AVP ") && !sdp.contains("a=crypto"), "plain RTP:\n{plain}");
    let alice_rtp = RtpEndpoint::bind("alice (plain)");
    alice_rtp.start_talking(ALICE);
    alice.conn.send(ok_with(&alice, &plain, &tls::sdp(alice_rtp.port())).as_bytes()).expect("200 to the plain recall");
    expect(&mut alice.conn, WAIT, "parkd's ACK", |m| start_line(m).starts_with("ACK "));
    expect_peer_audio(&alice_rtp, BOB, 50);
    expect_peer_audio(&bob_rtp, ALICE, 50);
}
