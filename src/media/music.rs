//! Hold music, encoded once.
//!
//! The whole loop is encoded to μ-law and A-law at startup into two [`Bytes`] buffers; every
//! 20 ms frame handed to the network is a [`Bytes::slice`] of them (a refcount increment, never a
//! copy), so thousands of hold streams share two buffers.

use std::f32::consts::PI;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::g711::{linear_to_alaw, linear_to_ulaw};
use super::Codec;

/// Samples (and G.711 bytes) per 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// Sample rate of hold music.
pub const SAMPLE_RATE: u32 = 8000;

/// Why a WAV file cannot be used as hold music.
#[derive(Debug, thiserror::Error)]
pub enum MusicError {
    #[error("{}: cannot read WAV: {source}", path.display())]
    Unreadable { path: PathBuf, source: hound::Error },
    #[error("{}: sample rate is {found} Hz, hold music must be 8000 Hz", path.display())]
    WrongRate { path: PathBuf, found: u32 },
    #[error("{}: has {found} channels, hold music must be mono", path.display())]
    WrongChannels { path: PathBuf, found: u16 },
    #[error("{}: samples are {bits}-bit {format}, hold music must be 16-bit integer PCM", path.display())]
    WrongSampleFormat { path: PathBuf, bits: u16, format: &'static str },
    #[error("{}: contains no samples", path.display())]
    Empty { path: PathBuf },
}

/// A hold-music loop, pre-encoded in both G.711 laws.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldMusic {
    /// The whole loop in μ-law, `frames * 160` bytes.
    pub pcmu: Bytes,
    /// The whole loop in A-law, `frames * 160` bytes.
    pub pcma: Bytes,
    /// Number of 20 ms frames in the loop (≥ 1).
    pub frames: usize,
}

impl HoldMusic {
    /// Encodes linear samples (8 kHz mono); the tail is padded with silence to a whole frame.
    /// Returns `None` for an empty input.
    pub fn from_pcm(samples: &[i16]) -> Option<HoldMusic> {
        if samples.is_empty() {
            return None;
        }
        let frames = samples.len().div_ceil(FRAME_SAMPLES);
        let padded = frames * FRAME_SAMPLES;
        let mut pcmu = Vec::with_capacity(padded);
        let mut pcma = Vec::with_capacity(padded);
        for i in 0..padded {
            let s = samples.get(i).copied().unwrap_or(0);
            pcmu.push(linear_to_ulaw(s));
            pcma.push(linear_to_alaw(s));
        }
        Some(HoldMusic { pcmu: Bytes::from(pcmu), pcma: Bytes::from(pcma), frames })
    }

    /// Frame `index % frames` in `codec`: a refcounted slice of the shared buffer (no copy).
    pub fn frame(&self, codec: Codec, index: usize) -> Bytes {
        let buf = match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
        };
        let start = (index % self.frames.max(1)) * FRAME_SAMPLES;
        let end = (start + FRAME_SAMPLES).min(buf.len());
        buf.slice(start.min(end)..end)
    }

    /// Loads an 8 kHz mono 16-bit PCM WAV file.
    pub fn from_wav(path: impl AsRef<Path>) -> Result<HoldMusic, MusicError> {
        let path = path.as_ref();
        let unreadable = |source| MusicError::Unreadable { path: path.to_path_buf(), source };
        let reader = hound::WavReader::open(path).map_err(unreadable)?;
        let spec = reader.spec();
        if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
            let format = match spec.sample_format {
                hound::SampleFormat::Int => "integer",
                hound::SampleFormat::Float => "float",
            };
            return Err(MusicError::WrongSampleFormat {
                path: path.to_path_buf(),
                bits: spec.bits_per_sample,
                format,
            });
        }
        if spec.sample_rate != SAMPLE_RATE {
            return Err(MusicError::WrongRate { path: path.to_path_buf(), found: spec.sample_rate });
        }
        if spec.channels != 1 {
            return Err(MusicError::WrongChannels { path: path.to_path_buf(), found: spec.channels });
        }
        let samples = reader.into_samples::<i16>().collect::<Result<Vec<i16>, _>>().map_err(unreadable)?;
        HoldMusic::from_pcm(&samples).ok_or(MusicError::Empty { path: path.to_path_buf() })
    }

    /// The built-in loop: 12 s of a soft four-chord arpeggio over a pad (Cmaj7 – Am7 – Fmaj7 – G6),
    /// synthesized from sine partials with envelopes, normalized to about -18 dBFS RMS.
    /// Notes are rendered into a circular buffer so tails wrap around: the loop has no click.
    pub fn builtin() -> HoldMusic {
        let samples = synthesize_builtin();
        // `samples` is never empty, so this cannot fail; fall back to one silent frame anyway.
        HoldMusic::from_pcm(&samples).unwrap_or_else(|| HoldMusic {
            pcmu: Bytes::from(vec![0xFF; FRAME_SAMPLES]),
            pcma: Bytes::from(vec![0xD5; FRAME_SAMPLES]),
            frames: 1,
        })
    }
}

