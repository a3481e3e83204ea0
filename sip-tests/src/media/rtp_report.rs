//! [`StreamReport`]: what a sequence of received RTP packets says about the stream that sent them.

use crate::media::rtp_endpoint::ReceivedPacket;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Summary of one stream as seen by a receiver.
#[derive(Clone, Debug, Default)]
pub struct StreamReport {
    pub name: String,
    pub count: usize,
    /// Packets per SSRC.
    pub ssrcs: BTreeMap<u32, usize>,
    pub sources: BTreeSet<SocketAddr>,
    pub payload_types: BTreeSet<u8>,
    pub lengths: BTreeSet<usize>,
    /// Consecutive pairs (same SSRC) whose sequence number did not advance by exactly 1.
    pub seq_breaks: usize,
    /// Consecutive pairs (same SSRC) whose timestamp did not advance by exactly 160.
    pub ts_breaks: usize,
    /// Consecutive pairs (same SSRC) whose timestamp advanced by a positive multiple of 160 other than 160
    /// (a sender that skipped frames after a stall): counted inside `ts_breaks` too.
    pub ts_skips: usize,
    /// From the first to the last arrival.
    pub span: Duration,
    /// Mean inter-arrival time.
    pub mean_gap: Duration,
    /// Longest inter-arrival time.
    pub max_gap: Duration,
    /// Packets per second over `span`.
    pub rate: f64,
}

impl StreamReport {
    /// Builds the report (packets in arrival order).
    pub fn of(name: &str, packets: &[ReceivedPacket]) -> StreamReport {
        let mut r = StreamReport { name: name.to_string(), count: packets.len(), ..Default::default() };
        let mut last_by_ssrc: BTreeMap<u32, (u16, u32)> = BTreeMap::new();
        for p in packets {
            *r.ssrcs.entry(p.ssrc).or_default() += 1;
            r.sources.insert(p.from);
            r.payload_types.insert(p.payload_type);
            r.lengths.insert(p.len);
            if let Some((seq, ts)) = last_by_ssrc.insert(p.ssrc, (p.seq, p.timestamp)) {
                if p.seq != seq.wrapping_add(1) {
                    r.seq_breaks += 1;
                }
                let dts = p.timestamp.wrapping_sub(ts);
                if dts != 160 {
                    r.ts_breaks += 1;
                    if dts % 160 == 0 && dts > 0 && dts < 160 * 500 {
                        r.ts_skips += 1;
                    }
                }
            }
        }
        if let (Some(first), Some(last)) = (packets.first(), packets.last()) {
            r.span = last.at.duration_since(first.at);
            for pair in packets.windows(2) {
                if let [a, b] = pair {
                    r.max_gap = r.max_gap.max(b.at.duration_since(a.at));
                }
            }
            if packets.len() > 1 {
                r.mean_gap = r.span / (packets.len() as u32 - 1);
                let secs = r.span.as_secs_f64();
                if secs > 0.0 {
                    r.rate = (packets.len() - 1) as f64 / secs;
                }
            }
        }
        r
    }

    /// Asserts what every 20 ms G.711 stream parkd sends must look like: at least `min_count` packets, one
    /// SSRC, one source address, PT 0 or 8, 172-byte datagrams, sequence +1 always, timestamp +160 almost
    /// always (whole-frame skips only: two in any sample, at most 5 % of the steps), and a packet rate between 25 and 75 per second
    /// (a sanity bound, not a timing test).
    pub fn assert_g711_20ms_stream(&self, what: &str, min_count: usize) {
        let fail = |why: String| panic!("{what}: {why}\n{self}");
        if self.count < min_count {
            fail(format!("only {} packets, expected at least {min_count}", self.count));
        }
        if self.ssrcs.len() != 1 {
            fail(format!("{} SSRCs, expected exactly one", self.ssrcs.len()));
        }
        if self.sources.len() != 1 {
            fail(format!("packets came from {} source addresses, expected one", self.sources.len()));
        }
        if !self.payload_types.iter().all(|&pt| pt == 0 || pt == 8) || self.payload_types.len() != 1 {
            fail(format!("payload types {:?}, expected one of PCMU (0) / PCMA (8)", self.payload_types));
        }
        if self.lengths.iter().any(|&l| l != 172) {
            fail(format!("datagram lengths {:?}, expected 172 (12-byte header + 160 bytes)", self.lengths));
        }
        if self.seq_breaks > 0 {
            fail(format!("{} sequence-number breaks", self.seq_breaks));
        }
        let steps = self.count.saturating_sub(1).max(1);
        // Whole-frame skips are the pacer dropping a frame it served late (a loaded machine): two are allowed in
        // any sample (a CI machine running several parkd at once showed two in a short sample), and 5 % of the
        // steps in a long one. A step that is not a whole frame is always a fault.
        if self.ts_breaks != self.ts_skips || self.ts_skips > (steps / 20).max(2) {
            fail(format!("{} timestamp steps other than +160 ({} frame skips) out of {steps}", self.ts_breaks, self.ts_skips));
        }
        if self.count > 20 && !(25.0..=75.0).contains(&self.rate) {
            fail(format!("rate {:.1} packets/s, expected about 50", self.rate));
        }
    }
}

