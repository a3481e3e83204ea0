//! RTP (RFC 3550) headers, the typed values they carry ([`Ssrc`], [`Pt`], [`SeqNo`]: what crosses from
//! the packet reader to the relay, the plane and the hold-music writer), and the outbound stream identity of
//! a leg.
//!
//! Headers are written with rtp-rs's [`RtpPacketBuilder::build_into`] *without* a payload: the
//! builder then writes exactly the 12-byte fixed header, and the payload (a shared hold frame)
//! is sent alongside it with scatter/gather io — never copied. Incoming packets are validated
//! with rtp-rs's [`RtpReader`].

use std::fmt;

use rand::rngs::SmallRng;
use rand::Rng;
use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};

use super::Codec;
use crate::time::Time;

/// A synchronization source identifier (RFC 3550 §5.1): names one RTP stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

/// An RTP payload type: 7 bits (RFC 3550 §5.1). Static G.711 types come from [`Codec`]; dynamic ones
/// (96–127, e.g. RFC 4733 telephone-event) are what the SDP negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pt(u8);

impl Pt {
    /// `v` when it fits 7 bits.
    pub const fn new(v: u8) -> Option<Pt> {
        if v <= 0x7F {
            Some(Pt(v))
        } else {
            None
        }
    }
    /// The number on the wire.
    pub const fn get(self) -> u8 {
        self.0
    }
    /// In the dynamic range 96–127 (RFC 3551 §3).
    pub const fn is_dynamic(self) -> bool {
        self.0 >= 96
    }
}

impl From<Codec> for Pt {
    fn from(c: Codec) -> Pt {
        Pt(c.payload_type())
    }
}

impl fmt::Display for Pt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An RTP sequence number: 16 bits that wrap (RFC 3550 §5.1). Compared in wrap-around order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqNo(pub u16);

impl SeqNo {
    /// `n` numbers later, wrapping.
    pub const fn wrapping_add(self, n: u16) -> SeqNo {
        SeqNo(self.0.wrapping_add(n))
    }
    /// How many numbers `self` is after `earlier`, modulo 2^16.
    pub const fn since(self, earlier: SeqNo) -> u16 {
        self.0.wrapping_sub(earlier.0)
    }
    /// At or after `other` in wrap-around order: less than half the number space ahead (RFC 3550 A.1).
    pub const fn is_at_or_after(self, other: SeqNo) -> bool {
        self.since(other) < 0x8000
    }
}

/// Length of the fixed RTP header (RFC 3550 §5.1) that parkd writes.
pub const RTP_HEADER_LEN: usize = 12;
/// RTP timestamp units per 20 ms G.711 frame.
pub const TS_PER_FRAME: u32 = 160;
/// RTP timestamp units per millisecond at 8 kHz.
pub const TS_PER_MS: u64 = 8;

/// Writes a 12-byte RTP v2 header (no CSRC, no extension, no padding).
pub fn write_header(pt: Pt, marker: bool, seq: SeqNo, ts: u32, ssrc: Ssrc) -> [u8; RTP_HEADER_LEN] {
    let mut h = [0u8; RTP_HEADER_LEN];
    let built = RtpPacketBuilder::new()
        .payload_type(pt.get())
        .marked(marker)
        .sequence(Seq::from(seq.0))
        .timestamp(ts)
        .ssrc(ssrc.0)
        .build_into(&mut h);
    // Cannot fail: a PT has 7 bits and the buffer holds exactly the header.
    debug_assert_eq!(built, Ok(RTP_HEADER_LEN));
    h
}

/// The fields of an incoming packet that the relay needs, read once by [`parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpInfo {
    pub pt: Pt,
    pub marker: bool,
    pub seq: SeqNo,
    pub ts: u32,
    pub ssrc: Ssrc,
    /// Byte range of the payload (excluding header extension and padding).
    pub payload_start: usize,
    pub payload_end: usize,
}

/// Validates an RTP v2 packet (≥ 12 bytes, consistent CSRC/extension/padding lengths).
pub fn parse(pkt: &[u8]) -> Option<RtpInfo> {
    let r = RtpReader::new(pkt).ok()?;
    let payload_start = r.payload_offset();
    let payload_end = payload_start + r.payload().len();
    Some(RtpInfo {
        pt: Pt(r.payload_type() & 0x7F),
        marker: r.mark(),
        seq: SeqNo(u16::from(r.sequence_number())),
        ts: r.timestamp(),
        ssrc: Ssrc(r.ssrc()),
        payload_start,
        payload_end,
    })
}

