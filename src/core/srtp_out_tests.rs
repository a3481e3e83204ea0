//! SRTP on the calls parkd starts (issue 19), in virtual time: a recall (or fallback call, or API unpark) over
//! TLS offers `RTP/SAVP` with an `a=crypto` per suite and fresh keys, the answer's key is installed for both
//! directions (and journaled), a 488 is tried once more plain under `srtp = "optional"`, `required` makes a 488,
//! a plain answer or a hop that may not carry keys a failed attempt; keys never appear in the log.

use super::testkit::{Phone, World, LEG_20002};
use super::{Command, CommandError, Output, ParkEvent};
use crate::config::{LotConfig, NumRange, RecallFallback, ServerConfig};
use crate::core::events::RecallTarget;
use crate::journal::{from_value, LiveSet, RecordKind};
use crate::media::srtp::SrtpSuite;
use crate::media::MediaCommand;
use crate::sdp::crypto::{offer_security, SrtpPolicy};
use crate::sip::{Method, Peer, Request, Transport};
use std::time::Duration;

/// The phones' key||salt (30 bytes) in base64.
const KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
const PARKING: Duration = Duration::from_secs(30);

fn config(policy: SrtpPolicy, over_plain: Option<bool>) -> (ServerConfig, Vec<LotConfig>) {
    let server = ServerConfig {
        listen: "127.0.0.1:5060".parse().unwrap(),
        rtp_ports: NumRange::parse("20000-20099").unwrap(),
        tls_cert: Some("cert.pem".into()),
        tls_key: Some("key.pem".into()),
        ..ServerConfig::default()
    };
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    lot.parking_time = PARKING.as_secs();
    lot.keepalive_interval = 0;
    lot.srtp = policy;
    lot.srtp_over_plain = over_plain;
    lot.recall_fallback = RecallFallback::FallbackUri;
    lot.recall_rounds = 1;
    lot.fallback_uri = Some("sips:operator@127.0.0.1:5998".into());
    (server, vec![lot])
}

fn world(policy: SrtpPolicy, over_plain: Option<bool>) -> World {
    let (server, lots) = config(policy, over_plain);
    World::with_server(server, lots)
}

fn tls_phone(name: &'static str, port: u16) -> Phone {
    let mut p = Phone { call_id: format!("{name}-call"), ..Phone::new(name, port) };
    p.peer.transport = Transport::Tls;
    p
}

fn alice() -> Phone {
    tls_phone("alice", 5999)
}

fn operator() -> Phone {
    tls_phone("operator", 5998)
}

/// `phone`'s SDP as `RTP/SAVP` with one `a=crypto` line.
fn savp(phone: &Phone, line: &str) -> String {
    phone.sdp("0 101", "sendrecv").replace("RTP/AVP", "RTP/SAVP").replace("a=sendrecv\n", &format!("a=crypto:{line}\na=sendrecv\n"))
}

