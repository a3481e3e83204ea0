//! The io layer: the only code that reads the clock, owns sockets or spawns threads.

pub mod api_link;
pub mod clock;
pub mod cluster;
pub mod conn_limits;
pub mod deadline_timer;
pub mod dual_stack;
pub mod events_hub;
pub mod hold_sender;
pub mod http;
pub mod http_guard;
pub mod http_token;
pub mod journal_file;
pub mod journal_layout;
pub mod journal_writer;
pub mod media_load;
pub mod media_shards;
pub mod media_thread;
pub mod metrics;
pub mod probe;
pub mod raw_sender;
pub mod reload;
pub mod sip_driver;
pub mod sip_shards;
pub mod syscall_sender;
pub mod tcp;
pub mod tls;
pub mod udp_batch;
pub mod uring_sender;
pub mod wake_gate;

#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod journal_crash_tests;
