//! SIPVicious against parkd (issue 15): `svmap` finds nothing, `svwar` and `svcrack` against a lot with digest
//! authentication learn nothing, and parkd keeps serving. The scanners run from 127.0.0.3 (`-b`, `-x`; svcrack
//! ignores `-b` and sends from 127.0.0.1), the phone that parks afterwards from 127.0.0.1.
//!
//! A second parkd runs with the scanner filter off (`[access] drop_user_agents = []`, i.e. a scanner whose
//! User-Agent is disguised): `svmap` then finds it — the control showing the silence of the first parkd is the
//! filter's doing — while `svwar` and `svcrack` still learn nothing (405 to REGISTER, unknown numbers
//! challenged like guarded ones, wrong passwords answered like unknown users).

use sip_tests::sipp::free_udp_port;
use sip_tests::{Parkd, ParkdOptions, RtpEndpoint, Sipp};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCANNER_IP: &str = "127.0.0.3";
const PASSWORD: &str = "c0rrect-h0rse-battery-staple";

/// Lot 700 open (the phone's), lot 800 guarded by digest authentication for every action.
fn config(drop_scanners: bool) -> String {
    let access = if drop_scanners { "" } else { "[access]\ndrop_user_agents = []\n\n" };
    format!(
        "{access}[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\n\n\
         [[lot]]\nname = \"secure\"\npark_code = \"800\"\norbits = \"801-805\"\n\
         [lot.auth]\nrealm = \"parkd\"\nactions = [\"park\", \"retrieve\", \"subscribe\"]\nusers = {{ alice = \"{PASSWORD}\" }}\n"
    )
}

fn start(name: &str, drop_scanners: bool) -> Parkd {
    Parkd::start_with(name, ParkdOptions { config: Some(config(drop_scanners)), http: true, ..Default::default() })
}

/// Runs a SIPVicious tool against `parkd` from 127.0.0.3 for at most `limit` (then kills it by PID); returns
/// what it printed.
fn scan(parkd: &Parkd, tool: &str, args: &[&str], limit: Duration) -> String {
    let port = parkd.sip_addr().port().to_string();
    let local = free_udp_port().to_string();
    let out_path = parkd.log_dir.join(format!("{tool}-{local}.out"));
    let out = std::fs::File::create(&out_path).unwrap_or_else(|e| panic!("{}: {e}", out_path.display()));
    let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(tool)
        .args(args)
        .args(["-p", &port, "-P", &local, "-b", SCANNER_IP, "-x", SCANNER_IP, "127.0.0.1"])
        .current_dir(&parkd.log_dir)
        .env("HOME", &parkd.log_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}): apt-get install sipvicious, or run scripts/test.sh"));
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    eprintln!("--- {tool} {} ---\n{}", args.join(" "), tail(&text, 6));
    text
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The refusal counters of parkd's /metrics.
fn refusals(parkd: &Parkd, reason: &str) -> u64 {
    let url = format!("http://{}/metrics", parkd.http_addr.expect("http"));
    let text = ureq::get(&url).timeout(Duration::from_secs(10)).call().expect("GET /metrics").into_string().unwrap_or_default();
    let sample = format!("parkd_sip_refusals_total{{reason=\"{reason}\"}}");
    text.lines().find_map(|l| l.strip_prefix(&sample)?.trim().parse().ok()).unwrap_or_else(|| panic!("no {sample} in:\n{text}"))
}

/// Nothing in a SIPVicious report names an extension, a password or a device.
fn learned_nothing(out: &str) {
    for tell in ["exists", "reqauth", "noauth", "weird", "The password for", "parkd/", "| 7", "| 8"] {
        assert!(!out.contains(tell), "the scanner learned something ({tell:?}):\n{out}");
    }
}

/// A phone on 127.0.0.1 parks on 700 (and hears music) after the scans.
fn a_park_still_works(parkd: &Parkd) {
    let bob = RtpEndpoint::bind("bob");
    let out = Sipp::new("park_indirect_uac").service("700").rtp_port(bob.port()).hold_ms(500).run(parkd);
    out.assert_passed(parkd, "a park after the scans");
}

