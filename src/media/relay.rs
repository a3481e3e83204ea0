//! Bridging: rewriting a relayed packet in place so the receiver sees one continuous stream.
//!
//! Each leg has ONE outbound identity ([`OutStream`]). When audio from the peer is relayed to a
//! leg, its SSRC is replaced by the leg's, and sequence number and timestamp are mapped with
//! offsets computed at the first relayed packet (and again whenever the incoming SSRC changes) so
//! that they continue where the leg's hold music left off while keeping the source's own
//! seq/timestamp deltas (loss, reordering, silence suppression gaps — RFC 3550 §5.1, RFC 7667 §3.2.1.3 "RTP translator").
//! G.711 payloads are translated μ-law ↔ A-law in place when the two legs' codecs differ;
//! RFC 4733 telephone-events are passed with their payload type rewritten; anything else is dropped.

use super::g711::{transcode_in_place, ALAW_TO_ULAW, ULAW_TO_ALAW};
use super::rtp::{rewrite_header, OutStream, Pt, RtpInfo, Ssrc, TS_PER_FRAME};
use super::Codec;
use crate::time::Time;

/// Offsets mapping one incoming stream (source SSRC) onto a leg's outbound stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayMap {
    pub src_ssrc: Ssrc,
    pub seq_offset: u16,
    pub ts_offset: u32,
}

/// What an incoming payload type is, seen from the leg it arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadKind {
    /// G.711 audio in this law.
    Audio(Codec),
    /// RFC 4733 telephone-event.
    Event,
}

/// Classifies an incoming PT. Both static G.711 types are accepted whatever was negotiated
/// (translation covers a mismatch). A dynamic PT (96–127) is a telephone-event if it is the
/// leg's negotiated event PT, or if none is known for the leg. Everything else (CN 13, G.729 18,
/// G.722 9, ...) is `None`: dropped.
pub fn classify(pt: Pt, src_dtmf_pt: Option<Pt>) -> Option<PayloadKind> {
    if let Some(c) = Codec::from_payload_type(pt.get()) {
        return Some(PayloadKind::Audio(c));
    }
    match src_dtmf_pt {
        Some(ev) if ev == pt => Some(PayloadKind::Event),
        None if pt.is_dynamic() => Some(PayloadKind::Event),
        _ => None,
    }
}

/// The destination leg, as the relay needs it.
pub struct Destination<'a> {
    pub codec: Codec,
    pub dtmf_pt: Option<Pt>,
    pub out: &'a mut OutStream,
    pub map: &'a mut Option<RelayMap>,
}

/// Rewrites `pkt` (already validated into `info`) for `dst` and updates `dst`'s stream state.
/// `kind` comes from [`classify`]. Returns the packet length to send.
pub fn rewrite(pkt: &mut [u8], info: &RtpInfo, kind: PayloadKind, dst: Destination<'_>, now: Time) -> usize {
    let mut marker = info.marker;
    let map = match dst.map {
        Some(m) if m.src_ssrc == info.ssrc => *m,
        _ => {
            // First relayed packet, or the source switched SSRC: continue our timeline at `now`.
            // If nothing was sent yet at all, start right at the initial values.
            let first_ts = continue_ts(dst.out, now);
            let m = RelayMap {
                src_ssrc: info.ssrc,
                seq_offset: dst.out.next_seq.since(info.seq),
                ts_offset: first_ts.wrapping_sub(info.ts),
            };
            *dst.map = Some(m);
            marker = true; // new talkspurt on this stream (RFC 3551 §4.1)
            m
        }
    };
    if dst.out.take_marker() {
        marker = true;
    }
    let seq = info.seq.wrapping_add(map.seq_offset);
    let ts = info.ts.wrapping_add(map.ts_offset);
    let pt = match kind {
        PayloadKind::Audio(src_codec) => {
            if src_codec != dst.codec {
                let table = match dst.codec {
                    Codec::Pcma => &ULAW_TO_ALAW,
                    Codec::Pcmu => &ALAW_TO_ULAW,
                };
                if let Some(p) = pkt.get_mut(info.payload_start..info.payload_end) {
                    transcode_in_place(p, table);
                }
            }
            Pt::from(dst.codec)
        }
        PayloadKind::Event => dst.dtmf_pt.unwrap_or(info.pt),
    };
    rewrite_header(pkt, pt, marker, seq, ts, dst.out.ssrc);
    dst.out.record_relayed(seq, ts, now);
    pkt.len()
}

/// The timestamp that continues `out` at `now`: its timeline advanced by the wall time since its
/// last packet, and at least one frame after that packet (a rebase never repeats a timestamp).
/// Before any packet, the stream's random initial timestamp.
fn continue_ts(out: &OutStream, now: Time) -> u32 {
    if out.last_at.is_none() {
        return out.last_ts;
    }
    let t = out.ts_at(now);
    if t.wrapping_sub(out.last_ts) < TS_PER_FRAME {
        out.last_ts.wrapping_add(TS_PER_FRAME)
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{parse, write_header, SeqNo};
    use rand::{rngs::SmallRng, SeedableRng};

    fn pt(v: u8) -> Pt {
        Pt::new(v).unwrap()
    }

    #[test]
    fn classify_pts() {
        assert_eq!(classify(pt(0), None), Some(PayloadKind::Audio(Codec::Pcmu)));
        assert_eq!(classify(pt(8), Some(pt(101))), Some(PayloadKind::Audio(Codec::Pcma)));
        assert_eq!(classify(pt(101), Some(pt(101))), Some(PayloadKind::Event));
        assert_eq!(classify(pt(101), None), Some(PayloadKind::Event));
        assert_eq!(classify(pt(96), Some(pt(101))), None);
        assert_eq!(classify(pt(13), None), None, "comfort noise is dropped");
        assert_eq!(classify(pt(18), None), None);
    }

    #[test]
    fn rewrite_translates_and_maps_rfc4733_pt() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut out = OutStream::new(&mut rng);
        let mut map = None;
        let mut pkt = write_header(pt(0), false, SeqNo(500), 1000, Ssrc(77)).to_vec();
        pkt.extend_from_slice(&[0xFF; 160]);
        let info = parse(&pkt).unwrap();
        let dst = Destination { codec: Codec::Pcma, dtmf_pt: Some(pt(96)), out: &mut out, map: &mut map };
        let n = rewrite(&mut pkt, &info, PayloadKind::Audio(Codec::Pcmu), dst, Time::from_secs(1));
        assert_eq!(n, 172);
        let got = parse(&pkt).unwrap();
        assert_eq!(got.pt, pt(8));
        assert!(got.marker);
        assert_eq!(got.ssrc, out.ssrc);
        assert!(pkt[12..].iter().all(|b| *b == 0xD5), "μ-law silence became A-law silence");

        let mut ev = write_header(pt(101), true, SeqNo(501), 1000, Ssrc(77)).to_vec();
        ev.extend_from_slice(&[1, 0x0A, 0, 160]);
        let info = parse(&ev).unwrap();
        let dst = Destination { codec: Codec::Pcma, dtmf_pt: Some(pt(96)), out: &mut out, map: &mut map };
        rewrite(&mut ev, &info, PayloadKind::Event, dst, Time::from_secs(1));
        let got_ev = parse(&ev).unwrap();
        assert_eq!(got_ev.pt, pt(96));
        assert_eq!(got_ev.seq, got.seq.wrapping_add(1));
        assert_eq!(got_ev.ts, got.ts, "event keeps the source's timestamp delta (0)");
        assert_eq!(&ev[12..], &[1, 0x0A, 0, 160], "event payload untouched");
    }
}
