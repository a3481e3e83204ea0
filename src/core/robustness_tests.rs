//! The engine never panics on network input: seeded random mutations of whole call flows (park, retrieve,
//! REFER, SUBSCRIBE, BYE, CANCEL, re-INVITE), delivered in random order with random time jumps. Deterministic:
//! the same seed gives the same run, so a failure can be replayed.

use super::testkit::{crlf, Phone, World};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// Dialog-creating requests, then in-dialog ones built with the To tag parkd actually gave each phone, so
/// mutations reach the engine's dialog paths (BYE, ACK, re-INVITE, REFER), not only the 481 branch.
fn phones() -> Vec<Phone> {
    vec![Phone::new("bob", 5070), Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) }]
}

fn fresh_request(rng: &mut SmallRng, p: &Phone) -> String {
    let sdp = p.sdp("0 8 101", "sendrecv");
    let rb = "Referred-By: <sip:alice@127.0.0.1:5999>\n";
    match rng.gen_range(0..7) {
        0 => p.invite("700", rb, Some(&sdp)),
        1 => p.invite("705", rb, Some(&sdp)),
        2 => p.invite("701", "", Some(&p.sdp("8", "sendrecv"))),
        3 => p.invite("700", "Replaces: bob-call@test;to-tag=x;from-tag=bob-tag\n", Some(&sdp)),
        4 => p.invite("700", rb, None),
        5 => format!(
            "SUBSCRIBE sip:701@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {a};branch=z9hG4bKs{n}\nFrom: <sip:w@h>;tag=w1\nTo: <sip:701@h>\nCall-ID: sub{n}\nCSeq: 1 SUBSCRIBE\nContact: <sip:w@{a}>\nEvent: dialog\nExpires: 600\nMax-Forwards: 70\n",
            a = p.peer.addr,
            n = rng.gen_range(0..3)
        ),
        _ => format!(
            "CANCEL sip:700@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-{b}-1;rport\nFrom: <sip:{n}@127.0.0.1:{port}>;tag={t}\nTo: <sip:700@127.0.0.1:5060>\nCall-ID: {c}\nCSeq: 1 CANCEL\nMax-Forwards: 70\n",
            a = p.peer.addr,
            b = p.call_id.replace('@', "."),
            n = p.name,
            port = p.peer.addr.port(),
            t = p.tag,
            c = p.call_id
        ),
    }
}

fn in_dialog_request(rng: &mut SmallRng, p: &Phone, tag: &str) -> String {
    let cseq = rng.gen_range(1..6);
    match rng.gen_range(0..5) {
        0 => p.ack("700", tag, cseq, None),
        1 => p.in_dialog("BYE", "700", tag, cseq + 1, None),
        2 => p.in_dialog("INVITE", "700", tag, cseq + 1, Some(&p.sdp("0", "sendonly"))),
        3 => p.in_dialog("REFER", "701", tag, cseq + 1, None).replace("Contact:", "Refer-To: <sip:700@h>\nContact:"),
        _ => p.in_dialog("OPTIONS", "700", tag, cseq + 1, None),
    }
}

fn mutate(rng: &mut SmallRng, msg: &[u8]) -> Vec<u8> {
    let mut m = msg.to_vec();
    for _ in 0..rng.gen_range(0..4) {
        if m.is_empty() {
            break;
        }
        let i = rng.gen_range(0..m.len());
        match rng.gen_range(0..5) {
            0 => m[i] = rng.gen(),
            1 => {
                m.remove(i);
            }
            2 => m.insert(i, *b";:<>@%\",= \r\n0".get(rng.gen_range(0..14)).unwrap_or(&b'x')),
            3 => m.truncate(i),
            _ => {
                let j = rng.gen_range(i..m.len());
                let dup: Vec<u8> = m[i..j].to_vec();
                m.splice(i..i, dup);
            }
        }
    }
    m
}

#[test]
fn random_call_flows_never_panic_the_engine() {
    let phones = phones();
    let mut rng = SmallRng::seed_from_u64(0x9a7c_d00d);
    let mut in_dialog_delivered = 0;
    for round in 0..40 {
        let mut w = World::new();
        let mut tags: Vec<(usize, String)> = Vec::new();
        for _ in 0..150 {
            let who = rng.gen_range(0..phones.len());
            let p = &phones[who];
            let known: Vec<&String> = tags.iter().filter(|(i, _)| *i == who).map(|(_, t)| t).collect();
            let text = if !known.is_empty() && rng.gen_bool(0.5) {
                in_dialog_delivered += 1;
                let tag = known[rng.gen_range(0..known.len())].clone();
                in_dialog_request(&mut rng, p, &tag)
            } else {
                fresh_request(&mut rng, p)
            };
            let bytes = crlf(&text);
            let bytes = if rng.gen_bool(0.5) { mutate(&mut rng, &bytes) } else { bytes };
            let since = w.sent.len();
            w.deliver_raw(p.peer, &bytes);
            for r in w.responses_to(p.peer, since) {
                if let Some(t) = r.common.to.tag().filter(|_| r.status == 200) {
                    if !tags.iter().any(|(i, x)| *i == who && x == t) {
                        tags.push((who, t.to_string()));
                    }
                }
            }
            if rng.gen_bool(0.2) {
                w.advance(Duration::from_millis(rng.gen_range(0..40_000)));
            }
        }
        w.advance(Duration::from_secs(3_600));
        let live = w.core.live();
        assert_eq!((live.server_txns, live.client_txns), (0, 0), "round {round}: transactions left behind: {live:?}");
    }
    assert!(in_dialog_delivered > 1_000, "the run must exercise in-dialog paths ({in_dialog_delivered})");
}
