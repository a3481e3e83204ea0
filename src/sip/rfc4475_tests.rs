//! The 49 RFC 4475 torture messages, byte-exact (copied from the RFC's archive into `testdata/rfc4475`).
//!
//! §3.1.1 messages must parse; §3.1.2 messages must be refused, with a reply context when the RFC expects a
//! 400/505 for a request; §3.2–3.4 messages are well-formed at the codec level (their problems are for the
//! transaction and application layers) except the ones noted.

use super::*;

macro_rules! dat {
    ($name:literal) => {
        ($name, include_bytes!(concat!("testdata/rfc4475/", $name, ".dat")).as_slice())
    };
}

/// What the codec must do with a torture message.
#[derive(Debug)]
enum Expect {
    /// Parses.
    Ok,
    /// A request refused with this cause and a reply context (answered 400, or 505 for a bad version).
    Answer(DecodeError),
    /// Refused with this cause and nothing to answer (a response, or a request missing its essentials).
    Drop(DecodeError),
}
use Expect::*;

/// Every torture message, by name (for other codec tests).
pub(super) fn all_messages() -> Vec<(&'static str, &'static [u8])> {
    cases().into_iter().map(|(m, _)| m).collect()
}

fn cases() -> Vec<((&'static str, &'static [u8]), Expect)> {
    let bad = |name| DecodeError::BadHeader { name };
    vec![
        // §3.1.1 valid messages
        (dat!("wsinv"), Ok),
        (dat!("intmeth"), Ok),
        (dat!("esc01"), Ok),
        (dat!("escnull"), Ok),
        (dat!("esc02"), Ok),
        (dat!("lwsdisp"), Ok),
        (dat!("longreq"), Ok),
        (dat!("dblreq"), Ok),
        (dat!("semiuri"), Ok),
        (dat!("transports"), Ok),
        (dat!("mpart01"), Ok),
        (dat!("unreason"), Ok),
        (dat!("noreason"), Ok),
        // §3.1.2 invalid messages
        (dat!("badinv01"), Answer(bad("Via"))), // §3.1.2.1 `;;,;,,` in Via (and `;;;;` in Contact)
        (dat!("clerr"), Answer(DecodeError::ContentLengthMismatch { declared: 9999, available: 154 })), // §3.1.2.2
        (dat!("ncl"), Answer(DecodeError::BadContentLength)), // §3.1.2.3 negative Content-Length
        (dat!("scalar02"), Answer(bad("CSeq"))), // §3.1.2.4 CSeq beyond 2^32 (Max-Forwards 300 too)
        (dat!("scalarlg"), Drop(bad("CSeq"))),   // §3.1.2.5 a response: never answered
        (dat!("quotbal"), Answer(bad("To"))),    // §3.1.2.6 unterminated quoted display name
        (dat!("ltgtruri"), Answer(DecodeError::BadRequestUri)), // §3.1.2.7 <> around the Request-URI
        (dat!("lwsruri"), Answer(DecodeError::BadStartLine)),   // §3.1.2.8 LWS inside the Request-URI
        // §3.1.2.9 / §3.1.2.10: extra SP in / after the Request-Line. The RFC allows a liberal element to
        // accept them; parkd does (and never writes them back: the writer emits single SPs).
        (dat!("lwsstart"), Ok),
        (dat!("trws"), Ok),
        (dat!("escruri"), Answer(DecodeError::BadRequestUri)), // §3.1.2.11 escaped headers in Request-URI (400 chosen)
        // §3.1.2.12 non-GMT Date: the RFC allows ignoring a Date the element does not use; parkd keeps it as text.
        (dat!("baddate"), Ok),
        (dat!("regbadct"), Answer(bad("Contact"))), // §3.1.2.13 bare Contact URI with `?` headers
        (dat!("badaspec"), Answer(bad("To"))),      // §3.1.2.14 spaces inside <...>
        // §3.1.2.15 `Bell, Alexander` display names. The archived file also lacks the blank line ending its
        // header section, which is what is detected first; see `baddn_display_name_is_refused` for the name.
        (dat!("baddn"), Answer(DecodeError::NoHeaderEnd)),
        (dat!("badvers"), Answer(DecodeError::UnsupportedVersion)), // §3.1.2.16 SIP/7.0 → 505
        (dat!("mismatch01"), Answer(DecodeError::CSeqMethodMismatch)), // §3.1.2.17
        // §3.1.2.18 unknown method with CSeq mismatch: 501 or 400 are both allowed; the codec reports the
        // mismatch (400).
        (dat!("mismatch02"), Answer(DecodeError::CSeqMethodMismatch)),
        (dat!("bigcode"), Drop(DecodeError::BadStatusCode)), // §3.1.2.19 status 4294967301, a response
        // §3.2 transaction layer: branch `z9hG4bK` alone is well-formed
        (dat!("badbranch"), Ok),
        // §3.3 application layer
        (dat!("insuf"), Drop(DecodeError::MissingHeader("From"))), // §3.3.1 no From/To/Call-ID: nothing to answer with
        (dat!("unkscm"), Ok),  // §3.3.2 (416 is the application's call)
        (dat!("novelsc"), Ok), // §3.3.3
        (dat!("unksm2"), Ok),  // §3.3.4
        (dat!("bext01"), Ok),  // §3.3.5 (420 is the application's call)
        (dat!("invut"), Ok),   // §3.3.6 (415 is the application's call)
        (dat!("regaut01"), Ok), // §3.3.7
        (dat!("multi01"), Answer(DecodeError::DuplicateHeader("CSeq"))), // §3.3.8 multiple single-value headers
        (dat!("mcl01"), Answer(DecodeError::BadContentLength)), // §3.3.9 conflicting Content-Length
        (dat!("bcast"), Ok),    // §3.3.10
        (dat!("zeromf"), Ok),   // §3.3.11 (483 is the application's call)
        (dat!("cparam01"), Ok), // §3.3.12
        (dat!("cparam02"), Ok), // §3.3.13
        (dat!("regescrt"), Ok), // §3.3.14
        (dat!("sdp01"), Ok),    // §3.3.15
        // §3.4.1 RFC 2543 syntax: no branch, no Max-Forwards, no Content-Length (body = rest of datagram)
        (dat!("inv2543"), Ok),
    ]
}

