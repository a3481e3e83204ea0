//! The cluster's orbit claims (issue 18) against real Redis servers: independent cluster clients (each the
//! io adapter `parkd::io::cluster` running its own `ClusterRoom`, as a parkd node will) racing for orbits,
//! renewing, expiring, fencing, and living through Redis being paused and restarted empty. Each test starts its
//! own `redis-server` on a loopback port of its own (stopped by PID); figures are printed, not asserted.

use parkd::cluster::{ClaimInfo, ClaimResult, ClusterSettings, Fence, Keyspace, LotSpace, NodeName, Slot, ViewChange, Want};
use parkd::config::{NumRange, RedisTarget, SlotPolicy};
use parkd::ids::OrbitIdx;
use parkd::io::cluster::{spawn, ClusterEvent, ClusterHandle};
use sip_tests::harness::redis::RedisServer;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

fn skip() -> bool {
    if RedisServer::available() {
        return false;
    }
    eprintln!("SKIPPED: redis-server is not installed (scripts/test.sh installs it: apt-get install redis-server)");
    true
}

fn lots(orbits: &str) -> Vec<LotSpace> {
    vec![LotSpace { name: "default".into(), orbits: NumRange::parse(orbits).unwrap(), policy: SlotPolicy::First }]
}

struct Node {
    h: ClusterHandle,
    ev: UnboundedReceiver<ClusterEvent>,
}

fn start(redis: &RedisServer, name: &str, orbits: &str, lease: Duration) -> Node {
    let node = NodeName::new(name).unwrap();
    let mut s = ClusterSettings::new(node, format!("sip:{name}@127.0.0.1"), lease);
    s.seed = name.bytes().map(u64::from).sum();
    let (h, ev) = spawn(s, Keyspace::new("parkd", lots(orbits)), RedisTarget::Server { url: redis.url(), tls: None }, 0);
    Node { h, ev }
}

/// Waits (at most `limit`) until the node can claim; returns how long it took.
async fn until_available(n: &Node, limit: Duration) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if n.h.snapshot().await.available {
            return t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("node not available within {limit:?}");
}

fn info(tag: &str) -> ClaimInfo {
    ClaimInfo { parked: format!("sip:{tag}@127.0.0.1"), ..ClaimInfo::default() }
}

