//! Node death and Redis loss in a two-node cluster (issue 18): `kill -9` of node a with parked calls frees its
//! orbits everywhere one lease later (b's API shows them free, a BLF watcher on b hears the orbit go idle, a park on
//! b takes it) while b's own calls keep their hold music; node a restarted within its lease with its journal keeps
//! its calls and orbits; Redis restarted empty under two running nodes gets both nodes' calls claimed again and
//! visible on both; a Sentinel failover (master killed, the replica promoted) under two nodes with `replicas = 1`
//! keeps every acknowledged park. Each test starts its own `redis-server`s and nodes (`--lease 3`, the Sentinel test `--lease 9`); times are
//! printed, not asserted.

mod cluster_common;

use cluster_common::{api_orbit, until, TOKEN};
use sip_tests::harness::redis::RedisServer;
use sip_tests::sip::phones::Phones;
use sip_tests::{Parkd, ParkdOptions, PayloadClass};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
/// `--lease` of every node here.
const LEASE: Duration = Duration::from_secs(3);
/// `--lease` of the Sentinel test's nodes: parkd's check asks for ≥ 6 s with `down-after-milliseconds` 1000; 9 leaves room.
const SENTINEL_LEASE: &str = "9";
const REFERRED: &str = "Referred-By: <sip:alice@127.0.0.1>\r\n";

fn skip() -> bool {
    if RedisServer::available() {
        return false;
    }
    eprintln!("SKIPPED: redis-server is not installed (scripts/test.sh installs it: apt-get install redis-server)");
    true
}

