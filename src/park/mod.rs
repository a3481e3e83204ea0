//! Parking lots and the resources a parked call holds (orbits, RTP ports).

pub mod dialog_info;
pub mod free_index;
pub mod lot;
pub mod port_shards;
pub mod ports;
pub mod shard_plan;
