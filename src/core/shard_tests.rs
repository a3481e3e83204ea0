//! Two SIP shards of one process (`[server] sip_threads = 2`) in virtual time: two cores sharing one address
//! and one orbit table (the in-memory table the io layer runs under one lock), every message handed to the shard
//! [`crate::sip::shard::route`] names, as the io layer's router does. The same flows run against the real binary
//! with `--sip-threads 2` in `sip-tests/tests/sip_shards.rs`.

use super::testkit::{alice, Phone, World};
use super::ClusterInput;
use crate::cluster::fake_redis::FakeRedis;
use crate::cluster::{Keyspace, LotSpace, NodeName, Slot};
use crate::config::{LotConfig, NumRange};
use crate::ids::OrbitIdx;
use crate::media::MediaCommand;
use crate::sip::shard::{route, shard_of_call_id};
use crate::sip::shard_router::{OrbitOwners, Router};
use crate::sip::{Method, Peer, Response, Transport};
use std::time::Duration;

const SECRET: &[u8] = b"per-process shard secret";
const ADDR: &str = "127.0.0.1:5060";

fn lots(parking_time: u64) -> Vec<LotConfig> {
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    lot.parking_time = parking_time;
    vec![lot]
}

struct Shards {
    nodes: Vec<World>,
    names: Vec<NodeName>,
    keys: Keyspace,
    table: FakeRedis,
    routed: Vec<usize>,
    /// The io layer's router (a retrieve to its orbit's shard) and the owners it reads; `None`: the stateless
    /// rule only (as for the retrieve code, or a retrieve racing a park), so a retrieve may be fetched.
    router: Option<(Router, OrbitOwners)>,
}

impl Shards {
    fn new(lots: Vec<LotConfig>) -> Shards {
        let keys = Keyspace::new("parkd", lots.iter().map(LotSpace::from_config).collect());
        let mut s = Shards { nodes: vec![], names: vec![], keys, table: FakeRedis::new(super::shard::SHARD_LEASE), routed: vec![0, 0], router: None };
        for k in 0..2 {
            // One address for both; each shard its own block of RTP ports (as the io layer cuts the range).
            let server = crate::config::ServerConfig {
                listen: ADDR.parse().unwrap(),
                rtp_ports: NumRange::parse(&format!("{}-{}", 20000 + 100 * k, 20099 + 100 * k)).unwrap(),
                ..crate::config::ServerConfig::default()
            };
            let mut w = World::with_server(server, lots.clone());
            let sip = w.core.enable_shard(k, 2, &lots, SECRET);
            assert_eq!(sip, format!("sip:{ADDR};parkd-shard={k}"));
            let name = super::shard::shard_node(k);
            s.table.sips.insert(name.clone(), sip);
            w.cluster_input(ClusterInput::Link(true));
            s.nodes.push(w);
            s.names.push(name);
        }
        s.settle();
        s
    }

    /// Routes phones' messages with the io layer's [`Router`] (by orbit owner and sticky Call-IDs).
    fn with_orbit_router(mut self) -> Shards {
        self.router = Some((Router::new(2), OrbitOwners::default()));
        self
    }

    /// A message from a phone, handed to the shard the router names; returns that shard.
    fn deliver(&mut self, from: &Phone, text: &str) -> usize {
        let bytes = text.replace('\n', "\r\n");
        let now = self.nodes[0].now;
        let k = match self.router.as_mut() {
            Some((r, owners)) => r.route(bytes.as_bytes(), now, |u| owners.shard_of(u)),
            None => route(bytes.as_bytes(), 2),
        };
        self.nodes[k].deliver(from.peer, text);
        self.settle();
        k
    }

