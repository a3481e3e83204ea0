//! Spoken prompts ("parked on", the digits 0-9), compiled in and encoded once.
//!
//! The audio lives in `assets/prompts/*.ulaw` (raw G.711 μ-law, 8 kHz mono; made once by
//! `assets/prompts/generate.sh`, see the README there). At first use every prompt is padded to whole
//! 20 ms frames and laid end to end, after one silent frame, into one μ-law and one A-law [`Bytes`]
//! buffer: like [`super::music::HoldMusic`], every frame handed to the network is a refcounted slice,
//! so playing a prompt allocates nothing per packet.

use std::ops::Range;
use std::sync::OnceLock;

use bytes::Bytes;

use super::g711::ULAW_TO_ALAW;
use super::music::FRAME_SAMPLES;
use super::Codec;

/// μ-law silence (0 linear).
const ULAW_SILENCE: u8 = 0xFF;

/// Silent frames between two prompts and after the last one (8 × 20 ms = 160 ms).
pub const GAP_FRAMES: usize = 8;

/// One thing parkd can say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prompt {
    /// "parked on"
    ParkedOn,
    /// A digit, 0-9 ("zero" … "nine"). Any other value is not spoken.
    Digit(u8),
}

impl Prompt {
    /// "parked on" then each digit of `orbit` (`"701"` → parked on, seven, zero, one). Characters
    /// that are not ASCII digits are skipped.
    pub fn orbit_announcement(orbit: &str) -> Vec<Prompt> {
        let digits = orbit.bytes().filter(u8::is_ascii_digit).map(|b| Prompt::Digit(b - b'0'));
        std::iter::once(Prompt::ParkedOn).chain(digits).collect()
    }

    /// Position in [`ASSETS`]; `None` for a digit above 9.
    fn asset_index(self) -> Option<usize> {
        match self {
            Prompt::ParkedOn => Some(0),
            Prompt::Digit(d) if d <= 9 => Some(1 + d as usize),
            Prompt::Digit(_) => None,
        }
    }
}

/// The committed μ-law assets, in [`Prompt::asset_index`] order.
const ASSETS: [&[u8]; 11] = [
    include_bytes!("../../assets/prompts/parked_on.ulaw"),
    include_bytes!("../../assets/prompts/digit_0.ulaw"),
    include_bytes!("../../assets/prompts/digit_1.ulaw"),
    include_bytes!("../../assets/prompts/digit_2.ulaw"),
    include_bytes!("../../assets/prompts/digit_3.ulaw"),
    include_bytes!("../../assets/prompts/digit_4.ulaw"),
    include_bytes!("../../assets/prompts/digit_5.ulaw"),
    include_bytes!("../../assets/prompts/digit_6.ulaw"),
    include_bytes!("../../assets/prompts/digit_7.ulaw"),
    include_bytes!("../../assets/prompts/digit_8.ulaw"),
    include_bytes!("../../assets/prompts/digit_9.ulaw"),
];

/// Every prompt, pre-encoded in both G.711 laws. Frame 0 is silence (the gap frame); prompt `i`
/// occupies the frames `spans[i]`.
#[derive(Clone, Debug)]
pub struct PromptBank {
    /// All frames in μ-law, `frames * 160` bytes.
    pcmu: Bytes,
    /// All frames in A-law, `frames * 160` bytes.
    pcma: Bytes,
    /// Frame range of each prompt, in [`Prompt::asset_index`] order.
    spans: [Range<u32>; ASSETS.len()],
}

/// Index of the silent frame in a [`PromptBank`].
pub const SILENCE_FRAME: u32 = 0;

impl PromptBank {
    /// The built-in prompts, encoded at first use and shared by every caller (a refcount, no copy).
    pub fn builtin() -> PromptBank {
        static BANK: OnceLock<PromptBank> = OnceLock::new();
        BANK.get_or_init(|| PromptBank::from_ulaw(&ASSETS)).clone()
    }

    /// Lays out μ-law prompts (in [`Prompt::asset_index`] order) after one silent frame, each
    /// padded with μ-law silence to whole frames, and transcodes the lot to A-law.
    fn from_ulaw(assets: &[&[u8]; ASSETS.len()]) -> PromptBank {
        let total: usize = assets.iter().map(|a| a.len().div_ceil(FRAME_SAMPLES)).sum::<usize>() + 1;
        let mut pcmu = Vec::with_capacity(total * FRAME_SAMPLES);
        pcmu.resize(FRAME_SAMPLES, ULAW_SILENCE);
        let spans = assets.map(|a| {
            let first = (pcmu.len() / FRAME_SAMPLES) as u32;
            pcmu.extend_from_slice(a);
            pcmu.resize(pcmu.len().div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES, ULAW_SILENCE);
            first..(pcmu.len() / FRAME_SAMPLES) as u32
        });
        let pcma: Vec<u8> = pcmu.iter().map(|u| ULAW_TO_ALAW[*u as usize]).collect();
        PromptBank { pcmu: Bytes::from(pcmu), pcma: Bytes::from(pcma), spans }
    }

    /// The frames `prompt` occupies (empty for a digit above 9).
    pub fn frames_of(&self, prompt: Prompt) -> Range<u32> {
        prompt.asset_index().and_then(|i| self.spans.get(i).cloned()).unwrap_or(0..0)
    }

    /// The frame indices to play for `prompts`, in order: each prompt, then [`GAP_FRAMES`] of
    /// silence (so the hold music that follows does not run into the last word). Prompts that
    /// cannot be spoken are skipped; an empty result means there is nothing to say.
    pub fn sequence(&self, prompts: &[Prompt]) -> Vec<u32> {
        let mut out = Vec::new();
        for p in prompts {
            let frames = self.frames_of(*p);
            if frames.is_empty() {
                continue;
            }
            out.extend(frames);
            out.extend(std::iter::repeat_n(SILENCE_FRAME, GAP_FRAMES));
        }
        out
    }

