//! Two parkd nodes sharing one orbit space through one real `redis-server` (issue 18, atomic allocation):
//! concurrent indirect parks on both nodes get distinct orbits, a directed conflict has exactly one winner,
//! Redis gone → 503 with Retry-After (never a 200), and an orbit freed on one node (hang-up, retrieve) can be
//! taken on the other, and the HTTP API of one node lists the calls parked on the other. Each test starts its own
//! Redis and nodes (own SIP/RTP/HTTP ports and state dirs);
//! figures are printed, not asserted.

use parkd::sip::{Message, Method, Response};
use sip_tests::harness::redis::RedisServer;
use sip_tests::harness::sse::SseTap;
use sip_tests::sip::ua::{CallIds, Ua};
use sip_tests::{Parkd, ParkdOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const TOKEN: &str = "cluster-test-token-0123456789";

fn skip() -> bool {
    if RedisServer::available() {
        return false;
    }
    eprintln!("SKIPPED: redis-server is not installed (scripts/test.sh installs it: apt-get install redis-server)");
    true
}

/// A parkd node of the cluster on `redis`, waited for until it reports Redis answering.
fn node(test: &str, redis: &RedisServer, name: &str) -> Parkd {
    node_with(test, redis, name, "")
}

/// [`node`] with more TOML (e.g. a `[cluster]` section).
fn node_with(test: &str, redis: &RedisServer, name: &str, more_config: &str) -> Parkd {
    node_leased(test, redis, name, more_config, 3)
}

/// [`node_with`] with a lease of `lease` seconds.
fn node_leased(test: &str, redis: &RedisServer, name: &str, more_config: &str, lease: u32) -> Parkd {
    let lease = lease.to_string();
    let args = ["--redis", &redis.url(), "--node", name, "--lease", &lease, "--http-token", TOKEN].map(String::from).to_vec();
    // Every phone here is 127.0.0.1: allow it more than the default 10 parked calls per source.
    let config = Some(format!("[limits]\nparked_per_source = 100\n{more_config}"));
    let p = Parkd::start_with(&format!("{test}_{name}"), ParkdOptions { orbits: "701-720".into(), extra_args: args, config, http: true, ..ParkdOptions::default() });
    let t0 = Instant::now();
    while !p.stderr_all().contains("parks are granted") {
        assert!(t0.elapsed() < Duration::from_secs(10), "node {name} never reached Redis:\n{}", p.stderr_tail(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

/// A phone talking to one node.
struct Phone {
    ua: Ua,
    n: u32,
    /// Final responses to INVITEs (by Call-ID) and what else came (parkd's BYEs are answered).
    finals: BTreeMap<String, Response>,
    /// The RTP port the next INVITE offers (else 40000 + n).
    rtp: Option<u16>,
    /// BYEs parkd sent (answered), by Call-ID.
    byes: Vec<String>,
}

impl Phone {
    fn new(parkd: &Parkd) -> Phone {
        Phone { ua: Ua::new(parkd.sip_addr()).expect("UA socket"), n: 0, finals: BTreeMap::new(), rtp: None, byes: Vec::new() }
    }

    /// Sends an INVITE to `target` (with Referred-By when `referred`); returns its ids.
    fn invite(&mut self, target: &str, referred: bool) -> CallIds {
        let extra = if referred { "Referred-By: <sip:alice@127.0.0.1>\r\n" } else { "" };
        self.invite_with(target, |_| extra.to_string())
    }

    /// Sends an INVITE to `target` with the header lines `extra` makes from its ids; returns them.
    fn invite_with(&mut self, target: &str, extra: impl FnOnce(&CallIds) -> String) -> CallIds {
        self.n += 1;
        let c = CallIds {
            call_id: format!("cl-{}-{}-{}", self.ua.local.port(), self.n, target),
            from_tag: format!("t{}", self.n),
            user: format!("u{}", self.n),
            target: target.into(),
            to_tag: None,
        };
        let extra = extra(&c);
        self.ua.invite(&c, self.rtp.take().unwrap_or(40_000 + self.n as u16), &extra);
        c
    }

    /// Takes what arrived; ACKs finals, answers BYEs.
    fn pump(&mut self) {
        while let Some(m) = self.ua.try_recv() {
            match m {
                Message::Response(r) if r.common.cseq.method == Method::Invite && r.status >= 200 => {
                    let id = r.common.call_id.as_str().to_string();
                    if !self.finals.contains_key(&id) {
                        self.finals.insert(id, r);
                    }
                }
                Message::Request(req) if req.method == Method::Bye => {
                    self.byes.push(req.common.call_id.as_str().to_string());
                    self.ua.ok_to(&req)
                }
                _ => {}
            }
        }
    }

    /// The final response to `c` (waits up to 5 s), ACKed; `c` gets parkd's tag.
    fn final_of(&mut self, c: &mut CallIds) -> Response {
        let t0 = Instant::now();
        loop {
            self.pump();
            if let Some(r) = self.finals.get(&c.call_id).cloned() {
                c.to_tag = r.common.to.tag().map(str::to_string);
                self.ua.ack(c, r.status < 300);
                return r;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "no final response to {} ({})", c.call_id, c.target);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Parks on `target` and waits for the final response.
    fn park(&mut self, target: &str, referred: bool) -> (CallIds, Response) {
        let mut c = self.invite(target, referred);
        let r = self.final_of(&mut c);
        (c, r)
    }
}

fn orbit(r: &Response) -> String {
    r.common.header("Park-Orbit").unwrap_or("").to_string()
}

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

/// The status of node `p`'s `/readyz`.
fn readyz(p: &Parkd) -> u16 {
    let url = format!("http://{}/readyz", p.http_addr.expect("http"));
    match ureq::get(&url).timeout(Duration::from_secs(5)).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("GET {url}: {e}"),
    }
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

/// Orbit `n` of the default lot as node `p`'s HTTP API shows it.
fn api_orbit(p: &Parkd, n: &str) -> serde_json::Value {
    let url = format!("http://{}/v1/lots/default/orbits", p.http_addr.expect("http"));
    let r = ureq::get(&url).set("Authorization", &format!("Bearer {TOKEN}")).timeout(Duration::from_secs(5)).call().expect("GET orbits");
    let orbits: serde_json::Value = r.into_json().expect("JSON");
    orbits.as_array().and_then(|a| a.iter().find(|o| o["orbit"] == n).cloned()).unwrap_or_else(|| panic!("no orbit {n} in {orbits}"))
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

const SECRET: &str = "cluster-secret-0123456789";

/// The node-to-node header node `node` signs now for the INVITE `c` to `orbit`.
fn signed(secret: &str, node: &str, c: &CallIds, orbit: &str) -> String {
    use parkd::cluster::auth::{ClusterAuth, HEADER};
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    let now = parkd::time::Time::from_micros(unix.as_micros() as u64);
    let name = parkd::cluster::NodeName::new(node).expect("node name");
    let h = ClusterAuth::new(secret.as_bytes(), Duration::from_secs(30)).sign(&name, now, unix.subsec_nanos() as u64, &c.call_id, orbit);
    format!("{HEADER}: {h}\r\n")
}

/// The receiving half of a cross-node retrieve (docs/cluster-design.md §3.3): node a takes a retrieve INVITE
/// that carries a header signed with the cluster's secret, refuses a bad signature or a replay with 403, and
/// the orbit is then free on node b too.
#[test]
fn a_node_takes_a_retrieve_signed_by_another_node_and_refuses_a_bad_signature() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("cl_signed");
    let cfg = format!("[cluster]\nsecret = \"{SECRET}\"\n");
    let (a, b) = (node_with("cl_signed", &redis, "a", &cfg), node_with("cl_signed", &redis, "b", &cfg));
    let (mut pa, mut pb) = (Phone::new(&a), Phone::new(&b));
    assert_eq!(pa.park("706", true).1.status, 200);
    let mut bad = pa.invite_with("706", |c| signed("not-the-cluster-secret-000", "b", c, "706"));
    let r = pa.final_of(&mut bad);
    assert_eq!((r.status, r.reason.as_str()), (403, "Forbidden: Bad Cluster Signature"));
    let mut header = String::new();
    let t0 = Instant::now();
    let mut good = pa.invite_with("706", |c| {
        header = signed(SECRET, "b", c, "706");
        header.clone()
    });
    let r = pa.final_of(&mut good);
    let signed_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!((r.status, orbit(&r).as_str()), (200, "706"), "the signed retrieve takes the call");
    // The same INVITE again, from another phone (a replay): refused.
    let mut replay = Phone::new(&a);
    replay.n = pa.n - 1;
    replay.ua.invite(&good, 41_000, &header);
    let r = replay.final_of(&mut good.clone());
    assert_eq!(r.status, 403, "a replayed header is refused");
    // The orbit left a: b can park into it.
    let t1 = Instant::now();
    loop {
        let (_, r) = pb.park("706", true);
        if r.status == 200 {
            break;
        }
        assert!(t1.elapsed() < Duration::from_secs(3), "706 never freed for node b after the signed retrieve on a");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Same-node plain retrieve for comparison.
    assert_eq!(pa.park("707", true).1.status, 200);
    let t2 = Instant::now();
    let (_, r) = pa.park("707", false);
    assert_eq!(r.status, 200);
    println!("figure: signed retrieve INVITE→200 on a {signed_ms:.1} ms; plain retrieve on a {:.1} ms", t2.elapsed().as_secs_f64() * 1e3);
}

/// Issue 18's retrieve on any node, no redirect: Bob parked on node a (his RTP endpoint hears hold music), Carol
/// dials the orbit at node b; b fetches the call from a (signed INVITE) and answers Carol itself; audio flows both
/// ways (b relays between Carol and a); the orbit is free on both nodes; Carol's hang-up on b ends Bob's call on a.
#[test]
fn a_retrieve_on_node_b_of_a_call_parked_on_node_a_connects_audio_both_ways() {
    use sip_tests::media::rtp_endpoint::{PayloadClass, RtpEndpoint};
    if skip() {
        return;
    }
    let redis = RedisServer::start("cl_fetch");
    let cfg = format!("[cluster]\nsecret = \"{SECRET}\"\n");
    let (a, b) = (node_with("cl_fetch", &redis, "a", &cfg), node_with("cl_fetch", &redis, "b", &cfg));
    let (mut pa, mut pb) = (Phone::new(&a), Phone::new(&b));
    let bob = RtpEndpoint::bind("bob (parked on a)");
    bob.start_talking(1);
    pa.rtp = Some(bob.port());
    let (_bob_call, r) = pa.park("708", true);
    assert_eq!(r.status, 200);
    assert!(bob.wait_for_class(PayloadClass::Other, 10, Duration::from_secs(3)), "bob hears hold music on a");
    let t0 = Instant::now();
    while api_orbit(&b, "708")["state"] != "parked" {
        assert!(t0.elapsed() < Duration::from_secs(3), "b never saw 708 parked");
        std::thread::sleep(Duration::from_millis(2));
    }
    let carol = RtpEndpoint::bind("carol (retrieves on b)");
    carol.start_talking(2);
    pb.rtp = Some(carol.port());
    let t0 = Instant::now();
    let (mut carol_call, r) = pb.park("708", false);
    let cross_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!((r.status, orbit(&r).as_str()), (200, "708"), "b answers the retrieve itself: {r:?}");
    assert!(carol.wait_for_class(PayloadClass::Pattern(1), 50, Duration::from_secs(5)), "carol hears bob: {:?}", carol.report(PayloadClass::Pattern(1)));
    assert!(bob.wait_for_class(PayloadClass::Pattern(2), 50, Duration::from_secs(5)), "bob hears carol: {:?}", bob.report(PayloadClass::Pattern(2)));
    assert_eq!(api_orbit(&a, "708")["state"], "free");
    let t0 = Instant::now();
    while api_orbit(&b, "708")["state"] != "free" {
        assert!(t0.elapsed() < Duration::from_secs(3), "708 never free on b");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Carol hangs up on b: b ends its leg to a, and a BYEs Bob.
    carol_call.to_tag = r.common.to.tag().map(str::to_string);
    pb.ua.bye(&carol_call);
    let t0 = Instant::now();
    while pa.byes.is_empty() {
        pa.pump();
        assert!(t0.elapsed() < Duration::from_secs(5), "a never ended bob's call after carol hung up on b");
        std::thread::sleep(Duration::from_millis(5));
    }
    let bye_ms = t0.elapsed().as_secs_f64() * 1e3;
    // Same-node retrieve for comparison (on a).
    assert_eq!(pa.park("709", true).1.status, 200);
    let t0 = Instant::now();
    assert_eq!(pa.park("709", false).1.status, 200);
    let same_ms = t0.elapsed().as_secs_f64() * 1e3;
    println!("figure: retrieve INVITE→200 cross-node (b fetching from a) {cross_ms:.1} ms; same-node {same_ms:.1} ms; carol's BYE on b → bob's BYE from a {bye_ms:.1} ms");
}

/// A BLF watcher: a UA that has sent node `p` a SUBSCRIBE to `orbit` (dialog event package).
fn subscribe(p: &Parkd, orbit: &str) -> Ua {
    let ua = Ua::new(p.sip_addr()).expect("UA socket");
    let (l, s) = (ua.local, ua.server);
    let text = format!(
        "SUBSCRIBE sip:{orbit}@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-sub-{orbit};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:watcher@{l}>;tag=w{orbit}\r\nTo: <sip:{orbit}@{s}>\r\nCall-ID: sub-{orbit}-{port}\r\nCSeq: 1 SUBSCRIBE\r\n\
         Contact: <sip:watcher@{l}>\r\nEvent: dialog\r\nAccept: application/dialog-info+xml\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
        port = l.port()
    );
    ua.sock.send_to(text.as_bytes(), s).expect("send SUBSCRIBE");
    ua
}

/// The next dialog-info body the watcher gets that satisfies `pred` (every NOTIFY is answered 200).
fn notify_body(ua: &mut Ua, pred: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        while let Some(m) = ua.try_recv() {
            if let Message::Request(req) = m {
                if req.method == Method::Notify {
                    ua.ok_to(&req);
                    let body = String::from_utf8_lossy(&req.common.body).into_owned();
                    if pred(&body) {
                        return body;
                    }
                }
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no NOTIFY as expected");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The last dialog-info body the watcher gets within `quiet` (every NOTIFY answered), if any.
fn last_notify(ua: &mut Ua, quiet: Duration) -> Option<String> {
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < quiet {
        while let Some(m) = ua.try_recv() {
            if let Message::Request(req) = m {
                if req.method == Method::Notify {
                    ua.ok_to(&req);
                    last = Some(String::from_utf8_lossy(&req.common.body).into_owned());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    last
}

/// Attribute `name` of the dialog-info body's `<dialog>` element.
fn attr<'a>(body: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let start = body.find(&key).map(|i| i + key.len()).unwrap_or_else(|| panic!("no {name} in {body}"));
    body[start..].split('"').next().unwrap_or("")
}

/// Waits until node `p`'s API shows `orbit` in `state` (and, when given, held by `node`).
fn wait_api(p: &Parkd, orbit: &str, state: &str, node: Option<&str>) {
    let t0 = Instant::now();
    loop {
        let o = api_orbit(p, orbit);
        if o["state"] == state && node.is_none_or(|n| o["node"] == n) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{orbit} never {state} ({node:?}): {o}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Hold music packets `ep` has received so far.
fn hold_packets(ep: &sip_tests::media::rtp_endpoint::RtpEndpoint) -> usize {
    ep.packets().iter().filter(|p| p.class == sip_tests::media::rtp_endpoint::PayloadClass::Other).count()
}

/// BLF pickup across nodes (issue 18): a phone subscribed to node b reads the dialog of a call parked on node a
/// from b's NOTIFY (Call-ID, a's tag, Bob's tag), INVITEs b with `Replaces`; b fetches the call from a and audio
/// flows both ways (byte-exact patterns, 50 packets each way).
#[test]
fn a_blf_pickup_with_replaces_on_node_b_of_a_call_parked_on_node_a_connects_audio_both_ways() {
    use sip_tests::media::rtp_endpoint::{PayloadClass, RtpEndpoint};
    if skip() {
        return;
    }
    let redis = RedisServer::start("cl_pickup");
    let cfg = format!("[cluster]\nsecret = \"{SECRET}\"\n");
    let (a, b) = (node_with("cl_pickup", &redis, "a", &cfg), node_with("cl_pickup", &redis, "b", &cfg));
    let (mut pa, mut pb) = (Phone::new(&a), Phone::new(&b));
    let mut watcher = subscribe(&b, "710");
    notify_body(&mut watcher, |b| !b.contains("confirmed"));
    let bob = RtpEndpoint::bind("bob (parked on a)");
    bob.start_talking(1);
    pa.rtp = Some(bob.port());
    let parked_at = Instant::now();
    let (bob_call, r) = pa.park("710", true);
    assert_eq!(r.status, 200);
    let body = notify_body(&mut watcher, |b| b.contains("confirmed"));
    let seen_ms = parked_at.elapsed().as_secs_f64() * 1e3;
    let (call_id, local, remote) = (attr(&body, "call-id"), attr(&body, "local-tag"), attr(&body, "remote-tag"));
    assert_eq!((call_id, local, remote), (bob_call.call_id.as_str(), r.common.to.tag().unwrap_or(""), bob_call.from_tag.as_str()), "b shows a's dialog: {body}");
    assert!(bob.wait_for_class(PayloadClass::Other, 10, Duration::from_secs(3)), "bob hears hold music on a");
    let carol = RtpEndpoint::bind("carol (picks up on b)");
    carol.start_talking(2);
    pb.rtp = Some(carol.port());
    let replaces = format!("Replaces: {call_id};to-tag={local};from-tag={remote}\r\n");
    let t0 = Instant::now();
    let mut pickup = pb.invite_with("710", |_| replaces.clone());
    let r = pb.final_of(&mut pickup);
    let pickup_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!((r.status, orbit(&r).as_str()), (200, "710"), "b answers the pickup itself: {r:?}");
    assert!(carol.wait_for_class(PayloadClass::Pattern(1), 50, Duration::from_secs(5)), "carol hears bob: {:?}", carol.report(PayloadClass::Pattern(1)));
    assert!(bob.wait_for_class(PayloadClass::Pattern(2), 50, Duration::from_secs(5)), "bob hears carol: {:?}", bob.report(PayloadClass::Pattern(2)));
    wait_api(&a, "710", "free", None);
    wait_api(&b, "710", "free", None);
    notify_body(&mut watcher, |b| !b.contains("confirmed"));
    println!("figure: park INVITE to a → b's NOTIFY with a's dialog {seen_ms:.1} ms; pickup with Replaces on b INVITE→200 {pickup_ms:.1} ms");
}

/// A CANCEL of `c`'s INVITE (as [`Ua::invite`] sent it: same branch, CSeq 1).
fn cancel(ua: &Ua, c: &CallIds) {
    let (l, s) = (ua.local, ua.server);
    let branch: String = c.call_id.chars().map(|ch| if ch.is_ascii_alphanumeric() || ch == '-' { ch } else { '-' }).collect();
    let text = format!(
        "CANCEL sip:{t}@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-{branch}-inv;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:{u}@{l}>;tag={ft}\r\nTo: <sip:{t}@{s}>\r\nCall-ID: {cid}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
        t = c.target,
        u = c.user,
        ft = c.from_tag,
        cid = c.call_id
    );
    ua.sock.send_to(text.as_bytes(), s).expect("send CANCEL");
}

/// A retriever that hangs up (CANCEL) at node b while b fetches the call from node a does not end the call: b
/// CANCELs towards a, or ends a's answer with a BYE saying the retriever gave up, and a parks Bob again in his
/// orbit (hold music, BLF confirmed, both APIs), where a later retrieve on b gets him.
#[test]
fn a_retriever_cancelling_on_node_b_leaves_the_call_parked_on_node_a() {
    use sip_tests::media::rtp_endpoint::{PayloadClass, RtpEndpoint};
    if skip() {
        return;
    }
    let redis = RedisServer::start("cl_cancel");
    let cfg = format!("[cluster]\nsecret = \"{SECRET}\"\n");
    let (a, b) = (node_with("cl_cancel", &redis, "a", &cfg), node_with("cl_cancel", &redis, "b", &cfg));
    let (mut pa, mut pb) = (Phone::new(&a), Phone::new(&b));
    let bob = RtpEndpoint::bind("bob (parked on a)");
    bob.start_talking(1);
    pa.rtp = Some(bob.port());
    let (bob_call, r) = pa.park("711", true);
    assert_eq!(r.status, 200);
    assert!(bob.wait_for_class(PayloadClass::Other, 10, Duration::from_secs(3)), "bob hears hold music on a");
    wait_api(&b, "711", "parked", Some("a"));
    let mut watcher = subscribe(&b, "711");
    notify_body(&mut watcher, |b| b.contains("confirmed"));
    let mut carol = pb.invite("711", false);
    cancel(&pb.ua, &carol);
    let r = pb.final_of(&mut carol);
    assert_eq!(r.status, 487, "carol's INVITE is cancelled: {r:?}");
    let held = hold_packets(&bob);
    assert!(bob.wait_until(Duration::from_secs(5), |p| p.iter().filter(|x| x.class == PayloadClass::Other).count() >= held + 50), "bob hears hold music again");
    pa.pump();
    assert!(!pa.byes.contains(&bob_call.call_id), "a did not hang up bob");
    wait_api(&a, "711", "parked", None);
    wait_api(&b, "711", "parked", Some("a"));
    let handed_back = a.stderr_all().contains("parked here again");
    // The orbit was free for a moment when a had answered (released, then claimed again): the last NOTIFY says
    // parked; without that moment, nothing changed for the watcher.
    let last = last_notify(&mut watcher, Duration::from_millis(300));
    assert!(last.as_deref().is_none_or(|b| b.contains("confirmed")), "b's BLF shows 711 parked: {last:?}");
    assert!(last.is_some() || !handed_back, "a handed the call back: b's watcher was told");
    // Retrievable again, on b.
    let dave = RtpEndpoint::bind("dave (retrieves on b)");
    pb.rtp = Some(dave.port());
    let (_, r) = pb.park("711", false);
    assert_eq!((r.status, orbit(&r).as_str()), (200, "711"));
    assert!(dave.wait_for_class(PayloadClass::Pattern(1), 20, Duration::from_secs(5)), "dave hears bob");
    println!("figure: carol's CANCEL on b: {}", if handed_back { "a had answered b's INVITE; b's BYE (Reason 487) made a park bob again" } else { "b's CANCEL reached a before its answer" });
}

/// Stops a process (SIGSTOP) and continues it (SIGCONT) when dropped.
struct Stopped(i32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        // SAFETY: kill(2) on the PID of a parkd this test started.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        Stopped(pid as i32)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// The owner node stopped (SIGSTOP, within its lease): a retrieve on b gets `480` with `Retry-After` after about
/// 2 s (not Timer B's 32 s); when a runs again, it answers b's INVITE, b ends it saying the retriever gave up, and a
/// keeps Bob parked with hold music.
#[test]
fn a_retrieve_on_node_b_while_node_a_is_stopped_gets_480_and_a_keeps_the_call() {
    use sip_tests::media::rtp_endpoint::{PayloadClass, RtpEndpoint};
    if skip() {
        return;
    }
    let redis = RedisServer::start("cl_stopped");
    let cfg = format!("[cluster]\nsecret = \"{SECRET}\"\n");
    let (a, b) = (node_leased("cl_stopped", &redis, "a", &cfg, 10), node_leased("cl_stopped", &redis, "b", &cfg, 10));
    let (mut pa, mut pb) = (Phone::new(&a), Phone::new(&b));
    let bob = RtpEndpoint::bind("bob (parked on a)");
    pa.rtp = Some(bob.port());
    let (bob_call, r) = pa.park("712", true);
    assert_eq!(r.status, 200);
    assert!(bob.wait_for_class(PayloadClass::Other, 10, Duration::from_secs(3)), "bob hears hold music on a");
    wait_api(&b, "712", "parked", Some("a"));
    let stopped = Stopped::stop(a.pid());
    let t0 = Instant::now();
    let (_, r) = pb.park("712", false);
    let answered_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!((r.status, r.reason.as_str()), (480, "Owner Node Not Answering"));
    assert_eq!(r.common.header("Retry-After"), Some("5"));
    drop(stopped);
    let t1 = Instant::now();
    while !a.stderr_all().contains("parked here again") {
        assert!(t1.elapsed() < Duration::from_secs(5), "a never took the call back:\n{}", a.stderr_tail(30));
        std::thread::sleep(Duration::from_millis(5));
    }
    let back_ms = t1.elapsed().as_secs_f64() * 1e3;
    let held = hold_packets(&bob);
    assert!(bob.wait_until(Duration::from_secs(5), |p| p.iter().filter(|x| x.class == PayloadClass::Other).count() >= held + 50), "bob hears hold music again");
    pa.pump();
    assert!(!pa.byes.contains(&bob_call.call_id), "a did not hang up bob");
    wait_api(&a, "712", "parked", None);
    wait_api(&b, "712", "parked", Some("a"));
    println!("figure: a stopped → retrieve on b answered 480 after {answered_ms:.0} ms; a continued → call taken back {back_ms:.0} ms later (log polled every 5 ms), then 50 hold packets");
}

/// An attended park on node a (Dave replaces Bob in the orbit, RFC 3891) rewrites the claim's info in Redis
/// (same fence): node b's BLF NOTIFY then names Dave's dialog, so a pickup there gets Dave.
#[test]
fn after_an_attended_park_on_node_a_node_b_shows_the_new_partys_dialog() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("cl_swap");
    let cfg = format!("[cluster]\nsecret = \"{SECRET}\"\n");
    let (a, b) = (node_with("cl_swap", &redis, "a", &cfg), node_with("cl_swap", &redis, "b", &cfg));
    let (mut pa, mut pb) = (Phone::new(&a), Phone::new(&b));
    let (bob, r) = pa.park("713", true);
    assert_eq!(r.status, 200);
    let mut watcher = subscribe(&b, "713");
    let body = notify_body(&mut watcher, |b| b.contains("confirmed"));
    assert_eq!(attr(&body, "call-id"), bob.call_id);
    let bob_tag = r.common.to.tag().unwrap_or("").to_string();
    let t0 = Instant::now();
    let mut dave = pa.invite_with("700", |_| format!("Replaces: {};to-tag={bob_tag};from-tag={}\r\n", bob.call_id, bob.from_tag));
    let r = pa.final_of(&mut dave);
    assert_eq!((r.status, orbit(&r).as_str()), (200, "713"), "Dave takes 713");
    let body = notify_body(&mut watcher, |b| b.contains(&format!("call-id=\"{}\"", dave.call_id)));
    let seen_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert!(body.contains("confirmed") && attr(&body, "local-tag") == r.common.to.tag().unwrap_or("") && attr(&body, "remote-tag") == dave.from_tag, "{body}");
    let replaces = format!("Replaces: {};to-tag={};from-tag={}\r\n", dave.call_id, attr(&body, "local-tag"), dave.from_tag);
    let mut carol = pb.invite_with("713", |_| replaces.clone());
    assert_eq!(pb.final_of(&mut carol).status, 200, "the pickup on b gets Dave");
    wait_api(&a, "713", "free", None);
    println!("figure: attended park on a → b's NOTIFY with the new dialog {seen_ms:.1} ms after the INVITE");
}
