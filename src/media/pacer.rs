//! The hold pacer: one timing wheel for every hold stream.
//!
//! The 20 ms packet period is split into 20 slots of 1 ms. Slot `s` is due at every absolute
//! millisecond `t` with `t % 20 == s`. A new stream joins a slot that is in use and holds fewer than
//! [`SLOT_FILL`] streams (the fullest such), else the least-loaded slot (or it goes beside the streams of
//! legs sharing its port, see [`Pacer::add_to`]). So a handful of parked calls costs the media thread
//! 50 wake-ups a second, not 1,000 (one per occupied slot per period), and a large load is still spread
//! evenly over the period. [`Pacer::due`] serves every slot whose time has come since the
//! last call, catching up at most one period: a stream is served at most once per call, at its
//! latest due time, so a late pacer skips frames instead of bursting. Work per call is
//! O(20 + streams due) and nothing is allocated (slot Vecs are reused).

use super::MediaLegId;
use crate::time::Time;

/// Slots per period.
pub const SLOTS: usize = 20;
/// Period in milliseconds (one G.711 frame).
pub const PERIOD_MS: u64 = 20;
/// Streams a slot takes before another slot is opened: up to this many hold packets leave in one
/// burst (≈ 0.1 ms of sending), in exchange for fewer wake-ups while few calls are parked.
pub const SLOT_FILL: usize = 32;

/// Handle of a stream in the wheel, returned by [`Pacer::add`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheduled {
    /// The slot the stream lives in.
    pub slot: u8,
    /// Absolute millisecond of its first frame.
    pub first_ms: u64,
}

/// The timing wheel. Streams are identified by their leg's [`MediaLegId`].
#[derive(Debug)]
pub struct Pacer {
    slots: [Vec<MediaLegId>; SLOTS],
    /// Bit `s` set when slot `s` is non-empty.
    mask: u32,
    /// Every slot time below this millisecond has been served.
    served_until_ms: u64,
    total: usize,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new()
    }
}

impl Pacer {
    /// An empty wheel.
    pub fn new() -> Pacer {
        Pacer { slots: Default::default(), mask: 0, served_until_ms: 0, total: 0 }
    }

    /// Number of scheduled streams.
    pub fn len(&self) -> usize {
        self.total
    }

    /// True when no stream is scheduled.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Number of streams in each slot (for tests and metrics).
    pub fn slot_loads(&self) -> [usize; SLOTS] {
        let mut out = [0; SLOTS];
        for (o, s) in out.iter_mut().zip(self.slots.iter()) {
            *o = s.len();
        }
        out
    }

    /// Schedules `leg` in the fullest slot in use with room (fewer than [`SLOT_FILL`] streams), else in
    /// the least-loaded slot; its first frame is the first due time of that slot at or after `now`
    /// that has not been served yet.
    pub fn add(&mut self, now: Time, leg: MediaLegId) -> Scheduled {
        self.add_to(now, leg, None)
    }

    /// Schedules `leg` in `slot` when given (e.g. beside the other legs of its port, so they
    /// leave in one `sendmmsg`), else as [`Pacer::add`] does.
    pub fn add_to(&mut self, now: Time, leg: MediaLegId, slot: Option<u8>) -> Scheduled {
        if self.total == 0 {
            // Nothing is pending: fast-forward so `next_deadline` does not report stale slots.
            self.served_until_ms = self.served_until_ms.max(now.as_millis());
        }
        let mut best = 0usize;
        for (i, s) in self.slots.iter().enumerate() {
            if s.len() < self.slots[best].len() {
                best = i;
            }
        }
        let open = self.slots.iter().enumerate().filter(|(_, s)| !s.is_empty() && s.len() < SLOT_FILL).max_by_key(|(i, s)| (s.len(), SLOTS - i));
        if let Some((i, _)) = open {
            best = i;
        }
        if let Some(s) = slot.filter(|s| (*s as usize) < SLOTS) {
            best = s as usize;
        }
        self.slots[best].push(leg);
        self.mask |= 1 << best;
        self.total += 1;
        let from = now.as_millis().max(self.served_until_ms);
        let offset = (best as u64 + PERIOD_MS - from % PERIOD_MS) % PERIOD_MS;
        Scheduled { slot: best as u8, first_ms: from + offset }
    }