/// Bob parks over TLS with an SRTP offer; Alice (the parker) is `referred_by`.
fn park_bob(w: &mut World, referred_by: &str) -> Phone {
    let bob = tls_phone("bob", 5070);
    let since = w.sent.len();
    let extra = format!("Referred-By: <{referred_by}>\n");
    w.deliver(bob.peer, &bob.invite("700", &extra, Some(&savp(&bob, &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}")))));
    if let Some(token) = w.last_token() {
        w.durable(token, true);
    }
    let ok = w.last_response_to(bob.peer, since);
    assert_eq!(ok.status, 200, "{}", ok.reason);
    w.deliver(bob.peer, &bob.ack("700", ok.common.to.tag().unwrap(), bob.cseq, None));
    bob
}

fn invites_to(w: &World, to: Peer, since: usize) -> Vec<Request> {
    w.requests_to(to, since).into_iter().filter(|r| r.method == Method::Invite).collect()
}

/// Bob parked by Alice over TLS; the recall INVITE to her `PARKING` later.
fn recall(w: &mut World) -> Request {
    park_bob(w, "sip:alice@127.0.0.1:5999;transport=tls");
    let since = w.sent.len();
    w.advance(PARKING);
    invites_to(w, alice().peer, since).pop().expect("a recall INVITE to alice over TLS")
}

fn body(r: &Request) -> &str {
    std::str::from_utf8(&r.common.body).unwrap()
}

/// A `MakeWriter` collecting what a tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// What is logged (every level) while `f` runs, and `f`'s result. A callsite another test thread registers at the
/// moment this scope is set up can keep the no-op dispatcher's "never" interest (the lines then go nowhere): `f`
/// runs again, up to 5 times, until the log holds `marker`.
fn logged<T>(marker: &str, f: impl Fn() -> T) -> (String, T) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let out = Captured::default();
        let sub = tracing_subscriber::fmt().with_writer(out.clone()).with_ansi(false).with_max_level(tracing::Level::TRACE).finish();
        let r = tracing::subscriber::with_default(sub, || {
            tracing::callsite::rebuild_interest_cache();
            f()
        });
        let log = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        if log.contains(marker) || attempt == 5 {
            return (log, r);
        }
    }
}

#[test]
fn a_recall_over_tls_offers_savp_with_fresh_keys_and_the_answers_key_is_installed_both_ways() {
    let (log, (offered_b64, inv_body)) = logged("outgoing call started", || {
        let mut w = world(SrtpPolicy::Optional, None);
        let inv = recall(&mut w);
        let text = body(&inv).to_string();
        let offer = offer_security(&inv.common.body);
        assert!(offer.savp && text.contains(" RTP/SAVP 0 8 101\r\n"), "{text}");
        let suites: Vec<_> = offer.crypto.iter().map(|c| (c.tag, c.suite)).collect();
        assert_eq!(suites, vec![(1, SrtpSuite::AesCm128HmacSha1_80), (2, SrtpSuite::AesCm128HmacSha1_32), (3, SrtpSuite::AeadAes128Gcm)], "{text}");
        assert_eq!(offer.crypto[2].key.expose().len(), 28, "GCM: 16-byte key + 12-byte salt");
        assert!(offer.crypto[0].key != offer.crypto[1].key, "a fresh key per line");
        assert!(!text.contains(KEY), "parkd offers its own keys, not bob's");

        // Alice takes the second line (the 32-bit tag) with her key.
        let a = alice();
        let since = w.sent.len();
        let media_before = w.media.len();
        w.deliver(a.peer, &a.answer(&inv, 200, "OK", Some(&savp(&a, &format!("2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}")))));
        assert!(w.requests_to(a.peer, since).iter().any(|r| r.method == Method::Ack), "ACKed");
        let cmds = &w.media[media_before..];
        let i_keys = cmds.iter().position(|m| matches!(m, MediaCommand::Srtp { leg, keys: Some(_), .. } if *leg == LEG_20002)).expect("keys for alice's leg");
        let i_bridge = cmds.iter().position(|m| matches!(m, MediaCommand::Bridge { .. })).expect("bridged");
        assert!(i_keys < i_bridge, "keys before the bridge: {cmds:?}");
        let MediaCommand::Srtp { keys: Some(k), roc, .. } = &cmds[i_keys] else { unreachable!() };
        assert_eq!((k.suite, &k.local, *roc), (SrtpSuite::AesCm128HmacSha1_32, &offer.crypto[1].key, 0), "parkd protects with its key for tag 2");
        assert_eq!(k.remote, offer_security(savp(&a, &format!("2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}")).as_bytes()).crypto[0].key, "alice's key opens");
        assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallAnswered { .. })));
        assert_eq!(w.core.live().orbits_occupied, 0);
        let b64: Vec<String> = text.lines().filter_map(|l| l.split("inline:").nth(1)).map(|k| k.trim().to_string()).collect();
        (b64, text)
    });
    assert_eq!(offered_b64.len(), 3, "{inv_body}");
    assert!(log.contains("outgoing call started"), "the log was captured: {log}");
    for k in offered_b64.iter().map(String::as_str).chain([KEY]) {
        assert!(!log.contains(k), "a key in the log: {k}");
    }
}

