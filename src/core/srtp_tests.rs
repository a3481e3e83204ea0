//! SRTP (SDES) in the core (issue 19): the lot's policy on INVITE offers, parkd's `RTP/SAVP` answer with its
//! own key, the keys handed to the media plane, a re-INVITE keeping the crypto.

use super::testkit::*;
use crate::config::{LotConfig, NumRange, ServerConfig};
use crate::media::srtp::SrtpSuite;
use crate::media::MediaCommand;
use crate::sdp::crypto::{offer_security, SrtpPolicy};

const KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

fn world(policy: SrtpPolicy, lot_over_plain: Option<bool>, server_over_plain: bool) -> World {
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    lot.srtp = policy;
    lot.srtp_over_plain = lot_over_plain;
    let server = ServerConfig { rtp_ports: NumRange::parse("20000-20099").unwrap(), srtp_over_plain: server_over_plain, ..ServerConfig::default() };
    World::with_server(server, vec![lot])
}

fn savp(phone: &Phone) -> String {
    phone.sdp("0 101", "sendrecv").replace("RTP/AVP", "RTP/SAVP").replace("a=sendrecv\n", &format!("a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{KEY}|2^31\na=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\na=sendrecv\n"))
}

fn invite(w: &mut World, phone: &Phone, body: &str) -> crate::sip::Response {
    let since = w.sent.len();
    w.deliver(phone.peer, &phone.invite("700", "", Some(body)));
    w.last_response_to(phone.peer, since)
}

#[test]
fn a_savp_offer_is_answered_savp_with_parkds_own_key_and_the_plane_gets_both_keys() {
    let mut w = world(SrtpPolicy::Optional, Some(true), false);
    let bob = Phone::new("bob", 5070);
    let ok = invite(&mut w, &bob, &savp(&bob));
    assert_eq!(ok.status, 200);
    let body = std::str::from_utf8(&ok.common.body).unwrap();
    assert!(body.contains(" RTP/SAVP 0 101\r\n"), "{body}");
    assert_eq!(body.matches("a=crypto:").count(), 1, "{body}");
    let ours = offer_security(&ok.common.body).crypto.remove(0);
    assert_eq!((ours.tag, ours.suite), (3, SrtpSuite::AesCm128HmacSha1_32), "the offerer's first suite and its tag");
    assert!(!body.contains(KEY), "parkd answers with its own key");
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(bob.peer, &bob.ack("700", &tag, bob.cseq, None));
    let i_srtp = w.media.iter().position(|m| matches!(m, MediaCommand::Srtp { .. })).expect("keys for the plane");
    let i_hold = w.media.iter().position(|m| matches!(m, MediaCommand::Hold { .. })).expect("hold music");
    assert!(i_srtp < i_hold, "keys before the music: {:?}", w.media);
    let MediaCommand::Srtp { keys: Some(k), .. } = &w.media[i_srtp] else { panic!() };
    assert_eq!((k.suite, &k.local), (SrtpSuite::AesCm128HmacSha1_32, &ours.key));
    assert_eq!(k.remote, offer_security(savp(&bob).as_bytes()).crypto[0].key);
    assert!(!format!("{:?}", w.media).contains("PS1uQ"), "keys never in Debug output");

    // A re-INVITE (hold/unhold) is answered SAVP with the same tag and key.
    let since = w.sent.len();
    let reinvite = savp(&bob).replace("a=sendrecv", "a=sendonly");
    w.deliver(bob.peer, &bob.in_dialog("INVITE", "700", &tag, bob.cseq + 1, Some(&reinvite)));
    let ok2 = w.last_response_to(bob.peer, since);
    assert_eq!(ok2.status, 200);
    let again = offer_security(&ok2.common.body);
    assert!(again.savp);
    assert_eq!(again.crypto, vec![ours]);
}