/// Frequency of MIDI note `n`.
fn midi_hz(n: i32) -> f32 {
    440.0 * 2f32.powf((n - 69) as f32 / 12.0)
}

/// One synthesized note: sine partials under an attack / exponential-decay / short-release envelope.
struct Note<'a> {
    hz: f32,
    amp: f32,
    /// Attack time, seconds.
    attack: f32,
    /// Exponential decay time constant, seconds.
    decay_tau: f32,
    /// Relative amplitude of harmonics 1, 2, 3...
    partials: &'a [f32],
}

/// Adds `note` into the circular buffer `out` from sample `start` for `len` samples.
fn add_note(out: &mut [f32], start: usize, len: usize, note: Note<'_>) {
    let Note { hz, amp, attack, decay_tau, partials } = note;
    let n = out.len();
    if n == 0 {
        return;
    }
    let sr = SAMPLE_RATE as f32;
    let attack_n = (attack * sr).max(1.0);
    let release_n = (0.05 * sr).min(len as f32 / 2.0).max(1.0);
    for i in 0..len {
        let t = i as f32 / sr;
        let fi = i as f32;
        let env_a = (fi / attack_n).min(1.0);
        let env_r = ((len as f32 - fi) / release_n).min(1.0);
        let env = env_a * env_r * (-t / decay_tau).exp();
        let mut v = 0.0;
        for (k, w) in partials.iter().enumerate() {
            v += w * (2.0 * PI * hz * (k as f32 + 1.0) * t).sin();
        }
        if let Some(slot) = out.get_mut((start + i) % n) {
            *slot += amp * env * v;
        }
    }
}