impl fmt::Display for StreamReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} packets, SSRCs {}, from {:?}, PT {:?}, lengths {:?}, seq breaks {}, ts breaks {} ({} skips), \
             span {:?}, rate {:.1}/s, mean gap {:?}, max gap {:?}",
            self.name,
            self.count,
            self.ssrcs.iter().map(|(s, n)| format!("{s:08x}x{n}")).collect::<Vec<_>>().join(","),
            self.sources,
            self.payload_types,
            self.lengths,
            self.seq_breaks,
            self.ts_breaks,
            self.ts_skips,
            self.span,
            self.rate,
            self.mean_gap,
            self.max_gap
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp_endpoint::{classify, pattern_payload, PayloadClass};
    use std::time::Instant;

    fn packet(at: Instant, ssrc: u32, seq: u16, timestamp: u32) -> ReceivedPacket {
        ReceivedPacket {
            at,
            from: SocketAddr::from(([127, 0, 0, 1], 20000)),
            ssrc,
            seq,
            timestamp,
            payload_type: 0,
            marker: false,
            len: 172,
            class: PayloadClass::Other,
            payload: Vec::new(),
        }
    }

    fn stream(n: u16, ssrc_of: impl Fn(u16) -> u32, ts_of: impl Fn(u16) -> u32) -> Vec<ReceivedPacket> {
        let t0 = Instant::now();
        (0..n).map(|i| packet(t0 + Duration::from_millis(20 * u64::from(i)), ssrc_of(i), 65530u16.wrapping_add(i), ts_of(i))).collect()
    }

    #[test]
    fn clean_stream_passes_across_seq_wrap() {
        let r = StreamReport::of("t", &stream(100, |_| 7, |i| u32::from(i) * 160));
        assert_eq!((r.count, r.seq_breaks, r.ts_breaks, r.ssrcs.len()), (100, 0, 0, 1));
        assert!((r.rate - 50.0).abs() < 0.5, "{r}");
        r.assert_g711_20ms_stream("clean", 100);
    }

    #[test]
    #[should_panic(expected = "SSRCs")]
    fn two_ssrcs_fail() {
        StreamReport::of("t", &stream(100, |i| if i < 50 { 1 } else { 2 }, |i| u32::from(i) * 160)).assert_g711_20ms_stream("x", 10);
    }

    #[test]
    #[should_panic(expected = "timestamp")]
    fn timestamp_jumps_fail() {
        StreamReport::of("t", &stream(100, |_| 1, |i| u32::from(i) * 480)).assert_g711_20ms_stream("x", 10);
    }

    /// Two whole-frame skips pass in a short sample (a late pacer on a loaded machine); a third fails.
    #[test]
    fn two_frame_skips_pass_and_three_fail() {
        let skip_at = |n: &'static [u16]| move |i: u16| (u32::from(i) + n.iter().filter(|&&k| i >= k).count() as u32) * 160;
        StreamReport::of("t", &stream(30, |_| 1, skip_at(&[10, 20]))).assert_g711_20ms_stream("x", 10);
        let three = std::panic::catch_unwind(|| StreamReport::of("t", &stream(30, |_| 1, skip_at(&[5, 10, 20]))).assert_g711_20ms_stream("x", 10));
        assert!(three.is_err(), "three skips in 30 packets fail");
    }

    #[test]
    fn patterns_are_recognized_and_music_is_not() {
        assert_eq!(classify(&pattern_payload(0xB0)), PayloadClass::Pattern(0xB0));
        let music: Vec<u8> = (0..160u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(classify(&music), PayloadClass::Other);
        assert_eq!(classify(&[0xFF; 160]), PayloadClass::Other);
        assert_eq!(classify(&[]), PayloadClass::Other);
    }
}
