//! A fixed-bucket histogram of durations in microseconds (10 µs buckets up to 2 s, then one
//! overflow bucket), plus the exact maximum.

const BUCKET_US: u64 = 10;
const BUCKETS: usize = 200_000;

/// Latency / inter-arrival histogram.
pub struct Hist {
    counts: Vec<u64>,
    n: u64,
    max_us: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist { counts: vec![0; BUCKETS + 1], n: 0, max_us: 0 }
    }
}

impl Hist {
    pub fn add(&mut self, us: u64) {
        let i = ((us / BUCKET_US) as usize).min(BUCKETS);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.n += 1;
        self.max_us = self.max_us.max(us);
    }
    pub fn count(&self) -> u64 {
        self.n
    }
    pub fn max_us(&self) -> u64 {
        self.max_us
    }
    /// The `q`-quantile (0..=1) in µs: upper edge of its bucket, capped at the max.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let target = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return ((i as u64 + 1) * BUCKET_US).min(self.max_us);
            }
        }
        self.max_us
    }
    pub fn ms(&self, q: f64) -> f64 {
        self.quantile_us(q) as f64 / 1000.0
    }
}
