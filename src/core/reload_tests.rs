//! Live reload and tenants (issue 21) in virtual time with scripted phones: lots added, changed and removed with
//! calls parked, an invalid configuration kept out, settings that need a restart, orbits that leave a range, BLF
//! across a reload, two tenants on the same numbers, and the journal restoring each call into its tenant's lot.

use super::commands::{Command, CommandError, CommandOutcome};
use super::reload::{ReloadConfig, ReloadError, ReloadReport};
use super::testkit::{ParkAs, Phone, World};
use super::ParkEvent;
use crate::config::{Config, LotConfig, NumRange, ServerConfig};
use crate::sip::{Method, Request};

fn lot(name: &str, code: &str, orbits: &str) -> LotConfig {
    LotConfig { name: name.into(), park_code: code.into(), orbits: NumRange::parse(orbits).unwrap(), ..LotConfig::default_lot() }
}

fn tenant(name: &str, domain: &str) -> LotConfig {
    LotConfig { domains: vec![domain.into()], ..lot(name, "700", "701-705") }
}

fn server() -> ServerConfig {
    ServerConfig { listen: "127.0.0.1:5060".parse().unwrap(), advertise: None, rtp_ports: NumRange::parse("20000-20099").unwrap(), ..ServerConfig::default() }
}

fn config(lots: Vec<LotConfig>) -> Config {
    Config { server: server(), lots, ..Config::default() }
}

/// A world running `lots`, with its running configuration set as the binary sets it.
fn world(lots: Vec<LotConfig>) -> World {
    let mut w = World::with_server(server(), lots.clone());
    w.core.set_running_config(config(lots));
    w
}

fn reload(w: &mut World, cfg: Config) -> Result<ReloadReport, CommandError> {
    match w.command(1, Command::Reload(ReloadConfig(Box::new(cfg)))).expect("answered now") {
        Ok(CommandOutcome::Reloaded(r)) => Ok(r),
        Ok(other) => panic!("unexpected outcome {other:?}"),
        Err(e) => Err(e),
    }
}

fn phone(name: &'static str, port: u16) -> Phone {
    Phone { call_id: format!("{name}-call@test"), ..Phone::new(name, port) }
}

/// `p` INVITEs `user` (a park when `parker`), Request-URI and To on `host`; the final status (ACKed when 200)
/// and the orbit parkd answered with.
fn invite_at(w: &mut World, p: &Phone, user: &str, host: &str, parker: bool) -> (u16, String) {
    let since = w.sent.len();
    let rb = if parker { "Referred-By: <sip:alice@127.0.0.1:5999>\n" } else { "" };
    let text = p.invite(user, rb, Some(&p.sdp("0", "sendrecv"))).replace(&format!("{user}@127.0.0.1:5060"), &format!("{user}@{host}"));
    w.deliver(p.peer, &text);
    let r = w.last_response_to(p.peer, since);
    if r.status == 200 {
        let tag = r.common.to.tag().unwrap().to_string();
        w.deliver(p.peer, &p.ack(user, &tag, p.cseq, None));
    }
    (r.status, r.common.header("Park-Orbit").unwrap_or("").to_string())
}

/// `p` subscribes to `user` at `host`; returns the subscription's first NOTIFY body.
fn subscribe_at(w: &mut World, p: &Phone, user: &str, host: &str) -> String {
    let since = w.sent.len();
    let text = p.request("SUBSCRIBE", user, "Event: dialog\nAccept: application/dialog-info+xml\n", None).replace(&format!("{user}@127.0.0.1:5060"), &format!("{user}@{host}"));
    w.deliver(p.peer, &text);
    assert_eq!(w.last_response_to(p.peer, since).status, 200, "SUBSCRIBE to {user}@{host}");
    let n = notifies(w, p, since);
    assert_eq!(n.len(), 1);
    answer_notifies(w, p, &n);
    body(&n[0])
}

fn notifies(w: &World, p: &Phone, since: usize) -> Vec<Request> {
    w.requests_to(p.peer, since).into_iter().filter(|r| r.method == Method::Notify).collect()
}

