//! What the RTCP tests of the media plane share (rtcp-mux in `plane_rtcp_tests.rs`, the RTCP port in
//! `plane_rtcp_port_tests.rs`): virtual time, a plane with a known music loop, and RTCP/RTP packets to feed it.

use super::*;
use crate::media::music::FRAME_SAMPLES;
use crate::media::rtcp::{PT_RR, PT_SR};
use crate::media::rtp::{write_header, SeqNo, Ssrc};

pub(super) const T0_MS: u64 = 1_700_000_000_000;
pub(super) const A: MediaLegId = MediaLegId::solo(20_000);
pub(super) const B: MediaLegId = MediaLegId::solo(20_002);

pub(super) fn t(ms: u64) -> Time {
    Time::from_millis(T0_MS + ms)
}

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(super) fn plane() -> MediaPlane {
    let mut pcm = Vec::new();
    for k in 0..10i16 {
        pcm.extend(std::iter::repeat_n(k * 1000, FRAME_SAMPLES));
    }
    MediaPlane::new(vec![HoldMusic::from_pcm(&pcm).unwrap()], 7)
}

pub(super) fn wire(p: &HoldPacket) -> Vec<u8> {
    let mut v = p.header.to_vec();
    v.extend_from_slice(&p.payload);
    v
}

pub(super) fn run(p: &mut MediaPlane, from: u64, to: u64) -> Vec<(u64, HoldPacket)> {
    let mut out = Vec::new();
    let mut batch = HoldBatch::with_capacity(16);
    for ms in from..to {
        batch.clear();
        p.poll_hold(t(ms), &mut batch);
        out.extend(batch.packets().iter().map(|h| (ms, h.clone())));
    }
    out
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

pub(super) fn rr(ssrc: u32, about: u32, ext: u32) -> Vec<u8> {
    let mut v = vec![0x81, PT_RR, 0, 7];
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(&about.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 1]);
    v.extend_from_slice(&ext.to_be_bytes());
    v.extend_from_slice(&[0; 12]);
    v
}

pub(super) fn sr(ssrc: u32, ts: u32) -> Vec<u8> {
    let mut v = vec![0x80, PT_SR, 0, 6];
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 5, 0, 0, 3, 32]);
    v
}

pub(super) fn audio(ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
    let mut v = write_header(Pt::new(0).unwrap(), false, SeqNo(seq), ts, Ssrc(ssrc)).to_vec();
    v.extend_from_slice(&[0xFF; 160]);
    v
}

/// Feeds `pkt` to the plane as received on `port` from `from`; the forward's bytes.
pub(super) fn recv(p: &mut MediaPlane, ms: u64, port: u16, from: &str, pkt: &[u8]) -> Option<(Forward, Vec<u8>)> {
    let mut buf = pkt.to_vec();
    buf.resize(2048, 0);
    let f = p.on_packet(t(ms), port, addr(from), &mut buf, pkt.len())?;
    Some((f, buf[..f.len].to_vec()))
}

