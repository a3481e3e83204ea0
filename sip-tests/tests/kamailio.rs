//! parkd behind a real Kamailio (issue 7): phones register with Kamailio, which record-routes and sends park
//! numbers to parkd; parkd's recalls go back through Kamailio (its outbound proxy). Kamailio runs the shipped
//! `deploy/kamailio/kamailio.cfg` unchanged, its values given as `-A` defines; it listens on 127.0.0.2.
//!
//! Kamailio is installed with apt-get when missing (as root); otherwise the tests fail with the command to run.

use sip_tests::checks::{expect_hold_music, expect_peer_audio, response_header};
use sip_tests::paths;
use sip_tests::sip::sipp::{header, SippOutcome};
use sip_tests::{Parkd, ParkdOptions, RtpEndpoint};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BOB: u8 = 0xB0;
const CAROL: u8 = 0xC0;

/// Installs Kamailio (Debian package `kamailio`) once if it is missing; panics with what to do otherwise.
fn ensure_kamailio() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let find = || ["/usr/sbin/kamailio", "/usr/local/sbin/kamailio", "/usr/bin/kamailio"].iter().map(PathBuf::from).find(|p| p.is_file());
    if let Some(p) = find() {
        return p;
    }
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("kamailio is not installed and this is not root: run `apt-get install -y kamailio` (or scripts/test.sh as root)");
    }
    eprintln!("kamailio missing: apt-get install -y kamailio");
    let ok = |mut c: Command| c.env("DEBIAN_FRONTEND", "noninteractive").status().map(|s| s.success()).unwrap_or(false);
    let mut update = Command::new("apt-get");
    update.arg("update");
    let mut install = Command::new("apt-get");
    install.args(["install", "-y", "--no-install-recommends", "kamailio"]);
    if !ok(update) || !ok(install) {
        panic!("`apt-get install -y kamailio` failed; install Kamailio 5.x by hand and rerun");
    }
    find().unwrap_or_else(|| panic!("kamailio installed but its binary was not found in /usr/sbin"))
}

