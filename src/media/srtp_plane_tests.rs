//! MediaPlane with SRTP legs (issue 19), in virtual time: hold music protected per leg, incoming SRTP
//! authenticated, bridges SRTP↔RTP and SRTP↔SRTP.

use super::*;
use crate::media::music::FRAME_SAMPLES;
use crate::media::rtp::{parse, write_header, SeqNo, Ssrc};
use crate::media::srtp::{MasterKey, SrtpError, SrtpSuite};

const T0_MS: u64 = 1_700_000_000_000;

fn t(ms: u64) -> Time {
    Time::from_millis(T0_MS + ms)
}

fn plane() -> MediaPlane {
    let mut pcm = Vec::new();
    for k in 0..10i16 {
        pcm.extend(std::iter::repeat_n(k * 1000, FRAME_SAMPLES));
    }
    MediaPlane::new(vec![HoldMusic::from_pcm(&pcm).unwrap()], 42)
}

/// parkd's keys for a leg and the phone's SRTP state facing it (the phone's local key is parkd's remote one).
fn keys(suite: SrtpSuite, parkd: u8, phone: u8) -> (SrtpKeys, SrtpLeg) {
    let k = |x: u8| MasterKey::new(suite, &vec![x; suite.master_len()]).unwrap();
    let ours = SrtpKeys { suite, local: k(parkd), remote: k(phone) };
    let theirs = SrtpKeys { suite, local: k(phone), remote: k(parkd) };
    (ours, SrtpLeg::new(&theirs).unwrap())
}

fn run(p: &mut MediaPlane, from: u64, to: u64) -> Vec<HoldPacket> {
    let mut out = Vec::new();
    let mut batch = HoldBatch::with_capacity(16);
    for ms in from..to {
        batch.clear();
        p.poll_hold(t(ms), &mut batch);
        out.extend_from_slice(batch.packets());
    }
    out
}

fn wire(p: &HoldPacket) -> Vec<u8> {
    let mut v = p.header.to_vec();
    v.extend_from_slice(&p.payload);
    v
}

fn rtp_packet(pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = write_header(Pt::new(pt).unwrap(), false, SeqNo(seq), u32::from(seq) * 160, Ssrc(0x1234)).to_vec();
    v.extend_from_slice(payload);
    v
}

#[test]
fn hold_music_to_an_srtp_leg_is_protected_per_leg_and_the_frames_stay_shared() {
    let mut p = plane();
    let (a, b) = (MediaLegId::solo(20_000), MediaLegId::solo(20_002));
    let (ka, mut phone_a) = keys(SrtpSuite::AesCm128HmacSha1_80, 1, 2);
    let (kb, mut phone_b) = keys(SrtpSuite::AeadAes128Gcm, 3, 4);
    // Keys sent before the leg exists (as the core does), then the same keys again: no reset.
    p.apply(t(0), MediaCommand::Srtp { leg: a, keys: Some(Box::new(ka.clone())), roc: 0, srtcp: 0 });
    p.apply(t(0), MediaCommand::Srtp { leg: b, keys: Some(Box::new(kb)), roc: 0, srtcp: 0 });
    let plain = MediaLegId::solo(20_004);
    for leg in [a, b, plain] {
        p.apply(t(0), MediaCommand::Hold { leg, remote: "10.0.0.1:4000".parse().unwrap(), codec: Codec::Pcmu, music: MusicId(0) });
    }
    let pkts = run(&mut p, 0, 200);
    p.apply(t(200), MediaCommand::Srtp { leg: a, keys: Some(Box::new(ka)), roc: 0, srtcp: 0 });
    let pkts2 = run(&mut p, 200, 260);
    let frames_of = |port: u16, v: &[HoldPacket]| v.iter().filter(|h| h.port == port).map(wire).collect::<Vec<_>>();
    let plain_frames = frames_of(20_004, &pkts);
    assert!(plain_frames.len() >= 9);
    for (port, phone, tag) in [(20_000u16, &mut phone_a, 10usize), (20_002, &mut phone_b, 16)] {
        let sealed: Vec<Vec<u8>> = frames_of(port, &pkts).into_iter().chain(frames_of(port, &pkts2)).collect();
        assert!(sealed.len() >= 12);
        for (i, s) in sealed.iter().enumerate() {
            assert_eq!(s.len(), 172 + tag);
            let mut buf = s.clone();
            let n = phone.unprotect(&mut buf, s.len()).unwrap_or_else(|e| panic!("packet {i} on {port}: {e}"));
            assert_eq!(n, 172);
            if let Some(pl) = plain_frames.get(i) {
                assert_eq!(&buf[12..172], &pl[12..], "the same music frame as the plain leg");
                assert_ne!(&s[12..172], &pl[12..], "not sent in clear");
            }
        }
    }
    assert_eq!(p.stats().srtp_protect_failed, 0);
}