#[test]
fn the_recalled_legs_keys_are_journaled_and_restored() {
    let (server, lots) = config(SrtpPolicy::Optional, None);
    let mut w = World::with_server(server.clone(), lots.clone());
    w.core.set_journaling(true);
    let inv = recall(&mut w);
    let a = alice();
    let answer = savp(&a, &format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"));
    w.deliver(a.peer, &a.answer(&inv, 200, "OK", Some(&answer)));
    if let Some(token) = w.last_token() {
        w.durable(token, true);
    }
    let ours = offer_security(&inv.common.body).crypto.remove(0).key;
    let theirs = offer_security(answer.as_bytes()).crypto.remove(0).key;
    let live = LiveSet::replay(w.journal.iter().flat_map(|(g, _)| g.iter().cloned()));
    let records: Vec<crate::core::persist::SrtpRecord> = live.of_kind(RecordKind::SRTP_KEYS).map(|(_, v)| from_value(v).unwrap()).collect();
    assert_eq!(records.len(), 2, "bob's and alice's legs");
    assert!(records.iter().any(|r| r.keys.local == ours && r.keys.remote == theirs && r.tag == 1 && r.savp), "the recalled leg's keys");

    let mut fresh = World::with_server(server, lots);
    fresh.core.set_journaling(true);
    let report = fresh.core.restore(&live, w.now + Duration::from_secs(2));
    assert_eq!(report.bridged, 1, "{report:?}");
    let mut restored = Vec::new();
    while let Some(o) = fresh.core.poll_output() {
        if let Output::Media(MediaCommand::Srtp { keys: Some(k), .. }) = o {
            restored.push(*k);
        }
    }
    assert!(restored.iter().any(|k| k.local == ours && k.remote == theirs), "the plane gets the recalled leg's keys again: {restored:?}");
}

#[test]
fn a_488_to_the_srtp_offer_is_tried_once_more_plain_under_optional() {
    let mut w = world(SrtpPolicy::Optional, None);
    let inv = recall(&mut w);
    let a = alice();
    let since = w.sent.len();
    w.deliver(a.peer, &a.answer(&inv, 488, "Not Acceptable Here", None));
    let retry = invites_to(&w, a.peer, since);
    assert_eq!(retry.len(), 1, "one plain retry");
    let text = body(&retry[0]);
    assert!(text.contains(" RTP/AVP 0 8 101\r\n") && !text.contains("a=crypto"), "{text}");
    assert_ne!(retry[0].common.call_id, inv.common.call_id, "a new call");
    assert!(!w.events.iter().any(|e| matches!(e, ParkEvent::RecallFailed { .. })), "not a failed recall yet");
    let media_before = w.media.len();
    w.deliver(a.peer, &a.answer(&retry[0], 200, "OK", Some(&a.sdp("0", "sendrecv"))));
    assert!(w.media[media_before..].iter().any(|m| matches!(m, MediaCommand::Bridge { .. })));
    assert!(!w.media[media_before..].iter().any(|m| matches!(m, MediaCommand::Srtp { keys: Some(_), .. })), "plain RTP to alice");

    // A 488 to the plain retry too: the recall failed (no third INVITE), the fallback URI is rung.
    let mut w = world(SrtpPolicy::Optional, None);
    let inv = recall(&mut w);
    w.deliver(a.peer, &a.answer(&inv, 488, "Not Acceptable Here", None));
    let retry = invites_to(&w, a.peer, 0).pop().unwrap();
    let since = w.sent.len();
    w.deliver(a.peer, &a.answer(&retry, 488, "Not Acceptable Here", None));
    assert!(invites_to(&w, a.peer, since).is_empty());
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallFailed { status: 488, target: RecallTarget::Parker, .. })));
    let op = invites_to(&w, operator().peer, since);
    assert_eq!(op.len(), 1, "the fallback URI is called next");
    assert!(offer_security(&op[0].common.body).savp, "again with SRTP first");
}

#[test]
fn a_plain_answer_to_the_srtp_offer_is_plain_rtp_under_optional() {
    let mut w = world(SrtpPolicy::Optional, None);
    let inv = recall(&mut w);
    let a = alice();
    let media_before = w.media.len();
    w.deliver(a.peer, &a.answer(&inv, 200, "OK", Some(&a.sdp("0", "sendrecv"))));
    let cmds = &w.media[media_before..];
    assert!(cmds.iter().any(|m| matches!(m, MediaCommand::Bridge { .. })), "{cmds:?}");
    assert!(!cmds.iter().any(|m| matches!(m, MediaCommand::Srtp { leg, keys: Some(_), .. } if *leg == LEG_20002)), "{cmds:?}");
}