    /// Frame `index` in `codec`: a refcounted slice of the shared buffer (no copy). An index past
    /// the end gives the silent frame.
    pub fn frame(&self, codec: Codec, index: u32) -> Bytes {
        let buf = match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
        };
        let start = index as usize * FRAME_SAMPLES;
        let (start, end) = if start + FRAME_SAMPLES <= buf.len() { (start, start + FRAME_SAMPLES) } else { (0, FRAME_SAMPLES.min(buf.len())) };
        buf.slice(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711::{alaw_to_linear, ulaw_to_linear};

    fn dbfs(samples: impl Iterator<Item = i16>) -> f64 {
        let v: Vec<f64> = samples.map(f64::from).collect();
        let rms = (v.iter().map(|s| s * s).sum::<f64>() / v.len().max(1) as f64).sqrt();
        20.0 * (rms.max(1e-9) / 32768.0).log10()
    }

    #[test]
    fn assets_decode_to_speech_of_plausible_length_and_level() {
        for (i, asset) in ASSETS.iter().enumerate() {
            let secs = asset.len() as f64 / 8000.0;
            let range = if i == 0 { 0.3..=1.5 } else { 0.2..=1.0 };
            assert!(range.contains(&secs), "asset {i}: {secs:.3} s");
            let level = dbfs(asset.iter().map(|b| ulaw_to_linear(*b)));
            assert!((-22.0..=-12.0).contains(&level), "asset {i}: {level:.1} dBFS, want about -16");
            // Silence is trimmed: the first and last 20 ms are quiet, the middle is speech.
            let mid = asset.len() / 2;
            let middle = dbfs(asset[mid - 400..mid + 400].iter().map(|b| ulaw_to_linear(*b)));
            assert!(middle > -30.0, "asset {i}: middle 100 ms at {middle:.1} dBFS is not speech");
        }
        // Every digit sounds different (no asset copied twice).
        for (a, first) in ASSETS.iter().enumerate() {
            for (b, second) in ASSETS.iter().enumerate().skip(a + 1) {
                assert_ne!(first, second, "assets {a} and {b} are identical");
            }
        }
    }

    #[test]
    fn bank_frames_match_the_assets_in_both_laws() {
        let bank = PromptBank::builtin();
        assert!(bank.frame(Codec::Pcmu, SILENCE_FRAME).iter().all(|b| *b == ULAW_SILENCE));
        assert!(bank.frame(Codec::Pcma, SILENCE_FRAME).iter().all(|b| alaw_to_linear(*b).abs() <= 8));
        for d in 0..=9u8 {
            let asset = ASSETS[1 + d as usize];
            let frames = bank.frames_of(Prompt::Digit(d));
            assert_eq!(frames.len(), asset.len().div_ceil(FRAME_SAMPLES), "digit {d}");
            let mut ulaw = Vec::new();
            let mut alaw = Vec::new();
            for f in frames {
                ulaw.extend_from_slice(&bank.frame(Codec::Pcmu, f));
                alaw.extend_from_slice(&bank.frame(Codec::Pcma, f));
            }
            assert_eq!(&ulaw[..asset.len()], asset, "digit {d}: μ-law frames are the asset");
            assert!(ulaw[asset.len()..].iter().all(|b| *b == ULAW_SILENCE), "digit {d}: padded with silence");
            for (u, a) in ulaw.iter().zip(&alaw) {
                let (lu, la) = (i32::from(ulaw_to_linear(*u)), i32::from(alaw_to_linear(*a)));
                assert!((lu - la).abs() <= lu.abs() / 8 + 16, "digit {d}: A-law {la} far from μ-law {lu}");
            }
        }
    }

    #[test]
    fn frames_are_views_into_one_buffer_and_out_of_range_is_silence() {
        let bank = PromptBank::builtin();
        let again = PromptBank::builtin();
        assert_eq!(bank.pcmu.as_ptr(), again.pcmu.as_ptr(), "built once, shared");
        let f = bank.frames_of(Prompt::ParkedOn).start;
        assert_eq!(bank.frame(Codec::Pcmu, f).as_ptr() as usize, bank.pcmu.as_ptr() as usize + f as usize * FRAME_SAMPLES);
        let past = bank.frame(Codec::Pcma, u32::MAX);
        assert_eq!(past.len(), FRAME_SAMPLES);
        assert_eq!(past, bank.frame(Codec::Pcma, SILENCE_FRAME));
    }

    #[test]
    fn orbit_announcement_says_parked_on_then_each_digit_with_gaps() {
        assert_eq!(
            Prompt::orbit_announcement("701"),
            vec![Prompt::ParkedOn, Prompt::Digit(7), Prompt::Digit(0), Prompt::Digit(1)]
        );
        assert_eq!(Prompt::orbit_announcement("a-9"), vec![Prompt::ParkedOn, Prompt::Digit(9)]);
        let bank = PromptBank::builtin();
        let seq = bank.sequence(&[Prompt::Digit(7), Prompt::Digit(42), Prompt::Digit(1)]);
        let seven = bank.frames_of(Prompt::Digit(7));
        let one = bank.frames_of(Prompt::Digit(1));
        let mut expect: Vec<u32> = seven.collect();
        expect.extend([SILENCE_FRAME; GAP_FRAMES]);
        expect.extend(one);
        expect.extend([SILENCE_FRAME; GAP_FRAMES]);
        assert_eq!(seq, expect, "digit 42 is skipped; a gap follows each prompt");
        assert!(bank.sequence(&[Prompt::Digit(10)]).is_empty());
    }
}
