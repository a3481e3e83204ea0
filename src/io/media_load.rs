//! A media thread's headroom, measured on the thread itself (issue 20): how much of the wall time it works
//! (from a poll's return to the end of that turn: applying commands, receiving and relaying, sending hold
//! music) rather than waiting, and how late its pacer's turns start after their due time. Both are folded into
//! 100 ms windows and smoothed (EWMA, α = 0.2: about half a second), then published in one atomic the SIP
//! side reads and hands to the core as an input ([`crate::core::Core::handle_media_load`]); the core decides.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::core::admission::capacity::MediaLoad;

/// One smoothing window.
const WINDOW: Duration = Duration::from_millis(100);
/// Weight of a new window in the average.
const ALPHA: f64 = 0.2;

/// The published figure: busy share and lateness (ms) as two `f32`s in one `u64`, so a reader never sees half
/// of an update.
#[derive(Debug, Default)]
pub struct LoadCell(AtomicU64);

impl LoadCell {
    pub fn load(&self) -> MediaLoad {
        let v = self.0.load(Ordering::Relaxed);
        MediaLoad { busy: f64::from(f32::from_bits((v >> 32) as u32)), late_ms: f64::from(f32::from_bits(v as u32)) }
    }

    fn store(&self, l: MediaLoad) {
        let v = (u64::from((l.busy as f32).to_bits()) << 32) | u64::from((l.late_ms as f32).to_bits());
        self.0.store(v, Ordering::Relaxed);
    }
}

/// The meter a media thread runs: fed once per loop turn.
#[derive(Debug)]
pub struct LoadMeter {
    window_start: Instant,
    busy: Duration,
    late_max: Duration,
    smoothed: MediaLoad,
}

impl LoadMeter {
    pub fn new(now: Instant) -> LoadMeter {
        LoadMeter { window_start: now, busy: Duration::ZERO, late_max: Duration::ZERO, smoothed: MediaLoad::default() }
    }

    /// One turn: woke at `woke` (the poll returned), done at `done`; `late`: how far past the pacer's due time
    /// it woke (zero when woken early by a packet or a command). Publishes into `cell` at each window's end.
    pub fn turn(&mut self, woke: Instant, done: Instant, late: Duration, cell: &LoadCell) {
        self.busy += done.saturating_duration_since(woke);
        self.late_max = self.late_max.max(late);
        let span = done.saturating_duration_since(self.window_start);
        if span < WINDOW {
            return;
        }
        let busy = (self.busy.as_secs_f64() / span.as_secs_f64()).clamp(0.0, 1.0);
        let late_ms = self.late_max.as_secs_f64() * 1000.0;
        self.smoothed.busy += ALPHA * (busy - self.smoothed.busy);
        self.smoothed.late_ms += ALPHA * (late_ms - self.smoothed.late_ms);
        cell.store(self.smoothed);
        self.window_start = done;
        self.busy = Duration::ZERO;
        self.late_max = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_share_and_lateness_are_smoothed_per_window() {
        let cell = LoadCell::default();
        let t0 = Instant::now();
        let mut m = LoadMeter::new(t0);
        // 1 s of turns every 1 ms, each 0.5 ms of work, 2 ms late once per window.
        for i in 0..1000u64 {
            let woke = t0 + Duration::from_micros(i * 1000 + 500);
            let late = if i % 100 == 0 { Duration::from_millis(2) } else { Duration::ZERO };
            m.turn(woke, woke + Duration::from_micros(500), late, &cell);
        }
        let l = cell.load();
        // After ten windows the average is 1 - 0.8^10 ≈ 89 % of the way to 50 % busy, 2 ms late.
        assert!((0.40..0.50).contains(&l.busy), "{l:?}");
        assert!((1.6..2.0).contains(&l.late_ms), "{l:?}");
    }

    #[test]
    fn idle_thread_reads_zero() {
        let cell = LoadCell::default();
        assert_eq!(cell.load(), MediaLoad::default());
        let t0 = Instant::now();
        let mut m = LoadMeter::new(t0);
        m.turn(t0 + Duration::from_millis(500), t0 + Duration::from_millis(500), Duration::ZERO, &cell);
        assert_eq!(cell.load().busy, 0.0);
    }
}
