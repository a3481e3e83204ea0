//! Recalls across a restart (issue 17): deadlines are absolute wall-clock times, journaled with the call. A
//! recall falls at its original time when parkd was back before it, at once when it passed while parkd was
//! down, and exactly once; a recall that was ringing at the crash is CANCELled and started again, never two
//! rings at the parker at the same time. A SIPp UAS plays the parker and keeps running across the restart.

use sip_tests::checks::{expect_hold_music, expect_peer_audio};
use sip_tests::sip::sipp::SippOutcome;
use sip_tests::{Parkd, ParkdOptions, RtpEndpoint, Sipp};
use std::time::{Duration, Instant};

const BOB: u8 = 0xB0;
const ALICE: u8 = 0xA0;
const SIPP_TIMEOUT: Duration = Duration::from_secs(90);

fn parkd_with(test: &str, parking_time: u32, lot_keys: &str) -> Parkd {
    let config = format!("[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\n{lot_keys}\n");
    Parkd::start_with(test, ParkdOptions { parking_time, config: Some(config), ..Default::default() })
}

/// Arrival times (SIPp's clock, seconds) of the received messages starting with `prefix`.
fn arrivals(out: &SippOutcome, prefix: &str) -> Vec<f64> {
    out.received_timed().into_iter().filter(|(_, m)| m.starts_with(prefix)).map(|(t, _)| t).collect()
}

/// Seconds since midnight UTC now, on the clock SIPp's logs use.
fn sipp_clock_now() -> f64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() % 86_400) as f64 + f64::from(d.subsec_micros()) / 1e6
}

/// Parking time 6 s; parkd is killed 2 s after the park and started again at once: the recall falls at its
/// original deadline (about 6 s after the park), once; the parker answers and the two talk.
#[test]
fn recall_falls_once_at_its_original_deadline_across_kill_9() {
    let mut parkd = parkd_with("restart_recall_on_time", 6, "");
    let alice = RtpEndpoint::bind("alice (parker)");
    alice.start_talking(ALICE);
    let alice_run = Sipp::new("recall_parker_answers").rtp_port(alice.port()).hold_ms(3000).timeout(SIPP_TIMEOUT).spawn(&parkd);
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::parked_recallable(bob.port(), alice_run.local_port).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_hold_music(&bob, 25);
    std::thread::sleep(Duration::from_millis(1500));
    parkd.kill9();
    let restarted_at = sipp_clock_now();
    parkd.restart();
    expect_peer_audio(&alice, BOB, 50);
    expect_peer_audio(&bob, ALICE, 50);
    let alice_out = alice_run.wait();
    alice_out.assert_passed(&parkd, "the parker answers the recall after the restart");
    bob_run.wait().assert_passed(&parkd, "bob is recalled to alice across the restart, then hung up");
    let invites = arrivals(&alice_out, "INVITE ");
    assert_eq!(invites.len(), 1, "exactly one recall:\n{}", alice_out.messages);
    assert!(invites[0] > restarted_at, "the recall comes from the restarted parkd");
    eprintln!("recall INVITE {:.2} s after the restart began (the deadline was 6 s after the park, ~4 s before it)", invites[0] - restarted_at);
}

/// Parking time 3 s; parkd is down from 1 s after the park until well after the deadline: the recall starts
/// at once after the restart, exactly once.
#[test]
fn recall_due_while_parkd_was_down_starts_at_once_after_the_restart() {
    let mut parkd = parkd_with("restart_recall_late", 3, "");
    let alice = RtpEndpoint::bind("alice (parker)");
    alice.start_talking(ALICE);
    let alice_run = Sipp::new("recall_parker_answers").rtp_port(alice.port()).hold_ms(2000).timeout(SIPP_TIMEOUT).spawn(&parkd);
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::parked_recallable(bob.port(), alice_run.local_port).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_hold_music(&bob, 10);
    parkd.kill9();
    std::thread::sleep(Duration::from_secs(4));
    let t0 = sipp_clock_now();
    let t = Instant::now();
    parkd.restart();
    let ready = t.elapsed();
    expect_peer_audio(&alice, BOB, 25);
    let alice_out = alice_run.wait();
    alice_out.assert_passed(&parkd, "the overdue recall is answered");
    bob_run.wait().assert_passed(&parkd, "bob is recalled after the restart");
    let invites = arrivals(&alice_out, "INVITE ");
    assert_eq!(invites.len(), 1, "exactly one recall:\n{}", alice_out.messages);
    eprintln!("overdue recall: parkd ready {:.0} ms after the restart began, recall INVITE {:.0} ms after it began", ready.as_secs_f64() * 1e3, (invites[0] - t0) * 1e3);
}

/// The recall rings at the parker when parkd is killed: the restarted parkd CANCELs that ring (its branch was
/// journaled) and rings again, never two rings at once; with `recall_fallback = "hangup"` the second ring
/// times out and bob is hung up.
#[test]
fn recall_ringing_at_the_crash_is_cancelled_and_rung_again() {
    let mut parkd = parkd_with("restart_recall_ringing", 2, "recall_ring_time = 4\nrecall_fallback = \"hangup\"");
    let alice_run = Sipp::new("recall_parker_rings").calls(2).timeout(SIPP_TIMEOUT).spawn(&parkd);
    let bob = RtpEndpoint::bind("bob (parked)");
    let bob_run = Sipp::parked_recallable(bob.port(), alice_run.local_port).timeout(SIPP_TIMEOUT).spawn(&parkd);
    expect_hold_music(&bob, 10);
    if alice_run.wait_for_received(Duration::from_secs(20), |m| m.starts_with("INVITE ")).is_none() {
        panic!("no recall INVITE within 20 s; parkd stderr:\n{}", parkd.stderr_tail(40));
    }
    std::thread::sleep(Duration::from_millis(500));
    parkd.kill9();
    parkd.restart();
    let alice_out = alice_run.wait();
    alice_out.assert_passed(&parkd, "the ring at the crash is CANCELled, the second one too");
    bob_run.wait().assert_passed(&parkd, "bob is hung up after the second ring");
    let invites = arrivals(&alice_out, "INVITE ");
    let cancels = arrivals(&alice_out, "CANCEL ");
    assert_eq!((invites.len(), cancels.len()), (2, 2), "two rings, each CANCELled:\n{}", alice_out.messages);
    assert!(invites[1] >= cancels[0], "the second ring starts after the first was CANCELled (never two at once)");
}
