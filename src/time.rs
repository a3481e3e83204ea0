//! Time as a parameter.
//!
//! Every state machine in parkd takes `now: Time` as an argument and never reads a clock.
//! `Time` is an absolute instant in microseconds since the Unix epoch, so deadlines stored in a
//! parked call are plain data that can be journaled and restored after a restart. Only the io
//! layer ([`crate::io::clock`]) produces `Time` values from the real clock; tests make them from
//! numbers and advance them at will.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// An absolute point in time: microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Time(u64);

impl Time {
    pub const ZERO: Time = Time(0);

    pub const fn from_micros(us: u64) -> Time {
        Time(us)
    }
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms * 1_000)
    }
    pub const fn from_secs(s: u64) -> Time {
        Time(s * 1_000_000)
    }
    pub const fn as_micros(self) -> u64 {
        self.0
    }
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000
    }
    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000
    }
    /// `self - earlier`, or zero when `earlier` is later than `self`.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(d.as_micros().min(u64::MAX as u128) as u64))
    }
}

impl AddAssign<Duration> for Time {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(self.0.saturating_sub(d.as_micros().min(u64::MAX as u128) as u64))
    }
}

impl Sub<Time> for Time {
    type Output = Duration;
    fn sub(self, earlier: Time) -> Duration {
        self.saturating_since(earlier)
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T+{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_orders() {
        let t = Time::from_secs(10);
        assert_eq!(t + Duration::from_millis(500), Time::from_millis(10_500));
        assert_eq!(t - Duration::from_secs(20), Time::ZERO);
        assert_eq!(Time::from_secs(3) - Time::from_secs(5), Duration::ZERO);
        assert!(Time::from_millis(1) < Time::from_millis(2));
    }
}
