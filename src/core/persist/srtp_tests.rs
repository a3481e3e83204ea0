//! SRTP legs across a restart (issues 17 and 19), in virtual time: the keys are journaled beside the call's
//! record, the restored core gives the media plane the same keys with the rollover counter the stream reached,
//! and the phone's context that opened the hold music before the crash opens it after, across a sequence wrap.

use crate::config::{LotConfig, NumRange, ServerConfig};
use crate::core::testkit::{Phone, World};
use crate::core::Output;
use crate::journal::{LiveSet, Record, RecordKind};
use crate::media::srtp::{SrtpError, SrtpKeys, SrtpLeg, SrtpSuite};
use crate::media::{HoldBatch, MediaCommand, MediaPlane};
use crate::sdp::crypto::offer_security;
use crate::time::Time;
use std::time::Duration;

const PHONE_KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

fn config() -> (ServerConfig, Vec<LotConfig>) {
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    lot.srtp_over_plain = Some(true);
    lot.keepalive_interval = 0;
    lot.parking_time = 0;
    let server = ServerConfig { listen: "127.0.0.1:5060".parse().unwrap(), advertise: None, rtp_ports: NumRange::parse("20000-20099").unwrap(), outbound_proxy: None, ..ServerConfig::default() };
    (server, vec![lot])
}

fn world() -> World {
    let (server, lots) = config();
    let mut w = World::with_server(server, lots);
    w.core.set_journaling(true);
    w
}

/// Parks `bob` with an `RTP/SAVP` offer (AES_CM_128_HMAC_SHA1_80): the INVITE, its durable report, the ACK.
/// Returns parkd's tag and the phone's SRTP context facing parkd (parkd's answered key opens its packets).
fn park_srtp(w: &mut World, bob: &Phone) -> (String, SrtpLeg, SrtpKeys) {
    let offer = bob.sdp("0", "sendrecv").replace("RTP/AVP", "RTP/SAVP").replace("a=sendrecv\n", &format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{PHONE_KEY}\na=sendrecv\n"));
    let since = w.sent.len();
    w.deliver(bob.peer, &bob.invite("700", "", Some(&offer)));
    w.durable(w.last_token().expect("the park waits for its group"), true);
    let ok = w.last_response_to(bob.peer, since);
    assert_eq!(ok.status, 200);
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(bob.peer, &bob.ack("700", &tag, bob.cseq, None));
    let parkd_key = offer_security(&ok.common.body).crypto.remove(0).key;
    let phone_key = offer_security(offer.as_bytes()).crypto.remove(0).key;
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let phone = SrtpLeg::new(&SrtpKeys { suite, local: phone_key.clone(), remote: parkd_key.clone() }).unwrap();
    (tag, phone, SrtpKeys { suite, local: parkd_key, remote: phone_key })
}

/// Hold packets the plane sends from `from` to `to` (10 ms polls), as wire bytes.
fn run(p: &mut MediaPlane, from: Time, to: Time) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut batch = HoldBatch::with_capacity(8);
    let mut t = from;
    while t < to {
        batch.clear();
        p.poll_hold(t, &mut batch);
        out.extend(batch.packets().iter().map(|h| [&h.header[..], &h.payload[..]].concat()));
        t += Duration::from_millis(10);
    }
    out
}

/// Hold packets and RTCP reports apart.
fn split_rtcp(pkts: Vec<Vec<u8>>) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    pkts.into_iter().partition(|p| !crate::media::rtcp::is_rtcp(p))
}

/// The phone opens `sealed`: `(ssrc, seq)`.
fn open(phone: &mut SrtpLeg, sealed: &[u8]) -> Result<(u32, u16), SrtpError> {
    let mut buf = sealed.to_vec();
    let n = phone.unprotect(&mut buf, sealed.len())?;
    let p = crate::media::rtp::parse(&buf[..n]).ok_or(SrtpError::Auth)?;
    Ok((p.ssrc.0, p.seq.0))
}

fn srtp_of(cmds: &[MediaCommand]) -> (SrtpKeys, u32) {
    let (k, roc) = cmds.iter().rev().find_map(|m| match m {
        MediaCommand::Srtp { keys: Some(k), roc, .. } => Some((k.clone(), *roc)),
        _ => None,
    }).expect("keys for the plane");
    (*k, roc)
}

