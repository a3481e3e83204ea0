//! An in-memory Redis with the semantics of the cluster's Lua scripts (`io/cluster/scripts.rs`): TTLs in
//! virtual time, per-lot fence counters, messages collected for delivery to every room. For the room's tests,
//! for the simulated network when it runs several cores as a cluster (issue 18's integration), and as the
//! shared orbit table of the SIP shards of one process (`[server] sip_threads`, `crate::io::sip_shards`), where
//! each shard is a node of an in-process cluster and the io layer runs these operations under one lock.

use super::*;
use crate::time::Time;
use std::collections::BTreeMap;

/// An in-memory Redis with the scripts' semantics.
pub struct FakeRedis {
    lease: Duration,
    pub keys: BTreeMap<Slot, (Fence, NodeName, ClaimInfo, Time)>,
    pub counters: BTreeMap<usize, u64>,
    /// Messages published since last taken, for every room (the publisher's included).
    pub published: Vec<Change>,
    /// Where each node takes SIP, as its heartbeat (`alive`) says; `sip:<node>` for a node not named here.
    pub sips: BTreeMap<NodeName, String>,
}

impl FakeRedis {
    pub fn new(lease: Duration) -> FakeRedis {
        FakeRedis { lease, keys: BTreeMap::new(), counters: BTreeMap::new(), published: Vec::new(), sips: BTreeMap::new() }
    }
    /// Drops the keys whose TTL ran out by `now`.
    pub fn live(&mut self, now: Time) {
        self.keys.retain(|_, v| v.3 > now);
    }
    pub fn holder(&self, slot: Slot) -> Option<(Fence, NodeName)> {
        self.keys.get(&slot).map(|v| (v.0, v.1.clone()))
    }
    fn set(&mut self, now: Time, slot: Slot, fence: Fence, me: &NodeName, info: &ClaimInfo) {
        self.keys.insert(slot, (fence, me.clone(), info.clone(), now + self.lease));
        self.published.push(Change::Claimed { slot, fence, owner: me.clone(), lease_ms: self.lease.as_millis() as u64, info: info.clone() });
    }
    /// The lowest orbit of `lot` in `from..to` without a key.
    fn first_gap(&self, lot: usize, from: usize, to: usize) -> Option<usize> {
        let mut want = from;
        for s in self.keys.range(Slot { lot, orbit: OrbitIdx(from) }..Slot { lot, orbit: OrbitIdx(to) }).map(|(s, _)| s) {
            if s.orbit.0 > want {
                break;
            }
            want = s.orbit.0 + 1;
        }
        (want < to).then_some(want)
    }

    /// Runs `op` for node `me` at `now`, as its script would.
    pub fn exec(&mut self, now: Time, ks: &Keyspace, me: &NodeName, op: &RedisOp) -> RedisReply {
        self.live(now);
        match op {
            RedisOp::Claim { slot, info } => {
                if let Some((fence, owner)) = self.holder(*slot) {
                    return RedisReply::Claim(ClaimReply::Taken { owner, fence });
                }
                let c = self.counters.entry(slot.lot).or_default();
                *c += 1;
                let fence = Fence(*c);
                self.set(now, *slot, fence, me, info);
                RedisReply::Claim(ClaimReply::Granted { orbit: slot.orbit, fence })
            }
            RedisOp::ClaimAny { lot, start, info } => {
                // The script's answer: the lowest free orbit from `start` on, else the lowest free one (its free-orbit
                // index is an implementation detail; here the first gap among the live keys, from each end).
                let n = ks.lots[*lot].orbits.len();
                let Some(orbit) = self.first_gap(*lot, start.0.min(n), n).or_else(|| self.first_gap(*lot, 0, start.0.min(n))) else {
                    return RedisReply::Claim(ClaimReply::Full);
                };
                let slot = Slot { lot: *lot, orbit: OrbitIdx(orbit) };
                let c = self.counters.entry(*lot).or_default();
                *c += 1;
                let fence = Fence(*c);
                self.set(now, slot, fence, me, info);
                RedisReply::Claim(ClaimReply::Granted { orbit: slot.orbit, fence })
            }
            RedisOp::Renew { claims } => {
                let st = claims
                    .iter()
                    .map(|(slot, fence)| match self.keys.get_mut(slot) {
                        None => RenewStatus::Missing,
                        Some(v) if v.0 == *fence && &v.1 == me => {
                            v.3 = now + self.lease;
                            RenewStatus::Held
                        }
                        Some(v) => RenewStatus::Taken { owner: v.1.clone(), fence: v.0 },
                    })
                    .collect();
                self.published.push(Change::Alive { node: me.clone(), lease_ms: self.lease.as_millis() as u64, sip: self.sips.get(me).cloned().unwrap_or_else(|| format!("sip:{me}")) });
                RedisReply::Renewed(st)
            }
            RedisOp::Restore { claims } => {
                let st = claims
                    .iter()
                    .map(|(slot, fence, info)| match self.keys.get_mut(slot) {
                        None => {
                            let c = self.counters.entry(slot.lot).or_default();
                            *c = (*c).max(fence.0);
                            self.set(now, *slot, *fence, me, info);
                            RenewStatus::Held
                        }
                        Some(v) if v.0 == *fence && &v.1 == me && v.2 == *info => {
                            v.3 = now + self.lease;
                            RenewStatus::Held
                        }
                        Some(v) if v.0 == *fence && &v.1 == me => {
                            // Ours with other info: rewritten and published (an update of the claim's info).
                            self.set(now, *slot, *fence, me, info);
                            RenewStatus::Held
                        }
                        Some(v) => RenewStatus::Taken { owner: v.1.clone(), fence: v.0 },
                    })
                    .collect();
                RedisReply::Renewed(st)
            }
            RedisOp::Release { slot, fence } => {
                if self.holder(*slot) == Some((*fence, me.clone())) {
                    self.keys.remove(slot);
                    self.published.push(Change::Released { slot: *slot, fence: *fence, owner: me.clone() });
                    RedisReply::Released(true)
                } else {
                    RedisReply::Released(false)
                }
            }
            RedisOp::Resync => RedisReply::Snapshot(
                self.keys
                    .iter()
                    .map(|(s, v)| SnapshotEntry { slot: *s, owner: v.1.clone(), fence: v.0, info: v.2.clone(), ttl_ms: (v.3 - now).as_millis() as u64 })
                    .collect(),
            ),
        }
    }
}

