//! What a phone hears: every RTP packet it receives, classified, and checks on the stream.
//!
//! Test phones talk in *marked frames* ([`voice_frame`]): a 160-byte PCMU payload that starts with
//! `SIMV`, the talker's id and a frame counter. parkd's hold music is recognised by comparing the
//! payload with the frames of the built-in loop (the media plane sends refcounted slices of it). So
//! a sink can tell music from the other party's audio, and which party, even after parkd translated
//! μ-law to A-law.
//!
//! The checks follow RFC 3550: within one SSRC, sequence numbers are extended across wrap-around;
//! consecutive packets (in sequence order) must advance the timestamp by 160 per sequence step
//! unless the later one carries the marker (a new talkspurt: hold → bridge, bridge → hold); gaps are
//! counted as lost, late arrivals as reordered, repeats as duplicates.

use crate::media::g711::{transcode_in_place, ALAW_TO_ULAW, ULAW_TO_ALAW};
use crate::media::rtp::{self, TS_PER_FRAME};
use crate::media::{Codec, HoldMusic};
use crate::time::Time;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::OnceLock;

/// Bytes of one 20 ms G.711 frame.
pub const FRAME: usize = 160;
const MAGIC: &[u8; 4] = b"SIMV";

/// The payload a test phone sends as its `n`-th frame (PCMU): `SIMV`, talker, counter, then μ-law
/// silence.
pub fn voice_frame(talker: u8, n: u32) -> [u8; FRAME] {
    let mut f = [0xFFu8; FRAME];
    f[..4].copy_from_slice(MAGIC);
    f[4] = talker;
    f[5..9].copy_from_slice(&n.to_be_bytes());
    f
}

/// What a received payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sound {
    /// Frame `frame` of the built-in hold music loop.
    Music { frame: usize },
    /// Frame `n` of test phone `talker`'s voice (`translated`: it arrived in the other G.711 law).
    Voice { talker: u8, n: u32, translated: bool },
    /// Anything else (spoken prompts, telephone-events, silence).
    Other,
}

/// What kind of sound, without positions (for runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Music,
    Voice(u8),
    Other,
}

impl Sound {
    pub fn kind(self) -> Kind {
        match self {
            Sound::Music { .. } => Kind::Music,
            Sound::Voice { talker, .. } => Kind::Voice(talker),
            Sound::Other => Kind::Other,
        }
    }
}

/// One received packet.
#[derive(Clone, Debug)]
pub struct Heard {
    pub at: Time,
    pub from: SocketAddr,
    pub ssrc: u32,
    pub seq: u16,
    /// `seq` extended across wrap-around within its SSRC (RFC 3550 A.1).
    pub ext_seq: u64,
    pub ts: u32,
    pub marker: bool,
    pub pt: u8,
    pub sound: Sound,
}

/// The built-in hold music, synthesized once per test process (it takes a while) and shared.
pub fn builtin_music() -> HoldMusic {
    static MUSIC: OnceLock<HoldMusic> = OnceLock::new();
    MUSIC.get_or_init(HoldMusic::builtin).clone()
}

/// The built-in music's frames in both laws → frame index.
fn music_index() -> &'static HashMap<Vec<u8>, usize> {
    static INDEX: OnceLock<HashMap<Vec<u8>, usize>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let m = builtin_music();
        let mut idx = HashMap::new();
        for codec in [Codec::Pcmu, Codec::Pcma] {
            for i in 0..m.frames {
                idx.entry(m.frame(codec, i).to_vec()).or_insert(i);
            }
        }
        idx
    })
}

/// Classifies a payload (see the module doc).
pub fn classify(payload: &[u8]) -> Sound {
    if let Some(&frame) = music_index().get(payload) {
        return Sound::Music { frame };
    }
    let voice = |p: &[u8]| -> Option<(u8, u32)> {
        if p.len() != FRAME || &p[..4] != MAGIC {
            return None;
        }
        let (talker, n) = (p[4], u32::from_be_bytes([p[5], p[6], p[7], p[8]]));
        (p == voice_frame(talker, n).as_slice()).then_some((talker, n))
    };
    if let Some((talker, n)) = voice(payload) {
        return Sound::Voice { talker, n, translated: false };
    }
    // A-law on the wire: translate back, read the mark, and check the whole frame re-translates.
    let mut back = payload.to_vec();
    transcode_in_place(&mut back, &ALAW_TO_ULAW);
    if back.len() == FRAME && &back[..4] == MAGIC {
        let (talker, n) = (back[4], u32::from_be_bytes([back[5], back[6], back[7], back[8]]));
        let mut expect = voice_frame(talker, n);
        transcode_in_place(&mut expect, &ULAW_TO_ALAW);
        if payload == expect {
            return Sound::Voice { talker, n, translated: true };
        }
    }
    Sound::Other
}

