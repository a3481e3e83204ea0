//! The journal at message level (the scripted test world): which groups a park writes, what waits for them,
//! a REFER's NOTIFY across a failed write, a park CANCELled while its group syncs.

use crate::core::testkit::{Phone, World};
use crate::journal::{Record, RecordKind};
use crate::media::MediaCommand;
use crate::sip::Method;
use std::time::Duration;

fn phone(name: &'static str, port: u16) -> Phone {
    Phone { call_id: format!("{name}-call"), ..Phone::new(name, port) }
}

fn journaled() -> World {
    let mut w = World::new();
    w.core.set_journaling(true);
    w
}

/// Parks `p` on 700 with journaling on: the INVITE, the durable report, the ACK. Returns parkd's tag.
fn park(w: &mut World, p: &Phone) -> String {
    let since = w.sent.len();
    w.deliver(p.peer, &p.invite("700", "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&p.sdp("0", "sendrecv"))));
    assert!(w.responses_to(p.peer, since).is_empty(), "nothing before the group is durable");
    let token = w.last_token().expect("the park's group has a token");
    w.durable(token, true);
    let ok = w.last_response_to(p.peer, since);
    assert_eq!(ok.status, 200);
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(p.peer, &p.ack("700", &tag, p.cseq, None));
    tag
}

fn kinds(group: &[Record]) -> Vec<(bool, RecordKind)> {
    group.iter().map(|r| (matches!(r, Record::Put { .. }), r.key().kind)).collect()
}

#[test]
fn a_park_writes_two_small_groups_and_keepalives_write_nothing() {
    let mut w = World::with_lots(vec![{
        let mut l = crate::config::LotConfig::default_lot();
        l.keepalive_interval = 5;
        l.parking_time = 0;
        l
    }]);
    w.core.set_journaling(true);
    let bob = phone("bob", 5070);
    park(&mut w, &bob);
    assert_eq!(w.journal.len(), 2, "the INVITE's group, then the ACK's (leg confirmed, hold anchor)");
    assert_eq!(kinds(&w.journal[0].0), [(true, RecordKind::PARKED_CALL)]);
    let sizes: Vec<usize> = w.journal.iter().flat_map(|(g, _)| g.iter()).map(|r| match r {
        Record::Put { value, .. } => value.len(),
        Record::Delete { .. } => 0,
    }).collect();
    assert!(sizes.iter().all(|n| *n < 1024), "a parked call's record is small: {sizes:?}");
    assert!(w.media.iter().any(|m| matches!(m, MediaCommand::Stream { .. })), "parkd chose the hold stream's identity");
    // Ten minutes of keepalives (answered) and the phone's own OPTIONS: no write.
    for i in 0..120u32 {
        let since = w.sent.len();
        w.advance(Duration::from_secs(5));
        if let Some(opt) = w.requests_to(bob.peer, since).into_iter().find(|r| r.method == Method::Options) {
            w.deliver(bob.peer, &bob.ok_to(&opt));
        }
        if i % 10 == 0 {
            let tag = w.core.dialogs.iter().next().map(|l| l.dialog.local_tag().to_string()).unwrap();
            w.deliver(bob.peer, &bob.in_dialog("OPTIONS", "700", &tag, 10 + i, None));
        }
    }
    assert_eq!(w.journal.len(), 3, "one write when the CSeq crossed its reserved block (100 keepalives), none per keepalive");
}

#[test]
fn a_retrieve_turns_the_parked_record_into_a_bridge_record_in_one_group() {
    let mut w = journaled();
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    park(&mut w, &bob);
    let n = w.journal.len();
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(carol.peer, since).status, 200, "a retrieve is not held");
    assert_eq!(kinds(&w.journal[n].0), [(false, RecordKind::PARKED_CALL), (true, RecordKind::BRIDGE)]);
    assert_eq!(w.journal[n].1, None, "nothing waits for it");
}

#[test]
fn a_refers_final_notify_waits_for_its_records_and_a_failed_write_bridges_the_call_again() {
    for ok in [true, false] {
        let mut w = journaled();
        let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
        park(&mut w, &bob);
        let since = w.sent.len();
        w.deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
        let tag = w.last_response_to(carol.peer, since).common.to.tag().unwrap().to_string();
        w.deliver(carol.peer, &carol.ack("701", &tag, carol.cseq, None));
        assert!(w.media.iter().any(|m| matches!(m, MediaCommand::Bridge { .. })));
        let since = w.sent.len();
        let refer = carol.in_dialog("REFER", "701", &tag, 2, None).replacen("Contact:", "Refer-To: <sip:700@127.0.0.1:5060>\nContact:", 1);
        w.deliver(carol.peer, &refer);
        let notifies = |w: &World| w.requests_to(carol.peer, since).into_iter().filter(|r| r.method == Method::Notify).collect::<Vec<_>>();
        assert_eq!(notifies(&w).len(), 1, "only 100 Trying before the re-park is durable");
        let media_before = w.media.len();
        w.durable(w.last_token().unwrap(), ok);
        let n = notifies(&w);
        assert_eq!(n.len(), 2);
        if ok {
            assert_eq!(&n[1].common.body[..], b"SIP/2.0 200 OK\r\nPark-Orbit: 701\r\n");
            assert_eq!(w.core.live().orbits_occupied, 1);
        } else {
            assert!(n[1].common.body.starts_with(b"SIP/2.0 500"), "{:?}", n[1].common.body);
            assert_eq!(w.core.live().orbits_occupied, 0, "the re-park is undone");
            assert!(w.media[media_before..].iter().any(|m| matches!(m, MediaCommand::Bridge { .. })), "Bob and Carol are bridged again");
            assert_eq!(w.core.bridging.len(), 1);
        }
    }
}

#[test]
fn a_park_cancelled_while_its_group_syncs_is_undone() {
    let mut w = journaled();
    let bob = phone("bob", 5070);
    let since = w.sent.len();
    w.deliver(bob.peer, &bob.invite("700", "", Some(&bob.sdp("0", "sendrecv"))));
    let token = w.last_token().unwrap();
    // RFC 3261 §9.1: the CANCEL carries the INVITE's branch and CSeq number.
    let inv_branch = format!("z9hG4bK-{}-{}", bob.call_id.replace('@', "."), bob.cseq);
    let cancel = bob.request("CANCEL", "700", "", None).replace(&format!("z9hG4bK-{}-cancel-{}", bob.call_id.replace('@', "."), bob.cseq), &inv_branch);
    w.deliver(bob.peer, &cancel);
    let statuses: Vec<u16> = w.responses_to(bob.peer, since).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 487], "CANCEL answered, INVITE 487");
    w.durable(token, true);
    assert!(w.responses_to(bob.peer, since).iter().all(|r| r.status != 200 || r.common.cseq.method == Method::Cancel), "no 200 to the INVITE");
    assert_eq!(w.core.live().orbits_occupied, 0);
    assert_eq!(w.core.live().legs, 0);
    assert!(!w.events.iter().any(|e| matches!(e, crate::core::ParkEvent::Parked { .. })), "never reported as parked: {:?}", w.events);
    let last = &w.journal.last().unwrap().0;
    assert_eq!(kinds(last), [(false, RecordKind::PARKED_CALL)], "the park's delete is written");
}

