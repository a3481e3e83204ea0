//! Two parkd nodes sharing one orbit space through one real `redis-server` (issue 18, atomic allocation):
//! concurrent indirect parks on both nodes get distinct orbits, a directed conflict has exactly one winner,
//! Redis gone → 503 with Retry-After (never a 200), and an orbit freed on one node (hang-up, retrieve) can be
//! taken on the other, and the HTTP API of one node lists the calls parked on the other. Each test starts its own
//! Redis and nodes (own SIP/RTP/HTTP ports and state dirs);
//! figures are printed, not asserted.

mod cluster_common;

use cluster_common::*;
use sip_tests::harness::redis::RedisServer;
use sip_tests::harness::sse::SseTap;
use sip_tests::sip::ua::CallIds;
use sip_tests::Parkd;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[test]
fn concurrent_indirect_parks_on_two_nodes_get_distinct_orbits() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("cl_concurrent");
    let (a, b) = (node("cl_concurrent", &redis, "a"), node("cl_concurrent", &redis, "b"));
    let (mut pa, mut pb) = (Phone::new(&a), Phone::new(&b));
    // 16 parks sent at once, 8 to each node, before any answer is read; then 4 more than the lot holds.
    let t0 = Instant::now();
    let mut calls: Vec<(bool, CallIds)> = Vec::new();
    for _ in 0..8 {
        calls.push((true, pa.invite("700", true)));
        calls.push((false, pb.invite("700", true)));
    }
    let mut orbits = Vec::new();
    for (on_a, c) in &mut calls {
        let r = if *on_a { pa.final_of(c) } else { pb.final_of(c) };
        assert_eq!(r.status, 200, "park {} on node {}", c.call_id, if *on_a { "a" } else { "b" });
        orbits.push(orbit(&r));
    }
    let took = t0.elapsed();
    let unique: BTreeSet<&String> = orbits.iter().collect();
    assert_eq!(unique.len(), 16, "every Park-Orbit once across both nodes: {orbits:?}");
    println!("figure: 16 concurrent indirect parks over 2 nodes, all answered in {:.1} ms", took.as_secs_f64() * 1e3);
    // The other 4 orbits, then the lot is full on both nodes.
    for i in 0..4 {
        let (_, r) = if i % 2 == 0 { pa.park("700", true) } else { pb.park("700", true) };
        assert_eq!(r.status, 200);
        assert!(unique.iter().all(|o| **o != orbit(&r)), "a fresh orbit");
    }
    let (_, r) = pa.park("700", true);
    assert_eq!((r.status, r.reason.as_str()), (486, "Parking Lot Full"));
    let (_, r) = pb.park("700", true);
    assert_eq!((r.status, r.reason.as_str()), (486, "Parking Lot Full"));
    // Each node's lot holds only its own calls; together the 20 orbits.
    assert_eq!(redis.cli(&["--scan", "--pattern", "parkd:*:orbit:*"]).lines().count(), 20);
}

#[test]
fn directed_parks_into_one_orbit_on_two_nodes_one_200_one_486() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("cl_directed");
    let (a, b) = (node("cl_directed", &redis, "a"), node("cl_directed", &redis, "b"));
    let (mut pa, mut pb) = (Phone::new(&a), Phone::new(&b));
    let mut statuses = Vec::new();
    for orbit_no in ["705", "706", "707"] {
        // Both sent before either answer is read.
        let (mut ca, mut cb) = (pa.invite(orbit_no, true), pb.invite(orbit_no, true));
        let (ra, rb) = (pa.final_of(&mut ca), pb.final_of(&mut cb));
        let mut s = [ra.status, rb.status];
        s.sort();
        assert_eq!(s, [200, 486], "orbit {orbit_no}: exactly one 200 and one 486 (a: {} {}, b: {} {})", ra.status, ra.reason, rb.status, rb.reason);
        let winner = if ra.status == 200 { &ra } else { &rb };
        assert_eq!(orbit(winner), orbit_no);
        let loser = if ra.status == 200 { &rb } else { &ra };
        assert_eq!(loser.reason, "Busy Here");
        statuses.push((orbit_no, if ra.status == 200 { "a" } else { "b" }));
    }
    println!("figure: directed conflicts won by {statuses:?}");
}

