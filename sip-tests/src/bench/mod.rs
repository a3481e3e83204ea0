//! The benchmark harness behind `cargo run --release -p sip-tests --bin bench` (issue 5).
//!
//! Over loopback only, with every load bounded in count and time: parkd pinned to core 0, this
//! program (SIP load generator, RTP sinks) pinned to core 1.
//!
//! * [`sys`] — pinning, CPU time and RSS from `/proc`, the parkd child process.
//! * [`net`] — batched UDP receive (`recvmmsg`) and send (`sendmmsg`).
//! * [`hist`] — a fixed-bucket latency histogram.
//! * [`sipua`] — a tiny SIP UA building messages as text and parsing with parkd's codec.
//! * [`density`] — N parked calls receiving hold music.
//! * [`calib`] — the raw `sendmmsg` floor.
//! * [`sip_floor`] — a bare UDP responder: the kernel's share of a cycle.
//! * [`cycle`] — park → retrieve → bridge → hang-up cycles and the unpark switch.
//! * [`flood`] — cycles from one source while another floods never-ACKed INVITEs.
//! * [`report`] — `bench-results/README.md` and the SVG plot.

pub mod calib;
pub mod cycle;
pub mod flood;
pub mod density;
pub mod hist;
pub mod net;
pub mod report;
pub mod sip_floor;
pub mod sipua;
pub mod sys;
