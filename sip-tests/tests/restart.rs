//! Calls survive parkd going away (issue 17): `kill -9` or SIGTERM, then parkd started again on the same ports and
//! state directory. Parked calls keep their orbits and their hold music resumes from the same RTP port with the
//! same SSRC and continuing sequence numbers; a restored call's BYE is answered and frees its orbit; parkd's
//! later in-dialog requests carry higher CSeqs; retrieves bridge audio both ways; BLF watchers get NOTIFYs;
//! bridged calls relay again; a torn journal tail is set aside. Hanging everything up is a deliberate act
//! (`POST /v1/calls/hangup-all`, SIGUSR2), never what a restart does. Recalls across a restart: restart_recall.rs.

use serde_json::Value;
use sip_tests::checks::{expect_hold_music, expect_peer_audio};
use sip_tests::sip::phones::Phones;
use sip_tests::{Parkd, ParkdOptions, PayloadClass, ReceivedPacket, RtpEndpoint, Sipp};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BOB: u8 = 0xB0;
const CAROL: u8 = 0xC0;
const SIPP_TIMEOUT: Duration = Duration::from_secs(120);
const WAIT: Duration = Duration::from_secs(20);

/// parkd with the HTTP API (its token generated in the state directory, which survives the restart), room for
/// 20+ calls from one source, and two lots: 700 (701-740) with a keepalive every 2 s (so parkd has sent
/// in-dialog requests before it goes away) for the UA's calls, and 800 (801-810) without keepalives for SIPp's
/// (its scenarios expect only parkd's BYE).
fn start(name: &str) -> Parkd {
    let config = "[limits]\nparked_per_source = 100\nunconfirmed_per_source = 50\nnew_dialogs_burst = 100\n\n\
                  [[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-740\"\nkeepalive_interval = 2\n\n\
                  [[lot]]\nname = \"sipp\"\npark_code = \"800\"\norbits = \"801-810\"\nkeepalive_interval = 0\n"
        .to_string();
    // The test's RTP range has 10 even ports: 4 legs share each (40 legs) for 20 parked calls and more.
    let extra_args = vec!["--rtp-legs-per-port".into(), "4".into()];
    Parkd::start_with(name, ParkdOptions { http: true, orbits: "701-740".into(), config: Some(config), extra_args, ..Default::default() })
}

