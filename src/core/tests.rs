//! Engine tests in virtual time: whole park/retrieve flows against the real codec, transactions and SDP,
//! with scripted phones and no sockets.

use super::testkit::{udp, ParkAs, Phone, World, LEG_20000, LEG_20002};
use super::{ParkEvent, Wake};
use crate::config::{LotConfig, NumRange, ServerConfig};
use crate::media::{Codec, MediaCommand, MediaLegId};
use std::time::Duration;

/// A blind transfer by Alice (Referred-By) and a self-park (none), offering PCMU, PCMA and telephone-event.
const BLIND: ParkAs = ParkAs::ALICE.pts("0 8 101");
const SELF_PARK: ParkAs = ParkAs::SELF.pts("0 8 101");

fn header<'a>(r: &'a crate::sip::Response, name: &str) -> Option<&'a str> {
    r.common.header(name)
}

#[test]
fn indirect_park_answers_with_orbit_and_starts_hold_music_after_ack() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    w.deliver(bob.peer, &bob.invite("700", "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&bob.sdp("0 8", "sendrecv"))));
    let ok = w.last_response_to(bob.peer, 0);
    assert_eq!(ok.status, 200);
    assert_eq!(header(&ok, "Park-Orbit"), Some("701"));
    assert_eq!(ok.common.content_type.as_deref(), Some("application/sdp"));
    assert!(String::from_utf8_lossy(&ok.common.body).contains("m=audio 20000 RTP/AVP 0"), "answer picks PCMU on port 20000");
    // The phone does not mux: the answer names parkd's RTCP port (RFC 3605), and the plane learns the phone's
    // (its RTP port + 1, RFC 3550 §11) before the ACK; no stream starts yet.
    assert!(String::from_utf8_lossy(&ok.common.body).ends_with("a=rtcp:20001\r\n"), "{}", String::from_utf8_lossy(&ok.common.body));
    assert_eq!(w.media, vec![MediaCommand::RtcpPort { leg: LEG_20000, port: 15071 }], "no stream before the ACK");
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(bob.peer, &bob.ack("700", &tag, 1, None));
    assert_eq!(
        w.media,
        vec![
            MediaCommand::RtcpPort { leg: LEG_20000, port: 15071 },
            MediaCommand::Hold { leg: LEG_20000, remote: "127.0.0.1:15070".parse().unwrap(), codec: Codec::Pcmu, music: crate::media::MusicId(0) },
            MediaCommand::DtmfPayloadType { leg: LEG_20000, pt: None },
        ]
    );
    assert!(matches!(&w.events[0], ParkEvent::Parked { orbit, parker: Some(p), .. } if orbit == "701" && p.contains("alice")));
}

#[test]
fn indirect_parks_take_lowest_free_orbit_and_full_lot_is_refused() {
    let mut w = World::new();
    for (i, port) in (5070..5075).enumerate() {
        let p = Phone::new("p", port);
        let p = Phone { call_id: format!("c{i}"), ..p };
        let since = w.sent.len();
        w.deliver(p.peer, &p.invite("700", "Referred-By: <sip:alice@h>\n", Some(&p.sdp("0", "sendrecv"))));
        let ok = w.last_response_to(p.peer, since);
        assert_eq!(header(&ok, "Park-Orbit"), Some(format!("{}", 701 + i).as_str()));
        // Each phone ACKs (all five share 127.0.0.1, whose cap on unconfirmed calls is 4).
        w.deliver(p.peer, &p.ack("700", ok.common.to.tag().unwrap(), 1, None));
    }
    let late = Phone { call_id: "late".into(), ..Phone::new("late", 5080) };
    w.deliver(late.peer, &late.invite("700", "Referred-By: <sip:alice@h>\n", Some(&late.sdp("0", "sendrecv"))));
    let r = w.last_response_to(late.peer, 0);
    assert_eq!((r.status, r.reason.as_str()), (486, "Parking Lot Full"));
    assert!(r.common.to.tag().is_some(), "final responses carry a To tag (RFC 3261 §8.2.6.2)");
}

#[test]
fn directed_park_occupied_orbit_gets_486_and_unknown_number_404() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    w.park(&bob, "705", BLIND);
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    w.deliver(carol.peer, &carol.invite("705", "Referred-By: <sip:alice@h>\n", Some(&carol.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(carol.peer, 0).status, 486);
    let dave = Phone { call_id: "dave-call".into(), ..Phone::new("dave", 5072) };
    w.deliver(dave.peer, &dave.invite("799", "Referred-By: <sip:alice@h>\n", Some(&dave.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(dave.peer, 0).status, 404);
}

#[test]
fn retrieve_bridges_both_legs_and_either_bye_ends_the_other() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    w.park(&bob, "700", BLIND);
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("701", "", Some(&carol.sdp("8", "sendrecv"))));
    let ok = w.last_response_to(carol.peer, since);
    assert_eq!(ok.status, 200);
    assert_eq!(header(&ok, "P-Asserted-Identity"), Some("<sip:bob@127.0.0.1:5070>"));
    let media_before = w.media.len();
    let ctag = ok.common.to.tag().unwrap().to_string();
    w.deliver(carol.peer, &carol.ack("701", &ctag, 1, None));
    let after: Vec<_> = w.media[media_before..].to_vec();
    assert!(after.contains(&MediaCommand::Bridge { a: LEG_20000, b: LEG_20002 }), "bridge after the retriever's ACK: {after:?}");
    assert!(after.iter().any(|m| matches!(m, MediaCommand::Update { leg: LEG_20002, codec: Codec::Pcma, .. })), "retriever leg keeps its PCMA");
    assert!(matches!(w.events.last(), Some(ParkEvent::Retrieved { orbit, .. }) if orbit == "701"));

    // The orbit is free again: a new park takes 701.
    let dave = Phone { call_id: "dave-call".into(), ..Phone::new("dave", 5072) };
    let since = w.sent.len();
    w.park(&dave, "700", BLIND);
    assert_eq!(header(&w.last_response_to(dave.peer, since), "Park-Orbit"), Some("701"));

    // Carol hangs up: parkd answers 200 and BYEs Bob.
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.in_dialog("BYE", "701", &ctag, 2, None));
    assert_eq!(w.last_response_to(carol.peer, since).status, 200);
    let byes = w.requests_to(bob.peer, since);
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].method, crate::sip::Method::Bye);
    assert!(w.media.contains(&MediaCommand::Stop { leg: LEG_20000 }) && w.media.contains(&MediaCommand::Stop { leg: LEG_20002 }));
    w.deliver(bob.peer, &bob.ok_to(&byes[0]));
    w.advance(Duration::from_secs(40));
    let live = w.core.live();
    assert_eq!((live.legs, live.calls, live.client_txns), (1, 1, 0), "only Dave's park remains: {live:?}");
}

