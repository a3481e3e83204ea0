//! The RTP port range split between media threads (`[server] media_threads`), as the
//! [`ShardPlan`] cuts it (the io layer spawns its threads from the same plan).
//!
//! Each media thread owns a contiguous block of the range: it binds those sockets, paces their hold
//! music and relays their bridged audio, so the threads share nothing. Relaying happens inside one
//! thread, so both legs of a bridge must be in the same block: a leg that will be bridged to an existing
//! one (a retrieve, a recall, an API unpark) is taken [`PortShards::take_beside`] that leg; a new parked
//! party goes to the block with the fewest legs in use ([`PortShards::take`]), which spreads hold music
//! over the threads.

use super::ports::PortPool;
use super::shard_plan::ShardPlan;
use crate::media::MediaLegId;
use crate::time::Time;

/// One [`PortPool`] per block of a [`ShardPlan`].
#[derive(Clone, Debug)]
pub struct PortShards {
    plan: ShardPlan,
    /// Per block of `plan`, in the same order: its pool.
    pools: Vec<PortPool>,
}

impl PortShards {
    /// One pool per block of `plan`, `plan.legs_per_port()` legs per port (see [`PortPool::shared`]).
    pub fn new(plan: &ShardPlan) -> PortShards {
        let pools = plan.blocks().iter().map(|b| PortPool::shared(b.lo, b.hi, plan.legs_per_port())).collect();
        PortShards { plan: plan.clone(), pools }
    }

    /// The plan the blocks follow.
    pub fn plan(&self) -> &ShardPlan {
        &self.plan
    }

    /// The RTCP port of the block holding RTP port `port` (0: none; see [`ShardPlan::rtcp_port`]).
    pub fn rtcp_port(&self, port: u16) -> u16 {
        self.plan.rtcp_port(port).unwrap_or(0)
    }

    /// Number of blocks.
    pub fn shards(&self) -> usize {
        self.pools.len()
    }

    /// The block holding `port`.
    pub fn shard_of(&self, port: u16) -> Option<usize> {
        self.plan.shard_of(port)
    }

    /// A leg for a call that is not bridged to anything yet, in the block with the fewest legs in use
    /// (then the lowest); `None` when every port of every block is full.
    pub fn take(&mut self, now: Time) -> Option<MediaLegId> {
        let emptiest = (0..self.pools.len()).min_by_key(|&i| self.pools.get(i).map_or(usize::MAX, PortPool::in_use));
        if let Some(leg) = emptiest.and_then(|i| self.pools.get_mut(i)).and_then(|p| p.take(now)) {
            return Some(leg);
        }
        // The emptiest block has no room (blocks can differ in size by a port): any block with room.
        self.pools.iter_mut().find_map(|p| p.take(now))
    }

    /// A leg in the same block as `partner` (it will be bridged to it); `None` when that block is full.
    pub fn take_beside(&mut self, now: Time, partner: MediaLegId) -> Option<MediaLegId> {
        match self.shard_of(partner.port()) {
            Some(i) => self.pools.get_mut(i).and_then(|p| p.take(now)),
            None => self.take(now),
        }
    }

    /// Returns a leg to its block.
    pub fn give_back(&mut self, leg: MediaLegId) {
        if let Some(i) = self.shard_of(leg.port()) {
            if let Some(p) = self.pools.get_mut(i) {
                p.give_back(leg);
            }
        }
    }

    /// Takes exactly `leg` (restored after a restart); false when it is outside every block or taken.
    pub fn claim(&mut self, leg: MediaLegId) -> bool {
        match self.shard_of(leg.port()).and_then(|i| self.pools.get_mut(i)) {
            Some(p) => p.claim(leg),
            None => false,
        }
    }

    /// Legs handed out and not given back, over all blocks.
    pub fn in_use(&self) -> usize {
        self.pools.iter().map(PortPool::in_use).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_calls_spread_over_blocks_and_bridge_partners_stay_beside_their_leg() {
        let now = Time::from_secs(1_000);
        let mut s = PortShards::new(&ShardPlan::clamped(10000, 10019, 1, 2));
        assert_eq!(s.shards(), 2);
        let a = s.take(now).unwrap();
        let b = s.take(now).unwrap();
        assert_ne!(s.shard_of(a.port()), s.shard_of(b.port()), "the second parked call goes to the emptier block");
        for _ in 0..3 {
            let r = s.take_beside(now, a).unwrap();
            assert_eq!(s.shard_of(r.port()), s.shard_of(a.port()));
        }
        assert_eq!(s.in_use(), 5);
        s.give_back(a);
        assert_eq!(s.in_use(), 4);
        assert_eq!(s.shard_of(9998), None);
        assert_eq!(s.shard_of(10018), Some(1));
    }

    #[test]
    fn a_full_block_refuses_a_partner_even_when_another_has_room() {
        let now = Time::from_secs(1_000);
        // Two blocks of one port each.
        let mut s = PortShards::new(&ShardPlan::clamped(10000, 10003, 1, 2));
        let a = s.take(now).unwrap();
        assert_eq!(s.take_beside(now, a), None, "relaying needs both legs in one thread");
        assert!(s.take(now).is_some(), "an unbridged call still finds the other block");
        assert_eq!(s.take(now), None);
    }
}
