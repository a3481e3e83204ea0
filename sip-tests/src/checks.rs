//! Checks shared by the e2e tests: hold music, bridged audio, answers in SIPp's message log.

use crate::media::rtp_endpoint::{PayloadClass, ReceivedPacket, RtpEndpoint};
use crate::media::rtp_report::StreamReport;
use crate::sip::sipp::{self, SippOutcome};
use std::time::Duration;

/// The longest any test waits for media to start or to reach a packet count (a loaded 2-core machine
/// may stall processes for seconds; a healthy run needs well under one).
pub const MEDIA_WAIT: Duration = Duration::from_secs(20);

/// Waits for `min` hold-music packets at `ep` and checks they form one clean 20 ms G.711 stream.
pub fn expect_hold_music(ep: &RtpEndpoint, min: usize) -> StreamReport {
    if !ep.wait_for_class(PayloadClass::Other, min, MEDIA_WAIT) {
        panic!(
            "{}: expected at least {min} hold-music packets within {MEDIA_WAIT:?}; got {} packets ({} not RTP): {}",
            ep.name(),
            ep.packets().len(),
            ep.not_rtp_count(),
            ep.report(PayloadClass::Other)
        );
    }
    let report = ep.report(PayloadClass::Other);
    report.assert_g711_20ms_stream(&format!("hold music at {}", ep.name()), min);
    report
}

/// Waits for `min` packets carrying the peer's pattern `tag` at `ep` and checks the stream.
pub fn expect_peer_audio(ep: &RtpEndpoint, tag: u8, min: usize) -> StreamReport {
    if !ep.wait_for_class(PayloadClass::Pattern(tag), min, MEDIA_WAIT) {
        panic!(
            "{}: expected at least {min} packets of the peer's audio (pattern {tag:#04x}) within {MEDIA_WAIT:?}; \
             music/other: {}; peer: {}",
            ep.name(),
            ep.report(PayloadClass::Other),
            ep.report(PayloadClass::Pattern(tag))
        );
    }
    let report = ep.report(PayloadClass::Pattern(tag));
    report.assert_g711_20ms_stream(&format!("relayed audio at {}", ep.name()), min);
    report
}

/// Packets of class `Other` (music) that arrived after the first packet with pattern `tag`.
pub fn music_after_bridge(packets: &[ReceivedPacket], tag: u8) -> usize {
    match packets.iter().position(|p| p.class == PayloadClass::Pattern(tag)) {
        Some(i) => packets.iter().skip(i).filter(|p| p.class == PayloadClass::Other).count(),
        None => 0,
    }
}

/// Packets of pattern `tag` received so far.
pub fn pattern_count(ep: &RtpEndpoint, tag: u8) -> usize {
    ep.packets().iter().filter(|p| p.class == PayloadClass::Pattern(tag)).count()
}

/// Asserts that nothing more arrives at `ep` for `quiet` (after a short grace period for packets in flight).
pub fn expect_media_stops(ep: &RtpEndpoint, what: &str) {
    std::thread::sleep(Duration::from_millis(500));
    let before = ep.packets().len();
    std::thread::sleep(Duration::from_millis(1000));
    let after = ep.packets().len();
    assert!(after <= before + 1, "{what}: {} packets still arrived at {} 0.5-1.5 s after the hang-up", after - before, ep.name());
}

/// The value of header `name` in the first `code` response of a SIPp run (panics with the log if absent).
pub fn response_header(outcome: &SippOutcome, code: u16, name: &str) -> String {
    let Some(msg) = outcome.response(code) else {
        panic!("{}: no {code} response in the message log:\n{}", outcome.label, sipp::tail(&outcome.messages, 60))
    };
    match sipp::header(&msg, name) {
        Some(v) => v.to_string(),
        None => panic!("{}: the {code} response has no {name} header:\n{msg}", outcome.label),
    }
}

/// The RTP port parkd's SDP answer (in the first 200 OK) names.
pub fn answer_rtp_port(outcome: &SippOutcome) -> u16 {
    let Some(msg) = outcome.response(200) else { panic!("{}: no 200 OK in the message log", outcome.label) };
    match sipp::sdp_audio_port(sipp::body(&msg)) {
        Some(p) => p,
        None => panic!("{}: the 200 OK has no m=audio line:\n{msg}", outcome.label),
    }
}