fn dictionary(parkd: &Parkd, with_password: bool) -> String {
    let path = parkd.log_dir.join("passwords.txt");
    let mut words: Vec<String> = ["123456", "password", "alice", "secret", "parkd", "800"].iter().map(|s| s.to_string()).collect();
    if with_password {
        words.push(PASSWORD.into());
    }
    std::fs::write(&path, words.join("\n") + "\n").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path.display().to_string()
}

#[test]
fn sipvicious_learns_nothing_from_the_default_configuration() {
    let mut parkd = start("scanners_default", true);
    let target = format!("sip:800@{}", parkd.sip_addr());
    let out = scan(&parkd, "svmap", &[], Duration::from_secs(30));
    assert!(out.contains("found nothing"), "svmap must find nothing:\n{out}");
    learned_nothing(&out);
    for method in ["REGISTER", "INVITE", "OPTIONS"] {
        let out = scan(&parkd, "svwar", &["-e", "700-720,800-805", "-m", method], Duration::from_secs(30));
        assert!(out.contains("found nothing"), "svwar -m {method}:\n{out}");
        learned_nothing(&out);
    }
    // Even the right password in the dictionary is never confirmed: the scanner gets no answer at all.
    let dict = dictionary(&parkd, true);
    let out = scan(&parkd, "svcrack", &["-u", "alice", "-e", "800", "-m", "INVITE", "--requesturi", &target, "-d", &dict], Duration::from_secs(30));
    learned_nothing(&out);
    let dropped = refusals(&parkd, "scanner_user_agent");
    eprintln!("parkd_sip_refusals_total{{reason=\"scanner_user_agent\"}} = {dropped}");
    assert!(dropped >= 5, "every tool's requests reached parkd and were dropped unanswered: {dropped}");
    assert_eq!(refusals(&parkd, "auth_failed"), 0, "no credentials were ever checked");
    parkd.assert_alive();
    a_park_still_works(&parkd);
}

#[test]
fn sipvicious_with_a_disguised_user_agent_still_learns_nothing_about_numbers_or_passwords() {
    let mut parkd = start("scanners_disguised", false);
    let target = format!("sip:800@{}", parkd.sip_addr());
    // The control: without the filter svmap does find parkd, so the silence above is the filter's doing.
    let out = scan(&parkd, "svmap", &[], Duration::from_secs(30));
    assert!(out.contains("parkd/"), "svmap finds parkd when its User-Agent is not recognised:\n{out}");
    // REGISTER: 405 for every number (parkd is no registrar); INVITE: a number that does not exist is
    // challenged like one that does, so svwar stops at its first probe; OPTIONS: 200 for every number.
    for method in ["REGISTER", "INVITE", "OPTIONS"] {
        let out = scan(&parkd, "svwar", &["-e", "700-720,800-805", "-m", method], Duration::from_secs(40));
        assert!(out.contains("found nothing"), "svwar -m {method}:\n{out}");
        learned_nothing(&out);
    }
    let dict = dictionary(&parkd, false);
    let out = scan(&parkd, "svcrack", &["-u", "alice", "-e", "800", "-m", "INVITE", "--requesturi", &target, "-d", &dict], Duration::from_secs(20));
    learned_nothing(&out);
    let failed = refusals(&parkd, "auth_failed");
    eprintln!("parkd_sip_refusals_total{{reason=\"auth_failed\"}} = {failed}");
    assert!(failed >= 1, "svcrack's guesses reached parkd and were refused: {failed}");
    let log = std::fs::read_to_string(parkd.stderr_path()).unwrap_or_default();
    // (svcrack 0.3 ignores -b and sends from 127.0.0.1.)
    assert!(log.lines().any(|l| l.contains("refused sip source=127.0.0.") && l.contains("reason=auth_failed")), "the failures are logged for fail2ban");
    parkd.assert_alive();
    a_park_still_works(&parkd);
}
