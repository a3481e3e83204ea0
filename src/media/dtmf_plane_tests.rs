//! The media plane's side of issue 21 in virtual time: key presses reported from parked legs, and the courtesy
//! tone inserted into the relay with the stream kept continuous.

use super::*;
use crate::media::dtmf::DtmfKey;
use crate::media::rtp::{parse, write_header, Pt, SeqNo, Ssrc};

const T0_MS: u64 = 1_700_000_000_000;

fn t(ms: u64) -> Time {
    Time::from_millis(T0_MS + ms)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn rtp_packet(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = write_header(Pt::new(pt).unwrap(), false, SeqNo(seq), ts, Ssrc(77)).to_vec();
    v.extend_from_slice(payload);
    v
}

const A: u16 = 20_000;
const B: u16 = 20_002;

fn held(dtmf_pt: Option<u8>) -> MediaPlane {
    let mut p = MediaPlane::new(vec![], 5);
    p.apply(t(0), MediaCommand::Hold { leg: MediaLegId::solo(A), remote: addr("10.0.0.1:4000"), codec: Codec::Pcmu, music: MusicId(0) });
    p.apply(t(0), MediaCommand::DtmfPayloadType { leg: MediaLegId::solo(A), pt: dtmf_pt });
    p
}

/// One key press as a phone sends it: six packets with one timestamp (start, updates, three end packets).
fn press(p: &mut MediaPlane, pt: u8, seq0: u16, ts: u32, event: u8, at_ms: u64) {
    for (i, (flags, dur)) in [(0x0Au8, 160u16), (0x0A, 320), (0x0A, 480), (0x8A, 640), (0x8A, 640), (0x8A, 640)].into_iter().enumerate() {
        let [d0, d1] = dur.to_be_bytes();
        let mut pkt = rtp_packet(pt, seq0 + i as u16, ts, &[event, flags, d0, d1]);
        assert!(p.on_rtp(t(at_ms + 20 * i as u64), A, addr("10.0.0.1:4000"), &mut pkt).is_none(), "a parked leg's packets are absorbed");
    }
}

fn reports(p: &mut MediaPlane) -> Vec<MediaReport> {
    std::iter::from_fn(|| p.poll_report()).collect()
}

#[test]
fn a_parked_leg_key_press_is_reported_once() {
    let mut p = held(Some(101));
    press(&mut p, 101, 10, 8000, 0, 100);
    press(&mut p, 101, 16, 16_000, 11, 400);
    let key = |c| MediaReport::Dtmf { leg: MediaLegId::solo(A), key: DtmfKey::from_char(c).unwrap() };
    assert_eq!(reports(&mut p), vec![key('0'), key('#')]);
    assert_eq!(p.stats().dtmf_keys, 2);
    // Audio is not an event; a dynamic PT that is not the negotiated one is not either.
    let mut audio = rtp_packet(0, 30, 20_000, &[0xFF; 160]);
    p.on_rtp(t(600), A, addr("10.0.0.1:4000"), &mut audio);
    press(&mut p, 96, 31, 24_000, 5, 700);
    assert_eq!(reports(&mut p), vec![]);
}

#[test]
fn without_a_negotiated_telephone_event_nothing_is_reported() {
    let mut p = held(None);
    press(&mut p, 101, 10, 8000, 5, 100);
    assert_eq!(reports(&mut p), vec![]);
}

#[test]
fn a_bridged_leg_events_are_relayed_not_reported() {
    let mut p = held(Some(101));
    p.apply(t(0), MediaCommand::Update { leg: MediaLegId::solo(B), remote: addr("10.0.0.2:4000"), codec: Codec::Pcmu, send: true });
    p.apply(t(0), MediaCommand::DtmfPayloadType { leg: MediaLegId::solo(B), pt: Some(101) });
    p.apply(t(0), MediaCommand::Bridge { a: MediaLegId::solo(A), b: MediaLegId::solo(B) });
    let mut ev = rtp_packet(101, 10, 8000, &[5, 10, 0, 160]);
    assert!(p.on_rtp(t(10), A, addr("10.0.0.1:4000"), &mut ev).is_some(), "relayed to the peer (pass-through)");
    assert_eq!(reports(&mut p), vec![]);
}

/// The tone replaces the audio of the first relayed packets; seq and ts run on without a gap or a jump across
/// the tone's start and end, with one SSRC.
#[test]
fn courtesy_tone_is_inserted_with_continuous_seq_and_ts() {
    let mut p = MediaPlane::new(vec![], 5);
    for (port, remote) in [(A, "10.0.0.1:4000"), (B, "10.0.0.2:4000")] {
        p.apply(t(0), MediaCommand::Update { leg: MediaLegId::solo(port), remote: addr(remote), codec: Codec::Pcma, send: true });
    }
    p.apply(t(0), MediaCommand::Bridge { a: MediaLegId::solo(A), b: MediaLegId::solo(B) });
    p.apply(t(0), MediaCommand::Courtesy { leg: MediaLegId::solo(B), tone: MusicId(3) });
    let tone = courtesy::builtin_tone();
    let mut out = Vec::new();
    for i in 0..25u16 {
        // A sends μ-law; B takes A-law: the tone is written in B's codec after the translation.
        let mut pkt = rtp_packet(0, 500 + i, 9000 + 160 * u32::from(i), &[0x11; 160]);
        let f = p.on_rtp(t(20 * u64::from(i)), A, addr("10.0.0.1:4000"), &mut pkt).expect("relayed");
        assert_eq!((f.port, f.to), (B, addr("10.0.0.2:4000")));
        out.push(pkt[..f.len].to_vec());
    }
    let infos: Vec<_> = out.iter().map(|b| parse(b).unwrap()).collect();
    for w in infos.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "no sequence gap");
        assert_eq!(w[1].ts.wrapping_sub(w[0].ts), 160, "no timestamp jump");
        assert_eq!(w[1].ssrc, w[0].ssrc, "one stream");
        assert_eq!(w[1].pt.get(), 8);
    }
    for (k, b) in out.iter().enumerate() {
        let payload = &b[12..];
        if k < 15 {
            assert_eq!(payload, &tone.pcma[k * 160..(k + 1) * 160], "packet {k} carries the tone");
        } else {
            assert_eq!(payload, &[crate::media::g711::ULAW_TO_ALAW[0x11]; 160][..], "packet {k} carries A's audio again");
        }
    }
    assert_eq!(p.stats().courtesy_packets, 15);
    // A's side got no tone (only B was named).
    let mut back = rtp_packet(8, 1, 1, &[0x22; 160]);
    let f = p.on_rtp(t(600), B, addr("10.0.0.2:4000"), &mut back).unwrap();
    assert_eq!(&back[12..f.len], &[0x22; 160][..]);
}

