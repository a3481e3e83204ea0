//! Parking lots and the resources a parked call holds (orbits, RTP ports).

pub mod lot;
pub mod ports;