/// A free UDP port on `ip` (bound and released; the ephemeral range, so it does not collide with PortPlan).
fn free_port(ip: [u8; 4]) -> u16 {
    UdpSocket::bind(SocketAddr::from((ip, 0))).and_then(|s| s.local_addr()).map(|a| a.port()).unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A running Kamailio with the shipped config, stopped by PID when dropped.
struct Kamailio {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Kamailio {
    /// Starts Kamailio on 127.0.0.2 (a free port) relaying park numbers to `parkd`, and waits until an
    /// OPTIONS to `700` travels through it to parkd and back.
    fn start(addr: SocketAddr, parkd: &Parkd) -> Kamailio {
        Kamailio::start_with(addr, parkd, vec![format!("PARKD=\"sip:{}\"", parkd.sip_addr())])
    }

    /// [`Kamailio::start`] with these `-A` defines besides `LISTEN` (logs in `parkd`'s log directory).
    fn start_with(addr: SocketAddr, parkd: &Parkd, defines: Vec<String>) -> Kamailio {
        let bin = ensure_kamailio();
        let cfg = paths::workspace_dir().join("deploy/kamailio/kamailio.cfg");
        let run_dir = parkd.log_dir.join("kamailio-run");
        std::fs::create_dir_all(&run_dir).unwrap_or_else(|e| panic!("{}: {e}", run_dir.display()));
        let log = parkd.log_dir.join("kamailio.log");
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(bin)
            .arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E", "-m", "32", "-M", "4"])
            .arg("-Y")
            .arg(&run_dir)
            .arg("-P")
            .arg(run_dir.join("kamailio.pid"))
            .arg("-A")
            .arg(format!("LISTEN=udp:{addr}"))
            .args(defines.iter().flat_map(|d| ["-A", d.as_str()]))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start kamailio: {e}"));
        let mut k = Kamailio { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut n = 5_000_000;
        loop {
            if let Ok(Some(status)) = k.child.try_wait() {
                panic!("kamailio exited at start ({status}):\n{}", k.log_tail(40));
            }
            n += 1;
            if sip_tests::sip::probe::options_ping(addr, n, Duration::from_millis(300)) {
                return k;
            }
            if Instant::now() > deadline {
                panic!("an OPTIONS to 700 through kamailio ({addr}) never reached parkd:\n{}", k.log_tail(40));
            }
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        paths::file_tail(&self.log, lines)
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        sip_tests::harness::process::stop(&mut self.child, Duration::from_secs(3));
        if std::thread::panicking() {
            eprintln!("---- kamailio log ({}) ----\n{}", self.log.display(), self.log_tail(60));
        }
    }
}

/// One SIPp phone talking to Kamailio (the harness's `Sipp` targets parkd directly).
struct Phone {
    child: Option<Child>,
    dir: PathBuf,
    label: String,
    port: u16,
    started: Instant,
    limit: Duration,
}

/// Starts `scenarios/<scenario>.xml` against `kamailio` on local port `port`, with `-s service`, `keys`
/// and `-d hold_ms`; SIPp gives up after `timeout`.
#[allow(clippy::too_many_arguments)]
fn phone(parkd: &Parkd, kam: &Kamailio, scenario: &str, port: u16, service: &str, keys: &[(&str, String)], hold_ms: u64, timeout: Duration) -> Phone {
    let label = format!("{scenario}-{port}");
    let dir = parkd.log_dir.join(&label);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let console = std::fs::File::create(dir.join("console.log")).unwrap_or_else(|e| panic!("{e}"));
    let console2 = console.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new("sipp");
    cmd.arg(kam.addr.to_string())
        .arg("-sf")
        .arg(paths::scenario(scenario))
        .args(["-s", service])
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1", "-bind_local"])
        .args(["-p", &port.to_string(), "-cp", &free_port([127, 0, 0, 1]).to_string()])
        .args(["-t", "u1", "-m", "1", "-l", "1", "-d", &hold_ms.to_string()])
        .args(["-timeout", &format!("{}s", timeout.as_secs().max(1)), "-timeout_error"])
        .args(["-nostdin", "-trace_err", "-trace_msg", "-trace_logs"])
        .args(["-error_file", "errors.log", "-message_file", "messages.log", "-log_file", "logs.log"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(console))
        .stderr(Stdio::from(console2));
    for (k, v) in keys {
        cmd.args(["-key", k, v]);
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run sipp ({e}): apt-get install sip-tester"));
    Phone { child: Some(child), dir, label, port, started: Instant::now(), limit: timeout + Duration::from_secs(15) }
}

impl Phone {
    fn wait(mut self) -> SippOutcome {
        let mut code = None;
        if let Some(child) = self.child.as_mut() {
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        code = status.code();
                        break;
                    }
                    Ok(None) if self.started.elapsed() > self.limit => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(25)),
                    Err(_) => break,
                }
            }
        }
        self.child = None;
        SippOutcome::read(code, &self.dir, &self.label, self.port)
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn passed(o: &SippOutcome, parkd: &Parkd, kam: &Kamailio, what: &str) {
    if !o.passed() {
        eprintln!("---- kamailio log ----\n{}", kam.log_tail(40));
    }
    o.assert_passed(parkd, what);
}

/// Registers `user` with Kamailio, its Contact naming `contact_port` on 127.0.0.1.
fn register(parkd: &Parkd, kam: &Kamailio, user: &str, contact_port: u16) {
    let o = phone(parkd, kam, "kamailio_register", free_port([127, 0, 0, 1]), user, &[("contact_port", contact_port.to_string())], 0, Duration::from_secs(10))
        .wait();
    passed(&o, parkd, kam, &format!("REGISTER {user}"));
}

fn start(test: &str, parking_time: u32, kam_addr: SocketAddr) -> Parkd {
    let options = ParkdOptions {
        parking_time,
        extra_args: vec!["--outbound-proxy".into(), format!("sip:{kam_addr}"), "--trusted-proxy".into(), "127.0.0.2/32".into()],
        ..ParkdOptions::default()
    };
    Parkd::start_with(test, options)
}

fn kamailio_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2], free_port([127, 0, 0, 2])))
}

/// The top Via of a received message names Kamailio: it came through the proxy.
fn came_through(message: &str, kam: &Kamailio) -> bool {
    header(message, "Via").is_some_and(|v| v.contains(&kam.addr.ip().to_string()))
}