#[test]
fn retrieve_of_empty_orbit_is_404() {
    let mut w = World::new();
    let carol = Phone::new("carol", 5071);
    w.deliver(carol.peer, &carol.invite("703", "", Some(&carol.sdp("0", "sendrecv"))));
    let r = w.last_response_to(carol.peer, 0);
    assert_eq!(r.status, 404);
}

#[test]
fn parked_party_hanging_up_frees_orbit_and_stops_music() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    let tag = w.park(&bob, "702", BLIND).tag;
    let since = w.sent.len();
    w.deliver(bob.peer, &bob.in_dialog("BYE", "702", &tag, 2, None));
    assert_eq!(w.last_response_to(bob.peer, since).status, 200);
    assert!(w.media.contains(&MediaCommand::Stop { leg: LEG_20000 }));
    assert!(matches!(w.events.last(), Some(ParkEvent::Abandoned { orbit, .. }) if orbit == "702"));
    w.advance(Duration::from_secs(40));
    assert_eq!(w.core.live(), super::Live::default(), "nothing left behind");
}

#[test]
fn unacknowledged_2xx_is_retransmitted_then_the_call_is_torn_down() {
    // RFC 3261 §13.3.1.4: 2xx retransmitted at T1, 2T1, ... capped at T2, until ACK; after 64*T1 → BYE.
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    w.deliver(bob.peer, &bob.invite("700", "Referred-By: <sip:alice@h>\n", Some(&bob.sdp("0", "sendrecv"))));
    let t0 = w.now;
    let mut times = Vec::new();
    for _ in 0..80 {
        let before = w.responses_to(bob.peer, 0).len();
        w.advance(Duration::from_millis(100));
        if w.responses_to(bob.peer, 0).len() > before {
            times.push((w.now - t0).as_millis() / 100 * 100);
        }
    }
    assert_eq!(&times[..4], &[500, 1500, 3500, 7500][..], "2xx schedule (rounded to 100 ms): {times:?}");
    w.advance(Duration::from_secs(30));
    let byes = w.requests_to(bob.peer, 0);
    assert!(byes.iter().any(|r| r.method == crate::sip::Method::Bye), "BYE after Timer H");
    assert_eq!(w.core.live().orbits_occupied, 0);
}

