//! MediaPlane tests, all in virtual time.

use super::*;
use std::collections::HashMap;
use crate::media::music::FRAME_SAMPLES;
use crate::media::rtp::{parse, write_header, Pt, RtpInfo, SeqNo, Ssrc};

const T0_MS: u64 = 1_700_000_000_000;

fn t(ms: u64) -> Time {
    Time::from_millis(T0_MS + ms)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A short, cheap music loop: 10 frames, frame k filled with μ-law byte k.
fn plane() -> MediaPlane {
    let mut pcm = Vec::new();
    for k in 0..10i16 {
        pcm.extend(std::iter::repeat_n(k * 1000, FRAME_SAMPLES));
    }
    MediaPlane::new(vec![HoldMusic::from_pcm(&pcm).unwrap()], 42)
}

fn hold(p: &mut MediaPlane, now: Time, port: u16, remote: &str, codec: Codec) {
    p.apply(now, MediaCommand::Hold { leg: MediaLegId::solo(port), remote: addr(remote), codec, music: MusicId(0) });
}

fn info(h: &[u8; 12]) -> RtpInfo {
    parse(h).unwrap()
}

/// Polls every millisecond in `[from, to)`, returning the packets.
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

fn rtp_packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = write_header(Pt::new(pt).unwrap(), false, SeqNo(seq), ts, Ssrc(ssrc)).to_vec();
    v.extend_from_slice(payload);
    v
}

#[test]
fn pacer_1000_streams_for_one_second_send_exactly_50_frames_each() {
    let mut p = plane();
    let ports: Vec<u16> = (0..1000).map(|i| 10_000 + 2 * i).collect();
    for port in &ports {
        hold(&mut p, t(0), *port, "10.0.0.1:4000", Codec::Pcmu);
    }
    let loads = p.pacer.slot_loads();
    let avg = 1000 / 20;
    assert!(loads.iter().all(|l| *l <= 2 * avg && *l > 0), "slot loads {loads:?}");

    let mut batch = HoldBatch::with_capacity(64);
    let mut per_port: HashMap<u16, Vec<(RtpInfo, u64)>> = HashMap::new();
    let mut cap_after_warmup = 0;
    for ms in 0..1000 {
        batch.clear();
        p.poll_hold(t(ms), &mut batch);
        for pkt in batch.packets() {
            assert_eq!(pkt.payload.len(), 160);
            per_port.entry(pkt.port).or_default().push((info(&pkt.header), ms));
        }
        if ms == 40 {
            cap_after_warmup = batch.capacity();
        }
    }
    assert_eq!(batch.capacity(), cap_after_warmup, "batch reused without growing");
    assert_eq!(per_port.len(), 1000);
    for (port, pkts) in &per_port {
        assert_eq!(pkts.len(), 50, "port {port}");
        assert!(pkts[0].0.marker, "marker on first packet (RFC 3551 §4.1)");
        let ssrc = pkts[0].0.ssrc;
        for w in pkts.windows(2) {
            let (a, b) = (&w[0].0, &w[1].0);
            assert_eq!(b.seq, a.seq.wrapping_add(1), "seq +1 (RFC 3550 §5.1)");
            assert_eq!(b.ts, a.ts.wrapping_add(160), "ts +160 per 20 ms");
            assert_eq!(w[1].1 - w[0].1, 20, "sent every 20 ms");
            assert!(!b.marker);
            assert_eq!(b.ssrc, ssrc);
            assert_eq!(b.pt.get(), 0);
        }
    }
    let ssrcs: std::collections::HashSet<Ssrc> = per_port.values().map(|v| v[0].0.ssrc).collect();
    assert!(ssrcs.len() > 990, "SSRCs are random per leg");
    assert_eq!(p.stats().hold_sent, 50_000);
    assert_eq!(p.stats().hold_streams, 1000);
}

