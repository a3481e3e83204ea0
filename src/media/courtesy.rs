//! The courtesy tone (Asterisk's `courtesytone` / `parkedplay`): a short tone played to a party when a retrieve or
//! an answered recall bridges, so the retriever (or the parked caller) hears that the call is now connected.
//!
//! The tone is *inserted into the relay*: the first audio packets relayed to that party after the bridge carry the
//! tone instead of the other side's audio, in the same packets, so their RTP sequence numbers and timestamps are
//! exactly the relay's (one continuous stream: no gap, no jump, no second SSRC the receiver would take for a new
//! stream). Each relayed packet takes as many tone samples as it carries audio (20 ms: 160), so the tone plays at
//! its own speed whatever the packetization. Telephone-events pass untouched and do not consume the tone.
//!
//! The tone needs the other side to be sending audio, as phones do; the first ~300 ms of the other side's audio
//! are replaced (the same cost Asterisk's tone has: it plays before the bridge).

use std::f32::consts::PI;

use super::music::{HoldMusic, SAMPLE_RATE};
use super::Codec;

/// The built-in tone: two 100 ms beeps at 440 Hz, 100 ms apart (300 ms, then the call's audio).
pub fn builtin_tone() -> HoldMusic {
    const BEEP_MS: usize = 100;
    let per_ms = SAMPLE_RATE as usize / 1000;
    let beep = BEEP_MS * per_ms;
    let samples: Vec<i16> = (0..3 * beep)
        .map(|i| {
            if (beep..2 * beep).contains(&i) {
                return 0;
            }
            let n = i % beep;
            // 5 ms fade in and out: no click at the edges.
            let edge = (n.min(beep - 1 - n) as f32 / (5 * per_ms) as f32).min(1.0);
            let v = (2.0 * PI * 440.0 * i as f32 / SAMPLE_RATE as f32).sin() * 8000.0 * edge;
            v as i16
        })
        .collect();
    HoldMusic::from_pcm(&samples).unwrap_or_else(HoldMusic::builtin)
}

/// A tone being played into the relay to one leg: which tone and how many of its samples went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insertion {
    pub tone: u16,
    pub pos: u32,
}

/// Overwrites `payload` (G.711 in `codec`, one byte per sample) with the next samples of `tone` from `ins.pos`,
/// silence after the tone's end. Returns false when the tone is over (this payload was the last to carry any).
pub fn insert(ins: &mut Insertion, tone: &HoldMusic, codec: Codec, payload: &mut [u8]) -> bool {
    let (src, silence) = match codec {
        Codec::Pcmu => (&tone.pcmu, 0xFFu8),
        Codec::Pcma => (&tone.pcma, 0xD5u8),
    };
    let start = ins.pos as usize;
    for (i, b) in payload.iter_mut().enumerate() {
        *b = src.get(start + i).copied().unwrap_or(silence);
    }
    let end = start + payload.len();
    ins.pos = u32::try_from(end).unwrap_or(u32::MAX);
    end < src.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711::ulaw_to_linear;

    #[test]
    fn builtin_tone_is_two_440_hz_beeps() {
        let t = builtin_tone();
        assert_eq!(t.frames, 15, "300 ms");
        let pcm: Vec<i16> = t.pcmu.iter().map(|b| ulaw_to_linear(*b)).collect();
        let energy = |r: std::ops::Range<usize>| pcm[r].iter().map(|v| i64::from(*v).pow(2)).sum::<i64>();
        assert!(energy(0..800) > 1_000_000_000 && energy(1600..2400) > 1_000_000_000, "two beeps");
        assert_eq!(energy(850..1550), 0, "a silent gap between them");
        // Zero crossings of the first beep: 440 Hz → 88 in 100 ms.
        let crossings = pcm[40..760].windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        assert!((76..=82).contains(&crossings), "{crossings} crossings in 90 ms");
    }

    #[test]
    fn insertion_walks_the_tone_then_ends() {
        let t = builtin_tone();
        let mut ins = Insertion { tone: 0, pos: 0 };
        let mut frames = 0;
        loop {
            let mut p = [0u8; 160];
            let more = insert(&mut ins, &t, Codec::Pcma, &mut p);
            assert_eq!(&p[..], &t.pcma[frames * 160..frames * 160 + 160]);
            frames += 1;
            if !more {
                break;
            }
        }
        assert_eq!(frames, 15);
        // 30 ms packets: the tail is padded with silence.
        let mut ins = Insertion { tone: 0, pos: 2300 };
        let mut p = [0u8; 240];
        assert!(!insert(&mut ins, &t, Codec::Pcmu, &mut p));
        assert!(p[100..].iter().all(|b| *b == 0xFF));
    }
}