/// Rewrites marker/PT, sequence number, timestamp and SSRC of a packet in place (bytes 1..12),
/// keeping byte 0 (version, padding, extension, CSRC count) and everything after the header.
pub fn rewrite_header(pkt: &mut [u8], pt: Pt, marker: bool, seq: SeqNo, ts: u32, ssrc: Ssrc) {
    let h = write_header(pt, marker, seq, ts, ssrc);
    if let (Some(dst), Some(src)) = (pkt.get_mut(1..RTP_HEADER_LEN), h.get(1..RTP_HEADER_LEN)) {
        dst.copy_from_slice(src);
    }
}

/// The largest first sequence number of a stream parkd starts ([`initial_seq`]).
pub const MAX_INITIAL_SEQ: u16 = (1 << 15) - 1;

/// The first sequence number of a stream parkd starts: random (RFC 3550 §5.1) and below 2^15, as libwebrtc does.
/// An SRTP receiver learns the rollover counter from the sequence numbers it sees (RFC 3711 §3.3.1, starting from
/// ROC 0). A phone that misses the first packets of a stream whose sequence number wrapped in between (it took
/// parkd's 200 a little later than the music started, say) would guess ROC 0 where parkd used 1, and every packet
/// of the call would then fail authentication: silence. Starting below 2^15 puts the first wrap over 32,768
/// packets (11 minutes of 20 ms frames) away. Every new stream takes it: the media plane's own
/// ([`OutStream::new`]) and the journaled ones the core chooses (`core::persist`).
pub fn initial_seq(rng: &mut impl Rng) -> u16 {
    rng.gen_range(0..=MAX_INITIAL_SEQ)
}

/// One leg's outbound stream identity (RFC 3550 §5.1): one SSRC, one sequence space and one
/// timeline, continued across hold music and relayed audio so the receiver sees one stream.
#[derive(Clone, Debug)]
pub struct OutStream {
    /// Our SSRC towards this leg.
    pub ssrc: Ssrc,
    /// Sequence number of the next packet.
    pub next_seq: SeqNo,
    /// Timestamp of the last packet sent (or the random initial timestamp).
    pub last_ts: u32,
    /// Schedule time of the last packet sent, `None` before the first one.
    pub last_at: Option<Time>,
    /// Set the marker bit on the next packet (start of stream / new talkspurt after a switch).
    pub marker_pending: bool,
}

impl OutStream {
    /// A fresh stream: random SSRC, sequence number ([`initial_seq`]) and timestamp (RFC 3550 §5.1), marker
    /// pending.
    pub fn new(rng: &mut SmallRng) -> OutStream {
        OutStream { ssrc: Ssrc(rng.gen()), next_seq: SeqNo(initial_seq(rng)), last_ts: rng.gen(), last_at: None, marker_pending: true }
    }

    /// The timestamp that continues this stream's timeline at `at` (8 units per ms since the last
    /// packet; the initial timestamp before any packet).
    pub fn ts_at(&self, at: Time) -> u32 {
        match self.last_at {
            None => self.last_ts,
            Some(last) => {
                let elapsed_ts = at.saturating_since(last).as_micros() as u64 * TS_PER_MS / 1000;
                self.last_ts.wrapping_add(elapsed_ts as u32)
            }
        }
    }

    /// Takes the pending marker.
    pub fn take_marker(&mut self) -> bool {
        std::mem::take(&mut self.marker_pending)
    }

    /// Header for our own next packet (hold music) with timestamp `ts` scheduled at `at`.
    pub fn next_header(&mut self, pt: Pt, ts: u32, at: Time) -> [u8; RTP_HEADER_LEN] {
        let marker = self.take_marker();
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        self.last_ts = ts;
        self.last_at = Some(at);
        write_header(pt, marker, seq, ts, self.ssrc)
    }

