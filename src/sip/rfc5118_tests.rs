//! The 12 RFC 5118 IPv6 torture messages (`testdata/rfc5118`, taken from the RFC text; see its README), each
//! with the RFC's verdict and, for the valid ones, the IPv6 references read back as addresses.

use super::*;
use crate::sdp::parse_sdp;
use std::net::{IpAddr, Ipv6Addr};

macro_rules! dat {
    ($name:literal) => {
        ($name, include_bytes!(concat!("testdata/rfc5118/", $name, ".dat")).as_slice())
    };
}

fn request(bytes: &[u8]) -> Request {
    match parse_message(bytes) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

/// The address inside a bracketed IPv6 reference (`[2001:db8::1]`).
fn v6(host: &str) -> Ipv6Addr {
    let inner = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or_else(|| panic!("not a reference: {host}"));
    inner.parse().unwrap_or_else(|e| panic!("{host}: {e}"))
}

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// The RFC text declares a Content-Length that does not match its SDP body (see testdata/rfc5118/README.md):
/// the same message with the length its body really has.
fn with_true_length(bytes: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let head: Vec<String> = head
        .split("\r\n")
        .map(|l| if l.starts_with("Content-Length:") { format!("Content-Length: {}", body.len()) } else { l.to_string() })
        .collect();
    format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes()
}

#[test]
fn valid_ipv6_reference_rfc5118_4_1() {
    let r = request(dat!("ipv6-good").1);
    assert_eq!(r.method, Method::Register);
    assert_eq!((v6(&r.uri.host), r.uri.port), (ip6("2001:db8::10"), None));
    assert_eq!(v6(&r.via[0].host), ip6("2001:db8::9:1"));
    assert_eq!(v6(&r.contact[0].uri.host), ip6("2001:db8::1"));
}

#[test]
fn unbracketed_ipv6_request_uri_is_refused_with_400_rfc5118_4_2() {
    let e = parse_message(dat!("ipv6-bad").1).unwrap_err();
    assert_eq!(e.cause(), &DecodeError::BadRequestUri);
    assert!(e.reply().is_some(), "a request with readable essentials is answered");
    assert!(e.response_bytes().unwrap().starts_with(b"SIP/2.0 400 "));
}

#[test]
fn port_ambiguous_and_unambiguous_rfc5118_4_3_and_4_4() {
    // §4.3: well-formed; `5070` is the last group of the address, not a port.
    let r = request(dat!("port-ambiguous").1);
    assert_eq!((v6(&r.uri.host), r.uri.port), (ip6("2001:db8::10:5070"), None));
    let r = request(dat!("port-unambiguous").1);
    assert_eq!((v6(&r.uri.host), r.uri.port), (ip6("2001:db8::10"), Some(5070)));
}

#[test]
fn via_received_with_and_without_brackets_rfc5118_4_5() {
    for (name, bytes) in [dat!("via-received-param-with-delim"), dat!("via-received-param-no-delim")] {
        let r = request(bytes);
        let via = &r.via[0];
        assert_eq!((v6(&via.host), via.port), (ip6("2001:db8::9:1"), None), "{name}");
        assert_eq!(via.received(), Some(IpAddr::V6(ip6("2001:db8::9:255"))), "{name}");
        assert_eq!(v6(&r.uri.host), ip6("2001:db8::10"), "{name}");
    }
}

#[test]
fn ipv6_in_sdp_rfc5118_4_6() {
    let bytes = dat!("ipv6-in-sdp").1;
    // The RFC text declares 268 bytes for a 251-byte body: over UDP that is a 400 (RFC 3261 §18.3).
    let e = parse_message(bytes).unwrap_err();
    assert_eq!(e.cause(), &DecodeError::ContentLengthMismatch { declared: 268, available: 251 });
    let r = request(&with_true_length(bytes));
    assert_eq!(v6(&r.uri.host), ip6("2001:db8::10"));
    assert_eq!(v6(&r.via[0].host), ip6("2001:db8::20"));
    assert_eq!(v6(&r.contact[0].uri.host), ip6("2001:db8::20"));
    // Valid SDP with IPv6; its only audio is G.726, which parkd does not speak.
    assert_eq!(parse_sdp(&r.body), Err(crate::sdp::SdpError::NoCommonCodec));
}

#[test]
fn ipv4_and_ipv6_in_one_via_list_rfc5118_4_7() {
    let r = request(dat!("mult-ip-in-header").1);
    let hosts: Vec<(&str, Option<u16>)> = r.via.iter().map(|v| (v.host.as_str(), v.port)).collect();
    assert_eq!(hosts, [("[2001:db8::9:1]", Some(6050)), ("192.0.2.1", None), ("[2001:db8::9:255]", None)]);
    assert_eq!(v6(&r.via[0].host), ip6("2001:db8::9:1"));
    assert_eq!(r.via[2].received(), Some("192.0.2.200".parse().unwrap()));
}

#[test]
fn ipv4_and_ipv6_streams_in_one_sdp_rfc5118_4_8() {
    // Declared 181 bytes for a 189-byte body: over UDP the rest is discarded (RFC 3261 §18.3), which cuts
    // the last attribute; with the true length the whole body is there.
    let r = request(dat!("mult-ip-in-sdp").1);
    assert_eq!(r.body.len(), 181);
    let r = request(&with_true_length(dat!("mult-ip-in-sdp").1));
    assert_eq!(v6(&r.uri.host), ip6("2001:db8::10"));
    let sdp = parse_sdp(&r.body).unwrap();
    assert_eq!(sdp.addr, "192.0.2.1:22334".parse().unwrap(), "the audio stream is the IPv4 one");
    let text = std::str::from_utf8(&r.body).unwrap();
    assert!(text.contains("c=IN IP6 2001:db8::1\r\n"));
}

#[test]
fn ipv4_mapped_ipv6_addresses_rfc5118_4_9() {
    let mapped = ip6("::ffff:192.0.2.2");
    for bytes in [dat!("ipv4-mapped-ipv6").1.to_vec(), with_true_length(dat!("ipv4-mapped-ipv6").1)] {
        let r = request(&bytes);
        assert_eq!((v6(&r.via[0].host), r.via[0].port), (ip6("::ffff:192.0.2.10"), Some(19823)));
        assert_eq!(v6(&r.via[1].host), mapped);
        assert_eq!(v6(&r.contact[0].uri.host), mapped);
    }
    let r = request(&with_true_length(dat!("ipv4-mapped-ipv6").1));
    assert_eq!(parse_sdp(&r.body), Err(crate::sdp::SdpError::NoCommonCodec), "G.726 only");
    assert!(std::str::from_utf8(&r.body).unwrap().contains("c=IN IP6 ::ffff:192.0.2.2\r\n"));
}

#[test]
fn three_colons_is_not_an_ipv6_address_rfc5118_4_10() {
    let e = parse_message(dat!("ipv6-bug-abnf-3-colons").1).unwrap_err();
    assert_eq!(e.cause(), &DecodeError::BadRequestUri);
    assert!(e.reply().is_some());
    let r = request(dat!("ipv6-correct-abnf-2-colons").1);
    assert_eq!(v6(&r.uri.host), ip6("2001:db8::192.0.2.1"));
    assert_eq!(v6(&r.to.uri.host), ip6("2001:db8::c000:201"));
}

#[test]
fn valid_messages_round_trip_through_the_writer() {
    let all = [
        dat!("ipv6-good"),
        dat!("port-ambiguous"),
        dat!("port-unambiguous"),
        dat!("via-received-param-with-delim"),
        dat!("via-received-param-no-delim"),
        dat!("mult-ip-in-header"),
        dat!("mult-ip-in-sdp"),
        dat!("ipv4-mapped-ipv6"),
        dat!("ipv6-correct-abnf-2-colons"),
    ];
    for (name, bytes) in all {
        let m = parse_message(bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let encoded = match &m {
            Message::Request(r) => r.encode(),
            Message::Response(r) => r.encode(),
        };
        assert_eq!(parse_message(&encoded).as_ref(), Ok(&m), "{name}");
    }
}

#[test]
fn every_message_survives_truncation_at_every_byte() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sip/testdata/rfc5118");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "dat") {
            let bytes = std::fs::read(&path).unwrap();
            for k in 0..bytes.len() {
                let _ = parse_message(bytes.get(..k).unwrap_or_default());
            }
            n += 1;
        }
    }
    assert_eq!(n, 12);
}
