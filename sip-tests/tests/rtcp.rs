//! RTCP and SRTCP (issue 19) against the real binary, with the project's own test phone offering `a=rtcp-mux`
//! (RFC 5761) or not (then with its own RTCP socket, named in `a=rtcp:`, RFC 3605), in plain `RTP/AVP` or
//! `RTP/SAVP` with its SDES key over UDP (the lot sets `srtp_over_plain = true`).
//!
//! * Hold: a parked phone that muxes gets parkd's Sender Reports on its RTP socket, one that does not on its
//!   RTCP socket from the RTCP port parkd's answer names (`a=rtcp:`), and none on its RTP socket (SRTCP under
//!   parkd's key on an SRTP leg): SR + SDES CNAME, the SSRC of the music, an RTP timestamp on the music's
//!   timeline, counts that match the packets received. The RRs the non-muxing phones send to parkd's RTCP port
//!   are counted as received (`/metrics`).
//! * Bridge: an SRTP parked phone and a plain retriever that muxes, the parked phone muxing or not: an SR sent
//!   by the parked phone (as SRTCP, on its RTP or RTCP socket) reaches the retriever (in clear), under the SSRC
//!   of the audio it hears, with the sender's NTP time; an RR sent back in clear reaches the SRTP phone as
//!   SRTCP it opens (on its RTCP socket from parkd's RTCP port when it does not mux).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parkd::media::rtcp::{is_rtcp, parts, NTP_UNIX_OFFSET, PT_RR, PT_SDES, PT_SR};
use parkd::media::srtp::{MasterKey, SrtpKeys, SrtpLeg, SrtpSuite};
use parkd::sdp::crypto::offer_security;
use parkd::sip::{parse_message, Message, Response};
use sip_tests::{Parkd, ParkdOptions};

const SUITE: SrtpSuite = SrtpSuite::AesCm128HmacSha1_80;
/// The phone's key||salt (30 bytes) in base64.
const PHONE_KEY: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk";

fn config() -> String {
    "[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\nsrtp_over_plain = true\n".to_string()
}

/// A test phone: one SIP socket, one RTP socket (RTCP multiplexed on it when `mux`, else on `rtcp`).
struct Phone {
    sip: UdpSocket,
    rtp: UdpSocket,
    rtcp: Option<UdpSocket>,
    server: SocketAddr,
    call_id: String,
    srtp: bool,
    mux: bool,
    /// The parker named in Referred-By when parking (recalled when the parking time runs out).
    parker: Option<SocketAddr>,
}

