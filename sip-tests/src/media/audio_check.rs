//! Audio by frequency: pure-tone WAV files for the phones to send, and a Goertzel analysis of the WAV files
//! they record, window by window, so a test can tell "hold music" from "the peer's tone" from silence.
//!
//! Every phone sends a different pure tone (e.g. 440 / 880 / 1320 Hz). A window of received audio is
//! classified by how much of its energy sits at each known tone frequency: a clean relayed tone puts ~100 %
//! of the energy there; music (or music mixed into a tone) does not.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Sample rate of every file the tests write and read (G.711).
pub const SAMPLE_RATE: u32 = 8000;
/// Analysis window: 50 ms.
pub const WINDOW: usize = 400;
/// Below this RMS a window is silence (full scale is 32767; the test tones are ~5600 RMS, music ~2000-6000).
pub const SILENCE_RMS: f64 = 300.0;
/// Share of a window's energy at a tone frequency above which the window *is* that tone.
pub const PURE: f64 = 0.8;
/// Share below which a tone is absent from a window.
pub const ABSENT: f64 = 0.3;

/// Writes `seconds` of a pure sine at `hz` (amplitude 8000, 8 kHz mono 16-bit PCM) to `path`.
pub fn write_tone_wav(path: &Path, hz: f64, seconds: u32) {
    let spec = hound::WavSpec { channels: 1, sample_rate: SAMPLE_RATE, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    for i in 0..SAMPLE_RATE * seconds {
        let t = f64::from(i) / f64::from(SAMPLE_RATE);
        let v = (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()).round() as i16;
        w.write_sample(v).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    w.finalize().unwrap_or_else(|e| panic!("cannot finalize {}: {e}", path.display()));
}

/// Reads a mono 16-bit WAV. Waits (up to `wait`) for the writer to finalize it: a file still being
/// recorded has an empty or unreadable header.
pub fn read_wav(path: &Path, wait: Duration) -> Vec<i16> {
    let deadline = Instant::now() + wait;
    loop {
        let attempt = hound::WavReader::open(path).and_then(|r| {
            let spec = r.spec();
            if spec.channels != 1 || spec.bits_per_sample != 16 || spec.sample_rate != SAMPLE_RATE {
                panic!("{}: expected 8 kHz mono 16-bit, got {spec:?}", path.display());
            }
            r.into_samples::<i16>().collect::<Result<Vec<i16>, _>>()
        });
        match attempt {
            Ok(samples) if !samples.is_empty() => return samples,
            other if Instant::now() >= deadline => {
                panic!("{}: no readable audio within {wait:?}: {other:?}", path.display())
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Energy at `hz` in `x` (Goertzel), normalised so a pure sine of that frequency filling the window gives
/// about its mean square.
fn goertzel_power(x: &[i16], hz: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * hz / f64::from(SAMPLE_RATE)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = f64::from(v) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let n = x.len() as f64;
    2.0 * (s1 * s1 + s2 * s2 - k * s1 * s2) / (n * n)
}

/// One 50 ms window of received audio.
#[derive(Clone, Debug)]
pub struct Window {
    /// Start of the window in the recording.
    pub at: Duration,
    pub rms: f64,
    /// Share of the window's energy at each analysed frequency, in the order given to [`analyse`].
    pub shares: Vec<f64>,
}

impl Window {
    /// Silence (below [`SILENCE_RMS`]).
    pub fn silent(&self) -> bool {
        self.rms < SILENCE_RMS
    }

    /// This window is the `i`-th analysed tone and (almost) nothing else.
    pub fn is_tone(&self, i: usize) -> bool {
        !self.silent() && self.shares.get(i).is_some_and(|s| *s >= PURE)
    }

    /// Sound that is none of the analysed tones (hold music).
    pub fn is_other(&self) -> bool {
        !self.silent() && self.shares.iter().all(|s| *s < ABSENT)
    }
}

/// A recording cut into windows and analysed at the given tone frequencies.
#[derive(Clone, Debug)]
pub struct Analysis {
    pub label: String,
    pub freqs: Vec<f64>,
    pub windows: Vec<Window>,
}

/// Cuts `samples` into [`WINDOW`]-sample windows and measures each one at `freqs`.
pub fn analyse(label: &str, samples: &[i16], freqs: &[f64]) -> Analysis {
    let windows = samples
        .chunks_exact(WINDOW)
        .enumerate()
        .map(|(i, x)| {
            let mean_sq = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64;
            let shares = freqs.iter().map(|&f| if mean_sq > 0.0 { goertzel_power(x, f) / mean_sq } else { 0.0 }).collect();
            Window { at: Duration::from_millis((i * WINDOW) as u64 * 1000 / u64::from(SAMPLE_RATE)), rms: mean_sq.sqrt(), shares }
        })
        .collect();
    Analysis { label: label.to_string(), freqs: freqs.to_vec(), windows }
}

impl Analysis {
    /// Length of the analysed audio.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.windows.len() as u64 * WINDOW as u64 * 1000 / u64::from(SAMPLE_RATE))
    }

    /// Index of the first window that is tone `i`.
    pub fn first_tone(&self, i: usize) -> Option<usize> {
        self.windows.iter().position(|w| w.is_tone(i))
    }

    /// The windows `range` as their own analysis.
    pub fn slice(&self, label: &str, range: std::ops::Range<usize>) -> Analysis {
        let windows = self.windows.get(range).map(<[Window]>::to_vec).unwrap_or_default();
        Analysis { label: label.to_string(), freqs: self.freqs.clone(), windows }
    }

    /// Asserts the audio is (after `settle` windows) tone `i` and nothing else: at least 95 % of the windows
    /// are pure tone `i`, and never 3 windows in a row are not (music mixed in would spoil every window).
    pub fn assert_tone_only(&self, i: usize, settle: usize, min: Duration) {
        let hz = self.freqs.get(i).copied().unwrap_or_default();
        let rest = self.windows.get(settle..).unwrap_or_default();
        let dur = Duration::from_millis(rest.len() as u64 * WINDOW as u64 * 1000 / u64::from(SAMPLE_RATE));
        assert!(dur >= min, "{}: expected at least {min:?} of the {hz} Hz tone, got {dur:?} of audio\n{self}", self.label);
        let pure = rest.iter().filter(|w| w.is_tone(i)).count();
        assert!(
            pure * 100 >= rest.len() * 95,
            "{}: only {pure} of {} windows are the pure {hz} Hz tone (something else is mixed in)\n{self}",
            self.label,
            rest.len()
        );
        let mut run = 0;
        for w in rest {
            run = if w.is_tone(i) { 0 } else { run + 1 };
            assert!(run < 3, "{}: 3 windows in a row at {:?} are not the pure {hz} Hz tone\n{self}", self.label, w.at);
        }
    }

    /// Asserts what a parked party hears (orbit announcement with its pauses, then hold music) carries none
    /// of the analysed tones in any window, and at least `min_sound` of it is non-silent.
    pub fn assert_hold_audio(&self, min_sound: Duration) {
        if let Some(w) = self.windows.iter().find(|w| !w.silent() && !w.is_other()) {
            panic!("{}: a tone (or a mix with one) at {:?} while on hold: {:?}\n{self}", self.label, w.at, w.shares);
        }
        let sound = self.windows.iter().filter(|w| !w.silent()).count();
        let sound = Duration::from_millis(sound as u64 * WINDOW as u64 * 1000 / u64::from(SAMPLE_RATE));
        assert!(sound >= min_sound, "{}: only {sound:?} of non-silent audio on hold, expected {min_sound:?}\n{self}", self.label);
    }

    /// The last `d` of the audio as its own analysis.
    pub fn tail(&self, label: &str, d: Duration) -> Analysis {
        let n = (d.as_millis() as usize * SAMPLE_RATE as usize / 1000).div_ceil(WINDOW);
        self.slice(label, self.windows.len().saturating_sub(n)..self.windows.len())
    }

    /// Asserts the audio is sound that is none of the analysed tones (hold music): at least 90 % of the
    /// windows are "other" and none carries any tone.
    pub fn assert_music(&self, min: Duration) {
        assert!(self.duration() >= min, "{}: expected at least {min:?} of hold music, got {:?}\n{self}", self.label, self.duration());
        let other = self.windows.iter().filter(|w| w.is_other()).count();
        assert!(
            other * 100 >= self.windows.len() * 90,
            "{}: only {other} of {} windows are hold music (non-silent and none of the tones {:?})\n{self}",
            self.label,
            self.windows.len(),
            self.freqs
        );
        for (i, _) in self.freqs.iter().enumerate() {
            assert!(self.windows.iter().all(|w| !w.is_tone(i)), "{}: a tone appears during hold music\n{self}", self.label);
        }
    }
}

impl fmt::Display for Analysis {
    /// A compact timeline: one character per window (`.` silence, `1`..`9` the i-th tone, `m` other sound,
    /// `?` mixed), 40 windows (2 s) per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  {} ({:?}, tones {:?}; . silence, 1.. tone, m music, ? mixed):", self.label, self.duration(), self.freqs)?;
        for (n, chunk) in self.windows.chunks(40).enumerate() {
            let line: String = chunk
                .iter()
                .map(|w| {
                    if w.silent() {
                        '.'
                    } else if let Some(i) = (0..self.freqs.len()).find(|&i| w.is_tone(i)) {
                        char::from_digit((i + 1) as u32, 10).unwrap_or('#')
                    } else if w.is_other() {
                        'm'
                    } else {
                        '?'
                    }
                })
                .collect();
            writeln!(f, "  {:>5.1}s {line}", n as f64 * 2.0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, n: usize, amp: f64) -> Vec<i16> {
        (0..n).map(|i| (amp * (2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0).sin()) as i16).collect()
    }

    #[test]
    fn a_pure_tone_is_recognised_and_others_are_absent() {
        let a = analyse("t", &sine(880.0, 8000, 8000.0), &[440.0, 880.0, 1320.0]);
        assert!(a.windows.iter().all(|w| w.is_tone(1) && !w.is_tone(0) && !w.is_tone(2)));
        a.assert_tone_only(1, 0, Duration::from_millis(900));
    }

    #[test]
    fn a_tone_with_music_mixed_in_is_not_pure() {
        let tone = sine(1320.0, 8000, 8000.0);
        let music = sine(523.0, 8000, 5000.0);
        let mixed: Vec<i16> = tone.iter().zip(&music).map(|(a, b)| a.saturating_add(*b)).collect();
        let a = analyse("t", &mixed, &[440.0, 880.0, 1320.0]);
        assert!(a.windows.iter().all(|w| !w.is_tone(2) && !w.is_other()));
        assert!(std::panic::catch_unwind(|| a.assert_tone_only(2, 0, Duration::ZERO)).is_err());
    }

    #[test]
    fn hold_audio_may_pause_but_never_carries_a_tone() {
        let mut speech = sine(523.0, 4000, 5000.0);
        speech.extend(vec![0i16; 2000]);
        speech.extend(sine(700.0, 4000, 5000.0));
        let a = analyse("t", &speech, &[440.0, 880.0, 1320.0]);
        a.assert_hold_audio(Duration::from_millis(900));
        assert_eq!(a.tail("t", Duration::from_millis(500)).windows.len(), 10);
        speech.extend(sine(880.0, 800, 8000.0));
        let b = analyse("t", &speech, &[440.0, 880.0, 1320.0]);
        assert!(std::panic::catch_unwind(|| b.assert_hold_audio(Duration::ZERO)).is_err());
    }

    #[test]
    fn other_sound_is_music_and_silence_is_not() {
        let a = analyse("t", &sine(523.0, 8000, 5000.0), &[440.0, 880.0, 1320.0]);
        a.assert_music(Duration::from_millis(900));
        let s = analyse("s", &vec![3i16; 8000], &[440.0]);
        assert!(s.windows.iter().all(Window::silent));
        assert!(std::panic::catch_unwind(|| s.assert_music(Duration::ZERO)).is_err());
    }
}
