//! The cluster's io adapter (issue 18): the [`crate::cluster::ClusterRoom`] run against a real Redis with the
//! `redis` crate (tokio, one multiplexed RESP3 connection under a `ConnectionManager` that reconnects and
//! resubscribes by itself; Sentinel-resolved masters asked again after a disconnection).
//!
//! * [`scripts`] — the Lua script of each operation (claim, claim-any, renew, restore, release, read).
//! * [`link`] — connecting, and running one operation as its script (resync: SCAN + chunked reads).
//! * [`driver`] — the task owning the room: commands in through a [`ClusterHandle`], events out as
//!   [`ClusterEvent`]s, pub/sub pushes and connection state fed to the room, its deadlines fired.
//! * [`sentinel_check`] — at start, whether the lease outlasts the Sentinels' failover (a warning if not).
//!
//! Tested against real Redis servers in `sip-tests/tests/cluster_redis.rs`.

pub mod core_link;
pub mod driver;
pub mod link;
pub mod scripts;
pub mod sentinel_check;

pub use driver::{spawn, ClusterEvent, ClusterHandle, ClusterSnapshot};
pub use link::RedisLink;
