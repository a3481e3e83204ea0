//! An in-memory Redis with the semantics of the cluster's Lua scripts (`io/cluster/scripts.rs`): TTLs in
//! virtual time, per-lot fence counters, messages collected for delivery to every room. For the room's tests,
//! and for the simulated network when it runs several cores as a cluster (issue 18's integration).

use super::*;
use crate::time::Time;
use std::collections::BTreeMap;

/// An in-memory Redis with the scripts' semantics.
pub(crate) struct FakeRedis {
    lease: Duration,
    pub keys: BTreeMap<Slot, (Fence, NodeName, ClaimInfo, Time)>,
    pub counters: BTreeMap<usize, u64>,
    /// Messages published since last taken, for every room (the publisher's included).
    pub published: Vec<Change>,
}

impl FakeRedis {
    pub fn new(lease: Duration) -> FakeRedis {
        FakeRedis { lease, keys: BTreeMap::new(), counters: BTreeMap::new(), published: Vec::new() }
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
                let n = ks.lots[*lot].orbits.len();
                for i in 0..n {
                    let slot = Slot { lot: *lot, orbit: OrbitIdx((start.0 + i) % n) };
                    if self.holder(slot).is_none() {
                        let c = self.counters.entry(*lot).or_default();
                        *c += 1;
                        let fence = Fence(*c);
                        self.set(now, slot, fence, me, info);
                        return RedisReply::Claim(ClaimReply::Granted { orbit: slot.orbit, fence });
                    }
                }
                RedisReply::Claim(ClaimReply::Full)
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
                self.published.push(Change::Alive { node: me.clone(), lease_ms: self.lease.as_millis() as u64, sip: format!("sip:{me}") });
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

