//! Server transaction rules (RFC 3261 §17.2, RFC 6026, RFC 3581) in virtual time.

use super::test_support::*;
use super::*;
use crate::sip::{Method, Request};

fn layer() -> TxnLayer {
    TxnLayer::new(TimerConfig::default())
}

fn new_id(v: ServerVerdict) -> ServerTxnId {
    match v {
        ServerVerdict::New(id) => id,
        other => panic!("expected New, got {other:?}"),
    }
}

/// An INVITE received over UDP from UA at t0, its id.
fn invite_in(l: &mut TxnLayer, branch: &str) -> (Request, ServerTxnId) {
    let inv = request(Method::Invite, branch, UA);
    let id = new_id(l.on_request(t0(), udp(UA), &inv));
    (inv, id)
}

fn ack_with_tag(branch: &str, tag: &str) -> Request {
    let mut ack = request(Method::Ack, branch, UA);
    ack.common.to = ack.common.to.clone().with_tag(tag);
    ack
}

#[test]
fn rfc3261_17_2_1_non_2xx_retransmitted_on_g_until_h_at_32s() {
    let mut l = layer();
    let (inv, id) = invite_in(&mut l, "z9hG4bKg1");
    l.respond(t0(), id, &response_to(&inv, 486));
    let outs = run_until(&mut l, at(60_000));
    let mut expected = vec![0];
    expected.extend(CAPPED_SCHEDULE);
    assert_eq!(transmit_times(&outs), expected, "G: T1 doubling capped at T2");
    assert_eq!(events(&outs), vec![(32_000, TxnEvent::ServerTimeout(id))], "H at 64*T1");
    assert_eq!(l.live(), (0, 0));
}

#[test]
fn rfc3261_13_3_1_4_2xx_retransmitted_until_ack_timeout_at_32s() {
    let mut l = layer();
    let (inv, id) = invite_in(&mut l, "z9hG4bK2xx");
    l.respond(t0(), id, &response_to(&inv, 200));
    let outs = run_until(&mut l, at(60_000));
    let mut expected = vec![0];
    expected.extend(CAPPED_SCHEDULE);
    assert_eq!(transmit_times(&outs), expected, "2xx: 0.5, 1, 2, 4, 4, ... s apart");
    assert_eq!(events(&outs), vec![(32_000, TxnEvent::AckTimeout { txn: id, call_id: "call-1@pbx".into(), cseq: 1 })]);
    assert_eq!(l.live(), (0, 0));
}

#[test]
fn rfc6026_ack_for_2xx_goes_to_dialog_and_ack_received_stops_retransmission() {
    let mut l = layer();
    let (inv, id) = invite_in(&mut l, "z9hG4bKa2");
    l.respond(t0(), id, &response_to(&inv, 200));
    let outs = run_until(&mut l, at(2_000));
    assert_eq!(transmit_times(&outs), vec![0, 500, 1500]);
    // The ACK for a 2xx is its own transaction (new branch) ...
    assert_eq!(l.on_request(at(2_000), udp(UA), &ack_with_tag("z9hG4bKnew", "srv")), ServerVerdict::AckForDialog);
    // ... and one reusing the INVITE branch also reaches the TU while Accepted (RFC 6026 §8.7).
    assert_eq!(l.on_request(at(2_000), udp(UA), &ack_with_tag("z9hG4bKa2", "srv")), ServerVerdict::AckForDialog);
    assert!(l.ack_received(at(2_000), "call-1@pbx", 1));
    assert!(!l.ack_received(at(2_000), "call-1@pbx", 1), "second report matches nothing");
    let outs = run_until(&mut l, at(60_000));
    assert!(outs.is_empty(), "no retransmission and no AckTimeout after the ACK: {outs:?}");
    assert_eq!(l.live(), (0, 0), "Timer L ended the Accepted transaction");
}