fn answer_notifies(w: &mut World, p: &Phone, n: &[Request]) {
    for r in n {
        let ok = p.ok_to(r);
        w.deliver(p.peer, &ok);
    }
}

fn body(r: &Request) -> String {
    String::from_utf8_lossy(&r.common.body).into_owned()
}

fn orbit_json(w: &World, lot: &str, orbit: &str) -> serde_json::Value {
    let snap = w.core.lot_snapshot_named(lot).expect("lot listed");
    let v = serde_json::to_value(&snap).unwrap();
    v["orbits"].as_array().unwrap().iter().find(|o| o["orbit"] == orbit).cloned().unwrap_or(serde_json::Value::Null)
}

/// Lot added, changed (times and range) and removed while calls are parked in each: every call stays, the event
/// says what changed, a new lot parks at once, a removed lot refuses new parks (404) and keeps its call
/// retrievable, a call whose orbit left the range stays in a retired orbit shown with its old number.
#[test]
fn a_reload_adds_changes_and_removes_lots_keeping_every_parked_call() {
    let mut w = world(vec![lot("sales", "700", "701-705"), lot("support", "800", "801-803")]);
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    assert_eq!(invite_at(&mut w, &bob, "700", "127.0.0.1:5060", true), (200, "701".into()));
    assert_eq!(invite_at(&mut w, &carol, "800", "127.0.0.1:5060", true), (200, "801".into()));
    let media_before = w.media.len();
    let mut sales = lot("sales", "700", "703-708");
    sales.parking_time = 10;
    let report = reload(&mut w, config(vec![sales, lot("billing", "900", "901-905")])).unwrap();
    assert_eq!(report.lots_added, vec!["billing"]);
    assert_eq!(report.lots_changed, vec!["sales"]);
    assert_eq!(report.lots_removed, vec!["support"]);
    assert_eq!(report.orbits_retired, vec!["sales/701"]);
    assert!(report.needs_restart.is_empty(), "{:?}", report.needs_restart);
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::ConfigReloaded { lots_added, lots_removed, .. } if lots_added == &["billing"] && lots_removed == &["support"])));
    assert_eq!(w.core.live().orbits_occupied, 2, "both calls stay parked");
    assert!(!w.media[media_before..].iter().any(|m| matches!(m, crate::media::MediaCommand::Stop { .. })), "nobody's music stops");
    // Bob's orbit left the range: retired, shown with its old number, nothing parks there, he stays.
    let o = orbit_json(&w, "sales", "701");
    assert_eq!((o["state"].as_str(), o["retired"].as_bool()), (Some("parked"), Some(true)), "{o}");
    assert_eq!(w.core.lot_snapshot_named("sales").unwrap().capacity, 6);
    // The new lot works at once; the removed one refuses new parks and still lists its call.
    let dave = phone("dave", 5072);
    assert_eq!(invite_at(&mut w, &dave, "900", "127.0.0.1:5060", true), (200, "901".into()));
    let erin = phone("erin", 5073);
    assert_eq!(invite_at(&mut w, &erin, "800", "127.0.0.1:5060", true).0, 404, "a removed lot's park code is gone");
    let support = serde_json::to_value(w.core.lot_snapshot_named("support").unwrap()).unwrap();
    assert_eq!(support["removed"], true);
    assert_eq!(orbit_json(&w, "support", "801")["state"], "parked");
    // The new parking time applies to new parks of the changed lot: Fred (parked after the reload) is recalled
    // after 10 s, Bob (parked before) keeps the 45 s he was parked with.
    let fred = phone("fred", 5074);
    assert_eq!(invite_at(&mut w, &fred, "700", "127.0.0.1:5060", true), (200, "703".into()));
    let since = w.sent.len();
    w.advance(std::time::Duration::from_secs(11));
    // Distinct recall calls (an unanswered INVITE retransmits).
    let recalls = w.requests_to(super::testkit::udp(5999), since).into_iter().filter(|r| r.method == Method::Invite).map(|r| r.common.call_id).collect::<std::collections::HashSet<_>>().len();
    assert_eq!(recalls, 1, "only Fred's recall rang after 11 s");
    // Carol (in the removed lot) is retrieved by her orbit number: the call is still there.
    let gina = phone("gina", 5075);
    assert_eq!(invite_at(&mut w, &gina, "801", "127.0.0.1:5060", false).0, 200, "retrieve from a removed lot");
    assert!(w.core.lot_snapshot_named("support").unwrap().orbits.iter().all(|o| o.state == "free"));
}