fn synthesize_builtin() -> Vec<i16> {
    const CHORD_SECS: f32 = 3.0;
    // MIDI notes: root for the bass, then four chord tones.
    let chords: [(i32, [i32; 4]); 4] = [
        (48, [60, 64, 67, 71]), // Cmaj7
        (45, [57, 60, 64, 67]), // Am7
        (41, [57, 60, 64, 65]), // Fmaj7 (voiced A C E F)
        (43, [59, 62, 64, 67]), // G6 (B D E G)
    ];
    let sr = SAMPLE_RATE as usize;
    let chord_len = (CHORD_SECS * sr as f32) as usize;
    let total = chord_len * chords.len();
    let mut buf = vec![0f32; total];
    let step = chord_len / 8; // eighth notes at 80 bpm
    let pattern = [0usize, 1, 2, 3, 2, 1, 2, 3];
    for (c, (bass, tones)) in chords.iter().enumerate() {
        let base = c * chord_len;
        // Bass: one long soft note per chord.
        add_note(&mut buf, base, chord_len + sr / 4, Note { hz: midi_hz(*bass), amp: 0.25, attack: 0.08, decay_tau: 2.5, partials: &[1.0, 0.3] });
        // Pad: the chord tones an octave lower, slow attack, overlapping into the next chord.
        for t in tones {
            add_note(&mut buf, base, chord_len + sr / 2, Note { hz: midi_hz(t - 12), amp: 0.06, attack: 0.6, decay_tau: 4.0, partials: &[1.0, 0.15] });
        }
        // Arpeggio: bell-like plucks, up an octave on the second half.
        for (k, p) in pattern.iter().enumerate() {
            let note = tones.get(*p).copied().unwrap_or(60) + if k >= 4 { 12 } else { 0 };
            add_note(&mut buf, base + k * step, sr * 3 / 2, Note { hz: midi_hz(note), amp: 0.18, attack: 0.01, decay_tau: 0.45, partials: &[1.0, 0.25, 0.08] });
        }
    }
    // Normalize to -18 dBFS RMS, then soft-limit any peak.
    let rms = (buf.iter().map(|v| v * v).sum::<f32>() / total as f32).sqrt();
    let target = 32768.0 * 10f32.powf(-18.0 / 20.0);
    let gain = if rms > 0.0 { target / rms } else { 0.0 };
    buf.iter().map(|v| (v * gain).clamp(-32000.0, 32000.0) as i16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711::ulaw_to_linear;

    fn rms_dbfs(bytes: &[u8]) -> f64 {
        let sum: f64 = bytes.iter().map(|b| (ulaw_to_linear(*b) as f64).powi(2)).sum();
        let rms = (sum / bytes.len() as f64).sqrt();
        20.0 * (rms / 32768.0).log10()
    }

    #[test]
    fn builtin_is_audible_and_near_minus_18_dbfs() {
        let m = HoldMusic::builtin();
        assert_eq!(m.frames, 600, "12 s loop");
        assert_eq!(m.pcmu.len(), m.frames * FRAME_SAMPLES);
        assert_eq!(m.pcma.len(), m.frames * FRAME_SAMPLES);
        let db = rms_dbfs(&m.pcmu);
        assert!((-21.0..=-15.0).contains(&db), "level {db} dBFS");
        // Non-silent throughout: no second of the loop is below -40 dBFS.
        for sec in m.pcmu.chunks(8000) {
            assert!(rms_dbfs(sec) > -40.0, "a quiet second in the loop");
        }
    }

    #[test]
    fn builtin_loops_without_a_click() {
        let m = HoldMusic::builtin();
        let s: Vec<i32> = m.pcmu.iter().map(|b| ulaw_to_linear(*b) as i32).collect();
        let max_step = s.windows(2).map(|w| (w[1] - w[0]).abs()).max().unwrap_or(0);
        let wrap_step = (s[0] - s[s.len() - 1]).abs();
        assert!(wrap_step <= max_step, "wrap step {wrap_step} > largest in-loop step {max_step}");
        assert!(wrap_step < 3000, "wrap step {wrap_step}");
    }

    #[test]
    fn frames_are_slices_of_one_buffer() {
        let m = HoldMusic::builtin();
        for (codec, buf) in [(Codec::Pcmu, &m.pcmu), (Codec::Pcma, &m.pcma)] {
            for i in [0usize, 1, 7, 599, 600, 1234] {
                let f = m.frame(codec, i);
                assert_eq!(f.len(), FRAME_SAMPLES);
                let expect = buf.as_ptr() as usize + (i % m.frames) * FRAME_SAMPLES;
                assert_eq!(f.as_ptr() as usize, expect, "frame {i} is not a view into the loop buffer");
            }
        }
    }

    #[test]
    fn from_pcm_pads_the_last_frame() {
        let m = HoldMusic::from_pcm(&[1000; 161]).unwrap();
        assert_eq!(m.frames, 2);
        assert_eq!(m.frame(Codec::Pcmu, 1)[1], 0xFF);
        assert!(HoldMusic::from_pcm(&[]).is_none());
    }

    fn write_wav(dir: &Path, name: &str, spec: hound::WavSpec, n: usize) -> PathBuf {
        let path = dir.join(name);
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..n * spec.channels as usize {
            match (spec.sample_format, spec.bits_per_sample) {
                (hound::SampleFormat::Float, _) => w.write_sample(0.1f32).unwrap(),
                (_, 8) => w.write_sample((i % 100) as i8).unwrap(),
                _ => w.write_sample(((i % 100) * 100) as i16).unwrap(),
            }
        }
        w.finalize().unwrap();
        path
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("parkd-music-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn wav_loading_accepts_8k_mono_16bit_and_names_what_is_wrong() {
        let dir = temp_dir("wav");
        let good = hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let m = HoldMusic::from_wav(write_wav(&dir, "good.wav", good, 800)).unwrap();
        assert_eq!(m.frames, 5);

        let err = HoldMusic::from_wav(write_wav(&dir, "16k.wav", hound::WavSpec { sample_rate: 16000, ..good }, 800)).unwrap_err();
        assert!(matches!(err, MusicError::WrongRate { found: 16000, .. }), "{err}");
        assert!(err.to_string().contains("16000 Hz"), "{err}");

        let err = HoldMusic::from_wav(write_wav(&dir, "stereo.wav", hound::WavSpec { channels: 2, ..good }, 800)).unwrap_err();
        assert!(matches!(err, MusicError::WrongChannels { found: 2, .. }), "{err}");
        assert!(err.to_string().contains("mono"), "{err}");

        let err = HoldMusic::from_wav(write_wav(&dir, "8bit.wav", hound::WavSpec { bits_per_sample: 8, ..good }, 800)).unwrap_err();
        assert!(matches!(err, MusicError::WrongSampleFormat { bits: 8, .. }), "{err}");
        assert!(err.to_string().contains("8-bit"), "{err}");

        let float = hound::WavSpec { bits_per_sample: 32, sample_format: hound::SampleFormat::Float, ..good };
        let err = HoldMusic::from_wav(write_wav(&dir, "float.wav", float, 800)).unwrap_err();
        assert!(matches!(err, MusicError::WrongSampleFormat { format: "float", .. }), "{err}");

        let err = HoldMusic::from_wav(write_wav(&dir, "empty.wav", good, 0)).unwrap_err();
        assert!(matches!(err, MusicError::Empty { .. }), "{err}");

        let err = HoldMusic::from_wav(dir.join("missing.wav")).unwrap_err();
        assert!(matches!(err, MusicError::Unreadable { .. }), "{err}");
        assert!(err.to_string().contains("missing.wav"), "{err}");

        std::fs::write(dir.join("junk.wav"), b"not a wav file at all").unwrap();
        let err = HoldMusic::from_wav(dir.join("junk.wav")).unwrap_err();
        assert!(matches!(err, MusicError::Unreadable { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