/// Bob (registered) parks himself on 700 through Kamailio; Carol retrieves 701 through Kamailio with two-way
/// audio; Carol's BYE travels through the proxy and parkd's BYE to Bob comes back through it (Record-Route).
#[test]
fn park_and_retrieve_through_kamailio_with_byes_through_the_proxy() {
    let kam_addr = kamailio_addr();
    let parkd = start("kamailio_park_retrieve", 600, kam_addr);
    let kam = Kamailio::start(kam_addr, &parkd);
    let bob_port = free_port([127, 0, 0, 1]);
    register(&parkd, &kam, "bob", bob_port);
    register(&parkd, &kam, "carol", free_port([127, 0, 0, 1]));

    let bob_rtp = RtpEndpoint::bind("bob (parked)");
    bob_rtp.start_talking(BOB);
    let keys = [("user", "bob".to_string()), ("rtp_port", bob_rtp.port().to_string())];
    let bob = phone(&parkd, &kam, "kamailio_park_uac", bob_port, "700", &keys, 0, Duration::from_secs(90));
    expect_hold_music(&bob_rtp, 25);

    let carol_rtp = RtpEndpoint::bind("carol (retriever)");
    carol_rtp.start_talking(CAROL);
    let carol = phone(&parkd, &kam, "kamailio_retrieve_uac", free_port([127, 0, 0, 1]), "701", &[("rtp_port", carol_rtp.port().to_string())], 3000, Duration::from_secs(60));
    expect_peer_audio(&carol_rtp, BOB, 50);
    expect_peer_audio(&bob_rtp, CAROL, 50);
    let carol_out = carol.wait();
    passed(&carol_out, &parkd, &kam, "retrieve 701 through kamailio");
    let bob_out = bob.wait();
    passed(&bob_out, &parkd, &kam, "bob parked through kamailio, BYE'd by parkd");

    assert_eq!(response_header(&bob_out, 200, "Park-Orbit"), "701");
    let pai = response_header(&carol_out, 200, "P-Asserted-Identity");
    assert!(pai.contains("sip:bob@"), "the retriever learns whom it got: {pai}");
    let ok = carol_out.response(200).unwrap_or_default();
    let rr = header(&ok, "Record-Route").unwrap_or("");
    assert!(rr.contains(&kam.addr.to_string()), "kamailio record-routed the retrieve: {ok}");
    let bye = bob_out.request("BYE").unwrap_or_else(|| panic!("bob got no BYE"));
    assert!(came_through(&bye, &kam), "parkd's BYE to bob follows the Record-Route through kamailio: {bye}");
    assert!(header(&bye, "Route").is_none(), "kamailio consumed its own Route entry");
}

