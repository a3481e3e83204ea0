//! The clock the SIP engine and the media plane get their `now` from: wall time at start + monotonic elapsed
//! time. (Other io code reads `Instant::now()` for its own pacing: the wake gate, metrics, the probe.)
//!
//! `Time` is absolute (µs since the Unix epoch, so deadlines can be journaled), but the io loops
//! need it to never jump: [`Clock::now`] is the wall clock sampled once at construction plus an
//! [`Instant`] delta, so NTP steps after startup do not move parkd's time.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::time::Time;

/// A monotonic source of [`Time`]. Cheap to copy; share one per process or per io thread.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Time,
    start: Instant,
}

impl Clock {
    /// Samples the wall clock now (a pre-1970 system clock counts as the epoch).
    pub fn new() -> Clock {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Clock { base: Time::ZERO + since_epoch, start: Instant::now() }
    }

    /// The current time: start wall time + monotonic elapsed.
    pub fn now(&self) -> Time {
        self.base + self.start.elapsed()
    }

    /// Converts a `Time` to the `Instant` this clock would read then (for runtimes that want
    /// `Instant` deadlines).
    pub fn instant_at(&self, t: Time) -> Instant {
        self.start + t.saturating_since(self.base)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_near_wall_time_and_monotonic() {
        let c = Clock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        assert!(a.as_secs() > 1_600_000_000, "absolute time since the epoch");
        let later = a + std::time::Duration::from_millis(5);
        assert!(c.instant_at(later) >= c.start);
    }
}
