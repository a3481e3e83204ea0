//! IPv6 and dual-stack parkd on `::1` (issue 19): park, retrieve and recall between IPv6 phones with their RTP
//! checked both ways; an IPv6 parked party retrieved by an IPv4 phone on a dual-stack parkd (`listen = [::]`),
//! relayed with audio both ways; the RFC 5118 IPv6 torture messages sent to a running parkd. The phones are the
//! project's own UA and RTP endpoints bound on `::1`. Every test is skipped, with the reason printed, on a
//! machine without `::1`.

use sip_tests::checks::{expect_hold_music, expect_peer_audio};
use sip_tests::paths::workspace_dir;
use sip_tests::sip::phones::Phones;
use sip_tests::sip::tcp::{self as sip_tcp, SipTcp};
use sip_tests::{Parkd, ParkdOptions, RtpEndpoint};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

const BOB: u8 = 0xB0;
const CAROL: u8 = 0xC0;
const ALICE: u8 = 0xA0;
const WAIT: Duration = Duration::from_secs(10);

const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// False (and says why) on a machine without an IPv6 loopback.
fn have_ipv6(test: &str) -> bool {
    match std::net::UdpSocket::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED {test}: this machine has no ::1 ({e})");
            false
        }
    }
}

fn parkd_on(test: &str, ip: IpAddr, parking_time: u32) -> Parkd {
    Parkd::start_with(test, ParkdOptions { listen_ip: Some(ip), parking_time, ..Default::default() })
}

/// parkd's SIP address in `family` (its port, that family's loopback).
fn sip_at(parkd: &Parkd, family: IpAddr) -> SocketAddr {
    SocketAddr::new(family, parkd.sip_addr().port())
}

/// Every RTP packet `ep` got came from parkd's `family` loopback (the leg's family).
fn all_from(ep: &RtpEndpoint, family: IpAddr) {
    let packets = ep.packets();
    assert!(!packets.is_empty(), "{}: no RTP at all", ep.name());
    let other: Vec<SocketAddr> = packets.iter().map(|p| p.from).filter(|a| a.ip() != family).collect();
    assert!(other.is_empty(), "{}: RTP from outside {family}: {:?}", ep.name(), &other[..other.len().min(3)]);
}

/// IPv6 only (`listen = "[::1]:port"`): Bob parks (a blind transfer from Alice), hears hold music over IPv6,
/// Carol retrieves the orbit and the two hear each other; Carol hangs up and parkd BYEs Bob.
#[test]
fn park_and_retrieve_between_ipv6_phones() {
    if !have_ipv6("park_and_retrieve_between_ipv6_phones") {
        return;
    }
    let parkd = parkd_on("ipv6_park_retrieve", V6, 600);
    let server = parkd.sip_addr();
    assert_eq!(server.ip(), V6);
    let mut bobs = Phones::new_at(V6, server, "bob");
    let b = bobs.park_with("700", BOB, "Referred-By: <sip:alice@[::1]:9>\r\n");
    bobs.wait_answered(WAIT);
    let log = bobs.log(&bobs.phones[b]);
    assert_eq!(log.status, Some(200), "{}", parkd.stderr_tail(30));
    let sdp = log.answer_sdp.clone().unwrap_or_default();
    assert!(sdp.contains("c=IN IP6 ::1\r\n"), "parkd's answer names its IPv6 address:\n{sdp}");
    let orbit = log.orbit.clone().expect("Park-Orbit");
    let hold = expect_hold_music(&bobs.phones[b].rtp, 50);
    all_from(&bobs.phones[b].rtp, V6);

    let mut carols = Phones::new_at(V6, server, "carol");
    let c = carols.park(&orbit, CAROL);
    carols.wait_answered(WAIT);
    assert_eq!(carols.log(&carols.phones[c]).status, Some(200), "retrieve of {orbit}");
    let at_carol = expect_peer_audio(&carols.phones[c].rtp, BOB, 50);
    let at_bob = expect_peer_audio(&bobs.phones[b].rtp, CAROL, 50);
    all_from(&carols.phones[c].rtp, V6);
    all_from(&bobs.phones[b].rtp, V6);
    eprintln!("ipv6 park/retrieve: hold {hold:?}\n  bob -> carol {at_carol:?}\n  carol -> bob {at_bob:?}");

    assert_eq!(carols.bye(c, WAIT), Some(200), "Carol hangs up");
    let bob_call = bobs.phones[b].ids.call_id.clone();
    assert!(bobs.wait_log(&bob_call, WAIT, |l| l.requests.iter().any(|r| r.method == "BYE")), "parkd BYEs Bob over IPv6");
}

