//! MediaPlane and RTCP on the media thread's RTCP port (phones that do not mux, RFC 3550 §11 / RFC 3605), in
//! virtual time: hold Sender Reports leave from the RTCP port to the phone's RTCP address, the phone's reports
//! arriving there are told apart by source address, reports are translated between a muxing and a non-muxing
//! leg both ways, SRTCP on a non-muxing SRTP leg, and the demultiplexing follows Update, mux and Stop.

use super::*;
use crate::media::rtcp::{self as r, parts, PT_RR, PT_SDES, PT_SR};
use crate::media::rtp::parse;
use crate::media::srtp::{MasterKey, SrtpSuite};

use super::rtcp_test_support::{self, addr, audio, rr, run, sr, t, u32_at, wire, recv, A, B};

/// The plane's RTCP port (the odd port above its block's first RTP port).
const RTCP: u16 = 20_001;

fn plane() -> MediaPlane {
    let mut p = rtcp_test_support::plane();
    p.set_rtcp_port(RTCP);
    p
}

fn on_rtp_port(p: &mut MediaPlane, ms: u64, port: u16, from: &str, pkt: &[u8]) -> Option<(Forward, Vec<u8>)> {
    recv(p, ms, port, from, pkt)
}

fn on_rtcp_port(p: &mut MediaPlane, ms: u64, from: &str, pkt: &[u8]) -> Option<(Forward, Vec<u8>)> {
    let mut buf = pkt.to_vec();
    buf.resize(2048, 0);
    let f = p.on_rtcp_port(t(ms), addr(from), &mut buf, pkt.len())?;
    Some((f, buf[..f.len].to_vec()))
}

#[test]
fn a_non_muxing_held_phone_gets_its_reports_on_its_rtcp_port_and_its_own_are_told_apart_by_address() {
    let mut p = plane();
    // Sent before the leg exists (as the core does: at the answer, before the ACK starts the music).
    p.apply(t(0), MediaCommand::RtcpPort { leg: A, port: 4001 });
    p.apply(t(0), MediaCommand::Hold { leg: A, remote: addr("10.0.0.1:4000"), codec: Codec::Pcmu, music: MusicId(0) });
    // A second leg without any RTCP port (0): no reports at all.
    p.apply(t(0), MediaCommand::Hold { leg: B, remote: addr("10.0.0.2:4000"), codec: Codec::Pcmu, music: MusicId(0) });
    let pkts = run(&mut p, 0, 30_000);
    let reports: Vec<&(u64, HoldPacket)> = pkts.iter().filter(|(_, h)| r::is_rtcp(&wire(h))).collect();
    assert!((4..=12).contains(&reports.len()), "{} reports in 30 s", reports.len());
    for (ms, h) in &reports {
        assert_eq!((h.port, h.to), (RTCP, addr("10.0.0.1:4001")), "from the RTCP port to the phone's RTCP port");
        let w = wire(h);
        let kinds: Vec<u8> = parts(&w).unwrap().map(|x| x.pt).collect();
        assert_eq!(kinds, vec![PT_SR, PT_SDES]);
        let rtp = pkts.iter().find(|(m, x)| m == ms && x.port == A.port()).map(|(_, x)| parse(&wire(x)).unwrap()).unwrap();
        assert_eq!((u32_at(&w, 4), u32_at(&w, 16)), (rtp.ssrc.0, rtp.ts), "about the music of the same slot");
    }
    assert!(pkts.iter().all(|(_, h)| h.to != addr("10.0.0.2:4001")), "no RTCP port, no reports");
    assert_eq!(p.stats().rtcp_sent as usize, reports.len());
    // The phone's RR from its RTCP address is A's (held: absorbed); from any other address it is no leg's.
    let about = p.legs[&A].out.ssrc.0;
    assert_eq!(on_rtcp_port(&mut p, 30_000, "10.0.0.1:4001", &rr(0xA, about, 9)), None);
    let s = p.stats();
    assert_eq!((s.rtcp_received, s.absorbed, s.dropped_unrelayable), (1, 1, 0));
    assert_eq!(on_rtcp_port(&mut p, 30_000, "10.0.0.1:4009", &rr(0xA, 1, 9)), None);
    assert_eq!(on_rtcp_port(&mut p, 30_000, "10.0.0.2:4001", &rr(0xB, 1, 9)), None, "B has no RTCP port");
    assert_eq!(p.stats().dropped_unrelayable, 2);
    // RTP (or anything else) on the RTCP port is not RTCP.
    assert_eq!(on_rtcp_port(&mut p, 30_000, "10.0.0.1:4001", &audio(0xA, 1, 1)), None);
    assert_eq!(p.stats().dropped_invalid, 1);
    assert!(!p.legs[&A].rtcp.mux, "RTCP on the RTCP port does not make a leg mux");
}