#[test]
fn rfc6026_accepted_absorbs_invite_retransmission_by_resending_2xx() {
    let mut l = layer();
    let (inv, id) = invite_in(&mut l, "z9hG4bKacc");
    let ok = response_to(&inv, 200);
    l.respond(t0(), id, &ok);
    drain(&mut l);
    // Before the ACK the UAC may have lost the 2xx: a retransmitted INVITE gets it again.
    assert_eq!(l.on_request(at(50), udp(UA), &inv), ServerVerdict::Retransmission);
    let (to, text) = only_transmit(&drain(&mut l));
    assert_eq!(to, udp(UA));
    assert_eq!(text.as_bytes(), &ok.encode()[..]);
    // After the ACK (RFC 6026 Figure 7, Accepted: `INVITE / -`) it is only absorbed.
    assert!(l.ack_received(at(100), "call-1@pbx", 1));
    assert_eq!(l.on_request(at(200), udp(UA), &inv), ServerVerdict::Retransmission);
    assert!(drain(&mut l).is_empty(), "nothing re-sent once the 2xx was acknowledged");
    // Timer L (64*T1) still ends it at 32 s.
    run_until(&mut l, at(31_999));
    assert_eq!(l.live(), (1, 0));
    run_until(&mut l, at(32_000));
    assert_eq!(l.live(), (0, 0));
}

#[test]
fn rfc3261_17_2_1_invite_retransmission_resends_last_response() {
    let mut l = layer();
    let (inv, id) = invite_in(&mut l, "z9hG4bKre");
    assert_eq!(l.on_request(at(10), udp(UA), &inv), ServerVerdict::Retransmission);
    assert!(drain(&mut l).is_empty(), "nothing sent yet, nothing to re-send");
    let trying = response_to(&inv, 100);
    l.respond(at(20), id, &trying);
    drain(&mut l);
    assert_eq!(l.on_request(at(30), udp(UA), &inv), ServerVerdict::Retransmission);
    let (_, text) = only_transmit(&drain(&mut l));
    assert!(text.starts_with("SIP/2.0 100 Trying\r\n"));
    l.respond(at(40), id, &response_to(&inv, 486));
    drain(&mut l);
    assert_eq!(l.on_request(at(50), udp(UA), &inv), ServerVerdict::Retransmission);
    let (_, text) = only_transmit(&drain(&mut l));
    assert!(text.starts_with("SIP/2.0 486 Busy Here\r\n"));
    assert_eq!(l.on_request(at(60), udp(UA), &ack_with_tag("z9hG4bKre", "srv")), ServerVerdict::AckAbsorbed);
    run_until(&mut l, at(60_000));
    assert_eq!(l.live(), (0, 0));
}

#[test]
fn rfc3261_17_2_1_ack_to_non_2xx_absorbed_stops_g_and_ends_after_t4() {
    let mut l = layer();
    let (inv, id) = invite_in(&mut l, "z9hG4bKack");
    l.respond(t0(), id, &response_to(&inv, 486));
    let outs = run_until(&mut l, at(1_000));
    assert_eq!(transmit_times(&outs), vec![0, 500]);
    let ack = ack_with_tag("z9hG4bKack", "srv");
    assert_eq!(l.on_request(at(1_000), udp(UA), &ack), ServerVerdict::AckAbsorbed);
    assert_eq!(l.on_request(at(2_000), udp(UA), &ack), ServerVerdict::AckAbsorbed, "ACK retransmission in Confirmed");
    let outs = run_until(&mut l, at(5_999));
    assert!(outs.is_empty(), "G stopped, no H event: {outs:?}");
    assert_eq!(l.live(), (1, 0), "Confirmed until Timer I");
    run_until(&mut l, at(6_000));
    assert_eq!(l.live(), (0, 0), "Timer I = T4 after the ACK");
    assert!(!l.ack_received(at(6_000), "call-1@pbx", 1), "a non-2xx never awaits a dialog ACK");
}