/// Per-SSRC extension state.
#[derive(Clone, Copy, Debug)]
struct Ext {
    highest: u64,
}

/// A phone's ear: everything received on its RTP address.
#[derive(Debug, Default)]
pub struct RtpSink {
    pub heard: Vec<Heard>,
    ext: HashMap<u32, Ext>,
    /// Datagrams that were not RTP.
    pub invalid: u64,
}

/// A run of packets of one kind, in sequence order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub kind: Kind,
    pub packets: usize,
    /// Earliest and latest arrival of the run's packets.
    pub first_at: Time,
    pub last_at: Time,
}

/// The stream checks over everything heard (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkReport {
    pub packets: usize,
    /// Distinct SSRCs, in order of first arrival.
    pub ssrcs: Vec<u32>,
    /// Missing sequence numbers inside each SSRC's range.
    pub lost: u64,
    /// Packets arriving after one with a higher sequence number.
    pub reordered: u64,
    /// Packets whose (SSRC, sequence number) was already heard.
    pub duplicates: u64,
    /// Adjacent packets (one sequence step apart) whose timestamps do not differ by 160 while the later
    /// one has no marker: a broken timeline.
    pub ts_breaks: u64,
    /// Adjacent packets of the same talker whose frame counters do not advance with the sequence number
    /// (the relay lost track of the source's deltas).
    pub voice_out_of_step: u64,
    /// Packets that were neither music nor a test phone's voice.
    pub other: usize,
}

impl RtpSink {
    /// Takes one datagram received at `at` from `from`.
    pub fn receive(&mut self, at: Time, from: SocketAddr, pkt: &[u8]) {
        let Some(info) = rtp::parse(pkt) else {
            self.invalid += 1;
            return;
        };
        let payload = pkt.get(info.payload_start..info.payload_end).unwrap_or(&[]);
        // What a phone reads off the wire: plain numbers.
        let (ssrc, seq, pt) = (info.ssrc.0, info.seq.0, info.pt.get());
        let ext_seq = match self.ext.get_mut(&ssrc) {
            None => {
                let e = 1u64 << 32 | u64::from(seq);
                self.ext.insert(ssrc, Ext { highest: e });
                e
            }
            Some(x) => {
                // The candidate closest to the highest so far.
                let base = x.highest & !0xFFFF;
                let e = [base.wrapping_sub(0x1_0000), base, base + 0x1_0000]
                    .into_iter()
                    .map(|b| b | u64::from(seq))
                    .min_by_key(|c| c.abs_diff(x.highest))
                    .unwrap_or(base | u64::from(seq));
                x.highest = x.highest.max(e);
                e
            }
        };
        let sound = if Codec::from_payload_type(pt).is_some() { classify(payload) } else { Sound::Other };
        self.heard.push(Heard { at, from, ssrc, seq, ext_seq, ts: info.ts, marker: info.marker, pt, sound });
    }

    /// Packets heard at or after `t`.
    pub fn since(&self, t: Time) -> impl Iterator<Item = &Heard> {
        self.heard.iter().filter(move |h| h.at >= t)
    }

    /// Packets of `kind` heard (duplicates included).
    pub fn count(&self, kind: Kind) -> usize {
        self.heard.iter().filter(|h| h.sound.kind() == kind).count()
    }

    /// The last packet of `kind` heard, if any.
    pub fn last(&self, kind: Kind) -> Option<&Heard> {
        self.heard.iter().rev().find(|h| h.sound.kind() == kind)
    }

    /// Every packet once, by SSRC (in order of first arrival) then extended sequence number: the order
    /// parkd sent them in, whatever the network did.
    pub fn in_seq_order(&self) -> Vec<&Heard> {
        let order: HashMap<u32, usize> = self.ssrcs().into_iter().enumerate().map(|(i, s)| (s, i)).collect();
        let mut seen = HashSet::new();
        let mut v: Vec<&Heard> = self.heard.iter().filter(|h| seen.insert((h.ssrc, h.ext_seq))).collect();
        v.sort_by_key(|h| (order.get(&h.ssrc).copied().unwrap_or(usize::MAX), h.ext_seq));
        v
    }

