//! BLF end to end (RFC 6665 / RFC 4235): SUBSCRIBE to an orbit, the dialog-info NOTIFYs, unsubscribe; and
//! per-lot access lists refusing park and SUBSCRIBE from sources the lot does not allow.

use sip_tests::checks::{expect_hold_music, expect_peer_audio, response_header};
use sip_tests::{Parkd, ParkdOptions, RtpEndpoint, Sipp};

/// An empty orbit: 200 with the granted Expires, NOTIFY version 0 with the orbit `terminated`, then
/// `Expires: 0` → 200 and the final NOTIFY `terminated` (version 1). The scenario checks every header and the
/// body's namespace, state="full", entity and versions.
#[test]
fn subscribe_to_an_empty_orbit_then_unsubscribe() {
    let parkd = Parkd::start("blf_empty");
    let out = Sipp::new("blf_subscribe").service("701").run(&parkd);
    out.assert_passed(&parkd, "SUBSCRIBE to the empty orbit 701");
    assert!(out.logs.contains("orbit 701: state terminated"), "orbit shown free: {}", out.logs);
}

/// An occupied orbit: the NOTIFY shows the parked dialog as confirmed, with the parked party's identity.
#[test]
fn subscribe_to_an_occupied_orbit_shows_the_parked_party() {
    let parkd = Parkd::start("blf_parked");
    let bob = RtpEndpoint::bind("bob");
    let bob_run = Sipp::new("park_directed_uac").service("705").rtp_port(bob.port()).hold_ms(6000).spawn(&parkd);
    expect_hold_music(&bob, 10);
    let out = Sipp::new("blf_subscribe").service("705").run(&parkd);
    out.assert_passed(&parkd, "SUBSCRIBE to the occupied orbit 705");
    assert!(out.logs.contains("orbit 705: state confirmed"), "orbit shown occupied: {}", out.logs);
    assert!(out.logs.contains("sip:bob@"), "the parked party's identity is in the body: {}", out.logs);
    bob_run.wait().assert_passed(&parkd, "bob parked on 705");
}

/// `allow_park` / `allow_subscribe` not covering 127.0.0.1: park and SUBSCRIBE get 403 with a reason naming
/// what is not allowed; retrieving (not restricted) still gets its ordinary answer (404 for an empty orbit).
#[test]
fn forbidden_sources_get_403_for_park_and_subscribe() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("parkd.toml");
    std::fs::write(
        &config,
        "[[lot]]\nname = \"default\"\npark_code = \"700\"\norbits = \"701-720\"\nallow_park = [\"10.0.0.0/8\"]\nallow_subscribe = [\"10.0.0.0/8\"]\n",
    )
    .expect("write config");
    let options = ParkdOptions { extra_args: vec!["--config".into(), config.display().to_string()], ..ParkdOptions::default() };
    let parkd = Parkd::start_with("forbidden", options);
    let carl = RtpEndpoint::bind("carl");
    let park = Sipp::new("park_forbidden_403").service("700").rtp_port(carl.port()).run(&parkd);
    park.assert_passed(&parkd, "park from a forbidden source");
    assert!(park.logs.contains("REFUSED 403 Forbidden: Park Not Allowed From This Address"), "{}", park.logs);
    assert!(carl.packets().is_empty(), "a refused caller gets no media");
    let sub = Sipp::new("subscribe_forbidden_403").service("701").run(&parkd);
    sub.assert_passed(&parkd, "SUBSCRIBE from a forbidden source");
    assert!(sub.logs.contains("REFUSED 403 Forbidden: Subscribe Not Allowed From This Address"), "{}", sub.logs);
    let dave = RtpEndpoint::bind("dave");
    Sipp::new("retrieve_empty_404").service("701").rtp_port(dave.port()).run(&parkd).assert_passed(&parkd, "retrieve still allowed");
}