#[test]
fn rfc3261_17_2_2_non_invite_retransmissions_absorbed_until_j() {
    let mut l = layer();
    let opt = request(Method::Options, "z9hG4bKopt", UA);
    let id = new_id(l.on_request(t0(), udp(UA), &opt));
    assert_eq!(l.on_request(at(100), udp(UA), &opt), ServerVerdict::Retransmission);
    assert!(drain(&mut l).is_empty(), "Trying: absorbed silently");
    l.respond(at(200), id, &response_to(&opt, 180));
    drain(&mut l);
    assert_eq!(l.on_request(at(300), udp(UA), &opt), ServerVerdict::Retransmission);
    assert!(only_transmit(&drain(&mut l)).1.starts_with("SIP/2.0 180 "), "Proceeding: re-sends the 1xx");
    l.respond(at(1_000), id, &response_to(&opt, 200));
    assert_eq!(drain(&mut l).len(), 1);
    l.respond(at(1_100), id, &response_to(&opt, 500));
    assert!(drain(&mut l).is_empty(), "a second final is not sent");
    let outs = run_until(&mut l, at(10_000));
    assert!(outs.is_empty(), "no retransmission of a non-INVITE final: {outs:?}");
    assert_eq!(l.on_request(at(10_000), udp(UA), &opt), ServerVerdict::Retransmission);
    assert!(only_transmit(&drain(&mut l)).1.starts_with("SIP/2.0 200 OK"), "Completed: re-sends the final");
    run_until(&mut l, at(32_999));
    assert_eq!(l.live(), (1, 0));
    run_until(&mut l, at(33_000));
    assert_eq!(l.live(), (0, 0), "J = 64*T1 after the final");
}

#[test]
fn rfc3261_9_2_cancel_finds_its_invite() {
    let mut l = layer();
    let (inv, inv_id) = invite_in(&mut l, "z9hG4bKcx");
    let cancel = request(Method::Cancel, "z9hG4bKcx", UA);
    let v = l.on_request(at(100), udp(UA), &cancel);
    let ServerVerdict::Cancel { cancel: c_id, invite } = v else { panic!("expected Cancel, got {v:?}") };
    assert_eq!(invite, Some(inv_id));
    assert!(l.awaiting_final(inv_id));
    assert_eq!(l.on_request(at(150), udp(UA), &cancel), ServerVerdict::Retransmission);
    l.respond(at(200), c_id, &response_to(&cancel, 200));
    l.respond(at(200), inv_id, &response_to(&inv, 487));
    assert!(!l.awaiting_final(inv_id));
    assert_eq!(drain(&mut l).len(), 2);
    assert_eq!(l.on_request(at(300), udp(UA), &ack_with_tag("z9hG4bKcx", "srv")), ServerVerdict::AckAbsorbed);
    run_until(&mut l, at(60_000));
    assert_eq!(l.live(), (0, 0));
}

#[test]
fn rfc3261_9_2_cancel_without_invite_gets_none() {
    let mut l = layer();
    let _ = invite_in(&mut l, "z9hG4bKinv");
    let other_branch = request(Method::Cancel, "z9hG4bKother", UA);
    let v = l.on_request(at(100), udp(UA), &other_branch);
    let ServerVerdict::Cancel { cancel, invite: None } = v else { panic!("expected Cancel without invite, got {v:?}") };
    // Same branch but another sent-by is not the same INVITE (§17.2.3).
    let other_host = request(Method::Cancel, "z9hG4bKinv", UA2);
    assert!(matches!(l.on_request(at(100), udp(UA2), &other_host), ServerVerdict::Cancel { invite: None, .. }));
    l.respond(at(200), cancel, &response_to(&other_branch, 481));
    let (_, text) = only_transmit(&drain(&mut l));
    assert!(text.starts_with("SIP/2.0 481 "));
}

