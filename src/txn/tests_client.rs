//! Client transaction rules (RFC 3261 §17.1, RFC 6026) in virtual time.

use super::test_support::*;
use super::*;
use crate::sip::{Method, NameAddr, Request, Uri};

fn layer() -> TxnLayer {
    TxnLayer::new(TimerConfig::default())
}

/// The PBX we send to.
const PBX: &str = "192.0.2.20:5060";

/// A request parkd originates (its own Via/branch), sent to PBX at t0.
fn send(l: &mut TxnLayer, method: Method, branch: &str) -> (Request, ClientTxnId) {
    let req = request(method, branch, "192.0.2.1:5060");
    let id = l.send_request(t0(), udp(PBX), &req);
    (req, id)
}

#[test]
fn rfc3261_17_1_1_2_timer_a_doubles_without_cap_and_b_at_32s() {
    let mut l = layer();
    let (_, id) = send(&mut l, Method::Invite, "z9hG4bKa");
    let outs = run_until(&mut l, at(60_000));
    assert_eq!(transmit_times(&outs), vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(events(&outs), vec![(32_000, TxnEvent::ClientTimeout(id))]);
    assert_eq!(l.live(), (0, 0));
}

#[test]
fn rfc3261_17_1_2_2_timer_e_capped_at_t2_and_f_at_32s() {
    let mut l = layer();
    let (_, id) = send(&mut l, Method::Bye, "z9hG4bKe");
    let outs = run_until(&mut l, at(60_000));
    let mut expected = vec![0];
    expected.extend(CAPPED_SCHEDULE);
    assert_eq!(transmit_times(&outs), expected);
    assert_eq!(events(&outs), vec![(32_000, TxnEvent::ClientTimeout(id))]);
    assert_eq!(l.live(), (0, 0));
}

#[test]
fn rfc3261_17_1_2_2_proceeding_retransmits_every_t2_then_k() {
    let mut l = layer();
    let (req, id) = send(&mut l, Method::Notify, "z9hG4bKp");
    drain(&mut l);
    let v = l.on_response(at(200), udp(PBX), &response_to(&req, 100));
    assert!(matches!(v, Some((i, ClientVerdict::Provisional(_))) if i == id));
    let outs = run_until(&mut l, at(10_000));
    assert_eq!(transmit_times(&outs), vec![500, 4500, 8500], "E armed at 0.5 s fires, then resets to T2");
    let v = l.on_response(at(10_000), udp(PBX), &response_to(&req, 200));
    assert!(matches!(v, Some((i, ClientVerdict::Final(ref r))) if i == id && r.status == 200));
    assert_eq!(l.on_response(at(10_100), udp(PBX), &response_to(&req, 200)), None, "retransmitted final absorbed");
    let outs = run_until(&mut l, at(14_999));
    assert!(outs.is_empty(), "no E/F after the final: {outs:?}");
    assert_eq!(l.live(), (0, 1));
    run_until(&mut l, at(15_000));
    assert_eq!(l.live(), (0, 0), "K = T4 after the final");
}

#[test]
fn rfc3261_17_1_1_3_ict_acks_a_486_with_same_branch_and_to_tag() {
    let mut l = layer();
    let mut inv = request(Method::Invite, "z9hG4bKbusy", "192.0.2.1:5060");
    inv.common.route = vec![NameAddr::new(Uri::sip(None, "proxy.example", None))];
    inv.common.via.push(request(Method::Invite, "z9hG4bKlower", "192.0.2.99:5060").common.via[0].clone());
    let id = l.send_request(t0(), udp(PBX), &inv);
    drain(&mut l);
    let mut busy = response_to(&inv, 486);
    busy.common.to = busy.common.to.clone().with_tag("callee-tag");
    let v = l.on_response(at(300), udp(PBX), &busy);
    assert!(matches!(v, Some((i, ClientVerdict::Final(ref r))) if i == id && r.status == 486));
    let (to, ack) = only_transmit(&drain(&mut l));
    assert_eq!(to, udp(PBX));
    let expected = "ACK sip:700@parkd.example SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbusy\r\n\
        Max-Forwards: 70\r\n\
        Route: <sip:proxy.example>\r\n\
        From: <sip:alice@pbx.example>;tag=ftag\r\n\
        To: <sip:700@parkd.example>;tag=callee-tag\r\n\
        Call-ID: call-1@pbx\r\n\
        CSeq: 1 ACK\r\n\
        Content-Length: 0\r\n\r\n";
    assert_eq!(ack, expected);
    // §17.1.1.2: a retransmitted final is absorbed and re-ACKed identically.
    assert_eq!(l.on_response(at(800), udp(PBX), &busy), None);
    assert_eq!(only_transmit(&drain(&mut l)).1, expected);
    let outs = run_until(&mut l, at(32_299));
    assert!(outs.is_empty(), "no Timer A after the final: {outs:?}");
    assert_eq!(l.live(), (0, 1));
    run_until(&mut l, at(32_300));
    assert_eq!(l.live(), (0, 0), "Timer D = 32 s on UDP");
}

#[test]
fn rfc6026_ict_accepted_passes_2xx_retransmissions_up_until_m() {
    let mut l = layer();
    let (inv, id) = send(&mut l, Method::Invite, "z9hG4bKok");
    drain(&mut l);
    assert!(matches!(
        l.on_response(at(100), udp(PBX), &response_to(&inv, 180)),
        Some((_, ClientVerdict::Provisional(_)))
    ));
    let ok = response_to(&inv, 200);
    assert_eq!(l.on_response(at(1_000), udp(PBX), &ok), Some((id, ClientVerdict::Final(ok.clone()))));
    assert!(drain(&mut l).is_empty(), "the TU ACKs a 2xx, not the layer");
    assert_eq!(l.on_response(at(1_500), udp(PBX), &ok), Some((id, ClientVerdict::Final(ok.clone()))), "re-ACK needed");
    let mut fork = ok.clone();
    fork.common.to = fork.common.to.clone().with_tag("fork2");
    assert_eq!(l.on_response(at(1_600), udp(PBX), &fork), Some((id, ClientVerdict::Final(fork.clone()))));
    assert_eq!(l.on_response(at(1_700), udp(PBX), &response_to(&inv, 486)), None, "non-2xx in Accepted absorbed");
    assert_eq!(l.on_response(at(1_800), udp(PBX), &response_to(&inv, 180)), None);
    assert!(drain(&mut l).is_empty());
    let outs = run_until(&mut l, at(32_999));
    assert!(outs.is_empty(), "no retransmission after the 1xx: {outs:?}");
    assert_eq!(l.live(), (0, 1));
    run_until(&mut l, at(33_000));
    assert_eq!(l.live(), (0, 0), "Timer M = 64*T1 after the 2xx");
    assert_eq!(l.on_response(at(33_000), udp(PBX), &ok), None, "after M the 2xx is stray (TU matches the dialog)");
}

#[test]
fn rfc3261_17_1_3_cancel_response_does_not_reach_invite_and_9_1_guard() {
    let mut l = layer();
    let (inv, inv_id) = send(&mut l, Method::Invite, "z9hG4bKcan");
    l.on_response(at(100), udp(PBX), &response_to(&inv, 180));
    let cancel = request(Method::Cancel, "z9hG4bKcan", "192.0.2.1:5060");
    let c_id = l.send_request(at(1_000), udp(PBX), &cancel);
    assert_ne!(c_id, inv_id);
    let v = l.on_response(at(1_100), udp(PBX), &response_to(&cancel, 200));
    assert!(matches!(v, Some((i, ClientVerdict::Final(_))) if i == c_id));
    // The INVITE's peer never sends the 487: §9.1 ends it 64*T1 after the CANCEL.
    let outs = run_until(&mut l, at(60_000));
    assert_eq!(events(&outs), vec![(33_000, TxnEvent::ClientTimeout(inv_id))]);
    assert_eq!(l.live(), (0, 0));
}

#[test]
fn rfc3261_17_1_tcp_client_has_no_retransmissions() {
    let mut l = layer();
    let inv = request(Method::Invite, "z9hG4bKtcp", "192.0.2.1:5060");
    let id = l.send_request(t0(), tcp(PBX), &inv);
    let outs = run_until(&mut l, at(60_000));
    assert_eq!(transmit_times(&outs), vec![0], "no Timer A on TCP");
    assert_eq!(events(&outs), vec![(32_000, TxnEvent::ClientTimeout(id))], "Timer B still applies");

    let bye = request(Method::Bye, "z9hG4bKtcpb", "192.0.2.1:5060");
    let id = l.send_request(t0(), tcp(PBX), &bye);
    assert_eq!(transmit_times(&run_until(&mut l, at(5_000))), vec![0], "no Timer E on TCP");
    assert!(l.on_response(at(5_000), tcp(PBX), &response_to(&bye, 200)).is_some_and(|(i, _)| i == id));
    assert_eq!(l.live(), (0, 0), "Timer K is zero on TCP");

    let inv2 = request(Method::Invite, "z9hG4bKtcp2", "192.0.2.1:5060");
    l.send_request(t0(), tcp(PBX), &inv2);
    drain(&mut l);
    l.on_response(at(100), tcp(PBX), &response_to(&inv2, 486));
    assert_eq!(drain(&mut l).len(), 1, "the ACK");
    assert_eq!(l.live(), (0, 0), "Timer D is zero on TCP");
}

#[test]
fn stray_responses_and_stale_client_ids_are_ignored() {
    let mut l = layer();
    let other = request(Method::Invite, "z9hG4bKnobody", "192.0.2.1:5060");
    assert_eq!(l.on_response(t0(), udp(PBX), &response_to(&other, 200)), None);
    let mut no_via = response_to(&other, 200);
    no_via.common.via.clear();
    assert_eq!(l.on_response(t0(), udp(PBX), &no_via), None);

    let (req, id) = send(&mut l, Method::Options, "z9hG4bKo");
    l.transport_error(id);
    assert_eq!(drain(&mut l).last(), Some(&TxnOutput::Event(TxnEvent::ClientTimeout(id))));
    assert_eq!(l.live(), (0, 0));
    l.transport_error(id);
    assert!(drain(&mut l).is_empty(), "stale id: no second event");
    assert!(l.client_request(id).is_none());
    assert_eq!(l.on_response(t0(), udp(PBX), &response_to(&req, 200)), None);
    // A new transaction in the reused slot is not reachable through the old id.
    let (_, id2) = send(&mut l, Method::Options, "z9hG4bKo2");
    assert_ne!(id, id2);
    l.transport_error(id);
    assert_eq!(l.live(), (0, 1));
    assert!(l.client_request(id2).is_some());
    l.transport_error(id2);
    assert_eq!(l.live(), (0, 0));
}

#[test]
fn ack_is_never_a_client_transaction() {
    let mut l = layer();
    let ack = request(Method::Ack, "z9hG4bKack2xx", "192.0.2.1:5060");
    let id = l.send_request(t0(), udp(PBX), &ack);
    assert_eq!(only_transmit(&drain(&mut l)).0, udp(PBX));
    assert_eq!(l.live(), (0, 0));
    assert!(l.client_request(id).is_none());
    l.send_stateless(udp(PBX), ack.encode(), crate::txn::MsgKind::request(&Method::Ack));
    assert_eq!(only_transmit(&drain(&mut l)).1.as_bytes(), &ack.encode()[..]);
    assert_eq!(l.poll_timeout(), None);
}

#[test]
fn handle_timeout_early_or_twice_does_nothing() {
    let mut l = layer();
    send(&mut l, Method::Invite, "z9hG4bKtw");
    drain(&mut l);
    l.handle_timeout(at(499));
    assert!(drain(&mut l).is_empty());
    l.handle_timeout(at(500));
    assert_eq!(drain(&mut l).len(), 1);
    l.handle_timeout(at(500));
    assert!(drain(&mut l).is_empty());
    assert_eq!(l.poll_timeout(), Some(at(1_500)));
}

#[test]
fn rfc3261_17_1_1_2_timer_a_resends_and_re_acks_count_as_retransmitted_requests() {
    let mut l = layer();
    let (_, _) = send(&mut l, Method::Invite, "z9hG4bKsa");
    run_until(&mut l, at(60_000));
    assert_eq!(l.stats(), TxnStats { retransmitted_requests: 6, ..TxnStats::default() }, "A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s");
    let (req, _) = send(&mut l, Method::Invite, "z9hG4bKsb");
    let busy = response_to(&req, 486);
    assert!(l.on_response(t0(), udp(PBX), &busy).is_some());
    assert_eq!(l.on_response(t0(), udp(PBX), &busy), None, "the retransmitted final is absorbed and re-ACKed");
    assert_eq!(l.stats().retransmitted_requests, 7, "the re-sent ACK is a retransmitted request; the first ACK is not");
    assert_eq!(l.stats().retransmitted_responses, 0);
}

#[test]
fn every_message_in_and_out_is_counted_retransmissions_included() {
    use crate::txn::MsgKind;
    let mut l = layer();
    let (_, _) = send(&mut l, Method::Invite, "z9hG4bKca");
    run_until(&mut l, at(60_000));
    let (req, _) = send(&mut l, Method::Invite, "z9hG4bKcb");
    let busy = response_to(&req, 486);
    assert!(l.on_response(t0(), udp(PBX), &busy).is_some());
    assert_eq!(l.on_response(t0(), udp(PBX), &busy), None);
    let c = l.counts();
    assert_eq!(c.get(true, MsgKind::request(&Method::Invite)), 1 + 6 + 1, "two INVITEs, the first sent again six times");
    assert_eq!(c.get(true, MsgKind::request(&Method::Ack)), 2, "the ACK and its re-send");
    assert_eq!(c.get(false, MsgKind::response(486, &Method::Invite)), 2, "the 486 and its retransmission");
    assert_eq!(c.iter().count(), 3, "nothing else: {:?}", c.iter().collect::<Vec<_>>());
}