#[test]
fn a_thousand_parked_calls_restore_whole_with_their_streams() {
    let mut lot = crate::config::LotConfig::default_lot();
    lot.orbits = crate::config::NumRange::parse("1000-2999").unwrap();
    let server = crate::config::ServerConfig {
        listen: "127.0.0.1:5060".parse().unwrap(),
        advertise: None,
        rtp_ports: crate::config::NumRange::parse("20000-23999").unwrap(),
        outbound_proxy: None,
        ..crate::config::ServerConfig::default()
    };
    let mut w = World::with_server(server.clone(), vec![lot.clone()]);
    w.core.set_journaling(true);
    for i in 0..1000u16 {
        // One phone per address: the per-source limits do not apply across them.
        let peer = crate::sip::Peer { transport: crate::sip::Transport::Udp, addr: std::net::SocketAddr::from(([127, 1, (i / 200) as u8, (i % 200) as u8 + 1], 5070)) };
        let p = Phone { call_id: format!("call-{i}"), peer, ..Phone::new("p", 5070) };
        park(&mut w, &p);
    }
    let live = crate::journal::LiveSet::replay(w.journal.iter().flat_map(|(g, _)| g.iter().cloned()));
    let bytes: usize = live.iter().map(|(_, v)| v.len()).sum();
    let mut fresh = World::with_server(server, vec![lot]);
    fresh.core.set_journaling(true);
    let report = fresh.core.restore(&live, fresh.now);
    let mut streams = 0;
    let mut groups = 0;
    while let Some(o) = fresh.core.poll_output() {
        match o {
            crate::core::Output::Media(MediaCommand::Stream { .. }) => streams += 1,
            crate::core::Output::Journal { .. } => groups += 1,
            _ => {}
        }
    }
    assert_eq!((report.parked, report.skipped.len()), (1000, 0), "{report:?}");
    assert_eq!(streams, 1000, "every hold stream resumes");
    assert_eq!(fresh.core.live().orbits_occupied, 1000);
    eprintln!(
        "figures: 1000 parked calls: {} live records, {} bytes of values ({} per call), rewritten in {groups} groups (restore time: the bench's restart step)",
        live.len(),
        bytes,
        bytes / 1000
    );
}