#[test]
fn rfc3261_17_2_3_legacy_rfc2543_matching() {
    let mut l = layer();
    let (inv, id) = invite_in(&mut l, "oldbranch");
    assert_eq!(l.on_request(at(100), udp(UA), &inv), ServerVerdict::Retransmission);
    let mut no_branch = inv.clone();
    no_branch.common.via[0].params.remove("branch");
    let other_via = new_id(l.on_request(at(100), udp(UA), &no_branch));
    let mut next = inv.clone();
    next.common.cseq.seq = 2;
    let other_cseq = new_id(l.on_request(at(100), udp(UA), &next));
    let cancel = request(Method::Cancel, "oldbranch", UA);
    let v = l.on_request(at(150), udp(UA), &cancel);
    let ServerVerdict::Cancel { cancel: c_id, invite: Some(i) } = v else { panic!("expected Cancel, got {v:?}") };
    assert_eq!(i, id);
    assert_eq!(l.on_request(at(160), udp(UA), &cancel), ServerVerdict::Retransmission);
    l.respond(at(200), c_id, &response_to(&cancel, 200));
    l.respond(at(200), id, &response_to(&inv, 486));
    drain(&mut l);
    let outs = run_until(&mut l, at(1_000));
    assert_eq!(transmit_times(&outs), vec![700], "G at 200 ms + T1");
    // The ACK carries the final's To tag, which the INVITE lacked; a wrong tag does not match.
    assert_eq!(l.on_request(at(1_000), udp(UA), &ack_with_tag("oldbranch", "wrong")), ServerVerdict::AckForDialog);
    assert_eq!(l.on_request(at(1_000), udp(UA), &ack_with_tag("oldbranch", "srv")), ServerVerdict::AckAbsorbed);
    let outs = run_until(&mut l, at(5_999));
    assert!(outs.is_empty(), "G stopped by the ACK: {outs:?}");
    assert_eq!(l.live(), (4, 0));
    run_until(&mut l, at(6_000));
    assert_eq!(l.live(), (3, 0), "Timer I ended the INVITE; the others still await the TU");
    for other in [other_via, other_cseq] {
        assert!(l.awaiting_final(other));
        let req = l.server_request(other).expect("live").clone();
        l.respond(at(6_000), other, &response_to(&req, 200));
        let call_id = req.common.call_id.clone();
        assert!(l.ack_received(at(6_000), &call_id, req.common.cseq.seq));
    }
    run_until(&mut l, at(60_000));
    assert_eq!(l.live(), (0, 0));
}

#[test]
fn rfc3261_17_2_tcp_has_no_retransmissions_and_zero_waits() {
    let mut l = layer();
    let src = tcp("192.0.2.10:40000");
    let inv = request(Method::Invite, "z9hG4bKtcp", UA);
    let id = new_id(l.on_request(t0(), src, &inv));
    l.respond(t0(), id, &response_to(&inv, 486));
    let (to, _) = only_transmit(&drain(&mut l));
    assert_eq!(to, src, "answered on the connection");
    let outs = run_until(&mut l, at(31_000));
    assert!(outs.is_empty(), "no Timer G on TCP: {outs:?}");
    assert_eq!(l.on_request(at(31_000), src, &ack_with_tag("z9hG4bKtcp", "srv")), ServerVerdict::AckAbsorbed);
    assert_eq!(l.live(), (0, 0), "Timer I is zero on TCP");

    let opt = request(Method::Options, "z9hG4bKtcpo", UA);
    let id = new_id(l.on_request(t0(), src, &opt));
    l.respond(t0(), id, &response_to(&opt, 200));
    assert_eq!(only_transmit(&drain(&mut l)).0, src);
    assert_eq!(l.live(), (0, 0), "Timer J is zero on TCP");

    let inv2 = request(Method::Invite, "z9hG4bKtcp2", UA);
    let id2 = new_id(l.on_request(t0(), src, &inv2));
    l.respond(t0(), id2, &response_to(&inv2, 200));
    let outs = run_until(&mut l, at(60_000));
    assert_eq!(transmit_times(&outs), vec![0], "2xx sent once on TCP");
    assert!(matches!(events(&outs)[..], [(32_000, TxnEvent::AckTimeout { .. })]));
    assert_eq!(l.live(), (0, 0));
}

#[test]
fn stale_server_ids_are_ignored() {
    let mut l = layer();
    let opt = request(Method::Options, "z9hG4bKst", UA);
    let id = new_id(l.on_request(t0(), udp(UA), &opt));
    l.respond(t0(), id, &response_to(&opt, 200));
    run_until(&mut l, at(40_000));
    assert_eq!(l.live(), (0, 0));
    // A new transaction reuses the slot; the old id must not reach it.
    let opt2 = request(Method::Options, "z9hG4bKst2", UA);
    let id2 = new_id(l.on_request(at(40_000), udp(UA), &opt2));
    assert_ne!(id, id2);
    assert!(l.server_request(id).is_none());
    l.respond(at(40_000), id, &response_to(&opt, 500));
    assert!(drain(&mut l).is_empty());
    assert!(l.awaiting_final(id2));
    assert_eq!(l.server_request(id2).map(|r| r.common.via[0].branch()), Some(Some("z9hG4bKst2")));
}

