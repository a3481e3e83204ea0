//! RTP port allocation: each media leg gets a [`MediaLegId`] naming an even port (RTP) of the
//! configured range (the odd port above it is left for RTCP) and its index among the legs sharing
//! that port. By default (`rtp_legs_per_port = 1`) every leg has a port of its own. Pure
//! bookkeeping; the io layer binds the sockets.
//!
//! With `k = rtp_legs_per_port > 1` a port carries up to `k` legs at once, which the media plane
//! tells apart by source address (see [`crate::media::demux`]). Demultiplexing is unambiguous as
//! long as at most one leg per port has not received its first packet yet (is not latched). The
//! pool cannot see latching (it happens in the media plane, a few ms after the answer), so it
//! approximates "the port with the fewest unlatched legs" by "the port with room whose last
//! hand-out is the oldest": ports are handed out round-robin, and consecutive new legs land on
//! different ports as long as there are more ports with room than legs being set up at once.

use std::collections::VecDeque;

use crate::media::MediaLegId;

/// The largest supported `rtp_legs_per_port` (one bit per share of a port).
pub const MAX_LEGS_PER_PORT: u16 = 64;

/// The pool of RTP ports and of the leg slots on each.
#[derive(Clone, Debug)]
pub struct PortPool {
    legs_per_port: u16,
    first: u16,
    /// Ports with room for another leg, least recently handed out first.
    with_room: VecDeque<u16>,
    /// Per even port (index `(port - first) / 2`): bit `s` set when share `s` is in use.
    used: Vec<u64>,
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
        let with_room: VecDeque<u16> = PortPool::all_ports(lo, hi).collect();
        let used = vec![0; with_room.len()];
        PortPool { legs_per_port: legs_per_port.clamp(1, MAX_LEGS_PER_PORT), first, with_room, used, in_use: 0 }
    }

    /// The even ports of the range (what the io layer binds).
    pub fn all_ports(lo: u16, hi: u16) -> impl Iterator<Item = u16> {
        let first = lo + (lo % 2);
        (first..=hi).step_by(2)
    }

    fn slot(&mut self, port: u16) -> Option<&mut u64> {
        let off = port.checked_sub(self.first)?;
        self.used.get_mut(usize::from(off / 2))
    }

    /// A leg on the port with room whose last hand-out is the oldest; `None` when every port is full.
    pub fn take(&mut self) -> Option<MediaLegId> {
        let k = self.legs_per_port;
        let port = self.with_room.pop_front()?;
        let used = self.slot(port)?;
        let share = (!*used).trailing_zeros() as u16;
        *used |= 1 << share;
        let count = used.count_ones() as u16;
        if count < k {
            self.with_room.push_back(port);
        }
        self.in_use += 1;
        Some(MediaLegId::new(port, share))
    }

    /// Returns a leg. A port that was full goes to the back of the queue, so a port just freed is
    /// not handed to the next call while late packets for the old one may still arrive. Giving
    /// back a leg that is not taken does nothing.
    pub fn give_back(&mut self, leg: MediaLegId) {
        let k = self.legs_per_port;
        let (port, share) = (leg.port(), leg.share());
        if share >= k {
            return;
        }
        let Some(used) = self.slot(port) else { return };
        if *used & (1 << share) == 0 {
            return;
        }
        let was_full = used.count_ones() as u16 >= k;
        *used &= !(1 << share);
        if was_full {
            self.with_room.push_back(port);
        }
        self.in_use -= 1;
    }

    /// Legs handed out and not given back.
    pub fn in_use(&self) -> usize {
        self.in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(ids: &[Option<MediaLegId>]) -> Vec<Option<u16>> {
        ids.iter().map(|i| i.map(MediaLegId::port)).collect()
    }

    #[test]
    fn hands_out_even_ports_and_reuses_freed_ones_last() {
        let mut p = PortPool::new(10001, 10007);
        assert_eq!(p.take(), Some(MediaLegId::solo(10002)));
        assert_eq!(p.take(), Some(MediaLegId::solo(10004)));
        p.give_back(MediaLegId::solo(10002));
        assert_eq!(p.take(), Some(MediaLegId::solo(10006)));
        assert_eq!(p.take(), Some(MediaLegId::solo(10002)));
        assert_eq!(p.take(), None);
        assert_eq!(p.in_use(), 3);
        p.give_back(MediaLegId::solo(10008));
        p.give_back(MediaLegId::new(10002, 1));
        assert_eq!(p.in_use(), 3, "legs not handed out are ignored");
    }

    #[test]
    fn shared_ports_carry_k_legs_with_distinct_ids() {
        let mut p = PortPool::shared(10000, 10000, 4);
        let ids: Vec<MediaLegId> = (0..4).map(|_| p.take().unwrap()).collect();
        assert!(ids.iter().all(|i| i.port() == 10000));
        assert_eq!(ids.iter().map(|i| i.share()).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(p.take(), None, "the port is full");
        p.give_back(ids[2]);
        assert_eq!(p.take(), Some(MediaLegId::new(10000, 2)), "the freed share is reused");
        assert_eq!(p.in_use(), 4);
    }

    #[test]
    fn new_legs_spread_over_ports_so_unlatched_legs_rarely_share_one() {
        let mut p = PortPool::shared(10000, 10004, 2);
        let first: Vec<Option<MediaLegId>> = (0..3).map(|_| p.take()).collect();
        assert_eq!(ports(&first), vec![Some(10000), Some(10002), Some(10004)], "one new leg per port first");
        let second: Vec<Option<MediaLegId>> = (0..4).map(|_| p.take()).collect();
        assert_eq!(ports(&second), vec![Some(10000), Some(10002), Some(10004), None]);
        // A port freed from full goes behind the others.
        p.give_back(MediaLegId::new(10002, 0));
        p.give_back(MediaLegId::new(10000, 1));
        assert_eq!(ports(&[p.take(), p.take(), p.take()]), vec![Some(10002), Some(10000), None]);
    }
}