/// Dual-stack (`listen = "[::]:port"`): Bob parks over IPv6, Carol retrieves over IPv4; each gets parkd's
/// address in its own family and the call is relayed between the families with audio both ways.
#[test]
fn an_ipv6_parked_party_retrieved_by_an_ipv4_phone() {
    if !have_ipv6("an_ipv6_parked_party_retrieved_by_an_ipv4_phone") {
        return;
    }
    let parkd = parkd_on("ipv6_mixed_retrieve", IpAddr::V6(Ipv6Addr::UNSPECIFIED), 600);
    let mut bobs = Phones::new_at(V6, sip_at(&parkd, V6), "bob");
    let b = bobs.park_with("700", BOB, "Referred-By: <sip:alice@[::1]:9>\r\n");
    bobs.wait_answered(WAIT);
    let log = bobs.log(&bobs.phones[b]);
    assert_eq!(log.status, Some(200), "{}", parkd.stderr_tail(30));
    assert!(log.answer_sdp.clone().unwrap_or_default().contains("c=IN IP6 ::1\r\n"), "IPv6 caller, IPv6 media address");
    let orbit = log.orbit.clone().expect("Park-Orbit");
    expect_hold_music(&bobs.phones[b].rtp, 50);

    let mut carols = Phones::new_at(V4, sip_at(&parkd, V4), "carol");
    let c = carols.park(&orbit, CAROL);
    carols.wait_answered(WAIT);
    let log = carols.log(&carols.phones[c]);
    assert_eq!(log.status, Some(200), "IPv4 retrieve of {orbit}");
    assert!(log.answer_sdp.clone().unwrap_or_default().contains("c=IN IP4 127.0.0.1\r\n"), "IPv4 retriever, IPv4 media address");
    let at_carol = expect_peer_audio(&carols.phones[c].rtp, BOB, 50);
    let at_bob = expect_peer_audio(&bobs.phones[b].rtp, CAROL, 50);
    all_from(&carols.phones[c].rtp, V4);
    all_from(&bobs.phones[b].rtp, V6);
    eprintln!("mixed retrieve: bob (v6) -> carol (v4) {at_carol:?}\n  carol (v4) -> bob (v6) {at_bob:?}");
    let log = parkd.stderr_all();
    assert!(log.contains("hold music sender"), "the startup log names the hold sender");
}

/// IPv6 recall: nobody retrieves Bob, parkd calls the parker back at her IPv6 address (Via, Contact and SDP in
/// IPv6), she answers and the two hear each other.
#[test]
fn recall_of_an_ipv6_parker() {
    if !have_ipv6("recall_of_an_ipv6_parker") {
        return;
    }
    let parkd = parkd_on("ipv6_recall", V6, 2);
    let server = parkd.sip_addr();
    let alice = Phones::new_at(V6, server, "alice");
    let alice_rtp = RtpEndpoint::bind_on(V6, "alice (parker)");
    alice_rtp.start_talking(ALICE);
    alice.answer_invites(alice_rtp.port());
    let mut bobs = Phones::new_at(V6, server, "bob");
    let b = bobs.park_with("700", BOB, &format!("Referred-By: <sip:alice@{}>\r\n", alice.local));
    bobs.wait_answered(WAIT);
    assert_eq!(bobs.log(&bobs.phones[b]).status, Some(200));
    expect_hold_music(&bobs.phones[b].rtp, 25);

    let at_alice = expect_peer_audio(&alice_rtp, BOB, 50);
    let at_bob = expect_peer_audio(&bobs.phones[b].rtp, ALICE, 50);
    all_from(&alice_rtp, V6);
    eprintln!("ipv6 recall: bob -> alice {at_alice:?}\n  alice -> bob {at_bob:?}");
    let recall = bobs_recall(&alice);
    let first = recall.lines().next().unwrap_or_default();
    assert_eq!(first, format!("INVITE sip:alice@{} SIP/2.0", alice.local), "{recall}");
    assert!(recall.contains(&format!("Via: SIP/2.0/UDP {server};branch=")), "parkd's IPv6 sent-by:\n{recall}");
    assert!(recall.contains(&format!("<sip:parkd@{server}>")), "parkd's IPv6 Contact:\n{recall}");
    assert!(recall.contains("c=IN IP6 ::1\r\n"), "{recall}");
}