/// An invalid configuration is refused with the reason; the running one stays (no event, parks as before).
#[test]
fn an_invalid_configuration_is_refused_and_the_running_one_stays() {
    let mut w = world(vec![lot("sales", "700", "701-705")]);
    let bad = config(vec![lot("sales", "700", "701-705"), lot("other", "705", "790-799")]);
    let e = reload(&mut w, bad).unwrap_err();
    assert!(matches!(&e, CommandError::Reload(ReloadError::Invalid(why)) if why.contains("705") && why.contains("used twice")), "{e}");
    assert_eq!(e.http_status(), 422);
    assert!(!w.events.iter().any(|e| matches!(e, ParkEvent::ConfigReloaded { .. })));
    let bob = phone("bob", 5070);
    assert_eq!(invite_at(&mut w, &bob, "700", "127.0.0.1:5060", true), (200, "701".into()));
    assert!(w.core.lot_snapshot_named("other").is_none());
}

/// Settings bound at startup are reported, not applied; the lots still are.
#[test]
fn startup_settings_are_reported_as_needing_a_restart() {
    let mut w = world(vec![lot("sales", "700", "701-705")]);
    let mut cfg = config(vec![lot("sales", "700", "701-709")]);
    cfg.server.listen = "127.0.0.1:5999".parse().unwrap();
    cfg.server.rtp_ports = NumRange::parse("30000-30999").unwrap();
    let r = reload(&mut w, cfg).unwrap();
    assert_eq!(r.needs_restart, vec!["server.listen", "server.rtp_ports"]);
    assert_eq!(r.lots_changed, vec!["sales"]);
    assert_eq!(w.core.lot_snapshot_named("sales").unwrap().capacity, 9);
}

/// A BLF subscription survives a reload that shifts its lot's range: it watches the same number at its new
/// index and keeps getting NOTIFYs; one whose number left the range ends with `reason=noresource`.
#[test]
fn blf_subscriptions_follow_their_numbers_across_a_reload() {
    let mut w = world(vec![lot("sales", "700", "701-705")]);
    let (w703, w705) = (phone("w703", 5090), phone("w705", 5091));
    assert!(subscribe_at(&mut w, &w703, "703", "127.0.0.1:5060").contains("703"));
    subscribe_at(&mut w, &w705, "705", "127.0.0.1:5060");
    let since = w.sent.len();
    reload(&mut w, config(vec![lot("sales", "700", "699-704")])).unwrap();
    let ended = notifies(&w, &w705, since);
    assert_eq!(ended.len(), 1);
    assert!(ended[0].common.header("Subscription-State").unwrap_or("").contains("terminated;reason=noresource"));
    answer_notifies(&mut w, &w705, &ended);
    let refreshed = notifies(&w, &w703, since);
    answer_notifies(&mut w, &w703, &refreshed);
    // 703 is now index 4: a park there is seen by its watcher.
    let since = w.sent.len();
    let bob = phone("bob", 5070);
    assert_eq!(invite_at(&mut w, &bob, "703", "127.0.0.1:5060", true), (200, "703".into()));
    let n = notifies(&w, &w703, since);
    assert_eq!(n.len(), 1, "the watcher of 703 hears the park after the reload");
    assert!(body(&n[0]).contains("confirmed") && body(&n[0]).contains("sip:703@"), "{}", body(&n[0]));
    assert_eq!(w.core.live().subscriptions, 1);
}

