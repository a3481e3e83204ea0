//! The one plan of media shards: which block of the RTP range each media thread owns.
//!
//! Computed once from (`rtp_ports`, `rtp_legs_per_port`, `media_threads`) at startup and handed to both
//! sides: the core hands out legs from these blocks ([`crate::core::Core::with_plan`],
//! [`super::port_shards::PortShards`]) and the io layer spawns one media thread per block and routes each
//! command to the block of its leg's port ([`crate::io::media_shards`]). Relaying happens inside one thread, so if the two sides cut the range
//! differently a bridge's legs would land in different threads and its audio would be dropped.
//!
//! Blocks are contiguous runs of the range's even ports (each with the odd port above it for RTCP), of
//! near-equal size, in ascending order. There are at most [`MAX_MEDIA_THREADS`] of them and never an empty
//! one: a plan has 1..=min([`MAX_MEDIA_THREADS`], even ports) blocks.

use super::ports::PortPool;
use crate::config::ServerConfig;

/// The most media threads (the io layer marks threads with queued commands in one `u64`).
pub const MAX_MEDIA_THREADS: u16 = 64;

/// One media thread's block: the even ports `lo..=hi` (step 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardBlock {
    pub lo: u16,
    pub hi: u16,
}

impl ShardBlock {
    /// Whether `port` is one of the block's even ports.
    pub fn holds(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port) && port.is_multiple_of(2)
    }

    /// The block's RTCP port: its media thread's one socket for the RTCP of legs that do not mux
    /// ([`rtcp_port_of`] its first even port).
    pub fn rtcp_port(&self) -> u16 {
        rtcp_port_of(self.lo + self.lo % 2)
    }
}

/// The RTCP port of a block whose first RTP (even) port is `first`: the odd port above it, which the port pool
/// never hands out (see `media::plane_rtcp`).
pub fn rtcp_port_of(first: u16) -> u16 {
    first.saturating_add(1)
}

/// Why `media_threads` cannot be laid over `rtp_ports`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShardPlanError {
    #[error("RTP port range {lo}-{hi} contains no even port")]
    NoEvenPort { lo: u16, hi: u16 },
    #[error("media_threads = {threads}: at most {max} (0 = one per CPU core)")]
    TooManyThreads { threads: u16, max: u16 },
    #[error("media_threads = {threads} but rtp_ports {lo}-{hi} has only {pairs} RTP port pairs, and each media thread needs at least one: use media_threads <= {pairs} or a wider rtp_ports range")]
    MoreThreadsThanPorts { threads: u16, lo: u16, hi: u16, pairs: usize },
}

/// Which block of the RTP range each media thread owns (see the module docs). Plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    blocks: Vec<ShardBlock>,
    legs_per_port: u16,
}

impl ShardPlan {
    /// The even ports of `lo..=hi` in `threads` blocks, `legs_per_port` legs per port. `threads` must be
    /// 1..=min([`MAX_MEDIA_THREADS`], even ports); 0 counts as 1.
    pub fn new(lo: u16, hi: u16, legs_per_port: u16, threads: u16) -> Result<ShardPlan, ShardPlanError> {
        let pairs = PortPool::all_ports(lo, hi).count();
        if pairs == 0 {
            return Err(ShardPlanError::NoEvenPort { lo, hi });
        }
        if threads > MAX_MEDIA_THREADS {
            return Err(ShardPlanError::TooManyThreads { threads, max: MAX_MEDIA_THREADS });
        }
        if usize::from(threads) > pairs {
            return Err(ShardPlanError::MoreThreadsThanPorts { threads, lo, hi, pairs });
        }
        Ok(ShardPlan::clamped(lo, hi, legs_per_port, threads))
    }

    /// As [`ShardPlan::new`], with `threads` clamped into the allowed range instead of refused (an empty
    /// range gives a plan without blocks). What the core uses when handed an unvalidated config.
    pub fn clamped(lo: u16, hi: u16, legs_per_port: u16, threads: u16) -> ShardPlan {
        let ports: Vec<u16> = PortPool::all_ports(lo, hi).collect();
        let n = ports.len();
        let k = usize::from(threads.clamp(1, MAX_MEDIA_THREADS)).min(n);
        let mut blocks = Vec::with_capacity(k);
        let mut start = 0;
        for s in 0..k {
            let len = n / k + usize::from(s < n % k);
            if let (Some(&lo), Some(&hi)) = (ports.get(start), ports.get(start + len.saturating_sub(1))) {
                blocks.push(ShardBlock { lo, hi });
            }
            start += len;
        }
        ShardPlan { blocks, legs_per_port }
    }