/// Alice calls Bob through Kamailio and blind-transfers him to 700 with a REFER carrying no Referred-By;
/// Bob's INVITE to 700 carries none either. Kamailio adds `Referred-By: <alice>`, so parkd knows the parker:
/// after the 3 s parking time the recall goes through Kamailio (parkd's outbound proxy) to Alice's registered
/// phone, which answers and hangs up; parkd's BYE to Bob goes through the proxy.
#[test]
fn referred_by_gap_filled_by_kamailio_and_recall_reaches_the_registered_parker() {
    let kam_addr = kamailio_addr();
    let parkd = start("kamailio_recall", 3, kam_addr);
    let kam = Kamailio::start(kam_addr, &parkd);
    let (alice_uas, bob_uas) = (free_port([127, 0, 0, 1]), free_port([127, 0, 0, 1]));
    register(&parkd, &kam, "alice", alice_uas);
    register(&parkd, &kam, "bob", bob_uas);

    let long = Duration::from_secs(60);
    let alice_phone = phone(&parkd, &kam, "kamailio_recall_uas", alice_uas, "alice", &[("rtp_port", free_port([127, 0, 0, 1]).to_string())], 1000, long);
    let bob_phone = phone(&parkd, &kam, "kamailio_transferee_uas", bob_uas, "bob", &[("rtp_port", free_port([127, 0, 0, 1]).to_string())], 0, long);
    let keys = [("park", "700".to_string()), ("rtp_port", free_port([127, 0, 0, 1]).to_string())];
    let refer = phone(&parkd, &kam, "kamailio_refer_uac", free_port([127, 0, 0, 1]), "bob", &keys, 0, Duration::from_secs(20)).wait();
    passed(&refer, &parkd, &kam, "alice calls bob and REFERs him to 700 (no Referred-By)");
    let bob_out = bob_phone.wait();
    passed(&bob_out, &parkd, &kam, "bob's phone answers alice and accepts the REFER");
    let refer_msg = bob_out.request("REFER").unwrap_or_default();
    assert!(header(&refer_msg, "Referred-By").is_none(), "the REFER itself names no parker");

    let bob_rtp = RtpEndpoint::bind("bob (parked)");
    let keys = [("user", "bob".to_string()), ("rtp_port", bob_rtp.port().to_string())];
    let parked = phone(&parkd, &kam, "kamailio_park_uac", free_port([127, 0, 0, 1]), "700", &keys, 0, long);
    expect_hold_music(&bob_rtp, 10);
    let alice_out = alice_phone.wait();
    passed(&alice_out, &parkd, &kam, "alice's registered phone answers the recall");
    let parked_out = parked.wait();
    passed(&parked_out, &parkd, &kam, "bob parked, then BYE'd by parkd after the recall ended");

    let recall = alice_out.request("INVITE").unwrap_or_default();
    assert!(came_through(&recall, &kam), "the recall came through kamailio: {recall}");
    assert!(header(&recall, "Park-Recall").is_some_and(|v| v.starts_with("callback;orbit=701")), "{recall}");
    assert!(recall.starts_with("INVITE sip:alice@127.0.0.1:"), "kamailio retargeted the parker's AOR to the registered contact: {recall}");
    let log = std::fs::read_to_string(&kam.log).unwrap_or_default();
    assert!(log.contains("added Referred-By"), "kamailio's gap filler ran:\n{}", kam.log_tail(30));
    let parkd_log = parkd.stderr_tail(400);
    assert!(parkd_log.contains(&format!("\"sip:alice@{}\"", kam.addr)), "parkd learned the parker from the added Referred-By:\n{parkd_log}");
    let bye = parked_out.request("BYE").unwrap_or_else(|| panic!("bob got no BYE"));
    assert!(came_through(&bye, &kam), "parkd's BYE to bob came through kamailio: {bye}");
}

/// The shipped config parses with the installed Kamailio (`kamailio -c`), with and without overrides.
#[test]
fn shipped_kamailio_config_passes_kamailio_check() {
    let bin = ensure_kamailio();
    let cfg = paths::workspace_dir().join("deploy/kamailio/kamailio.cfg");
    // The cluster recipe: dispatcher set 1 from deploy/kamailio/dispatcher.list.
    let list = paths::workspace_dir().join("deploy/kamailio/dispatcher.list");
    let cluster = vec!["-A".to_string(), "WITH_CLUSTER".into(), "-A".into(), format!("DISPATCHER_LIST=\"{}\"", list.display())];
    for defines in [vec![], vec!["-A".to_string(), "LISTEN=udp:127.0.0.2:5062".to_string(), "-A".into(), "PARKD=\"sip:127.0.0.1:5070\"".into()], cluster] {
        let out = Command::new(&bin).arg("-c").arg("-f").arg(&cfg).args(&defines).output().unwrap_or_else(|e| panic!("kamailio -c: {e}"));
        let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "kamailio -c {defines:?} failed:\n{text}");
    }
    assert!(Path::new(&cfg).is_file());
}

