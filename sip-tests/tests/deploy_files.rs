//! The shipped deployment files cannot rot silently: docker-compose.yml is checked with `docker-compose
//! config`, the Dockerfile's health check runs against a real parkd, the systemd unit names real flags.

use sip_tests::{paths, Parkd};
use std::process::Command;

fn root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn runs(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd).args(args).output().map(|o| o.status.success()).unwrap_or(false)
}

/// `docker-compose` (Debian package, installed here when missing and root) or `docker compose`; None when
/// neither can be had.
fn compose_command() -> Option<Vec<String>> {
    if runs("docker-compose", &["version"]) {
        return Some(vec!["docker-compose".into()]);
    }
    if root() {
        eprintln!("docker-compose missing: apt-get install -y docker-compose");
        let _ = Command::new("apt-get").args(["install", "-y", "--no-install-recommends", "docker-compose"]).env("DEBIAN_FRONTEND", "noninteractive").status();
        if runs("docker-compose", &["version"]) {
            return Some(vec!["docker-compose".into()]);
        }
    }
    if runs("docker", &["compose", "version"]) {
        return Some(vec!["docker".into(), "compose".into()]);
    }
    None
}

#[test]
fn compose_file_is_valid() {
    let Some(cmd) = compose_command() else {
        eprintln!("SKIPPED compose_file_is_valid: neither docker-compose (Debian package) nor `docker compose` is available");
        return;
    };
    let dir = paths::workspace_dir();
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(&dir)
        .env("SIP_IP", "192.0.2.10")
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{cmd:?} config failed:\n{}\n{}", text, String::from_utf8_lossy(&out.stderr));
    for needle in [
        "parkd:", "kamailio:", "network_mode: host", "192.0.2.10:5070", "LISTEN=udp:192.0.2.10:5060", "--outbound-proxy",
        // The journal survives `docker compose restart` and upgrades: a named volume on the state directory.
        "--state-dir", "/var/lib/parkd", "parkd-state",
    ] {
        assert!(text.contains(needle), "resolved compose file lacks {needle:?}:\n{text}");
    }
    assert!(dir.join("deploy/kamailio/kamailio.cfg").is_file() && dir.join("deploy/kamailio/Dockerfile").is_file());
    // The `cluster` profile (issue 18): Redis, two nodes with their own ports and state volumes, Kamailio
    // dispatching to both.
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .args(["-f", "docker-compose.yml", "--profile", "cluster", "config"])
        .current_dir(&dir)
        .env("SIP_IP", "192.0.2.10")
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{cmd:?} --profile cluster config failed:\n{}\n{}", text, String::from_utf8_lossy(&out.stderr));
    for needle in [
        "redis:", "parkd-a:", "parkd-b:", "kamailio-cluster:", "192.0.2.10:5071", "192.0.2.10:5072", "redis://127.0.0.1:6379/0",
        "parkd-a-state:/var/lib/parkd", "parkd-b-state:/var/lib/parkd", "WITH_CLUSTER", "dispatcher.list:/etc/kamailio/dispatcher.list",
    ] {
        assert!(text.contains(needle), "resolved cluster profile lacks {needle:?}:\n{text}");
    }
    let list = std::fs::read_to_string(dir.join("deploy/kamailio/dispatcher.list")).expect("deploy/kamailio/dispatcher.list");
    assert!(list.contains("1 sip:127.0.0.1:5071") && list.contains("1 sip:127.0.0.1:5072"), "{list}");
}

/// The image's HEALTHCHECK runs `parkd --probe ADDR`: it must succeed against a running parkd and fail
/// against a port where nothing answers.
#[test]
fn dockerfile_healthcheck_probe_works() {
    let dockerfile = std::fs::read_to_string(paths::workspace_dir().join("Dockerfile")).unwrap_or_default();
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("--probe"), "Dockerfile lost its health check");
    assert!(dockerfile.contains("USER parkd"), "the runtime image runs as a non-root user");
    let parkd = Parkd::start("healthcheck_probe");
    let bin = sip_tests::harness::parkd::binary_path();
    let ok = Command::new(&bin).arg("--probe").arg(parkd.sip_addr().to_string()).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(ok.status.success(), "probe of a live parkd failed: {}", String::from_utf8_lossy(&ok.stderr));
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let dead = silent.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let bad = Command::new(&bin).arg("--probe").arg(dead.to_string()).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!bad.status.success(), "probe of a silent port must fail");
}

/// The systemd unit only uses flags parkd has.
#[test]
fn systemd_unit_uses_existing_flags() {
    let unit = std::fs::read_to_string(paths::workspace_dir().join("deploy/parkd.service")).unwrap_or_default();
    let help = Command::new(sip_tests::harness::parkd::binary_path()).arg("--help").output().unwrap_or_else(|e| panic!("{e}"));
    let help = String::from_utf8_lossy(&help.stdout);
    for line in unit.lines().filter(|l| l.starts_with("ExecStart")) {
        for flag in line.split_whitespace().filter(|w| w.starts_with("--")) {
            assert!(help.contains(flag), "deploy/parkd.service uses {flag}, which `parkd --help` does not list");
        }
    }
    assert!(unit.contains("ExecStart="));
    // The journal lives in systemd's state directory, kept across restarts and upgrades.
    assert!(unit.contains("StateDirectory=parkd") && unit.contains("--state-dir /var/lib/parkd"), "the unit keeps the journal in StateDirectory=");
}

/// The shipped fail2ban jail and filter load into fail2ban's own configuration (Debian's /etc/fail2ban, copied
/// to a temporary directory with them added): `fail2ban-client -d` resolves the parkd jail to our filter, the
/// journal of parkd.service and a ban on the SIP port over UDP and TCP.
#[test]
fn fail2ban_jail_and_filter_load() {
    let system = std::path::Path::new("/etc/fail2ban");
    assert!(system.join("jail.conf").is_file(), "fail2ban is not installed: apt-get install fail2ban, or run scripts/test.sh");
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = Command::new("cp").arg("-r").arg(system).arg(dir.path().join("f2b")).status().expect("cp");
    assert!(copy.success());
    let conf = dir.path().join("f2b");
    let shipped = paths::workspace_dir().join("deploy/fail2ban");
    for file in ["filter.d/parkd.conf", "jail.d/parkd.local"] {
        std::fs::copy(shipped.join(file), conf.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let out = Command::new("fail2ban-client").arg("-c").arg(&conf).arg("-d").output().expect("fail2ban-client");
    let dump = String::from_utf8_lossy(&out.stdout);
    let parkd: Vec<&str> = dump.lines().filter(|l| l.contains("'parkd'")).collect();
    for needle in [
        "['add', 'parkd', 'systemd']",
        "'addfailregex', 'refused sip source=<HOST> reason=[a-z_]+'",
        "'addjournalmatch', '_SYSTEMD_UNIT=parkd.service'",
        "'maxretry', 20",
    ] {
        assert!(parkd.iter().any(|l| l.contains(needle)), "fail2ban's view of the parkd jail lacks {needle}:\n{}", parkd.join("\n"));
    }
    assert!(parkd.iter().any(|l| l.contains("parkd-udp")) && parkd.iter().any(|l| l.contains("parkd-tcp")), "bans over UDP and TCP:\n{}", parkd.join("\n"));
}
