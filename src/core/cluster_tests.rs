//! The park flow of a cluster node (issue 18) in virtual time: two cores, each with its cluster room, against
//! the in-memory Redis of the room's tests (the scripts' semantics). The same flows run against real parkd
//! nodes and a real redis-server in `sip-tests/tests/cluster_park.rs`.

use super::testkit::{Phone, World};
use super::ClusterInput;
use crate::cluster::auth::{ClusterAuth, HEADER};
use crate::cluster::fake_redis::FakeRedis;
use crate::cluster::{ClusterRoom, ClusterSettings, Keyspace, LotSpace, NodeName, Slot};
use crate::config::{LotConfig, NumRange};
use crate::ids::OrbitIdx;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(10);

pub(super) fn lots() -> Vec<LotConfig> {
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    vec![lot]
}

/// Two nodes `a` and `b` (cores with the same lots) and one Redis.
pub(super) struct Cluster {
    pub(super) nodes: Vec<World>,
    pub(super) names: Vec<NodeName>,
    keys: Keyspace,
    pub(super) redis: FakeRedis,
    /// Redis answers (else every operation times out, as with Redis stopped).
    up: bool,
    /// How many of each node's sent messages [`Cluster::route`] has looked at.
    routed: Vec<usize>,
    /// Node i is unreachable: what is sent to it is dropped by [`Cluster::route`] (a node stopped or cut off).
    pub(super) dead: Vec<bool>,
}

impl Cluster {
    pub(super) fn new() -> Cluster {
        Cluster::with_lots(lots())
    }

    fn with_lots(lots: Vec<LotConfig>) -> Cluster {
        Cluster::build(lots, false)
    }

    /// Nodes that take SIP where their claims say (`sip:127.0.0.<i+1>:5060`), with the cluster's secret: a
    /// retrieve on one node of a call the other holds is fetched from it.
    pub(super) fn routable(lots: Vec<LotConfig>) -> Cluster {
        let mut c = Cluster::build(lots, true);
        for n in &mut c.nodes {
            n.core.set_cluster_secret(SECRET);
        }
        c
    }

    fn build(lots: Vec<LotConfig>, routable: bool) -> Cluster {
        let keys = Keyspace::new("parkd", lots.iter().map(LotSpace::from_config).collect());
        let mut c = Cluster { nodes: vec![], names: vec![], keys: keys.clone(), redis: FakeRedis::new(LEASE), up: true, routed: vec![0, 0], dead: vec![false, false] };
        for (i, n) in ["a", "b"].into_iter().enumerate() {
            // Node i listens on 127.0.0.<i+1>:5060 (distinct, so node-to-node SIP can be routed by address).
            let server = crate::config::ServerConfig {
                listen: format!("127.0.0.{}:5060", i + 1).parse().unwrap(),
                rtp_ports: NumRange::parse("20000-20099").unwrap(),
                ..crate::config::ServerConfig::default()
            };
            let mut w = World::with_server(server, lots.clone());
            let name = NodeName::new(n).unwrap();
            let sip = if routable { format!("sip:127.0.0.{}:5060", i + 1) } else { format!("sip:{n}") };
            let mut s = ClusterSettings::new(name.clone(), sip, LEASE);
            s.seed = i as u64 + 1;
            w.core.enable_cluster(ClusterRoom::new(s, keys.clone()));
            w.cluster_input(ClusterInput::Link(true));
            c.nodes.push(w);
            c.names.push(name);
        }
        c.pump();
        c
    }

    /// Carries the SIP messages the nodes send each other (to 127.0.0.<i+1>:5060, where node i listens and which
    /// the claim's `node_sip` names) and runs Redis, until nothing moves.
    pub(super) fn route(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                let start = self.routed[i];
                let msgs: Vec<_> = self.nodes[i].sent[start..].iter().filter(|(p, _)| p.addr.port() == 5060).map(|(p, b)| (p.addr, b.clone())).collect();
                self.routed[i] = self.nodes[i].sent.len();
                let me = crate::sip::Peer { transport: crate::sip::Transport::Udp, addr: format!("127.0.0.{}:5060", i + 1).parse().unwrap() };
                for (to, m) in msgs {
                    moved = true;
                    let j = if to.ip().to_string() == "127.0.0.1" { 0 } else { 1 };
                    if !self.dead[j] {
                        self.nodes[j].deliver_raw(me, &m);
                    }
                }
            }
            self.pump();
            if !moved {
                return;
            }
        }
        panic!("nodes did not settle");
    }

    /// Runs every node's Redis operations and delivers the messages, until nothing moves.
    pub(super) fn pump(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                for (op, cmd) in std::mem::take(&mut self.nodes[i].cluster_ops) {
                    moved = true;
                    let now = self.nodes[i].now;
                    let result = if self.up {
                        Ok(self.redis.exec(now, &self.keys, &self.names[i], &cmd))
                    } else {
                        Err(crate::cluster::OpError::Timeout)
                    };
                    self.nodes[i].cluster_input(ClusterInput::Reply { op, result });
                }
            }
            for change in std::mem::take(&mut self.redis.published) {
                moved = true;
                for n in &mut self.nodes {
                    n.cluster_input(ClusterInput::Change(change.clone()));
                }
            }
            if !moved {
                return;
            }
        }
        panic!("cluster did not settle");
    }

    /// `phone` parks on node `i` by dialing `user` (Referred-By Alice); the final response.
    pub(super) fn park(&mut self, i: usize, phone: &Phone, user: &str) -> crate::sip::Response {
        let since = self.nodes[i].sent.len();
        let invite = phone.invite(user, "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&phone.sdp("0", "sendrecv")));
        self.nodes[i].deliver(phone.peer, &invite);
        assert!(self.nodes[i].responses_to(phone.peer, since).is_empty(), "nothing is answered before the claim");
        self.pump();
        let r = self.nodes[i].last_response_to(phone.peer, since);
        if r.status == 200 {
            let tag = r.common.to.tag().unwrap().to_string();
            self.nodes[i].deliver(phone.peer, &phone.ack(user, &tag, phone.cseq, None));
            self.pump();
        }
        r
    }
}