#[test]
fn an_srtp_parked_call_resumes_with_the_same_keys_and_its_rollover_counter_after_a_crash() {
    let mut w = world();
    let bob = Phone { call_id: "bob-srtp".into(), ..Phone::new("bob", 5070) };
    let (_, mut phone, keys) = park_srtp(&mut w, &bob);
    // The park's group holds the call and its keys together (a crash never restores one without the other).
    let leg = w.core.dialogs.iter().next().unwrap().id;
    let groups_with_keys: Vec<_> = w.journal.iter().filter(|(g, _)| g.iter().any(|r| r.key().kind == RecordKind::SRTP_KEYS)).collect();
    assert!(!groups_with_keys.is_empty());
    for (g, _) in &groups_with_keys {
        assert!(g.iter().any(|r| r.key().kind == RecordKind::PARKED_CALL), "keys written with their call's record");
        assert!(g.iter().filter(|r| r.key().kind == RecordKind::SRTP_KEYS).all(|r| r.key().id == leg.0.to_string()), "id = the leg");
    }
    let t0 = w.now;
    let (k0, roc0) = srtp_of(&w.media);
    assert_eq!((&k0, roc0), (&keys, 0));

    // The old process plays hold music until just past the next sequence wrap; the phone opens every packet.
    let first_seq = w.media.iter().find_map(|m| match m { MediaCommand::Stream { seq, .. } => Some(*seq), _ => None }).unwrap();
    let to_wrap = 65_536 - first_seq as u64;
    let mut old = MediaPlane::new(Vec::new(), 1);
    old.set_rtcp_port(20_001);
    for m in w.media.drain(..) {
        old.apply(t0, m);
    }
    let crash_at = t0 + Duration::from_millis(20 * (to_wrap + 50));
    let (before, reports_before) = split_rtcp(run(&mut old, t0, crash_at));
    let mut last = (0, 0);
    for (i, s) in before.iter().enumerate() {
        last = open(&mut phone, s).unwrap_or_else(|e| panic!("pre-crash packet {i}: {e}"));
    }
    // The phone's RTCP port got the old process's SRTCP Sender Reports; its replay window saw them all.
    assert!(reports_before.len() > 100, "{} reports", reports_before.len());
    for r in &reports_before {
        let mut buf = r.clone();
        phone.unprotect_rtcp(&mut buf, r.len()).expect("the old process's SRTCP");
    }
    assert!(last.1 < 100 && before.len() as u64 > to_wrap, "the phone followed the stream past the wrap (ROC 1): {last:?}");
    w.advance(crash_at.saturating_since(t0));

    // kill -9, restart 3 s later from what was durable.
    let live = LiveSet::replay(w.journal.iter().flat_map(|(g, _)| g.iter().cloned()));
    assert!(live.of_kind(RecordKind::SRTP_KEYS).count() == 1);
    let (server, lots) = config();
    let mut fresh = World::with_server(server, lots);
    fresh.core.set_journaling(true);
    let restart_at = crash_at + Duration::from_secs(3);
    let report = fresh.core.restore(&live, restart_at);
    assert_eq!((report.parked, report.skipped.len()), (1, 0), "{report:?}");
    let mut cmds = Vec::new();
    let mut rewritten = Vec::new();
    while let Some(o) = fresh.core.poll_output() {
        match o {
            Output::Media(m) => cmds.push(m),
            Output::Journal { records, .. } => rewritten.extend(records),
            _ => {}
        }
    }
    let (k1, roc1) = srtp_of(&cmds);
    assert_eq!(k1, keys, "the same keys (suite, parkd's and the phone's) reach the plane");
    assert_eq!(roc1, 1, "the resumed stream's rollover counter");
    let srtcp = cmds.iter().rev().find_map(|m| match m {
        MediaCommand::Srtp { srtcp, .. } => Some(*srtcp),
        _ => None,
    });
    assert!(srtcp.is_some_and(|f| f as usize >= reports_before.len()), "the SRTCP floor {srtcp:?} is above the {} reports sent", reports_before.len());
    let i_srtp = cmds.iter().rposition(|m| matches!(m, MediaCommand::Srtp { .. })).unwrap();
    let i_hold = cmds.iter().position(|m| matches!(m, MediaCommand::Hold { .. })).unwrap();
    assert!(i_srtp < i_hold, "keys before the music: {cmds:?}");
    assert!(rewritten.iter().any(|r| matches!(r, Record::Put { key, .. } if key.kind == RecordKind::SRTP_KEYS)), "the new anchor's index is journaled");

    // The new process's hold music: the phone's same context opens every packet, same SSRC, sequence going on.
    let mut new = MediaPlane::new(Vec::new(), 2);
    new.set_rtcp_port(20_001);
    for m in cmds {
        new.apply(restart_at, m);
    }
    let (after, reports_after) = split_rtcp(run(&mut new, restart_at, restart_at + Duration::from_secs(8)));
    assert!(after.len() >= 360, "{}", after.len());
    // Its SRTCP reports too: their index is above what the phone's replay window saw.
    assert!(!reports_after.is_empty());
    for r in &reports_after {
        let mut buf = r.clone();
        assert!(phone.unprotect_rtcp(&mut buf, r.len()).is_ok(), "a post-restart SRTCP report is taken, not a replay");
    }
    for (i, s) in after.iter().enumerate() {
        let (ssrc, seq) = open(&mut phone, s).unwrap_or_else(|e| panic!("post-restart packet {i}: {e}"));
        assert_eq!(ssrc, last.0);
        assert!(seq > last.1 && seq < last.1 + 800, "continuing: {seq} after {}", last.1);
    }
}