#[test]
fn rfc3581_response_goes_to_source_port_and_echoes_rport() {
    let mut l = layer();
    let src = udp("198.51.100.4:33333");
    let mut inv = request(Method::Invite, "z9hG4bKnat", "10.0.0.5:5060");
    inv.common.via[0].params.set("rport", None);
    let id = new_id(l.on_request(t0(), src, &inv));
    let stored = l.server_request(id).expect("live").clone();
    assert_eq!(stored.common.via[0].params.value("rport"), Some("33333"));
    assert_eq!(stored.common.via[0].params.value("received"), Some("198.51.100.4"));
    l.respond(t0(), id, &response_to(&stored, 100));
    let (to, text) = only_transmit(&drain(&mut l));
    assert_eq!(to, src);
    assert!(text.contains("rport=33333;received=198.51.100.4"), "{text}");
}

#[test]
fn rfc3581_response_built_from_unstamped_request_still_echoes_rport() {
    let mut l = layer();
    let src = udp("198.51.100.4:33333");
    let mut opt = request(Method::Options, "z9hG4bKtu", "10.0.0.5:5060");
    opt.common.via[0].params.set("rport", None);
    let id = new_id(l.on_request(t0(), src, &opt));
    l.respond(t0(), id, &response_to(&opt, 200));
    let (to, text) = only_transmit(&drain(&mut l));
    assert_eq!(to, src);
    assert!(
        text.contains("Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKtu;rport=33333;received=198.51.100.4\r\n"),
        "{text}"
    );
}

#[test]
fn rfc3261_18_2_2_response_without_rport_goes_to_sent_by_port() {
    let mut l = layer();
    let src = udp("198.51.100.4:33333");
    let opt = request(Method::Options, "z9hG4bKnr", "198.51.100.4:5070");
    let id = new_id(l.on_request(t0(), src, &opt));
    l.respond(t0(), id, &response_to(&opt, 200));
    let (to, _) = only_transmit(&drain(&mut l));
    assert_eq!(to, udp("198.51.100.4:5070"));
}

#[test]
fn request_without_via_is_malformed() {
    let mut l = layer();
    let mut r = request(Method::Invite, "z9hG4bKx", UA);
    r.common.via.clear();
    assert_eq!(l.on_request(t0(), udp(UA), &r), ServerVerdict::Malformed);
    assert_eq!(l.live(), (0, 0));
}

#[test]
fn ten_thousand_concurrent_server_txns_keep_poll_timeout_a_peek() {
    let mut l = layer();
    let n = 10_000;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let inv = request(Method::Invite, &format!("z9hG4bK{i}"), UA);
        let id = new_id(l.on_request(t0(), udp(UA), &inv));
        l.respond(at(i as u64 % 1000), id, &response_to(&inv, if i % 2 == 0 { 486 } else { 200 }));
        ids.push(id);
    }
    assert_eq!(l.live(), (n, 0));
    assert_eq!(drain(&mut l).len(), n);
    assert_eq!(l.poll_timeout(), Some(at(500)), "earliest G of the first transaction");
    for _ in 0..1000 {
        assert_eq!(l.poll_timeout(), Some(at(500)));
    }
    // ACK every non-2xx at 1 s; the 2xx ones run to their AckTimeout.
    for i in (0..n).step_by(2) {
        let ack = ack_with_tag(&format!("z9hG4bK{i}"), "srv");
        assert_eq!(l.on_request(at(1_000), udp(UA), &ack), ServerVerdict::AckAbsorbed);
    }
    let outs = run_until(&mut l, at(40_000));
    let timeouts = events(&outs).iter().filter(|(_, e)| matches!(e, TxnEvent::AckTimeout { .. })).count();
    assert_eq!(timeouts, n / 2);
    assert_eq!(l.live(), (0, 0));
    assert_eq!(l.poll_timeout(), None, "every heap entry drained");
}

