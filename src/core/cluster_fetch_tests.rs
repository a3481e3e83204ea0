//! Cross-node retrieve (issue 18, docs/cluster-design.md §3.3) in virtual time: BLF pickup with `Replaces` of a
//! call another node holds, a retriever giving up while its node fetches the call, and an owner node that does
//! not answer. Two cores with their rooms on the in-memory Redis ([`super::cluster_tests::Cluster`]).

use super::cluster_tests::{lots, phone, Cluster};
use super::testkit::Phone;
use crate::cluster::Slot;
use crate::ids::OrbitIdx;
use crate::media::MediaCommand;
use crate::sip::{Method, Request, Response};
use std::time::Duration;

const SLOT: Slot = Slot { lot: 0, orbit: OrbitIdx(2) };

/// Requests node `i` sent to node `j` (SIP between the nodes) since `since`.
fn node_to_node(c: &Cluster, i: usize, j: usize, since: usize) -> Vec<Request> {
    let to = crate::sip::Peer { transport: crate::sip::Transport::Udp, addr: format!("127.0.0.{}:5060", j + 1).parse().unwrap() };
    c.nodes[i].requests_to(to, since)
}

/// The INVITE's final responses node `i` sent `phone` since `since`.
fn finals(c: &Cluster, i: usize, phone: &Phone, since: usize) -> Vec<Response> {
    c.nodes[i].responses_to(phone.peer, since).into_iter().filter(|r| r.status >= 200 && r.common.cseq.method == Method::Invite).collect()
}

/// A CANCEL of `invite` (as [`Phone::invite`] wrote it).
fn cancel_of(invite: &str) -> String {
    let cancel = invite.replacen("INVITE sip:", "CANCEL sip:", 1).replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    cancel.split("Content-Type").next().unwrap().to_string() + "\n"
}

/// Bob parked on node a in 703: the 200's To tag (parkd's tag of the parked dialog).
fn bob_parked_on_a(c: &mut Cluster, bob: &Phone) -> String {
    let r = c.park(0, bob, "703");
    assert_eq!((r.status, r.common.header("Park-Orbit")), (200, Some("703")));
    r.common.to.tag().unwrap().to_string()
}

/// The call is parked on a in 703 again: in a's lot with hold music asked for since `media_since`, claimed by a in
/// Redis, shown parked by b.
fn assert_back_in_703_on_a(c: &Cluster, media_since: usize) {
    let call = c.nodes[0].core.parking.parked_in(0, SLOT.orbit).expect("parked in 703 on a again");
    let leg = c.nodes[0].core.parking.get(call).unwrap().parked;
    let media_leg = c.nodes[0].core.dialogs.get(leg).unwrap().media.media_leg;
    assert!(c.nodes[0].media[media_since..].iter().any(|m| matches!(m, MediaCommand::Hold { leg, .. } if *leg == media_leg)), "hold music again: {:?}", &c.nodes[0].media[media_since..]);
    assert_eq!(c.redis.holder(SLOT).map(|h| h.1), Some(c.names[0].clone()), "a claims 703 again");
    assert!(c.nodes[1].core.held_remotely(0, SLOT.orbit), "b shows it parked on a");
    assert_eq!(c.nodes[1].core.bridging.len(), 0, "b bridges nothing");
    assert_eq!(c.nodes[0].core.bridging.len(), 0, "a's bridge to b is gone");
}

/// A plain retrieve of 703 at b connects (the call was retrievable again).
fn retrieve_at_b(c: &mut Cluster, who: &Phone) {
    let since = c.nodes[1].sent.len();
    c.nodes[1].deliver(who.peer, &who.invite("703", "", Some(&who.sdp("0", "sendrecv"))));
    c.route();
    let r = c.nodes[1].last_response_to(who.peer, since);
    assert_eq!((r.status, r.common.header("Park-Orbit")), (200, Some("703")));
    assert!(c.nodes[0].core.parking.parked_in(0, SLOT.orbit).is_none(), "the call left a's orbit");
}

