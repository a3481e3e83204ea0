//! RTCP (RFC 3550 §6), on the RTP port (rtcp-mux, RFC 5761) or an RTCP port: telling RTCP from RTP, checking a compound packet,
//! parkd's own Sender Report for a hold stream, and the translation of a bridged peer's reports.
//!
//! * **Demultiplexing** ([`is_rtcp`], RFC 5761 §4): a datagram on the RTP port whose second byte is 192–223 is
//!   RTCP (SR 200, RR 201, SDES 202, BYE 203, APP 204, RTPFB/PSFB 205/206, XR 207); RTP payload types 64–95 are
//!   never used with it, so nothing parkd relays is taken for RTCP and no RTCP is taken for RTP.
//! * **Hold music** ([`write_report`]): one SR (RC 0) and one SDES CNAME (`parkd-<ssrc in hex>`, unique per
//!   stream, RFC 7022 style: it names no host or user), 56 bytes, written into a stack array. The NTP time and
//!   the RTP timestamp are those of the hold packet sent at the same pacer slot, so a receiver can place the
//!   music on its wall clock; the packet and octet counts are those of parkd's stream to the leg (RFC 3550
//!   §6.4.1: payload octets, headers not counted).
//! * **Bridges** ([`translate`]): parkd relays a bridged stream as an RTP translator that rewrites SSRC,
//!   sequence numbers and timestamps (`relay`): each leg sees ONE stream from parkd, under the leg's own SSRC. A
//!   peer's report is translated the same way before it is relayed: the reporter becomes the receiving leg's
//!   SSRC, an SR's RTP timestamp is moved by the relay's timestamp offset (its NTP time is kept, its counts are
//!   those of parkd's stream to the receiver), and each report block about parkd's stream to the reporter is
//!   turned into a block about the receiver's own stream (its SSRC, the highest sequence number mapped back by
//!   the relay's offset). What cannot be translated consistently is dropped, each for a reason: an SR whose
//!   stream is not (yet) relayed becomes an RR (its RTP timestamp would be in an unknown timeline); a report
//!   block about another SSRC is left out (the receiver never saw that SSRC); the peer's SDES is replaced by
//!   parkd's CNAME of the receiver's stream (CNAME is bound to an SSRC, and the B2BUA does not pass on the
//!   peer's host or user name); BYE is dropped (parkd's stream to the receiver does not end with the peer's:
//!   hold music may follow); APP, feedback (RTPFB/PSFB) and XR are dropped (their SSRC fields would need
//!   per-type rewriting, and nothing parkd relays — G.711 — uses them). A compound packet without SR or RR
//!   (an RFC 5506 reduced-size feedback packet) is not relayed.
//!
//! Nothing here allocates: packets are written into the caller's buffer or a stack array.

use crate::time::Time;

/// Sender Report.
pub const PT_SR: u8 = 200;
/// Receiver Report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;
/// Goodbye.
pub const PT_BYE: u8 = 203;
/// SDES item type CNAME.
pub const SDES_CNAME: u8 = 1;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Length of one report block (RFC 3550 §6.4.1).
pub const BLOCK_LEN: usize = 24;
/// Length of parkd's SDES packet: header, one chunk (SSRC, CNAME of 14 bytes, end, padding).
pub const SDES_LEN: usize = 28;
/// Length of parkd's hold report: an SR without report blocks (28 bytes) and its SDES.
pub const REPORT_LEN: usize = 28 + SDES_LEN;
/// Length of parkd's report for a paused stream: an RR without report blocks (8 bytes) and its SDES.
pub const RR_REPORT_LEN: usize = 8 + SDES_LEN;
/// Largest SR or RR parkd translates: 31 report blocks.
const MAX_REPORT: usize = 28 + 31 * BLOCK_LEN;

/// RFC 5761 §4: a datagram on the RTP port is RTCP when its second byte (RTP's marker and payload type) is in
/// 192–223.
pub fn is_rtcp(pkt: &[u8]) -> bool {
    matches!(pkt.get(1), Some(192..=223))
}

/// One RTCP packet of a compound: its type, item count (RC/SC), start and length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub pt: u8,
    pub count: u8,
    pub start: usize,
    pub len: usize,
}

/// The packets of a compound RTCP packet, when it is valid (RFC 3550 A.2): each version 2, each length within
/// the datagram and adding up to it exactly, padding only on the last one. `None` otherwise.
pub fn parts(pkt: &[u8]) -> Option<impl Iterator<Item = Part> + '_> {
    let mut at = 0;
    while at < pkt.len() {
        let h = pkt.get(at..at + 4)?;
        let len = (u16::from_be_bytes([h[2], h[3]]) as usize + 1) * 4;
        let last = at + len == pkt.len();
        if h[0] >> 6 != 2 || at + len > pkt.len() || (h[0] & 0x20 != 0 && !last) {
            return None;
        }
        at += len;
    }
    if pkt.len() < 8 {
        return None;
    }
    let mut at = 0;
    Some(std::iter::from_fn(move || {
        let h = pkt.get(at..at + 4)?;
        let len = (u16::from_be_bytes([h[2], h[3]]) as usize + 1) * 4;
        let p = Part { pt: h[1], count: h[0] & 0x1F, start: at, len };
        at += len;
        Some(p)
    }))
}

/// A 64-bit NTP timestamp (RFC 3550 §4) of `t`.
pub fn ntp(t: Time) -> u64 {
    let us = t.as_micros();
    let secs = us / 1_000_000 + NTP_UNIX_OFFSET;
    let frac = ((us % 1_000_000) << 32) / 1_000_000;
    secs << 32 | frac
}

/// What a Sender Report says about parkd's stream to a leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderInfo {
    pub ssrc: u32,
    pub ntp: u64,
    pub rtp_ts: u32,
    pub packets: u32,
    pub octets: u32,
}

