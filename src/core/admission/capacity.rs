//! The capacity guard (issue 20): refuse new parks before hold music degrades for the calls already parked.
//!
//! The io side measures each media thread's headroom (`src/io/media_thread.rs`: the share of wall time a
//! thread spends working rather than waiting for its next pacer slot, and how late its slots are served,
//! both smoothed over about half a second) and hands the figures in as [`MediaLoad`] inputs with `now`. The
//! guard decides, with hysteresis, pure and in virtual time:
//!
//! * **refusing** once any media thread is at or above `media_busy_max` busy, or, already at least
//!   `media_busy_resume` busy, its smoothed lateness is at or above `media_late_max_ms` (a late pacer on a lightly
//!   loaded thread is the machine's noise, not parkd's load: refusing parks would not help it). New parks go to
//!   the thread with the fewest legs, and threads carry similar loads, so the busiest one is the one at risk;
//! * **accepting** again only once every thread is below `media_busy_resume`, and at least [`MIN_REFUSING`]
//!   after it started refusing (no flapping at the threshold);
//! * between two reports (they come every 100 ms and trail the load by about half a second), a park that would
//!   take the busiest thread to `media_busy_max` by linear projection (its busy share × parked now / parked at
//!   the report, from 500 parked calls up, where the per-call cost outweighs the fixed one) is refused too: a burst of parks cannot run far past the threshold
//!   before the measure catches up;
//! * a static cap too, `media_max_parked_per_thread` (× media threads): at that many parked calls new parks are
//!   refused whatever the load says; it is checked at each park, so it is exact.
//!
//! What it never touches: calls already parked, retrieves (a retrieve replaces the music by relaying),
//! recalls, hang-ups. The core answers a refused park `503` + `Retry-After` (`core/capacity.rs`).

use crate::config::LimitsConfig;
use crate::time::Time;
use std::time::Duration;

/// Parked calls at a report from which the busy share is projected to the parked calls now.
pub const PROJECT_FROM: usize = 500;

/// Shortest time the guard refuses once it started, even if the load falls at once.
pub const MIN_REFUSING: Duration = Duration::from_secs(2);

/// One media thread's headroom as the io side measured it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MediaLoad {
    /// Share of wall time spent working (receiving, relaying, sending hold music), smoothed; 0.0..=1.0.
    pub busy: f64,
    /// How late the pacer's slots were served, smoothed (ms).
    pub late_ms: f64,
}

/// Whether new parks are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardState {
    Accepting,
    Refusing,
}

impl GuardState {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardState::Accepting => "accepting",
            GuardState::Refusing => "refusing",
        }
    }
}

/// Why the guard turned to refusing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardCause {
    /// A media thread at or over `media_busy_max`.
    Busy,
    /// A media thread's pacer at or over `media_late_max_ms`.
    Late,
    /// `media_max_parked_per_thread` × threads parked calls.
    MaxParked,
    /// Back under every threshold (a turn to accepting).
    Recovered,
}

impl GuardCause {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardCause::Busy => "media_busy",
            GuardCause::Late => "media_late",
            GuardCause::MaxParked => "max_parked",
            GuardCause::Recovered => "recovered",
        }
    }
}

/// A change of state, for the event and the log line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    pub state: GuardState,
    pub cause: GuardCause,
    /// The busiest thread's load when it changed.
    pub load: MediaLoad,
}

/// The guard's settings (from `[limits]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuardConfig {
    /// `media_guard`: the load thresholds apply (the static cap applies whenever it is set).
    pub enabled: bool,
    pub busy_max: f64,
    pub busy_resume: f64,
    pub late_max_ms: f64,
    /// 0 = no static cap.
    pub max_parked_per_thread: u32,
    /// Seconds in the 503's `Retry-After`.
    pub retry_after: u32,
}

impl From<&LimitsConfig> for GuardConfig {
    fn from(l: &LimitsConfig) -> GuardConfig {
        GuardConfig {
            enabled: l.media_guard,
            busy_max: l.media_busy_max,
            busy_resume: l.media_busy_resume.min(l.media_busy_max),
            late_max_ms: l.media_late_max_ms,
            max_parked_per_thread: l.media_max_parked_per_thread,
            retry_after: l.retry_after.max(1),
        }
    }
}

/// The guard: its settings, the last loads it was given and its state.
#[derive(Clone, Debug)]
pub struct CapacityGuard {
    cfg: GuardConfig,
    /// The busiest thread of the last report.
    peak: MediaLoad,
    /// Each thread's last load (the gauge `parkd_media_load`).
    loads: Vec<MediaLoad>,
    state: GuardState,
    /// Parked calls when the last report came (the projection's base).
    parked_at_report: usize,
    /// When it last turned to refusing.
    since: Time,
    cause: GuardCause,
}