    /// The plan of a server config (`media_threads` 0 counts as 1; out-of-range values are clamped, which
    /// a validated config never has).
    pub fn for_server(server: &ServerConfig) -> ShardPlan {
        let r = server.rtp_ports;
        ShardPlan::clamped(r.lo as u16, r.hi as u16, server.rtp_legs_per_port, server.media_threads)
    }

    /// `media_threads = 0`: one thread per core, at most [`MAX_MEDIA_THREADS`] and at most one per even port.
    pub fn auto_threads(lo: u16, hi: u16, cores: usize) -> u16 {
        let most = PortPool::all_ports(lo, hi).count().min(usize::from(MAX_MEDIA_THREADS));
        cores.clamp(1, most.max(1)) as u16
    }

    /// The blocks, one per media thread, ascending.
    pub fn blocks(&self) -> &[ShardBlock] {
        &self.blocks
    }

    /// Number of media threads.
    pub fn threads(&self) -> usize {
        self.blocks.len()
    }

    /// Legs per port (`rtp_legs_per_port`).
    pub fn legs_per_port(&self) -> u16 {
        self.legs_per_port
    }

    /// The RTCP port of the block holding RTP port `port` (what parkd's SDP names in `a=rtcp:`); `None` for a
    /// port of no block.
    pub fn rtcp_port(&self, port: u16) -> Option<u16> {
        self.shard_of(port).and_then(|i| self.blocks.get(i)).map(ShardBlock::rtcp_port)
    }

    /// The media thread owning `port`: the block holding it, `None` for a port of no block.
    pub fn shard_of(&self, port: u16) -> Option<usize> {
        let i = self.blocks.partition_point(|b| b.lo <= port).checked_sub(1)?;
        self.blocks.get(i).filter(|b| b.holds(port)).map(|_| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(p: &ShardPlan) -> Vec<(u16, u16)> {
        p.blocks().iter().map(|b| (b.lo, b.hi)).collect()
    }

    #[test]
    fn blocks_cover_every_even_port_once_in_near_equal_blocks() {
        assert_eq!(ranges(&ShardPlan::clamped(10000, 10019, 1, 1)), vec![(10000, 10018)]);
        assert_eq!(ranges(&ShardPlan::clamped(10000, 10019, 1, 2)), vec![(10000, 10008), (10010, 10018)]);
        // 11 even ports in 3 blocks: 4 + 4 + 3.
        assert_eq!(ranges(&ShardPlan::clamped(10001, 10022, 1, 3)), vec![(10002, 10008), (10010, 10016), (10018, 10022)]);
        assert_eq!(ranges(&ShardPlan::clamped(10000, 10003, 1, 8)), vec![(10000, 10000), (10002, 10002)], "no empty blocks");
        assert_eq!(ranges(&ShardPlan::clamped(10000, 10019, 1, 0)), vec![(10000, 10018)], "0 counts as 1");
        assert_eq!(ShardPlan::clamped(10000, 19999, 1, 100).threads(), 64, "at most 64 threads");
        assert_eq!(ShardPlan::clamped(10001, 10001, 1, 4).threads(), 0, "no even port, no block");
    }

    #[test]
    fn impossible_thread_counts_are_refused_with_the_numbers() {
        assert_eq!(ShardPlan::new(10000, 10999, 1, 65), Err(ShardPlanError::TooManyThreads { threads: 65, max: 64 }));
        let e = ShardPlan::new(10000, 10007, 1, 5).unwrap_err();
        assert_eq!(e, ShardPlanError::MoreThreadsThanPorts { threads: 5, lo: 10000, hi: 10007, pairs: 4 });
        assert!(e.to_string().contains("only 4 RTP port pairs"), "{e}");
        assert_eq!(ShardPlan::new(10001, 10001, 1, 1), Err(ShardPlanError::NoEvenPort { lo: 10001, hi: 10001 }));
        assert_eq!(ShardPlan::new(10000, 10007, 4, 4).map(|p| (p.threads(), p.legs_per_port())), Ok((4, 4)));
    }

    #[test]
    fn shard_of_names_the_block_holding_the_port_and_nothing_else() {
        let p = ShardPlan::clamped(10000, 10019, 1, 2);
        assert_eq!([9998, 10000, 10008, 10010, 10018, 10020].map(|port| p.shard_of(port)), [None, Some(0), Some(0), Some(1), Some(1), None]);
        assert_eq!(p.shard_of(10001), None, "odd ports are RTCP, never a leg");
    }

    #[test]
    fn auto_threads_is_one_per_core_within_the_limits() {
        assert_eq!(ShardPlan::auto_threads(10000, 10999, 8), 8);
        assert_eq!(ShardPlan::auto_threads(10000, 10999, 200), 64);
        assert_eq!(ShardPlan::auto_threads(10000, 10005, 8), 3, "no more threads than port pairs");
        assert_eq!(ShardPlan::auto_threads(10000, 10999, 0), 1);
    }
}