fn slot(o: usize) -> Slot {
    Slot { lot: 0, orbit: OrbitIdx(o) }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Waits for an event matching `f` on `n` (at most `limit`); `None` if it did not come.
async fn wait_event(n: &mut Node, limit: Duration, f: impl Fn(&ClusterEvent) -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        let left = limit.checked_sub(t0.elapsed())?;
        match tokio::time::timeout(left, n.ev.recv()).await {
            Ok(Some(e)) if f(&e) => return Some(t0.elapsed()),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_indirect_claims_from_three_nodes_own_every_orbit_once() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("race");
    let nodes: Vec<Node> = ["a", "b", "c"].iter().map(|n| start(&redis, n, "701-720", Duration::from_secs(10))).collect();
    for n in &nodes {
        until_available(n, Duration::from_secs(5)).await;
    }
    // 3 nodes × 10 concurrent indirect claims for a lot of 20.
    let mut tasks = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for k in 0..10 {
            let h = n.h.clone();
            tasks.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let r = h.claim(0, Want::Any, info(&format!("{i}-{k}"))).await;
                (i, r, t0.elapsed())
            }));
        }
    }
    let mut owner: BTreeMap<Slot, (usize, Fence)> = BTreeMap::new();
    let (mut full, mut rtt) = (0, Vec::new());
    for t in tasks {
        let (i, r, d) = t.await.unwrap();
        rtt.push(d);
        match r {
            ClaimResult::Granted { slot, fence } => assert!(owner.insert(slot, (i, fence)).is_none(), "{slot:?} granted twice"),
            ClaimResult::Full { lot: 0 } => full += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((owner.len(), full), (20, 10), "every orbit once, then 'full'");
    assert_eq!(owner.values().map(|v| v.1).collect::<BTreeSet<_>>().len(), 20, "one fence per claim");
    let keys = redis.cli(&["--raw", "KEYS", "parkd:{default}:orbit:*"]);
    assert_eq!(keys.lines().count(), 20, "Redis holds exactly the 20 claims:\n{keys}");
    eprintln!(
        "FIGURE claim round trip under a 30-claim race (3 nodes, one Redis, loopback): p50 {:?}, max {:?}",
        pct(&mut rtt, 0.5),
        pct(&mut rtt, 1.0)
    );
    // Sequential round trips, uncontended.
    let mut seq = Vec::new();
    for o in 0..20 {
        nodes[0].h.release(slot(o));
    }
    for n in &nodes[1..] {
        for o in 0..20 {
            n.h.release(slot(o));
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..50 {
        let t0 = Instant::now();
        let r = nodes[0].h.claim(0, Want::Orbit(OrbitIdx(0)), info("seq")).await;
        seq.push(t0.elapsed());
        assert!(matches!(r, ClaimResult::Granted { .. }), "{r:?}: a release is written before the next claim of that orbit");
        nodes[0].h.release(slot(0));
    }
    eprintln!("FIGURE claim round trip, one at a time: p50 {:?}, p99 {:?}", pct(&mut seq, 0.5), pct(&mut seq, 0.99));
    for n in &nodes {
        n.h.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directed_claims_into_one_orbit_from_three_nodes_one_wins() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("directed");
    let nodes: Vec<Node> = ["a", "b", "c"].iter().map(|n| start(&redis, n, "701-720", Duration::from_secs(10))).collect();
    for n in &nodes {
        until_available(n, Duration::from_secs(5)).await;
    }
    for o in 0..5 {
        let tasks: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let h = n.h.clone();
                tokio::spawn(async move { (i, h.claim(0, Want::Orbit(OrbitIdx(o)), info("d")).await) })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (i, ClaimResult::Granted { slot: s, .. }) => {
                    assert_eq!(s, slot(o));
                    winners.push(i)
                }
                (_, ClaimResult::Taken { slot: s, owner }) => {
                    assert_eq!(s, slot(o));
                    losers.push(owner)
                }
                (_, other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "orbit {o}: exactly one grant");
        let w = ["a", "b", "c"][winners[0]];
        assert!(losers.iter().all(|l| l.as_str() == w), "the others are told who holds it: {losers:?}");
    }
    for n in &nodes {
        n.h.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_on_one_node_shows_in_the_others_view_quickly() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("view");
    let a = start(&redis, "a", "701-720", Duration::from_secs(10));
    let mut b = start(&redis, "b", "701-720", Duration::from_secs(10));
    until_available(&a, Duration::from_secs(5)).await;
    until_available(&b, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    while b.ev.try_recv().is_ok() {}
    let mut lat = Vec::new();
    for o in 0..20 {
        let t0 = Instant::now();
        let r = a.h.claim(0, Want::Orbit(OrbitIdx(o)), info("v")).await;
        assert!(matches!(r, ClaimResult::Granted { .. }), "{r:?}");
        let seen = wait_event(&mut b, Duration::from_secs(5), |e| matches!(e, ClusterEvent::View(ViewChange::Claimed { slot: s, .. }) if *s == slot(o))).await;
        seen.expect("the claim reached the other node's view");
        lat.push(t0.elapsed());
    }
    let snap = b.h.snapshot().await;
    assert_eq!(snap.remote.len(), 20);
    assert!(snap.remote.iter().all(|(_, c)| c.owner.as_str() == "a" && c.info.parked == "sip:v@127.0.0.1"));
    eprintln!("FIGURE claim on node a → in node b's view (claim call + pub/sub): p50 {:?}, max {:?} (issue: ≤ 500 ms)", pct(&mut lat, 0.5), pct(&mut lat, 1.0));
    // Releases free the orbits in the other view too.
    a.h.release(slot(3));
    assert!(
        wait_event(&mut b, Duration::from_secs(5), |e| matches!(e, ClusterEvent::View(ViewChange::Freed { slot: s, expired: false, .. }) if *s == slot(3))).await.is_some()
    );
    a.h.stop();
    b.h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_renewing_loses_its_orbits_after_the_lease_and_cannot_take_them_back() {
    if skip() {
        return;
    }
    let lease = Duration::from_secs(2);
    let redis = RedisServer::start("lease");
    let mut a = start(&redis, "a", "701-720", lease);
    let mut b = start(&redis, "b", "701-720", lease);
    until_available(&a, Duration::from_secs(5)).await;
    until_available(&b, Duration::from_secs(5)).await;
    let mut old = BTreeMap::new();
    for o in 0..3 {
        match a.h.claim(0, Want::Orbit(OrbitIdx(o)), info("a")).await {
            ClaimResult::Granted { slot, fence } => old.insert(slot, fence),
            r => panic!("{r:?}"),
        };
    }
    // Renewals keep them past the lease while a is well.
    tokio::time::sleep(lease * 2).await;
    assert!(matches!(b.h.claim(0, Want::Orbit(OrbitIdx(0)), info("b")).await, ClaimResult::Taken { .. }), "renewed: still a's");
    while b.ev.try_recv().is_ok() {}
    // a hangs (no renewals, hears nothing).
    a.h.freeze(true);
    let t0 = Instant::now();
    let freed = wait_event(&mut b, lease * 3, |e| matches!(e, ClusterEvent::View(ViewChange::Freed { slot: s, expired: true, .. }) if *s == slot(2))).await;
    let freed = freed.expect("the hung node's orbits leave the other views");
    eprintln!("FIGURE node hung → its orbit freed in the other view after {freed:?} (lease {lease:?}, renewed every lease/3)");
    // Redis let the keys expire too: b claims them, with higher fences.
    let mut new = BTreeMap::new();
    for o in 0..3 {
        let t_wait = Instant::now();
        loop {
            match b.h.claim(0, Want::Orbit(OrbitIdx(o)), info("b")).await {
                ClaimResult::Granted { slot, fence } => {
                    assert!(fence > old[&slot], "fences grow");
                    new.insert(slot, fence);
                    break;
                }
                ClaimResult::Taken { .. } if t_wait.elapsed() < lease => tokio::time::sleep(Duration::from_millis(50)).await,
                r => panic!("orbit {o}: {r:?} at {:?} after the hang", t0.elapsed()),
            }
        }
    }
    // a wakes up: its renewal finds b's claims, it is told it lost each orbit, and b's claims are untouched.
    a.h.freeze(false);
    let mut lost = BTreeSet::new();
    while lost.len() < 3 {
        match tokio::time::timeout(lease * 2, a.ev.recv()).await {
            Ok(Some(ClusterEvent::Lost { slot, fence, to })) => {
                assert_eq!(fence, old[&slot]);
                assert_eq!(to.as_ref().map(|(n, f)| (n.as_str(), *f)), Some(("b", new[&slot])));
                lost.insert(slot);
            }
            Ok(Some(_)) => {}
            _ => panic!("a was not told it lost its orbits (got {lost:?})"),
        }
    }
    assert!(a.h.snapshot().await.own.is_empty());
    for (s, f) in &new {
        let v = redis.cli(&["GET", &format!("parkd:{{default}}:orbit:{}", 701 + s.orbit.0)]);
        assert!(v.starts_with(&format!("{} b ", f.0)), "b's claim stands: {v}");
    }
    // A stale release with a's old fence (what a paused node might still send) deletes nothing.
    let v = redis.cli(&[
        "EVAL",
        parkd::io::cluster::scripts::RELEASE,
        "3",
        "parkd:{default}:orbit:701",
        "parkd:{default}:free",
        "parkd:{default}:held",
        "a",
        &old[&slot(0)].0.to_string(),
        "parkd:changes",
        "default",
        "701",
        "0",
    ]);
    assert_eq!(v, "0");
    assert!(redis.cli(&["GET", "parkd:{default}:orbit:701"]).starts_with(&format!("{} b ", new[&slot(0)].0)));
    a.h.stop();
    b.h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_frees_its_orbits_after_the_lease() {
    if skip() {
        return;
    }
    let lease = Duration::from_secs(2);
    let redis = RedisServer::start("kill");
    let a = start(&redis, "a", "701-720", lease);
    let mut b = start(&redis, "b", "701-720", lease);
    until_available(&a, Duration::from_secs(5)).await;
    until_available(&b, Duration::from_secs(5)).await;
    assert!(matches!(a.h.claim(0, Want::Any, info("a")).await, ClaimResult::Granted { .. }));
    wait_event(&mut b, Duration::from_secs(2), |e| matches!(e, ClusterEvent::View(ViewChange::Claimed { .. }))).await.expect("seen");
    a.h.stop();
    drop(a);
    let gone = wait_event(&mut b, lease * 3, |e| matches!(e, ClusterEvent::View(ViewChange::Freed { expired: true, .. }))).await;
    eprintln!("FIGURE node stopped → its orbit freed in the other view after {:?} (lease {lease:?})", gone.expect("freed"));
    // The orbit is b's to take. (A loaded machine can let a claim outlive its deadline: Unavailable, nothing
    // left behind; asked again as a phone's retransmission would.)
    let t0 = Instant::now();
    let mut r = b.h.claim(0, Want::Orbit(OrbitIdx(0)), info("b")).await;
    while r == ClaimResult::Unavailable && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = b.h.claim(0, Want::Orbit(OrbitIdx(0)), info("b")).await;
    }
    assert!(matches!(r, ClaimResult::Granted { .. }), "{r:?}");
    b.h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_makes_claims_unavailable_and_resumed_recovers() {
    if skip() {
        return;
    }
    let mut redis = RedisServer::start("pause");
    let a = start(&redis, "a", "701-720", Duration::from_secs(10));
    until_available(&a, Duration::from_secs(5)).await;
    assert!(matches!(a.h.claim(0, Want::Orbit(OrbitIdx(0)), info("a")).await, ClaimResult::Granted { .. }));
    redis.pause();
    let t0 = Instant::now();
    let r = a.h.claim(0, Want::Any, info("a")).await;
    let first = t0.elapsed();
    assert_eq!(r, ClaimResult::Unavailable, "never a grant while Redis does not answer");
    let t1 = Instant::now();
    let r2 = a.h.claim(0, Want::Any, info("a")).await;
    let second = t1.elapsed();
    assert_eq!(r2, ClaimResult::Unavailable);
    eprintln!("FIGURE Redis SIGSTOPped: first claim Unavailable after {first:?} (issue: within 2 s), the next one after {second:?}");
    assert!(first < Duration::from_secs(5), "bounded: {first:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.resume();
    let back = until_available(&a, Duration::from_secs(10)).await;
    eprintln!("FIGURE Redis SIGCONTed: claims possible again after {back:?}");
    let r3 = a.h.claim(0, Want::Any, info("a")).await;
    assert!(matches!(r3, ClaimResult::Granted { .. }), "{r3:?}");
    // The claim made before the pause is still a's, and nothing a claim answered Unavailable asked for stayed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let snap = a.h.snapshot().await;
    let keys = redis.cli(&["--raw", "KEYS", "parkd:{default}:orbit:*"]);
    assert_eq!(keys.lines().count(), snap.own.len(), "Redis holds exactly a's own claims:\n{keys}\n{:?}", snap.own);
    a.h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_gets_every_claim_back_within_a_lease() {
    if skip() {
        return;
    }
    let lease = Duration::from_secs(3);
    let mut redis = RedisServer::start("restart");
    let a = start(&redis, "a", "701-720", lease);
    let b = start(&redis, "b", "701-720", lease);
    until_available(&a, Duration::from_secs(5)).await;
    until_available(&b, Duration::from_secs(5)).await;
    for _ in 0..3 {
        assert!(matches!(a.h.claim(0, Want::Any, info("a")).await, ClaimResult::Granted { .. }));
        assert!(matches!(b.h.claim(0, Want::Any, info("b")).await, ClaimResult::Granted { .. }));
    }
    let read = |redis: &RedisServer| -> BTreeMap<String, String> {
        redis
            .cli(&["--raw", "KEYS", "parkd:{default}:orbit:*"])
            .lines()
            .filter(|k| !k.is_empty())
            .map(|k| (k.to_string(), redis.cli(&["GET", k]).splitn(3, ' ').take(2).collect::<Vec<_>>().join(" ")))
            .collect()
    };
    let before = read(&redis);
    assert_eq!(before.len(), 6);
    redis.restart_empty();
    let t0 = Instant::now();
    let mut after = read(&redis);
    while after != before && t0.elapsed() < lease * 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = read(&redis);
    }
    assert_eq!(after, before, "every claim back with its owner and fence");
    eprintln!("FIGURE Redis restarted empty → all 6 claims back after {:?} (lease {lease:?})", t0.elapsed());
    let counter: u64 = redis.cli(&["GET", "parkd:{default}:fence"]).parse().unwrap();
    assert_eq!(counter, 6, "the fence counter was raised to the highest restored fence");
    match a.h.claim(0, Want::Any, info("a")).await {
        ClaimResult::Granted { fence, .. } => assert_eq!(fence, Fence(7), "new fences continue above the restored ones"),
        r => panic!("{r:?}"),
    }
    // Both views are complete again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.h.snapshot().await.remote.len(), 4);
    assert_eq!(a.h.snapshot().await.remote.len(), 3);
    a.h.stop();
    b.h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_loses_no_acknowledged_claim() {
    if skip() {
        return;
    }
    let wait_for = |what: &str, limit: Duration, f: &dyn Fn() -> bool| {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < limit, "{what} within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut master = RedisServer::start("sentinel-master");
    let replica = RedisServer::start_replica("sentinel-replica", &master);
    // In sync and streaming: after a diskless sync the master streams only once the replica's first ACK came (up
    // to 1 s later), so wait until a write shows up on the replica.
    wait_for("the replica streaming", Duration::from_secs(10), &|| {
        let _ = master.cli(&["SET", "probe", "1"]);
        replica.cli(&["GET", "probe"]) == "1"
    });
    master.cli(&["DEL", "probe"]);
    let sentinel = RedisServer::start_sentinel("s", &master, "parkm");
    let rport = replica.port().to_string();
    wait_for("Sentinel knowing the replica", Duration::from_secs(15), &|| sentinel.cli(&["SENTINEL", "replicas", "parkm"]).contains(&rport));
    let url = format!("redis+sentinel://127.0.0.1:{}/parkm", sentinel.port());
    let target = parkd::config::ClusterConfig { redis: Some(url), node: Some("a".into()), ..Default::default() }.target().unwrap().unwrap();
    let node = |name: &str| {
        let mut s = ClusterSettings::new(NodeName::new(name).unwrap(), format!("sip:{name}@127.0.0.1"), Duration::from_secs(5));
        s.seed = 3;
        // a waits for the replica to have each claim (WAIT 1): no acknowledged claim can be lost.
        let (h, ev) = spawn(s, Keyspace::new("parkd", lots("701-720")), target.clone(), u32::from(name == "a"));
        Node { h, ev }
    };
    let (a, b) = (node("a"), node("b"));
    until_available(&a, Duration::from_secs(5)).await;
    until_available(&b, Duration::from_secs(5)).await;
    for n in [&a, &a, &a, &b, &b] {
        // a's claims wait for the replica's WAIT 1 acknowledgement, which a loaded machine can delay past the
        // claim's deadline (Unavailable, nothing left behind): ask again, as a phone's retransmission would.
        let t0 = Instant::now();
        let mut r = n.h.claim(0, Want::Any, info("s")).await;
        while r == ClaimResult::Unavailable && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            r = n.h.claim(0, Want::Any, info("s")).await;
        }
        assert!(matches!(r, ClaimResult::Granted { .. }), "{r:?}");
    }
    let read = |r: &RedisServer| -> BTreeMap<String, String> {
        r.cli(&["--raw", "KEYS", "parkd:{default}:orbit:*"])
            .lines()
            .filter(|k| !k.is_empty())
            .map(|k| (k.to_string(), r.cli(&["GET", k]).splitn(3, ' ').take(2).collect::<Vec<_>>().join(" ")))
            .collect()
    };
    let before = read(&master);
    assert_eq!(before.len(), 5);
    // The master dies; Sentinel promotes the replica; the nodes ask Sentinel again and restore what is missing.
    master.kill_now();
    let t0 = Instant::now();
    wait_for("Sentinel promoting the replica", Duration::from_secs(20), &|| sentinel.cli(&["SENTINEL", "get-master-addr-by-name", "parkm"]).contains(&rport));
    let promoted = t0.elapsed();
    let t_claims = Instant::now();
    let mut after = read(&replica);
    while after != before && t_claims.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = read(&replica);
    }
    assert_eq!(after, before, "every acknowledged claim on the new master, same owners and fences");
    until_available(&b, Duration::from_secs(10)).await;
    let r = b.h.claim(0, Want::Any, info("s")).await;
    assert!(matches!(r, ClaimResult::Granted { fence: Fence(f), .. } if f > 5), "new claims go to the new master: {r:?}");
    // a requires a replica to have each claim, and the promoted master has none left: a's parks are refused
    // (the price of replicas = 1), and what it tried leaves nothing behind.
    let keys_before = read(&replica).len();
    until_available(&a, Duration::from_secs(10)).await;
    assert_eq!(a.h.claim(0, Want::Any, info("s")).await, ClaimResult::Unavailable);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(read(&replica).len(), keys_before);
    eprintln!("FIGURE Sentinel failover: replica promoted {promoted:?} after the master's SIGKILL; claims all on it {:?} later; total {:?}", t_claims.elapsed(), t0.elapsed());
    assert!(b.h.snapshot().await.remote.iter().filter(|(_, c)| c.owner.as_str() == "a").count() >= 3, "b still sees a's orbits");
    a.h.stop();
    b.h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replicas_required_and_none_there_parks_get_unavailable_and_nothing_stays() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("replicas");
    let mut s = ClusterSettings::new(NodeName::new("a").unwrap(), "sip:a@127.0.0.1".into(), Duration::from_secs(10));
    s.seed = 1;
    let (h, ev) = spawn(s, Keyspace::new("parkd", lots("701-720")), RedisTarget::Server { url: redis.url(), tls: None }, 1);
    let a = Node { h, ev };
    until_available(&a, Duration::from_secs(5)).await;
    let t0 = Instant::now();
    let r = a.h.claim(0, Want::Any, info("a")).await;
    assert_eq!(r, ClaimResult::Unavailable, "no replica acknowledged it");
    eprintln!("FIGURE replicas = 1 without a replica: claim Unavailable after {:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(redis.cli(&["--raw", "KEYS", "parkd:{default}:orbit:*"]), "", "the unreplicated claim was given back");
    a.h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_redis_refuses_at_once_and_joins_when_redis_comes() {
    if skip() {
        return;
    }
    let mut redis = RedisServer::start("late");
    redis.kill_now();
    let a = start(&redis, "a", "701-720", Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    assert_eq!(a.h.claim(0, Want::Any, info("a")).await, ClaimResult::Unavailable);
    eprintln!("FIGURE Redis not running: claim Unavailable after {:?}", t0.elapsed());
    redis.restart_empty();
    let joined = until_available(&a, Duration::from_secs(10)).await;
    eprintln!("FIGURE Redis started: node available {joined:?} later");
    assert!(matches!(a.h.claim(0, Want::Any, info("a")).await, ClaimResult::Granted { .. }));
    // Redis killed while the node runs: refused at once (connection refused), back when it is.
    redis.kill_now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t1 = Instant::now();
    assert_eq!(a.h.claim(0, Want::Any, info("a")).await, ClaimResult::Unavailable);
    eprintln!("FIGURE Redis killed: claim Unavailable after {:?}", t1.elapsed());
    redis.restart_empty();
    until_available(&a, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(redis.cli(&["--raw", "KEYS", "parkd:{default}:orbit:*"]).lines().count(), 1, "the claim made before is back");
    a.h.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_and_release_cycles_over_three_nodes() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("cycles");
    let nodes: Vec<Node> = ["a", "b", "c"].iter().map(|n| start(&redis, n, "701-800", Duration::from_secs(10))).collect();
    for n in &nodes {
        until_available(n, Duration::from_secs(5)).await;
    }
    // Bounded: 3 nodes × 8 workers × 150 cycles (claim-any, then release), 24 orbits in use at most of 100.
    let (workers, cycles) = (8, 150);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for w in 0..workers {
            let h = n.h.clone();
            tasks.push(tokio::spawn(async move {
                let mut refused = 0;
                for k in 0..cycles {
                    match h.claim(0, Want::Any, info(&format!("{i}-{w}-{k}"))).await {
                        ClaimResult::Granted { slot, .. } => h.release(slot),
                        _ => refused += 1,
                    }
                }
                refused
            }));
        }
    }
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    let took = t0.elapsed();
    let total = 3 * workers * cycles;
    assert_eq!(refused, 0, "every claim granted (24 in flight for 100 orbits)");
    eprintln!(
        "FIGURE {total} claim+release cycles over 3 nodes (8 concurrent each, one Redis, debug build): {took:?}, {:.0} cycles/s, 2 Redis round trips per cycle",
        total as f64 / took.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(redis.cli(&["--raw", "KEYS", "parkd:{default}:orbit:*"]), "", "every orbit released");
    for n in &nodes {
        n.h.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_and_client_certificates() {
    if skip() {
        return;
    }
    if !RedisServer::openssl_available() {
        eprintln!("SKIPPED: openssl is not installed (scripts/test.sh installs it) to make the test certificates");
        return;
    }
    let redis = RedisServer::start_tls("tls");
    let t = redis.tls_paths();
    let url = format!("rediss://127.0.0.1:{}/0", redis.port());
    let cfg = |ca: bool| parkd::config::ClusterConfig {
        redis: Some(url.clone()),
        node: Some("a".into()),
        tls_ca_file: ca.then(|| t.ca.clone()),
        tls_cert_file: Some(t.client_cert.clone()),
        tls_key_file: Some(t.client_key.clone()),
        ..Default::default()
    };
    cfg(true).validate(&[]).unwrap();
    let node = |name: &str, ca: bool| {
        let s = ClusterSettings::new(NodeName::new(name).unwrap(), format!("sip:{name}@127.0.0.1"), Duration::from_secs(10));
        let (h, ev) = spawn(s, Keyspace::new("parkd", lots("701-720")), cfg(ca).target().unwrap().unwrap(), 0);
        Node { h, ev }
    };
    let a = node("a", true);
    let mut b = node("b", true);
    until_available(&a, Duration::from_secs(10)).await;
    until_available(&b, Duration::from_secs(10)).await;
    let r = a.h.claim(0, Want::Orbit(OrbitIdx(4)), info("tls")).await;
    assert!(matches!(r, ClaimResult::Granted { .. }), "{r:?}");
    let seen = wait_event(&mut b, Duration::from_secs(5), |e| matches!(e, ClusterEvent::View(ViewChange::Claimed { slot: s, .. }) if *s == slot(4))).await;
    assert!(seen.is_some(), "pub/sub over TLS reaches the other node");
    assert!(redis.cli(&["GET", "parkd:{default}:orbit:705"]).contains(" a "));
    // A node that does not trust the test CA (system roots only) never gets a connection: parks are refused.
    let c = node("c", false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!c.h.snapshot().await.available);
    assert_eq!(c.h.claim(0, Want::Any, info("c")).await, ClaimResult::Unavailable);
    for n in [a, b, c] {
        n.h.stop();
    }
}

/// The claim-any free-orbit index (issue 20): a full lot answers Full, a released orbit and the orbits of a node
/// whose keys expired (it stopped: no release, no renewal) come back to claim-any, lowest first; directed claims
/// and claim-any never hand out one orbit twice; the index holds every orbit exactly once throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_any_gets_released_and_expired_orbits_back_from_the_free_index() {
    if skip() {
        return;
    }
    let lease = Duration::from_secs(1);
    let redis = RedisServer::start("freeidx");
    let index_size = |redis: &RedisServer| -> usize {
        let n = |k: &str| redis.cli(&["ZCARD", k]).trim().parse::<usize>().unwrap_or(0);
        n("parkd:{default}:free") + n("parkd:{default}:held")
    };
    let a = start(&redis, "a", "701-710", lease);
    let mut b = start(&redis, "b", "701-710", Duration::from_secs(10));
    until_available(&a, Duration::from_secs(5)).await;
    until_available(&b, Duration::from_secs(5)).await;
    // b takes orbit 3 directed (before any claim-any built the index), a takes the rest by claim-any, lowest first.
    assert!(matches!(b.h.claim(0, Want::Orbit(OrbitIdx(3)), info("b")).await, ClaimResult::Granted { .. }));
    let mut got = Vec::new();
    for _ in 0..9 {
        match a.h.claim(0, Want::Any, info("a")).await {
            ClaimResult::Granted { slot, .. } => got.push(slot.orbit.0),
            r => panic!("{r:?}"),
        }
    }
    assert_eq!(got, vec![0, 1, 2, 4, 5, 6, 7, 8, 9], "lowest free first, the directed one skipped");
    assert_eq!(index_size(&redis), 10, "every orbit once in free or held");
    assert_eq!(b.h.claim(0, Want::Any, info("b")).await, ClaimResult::Full { lot: 0 });
    // b releases its orbit: the next claim-any gets it.
    b.h.release(slot(3));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(b.h.claim(0, Want::Any, info("b")).await, ClaimResult::Granted { slot: s, .. } if s == slot(3)));
    // a stops: nothing released, its keys expire after the lease; claim-any finds them again, lowest first.
    a.h.stop();
    drop(a);
    let freed = wait_event(&mut b, lease * 4, |e| matches!(e, ClusterEvent::View(ViewChange::Freed { expired: true, .. }))).await;
    assert!(freed.is_some(), "a's orbits expired");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = Vec::new();
    for _ in 0..9 {
        match b.h.claim(0, Want::Any, info("b")).await {
            ClaimResult::Granted { slot, .. } => again.push(slot.orbit.0),
            r => panic!("after a's keys expired: {r:?} (got {again:?})"),
        }
    }
    assert_eq!(again, vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
    assert_eq!(b.h.claim(0, Want::Any, info("b")).await, ClaimResult::Full { lot: 0 });
    assert_eq!(index_size(&redis), 10);
    // Redis loses the index (a key evicted, a foreign writer): the next claim-any rebuilds it from the keys.
    redis.cli(&["DEL", "parkd:{default}:held"]);
    b.h.release(slot(5));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(b.h.claim(0, Want::Any, info("b")).await, ClaimResult::Granted { slot: s, .. } if s == slot(5)));
    assert_eq!(index_size(&redis), 10, "rebuilt");
    b.h.stop();
}