impl CapacityGuard {
    pub fn new(cfg: GuardConfig) -> CapacityGuard {
        CapacityGuard { cfg, peak: MediaLoad::default(), loads: Vec::new(), parked_at_report: 0, state: GuardState::Accepting, since: Time::ZERO, cause: GuardCause::Recovered }
    }

    pub fn config(&self) -> &GuardConfig {
        &self.cfg
    }

    pub fn state(&self) -> GuardState {
        self.state
    }

    /// The loads of the last report, one per media thread.
    pub fn loads(&self) -> &[MediaLoad] {
        &self.loads
    }

    fn over_load(&self, l: MediaLoad) -> Option<GuardCause> {
        if !self.cfg.enabled {
            None
        } else if l.busy >= self.cfg.busy_max {
            Some(GuardCause::Busy)
        } else if self.cfg.late_max_ms > 0.0 && l.busy >= self.cfg.busy_resume && l.late_ms >= self.cfg.late_max_ms {
            Some(GuardCause::Late)
        } else {
            None
        }
    }

    fn under_resume(&self, l: MediaLoad) -> bool {
        !self.cfg.enabled || l.busy < self.cfg.busy_resume
    }

    fn cap_reached(&self, parked: usize, threads: usize) -> bool {
        self.cfg.max_parked_per_thread != 0 && parked >= self.cfg.max_parked_per_thread as usize * threads.max(1)
    }

    /// A new report of every media thread's load (`parked`: calls parked now, `threads`: media threads).
    /// Returns the change of state it caused, if any.
    pub fn observe(&mut self, now: Time, loads: &[MediaLoad], parked: usize, threads: usize) -> Option<Transition> {
        self.loads.clear();
        self.loads.extend_from_slice(loads);
        self.parked_at_report = parked;
        self.peak = loads.iter().copied().max_by(|a, b| a.busy.total_cmp(&b.busy)).unwrap_or_default();
        if let Some(worst) = loads.iter().copied().find(|l| self.over_load(*l).is_some()) {
            self.peak = worst;
        }
        self.evaluate(now, parked, threads)
    }

    /// Whether a new park may go on now; a park that finds the static cap reached turns the guard to refusing
    /// (the change is returned with the verdict).
    pub fn admit(&mut self, now: Time, parked: usize, threads: usize) -> (bool, Option<Transition>) {
        let t = self.evaluate(now, parked, threads);
        (self.state == GuardState::Accepting, t)
    }

    /// The busiest thread's load projected to `parked` calls (linear in the parked calls since the report).
    fn projected(&self, parked: usize) -> MediaLoad {
        if self.parked_at_report < PROJECT_FROM || parked <= self.parked_at_report {
            return self.peak;
        }
        MediaLoad { busy: self.peak.busy * parked as f64 / self.parked_at_report as f64, ..self.peak }
    }