    /// Runs the table's operations and delivers its changes to every shard, and carries the SIP the shards send
    /// each other (to their own address) through the router, until nothing moves.
    fn settle(&mut self) {
        let me = Peer { transport: Transport::Udp, addr: ADDR.parse().unwrap() };
        for _ in 0..100 {
            let mut moved = false;
            for i in 0..2 {
                for (op, cmd) in std::mem::take(&mut self.nodes[i].cluster_ops) {
                    moved = true;
                    let now = self.nodes[i].now;
                    let result = Ok(self.table.exec(now, &self.keys, &self.names[i], &cmd));
                    self.nodes[i].cluster_input(ClusterInput::Reply { op, result });
                }
            }
            for change in std::mem::take(&mut self.table.published) {
                moved = true;
                if let Some((_, owners)) = self.router.as_mut() {
                    owners.follow(&change, &self.keys, &self.names);
                }
                for n in &mut self.nodes {
                    n.cluster_input(ClusterInput::Change(change.clone()));
                }
            }
            for i in 0..2 {
                let msgs: Vec<_> = self.nodes[i].sent[self.routed[i]..].iter().filter(|(p, _)| p.addr == me.addr).map(|(_, b)| b.clone()).collect();
                self.routed[i] = self.nodes[i].sent.len();
                for m in msgs {
                    moved = true;
                    let k = route(&m, 2);
                    self.nodes[k].deliver_raw(me, &m);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("shards did not settle");
    }

    /// Both shards' clocks forward by `d`, a second at a time, settling in between.
    fn advance(&mut self, d: Duration) {
        for _ in 0..d.as_secs() {
            for n in &mut self.nodes {
                n.advance(Duration::from_secs(1));
            }
            self.settle();
        }
    }

    /// `phone` INVITEs `user` (Referred-By Alice); the final response and the shard that answered.
    fn park(&mut self, phone: &Phone, user: &str) -> (Response, usize) {
        let k = shard_of_call_id(&phone.call_id, 2);
        let since = self.nodes[k].sent.len();
        let invite = phone.invite(user, "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&phone.sdp("0", "sendrecv")));
        assert_eq!(self.deliver(phone, &invite), k);
        let r = self.nodes[k].last_response_to(phone.peer, since);
        if r.status == 200 {
            let tag = r.common.to.tag().unwrap().to_string();
            self.deliver(phone, &phone.ack(user, &tag, phone.cseq, None));
        }
        (r, k)
    }

    fn bridges(&self) -> (usize, usize) {
        (self.nodes[0].core.bridging.len(), self.nodes[1].core.bridging.len())
    }
}

/// A phone whose Call-ID hashes to shard `k`.
fn phone_on(k: usize, name: &'static str, port: u16) -> Phone {
    let call_id = (0..).map(|i| format!("{name}-{i}@test")).find(|c| shard_of_call_id(c, 2) == k).unwrap();
    Phone { call_id, ..Phone::new(name, port) }
}

const SLOT_703: Slot = Slot { lot: 0, orbit: OrbitIdx(2) };

#[test]
fn a_directed_park_into_an_orbit_another_shard_holds_gets_486() {
    let mut s = Shards::new(lots(0));
    let (r, k) = s.park(&phone_on(0, "bob", 5070), "703");
    assert_eq!((k, r.status, r.common.header("Park-Orbit")), (0, 200, Some("703")));
    let (r, k) = s.park(&phone_on(1, "eve", 5071), "703");
    assert_eq!((k, r.status, r.reason.as_str()), (1, 486, "Busy Here"));
    assert_eq!(s.table.holder(SLOT_703).map(|h| h.1), Some(s.names[0].clone()));
    // Shard 1 counts shard 0's orbit as occupied.
    assert_eq!(s.nodes[1].core.lot_summary()[0].2, 1);
}

#[test]
fn indirect_parks_on_both_shards_never_pick_one_orbit_twice() {
    let mut s = Shards::new(lots(0));
    let mut orbits = Vec::new();
    for n in 0..5 {
        let p = phone_on(n % 2, "p", 5070 + n as u16);
        let p = Phone { call_id: format!("{}-{n}", p.call_id), ..p };
        let p = phone_on_id(p, n % 2);
        let (r, k) = s.park(&p, "700");
        assert_eq!((k, r.status), (n % 2, 200), "park {n}");
        orbits.push(r.common.header("Park-Orbit").unwrap().to_string());
    }
    let mut unique = orbits.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique, ["701", "702", "703", "704", "705"], "every orbit once: {orbits:?}");
    let (r, _) = s.park(&phone_on(1, "late", 5090), "700");
    assert_eq!((r.status, r.reason.as_str()), (486, "Parking Lot Full"));
    assert_eq!((s.nodes[0].core.lot_summary()[0].2, s.nodes[1].core.lot_summary()[0].2), (5, 5));
}

/// `p` with a Call-ID (its own, suffixed) that hashes to shard `k`.
fn phone_on_id(p: Phone, k: usize) -> Phone {
    let call_id = (0..).map(|i| format!("{}.{i}", p.call_id)).find(|c| shard_of_call_id(c, 2) == k).unwrap();
    Phone { call_id, ..p }
}

#[test]
fn a_retrieve_on_one_shard_of_a_call_parked_on_the_other_is_bridged_and_hangs_up_cleanly() {
    let mut s = Shards::new(lots(0));
    let bob = phone_on(0, "bob", 5070);
    let (r, _) = s.park(&bob, "703");
    assert_eq!(r.status, 200);
    let bob_media = s.nodes[0].core.dialogs.iter().next().map(|l| l.media.media_leg).unwrap();
    let carol = phone_on(1, "carol", 5072);
    let (m0, m1) = (s.nodes[0].media.len(), s.nodes[1].media.len());
    let since = s.nodes[1].sent.len();
    assert_eq!(s.deliver(&carol, &carol.invite("703", "", Some(&carol.sdp("0", "sendrecv")))), 1);
    let r = s.nodes[1].last_response_to(carol.peer, since);
    assert_eq!((r.status, r.common.header("Park-Orbit")), (200, Some("703")), "carol is answered by her shard");
    let tag = r.common.to.tag().unwrap().to_string();
    s.deliver(&carol, &carol.ack("703", &tag, carol.cseq, None));
    assert!(s.nodes[0].core.parking.parked_in(0, SLOT_703.orbit).is_none(), "the call left its orbit on shard 0");
    assert_eq!(s.table.holder(SLOT_703), None, "the orbit is free in the shared table");
    assert_eq!(s.bridges(), (1, 1), "bob ⇄ shard 0 ⇄ shard 1 ⇄ carol");
    // The audio is bridged on both shards: bob's leg to the fetch's answer on 0, the fetch leg to carol on 1.
    let bridged = |media: &[MediaCommand]| media.iter().filter_map(|m| if let MediaCommand::Bridge { a, b } = m { Some((*a, *b)) } else { None }).collect::<Vec<_>>();
    let on0 = bridged(&s.nodes[0].media[m0..]);
    assert!(on0.iter().any(|(a, b)| *a == bob_media || *b == bob_media), "bob's leg bridged on shard 0: {on0:?}");
    assert_eq!(bridged(&s.nodes[1].media[m1..]).len(), 1, "carol's leg bridged on shard 1");
    // Carol hangs up: bob gets a BYE from shard 0, and nothing is left on either shard.
    let bob_since = s.nodes[0].sent.len();
    s.deliver(&carol, &carol.in_dialog("BYE", "703", &tag, carol.cseq + 1, None));
    let bye = s.nodes[0].requests_to(bob.peer, bob_since).into_iter().find(|r| r.method == Method::Bye).expect("a BYE to bob");
    s.deliver(&bob, &bob.ok_to(&bye));
    s.advance(Duration::from_secs(40));
    for n in &s.nodes {
        let live = n.core.live();
        assert_eq!((live.legs, live.calls, live.orbits_occupied, live.rtp_ports_in_use), (0, 0, 0, 0), "{live:?}");
    }
}

#[test]
fn a_watcher_on_one_shard_sees_a_park_on_the_other() {
    let mut s = Shards::new(lots(0));
    let w = phone_on(1, "w", 5090);
    assert_eq!(s.deliver(&w, &w.request("SUBSCRIBE", "703", "Accept: application/dialog-info+xml\nEvent: dialog\nExpires: 600\n", None)), 1);
    for n in s.nodes[1].requests_to(w.peer, 0).into_iter().filter(|r| r.method == Method::Notify) {
        s.deliver(&w, &w.ok_to(&n));
    }
    let since = s.nodes[1].sent.len();
    let (r, k) = s.park(&phone_on(0, "bob", 5070), "703");
    assert_eq!((r.status, k), (200, 0));
    let notes: Vec<String> = s.nodes[1].requests_to(w.peer, since).into_iter().filter(|r| r.method == Method::Notify).map(|r| String::from_utf8_lossy(&r.common.body).into_owned()).collect();
    assert!(notes.last().is_some_and(|b| b.contains("confirmed")), "shard 1 tells its watcher 703 is taken: {notes:?}");
    assert!(s.nodes[0].requests_to(w.peer, 0).is_empty(), "shard 0 sends the watcher nothing");
}

#[test]
fn a_call_parked_on_one_shard_is_recalled_once_and_the_recall_stays_on_its_shard() {
    let mut s = Shards::new(lots(5));
    let bob = phone_on(1, "bob", 5070);
    let (r, k) = s.park(&bob, "700");
    assert_eq!((r.status, k), (200, 1));
    let since = [s.nodes[0].sent.len(), s.nodes[1].sent.len()];
    s.advance(Duration::from_secs(7));
    let a = alice();
    let invites: Vec<_> = (0..2).flat_map(|i| s.nodes[i].requests_to(a.peer, since[i]).into_iter().filter(|r| r.method == Method::Invite).map(move |r| (i, r))).collect();
    let mut calls: Vec<_> = invites.iter().map(|(i, r)| (*i, r.common.call_id.to_string())).collect();
    calls.dedup();
    assert_eq!(calls.len(), 1, "one recall in all (its retransmissions aside): {calls:?}");
    let (i, invite) = &invites[0];
    assert_eq!(*i, 1, "recalled by the shard holding the call");
    assert_eq!(shard_of_call_id(invite.common.call_id.as_str(), 2), 1, "its Call-ID routes alice's answers back to shard 1");
    assert!(invite.common.contact[0].uri.to_string().contains(";parkd-shard=1"), "its Contact names shard 1");
}

/// `text` (a phone's in-dialog request) sent to `contact`, the Contact parkd answered with, as a phone does.
fn to_contact(text: &str, contact: &str) -> String {
    text.replacen("sip:parkd@127.0.0.1:5060", contact, 1)
}

#[test]
fn a_retrieve_routed_to_its_orbits_shard_is_served_there_without_a_fetch() {
    let mut s = Shards::new(lots(0)).with_orbit_router();
    let bob = phone_on(0, "bob", 5070);
    let (r, _) = s.park(&bob, "703");
    assert_eq!(r.status, 200);
    let bob_tag = r.common.to.tag().unwrap().to_string();
    // Carol's Call-ID hashes to shard 1, but shard 0 holds 703: the router hands her INVITE to shard 0.
    let carol = phone_on(1, "carol", 5072);
    let since = [s.nodes[0].sent.len(), s.nodes[1].sent.len()];
    assert_eq!(s.deliver(&carol, &carol.invite("703", "", Some(&carol.sdp("0", "sendrecv")))), 0);
    let r = s.nodes[0].last_response_to(carol.peer, since[0]);
    assert_eq!(r.status, 200, "answered by the shard holding the call");
    assert!(s.nodes[1].sent[since[1]..].is_empty(), "shard 1 sent nothing: no fetch, no relay");
    let me: std::net::SocketAddr = ADDR.parse().unwrap();
    assert!(!s.nodes[0].sent[since[0]..].iter().any(|(p, _)| p.addr == me), "shard 0 sent no SIP to the other shard");
    let contact = r.common.contact[0].uri.to_string();
    assert!(contact.contains(";parkd-shard=0"), "{contact}");
    let tag = r.common.to.tag().unwrap().to_string();
    assert_eq!(s.deliver(&carol, &to_contact(&carol.ack("703", &tag, carol.cseq, None), &contact)), 0);
    assert_eq!(s.table.holder(SLOT_703), None, "the orbit is free in the shared table");
    assert_eq!(s.bridges(), (1, 0), "bob ⇄ shard 0 ⇄ carol: one bridge, no hop");
    // Bob hangs up: shard 0 BYEs carol, and carol's 200 comes home by its Via (her Call-ID hashes to shard 1).
    let carol_since = s.nodes[0].sent.len();
    s.deliver(&bob, &bob.in_dialog("BYE", "703", &bob_tag, bob.cseq + 1, None));
    let bye = s.nodes[0].requests_to(carol.peer, carol_since).into_iter().find(|r| r.method == Method::Bye).expect("a BYE to carol");
    assert_eq!(s.deliver(&carol, &carol.ok_to(&bye)), 0, "the answer to shard 0's BYE goes to shard 0");
    s.advance(Duration::from_secs(40));
    let byes = s.nodes[0].requests_to(carol.peer, carol_since).into_iter().filter(|r| r.method == Method::Bye).count();
    assert_eq!(byes, 1, "answered at once: never retransmitted");
    for n in &s.nodes {
        let live = n.core.live();
        assert_eq!((live.legs, live.calls, live.orbits_occupied, live.rtp_ports_in_use, live.client_txns), (0, 0, 0, 0, 0), "{live:?}");
    }
}

#[test]
fn a_shards_request_branch_is_read_back_by_the_router() {
    let mut s = Shards::new(lots(5));
    let bob = phone_on(1, "bob", 5070);
    s.park(&bob, "700");
    s.advance(Duration::from_secs(7));
    let recall = s.nodes[1].requests_to(alice().peer, 0).into_iter().find(|r| r.method == Method::Invite).expect("a recall");
    // Alice's answer, with its Call-ID changed to one that hashes to shard 0: the top Via still names shard 1.
    let other = (0..).map(|i| format!("x{i}")).find(|c| shard_of_call_id(c, 2) == 0).unwrap();
    let answer = alice().answer(&recall, 180, "Ringing", None).replace(recall.common.call_id.as_str(), &other);
    assert_eq!(route(answer.replace('\n', "\r\n").as_bytes(), 2), 1);
}

/// The lots of [`lots`] with retrieve code 799.
fn lots_with_retrieve_code() -> Vec<LotConfig> {
    let mut l = lots(0);
    l[0].retrieve_code = Some("799".into());
    l
}

/// Carol dials the retrieve code through `k`: the final response (ACKed when 200) and its Park-Orbit.
fn retrieve_code_on(s: &mut Shards, k: usize, carol: &Phone) -> (u16, Option<String>) {
    let since = s.nodes[k].sent.len();
    assert_eq!(s.deliver(carol, &carol.invite("799", "", Some(&carol.sdp("0", "sendrecv")))), k);
    let r = s.nodes[k].last_response_to(carol.peer, since);
    if r.status == 200 {
        let tag = r.common.to.tag().unwrap().to_string();
        s.deliver(carol, &carol.ack("799", &tag, carol.cseq, None));
    }
    (r.status, r.common.header("Park-Orbit").map(str::to_string))
}

#[test]
fn the_retrieve_code_on_a_shard_holding_no_call_fetches_the_lots_longest_parked_from_the_other() {
    let mut s = Shards::new(lots_with_retrieve_code());
    assert_eq!(s.park(&phone_on(0, "bob", 5070), "703").0.status, 200);
    let (status, orbit) = retrieve_code_on(&mut s, 1, &phone_on(1, "carol", 5072));
    assert_eq!((status, orbit.as_deref()), (200, Some("703")), "shard 1 holds nothing: it fetches 703 from shard 0");
    assert_eq!(s.bridges(), (1, 1), "bob ⇄ shard 0 ⇄ shard 1 ⇄ carol");
    assert_eq!(s.table.holder(SLOT_703), None);
}

#[test]
fn the_retrieve_code_takes_the_lots_longest_parked_call_whichever_shard_holds_it() {
    let mut s = Shards::new(lots_with_retrieve_code());
    // Dave (shard 1, 702) parks first, bob (shard 0, 703) a second later.
    assert_eq!(s.park(&phone_on(1, "dave", 5071), "702").0.status, 200);
    s.advance(Duration::from_secs(1));
    assert_eq!(s.park(&phone_on(0, "bob", 5070), "703").0.status, 200);
    // Through shard 0, which holds bob: dave, parked longer, is fetched from shard 1.
    let (status, orbit) = retrieve_code_on(&mut s, 0, &phone_on(0, "carol", 5072));
    assert_eq!((status, orbit.as_deref()), (200, Some("702")), "the lot's longest parked, not shard 0's own");
    // Next: bob, now the only one, through shard 1.
    let (status, orbit) = retrieve_code_on(&mut s, 1, &phone_on(1, "erin", 5073));
    assert_eq!((status, orbit.as_deref()), (200, Some("703")));
    // The lot is empty now, on every shard.
    let (status, _) = retrieve_code_on(&mut s, 0, &phone_on(0, "frank", 5074));
    assert_eq!(status, 404);
}