/// Two tenants behind one PBX use 700 / 701-705 at the same time with separate orbits and BLF; a domain no lot
/// serves gets 404 (there is no lot without `domains`); with one, it takes the unclaimed domains.
#[test]
fn two_tenants_park_on_the_same_numbers_with_separate_orbits_and_blf() {
    let mut w = world(vec![tenant("a", "a.example"), tenant("b", "b.example")]);
    let (wa, wb) = (phone("wa", 5090), phone("wb", 5091));
    subscribe_at(&mut w, &wa, "701", "a.example");
    subscribe_at(&mut w, &wb, "701", "b.example");
    let since = w.sent.len();
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    assert_eq!(invite_at(&mut w, &bob, "700", "a.example", true), (200, "701".into()));
    assert_eq!(invite_at(&mut w, &carol, "700", "B.Example", true), (200, "701".into()), "domains match case-insensitively");
    assert_eq!(orbit_json(&w, "a", "701")["call_id"], "bob-call@test");
    assert_eq!(orbit_json(&w, "b", "701")["call_id"], "carol-call@test");
    let (na, nb) = (notifies(&w, &wa, since), notifies(&w, &wb, since));
    assert_eq!((na.len(), nb.len()), (1, 1), "each watcher hears its own tenant's 701 once");
    assert!(body(&na[0]).contains("bob") && !body(&na[0]).contains("carol"));
    assert!(body(&nb[0]).contains("carol") && !body(&nb[0]).contains("bob"));
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::Parked { lot, domain: Some(d), .. } if lot == "b" && d == "b.example")));
    // The To host picks the tenant when the Request-URI names parkd's address.
    let dave = phone("dave", 5072);
    let since = w.sent.len();
    let text = dave.invite("700", "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&dave.sdp("0", "sendrecv"))).replace("To: <sip:700@127.0.0.1:5060>", "To: <sip:700@b.example>");
    w.deliver(dave.peer, &text);
    let r = w.last_response_to(dave.peer, since);
    assert_eq!((r.status, r.common.header("Park-Lot")), (200, Some("b")));
    // No lot for the domain (and none without domains): 404.
    let erin = phone("erin", 5073);
    assert_eq!(invite_at(&mut w, &erin, "700", "c.example", true).0, 404);
    // The API names a tenant's orbit by lot or domain; a bare number shared by tenants is ambiguous.
    assert!(matches!(w.core.resolve_orbit("701"), Err(CommandError::AmbiguousOrbit { .. })));
    assert_eq!(w.core.resolve_orbit("b:701").unwrap().0, 1);
    assert_eq!(w.core.resolve_orbit("701@a.example").unwrap().0, 0);
    // A lot without domains added by a reload serves every domain no lot names.
    reload(&mut w, config(vec![tenant("a", "a.example"), tenant("b", "b.example"), lot("rest", "700", "701-705")])).unwrap();
    let fran = phone("fran", 5076);
    assert_eq!(invite_at(&mut w, &fran, "700", "c.example", true), (200, "701".into()));
    assert_eq!(orbit_json(&w, "rest", "701")["call_id"], "fran-call@test");
}

/// Conflicting definitions are refused at load: the same number twice in one domain (or twice among the lots
/// without domains); the same numbers in different domains are fine.
#[test]
fn numbers_are_unique_per_domain() {
    assert!(config(vec![tenant("a", "a.example"), tenant("b", "b.example")]).validate().is_ok());
    assert!(config(vec![tenant("a", "a.example"), lot("rest", "700", "701-705")]).validate().is_ok(), "a default lot beside a tenant");
    let e = config(vec![tenant("a", "a.example"), tenant("a2", "A.example")]).validate().unwrap_err();
    assert!(e.to_string().contains("700@a.example"), "{e}");
    let e = config(vec![lot("x", "700", "701-705"), lot("y", "700", "711-715")]).validate().unwrap_err();
    assert!(e.to_string().contains("\"700\""), "{e}");
    let mut bad = tenant("a", "a.example");
    bad.domains.push("not a host".into());
    assert!(config(vec![bad]).validate().is_err());
}