    /// Unschedules `leg` from `slot`. Returns false if it was not there.
    pub fn remove(&mut self, slot: u8, leg: MediaLegId) -> bool {
        let Some(v) = self.slots.get_mut(slot as usize) else { return false };
        let Some(i) = v.iter().position(|p| *p == leg) else { return false };
        v.swap_remove(i);
        if v.is_empty() {
            self.mask &= !(1 << slot);
        }
        self.total -= 1;
        true
    }

    /// The next slot time with work that has not been served, in O(1) (a rotate of the mask).
    pub fn next_deadline(&self) -> Option<Time> {
        if self.mask == 0 {
            return None;
        }
        let start = (self.served_until_ms % PERIOD_MS) as u32;
        // Rotate so bit 0 is slot `start`, then find the first non-empty slot from there.
        let full: u32 = (1 << SLOTS) - 1;
        let rotated = ((self.mask >> start) | (self.mask << (SLOTS as u32 - start))) & full;
        let ahead = rotated.trailing_zeros() as u64;
        Some(Time::from_millis(self.served_until_ms + ahead))
    }

    /// Calls `serve(slot_time_ms, leg)` for every stream whose slot time is in
    /// `(last served, now]`, limited to the last period. Returns the number of streams served.
    pub fn due(&mut self, now: Time, mut serve: impl FnMut(u64, MediaLegId)) -> usize {
        let now_ms = now.as_millis();
        if now_ms < self.served_until_ms {
            return 0;
        }
        let mut served = 0;
        self.peek_due(now, |t, leg| {
            serve(t, leg);
            served += 1;
        });
        self.served_until_ms = now_ms + 1;
        served
    }

    /// Calls `look(slot_time_ms, leg)` for every stream [`Pacer::due`] would serve at `now`, in the same order,
    /// without serving them (the media plane brings their state into the cache before it serves them).
    pub fn peek_due(&self, now: Time, mut look: impl FnMut(u64, MediaLegId)) {
        let now_ms = now.as_millis();
        if now_ms < self.served_until_ms {
            return;
        }
        let from = self.served_until_ms.max((now_ms + 1).saturating_sub(PERIOD_MS));
        for t in from..=now_ms {
            let slot = (t % PERIOD_MS) as usize;
            if self.mask & (1 << slot) == 0 {
                continue;
            }
            for leg in self.slots[slot].iter() {
                look(t, *leg);
            }
        }
    }
}

/// Upper bounds (µs, inclusive) of the lateness buckets: 0.5, 1, 2, 5, 10, 20 ms; a last bucket holds the rest.
pub const LATENESS_BOUNDS_US: [u64; 6] = [500, 1_000, 2_000, 5_000, 10_000, 20_000];

/// How late served pacer slots were (time of serving − slot due time), in fixed buckets: O(1) per
/// observation, no allocation. `buckets[i]` counts observations `≤ LATENESS_BOUNDS_US[i]` and above the
/// previous bound (not cumulative); `buckets[6]` counts those above 20 ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacerLateness {
    /// Per-bucket counts, see [`LATENESS_BOUNDS_US`].
    pub buckets: [u64; LATENESS_BOUNDS_US.len() + 1],
    /// Sum of all observations, µs.
    pub sum_us: u64,
    /// Number of observations.
    pub count: u64,
}

