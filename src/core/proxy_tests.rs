//! Engine tests for parkd behind a proxy (RFC 3261 §12, §16; RFC 3325), in virtual time: a proxy at
//! 127.0.0.2:5080 record-routes and relays between phones on 127.0.0.1 and parkd.

use super::testkit::{crlf, udp, Phone, World};
use super::ParkEvent;
use crate::config::{LotConfig, NumRange, RecallFallback, ServerConfig};
use crate::sip::{parse_message, Message, Peer, Request, Transport};
use std::time::Duration;

const PROXY_RR: &str = "Record-Route: <sip:127.0.0.2:5080;lr>\n";

fn proxy() -> Peer {
    Peer { transport: Transport::Udp, addr: "127.0.0.2:5080".parse().unwrap() }
}

fn lot() -> LotConfig {
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    lot
}

fn server() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:5060".parse().unwrap(),
        rtp_ports: NumRange::parse("20000-20099").unwrap(),
        ..ServerConfig::default()
    }
}

/// `text` as the proxy relays it: the proxy's Via on top (RFC 3261 §16.6 step 8).
fn via_proxy(text: &str, branch: &str) -> String {
    text.replacen("Via: ", &format!("Via: SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bK-proxy-{branch}\nVia: "), 1)
}

/// Bob parks through the proxy (INVITE to `user` with `extra` headers, then the ACK). Returns parkd's tag.
fn park_via_proxy(w: &mut World, bob: &Phone, user: &str, extra: &str) -> String {
    let since = w.sent.len();
    let invite = bob.invite(user, &format!("{PROXY_RR}{extra}"), Some(&bob.sdp("0 8", "sendrecv")));
    w.deliver(proxy(), &via_proxy(&invite, "inv"));
    let ok = w.last_response_to(proxy(), since);
    assert_eq!(ok.status, 200, "park through the proxy answered 200");
    let tag = ok.common.to.tag().expect("to tag").to_string();
    w.deliver(proxy(), &via_proxy(&bob.ack(user, &tag, bob.cseq, None), "ack"));
    tag
}

/// Carol retrieves `orbit` directly (no proxy); returns parkd's 200.
fn retrieve(w: &mut World, carol: &Phone, orbit: &str) -> crate::sip::Response {
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite(orbit, "", Some(&carol.sdp("0", "sendrecv"))));
    w.last_response_to(carol.peer, since)
}

/// Requests with `method` sent to `to` since `since`, retransmissions (same top Via branch) counted once.
fn requests(w: &World, to: Peer, since: usize, method: &str) -> Vec<Request> {
    let mut seen = std::collections::HashSet::new();
    w.requests_to(to, since)
        .into_iter()
        .filter(|r| r.method.as_str() == method)
        .filter(|r| seen.insert(r.common.via.first().and_then(|v| v.branch()).unwrap_or("").to_string()))
        .collect()
}

/// The 200 OK the parker's phone (behind the proxy) sends to parkd's recall, record-routed by the proxy.
fn answer_recall(recall: &Request) -> String {
    let mut text = String::from("SIP/2.0 200 OK\n");
    for v in &recall.common.via {
        text.push_str(&format!("Via: {v}\n"));
    }
    text.push_str(PROXY_RR);
    text.push_str(&format!(
        "From: {}\nTo: {};tag=alice-tag\nCall-ID: {}\nCSeq: {} INVITE\nContact: <sip:alice@127.0.0.1:5999>\nContent-Type: application/sdp\n\n",
        recall.common.from, recall.common.to, recall.common.call_id, recall.common.cseq.seq
    ));
    text.push_str("v=0\no=alice 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 15999 RTP/AVP 0\na=sendrecv\n");
    text
}