#[test]
fn rfc3261_13_3_1_4_unacked_2xx_counts_g_retransmissions_and_absorbed_invite() {
    let mut l = layer();
    let (inv, id) = invite_in(&mut l, "z9hG4bKst");
    l.respond(t0(), id, &response_to(&inv, 200));
    // RFC 6026 Accepted: the retransmitted INVITE is absorbed and the 2xx re-sent once more.
    assert_eq!(l.on_request(at(100), udp(UA), &inv), ServerVerdict::Retransmission);
    run_until(&mut l, at(31_499));
    let g = CAPPED_SCHEDULE.len() as u64;
    assert_eq!(l.stats().retransmitted_responses, 1 + (g - 1), "the last G re-send (31.5 s) has not fired yet");
    run_until(&mut l, at(32_000));
    let expected = TxnStats { retransmitted_requests: 0, retransmitted_responses: 1 + g, absorbed_retransmissions: 1 };
    assert_eq!(l.stats(), expected, "G: 0.5, 1.5, 3.5, 7.5, 11.5, ... 31.5 s, plus the re-send on the absorbed INVITE");
    assert_eq!(l.live(), (0, 0));
}

#[test]
fn rfc3261_17_2_1_retransmitted_ack_in_confirmed_counts_as_absorbed() {
    let mut l = layer();
    let (inv, id) = invite_in(&mut l, "z9hG4bKsa");
    l.respond(t0(), id, &response_to(&inv, 486));
    drain(&mut l);
    let ack = ack_with_tag("z9hG4bKsa", "srv");
    assert_eq!(l.on_request(at(100), udp(UA), &ack), ServerVerdict::AckAbsorbed);
    assert_eq!(l.stats().absorbed_retransmissions, 0, "the first ACK is not a retransmission");
    assert_eq!(l.on_request(at(200), udp(UA), &ack), ServerVerdict::AckAbsorbed);
    assert_eq!(l.stats(), TxnStats { absorbed_retransmissions: 1, ..TxnStats::default() });
}

#[test]
fn received_requests_and_sent_responses_are_counted_re_sends_included() {
    use crate::txn::MsgKind;
    let mut l = layer();
    let (inv, id) = invite_in(&mut l, "z9hG4bKcnt");
    l.respond(at(20), id, &response_to(&inv, 100));
    assert_eq!(l.on_request(at(30), udp(UA), &inv), ServerVerdict::Retransmission);
    l.respond(at(40), id, &response_to(&inv, 486));
    assert_eq!(l.on_request(at(50), udp(UA), &inv), ServerVerdict::Retransmission);
    assert_eq!(l.on_request(at(60), udp(UA), &ack_with_tag("z9hG4bKcnt", "srv")), ServerVerdict::AckAbsorbed);
    let c = l.counts();
    assert_eq!(c.get(false, MsgKind::request(&Method::Invite)), 3);
    assert_eq!(c.get(false, MsgKind::request(&Method::Ack)), 1);
    assert_eq!(c.get(true, MsgKind::response(100, &Method::Invite)), 2, "the 100 and its re-send");
    assert_eq!(c.get(true, MsgKind::response(486, &Method::Invite)), 2, "the 486 and its re-send");
    assert_eq!(c.iter().count(), 4, "{:?}", c.iter().collect::<Vec<_>>());
}

#[test]
fn a_server_transaction_keeps_what_a_response_copies_and_not_the_body() {
    let mut l = layer();
    let mut inv = request(Method::Invite, "z9hG4bKkeep", "10.0.0.5:5060");
    inv.common.body = bytes::Bytes::from_static(b"v=0\r\n");
    inv.common.push_header("User-Agent", "phone");
    inv.common.record_route = vec![inv.common.from.clone()];
    let id = new_id(l.on_request(at(0), udp(UA), &inv));
    let kept = l.server_request(id).expect("live");
    assert_eq!((&kept.method, &kept.uri, &kept.common.from, &kept.common.to), (&inv.method, &inv.uri, &inv.common.from, &inv.common.to));
    assert_eq!((&kept.common.call_id, &kept.common.cseq, &kept.common.record_route), (&inv.common.call_id, &inv.common.cseq, &inv.common.record_route));
    assert_eq!(kept.common.via.len(), 1);
    assert!(kept.common.body.is_empty() && kept.common.headers.is_empty() && kept.common.max_forwards.is_none());
}