#[test]
fn late_poll_skips_frames_and_keeps_ts_on_schedule() {
    let mut p = plane();
    hold(&mut p, t(0), 20_000, "10.0.0.1:4000", Codec::Pcmu);
    let first = run(&mut p, 0, 100);
    assert_eq!(first.len(), 5);
    let last = info(&first[4].header);
    let first_ms = p.poll_timeout().unwrap().0.as_millis() - T0_MS - 5 * 20;
    // The io thread stalls for 95 ms; one poll must not burst the missed frames.
    let mut batch = HoldBatch::default();
    p.poll_hold(t(195), &mut batch);
    assert_eq!(batch.len(), 1, "no burst after a stall");
    let got = info(&batch.packets()[0].header);
    let n_last = 4u64;
    let n_now = (195 - first_ms) / 20;
    assert_eq!(got.ts, last.ts.wrapping_add(160 * (n_now - n_last) as u32), "ts follows the schedule");
    assert_eq!(got.seq, last.seq.wrapping_add(1));
    // The music position follows the schedule too (frame k of the loop is μ-law of k*1000).
    let expect = HoldMusic::from_pcm(&[(n_now % 10) as i16 * 1000]).unwrap().pcmu[0];
    assert_eq!(batch.packets()[0].payload[0], expect);
}

#[test]
fn poll_timeout_tracks_the_earliest_slot() {
    let mut p = plane();
    assert_eq!(p.poll_timeout().map(|(t, _)| t), None);
    hold(&mut p, t(3), 20_000, "10.0.0.1:4000", Codec::Pcma);
    let d = p.poll_timeout().unwrap().0;
    assert!(d >= t(3) && d < t(23), "{d:?}");
    let mut b = HoldBatch::default();
    p.poll_hold(d, &mut b);
    assert_eq!(b.len(), 1);
    assert_eq!(info(&b.packets()[0].header).pt.get(), 8);
    assert_eq!(p.poll_timeout().map(|(t, _)| t), Some(d + std::time::Duration::from_millis(20)));
    p.apply(t(30), MediaCommand::Stop { leg: MediaLegId::solo(20_000) });
    assert_eq!(p.poll_timeout().map(|(t, _)| t), None);
    assert_eq!(p.stats().legs, 0);
}

/// Bridge: one continuous stream per receiver across hold → relay (RFC 3550 §5.1, RFC 7667 §3.2.1.3).
#[test]
fn hold_to_bridge_keeps_ssrc_seq_ts_continuous_and_translates() {
    let mut p = plane();
    let (a, b) = (20_000u16, 20_002u16);
    hold(&mut p, t(0), a, "10.0.0.1:4000", Codec::Pcmu);
    p.apply(t(0), MediaCommand::Update { leg: MediaLegId::solo(b), remote: addr("10.0.0.2:5000"), codec: Codec::Pcma, send: true });
    let held = run(&mut p, 0, 200);
    let last_hold = info(&held.last().unwrap().header);
    assert!(held.iter().all(|h| h.port == a));

    p.apply(t(200), MediaCommand::Bridge { a: MediaLegId::solo(a), b: MediaLegId::solo(b) });
    assert!(run(&mut p, 200, 400).is_empty(), "no hold packet after Bridge");
    assert_eq!(p.stats().bridged_pairs, 1);
    assert_eq!(p.stats().hold_streams, 0);

    // B (A-law) talks to A (μ-law).
    let mut pkt = rtp_packet(8, 9000, 123_456, 0xB0B, &[0xD5; 160]);
    let f = p.on_rtp(t(400), b, addr("10.0.0.2:5000"), &mut pkt).unwrap();
    assert_eq!(f, Forward { port: a, to: addr("10.0.0.1:4000"), len: 172 });
    let r1 = parse(&pkt).unwrap();
    assert_eq!(r1.ssrc, last_hold.ssrc, "same SSRC as the hold music");
    assert_eq!(r1.seq, last_hold.seq.wrapping_add(1), "seq continues");
    let gap = r1.ts.wrapping_sub(last_hold.ts);
    assert!((160..=8 * 400).contains(&gap), "ts continues with the elapsed time, gap {gap}");
    assert!(r1.marker, "marker on the first packet of the new talkspurt");
    assert_eq!(r1.pt.get(), 0);
    assert!(pkt[12..].iter().all(|x| *x == 0xFE), "A-law 0xD5 (+8) translated to μ-law 0xFE");

    let mut pkt = rtp_packet(8, 9001, 123_616, 0xB0B, &[0xD5; 160]);
    p.on_rtp(t(420), b, addr("10.0.0.2:5000"), &mut pkt).unwrap();
    let r2 = parse(&pkt).unwrap();
    assert_eq!((r2.seq, r2.ts, r2.ssrc, r2.marker), (r1.seq.wrapping_add(1), r1.ts.wrapping_add(160), r1.ssrc, false));

    // Loss in the source stays visible: source skips 2 packets.
    let mut pkt = rtp_packet(8, 9004, 124_096, 0xB0B, &[0xD5; 160]);
    p.on_rtp(t(480), b, addr("10.0.0.2:5000"), &mut pkt).unwrap();
    let r3 = parse(&pkt).unwrap();
    assert_eq!((r3.seq, r3.ts), (r2.seq.wrapping_add(3), r2.ts.wrapping_add(480)));

    // The source changes SSRC (e.g. the phone restarted its stream): rebase, stay continuous.
    let mut pkt = rtp_packet(8, 1, 7, 0xC0C, &[0xD5; 160]);
    p.on_rtp(t(500), b, addr("10.0.0.2:5000"), &mut pkt).unwrap();
    let r4 = parse(&pkt).unwrap();
    assert_eq!(r4.ssrc, r1.ssrc);
    assert_eq!(r4.seq, r3.seq.wrapping_add(1));
    assert!(r4.ts.wrapping_sub(r3.ts) >= 160 && r4.ts.wrapping_sub(r3.ts) < 8 * 100);
    assert!(r4.marker);
    let mut pkt = rtp_packet(8, 2, 167, 0xC0C, &[0xD5; 160]);
    p.on_rtp(t(520), b, addr("10.0.0.2:5000"), &mut pkt).unwrap();
    let r5 = parse(&pkt).unwrap();
    assert_eq!((r5.seq, r5.ts), (r4.seq.wrapping_add(1), r4.ts.wrapping_add(160)));

    // A (μ-law) talks to B (A-law): B had no hold music, its stream starts fresh with a marker.
    let mut pkt = rtp_packet(0, 50, 60, 0xA0A, &[0xFF; 160]);
    let f = p.on_rtp(t(520), a, addr("10.0.0.1:4000"), &mut pkt).unwrap();
    assert_eq!((f.port, f.to), (b, addr("10.0.0.2:5000")));
    let ra = parse(&pkt).unwrap();
    assert_eq!(ra.pt.get(), 8);
    assert_ne!(ra.ssrc, r1.ssrc);
    assert!(ra.marker);
    assert!(pkt[12..].iter().all(|x| *x == 0xD5));
    assert_eq!(p.stats().relayed, 6);
}