#[test]
fn damaged_values_are_skipped_never_a_panic() {
    let mut w = journaled();
    let (bob, carol, dave) = (phone("bob", 5070), phone("carol", 5071), phone("dave", 5072));
    park(&mut w, &bob);
    park(&mut w, &carol);
    let since = w.sent.len();
    w.deliver(dave.peer, &dave.invite("702", "", Some(&dave.sdp("0", "sendrecv"))));
    let tag = w.last_response_to(dave.peer, since).common.to.tag().unwrap().to_string();
    w.deliver(dave.peer, &dave.ack("702", &tag, dave.cseq, None));
    let live = crate::journal::LiveSet::replay(w.journal.iter().flat_map(|(g, _)| g.iter().cloned()));
    assert_eq!(live.len(), 2, "a parked call and a bridge");
    let mut restored = 0;
    for (key, value) in live.iter() {
        // Every byte flipped and every truncation of each value, restored beside the other, intact record.
        let mut variants: Vec<Vec<u8>> = (0..value.len()).map(|i| {
            let mut v = value.to_vec();
            v[i] ^= 0x5a;
            v
        }).collect();
        variants.extend((0..value.len()).map(|n| value[..n].to_vec()));
        for v in variants {
            let mut damaged = live.clone();
            damaged.apply(Record::put(key.clone(), v));
            let mut fresh = journaled();
            let report = fresh.core.restore(&damaged, fresh.now);
            assert!(report.parked + report.bridged + report.skipped.len() >= 2, "every record is restored or reported: {report:?}");
            restored += report.parked + report.bridged;
        }
    }
    assert!(restored > 0);
}

#[test]
fn a_store_that_never_answers_costs_a_park_a_500_after_the_stall_time_and_frees_its_orbit() {
    let mut w = journaled();
    let bob = phone("bob", 5070);
    let since = w.sent.len();
    w.deliver(bob.peer, &bob.invite("700", "", Some(&bob.sdp("0", "sendrecv"))));
    let token = w.last_token().expect("the park's group has a token");
    w.advance(super::ack::JOURNAL_STALL - Duration::from_millis(100));
    assert!(w.responses_to(bob.peer, since).iter().all(|r| r.status < 200), "still waiting just before the stall time");
    assert_eq!(w.core.live().orbits_occupied, 1);
    w.advance(Duration::from_millis(200));
    let refused = w.last_response_to(bob.peer, since);
    assert_eq!((refused.status, refused.reason.as_str()), (500, super::ack::NOT_STORED));
    assert_eq!(w.core.live().orbits_occupied, 0, "the orbit is free again");
    assert_eq!(w.core.journal_waiting(), 0);
    // The store wakes up and reports the old group durable: nothing more happens for it.
    let sent = w.sent.len();
    w.durable(token, true);
    assert!(w.responses_to(bob.peer, sent).is_empty(), "no late 200 after the 500");
    // The refusal wrote the park's delete after its put, so a restart would not bring it back.
    let last = w.journal.last().expect("a group after the refusal");
    assert!(last.0.iter().any(|r| matches!(r, Record::Delete { key } if key.kind == RecordKind::PARKED_CALL)), "{:?}", w.journal);
}