#[test]
fn bye_from_parkd_follows_the_record_route_set_rfc3261_12_2_1_1() {
    // A parked call whose recall finds no parker and whose lot hangs up: parkd's BYE must go to the proxy
    // (first Route), carry the route set as Route, and target the phone's Contact.
    let mut l = lot();
    l.parking_time = 10;
    l.recall_fallback = RecallFallback::Hangup;
    let mut w = World::with_server(server(), vec![l]);
    let bob = Phone::new("bob", 5070);
    park_via_proxy(&mut w, &bob, "700", "");
    let since = w.sent.len();
    w.advance(Duration::from_secs(11));
    let byes = requests(&w, proxy(), since, "BYE");
    assert_eq!(byes.len(), 1, "one BYE, sent to the proxy: {:?}", w.sent[since..].iter().map(|(p, _)| p.addr).collect::<Vec<_>>());
    let bye = &byes[0];
    assert_eq!(bye.uri.to_string(), "sip:bob@127.0.0.1:5070", "Request-URI = remote target (Contact)");
    assert_eq!(bye.common.route.len(), 1);
    assert_eq!(bye.common.route[0].uri.host, "127.0.0.2");
    assert!(bye.common.route[0].uri.params.has("lr"));
    assert!(requests(&w, bob.peer, since, "BYE").is_empty(), "nothing bypasses the proxy");
}

#[test]
fn top_route_naming_parkd_is_consumed_rfc3261_16_4() {
    let w = World::with_server(server(), vec![lot()]);
    let bob = Phone::new("bob", 5070);
    let text = bob.invite("700", "Route: <sip:127.0.0.1:5060;lr>, <sip:10.9.9.9;lr>\n", None);
    let Ok(Message::Request(mut req)) = parse_message(&crlf(&text)) else { panic!("test INVITE parses") };
    assert_eq!(req.common.route.len(), 2);
    w.core.ep.consume_own_routes(&mut req);
    assert_eq!(req.common.route.len(), 1, "parkd's own entry removed, the other kept");
    assert_eq!(req.common.route[0].uri.host, "10.9.9.9");
    let mut other = req.clone();
    w.core.ep.consume_own_routes(&mut other);
    assert_eq!(other.common.route.len(), 1, "a foreign top Route is not parkd's to remove");
}

#[test]
fn request_routed_to_parkd_by_a_proxy_is_served() {
    // A proxy that preloads a Route to parkd (RFC 3261 §16.6 step 4 when parkd is its next hop).
    let mut w = World::with_server(server(), vec![lot()]);
    let bob = Phone::new("bob", 5070);
    park_via_proxy(&mut w, &bob, "700", "Route: <sip:127.0.0.1:5060;lr>\n");
    assert!(matches!(&w.events[0], ParkEvent::Parked { orbit, .. } if orbit == "701"));
}

#[test]
fn recall_goes_to_the_outbound_proxy_with_a_loose_route_to_the_parker_aor() {
    // Issue 7 §2: Request-URI = the parker's AOR from Referred-By (a hostname parkd cannot resolve), sent to
    // the outbound proxy with Route: <proxy;lr>. The answered dialog then follows the proxy's Record-Route.
    let mut s = server();
    s.outbound_proxy = Some("sip:127.0.0.2:5080".into());
    let mut w = World::with_server(s, vec![lot()]);
    let bob = Phone::new("bob", 5070);
    park_via_proxy(&mut w, &bob, "700", "Referred-By: <sip:alice@pbx.example>\n");
    let since = w.sent.len();
    w.advance(Duration::from_secs(46));
    let invites = requests(&w, proxy(), since, "INVITE");
    assert_eq!(invites.len(), 1, "the recall INVITE goes to the outbound proxy");
    let recall = &invites[0];
    assert_eq!(recall.uri.to_string(), "sip:alice@pbx.example");
    assert_eq!(recall.common.route.len(), 1);
    assert_eq!(recall.common.route[0].uri.host, "127.0.0.2");
    assert_eq!(recall.common.route[0].uri.port, Some(5080));
    assert!(recall.common.route[0].uri.params.has("lr"), "a loose route (RFC 3261 §16.12)");
    let since = w.sent.len();
    w.deliver(proxy(), &answer_recall(recall));
    let acks = requests(&w, proxy(), since, "ACK");
    assert_eq!(acks.len(), 1, "the ACK goes through the proxy too");
    assert_eq!(acks[0].uri.to_string(), "sip:alice@127.0.0.1:5999", "ACK Request-URI = the 2xx Contact");
    assert_eq!(acks[0].common.route.len(), 1, "route set = the 2xx's Record-Route (RFC 3261 §12.1.2)");
}