#[test]
fn bridge_then_hold_again_continues_the_stream() {
    let mut p = plane();
    let (a, b) = (20_000u16, 20_002u16);
    hold(&mut p, t(0), a, "10.0.0.1:4000", Codec::Pcmu);
    hold(&mut p, t(0), b, "10.0.0.2:4000", Codec::Pcmu);
    run(&mut p, 0, 100);
    p.apply(t(100), MediaCommand::Bridge { a: MediaLegId::solo(a), b: MediaLegId::solo(b) });
    let mut pkt = rtp_packet(0, 1, 1, 1, &[0xFF; 160]);
    p.on_rtp(t(110), b, addr("10.0.0.2:4000"), &mut pkt).unwrap();
    let relayed = parse(&pkt).unwrap();
    // The retriever hangs up: the core stops B and puts A back on hold.
    p.apply(t(120), MediaCommand::Stop { leg: MediaLegId::solo(b) });
    let mut pkt = rtp_packet(0, 2, 161, 1, &[0xFF; 160]);
    assert!(p.on_rtp(t(125), a, addr("10.0.0.1:4000"), &mut pkt).is_none(), "peer gone: absorbed");
    hold(&mut p, t(130), a, "10.0.0.1:4000", Codec::Pcmu);
    let again = run(&mut p, 130, 200);
    let h = info(&again[0].header);
    assert_eq!(h.ssrc, relayed.ssrc);
    assert_eq!(h.seq, relayed.seq.wrapping_add(1));
    assert!(h.marker);
    assert!(h.ts.wrapping_sub(relayed.ts) >= 160);
}