#[test]
fn all_49_messages_meet_their_rfc4475_expectation() {
    let cases = cases();
    assert_eq!(cases.len(), 49);
    for ((name, bytes), expect) in cases {
        let got = parse_message(bytes);
        match (&expect, &got) {
            (Ok, Result::Ok(_)) => {}
            (Answer(cause), Err(e)) => {
                assert_eq!(e.cause(), cause, "{name}");
                let reply = e.reply().unwrap_or_else(|| panic!("{name}: no reply context"));
                assert!(reply.call_id.starts_with(name), "{name}: {reply:?}");
                let status = if *cause == DecodeError::UnsupportedVersion { 505 } else { 400 };
                assert!(e.response_bytes().unwrap().starts_with(format!("SIP/2.0 {status} ").as_bytes()), "{name}");
            }
            (Drop(cause), Err(e)) => {
                assert_eq!(e, cause, "{name}: must be dropped, not answered");
            }
            _ => panic!("{name}: expected {expect:?}, got {got:?}"),
        }
    }
}

#[test]
fn every_message_survives_truncation_at_every_byte() {
    for ((_, bytes), _) in cases() {
        for n in 0..bytes.len() {
            let _ = parse_message(bytes.get(..n).unwrap_or_default());
        }
    }
}

#[test]
fn valid_messages_round_trip_through_the_writer() {
    for ((name, bytes), expect) in cases() {
        if let (Ok, Result::Ok(m)) = (expect, parse_message(bytes)) {
            let encoded = match &m {
                Message::Request(r) => r.encode(),
                Message::Response(r) => r.encode(),
            };
            assert_eq!(parse_message(&encoded).as_ref(), Result::Ok(&m), "{name}");
        }
    }
}