#[test]
fn redis_stopped_a_park_gets_503_with_retry_after_never_200() {
    if skip() {
        return;
    }
    let mut redis = RedisServer::start("cl_down");
    let a = node("cl_down", &redis, "a");
    let mut pa = Phone::new(&a);
    let (_, r) = pa.park("700", true);
    assert_eq!(r.status, 200, "a park while Redis answers");
    assert_eq!(readyz(&a), 200, "ready while Redis answers");
    // Paused (SIGSTOP): the claim waits for the adapter's response timeout, then 503; never a 200.
    redis.pause();
    let t0 = Instant::now();
    let (_, r) = pa.park("700", true);
    assert_eq!((r.status, r.common.header("Retry-After")), (503, Some("5")), "park with Redis paused: {} {}", r.status, r.reason);
    println!("figure: Redis paused → park answered 503 in {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
    redis.resume();
    let t0 = Instant::now();
    loop {
        let (_, r) = pa.park("700", true);
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503);
        assert!(t0.elapsed() < Duration::from_secs(5), "parks never granted again after SIGCONT");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("figure: Redis resumed → parks granted again after {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
    redis.kill_now();
    for target in ["700", "710", "700"] {
        let t0 = Instant::now();
        let (_, r) = pa.park(target, true);
        let took = t0.elapsed();
        assert_eq!((r.status, r.reason.as_str()), (503, "Cluster Unavailable"), "park on {target} with Redis gone");
        assert_eq!(r.common.header("Retry-After"), Some("5"));
        println!("figure: Redis killed → park on {target} answered 503 in {:.1} ms", took.as_secs_f64() * 1e3);
    }
    assert_eq!(readyz(&a), 503, "/readyz says not ready while Redis is gone");
    let metrics = ureq::get(&format!("http://{}/metrics", a.http_addr.expect("http"))).call().expect("metrics").into_string().unwrap_or_default();
    let value = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok());
    assert_eq!(value("parkd_cluster_up"), Some(0), "{metrics}");
    assert!(value(r#"parkd_cluster_claims_total{result="unavailable"}"#).is_some_and(|n| n >= 4), "{metrics}");
    assert!(value(r#"parkd_cluster_claims_total{result="granted"}"#).is_some_and(|n| n >= 2), "{metrics}");
    assert!(value("parkd_cluster_redis_errors_total").is_some_and(|n| n >= 1), "{metrics}");
}

#[test]
fn an_orbit_freed_on_one_node_can_be_taken_on_the_other() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("cl_free");
    let (a, b) = (node("cl_free", &redis, "a"), node("cl_free", &redis, "b"));
    let (mut pa, mut pb) = (Phone::new(&a), Phone::new(&b));
    // Hang-up: parked on a, refused on b, BYE on a, then b gets it.
    let (bob, r) = pa.park("703", true);
    assert_eq!(r.status, 200);
    assert_eq!(pb.park("703", true).1.status, 486);
    pa.ua.bye(&bob);
    let t0 = Instant::now();
    let freed = loop {
        let (_, r) = pb.park("703", true);
        if r.status == 200 {
            break t0.elapsed();
        }
        assert_eq!(r.status, 486);
        assert!(t0.elapsed() < Duration::from_secs(3), "703 never freed for node b after the hang-up on a");
        std::thread::sleep(Duration::from_millis(5));
    };
    println!("figure: hang-up on a → 703 parkable on b after {:.1} ms", freed.as_secs_f64() * 1e3);
    // Retrieve: parked on a, retrieved on a (INVITE to the orbit without Referred-By), then b gets it.
    assert_eq!(pa.park("704", true).1.status, 200);
    assert_eq!(pb.park("704", true).1.status, 486);
    let (_, r) = pa.park("704", false);
    assert_eq!(r.status, 200, "retrieve on the owner node");
    let t0 = Instant::now();
    loop {
        let (_, r) = pb.park("704", true);
        if r.status == 200 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "704 never freed for node b after the retrieve on a");
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("figure: retrieve on a → 704 parkable on b after {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
}

#[test]
fn the_api_of_one_node_lists_a_call_parked_on_the_other() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("cl_view");
    let (a, b) = (node("cl_view", &redis, "a"), node("cl_view", &redis, "b"));
    let mut pa = Phone::new(&a);
    assert_eq!(api_orbit(&b, "701")["state"], "free");
    let sse = SseTap::connect(b.http_addr.expect("http"), TOKEN, None);
    let (bob, r) = pa.park("701", true);
    let parked_at = Instant::now();
    assert_eq!(r.status, 200);
    let seen = loop {
        let o = api_orbit(&b, "701");
        if o["state"] == "parked" {
            assert_eq!(o["node"], "a", "{o}");
            assert!(o["parked"].as_str().is_some_and(|p| p.contains("sip:u")), "{o}");
            break parked_at.elapsed();
        }
        assert!(parked_at.elapsed() < Duration::from_secs(3), "node b never listed the park on a: {o}");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(api_orbit(&a, "701")["node"].is_null(), "a's own call carries no node");
    let metrics = ureq::get(&format!("http://{}/metrics", b.http_addr.expect("http"))).call().expect("metrics").into_string().unwrap_or_default();
    assert!(metrics.contains(r#"parkd_orbits_occupied{lot="default"} 1"#), "b's occupancy counts a's call:\n{metrics}");
    for line in ["parkd_cluster_up 1", r#"parkd_cluster_orbits{holder="others"} 1"#, r#"parkd_cluster_orbits{holder="self"} 0"#] {
        assert!(metrics.lines().any(|l| l == line), "b's metrics lack {line}:\n{metrics}");
    }
    // b counts a among the live nodes once it heard a's heartbeat (every lease / 3 = 1 s here).
    let t0 = Instant::now();
    loop {
        let m = ureq::get(&format!("http://{}/metrics", b.http_addr.expect("http"))).call().expect("metrics").into_string().unwrap_or_default();
        if m.lines().any(|l| l == "parkd_cluster_nodes 1") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(4), "b never counted a as alive:\n{m}");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("figure: park on a (200 received) → listed by b's API after {:.1} ms (polled every 2 ms)", seen.as_secs_f64() * 1e3);
    pa.ua.bye(&bob);
    let t0 = Instant::now();
    while api_orbit(&b, "701")["state"] != "free" {
        assert!(t0.elapsed() < Duration::from_secs(3), "node b never saw 701 freed");
        std::thread::sleep(Duration::from_millis(2));
    }
    println!("figure: hang-up on a → free in b's API after {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
    // An application watching b's events stream saw both.
    assert!(sse.wait_for("event: remote_freed", Duration::from_secs(3)), "b's SSE: {}", sse.text());
    let text = sse.text();
    let parked = text.lines().find(|l| l.starts_with("data:") && l.contains(r#""event":"remote_parked""#)).unwrap_or_else(|| panic!("no remote_parked in b's SSE: {text}"));
    assert!(parked.contains(r#""orbit":"701""#) && parked.contains(r#""node":"a""#), "{parked}");
    let freed = text.lines().find(|l| l.starts_with("data:") && l.contains(r#""event":"remote_freed""#)).unwrap_or_default();
    assert!(freed.contains(r#""orbit":"701""#) && freed.contains(r#""expired":false"#), "{freed}");
}

/// `POST /v1/calls/{call_id}/park` on `p` with `body`: the status and the JSON answer.
fn api_park(p: &Parkd, call_id: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let url = format!("http://{}/v1/calls/{call_id}/park", p.http_addr.expect("http"));
    let r = ureq::post(&url).set("Authorization", &format!("Bearer {TOKEN}")).timeout(Duration::from_secs(5)).send_json(body);
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => panic!("POST {url}: {e}"),
    };
    (resp.status(), resp.into_json().unwrap_or_default())
}

/// An application re-parks a bridged call on node a: the orbit is claimed cluster-wide (one b holds is refused
/// with 409, as on a single node), the answer comes after the claim, b lists the call, the released leg gets a BYE.
#[test]
fn an_api_repark_on_one_node_claims_its_orbit_cluster_wide() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("cl_apipark");
    let (a, b) = (node("cl_apipark", &redis, "a"), node("cl_apipark", &redis, "b"));
    let (mut pa, mut pb) = (Phone::new(&a), Phone::new(&b));
    assert_eq!(pa.park("703", true).1.status, 200);
    let (carol, r) = pa.park("703", false);
    assert_eq!(r.status, 200, "carol retrieves 703 on a");
    assert_eq!(pb.park("704", true).1.status, 200, "b holds 704");
    let t0 = Instant::now();
    while api_orbit(&a, "704")["state"] != "parked" {
        assert!(t0.elapsed() < Duration::from_secs(3), "a never saw 704 parked");
        std::thread::sleep(Duration::from_millis(2));
    }
    let (status, e) = api_park(&a, &carol.call_id, serde_json::json!({"orbit": "704"}));
    assert_eq!(status, 409, "704 is held by b: {e}");
    let t0 = Instant::now();
    let (status, ok) = api_park(&a, &carol.call_id, serde_json::json!({"orbit": "705"}));
    println!("figure: API re-park in a cluster answered in {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
    assert_eq!((status, ok["orbit"].as_str()), (200, Some("705")), "{ok}");
    let t0 = Instant::now();
    loop {
        let o = api_orbit(&b, "705");
        if o["state"] == "parked" {
            assert_eq!(o["node"], "a", "{o}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "b never listed the re-park on a: {o}");
        std::thread::sleep(Duration::from_millis(2));
    }
    let t0 = Instant::now();
    while !pa.byes.contains(&carol.call_id) {
        pa.pump();
        assert!(t0.elapsed() < Duration::from_secs(3), "carol's leg was never released");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pb.park("705", true).1.status, 486, "705 is a's again, cluster-wide");
}