#[test]
fn looped_request_is_refused_482_rfc3261_16_3() {
    // The proxy routes parkd's own recall back to parkd (misconfigured location): parkd sees its own Via.
    let mut s = server();
    s.outbound_proxy = Some("sip:127.0.0.2:5080".into());
    let mut w = World::with_server(s, vec![lot()]);
    let bob = Phone::new("bob", 5070);
    park_via_proxy(&mut w, &bob, "700", "Referred-By: <sip:alice@pbx.example>\n");
    let since = w.sent.len();
    w.advance(Duration::from_secs(46));
    let recall = requests(&w, proxy(), since, "INVITE").remove(0);
    assert!(recall.common.via[0].branch().unwrap_or("").starts_with(super::BRANCH_MARK));
    let mut looped = recall.clone();
    looped.common.via.insert(0, crate::sip::Via::new(Transport::Udp, "127.0.0.2:5080".parse().unwrap(), "z9hG4bK-proxy-loop"));
    looped.common.route.clear();
    let since = w.sent.len();
    w.deliver_raw(proxy(), &looped.encode());
    assert_eq!(w.last_response_to(proxy(), since).status, 482);
    // Same sent-by with a branch parkd did not make (another UA on parkd's host and port cannot exist, but a
    // foreign branch must not be taken for a loop).
    let carol = Phone::new("carol", 5071);
    let text = carol.invite("799", "", None).replacen("Max-Forwards: ", "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKother\nMax-Forwards: ", 1);
    w.deliver(carol.peer, &text);
    assert_eq!(w.last_response_to(carol.peer, 0).status, 404, "not a loop: the number is just unknown");
}