    fn evaluate(&mut self, now: Time, parked: usize, threads: usize) -> Option<Transition> {
        let cause = self.over_load(self.projected(parked)).or(self.cap_reached(parked, threads).then_some(GuardCause::MaxParked));
        match (self.state, cause) {
            (GuardState::Accepting, Some(cause)) => {
                self.state = GuardState::Refusing;
                self.since = now;
                self.cause = cause;
                Some(Transition { state: self.state, cause, load: self.projected(parked) })
            }
            (GuardState::Refusing, None) => {
                let load_ok = self.loads.iter().all(|l| self.under_resume(*l));
                // The static cap needs no hold-off: it is exact, not a smoothed figure.
                let held = self.cause == GuardCause::MaxParked || now.saturating_since(self.since) >= MIN_REFUSING;
                if load_ok && held {
                    self.state = GuardState::Accepting;
                    self.cause = GuardCause::Recovered;
                    return Some(Transition { state: self.state, cause: GuardCause::Recovered, load: self.peak });
                }
                None
            }
            (GuardState::Refusing, Some(cause)) => {
                self.cause = cause;
                None
            }
            (GuardState::Accepting, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> CapacityGuard {
        CapacityGuard::new(GuardConfig { enabled: true, busy_max: 0.85, busy_resume: 0.75, late_max_ms: 5.0, max_parked_per_thread: 0, retry_after: 5 })
    }

    fn busy(b: f64) -> MediaLoad {
        MediaLoad { busy: b, late_ms: 0.1 }
    }

    #[test]
    fn refuses_at_busy_max_and_accepts_only_below_resume_after_the_hold_off() {
        let mut g = guard();
        let t0 = Time::from_secs(100);
        assert_eq!(g.observe(t0, &[busy(0.5), busy(0.84)], 10, 2), None);
        assert_eq!(g.state(), GuardState::Accepting);
        let t = g.observe(t0 + Duration::from_millis(100), &[busy(0.5), busy(0.86)], 10, 2).expect("turns");
        assert_eq!((t.state, t.cause, t.load.busy), (GuardState::Refusing, GuardCause::Busy, 0.86));
        // Between resume and max: still refusing (hysteresis), however long.
        assert_eq!(g.observe(t0 + Duration::from_secs(10), &[busy(0.5), busy(0.80)], 10, 2), None);
        assert_eq!(g.state(), GuardState::Refusing);
        let t = g.observe(t0 + Duration::from_secs(11), &[busy(0.5), busy(0.70)], 10, 2).expect("back");
        assert_eq!((t.state, t.cause), (GuardState::Accepting, GuardCause::Recovered));
        assert!(g.admit(t0 + Duration::from_secs(11), 10, 2).0);
    }

    #[test]
    fn a_short_spike_refuses_for_at_least_the_hold_off() {
        let mut g = guard();
        let t0 = Time::from_secs(100);
        assert!(g.observe(t0, &[busy(0.95)], 0, 1).is_some());
        assert_eq!(g.observe(t0 + Duration::from_millis(500), &[busy(0.1)], 0, 1), None, "held off");
        assert!(!g.admit(t0 + Duration::from_millis(1900), 0, 1).0);
        let t = g.admit(t0 + MIN_REFUSING, 0, 1);
        assert_eq!((t.0, t.1.map(|t| t.state)), (true, Some(GuardState::Accepting)));
    }

    #[test]
    fn late_pacer_refuses_only_on_a_loaded_thread_and_resumes_below_resume() {
        let mut g = guard();
        let t0 = Time::from_secs(100);
        assert_eq!(g.observe(t0, &[MediaLoad { busy: 0.3, late_ms: 9.0 }], 0, 1), None, "a late pacer on a light thread: the machine's noise");
        let t = g.observe(t0, &[MediaLoad { busy: 0.78, late_ms: 6.0 }], 0, 1).expect("late and loaded");
        assert_eq!(t.cause, GuardCause::Late);
        assert_eq!(g.observe(t0 + Duration::from_secs(5), &[MediaLoad { busy: 0.76, late_ms: 0.1 }], 0, 1), None, "on time but not below resume");
        assert!(g.observe(t0 + Duration::from_secs(6), &[MediaLoad { busy: 0.74, late_ms: 9.0 }], 0, 1).is_some(), "below resume: accepting");
    }

    #[test]
    fn disabled_guard_ignores_load_but_keeps_the_static_cap() {
        let mut g = CapacityGuard::new(GuardConfig { enabled: false, max_parked_per_thread: 2, ..*guard().config() });
        let t0 = Time::from_secs(1);
        assert_eq!(g.observe(t0, &[busy(1.0), busy(1.0)], 3, 2), None);
        assert!(g.admit(t0, 3, 2).0, "3 < 2 × 2 threads");
        let (ok, t) = g.admit(t0, 4, 2);
        assert!(!ok);
        assert_eq!(t.map(|t| (t.state, t.cause)), Some((GuardState::Refusing, GuardCause::MaxParked)));
        assert_eq!(g.admit(t0, 4, 2), (false, None), "one transition only");
        // One call leaves: accepting again at once (the cap is exact, no hold-off).
        let (ok, t) = g.admit(t0, 3, 2);
        assert!(ok);
        assert_eq!(t.map(|t| t.state), Some(GuardState::Accepting));
    }

    #[test]
    fn parks_between_reports_are_projected_onto_the_last_measure() {
        let mut g = guard();
        let t0 = Time::from_secs(1);
        // 1,000 parked at 0.70 busy: 1,200 would be 0.84 (taken), 1,215 would be 0.8505 (refused).
        assert_eq!(g.observe(t0, &[busy(0.70)], 1000, 1), None);
        assert!(g.admit(t0, 1200, 1).0);
        let (ok, t) = g.admit(t0, 1215, 1);
        assert!(!ok);
        assert_eq!(t.map(|t| t.cause), Some(GuardCause::Busy));
        // Too few parked at the report to project from: the measure alone counts.
        let mut g = guard();
        g.observe(t0, &[busy(0.70)], PROJECT_FROM - 1, 1);
        assert!(g.admit(t0, 10 * PROJECT_FROM, 1).0);
    }

    #[test]
    fn loads_are_kept_per_thread_for_the_gauge() {
        let mut g = guard();
        g.observe(Time::from_secs(1), &[busy(0.1), busy(0.2)], 0, 2);
        assert_eq!(g.loads().iter().map(|l| l.busy).collect::<Vec<_>>(), vec![0.1, 0.2]);
    }
}