#[test]
fn policy_refusals_are_488_with_a_reason() {
    let bob = Phone::new("bob", 5070);
    let plain = bob.sdp("0", "sendrecv");
    // SDES over plain UDP without the admin's consent.
    let mut w = world(SrtpPolicy::Optional, None, false);
    let r = invite(&mut w, &bob, &savp(&bob));
    assert_eq!((r.status, r.reason.as_str()), (488, "Not Acceptable Here: SDES keys only over TLS"));
    assert_eq!(w.core.live().orbits_occupied, 0);
    // The lot's `false` overrides the server's `true`.
    let mut w = world(SrtpPolicy::Optional, Some(false), true);
    assert_eq!(invite(&mut w, &bob, &savp(&bob)).status, 488);
    // The server's `true` applies to a lot that says nothing.
    let mut w = world(SrtpPolicy::Optional, None, true);
    assert_eq!(invite(&mut w, &bob, &savp(&bob)).status, 200);
    // required + a plain offer; off + an SRTP offer.
    let mut w = world(SrtpPolicy::Required, Some(true), false);
    let r = invite(&mut w, &bob, &plain);
    assert_eq!((r.status, r.reason.as_str()), (488, "Not Acceptable Here: SRTP (RTP/SAVP) required"));
    assert_eq!(invite(&mut world(SrtpPolicy::Required, Some(true), false), &bob, &savp(&bob)).status, 200);
    let mut w = world(SrtpPolicy::Off, Some(true), false);
    let r = invite(&mut w, &bob, &savp(&bob));
    assert_eq!((r.status, r.reason.as_str()), (488, "Not Acceptable Here: SRTP disabled"));
    assert_eq!(invite(&mut world(SrtpPolicy::Off, None, false), &bob, &plain).status, 200);
    // SAVP with no suite parkd speaks.
    let f8 = savp(&bob).replace("AES_CM_128_HMAC_SHA1_32", "F8_128_HMAC_SHA1_80").replace("AES_CM_128_HMAC_SHA1_80", "F8_128_HMAC_SHA1_80");
    let r = invite(&mut world(SrtpPolicy::Optional, Some(true), false), &bob, &f8);
    assert_eq!((r.status, r.reason.as_str()), (488, "Not Acceptable Here: no supported crypto suite"));
}

#[test]
fn a_plain_offer_stays_plain_and_sends_no_keys() {
    let mut w = world(SrtpPolicy::Optional, Some(true), false);
    let bob = Phone::new("bob", 5070);
    w.park(&bob, "700", ParkAs::SELF.pts("0 8 101"));
    assert!(!w.media.iter().any(|m| matches!(m, MediaCommand::Srtp { .. })), "{:?}", w.media);
}

#[test]
fn a_retrieve_by_replaces_with_sdes_over_plain_udp_is_488_and_the_call_stays_parked() {
    let mut w = world(SrtpPolicy::Optional, None, false);
    let bob = Phone::new("bob", 5070);
    let parked = w.park(&bob, "700", ParkAs::ALICE.pts("0 8 101"));
    let dave = Phone { call_id: "dave-call".into(), ..Phone::new("dave", 5072) };
    let replaces = format!("Replaces: {};to-tag={};from-tag={}\n", bob.call_id, parked.tag, bob.tag);
    let since = w.sent.len();
    w.deliver(dave.peer, &dave.invite("parkd", &replaces, Some(&savp(&dave))));
    let r = w.last_response_to(dave.peer, since);
    assert_eq!((r.status, r.reason.as_str()), (488, "Not Acceptable Here: SDES keys only over TLS"));
    assert_eq!(w.core.live().orbits_occupied, 1, "bob is still parked");
}

#[test]
fn sdes_keys_over_tls_are_taken_without_srtp_over_plain_and_refused_over_udp() {
    let mut w = world(SrtpPolicy::Optional, None, false);
    let mut bob = Phone::new("bob", 5070);
    bob.peer.transport = crate::sip::Transport::Tls;
    let ok = invite(&mut w, &bob, &savp(&bob));
    assert_eq!(ok.status, 200, "SDES over TLS: {}", ok.reason);
    assert!(offer_security(&ok.common.body).savp, "answered RTP/SAVP");
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    assert_eq!(invite(&mut w, &carol, &savp(&carol)).status, 488, "the same offer over UDP");
}

