//! Transaction timers (RFC 3261 §17, table 4 of appendix A; RFC 6026 L and M) as absolute deadlines.
//!
//! * [`TimerKind`] names the timers; each transaction keeps a `TimerTable` of deadlines indexed by it.
//! * `TimerHeap` is the one layer-wide min-heap of `(deadline, owner)`. Deletion is lazy: re-arming or
//!   clearing a timer only changes the table, and a popped heap entry whose deadline no longer equals the
//!   owner's table entry (or whose owner's generation is gone) is skipped. Every deadline is at most 64·T1
//!   ahead, so stale entries drain within that time.
//! * [`crate::txn::TimerConfig`] is the one place that knows T1/T2/T4 and which timers reliable transports skip.

use crate::sip::Transport;
use crate::time::Time;
use crate::txn::TimerConfig;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// The RFC 3261 / RFC 6026 transaction timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum TimerKind {
    /// INVITE client: request retransmission (UDP).
    A = 0,
    /// INVITE client: transaction timeout (also the 64·T1 guard after a CANCEL, RFC 3261 §9.1).
    B,
    /// INVITE client: wait in Completed for final-response retransmissions.
    D,
    /// Non-INVITE client: request retransmission (UDP).
    E,
    /// Non-INVITE client: transaction timeout.
    F,
    /// INVITE server: final-response retransmission (UDP).
    G,
    /// INVITE server: wait for the ACK to a non-2xx final.
    H,
    /// INVITE server: wait in Confirmed for ACK retransmissions.
    I,
    /// Non-INVITE server: wait in Completed for request retransmissions.
    J,
    /// Non-INVITE client: wait in Completed for response retransmissions.
    K,
    /// INVITE server, RFC 6026 Accepted state lifetime.
    L,
    /// INVITE client, RFC 6026 Accepted state lifetime.
    M,
}

impl TimerKind {
    /// Number of timer kinds (size of a `TimerTable`).
    pub const COUNT: usize = 12;
}

/// Per-transaction deadlines, one slot per [`TimerKind`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TimerTable([Option<Time>; TimerKind::COUNT]);

impl TimerTable {
    pub(crate) fn get(&self, kind: TimerKind) -> Option<Time> {
        self.0.get(kind as usize).copied().flatten()
    }
    fn set(&mut self, kind: TimerKind, at: Option<Time>) {
        if let Some(slot) = self.0.get_mut(kind as usize) {
            *slot = at;
        }
    }
    /// Disarms `kind`; its heap entry becomes stale.
    pub(crate) fn clear(&mut self, kind: TimerKind) {
        self.set(kind, None);
    }
}

/// Which slab a timer's owner lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Side {
    Server,
    Client,
}

/// What a heap entry points at: an owner transaction (slab index + generation) and which of its timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TimerRef {
    pub side: Side,
    pub idx: u32,
    pub gen: u32,
    pub kind: TimerKind,
}

/// The layer-wide timer queue: a min-heap with lazy deletion.
#[derive(Debug, Default)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Reverse<(Time, TimerRef)>>,
}

impl TimerHeap {
    /// Sets `table[r.kind] = at` and queues the entry. Any earlier entry for that slot becomes stale.
    pub(crate) fn arm(&mut self, table: &mut TimerTable, r: TimerRef, at: Time) {
        table.set(r.kind, Some(at));
        self.heap.push(Reverse((at, r)));
    }