#[test]
fn srtp_from_a_parked_leg_is_authenticated_and_bridges_to_rtp_and_srtp_both_ways() {
    for suite in SrtpSuite::ALL {
        let mut p = plane();
        let (s1, s2, r) = (MediaLegId::solo(20_000), MediaLegId::solo(20_002), MediaLegId::solo(20_004));
        let (k1, mut phone1) = keys(suite, 1, 2);
        let (k2, mut phone2) = keys(suite, 5, 6);
        p.apply(t(0), MediaCommand::Srtp { leg: s1, keys: Some(Box::new(k1)), roc: 0, srtcp: 0 });
        p.apply(t(0), MediaCommand::Hold { leg: s1, remote: "10.0.0.1:4000".parse().unwrap(), codec: Codec::Pcmu, music: MusicId(0) });
        let from1 = "10.0.0.1:4000".parse().unwrap();
        let mut buf = vec![0u8; 2048];
        // On hold: a good packet is absorbed, a forged or plain one fails authentication.
        let good = rtp_packet(0, 10, &[0x11; 160]);
        buf[..172].copy_from_slice(&good);
        let n = phone1.protect(&mut buf, 172).unwrap();
        assert_eq!(p.on_packet(t(5), 20_000, from1, &mut buf, n), None);
        assert_eq!((p.stats().absorbed, p.stats().srtp_auth_failed), (1, 0));
        buf[..172].copy_from_slice(&rtp_packet(0, 11, &[0x11; 160]));
        assert_eq!(p.on_packet(t(6), 20_000, from1, &mut buf, 172), None, "plain RTP to an SRTP leg");
        assert_eq!(p.stats().srtp_auth_failed, 1);

        // Bridge SRTP (s1) ↔ plain RTP (r).
        p.apply(t(10), MediaCommand::Update { leg: r, remote: "10.0.0.3:4000".parse().unwrap(), codec: Codec::Pcmu, send: true });
        p.apply(t(10), MediaCommand::Bridge { a: s1, b: r });
        buf[..172].copy_from_slice(&rtp_packet(0, 12, &[0x22; 160]));
        let n = phone1.protect(&mut buf, 172).unwrap();
        let f = p.on_packet(t(20), 20_000, from1, &mut buf, n).expect("SRTP → RTP relayed");
        assert_eq!((f.port, f.len), (20_004, 172));
        assert_eq!(&buf[12..172], &[0x22; 160][..], "decrypted for the plain leg");
        buf[..172].copy_from_slice(&rtp_packet(0, 500, &[0x33; 160]));
        let f = p.on_packet(t(21), 20_004, "10.0.0.3:4000".parse().unwrap(), &mut buf, 172).expect("RTP → SRTP relayed");
        assert_eq!((f.port, f.len), (20_000, 172 + suite.overhead()));
        assert_ne!(&buf[12..172], &[0x33; 160][..], "encrypted for the SRTP leg");
        let m = phone1.unprotect(&mut buf, f.len).expect("the phone opens it after the hold packets (one stream)");
        assert_eq!((&buf[12..172], m), (&[0x33; 160][..], 172));

        // Bridge SRTP (s1) ↔ SRTP (s2): decrypted with one leg's keys, encrypted with the other's.
        p.apply(t(30), MediaCommand::Srtp { leg: s2, keys: Some(Box::new(k2)), roc: 0, srtcp: 0 });
        p.apply(t(30), MediaCommand::Update { leg: s2, remote: "10.0.0.2:4000".parse().unwrap(), codec: Codec::Pcma, send: true });
        p.apply(t(30), MediaCommand::Bridge { a: s1, b: s2 });
        buf[..172].copy_from_slice(&rtp_packet(0, 13, &[0xFF; 160]));
        let n = phone1.protect(&mut buf, 172).unwrap();
        let f = p.on_packet(t(40), 20_000, from1, &mut buf, n).expect("SRTP → SRTP relayed");
        assert_eq!(f.port, 20_002);
        let m = phone2.unprotect(&mut buf, f.len).expect("phone 2 opens it with its keys");
        let got = parse(&buf[..m]).unwrap();
        assert_eq!((got.pt.get(), &buf[12..172]), (8, &[0xD5; 160][..]), "μ-law silence became A-law silence");
        buf[..172].copy_from_slice(&rtp_packet(8, 77, &[0xD5; 160]));
        let n = phone2.protect(&mut buf, 172).unwrap();
        let f = p.on_packet(t(41), 20_002, "10.0.0.2:4000".parse().unwrap(), &mut buf, n).expect("back");
        let m = phone1.unprotect(&mut buf, f.len).unwrap();
        let ulaw = crate::media::g711::ALAW_TO_ULAW[0xD5];
        assert_eq!((m, &buf[12..172]), (172, &[ulaw; 160][..]), "A-law silence back as μ-law silence");
        // A replay of phone 2's packet is refused.
        let before = p.stats().srtp_auth_failed;
        buf[..172].copy_from_slice(&rtp_packet(8, 77, &[0xD5; 160]));
        let mut phone2_again = keys(suite, 5, 6).1;
        let n = phone2_again.protect(&mut buf, 172).unwrap();
        assert_eq!(p.on_packet(t(42), 20_002, "10.0.0.2:4000".parse().unwrap(), &mut buf, n), None);
        assert_eq!(p.stats().srtp_auth_failed, before + 1, "{suite:?}");
    }
}

