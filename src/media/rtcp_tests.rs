//! RTCP packets: demultiplexing (RFC 5761 §4), compound validity (RFC 3550 A.2), parkd's SR + SDES, and the
//! translation of a bridged peer's reports.

use super::*;
use crate::media::rtp::{write_header, Pt, SeqNo, Ssrc};

/// An RR or SR (`sender` = Some((ntp, ts, packets, octets))) from `ssrc` with `blocks` (ssrc, ext highest seq).
pub(crate) fn report(ssrc: u32, sender: Option<(u64, u32, u32, u32)>, blocks: &[(u32, u32)]) -> Vec<u8> {
    let mut v = vec![0x80 | blocks.len() as u8, if sender.is_some() { PT_SR } else { PT_RR }, 0, 0];
    v.extend_from_slice(&ssrc.to_be_bytes());
    if let Some((ntp, ts, p, o)) = sender {
        v.extend_from_slice(&ntp.to_be_bytes());
        for x in [ts, p, o] {
            v.extend_from_slice(&x.to_be_bytes());
        }
    }
    for (s, ext) in blocks {
        v.extend_from_slice(&s.to_be_bytes());
        v.extend_from_slice(&[3, 0, 0, 7]); // fraction lost 3, cumulative 7
        v.extend_from_slice(&ext.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 42, 0xAA, 0xBB, 0xCC, 0xDD, 0, 1, 0, 0]); // jitter, LSR, DLSR
    }
    let words = (v.len() / 4 - 1) as u16;
    v[2..4].copy_from_slice(&words.to_be_bytes());
    v
}

