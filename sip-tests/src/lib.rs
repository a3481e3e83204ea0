//! End-to-end tests of parkd: the harness that starts the real binary and plays the phones around it.
//!
//! # Where things are
//!
//! ```text
//! sip-tests/
//!   src/harness/   a parkd process per test, its ports, paths and log dir, stopping processes   (harness)
//!   src/sip/       SIPp driver, a tiny Rust SIP UA (and many parked callers on it), INVITE flood,
//!                  raw UDP probes, SIP over TCP                                                   (sip)
//!   src/media/     RTP endpoints that record and talk, stream reports, audio by frequency      (media)
//!   src/clients/   real programs: baresip and linphone softphones, headless Chromium            (clients)
//!   src/checks.rs  the assertions most tests share: hold music, peer audio, headers            (checks)
//!   tests/*.rs     the tests, one file per feature (park, retrieve, recall, transfer, blf, api, …)
//!   bench/         the benchmark, its own crate: `cargo run --release -p parkd-bench -- --quick`
//! ../scenarios/    the SIPp scenarios the tests run (`Sipp::new("park_indirect_uac")`)
//! ```
//!
//! Each test starts its own `parkd` ([`Parkd`]) on its own SIP port and RTP range ([`PortPlan`]), so tests run
//! in parallel; drives it with SIPp scenarios from `<workspace>/scenarios` ([`Sipp`]); and plays the phones'
//! media with Rust RTP sockets ([`RtpEndpoint`]) that record what arrives and talk back with a recognizable
//! payload pattern. Real softphones: [`Baresip`] (sending a pure tone and recording what it hears, checked by
//! frequency with [`audio_check`](media::audio_check)). Traffic stays on 127.0.0.0/8; every process a test
//! starts is stopped by its PID when its guard drops.
//!
//! # To write a new e2e test
//!
//! Add a `#[test]` to the `tests/<feature>.rs` it belongs to (a new feature gets a new file, with a `//!` line
//! saying what it proves). Start parkd, play the phones, check what they got:
//!
//! ```no_run
//! use sip_tests::checks::{expect_hold_music, response_header};
//! use sip_tests::{Parkd, RtpEndpoint, Sipp};
//!
//! // Its own parkd (own ports, logs in target/e2e-logs/<name>-…/), stopped when `parkd` drops;
//! // `Parkd::start_with(name, ParkdOptions { config: Some(toml), http: true, .. })` configures it.
//! let parkd = Parkd::start("indirect_park_example");
//! // Bob's RTP socket is played by the test, his signalling by SIPp (scenarios/park_indirect_uac.xml).
//! let bob = RtpEndpoint::bind("bob");
//! let run = Sipp::new("park_indirect_uac").service("700").rtp_port(bob.port()).hold_ms(3000).spawn(&parkd);
//! // What bob hears: one clean 20 ms G.711 stream of hold music (waits, then asserts).
//! expect_hold_music(&bob, 50);
//! // What SIPp saw: the scenario passed (else the panic shows SIPp's errors and parkd's log tail).
//! let outcome = run.wait();
//! outcome.assert_passed(&parkd, "indirect park");
//! assert_eq!(response_header(&outcome, 200, "Park-Orbit"), "701");
//! ```
//!
//! A new SIPp scenario goes to `scenarios/` (see its README). Never assert on a timing (report it with
//! `eprintln!`), and bound every load in count and time.
//!
//! Run everything with `bash scripts/test.sh` (it builds the `parkd` binary first; the tests start
//! `target/debug/parkd`), one file with `cargo test -p sip-tests --test park`.

pub mod checks;
pub mod clients;
pub mod harness;
pub mod media;
pub mod sip;

pub use clients::baresip::Baresip;
pub use clients::browser::Chromium;
pub use harness::parkd::{Parkd, ParkdOptions};
pub use harness::paths;
pub use harness::ports::PortPlan;
pub use media::rtp_endpoint::{PayloadClass, ReceivedPacket, RtpEndpoint};
pub use media::rtp_report::StreamReport;
pub use sip::sipp::{Sipp, SippOutcome, SippRun};
