//! Retrieve on any node, no redirect (issue 18): node b takes a retrieve (a plain INVITE to the orbit, or a BLF
//! pickup with `Replaces` read from b's NOTIFY) of a call parked on node a, fetches it from a with a signed INVITE
//! and relays the media (audio both ways, byte-exact); a retriever who gives up during the fetch leaves the call
//! parked on a; an owner that does not answer gets the retriever a 480 after 2 s; a's signed-request checks; after
//! an attended park on a, b shows the new party's dialog. Figures are printed, not asserted.

mod cluster_common;

use cluster_common::*;
use sip_tests::harness::redis::RedisServer;
use std::time::{Duration, Instant};

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
