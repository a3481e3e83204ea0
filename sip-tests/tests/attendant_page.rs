//! The attendant page in a real browser: headless Chromium loads `/`, a SIP park shows up on the board within
//! a second, the dwell clock runs, a click on "Hang up" ends the call. The screenshot is saved as
//! `target/attendant-page.png`.

use sip_tests::checks::expect_hold_music;
use sip_tests::paths;
use sip_tests::{Chromium, Parkd, ParkdOptions, RtpEndpoint, Sipp};
use std::time::{Duration, Instant};

fn orbit_state_is(orbit: &str, state: &str) -> String {
    format!("(() => {{ const el = document.querySelector('.orbit[data-orbit=\"{orbit}\"]'); return !!el && el.dataset.state === '{state}'; }})()")
}

/// The API shows 701 parked.
fn api_shows_parked(parkd: &Parkd) -> bool {
    let url = format!("http://{}/v1/lots/default/orbits", parkd.http_addr.unwrap());
    let Ok(r) = ureq::get(&url).call() else { return false };
    let v: serde_json::Value = r.into_json().unwrap_or_default();
    v.as_array().and_then(|a| a.first()).is_some_and(|o| o["state"] == "parked")
}

#[test]
fn attendant_page_shows_the_park_live_and_hangs_up() {
    let parkd = Parkd::start_with("attendant_page", ParkdOptions { http: true, ..Default::default() });
    let url = format!("http://{}/", parkd.http_addr.unwrap());
    let mut page = Chromium::open(&url, &parkd.log_dir);
    assert!(page.wait_for("document.querySelector('#conn').textContent === 'live'", Duration::from_secs(20)).is_some(), "event stream connected");
    assert!(page.wait_for(&orbit_state_is("701", "free"), Duration::from_secs(5)).is_some(), "board rendered with 701 free");

    let bob = RtpEndpoint::bind("bob");
    let bob_run = Sipp::new("parked_waits_for_bye").service("700").rtp_port(bob.port()).timeout(Duration::from_secs(60)).spawn(&parkd);
    let start = Instant::now();
    while !api_shows_parked(&parkd) {
        assert!(start.elapsed() < Duration::from_secs(20), "park never showed in the API");
        std::thread::sleep(Duration::from_millis(10));
    }
    let shown = page.wait_for(&orbit_state_is("701", "parked"), Duration::from_secs(5)).expect("the park shows on the board");
    assert!(shown < Duration::from_secs(1), "the board took {shown:?} to show the park (must be under 1 s)");
    expect_hold_music(&bob, 10);

    let card = page.eval("document.querySelector('.orbit[data-orbit=\"701\"]').innerText");
    let card = card.as_str().unwrap_or_default().to_string();
    assert!(card.contains("Bob") && card.contains("sip:bob@127.0.0.1"), "caller identity on the card: {card:?}");
    assert!(card.contains("alice"), "the parker is shown: {card:?}");
    assert!(page.wait_for("document.querySelector('.orbit[data-orbit=\"701\"] .dwell').textContent >= '0:02'", Duration::from_secs(5)).is_some(), "the dwell clock runs");
    assert!(page.wait_for("document.querySelectorAll('#log li').length >= 1", Duration::from_secs(2)).is_some(), "the event log shows the park");
    let shot = paths::target_dir().join("attendant-page.png");
    page.screenshot(&shot);
    eprintln!("screenshot: {}", shot.display());

    page.eval("document.querySelector('.orbit[data-orbit=\"701\"] button.hangup').click()");
    bob_run.wait().assert_passed(&parkd, "the hang-up button sends bob a BYE");
    assert!(page.wait_for(&orbit_state_is("701", "free"), Duration::from_secs(2)).is_some(), "701 free again on the board");
}