/// Waits until the current process of `p` logs that parks are granted (Redis answers).
fn wait_granted(p: &Parkd, name: &str) {
    let t0 = Instant::now();
    while !p.stderr_all().contains("parks are granted") {
        assert!(t0.elapsed() < WAIT, "node {name} never reached Redis:\n{}", p.stderr_tail(30));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cluster node on `redis` with the HTTP API.
fn node(test: &str, redis: &RedisServer, name: &str) -> Parkd {
    let args = ["--redis", &redis.url(), "--node", name, "--lease", "3", "--http-token", TOKEN].map(String::from).to_vec();
    let config = Some("[limits]\nparked_per_source = 100\n".to_string());
    let p = Parkd::start_with(&format!("{test}_{name}"), ParkdOptions { orbits: "701-720".into(), extra_args: args, config, http: true, ..ParkdOptions::default() });
    wait_granted(&p, name);
    p
}

/// Parks one call on `phones` into `target` (directed with Referred-By), expecting `status`.
fn park(phones: &mut Phones, target: &str, status: u16) -> usize {
    let i = phones.park_with(target, 0, REFERRED);
    phones.wait_answered(WAIT);
    let log = phones.log(&phones.phones[i]);
    assert_eq!(log.status, Some(status), "park into {target}: {log:?}");
    i
}

/// The body of the last NOTIFY of subscription `sub`.
fn last_notify(phones: &Phones, sub: &str) -> String {
    phones.log_of(sub).requests.iter().rev().find(|r| r.method == "NOTIFY").map(|r| r.body.clone()).unwrap_or_default()
}

/// Hold-music packets call `i` has received so far.
fn music(phones: &Phones, i: usize) -> usize {
    phones.phones[i].rtp.packets().iter().filter(|p| p.class == PayloadClass::Other).count()
}

#[test]
fn kill_9_of_a_node_frees_its_orbits_on_the_other_after_the_lease() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("cln_kill");
    let (mut a, b) = (node("cln_kill", &redis, "a"), node("cln_kill", &redis, "b"));
    let (mut pa, mut pb) = (Phones::new(a.sip_addr(), "kla"), Phones::new(b.sip_addr(), "klb"));
    park(&mut pa, "701", 200);
    park(&mut pa, "702", 200);
    let own = park(&mut pb, "711", 200);
    // A BLF watcher on b of a's orbit 701 sees it parked.
    let sub = pb.subscribe("701", 600);
    until(WAIT, "b's watcher of 701 hears a's park", || last_notify(&pb, &sub).contains("confirmed"));
    assert_eq!(api_orbit(&b, "702")["node"], "a");
    park(&mut pb, "702", 486); // b cannot take a's orbit while a lives
    assert!(pb.phones[own].rtp.wait_for_class(PayloadClass::Other, 10, WAIT), "b's own call hears music");

    a.kill9();
    let killed = Instant::now();
    let heard_before = music(&pb, own);
    let freed = until(3 * LEASE + WAIT, "b's API shows a's 701 and 702 free", || {
        api_orbit(&b, "701")["state"] == "free" && api_orbit(&b, "702")["state"] == "free"
    });
    let idle = until(WAIT, "b's watcher of 701 hears it go idle", || {
        let body = last_notify(&pb, &sub);
        !body.is_empty() && !body.contains("confirmed") && !body.contains("early")
    });
    let took = park(&mut pb, "701", 200);
    assert_eq!(pb.log(&pb.phones[took]).orbit.as_deref(), Some("701"));
    assert_eq!(api_orbit(&b, "701")["state"], "parked");
    assert!(api_orbit(&b, "701")["node"].is_null(), "701 is b's own now");
    // b's own call went on hearing music through all of it and is still in its orbit.
    let heard_after = music(&pb, own);
    assert!(heard_after > heard_before + 50, "b's own call kept its music: {heard_before} → {heard_after} packets");
    assert_eq!(api_orbit(&b, "711")["state"], "parked");
    println!(
        "figure: kill -9 of a (lease 3 s) → a's orbits free in b's API after {:.2} s, b's BLF watcher idle {:.0} ms later; \
         b's own call got {} hold packets meanwhile ({:.1} s)",
        freed.as_secs_f64(),
        idle.as_secs_f64() * 1e3,
        heard_after - heard_before,
        killed.elapsed().as_secs_f64()
    );
}

#[test]
fn a_node_restarted_within_its_lease_keeps_its_calls_and_orbits() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("cln_back");
    let (mut a, b) = (node("cln_back", &redis, "a"), node("cln_back", &redis, "b"));
    let (mut pa, mut pb) = (Phones::new(a.sip_addr(), "rba"), Phones::new(b.sip_addr(), "rbb"));
    let held = park(&mut pa, "705", 200);
    assert!(pa.phones[held].rtp.wait_for_class(PayloadClass::Other, 10, WAIT), "a's call hears music");
    until(WAIT, "b lists a's 705", || api_orbit(&b, "705")["node"] == "a");

    a.kill9();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    a.restart();
    wait_granted(&a, "a (restarted)");
    let back = killed.elapsed();
    // Past the lease of the killed process: the orbit is still a's, everywhere.
    std::thread::sleep((LEASE + Duration::from_secs(1)).saturating_sub(killed.elapsed()));
    assert_eq!(api_orbit(&a, "705")["state"], "parked", "a restored its call");
    assert!(api_orbit(&a, "705")["node"].is_null());
    let o = api_orbit(&b, "705");
    assert_eq!((o["state"].as_str(), o["node"].as_str()), (Some("parked"), Some("a")), "b still sees 705 as a's: {o}");
    park(&mut pb, "705", 486);
    // a took its claim back from the journal (same fence), so 705 never looked free: b never reported it free.
    let log = a.stderr_all();
    assert!(log.contains("the journal's claim of a restored call taken back"), "a adopted its journaled claim:\n{}", a.stderr_tail(40));
    assert!(!log.contains("claiming it anew"), "no release-and-claim-again window");
    let b_log = b.stderr_all();
    assert!(b_log.contains(r#""event":"remote_parked""#) && !b_log.contains(r#""event":"remote_freed""#), "b saw 705 parked, never free:\n{}", b.stderr_tail(40));
    let before = music(&pa, held);
    assert!(pa.phones[held].rtp.wait_for_class(PayloadClass::Other, before + 25, WAIT), "a's restored call hears music again");
    println!(
        "figure: a killed and restarted (granted again {:.2} s after the kill, lease 3 s); at {:.2} s 705 is still a's on both nodes",
        back.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
}

#[test]
fn redis_restarted_empty_both_nodes_claim_their_calls_again() {
    if skip() {
        return;
    }
    let mut redis = RedisServer::start("cln_empty");
    let (a, b) = (node("cln_empty", &redis, "a"), node("cln_empty", &redis, "b"));
    let (mut pa, mut pb) = (Phones::new(a.sip_addr(), "ema"), Phones::new(b.sip_addr(), "emb"));
    park(&mut pa, "703", 200);
    park(&mut pb, "713", 200);
    until(WAIT, "both nodes see both calls", || {
        api_orbit(&a, "713")["node"] == "b" && api_orbit(&b, "703")["node"] == "a"
    });
    assert_eq!(redis.cli(&["--scan", "--pattern", "parkd:*:orbit:*"]).lines().count(), 2);

    redis.restart_empty();
    let claimed = until(3 * LEASE + WAIT, "both calls claimed again in the new Redis", || {
        redis.cli(&["--scan", "--pattern", "parkd:*:orbit:*"]).lines().count() == 2
    });
    let visible = until(3 * LEASE + WAIT, "both nodes see both calls again", || {
        let (a13, b03) = (api_orbit(&a, "713"), api_orbit(&b, "703"));
        a13["node"] == "b" && b03["node"] == "a" && api_orbit(&a, "703")["state"] == "parked" && api_orbit(&b, "713")["state"] == "parked"
    });
    // The claims are real: the other node cannot take either orbit.
    park(&mut pb, "703", 486);
    park(&mut pa, "713", 486);
    println!(
        "figure: Redis restarted empty (lease 3 s) → both calls claimed again after {:.2} s, both visible on both nodes after {:.2} s",
        claimed.as_secs_f64(),
        (claimed + visible).as_secs_f64()
    );
}

/// The issue's Sentinel case under real parkd nodes: Redis master + one replica + a Sentinel, two nodes on
/// `redis+sentinel://` with `replicas = 1` (a park is answered only once the replica has its claim). The master is
/// killed; Sentinel promotes the replica; every acknowledged park is still held there (a directed park into one on
/// the other node gets 486, never a second 200), both APIs still list all of them and the calls keep their music.
/// With no replica left, new parks get 503 (the price of `replicas = 1`); a new replica attached → granted again.
#[test]
fn a_sentinel_failover_under_two_parkd_nodes_keeps_every_acknowledged_park() {
    if skip() {
        return;
    }
    let mut master = RedisServer::start("cln_sent_m");
    let replica = RedisServer::start_replica("cln_sent_r", &master);
    until(WAIT, "the replica streaming", || {
        let _ = master.cli(&["SET", "probe", "1"]);
        replica.cli(&["GET", "probe"]) == "1"
    });
    master.cli(&["DEL", "probe"]);
    let sentinel = RedisServer::start_sentinel("cln_sent", &master, "parkm");
    let rport = replica.port().to_string();
    until(Duration::from_secs(15), "Sentinel knowing the replica", || sentinel.cli(&["SENTINEL", "replicas", "parkm"]).contains(&rport));
    let url = format!("redis+sentinel://127.0.0.1:{}/parkm", sentinel.port());
    let start = |name: &str, lease: &str, verdict: &str| {
        // The lease must outlast the failover (down-after 1 s + election + reconnection; it took 2.9 s on a loaded
        // CI machine, which expired every claim of a 3 s lease): parkd checks it against Sentinel's setting.
        let args = ["--redis", &url, "--node", name, "--lease", lease, "--http-token", TOKEN].map(String::from).to_vec();
        let config = Some("[limits]\nparked_per_source = 100\n[cluster]\nreplicas = 1\n".to_string());
        let p = Parkd::start_with(&format!("cln_sent_{name}"), ParkdOptions { orbits: "701-720".into(), extra_args: args, config, http: true, ..ParkdOptions::default() });
        wait_granted(&p, name);
        until(WAIT, "parkd's check of the lease against Sentinel", || p.stderr_all().contains(verdict));
        p
    };
    // A node with the 3 s lease that lost claims on CI is told so at start.
    drop(start("short", "3", "the lease is shorter than a Sentinel failover"));
    let fits = "the lease outlasts a Sentinel failover";
    let (a, b) = (start("a", SENTINEL_LEASE, fits), start("b", SENTINEL_LEASE, fits));
    let (mut pa, mut pb) = (Phones::new(a.sip_addr(), "sna"), Phones::new(b.sip_addr(), "snb"));
    let mut held = Vec::new();
    for orbit in ["701", "702", "703"] {
        held.push((park(&mut pa, orbit, 200), orbit));
    }
    for orbit in ["711", "712"] {
        park(&mut pb, orbit, 200);
    }
    for o in ["701", "702", "703", "711", "712"] {
        until(WAIT, "both APIs list every park", || api_orbit(&a, o)["state"] == "parked" && api_orbit(&b, o)["state"] == "parked");
    }

    master.kill_now();
    let t0 = Instant::now();
    until(Duration::from_secs(20), "Sentinel promoting the replica", || sentinel.cli(&["SENTINEL", "get-master-addr-by-name", "parkm"]).contains(&rport));
    let promoted = t0.elapsed();
    let keys = replica.cli(&["--raw", "KEYS", "parkd:{default}:orbit:*"]);
    for o in ["701", "702", "703", "711", "712"] {
        assert!(keys.lines().any(|k| k.ends_with(&format!(":orbit:{o}"))), "the new master holds {o}'s claim: {keys}");
    }
    // Every acknowledged park still holds its orbit, cluster-wide.
    until(WAIT, "both nodes back on the new master", || a.stderr_all().matches("parks are granted").count() >= 2 && b.stderr_all().matches("parks are granted").count() >= 2);
    park(&mut pb, "701", 486);
    park(&mut pa, "711", 486);
    for o in ["701", "702", "703", "711", "712"] {
        assert_eq!(api_orbit(&a, o)["state"], "parked", "a lists {o} after the failover");
        assert_eq!(api_orbit(&b, o)["state"], "parked", "b lists {o} after the failover");
    }
    for (i, o) in &held {
        let before = music(&pa, *i);
        assert!(pa.phones[*i].rtp.wait_for_class(PayloadClass::Other, before + 10, WAIT), "{o} still hears music on a");
    }
    // No replica of the new master: a park cannot be made durable → 503, never a 200 that a second failover could lose.
    park(&mut pa, "705", 503);
    let again = RedisServer::start_replica("cln_sent_r2", &replica);
    let t1 = Instant::now();
    loop {
        let i = pa.park_with("705", 0, REFERRED);
        pa.wait_answered(WAIT);
        match pa.log(&pa.phones[i]).status {
            Some(200) => break,
            Some(503) => assert!(t1.elapsed() < Duration::from_secs(15), "parks never granted again with a new replica"),
            other => panic!("park into 705: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "figure: Sentinel failover under two nodes: replica promoted {:.2} s after the master's SIGKILL, 5/5 acknowledged parks kept; parks granted again {:.2} s after a new replica started",
        promoted.as_secs_f64(),
        t1.elapsed().as_secs_f64()
    );
    drop(again);
}
