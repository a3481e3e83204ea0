//! The capacity guard against the real binary (issue 20): with a tiny forced capacity, a new park gets `503` with
//! `Retry-After`, the refusal is counted in `/metrics` (`parkd_sip_refusals_total{reason="media_capacity"}`,
//! `parkd_capacity_refusing`, `parkd_media_load{thread}`), the SSE stream says `capacity` refusing / accepting,
//! the calls already parked keep their hold music, a retrieve still works, and parks are taken again once there
//! is room. Two forced capacities: the static cap (`media_max_parked_per_thread = 2`) and the load threshold
//! (`media_busy_max = 0`: any measured load is too much), which takes the io side's measure to the core.

mod cluster_common;

use cluster_common::{orbit, Phone};
use sip_tests::checks::MEDIA_WAIT;
use sip_tests::harness::sse::SseTap;
use sip_tests::{Parkd, ParkdOptions, PayloadClass, RtpEndpoint};
use std::time::{Duration, Instant};

const TOKEN: &str = "capacity-test-token-0123456789";

fn start(name: &str, limits: &str) -> Parkd {
    let config = Some(format!("[limits]\nparked_per_source = 100\nretry_after = 9\n{limits}"));
    let extra_args = ["--http-token", TOKEN, "--media-threads", "1"].map(String::from).to_vec();
    Parkd::start_with(name, ParkdOptions { http: true, extra_args, config, ..ParkdOptions::default() })
}

fn metrics(p: &Parkd) -> String {
    let url = format!("http://{}/metrics", p.http_addr.expect("http"));
    ureq::get(&url).timeout(Duration::from_secs(5)).call().expect("GET /metrics").into_string().unwrap_or_default()
}

/// The value of the metric line `name value`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

/// Hold-music packets `ep` has received so far (never inside a `wait_until` predicate: it takes the lock).
fn music(ep: &RtpEndpoint) -> usize {
    ep.report(PayloadClass::Other).count
}

#[test]
fn static_cap_refuses_503_with_retry_after_parked_calls_keep_music_and_parks_resume() {
    let parkd = start("capacity_static", "media_max_parked_per_thread = 2\n");
    let sse = SseTap::connect(parkd.http_addr.unwrap(), TOKEN, None);
    let mut phone = Phone::new(&parkd);
    let eps: Vec<RtpEndpoint> = ["bob", "carol"].iter().map(|n| RtpEndpoint::bind(n)).collect();
    let mut parked = Vec::new();
    for ep in &eps {
        phone.rtp = Some(ep.port());
        let (c, r) = phone.park("700", true);
        assert_eq!(r.status, 200, "{} {}", r.status, r.reason);
        parked.push((c, orbit(&r)));
        // Music arrives; its stream is checked below over a longer sample (a loaded machine may skip a frame).
        assert!(ep.wait_for_class(PayloadClass::Other, 10, MEDIA_WAIT), "{}: hold music: {}", ep.name(), ep.report(PayloadClass::Other));
    }
    let before: Vec<usize> = eps.iter().map(music).collect();
    let (_, r) = phone.park("700", true);
    assert_eq!((r.status, r.reason.as_str(), r.common.header("Retry-After")), (503, "Service Unavailable: Media Capacity", Some("9")));
    assert!(sse.wait_for("event: capacity", Duration::from_secs(3)), "SSE: {}", sse.text());
    assert!(sse.text().contains(r#""state":"refusing""#) && sse.text().contains(r#""cause":"max_parked""#), "SSE: {}", sse.text());
    let text = metrics(&parkd);
    assert_eq!(metric(&text, r#"parkd_sip_refusals_total{reason="media_capacity"}"#), Some(1.0), "{text}");
    assert_eq!(metric(&text, "parkd_capacity_refusing"), Some(1.0), "{text}");
    assert!(metric(&text, r#"parkd_media_load{thread="0"}"#).is_some_and(|l| (0.0..=1.0).contains(&l)), "{text}");
    // The calls parked before keep their music through the refusal: one more second of it each, one stream.
    for (ep, b) in eps.iter().zip(&before) {
        assert!(ep.wait_for_class(PayloadClass::Other, b + 50, Duration::from_secs(5)), "{}: music went on after the refusal: {}", ep.name(), ep.report(PayloadClass::Other));
        ep.report(PayloadClass::Other).assert_g711_20ms_stream(&format!("hold music at {} through the refusal", ep.name()), b + 50);
    }
    // A retrieve is not a park: Dave takes Bob's call while the guard refuses.
    let dave_ep = RtpEndpoint::bind("dave");
    phone.rtp = Some(dave_ep.port());
    let (mut dave, r) = phone.park(&parked[0].1, false);
    assert_eq!(r.status, 200, "retrieve while refusing: {} {}", r.status, r.reason);
    // Dave hangs up: parkd hangs Bob up, one call parked, room for one more: parks are taken again.
    dave.to_tag = r.common.to.tag().map(str::to_string);
    phone.ua.bye(&dave);
    let t0 = Instant::now();
    while !phone.byes.iter().any(|id| *id == parked[0].0.call_id) {
        assert!(t0.elapsed() < Duration::from_secs(5), "parkd never hung Bob up");
        phone.pump();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(sse.wait_for(r#""state":"accepting""#, Duration::from_secs(3)), "SSE: {}", sse.text());
    assert_eq!(metric(&metrics(&parkd), "parkd_capacity_refusing"), Some(0.0));
    let erin = RtpEndpoint::bind("erin");
    phone.rtp = Some(erin.port());
    let (_, r) = phone.park("700", true);
    assert_eq!(r.status, 200, "room again: {} {}", r.status, r.reason);
    assert!(erin.wait_for_class(PayloadClass::Other, 10, MEDIA_WAIT), "erin: hold music: {}", erin.report(PayloadClass::Other));
    // Two parked again: the cap is reached again, and said so.
    let t0 = Instant::now();
    while sse.text().matches(r#""state":"refusing""#).count() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(3), "a second refusing turn: {}", sse.text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(parkd.stderr_all().contains("capacity guard: refusing new parks"), "a WARN line on the turn");
}

#[test]
fn load_threshold_from_the_media_threads_measure_refuses_new_parks() {
    // Any measured load is at or above 0: the first report from the media thread turns the guard to refusing.
    let parkd = start("capacity_load", "media_busy_max = 0.0\nmedia_busy_resume = 0.0\n");
    // From the first event on (the turn may come before the stream is open).
    let sse = SseTap::connect(parkd.http_addr.unwrap(), TOKEN, Some(0));
    assert!(sse.wait_for(r#""cause":"media_busy""#, Duration::from_secs(3)), "the load report reached the core: {}", sse.text());
    let mut phone = Phone::new(&parkd);
    let (_, r) = phone.park("700", true);
    assert_eq!((r.status, r.common.header("Retry-After")), (503, Some("9")));
    let text = metrics(&parkd);
    assert_eq!(metric(&text, r#"parkd_sip_refusals_total{reason="media_capacity"}"#), Some(1.0), "{text}");
    assert!(metric(&text, r#"parkd_media_pacer_late_seconds{thread="0"}"#).is_some(), "{text}");
    // The media thread publishes what it measured (its idle wake-ups are work too): a share above 0, below 1.
    let t0 = Instant::now();
    loop {
        let text = metrics(&parkd);
        let load = metric(&text, r#"parkd_media_load{thread="0"}"#).unwrap_or(0.0);
        if load > 0.0 {
            assert!(load < 1.0, "{text}");
            println!("figure: idle media thread's measured load {load:.6}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "the media thread never published a load: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