#[test]
fn telephone_event_passes_with_pt_rewritten_other_pts_dropped() {
    let mut p = plane();
    let (a, b) = (20_000u16, 20_002u16);
    hold(&mut p, t(0), a, "10.0.0.1:4000", Codec::Pcmu);
    hold(&mut p, t(0), b, "10.0.0.2:4000", Codec::Pcmu);
    p.apply(t(0), MediaCommand::DtmfPayloadType { leg: MediaLegId::solo(a), pt: Some(101) });
    p.apply(t(0), MediaCommand::DtmfPayloadType { leg: MediaLegId::solo(b), pt: Some(96) });
    p.apply(t(0), MediaCommand::Bridge { a: MediaLegId::solo(a), b: MediaLegId::solo(b) });
    // RFC 4733 §2.3: event '5', end bit clear, volume 10, duration 160.
    let mut ev = rtp_packet(101, 10, 1000, 5, &[5, 10, 0, 160]);
    let f = p.on_rtp(t(10), a, addr("10.0.0.1:4000"), &mut ev).unwrap();
    assert_eq!(f.port, b);
    assert_eq!(parse(&ev).unwrap().pt.get(), 96);
    assert_eq!(&ev[12..], &[5, 10, 0, 160]);
    let mut cn = rtp_packet(13, 11, 1000, 5, &[40]);
    assert!(p.on_rtp(t(11), a, addr("10.0.0.1:4000"), &mut cn).is_none(), "comfort noise dropped");
    let mut other = rtp_packet(97, 12, 1000, 5, &[1, 2]);
    assert!(p.on_rtp(t(12), a, addr("10.0.0.1:4000"), &mut other).is_none(), "unknown dynamic PT dropped");
    assert_eq!(p.stats().dropped_unrelayable, 2);
}

/// Symmetric RTP (RFC 4961): latch to the first source, re-latch only after an Update.
#[test]
fn latching_follows_first_source_and_relatches_after_update() {
    let mut p = plane();
    hold(&mut p, t(0), 20_000, "10.0.0.1:4000", Codec::Pcmu);
    assert_eq!(p.send_address(MediaLegId::solo(20_000)), Some(addr("10.0.0.1:4000")));
    let first = run(&mut p, 0, 40);
    assert!(first.iter().all(|h| h.to == addr("10.0.0.1:4000")));

    let mut pkt = rtp_packet(0, 1, 1, 1, &[0xFF; 160]);
    assert!(p.on_rtp(t(40), 20_000, addr("192.0.2.7:31000"), &mut pkt).is_none());
    assert_eq!(p.send_address(MediaLegId::solo(20_000)), Some(addr("192.0.2.7:31000")), "latched to the NAT address");
    assert_eq!(p.poll_report(), Some(MediaReport::Latched { leg: MediaLegId::solo(20_000), source: addr("192.0.2.7:31000") }), "reported for the core (direct media)");
    assert_eq!(p.poll_report(), None);
    let later = run(&mut p, 40, 80);
    assert!(!later.is_empty() && later.iter().all(|h| h.to == addr("192.0.2.7:31000")));

    let mut pkt = rtp_packet(0, 2, 161, 1, &[0xFF; 160]);
    p.on_rtp(t(80), 20_000, addr("198.51.100.9:999"), &mut pkt);
    assert_eq!(p.send_address(MediaLegId::solo(20_000)), Some(addr("192.0.2.7:31000")), "a stranger cannot steal the stream");
    assert_eq!(p.stats().dropped_unrelayable, 1);

    p.apply(t(90), MediaCommand::Update { leg: MediaLegId::solo(20_000), remote: addr("10.0.0.9:4000"), codec: Codec::Pcmu, send: true });
    assert_eq!(p.send_address(MediaLegId::solo(20_000)), Some(addr("10.0.0.9:4000")));
    let mut pkt = rtp_packet(0, 3, 321, 1, &[0xFF; 160]);
    p.on_rtp(t(95), 20_000, addr("198.51.100.9:999"), &mut pkt);
    assert_eq!(p.send_address(MediaLegId::solo(20_000)), Some(addr("198.51.100.9:999")), "re-latched after Update");
    assert!(matches!(p.poll_report(), Some(MediaReport::Latched { .. })));
    assert_eq!(p.poll_report(), None);
    assert_eq!(p.stats().absorbed, 2);
}

