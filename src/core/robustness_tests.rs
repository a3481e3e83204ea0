//! The engine never panics on network input: seeded random mutations of whole call flows (park, retrieve,
//! REFER, SUBSCRIBE, BYE, CANCEL, re-INVITE), delivered in random order with random time jumps. Deterministic:
//! the same seed gives the same run, so a failure can be replayed.

use super::testkit::{crlf, Phone, World};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

fn corpus() -> Vec<(Phone, String)> {
    let bob = Phone::new("bob", 5070);
    let carol = Phone { call_id: "carol-call".into(), ..Phone::new("carol", 5071) };
    let sdp = bob.sdp("0 8 101", "sendrecv");
    let rb = "Referred-By: <sip:alice@127.0.0.1:5999>\n";
    let mut v = vec![
        (bob.invite("700", rb, Some(&sdp)), 5070),
        (bob.invite("705", rb, Some(&sdp)), 5070),
        (carol.invite("701", "", Some(&carol.sdp("8", "sendrecv"))), 5071),
        (carol.invite("700", "Replaces: bob-call@test;to-tag=x;from-tag=bob-tag\n", Some(&sdp)), 5071),
        (bob.invite("700", rb, None), 5070),
    ];
    for (who, port) in [(&bob, 5070u16), (&carol, 5071u16)] {
        v.push((who.ack("700", "0000000000000000", 1, None), port));
        v.push((who.in_dialog("BYE", "700", "0000000000000000", 2, None), port));
        v.push((who.in_dialog("INVITE", "700", "0000000000000000", 3, Some(&who.sdp("0", "sendonly"))), port));
        v.push((who.in_dialog("REFER", "701", "0000000000000000", 4, None).replace("Contact:", "Refer-To: <sip:700@h>\nContact:"), port));
    }
    v.push((
        "SUBSCRIBE sip:701@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bKs1\nFrom: <sip:w@h>;tag=w1\nTo: <sip:701@h>\nCall-ID: sub1\nCSeq: 1 SUBSCRIBE\nContact: <sip:w@127.0.0.1:5072>\nEvent: dialog\nExpires: 600\nMax-Forwards: 70\n".to_string(),
        5072,
    ));
    v.push((
        "CANCEL sip:700@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bob-call.test-1;rport\nFrom: <sip:bob@127.0.0.1:5070>;tag=bob-tag\nTo: <sip:700@127.0.0.1:5060>\nCall-ID: bob-call@test\nCSeq: 1 CANCEL\nMax-Forwards: 70\n".to_string(),
        5070,
    ));
    v.into_iter().map(|(text, port)| (Phone::new("x", port), text)).collect()
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
    let corpus = corpus();
    let mut rng = SmallRng::seed_from_u64(0x9a7c_d00d);
    for round in 0..40 {
        let mut w = World::new();
        for _ in 0..150 {
            let (phone, text) = &corpus[rng.gen_range(0..corpus.len())];
            let bytes = crlf(text);
            let bytes = if rng.gen_bool(0.7) { mutate(&mut rng, &bytes) } else { bytes };
            w.deliver_raw(phone.peer, &bytes);
            if rng.gen_bool(0.2) {
                w.advance(Duration::from_millis(rng.gen_range(0..40_000)));
            }
        }
        w.advance(Duration::from_secs(3_600));
        let live = w.core.live();
        assert_eq!((live.server_txns, live.client_txns), (0, 0), "round {round}: transactions left behind: {live:?}");
    }
}
