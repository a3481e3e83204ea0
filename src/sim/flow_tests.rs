//! Whole park flows on a lossy, reordering network in virtual time: SIP outcomes and what each phone heard.

use super::*;
use crate::core::Live;
use crate::sip::Method;

/// 10 % loss, 20–60 ms latency (reorders 20 ms RTP), 2 % duplicates, on SIP and RTP alike.
fn lossy_net(seed: u64) -> Net {
    Net::new(NetConfig::new(seed).links(LinkConfig::lossy(0.10), LinkConfig::lossy(0.10)))
}

fn confirmed(net: &Net, p: PhoneId, c: CallId) -> bool {
    net.phone(p).call(c).state == CallState::Confirmed
}

/// The phone's call that parkd placed to it (a recall), if any.
fn incoming(net: &Net, p: PhoneId) -> Option<CallId> {
    net.phone(p).calls.iter().position(|c| !c.uac).map(CallId)
}

fn event(net: &Net, f: impl Fn(&ParkEvent) -> bool) -> Option<Time> {
    net.events.iter().find(|(_, e)| f(e)).map(|(t, _)| *t)
}

/// Ends the scenario: everything the core and the media plane held is gone once transactions time out.
fn assert_all_released(net: &mut Net) {
    net.run_for(secs(40));
    assert_eq!(net.core.live(), Live::default(), "core state left behind");
    let m = net.media.stats();
    assert_eq!((m.legs, m.hold_streams, m.bridged_pairs), (0, 0, 0), "media legs left behind");
    assert!(net.run_until_idle(1_000), "nothing pending any more: next event at {:?}", net.next_event());
}

/// Checks a sink's stream: one SSRC, a timeline that only jumps at a marker, voice frames in step.
fn assert_stream_sound(net: &Net, p: PhoneId, who: &str) {
    let r = net.phone(p).sink.report();
    assert_eq!(r.ssrcs.len(), 1, "{who} hears one stream from parkd: {r:?}");
    assert_eq!(r.ts_breaks, 0, "{who}: RTP timestamps jump without a marker: {r:?}");
    assert_eq!(r.voice_out_of_step, 0, "{who}: relayed frames out of step with their sequence numbers: {r:?}");
}

/// SIP datagrams lost on the phones' paths, and retransmissions by parkd and the phones.
fn sip_repairs(net: &Net, phones: &[PhoneId]) -> (u64, u64) {
    let lost = phones.iter().map(|p| net.path_counts(*p)[..2].iter().map(|(_, l)| l).sum::<u64>()).sum();
    let r = net.core.stats().retransmissions;
    let phone_retx: u64 = phones.iter().map(|p| net.phone(*p).retransmissions).sum();
    (lost, r.retransmitted_requests + r.retransmitted_responses + phone_retx)
}