impl Phone {
    fn new(parkd: &Parkd, name: &str, srtp: bool, mux: bool) -> Phone {
        let sock = || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            s
        };
        Phone { sip: sock(), rtp: sock(), rtcp: (!mux).then(sock), server: parkd.sip_addr(), call_id: format!("rtcp-{name}-{}@test", std::process::id()), srtp, mux, parker: None }
    }

    fn head(&self, method: &str, user: &str, to_tag: Option<&str>) -> String {
        let l = self.sip.local_addr().unwrap();
        let tt = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} sip:{user}@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-{method}-{b};rport\r\nMax-Forwards: 70\r\nFrom: <sip:phone@{l}>;tag=phonetag\r\nTo: <sip:{user}@{s}>{tt}\r\nCall-ID: {cid}\r\nCSeq: 1 {method}\r\nContact: <sip:phone@{l}>\r\n",
            s = self.server,
            cid = self.call_id,
            b = self.call_id.split('@').next().unwrap_or_default()
        )
    }

    /// INVITEs `user` (700 parks: with Referred-By, so no announcement; an orbit retrieves); the final response
    /// (ACKed when 2xx) and the phone's SRTP state (its key protects, parkd's opens) when SRTP.
    fn call(&self, user: &str) -> (Response, Option<SrtpLeg>, SocketAddr) {
        let profile = if self.srtp { "RTP/SAVP" } else { "RTP/AVP" };
        let crypto = if self.srtp { format!("a=crypto:1 {} inline:{PHONE_KEY}\r\n", SUITE.name()) } else { String::new() };
        let mux = match &self.rtcp {
            None => "a=rtcp-mux\r\n".to_string(),
            Some(s) => format!("a=rtcp:{}\r\n", s.local_addr().unwrap().port()),
        };
        let sdp = format!(
            "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} {profile} 0\r\na=rtpmap:0 PCMU/8000\r\n{crypto}a=sendrecv\r\n{mux}",
            self.rtp.local_addr().unwrap().port()
        );
        let parker = self.parker.map_or("127.0.0.1".to_string(), |a| a.to_string());
        let referred = if user == "700" { format!("Referred-By: <sip:alice@{parker}>\r\n") } else { String::new() };
        let text = format!("{}{referred}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", self.head("INVITE", user, None), sdp.len());
        self.sip.send_to(text.as_bytes(), self.server).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            let Ok((n, _)) = self.sip.recv_from(&mut buf) else { continue };
            let Ok(Message::Response(r)) = parse_message(&buf[..n]) else { continue };
            if r.status < 200 {
                continue;
            }
            assert_eq!(r.status, 200, "{} {}", r.status, r.reason);
            let tag = r.common.to.tag().unwrap().to_string();
            let ack = format!("{}Content-Length: 0\r\n\r\n", self.head("ACK", user, Some(&tag)));
            self.sip.send_to(ack.as_bytes(), self.server).unwrap();
            let body = String::from_utf8_lossy(&r.common.body).to_string();
            assert_eq!(body.contains("a=rtcp-mux\r\n"), self.mux, "parkd answers rtcp-mux exactly when offered:\n{body}");
            assert_eq!(body.contains("a=rtcp:"), !self.mux, "and its RTCP port (RFC 3605) otherwise:\n{body}");
            let port = sip_tests::sip::ua::sdp_audio_port(&r).expect("an audio port in the answer");
            let srtp = self.srtp.then(|| {
                use base64::Engine as _;
                let parkd_key = offer_security(&r.common.body).crypto[0].key.clone();
                let phone_key = MasterKey::new(SUITE, &base64::engine::general_purpose::STANDARD.decode(PHONE_KEY).unwrap()).unwrap();
                SrtpLeg::new(&SrtpKeys { suite: SUITE, local: phone_key, remote: parkd_key }).unwrap()
            });
            return (r, srtp, SocketAddr::from(([127, 0, 0, 1], port)));
        }
        panic!("no final response to the INVITE of {user}");
    }
}

/// parkd's RTCP address from its answer's `a=rtcp:` (a phone that does not mux).
fn parkd_rtcp(r: &Response) -> SocketAddr {
    let port = parkd::sdp::parse_sdp(&r.common.body).unwrap().rtcp_port.expect("a=rtcp: in parkd's answer");
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// What the phone received on its RTP socket, opened: `(rtcp, bytes)` in order.
fn collect(phone: &Phone, srtp: &mut Option<SrtpLeg>, for_: Duration) -> Vec<(bool, Vec<u8>)> {
    collect_on(&phone.rtp, None, srtp, for_)
}

/// What `sock` received (from `from` only, when given), opened: `(rtcp, bytes)` in order.
fn collect_on(sock: &UdpSocket, from: Option<SocketAddr>, srtp: &mut Option<SrtpLeg>, for_: Duration) -> Vec<(bool, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    let end = Instant::now() + for_;
    while Instant::now() < end {
        let Ok((n, src)) = sock.recv_from(&mut buf) else { continue };
        if from.is_some_and(|f| f != src) {
            panic!("a datagram from {src}, not from {from:?}");
        }
        let rtcp = is_rtcp(&buf[..n]);
        let m = match (srtp.as_mut(), rtcp) {
            (None, _) => n,
            (Some(s), true) => s.unprotect_rtcp(&mut buf, n).expect("parkd's SRTCP opens with its answered key"),
            (Some(s), false) => s.unprotect(&mut buf, n).expect("parkd's SRTP opens with its answered key"),
        };
        out.push((rtcp, buf[..m].to_vec()));
    }
    out
}

fn now_ntp_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + NTP_UNIX_OFFSET
}