/// An HTTP call with parkd's generated token: (status, JSON body).
fn api(parkd: &Parkd, method: &str, path: &str) -> (u16, Value) {
    let url = format!("http://{}{path}", parkd.http_addr.expect("http on"));
    let req = ureq::request(method, &url).timeout(Duration::from_secs(10)).set("Authorization", &format!("Bearer {}", parkd.http_token()));
    let res = if method == "POST" { req.set("Content-Type", "application/json").call() } else { req.call() };
    match res {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// Occupied orbits of every lot → the parked leg's Call-ID, from the API.
fn occupied(parkd: &Parkd) -> BTreeMap<String, String> {
    let (status, lots) = api(parkd, "GET", "/v1/lots");
    assert_eq!(status, 200, "{lots}");
    let mut out = BTreeMap::new();
    for lot in lots.as_array().into_iter().flatten() {
        for o in lot["orbits"].as_array().into_iter().flatten().filter(|o| o["state"] != "free") {
            out.insert(o["orbit"].as_str().unwrap_or_default().to_string(), o["call_id"].as_str().unwrap_or_default().to_string());
        }
    }
    out
}

/// How the hold stream at one phone went across the restart.
#[derive(Debug)]
struct Resume {
    /// From the restart's readiness to the first packet after it.
    gap: Duration,
    /// Sequence number steps between the last packet before the stop and the first after the restart.
    seq_step: u16,
    /// RTP timestamp step (8 kHz units) and the wall time between those two packets.
    ts_step: u32,
    wall: Duration,
}

/// Checks that `ep`'s stream after `ready` continues the one before `down`: same parkd source port, same
/// SSRC, sequence numbers going on (not restarting), at least `min` packets after the restart.
fn expect_resumed(ep: &RtpEndpoint, class: PayloadClass, down: Instant, ready: Instant, min: usize) -> Resume {
    let ok = ep.wait_until(WAIT, |p| p.iter().filter(|x| x.at >= ready && x.class == class).count() >= min);
    let packets: Vec<ReceivedPacket> = ep.packets().into_iter().filter(|p| p.class == class).collect();
    let before: Vec<&ReceivedPacket> = packets.iter().filter(|p| p.at < down).collect();
    let after: Vec<&ReceivedPacket> = packets.iter().filter(|p| p.at >= ready).collect();
    assert!(ok, "{}: {} packets after the restart (want {min}); {} before", ep.name(), after.len(), before.len());
    let (Some(last), Some(first)) = (before.last(), after.first()) else { panic!("{}: no packets before the stop", ep.name()) };
    assert_eq!(first.from, last.from, "{}: the stream must come from the same parkd port after the restart", ep.name());
    assert_eq!(first.ssrc, last.ssrc, "{}: same SSRC after the restart", ep.name());
    let seq_step = first.seq.wrapping_sub(last.seq);
    assert!((1..5000).contains(&seq_step), "{}: sequence must continue (last {} before, first {} after)", ep.name(), last.seq, first.seq);
    assert!(after.iter().all(|p| p.from == last.from && p.ssrc == last.ssrc), "{}: one stream after the restart", ep.name());
    Resume { gap: first.at.saturating_duration_since(ready), seq_step, ts_step: first.timestamp.wrapping_sub(last.timestamp), wall: first.at - last.at }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default()
}

fn report_gaps(what: &str, ready: Duration, resumes: &[Resume]) {
    let mut gaps: Vec<Duration> = resumes.iter().map(|r| r.gap).collect();
    gaps.sort();
    eprintln!(
        "{what}: ready {:.0} ms after the restart; first hold packet after ready p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} calls",
        ready.as_secs_f64() * 1e3,
        percentile(&gaps, 0.5).as_secs_f64() * 1e3,
        percentile(&gaps, 0.99).as_secs_f64() * 1e3,
        gaps.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        gaps.len()
    );
    if let Some(r) = resumes.first() {
        eprintln!("{what}: e.g. seq +{}, timestamp +{} ({:.2} s of audio) over {:.2} s of wall time", r.seq_step, r.ts_step, f64::from(r.ts_step) / 8000.0, r.wall.as_secs_f64());
    }
}

/// 20 parked calls (2 by SIPp, 18 by the project's UA) and a BLF watcher, parkd stopped by `stop`, started again:
/// every property of issue 17's "What a user sees" for parked calls.
fn parked_calls_survive(name: &str, stop: impl FnOnce(&mut Parkd)) {
    let mut parkd = start(name);
    // Two SIPp callers that wait for parkd's BYE (they keep running while parkd is down).
    let bob = RtpEndpoint::bind("bob (SIPp, parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::new("parked_waits_for_bye").service("801").rtp_port(bob.port()).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_hold_music(&bob, 5);
    let dave = RtpEndpoint::bind("dave (SIPp, parked)");
    let dave_run = Sipp::new("parked_waits_for_bye").service("802").rtp_port(dave.port()).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_hold_music(&dave, 5);
    // 18 callers on the UA, indirect parks, a few at a time (parkd admits a few unconfirmed calls per source).
    let mut phones = Phones::new(parkd.sip_addr(), "ua");
    for i in 0..18 {
        phones.park("700", 0);
        if i % 3 == 2 {
            phones.wait_answered(WAIT);
        }
    }
    phones.wait_answered(WAIT);
    for p in &phones.phones {
        assert_eq!(phones.log(p).status, Some(200), "{} parked", p.ids.call_id);
        assert!(p.rtp.wait_for_class(PayloadClass::Other, 5, WAIT), "{}: hold music before the stop", p.ids.call_id);
    }
    // A BLF watcher on the last orbit (free).
    let watch = phones.subscribe("740", 600);
    assert!(phones.wait_log(&watch, WAIT, |l| l.status == Some(200) && l.requests.iter().any(|r| r.method == "NOTIFY")), "subscribed to 740");
    let before = occupied(&parkd);
    assert_eq!(before.len(), 20, "20 calls parked: {before:?}");
    // Keepalives have gone out (every 2 s) before parkd goes away.
    for p in &phones.phones[6..12] {
        assert!(phones.wait_log(&p.ids.call_id, WAIT, |l| l.requests.iter().any(|r| r.method == "OPTIONS")), "a keepalive to {} before the stop", p.ids.call_id);
    }

    stop(&mut parkd);
    let down = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let ready_after = parkd.restart();
    let ready = Instant::now();

    // Same orbits, same calls.
    assert_eq!(occupied(&parkd), before, "every call back in its orbit");
    // Hold music resumes from the same port, same SSRC, sequence going on.
    let mut resumes = vec![expect_resumed(&dave, PayloadClass::Other, down, ready, 10)];
    for p in &phones.phones {
        resumes.push(expect_resumed(&p.rtp, PayloadClass::Other, down, ready, 10));
    }
    report_gaps(name, ready_after, &resumes);
    let restored_log = parkd.stderr_all();
    let line = restored_log.lines().find(|l| l.contains("calls restored from the journal")).unwrap_or_default();
    eprintln!("{name}: {line}");

    // A new park never gets an orbit a restored call holds.
    let fresh = phones.park("700", 0);
    phones.wait_answered(WAIT);
    let fresh_orbit = phones.log(&phones.phones[fresh]).orbit.unwrap_or_default();
    assert!(!before.contains_key(&fresh_orbit) && !fresh_orbit.is_empty(), "new park got {fresh_orbit:?}, held by a restored call");
    // BLF: the watcher of 740 hears about a park there after the restart.
    let into_740 = phones.park_with("740", 0, "Referred-By: <sip:alice@127.0.0.1:5999>\r\n");
    phones.wait_answered(WAIT);
    assert_eq!(phones.log(&phones.phones[into_740]).orbit.as_deref(), Some("740"));
    assert!(
        phones.wait_log(&watch, WAIT, |l| l.requests_since("NOTIFY", ready).iter().any(|n| n.body.contains("confirmed"))),
        "a NOTIFY for 740 after the restart: {:?}",
        phones.log_of(&watch).requests
    );

    // BYE from restored calls → 200, orbit freed.
    for i in 0..6 {
        let orbit = phones.log(&phones.phones[i]).orbit.unwrap_or_default();
        assert_eq!(phones.bye(i, WAIT), Some(200), "BYE of restored call {i} answered");
        assert!(!occupied(&parkd).contains_key(&orbit), "orbit {orbit} freed by the BYE");
    }
    // parkd's own requests after the restart (BYE by API hang-up) carry CSeqs above every earlier one.
    for i in 6..12 {
        let p = &phones.phones[i];
        let log = phones.log(p);
        let orbit = log.orbit.clone().unwrap_or_default();
        let (status, body) = api(&parkd, "DELETE", &format!("/v1/orbits/{orbit}"));
        assert_eq!(status, 200, "{body}");
        assert!(phones.wait_log(&p.ids.call_id, WAIT, |l| !l.requests_since("BYE", ready).is_empty()), "parkd's BYE to {orbit}");
        let log = phones.log(p);
        let bye = log.requests_since("BYE", ready)[0].cseq;
        let old = log.max_cseq_before(down);
        assert!(old > 0, "parkd sent {} a keepalive before the stop", p.ids.call_id);
        assert!(bye > old, "{orbit}: BYE CSeq {bye} after the restart must be above {old}, the highest before");
    }
    // Retrieve a restored SIPp call: audio both ways; the retriever's BYE ends both.
    let carol = RtpEndpoint::bind("carol (retriever)");
    carol.start_talking(CAROL);
    let carol_out = Sipp::new("retrieve_uac").service("801").rtp_port(carol.port()).hold_ms(3000).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_peer_audio(&carol, BOB, 50);
    let at_bob = bob.packets().into_iter().filter(|p| p.at >= ready && p.class == PayloadClass::Pattern(CAROL)).count();
    assert!(bob.wait_until(WAIT, |p| p.iter().filter(|x| x.at >= ready && x.class == PayloadClass::Pattern(CAROL)).count() >= 50), "bob hears carol ({at_bob})");
    carol_out.wait().assert_passed(&parkd, "carol retrieves restored 801");
    bob_run.wait().assert_passed(&parkd, "restored bob is retrieved, then hung up by parkd");
    // The other SIPp call, hung up by the API: SIPp gets parkd's BYE.
    let (status, body) = api(&parkd, "DELETE", "/v1/orbits/802");
    assert_eq!(status, 200, "{body}");
    dave_run.wait().assert_passed(&parkd, "restored dave gets parkd's BYE");
}

#[test]
fn parked_calls_survive_kill_9() {
    parked_calls_survive("restart_kill9", |p| p.kill9());
}

#[test]
fn parked_calls_survive_sigterm() {
    parked_calls_survive("restart_sigterm", |p| {
        let status = p.signal_and_wait(libc::SIGTERM, Duration::from_secs(10)).expect("parkd exits on SIGTERM");
        assert!(status.success(), "SIGTERM is a clean stop: {status}");
        let log = p.stderr_all();
        assert!(log.contains("every call is kept"), "SIGTERM keeps the calls:\n{}", p.stderr_tail(20));
    });
}

/// A bridged call (bob retrieved by carol) relays both ways again after `kill -9` and a restart, on the same
/// ports; carol's BYE afterwards ends both legs.
#[test]
fn bridged_call_survives_kill_9() {
    let mut parkd = start("restart_bridged");
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::new("parked_waits_for_bye").service("800").rtp_port(bob.port()).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_hold_music(&bob, 10);
    let carol = RtpEndpoint::bind("carol (retriever)");
    carol.start_talking(CAROL);
    let carol_run = Sipp::new("retrieve_uac").service("801").rtp_port(carol.port()).hold_ms(12_000).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_peer_audio(&carol, BOB, 50);
    expect_peer_audio(&bob, CAROL, 50);
    parkd.kill9();
    let down = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let ready_after = parkd.restart();
    let ready = Instant::now();
    let at_carol = expect_resumed(&carol, PayloadClass::Pattern(BOB), down, ready, 50);
    let at_bob = expect_resumed(&bob, PayloadClass::Pattern(CAROL), down, ready, 50);
    eprintln!("bridged: ready {ready_after:?}; relay resumed {:?} (to carol) and {:?} (to bob) after ready", at_carol.gap, at_bob.gap);
    carol_run.wait().assert_passed(&parkd, "carol talks across the restart, then hangs up");
    bob_run.wait().assert_passed(&parkd, "bob gets parkd's BYE after carol's");
}

/// A torn journal tail (garbage after the last record, as a crash mid-write leaves) does not stop parkd: the
/// intact calls are restored, the bad part is copied to `journal.corrupt-1` and reported in the log.
#[test]
fn torn_journal_tail_is_set_aside_and_the_intact_calls_restored() {
    let mut parkd = start("restart_torn");
    let mut phones = Phones::new(parkd.sip_addr(), "torn");
    for _ in 0..3 {
        phones.park("700", 0);
    }
    phones.wait_answered(WAIT);
    for p in &phones.phones {
        assert!(p.rtp.wait_for_class(PayloadClass::Other, 5, WAIT), "{}: hold music before the stop", p.ids.call_id);
    }
    let before = occupied(&parkd);
    parkd.kill9();
    let down = Instant::now();
    let journal = parkd.state_dir().join("journal");
    let mut bytes = std::fs::read(&journal).expect("read journal");
    let intact = bytes.len();
    // A frame header that promises more than there is, then stops: a write cut short.
    bytes.extend_from_slice(&[0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
    std::fs::write(&journal, &bytes).expect("write journal");
    parkd.restart();
    let ready = Instant::now();
    assert_eq!(occupied(&parkd), before, "the intact calls are back");
    for p in &phones.phones {
        expect_resumed(&p.rtp, PayloadClass::Other, down, ready, 5);
    }
    let copy = parkd.state_dir().join("journal.corrupt-1");
    assert_eq!(std::fs::read(&copy).map(|b| b.len()).unwrap_or(0), bytes.len() - intact, "the bad tail set aside in {}", copy.display());
    let log = parkd.stderr_all();
    assert!(log.contains("journal.corrupt-1"), "the log names the set-aside file:\n{}", parkd.stderr_tail(30));
    assert!(std::fs::metadata(&journal).map(|m| m.len() as usize).unwrap_or(0) >= intact, "the intact part is kept");
}

/// A journal whose last record was cut in half (the file truncated mid-frame): parkd starts, the calls parked
/// before the last change are back with their music, the cut frame is set aside in `journal.corrupt-1`.
#[test]
fn truncated_journal_restores_what_came_before_the_cut() {
    let mut parkd = start("restart_truncated");
    let mut phones = Phones::new(parkd.sip_addr(), "cut");
    for _ in 0..3 {
        phones.park("700", 0);
        phones.wait_answered(WAIT);
    }
    for p in &phones.phones {
        assert!(p.rtp.wait_for_class(PayloadClass::Other, 5, WAIT), "{}: hold music before the stop", p.ids.call_id);
    }
    let before = occupied(&parkd);
    parkd.kill9();
    let down = Instant::now();
    let journal = parkd.state_dir().join("journal");
    let len = std::fs::metadata(&journal).map(|m| m.len()).expect("journal");
    let file = std::fs::OpenOptions::new().write(true).open(&journal).expect("open journal");
    file.set_len(len - 7).expect("truncate");
    drop(file);
    parkd.restart();
    let ready = Instant::now();
    let after = occupied(&parkd);
    // The first two parks were whole groups long before the last one.
    for p in &phones.phones[..2] {
        let orbit = phones.log(p).orbit.unwrap_or_default();
        assert_eq!(after.get(&orbit), before.get(&orbit), "{orbit} restored: {after:?}");
        expect_resumed(&p.rtp, PayloadClass::Other, down, ready, 5);
    }
    assert!(after.iter().all(|(o, c)| before.get(o) == Some(c)), "nothing restored that was not there: {after:?} vs {before:?}");
    assert!(parkd.state_dir().join("journal.corrupt-1").is_file(), "the cut frame is set aside");
    assert!(parkd.stderr_all().contains("journal.corrupt-1"), "and reported:\n{}", parkd.stderr_tail(30));
}

/// `POST /v1/calls/hangup-all` hangs up every call (each phone gets a BYE with a Reason); after a restart on
/// the same state directory nothing comes back.
#[test]
fn hangup_all_by_api_ends_every_call_and_nothing_is_restored() {
    let mut parkd = start("hangup_all_api");
    let mut phones = Phones::new(parkd.sip_addr(), "all");
    for _ in 0..4 {
        phones.park("700", 0);
    }
    phones.wait_answered(WAIT);
    let t = Instant::now();
    let (status, body) = api(&parkd, "POST", "/v1/calls/hangup-all");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "hung_up_all", "{body}");
    assert_eq!(body["parked"], 4, "{body}");
    for p in &phones.phones {
        assert!(phones.wait_log(&p.ids.call_id, WAIT, |l| !l.requests_since("BYE", t).is_empty()), "{} got parkd's BYE", p.ids.call_id);
    }
    assert!(occupied(&parkd).is_empty());
    // The journal's counters: every change synced, none failed.
    let url = format!("http://{}/metrics", parkd.http_addr.expect("http on"));
    let metrics = ureq::get(&url).timeout(Duration::from_secs(10)).call().map(|r| r.into_string().unwrap_or_default()).unwrap_or_default();
    let value = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
    assert!(value("parkd_journal_commits_total").is_some_and(|n| n > 0), "journal commits in /metrics:\n{metrics}");
    assert_eq!(value("parkd_journal_commit_failures_total"), Some(0), "{metrics}");
    let status = parkd.signal_and_wait(libc::SIGTERM, Duration::from_secs(10)).expect("exits on SIGTERM");
    assert!(status.success());
    parkd.restart();
    assert!(occupied(&parkd).is_empty(), "hung-up calls are not restored");
}

/// SIGUSR2: hang up every call, then exit 0; a restart restores nothing.
#[test]
fn sigusr2_hangs_up_every_call_then_exits() {
    let mut parkd = start("hangup_all_sigusr2");
    let mut phones = Phones::new(parkd.sip_addr(), "usr2");
    for _ in 0..4 {
        phones.park("700", 0);
    }
    phones.wait_answered(WAIT);
    let t = Instant::now();
    let status = parkd.signal_and_wait(libc::SIGUSR2, Duration::from_secs(15)).expect("parkd exits after SIGUSR2");
    assert!(status.success(), "{status}");
    for p in &phones.phones {
        assert!(!phones.log(p).requests_since("BYE", t).is_empty(), "{} got parkd's BYE before it exited", p.ids.call_id);
    }
    parkd.restart();
    assert!(occupied(&parkd).is_empty(), "nothing restored after SIGUSR2");
}

/// A second parkd on the same state directory, and a state directory that is a file, are startup errors that
/// name the directory; parkd exits non-zero.
#[test]
fn unusable_state_dir_is_a_clear_startup_error() {
    let parkd = start("state_dir_in_use");
    // Bounded: a parkd that wrongly starts is killed (by its PID) after 10 s and the test fails.
    let run = |state_dir: &std::path::Path| -> (std::process::ExitStatus, String) {
        let err_path = parkd.log_dir.join("second.stderr");
        let err_file = std::fs::File::create(&err_path).expect("stderr file");
        let mut child = std::process::Command::new(sip_tests::harness::parkd::binary_path())
            .args(["--listen", "127.0.0.1:0", "--http", "off", "--rtp-ports", &format!("{}-{}", parkd.ports.rtp_lo, parkd.ports.rtp_hi), "--state-dir"])
            .arg(state_dir)
            .stderr(err_file)
            .spawn()
            .expect("run parkd");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("parkd started on an unusable state_dir {}", state_dir.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, std::fs::read_to_string(&err_path).unwrap_or_default())
    };
    let (status, err) = run(&parkd.state_dir());
    assert!(!status.success(), "a second parkd on the same state_dir must not start");
    assert!(err.contains(&parkd.state_dir().display().to_string()) && err.contains("in use"), "{err}");
    let file = parkd.log_dir.join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let (status, err) = run(&file);
    assert!(!status.success(), "a file as state_dir must not start");
    assert!(err.contains(&file.display().to_string()), "{err}");
}
