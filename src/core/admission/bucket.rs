//! The two counters a source's state is made of: a token bucket (a rate with a burst) and a per-second window
//! (how many of something happened in the current second). Plain data, time only through `now`.

use crate::time::Time;

/// Micro-tokens per token: the bucket counts in integers, so refills are exact and replayable.
const MICRO: u64 = 1_000_000;

/// A token bucket: `burst` tokens when full, refilled at `per_second` tokens per second. A rate of 0 means
/// "no limit" (every take succeeds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Tokens × [`MICRO`] at `at`.
    micro: u64,
    at: Time,
}

/// The shape of a bucket: its rate and its capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    /// At least 1 (a bucket that can never hold a whole token would refuse everything).
    pub burst: u32,
}

impl Rate {
    pub fn new(per_second: f64, burst: u32) -> Rate {
        let per_second = if per_second.is_finite() && per_second > 0.0 { per_second } else { 0.0 };
        Rate { per_second, burst: burst.max(1) }
    }
    fn unlimited(&self) -> bool {
        self.per_second == 0.0
    }
    fn capacity(&self) -> u64 {
        u64::from(self.burst) * MICRO
    }
}

impl Bucket {
    /// A full bucket of shape `rate` at `now`.
    pub fn full(rate: Rate, now: Time) -> Bucket {
        Bucket { micro: rate.capacity(), at: now }
    }

    /// The micro-tokens the bucket holds at `now` (time never runs backwards here: an older `now` adds
    /// nothing).
    fn level(&self, rate: Rate, now: Time) -> u64 {
        let elapsed_us = now.as_micros().saturating_sub(self.at.as_micros());
        // per_second tokens/s = per_second micro-tokens/µs.
        let added = (elapsed_us as f64 * rate.per_second).min(rate.capacity() as f64) as u64;
        self.micro.saturating_add(added).min(rate.capacity())
    }

    /// Takes one token at `now`; false (and nothing taken) when the bucket is empty.
    pub fn take(&mut self, rate: Rate, now: Time) -> bool {
        if rate.unlimited() {
            return true;
        }
        let level = self.level(rate, now);
        self.at = self.at.max(now);
        if level >= MICRO {
            self.micro = level - MICRO;
            true
        } else {
            self.micro = level;
            false
        }
    }

    /// Whether the bucket is full again at `now` (it then says nothing a fresh bucket would not).
    pub fn is_full(&self, rate: Rate, now: Time) -> bool {
        rate.unlimited() || self.level(rate, now) >= rate.capacity()
    }
}

/// How many times something happened in the current second (seconds counted from the epoch of `Time`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    second: u64,
    count: u32,
}

impl Window {
    /// Counts one occurrence at `now` if fewer than `max` happened in `now`'s second; returns whether it did.
    pub fn try_count(&mut self, now: Time, max: u32) -> bool {
        self.roll(now);
        if self.count < max {
            self.count += 1;
            true
        } else {
            false
        }
    }

    /// Occurrences counted in `now`'s second.
    pub fn count_at(&self, now: Time) -> u32 {
        if self.second == now.as_secs() {
            self.count
        } else {
            0
        }
    }

    fn roll(&mut self, now: Time) {
        let s = now.as_secs();
        if s != self.second {
            self.second = s;
            self.count = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_spends_its_burst_then_refills_at_its_rate() {
        let rate = Rate::new(10.0, 20);
        let t0 = Time::from_secs(1_000);
        let mut b = Bucket::full(rate, t0);
        assert!((0..20).all(|_| b.take(rate, t0)), "the burst");
        assert!(!b.take(rate, t0), "empty");
        // 10 tokens/s: one token every 100 ms.
        assert!(!b.take(rate, t0 + Duration::from_millis(99)));
        assert!(b.take(rate, t0 + Duration::from_millis(100)));
        assert!(!b.take(rate, t0 + Duration::from_millis(150)));
        let t1 = t0 + Duration::from_secs(1) + Duration::from_millis(100);
        assert_eq!((0..100).filter(|_| b.take(rate, t1)).count(), 10, "a second later: ten more");
        assert!(!b.is_full(rate, t1));
        assert!(b.is_full(rate, t1 + Duration::from_secs(2)), "20 tokens at 10/s: full after 2 s");
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.take(rate, t2)).count(), 20, "refill never exceeds the burst");
    }

    #[test]
    fn time_going_backwards_adds_nothing_and_zero_rate_is_unlimited() {
        let rate = Rate::new(1.0, 1);
        let t0 = Time::from_secs(50);
        let mut b = Bucket::full(rate, t0);
        assert!(b.take(rate, t0));
        assert!(!b.take(rate, Time::from_secs(10)), "an older now refills nothing");
        assert!(!b.take(rate, t0 + Duration::from_millis(999)));
        assert!(b.take(rate, t0 + Duration::from_secs(1)));
        let free = Rate::new(0.0, 0);
        let mut f = Bucket::full(free, t0);
        assert!((0..10_000).all(|_| f.take(free, t0)));
        assert_eq!(Rate::new(f64::NAN, 0), Rate { per_second: 0.0, burst: 1 });
    }

    #[test]
    fn window_counts_per_second() {
        let mut w = Window::default();
        let t = Time::from_millis(7_000);
        assert!((0..5).all(|_| w.try_count(t, 5)));
        assert!(!w.try_count(t + Duration::from_millis(999), 5), "same second");
        assert_eq!(w.count_at(t), 5);
        assert!(w.try_count(t + Duration::from_secs(1), 5), "next second");
        assert_eq!(w.count_at(t + Duration::from_secs(1)), 1);
        assert_eq!(w.count_at(t + Duration::from_secs(9)), 0);
    }
}
