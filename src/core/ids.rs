//! The handles the rooms use to name each other's things. Numbers parkd mints itself, never reused.

/// A call leg: one dialog between parkd and a phone (the dialogs room).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct LegId(pub u64);

/// A parked call, and the bridge it may become (the parking and bridging rooms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct CallRef(pub u64);
