//! What the cluster room counts, for `/metrics` (`parkd_cluster_*`): counted as its outputs leave the room and its
//! replies come in (plain numbers, no clock), and read at scrape time with the gauges of [`ClusterScrape`].

use super::room::{ClaimResult, ClusterOutput};

/// Totals since the node started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterCounts {
    /// Claims answered, by result.
    pub granted: u64,
    pub taken: u64,
    pub full: u64,
    pub unavailable: u64,
    /// Orbits of calls parked here that another node took (this node was cut off or away past its lease).
    pub lost: u64,
    /// Redis operations sent (claims, renewals, releases, resyncs: each one round trip).
    pub ops: u64,
    /// Operations that failed or timed out.
    pub op_errors: u64,
}

impl ClusterCounts {
    /// Counts one output of the room.
    pub(super) fn note(&mut self, out: &ClusterOutput) {
        match out {
            ClusterOutput::Claim { result, .. } => match result {
                ClaimResult::Granted { .. } => self.granted += 1,
                ClaimResult::Taken { .. } => self.taken += 1,
                ClaimResult::Full { .. } => self.full += 1,
                ClaimResult::Unavailable => self.unavailable += 1,
            },
            ClusterOutput::Lost { .. } => self.lost += 1,
            ClusterOutput::Redis { .. } => self.ops += 1,
            ClusterOutput::View(_) | ClusterOutput::Available(_) => {}
        }
    }
}

/// The cluster as a scrape sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterScrape {
    /// Redis answers (parks are granted).
    pub up: bool,
    /// Orbits this node holds.
    pub own: usize,
    /// Orbits other nodes hold, as this node's view knows.
    pub remote: usize,
    /// Other nodes heard from within their lease.
    pub nodes: usize,
    /// Claims waiting for Redis.
    pub pending: usize,
    pub counts: ClusterCounts,
}
