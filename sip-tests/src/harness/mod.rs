//! The processes and places a test owns: its own parkd ([`parkd::Parkd`], started from `target/debug/parkd`
//! and stopped by PID), its own block of ports ([`ports::PortPlan`]), its own log directory ([`paths`]), and
//! what parkd logged ([`park_events`]).
//!
//! * [`parkd`] — start parkd with [`ParkdOptions`](parkd::ParkdOptions) (lot, config TOML, HTTP, state dir,
//!   extra flags); wait until it answers OPTIONS; its stderr tail is printed when a test panics. Stop it with
//!   `kill -9` or a signal and [`restart`](parkd::Parkd::restart) it on the same ports and state directory
//!   (issue 17: calls survive a restart).
//! * [`ports`] — a block of 32 free ports per test (SIP, SIPp's ports, the RTP range), so tests run in parallel.
//! * [`paths`] — the workspace, `target/`, `scenarios/<name>.xml`, `target/e2e-logs/<test>-…/`.
//! * [`process`] — stop a child by its PID (SIGTERM, then SIGKILL); read a process's RSS.
//! * [`redis`] — a real `redis-server` per test (own port, no persistence): pause, resume, restart empty.
//! * [`park_events`] — the JSON park events parkd logs, read back from its stderr.
//! * [`sse`] — read `GET /v1/events` on a thread, keep what came.
//! * [`udp`] — nonblocking loopback UDP sockets with big kernel buffers (for load).

pub mod park_events;
pub mod parkd;
pub mod paths;
pub mod ports;
pub mod process;
pub mod redis;
pub mod sse;
pub mod udp;
