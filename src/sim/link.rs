//! A seeded network path: latency, jitter, loss and duplication, decided per datagram.
//!
//! Like str0m's netem this is itself sans-IO: [`Link::send`] takes `now` and says when (if ever)
//! each copy of a datagram arrives. Reordering is what jitter does: two datagrams sent 20 ms
//! apart over a link with 30 ms of jitter often arrive the other way round.

use crate::time::Time;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// How one direction of a path behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way latency every datagram has.
    pub delay: Duration,
    /// Extra latency drawn uniformly from `0..=jitter` per datagram (reorders datagrams sent closer
    /// together than the jitter).
    pub jitter: Duration,
    /// Probability (0.0–1.0) that a datagram is lost.
    pub loss: f64,
    /// Probability (0.0–1.0) that a datagram that got through arrives twice (the copy with its own delay).
    pub duplicate: f64,
}

impl LinkConfig {
    /// A LAN: 1 ms, no jitter, no loss.
    pub const fn clean() -> LinkConfig {
        LinkConfig { delay: Duration::from_millis(1), jitter: Duration::ZERO, loss: 0.0, duplicate: 0.0 }
    }

    /// A bad path: `loss` (e.g. `0.10`), 20 ms ± 40 ms of jitter (reorders 20 ms RTP) and 2 % duplicates.
    pub const fn lossy(loss: f64) -> LinkConfig {
        LinkConfig { delay: Duration::from_millis(20), jitter: Duration::from_millis(40), loss, duplicate: 0.02 }
    }
}

/// One direction of a path, with its own random stream (so traffic on one path does not change
/// the fate of datagrams on another).
#[derive(Debug)]
pub struct Link {
    pub cfg: LinkConfig,
    rng: SmallRng,
    /// Datagrams offered to the link.
    pub sent: u64,
    /// Datagrams the link dropped.
    pub lost: u64,
    /// Extra copies the link delivered.
    pub duplicated: u64,
}

impl Link {
    /// A link behaving as `cfg`, its randomness drawn from `seed`.
    pub fn new(cfg: LinkConfig, seed: u64) -> Link {
        Link { cfg, rng: SmallRng::seed_from_u64(seed), sent: 0, lost: 0, duplicated: 0 }
    }

    /// The arrival times of a datagram sent at `now`: none (lost), one, or two (duplicated).
    pub fn send(&mut self, now: Time) -> ArrivalTimes {
        self.sent += 1;
        if self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss.min(1.0)) {
            self.lost += 1;
            return ArrivalTimes([None, None]);
        }
        let first = now + self.latency();
        let second = if self.cfg.duplicate > 0.0 && self.rng.gen_bool(self.cfg.duplicate.min(1.0)) {
            self.duplicated += 1;
            Some(now + self.latency())
        } else {
            None
        };
        ArrivalTimes([Some(first), second])
    }

    fn latency(&mut self) -> Duration {
        let j = self.cfg.jitter.as_micros() as u64;
        let extra = if j == 0 { 0 } else { self.rng.gen_range(0..=j) };
        self.cfg.delay + Duration::from_micros(extra)
    }
}

/// Up to two arrival times (see [`Link::send`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrivalTimes([Option<Time>; 2]);

impl IntoIterator for ArrivalTimes {
    type Item = Time;
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<Time>, 2>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_fate_and_rates_near_the_config() {
        let cfg = LinkConfig::lossy(0.10);
        let run = |seed| {
            let mut l = Link::new(cfg, seed);
            let t0 = Time::from_secs(1);
            let arrivals: Vec<Vec<Time>> = (0..10_000).map(|i| l.send(t0 + Duration::from_millis(20 * i)).into_iter().collect()).collect();
            (arrivals, l.lost, l.duplicated)
        };
        let (a, lost, dup) = run(7);
        assert_eq!(a, run(7).0, "deterministic for a seed");
        assert_ne!(a, run(8).0, "another seed, another fate");
        assert!((800..1200).contains(&lost), "about 10 % lost: {lost}");
        assert!((100..300).contains(&dup), "about 2 % of the rest duplicated: {dup}");
        let t0 = Time::from_secs(1);
        for (i, times) in a.iter().enumerate() {
            let sent = t0 + Duration::from_millis(20 * i as u64);
            for t in times {
                assert!(*t >= sent + cfg.delay && *t <= sent + cfg.delay + cfg.jitter, "latency within delay..delay+jitter");
            }
        }
        let firsts: Vec<Time> = a.iter().filter_map(|t| t.first().copied()).collect();
        assert!(firsts.windows(2).any(|w| w[1] < w[0]), "40 ms of jitter reorders 20 ms spaced datagrams");
    }

    #[test]
    fn clean_link_delivers_everything_in_order() {
        let mut l = Link::new(LinkConfig::clean(), 1);
        let t: Vec<Time> = (0..100).flat_map(|i| l.send(Time::from_millis(i))).collect();
        assert_eq!(t.len(), 100);
        assert!(t.windows(2).all(|w| w[0] < w[1]));
    }
}
