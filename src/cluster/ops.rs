//! The typed Redis operations the room asks for and the replies the io adapter brings back. Each operation is
//! one atomic Lua script (or, for [`RedisOp::Resync`], a SCAN and reads); the scripts and the keys are in
//! `crate::io::cluster` and [`super::wire`].

use super::{ClaimInfo, Fence, NodeName, Slot};
use crate::ids::OrbitIdx;

/// The room's handle on one operation in flight; the reply comes back with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// The caller's handle on one claim (the core's park waiting for it); the result comes back with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimId(pub u64);

/// What the room asks Redis to do. Node name, lease and channel are the adapter's settings (the same for every
/// operation of a node); everything that varies is here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisOp {
    /// Claim this orbit if nobody holds it: a new fence from the lot's counter, the value set with the lease
    /// (`SET .. PX`), a `claim` message published. Reply: [`RedisReply::Claim`].
    Claim { slot: Slot, info: ClaimInfo },
    /// Claim the first free orbit of the lot, looking from `start` onwards (wrapping). Reply:
    /// [`RedisReply::Claim`] (or `Full`).
    ClaimAny { lot: usize, start: OrbitIdx, info: ClaimInfo },
    /// Extend the lease of each of these claims whose value still names this node with this fence, and publish
    /// this node's heartbeat (`alive`), in one script. Reply: [`RedisReply::Renewed`], one status per claim.
    Renew { claims: Vec<(Slot, Fence)> },
    /// Put these claims back where Redis lost them (absent key: set it with the same fence, raise the lot's
    /// counter to at least that fence, publish `claim`); extend them where they are still ours (rewritten and
    /// published again when their info differs: [`crate::cluster::ClusterRoom::update_info`]); report the
    /// others. Reply: [`RedisReply::Renewed`].
    Restore { claims: Vec<(Slot, Fence, ClaimInfo)> },
    /// Delete this claim if it is still ours with this fence (compare-and-delete) and publish `release`.
    /// Reply: [`RedisReply::Released`].
    Release { slot: Slot, fence: Fence },
    /// Read every orbit key of every lot (SCAN + reads). Reply: [`RedisReply::Snapshot`].
    Resync,
}

/// A claim's fate in a [`RedisOp::Renew`] or [`RedisOp::Restore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenewStatus {
    /// Still ours; the lease runs again from now.
    Held,
    /// Absent in Redis (expired, or Redis lost its data). A `Renew` does not recreate it; a `Restore` does
    /// (and answers `Held`).
    Missing,
    /// Someone else holds it now (or we hold it with another fence).
    Taken { owner: NodeName, fence: Fence },
}

/// One orbit key as a resync read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub slot: Slot,
    pub owner: NodeName,
    pub fence: Fence,
    pub info: ClaimInfo,
    /// The key's remaining time to live, milliseconds.
    pub ttl_ms: u64,
}

/// A reply to a [`RedisOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisReply {
    /// To `Claim` / `ClaimAny`: granted (`orbit` is the one Redis picked), taken (by whom), or the lot is full.
    Claim(ClaimReply),
    /// To `Renew` / `Restore`: one status per claim, in the order sent.
    Renewed(Vec<RenewStatus>),
    /// To `Release`: whether the key was ours and is gone.
    Released(bool),
    /// To `Resync`: every orbit key read.
    Snapshot(Vec<SnapshotEntry>),
}

/// What a claim script answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimReply {
    Granted { orbit: OrbitIdx, fence: Fence },
    Taken { owner: NodeName, fence: Fence },
    Full,
}

/// Why an operation has no reply: Redis did not answer in time, the connection is down, or the reply did not
/// make sense (a bug or a foreign writer under parkd's prefix).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("Redis did not answer in time")]
    Timeout,
    #[error("Redis connection: {0}")]
    Connection(String),
    #[error("Redis answered: {0}")]
    Server(String),
    #[error("unexpected reply from Redis: {0}")]
    BadReply(String),
}
