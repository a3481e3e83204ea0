//! The cluster room (issue 18): several parkd nodes share one orbit space through Redis.
//!
//! Sans-IO like the engine's rooms ([`crate::core::contract`]): plain data, every input carries `now`, outputs
//! are drained from [`ClusterRoom::poll_output`] until `None`, [`ClusterRoom::poll_timeout`] says when (and
//! why) to call [`ClusterRoom::handle_timeout`]. The io adapter (`crate::io::cluster`) carries the typed Redis
//! operations ([`RedisOp`]) out as Lua scripts and brings back their replies ([`RedisReply`]), the pub/sub
//! changes ([`Change`]) and whether Redis is reachable. The driver's one promise: every operation gets exactly
//! one [`ClusterRoom::handle_reply`], within about a second (a timeout or a dropped connection is a reply, an
//! `Err`); the room counts on it to know what is in flight.
//!
//! What the room keeps:
//! * **own claims**: the orbits this node holds, each with its fencing token ([`Fence`]) and until when its
//!   lease is known to run (the send time of the last renewal that Redis confirmed, plus the lease);
//! * **pending claims**: claims sent to Redis and not yet answered, each with a deadline (`claim_timeout`,
//!   1.5 s by default) after which it is answered [`ClaimResult::Unavailable`], never granted late;
//! * **the remote view** ([`view::RemoteView`]): the orbits other nodes hold, with the owner, the fence and the
//!   public [`ClaimInfo`] the BLF and the API show, each expiring with its owner's lease unless the owner's
//!   heartbeat (`alive`) keeps it up.
//!
//! The rules it enforces (see docs/cluster-design.md for the whole design):
//! * allocation is done by Redis, atomically (a script per claim): the room never grants from its own view;
//! * every claim gets a fencing token from a per-lot counter; renewals and releases compare owner *and* fence,
//!   so a node that was paused or cut off cannot renew or delete a newer claim: it learns it lost the orbit
//!   ([`ClusterOutput::Lost`]);
//! * while Redis does not answer, new claims are answered `Unavailable` (at once once the link is known to be
//!   down or suspect, after `claim_timeout` at the latest); a claim answered `Unavailable` that Redis carried out
//!   after all is released as soon as its grant shows up (late reply, own `claim` message or resync);
//! * when Redis is back (or back empty), the room resynchronises its view (a snapshot of every orbit key) and
//!   restores its own claims that Redis lost, with their fences.

pub mod auth;
mod ops;
mod room;
pub mod stats;
pub mod view;
pub mod wire;

pub mod fake_redis;
#[cfg(test)]
mod tests;

pub use ops::{ClaimId, ClaimReply, OpError, OpId, RedisOp, RedisReply, RenewStatus, SnapshotEntry};
pub use room::{ClaimResult, ClusterOutput, ClusterRoom, ClusterWake, OwnClaim, Want};
pub use stats::{ClusterCounts, ClusterScrape};
pub use view::{NodeState, RemoteClaim, ViewChange};
pub use wire::{Change, Keyspace, WireError};

use crate::config::{NumRange, SlotPolicy};
use crate::ids::OrbitIdx;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A node's name, unique in the cluster: 1 to 64 of `A-Z a-z 0-9 . _ -` (it is written into Redis values and
/// pub/sub messages separated by spaces).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(Arc<str>);

impl NodeName {
    /// The name, if it is a valid one.
    pub fn new(s: &str) -> Option<NodeName> {
        is_token(s).then(|| NodeName(Arc::from(s)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}
impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` may be used as a node name or a lot name in keys and messages: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A fencing token: the per-lot counter's value when the claim was made. A claim is renewed or released only
/// by its owner with its fence, so a stale holder cannot touch a newer claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Fence(pub u64);

/// An orbit of the cluster: a lot (by its index in the configuration, the same on every node) and an orbit of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    pub lot: usize,
    pub orbit: OrbitIdx,
}

/// What every node may show about an orbit another node holds (BLF dialog-info, the API, events). Stored in
/// the orbit's Redis value as JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClaimInfo {
    /// The parked party (its From/P-Asserted-Identity URI), as the owner shows it.
    #[serde(default)]
    pub parked: String,
    /// Its display name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_name: Option<String>,
    /// Who parked it (Referred-By), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parker: Option<String>,
    /// When it was parked, milliseconds since the Unix epoch.
    #[serde(default)]
    pub since_ms: u64,
    /// The parked dialog as the owner holds it (Call-ID, the owner's tag, the parked party's tag): what a BLF
    /// NOTIFY on another node shows so a phone can pick the call up with `Replaces`, and what that node matches an
    /// INVITE with `Replaces` against to forward it to the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialog: Option<ParkedDialog>,
    /// Where the owner node takes SIP (its `sip` setting): where another node sends the INVITE of a cross-node
    /// retrieve. Also in the owner's heartbeat; here so a node knows it from the claim alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_sip: Option<String>,
}

/// The parked dialog's identifiers, from the owner's side (RFC 3891 Replaces, RFC 4235 dialog-info).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParkedDialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

/// One lot as the cluster sees it: its name (in the keys) and its orbits; the same on every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LotSpace {
    pub name: String,
    pub orbits: NumRange,
    /// How this node picks the orbit a claim-any starts looking at (Redis takes the first free one from there).
    pub policy: SlotPolicy,
}

impl LotSpace {
    pub fn from_config(lot: &crate::config::LotConfig) -> LotSpace {
        LotSpace { name: lot.name.clone(), orbits: lot.orbits, policy: lot.slot_policy }
    }
}

/// The room's settings (from `[cluster]` / `--node`, `--lease`).
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// This node's name.
    pub node: NodeName,
    /// Where other nodes reach this node's SIP endpoint (`sip:10.0.0.5:5060`), published in its heartbeat.
    pub sip: String,
    /// How long a claim lives in Redis without renewal; renewed every `lease / 3`.
    pub lease: Duration,
    /// How long a claim waits for Redis before it is answered `Unavailable` (the issue asks for < 2 s).
    pub claim_timeout: Duration,
    /// How often the whole view is re-read from Redis besides every reconnection (lost messages heal).
    pub resync_every: Duration,
    /// Seed of the generator behind `slot_policy = "random"`.
    pub seed: u64,
}

impl ClusterSettings {
    pub fn new(node: NodeName, sip: String, lease: Duration) -> ClusterSettings {
        ClusterSettings { node, sip, lease, claim_timeout: Duration::from_millis(1500), resync_every: lease * 6, seed: 1 }
    }
}