/// A peer's SDES with a CNAME that must not be passed on, and a BYE.
fn sdes_and_bye(ssrc: u32) -> Vec<u8> {
    let mut v = vec![0x81, PT_SDES, 0, 6];
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(&[1, 14]);
    v.extend_from_slice(b"alice@10.0.0.7");
    v.extend_from_slice(&[0, 0, 0, 0]);
    v.extend_from_slice(&[0x81, PT_BYE, 0, 1]);
    v.extend_from_slice(&ssrc.to_be_bytes());
    v
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn rtcp_is_told_from_rtp_by_the_second_byte_rfc5761_4() {
    for pt in [PT_SR, PT_RR, PT_SDES, PT_BYE, 204, 205, 206, 207] {
        assert!(is_rtcp(&[0x80, pt, 0, 1, 0, 0, 0, 0]), "{pt}");
    }
    // Every RTP packet parkd relays or sends: PCMU/PCMA/telephone-event, marker or not.
    for (pt, marker) in [(0u8, false), (0, true), (8, true), (101, true), (127, true), (13, false)] {
        let h = write_header(Pt::new(pt).unwrap(), marker, SeqNo(1), 2, Ssrc(3));
        assert!(!is_rtcp(&h), "pt {pt} marker {marker}");
    }
    assert!(!is_rtcp(&[0x80]) && !is_rtcp(&[]));
}

#[test]
fn compound_validity_rfc3550_a2() {
    let mut c = report(7, Some((1, 2, 3, 4)), &[(9, 100)]);
    c.extend(sdes_and_bye(7));
    let kinds: Vec<(u8, u8)> = parts(&c).unwrap().map(|p| (p.pt, p.count)).collect();
    assert_eq!(kinds, vec![(PT_SR, 1), (PT_SDES, 1), (PT_BYE, 1)]);
    let mut short = c.clone();
    short.pop();
    assert!(parts(&short).is_none(), "lengths must add up to the datagram");
    let mut v1 = c.clone();
    v1[0] = 0x41;
    assert!(parts(&v1).is_none(), "version 2 only");
    let mut padded_first = c.clone();
    padded_first[0] |= 0x20;
    assert!(parts(&padded_first).is_none(), "padding only on the last packet");
    assert!(parts(&[0x80, PT_RR, 0, 0]).is_none(), "no SSRC");
    assert!(parts(&[0x80, PT_RR, 0xFF, 0xFF, 0, 0, 0, 0]).is_none());
}

#[test]
fn ntp_time_of_unix_time() {
    // 2023-11-14T22:13:20.5Z.
    let t = Time::from_micros(1_700_000_000_500_000);
    let n = ntp(t);
    assert_eq!(n >> 32, 1_700_000_000 + NTP_UNIX_OFFSET);
    assert_eq!(n as u32, 1 << 31, "half a second");
}

#[test]
fn parkd_report_is_an_sr_with_its_cname() {
    let info = SenderInfo { ssrc: 0xDEAD_BEEF, ntp: 0x0102_0304_0506_0708, rtp_ts: 160_000, packets: 250, octets: 40_000 };
    let mut out = [0u8; REPORT_LEN];
    write_report(&info, &mut out);
    let kinds: Vec<Part> = parts(&out).unwrap().collect();
    assert_eq!(kinds.iter().map(|p| (p.pt, p.count, p.len)).collect::<Vec<_>>(), vec![(PT_SR, 0, 28), (PT_SDES, 1, 28)]);
    assert_eq!([u32_at(&out, 4), u32_at(&out, 8), u32_at(&out, 12)], [0xDEAD_BEEF, 0x0102_0304, 0x0506_0708]);
    assert_eq!([u32_at(&out, 16), u32_at(&out, 20), u32_at(&out, 24)], [160_000, 250, 40_000]);
    assert_eq!(u32_at(&out, 32), 0xDEAD_BEEF, "the SDES chunk names the same SSRC");
    assert_eq!(&out[36..52], b"\x01\x0eparkd-deadbeef");
    assert_eq!(&out[52..56], &[0, 0, 0, 0], "end of items, padded to 32 bits");
}

const TO_B: u32 = 0xB0B0_0001; // parkd's SSRC toward B
const TO_A: u32 = 0xA0A0_0001; // parkd's SSRC toward A
const A_OWN: u32 = 0xAAAA_AAAA; // A's own RTP SSRC (relayed to B as TO_B)
const B_OWN: u32 = 0xBBBB_BBBB;

fn bridge() -> Translation {
    Translation { out_ssrc: TO_B, packets: 900, octets: 144_000, forward: Some((A_OWN, 5_000)), back: Some((TO_A, B_OWN, 100)) }
}

#[test]
fn a_peer_sr_is_translated_into_the_receivers_stream() {
    let mut buf = report(A_OWN, Some((0x1111_2222_3333_4444, 8_000, 10, 1_600)), &[(TO_A, 0x0001_0064), (0x5555, 9)]);
    buf.extend(sdes_and_bye(A_OWN));
    let len = buf.len();
    buf.resize(2048, 0);
    let n = translate(&mut buf, len, &bridge()).unwrap();
    let out = &buf[..n];
    let kinds: Vec<(u8, u8)> = parts(out).unwrap().map(|p| (p.pt, p.count)).collect();
    assert_eq!(kinds, vec![(PT_SR, 1), (PT_SDES, 1)], "BYE dropped, the foreign block left out");
    assert_eq!(u32_at(out, 4), TO_B, "the reporter is the stream B sees");
    assert_eq!((u32_at(out, 8), u32_at(out, 12)), (0x1111_2222, 0x3333_4444), "NTP time kept");
    assert_eq!(u32_at(out, 16), 13_000, "RTP timestamp in B's timeline");
    assert_eq!((u32_at(out, 20), u32_at(out, 24)), (900, 144_000), "parkd's counts on the stream to B");
    assert_eq!(u32_at(out, 28), B_OWN, "the block about parkd's stream to A is about B's own stream");
    assert_eq!(u32_at(out, 36), 0x0001_0000, "highest sequence number mapped back by the relay offset");
    assert_eq!(&out[32..36], &[3, 0, 0, 7]);
    assert_eq!(&out[40..52], &[0, 0, 0, 42, 0xAA, 0xBB, 0xCC, 0xDD, 0, 1, 0, 0], "jitter, LSR, DLSR kept");
    assert_eq!(u32_at(out, 56), TO_B);
    assert_eq!(&out[60..76], b"\x01\x0eparkd-b0b00001", "parkd's CNAME, not alice@10.0.0.7");
}

#[test]
fn what_cannot_be_mapped_is_dropped() {
    // An SR of a stream not relayed yet becomes an RR; no mapping back: no blocks.
    let mut buf = report(A_OWN, Some((1, 2, 3, 4)), &[(TO_A, 5)]);
    let len = buf.len();
    buf.resize(256, 0);
    let t = Translation { forward: None, back: None, ..bridge() };
    let n = translate(&mut buf, len, &t).unwrap();
    let kinds: Vec<(u8, u8, usize)> = parts(&buf[..n]).unwrap().map(|p| (p.pt, p.count, p.len)).collect();
    assert_eq!(kinds, vec![(PT_RR, 0, 8), (PT_SDES, 1, SDES_LEN)]);
    assert_eq!(u32_at(&buf, 4), TO_B);
    // A feedback-only (RFC 5506) packet, or garbage: nothing.
    let mut fb = vec![0x81, 205, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
    let len = fb.len();
    fb.resize(256, 0);
    assert_eq!(translate(&mut fb, len, &bridge()), None);
    // No room for parkd's SDES after the report.
    let mut tight = report(A_OWN, None, &[]);
    let len = tight.len();
    assert_eq!(translate(&mut tight, len, &bridge()), None);
}
