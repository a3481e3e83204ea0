//! MediaPlane and RTCP (rtcp-mux), in virtual time: RTCP never taken for RTP, reports relayed between bridged
//! legs (plain and SRTCP, a forged one dropped and counted), hold Sender Reports (timing, content).

use super::*;
use crate::media::rtcp::{self as r, parts, PT_RR, PT_SDES, PT_SR};
use crate::media::rtp::parse;
use crate::media::srtp::{MasterKey, SrtpSuite};

use super::rtcp_test_support::*;

fn bridged(p: &mut MediaPlane, mux: bool) {
    for (leg, remote) in [(A, "10.0.0.1:4000"), (B, "10.0.0.2:4000")] {
        p.apply(t(0), MediaCommand::RtcpMux { leg, on: mux });
        p.apply(t(0), MediaCommand::Update { leg, remote: addr(remote), codec: Codec::Pcmu, send: true });
    }
    p.apply(t(0), MediaCommand::Bridge { a: A, b: B });
}

#[test]
fn rtcp_on_the_rtp_port_is_never_relayed_as_rtp() {
    let mut p = plane();
    bridged(&mut p, false);
    // A receiver report (second byte 201: as RTP, PT 73 with the marker) from A: no mux agreed with B.
    assert_eq!(recv(&mut p, 10, A.port(), "10.0.0.1:4000", &rr(0xA, 0x1, 5)), None);
    let s = p.stats();
    assert_eq!((s.rtcp_received, s.rtcp_dropped, s.relayed, s.dropped_unrelayable), (1, 1, 0, 0));
    // Audio still relays; A is latched by its RTCP (same source) and now known to mux.
    let (f, out) = recv(&mut p, 20, A.port(), "10.0.0.1:4000", &audio(0xA, 1, 160)).unwrap();
    assert_eq!((f.port, f.to, parse(&out).unwrap().pt.get()), (B.port(), addr("10.0.0.2:4000"), 0));
    assert!(p.legs[&A].rtcp.mux, "a leg sending RTCP on the RTP port muxes");
    // Garbage that looks like RTCP is invalid, not RTP.
    assert_eq!(recv(&mut p, 30, A.port(), "10.0.0.1:4000", &[0x80, 200, 0, 9, 1, 2, 3, 4]), None);
    assert_eq!(p.stats().dropped_invalid, 1);
}

#[test]
fn a_bridged_legs_report_reaches_the_other_translated() {
    let mut p = plane();
    bridged(&mut p, true);
    let (to_a, to_b) = (p.legs[&A].out.ssrc.0, p.legs[&B].out.ssrc.0);
    // Audio both ways sets up the relay mappings.
    let (_, at_b) = recv(&mut p, 20, A.port(), "10.0.0.1:4000", &audio(0xAAAA, 1000, 50_000)).unwrap();
    let (_, at_a) = recv(&mut p, 20, B.port(), "10.0.0.2:4000", &audio(0xBBBB, 7000, 90_000)).unwrap();
    let (seq_at_a, ts_at_b) = (parse(&at_a).unwrap().seq, parse(&at_b).unwrap().ts);
    // A's SR with a block about what it received from parkd (its highest sequence number).
    let mut pkt = sr(0xAAAA, 50_000);
    pkt[0] = 0x81;
    pkt[3] = 12;
    pkt.extend_from_slice(&rr(0, to_a, 0x0002_0000 | seq_at_a.0 as u32)[8..]);
    let (f, out) = recv(&mut p, 40, A.port(), "10.0.0.1:4000", &pkt).unwrap();
    assert_eq!((f.port, f.to), (B.port(), addr("10.0.0.2:4000")), "sent from B's port to B");
    let kinds: Vec<(u8, u8)> = parts(&out).unwrap().map(|x| (x.pt, x.count)).collect();
    assert_eq!(kinds, vec![(PT_SR, 1), (PT_SDES, 1)]);
    assert_eq!(u32_at(&out, 4), to_b, "the SSRC B sees A's audio under");
    assert_eq!(u32_at(&out, 16), ts_at_b, "the SR's RTP time is the relayed packet's");
    assert_eq!((u32_at(&out, 20), u32_at(&out, 24)), (1, 160), "parkd's count of what it sent B");
    assert_eq!(u32_at(&out, 28), 0xBBBB, "the block is about B's own stream");
    assert_eq!(u32_at(&out, 36), 0x0002_0000 | 7000, "with B's own sequence numbers");
    assert_eq!(p.stats().rtcp_relayed, 1);
}