#[test]
fn a_best_effort_offer_over_tls_is_answered_rtp_avp_with_parkds_key_and_the_plane_gets_keys() {
    let mut w = world(SrtpPolicy::Optional, None, false);
    let mut bob = Phone::new("bob", 5070);
    bob.peer.transport = crate::sip::Transport::Tls;
    let osrtp = savp(&bob).replace("RTP/SAVP", "RTP/AVP");
    let ok = invite(&mut w, &bob, &osrtp);
    assert_eq!(ok.status, 200);
    let body = std::str::from_utf8(&ok.common.body).unwrap();
    assert!(body.contains(" RTP/AVP 0 101\r\n") && body.matches("a=crypto:").count() == 1, "{body}");
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(bob.peer, &bob.ack("700", &tag, bob.cseq, None));
    assert!(w.media.iter().any(|m| matches!(m, MediaCommand::Srtp { keys: Some(_), .. })), "the plane encrypts: {:?}", w.media);
    // The same offer over UDP: plain RTP, no keys.
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    let plain = invite(&mut w, &carol, &savp(&carol).replace("RTP/SAVP", "RTP/AVP"));
    assert_eq!(plain.status, 200);
    assert!(!std::str::from_utf8(&plain.common.body).unwrap().contains("a=crypto"));
}

#[test]
fn rtcp_mux_is_answered_and_given_to_the_plane_and_a_re_offer_without_it_ends_it() {
    let mut w = world(SrtpPolicy::Optional, Some(true), false);
    let bob = Phone::new("bob", 5070);
    let offer = savp(&bob).replace("a=sendrecv\n", "a=sendrecv\na=rtcp-mux\n");
    let ok = invite(&mut w, &bob, &offer);
    assert_eq!(ok.status, 200);
    let body = std::str::from_utf8(&ok.common.body).unwrap();
    assert!(body.contains("a=rtcp-mux\r\n") && body.contains("a=crypto:3 "), "{body}");
    assert!(crate::sdp::parse_sdp(&ok.common.body).unwrap().rtcp_mux);
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(bob.peer, &bob.ack("700", &tag, bob.cseq, None));
    let i_mux = w.media.iter().position(|m| matches!(m, MediaCommand::RtcpMux { on: true, .. })).expect("rtcp-mux for the plane");
    let i_hold = w.media.iter().position(|m| matches!(m, MediaCommand::Hold { .. })).unwrap();
    assert!(i_mux < i_hold, "{:?}", w.media);
    // RFC 5761 §5.1.3: a re-offer without the attribute ends multiplexing; the answer has none.
    let since = w.sent.len();
    w.deliver(bob.peer, &bob.in_dialog("INVITE", "700", &tag, bob.cseq + 1, Some(&savp(&bob))));
    let ok2 = w.last_response_to(bob.peer, since);
    assert_eq!(ok2.status, 200);
    assert!(!std::str::from_utf8(&ok2.common.body).unwrap().contains("rtcp-mux"));
    assert!(std::str::from_utf8(&ok2.common.body).unwrap().contains("a=rtcp:20001\r\n"), "parkd's RTCP port instead (RFC 3605)");
    assert!(matches!(w.media.last(), Some(MediaCommand::Update { .. })) && w.media.iter().any(|m| matches!(m, MediaCommand::RtcpMux { on: false, .. })), "{:?}", w.media);
    assert!(w.media.iter().any(|m| matches!(m, MediaCommand::RtcpPort { port: 15071, .. })), "the phone's RTCP port (RTP + 1): {:?}", w.media);
    // A plain offer without it: no attribute, no command.
    let mut w = world(SrtpPolicy::Optional, Some(true), false);
    let ok = invite(&mut w, &bob, &bob.sdp("0 101", "sendrecv"));
    assert!(!std::str::from_utf8(&ok.common.body).unwrap().contains("rtcp-mux"));
    assert!(!w.media.iter().any(|m| matches!(m, MediaCommand::RtcpMux { .. })));
}