/// `parkd_rtcp_packets_total{kind}` from `/metrics`.
fn rtcp_metric(parkd: &Parkd, kind: &str) -> u64 {
    let url = format!("http://{}/metrics", parkd.http_addr.expect("parkd started with http"));
    let text = ureq::get(&url).timeout(Duration::from_secs(5)).call().unwrap_or_else(|e| panic!("GET {url}: {e}")).into_string().unwrap_or_default();
    let prefix = format!("parkd_rtcp_packets_total{{kind=\"{kind}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

/// Checks the Sender Reports a phone got against the hold music it got, `packets` (opened, `(rtcp, bytes)`):
/// SR + SDES, the music's SSRC, parkd's CNAME, an RTP time on the music's timeline, the wall clock. `in_order`:
/// the reports came on the RTP socket, interleaved with the music as sent, so each names the RTP time of the
/// packet just before or after it and counts the packets the phone got so far (or one more); else (its own
/// socket) the RTP time is one the music reached and the count no more than the frames so far (a late pacer
/// turn skips frames) nor the packets received. Returns the number of reports.
fn check_reports(name: &str, packets: &[(bool, Vec<u8>)], in_order: bool) -> usize {
    let rtp: Vec<&Vec<u8>> = packets.iter().filter(|(r, _)| !r).map(|(_, b)| b).collect();
    let (ssrc, ts0) = (u32_at(rtp[0], 8), u32_at(rtp[0], 4));
    let last_ts = u32_at(rtp[rtp.len() - 1], 4);
    let (mut received, mut last, mut reports) = (0u32, None, 0);
    for (rtcp, p) in packets {
        if !rtcp {
            received += 1;
            last = Some(u32_at(p, 4));
            continue;
        }
        let kinds: Vec<(u8, usize)> = parts(p).expect("a valid compound packet").map(|x| (x.pt, x.len)).collect();
        assert_eq!(kinds, vec![(PT_SR, 28), (PT_SDES, 28)], "{name}: SR + SDES");
        assert_eq!(u32_at(p, 4), ssrc, "{name}: the SR names the music's SSRC");
        assert_eq!(&p[36..44], b"\x01\x0eparkd-", "{name}: CNAME");
        let (ntp_secs, rtp_ts, count, octets) = (u32_at(p, 8) as u64, u32_at(p, 16), u32_at(p, 20), u32_at(p, 24));
        assert_eq!(rtp_ts.wrapping_sub(ts0) % 160, 0, "{name}: SR RTP time {rtp_ts} on the music's timeline (first packet {ts0})");
        if in_order {
            let last = last.unwrap();
            // The SR leaves with the hold packet of its slot (before or after it in the batch).
            assert!(rtp_ts == last || rtp_ts == last.wrapping_add(160), "{name}: SR RTP time {rtp_ts} (last packet {last})");
            assert!(count == received || count == received + 1, "{name}: SR counts {count} packets, the phone got {received}");
        } else {
            let frames = rtp_ts.wrapping_sub(ts0) / 160 + 1;
            assert!(rtp_ts.wrapping_sub(ts0) <= last_ts.wrapping_sub(ts0) + 160, "{name}: SR RTP time {rtp_ts} beyond the music ({last_ts})");
            assert!(count >= 1 && count <= frames && count as usize <= rtp.len() + 1, "{name}: SR counts {count} packets at frame {frames}, the phone got {}", rtp.len());
        }
        assert_eq!(octets, count * 160, "{name}: payload octets");
        let skew = ntp_secs.abs_diff(now_ntp_secs());
        assert!(skew < 60, "{name}: NTP time is the wall clock ({skew} s off)");
        reports += 1;
    }
    reports
}

#[test]
fn parked_phones_get_sender_reports_muxed_or_on_their_rtcp_port() {
    let parkd = Parkd::start_with("rtcp_hold", ParkdOptions { config: Some(config()), http: true, ..ParkdOptions::default() });
    let names = ["plain", "srtp", "nomux", "srtp-nomux"];
    let phones = [
        Phone::new(&parkd, names[0], false, true),
        Phone::new(&parkd, names[1], true, true),
        Phone::new(&parkd, names[2], false, false),
        Phone::new(&parkd, names[3], true, false),
    ];
    let answers: Vec<(Response, Option<SrtpLeg>, SocketAddr)> = phones.iter().map(|p| p.call("700")).collect();
    let parkd_rtcp: Vec<Option<SocketAddr>> = phones.iter().zip(&answers).map(|(p, a)| (!p.mux).then(|| parkd_rtcp(&a.0))).collect();
    let mut keys: Vec<Option<SrtpLeg>> = answers.into_iter().map(|a| a.1).collect();
    let mut got: Vec<Vec<(bool, Vec<u8>)>> = vec![Vec::new(); 4];
    let mut got_rtcp: Vec<Vec<(bool, Vec<u8>)>> = vec![Vec::new(); 4];
    let start = Instant::now();
    let mut rr_sent = 0u64;
    while start.elapsed() < Duration::from_secs(9) {
        for (i, p) in phones.iter().enumerate() {
            got[i].extend(collect(p, &mut keys[i], Duration::from_millis(60)));
            if let (Some(sock), Some(to)) = (&p.rtcp, parkd_rtcp[i]) {
                got_rtcp[i].extend(collect_on(sock, Some(to), &mut keys[i], Duration::from_millis(40)));
                if rr_sent < 6 && start.elapsed() > Duration::from_secs(2) {
                    // The phone's RR (no report blocks), sealed on the SRTP leg, to parkd's RTCP port.
                    let rr = [0x80, PT_RR, 0, 1, 0, 0, 0x0C, i as u8];
                    let mut buf = rr.to_vec();
                    buf.resize(128, 0);
                    let n = match keys[i].as_mut() {
                        Some(k) => k.protect_rtcp(&mut buf, rr.len()).unwrap(),
                        None => rr.len(),
                    };
                    sock.send_to(&buf[..n], to).unwrap();
                    rr_sent += 1;
                }
            }
        }
    }
    // The RTP sockets once more: every report read above was sent before this, so the music read covers it.
    for (i, p) in phones.iter().enumerate() {
        got[i].extend(collect(p, &mut keys[i], Duration::from_millis(150)));
    }
    for (i, p) in phones.iter().enumerate() {
        let name = names[i];
        let rtp = got[i].iter().filter(|(r, _)| !r).count();
        assert!(rtp > 100, "{name} hears its music ({rtp} packets)");
        assert!(got_rtcp[i].iter().all(|(r, _)| *r), "{name}: only RTCP on the RTCP socket");
        let n = if p.mux {
            assert!(got_rtcp[i].is_empty());
            check_reports(name, &got[i], true)
        } else {
            assert!(got[i].iter().all(|(r, _)| !r), "{name}: no RTCP on the RTP socket of a phone that does not mux");
            let all: Vec<(bool, Vec<u8>)> = got[i].iter().chain(&got_rtcp[i]).cloned().collect();
            check_reports(name, &all, false)
        };
        assert!(n >= 1, "{name}: at least one SR in 9 s (first after 1.25-3.75 s, then every 2.5-7.5 s)");
        eprintln!("rtcp hold ({name}): {n} SRs with {rtp} RTP packets in 9 s{}", if p.mux { " (rtcp-mux)" } else { " (on the phone's RTCP port)" });
    }
    // The RRs sent to parkd's RTCP port arrived (nothing else sent parkd RTCP); the counters are at most ~0.5 s old.
    let mut received = 0;
    for _ in 0..20 {
        received = rtcp_metric(&parkd, "received");
        if received >= rr_sent {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!((received, rr_sent), (6, 6), "every RR sent to parkd's RTCP port was received");
    assert_eq!(rtcp_metric(&parkd, "dropped"), 0);
    eprintln!("rtcp hold: parkd_rtcp_packets_total sent={} received={received}", rtcp_metric(&parkd, "sent"));
}

/// Bob (SRTP, muxing) is parked; Carol (plain, muxing) retrieves 701. Bob talks, then sends an SR (SRTCP):
/// Carol gets it in clear, translated. Carol sends an RR in clear: Bob gets it as SRTCP.
#[test]
fn an_rtcp_report_of_one_bridged_leg_reaches_the_other() {
    bridge_reports("rtcp_bridge", true);
}

/// The same with Bob not muxing: his SRTCP goes to parkd's RTCP port from his RTCP socket, Carol (muxing) gets
/// it translated on her RTP port; her RR reaches Bob's RTCP socket from parkd's RTCP port as SRTCP.
#[test]
fn reports_cross_a_bridge_between_a_muxing_and_a_non_muxing_srtp_phone() {
    bridge_reports("rtcp_bridge_nomux", false);
}

fn bridge_reports(name: &str, bob_mux: bool) {
    let parkd = Parkd::start_with(name, ParkdOptions { config: Some(config()), ..ParkdOptions::default() });
    let bob = Phone::new(&parkd, "bob", true, bob_mux);
    let (bob_answer, bob_srtp, bob_to) = bob.call("700");
    // Where Bob sends his RTCP and from where parkd's comes: the RTP port, or parkd's RTCP port.
    let (bob_rtcp_sock, bob_rtcp_to) = match &bob.rtcp {
        None => (&bob.rtp, bob_to),
        Some(s) => (s, parkd_rtcp(&bob_answer)),
    };
    let mut bob_srtp = bob_srtp;
    let carol = Phone::new(&parkd, "carol", false, true);
    let (_, _, carol_to) = carol.call("701");
    let srtp = bob_srtp.as_mut().unwrap();
    const NTP: u64 = 0xE000_0000_1234_5678;
    let (mut carol_sr, mut bob_rr) = (None, None);
    let mut carol_audio_ssrc = None;
    let mut bob_rtcp_on_rtp = 0;
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    for seq in 0u16..250 {
        if carol_sr.is_some() && bob_rr.is_some() {
            break;
        }
        // Bob's audio, and every 25 packets his SR.
        let pkt = rtp_rs::RtpPacketBuilder::new().payload_type(0).sequence(seq.into()).timestamp(u32::from(seq) * 160).ssrc(0xB0B).payload(&[0xFF; 160]).build().unwrap();
        let mut sealed = pkt.clone();
        sealed.resize(pkt.len() + 64, 0);
        let n = srtp.protect(&mut sealed, pkt.len()).unwrap();
        bob.rtp.send_to(&sealed[..n], bob_to).unwrap();
        if seq % 25 == 10 {
            let mut sr = vec![0x80, PT_SR, 0, 6, 0, 0, 0x0B, 0x0B];
            sr.extend_from_slice(&NTP.to_be_bytes());
            for v in [u32::from(seq) * 160, u32::from(seq) + 1, (u32::from(seq) + 1) * 160] {
                sr.extend_from_slice(&v.to_be_bytes());
            }
            let len = sr.len();
            sr.resize(len + 64, 0);
            let n = srtp.protect_rtcp(&mut sr, len).unwrap();
            bob_rtcp_sock.send_to(&sr[..n], bob_rtcp_to).unwrap();
            // Carol's RR (in clear), no report blocks.
            let rr = [0x80, PT_RR, 0, 1, 0, 0, 0x0C, 0x0C];
            carol.rtp.send_to(&rr, carol_to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        carol.rtp.set_nonblocking(true).unwrap();
        while let Ok((n, _)) = carol.rtp.recv_from(&mut buf) {
            if !is_rtcp(&buf[..n]) {
                carol_audio_ssrc = Some(u32_at(&buf, 8));
            } else if u32_at(&buf, 8) as u64 == NTP >> 32 {
                carol_sr = Some(buf[..n].to_vec());
            }
        }
        bob.rtp.set_nonblocking(true).unwrap();
        bob_rtcp_sock.set_nonblocking(true).unwrap();
        while let Ok((n, from)) = bob_rtcp_sock.recv_from(&mut buf) {
            if is_rtcp(&buf[..n]) {
                assert_eq!(from, bob_rtcp_to, "parkd's RTCP comes from where bob sends his");
                let m = srtp.unprotect_rtcp(&mut buf, n).expect("the relayed RR opens with parkd's key");
                if buf[1] == PT_RR {
                    bob_rr = Some(buf[..m].to_vec());
                }
            }
        }
        if !bob_mux {
            while let Ok((n, _)) = bob.rtp.recv_from(&mut buf) {
                bob_rtcp_on_rtp += usize::from(is_rtcp(&buf[..n]));
            }
        }
    }
    let sr = carol_sr.expect("bob's SR reached carol");
    let kinds: Vec<u8> = parts(&sr).unwrap().map(|x| x.pt).collect();
    assert_eq!(kinds, vec![PT_SR, PT_SDES], "translated: SR + parkd's CNAME");
    assert_eq!(Some(u32_at(&sr, 4)), carol_audio_ssrc, "under the SSRC of bob's audio as carol hears it");
    assert_eq!((u32_at(&sr, 8) as u64) << 32 | u32_at(&sr, 12) as u64, NTP, "bob's NTP time");
    let rr = bob_rr.expect("carol's RR reached bob as SRTCP");
    assert_ne!(u32_at(&rr, 4), 0x0C0C, "under the SSRC parkd uses toward bob, not carol's");
    assert_eq!(bob_rtcp_on_rtp, 0, "no RTCP on the RTP socket of a phone that does not mux");
    eprintln!("{name}: SR bob→carol and RR carol→bob relayed within {:?} (bob {})", start.elapsed(), if bob_mux { "muxing" } else { "on his RTCP port" });
}

/// parkd's own offers (a recall here) offer rtcp-mux with parkd's RTCP port and follow the answer: Bob (plain,
/// not muxing) is parked by Alice with a 3 s parking time; the recall INVITE to Alice has `a=rtcp-mux` and
/// `a=rtcp:`; Alice answers with `a=rtcp-mux`. Bob's SR, sent from his RTCP socket to parkd's RTCP port, then
/// reaches Alice on her RTP port (muxed, translated), and her RR reaches Bob's RTCP socket.
#[test]
fn a_recall_offers_rtcp_mux_and_the_answer_is_followed() {
    let parkd = Parkd::start_with("rtcp_recall", ParkdOptions { config: Some(config()), parking_time: 3, ..ParkdOptions::default() });
    let sock = || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        s
    };
    let (alice_sip, alice_rtp) = (sock(), sock());
    let mut bob = Phone::new(&parkd, "recalled", false, false);
    bob.parker = Some(alice_sip.local_addr().unwrap());
    let (answer, _, _) = bob.call("700");
    let bob_rtcp_to = parkd_rtcp(&answer);
    // The recall INVITE (after the 3 s parking time).
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(15);
    let invite = loop {
        assert!(Instant::now() < deadline, "no recall INVITE within 15 s");
        let Ok((n, _)) = alice_sip.recv_from(&mut buf) else { continue };
        if let Ok(Message::Request(r)) = parse_message(&buf[..n]) {
            if r.method == parkd::sip::Method::Invite {
                break (r, String::from_utf8_lossy(&buf[..n]).to_string());
            }
        }
    };
    let (invite, text) = invite;
    let offer = parkd::sdp::parse_sdp(&invite.common.body).expect("an SDP offer in the recall");
    assert!(offer.rtcp_mux, "the recall offers rtcp-mux:\n{text}");
    let offered_rtcp = offer.rtcp_port.expect("and parkd's RTCP port for an answerer that does not mux");
    assert_eq!(offered_rtcp, bob_rtcp_to.port(), "the block's one RTCP port (both legs of a bridge share a media thread)");
    // Alice answers with rtcp-mux.
    let head: String = text.split("\r\n").take_while(|l| !l.is_empty()).filter(|l| ["Via:", "From:", "To:", "Call-ID:", "CSeq:"].iter().any(|h| l.starts_with(h))).map(|l| if l.starts_with("To:") { format!("{l};tag=alice-rtcp\r\n") } else { format!("{l}\r\n") }).collect();
    let sdp = format!(
        "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\na=rtcp-mux\r\n",
        alice_rtp.local_addr().unwrap().port()
    );
    let ok = format!("SIP/2.0 200 OK\r\n{head}Contact: <sip:alice@{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", alice_sip.local_addr().unwrap(), sdp.len());
    let from_parkd = parkd.sip_addr();
    alice_sip.send_to(ok.as_bytes(), from_parkd).unwrap();
    let parkd_rtp = SocketAddr::from(([127, 0, 0, 1], offer.addr.port()));
    // Bob talks and sends SRs on his RTCP port; Alice sends RRs on her RTP port (muxed).
    const NTP: u64 = 0xE000_0000_8765_4321;
    let (mut alice_sr, mut bob_rr) = (None, None);
    let bob_rtcp = bob.rtcp.as_ref().unwrap();
    for s in [&alice_rtp, bob_rtcp, &bob.rtp] {
        s.set_nonblocking(true).unwrap();
    }
    for seq in 0u16..250 {
        if alice_sr.is_some() && bob_rr.is_some() {
            break;
        }
        let pkt = rtp_rs::RtpPacketBuilder::new().payload_type(0).sequence(seq.into()).timestamp(u32::from(seq) * 160).ssrc(0xB0B).payload(&[0xFF; 160]).build().unwrap();
        bob.rtp.send_to(&pkt, answer_rtp(&answer)).unwrap();
        if seq % 25 == 10 {
            let mut sr = vec![0x80, PT_SR, 0, 6, 0, 0, 0x0B, 0x0B];
            sr.extend_from_slice(&NTP.to_be_bytes());
            for v in [u32::from(seq) * 160, u32::from(seq) + 1, (u32::from(seq) + 1) * 160] {
                sr.extend_from_slice(&v.to_be_bytes());
            }
            bob_rtcp.send_to(&sr, bob_rtcp_to).unwrap();
            alice_rtp.send_to(&[0x80, PT_RR, 0, 1, 0, 0, 0x0A, 0x0A], parkd_rtp).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        while let Ok((n, from)) = alice_rtp.recv_from(&mut buf) {
            assert_eq!(from, parkd_rtp, "alice hears parkd from the port of its offer");
            if is_rtcp(&buf[..n]) && u32_at(&buf, 8) as u64 == NTP >> 32 {
                alice_sr = Some(buf[..n].to_vec());
            }
        }
        while let Ok((n, from)) = bob_rtcp.recv_from(&mut buf) {
            assert_eq!(from, bob_rtcp_to);
            if is_rtcp(&buf[..n]) && buf[1] == PT_RR {
                bob_rr = Some(buf[..n].to_vec());
            }
        }
    }
    let sr = alice_sr.expect("bob's SR reached alice on her RTP port: the recall leg muxes as answered");
    let kinds: Vec<u8> = parts(&sr).unwrap().map(|x| x.pt).collect();
    assert_eq!(kinds, vec![PT_SR, PT_SDES]);
    assert_ne!(u32_at(&sr, 4), 0x0B0B, "under parkd's SSRC toward alice");
    let rr = bob_rr.expect("alice's RR reached bob's RTCP socket");
    assert_ne!(u32_at(&rr, 4), 0x0A0A, "under parkd's SSRC toward bob");
}

/// parkd's RTP address in its answer.
fn answer_rtp(r: &Response) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], sip_tests::sip::ua::sdp_audio_port(r).expect("an audio port")))
}