    /// The earliest queued deadline. It may belong to a stale entry, in which case it is early: calling
    /// `handle_timeout` then merely drops the entry (the contract allows early calls).
    pub(crate) fn peek(&self) -> Option<Time> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Pops the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<(Time, TimerRef)> {
        match self.heap.peek() {
            Some(Reverse((t, _))) if *t <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Queued entries, stale ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

/// How long a transaction waits before it gives up: 64·T1.
fn sixty_four_t1(cfg: &TimerConfig) -> Duration {
    cfg.t1.saturating_mul(64)
}

impl TimerConfig {
    /// T1/T2/T4 forced to at least 1 ms so a doubling schedule always advances (a zero T1 would spin).
    pub(crate) fn sanitized(self) -> TimerConfig {
        let min = Duration::from_millis(1);
        TimerConfig { t1: self.t1.max(min), t2: self.t2.max(min), t4: self.t4.max(min) }
    }

    /// Initial duration of `kind` on `transport` (RFC 3261 §17 and table 4; RFC 6026 §8.11 for L/M).
    /// `None`: the timer is not used on this transport (A, E, G on reliable transports).
    /// `Some(ZERO)`: the state is left at once (D, I, J, K on reliable transports).
    pub(crate) fn duration(&self, kind: TimerKind, transport: Transport) -> Option<Duration> {
        let reliable = transport.is_reliable();
        let d = match kind {
            TimerKind::A | TimerKind::E | TimerKind::G if reliable => return None,
            TimerKind::A | TimerKind::E | TimerKind::G => self.t1,
            TimerKind::B | TimerKind::F | TimerKind::H | TimerKind::L | TimerKind::M => sixty_four_t1(self),
            TimerKind::D | TimerKind::I | TimerKind::J | TimerKind::K if reliable => Duration::ZERO,
            // "at least 32 s" (§17.1.1.2); 64·T1 is 32 s with the default T1.
            TimerKind::D => sixty_four_t1(self).max(Duration::from_secs(32)),
            TimerKind::I | TimerKind::K => self.t4,
            TimerKind::J => sixty_four_t1(self),
        };
        Some(d)
    }

    /// The interval after `prev` for a retransmission timer: A doubles without cap (§17.1.1.2);
    /// E and G double up to T2 (§17.1.2.2, §17.2.1, and §13.3.1.4 for 2xx).
    pub(crate) fn next_interval(&self, kind: TimerKind, prev: Duration) -> Duration {
        let doubled = prev.saturating_mul(2);
        match kind {
            TimerKind::A => doubled,
            _ => doubled.min(self.t2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_4_durations_udp_and_tcp() {
        let c = TimerConfig::default();
        let udp = Transport::Udp;
        let tcp = Transport::Tcp;
        assert_eq!(c.duration(TimerKind::A, udp), Some(Duration::from_millis(500)));
        assert_eq!(c.duration(TimerKind::A, tcp), None);
        assert_eq!(c.duration(TimerKind::E, tcp), None);
        assert_eq!(c.duration(TimerKind::G, tcp), None);
        for k in [TimerKind::B, TimerKind::F, TimerKind::H, TimerKind::L, TimerKind::M] {
            assert_eq!(c.duration(k, udp), Some(Duration::from_secs(32)), "{k:?}");
            assert_eq!(c.duration(k, tcp), Some(Duration::from_secs(32)), "{k:?}");
        }
        assert_eq!(c.duration(TimerKind::D, udp), Some(Duration::from_secs(32)));
        assert_eq!(c.duration(TimerKind::J, udp), Some(Duration::from_secs(32)));
        assert_eq!(c.duration(TimerKind::I, udp), Some(Duration::from_secs(5)));
        assert_eq!(c.duration(TimerKind::K, udp), Some(Duration::from_secs(5)));
        for k in [TimerKind::D, TimerKind::I, TimerKind::J, TimerKind::K] {
            assert_eq!(c.duration(k, tcp), Some(Duration::ZERO), "{k:?}");
        }
    }

    #[test]
    fn a_doubles_uncapped_e_and_g_cap_at_t2() {
        let c = TimerConfig::default();
        assert_eq!(c.next_interval(TimerKind::A, Duration::from_secs(4)), Duration::from_secs(8));
        assert_eq!(c.next_interval(TimerKind::E, Duration::from_secs(2)), Duration::from_secs(4));
        assert_eq!(c.next_interval(TimerKind::E, Duration::from_secs(4)), Duration::from_secs(4));
        assert_eq!(c.next_interval(TimerKind::G, Duration::from_secs(4)), Duration::from_secs(4));
    }

    #[test]
    fn heap_skips_nothing_itself_but_table_tells_stale() {
        let mut heap = TimerHeap::default();
        let mut table = TimerTable::default();
        let r = TimerRef { side: Side::Server, idx: 0, gen: 0, kind: TimerKind::G };
        heap.arm(&mut table, r, Time::from_secs(2));
        heap.arm(&mut table, r, Time::from_secs(1)); // re-armed earlier: the 2 s entry is stale
        assert_eq!(heap.peek(), Some(Time::from_secs(1)));
        assert_eq!(heap.pop_due(Time::from_millis(999)), None);
        assert_eq!(heap.pop_due(Time::from_secs(1)), Some((Time::from_secs(1), r)));
        let (t, _) = heap.pop_due(Time::from_secs(5)).unwrap();
        assert_ne!(table.get(TimerKind::G), Some(t), "2 s entry no longer matches the table");
        assert_eq!(heap.len(), 0);
    }

    #[test]
    fn zero_t1_is_sanitized() {
        let c = TimerConfig { t1: Duration::ZERO, t2: Duration::ZERO, t4: Duration::ZERO }.sanitized();
        assert!(c.t1 > Duration::ZERO && c.t2 > Duration::ZERO && c.t4 > Duration::ZERO);
    }
}