/// Park → 45 s of music → recall → the parker answers → audio both ways → the parker hangs up, with `seed`.
/// Returns (SIP datagrams lost, SIP retransmissions).
fn park_recall_answer_hang_up(seed: u64) -> (u64, u64) {
    let mut net = Net::new(NetConfig::new(seed).links(LinkConfig::lossy(0.20), LinkConfig::lossy(0.10)));
    let alice = net.add_phone(PhoneConfig::new("alice", 5999));
    let bob = net.add_phone(PhoneConfig::new("bob", 5070));

    // Bob is blind-transferred to 700 by Alice: parked in 701, hearing music.
    let park = net.park(bob, "700", Some(alice));
    assert!(net.run_until(secs(10), |n| confirmed(n, bob, park)), "park answered over the lossy link");
    let ok = net.phone(bob).call(park).final_response.clone().expect("final response");
    assert_eq!(ok.common.header("Park-Orbit"), Some("701"));
    assert!(net.run_until(secs(5), |n| event(n, |e| matches!(e, ParkEvent::Parked { .. })).is_some()));
    let parked_at = event(&net, |e| matches!(e, ParkEvent::Parked { .. })).unwrap();

    // 45 s later parkd calls Alice back; she answers after 2 s of ringing.
    assert!(net.run_until(secs(60), |n| incoming(n, alice).is_some()), "recall reaches the parker");
    let recall = incoming(&net, alice).unwrap();
    let started = event(&net, |e| matches!(e, ParkEvent::RecallStarted { round: 1, .. })).expect("recall started");
    assert_eq!((started - parked_at).as_secs(), 45, "recall after the 45 s parking time");
    let inv = net.phone(alice).call(recall).invite_in.clone().unwrap();
    assert_eq!(inv.common.header("Park-Recall"), Some("callback;orbit=701;lot=default;round=1"));
    let music_before = net.phone(bob).sink.count(Kind::Music);
    assert!(music_before > 45 * 50 * 8 / 10, "about 50 music packets a second while parked, 10 % lost: {music_before}");
    assert_eq!(net.phone(alice).sink.heard.len(), 0, "the parker hears nothing while it rings");

    assert!(net.run_until(secs(10), |n| confirmed(n, alice, recall)), "the parker answers");
    assert!(net.run_until(secs(5), |n| event(n, |e| matches!(e, ParkEvent::RecallAnswered { .. })).is_some()));
    net.run_for(secs(5));

    // Bob heard music, then Alice; Alice heard only Bob. No music after the bridge, whatever the reordering.
    let (a, b) = (alice.talker(), bob.talker());
    assert_eq!(net.phone(bob).sink.story(1), vec![Kind::Music, Kind::Voice(a)]);
    assert_eq!(net.phone(alice).sink.story(1), vec![Kind::Voice(b)]);
    assert!(net.phone(bob).sink.count(Kind::Voice(a)) > 5 * 50 * 7 / 10, "5 s of Alice reach Bob");
    assert!(net.phone(alice).sink.count(Kind::Voice(b)) > 5 * 50 * 7 / 10, "5 s of Bob reach Alice");
    assert_stream_sound(&net, bob, "bob");
    assert_stream_sound(&net, alice, "alice");
    let bob_report = net.phone(bob).sink.report();
    assert!(bob_report.lost > 0 && bob_report.reordered > 0 && bob_report.duplicates > 0, "the link did its worst: {bob_report:?}");

    // Alice hangs up: parkd BYEs Bob; nothing is heard after that, everything is released.
    net.hangup(alice, recall);
    assert!(net.run_until(secs(10), |n| n.phone(bob).call(park).state == CallState::Ended(End::ByPeer)), "parkd hangs Bob up");
    assert!(event(&net, |e| matches!(e, ParkEvent::Ended { .. })).is_some());
    let quiet = net.now + Duration::from_millis(200);
    net.run_for(secs(2));
    assert_eq!(net.phone(bob).sink.since(quiet).count(), 0, "no audio after the hang-up");
    assert_all_released(&mut net);
    sip_repairs(&net, &[alice, bob])
}

#[test]
fn park_recall_answer_bridge_and_hang_up_over_a_lossy_link() {
    // A handful of seeds so that SIP losses certainly happen (20 % on SIP, 10 % on RTP) and get repaired.
    let (lost, retx) = (1..=4).map(park_recall_answer_hang_up).fold((0, 0), |(l, r), (l2, r2)| (l + l2, r + r2));
    assert!(lost > 0, "SIP datagrams were lost");
    assert!(retx > 0, "and retransmissions repaired the flows");
}

#[test]
fn park_then_retrieve_bridges_audio_both_ways_over_a_lossy_link() {
    let mut net = lossy_net(3);
    let alice = net.add_phone(PhoneConfig::new("alice", 5999));
    let bob = net.add_phone(PhoneConfig::new("bob", 5070));
    let carol = net.add_phone(PhoneConfig::new("carol", 5071));

    let park = net.park(bob, "700", Some(alice));
    assert!(net.run_until(secs(10), |n| confirmed(n, bob, park)));
    net.run_for(secs(10));
    assert!(net.phone(bob).sink.count(Kind::Music) > 0, "music while parked");

    let get = net.call(carol, "701", "");
    assert!(net.run_until(secs(10), |n| confirmed(n, carol, get)), "retrieve answered");
    let ok = net.phone(carol).call(get).final_response.clone().unwrap();
    assert_eq!(ok.common.header("Park-Orbit"), Some("701"));
    assert!(ok.common.header("P-Asserted-Identity").is_some_and(|v| v.contains("bob")), "the retriever learns whom it got");
    net.run_for(secs(4));

    assert_eq!(net.phone(bob).sink.story(1), vec![Kind::Music, Kind::Voice(carol.talker())]);
    assert_eq!(net.phone(carol).sink.story(1), vec![Kind::Voice(bob.talker())]);
    assert_stream_sound(&net, bob, "bob");
    assert_stream_sound(&net, carol, "carol");
    assert!(event(&net, |e| matches!(e, ParkEvent::Retrieved { orbit, .. } if orbit == "701")).is_some());
    assert_eq!(net.core.live().orbits_occupied, 0);
    assert!(net.phone(alice).calls.is_empty(), "no recall after a retrieve");

    // Carol holds (re-INVITE sendonly): parkd stops relaying Bob to her but still relays her to Bob; then resumes.
    net.reinvite(carol, get, "sendonly");
    assert!(net.run_until(secs(10), |n| n.phone(carol).call(get).final_response.as_ref().is_some_and(|r| r.common.cseq.seq == 2)), "hold answered");
    let held = net.now + Duration::from_millis(200);
    net.run_for(secs(2));
    assert_eq!(net.phone(carol).sink.since(held).count(), 0, "nothing sent to a phone that holds");
    assert!(net.phone(bob).sink.since(held).filter(|h| h.sound.kind() == Kind::Voice(carol.talker())).count() > 50, "the holder still talks");
    net.reinvite(carol, get, "sendrecv");
    assert!(net.run_until(secs(10), |n| n.phone(carol).call(get).final_response.as_ref().is_some_and(|r| r.common.cseq.seq == 3)), "resume answered");
    let resumed = net.now + Duration::from_millis(200);
    net.run_for(secs(2));
    assert!(net.phone(carol).sink.since(resumed).count() > 50, "Bob is heard again after the resume");
    assert_eq!(net.phone(carol).sink.story(1), vec![Kind::Voice(bob.talker())]);
    assert_stream_sound(&net, carol, "carol");

    // Bob hangs up this time: parkd BYEs Carol.
    net.hangup(bob, park);
    assert!(net.run_until(secs(10), |n| n.phone(carol).call(get).state == CallState::Ended(End::ByPeer)));
    assert_all_released(&mut net);
}

