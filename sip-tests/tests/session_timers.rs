//! Session timers (RFC 4028) end to end with SIPp: a parked phone that refreshes (UPDATE, then re-INVITE) lives
//! past the interval; one that stops refreshing gets parkd's BYE ("Session expired") and its orbit is freed;
//! one that asks parkd to refresh gets parkd's UPDATE at half the interval. The three run at once (~75 s).

use sip_tests::checks::response_header;
use sip_tests::{Parkd, ParkdOptions, RtpEndpoint, Sipp};
use std::time::Duration;

#[test]
fn refreshed_sessions_live_on_and_an_unrefreshed_one_is_ended_with_its_orbit_freed() {
    // No keepalive OPTIONS: only the session timer watches the parked legs here.
    let config = "[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\nkeepalive_interval = 0\n";
    let parkd = Parkd::start_with("session_timers", ParkdOptions { config: Some(config.into()), ..Default::default() });
    let (a, b, c) = (RtpEndpoint::bind("refreshing"), RtpEndpoint::bind("silent"), RtpEndpoint::bind("parkd refreshes"));
    let limit = Duration::from_secs(120);
    let refreshing = Sipp::new("session_timer_refreshing").service("701").rtp_port(a.port()).timeout(limit).spawn(&parkd);
    let silent = Sipp::new("session_timer_silent").service("702").rtp_port(b.port()).timeout(limit).spawn(&parkd);
    let by_parkd = Sipp::new("session_timer_parkd_refreshes").service("703").rtp_port(c.port()).timeout(limit).spawn(&parkd);

    let silent_out = silent.wait();
    silent_out.assert_passed(&parkd, "the phone that never refreshes gets parkd's BYE");
    assert_eq!(response_header(&silent_out, 200, "Session-Expires"), "90;refresher=uac");
    let times = silent_out.received_timed();
    let ok_at = times.iter().find(|(_, m)| m.starts_with("SIP/2.0 200")).map(|(t, _)| *t);
    let bye_at = times.iter().find(|(_, m)| m.starts_with("BYE ")).map(|(t, _)| *t);
    if let (Some(ok), Some(bye)) = (ok_at, bye_at) {
        eprintln!("figure: BYE {:.1} s after the 200 (expected 60 s: 90 - min(32, 90/3))", bye - ok);
    }
    // Its orbit is free: a directed park to 702 succeeds.
    let d = RtpEndpoint::bind("erin");
    let erin = Sipp::new("park_directed_uac").service("702").rtp_port(d.port()).hold_ms(300).run(&parkd);
    erin.assert_passed(&parkd, "702 free again after the expired session");

    let by_parkd_out = by_parkd.wait();
    by_parkd_out.assert_passed(&parkd, "parkd refreshes by UPDATE");
    let update = by_parkd_out.request("UPDATE").expect("parkd's UPDATE");
    assert!(update.contains("Session-Expires: 90;refresher=uac"), "{update}");
    let times = by_parkd_out.received_timed();
    let ok_at = times.iter().find(|(_, m)| m.starts_with("SIP/2.0 200")).map(|(t, _)| *t);
    let up_at = times.iter().find(|(_, m)| m.starts_with("UPDATE ")).map(|(t, _)| *t);
    if let (Some(ok), Some(up)) = (ok_at, up_at) {
        eprintln!("figure: parkd's UPDATE {:.1} s after the 200 (expected 45 s)", up - ok);
    }

    let refreshing_out = refreshing.wait();
    refreshing_out.assert_passed(&parkd, "refreshed by UPDATE and re-INVITE, the leg is still there at 75 s");
    assert!(refreshing_out.request("BYE").is_none(), "parkd never hung up the refreshing phone");
}