/// The recall INVITE the parker's UA received (the one request of its dialog that is an INVITE).
fn bobs_recall(alice: &Phones) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        // The recall's Call-ID is parkd's: look through every dialog the UA logged.
        if let Some(text) = alice.any_request("INVITE") {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "no recall INVITE reached the parker");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// RFC 5118's messages (src/sip/testdata/rfc5118, byte-exact from the RFC text) sent to a running IPv6 parkd
/// over TCP on `::1`, one connection each: the two the RFC calls invalid are answered 400, the others get
/// whatever their method deserves but never a 400, and parkd keeps serving. (Over TCP the answers come back on
/// the connection; over UDP most of them would go to port 5060 of the sender, their Vias having no rport.)
#[test]
fn rfc5118_messages_sent_to_an_ipv6_parkd() {
    if !have_ipv6("rfc5118_messages_sent_to_an_ipv6_parkd") {
        return;
    }
    let parkd = parkd_on("ipv6_rfc5118", V6, 600);
    let dir = workspace_dir().join("src/sip/testdata/rfc5118");
    // `ipv6-in-sdp` is left out: it declares 17 more body bytes than it has, so over a stream parkd rightly waits
    // for them (the codec test pins its UDP verdict, a 400).
    let cases = [
        ("ipv6-good", false),
        ("ipv6-bad", true),
        ("port-ambiguous", false),
        ("port-unambiguous", false),
        ("via-received-param-with-delim", false),
        ("via-received-param-no-delim", false),
        ("mult-ip-in-header", false),
        ("mult-ip-in-sdp", false),
        ("ipv4-mapped-ipv6", false),
        ("ipv6-bug-abnf-3-colons", true),
        ("ipv6-correct-abnf-2-colons", false),
    ];
    for (name, invalid) in cases {
        let bytes = std::fs::read(dir.join(format!("{name}.dat"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut c = SipTcp::connect(parkd.sip_addr()).unwrap_or_else(|e| panic!("TCP connect to {}: {e}", parkd.sip_addr()));
        c.send(&bytes).unwrap_or_else(|e| panic!("{name}: send: {e}"));
        let answer = c.read_message(WAIT).unwrap_or_else(|| panic!("{name}: no answer; stderr:\n{}", parkd.stderr_tail(30)));
        let status = answer.lines().next().unwrap_or_default().to_string();
        eprintln!("{name}: {status}");
        assert_eq!(status.starts_with("SIP/2.0 400 "), invalid, "{name}: {status}");
    }
    // Still serving, over TCP and UDP.
    let mut c = SipTcp::connect(parkd.sip_addr()).unwrap_or_else(|e| panic!("connect: {e}"));
    let local = c.local_addr();
    c.send(sip_tcp::options(parkd.sip_addr(), local, 1, true).as_bytes()).unwrap_or_else(|e| panic!("send: {e}"));
    let m = c.read_message(WAIT).unwrap_or_default();
    assert!(m.starts_with("SIP/2.0 200 OK"), "OPTIONS over TCP on ::1: {m}");
    assert!(parkd.answers_options(WAIT), "OPTIONS over UDP on ::1");
}

/// A dual-stack parkd answers OPTIONS over UDP and TCP from both families (one socket each).
#[test]
fn dual_stack_listen_serves_both_families_over_udp_and_tcp() {
    if !have_ipv6("dual_stack_listen_serves_both_families_over_udp_and_tcp") {
        return;
    }
    let parkd = parkd_on("ipv6_dual_stack_listen", IpAddr::V6(Ipv6Addr::UNSPECIFIED), 600);
    for family in [V4, V6] {
        let target = sip_at(&parkd, family);
        assert!(sip_tests::sip::probe::options_ping(target, 7, WAIT), "UDP OPTIONS to {target}");
        let mut c = SipTcp::connect(target).unwrap_or_else(|e| panic!("TCP connect to {target}: {e}"));
        let local = c.local_addr();
        assert_eq!(local.ip(), family);
        c.send(sip_tcp::options(target, local, 1, true).as_bytes()).unwrap_or_else(|e| panic!("send: {e}"));
        let m = c.read_message(WAIT).unwrap_or_default();
        assert!(m.starts_with("SIP/2.0 200 OK"), "TCP OPTIONS to {target}: {m}");
    }
}
