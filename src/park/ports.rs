//! RTP port allocation: each media leg gets a [`MediaLegId`] naming an even port (RTP) of the
//! configured range (the odd port above it is never handed out: the one above a block's first even port is
//! its media thread's RTCP port, see `media::plane_rtcp`) and its index among the legs sharing
//! that port. By default (`rtp_legs_per_port = 1`) every leg has a port of its own, handed out
//! lowest first, freed ports last. Pure bookkeeping; the io layer binds the sockets.
//!
//! With `k = rtp_legs_per_port > 1` a port carries up to `k` legs at once, which the media plane
//! tells apart by source address (see [`crate::media::demux`]). A phone whose RTP comes from the
//! address in its SDP is always told apart; one behind NAT is matched only while it is its port's
//! single leg that has not received a packet yet (is not latched). The pool cannot see latching
//! (it happens in the media plane), so it treats a leg as unlatched for [`LATCH_GRACE`] after
//! handing it out, and picks:
//! 1. the partly used port whose last hand-out is the oldest, if that is older than the grace
//!    (its legs have had time to latch): this packs legs onto few ports, so hold music goes out
//!    in large `sendmmsg` batches;
//! 2. else an unused port (lowest first, freed ports last);
//! 3. else the partly used port whose last hand-out is the oldest (fewest likely-unlatched legs).
//!
//! Every operation is O(1) amortised (queues with lazily dropped stale entries).

use std::collections::VecDeque;

use crate::media::MediaLegId;
use crate::time::Time;

/// The largest supported `rtp_legs_per_port` (one bit per share of a port).
pub const MAX_LEGS_PER_PORT: u16 = 64;

/// How long after being handed out a leg on a shared port is presumed not latched yet: the
/// answer, the ACK and the phone's first RTP packet take a few round trips.
pub const LATCH_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// The pool of RTP ports and of the leg slots on each.
#[derive(Clone, Debug)]
pub struct PortPool {
    legs_per_port: u16,
    first: u16,
    /// Ports with no leg, in hand-out order.
    unused: VecDeque<u16>,
    /// Ports with some legs and room for more, with the time of their last hand-out (µs), oldest
    /// first. An entry is stale (skipped) when the port is no longer partly used or was handed
    /// out again since.
    partly_used: VecDeque<(u16, u64)>,
    /// Per even port (index `(port - first) / 2`): bit `s` set when share `s` is in use.
    used: Vec<u64>,
    /// Per even port: time of its last hand-out (µs).
    last_taken: Vec<u64>,
    in_use: usize,
}

impl PortPool {
    /// Every even port in `lo..=hi`, one leg each, handed out lowest first.
    pub fn new(lo: u16, hi: u16) -> PortPool {
        PortPool::shared(lo, hi, 1)
    }

    /// Every even port in `lo..=hi`, up to `legs_per_port` legs each (clamped to
    /// `1..=`[`MAX_LEGS_PER_PORT`]).
    pub fn shared(lo: u16, hi: u16, legs_per_port: u16) -> PortPool {
        let first = lo + (lo % 2);
        let unused: VecDeque<u16> = PortPool::all_ports(lo, hi).collect();
        let n = unused.len();
        PortPool {
            legs_per_port: legs_per_port.clamp(1, MAX_LEGS_PER_PORT),
            first,
            unused,
            partly_used: VecDeque::new(),
            used: vec![0; n],
            last_taken: vec![0; n],
            in_use: 0,
        }
    }

    /// The even ports of the range (what the io layer binds).
    pub fn all_ports(lo: u16, hi: u16) -> impl Iterator<Item = u16> {
        let first = lo + (lo % 2);
        (first..=hi).step_by(2)
    }

    fn index(&self, port: u16) -> Option<usize> {
        let off = port.checked_sub(self.first)?;
        let i = usize::from(off / 2);
        (i < self.used.len()).then_some(i)
    }

    /// Legs in use on the port at index `i`.
    fn count(&self, i: usize) -> u16 {
        self.used.get(i).map_or(0, |u| u.count_ones() as u16)
    }

    /// Whether a `partly_used` entry still describes its port.
    fn is_current(&self, (port, at): (u16, u64)) -> bool {
        self.index(port).is_some_and(|i| {
            let c = self.count(i);
            c > 0 && c < self.legs_per_port && self.last_taken.get(i) == Some(&at)
        })
    }

    /// The front `partly_used` entry, after dropping stale ones.
    fn oldest_partly_used(&mut self) -> Option<(u16, u64)> {
        while let Some(&e) = self.partly_used.front() {
            if self.is_current(e) {
                return Some(e);
            }
            self.partly_used.pop_front();
        }
        None
    }

    /// A leg for a new call at `now` (see the module doc for the choice of port); `None` when
    /// every port is full.
    pub fn take(&mut self, now: Time) -> Option<MediaLegId> {
        let now_us = now.as_micros();
        let grace = LATCH_GRACE.as_micros() as u64;
        let port = match self.oldest_partly_used() {
            Some((port, at)) if at.saturating_add(grace) <= now_us => {
                self.partly_used.pop_front();
                port
            }
            oldest => match self.unused.pop_front() {
                Some(port) => port,
                None => {
                    let (port, _) = oldest?;
                    self.partly_used.pop_front();
                    port
                }
            },
        };
        let i = self.index(port)?;
        let used = self.used.get_mut(i)?;
        let share = (!*used).trailing_zeros() as u16;
        *used |= 1 << share;
        if let Some(t) = self.last_taken.get_mut(i) {
            *t = now_us;
        }
        if self.count(i) < self.legs_per_port {
            self.partly_used.push_back((port, now_us));
        }
        self.in_use += 1;
        Some(MediaLegId::new(port, share))
    }