#[test]
fn invite_retransmission_is_absorbed_not_parked_twice() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    let inv = bob.invite("700", "Referred-By: <sip:alice@h>\n", Some(&bob.sdp("0", "sendrecv")));
    w.deliver(bob.peer, &inv);
    w.deliver(bob.peer, &inv);
    let oks = w.responses_to(bob.peer, 0);
    assert_eq!(oks.iter().filter(|r| r.status == 200).count(), 2, "the same 200 is re-sent");
    assert_eq!(w.core.live().orbits_occupied, 1);
}

#[test]
fn reinvite_to_hold_is_answered_recvonly_and_music_stops_sending() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    let tag = w.park(&bob, "700", BLIND).tag;
    let since = w.sent.len();
    w.deliver(bob.peer, &bob.in_dialog("INVITE", "700", &tag, 2, Some(&bob.sdp("0", "sendonly"))));
    let ok = w.last_response_to(bob.peer, since);
    assert_eq!(ok.status, 200);
    assert!(String::from_utf8_lossy(&ok.common.body).contains("a=recvonly"));
    assert!(w.media.iter().any(|m| matches!(m, MediaCommand::Update { leg: LEG_20000, send: false, .. })));
    w.deliver(bob.peer, &bob.ack("700", &tag, 2, None));
    assert_eq!(w.core.live().orbits_occupied, 1, "still parked");
}

#[test]
fn options_unknown_method_and_garbage() {
    let mut w = World::new();
    let p = udp(5090);
    w.deliver(p, "OPTIONS sip:700@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKo1\nFrom: <sip:x@h>;tag=1\nTo: <sip:700@h>\nCall-ID: o1\nCSeq: 1 OPTIONS\nMax-Forwards: 70\n");
    let r = w.last_response_to(p, 0);
    assert_eq!(r.status, 200);
    assert!(r.common.header("Allow").is_some_and(|a| a.contains("INVITE")));
    let since = w.sent.len();
    w.deliver(p, "FOO sip:700@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKf1\nFrom: <sip:x@h>;tag=1\nTo: <sip:700@h>\nCall-ID: f1\nCSeq: 1 FOO\nMax-Forwards: 70\n");
    assert_eq!(w.last_response_to(p, since).status, 501);
    w.deliver_raw(p, b"\x00\x01garbage\r\n\r\n");
    w.deliver_raw(p, b"INVITE sip:700@h SIP/2.0\r\nContent-Length: 99999\r\n\r\n");
    assert!(w.core.stats().malformed >= 2);
    // And a normal call still works.
    let bob = Phone::new("bob", 5070);
    w.park(&bob, "700", BLIND);
}

#[test]
fn max_forwards_zero_is_483() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    let inv = bob.invite("700", "", Some(&bob.sdp("0", "sendrecv"))).replace("Max-Forwards: 70", "Max-Forwards: 0");
    w.deliver(bob.peer, &inv);
    assert_eq!(w.last_response_to(bob.peer, 0).status, 483);
}

#[test]
fn cancel_after_answer_gets_200_and_the_call_stays() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    w.deliver(bob.peer, &bob.invite("700", "Referred-By: <sip:alice@h>\n", Some(&bob.sdp("0", "sendrecv"))));
    let since = w.sent.len();
    let cancel = format!(
        "CANCEL sip:700@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-{b}-1;rport\nMax-Forwards: 70\nFrom: <sip:bob@127.0.0.1:5070>;tag={t}\nTo: <sip:700@127.0.0.1:5060>\nCall-ID: {cid}\nCSeq: 1 CANCEL\n",
        a = bob.peer.addr,
        cid = bob.call_id,
        b = bob.call_id.replace('@', "."),
        t = bob.tag
    );
    w.deliver(bob.peer, &cancel);
    let rs = w.responses_to(bob.peer, since);
    let ok_invite = w.responses_to(bob.peer, 0).into_iter().find(|r| r.common.cseq.method == crate::sip::Method::Invite).unwrap();
    let ok_cancel = rs.iter().find(|r| r.status == 200 && r.common.cseq.method == crate::sip::Method::Cancel).expect("200 to CANCEL");
    assert_eq!(ok_cancel.common.to.tag(), ok_invite.common.to.tag(), "RFC 3261 §9.2: same To tag as the INVITE's response");
    assert!(!rs.iter().any(|r| r.status == 487), "an answered INVITE is not terminated");
    assert_eq!(w.core.live().orbits_occupied, 1);
}