#[test]
fn required_a_488_or_a_plain_answer_fails_the_attempt_and_the_fallback_applies() {
    let a = alice();
    // 488: no plain retry; the fallback URI is rung (SRTP again).
    let mut w = world(SrtpPolicy::Required, None);
    let inv = recall(&mut w);
    let since = w.sent.len();
    w.deliver(a.peer, &a.answer(&inv, 488, "Not Acceptable Here", None));
    assert!(invites_to(&w, a.peer, since).is_empty(), "no plain retry under required");
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallFailed { status: 488, target: RecallTarget::Parker, .. })));
    assert!(offer_security(&invites_to(&w, operator().peer, since)[0].common.body).savp);

    // A plain 2xx: ACKed, ended with a BYE and a Reason, a failed attempt; bob stays parked.
    let mut w = world(SrtpPolicy::Required, None);
    let inv = recall(&mut w);
    let since = w.sent.len();
    w.deliver(a.peer, &a.answer(&inv, 200, "OK", Some(&a.sdp("0", "sendrecv"))));
    let to_alice = w.requests_to(a.peer, since);
    assert_eq!(to_alice.iter().filter(|r| r.method == Method::Ack).count(), 1, "the 2xx is ACKed once");
    let bye = to_alice.iter().find(|r| r.method == Method::Bye).expect("and ended");
    assert!(bye.common.header("Reason").is_some_and(|r| r.contains("cause=488")), "{:?}", bye.common.header("Reason"));
    assert!(w.events.iter().any(|e| matches!(e, ParkEvent::RecallFailed { status: 488, target: RecallTarget::Parker, .. })));
    assert!(!w.events.iter().any(|e| matches!(e, ParkEvent::RecallAnswered { .. })));
    assert_eq!(w.core.live().orbits_occupied, 1, "bob is still parked");
    assert!(!w.media.iter().any(|m| matches!(m, MediaCommand::Srtp { leg, .. } if *leg == LEG_20002)), "no keys for a refused leg");
}

#[test]
fn required_and_a_hop_that_may_not_carry_keys_sends_nothing_there() {
    // The parker is on UDP: no INVITE to her (no keys in clear, no plain call); the TLS fallback is rung.
    let mut w = world(SrtpPolicy::Required, None);
    park_bob(&mut w, "sip:alice@127.0.0.1:5999");
    let since = w.sent.len();
    w.advance(PARKING);
    assert!(invites_to(&w, crate::core::testkit::udp(5999), since).is_empty(), "nothing to the UDP parker");
    let op = invites_to(&w, operator().peer, since);
    assert_eq!(op.len(), 1, "the fallback URI (sips:) is rung instead");
    assert!(offer_security(&op[0].common.body).savp);

    // An API unpark to the (UDP) parker is refused; one to the (TLS) fallback URI offers SRTP.
    let mut w = world(SrtpPolicy::Required, None);
    park_bob(&mut w, "sip:alice@127.0.0.1:5999");
    let since = w.sent.len();
    let r = w.command(1, Command::Unpark { orbit: "701".into(), to: "sip:alice@127.0.0.1:5999".into() }).expect("answered at once");
    assert!(matches!(r, Err(CommandError::Originate(crate::core::OriginateError::SrtpNeedsTls))), "{r:?}");
    assert!(invites_to(&w, crate::core::testkit::udp(5999), since).is_empty());
    let r = w.command(2, Command::Unpark { orbit: "701".into(), to: "sips:operator@127.0.0.1:5998".into() }).expect("answered at once");
    assert!(r.is_ok(), "{r:?}");
    let inv = invites_to(&w, operator().peer, since);
    assert!(offer_security(&inv[0].common.body).savp, "{}", body(&inv[0]));
}

