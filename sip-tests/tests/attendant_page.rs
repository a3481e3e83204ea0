//! The attendant page in a real browser: headless Chromium opens the link parkd wrote to
//! `<state_dir>/attendant-link` (`http://…/#token=…`), the page keeps the token in sessionStorage and drops it
//! from the address bar, a SIP park shows up on the board within a second, the dwell clock runs, a click on
//! "Hang up" ends the call. Without the fragment the page says where to find the link. The screenshot is saved
//! as `target/attendant-page.png`.

use sip_tests::checks::expect_hold_music;
use sip_tests::paths;
use sip_tests::{Chromium, Parkd, ParkdOptions, RtpEndpoint, Sipp};
use std::time::{Duration, Instant};

fn orbit_state_is(orbit: &str, state: &str) -> String {
    format!("(() => {{ const el = document.querySelector('.orbit[data-orbit=\"{orbit}\"]'); return !!el && el.dataset.state === '{state}'; }})()")
}

/// The API shows 701 parked.
fn api_shows_parked(parkd: &Parkd, token: &str) -> bool {
    let url = format!("http://{}/v1/lots/default/orbits", parkd.http_addr.unwrap());
    let Ok(r) = ureq::get(&url).set("Authorization", &format!("Bearer {token}")).call() else { return false };
    let v: serde_json::Value = r.into_json().unwrap_or_default();
    v.as_array().and_then(|a| a.first()).is_some_and(|o| o["state"] == "parked")
}

#[test]
fn attendant_page_shows_the_park_live_and_hangs_up() {
    let parkd = Parkd::start_with("attendant_page", ParkdOptions { http: true, ..Default::default() });
    let token = parkd.http_token();
    let link = std::fs::read_to_string(parkd.state_dir().join("attendant-link")).expect("parkd wrote the attendant link");
    let link = link.trim();
    assert_eq!(link, format!("http://{}/#token={token}", parkd.http_addr.unwrap()));
    let mut page = Chromium::open(link, &parkd.log_dir);
    assert!(page.wait_for("document.querySelector('#conn').textContent === 'live'", Duration::from_secs(20)).is_some(), "event stream connected");
    assert_eq!(page.eval("location.hash"), serde_json::json!(""), "the token left the address bar");
    assert_eq!(page.eval("sessionStorage.getItem('parkd-token')"), serde_json::json!(token), "kept for this tab");
    assert!(page.wait_for(&orbit_state_is("701", "free"), Duration::from_secs(5)).is_some(), "board rendered with 701 free");

    let bob = RtpEndpoint::bind("bob");
    let bob_run = Sipp::new("parked_waits_for_bye").service("700").rtp_port(bob.port()).timeout(Duration::from_secs(60)).spawn(&parkd);
    let start = Instant::now();
    while !api_shows_parked(&parkd, &token) {
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

    // The event stream drops; the hang-up happens while it is down; on reconnect the page sends Last-Event-ID
    // and parkd replays what it missed (a fresh subscription without it would not show the hang-up).
    page.eval("state.stream.abort(); state.stream = null; clearTimeout(state.retryTimer); true");
    page.eval("document.querySelector('.orbit[data-orbit=\"701\"] button.hangup').click()");
    bob_run.wait().assert_passed(&parkd, "the hang-up button sends bob a BYE");
    assert!(page.wait_for(&orbit_state_is("701", "free"), Duration::from_secs(2)).is_some(), "701 free again on the board");
    let log_has_hangup = "[...document.querySelectorAll('#log li')].some((li) => li.textContent.includes('hung up 701'))";
    assert_eq!(page.eval(log_has_hangup), serde_json::json!(false), "the event log missed it while the stream was down");
    page.eval("connect(); true");
    assert!(page.wait_for(log_has_hangup, Duration::from_secs(5)).is_some(), "replayed after reconnecting with Last-Event-ID");
    drop(page);

    // Without the fragment (and nothing in sessionStorage: a fresh browser) the page says where the link is.
    let dir = parkd.log_dir.join("no-token");
    std::fs::create_dir_all(&dir).expect("log dir");
    let mut bare = Chromium::open(&format!("http://{}/", parkd.http_addr.unwrap()), &dir);
    assert!(bare.wait_for("!!document.querySelector('#no-token')", Duration::from_secs(20)).is_some(), "the no-token message shows");
    let msg = bare.eval("document.querySelector('#no-token').innerText");
    assert!(msg.as_str().is_some_and(|m| m.contains("attendant-link")), "it names the link file: {msg}");
    assert_eq!(bare.eval("document.querySelector('#conn').textContent"), serde_json::json!("no token"));
    assert_eq!(bare.eval("document.querySelectorAll('.orbit').length"), serde_json::json!(0), "no data without the token");
}