#[test]
fn cancel_for_unknown_transaction_is_481() {
    let mut w = World::new();
    let p = udp(5090);
    w.deliver(p, "CANCEL sip:700@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKnope\nFrom: <sip:x@h>;tag=1\nTo: <sip:700@h>\nCall-ID: nope\nCSeq: 1 CANCEL\nMax-Forwards: 70\n");
    assert_eq!(w.last_response_to(p, 0).status, 481);
}

#[test]
fn invite_without_sdp_gets_offer_and_music_follows_answer_in_ack() {
    // RFC 3264 §5 / RFC 3261 §13.2.1: no offer in the INVITE → offer in the 2xx, answer in the ACK.
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    w.deliver(bob.peer, &bob.invite("700", "Referred-By: <sip:alice@h>\n", None));
    let ok = w.last_response_to(bob.peer, 0);
    let body = String::from_utf8_lossy(&ok.common.body).to_string();
    assert!(body.contains("m=audio 20000 RTP/AVP 0 8"), "offer lists PCMU and PCMA: {body}");
    assert!(body.ends_with("a=rtcp:20001\r\na=rtcp-mux\r\n"), "parkd's offer has rtcp-mux and its RTCP port: {body}");
    let tag = ok.common.to.tag().unwrap().to_string();
    w.deliver(bob.peer, &bob.ack("700", &tag, 1, Some(&bob.sdp("8", "sendrecv"))));
    assert!(matches!(w.media.as_slice(), [MediaCommand::RtcpPort { port: 15071, .. }, MediaCommand::Hold { codec: Codec::Pcma, .. }, MediaCommand::DtmfPayloadType { .. }]), "{:?}", w.media);
}

