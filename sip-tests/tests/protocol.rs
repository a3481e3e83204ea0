//! Protocol hygiene: OPTIONS, unknown methods, garbage, CANCEL after the answer, TCP.

use sip_tests::checks::{expect_hold_music, response_header};
use sip_tests::sip::probe;
use sip_tests::sip::sipp::header;
use sip_tests::{Parkd, RtpEndpoint, Sipp};
use std::time::Duration;

/// OPTIONS → 200 with Allow (the scenario checks Allow names INVITE).
#[test]
fn options_is_200_with_allow() {
    let parkd = Parkd::start("options");
    let out = Sipp::new("options").service("700").run(&parkd);
    out.assert_passed(&parkd, "OPTIONS over UDP");
    let allow = response_header(&out, 200, "Allow");
    for method in ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"] {
        assert!(allow.contains(method), "Allow {allow:?} lacks {method}");
    }
}

/// parkd listens on TCP too: OPTIONS over TCP → 200.
#[test]
fn options_over_tcp_is_200() {
    let parkd = Parkd::start("options_tcp");
    Sipp::new("options").service("700").tcp().run(&parkd).assert_passed(&parkd, "OPTIONS over TCP");
}

/// An unknown method → 501 (RFC 3261 §8.2.1).
#[test]
fn unknown_method_is_501() {
    let parkd = Parkd::start("unknown_method");
    Sipp::new("unknown_method_501").service("700").run(&parkd).assert_passed(&parkd, "FOO → 501");
}

/// Binary garbage and broken SIP must neither crash parkd nor stop it: a park right after still works.
#[test]
fn garbage_is_dropped_and_a_call_still_works() {
    let mut parkd = Parkd::start("garbage");
    probe::send_garbage(parkd.sip_addr()).unwrap_or_else(|e| panic!("sending garbage: {e}"));
    std::thread::sleep(Duration::from_millis(300));
    parkd.assert_alive();
    assert!(parkd.answers_options(Duration::from_secs(5)), "parkd stopped answering OPTIONS after garbage");
    let bob = RtpEndpoint::bind("bob");
    let run = Sipp::new("garbage_then_call").service("700").rtp_port(bob.port()).hold_ms(1500).spawn(&parkd);
    expect_hold_music(&bob, 25);
    let out = run.wait();
    out.assert_passed(&parkd, "malformed request, then a park");
    assert_eq!(response_header(&out, 200, "Park-Orbit"), "701");
    parkd.assert_alive();
}

/// A CANCEL arriving after parkd's 200 OK gets 200 and changes nothing: the call stays parked with music
/// (RFC 3261 §9.2; the 487 path is unit-tested in the transaction layer).
#[test]
fn cancel_after_answer_leaves_the_call_up() {
    let parkd = Parkd::start("cancel_after_answer");
    let bob = RtpEndpoint::bind("bob");
    let run = Sipp::new("cancel_after_answer").service("700").rtp_port(bob.port()).hold_ms(3000).spawn(&parkd);
    expect_hold_music(&bob, 100);
    let out = run.wait();
    out.assert_passed(&parkd, "CANCEL after 200, then ACK, music, BYE");
    assert!(out.response(487).is_none(), "parkd must not answer 487 after it sent 200");
    // RFC 3261 §9.2: the To tag of the CANCEL's response SHOULD equal the INVITE response's. A SHOULD, so
    // only reported (the scenario uses the 2xx's tag for ACK/BYE either way).
    let to_tag = |m: Option<String>| {
        m.as_deref().and_then(|m| header(m, "To")).and_then(|to| to.split_once("tag=")).map(|(_, t)| t.to_string())
    };
    let invite_tag = to_tag(out.response_for(200, "INVITE"));
    let cancel_tag = to_tag(out.response_for(200, "CANCEL"));
    assert!(cancel_tag.is_some(), "no 200 to the CANCEL:\n{}", out.messages);
    if invite_tag != cancel_tag {
        eprintln!("note (RFC 3261 §9.2 SHOULD): CANCEL's 200 To tag {cancel_tag:?} differs from the INVITE 200's {invite_tag:?}");
    }
}