#[test]
fn reports_are_translated_between_a_muxing_and_a_non_muxing_leg_both_ways() {
    let mut p = plane();
    p.apply(t(0), MediaCommand::RtcpMux { leg: A, on: true });
    p.apply(t(0), MediaCommand::RtcpPort { leg: B, port: 4001 });
    for (leg, remote) in [(A, "10.0.0.1:4000"), (B, "10.0.0.2:4000")] {
        p.apply(t(0), MediaCommand::Update { leg, remote: addr(remote), codec: Codec::Pcmu, send: true });
    }
    p.apply(t(0), MediaCommand::Bridge { a: A, b: B });
    let (to_a, to_b) = (p.legs[&A].out.ssrc.0, p.legs[&B].out.ssrc.0);
    let (_, at_b) = on_rtp_port(&mut p, 20, A.port(), "10.0.0.1:4000", &audio(0xAAAA, 1000, 50_000)).unwrap();
    let (_, at_a) = on_rtp_port(&mut p, 20, B.port(), "10.0.0.2:4000", &audio(0xBBBB, 7000, 90_000)).unwrap();
    let ts_at_b = parse(&at_b).unwrap().ts;
    assert_eq!(parse(&at_a).unwrap().ssrc.0, to_a);
    // A (mux) sends an SR on its RTP port: B gets it from the RTCP port on its RTCP port, translated.
    let (f, out) = on_rtp_port(&mut p, 40, A.port(), "10.0.0.1:4000", &sr(0xAAAA, 50_000)).unwrap();
    assert_eq!((f.port, f.to), (RTCP, addr("10.0.0.2:4001")));
    let kinds: Vec<u8> = parts(&out).unwrap().map(|x| x.pt).collect();
    assert_eq!(kinds, vec![PT_SR, PT_SDES]);
    assert_eq!((u32_at(&out, 4), u32_at(&out, 16)), (to_b, ts_at_b), "B's view of A's stream");
    // B (no mux) sends an RR about what it hears (parkd's stream to B) on the RTCP port: A gets it on its RTP
    // port, about A's own stream and sequence numbers.
    let (f, out) = on_rtcp_port(&mut p, 60, "10.0.0.2:4001", &rr(0xBBBB, to_b, 0x0001_0000 | u32::from(parse(&at_b).unwrap().seq.0))).unwrap();
    assert_eq!((f.port, f.to), (A.port(), addr("10.0.0.1:4000")));
    assert_eq!((u32_at(&out, 4), u32_at(&out, 8), u32_at(&out, 16)), (to_a, 0xAAAA, 0x0001_0000 | 1000));
    assert_eq!(p.stats().rtcp_relayed, 2);
}

fn keys(suite: SrtpSuite, parkd: u8, phone: u8) -> (SrtpKeys, SrtpLeg) {
    let k = |x: u8| MasterKey::new(suite, &vec![x; suite.master_len()]).unwrap();
    (SrtpKeys { suite, local: k(parkd), remote: k(phone) }, SrtpLeg::new(&SrtpKeys { suite, local: k(phone), remote: k(parkd) }).unwrap())
}