#[test]
fn courtesy_on_a_leg_that_is_not_bridged_is_ignored() {
    let mut p = held(Some(101));
    p.apply(t(0), MediaCommand::Courtesy { leg: MediaLegId::solo(A), tone: MusicId(0) });
    p.apply(t(0), MediaCommand::Update { leg: MediaLegId::solo(B), remote: addr("10.0.0.2:4000"), codec: Codec::Pcmu, send: true });
    p.apply(t(0), MediaCommand::Bridge { a: MediaLegId::solo(A), b: MediaLegId::solo(B) });
    let mut pkt = rtp_packet(0, 1, 1, &[0x33; 160]);
    let f = p.on_rtp(t(10), B, addr("10.0.0.2:4000"), &mut pkt).unwrap();
    assert_eq!(&pkt[12..f.len], &[0x33; 160][..], "a Courtesy before the bridge does nothing");
}

/// A reload gives a lot a new courtesy tone (`SetTone`): the next `Courtesy` with that id plays it; ids past the
/// end are added (a new lot's), the gap filled with the built-in beeps.
#[test]
fn set_tone_replaces_a_lot_tone_for_the_next_bridge() {
    let mut p = MediaPlane::new(vec![], 5);
    for (port, remote) in [(A, "10.0.0.1:4000"), (B, "10.0.0.2:4000")] {
        p.apply(t(0), MediaCommand::Update { leg: MediaLegId::solo(port), remote: addr(remote), codec: Codec::Pcmu, send: true });
    }
    p.apply(t(0), MediaCommand::Bridge { a: MediaLegId::solo(A), b: MediaLegId::solo(B) });
    let quiet = crate::media::HoldMusic::from_pcm(&[0i16; crate::media::music::FRAME_SAMPLES * 2]).unwrap();
    p.apply(t(0), MediaCommand::SetTone { id: MusicId(2), tone: Box::new(quiet.clone()) });
    p.apply(t(0), MediaCommand::Courtesy { leg: MediaLegId::solo(B), tone: MusicId(2) });
    let mut got = Vec::new();
    for i in 0..3u16 {
        let mut pkt = rtp_packet(0, 1 + i, 160 * u32::from(i), &[0x11; 160]);
        let f = p.on_rtp(t(20 * u64::from(i)), A, addr("10.0.0.1:4000"), &mut pkt).expect("relayed");
        got.push(pkt[12..f.len].to_vec());
    }
    assert_eq!(got[0], quiet.pcmu[..160], "the reloaded tone, not the built-in beeps");
    assert_eq!(got[1], quiet.pcmu[160..320]);
    assert_eq!(got[2], [0x11; 160], "A's audio again after the two-frame tone");
    // Id 1, filled in by the gap: the built-in beeps.
    p.apply(t(100), MediaCommand::Courtesy { leg: MediaLegId::solo(B), tone: MusicId(1) });
    let mut pkt = rtp_packet(0, 9, 1600, &[0x11; 160]);
    let f = p.on_rtp(t(100), A, addr("10.0.0.1:4000"), &mut pkt).unwrap();
    assert_eq!(pkt[12..f.len], courtesy::builtin_tone().pcmu[..160]);
}