/// The journal restores each tenant's call into its own lot, found by name even when a reload reordered the lots
/// (two lots share the orbit number 701), and a call in a retired orbit comes back retired.
#[test]
fn the_journal_restores_calls_into_their_tenants_lots() {
    let mut w = world(vec![tenant("a", "a.example"), tenant("b", "b.example")]);
    w.core.set_journaling(true);
    let (bob, carol) = (phone("bob", 5070), phone("carol", 5071));
    for (p, host) in [(&bob, "b.example"), (&carol, "a.example")] {
        let since = w.sent.len();
        let text = p.invite("700", "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&p.sdp("0", "sendrecv"))).replace("700@127.0.0.1:5060", &format!("700@{host}"));
        w.deliver(p.peer, &text);
        let token = w.last_token().unwrap();
        w.durable(token, true);
        let ok = w.last_response_to(p.peer, since);
        assert_eq!(ok.status, 200);
        w.deliver(p.peer, &p.ack("700", ok.common.to.tag().unwrap(), p.cseq, None));
    }
    // Carol's lot narrows to 702-705 live: her 701 is retired (journaled again with its new place).
    let mut a = tenant("a", "a.example");
    a.orbits = NumRange::parse("702-705").unwrap();
    reload(&mut w, config(vec![a.clone(), tenant("b", "b.example")])).unwrap();
    let live = crate::journal::LiveSet::replay(w.journal.iter().flat_map(|(g, _)| g.iter().cloned()));
    // The next start reads the file with the lots in another order.
    let mut fresh = World::with_server(server(), vec![tenant("b", "b.example"), a]);
    fresh.core.set_journaling(true);
    let report = fresh.core.restore(&live, fresh.now);
    assert_eq!((report.parked, report.skipped.len()), (2, 0), "{report:?}");
    assert_eq!(orbit_json(&fresh, "b", "701")["call_id"], "bob-call@test");
    let o = orbit_json(&fresh, "a", "701");
    assert_eq!((o["call_id"].as_str(), o["retired"].as_bool()), (Some("carol-call@test"), Some(true)), "{o}");
    let _ = ParkAs::ALICE;
}

/// The music the io layer must (re)load: a new lot's, a lot whose music changed, every WAV lot (the file may have
/// changed under the same name); not a builtin lot whose music stayed, nor a removed lot.
#[test]
fn a_reload_names_the_music_to_load() {
    let wav = |l: LotConfig, p: &str| LotConfig { music: crate::config::MusicSource::Wav(p.into()), ..l };
    let mut w = world(vec![lot("plain", "700", "701-705"), wav(lot("wav", "800", "801-805"), "/m/a.wav"), lot("gone", "900", "901-905")]);
    let r = reload(&mut w, config(vec![lot("plain", "700", "701-705"), wav(lot("wav", "800", "801-805"), "/m/a.wav"), lot("new", "600", "601-605")])).unwrap();
    assert_eq!(r.music, vec![(1, "wav".to_string()), (3, "new".to_string())]);
    let r = reload(&mut w, config(vec![wav(lot("plain", "700", "701-705"), "/m/b.wav"), lot("wav", "800", "801-805"), lot("new", "600", "601-605")])).unwrap();
    assert_eq!(r.music, vec![(0, "plain".to_string()), (1, "wav".to_string())], "both changed their music");
    let names: Vec<_> = r.tones.iter().map(|(i, n)| (*i, n.as_str())).collect();
    assert_eq!(names, vec![(0, "plain"), (1, "wav"), (3, "new")], "every lot in use gets its courtesy tone again");
}

/// `[server] session_min_se` (and the other session-timer settings) apply at a reload: a new INVITE whose interval
/// was fine before gets `422` with the new `Min-SE`; nothing is reported as needing a restart.
#[test]
fn session_timer_settings_apply_at_a_reload() {
    let mut w = world(vec![lot("default", "700", "701-705")]);
    let ask = |w: &mut World, p: &Phone| {
        let since = w.sent.len();
        w.deliver(p.peer, &p.invite("700", "Session-Expires: 100\nSupported: timer\n", Some(&p.sdp("0", "sendrecv"))));
        w.last_response_to(p.peer, since)
    };
    assert_eq!(ask(&mut w, &phone("bob", 5071)).status, 200, "100 s is above the default minimum (90)");
    let mut cfg = config(vec![lot("default", "700", "701-705")]);
    cfg.server.session_min_se = 120;
    let r = reload(&mut w, cfg).unwrap();
    assert!(r.needs_restart.is_empty(), "{:?}", r.needs_restart);
    let refused = ask(&mut w, &phone("carol", 5072));
    assert_eq!((refused.status, refused.common.header("Min-SE")), (422, Some("120")));
}
