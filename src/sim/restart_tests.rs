//! Parked and bridged calls across a crash and a restart (issue 17), as users see them: parkd journals into the
//! net's in-memory store, `kill -9` keeps only what was durable, a new process restores from it.

use super::*;
use crate::core::Live;
use crate::sim::media_sink::Heard;
use crate::sip::Method;

pub(super) fn journaled_net(seed: u64) -> Net {
    Net::new(NetConfig::new(seed).journaled())
}

pub(super) fn confirmed(net: &Net, p: PhoneId, c: CallId) -> bool {
    net.phone(p).call(c).state == CallState::Confirmed
}

pub(super) fn event_at(net: &Net, f: impl Fn(&ParkEvent) -> bool) -> Vec<Time> {
    net.events.iter().filter(|(_, e)| f(e)).map(|(t, _)| *t).collect()
}

/// The music a phone heard, in arrival order, before and from `t`.
pub(super) fn music_split(net: &Net, p: PhoneId, t: Time) -> (Vec<Heard>, Vec<Heard>) {
    net.phone(p).sink.heard.iter().filter(|h| h.sound.kind() == Kind::Music).cloned().partition(|h| h.at < t)
}

/// Bob parked by Alice (Referred-By), confirmed and hearing music for `secs_parked`.
pub(super) fn parked_bob(net: &mut Net, secs_parked: u64) -> (PhoneId, PhoneId, CallId) {
    let alice = net.add_phone(PhoneConfig::new("alice", 5999));
    let bob = net.add_phone(PhoneConfig::new("bob", 5070));
    let park = net.park(bob, "700", Some(alice));
    assert!(net.run_until(secs(5), |n| confirmed(n, bob, park)), "park answered");
    assert_eq!(net.phone(bob).call(park).final_response.as_ref().and_then(|r| r.common.header("Park-Orbit")), Some("701"));
    net.run_for(secs(secs_parked));
    (alice, bob, park)
}

#[test]
fn a_parked_call_keeps_its_orbit_port_ssrc_and_sequence_across_a_crash() {
    let mut net = journaled_net(1);
    let (_alice, bob, park) = parked_bob(&mut net, 10);
    let down = Duration::from_secs(3);
    let crashed_at = net.now;
    let report = net.crash_and_restart_after(down);
    assert_eq!((report.parked, report.bridged, report.skipped.len()), (1, 0, 0), "{report:?}");
    let restarted = net.now;
    net.run_for(secs(5));

    let (before, after) = music_split(&net, bob, restarted);
    let last = before.iter().max_by_key(|h| h.ext_seq).expect("music before the crash");
    let first = after.iter().min_by_key(|h| h.ext_seq).expect("music after the restart");
    assert!(after.len() >= 5 * 50 - 2, "hold music resumes at 50 packets/s: {}", after.len());
    assert_eq!(first.from, last.from, "from the same RTP port (the one in parkd's SDP answer)");
    assert!(after.iter().all(|h| h.from == last.from && h.ssrc == last.ssrc), "same port and SSRC throughout");
    let gap = first.seq.wrapping_sub(last.seq);
    let expected = (restarted - crashed_at).as_millis() as u16 / 20;
    assert!((expected..=expected + 3).contains(&gap), "sequence continues past the downtime: gap {gap}, ~{expected} packets missed");
    let ts_gap = first.ts.wrapping_sub(last.ts) as i64;
    let wall = (first.at - last.at).as_millis() as i64 * 8;
    assert!((ts_gap - wall).abs() <= 320, "timestamps advance with the time that passed: {ts_gap} vs {wall}");
    assert!(first.marker, "the resumed stream starts a talkspurt");
    let r = net.phone(bob).sink.report();
    assert_eq!((r.ssrcs.len(), r.ts_breaks), (1, 0), "one stream, no timeline break without a marker: {r:?}");
    assert_eq!(r.duplicates, 0, "no sequence number sent twice: {r:?}");
    assert_eq!(net.phone(bob).requests(Method::Invite).len(), 0, "parkd never re-INVITEd the parked party");

    // The parked party hangs up: 200, the orbit is free, nothing is left.
    net.hangup(bob, park);
    let bye_ok = |n: &Net| n.phone(bob).responses().iter().any(|r| r.common.cseq.method == Method::Bye && r.status == 200);
    assert!(net.run_until(secs(5), bye_ok), "BYE answered 200: {:?}", net.phone(bob).responses().iter().map(|r| (r.status, r.common.cseq.clone())).collect::<Vec<_>>());
    assert_eq!(net.phone(bob).call(park).state, CallState::Ended(End::HungUp));
    assert_eq!(net.core.live().orbits_occupied, 0);
    net.run_for(secs(40));
    assert_eq!(net.core.live(), Live::default());
    assert!(net.journal.live.is_empty(), "the call's records are deleted: {:?}", net.journal.live);
}