fn keys(suite: SrtpSuite, parkd: u8, phone: u8) -> (SrtpKeys, SrtpLeg) {
    let k = |x: u8| MasterKey::new(suite, &vec![x; suite.master_len()]).unwrap();
    (SrtpKeys { suite, local: k(parkd), remote: k(phone) }, SrtpLeg::new(&SrtpKeys { suite, local: k(phone), remote: k(parkd) }).unwrap())
}

#[test]
fn srtcp_is_opened_with_the_senders_keys_and_sealed_with_the_receivers() {
    let mut p = plane();
    let (ka, mut phone_a) = keys(SrtpSuite::AesCm128HmacSha1_32, 1, 2);
    let (kb, mut phone_b) = keys(SrtpSuite::AeadAes128Gcm, 3, 4);
    p.apply(t(0), MediaCommand::Srtp { leg: A, keys: Some(Box::new(ka)), roc: 0, srtcp: 0 });
    p.apply(t(0), MediaCommand::Srtp { leg: B, keys: Some(Box::new(kb)), roc: 0, srtcp: 0 });
    bridged(&mut p, true);
    let plain = rr(0xAAAA, 0x9999, 1);
    let mut sealed = plain.clone();
    sealed.resize(2048, 0);
    let n = phone_a.protect_rtcp(&mut sealed, plain.len()).unwrap();
    assert_eq!(n, plain.len() + SrtpSuite::AesCm128HmacSha1_32.rtcp_overhead(), "80-bit SRTCP tag for the _32 suite");
    sealed.truncate(n);
    // A forged copy (one bit of the encrypted part) is dropped, counted, and latches nothing.
    let mut forged = sealed.clone();
    forged[10] ^= 4;
    assert_eq!(recv(&mut p, 10, A.port(), "10.0.0.9:5000", &forged), None);
    assert_eq!((p.stats().srtp_auth_failed, p.stats().srtcp_auth_failed), (1, 1));
    assert_eq!(p.demux.latched_source(A), None);
    // Plain RTCP on an SRTP leg is not authentic either.
    assert_eq!(recv(&mut p, 10, A.port(), "10.0.0.1:4000", &plain), None);
    assert_eq!(p.stats().srtcp_auth_failed, 2);
    // The authentic one reaches B as SRTCP under B's keys.
    let (f, mut out) = recv(&mut p, 20, A.port(), "10.0.0.1:4000", &sealed).unwrap();
    assert_eq!(f.to, addr("10.0.0.2:4000"));
    let len = out.len();
    let m = phone_b.unprotect_rtcp(&mut out, len).unwrap();
    let kinds: Vec<u8> = parts(&out[..m]).unwrap().map(|x| x.pt).collect();
    assert_eq!(kinds, vec![PT_RR, PT_SDES]);
    assert_eq!(u32_at(&out, 4), p.legs[&B].out.ssrc.0);
    // A replay of it is refused.
    assert_eq!(recv(&mut p, 30, A.port(), "10.0.0.1:4000", &sealed), None);
    assert_eq!(p.stats().srtcp_auth_failed, 3);
    assert_eq!(p.stats().rtcp_relayed, 1);
}

fn srs(pkts: &[(u64, HoldPacket)]) -> Vec<(u64, Vec<u8>)> {
    pkts.iter().map(|(ms, h)| (*ms, wire(h))).filter(|(_, w)| r::is_rtcp(w)).collect()
}