#[test]
fn a_non_muxing_srtp_leg_speaks_srtcp_on_the_rtcp_port() {
    let mut p = plane();
    let (k, mut phone) = keys(SrtpSuite::AesCm128HmacSha1_80, 5, 6);
    p.apply(t(0), MediaCommand::Srtp { leg: A, keys: Some(Box::new(k)), roc: 0, srtcp: 0 });
    p.apply(t(0), MediaCommand::RtcpPort { leg: A, port: 4001 });
    p.apply(t(0), MediaCommand::Hold { leg: A, remote: addr("10.0.0.1:4000"), codec: Codec::Pcmu, music: MusicId(0) });
    let pkts = run(&mut p, 0, 20_000);
    let reports: Vec<&HoldPacket> = pkts.iter().map(|(_, h)| h).filter(|h| h.port == RTCP).collect();
    assert!(reports.len() >= 2);
    for h in reports {
        assert_eq!(h.to, addr("10.0.0.1:4001"));
        let mut buf = wire(h);
        let len = buf.len();
        let n = phone.unprotect_rtcp(&mut buf, len).expect("SRTCP under parkd's key");
        assert_eq!((n, &buf[36..44]), (r::REPORT_LEN, &b"\x01\x0eparkd-"[..]));
    }
    // The phone's SRTCP on the RTCP port opens; a forged or plain one is dropped and counted.
    let plain = rr(0xAAAA, p.legs[&A].out.ssrc.0, 1);
    let mut sealed = plain.clone();
    sealed.resize(2048, 0);
    let n = phone.protect_rtcp(&mut sealed, plain.len()).unwrap();
    sealed.truncate(n);
    let mut forged = sealed.clone();
    forged[9] ^= 1;
    assert_eq!(on_rtcp_port(&mut p, 20_000, "10.0.0.1:4001", &forged), None);
    assert_eq!(on_rtcp_port(&mut p, 20_000, "10.0.0.1:4001", &plain), None);
    assert_eq!(p.stats().srtcp_auth_failed, 2);
    assert_eq!(on_rtcp_port(&mut p, 20_000, "10.0.0.1:4001", &sealed), None, "authentic, absorbed (on hold)");
    assert_eq!((p.stats().srtcp_auth_failed, p.stats().absorbed), (2, 1));
}

#[test]
fn the_rtcp_address_follows_updates_mux_and_stop() {
    let mut p = plane();
    let held = |p: &mut MediaPlane, from: &str| {
        let before = p.stats().absorbed;
        on_rtcp_port(p, 0, from, &rr(1, 2, 3));
        p.stats().absorbed == before + 1
    };
    p.apply(t(0), MediaCommand::Hold { leg: A, remote: addr("10.0.0.1:4000"), codec: Codec::Pcmu, music: MusicId(0) });
    assert!(!held(&mut p, "10.0.0.1:4001"), "no RTCP port yet");
    p.apply(t(0), MediaCommand::RtcpPort { leg: A, port: 4001 });
    assert!(held(&mut p, "10.0.0.1:4001"));
    // A re-offer moves the phone: its RTCP address moves with its SDP address.
    p.apply(t(0), MediaCommand::Update { leg: A, remote: addr("10.0.0.7:6000"), codec: Codec::Pcmu, send: true });
    assert!(!held(&mut p, "10.0.0.1:4001") && held(&mut p, "10.0.0.7:4001"));
    p.apply(t(0), MediaCommand::RtcpPort { leg: A, port: 6001 });
    assert!(!held(&mut p, "10.0.0.7:4001") && held(&mut p, "10.0.0.7:6001"));
    // Mux wins: nothing on the RTCP port, reports on the RTP port.
    p.apply(t(0), MediaCommand::RtcpMux { leg: A, on: true });
    assert!(!held(&mut p, "10.0.0.7:6001"));
    assert!(run(&mut p, 0, 10_000).iter().all(|(_, h)| h.port == A.port()));
    p.apply(t(0), MediaCommand::RtcpMux { leg: A, on: false });
    assert!(held(&mut p, "10.0.0.7:6001"));
    p.apply(t(0), MediaCommand::Stop { leg: A });
    assert!(!held(&mut p, "10.0.0.7:6001"), "a stopped leg's address is forgotten");
    assert!(p.rtcp_demux.by_addr.is_empty() && p.rtcp_demux.by_leg.is_empty());
}