#[test]
fn a_restored_call_is_retrieved_with_audio_both_ways_and_new_parks_avoid_its_orbit() {
    let mut net = journaled_net(2);
    let (_alice, bob, _park) = parked_bob(&mut net, 5);
    net.crash_and_restart();
    // A new park after the restart gets another orbit.
    let dave = net.add_phone(PhoneConfig::new("dave", 5072));
    let dpark = net.park(dave, "700", None);
    assert!(net.run_until(secs(5), |n| confirmed(n, dave, dpark)));
    assert_eq!(net.phone(dave).call(dpark).final_response.as_ref().and_then(|r| r.common.header("Park-Orbit")), Some("702"));
    // Carol retrieves Bob from 701.
    let carol = net.add_phone(PhoneConfig::new("carol", 5071));
    let get = net.call(carol, "701", "");
    assert!(net.run_until(secs(5), |n| confirmed(n, carol, get)), "retrieve of a restored call answered");
    net.run_for(secs(3));
    assert_eq!(net.phone(bob).sink.story(1), vec![Kind::Music, Kind::Voice(carol.talker())]);
    assert_eq!(net.phone(carol).sink.story(1), vec![Kind::Voice(bob.talker())]);
    assert!(net.phone(carol).sink.count(Kind::Voice(bob.talker())) > 100);
    assert_eq!(net.phone(bob).sink.report().ssrcs.len(), 1, "Bob hears one stream from parkd before and after");
}

#[test]
fn a_recall_falls_once_at_its_original_time_across_a_restart() {
    let mut net = journaled_net(3);
    let (alice, _bob, _park) = parked_bob(&mut net, 0);
    let parked_at = event_at(&net, |e| matches!(e, ParkEvent::Parked { .. }))[0];
    net.run_for(secs(15));
    let report = net.crash_and_restart_after(secs(5));
    assert_eq!(report.recalls_restarted, 0, "not due yet");
    assert!(net.run_until(secs(60), |n| !n.phone(alice).calls.is_empty()), "the recall rings the parker");
    let started = event_at(&net, |e| matches!(e, ParkEvent::RecallStarted { .. }));
    assert_eq!(started.len(), 1);
    // The Parked event is reported once the park is durable (2 ms after the INVITE in the sim).
    assert_eq!((started[0] - parked_at).as_millis().div_ceil(1000), 45, "at the original deadline, not 45 s after the restart");
    net.run_for(secs(10));
    assert_eq!(net.phone(alice).calls.len(), 1, "exactly once");
}

#[test]
fn a_recall_due_while_parkd_was_down_starts_at_once_and_once() {
    let mut net = journaled_net(4);
    let (alice, bob, _park) = parked_bob(&mut net, 40);
    let report = net.crash_and_restart_after(secs(10));
    let restarted = net.now;
    assert_eq!(report.recalls_restarted, 1, "{report:?}");
    let started = event_at(&net, |e| matches!(e, ParkEvent::RecallStarted { round: 1, .. }));
    assert_eq!(started, vec![restarted], "the late recall starts at the restart");
    assert!(net.run_until(secs(10), |n| n.phone(alice).calls.first().is_some_and(|c| c.state == CallState::Confirmed)), "Alice answers");
    net.run_for(secs(3));
    assert_eq!(net.phone(alice).calls.len(), 1, "exactly one recall");
    assert_eq!(net.phone(bob).sink.story(1), vec![Kind::Music, Kind::Voice(alice.talker())], "bridged to the parker");
}