#[test]
fn blf_watcher_sees_the_orbit_go_busy_and_idle() {
    let mut net = lossy_net(5);
    let alice = net.add_phone(PhoneConfig::new("alice", 5999));
    let bob = net.add_phone(PhoneConfig::new("bob", 5070));
    let carol = net.add_phone(PhoneConfig::new("carol", 5071));
    let dave = net.add_phone(PhoneConfig::new("dave", 5090));
    let last_state = |n: &Net| n.phone(dave).subs[0].notifies.last().and_then(|x| x.dialog_state().map(str::to_string));

    let sub = net.subscribe(dave, "701", 600);
    assert!(net.run_until(secs(10), |n| n.phone(dave).sub(sub).status == Some(200)), "SUBSCRIBE accepted");
    assert!(net.run_until(secs(10), |n| last_state(n).as_deref() == Some("terminated")), "empty orbit");

    let park = net.park(bob, "701", Some(alice));
    assert!(net.run_until(secs(10), |n| last_state(n).as_deref() == Some("confirmed")), "the key lights up");
    let body = net.phone(dave).sub(sub).notifies.last().unwrap().body.clone();
    assert!(body.contains(&net.phone(bob).call(park).call_id), "dialog-info names the parked dialog: {body}");

    let get = net.call(carol, "701", "");
    assert!(net.run_until(secs(10), |n| confirmed(n, carol, get)));
    assert!(net.run_until(secs(10), |n| last_state(n).as_deref() == Some("terminated")), "the key goes dark");

    // In order of version: idle, busy, idle, each NOTIFY once; versions only grow.
    let mut notes = net.phone(dave).sub(sub).notifies.clone();
    notes.sort_by_key(|x| x.version());
    let versions: Vec<_> = notes.iter().map(|x| x.version()).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "one NOTIFY per version: {versions:?}");
    let mut states: Vec<&str> = notes.iter().filter_map(|x| x.dialog_state()).collect();
    states.dedup();
    assert_eq!(states, ["terminated", "confirmed", "terminated"]);

    net.hangup(carol, get);
    net.resubscribe(dave, sub, 0);
    assert!(net.run_until(secs(10), |n| n.phone(dave).sub(sub).notifies.last().is_some_and(|x| x.state.starts_with("terminated"))), "final NOTIFY");
    assert_all_released(&mut net);
}