#[test]
fn a_forged_packet_from_another_source_does_not_steal_an_srtp_legs_latch() {
    let mut p = plane();
    let leg = MediaLegId::solo(20_000);
    let (k, mut phone) = keys(SrtpSuite::AesCm128HmacSha1_80, 1, 2);
    p.apply(t(0), MediaCommand::Srtp { leg, keys: Some(Box::new(k)), roc: 0, srtcp: 0 });
    p.apply(t(0), MediaCommand::Hold { leg, remote: "10.0.0.1:4000".parse().unwrap(), codec: Codec::Pcmu, music: MusicId(0) });
    let mut buf = vec![0u8; 2048];
    // An attacker at another address sends first: refused, and hold music still goes to the SDP address.
    buf[..182].fill(0x80);
    buf[..172].copy_from_slice(&rtp_packet(0, 1, &[0; 160]));
    assert_eq!(p.on_packet(t(1), 20_000, "10.9.9.9:666".parse().unwrap(), &mut buf, 182), None);
    assert_eq!(p.stats().srtp_auth_failed, 1);
    assert_eq!(p.send_address(leg), Some("10.0.0.1:4000".parse().unwrap()));
    // The phone behind a NAT (another address) then latches with an authentic packet.
    buf[..172].copy_from_slice(&rtp_packet(0, 2, &[0; 160]));
    let n = phone.protect(&mut buf, 172).unwrap();
    assert_eq!(p.on_packet(t(2), 20_000, "192.0.2.7:5000".parse().unwrap(), &mut buf, n), None);
    assert_eq!((p.stats().absorbed, p.send_address(leg)), (1, Some("192.0.2.7:5000".parse().unwrap())));
}

#[test]
fn a_plane_resuming_a_stream_after_a_restart_keeps_the_rollover_counter_the_phone_followed() {
    let leg = MediaLegId::solo(20_000);
    let remote: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let (k, mut phone) = keys(SrtpSuite::AesCm128HmacSha1_32, 5, 6);
    let hold = |p: &mut MediaPlane, at: u64, seq: u16, roc: u32, k: &SrtpKeys| {
        p.apply(t(at), MediaCommand::Stream { leg, ssrc: 77, seq, ts: 0 });
        p.apply(t(at), MediaCommand::Srtp { leg, keys: Some(Box::new(k.clone())), roc, srtcp: 0 });
        p.apply(t(at), MediaCommand::Hold { leg, remote, codec: Codec::Pcmu, music: MusicId(0) });
    };
    let open = |phone: &mut SrtpLeg, pkts: &[HoldPacket]| -> Vec<Result<u16, SrtpError>> {
        pkts.iter().map(|h| {
            let mut buf = wire(h);
            let n = buf.len();
            phone.unprotect(&mut buf, n).map(|m| parse(&buf[..m]).unwrap().seq.0)
        }).collect()
    };
    // The old process: the stream crosses the sequence wrap (ROC 0 → 1) and the phone opens every packet.
    let mut old = plane();
    hold(&mut old, 0, 65_530, 0, &k);
    let before = open(&mut phone, &run(&mut old, 0, 400));
    assert!(before.len() >= 15 && before.iter().all(|r| r.is_ok()), "{before:?}");
    assert!(before.contains(&Ok(3)), "past the wrap: {before:?}");
    // kill -9; the new process resumes the stream further on (seq 40) with the journaled ROC 1.
    let mut new = plane();
    hold(&mut new, 1_000, 40, 1, &k);
    let after = open(&mut phone, &run(&mut new, 1_000, 1_200));
    assert!(after.len() >= 8 && after.iter().all(|r| r.is_ok()), "{after:?}");
    assert_eq!(after[0], Ok(40));
    // Without the ROC (0) the phone cannot open the resumed stream.
    let mut naive = plane();
    hold(&mut naive, 2_000, 60, 0, &k);
    let bad = open(&mut phone, &run(&mut naive, 2_000, 2_100));
    assert!(!bad.is_empty() && bad.iter().all(|r| r.is_err()), "{bad:?}");
}