#[test]
fn hold_sender_reports_every_5_s_randomised_and_consistent_with_the_music() {
    let mut p = plane();
    let legs: Vec<MediaLegId> = (0..20).map(|i| MediaLegId::solo(20_000 + 2 * i)).collect();
    for (i, leg) in legs.iter().enumerate() {
        p.apply(t(0), MediaCommand::RtcpMux { leg: *leg, on: i != 0 });
        p.apply(t(0), MediaCommand::Hold { leg: *leg, remote: addr("10.0.0.1:4000"), codec: Codec::Pcma, music: MusicId(0) });
    }
    let pkts = run(&mut p, 0, 120_000);
    let mut gaps = Vec::new();
    for (i, leg) in legs.iter().enumerate() {
        let mine: Vec<(u64, Vec<u8>)> = pkts.iter().filter(|(_, h)| h.port == leg.port()).map(|(ms, h)| (*ms, wire(h))).collect();
        let reports = srs(&pkts.iter().filter(|(_, h)| h.port == leg.port()).cloned().collect::<Vec<_>>());
        if i == 0 {
            assert!(reports.is_empty(), "no rtcp-mux: no RTCP (parkd has no RTCP port)");
            continue;
        }
        assert!((16..=48).contains(&reports.len()), "leg {i}: {} reports in 120 s", reports.len());
        let first_rtp = mine.iter().find(|(_, w)| !r::is_rtcp(w)).unwrap().0;
        let first = reports[0].0 - first_rtp;
        assert!((1_250..=3_750).contains(&first), "first after half an interval, randomised: {first} ms");
        gaps.extend(reports.windows(2).map(|w| w[1].0 - w[0].0));
        for (ms, rep) in &reports {
            let kinds: Vec<(u8, usize)> = parts(rep).unwrap().map(|x| (x.pt, x.len)).collect();
            assert_eq!(kinds, vec![(PT_SR, 28), (PT_SDES, 28)]);
            // The hold packet of the same slot: same SSRC, same RTP timestamp, NTP time of that slot.
            let (_, rtp) = mine.iter().find(|(m, w)| m == ms && !r::is_rtcp(w)).unwrap();
            let info = parse(rtp).unwrap();
            assert_eq!(u32_at(rep, 4), info.ssrc.0);
            assert_eq!(u32_at(rep, 16), info.ts);
            let ntp = (u32_at(rep, 8) as u64) << 32 | u32_at(rep, 12) as u64;
            let slot_ms = (ntp >> 32).checked_sub(r::NTP_UNIX_OFFSET).unwrap() * 1000 + (((ntp & 0xFFFF_FFFF) * 1000 + (1 << 31)) >> 32);
            assert_eq!(slot_ms, T0_MS + ms, "NTP time of the slot");
            let sent = mine.iter().filter(|(m, w)| m <= ms && !r::is_rtcp(w)).count() as u32;
            assert_eq!((u32_at(rep, 20), u32_at(rep, 24)), (sent, sent * 160), "packets and payload octets so far");
        }
    }
    assert!(gaps.iter().all(|g| (2_500..=7_500).contains(g)), "{:?}", gaps.iter().minmax());
    let mean = gaps.iter().sum::<u64>() as f64 / gaps.len() as f64;
    assert!((4_500.0..=5_500.0).contains(&mean), "mean interval {mean} ms over {} intervals", gaps.len());
    assert!(gaps.iter().collect::<std::collections::HashSet<_>>().len() > 50, "randomised, not periodic");
    assert_eq!(p.stats().rtcp_sent as usize, srs(&pkts).len());
}

trait MinMax {
    fn minmax(self) -> (u64, u64);
}
impl<'a, I: Iterator<Item = &'a u64>> MinMax for I {
    fn minmax(self) -> (u64, u64) {
        self.fold((u64::MAX, 0), |(lo, hi), g| (lo.min(*g), hi.max(*g)))
    }
}

#[test]
fn an_srtp_legs_hold_report_is_srtcp_the_phone_opens() {
    let mut p = plane();
    let (k, mut phone) = keys(SrtpSuite::AesCm128HmacSha1_80, 5, 6);
    p.apply(t(0), MediaCommand::Srtp { leg: A, keys: Some(Box::new(k)), roc: 0, srtcp: 0 });
    p.apply(t(0), MediaCommand::RtcpMux { leg: A, on: true });
    p.apply(t(0), MediaCommand::Hold { leg: A, remote: addr("10.0.0.1:4000"), codec: Codec::Pcmu, music: MusicId(0) });
    let pkts = run(&mut p, 0, 20_000);
    let reports = srs(&pkts);
    assert!(reports.len() >= 2);
    for (_, rep) in reports {
        assert_eq!(rep.len(), r::REPORT_LEN + SrtpSuite::AesCm128HmacSha1_80.rtcp_overhead());
        let mut buf = rep.clone();
        let n = phone.unprotect_rtcp(&mut buf, rep.len()).unwrap();
        assert_eq!(&buf[36..44], b"\x01\x0eparkd-", "decrypts to parkd's SR + CNAME");
        assert_eq!(n, r::REPORT_LEN);
    }
}