#[test]
fn invalid_datagrams_are_dropped_and_counted_never_panic() {
    let mut p = plane();
    hold(&mut p, t(0), 20_000, "10.0.0.1:4000", Codec::Pcmu);
    let from = addr("10.0.0.1:4000");
    let mut short = [0x80u8; 11];
    assert!(p.on_rtp(t(1), 20_000, from, &mut short).is_none());
    let mut v1 = rtp_packet(0, 1, 1, 1, &[0; 10]);
    v1[0] = 0x40;
    assert!(p.on_rtp(t(1), 20_000, from, &mut v1).is_none());
    let mut ok = rtp_packet(0, 1, 1, 1, &[0; 10]);
    assert!(p.on_rtp(t(1), 20_002, from, &mut ok).is_none(), "no leg on that port");
    assert_eq!(p.stats().dropped_invalid, 3);
    assert_eq!(p.send_address(MediaLegId::solo(20_000)), Some(from), "invalid packets do not latch");

    // Pseudo-random garbage on a bridged pair.
    hold(&mut p, t(0), 20_002, "10.0.0.2:4000", Codec::Pcma);
    p.apply(t(0), MediaCommand::Bridge { a: MediaLegId::solo(20_000), b: MediaLegId::solo(20_002) });
    let mut x: u32 = 0x1234_5678;
    for n in 0..5000usize {
        let mut buf = vec![0u8; n % 200];
        for byte in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *byte = x as u8;
        }
        if let Some(first) = buf.first_mut() {
            *first = (*first & 0x3F) | 0x80; // mostly version 2, to get past the first check
        }
        if let Some(f) = p.on_rtp(t(2), 20_000, addr("10.0.0.1:4000"), &mut buf) {
            assert!(f.len <= buf.len());
        }
    }
}

#[test]
fn update_send_false_pauses_hold_and_send_true_resumes() {
    let mut p = plane();
    hold(&mut p, t(0), 20_000, "10.0.0.1:4000", Codec::Pcmu);
    let before = run(&mut p, 0, 100);
    p.apply(t(100), MediaCommand::Update { leg: MediaLegId::solo(20_000), remote: addr("10.0.0.1:4000"), codec: Codec::Pcmu, send: false });
    assert!(run(&mut p, 100, 300).is_empty(), "peer sendonly/inactive: we must not send (RFC 3264 §6.1)");
    // No hold frame is due any more; only the paused leg's next RTCP report (about every 5 s, plane_rtcp).
    let (next, why) = p.poll_timeout().expect("the paused leg's report");
    assert_eq!(why, crate::media::MediaWake::RtcpReport);
    assert!(next >= t(100 + 2_000), "{next:?}");
    p.apply(t(300), MediaCommand::Update { leg: MediaLegId::solo(20_000), remote: addr("10.0.0.1:4000"), codec: Codec::Pcma, send: true });
    let after = run(&mut p, 300, 400);
    let (l, f) = (info(&before.last().unwrap().header), info(&after[0].header));
    assert_eq!(f.seq, l.seq.wrapping_add(1));
    assert_eq!(f.ssrc, l.ssrc);
    assert_eq!(f.pt.get(), 8, "codec switched by the re-INVITE");
    assert!(f.ts.wrapping_sub(l.ts) >= 8 * 200, "timestamp advanced over the pause");
}

#[test]
fn relay_to_a_peer_that_must_not_receive_is_dropped_and_bad_bridge_ignored() {
    let mut p = plane();
    hold(&mut p, t(0), 20_000, "10.0.0.1:4000", Codec::Pcmu);
    hold(&mut p, t(0), 20_002, "10.0.0.2:4000", Codec::Pcmu);
    p.apply(t(0), MediaCommand::Bridge { a: MediaLegId::solo(20_000), b: MediaLegId::solo(20_004) });
    assert_eq!(p.stats().hold_streams, 2, "bridge with an unknown leg is ignored");
    p.apply(t(0), MediaCommand::Bridge { a: MediaLegId::solo(20_000), b: MediaLegId::solo(20_002) });
    p.apply(t(0), MediaCommand::Update { leg: MediaLegId::solo(20_002), remote: addr("10.0.0.2:4000"), codec: Codec::Pcmu, send: false });
    let mut pkt = rtp_packet(0, 1, 1, 1, &[0xFF; 160]);
    assert!(p.on_rtp(t(1), 20_000, addr("10.0.0.1:4000"), &mut pkt).is_none());
    let mut pkt = rtp_packet(0, 1, 1, 1, &[0xFF; 160]);
    assert!(p.on_rtp(t(1), 20_002, addr("10.0.0.2:4000"), &mut pkt).is_some(), "the other direction still flows");
}