#[test]
fn advertise_is_used_in_contact_via_and_sdp() {
    let mut s = server();
    s.listen = "0.0.0.0:5060".parse().unwrap();
    s.advertise = Some("192.0.2.10".parse().unwrap());
    let mut w = World::with_server(s, vec![lot()]);
    let bob = Phone::new("bob", 5070);
    w.deliver(bob.peer, &bob.invite("700", "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&bob.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(bob.peer, 0);
    assert_eq!(ok.common.contact[0].uri.host, "192.0.2.10");
    assert!(String::from_utf8_lossy(&ok.common.body).contains("c=IN IP4 192.0.2.10"), "SDP c= uses advertise");
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(bob.peer, &bob.ack("700", &tag, 1, None));
    let since = w.sent.len();
    w.advance(Duration::from_secs(46));
    let recall = requests(&w, udp(5999), since, "INVITE").remove(0);
    assert_eq!(recall.common.via[0].host, "192.0.2.10", "Via sent-by uses advertise");
    assert_eq!(recall.common.contact[0].uri.host, "192.0.2.10");
    assert!(String::from_utf8_lossy(&recall.common.body).contains("c=IN IP4 192.0.2.10"));
}

#[test]
fn asserted_identity_from_a_trusted_proxy_is_used_rfc3325() {
    let mut s = server();
    s.trusted_proxies = vec!["127.0.0.2/32".parse().unwrap()];
    let mut w = World::with_server(s, vec![lot()]);
    let bob = Phone::new("bob", 5070);
    park_via_proxy(&mut w, &bob, "700", "P-Asserted-Identity: \"Bob Smith\" <sip:+15551234@pbx.example>\n");
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    let ok = retrieve(&mut w, &carol, "701");
    assert_eq!(ok.status, 200);
    let pai = ok.common.header("P-Asserted-Identity").unwrap_or("");
    assert!(pai.contains("sip:+15551234@pbx.example"), "retrieve PAI = the trusted asserted identity: {pai}");
}

#[test]
fn asserted_identity_from_an_untrusted_source_is_ignored_rfc3325_5() {
    let mut s = server();
    s.trusted_proxies = vec!["127.0.0.2/32".parse().unwrap()];
    let mut w = World::with_server(s, vec![lot()]);
    let bob = Phone::new("bob", 5070);
    let since = w.sent.len();
    let pai = "P-Asserted-Identity: <sip:ceo@pbx.example>\nReferred-By: <sip:alice@127.0.0.1:5999>\n";
    w.deliver(bob.peer, &bob.invite("700", pai, Some(&bob.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(bob.peer, since);
    w.deliver(bob.peer, &bob.ack("700", ok.common.to.tag().unwrap(), 1, None));
    // The recall (after 45 s) names the parked party: its From, not the forged PAI.
    let since = w.sent.len();
    w.advance(Duration::from_secs(46));
    let recall = requests(&w, udp(5999), since, "INVITE").remove(0);
    let recall_pai = recall.common.header("P-Asserted-Identity").unwrap_or("");
    assert!(recall_pai.contains("sip:bob@") && !recall_pai.contains("ceo"), "{recall_pai}");
    assert!(!recall.common.from.display.clone().unwrap_or_default().contains("ceo"));
}

#[test]
fn trusted_only_lot_refuses_other_sources_403() {
    let mut s = server();
    s.trusted_proxies = vec!["127.0.0.2/32".parse().unwrap()];
    let mut l = lot();
    l.trusted_only = true;
    let mut w = World::with_server(s, vec![l]);
    let bob = Phone::new("bob", 5070);
    w.deliver(bob.peer, &bob.invite("700", "", Some(&bob.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(bob.peer, 0).status, 403, "straight from a phone: refused");
    let dave = Phone { call_id: "dave-call".into(), ..Phone::new("dave", 5072) };
    park_via_proxy(&mut w, &dave, "700", "");
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    assert_eq!(retrieve(&mut w, &carol, "701").status, 403, "retrieves too");
}

#[test]
fn draining_refuses_new_parks_503_but_retrieves_and_options_go_on() {
    let mut w = World::with_server(server(), vec![lot()]);
    let bob = Phone::new("bob", 5070);
    park_via_proxy(&mut w, &bob, "700", "");
    w.core.set_draining(true);
    assert!(w.core.is_draining());
    let dave = Phone { call_id: "dave-call".into(), ..Phone::new("dave", 5072) };
    w.deliver(dave.peer, &dave.invite("700", "", Some(&dave.sdp("0", "sendrecv"))));
    let r = w.last_response_to(dave.peer, 0);
    assert_eq!(r.status, 503);
    assert_eq!(r.common.header("Retry-After"), Some("60"), "RFC 3261 §21.5.4: 503 may say when to retry");
    let erin = Phone { call_id: "erin-call".into(), ..Phone::new("erin", 5073) };
    w.deliver(erin.peer, &erin.invite("702", "Referred-By: <sip:alice@h>\n", Some(&erin.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(erin.peer, 0).status, 503, "directed parks too");
    w.deliver(erin.peer, "OPTIONS sip:parkd@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5073;branch=z9hG4bKo9\nFrom: <sip:x@h>;tag=1\nTo: <sip:parkd@h>\nCall-ID: o9\nCSeq: 1 OPTIONS\nMax-Forwards: 70\n");
    assert_eq!(w.last_response_to(erin.peer, 0).status, 200, "OPTIONS stays 200 while draining (see proxy.rs)");
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    assert_eq!(retrieve(&mut w, &carol, "701").status, 200, "the call parked before draining is retrieved");
    w.core.set_draining(false);
    let fred = Phone { call_id: "fred-call".into(), ..Phone::new("fred", 5074) };
    w.deliver(fred.peer, &fred.invite("700", "", Some(&fred.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(fred.peer, 0).status, 200, "parks accepted again");
}

#[test]
fn drain_in_config_starts_draining_and_recalls_still_run() {
    let mut s = server();
    s.drain = true;
    let mut w = World::with_server(s, vec![lot()]);
    assert!(w.core.is_draining());
    w.core.set_draining(false);
    let bob = Phone::new("bob", 5070);
    w.deliver(bob.peer, &bob.invite("700", "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&bob.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(bob.peer, 0);
    w.deliver(bob.peer, &bob.ack("700", ok.common.to.tag().unwrap(), 1, None));
    w.core.set_draining(true);
    let since = w.sent.len();
    w.advance(Duration::from_secs(46));
    assert_eq!(requests(&w, udp(5999), since, "INVITE").len(), 1, "the recall is sent while draining");
}