#[test]
fn a_recall_ringing_at_the_crash_is_cancelled_and_rung_again() {
    let mut net = journaled_net(5);
    let alice = net.add_phone(PhoneConfig::new("alice", 5999).on_invite(OnInvite::NoAnswer));
    let bob = net.add_phone(PhoneConfig::new("bob", 5070));
    let park = net.park(bob, "700", Some(alice));
    assert!(net.run_until(secs(5), |n| confirmed(n, bob, park)));
    assert!(net.run_until(secs(50), |n| n.phone(alice).calls.first().is_some_and(|c| c.state == CallState::Early)), "the recall rings");
    net.run_for(secs(2));
    let first = net.phone(alice).requests(Method::Invite)[0].clone();
    let report = net.crash_and_restart_after(secs(1));
    assert_eq!(report.recalls_restarted, 1, "{report:?}");
    let retx_before = net.phone(alice).retransmissions;
    net.run_for(secs(2));
    let a = net.phone(alice);
    assert_eq!(a.calls.len(), 2, "rung again once");
    assert_eq!(a.calls[0].state, CallState::Ended(End::Cancelled), "the old INVITE was CANCELled");
    let cancel_at = a.seen.iter().position(|(_, m)| matches!(m, crate::sip::Message::Request(r) if r.method == Method::Cancel)).expect("CANCEL");
    let cancel = match &a.seen[cancel_at].1 {
        crate::sip::Message::Request(r) => r.clone(),
        _ => unreachable!(),
    };
    assert_eq!(cancel.common.via[0].branch(), first.common.via[0].branch(), "the journaled branch");
    assert_eq!(cancel.common.call_id, first.common.call_id);
    let second_invite_at = a.seen.iter().position(|(_, m)| matches!(m, crate::sip::Message::Request(r) if r.method == Method::Invite && r.common.call_id != first.common.call_id)).expect("a new recall");
    // The old INVITE's 487 is ACKed (RFC 3261 §17.1.1.3: its branch, the 487's To tag), before the new INVITE.
    let ack_at = a.seen.iter().position(|(_, m)| matches!(m, crate::sip::Message::Request(r) if r.method == Method::Ack && r.common.call_id == first.common.call_id)).expect("the 487 is ACKed");
    let ack = match &a.seen[ack_at].1 {
        crate::sip::Message::Request(r) => r.clone(),
        _ => unreachable!(),
    };
    assert_eq!(ack.common.via[0].branch(), first.common.via[0].branch());
    assert_eq!((ack.common.cseq.seq, ack.common.to.tag()), (first.common.cseq.seq, Some(a.calls[0].local_tag.as_str())));
    assert!(cancel_at < ack_at && ack_at < second_invite_at, "never two recalls ringing at once: the new one after the old one's 487");
    assert_eq!(a.retransmissions, retx_before, "the 487 was ACKed at once: Alice never had to send it again");
    assert_eq!(net.phone(alice).calls[1].state, CallState::Early, "the new recall rings");
}

#[test]
fn requests_in_restored_dialogs_carry_higher_cseqs() {
    let mut net = Net::new(NetConfig::new(6).journaled().lot(|l| l.keepalive_interval = 2));
    let (_alice, bob, park) = parked_bob(&mut net, 11);
    let cseqs = |n: &Net| n.phone(bob).requests(Method::Options).iter().map(|r| r.common.cseq.seq).collect::<Vec<_>>();
    let before = cseqs(&net);
    assert!(before.len() >= 5, "keepalives before the crash: {before:?}");
    net.crash_and_restart();
    net.run_for(secs(5));
    let after: Vec<u32> = cseqs(&net).split_off(before.len());
    assert!(!after.is_empty(), "keepalives go on after the restart");
    let max_before = before.iter().max().copied().unwrap_or(0);
    assert!(after.iter().all(|c| *c > max_before), "CSeq above every one sent before: {before:?} then {after:?}");
    // parkd's BYE (the attendant hangs up) too, and the phone accepts it.
    let r = net.command(crate::core::Command::Hangup { orbit: "701".into() });
    assert!(r.is_ok(), "{r:?}");
    assert!(net.run_until(secs(5), |n| n.phone(bob).call(park).state == CallState::Ended(End::ByPeer)));
    let bye = net.phone(bob).requests(Method::Bye)[0].common.cseq.seq;
    assert!(bye > *after.iter().max().unwrap_or(&0));
    net.run_for(secs(1));
    assert!(net.journal.live.is_empty(), "{:?}", net.journal.live.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>());
}

#[test]
fn a_max_park_time_passed_while_down_ends_the_call_at_the_restart() {
    let mut net = Net::new(NetConfig::new(7).journaled().lot(|l| l.max_park_time = 30));
    let (_alice, bob, park) = parked_bob(&mut net, 20);
    net.crash_and_restart_after(secs(15));
    assert!(net.run_until(secs(2), |n| n.phone(bob).call(park).state == CallState::Ended(End::ByPeer)), "BYE at the restart");
    assert_eq!(net.core.live().orbits_occupied, 0);
    net.run_for(secs(40));
    assert_eq!(net.core.live(), Live::default());
    assert!(net.journal.live.is_empty());
}

#[test]
fn over_a_lossy_link_two_crashes_keep_one_clean_stream_and_the_recall_still_comes() {
    let mut net = Net::new(NetConfig::new(8).journaled().links(LinkConfig::lossy(0.10), LinkConfig::lossy(0.10)));
    let (alice, bob, _park) = parked_bob(&mut net, 10);
    net.crash_and_restart_after(secs(2));
    net.run_for(secs(10));
    net.crash_and_restart_after(secs(1));
    assert!(net.run_until(secs(40), |n| n.phone(alice).calls.first().is_some_and(|c| c.state == CallState::Confirmed)), "the recall rings and is answered");
    net.run_for(secs(3));
    let r = net.phone(bob).sink.report();
    assert_eq!(r.ssrcs.len(), 1, "one stream across two restarts: {r:?}");
    assert_eq!(r.ts_breaks, 0, "the timeline only jumps at the resumes' markers (a reused sequence number would break it): {r:?}");
    assert_eq!(net.phone(bob).sink.story(10), vec![Kind::Music, Kind::Voice(alice.talker())]);
    assert_eq!(net.phone(alice).calls.len(), 1, "one recall");
}