impl PacerLateness {
    /// Records one slot served `late_us` microseconds after its due time.
    pub fn observe(&mut self, late_us: u64) {
        let i = LATENESS_BOUNDS_US.iter().position(|b| late_us <= *b).unwrap_or(LATENESS_BOUNDS_US.len());
        if let Some(c) = self.buckets.get_mut(i) {
            *c += 1;
        }
        self.sum_us = self.sum_us.saturating_add(late_us);
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(port: u16) -> MediaLegId {
        MediaLegId::solo(port)
    }

    #[test]
    fn few_streams_share_one_slot_and_first_due_time() {
        let mut p = Pacer::new();
        let now = Time::from_millis(1_000_005);
        let a = p.add(now, leg(10));
        assert_eq!(a.slot, 0);
        assert_eq!(a.first_ms, 1_000_020);
        let b = p.add(now, leg(12));
        assert_eq!(b.slot, 0, "joins the slot in use: one wake-up per period for both");
        assert_eq!(b.first_ms, 1_000_020);
        for i in 0..(SLOT_FILL - 2) as u16 {
            p.add(now, leg(14 + 2 * i));
        }
        assert_eq!(p.slot_loads()[0], SLOT_FILL);
        let c = p.add(now, leg(100));
        assert_eq!(c.slot, 1, "a full slot opens the next one");
        assert_eq!(c.first_ms, 1_000_021);
        assert!(p.remove(c.slot, leg(100)));
        assert!(!p.remove(c.slot, leg(100)));
        assert_eq!(p.len(), SLOT_FILL);
    }

    #[test]
    fn many_streams_spread_evenly_over_the_period() {
        let mut p = Pacer::new();
        let now = Time::from_millis(1_000_000);
        for i in 0..(SLOTS * SLOT_FILL * 3) as u16 {
            p.add(now, leg(i));
        }
        assert_eq!(p.slot_loads(), [SLOT_FILL * 3; SLOTS]);
        // A stream leaving makes its slot the one the next stream takes.
        assert!(p.remove(7, p.slots[7][0]));
        assert_eq!(p.add(now, leg(60_000)).slot, 7);
    }

    #[test]
    fn a_partly_filled_slot_is_topped_up_before_a_new_one_opens() {
        let mut p = Pacer::new();
        let now = Time::from_millis(1_000_000);
        for i in 0..(SLOT_FILL + 3) as u16 {
            p.add(now, leg(i));
        }
        // Slot 0 full, slot 1 has 3; slot 0 loses two streams: the next goes to the fuller slot 0.
        let first = p.slots[0][0];
        let second = p.slots[0][1];
        assert!(p.remove(0, first) && p.remove(0, second));
        assert_eq!(p.add(now, leg(60_000)).slot, 0);
        assert_eq!(p.add(now, leg(60_002)).slot, 0);
        assert_eq!(p.add(now, leg(60_004)).slot, 1);
    }

    #[test]
    fn next_deadline_wraps_around_the_period() {
        let mut p = Pacer::new();
        assert_eq!(p.next_deadline(), None);
        let now = Time::from_millis(1_000_000);
        p.due(now, |_, _| {}); // served_until = 1_000_001 (slot 1)
        let s = p.add(now, leg(2)); // empty wheel: the least-loaded slot, 0
        assert_eq!(s.slot, 0);
        assert_eq!(p.next_deadline(), Some(Time::from_millis(1_000_020)));
        let mut seen = vec![];
        p.due(Time::from_millis(1_000_019), |t, port| seen.push((t, port)));
        assert!(seen.is_empty());
        p.due(Time::from_millis(1_000_020), |t, port| seen.push((t, port)));
        assert_eq!(seen, vec![(1_000_020, leg(2))]);
        assert_eq!(p.next_deadline(), Some(Time::from_millis(1_000_040)));
    }

    /// A pacer served up to `now`, then given `n` streams at `now`.
    fn served_with_streams(now: Time, n: u16) -> Pacer {
        let mut p = Pacer::new();
        p.due(now, |_, _| {});
        for port in 0..n {
            p.add(now, leg(port));
        }
        p
    }

    #[test]
    fn late_poll_serves_each_stream_once_at_its_latest_slot() {
        let mut p = served_with_streams(Time::from_millis(1_000_000), 40);
        let mut seen = vec![];
        // 95 ms late: only the last period is served.
        p.due(Time::from_millis(1_000_095), |t, port| seen.push((t, port)));
        assert_eq!(seen.len(), 40);
        assert!(seen.iter().all(|(t, _)| (1_000_076..=1_000_095).contains(t)));
    }

    #[test]
    fn peek_due_sees_what_due_serves_and_serves_nothing() {
        let mut p = served_with_streams(Time::from_millis(1_000_000), 70);
        let at = Time::from_millis(1_000_030);
        let mut peeked = vec![];
        p.peek_due(at, |t, l| peeked.push((t, l)));
        let mut again = vec![];
        p.peek_due(at, |t, l| again.push((t, l)));
        assert_eq!(peeked, again, "peeking changes nothing");
        let mut served = vec![];
        assert_eq!(p.due(at, |t, l| served.push((t, l))), 70);
        assert_eq!(peeked, served);
        let mut after = vec![];
        p.peek_due(at, |t, l| after.push((t, l)));
        assert!(after.is_empty(), "served: nothing due until the next slot");
    }

    #[test]
    fn lateness_buckets_are_inclusive_upper_bounds() {
        let mut l = PacerLateness::default();
        for us in [0, 500, 501, 3_000, 20_000, 20_001, 1_000_000] {
            l.observe(us);
        }
        assert_eq!(l.buckets, [2, 1, 0, 1, 0, 1, 2]);
        assert_eq!(l.count, 7);
        assert_eq!(l.sum_us, 1_044_002);
    }
}