#[test]
fn the_keys_record_goes_when_the_call_ends_and_a_stray_one_is_dropped_at_restore() {
    let mut w = world();
    let bob = Phone { call_id: "bob-bye".into(), ..Phone::new("bob", 5070) };
    let (tag, _, _) = park_srtp(&mut w, &bob);
    let live = LiveSet::replay(w.journal.iter().flat_map(|(g, _)| g.iter().cloned()));
    w.deliver(bob.peer, &bob.in_dialog("BYE", "700", &tag, bob.cseq + 1, None));
    let (last, _) = w.journal.last().unwrap();
    assert!(last.iter().any(|r| matches!(r, Record::Delete { key } if key.kind == RecordKind::SRTP_KEYS)), "{last:?}");
    assert!(last.iter().any(|r| matches!(r, Record::Delete { key } if key.kind == RecordKind::PARKED_CALL)));
    let after = LiveSet::replay(w.journal.iter().flat_map(|(g, _)| g.iter().cloned()));
    assert_eq!(after.of_kind(RecordKind::SRTP_KEYS).count(), 0);

    // A keys record without its call (the call's record lost): not restored, deleted.
    let stray = LiveSet::replay(live.iter().filter(|(k, _)| k.kind == RecordKind::SRTP_KEYS).map(|(k, v)| Record::put(k.clone(), v.to_vec())));
    let (server, lots) = config();
    let mut fresh = World::with_server(server, lots);
    fresh.core.set_journaling(true);
    fresh.core.restore(&stray, fresh.now);
    let mut deleted = false;
    while let Some(o) = fresh.core.poll_output() {
        assert!(!matches!(o, Output::Media(MediaCommand::Srtp { .. })));
        if let Output::Journal { records, .. } = o {
            deleted |= records.iter().any(|r| matches!(r, Record::Delete { key } if key.kind == RecordKind::SRTP_KEYS));
        }
    }
    assert!(deleted);
}

#[test]
fn a_bridged_srtp_leg_keeps_its_keys_across_a_restart() {
    let mut w = world();
    let bob = Phone { call_id: "bob-bridge".into(), ..Phone::new("bob", 5070) };
    let carol = Phone { call_id: "carol-plain".into(), ..Phone::new("carol", 5071) };
    let (_, _, keys) = park_srtp(&mut w, &bob);
    let bob_leg = w.core.dialogs.iter().next().unwrap().id;
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(carol.peer, since);
    assert_eq!(ok.status, 200);
    w.deliver(carol.peer, &carol.ack("701", ok.common.to.tag().unwrap(), carol.cseq, None));
    assert!(w.media.iter().any(|m| matches!(m, MediaCommand::Bridge { .. })));
    w.advance(Duration::from_secs(30));
    let live = LiveSet::replay(w.journal.iter().flat_map(|(g, _)| g.iter().cloned()));
    assert_eq!(live.of_kind(RecordKind::BRIDGE).count(), 1);
    assert_eq!(live.of_kind(RecordKind::SRTP_KEYS).map(|(id, _)| id.to_string()).collect::<Vec<_>>(), [bob_leg.0.to_string()], "only the SRTP leg has keys");
    let (server, lots) = config();
    let mut fresh = World::with_server(server, lots);
    fresh.core.set_journaling(true);
    let report = fresh.core.restore(&live, w.now + Duration::from_secs(2));
    assert_eq!((report.bridged, report.skipped.len()), (1, 0), "{report:?}");
    let mut cmds = Vec::new();
    while let Some(o) = fresh.core.poll_output() {
        if let Output::Media(m) = o {
            cmds.push(m);
        }
    }
    let (k, _) = srtp_of(&cmds);
    assert_eq!(k, keys, "bob's leg relays under its old keys");
    assert!(cmds.iter().any(|m| matches!(m, MediaCommand::Srtp { keys: None, .. })), "carol's leg stays plain");
    let i_srtp = cmds.iter().rposition(|m| matches!(m, MediaCommand::Srtp { keys: Some(_), .. })).unwrap();
    let i_bridge = cmds.iter().position(|m| matches!(m, MediaCommand::Bridge { .. })).unwrap();
    assert!(i_srtp < i_bridge, "keys before the relay");
}
