//! The parkd benchmark (issue 5) behind `cargo run --release -p parkd-bench` (the CLI and its flags: `src/main.rs`).
//!
//! Over loopback only (in a private network namespace when possible), with every load bounded in count and
//! time: parkd pinned to core 0, the benchmark (SIP load generator, RTP sinks) pinned to core 1, both at
//! nice -15. Not part of the test suite.
//!
//! * [`sys`] — pinning, CPU time and RSS from `/proc`, the parkd child process.
//! * [`net`] — batched UDP receive (`recvmmsg`) and send (`sendmmsg`).
//! * [`hist`] — a fixed-bucket latency histogram.
//! * [`density`] — N parked calls receiving hold music.
//! * [`calib`] — the bare `sendmmsg` floor; [`calib_senders`] other ways to send its packets, compared by
//!   [`calib_report`] (`--calib-senders`, issue 20: which sender is cheapest).
//! * [`sip_floor`] — a bare UDP responder: the kernel's share of a cycle.
//! * [`cycle`] — park → retrieve → bridge → hang-up cycles and the unpark switch.
//! * [`flat`] — the cycle's cost against the number of calls already parked (issue 20).
//! * [`shards`] — the cycle against one SIP thread and two (`--sip-threads 2`), sustained rate at equal p99 (issue 20).
//! * [`flood`] — cycles from one source while another floods never-ACKed INVITEs.
//! * [`guard`] — the capacity guard: 120 % of the ceiling offered, guard on and off (issue 20).
//! * [`restart`] — N parked calls, `kill -9`, restart: ready time, per-call resume gap, calls lost (issue 17).
//! * [`cluster`] — three parkd nodes on one Redis: park/retrieve cycles same-node and cross-node (issue 18),
//!   reported by [`cluster_report`] (`bench-results/cluster/README.md`).
//! * [`secure_density`], [`secure_cycle`] over [`secure_sip`] — SRTP hold-music density (plain vs AES-CM vs GCM), park
//!   cycles over UDP / TCP / TLS and TLS handshakes (issue 19), reported by [`secure_report`] (`bench-results/secure/`).
//! * [`srtp_micro`] — ns per SRTP protect of one hold packet, per suite and way of calling `rtc-srtp` (`--srtp-micro`).
//! * [`report`] — `bench-results/README.md` and the SVG plot.
//!
//! From the test harness ([`sip_tests`]) it takes the SIP [`Ua`](sip_tests::sip::ua::Ua) that speaks for
//! thousands of calls over one socket, the [`InviteFlood`](sip_tests::sip::flood::InviteFlood) of the flood
//! test, the readiness OPTIONS ping, the loopback sockets with big buffers and the workspace paths.

pub mod calib;
pub mod calib_report;
pub mod calib_senders;
pub mod cluster;
pub mod cluster_report;
pub mod cycle;
pub mod density;
pub mod flat;
pub mod flood;
pub mod guard;
pub mod hist;
pub mod net;
pub mod report;
pub mod restart;
pub mod secure_cycle;
pub mod secure_density;
pub mod secure_report;
pub mod secure_sip;
pub mod shards;
pub mod sip_floor;
pub mod srtp_micro;
pub mod sys;