#[test]
fn pacer_lateness_poll_3ms_late_lands_in_le_5ms_bucket() {
    let mut p = plane();
    hold(&mut p, t(0), 10_000, "10.0.0.1:4000", Codec::Pcmu);
    hold(&mut p, t(0), 10_002, "10.0.0.1:4002", Codec::Pcmu);
    let due = p.poll_timeout().map(|(t, _)| t).expect("a hold stream is scheduled");
    let mut batch = HoldBatch::with_capacity(4);
    p.poll_hold(due, &mut batch);
    let on_time = p.stats().pacer_lateness;
    assert_eq!((on_time.count, on_time.buckets[0], on_time.sum_us), (1, 1, 0), "on time: ≤0.5 ms; one per slot, not per stream");
    // Both streams share the slot (few streams, one slot); its next period, served 3 ms late.
    let next = p.poll_timeout().map(|(t, _)| t).expect("still scheduled");
    assert_eq!(next, due + std::time::Duration::from_millis(20));
    batch.clear();
    p.poll_hold(next + std::time::Duration::from_millis(3), &mut batch);
    assert_eq!(batch.packets().len(), 2);
    let l = p.stats().pacer_lateness;
    assert_eq!(l.buckets, [1, 0, 0, 1, 0, 0, 0], "3 ms late: the ≤5 ms bucket");
    assert_eq!((l.count, l.sum_us), (2, 3_000));
}

/// Legs sharing a port: hold streams of one port leave in the same pacer slot (one `sendmmsg`),
/// and a packet no leg can claim is dropped as ambiguous (see `demux`).
#[test]
fn shared_port_legs_share_a_pacer_slot_and_ambiguous_packets_are_dropped() {
    let mut p = plane();
    let legs: Vec<MediaLegId> = (0..4).map(|s| MediaLegId::new(20_000, s)).collect();
    for (i, leg) in legs.iter().enumerate() {
        p.apply(t(0), MediaCommand::Hold { leg: *leg, remote: addr(&format!("10.0.0.{}:4000", i + 1)), codec: Codec::Pcmu, music: MusicId(0) });
    }
    hold(&mut p, t(0), 20_002, "10.0.0.9:4000", Codec::Pcmu);
    let mut batch = HoldBatch::with_capacity(8);
    let mut slot_of_port: HashMap<u16, Vec<u64>> = HashMap::new();
    for ms in 0..40u64 {
        batch.clear();
        p.poll_hold(t(ms), &mut batch);
        for pkt in batch.packets() {
            slot_of_port.entry(pkt.port).or_default().push(ms % 20);
        }
    }
    let shared = &slot_of_port[&20_000];
    assert_eq!(shared.len(), 8, "4 legs × 2 periods");
    assert!(shared.iter().all(|s| *s == shared[0]), "one slot for the shared port: {shared:?}");
    assert_eq!(slot_of_port[&20_002][0], shared[0], "another port joins the slot in use (few streams: one wake-up per period)");

    let mut pkt = rtp_packet(0, 1, 1, 1, &[0xFF; 160]);
    assert!(p.on_rtp(t(50), 20_000, addr("198.51.100.7:31000"), &mut pkt).is_none());
    assert_eq!(p.stats().dropped_ambiguous, 1, "four unlatched legs, unknown source");
    p.on_rtp(t(50), 20_000, addr("10.0.0.2:4000"), &mut pkt);
    assert_eq!(p.send_address(legs[1]), Some(addr("10.0.0.2:4000")), "SDP match latches leg 1");
    assert_eq!(p.stats().absorbed, 1);
}