/// BLF pickup, the way a desk phone does it: watch the orbit, read the parked dialog's call-id / local-tag /
/// remote-tag from the dialog-info NOTIFY, and INVITE the orbit with `Replaces: <call-id>;to-tag=<local-tag>;
/// from-tag=<remote-tag>` (RFC 3891 §3, tags from the recipient's side). parkd hands over the parked call with
/// two-way audio, and the parked party is hung up when the retriever hangs up.
#[test]
fn blf_pickup_retrieves_with_the_dialog_from_the_notify() {
    const BOB: u8 = 0x42;
    const CAROL: u8 = 0x43;
    let parkd = Parkd::start("blf_pickup");
    let bob = RtpEndpoint::bind("bob (parked)");
    bob.start_talking(BOB);
    let bob_run = Sipp::new("parked_waits_for_bye").service("700").rtp_port(bob.port()).timeout(std::time::Duration::from_secs(90)).spawn(&parkd);
    expect_hold_music(&bob, 10);
    let watch = Sipp::new("blf_subscribe").service("701").run(&parkd);
    watch.assert_passed(&parkd, "SUBSCRIBE to 701 with bob parked");
    let line = watch.logs.lines().find(|l| l.contains("dialog call-id=")).unwrap_or_default().to_string();
    let field = |name: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).unwrap_or_default().to_string()
    };
    let (call_id, local_tag, remote_tag) = (field("call-id"), field("local-tag"), field("remote-tag"));
    assert!(!call_id.is_empty() && !local_tag.is_empty() && !remote_tag.is_empty(), "dialog identifiers in the NOTIFY: {line:?}");
    let replaces = format!("{call_id};to-tag={local_tag};from-tag={remote_tag}");

    let carol = RtpEndpoint::bind("carol (BLF pickup)");
    carol.start_talking(CAROL);
    let carol_out = Sipp::new("retrieve_by_replaces_uac").service("701").rtp_port(carol.port()).key("replaces", &replaces).hold_ms(4000).run(&parkd);
    carol_out.assert_passed(&parkd, "BLF pickup of 701 with Replaces");
    assert!(response_header(&carol_out, 200, "P-Asserted-Identity").contains("sip:bob@"), "the pickup names the parked party");
    expect_peer_audio(&carol, BOB, 50);
    expect_peer_audio(&bob, CAROL, 50);
    let bob_out = bob_run.wait();
    bob_out.assert_passed(&parkd, "bob is hung up when carol hangs up");
    assert!(bob_out.request("BYE").is_some(), "bob received parkd's BYE");
}

/// A whole lot as an RFC 4662 resource list, the way an attendant console subscribes (`Supported: eventlist`):
/// the full state names every orbit of the lot (701-720) with its own dialog-info part; a call parked into 705
/// meanwhile comes as partial state with 705 alone, confirmed, naming the parked party; the unsubscribe ends
/// with a full state. SIPp checks the multipart/related structure, RLMI versions and `Require: eventlist`.
#[test]
fn eventlist_subscription_to_the_park_code_gets_full_then_partial_state() {
    let parkd = Parkd::start("blf_eventlist");
    let console = Sipp::new("blf_eventlist").service("700").spawn(&parkd);
    assert!(
        console.wait_for_received(std::time::Duration::from_secs(10), |m| m.starts_with("NOTIFY ")).is_some(),
        "the console's first NOTIFY"
    );
    let bob = RtpEndpoint::bind("bob");
    let bob_run = Sipp::new("park_directed_uac").service("705").rtp_port(bob.port()).hold_ms(3000).spawn(&parkd);
    let out = console.wait();
    out.assert_passed(&parkd, "resource-list subscription to 700");
    assert!(out.logs.contains("full state: last resource 720, last part 720"), "every orbit of 701-720 listed: {}", out.logs);
    assert!(out.logs.contains("partial state: resource 705 (its part 705, version 1) confirmed, parked party sip:bob@"), "{}", out.logs);
    bob_run.wait().assert_passed(&parkd, "bob parked on 705");
}
