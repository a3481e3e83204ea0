//! The core as one of several SIP shards of one process (`[server] sip_threads`; README "Signalling shards").
//!
//! A shard is a node of an in-process cluster (issue 18's machinery, reused): its parks claim their orbit in the
//! shared orbit table ([`crate::cluster::fake_redis::FakeRedis`] behind one lock in the io layer), its BLF and
//! API show the other shards' orbits from the room's remote view, and a retrieve of an orbit another shard holds
//! is fetched from it with the signed INVITE of a cross-node retrieve (to `sip:<advertised>;parkd-shard=K`,
//! which the router hands to shard `K`) and relayed. What stays per shard: the dialogs whose Call-ID hashes to
//! it, their transactions, timers, recalls and media ports. Nothing here reads a clock or knows a thread.

use super::Core;
use crate::cluster::{ClusterRoom, ClusterSettings, Keyspace, LotSpace, NodeName};
use crate::config::LotConfig;
use std::time::Duration;

/// How long a shard's orbit claim lives without renewal in the in-process table (renewed every third of it).
pub const SHARD_LEASE: Duration = Duration::from_secs(30);

/// The shard name `k` has as a node of the in-process cluster.
pub fn shard_node(k: usize) -> NodeName {
    NodeName::new(&format!("shard{k}")).unwrap_or_else(|| unreachable!("shard names are tokens"))
}

impl Core {
    /// Makes this core shard `k` of `n` (call before any traffic, `n > 1`): its Contacts carry
    /// `;parkd-shard=k`, its invented Call-IDs hash to it, and it becomes node `shard<k>` of the in-process
    /// cluster over `lots`, signing and trusting cross-shard retrieves with `secret`. Returns the SIP address
    /// it publishes (`node_sip`). The driver then reports the table reachable
    /// ([`super::ClusterInput::Link`]) and carries its operations to the shared table.
    pub fn enable_shard(&mut self, k: usize, n: usize, lots: &[LotConfig], secret: &[u8]) -> String {
        self.ep.set_shard(k, n);
        let mut uri = crate::sip::Uri::from_addr(None, self.ep.local_addr);
        uri.params.set(crate::sip::shard::SHARD_PARAM, Some(&k.to_string()));
        let sip = uri.to_string();
        let keys = Keyspace::new("parkd", lots.iter().map(LotSpace::from_config).collect());
        let mut s = ClusterSettings::new(shard_node(k), sip.clone(), SHARD_LEASE);
        s.seed = k as u64 + 1;
        self.enable_cluster(ClusterRoom::new(s, keys));
        self.set_cluster_secret(secret);
        sip
    }

    /// `(k, n)`: this core is shard `k` of `n` (`(0, 1)`: not sharded).
    pub fn shard(&self) -> (usize, usize) {
        self.ep.shard()
    }
}