    /// Records a relayed packet `seq`/`ts` sent at `at`, advancing only if it is newer
    /// (RFC 3550 Appendix A.1 style wrap-around comparison), so that a later switch back to
    /// hold music continues after the highest sequence number sent.
    pub fn record_relayed(&mut self, seq: SeqNo, ts: u32, at: Time) {
        if seq.is_at_or_after(self.next_seq) {
            self.next_seq = seq.wrapping_add(1);
        }
        if ts.wrapping_sub(self.last_ts) < 0x8000_0000 {
            self.last_ts = ts;
            self.last_at = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn pt(v: u8) -> Pt {
        Pt::new(v).unwrap()
    }

    /// A stream's first sequence number is random below 2^15: no stream wraps within its first 32,768
    /// packets, so an SRTP phone that missed a stream's first packets still guesses ROC 0 (see
    /// [`OutStream::new`]). Over 4,000 streams about 12 would have started within 200 packets of a wrap with
    /// a sequence number drawn from all of 0..=65535.
    #[test]
    fn first_sequence_number_is_random_below_2_15() {
        let mut rng = SmallRng::seed_from_u64(7);
        let firsts: Vec<u16> = (0..4000).map(|_| OutStream::new(&mut rng).next_seq.0).collect();
        assert!(firsts.iter().all(|&s| s <= MAX_INITIAL_SEQ), "a stream starts at or above 2^15");
        // Still random over the whole half: both ends are reached and most values are distinct.
        assert!(firsts.iter().any(|&s| s < 1000) && firsts.iter().any(|&s| s > MAX_INITIAL_SEQ - 1000));
        let distinct: std::collections::HashSet<u16> = firsts.iter().copied().collect();
        assert!(distinct.len() > 3700, "{} distinct", distinct.len());
    }

    #[test]
    fn header_layout_rfc3550_5_1() {
        let h = write_header(pt(8), true, SeqNo(0x1234), 0xDEADBEEF, Ssrc(0x01020304));
        assert_eq!(h, [0x80, 0x88, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4]);
        let i = parse(&h).unwrap();
        assert_eq!((i.pt, i.marker, i.seq, i.ts, i.ssrc), (pt(8), true, SeqNo(0x1234), 0xDEADBEEF, Ssrc(0x01020304)));
        assert_eq!((i.payload_start, i.payload_end), (12, 12));
    }

    #[test]
    fn parse_rejects_short_and_non_v2() {
        assert!(parse(&[0x80; 11]).is_none());
        let mut h = write_header(Pt::from(Codec::Pcmu), false, SeqNo(1), 2, Ssrc(3));
        h[0] = 0x40; // version 1
        assert!(parse(&h).is_none());
        // CSRC count 15 but no room for them.
        let mut h = write_header(Pt::from(Codec::Pcmu), false, SeqNo(1), 2, Ssrc(3));
        h[0] = 0x8F;
        assert!(parse(&h).is_none());
        // Padding flag with a pad length larger than the packet.
        let mut p = write_header(Pt::from(Codec::Pcmu), false, SeqNo(1), 2, Ssrc(3)).to_vec();
        p[0] |= 0x20;
        p.push(200);
        assert!(parse(&p).is_none());
    }

    #[test]
    fn rewrite_keeps_byte0_and_payload() {
        let mut p = write_header(Pt::from(Codec::Pcmu), false, SeqNo(1), 2, Ssrc(3)).to_vec();
        p[0] |= 0x20; // padding
        p.extend_from_slice(&[9, 9, 1]);
        rewrite_header(&mut p, pt(101), true, SeqNo(7), 8, Ssrc(9));
        assert_eq!(p[0], 0xA0);
        let i = parse(&p).unwrap();
        assert_eq!((i.pt, i.marker, i.seq, i.ts, i.ssrc), (pt(101), true, SeqNo(7), 8, Ssrc(9)));
        assert_eq!(&p[i.payload_start..i.payload_end], &[9, 9]);
    }

    #[test]
    fn out_stream_continues_timeline() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut s = OutStream::new(&mut rng);
        let t0 = Time::from_secs(100);
        assert_eq!(s.ts_at(t0), s.last_ts);
        let ts0 = s.last_ts;
        let h = s.next_header(Pt::from(Codec::Pcmu), ts0, t0);
        assert_eq!(h[1] & 0x80, 0x80, "marker on first packet");
        assert_eq!(s.ts_at(t0 + std::time::Duration::from_millis(20)), ts0.wrapping_add(160));
        let seq_before = s.next_seq;
        s.record_relayed(SeqNo(seq_before.0.wrapping_sub(5)), ts0, t0); // an old packet does not rewind
        assert_eq!(s.next_seq, seq_before);
        s.record_relayed(seq_before.wrapping_add(3), ts0.wrapping_add(480), t0);
        assert_eq!(s.next_seq, seq_before.wrapping_add(4));
        assert_eq!(s.last_ts, ts0.wrapping_add(480));
        let h2 = s.next_header(Pt::from(Codec::Pcmu), ts0.wrapping_add(640), t0);
        assert_eq!(h2[1] & 0x80, 0, "no marker after the first");
    }

    #[test]
    fn typed_values_keep_their_wire_rules() {
        assert_eq!((Pt::new(127).map(Pt::get), Pt::new(128)), (Some(127), None), "7 bits");
        assert_eq!((Pt::from(Codec::Pcma), Pt::from(Codec::Pcma).to_string()), (pt(8), "8".to_string()));
        assert!(pt(101).is_dynamic() && !pt(8).is_dynamic());
        assert_eq!(SeqNo(0xFFFF).wrapping_add(2), SeqNo(1));
        assert_eq!(SeqNo(1).since(SeqNo(0xFFFF)), 2);
        assert!(SeqNo(1).is_at_or_after(SeqNo(0xFFF0)) && !SeqNo(0xFFF0).is_at_or_after(SeqNo(1)));
        assert!(SeqNo(5).is_at_or_after(SeqNo(5)));
    }
}