#[test]
fn retrieve_by_replaces_takes_the_named_parked_call() {
    // RFC 3891 §3: to-tag = the recipient's (parkd's) tag, from-tag = the other side's.
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    let tag = w.park(&bob, "700", BLIND).tag;
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    let hdr = format!("Replaces: {};to-tag={};from-tag={}\n", bob.call_id, tag, bob.tag);
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("parkd", &hdr, Some(&carol.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(carol.peer, since).status, 200);
    let dave = Phone { call_id: "dave-call".into(), ..Phone::new("dave", 5072) };
    w.deliver(dave.peer, &dave.invite("parkd", "Replaces: nothing@x;to-tag=a;from-tag=b\n", Some(&dave.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(dave.peer, 0).status, 481);
}

#[test]
fn offer_without_g711_is_488() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    let sdp = "v=0\no=b 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 18\na=rtpmap:18 G729/8000\n";
    w.deliver(bob.peer, &bob.invite("700", "Referred-By: <sip:alice@h>\n", Some(sdp)));
    assert_eq!(w.last_response_to(bob.peer, 0).status, 488);
    assert_eq!(w.core.live().orbits_occupied, 0, "no orbit held after a refusal");
}


/// Self-park (issue 4): a caller who dials the park code itself (no Referred-By: it is the parker, e.g.
/// the consultation leg of an attended park) hears "parked on 7 0 1" before the music.
#[test]
fn self_park_announces_the_orbit_before_hold_music() {
    use crate::media::{MusicId, Prompt};
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    w.park(&bob, "700", SELF_PARK);
    assert_eq!(
        w.media,
        vec![
            MediaCommand::RtcpPort { leg: LEG_20000, port: 15071 },
            MediaCommand::Hold { leg: LEG_20000, remote: "127.0.0.1:15070".parse().unwrap(), codec: Codec::Pcmu, music: MusicId(0) },
            MediaCommand::DtmfPayloadType { leg: LEG_20000, pt: Some(101) },
            MediaCommand::Announce {
                leg: LEG_20000,
                words: vec![Prompt::ParkedOn, Prompt::Digit(7), Prompt::Digit(0), Prompt::Digit(1)]
            },
        ]
    );
    // The second self-park lands on 702 and hears its own orbit.
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    let since = w.media.len();
    w.park(&carol, "700", SELF_PARK);
    assert!(matches!(&w.media[since..], [MediaCommand::RtcpPort { .. }, MediaCommand::Hold { .. }, MediaCommand::DtmfPayloadType { .. }, MediaCommand::Announce { words, .. }]
        if words[..] == [Prompt::ParkedOn, Prompt::Digit(7), Prompt::Digit(0), Prompt::Digit(2)]));
}

/// A transferee (Referred-By names the parker), a directed park, a lot with `announce_orbit = false`, and a
/// self-park whose phone holds parkd (sendonly) get the music without an announcement.
#[test]
fn no_announcement_for_a_transferee_or_when_disabled_or_not_listening() {
    let announced = |w: &World| w.media.iter().any(|m| matches!(m, MediaCommand::Announce { .. }));
    let mut w = World::new();
    w.park(&Phone::new("bob", 5070), "700", BLIND);
    w.park(&Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) }, "704", BLIND);
    assert_eq!(w.media.iter().filter(|m| matches!(m, MediaCommand::Hold { .. })).count(), 2);
    assert!(!announced(&w), "a transferee was parked by someone else: {:?}", w.media);

    let mut lot = crate::config::LotConfig::default_lot();
    lot.announce_orbit = false;
    let mut w = World::with_lots(vec![lot]);
    w.park(&Phone::new("bob", 5070), "700", SELF_PARK);
    assert!(matches!(w.media[..], [MediaCommand::RtcpPort { .. }, MediaCommand::Hold { .. }, MediaCommand::DtmfPayloadType { .. }]), "announce_orbit = false: {:?}", w.media);

    let mut w = World::new();
    let dave = Phone::new("dave", 5072);
    let since = w.sent.len();
    w.deliver(dave.peer, &dave.invite("700", "", Some(&dave.sdp("0", "sendonly"))));
    let tag = w.last_response_to(dave.peer, since).common.to.tag().unwrap().to_string();
    w.deliver(dave.peer, &dave.ack("700", &tag, dave.cseq, None));
    assert!(matches!(w.media[..], [MediaCommand::RtcpPort { .. }, MediaCommand::Hold { .. }, MediaCommand::Update { send: false, .. }, MediaCommand::DtmfPayloadType { .. }]), "{:?}", w.media);
}