fn request(bytes: &[u8]) -> Request {
    match parse_message(bytes) {
        Result::Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn response(bytes: &[u8]) -> Response {
    match parse_message(bytes) {
        Result::Ok(Message::Response(r)) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn wsinv_whitespace_folding_and_compact_forms_rfc4475_3_1_1_1() {
    let r = request(dat!("wsinv").1);
    assert_eq!(r.method, Method::Invite);
    assert_eq!((r.uri.user.as_deref(), r.uri.host.as_str()), (Some("vivekg"), "chair-dnrc.example.com"));
    assert!(r.uri.params.has("unknownparam"));
    assert_eq!(r.to.tag(), Some("1918181833n"));
    assert_eq!(r.from.display.as_deref(), Some("J Rosenberg \\\""));
    assert_eq!(r.from.tag(), Some("98asjd8"));
    assert_eq!(r.max_forwards, Some(68));
    assert_eq!(r.call_id, "wsinv.ndaksdj@192.0.2.1");
    assert_eq!(r.cseq, CSeq { seq: 9, method: Method::Invite });
    let vias: Vec<(&str, &str, Option<&str>)> = r.via.iter().map(|v| (v.transport.as_str(), v.host.as_str(), v.branch())).collect();
    assert_eq!(vias, [("UDP", "192.0.2.2", Some("390skdjuw")), ("TCP", "spindle.example.com", Some("z9hG4bK9ikj8")), ("UDP", "192.168.255.111", Some("z9hG4bK30239"))]);
    assert_eq!(r.header("Subject"), Some(""));
    assert_eq!(r.header("NewFangledHeader"), Some("newfangled value continued newfangled value"));
    assert_eq!(r.header("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
    assert_eq!(r.route.len(), 1);
    assert!(r.route[0].uri.params.has("unknown-no-value"));
    let c = &r.contact[0];
    assert_eq!(c.display.as_deref(), Some("Quoted string \"\""));
    assert_eq!((c.params.value("newparam"), c.params.has("secondparam"), c.params.value("q")), (Some("newvalue"), true, Some("0.33")));
    assert_eq!(r.content_type.as_deref(), Some("application/sdp"));
    assert_eq!(r.body.len(), 150);
}

#[test]
fn intmeth_unknown_method_and_odd_characters_rfc4475_3_1_1_2() {
    let r = request(dat!("intmeth").1);
    assert_eq!(r.method, Method::Other("!interesting-Method0123456789_*+`.%indeed'~".into()));
    assert_eq!(r.cseq.method, r.method);
    assert_eq!(r.uri.user.as_deref(), Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"));
    assert_eq!(r.uri.password.as_deref(), Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"));
    assert_eq!(r.uri.host, "example.com");
    assert_eq!(r.to.display.as_deref(), Some("BEL:\x07 NUL:\0 DEL:\x7f"));
    assert_eq!(r.from.display.as_deref(), Some("token1~` token2'+_ token3*%!.-"));
    assert_eq!(r.from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(r.call_id, "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{");
    assert_eq!(r.header("extensionHeader-!.%*+_`'~"), Some("\u{feff}\u{5927}\u{505c}\u{96fb}"));
}

#[test]
fn escaped_uris_rfc4475_3_1_1_3_to_3_1_1_5() {
    let r = request(dat!("esc01").1);
    assert_eq!(r.uri.user.as_deref(), Some("sips:user@example.com"));
    assert_eq!(r.to.uri.user.as_deref(), Some("user"));
    assert_eq!(r.from.uri.user.as_deref(), Some("I have spaces"));
    assert_eq!(r.contact[0].uri.user.as_deref(), Some("caller"));
    // URI parameters are kept as written (escaped), see uri.rs
    assert_eq!(r.contact[0].uri.params.0, Vec::<(crate::sip::SipStr, Option<crate::sip::SipStr>)>::from([("%6C%72".into(), None), ("n%61me".into(), Some("v%61lue%25%34%31".into()))]));
    assert_eq!(r.content_type.as_deref(), Some("application/sdp"));

    let r = request(dat!("escnull").1);
    assert_eq!(r.to.uri.user.as_deref(), Some("null-\0-null"));
    let users: Vec<_> = r.contact.iter().map(|c| c.uri.user.as_deref()).collect();
    assert_eq!(users, [Some("\0"), Some("\0\0")]);

    let r = request(dat!("esc02").1);
    assert_eq!(r.method, Method::Other("RE%47IST%45R".into()));
    assert_eq!(r.contact.len(), 2, "C%6Fntact is not Contact");
    assert_eq!(r.header("C%6Fntact"), Some("<sip:alias2@host2.example.com>"));
    assert_eq!(r.to.display.as_deref(), Some("%Z%45"));
}

#[test]
fn other_valid_requests_rfc4475_3_1_1() {
    assert_eq!(request(dat!("lwsdisp").1).from.display.as_deref(), Some("caller"));
    let r = request(dat!("longreq").1);
    assert_eq!(r.via.len(), 34);
    assert_eq!(r.body.len(), 150);
    let r = request(dat!("dblreq").1);
    assert_eq!((r.method.clone(), r.body.len()), (Method::Register, 0), "the INVITE after Content-Length 0 is discarded");
    let r = request(dat!("semiuri").1);
    assert_eq!((r.uri.user.as_deref(), r.uri.host.as_str()), (Some("user;par=u@example.net"), "example.com"));
    assert_eq!(r.header("Accept"), Some("application/sdp, application/pkcs7-mime, multipart/mixed, multipart/signed, message/sip, message/sipfrag"));
    let r = request(dat!("transports").1);
    let t: Vec<&str> = r.via.iter().map(|v| v.transport.as_str()).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    let r = request(dat!("mpart01").1);
    assert_eq!(r.body.len(), 553);
    assert_eq!(r.content_type.as_deref(), Some("multipart/mixed;boundary=7a9cbec02ceef655"));
    assert!(r.header("Identity").is_some());
}

#[test]
fn responses_with_odd_reasons_rfc4475_3_1_1_12_and_13() {
    let r = response(dat!("unreason").1);
    assert_eq!(r.status, 200);
    assert!(r.reason.starts_with("= 2**3 * 5**2 \u{43d}\u{43e}"), "{}", r.reason);
    assert_eq!(r.body.len(), 154);
    let r = response(dat!("noreason").1);
    assert_eq!((r.status, r.reason.as_str()), (100, ""));
}

#[test]
fn liberal_and_application_layer_cases_rfc4475_3_1_2_and_3_3() {
    assert_eq!(request(dat!("lwsstart").1).uri.user.as_deref(), Some("user"));
    assert_eq!(request(dat!("trws").1).method, Method::Options);
    assert_eq!(request(dat!("baddate").1).header("Date"), Some("Fri, 01 Jan 2010 16:00:00 EST"));
    let r = request(dat!("unkscm").1);
    assert_eq!((r.uri.scheme.as_str(), r.uri.host.as_str()), ("nobodyknowsthisscheme", "totallyopaquecontent"));
    assert_eq!(request(dat!("novelsc").1).uri.scheme, "soap.beep");
    let r = request(dat!("unksm2").1);
    assert_eq!((r.to.uri.scheme.as_str(), r.from.uri.scheme.as_str(), r.contact[0].uri.scheme.as_str()), ("isbn", "http", "name"));
    let r = request(dat!("cparam01").1);
    assert!(r.contact[0].params.has("unknownparam") && !r.contact[0].uri.params.has("unknownparam"), "RFC 3261 §20.10");
    let r = request(dat!("cparam02").1);
    assert!(r.contact[0].uri.params.has("unknownparam") && !r.contact[0].params.has("unknownparam"));
    let r = request(dat!("regescrt").1);
    assert_eq!(r.contact[0].uri.header("Route"), Some("<sip:sip.example.com>"));
    assert_eq!(request(dat!("zeromf").1).max_forwards, Some(0));
    assert_eq!(request(dat!("badbranch").1).branch(), Some("z9hG4bK"));
    assert_eq!(response(dat!("bcast").1).via[1].host, "255.255.255.255");
    let r = request(dat!("inv2543").1);
    assert_eq!((r.branch(), r.max_forwards), (None, None));
    assert_eq!(r.body.len(), 105, "no Content-Length over UDP: the body is the rest of the datagram");
}

#[test]
fn baddn_display_name_is_refused_rfc4475_3_1_2_15() {
    let mut bytes = dat!("baddn").1.to_vec();
    bytes.extend_from_slice(b"\r\n");
    let e = parse_message(&bytes).unwrap_err();
    assert_eq!(e.cause(), &DecodeError::BadHeader { name: "From" });
    assert!(e.reply().is_some());
}
