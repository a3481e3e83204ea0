//! The io layer: the only code that reads the clock, owns sockets or spawns threads.

pub mod clock;
pub mod media_thread;
pub mod probe;
pub mod sip_driver;
pub mod tcp;