#[test]
fn b_s_blf_shows_a_s_parked_dialog_and_a_pickup_with_replaces_at_b_fetches_the_call_from_a() {
    let mut c = Cluster::routable(lots());
    let watcher = Phone { call_id: "w-sub@test".into(), ..Phone::new("w", 5090) };
    c.nodes[1].deliver(watcher.peer, &watcher.request("SUBSCRIBE", "703", "Accept: application/dialog-info+xml\nEvent: dialog\nExpires: 600\n", None));
    for n in c.nodes[1].requests_to(watcher.peer, 0).into_iter().filter(|r| r.method == Method::Notify) {
        let ok = watcher.ok_to(&n);
        c.nodes[1].deliver(watcher.peer, &ok);
    }
    let before = c.nodes[1].sent.len();
    let bob = phone(0);
    let tag = bob_parked_on_a(&mut c, &bob);
    // The claim carries the parked dialog as a holds it ...
    let leg = c.nodes[0].core.parking.get(c.nodes[0].core.parking.parked_in(0, SLOT.orbit).unwrap()).unwrap().parked;
    let d = &c.nodes[0].core.dialogs.get(leg).unwrap().dialog;
    let (call_id, local, remote) = (d.call_id.to_string(), d.local_tag().to_string(), d.remote_tag().to_string());
    assert_eq!((call_id.as_str(), local.as_str(), remote.as_str()), ("call-0", tag.as_str(), "p-tag"));
    let info = c.nodes[1].core.cluster_room().unwrap().view().get(SLOT).unwrap().info.clone();
    assert_eq!(info.dialog, Some(crate::cluster::ParkedDialog { call_id: call_id.clone(), local_tag: local.clone(), remote_tag: remote.clone() }));
    // ... and b's NOTIFY shows it, as a's would.
    let body = c.nodes[1].requests_to(watcher.peer, before).into_iter().filter(|r| r.method == Method::Notify).map(|r| String::from_utf8_lossy(&r.common.body).into_owned()).last().unwrap();
    assert!(body.contains(&format!("call-id=\"{call_id}\" local-tag=\"{local}\" remote-tag=\"{remote}\"")) && body.contains("confirmed"), "{body}");
    // Carol picks it up at b with Replaces: b fetches 703 from a with a plain signed INVITE.
    let carol = Phone { call_id: "call-8".into(), ..Phone::new("carol", 5078) };
    let since = c.nodes[1].sent.len();
    let replaces = format!("Replaces: {call_id};to-tag={local};from-tag={remote}\n");
    c.nodes[1].deliver(carol.peer, &carol.invite("703", &replaces, Some(&carol.sdp("0", "sendrecv"))));
    let fetch = node_to_node(&c, 1, 0, since);
    assert_eq!(fetch.len(), 1, "one INVITE to a");
    assert_eq!((&fetch[0].method, fetch[0].uri.user.as_deref()), (&Method::Invite, Some("703")));
    assert!(fetch[0].common.header("Replaces").is_none() && fetch[0].common.header(crate::cluster::auth::HEADER).is_some(), "signed, without Replaces");
    c.route();
    let r = c.nodes[1].last_response_to(carol.peer, since);
    assert_eq!((r.status, r.common.header("Park-Orbit")), (200, Some("703")));
    let carol_tag = r.common.to.tag().unwrap().to_string();
    c.nodes[1].deliver(carol.peer, &carol.ack("703", &carol_tag, carol.cseq, None));
    c.route();
    assert!(c.nodes[0].core.parking.parked_in(0, SLOT.orbit).is_none(), "the call left its orbit on a");
    assert_eq!(c.redis.holder(SLOT), None);
    assert_eq!((c.nodes[0].core.bridging.len(), c.nodes[1].core.bridging.len()), (1, 1), "a bridge on each node");
    // The same Replaces again names nothing any more.
    let dave = Phone { call_id: "call-9".into(), ..Phone::new("dave", 5079) };
    let since = c.nodes[1].sent.len();
    c.nodes[1].deliver(dave.peer, &dave.invite("703", &replaces, Some(&dave.sdp("0", "sendrecv"))));
    c.route();
    assert_eq!(c.nodes[1].last_response_to(dave.peer, since).status, 481);
}

