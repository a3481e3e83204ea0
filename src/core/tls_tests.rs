//! SIP over TLS in the engine (issue 19): a TLS leg's answers and parkd's own requests go back to the
//! connection the phone opened, name parkd's TLS address in Via and Contact (`transport=tls`, or `sips:` for a
//! `sips:` request), and a recall to a `transport=tls` parker leaves on TLS.

use super::testkit::World;
use crate::config::{LotConfig, NumRange, ServerConfig};
use crate::sip::{Method, Peer, Request, Transport};
use std::time::Duration;

fn world() -> World {
    let server = ServerConfig {
        listen: "127.0.0.1:5060".parse().unwrap(),
        rtp_ports: NumRange::parse("20000-20099").unwrap(),
        tls_cert: Some("cert.pem".into()),
        tls_key: Some("key.pem".into()),
        ..ServerConfig::default()
    };
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    lot.parking_time = 30;
    World::with_server(server, vec![lot])
}

fn tls(port: u16) -> Peer {
    Peer { transport: Transport::Tls, addr: format!("127.0.0.1:{port}").parse().unwrap() }
}

/// An INVITE over TLS from `name` at `from` to `ruri`, offering RTP on `from`'s port + 10000.
fn invite(name: &str, from: Peer, ruri: &str, extra: &str) -> String {
    let a = from.addr;
    let rtp = a.port() + 10000;
    let sdp = format!("v=0\no={name} 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio {rtp} RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=sendrecv\n");
    format!(
        "INVITE {ruri} SIP/2.0\nVia: SIP/2.0/TLS {a};branch=z9hG4bK-{name}-1\nMax-Forwards: 70\nFrom: <sip:{name}@{a}>;tag={name}-tag\n\
         To: <{ruri}>\nCall-ID: {name}-call\nCSeq: 1 INVITE\nContact: <sip:{name}@{a};transport=tls>\n{extra}Content-Type: application/sdp\n\n{sdp}"
    )
}

fn ack(name: &str, from: Peer, ruri: &str, to_tag: &str) -> String {
    let a = from.addr;
    format!(
        "ACK sip:parkd@127.0.0.1:5061;transport=tls SIP/2.0\nVia: SIP/2.0/TLS {a};branch=z9hG4bK-{name}-ack\nMax-Forwards: 70\n\
         From: <sip:{name}@{a}>;tag={name}-tag\nTo: <{ruri}>;tag={to_tag}\nCall-ID: {name}-call\nCSeq: 1 ACK\n\n"
    )
}

/// `who` parks (or retrieves) with a request to `ruri`; returns parkd's 200 (ACKed).
fn call(w: &mut World, who: &str, from: Peer, ruri: &str, extra: &str) -> crate::sip::Response {
    let since = w.sent.len();
    w.deliver(from, &invite(who, from, ruri, extra));
    let ok = w.last_response_to(from, since);
    assert_eq!(ok.status, 200, "{who}: {ruri}");
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(from, &ack(who, from, ruri, &tag));
    ok
}

fn requests(w: &World, to: Peer, since: usize, method: Method) -> Vec<Request> {
    w.requests_to(to, since).into_iter().filter(|r| r.method == method).collect()
}

#[test]
fn a_tls_leg_is_answered_on_its_connection_and_parkd_names_its_tls_address() {
    let mut w = world();
    let bob = tls(40000);
    let ok = call(&mut w, "bob", bob, "sip:700@127.0.0.1:5061;transport=tls", "");
    assert_eq!(ok.common.contact[0].uri.to_string(), "sip:parkd@127.0.0.1:5061;transport=tls");
    assert!(ok.common.via[0].transport == "TLS", "the response echoes the TLS Via");

    let alice = tls(40001);
    let ok = call(&mut w, "alice", alice, "sips:701@127.0.0.1:5061", "");
    assert_eq!(ok.common.contact[0].uri.to_string(), "sips:parkd@127.0.0.1:5061", "a sips: dialog gets a sips: Contact");

    // Alice hangs up: parkd's BYE to Bob goes over Bob's connection, from parkd's TLS address.
    let since = w.sent.len();
    let tag = ok.common.to.tag().unwrap().to_string();
    let bye = format!(
        "BYE sips:parkd@127.0.0.1:5061 SIP/2.0\nVia: SIP/2.0/TLS 127.0.0.1:40001;branch=z9hG4bK-alice-bye\nMax-Forwards: 70\n\
         From: <sip:alice@127.0.0.1:40001>;tag=alice-tag\nTo: <sips:701@127.0.0.1:5061>;tag={tag}\nCall-ID: alice-call\nCSeq: 2 BYE\n\n"
    );
    w.deliver(alice, &bye);
    assert_eq!(w.last_response_to(alice, since).status, 200);
    let byes = requests(&w, bob, since, Method::Bye);
    assert_eq!(byes.len(), 1, "one BYE to Bob's TLS connection: {:?}", w.sent[since..].iter().map(|(p, _)| *p).collect::<Vec<_>>());
    let via = &byes[0].common.via[0];
    assert_eq!((via.transport.as_str(), via.sent_by()), ("TLS", "127.0.0.1:5061".into()));
    assert_eq!(byes[0].uri.to_string(), "sip:bob@127.0.0.1:40000;transport=tls");
}

#[test]
fn a_recall_to_a_tls_parker_leaves_on_tls_from_the_tls_address() {
    let mut w = world();
    let bob = tls(40000);
    call(&mut w, "bob", bob, "sip:700@127.0.0.1:5061;transport=tls", "Referred-By: <sip:alice@127.0.0.1:5999;transport=tls>\n");
    let since = w.sent.len();
    w.advance(Duration::from_secs(31));
    let alice = tls(5999);
    let invites = requests(&w, alice, since, Method::Invite);
    assert_eq!(invites.len(), 1, "one recall INVITE on TLS (no retransmission on a reliable transport)");
    let inv = &invites[0];
    assert_eq!((inv.common.via[0].transport.as_str(), inv.common.via[0].sent_by()), ("TLS", "127.0.0.1:5061".into()));
    assert_eq!(inv.common.contact[0].uri.to_string(), "sip:parkd@127.0.0.1:5061;transport=tls");
}

#[test]
fn without_tls_configured_tls_legs_fall_back_to_the_sip_address() {
    let mut w = World::new();
    let bob = tls(40000);
    let ok = call(&mut w, "bob", bob, "sip:700@127.0.0.1:5060;transport=tls", "");
    assert_eq!(ok.common.contact[0].uri.to_string(), "sip:parkd@127.0.0.1:5060;transport=tls");
}
