//! What the phones hear.
//!
//! * [`rtp_endpoint`] — [`RtpEndpoint`](rtp_endpoint::RtpEndpoint): a phone's RTP socket played by the test;
//!   it records every packet and, once asked, talks back with a recognizable payload pattern (a tag byte), so
//!   a test can tell hold music from the peer's audio ([`PayloadClass`](rtp_endpoint::PayloadClass)).
//! * [`rtp_report`] — [`StreamReport`](rtp_report::StreamReport): what a run of packets says about the stream
//!   (sources, SSRCs, sequence gaps, timestamps, pacing) and the "one clean 20 ms G.711 stream" assertion.
//! * [`audio_check`] — audio by frequency for the real softphones: pure-tone WAVs to send, a Goertzel
//!   analysis of what they recorded (tone, music or silence, window by window).

pub mod audio_check;
pub mod rtp_endpoint;
pub mod rtp_report;