#[test]
fn a_stream_identity_given_before_hold_is_the_one_sent_and_resumes_an_anchor() {
    use crate::media::anchor::{Pace, StreamAnchor};
    let mut p = plane();
    let leg = MediaLegId::solo(20_000);
    // The core picks the identity (issue 17): SSRC, next sequence number, timestamp.
    p.apply(t(0), MediaCommand::Stream { leg, ssrc: 0xfeed, seq: 65_530, ts: 1_000 });
    hold(&mut p, t(0), 20_000, "10.0.0.1:4000", Codec::Pcmu);
    let pkts = run(&mut p, 0, 200);
    assert_eq!(pkts.len(), 10);
    let first = info(&pkts[0].header);
    assert_eq!((first.ssrc, first.seq, first.ts, first.marker), (Ssrc(0xfeed), SeqNo(65_530), 1_000, true));
    let last = info(&pkts[9].header);
    assert_eq!((last.seq, last.ts), (SeqNo(65_530u16.wrapping_add(9)), 1_000 + 9 * 160));
    // The anchor the core kept predicts the stream; resumed in a new plane 5 s later, it continues it.
    let anchor = StreamAnchor::new(0xfeed, 65_530, 1_000, t(0), Pace::Hold);
    let r = anchor.resume(t(5_200));
    assert!(r.seq.wrapping_sub(last.seq.0) >= 1 && r.seq.wrapping_sub(last.seq.0) <= 252, "after every packet sent");
    let mut q = plane();
    q.apply(t(5_200), MediaCommand::Stream { leg, ssrc: r.ssrc, seq: r.seq, ts: r.ts });
    hold(&mut q, t(5_200), 20_000, "10.0.0.1:4000", Codec::Pcmu);
    let again = run(&mut q, 5_200, 5_300);
    let h = info(&again[0].header);
    assert_eq!((h.ssrc, h.seq, h.marker), (Ssrc(0xfeed), SeqNo(r.seq), true));
    assert!(h.ts.wrapping_sub(last.ts) >= 5_000 * 8 && h.ts.wrapping_sub(last.ts) <= 5_300 * 8, "timestamp advanced by the time that passed");
    // A Stream for a leg that is playing replaces its identity; a Stop forgets a preset.
    q.apply(t(5_300), MediaCommand::Stream { leg, ssrc: 7, seq: 1, ts: 0 });
    let switched = run(&mut q, 5_300, 5_400);
    assert_eq!((info(&switched[0].header).ssrc, info(&switched[0].header).seq), (Ssrc(7), SeqNo(1)));
    q.apply(t(5_400), MediaCommand::Stream { leg: MediaLegId::solo(20_002), ssrc: 9, seq: 9, ts: 9 });
    q.apply(t(5_400), MediaCommand::Stop { leg: MediaLegId::solo(20_002) });
    hold(&mut q, t(5_400), 20_002, "10.0.0.1:4002", Codec::Pcmu);
    let fresh = run(&mut q, 5_400, 5_500);
    assert!(fresh.iter().filter(|p| p.port == 20_002).all(|p| info(&p.header).ssrc != Ssrc(9)), "the preset went with the Stop");
}

/// A reload swaps a lot's music (`SetMusic`, issue 21): the leg playing it goes on with the new loop, with no gap in
/// sequence numbers or timestamps; a new music id beyond the list is added (a new lot's music).
#[test]
fn set_music_swaps_the_loop_without_a_gap_and_adds_new_ids() {
    let mut p = plane();
    hold(&mut p, t(0), 10_000, "10.0.0.1:4000", Codec::Pcmu);
    let before = run(&mut p, 0, 200);
    assert!(!before.is_empty());
    let silence = HoldMusic::from_pcm(&[0i16; FRAME_SAMPLES * 4]).unwrap();
    p.apply(t(200), MediaCommand::SetMusic { id: MusicId(0), music: Box::new(silence.clone()) });
    p.apply(t(200), MediaCommand::SetMusic { id: MusicId(3), music: Box::new(silence.clone()) });
    assert_eq!(p.music.len(), 4, "ids 1 and 2 filled with the first music, 3 set");
    let after = run(&mut p, 200, 400);
    assert!(!after.is_empty());
    let all: Vec<RtpInfo> = before.iter().chain(&after).map(|pk| info(&pk.header)).collect();
    for w in all.windows(2) {
        assert_eq!(w[1].seq.0, w[0].seq.0.wrapping_add(1), "sequence continues across the swap");
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(160), "timestamps continue across the swap");
    }
    let silent = silence.frame(Codec::Pcmu, 0);
    assert!(after.iter().all(|pk| pk.payload == silent), "the new loop plays after the swap");
    assert!(before.iter().any(|pk| pk.payload != silent), "the old loop played before");
}