#[test]
fn a_pickup_with_replaces_at_b_is_refused_by_the_lots_access_rules_as_a_local_one_would_be() {
    let mut restricted = lots();
    restricted[0].allow_retrieve = Some(vec!["10.0.0.0/8".parse().unwrap()]);
    let mut c = Cluster::routable(restricted);
    let bob = phone(0);
    let tag = bob_parked_on_a(&mut c, &bob);
    let carol = Phone { call_id: "call-8".into(), ..Phone::new("carol", 5078) };
    let replaces = format!("Replaces: call-0;to-tag={tag};from-tag=p-tag\n");
    // On a itself (the local retrieve by Replaces) ...
    let since = c.nodes[0].sent.len();
    c.nodes[0].deliver(carol.peer, &carol.invite("703", &replaces, Some(&carol.sdp("0", "sendrecv"))));
    c.route();
    assert_eq!(c.nodes[0].last_response_to(carol.peer, since).status, 403);
    // ... and on b: 403 as well, nothing sent to a.
    let since = c.nodes[1].sent.len();
    c.nodes[1].deliver(carol.peer, &carol.invite("703", &replaces, Some(&carol.sdp("0", "sendrecv"))));
    assert!(node_to_node(&c, 1, 0, since).is_empty(), "no fetch");
    c.route();
    assert_eq!(c.nodes[1].last_response_to(carol.peer, since).status, 403);
    assert!(c.nodes[0].core.parking.parked_in(0, SLOT.orbit).is_some(), "still parked on a");
    // A Replaces naming no dialog of the cluster: 481 as on a single node.
    let carol = Phone { call_id: "call-9".into(), ..carol };
    let since = c.nodes[1].sent.len();
    c.nodes[1].deliver(carol.peer, &carol.invite("703", "Replaces: call-0;to-tag=nope;from-tag=p-tag\n", Some(&carol.sdp("0", "sendrecv"))));
    c.route();
    assert_eq!(c.nodes[1].last_response_to(carol.peer, since).status, 481);
}

#[test]
fn a_retriever_cancelling_while_b_fetches_leaves_the_call_parked_on_a_and_retrievable_again() {
    let mut c = Cluster::routable(lots());
    let bob = phone(0);
    bob_parked_on_a(&mut c, &bob);
    let media_since = c.nodes[0].media.len();
    let bob_since = c.nodes[0].sent.len();
    let carol = Phone { call_id: "call-8".into(), ..Phone::new("carol", 5078) };
    let since = c.nodes[1].sent.len();
    let invite = carol.invite("703", "", Some(&carol.sdp("0", "sendrecv")));
    c.nodes[1].deliver(carol.peer, &invite);
    // Carol gives up before a's answer reaches b.
    c.nodes[1].deliver(carol.peer, &cancel_of(&invite));
    let statuses: Vec<u16> = finals(&c, 1, &carol, since).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [487]);
    let to_a: Vec<Method> = node_to_node(&c, 1, 0, since).iter().map(|r| r.method.clone()).collect();
    assert_eq!(to_a, [Method::Invite, Method::Cancel], "b CANCELs its INVITE to a");
    // a answered the INVITE before the CANCEL (it answers a retrieve at once): b ACKs and BYEs, saying why, and a
    // puts Bob back into 703 with hold music.
    c.route();
    let byes: Vec<Request> = node_to_node(&c, 1, 0, since).into_iter().filter(|r| r.method == Method::Bye).collect();
    assert_eq!(byes.len(), 1);
    assert!(c.nodes[0].requests_to(bob.peer, bob_since).iter().all(|r| r.method != Method::Bye), "Bob's call is not ended");
    assert!(byes[0].common.header("Reason").is_some_and(|r| r.contains("cause=487")), "{:?}", byes[0].common.header("Reason"));
    assert_back_in_703_on_a(&c, media_since);
    assert!(c.nodes[1].core.cluster.as_ref().unwrap().fetches.is_empty(), "b keeps nothing");
    // And a later retrieve gets it.
    retrieve_at_b(&mut c, &Phone { call_id: "call-9".into(), ..Phone::new("dave", 5079) });
}

