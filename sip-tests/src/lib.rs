//! End-to-end test harness for parkd.
//!
//! Each test starts its own `parkd` process ([`Parkd`]) on its own SIP port and RTP range ([`PortPlan`]),
//! so tests run in parallel; drives it with SIPp scenarios from `<workspace>/scenarios` ([`Sipp`]); and
//! plays the phones' media with Rust RTP sockets ([`RtpEndpoint`]) that record what arrives and talk back
//! with a recognizable payload pattern. Real softphones: [`Baresip`] (baresip 1.0 driven over `ctrl_tcp`,
//! sending a pure tone and recording what it hears, checked by frequency with [`audio_check`]).
//!
//! Run everything with `scripts/test.sh` (it builds the `parkd` binary first).

pub mod bench;
pub mod audio_check;
pub mod baresip;
pub mod baresip_ctrl;
pub mod browser;
pub mod checks;
pub mod flood;
pub mod park_events;
pub mod parkd;
pub mod paths;
pub mod ports;
pub mod process;
pub mod rtp_endpoint;
pub mod rtp_report;
pub mod sip_probe;
pub mod sip_tcp;
pub mod sipp;

pub use baresip::Baresip;
pub use browser::Chromium;
pub use parkd::{Parkd, ParkdOptions};
pub use ports::PortPlan;
pub use rtp_endpoint::{PayloadClass, ReceivedPacket, RtpEndpoint};
pub use rtp_report::StreamReport;
pub use sipp::{Sipp, SippOutcome, SippRun};