#[test]
fn unanswered_recall_is_cancelled_and_the_call_stays_parked_with_music() {
    let mut net = lossy_net(11);
    let alice = net.add_phone(PhoneConfig::new("alice", 5999).on_invite(OnInvite::NoAnswer));
    let bob = net.add_phone(PhoneConfig::new("bob", 5070));
    let park = net.park(bob, "700", Some(alice));
    assert!(net.run_until(secs(10), |n| confirmed(n, bob, park)));
    assert!(net.run_until(secs(60), |n| incoming(n, alice).is_some()));
    let recall = incoming(&net, alice).unwrap();
    // 30 s of ringing, then parkd CANCELs; the phone answers 200 + 487 and parkd ACKs the 487.
    assert!(net.run_until(secs(40), |n| n.phone(alice).call(recall).state == CallState::Ended(End::Cancelled)), "recall cancelled");
    assert!(net.run_until(secs(5), |n| !n.phone(alice).requests(Method::Ack).is_empty()), "the 487 is ACKed");
    assert!(event(&net, |e| matches!(e, ParkEvent::Reparked { round: 1, .. })).is_some());
    let t = net.now;
    net.run_for(secs(5));
    assert!(net.phone(bob).sink.since(t).count() > 5 * 50 * 8 / 10, "still hearing music");
    assert_eq!(net.phone(bob).sink.story(1), vec![Kind::Music]);
    assert_stream_sound(&net, bob, "bob");
    net.hangup(bob, park);
    assert!(net.run_until(secs(10), |n| event(n, |e| matches!(e, ParkEvent::Abandoned { .. })).is_some()));
    assert_all_released(&mut net);
}

#[test]
fn busy_parker_with_the_hangup_fallback_ends_the_parked_call_politely() {
    let mut net = Net::new(NetConfig::new(21).links(LinkConfig::lossy(0.10), LinkConfig::lossy(0.10)).lot(|l| l.recall_fallback = crate::config::RecallFallback::Hangup));
    let alice = net.add_phone(PhoneConfig::new("alice", 5999).on_invite(OnInvite::Busy));
    let bob = net.add_phone(PhoneConfig::new("bob", 5070));
    let park = net.park(bob, "700", Some(alice));
    assert!(net.run_until(secs(10), |n| confirmed(n, bob, park)));
    assert!(net.run_until(secs(60), |n| n.phone(bob).call(park).state == CallState::Ended(End::ByPeer)), "parkd ends the call");
    assert_eq!(net.phone(alice).calls[0].state, CallState::Ended(End::Failed(486)));
    assert!(event(&net, |e| matches!(e, ParkEvent::RecallFailed { status: 486, .. })).is_some());
    let bye = net.phone(bob).requests(Method::Bye)[0].clone();
    assert!(bye.common.header("Reason").is_some_and(|r| r.contains("Recall Not Answered")), "{bye:?}");
    assert_eq!(net.phone(bob).sink.story(1), vec![Kind::Music]);
    assert_all_released(&mut net);
}

#[test]
fn api_unpark_rings_a_phone_that_answers_and_is_bridged() {
    let mut net = lossy_net(8);
    let bob = net.add_phone(PhoneConfig::new("bob", 5070));
    let carol = net.add_phone(PhoneConfig::new("carol", 5071));
    let park = net.park(bob, "700", None);
    assert!(net.run_until(secs(10), |n| confirmed(n, bob, park)));
    net.run_for(secs(5));
    let to = format!("sip:carol@{}", net.phone(carol).cfg.sip);
    // Carol is not the parker: the admin lets the API ring her (`[http] dial_allow`, issue 15).
    net.core.set_dial_allow(vec![crate::config::DialPattern::parse("carol@*").expect("pattern")]);
    let r = net.command(crate::core::Command::Unpark { orbit: "701".into(), to });
    assert!(r.is_ok(), "{r:?}");
    assert!(net.run_until(secs(10), |n| incoming(n, carol).is_some_and(|c| confirmed(n, carol, c))), "carol answers");
    net.run_for(secs(3));
    assert_eq!(net.phone(carol).sink.story(1), vec![Kind::Voice(bob.talker())]);
    // A self-parked caller hears "parked on seven zero one" (prompt frames), music, then Carol.
    assert_eq!(net.phone(bob).sink.story(1), vec![Kind::Other, Kind::Music, Kind::Voice(carol.talker())]);
    assert_stream_sound(&net, bob, "bob");
    let get = incoming(&net, carol).unwrap();
    net.hangup(carol, get);
    assert!(net.run_until(secs(10), |n| n.phone(bob).call(park).state == CallState::Ended(End::ByPeer)));
    assert_all_released(&mut net);
}

/// A short park → retrieve run; returns its trace digest.
fn short_run(seed: u64) -> u64 {
    let mut net = lossy_net(seed);
    let bob = net.add_phone(PhoneConfig::new("bob", 5070));
    let carol = net.add_phone(PhoneConfig::new("carol", 5071));
    net.park(bob, "700", None);
    net.run_for(secs(3));
    net.call(carol, "701", "");
    net.run_for(secs(3));
    net.trace_hash()
}

#[test]
fn the_same_seed_gives_the_same_run() {
    assert_eq!(short_run(9), short_run(9));
    assert_ne!(short_run(9), short_run(10));
}