    /// Distinct SSRCs in order of first arrival.
    pub fn ssrcs(&self) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for h in &self.heard {
            if !out.contains(&h.ssrc) {
                out.push(h.ssrc);
            }
        }
        out
    }

    /// What was heard, as runs of one kind in sequence order (e.g. `[Music, Voice(1)]` for a parked
    /// party that was then bridged to phone 1).
    pub fn runs(&self) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::new();
        for h in self.in_seq_order() {
            let kind = h.sound.kind();
            match runs.last_mut() {
                Some(r) if r.kind == kind => {
                    r.packets += 1;
                    r.first_at = r.first_at.min(h.at);
                    r.last_at = r.last_at.max(h.at);
                }
                _ => runs.push(Run { kind, packets: 1, first_at: h.at, last_at: h.at }),
            }
        }
        runs
    }

    /// The kinds of [`RtpSink::runs`], ignoring runs shorter than `min` packets (a spoken prompt, a
    /// stray telephone-event).
    pub fn story(&self, min: usize) -> Vec<Kind> {
        let mut out: Vec<Kind> = Vec::new();
        for r in self.runs().into_iter().filter(|r| r.packets >= min) {
            if out.last() != Some(&r.kind) {
                out.push(r.kind);
            }
        }
        out
    }

    /// Runs the stream checks.
    pub fn report(&self) -> SinkReport {
        let mut rep = SinkReport { packets: self.heard.len(), ssrcs: self.ssrcs(), ..SinkReport::default() };
        let mut highest: HashMap<u32, u64> = HashMap::new();
        let mut seen = HashSet::new();
        for h in &self.heard {
            if !seen.insert((h.ssrc, h.ext_seq)) {
                rep.duplicates += 1;
                continue;
            }
            let hi = highest.entry(h.ssrc).or_insert(h.ext_seq);
            if h.ext_seq < *hi {
                rep.reordered += 1;
            }
            *hi = (*hi).max(h.ext_seq);
            if h.sound == Sound::Other {
                rep.other += 1;
            }
        }
        let ordered = self.in_seq_order();
        for w in ordered.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a.ssrc != b.ssrc {
                continue;
            }
            let steps = b.ext_seq - a.ext_seq;
            rep.lost += steps.saturating_sub(1);
            if steps == 1 && !b.marker && b.ts.wrapping_sub(a.ts) != TS_PER_FRAME {
                rep.ts_breaks += 1;
            }
            if let (Sound::Voice { talker: ta, n: na, .. }, Sound::Voice { talker: tb, n: nb, .. }) = (a.sound, b.sound) {
                if ta == tb && u64::from(nb.wrapping_sub(na)) != steps {
                    rep.voice_out_of_step += 1;
                }
            }
        }
        rep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{write_header, Pt, SeqNo, Ssrc};

    fn pkt(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = write_header(Pt::from(Codec::Pcmu), marker, SeqNo(seq), ts, Ssrc(42)).to_vec();
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn tells_music_from_voice_in_either_law() {
        let m = HoldMusic::builtin();
        assert_eq!(classify(&m.frame(Codec::Pcmu, 3)), Sound::Music { frame: 3 });
        assert!(matches!(classify(&m.frame(Codec::Pcma, 3)), Sound::Music { .. }));
        assert_eq!(classify(&voice_frame(2, 77)), Sound::Voice { talker: 2, n: 77, translated: false });
        let mut a = voice_frame(2, 78);
        transcode_in_place(&mut a, &ULAW_TO_ALAW);
        assert_eq!(classify(&a), Sound::Voice { talker: 2, n: 78, translated: true });
        assert_eq!(classify(&[0xFF; FRAME]), Sound::Other);
    }

    #[test]
    fn report_counts_loss_reorder_duplicates_and_timeline_breaks() {
        let from: SocketAddr = "127.0.0.1:20000".parse().unwrap();
        let m = HoldMusic::builtin();
        let mut s = RtpSink::default();
        let t = Time::from_secs(1);
        // Music 65534, 65535, (0 lost), 2, 1 (late), then voice after a marker with a timeline jump, a
        // duplicate, and a broken timestamp without a marker.
        for (seq, ts, marker, payload) in [
            (65534u16, 1000u32, true, m.frame(Codec::Pcmu, 0).to_vec()),
            (65535, 1160, false, m.frame(Codec::Pcmu, 1).to_vec()),
            (2, 1480, false, m.frame(Codec::Pcmu, 4).to_vec()),
            (1, 1320, false, m.frame(Codec::Pcmu, 3).to_vec()),
            (3, 9000, true, voice_frame(1, 10).to_vec()),
            (3, 9000, true, voice_frame(1, 10).to_vec()),
            (4, 9160, false, voice_frame(1, 11).to_vec()),
            (5, 9999, false, voice_frame(1, 12).to_vec()),
        ] {
            s.receive(t, from, &pkt(seq, ts, marker, &payload));
        }
        let r = s.report();
        assert_eq!((r.packets, r.lost, r.reordered, r.duplicates, r.ts_breaks, r.voice_out_of_step), (8, 1, 1, 1, 1, 0));
        assert_eq!(r.ssrcs, vec![42]);
        assert_eq!(s.story(1), vec![Kind::Music, Kind::Voice(1)]);
        assert_eq!(s.runs()[0].packets, 4);
    }
}