    /// Returns a leg. A port left without legs goes to the back of the unused queue, so a port
    /// just freed is not handed to the next call while late packets for the old one may still
    /// arrive. Giving back a leg that is not taken does nothing.
    pub fn give_back(&mut self, leg: MediaLegId) {
        let k = self.legs_per_port;
        let (port, share) = (leg.port(), leg.share());
        let Some(i) = self.index(port) else { return };
        let Some(used) = self.used.get_mut(i) else { return };
        if share >= k || *used & (1 << share) == 0 {
            return;
        }
        let was_full = used.count_ones() as u16 >= k;
        *used &= !(1 << share);
        let now_empty = *used == 0;
        if now_empty {
            self.unused.push_back(port);
        } else if was_full {
            let at = self.last_taken.get(i).copied().unwrap_or(0);
            self.partly_used.push_back((port, at));
        }
        self.in_use -= 1;
    }

    /// Takes exactly `leg` (a leg restored from the journal after a restart, issue 17); false when it is
    /// outside the range or already taken. O(ports): done once per restored leg at startup.
    pub fn claim(&mut self, leg: MediaLegId) -> bool {
        let (port, share) = (leg.port(), leg.share());
        let Some(i) = self.index(port) else { return false };
        if share >= self.legs_per_port {
            return false;
        }
        let Some(used) = self.used.get_mut(i) else { return false };
        if *used & (1 << share) != 0 {
            return false;
        }
        let was_empty = *used == 0;
        *used |= 1 << share;
        let full = used.count_ones() as u16 >= self.legs_per_port;
        if was_empty {
            if let Some(pos) = self.unused.iter().position(|p| *p == port) {
                self.unused.remove(pos);
            }
        }
        if !full {
            let at = self.last_taken.get(i).copied().unwrap_or(0);
            self.partly_used.push_back((port, at));
        }
        self.in_use += 1;
        true
    }

    /// Legs handed out and not given back.
    pub fn in_use(&self) -> usize {
        self.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Time {
        Time::from_millis(1_000_000 + ms)
    }

    fn ports(ids: &[Option<MediaLegId>]) -> Vec<Option<u16>> {
        ids.iter().map(|i| i.map(MediaLegId::port)).collect()
    }

    #[test]
    fn hands_out_even_ports_and_reuses_freed_ones_last() {
        let mut p = PortPool::new(10001, 10007);
        assert_eq!(p.take(t(0)), Some(MediaLegId::solo(10002)));
        assert_eq!(p.take(t(0)), Some(MediaLegId::solo(10004)));
        p.give_back(MediaLegId::solo(10002));
        assert_eq!(p.take(t(0)), Some(MediaLegId::solo(10006)));
        assert_eq!(p.take(t(0)), Some(MediaLegId::solo(10002)));
        assert_eq!(p.take(t(0)), None);
        assert_eq!(p.in_use(), 3);
        p.give_back(MediaLegId::solo(10008));
        p.give_back(MediaLegId::new(10002, 1));
        assert_eq!(p.in_use(), 3, "legs not handed out are ignored");
    }

    #[test]
    fn shared_ports_carry_k_legs_with_distinct_ids() {
        let mut p = PortPool::shared(10000, 10000, 4);
        let ids: Vec<MediaLegId> = (0..4).map(|_| p.take(t(0)).unwrap()).collect();
        assert!(ids.iter().all(|i| i.port() == 10000));
        assert_eq!(ids.iter().map(|i| i.share()).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(p.take(t(0)), None, "the port is full");
        p.give_back(ids[2]);
        assert_eq!(p.take(t(0)), Some(MediaLegId::new(10000, 2)), "the freed share is reused");
        assert_eq!(p.in_use(), 4);
    }

    #[test]
    fn legs_set_up_together_get_different_ports_then_ports_are_packed() {
        let mut p = PortPool::shared(10000, 10004, 3);
        // Three calls within the grace: each on a port without a fresh (unlatched) leg.
        let burst: Vec<Option<MediaLegId>> = (0..3).map(|i| p.take(t(i))).collect();
        assert_eq!(ports(&burst), vec![Some(10000), Some(10002), Some(10004)]);
        // Every port has a fresh leg now: the one handed out longest ago.
        assert_eq!(ports(&[p.take(t(10))]), vec![Some(10000)]);
        // After the grace, legs go to the partly used port whose last hand-out is oldest.
        let later = t(10 + LATCH_GRACE.as_millis() as u64);
        assert_eq!(ports(&[p.take(later), p.take(later), p.take(later)]), vec![Some(10002), Some(10004), Some(10000)]);
        assert_eq!(ports(&[p.take(later), p.take(later), p.take(later)]), vec![Some(10002), Some(10004), None]);
    }

    #[test]
    fn after_the_grace_new_legs_fill_a_used_port_before_an_unused_one() {
        let mut p = PortPool::shared(10000, 10010, 64);
        let first = p.take(t(0)).unwrap();
        let later = t(LATCH_GRACE.as_millis() as u64);
        let second = p.take(later).unwrap();
        assert_eq!((second.port(), second.share()), (first.port(), 1), "packed onto the used port");
        assert_eq!(p.take(later).unwrap().port(), 10002, "a fresh leg is there: the next call gets its own port");
        // A port emptied goes behind the unused ones.
        p.give_back(first);
        p.give_back(second);
        let ids: Vec<u16> = (0..4).map(|_| p.take(later).unwrap().port()).collect();
        assert_eq!(ids, vec![10004, 10006, 10008, 10010]);
    }
}
