//! Floods (issue 15): 2,000 INVITEs in 2 s to the park code from 127.0.0.2, never ACKed, while 127.0.0.1 parks
//! and retrieves. Every legitimate cycle must succeed; parkd's memory stays bounded; the refusals are counted
//! in /metrics and logged in lines the shipped fail2ban filter matches.

use sip_tests::checks::{expect_hold_music, expect_peer_audio};
use sip_tests::flood::{percentile, InviteFlood, LegitPhone};
use sip_tests::sipp::header;
use sip_tests::{paths, Parkd, ParkdOptions, RtpEndpoint, Sipp};
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const FLOOD_SOURCE: [u8; 4] = [127, 0, 0, 2];

/// The value of one sample line of a Prometheus text exposition.
fn metric(text: &str, sample: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

#[test]
fn invite_flood_from_one_address_never_stops_another_from_parking_and_retrieving() {
    // The test's RTP range is 10 even ports split over the media threads: share ports so the flood's 4
    // answered calls, the SIPp pair and the phone's cycles all get one (a real range is far larger).
    let options = ParkdOptions { http: true, extra_args: vec!["--rtp-legs-per-port".into(), "8".into()], ..Default::default() };
    let parkd = Parkd::start_with("invite_flood", options);
    let rss_before = parkd.rss_kib().unwrap_or(0);
    let flood = InviteFlood::start(parkd.sip_addr(), IpAddr::from(FLOOD_SOURCE), "700", 2_000, Duration::from_secs(2)).expect("flood socket on 127.0.0.2");
    let flood_ends = Instant::now() + Duration::from_secs(2);

    // From the start of the flood, as long as it goes on (and at least 5 times): a phone on 127.0.0.1 parks,
    // retrieves and hangs up, a cycle every 250 ms (8 new dialogs per second: a busy phone, inside the
    // default new_dialogs_per_second = 10 of one source).
    let addr = parkd.sip_addr();
    let cycles = std::thread::spawn(move || {
        let mut phone = LegitPhone::new(addr).expect("legit phone socket");
        let (mut times, mut failures, mut during) = (Vec::new(), Vec::new(), 0);
        let mut n = 0;
        while Instant::now() < flood_ends || n < 5 {
            let next = Instant::now() + Duration::from_millis(250);
            n += 1;
            during += usize::from(Instant::now() < flood_ends);
            match phone.cycle(n, "700") {
                Ok(t) => times.push(t),
                Err(e) => failures.push(format!("cycle {n}: {e}")),
            }
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        (times, failures, during)
    });

    // Meanwhile SIPp: a transferee parks and hears music; a retriever takes the call and both hear each other.
    std::thread::sleep(Duration::from_millis(100));
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(0xB0);
    let bob_run = Sipp::new("parked_waits_for_bye").service("700").rtp_port(bob.port()).timeout(Duration::from_secs(30)).spawn(&parkd);
    let ok = bob_run.wait_for_received(Duration::from_secs(10), |m| m.starts_with("SIP/2.0 200") && header(m, "Park-Orbit").is_some());
    let orbit = ok.as_deref().and_then(|m| header(m, "Park-Orbit")).map(str::to_string).unwrap_or_else(|| panic!("bob was not parked during the flood; parkd:\n{}", parkd.stderr_tail(30)));
    let parked_while_flooding = flood.sending();
    expect_hold_music(&bob, 25);
    let carol = RtpEndpoint::bind("carol (retriever)");
    carol.start_talking(0xC0);
    let carol_run = Sipp::new("retrieve_uac").service(&orbit).rtp_port(carol.port()).hold_ms(1000).spawn(&parkd);
    expect_peer_audio(&carol, 0xB0, 10);
    expect_peer_audio(&bob, 0xC0, 10);
    carol_run.wait().assert_passed(&parkd, "retrieve during the flood");
    bob_run.wait().assert_passed(&parkd, "park during the flood");
    let (times, failures, during) = cycles.join().expect("the phone's thread");
    let rss_flood = parkd.rss_kib().unwrap_or(0);
    let report = flood.finish(Duration::from_millis(1500));
    let rss_after = parkd.rss_kib().unwrap_or(0);

    let mut invites: Vec<Duration> = times.iter().flat_map(|t| [t.park, t.retrieve]).collect();
    eprintln!(
        "flood from 127.0.0.2: {} INVITEs in {:.2} s; answered 200: {}, 503: {}, other: {:?}; unanswered: {}; datagrams back: {}",
        report.sent,
        report.sending.as_secs_f64(),
        report.got(200),
        report.got(503),
        report.answered.iter().filter(|(s, _)| **s != 200 && **s != 503).collect::<Vec<_>>(),
        report.unanswered(),
        report.datagrams
    );
    eprintln!(
        "legit 127.0.0.1: SIPp park ({}) + retrieve with media; {} Rust cycles ({during} started while flooding), {} failed; INVITE→200 p50 {:?} p99 {:?} max {:?}",
        if parked_while_flooding { "answered while flooding" } else { "answered after the flood" },
        times.len() + failures.len(),
        failures.len(),
        percentile(&mut invites, 50.0),
        percentile(&mut invites, 99.0),
        percentile(&mut invites, 100.0)
    );
    eprintln!(
        "parkd RSS: {rss_before} KiB before, {rss_flood} KiB at the end of the flood, {rss_after} KiB 1.5 s later (growth {} KiB)",
        rss_flood.max(rss_after).saturating_sub(rss_before)
    );
    assert!(failures.is_empty(), "every legitimate cycle must succeed: {failures:#?}\nparkd:\n{}", parkd.stderr_tail(40));
    assert!(during >= 1 && parked_while_flooding, "legitimate calls were made while the flood was sending");
    assert_eq!(report.sent, 2_000);
    assert!(report.got(200) <= 4, "the flood parks at most unconfirmed_per_source = 4 calls: {report:?}");
    assert!(report.got(503) <= 15, "at most 5 503s per second (2 s of flood span at most 3 seconds): {report:?}");
    assert!(report.unanswered() >= 1_900, "past its limits the flood is answered with silence: {report:?}");
    assert!(rss_flood.max(rss_after).saturating_sub(rss_before) < 64 * 1024, "memory stays bounded");

    // Counted by reason in /metrics.
    let url = format!("http://{}/metrics", parkd.http_addr.expect("http"));
    let text = ureq::get(&url).timeout(Duration::from_secs(10)).call().expect("GET /metrics").into_string().unwrap_or_default();
    let unconfirmed = metric(&text, r#"parkd_sip_refusals_total{reason="unconfirmed"}"#).unwrap_or_else(|| panic!("no refusal counter in:\n{text}"));
    eprintln!("parkd_sip_refusals_total{{reason=\"unconfirmed\"}} = {unconfirmed}");
    assert!(unconfirmed >= 1_900, "{unconfirmed} refusals counted for 2,000 INVITEs past the cap");
    assert_eq!(metric(&text, r#"parkd_sip_refusals_total{reason="rate_out_of_dialog"}"#), Some(0), "the phone was never refused");

    // The log lines: rate-limited, and matched by the shipped fail2ban filter for 127.0.0.2 only.
    let log = std::fs::read_to_string(parkd.stderr_path()).unwrap_or_default();
    let lines = log.lines().filter(|l| l.contains("refused sip source=")).count();
    eprintln!("{lines} refusal lines logged for {unconfirmed} refusals");
    assert!((3..=40).contains(&lines), "a flood is logged sparingly (3 lines per second and source, plus summaries): {lines}");
    let filter = paths::workspace_dir().join("deploy/fail2ban/filter.d/parkd.conf");
    let out = Command::new("fail2ban-regex")
        .args(["-o", "ip"])
        .arg(parkd.stderr_path())
        .arg(&filter)
        .output()
        .unwrap_or_else(|e| panic!("cannot run fail2ban-regex ({e}): apt-get install fail2ban, or run scripts/test.sh"));
    let ips = String::from_utf8_lossy(&out.stdout).into_owned();
    let banned: Vec<&str> = ips.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    eprintln!("fail2ban-regex -o ip: {} matches, distinct {:?}", banned.len(), banned.iter().collect::<std::collections::BTreeSet<_>>());
    assert!(out.status.success(), "fail2ban-regex failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(banned.len(), lines, "the filter matches every refusal line");
    assert!(banned.iter().all(|ip| *ip == "127.0.0.2"), "only the flooding address: {banned:?}");
}