/// Attended park (RFC 3891 §3): Alice's consultation call to the park code hears "parked on 701"; Bob, swapped
/// into the orbit by Replaces, has a parker (Alice) and hears only the music.
#[test]
fn attended_park_announces_to_the_consultation_leg_not_to_the_swapped_in_transferee() {
    let mut w = World::new();
    let alice = Phone::new("alice", 5999);
    let bob = Phone::new("bob", 5070);
    let atag = w.park(&alice, "700", SELF_PARK).tag;
    assert!(w.media.iter().any(|m| matches!(m, MediaCommand::Announce { leg: LEG_20000, .. })), "{:?}", w.media);
    let replaces = format!("Replaces: {};to-tag={};from-tag={}\n", alice.call_id, atag, alice.tag);
    let since = w.sent.len();
    w.deliver(bob.peer, &bob.invite("700", &replaces, Some(&bob.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(bob.peer, since);
    assert_eq!(ok.status, 200);
    let media_before = w.media.len();
    w.deliver(bob.peer, &bob.ack("700", ok.common.to.tag().unwrap(), 1, None));
    let after = &w.media[media_before..];
    assert!(after.iter().any(|m| matches!(m, MediaCommand::Hold { leg: LEG_20002, .. })), "{after:?}");
    assert!(!after.iter().any(|m| matches!(m, MediaCommand::Announce { .. })), "{after:?}");
}

#[test]
fn required_extension_parkd_lacks_is_420_with_unsupported() {
    // RFC 3261 §8.2.2.3.
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    w.deliver(bob.peer, &bob.invite("700", "Require: 100rel, replaces\nReferred-By: <sip:alice@h>\n", Some(&bob.sdp("0", "sendrecv"))));
    let r = w.last_response_to(bob.peer, 0);
    assert_eq!((r.status, r.common.header("Unsupported")), (420, Some("100rel")));
    assert_eq!(w.core.live().orbits_occupied, 0);
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    w.deliver(carol.peer, &carol.invite("700", "Require: replaces\nReferred-By: <sip:alice@h>\n", Some(&carol.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(carol.peer, 0).status, 200, "a supported extension is fine");
}

/// `rtp_legs_per_port = 4` with a one-port range: four parks share the SDP port, each with its
/// own media leg id (the media plane tells them apart by source address).
#[test]
fn shared_rtp_port_four_parks_get_the_same_sdp_port_and_distinct_media_legs() {
    let server = ServerConfig {
        listen: "127.0.0.1:5060".parse().unwrap(),
        rtp_ports: NumRange::parse("20000-20001").unwrap(),
        rtp_legs_per_port: 4,
        ..ServerConfig::default()
    };
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    let mut w = World::with_server(server, vec![lot]);
    let phones = [Phone::new("bob", 5070), Phone::new("carol", 5072), Phone::new("dave", 5074), Phone::new("erin", 5076)];
    for p in &phones {
        w.park(p, "700", SELF_PARK);
        let answer = w.last_response_to(p.peer, 0);
        assert!(String::from_utf8_lossy(&answer.common.body).contains("m=audio 20000 RTP/AVP"), "SDP names the shared port");
    }
    let mut legs: Vec<MediaLegId> = w
        .media
        .iter()
        .filter_map(|m| match m {
            MediaCommand::Hold { leg, .. } => Some(*leg),
            _ => None,
        })
        .collect();
    assert_eq!(legs.len(), 4);
    assert!(legs.iter().all(|l| l.port() == 20000));
    legs.sort_unstable();
    legs.dedup();
    assert_eq!(legs.len(), 4, "distinct media legs: {legs:?}");
    // A fifth call finds no room.
    let frank = Phone::new("frank", 5078);
    w.deliver(frank.peer, &frank.invite("700", "", Some(&frank.sdp("0 8 101", "sendrecv"))));
    assert_eq!(w.last_response_to(frank.peer, 0).status, 503);
}

#[test]
fn replaces_with_swapped_tags_still_finds_the_parked_call() {
    // RFC 3891 §3 orientation is to-tag = parkd's tag; phones that send it the other way round still work.
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    let tag = w.park(&bob, "700", BLIND).tag;
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    let hdr = format!("Replaces: {};to-tag={};from-tag={}\n", bob.call_id, bob.tag, tag);
    w.deliver(carol.peer, &carol.invite("701", &hdr, Some(&carol.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(carol.peer, 0);
    assert_eq!(ok.status, 200);
    assert_eq!(header(&ok, "P-Asserted-Identity"), Some("<sip:bob@127.0.0.1:5070>"));
}

/// `media_threads = 2`: the RTP range 20000-20099 is two blocks (20000-20048, 20050-20098). Parked calls
/// alternate between blocks; a retriever's leg is taken in its parked party's block, since a bridge is
/// relayed inside one media thread.
#[test]
fn with_two_media_threads_parks_spread_and_a_retriever_joins_its_parked_partys_thread() {
    let server = ServerConfig {
        listen: "127.0.0.1:5060".parse().unwrap(),
        rtp_ports: NumRange::parse("20000-20099").unwrap(),
        media_threads: 2,
        ..ServerConfig::default()
    };
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    let mut w = World::with_server(server, vec![lot]);
    let bob = Phone::new("bob", 5070);
    w.park(&bob, "700", BLIND);
    let eve = Phone { call_id: "eve-call".into(), ..Phone::new("eve", 5073) };
    w.park(&eve, "700", BLIND);
    let held: Vec<MediaLegId> = w.media.iter().filter_map(|m| if let MediaCommand::Hold { leg, .. } = m { Some(*leg) } else { None }).collect();
    assert_eq!(held, vec![MediaLegId::solo(20000), MediaLegId::solo(20050)], "one parked call per media thread");
    // Carol retrieves Eve (702, in the second block): her leg is taken from that block too.
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    let since = w.sent.len();
    w.deliver(carol.peer, &carol.invite("702", "", Some(&carol.sdp("0", "sendrecv"))));
    let ok = w.last_response_to(carol.peer, since);
    assert_eq!(ok.status, 200);
    assert!(String::from_utf8_lossy(&ok.common.body).contains("m=audio 20052 "), "retriever's port beside Eve's 20050");
    let ctag = ok.common.to.tag().unwrap().to_string();
    w.deliver(carol.peer, &carol.ack("702", &ctag, 1, None));
    assert!(w.media.contains(&MediaCommand::Bridge { a: MediaLegId::solo(20050), b: MediaLegId::solo(20052) }), "{:?}", w.media);
}

/// The engine contract (contract.rs): `poll_timeout` gives the reason with the deadline.
#[test]
fn poll_timeout_names_the_reason_of_each_deadline() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    let parked_at = w.now;
    w.park(&bob, "700", ParkAs::ALICE);
    assert_eq!(w.core.poll_timeout().map(|(_, why)| why), Some(Wake::Transaction), "the INVITE transaction's timers come first");
    // The transactions end (Timer L, 32 s); the recall (parking_time 45 s) is next.
    w.advance(Duration::from_secs(40));
    assert_eq!(w.core.poll_timeout(), Some((parked_at + Duration::from_secs(45), Wake::Recall)));
    // The recall INVITE rings Alice: its transaction timers come first again, its ring timeout later.
    w.advance(Duration::from_secs(5));
    assert_eq!(w.core.poll_timeout().map(|(_, why)| why), Some(Wake::Transaction));
}

/// The engine contract: what the transaction layer reports is acted on inside `handle_timeout`, with its
/// `now`, before anything is drained (no work is left for `poll_output`).
#[test]
fn an_unacknowledged_park_ends_inside_handle_timeout_not_while_draining() {
    let mut w = World::new();
    let bob = Phone::new("bob", 5070);
    w.deliver(bob.peer, &bob.invite("700", "Referred-By: <sip:alice@127.0.0.1:5999>\n", Some(&bob.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(bob.peer, 0).status, 200);
    assert_eq!(w.core.live().orbits_occupied, 1);
    // Bob never ACKs: the 2xx times out after 64·T1. Fire the deadlines without draining in between.
    let end = w.now + Duration::from_secs(33);
    while let Some((t, _)) = w.core.poll_timeout().filter(|(t, _)| *t <= end) {
        w.core.handle_timeout(t);
    }
    let live = w.core.live();
    assert_eq!((live.legs, live.calls, live.orbits_occupied), (0, 0, 0), "the call ended inside handle_timeout");
    let mut events = Vec::new();
    while let Some(o) = w.core.poll_output() {
        if let super::Output::Event(e) = o {
            events.push(e);
        }
    }
    assert!(events.iter().any(|e| matches!(e, ParkEvent::AckTimeout { .. })), "{events:?}");
}

#[test]
fn a_core_with_a_plan_hands_out_ports_from_that_plan_only() {
    use crate::park::shard_plan::ShardPlan;
    use crate::time::Time;
    let server = ServerConfig { listen: "127.0.0.1:5060".parse().unwrap(), rtp_ports: NumRange::parse("20000-20099").unwrap(), ..ServerConfig::default() };
    let mut lot = LotConfig::default_lot();
    lot.orbits = NumRange::parse("701-705").unwrap();
    // The plan the media threads were spawned from covers two ports; the config's range is wider.
    let plan = ShardPlan::new(20000, 20003, 1, 2).unwrap();
    let core = super::Core::with_plan(server, vec![lot], crate::txn::TimerConfig::default(), 42, &plan);
    let mut w = World { core, now: Time::from_secs(1_000_000), sent: Vec::new(), media: Vec::new(), events: Vec::new(), commands_done: Vec::new(), journal: Vec::new(), cluster_ops: Vec::new() };
    w.park(&Phone::new("bob", 5070), "700", BLIND);
    w.park(&Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) }, "700", BLIND);
    let starts: Vec<_> = w.media.iter().filter_map(|m| match m {
        MediaCommand::Hold { leg, .. } => Some(leg.port()),
        _ => None,
    }).collect();
    assert_eq!(starts.len(), 2, "{:?}", w.media);
    assert!(starts.contains(&20000) && starts.contains(&20002), "one leg in each block: {starts:?}");
    let dave = Phone { call_id: "dave-call".into(), ..Phone::new("dave", 5072) };
    w.deliver(dave.peer, &dave.invite("700", "Referred-By: <sip:alice@h>\n", Some(&dave.sdp("0", "sendrecv"))));
    assert_eq!(w.last_response_to(dave.peer, 0).status, 503, "the plan's ports are all taken");
}
