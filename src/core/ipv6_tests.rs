//! Engine tests for IPv6 and dual-stack parkd (issue 19), in virtual time: parkd listens on `[::]:5060`
//! (127.0.0.1 for IPv4 peers, ::1 for IPv6 peers), phones on both families.

use super::testkit::{udp, Phone, World};
use crate::config::{LotConfig, NumRange, ServerConfig};
use crate::media::MediaCommand;
use crate::sip::{Peer, Request, Response, Transport};
use std::net::SocketAddr;
use std::time::Duration;

fn lot() -> LotConfig {
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    lot
}

fn dual_stack(advertise: Option<&str>) -> World {
    let server = ServerConfig {
        listen: "[::]:5060".parse().unwrap(),
        advertise: advertise.map(|a| a.parse().unwrap()),
        rtp_ports: NumRange::parse("20000-20099").unwrap(),
        ..ServerConfig::default()
    };
    World::with_server(server, vec![lot()])
}

fn udp6(port: u16) -> Peer {
    Peer { transport: Transport::Udp, addr: SocketAddr::new("::1".parse().unwrap(), port) }
}

/// A phone on [::1]: its SIP address and an SDP offer `c=IN IP6 ::1`.
fn phone6(name: &'static str, port: u16) -> Phone {
    Phone { peer: udp6(port), ..Phone::new(name, port) }
}

fn sdp6(p: &Phone) -> String {
    p.sdp("0", "sendrecv").replace("IN IP4 127.0.0.1", "IN IP6 ::1")
}

fn body(r: &Response) -> String {
    String::from_utf8_lossy(&r.common.body).into_owned()
}

fn requests(w: &World, to: Peer, since: usize, method: &str) -> Vec<Request> {
    w.requests_to(to, since).into_iter().filter(|r| r.method.as_str() == method).collect()
}

fn hold_remote(w: &World) -> Option<SocketAddr> {
    w.media.iter().rev().find_map(|m| match m {
        MediaCommand::Hold { remote, .. } => Some(*remote),
        _ => None,
    })
}

#[test]
fn an_ipv6_phone_parks_and_gets_ipv6_contact_and_sdp() {
    let mut w = dual_stack(None);
    let bob = phone6("bob", 5070);
    w.deliver(bob.peer, &bob.invite("700", "Referred-By: <sip:alice@[::1]:5999>\n", Some(&sdp6(&bob))));
    let ok = w.last_response_to(bob.peer, 0);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.common.via[0].host, "[::1]", "the response goes back on the phone's Via");
    assert_eq!(ok.common.via[0].params.value("rport"), Some("5070"), "rport filled from the IPv6 source");
    assert_eq!((ok.common.contact[0].uri.host.as_str(), ok.common.contact[0].uri.port), ("[::1]", Some(5060)));
    assert!(body(&ok).contains("c=IN IP6 ::1\r\n"), "{}", body(&ok));
    assert!(body(&ok).contains("o=parkd ") && body(&ok).contains(" IN IP6 ::1\r\n"));
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(bob.peer, &bob.ack("700", &tag, 1, None));
    assert_eq!(hold_remote(&w), Some(SocketAddr::new("::1".parse().unwrap(), bob.rtp_port)), "hold music to the IPv6 RTP address");
    assert!(w.sent.iter().all(|(to, _)| to.addr.is_ipv6()), "everything went to the IPv6 phone");
}