/// The cluster recipe (`-A WITH_CLUSTER`, dispatcher set 1 = two parkd nodes sharing one `redis-server`): parks
/// through Kamailio are spread over both nodes with distinct orbits, and a retrieve Kamailio first sends to the
/// node that does not hold the call (`404 Parked On Another Node`) is tried on the other and answered 200.
#[test]
fn dispatcher_spreads_parks_over_two_cluster_nodes_and_retries_a_retrieve_on_the_next() {
    use parkd::sip::{Message, Method};
    use sip_tests::harness::redis::RedisServer;
    use sip_tests::sip::ua::{CallIds, Ua};
    if !RedisServer::available() {
        eprintln!("SKIPPED: redis-server is not installed (scripts/test.sh installs it)");
        return;
    }
    let redis = RedisServer::start("kam_cluster");
    let kam_addr = kamailio_addr();
    let node = |name: &str| {
        let mut extra_args = vec!["--outbound-proxy".into(), format!("sip:{kam_addr}"), "--trusted-proxy".into(), "127.0.0.2/32".into()];
        extra_args.extend(["--redis", &redis.url(), "--node", name, "--lease", "3"].map(String::from));
        let config = Some("[limits]\nparked_per_source = 100\n".to_string());
        let p = Parkd::start_with(&format!("kam_cluster_{name}"), ParkdOptions { extra_args, config, ..ParkdOptions::default() });
        let t0 = Instant::now();
        while !p.stderr_all().contains("parks are granted") {
            assert!(t0.elapsed() < Duration::from_secs(10), "node {name} never reached Redis");
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    };
    let (a, b) = (node("a"), node("b"));
    let list = a.log_dir.join("dispatcher.list");
    std::fs::write(&list, format!("1 sip:{}\n1 sip:{}\n", a.sip_addr(), b.sip_addr())).expect("dispatcher.list");
    let kam = Kamailio::start_with(kam_addr, &a, vec!["WITH_CLUSTER".into(), format!("DISPATCHER_LIST=\"{}\"", list.display())]);
    let mut ua = Ua::new(kam.addr).expect("UA socket");
    let mut n = 0u16;
    // Sends an INVITE to `target` through Kamailio; returns (status, reason, Park-Orbit).
    let mut call = |ua: &mut Ua, target: &str, extra: &str| {
        n += 1;
        let c = CallIds { call_id: format!("kc-{n}-{target}"), from_tag: format!("t{n}"), user: format!("u{n}"), target: target.into(), to_tag: None };
        ua.invite(&c, 42_000 + n, extra);
        let t0 = Instant::now();
        loop {
            assert!(t0.elapsed() < Duration::from_secs(10), "no final response to {} through kamailio:\n{}", c.call_id, kam.log_tail(30));
            match ua.try_recv() {
                Some(Message::Response(r)) if r.common.call_id.as_str() == c.call_id && r.common.cseq.method == Method::Invite && r.status >= 200 => {
                    let mut c = c.clone();
                    c.to_tag = r.common.to.tag().map(str::to_string);
                    ua.ack(&c, r.status < 300);
                    return (r.status, r.reason.clone(), r.common.header("Park-Orbit").unwrap_or("").to_string());
                }
                Some(_) => {}
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    };
    let mut orbits = Vec::new();
    for _ in 0..4 {
        let (status, reason, orbit) = call(&mut ua, "700", "Referred-By: <sip:alice@127.0.0.1>\r\n");
        assert_eq!(status, 200, "park through kamailio: {status} {reason}");
        orbits.push(orbit);
    }
    let mut unique = orbits.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "distinct orbits across the nodes: {orbits:?}");
    // Which node parked each (its log names the orbit): round robin gave both nodes some.
    let on = |p: &Parkd| orbits.iter().filter(|o| p.stderr_all().contains(&format!("parked orbit={o}")) || p.stderr_all().contains(&format!("\"orbit\":\"{o}\",\"call_id\""))).count();
    let (on_a, on_b) = (on(&a), on(&b));
    println!("figure: 4 parks through kamailio's dispatcher: orbits {orbits:?}; parked on a: {on_a}, on b: {on_b}");
    assert!(on_a > 0 && on_b > 0, "round robin used both nodes: a {on_a}, b {on_b}");
    // One more park shifts the round robin by one: each retrieve below is first sent to the node that does not
    // hold the call, which answers 404 Parked On Another Node; Kamailio tries the next node, which answers 200.
    let (status, _, extra) = call(&mut ua, "700", "Referred-By: <sip:alice@127.0.0.1>\r\n");
    assert_eq!(status, 200);
    for o in &orbits {
        let (status, reason, _) = call(&mut ua, o, "");
        assert_eq!(status, 200, "retrieve of {o} through kamailio: {status} {reason}");
    }
    println!("figure: 4 retrieves through kamailio all 200, each first sent to the other node (the 5th park held {extra})");
}
