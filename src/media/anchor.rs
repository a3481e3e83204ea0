//! Where a leg's outbound RTP stream stands, as plain data the core can journal (issue 17): a stream anchor.
//!
//! With journaling on, the core picks each leg's stream identity (SSRC, first sequence number, first
//! timestamp) itself and hands it to the media plane ([`super::MediaCommand::Stream`]) before the leg starts
//! sending. It keeps an anchor, `(ssrc, seq, ts, at, pace)`: the stream's position at the time `at` of the last
//! change of what the leg does (hold starts, pauses, resumes, becomes a bridge). Hold music sends exactly one
//! packet per 20 ms, so the anchor predicts the stream at any later time without the media plane reporting
//! anything: `seq + elapsed / 20 ms`, `ts + elapsed · 8 kHz`. After a restart the core resumes the stream from
//! the anchor ([`StreamAnchor::resume`]): same SSRC, the sequence continuing past every packet the old process
//! can have sent (a gap the receiver counts as loss while parkd was down), the timestamp advanced by the time
//! that passed, marker set. Nothing is journaled per packet.
//!
//! A relayed stream (a bridge) is paced by the phones, not by parkd: its anchor predicts one packet per 20 ms
//! too, and the resume adds [`RELAY_MARGIN`] packets so that the sequence never goes backwards even if a peer
//! sent faster than that (10 ms packets, a burst after a jitter buffer).

use crate::time::Time;

/// Packets per second of a 20 ms stream.
pub const PACKETS_PER_SEC: u64 = 50;
/// RTP timestamp units per millisecond (G.711, 8 kHz).
pub const TS_PER_MS: u64 = 8;
/// Extra sequence numbers skipped when a relayed stream resumes (RFC 3550 A.1 treats a jump below 3000 as loss).
pub const RELAY_MARGIN: u16 = 500;

/// How the stream moves after its anchor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Pace {
    /// Hold music: one packet every 20 ms, exactly.
    Hold,
    /// Nothing is sent (the peer holds parkd: sendonly/inactive); only the timeline moves on.
    Paused,
    /// Relayed audio of a bridge: about one packet every 20 ms, paced by the peer.
    Relay,
}

/// A leg's outbound stream at time `at` (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamAnchor {
    pub ssrc: u32,
    /// The sequence number of the stream's next packet at `at`.
    pub seq: u16,
    /// The timestamp of a packet sent at `at`.
    pub ts: u32,
    pub at: Time,
    pub pace: Pace,
}

impl StreamAnchor {
    /// A new stream starting at `at`.
    pub fn new(ssrc: u32, seq: u16, ts: u32, at: Time, pace: Pace) -> StreamAnchor {
        StreamAnchor { ssrc, seq, ts, at, pace }
    }

    /// The predicted `(next seq, ts)` at `now` (never before `at`).
    pub fn position(&self, now: Time) -> (u16, u32) {
        let elapsed_ms = now.saturating_since(self.at).as_millis() as u64;
        let ts = self.ts.wrapping_add((elapsed_ms * TS_PER_MS) as u32);
        (self.seq.wrapping_add(self.packets(now) as u16), ts)
    }

    /// The packets predicted between `at` and `now` (not wrapped to 16 bits).
    fn packets(&self, now: Time) -> u64 {
        let elapsed_ms = now.saturating_since(self.at).as_millis() as u64;
        match self.pace {
            Pace::Paused => 0,
            Pace::Hold | Pace::Relay => elapsed_ms.div_ceil(1000 / PACKETS_PER_SEC),
        }
    }

    /// The extended sequence number (the SRTP index, RFC 3711 §3.3.1: ROC · 2^16 + seq) of `next.seq`, when
    /// `index` is that of this anchor's `seq` and `next` is this stream re-anchored later ([`Self::moved`],
    /// [`Self::resume`]): the packets predicted up to `next.at` (every wrap counted, however long it was), plus
    /// the small offset of `next.seq` from the prediction (a resume's margin). Another SSRC is a new stream,
    /// which starts at ROC 0.
    pub fn index_of(&self, index: u64, next: &StreamAnchor) -> u64 {
        if next.ssrc != self.ssrc {
            return next.seq as u64;
        }
        let packets = self.packets(next.at);
        let offset = next.seq.wrapping_sub(self.seq.wrapping_add(packets as u16)) as i16;
        (index + packets).saturating_add_signed(offset as i64)
    }