#[test]
fn a_udp_hop_gets_keys_only_with_srtp_over_plain_and_off_never_offers_them() {
    let recall_to_udp = |w: &mut World| {
        park_bob(w, "sip:alice@127.0.0.1:5999");
        let since = w.sent.len();
        w.advance(PARKING);
        invites_to(w, crate::core::testkit::udp(5999), since).pop().expect("a recall over UDP")
    };
    let inv = recall_to_udp(&mut world(SrtpPolicy::Optional, None));
    assert!(!offer_security(&inv.common.body).savp && !body(&inv).contains("a=crypto"), "optional over UDP: plain as before");
    let inv = recall_to_udp(&mut world(SrtpPolicy::Optional, Some(true)));
    assert_eq!(offer_security(&inv.common.body).crypto.len(), 3, "srtp_over_plain: keys over UDP");
    let mut w = world(SrtpPolicy::Off, None);
    // `off` refuses bob's SRTP park: he parks plain.
    let bob = tls_phone("bob", 5070);
    let since = w.sent.len();
    w.deliver(bob.peer, &bob.invite("700", "Referred-By: <sip:alice@127.0.0.1:5999;transport=tls>\n", Some(&bob.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(bob.peer, since);
    w.deliver(bob.peer, &bob.ack("700", ok.common.to.tag().unwrap(), bob.cseq, None));
    let since = w.sent.len();
    w.advance(PARKING);
    let inv = invites_to(&w, alice().peer, since).pop().expect("a recall over TLS");
    assert!(!body(&inv).contains("a=crypto") && !body(&inv).contains("SAVP"), "off: plain even over TLS");
}

/// Two cluster nodes whose lot allows SDES keys over plain UDP (node-to-node SIP is UDP here): bob parked on a in
/// 703, carol retrieves 703 at b (plain RTP). Returns the cluster, carol and b's fetch INVITE to a (not routed).
fn fetch_with_keys() -> (super::cluster_tests::Cluster, Phone, Request) {
    let mut lots = super::cluster_tests::lots();
    lots[0].srtp_over_plain = Some(true);
    let mut c = super::cluster_tests::Cluster::routable(lots);
    let r = c.park(0, &super::cluster_tests::phone(0), "703");
    assert_eq!(r.status, 200);
    let carol = Phone { call_id: "call-8".into(), ..Phone::new("carol", 5078) };
    let since = c.nodes[1].sent.len();
    c.nodes[1].deliver(carol.peer, &carol.invite("703", "", Some(&carol.sdp("0", "sendrecv"))));
    let to_a = Peer { transport: Transport::Udp, addr: "127.0.0.1:5060".parse().unwrap() };
    let fetch = invites_to(&c.nodes[1], to_a, since).pop().expect("b fetches 703 from a");
    (c, carol, fetch)
}

#[test]
fn a_cluster_fetch_offers_srtp_and_both_nodes_hold_matching_keys() {
    let (mut c, carol, fetch) = fetch_with_keys();
    let offer = offer_security(&fetch.common.body);
    assert!(offer.savp && offer.crypto.len() == 3, "{}", body(&fetch));
    let since = c.nodes[1].sent.len();
    c.route();
    assert_eq!(c.nodes[1].last_response_to(carol.peer, since).status, 200, "carol gets the call");
    let keys = |w: &World| -> Vec<crate::media::srtp::SrtpKeys> {
        w.media.iter().filter_map(|m| match m {
            MediaCommand::Srtp { keys: Some(k), .. } => Some((**k).clone()),
            _ => None,
        }).collect()
    };
    let (at_a, at_b) = (keys(&c.nodes[0]), keys(&c.nodes[1]));
    assert_eq!(at_b.len(), 1, "b keys its leg to a (carol's leg is plain)");
    let b = &at_b[0];
    assert_eq!((b.suite, &b.local), (SrtpSuite::AesCm128HmacSha1_80, &offer.crypto[0].key), "the first suite, b's key for it");
    assert!(at_a.iter().any(|a| a.local == b.remote && a.remote == b.local), "a and b hold the two halves of one SRTP session");
}

#[test]
fn a_488_from_the_owner_node_is_fetched_again_plain_under_optional() {
    let (mut c, _carol, fetch) = fetch_with_keys();
    let a = Phone::new("a", 5060);
    let since = c.nodes[1].sent.len();
    c.nodes[1].deliver(a.peer, &a.answer(&fetch, 488, "Not Acceptable Here", None));
    let retry = invites_to(&c.nodes[1], a.peer, since);
    assert_eq!(retry.len(), 1, "one plain retry");
    assert!(!body(&retry[0]).contains("a=crypto") && !body(&retry[0]).contains("SAVP"), "{}", body(&retry[0]));
    assert!(retry[0].common.header(crate::cluster::auth::HEADER).is_some(), "signed again");
    assert_ne!(retry[0].common.call_id, fetch.common.call_id);
}