#[test]
fn a_paused_stream_keeps_reporting_with_receiver_reports_and_resumes_with_sender_reports() {
    let mut p = plane();
    p.apply(t(0), MediaCommand::RtcpPort { leg: A, port: 4001 });
    p.apply(t(0), MediaCommand::Hold { leg: A, remote: addr("10.0.0.1:4000"), codec: Codec::Pcmu, music: MusicId(0) });
    p.apply(t(0), MediaCommand::RtcpMux { leg: B, on: true });
    p.apply(t(0), MediaCommand::Hold { leg: B, remote: addr("10.0.0.2:4000"), codec: Codec::Pcmu, music: MusicId(0) });
    run(&mut p, 0, 10_000);
    // Both phones hold parkd: no music, no pacer work, but a report about every 5 s each, as RRs.
    for (leg, remote) in [(A, "10.0.0.1:4000"), (B, "10.0.0.2:4000")] {
        p.apply(t(10_000), MediaCommand::Update { leg, remote: addr(remote), codec: Codec::Pcmu, send: false });
    }
    assert!(matches!(p.poll_timeout(), Some((_, MediaWake::RtcpReport))), "{:?}", p.poll_timeout());
    let sent_before = p.stats().rtcp_sent;
    let paused = run(&mut p, 10_001, 70_000);
    assert!(paused.iter().all(|(_, h)| r::is_rtcp(&wire(h))), "no RTP while paused");
    for (leg, port, to) in [(A, RTCP, addr("10.0.0.1:4001")), (B, B.port(), addr("10.0.0.2:4000"))] {
        let mine: Vec<(u64, Vec<u8>)> = paused.iter().filter(|(_, h)| h.to == to).map(|(ms, h)| (*ms, wire(h))).collect();
        assert!(paused.iter().filter(|(_, h)| h.to == to).all(|(_, h)| h.port == port), "from the leg's RTCP side");
        assert!((8..=24).contains(&mine.len()), "{leg}: {} reports in 60 s", mine.len());
        for (_, w) in &mine {
            let kinds: Vec<(u8, u8, usize)> = parts(w).unwrap().map(|x| (x.pt, x.count, x.len)).collect();
            assert_eq!(kinds, vec![(PT_RR, 0, 8), (PT_SDES, 1, 28)]);
            assert_eq!(u32_at(w, 4), p.legs[&leg].out.ssrc.0, "under parkd's SSRC toward the leg");
        }
        assert!(mine.windows(2).all(|x| (2_500..=7_500).contains(&(x[1].0 - x[0].0))), "{leg}: randomised 2.5-7.5 s apart");
    }
    assert_eq!(p.stats().rtcp_sent - sent_before, paused.len() as u64);
    // A resumes: music and Sender Reports again, no RR left over from the pause; B goes on with RRs.
    p.apply(t(70_000), MediaCommand::Update { leg: A, remote: addr("10.0.0.1:4000"), codec: Codec::Pcmu, send: true });
    let resumed = run(&mut p, 70_000, 100_000);
    let a_reports: Vec<Vec<u8>> = resumed.iter().filter(|(_, h)| h.port == RTCP).map(|(_, h)| wire(h)).collect();
    assert!(a_reports.len() >= 3 && a_reports.iter().all(|w| w[1] == PT_SR), "{} reports", a_reports.len());
    assert!(resumed.iter().any(|(_, h)| h.port == A.port() && !r::is_rtcp(&wire(h))), "music again");
    assert!(resumed.iter().filter(|(_, h)| h.port == B.port()).all(|(_, h)| wire(h)[1] == PT_RR));
    // B ends: nothing more for it, and no wake-up for its reports.
    p.apply(t(100_000), MediaCommand::Stop { leg: B });
    assert!(run(&mut p, 100_000, 120_000).iter().all(|(_, h)| h.port != B.port()));
    p.apply(t(120_000), MediaCommand::Stop { leg: A });
    run(&mut p, 120_000, 128_000);
    assert_eq!(p.poll_timeout(), None, "no stale report entries left");
}