    /// The same stream re-anchored at `now` with a new pace (hold ↔ paused ↔ relay).
    pub fn moved(&self, now: Time, pace: Pace) -> StreamAnchor {
        let (seq, ts) = self.position(now.max(self.at));
        StreamAnchor { ssrc: self.ssrc, seq, ts, at: now.max(self.at), pace }
    }

    /// Where the stream resumes after a restart at `now`: the next sequence number after every packet the old
    /// process can have sent (plus [`RELAY_MARGIN`] for a relayed stream), the timestamp of `now`.
    pub fn resume(&self, now: Time) -> StreamAnchor {
        let (seq, ts) = self.position(now);
        // One more than the prediction: the old process may have sent the packet of the current 20 ms slot.
        let margin = match self.pace {
            Pace::Relay => RELAY_MARGIN,
            Pace::Hold | Pace::Paused => 1,
        };
        StreamAnchor { ssrc: self.ssrc, seq: seq.wrapping_add(margin), ts, at: now.max(self.at), pace: self.pace }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hold_advances_one_packet_per_20_ms_and_eight_ts_per_ms() {
        let t0 = Time::from_secs(1_000);
        let a = StreamAnchor::new(7, 65_530, 4_294_967_000, t0, Pace::Hold);
        assert_eq!(a.position(t0), (65_530, 4_294_967_000));
        let (seq, ts) = a.position(t0 + Duration::from_millis(200));
        assert_eq!((seq, ts), (65_530u16.wrapping_add(10), 4_294_967_000u32.wrapping_add(1_600)), "wraps");
        let r = a.resume(t0 + Duration::from_secs(3));
        assert_eq!((r.ssrc, r.seq), (7, 65_530u16.wrapping_add(151)));
        assert_eq!(a.resume(t0 - Duration::from_secs(1)).seq, 65_531, "a clock behind the anchor never goes back");
    }

    #[test]
    fn the_srtp_index_follows_every_wrap_between_anchors() {
        let t0 = Time::from_secs(1_000);
        let a = StreamAnchor::new(7, 65_000, 0, t0, Pace::Hold);
        // 30 minutes of hold: 90,000 packets, more than a whole sequence space.
        let later = a.moved(t0 + Duration::from_secs(1_800), Pace::Paused);
        let i = a.index_of(65_000, &later);
        assert_eq!(i, 65_000 + 90_000);
        assert_eq!(i as u16, later.seq);
        // A restart resumes one packet further: the index includes the margin, and the ROC is 2.
        let r = later.resume(t0 + Duration::from_secs(2_000));
        assert_eq!(later.index_of(i, &r), i + 1);
        let relay = StreamAnchor::new(7, 65_530, 0, t0, Pace::Relay);
        let rr = relay.resume(t0 + Duration::from_millis(100));
        assert_eq!(relay.index_of(65_530, &rr), 65_530 + 5 + RELAY_MARGIN as u64, "crosses the wrap: ROC 1");
        assert_eq!(a.index_of(65_000, &StreamAnchor::new(8, 3, 0, t0, Pace::Hold)), 3, "a new SSRC starts over");
    }

    #[test]
    fn a_paused_stream_keeps_its_sequence_and_a_relayed_one_adds_a_margin() {
        let t0 = Time::from_secs(1_000);
        let hold = StreamAnchor::new(1, 100, 0, t0, Pace::Hold);
        let paused = hold.moved(t0 + Duration::from_secs(1), Pace::Paused);
        assert_eq!((paused.seq, paused.ts), (150, 8_000));
        assert_eq!(paused.position(t0 + Duration::from_secs(11)), (150, 88_000));
        let relay = paused.moved(t0 + Duration::from_secs(11), Pace::Relay);
        assert_eq!(relay.resume(t0 + Duration::from_secs(12)).seq, 150 + 50 + RELAY_MARGIN);
    }
}