fn put32(out: &mut [u8], at: usize, v: u32) {
    if let Some(d) = out.get_mut(at..at + 4) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

fn get32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// An RTCP header: version 2, no padding, `count`, `pt`, `len` bytes in all.
fn header(out: &mut [u8], at: usize, count: u8, pt: u8, len: usize) {
    if let Some(h) = out.get_mut(at..at + 4) {
        h[0] = 0x80 | (count & 0x1F);
        h[1] = pt;
        h[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    }
}

/// Writes parkd's SDES (one chunk: `ssrc`, CNAME `parkd-<ssrc in hex>`) at `out[at..at + SDES_LEN]`.
fn write_sdes(out: &mut [u8], at: usize, ssrc: u32) {
    header(out, at, 1, PT_SDES, SDES_LEN);
    put32(out, at + 4, ssrc);
    let Some(item) = out.get_mut(at + 8..at + SDES_LEN) else { return };
    item.fill(0); // the end item and the padding
    item[0] = SDES_CNAME;
    item[1] = 14;
    item[2..8].copy_from_slice(b"parkd-");
    for (i, d) in item[8..16].iter_mut().enumerate() {
        *d = b"0123456789abcdef"[(ssrc >> (28 - 4 * i) & 0xF) as usize];
    }
}

/// parkd's hold report: an SR without report blocks and its SDES CNAME (RFC 3550 §6.1: a compound starts with
/// an SR or RR and carries a CNAME).
pub fn write_report(info: &SenderInfo, out: &mut [u8; REPORT_LEN]) {
    header(out, 0, 0, PT_SR, 28);
    put32(out, 4, info.ssrc);
    put32(out, 8, (info.ntp >> 32) as u32);
    put32(out, 12, info.ntp as u32);
    put32(out, 16, info.rtp_ts);
    put32(out, 20, info.packets);
    put32(out, 24, info.octets);
    write_sdes(out, 28, info.ssrc);
}

/// parkd's report while its stream to a leg is paused (the phone holds parkd): an RR without report blocks
/// (parkd sends nothing, and tracks no reception statistics) and its SDES CNAME, so the phone still hears from
/// parkd (RFC 3550 §6: RTCP goes on while a participant does not send).
pub fn write_receiver_report(ssrc: u32, out: &mut [u8; RR_REPORT_LEN]) {
    header(out, 0, 0, PT_RR, 8);
    put32(out, 4, ssrc);
    write_sdes(out, 8, ssrc);
}

/// What [`translate`] needs of the two legs of a bridge: the reporter's (the leg the packet came from) and the
/// receiver's (the leg it is relayed to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The receiver's SSRC: the one stream it sees from parkd.
    pub out_ssrc: u32,
    /// parkd's packet and octet counts on that stream.
    pub packets: u32,
    pub octets: u32,
    /// The stream relayed to the receiver (the reporter's own): its source SSRC and timestamp offset.
    pub forward: Option<(u32, u32)>,
    /// The stream relayed to the reporter: parkd's SSRC toward the reporter, the source SSRC it carries (the
    /// receiver's own) and the sequence offset.
    pub back: Option<(u32, u32, u16)>,
}

/// Translates the (valid, plain) compound RTCP packet `buf[..len]` of one bridged leg for the other in place
/// (see the module doc) and returns its new length; `None` when nothing of it can be relayed (no SR or RR, an
/// invalid packet, or no room in `buf` for parkd's SDES).
pub fn translate(buf: &mut [u8], len: usize, t: &Translation) -> Option<usize> {
    let pkt = buf.get(..len)?;
    let report = parts(pkt)?.find(|p| p.pt == PT_SR || p.pt == PT_RR)?;
    let src = pkt.get(report.start..report.start + report.len)?;
    let mut out = [0u8; MAX_REPORT];
    let sender_ssrc = get32(src, 4);
    let info_len = if report.pt == PT_SR { 20 } else { 0 };
    let blocks_at = 8 + info_len;
    let mut w = 8;
    let mut pt = PT_RR;
    if report.pt == PT_SR {
        if let Some((_, ts_offset)) = t.forward.filter(|(s, _)| *s == sender_ssrc) {
            out[8..28].copy_from_slice(src.get(8..28)?);
            put32(&mut out, 16, get32(src, 16).wrapping_add(ts_offset));
            put32(&mut out, 20, t.packets);
            put32(&mut out, 24, t.octets);
            w = 28;
            pt = PT_SR;
        }
    }
    let mut kept = 0u8;
    for i in 0..report.count as usize {
        let at = blocks_at + i * BLOCK_LEN;
        let Some(block) = src.get(at..at + BLOCK_LEN) else { break };
        let Some((_, original, seq_offset)) = t.back.filter(|(r, _, _)| *r == get32(block, 0)) else { continue };
        let dst = out.get_mut(w..w + BLOCK_LEN)?;
        dst.copy_from_slice(block);
        put32(dst, 0, original);
        // The sequence number mapped back; the cycle count (high 16 bits) is kept as reported.
        let ext = get32(block, 8);
        put32(dst, 8, (ext & 0xFFFF_0000) | u32::from((ext as u16).wrapping_sub(seq_offset)));
        w += BLOCK_LEN;
        kept += 1;
    }
    header(&mut out, 0, kept, pt, w);
    put32(&mut out, 4, t.out_ssrc);
    let total = w + SDES_LEN;
    let dst = buf.get_mut(..total)?;
    dst[..w].copy_from_slice(&out[..w]);
    write_sdes(dst, w, t.out_ssrc);
    Some(total)
}

#[cfg(test)]
#[path = "rtcp_tests.rs"]
mod tests;