#[test]
fn an_ipv4_phone_on_the_same_dual_stack_parkd_gets_ipv4() {
    let mut w = dual_stack(None);
    let bob = Phone::new("bob", 5070);
    w.deliver(bob.peer, &bob.invite("700", "", Some(&bob.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(bob.peer, 0);
    assert_eq!((ok.status, ok.common.contact[0].uri.host.as_str()), (200, "127.0.0.1"));
    assert!(body(&ok).contains("c=IN IP4 127.0.0.1\r\n"));
}

#[test]
fn an_ipv6_parked_party_is_retrieved_by_an_ipv4_phone_each_leg_in_its_family() {
    let mut w = dual_stack(Some("192.0.2.10, 2001:db8::10"));
    let bob = phone6("bob", 5070);
    w.deliver(bob.peer, &bob.invite("701", "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&sdp6(&bob))));
    let ok = w.last_response_to(bob.peer, 0);
    assert!(body(&ok).contains("c=IN IP6 2001:db8::10\r\n"), "advertise names the IPv6 address for IPv6 peers");
    assert_eq!(ok.common.contact[0].uri.host, "[2001:db8::10]");
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(bob.peer, &bob.ack("701", &tag, 1, None));
    let carol = Phone::new("carol", 5080);
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(carol.peer, since);
    assert_eq!(ok.status, 200, "retrieved");
    assert!(body(&ok).contains("c=IN IP4 192.0.2.10\r\n"), "the IPv4 retriever gets the IPv4 address");
    assert_eq!(ok.common.contact[0].uri.host, "192.0.2.10");
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(carol.peer, &carol.ack("701", &tag, 1, None));
    let bridged = w.media.iter().any(|m| matches!(m, MediaCommand::Bridge { .. }));
    assert!(bridged, "the two legs are relayed: {:?}", w.media);
    let remotes: Vec<SocketAddr> = w
        .media
        .iter()
        .filter_map(|m| match m {
            MediaCommand::Hold { remote, .. } | MediaCommand::Update { remote, .. } => Some(*remote),
            _ => None,
        })
        .collect();
    assert!(remotes.iter().any(|r| r.is_ipv6()) && remotes.iter().any(|r| r.is_ipv4()), "{remotes:?}");
}

#[test]
fn the_recall_of_an_ipv6_parker_speaks_ipv6_in_via_contact_and_sdp() {
    let mut w = dual_stack(None);
    let bob = Phone::new("bob", 5070);
    let parked = w.park(&bob, "700", super::testkit::ParkAs { referred_by: Some("<sip:alice@[::1]:5999>"), ..super::testkit::ParkAs::ALICE });
    assert!(!parked.orbit.is_empty());
    let since = w.sent.len();
    w.advance(Duration::from_secs(46));
    let recall = requests(&w, udp6(5999), since, "INVITE").remove(0);
    assert_eq!((recall.common.via[0].host.as_str(), recall.common.via[0].port), ("[::1]", Some(5060)));
    assert_eq!(recall.common.contact[0].uri.host, "[::1]");
    assert_eq!(recall.uri.host, "[::1]");
    assert!(String::from_utf8_lossy(&recall.common.body).contains("c=IN IP6 ::1\r\n"));
    assert!(requests(&w, udp(5999), since, "INVITE").is_empty(), "nothing to the IPv4 twin of the address");
}

#[test]
fn an_ipv6_proxy_record_routes_and_parkd_follows_the_route_set() {
    let mut w = dual_stack(None);
    let proxy = udp6(5080);
    let bob = phone6("bob", 5070);
    let text = bob
        .invite("700", "Record-Route: <sip:[2001:db8::5]:5080;lr>\n", Some(&sdp6(&bob)))
        .replacen("Max-Forwards: ", "Via: SIP/2.0/UDP [::1]:5080;branch=z9hG4bKproxy1\nMax-Forwards: ", 1);
    w.deliver(proxy, &text);
    let ok = w.last_response_to(proxy, 0);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.common.record_route[0].uri.host, "[2001:db8::5]", "the route set is echoed");
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(proxy, &bob.ack("700", &tag, 1, None).replacen("Max-Forwards: ", "Via: SIP/2.0/UDP [::1]:5080;branch=z9hG4bKproxy2\nMax-Forwards: ", 1));
    // parkd ends the call (its maximum park time): the BYE goes to the first route, an IPv6 reference.
    let since = w.sent.len();
    w.advance(Duration::from_secs(1801));
    let hop = Peer { transport: Transport::Udp, addr: "[2001:db8::5]:5080".parse().unwrap() };
    let byes = requests(&w, hop, since, "BYE");
    assert!(!byes.is_empty(), "BYE via the IPv6 Record-Route: {:?}", w.sent.iter().skip(since).map(|(to, _)| to.addr).collect::<Vec<_>>());
    assert_eq!(byes[0].common.route[0].uri.to_string(), "sip:[2001:db8::5]:5080;lr");
    assert_eq!(byes[0].common.via[0].host, "[::1]", "sent-by in the hop's family");
}