pub(super) fn phone(n: usize) -> Phone {
    Phone { call_id: format!("call-{n}"), ..Phone::new("p", 5070 + n as u16) }
}

#[test]
fn indirect_parks_on_two_nodes_get_distinct_orbits_then_the_lot_is_full() {
    let mut c = Cluster::new();
    let mut orbits = Vec::new();
    for n in 0..5 {
        let r = c.park(n % 2, &phone(n), "700");
        assert_eq!(r.status, 200, "park {n}");
        orbits.push(r.common.header("Park-Orbit").unwrap().to_string());
    }
    let mut unique = orbits.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique, ["701", "702", "703", "704", "705"], "every orbit once: {orbits:?}");
    let r = c.park(1, &phone(9), "700");
    assert_eq!((r.status, r.reason.as_str()), (486, "Parking Lot Full"));
    // Each node counts the other's orbits as occupied.
    assert_eq!(c.nodes[0].core.lot_summary()[0].2, 5);
    assert_eq!(c.nodes[1].core.lot_summary()[0].2, 5);
}

#[test]
fn directed_parks_into_one_orbit_on_two_nodes_one_200_one_486() {
    let mut c = Cluster::new();
    let r = c.park(0, &phone(0), "703");
    assert_eq!((r.status, r.common.header("Park-Orbit")), (200, Some("703")));
    let r = c.park(1, &phone(1), "703");
    assert_eq!((r.status, r.reason.as_str()), (486, "Busy Here"));
    let slot = Slot { lot: 0, orbit: OrbitIdx(2) };
    assert_eq!(c.redis.holder(slot).map(|h| h.1.as_str().to_string()), Some("a".into()));
    // A retrieve on b of the call a holds: not fetched yet, but said so.
    let carol = phone(7);
    let since = c.nodes[1].sent.len();
    c.nodes[1].deliver(carol.peer, &carol.invite("703", "", Some(&carol.sdp("0", "sendrecv"))));
    c.pump();
    let r = c.nodes[1].last_response_to(carol.peer, since);
    assert_eq!((r.status, r.reason.as_str()), (404, "Parked On Another Node"));
}

#[test]
fn redis_not_answering_gives_503_with_retry_after_never_200() {
    let mut c = Cluster::new();
    c.up = false;
    let r = c.park(0, &phone(0), "700");
    assert_eq!((r.status, r.reason.as_str()), (503, "Cluster Unavailable"));
    assert_eq!(r.common.header("Retry-After"), Some("5"));
    // The link is suspect now: the next park is refused at once, without an operation.
    let r = c.park(1, &phone(1), "701");
    assert_eq!(r.status, 503);
    assert_eq!(c.nodes[0].core.live().orbits_occupied + c.nodes[1].core.live().orbits_occupied, 0);
}

#[test]
fn a_hang_up_on_one_node_frees_the_orbit_for_the_other() {
    let mut c = Cluster::new();
    let bob = phone(0);
    let r = c.park(0, &bob, "701");
    assert_eq!(r.status, 200);
    let tag = r.common.to.tag().unwrap().to_string();
    assert_eq!(c.park(1, &phone(1), "701").status, 486);
    c.nodes[0].deliver(bob.peer, &bob.in_dialog("BYE", "701", &tag, 2, None));
    c.pump();
    assert_eq!(c.redis.holder(Slot { lot: 0, orbit: OrbitIdx(0) }), None, "the claim is released");
    assert_eq!(c.park(1, &phone(2), "701").status, 200);
}

#[test]
fn a_retrieve_frees_the_orbit_cluster_wide() {
    let mut c = Cluster::new();
    assert_eq!(c.park(0, &phone(0), "700").common.header("Park-Orbit"), Some("701"));
    let carol = phone(5);
    let since = c.nodes[0].sent.len();
    c.nodes[0].deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
    c.pump();
    assert_eq!(c.nodes[0].last_response_to(carol.peer, since).status, 200, "retrieved on its own node");
    assert_eq!(c.redis.holder(Slot { lot: 0, orbit: OrbitIdx(0) }), None);
    assert_eq!(c.park(1, &phone(1), "701").status, 200);
}

#[test]
fn a_cancelled_park_gives_its_granted_orbit_back() {
    let mut c = Cluster::new();
    let bob = phone(0);
    c.nodes[0].deliver(bob.peer, &bob.invite("700", "", Some(&bob.sdp("0", "sendrecv"))));
    // RFC 3261 §9.1: the CANCEL carries the INVITE's branch.
    let b = bob.call_id.replace('@', ".");
    let cancel = bob.request("CANCEL", "700", "", None).replace(&format!("z9hG4bK-{b}-cancel-{}", bob.cseq), &format!("z9hG4bK-{b}-{}", bob.cseq));
    c.nodes[0].deliver(bob.peer, &cancel);
    c.pump();
    let statuses: Vec<u16> = c.nodes[0].responses_to(bob.peer, 0).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 487], "CANCEL answered, INVITE 487 (no 200 to the INVITE)");
    assert!(c.redis.keys.is_empty(), "the grant was released");
    assert_eq!(c.nodes[0].core.live().orbits_occupied, 0);
}