#[test]
fn an_owner_node_not_answering_within_2_s_gets_a_cancel_and_the_retriever_480_with_retry_after() {
    let mut c = Cluster::routable(lots());
    let bob = phone(0);
    bob_parked_on_a(&mut c, &bob);
    let media_since = c.nodes[0].media.len();
    c.dead[0] = true;
    let carol = Phone { call_id: "call-8".into(), ..Phone::new("carol", 5078) };
    let since = c.nodes[1].sent.len();
    c.nodes[1].deliver(carol.peer, &carol.invite("703", "", Some(&carol.sdp("0", "sendrecv"))));
    c.route();
    c.nodes[1].advance(Duration::from_millis(1999));
    c.pump();
    assert!(finals(&c, 1, &carol, since).is_empty(), "nothing before 2 s");
    c.nodes[1].advance(Duration::from_millis(1));
    c.route();
    let f = finals(&c, 1, &carol, since);
    assert_eq!(f.iter().map(|r| r.status).collect::<Vec<_>>(), [480]);
    assert!(f[0].common.header("Retry-After").is_some(), "with Retry-After");
    assert!(node_to_node(&c, 1, 0, since).iter().any(|r| r.method == Method::Cancel), "b CANCELs towards a");
    // a comes back (it was stopped): the INVITE's retransmission is answered, b ends it and a keeps the call.
    c.dead[0] = false;
    c.nodes[1].advance(Duration::from_secs(2));
    c.route();
    assert_back_in_703_on_a(&c, media_since);
    assert!(c.nodes[1].core.cluster.as_ref().unwrap().fetches.is_empty(), "b keeps nothing");
    assert!(finals(&c, 1, &carol, since).iter().all(|r| r.status == 480), "Carol's only answer is the 480 (retransmitted)");
}

#[test]
fn after_an_attended_park_on_a_b_shows_the_new_partys_dialog_and_picks_it_up() {
    let mut c = Cluster::routable(lots());
    let bob = phone(0);
    let tag = bob_parked_on_a(&mut c, &bob);
    let fence = c.redis.holder(SLOT).unwrap().0;
    // Dave replaces Bob in 703 (attended park: INVITE to the park code with Replaces naming Bob's parked dialog).
    let dave = Phone { call_id: "call-5".into(), ..Phone::new("dave", 5075) };
    let since = c.nodes[0].sent.len();
    c.nodes[0].deliver(dave.peer, &dave.invite("700", &format!("Replaces: call-0;to-tag={tag};from-tag=p-tag\n"), Some(&dave.sdp("0", "sendrecv"))));
    c.pump();
    let r = c.nodes[0].last_response_to(dave.peer, since);
    assert_eq!((r.status, r.common.header("Park-Orbit")), (200, Some("703")));
    let dave_tag = r.common.to.tag().unwrap().to_string();
    c.nodes[0].deliver(dave.peer, &dave.ack("700", &dave_tag, dave.cseq, None));
    c.pump();
    // The claim is the same (same fence), its info names Dave's dialog on b.
    assert_eq!(c.redis.holder(SLOT), Some((fence, c.names[0].clone())));
    let info = c.nodes[1].core.cluster_room().unwrap().view().get(SLOT).unwrap().info.clone();
    assert_eq!(info.dialog, Some(crate::cluster::ParkedDialog { call_id: "call-5".into(), local_tag: dave_tag.clone(), remote_tag: "dave-tag".into() }));
    assert!(info.parked.contains("dave"), "{info:?}");
    // A pickup at b naming Dave's dialog gets Dave.
    let carol = Phone { call_id: "call-8".into(), ..Phone::new("carol", 5078) };
    let since = c.nodes[1].sent.len();
    c.nodes[1].deliver(carol.peer, &carol.invite("703", &format!("Replaces: call-5;to-tag={dave_tag};from-tag=dave-tag\n"), Some(&carol.sdp("0", "sendrecv"))));
    c.route();
    assert_eq!(c.nodes[1].last_response_to(carol.peer, since).status, 200);
    assert!(c.nodes[0].core.parking.parked_in(0, SLOT.orbit).is_none());
}