#[test]
fn calls_restored_from_the_journal_claim_their_orbits_when_redis_answers() {
    // A single journaled node parks two calls, then "restarts" as a cluster node.
    let mut w = World::with_lots(lots());
    w.core.set_journaling(true);
    for n in 0..2 {
        let p = phone(n);
        let since = w.sent.len();
        w.deliver(p.peer, &p.invite("700", "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&p.sdp("0", "sendrecv"))));
        let token = w.last_token().unwrap();
        w.durable(token, true);
        let ok = w.last_response_to(p.peer, since);
        w.deliver(p.peer, &p.ack("700", ok.common.to.tag().unwrap(), p.cseq, None));
    }
    let live = crate::journal::LiveSet::replay(w.journal.iter().flat_map(|(g, _)| g.iter().cloned()));
    let mut c = Cluster::new();
    // b already holds 702 (taken while a was away).
    assert_eq!(c.park(1, &phone(5), "702").status, 200);
    let mut fresh = World::with_lots(lots());
    fresh.core.set_journaling(true);
    assert_eq!(fresh.core.restore(&live, fresh.now).parked, 2);
    let s = ClusterSettings::new(NodeName::new("a").unwrap(), "sip:a".into(), LEASE);
    fresh.core.enable_cluster(ClusterRoom::new(s, c.keys.clone()));
    c.nodes[0] = fresh;
    c.nodes[0].cluster_input(ClusterInput::Link(true));
    c.pump();
    let holder = |c: &Cluster, o: usize| c.redis.holder(Slot { lot: 0, orbit: OrbitIdx(o) }).map(|h| h.1.as_str().to_string());
    assert_eq!(holder(&c, 0).as_deref(), Some("a"), "701 claimed for its restored call");
    assert_eq!(holder(&c, 1).as_deref(), Some("b"), "702 stays b's");
    assert_eq!(c.park(1, &phone(6), "701").status, 486, "b cannot take the restored call's orbit");
}

#[test]
fn a_watcher_on_one_node_sees_a_park_on_the_other() {
    let mut c = Cluster::new();
    let watcher = Phone { call_id: "w-sub@test".into(), ..Phone::new("w", 5090) };
    let since = c.nodes[1].sent.len();
    c.nodes[1].deliver(watcher.peer, &watcher.request("SUBSCRIBE", "701", "Accept: application/dialog-info+xml\nEvent: dialog\nExpires: 600\n", None));
    let notify_bodies = |c: &Cluster, since: usize| -> Vec<String> {
        c.nodes[1]
            .requests_to(watcher.peer, since)
            .into_iter()
            .filter(|r| r.method == crate::sip::Method::Notify)
            .map(|r| String::from_utf8_lossy(&r.common.body).into_owned())
            .collect()
    };
    assert!(notify_bodies(&c, since).last().is_some_and(|b| !b.contains("confirmed")), "idle at first");
    // One NOTIFY in flight at a time: the watcher answers the first.
    for n in c.nodes[1].requests_to(watcher.peer, since).into_iter().filter(|r| r.method == crate::sip::Method::Notify) {
        let ok = watcher.ok_to(&n);
        c.nodes[1].deliver(watcher.peer, &ok);
    }
    let before = c.nodes[1].sent.len();
    let parked = c.park(0, &phone(0), "700");
    assert_eq!(parked.common.header("Park-Orbit"), Some("701"));
    let bodies = notify_bodies(&c, before);
    assert!(bodies.last().is_some_and(|b| b.contains("confirmed") && b.contains("sip:p@")), "b's watcher sees the park on a: {bodies:?}");
    // The API of b lists it, with its node.
    let lots = c.nodes[1].core.lots_snapshot();
    assert_eq!(lots[0].occupied, 1);
    assert_eq!((lots[0].orbits[0].state, lots[0].orbits[0].node.as_deref()), ("parked", Some("a")));
    assert_eq!(c.nodes[0].core.lots_snapshot()[0].orbits[0].node, None, "a's own call");
    // b's events stream reports it, and only b (a reports its own `parked`).
    let remote = |w: &crate::core::testkit::World| w.events.iter().filter(|e| matches!(e, super::ParkEvent::RemoteParked { .. } | super::ParkEvent::RemoteFreed { .. })).cloned().collect::<Vec<_>>();
    match remote(&c.nodes[1]).as_slice() {
        [super::ParkEvent::RemoteParked { lot, orbit, node, parked, parker, since_ms }] => {
            assert_eq!((lot.as_str(), orbit.as_str(), node.as_str()), ("default", "701", "a"));
            assert!(parked.starts_with("sip:p@") && parker.as_deref() == Some("sip:alice@127.0.0.1:5999") && *since_ms > 0, "{parked} {parker:?}");
        }
        other => panic!("b's events: {other:?}"),
    }
    assert!(remote(&c.nodes[0]).is_empty(), "a's own park is not remote to a");
    // a hangs up the call (the parked party leaves): b reports the orbit free, not expired.
    let p = phone(0);
    let tag = parked.common.to.tag().unwrap().to_string();
    c.nodes[0].deliver(p.peer, &p.in_dialog("BYE", "700", &tag, 2, None));
    c.pump();
    assert!(
        matches!(remote(&c.nodes[1]).last(), Some(super::ParkEvent::RemoteFreed { orbit, node, expired: false, .. }) if orbit.as_str() == "701" && node.as_str() == "a"),
        "{:?}",
        remote(&c.nodes[1])
    );
}

pub(super) const SECRET: &[u8] = b"a shared cluster secret";

#[test]
fn a_signed_retrieve_from_another_node_is_trusted_past_the_lots_access_rules_and_frees_the_orbit_everywhere() {
    let mut restricted = lots();
    restricted[0].allow_retrieve = Some(vec!["10.0.0.0/8".parse().unwrap()]);
    let mut c = Cluster::with_lots(restricted);
    for n in &mut c.nodes {
        n.core.set_cluster_secret(SECRET);
    }
    let r = c.park(0, &phone(0), "703");
    assert_eq!((r.status, r.common.header("Park-Orbit")), (200, Some("703")));
    let slot = Slot { lot: 0, orbit: OrbitIdx(2) };
    assert!(c.nodes[1].core.held_remotely(0, slot.orbit), "b sees a's call");
    assert_eq!(c.nodes[1].core.remote_owner(0, slot.orbit), Some((c.names[0].clone(), Some("sip:a".into()))), "and where a takes SIP");
    // From 127.0.0.1 a plain retrieve is refused by the lot's access rules ...
    let carol = phone(7);
    let since = c.nodes[0].sent.len();
    c.nodes[0].deliver(carol.peer, &carol.invite("703", "", Some(&carol.sdp("0", "sendrecv"))));
    c.pump();
    assert_eq!(c.nodes[0].last_response_to(carol.peer, since).status, 403);
    // ... and so is one with a header signed with another secret, or for another orbit ...
    let now = c.nodes[0].now;
    let mut node_b = Phone { call_id: "x-1".into(), ..Phone::new("b", 5090) };
    for (secret, orbit) in [(&b"not the cluster's secret"[..], "703"), (SECRET, "704")] {
        let h = ClusterAuth::new(secret, Duration::from_secs(30)).sign(&c.names[1], now, 1, &node_b.call_id, orbit);
        let since = c.nodes[0].sent.len();
        c.nodes[0].deliver(node_b.peer, &node_b.invite("703", &format!("{HEADER}: {h}\n"), Some(&node_b.sdp("0", "sendrecv"))));
        c.pump();
        let r = c.nodes[0].last_response_to(node_b.peer, since);
        assert_eq!((r.status, r.reason.as_str()), (403, "Forbidden: Bad Cluster Signature"));
        node_b.cseq += 1;
    }
    // ... but node b's signed INVITE takes the call: a answers it (the orbit leaves a as for a local retrieve).
    node_b.call_id = "x-2".into();
    let h = ClusterAuth::new(SECRET, Duration::from_secs(30)).sign(&c.names[1], now, 2, &node_b.call_id, "703");
    let since = c.nodes[0].sent.len();
    let invite = node_b.invite("703", &format!("{HEADER}: {h}\n"), Some(&node_b.sdp("0", "sendrecv")));
    c.nodes[0].deliver(node_b.peer, &invite);
    c.pump();
    let r = c.nodes[0].last_response_to(node_b.peer, since);
    assert_eq!((r.status, r.common.header("Park-Orbit")), (200, Some("703")));
    assert!(c.nodes[0].core.parking.parked_in(0, slot.orbit).is_none(), "the orbit is free on a");
    assert_eq!(c.redis.holder(slot), None, "a released its claim");
    assert!(!c.nodes[1].core.held_remotely(0, slot.orbit), "b sees the orbit free");
    // The same header again (a replay, from anywhere) is refused.
    let replay = Phone { call_id: "x-2".into(), ..Phone::new("c", 5091) };
    let since = c.nodes[0].sent.len();
    c.nodes[0].deliver(replay.peer, &replay.invite("703", &format!("{HEADER}: {h}\n"), Some(&replay.sdp("0", "sendrecv"))));
    c.pump();
    assert_eq!(c.nodes[0].last_response_to(replay.peer, since).status, 403);
}

#[test]
fn a_node_without_the_secret_refuses_node_to_node_requests() {
    let mut c = Cluster::new();
    let r = c.park(0, &phone(0), "703");
    assert_eq!(r.status, 200);
    let node_b = Phone { call_id: "x-1".into(), ..Phone::new("b", 5090) };
    let h = ClusterAuth::new(SECRET, Duration::from_secs(30)).sign(&c.names[1], c.nodes[0].now, 1, &node_b.call_id, "703");
    let since = c.nodes[0].sent.len();
    c.nodes[0].deliver(node_b.peer, &node_b.invite("703", &format!("{HEADER}: {h}\n"), Some(&node_b.sdp("0", "sendrecv"))));
    c.pump();
    assert_eq!(c.nodes[0].last_response_to(node_b.peer, since).status, 403);
    assert!(c.nodes[0].core.parking.parked_in(0, OrbitIdx(2)).is_some(), "the call stays parked");
}

#[test]
fn a_retrieve_on_b_of_a_call_parked_on_a_is_fetched_from_a_and_bridged_on_b() {
    let mut c = Cluster::new();
    for n in &mut c.nodes {
        n.core.set_cluster_secret(SECRET);
    }
    let bob = phone(0);
    assert_eq!(c.park(0, &bob, "703").status, 200);
    let (a_bridges, b_bridges) = (c.nodes[0].core.bridging.len(), c.nodes[1].core.bridging.len());
    // The claim names a at "sip:a" in these worlds: b cannot route there, and says so.
    let carol = phone(7);
    let since = c.nodes[1].sent.len();
    c.nodes[1].deliver(carol.peer, &carol.invite("703", "", Some(&carol.sdp("0", "sendrecv"))));
    c.route();
    let r = c.nodes[1].last_response_to(carol.peer, since);
    assert_eq!((r.status, r.reason.as_str()), (404, "Parked On Another Node"));
    // With a's address (127.0.0.1:5060 in these worlds): b fetches the call from a.
    let slot = Slot { lot: 0, orbit: OrbitIdx(2) };
    let mut claim = c.nodes[1].core.cluster_room().unwrap().view().get(slot).unwrap().clone();
    claim.info.node_sip = Some("sip:127.0.0.1:5060".into());
    let change = crate::cluster::Change::Claimed { slot, fence: claim.fence, owner: claim.owner.clone(), lease_ms: 10_000, info: claim.info.clone() };
    c.nodes[1].cluster_input(ClusterInput::Change(change));
    let carol = Phone { call_id: "call-8".into(), ..Phone::new("carol", 5078) };
    let since = c.nodes[1].sent.len();
    c.nodes[1].deliver(carol.peer, &carol.invite("703", "", Some(&carol.sdp("0", "sendrecv"))));
    assert!(c.nodes[1].responses_to(carol.peer, since).iter().all(|r| r.status < 200), "b waits for a");
    c.route();
    let r = c.nodes[1].last_response_to(carol.peer, since);
    assert_eq!((r.status, r.common.header("Park-Orbit")), (200, Some("703")), "b answers the retriever");
    let tag = r.common.to.tag().unwrap().to_string();
    c.nodes[1].deliver(carol.peer, &carol.ack("703", &tag, carol.cseq, None));
    c.route();
    assert!(c.nodes[0].core.parking.parked_in(0, slot.orbit).is_none(), "the call left its orbit on a");
    assert_eq!(c.redis.holder(slot), None);
    assert!(!c.nodes[1].core.held_remotely(0, slot.orbit));
    assert_eq!((c.nodes[0].core.bridging.len(), c.nodes[1].core.bridging.len()), (a_bridges + 1, b_bridges + 1), "a bridge on each node");
    assert!(c.nodes[1].media.iter().any(|m| matches!(m, crate::media::MediaCommand::Bridge { .. })), "b relays: {:?}", c.nodes[1].media);
    // Carol hangs up on b: b BYEs a, a BYEs Bob.
    let since_bob = c.nodes[0].sent.len();
    c.nodes[1].deliver(carol.peer, &carol.in_dialog("BYE", "703", &tag, carol.cseq + 1, None));
    c.route();
    assert!(c.nodes[0].requests_to(bob.peer, since_bob).iter().any(|r| r.method == crate::sip::Method::Bye), "a ends Bob's call");
    assert_eq!((c.nodes[0].core.bridging.len(), c.nodes[1].core.bridging.len()), (a_bridges, b_bridges), "both bridges gone");
}

#[test]
fn a_fetch_into_an_empty_orbit_of_an_empty_orbit_park_lot_is_not_a_park() {
    let mut lots = lots();
    lots[0].empty_orbit = crate::config::EmptyOrbit::Park;
    let mut c = Cluster::with_lots(lots);
    c.nodes[0].core.set_cluster_secret(SECRET);
    let node_b = Phone { call_id: "x-1".into(), ..Phone::new("b", 5090) };
    let h = ClusterAuth::new(SECRET, Duration::from_secs(30)).sign(&c.names[1], c.nodes[0].now, 1, &node_b.call_id, "703");
    let since = c.nodes[0].sent.len();
    c.nodes[0].deliver(node_b.peer, &node_b.invite("703", &format!("{HEADER}: {h}\n"), Some(&node_b.sdp("0", "sendrecv"))));
    c.pump();
    let r = c.nodes[0].last_response_to(node_b.peer, since);
    assert_eq!((r.status, r.reason.as_str()), (404, "Orbit Empty"));
    assert!(c.nodes[0].core.parking.parked_in(0, OrbitIdx(2)).is_none(), "nothing parked");
}

#[test]
fn a_node_restarted_within_its_lease_claims_its_restored_calls_orbits_anew() {
    // The journal of node a: one call parked in 701.
    let mut w = World::with_lots(lots());
    w.core.set_journaling(true);
    let p = phone(0);
    let since = w.sent.len();
    w.deliver(p.peer, &p.invite("701", "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&p.sdp("0", "sendrecv"))));
    let token = w.last_token().unwrap();
    w.durable(token, true);
    let ok = w.last_response_to(p.peer, since);
    w.deliver(p.peer, &p.ack("701", ok.common.to.tag().unwrap(), p.cseq, None));
    let live = crate::journal::LiveSet::replay(w.journal.iter().flat_map(|(g, _)| g.iter().cloned()));
    // a's previous process still holds 701 in Redis (its lease has not run out).
    let mut c = Cluster::new();
    assert_eq!(c.park(0, &phone(3), "701").status, 200);
    let slot = Slot { lot: 0, orbit: OrbitIdx(0) };
    let old = c.redis.holder(slot).unwrap();
    // a restarts: same name, the call restored from its journal.
    let mut fresh = World::with_lots(lots());
    fresh.core.set_journaling(true);
    assert_eq!(fresh.core.restore(&live, fresh.now).parked, 1);
    let s = ClusterSettings::new(NodeName::new("a").unwrap(), "sip:a".into(), LEASE);
    fresh.core.enable_cluster(ClusterRoom::new(s, c.keys.clone()));
    c.nodes[0] = fresh;
    c.nodes[0].cluster_input(ClusterInput::Link(true));
    c.pump();
    let now = c.redis.holder(slot).expect("701 still claimed");
    assert_eq!(now.1.as_str(), "a", "701 stays a's");
    assert_ne!(now.0, old.0, "claimed anew with this process's fence");
    assert!(c.nodes[0].core.cluster_room().unwrap().own_claim(slot).is_some(), "the restarted node holds the claim");
    assert_eq!(c.park(1, &phone(6), "701").status, 486, "b cannot take it");
    assert_eq!(c.nodes[1].core.lots_snapshot()[0].orbits[0].node.as_deref(), Some("a"));
}

#[test]
fn a_refer_reparks_into_an_orbit_claimed_cluster_wide_and_its_notify_waits_for_the_claim() {
    let mut c = Cluster::new();
    // b holds 702.
    assert_eq!(c.park(1, &phone(5), "702").status, 200);
    // Bob parked on a, retrieved there by Carol: bridged on a.
    let bob = phone(0);
    assert_eq!(c.park(0, &bob, "701").status, 200);
    let carol = phone(1);
    let since = c.nodes[0].sent.len();
    c.nodes[0].deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
    c.pump();
    let ok = c.nodes[0].last_response_to(carol.peer, since);
    assert_eq!(ok.status, 200, "retrieved on a");
    let tag = ok.common.to.tag().unwrap().to_string();
    c.nodes[0].deliver(carol.peer, &carol.ack("701", &tag, carol.cseq, None));
    c.pump();
    let notifies = |c: &Cluster, since: usize| -> Vec<String> {
        c.nodes[0]
            .requests_to(carol.peer, since)
            .into_iter()
            .filter(|r| r.method == crate::sip::Method::Notify)
            .map(|r| String::from_utf8_lossy(&r.common.body).into_owned())
            .collect()
    };
    let refer = |to: &str, cseq: u32| {
        carol.in_dialog("REFER", "701", &tag, cseq, None).replacen("Contact:", &format!("Refer-To: <sip:{to}@127.0.0.1:5060>\nContact:"), 1)
    };
    // A REFER into b's 702: 202, 100 Trying, then (after Redis) 486 in the sipfrag; the call stays bridged.
    let since = c.nodes[0].sent.len();
    c.nodes[0].deliver(carol.peer, &refer("702", carol.cseq + 1));
    assert_eq!(c.nodes[0].responses_to(carol.peer, since)[0].status, 202);
    assert_eq!(notifies(&c, since), ["SIP/2.0 100 Trying\r\n"], "the final NOTIFY waits for the claim");
    c.pump();
    assert_eq!(notifies(&c, since).last().map(String::as_str), Some("SIP/2.0 486 Busy Here\r\n"));
    assert_eq!(c.nodes[0].core.live().orbits_occupied, 0, "still bridged, not parked");
    // A REFER to the park code: the orbit is claimed in Redis for a, then the 200 sipfrag.
    let since = c.nodes[0].sent.len();
    c.nodes[0].deliver(carol.peer, &refer("700", carol.cseq + 2));
    assert_eq!(notifies(&c, since), ["SIP/2.0 100 Trying\r\n"], "the final NOTIFY waits for the claim");
    c.pump();
    let last = notifies(&c, since).last().cloned().unwrap_or_default();
    let orbit = last.strip_prefix("SIP/2.0 200 OK\r\nPark-Orbit: ").and_then(|o| o.strip_suffix("\r\n")).unwrap_or_else(|| panic!("{last:?}"));
    assert_ne!(orbit, "702");
    let idx = orbit.parse::<usize>().unwrap() - 701;
    let slot = Slot { lot: 0, orbit: OrbitIdx(idx) };
    assert_eq!(c.redis.holder(slot).map(|h| h.1.as_str().to_string()).as_deref(), Some("a"), "{orbit} claimed for a");
    assert_eq!(c.nodes[0].core.live().orbits_occupied, 1, "Bob parked again on a");
    assert_eq!(c.park(1, &phone(6), orbit).status, 486, "b cannot take the re-parked call's orbit");
}

/// The journal of a single node with one call parked (blind, by Alice) in `orbit`.
fn journal_with_call_in(orbit: &str) -> crate::journal::LiveSet {
    let mut w = World::with_lots(lots());
    w.core.set_journaling(true);
    let p = phone(0);
    let since = w.sent.len();
    w.deliver(p.peer, &p.invite(orbit, "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&p.sdp("0", "sendrecv"))));
    let token = w.last_token().unwrap();
    w.durable(token, true);
    let ok = w.last_response_to(p.peer, since);
    w.deliver(p.peer, &p.ack(orbit, ok.common.to.tag().unwrap(), p.cseq, None));
    crate::journal::LiveSet::replay(w.journal.iter().flat_map(|(g, _)| g.iter().cloned()))
}

/// Node a of `c` restarts from `live` (after its lease ran out) and reaches Redis.
fn restart_a(c: &mut Cluster, live: &crate::journal::LiveSet) {
    let mut fresh = World::with_lots(lots());
    fresh.core.set_journaling(true);
    assert_eq!(fresh.core.restore(live, fresh.now).parked, 1);
    let s = ClusterSettings::new(NodeName::new("a").unwrap(), "sip:a".into(), LEASE);
    fresh.core.enable_cluster(ClusterRoom::new(s, c.keys.clone()));
    c.nodes[0] = fresh;
    c.nodes[0].cluster_input(ClusterInput::Link(true));
    c.pump();
}

#[test]
fn a_node_back_after_its_lease_moves_a_call_whose_orbit_was_taken_into_a_free_one() {
    let live = journal_with_call_in("701");
    let mut c = Cluster::new();
    assert_eq!(c.park(1, &phone(5), "701").status, 200, "b took 701 while a was away");
    restart_a(&mut c, &live);
    let moved = c.nodes[0].events.iter().find_map(|e| match e {
        super::ParkEvent::OrbitLost { orbit, owner, moved_to, .. } => Some((orbit.to_string(), owner.clone(), moved_to.clone())),
        _ => None,
    });
    let (orbit, owner, to) = moved.expect("an orbit_lost event");
    assert_eq!((orbit.as_str(), owner.as_str()), ("701", "b"));
    let to = to.expect("moved into a free orbit").to_string();
    assert_ne!(to, "701");
    let slot = Slot { lot: 0, orbit: OrbitIdx(to.parse::<usize>().unwrap() - 701) };
    assert_eq!(c.redis.holder(slot).map(|h| h.1.as_str().to_string()).as_deref(), Some("a"), "{to} claimed for a");
    let lots = c.nodes[0].core.lots_snapshot();
    let state = |o: &str| lots[0].orbits.iter().find(|x| x.orbit == o).map(|x| (x.state, x.node.clone()));
    assert_eq!(state(&to), Some(("parked", None)), "a's call is in {to} now");
    assert_eq!(state("701"), Some(("parked", Some("b".to_string()))), "701 shows b's call");
    assert_eq!(c.park(1, &phone(6), &to).status, 486, "b cannot take {to}");
}

#[test]
fn a_node_back_after_its_lease_recalls_the_parker_when_the_lot_is_full() {
    let live = journal_with_call_in("701");
    let mut c = Cluster::new();
    for (n, o) in ["701", "702", "703", "704", "705"].into_iter().enumerate() {
        assert_eq!(c.park(1, &phone(10 + n), o).status, 200, "b took {o}");
    }
    restart_a(&mut c, &live);
    let ev = &c.nodes[0].events;
    assert!(
        ev.iter().any(|e| matches!(e, super::ParkEvent::OrbitLost { moved_to: None, owner, .. } if owner == "b")),
        "an orbit_lost event without a new orbit: {ev:?}"
    );
    assert!(ev.iter().any(|e| matches!(e, super::ParkEvent::RecallStarted { .. })), "the parker is recalled: {ev:?}");
}

#[test]
fn an_api_repark_claims_its_orbit_cluster_wide_and_is_answered_after_the_claim() {
    use crate::core::{Command, CommandError, CommandOutcome, CommandTicket};
    let mut c = Cluster::new();
    assert_eq!(c.park(0, &phone(0), "700").common.header("Park-Orbit"), Some("701"));
    // Carol retrieves bob on a: a bridged call an application may park again.
    let retrieve = |c: &mut Cluster, who: &Phone, orbit: &str| {
        let since = c.nodes[0].sent.len();
        c.nodes[0].deliver(who.peer, &who.invite(orbit, "", Some(&who.sdp("0", "sendrecv"))));
        c.pump();
        assert_eq!(c.nodes[0].last_response_to(who.peer, since).status, 200, "retrieved from {orbit}");
    };
    let carol = phone(5);
    retrieve(&mut c, &carol, "701");
    assert_eq!(c.park(1, &phone(1), "702").status, 200, "b holds 702");
    let park = |call: &str, orbit: Option<&str>| Command::ParkCall { call_id: call.into(), orbit: orbit.map(Into::into), lot: None };
    let byes = |c: &Cluster, p: &Phone| c.nodes[0].requests_to(p.peer, 0).iter().filter(|r| r.method == crate::sip::Method::Bye).count();

    // Directed into b's orbit: answered after the claim, 409-worthy, and the call stays bridged.
    assert_eq!(c.nodes[0].command(1, park(&carol.call_id, Some("702"))), None, "no answer before the claim");
    c.pump();
    assert_eq!(c.nodes[0].commands_done, [(CommandTicket(1), Err(CommandError::OrbitOccupied("702".into())))]);
    assert_eq!(byes(&c, &carol), 0, "nothing released");

    // Indirect: a free orbit cluster-wide, claimed by a, shown by b; carol's leg is released.
    assert_eq!(c.nodes[0].command(2, park(&carol.call_id, None)), None);
    c.pump();
    let orbit = match c.nodes[0].commands_done.last() {
        Some((CommandTicket(2), Ok(CommandOutcome::Parked { orbit, .. }))) => orbit.to_string(),
        other => panic!("{other:?}"),
    };
    assert_ne!(orbit, "702");
    let idx = OrbitIdx(orbit.parse::<usize>().unwrap() - 701);
    assert_eq!(c.redis.holder(Slot { lot: 0, orbit: idx }).map(|(_, n)| n.as_str().to_string()), Some("a".into()));
    assert!(c.nodes[1].core.held_remotely(0, idx), "b sees the re-parked call");
    assert_eq!(byes(&c, &carol), 1, "the application's leg is released");

    // Redis not answering: refused (503-worthy), nothing parked, the call stays bridged.
    let dave = phone(6);
    retrieve(&mut c, &dave, &orbit);
    c.up = false;
    assert_eq!(c.nodes[0].command(3, park(&dave.call_id, None)), None);
    c.pump();
    assert_eq!(c.nodes[0].commands_done.last(), Some(&(CommandTicket(3), Err(CommandError::ClusterUnavailable))));
    assert_eq!(byes(&c, &dave), 0);
    assert_eq!(c.nodes[0].core.live().orbits_occupied, 0);
}

#[test]
fn a_node_restarted_within_its_lease_takes_its_journaled_claim_back_and_the_orbit_never_looks_free() {
    use crate::journal::{Record, RecordKind};
    let mut c = Cluster::new();
    c.nodes[0].core.set_journaling(true);
    let p = phone(0);
    let since = c.nodes[0].sent.len();
    c.nodes[0].deliver(p.peer, &p.invite("703", "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&p.sdp("0", "sendrecv"))));
    c.pump();
    assert!(c.nodes[0].responses_to(p.peer, since).iter().all(|r| r.status < 200), "the 200 waits for the journal");
    let token = c.nodes[0].last_token().expect("a held group");
    let claim_put = |g: &[Record]| g.iter().any(|r| matches!(r, Record::Put { key, .. } if key.kind == RecordKind::ORBIT_CLAIM));
    assert!(c.nodes[0].journal.iter().any(|(g, t)| *t == Some(token) && claim_put(g)), "the claim's fence is in the group the 200 waits for");
    c.nodes[0].durable(token, true);
    let ok = c.nodes[0].last_response_to(p.peer, since);
    assert_eq!(ok.status, 200);
    c.nodes[0].deliver(p.peer, &p.ack("703", ok.common.to.tag().unwrap(), p.cseq, None));
    let slot = Slot { lot: 0, orbit: OrbitIdx(2) };
    let held = c.redis.holder(slot).expect("claimed");
    let live = crate::journal::LiveSet::replay(c.nodes[0].journal.iter().flat_map(|(g, _)| g.iter().cloned()));

    // a restarts within its lease, as main.rs starts it: cluster node first, then the restore, then Redis.
    let mut fresh = World::with_lots(lots());
    fresh.core.set_journaling(true);
    fresh.core.enable_cluster(ClusterRoom::new(ClusterSettings::new(c.names[0].clone(), "sip:a".into(), LEASE), c.keys.clone()));
    assert_eq!(fresh.core.restore(&live, fresh.now).parked, 1);
    assert!(fresh.core.cluster_room().unwrap().own_claim(slot).is_some_and(|o| o.fence == held.0), "the journal's claim is taken back");
    assert!(!fresh.journal.iter().flat_map(|(g, _)| g.iter()).any(|r| matches!(r, Record::Delete { key } if key.kind == RecordKind::ORBIT_CLAIM)), "and kept in the journal");
    c.nodes[0] = fresh;
    c.routed[0] = 0;
    c.nodes[0].cluster_input(ClusterInput::Link(true));
    c.pump();
    assert_eq!(c.redis.holder(slot), Some(held.clone()), "the same claim, never released");
    assert_eq!(c.park(1, &phone(4), "703").status, 486, "b cannot take it");
    let b_saw_free = c.nodes[1].events.iter().any(|e| matches!(e, super::ParkEvent::RemoteFreed { orbit, .. } if orbit.as_str() == "703"));
    assert!(!b_saw_free, "b never saw 703 free: {:?}", c.nodes[1].events);
    assert!(!c.nodes[0].events.iter().any(|e| matches!(e, super::ParkEvent::OrbitLost { .. })), "nothing moved");
    // The renewals keep it past the old process's lease.
    for n in &mut c.nodes {
        n.advance(LEASE / 2);
    }
    c.pump();
    for n in &mut c.nodes {
        n.advance(LEASE);
    }
    c.pump();
    assert_eq!(c.redis.holder(slot).map(|h| h.1), Some(c.names[0].clone()), "still a's after the lease");
}

/// Found by the cluster benchmark: node a's claim-any is granted 701 while a's view still shows 701 held by b (b's
/// release message comes on the subscription, the grant on the command connection, in either order). Dropping
/// that stale view entry used to be handled as "701 changed and is free here" before the park took 701, and the
/// fresh claim was given back: a's call sat in 701 while Redis had it free for the next park (486 "occupied here"
/// on a, 404 for a retrieve on another node, or two nodes' calls in one orbit).
#[test]
fn a_grant_that_overtakes_the_previous_owners_release_message_keeps_its_claim() {
    let mut c = Cluster::new();
    let slot = Slot { lot: 0, orbit: OrbitIdx(0) };
    let bob = phone(0);
    let r = c.park(1, &bob, "700");
    assert_eq!(r.common.header("Park-Orbit"), Some("701"));
    let tag = r.common.to.tag().unwrap().to_string();
    // Bob hangs up on b; b's release runs in Redis, its message is held back from a.
    c.nodes[1].deliver(bob.peer, &bob.in_dialog("BYE", "700", &tag, 2, None));
    for (op, cmd) in std::mem::take(&mut c.nodes[1].cluster_ops) {
        let now = c.nodes[1].now;
        let result = Ok(c.redis.exec(now, &c.keys, &c.names[1], &cmd));
        c.nodes[1].cluster_input(ClusterInput::Reply { op, result });
    }
    let late = std::mem::take(&mut c.redis.published);
    assert_eq!(c.redis.holder(slot), None, "b released 701");
    let seen = match c.nodes[0].core.orbit_state(0, OrbitIdx(0)) {
        super::orbit_view::OrbitState::Parked(p) => p.node,
        super::orbit_view::OrbitState::Free => None,
    };
    assert_eq!(seen.as_deref(), Some("b"), "a's view still shows b's call");
    let r = c.park(0, &phone(1), "700");
    assert_eq!((r.status, r.common.header("Park-Orbit")), (200, Some("701")));
    assert_eq!(c.redis.holder(slot).map(|(_, n)| n), Some(c.names[0].clone()), "Redis holds 701 for a");
    for change in late {
        for n in &mut c.nodes {
            n.cluster_input(ClusterInput::Change(change.clone()));
        }
    }
    c.pump();
    assert_eq!(c.redis.holder(slot).map(|(_, n)| n), Some(c.names[0].clone()), "still a's after b's late message");
    assert_eq!(c.park(1, &phone(2), "701").status, 486, "b cannot take a's 701");
}
