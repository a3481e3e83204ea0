//! MediaPlane announcement tests ([`MediaCommand::Announce`]), all in virtual time.
//!
//! The music loop is the one of `plane_tests`: 10 frames, frame k the μ-law of k*1000, so music
//! frame k is recognizable by its first byte.

use super::*;
use crate::media::music::FRAME_SAMPLES;
use crate::media::prompts::{Prompt, PromptBank};
use crate::media::rtp::parse;
use bytes::Bytes;

const T0_MS: u64 = 1_700_000_000_000;

fn t(ms: u64) -> Time {
    Time::from_millis(T0_MS + ms)
}

fn remote() -> SocketAddr {
    "10.0.0.1:4000".parse().unwrap()
}

fn plane() -> MediaPlane {
    let mut pcm = Vec::new();
    for k in 0..10i16 {
        pcm.extend(std::iter::repeat_n(k * 1000, FRAME_SAMPLES));
    }
    MediaPlane::new(vec![HoldMusic::from_pcm(&pcm).unwrap()], 7)
}

fn music_frame(codec: Codec, k: usize) -> Bytes {
    let mut pcm = Vec::new();
    for j in 0..10i16 {
        pcm.extend(std::iter::repeat_n(j * 1000, FRAME_SAMPLES));
    }
    HoldMusic::from_pcm(&pcm).unwrap().frame(codec, k)
}

/// The payloads an announcement of `words` should send, in order.
fn spoken(codec: Codec, words: &[Prompt]) -> Vec<Bytes> {
    let bank = PromptBank::builtin();
    bank.sequence(words).into_iter().map(|f| bank.frame(codec, f)).collect()
}

fn run(p: &mut MediaPlane, from: u64, to: u64) -> Vec<HoldPacket> {
    let mut out = Vec::new();
    let mut batch = HoldBatch::with_capacity(4);
    for ms in from..to {
        batch.clear();
        p.poll_hold(t(ms), &mut batch);
        out.extend_from_slice(batch.packets());
    }
    out
}

/// One continuous RTP stream (RFC 3550 §5.1): seq +1, ts +160 per 20 ms packet, one SSRC, the
/// marker only on the first packet (RFC 3551 §4.1) when `marker_first`, never afterwards.
fn assert_continuous(pkts: &[HoldPacket], pt: u8, marker_first: bool) {
    let infos: Vec<_> = pkts.iter().map(|p| parse(&p.header).unwrap()).collect();
    assert_eq!(infos[0].marker, marker_first, "marker on the first packet");
    for w in infos.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "seq continuous (RFC 3550 §5.1)");
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(160), "ts continuous");
        assert_eq!(w[1].ssrc, w[0].ssrc, "no new SSRC");
        assert_eq!(w[1].pt.get(), pt);
        assert!(!w[1].marker, "marker only at the start (RFC 3551 §4.1)");
    }
}

#[test]
fn announce_with_hold_speaks_first_then_music_from_its_start_in_one_stream() {
    for codec in [Codec::Pcmu, Codec::Pcma] {
        let mut p = plane();
        let words = Prompt::orbit_announcement("701");
        p.apply(t(0), MediaCommand::Hold { leg: MediaLegId::solo(20_000), remote: remote(), codec, music: MusicId(0) });
        p.apply(t(0), MediaCommand::Announce { leg: MediaLegId::solo(20_000), words: words.clone() });
        let prompt = spoken(codec, &words);
        let n = prompt.len();
        assert!(n > 4 * 10, "parked on + three digits is more than 0.8 s ({n} frames)");
        let pkts = run(&mut p, 0, 20 * (n as u64 + 12));
        assert!(pkts.len() >= n + 10, "{codec:?}: {} packets", pkts.len());
        for (i, (pkt, want)) in pkts.iter().zip(&prompt).enumerate() {
            assert_eq!(&pkt.payload, want, "{codec:?}: packet {i} is prompt frame {i}");
        }
        for k in 0..10 {
            assert_eq!(pkts[n + k].payload, music_frame(codec, k), "{codec:?}: music resumes at its frame {k}");
        }
        assert_continuous(&pkts, codec.payload_type(), true);
        assert_eq!(p.stats().hold_sent, pkts.len() as u64);
    }
}

#[test]
fn announce_mid_hold_pauses_the_music_and_resumes_where_it_was() {
    let mut p = plane();
    p.apply(t(0), MediaCommand::Hold { leg: MediaLegId::solo(20_000), remote: remote(), codec: Codec::Pcmu, music: MusicId(0) });
    let before = run(&mut p, 0, 100);
    assert_eq!(before.len(), 5);
    let words = [Prompt::Digit(3)];
    p.apply(t(100), MediaCommand::Announce { leg: MediaLegId::solo(20_000), words: words.to_vec() });
    let prompt = spoken(Codec::Pcmu, &words);
    let n = prompt.len();
    let after = run(&mut p, 100, 100 + 20 * (n as u64 + 3));
    let payloads: Vec<Bytes> = after.iter().map(|p| p.payload.clone()).collect();
    assert_eq!(&payloads[..n], &prompt[..]);
    assert_eq!(&payloads[n..n + 3], &[5, 6, 7].map(|k| music_frame(Codec::Pcmu, k))[..], "music continues at frame 5");
    let all: Vec<HoldPacket> = before.into_iter().chain(after).collect();
    assert_continuous(&all, 0, true);
}

#[test]
fn bridge_or_stop_during_an_announcement_cancels_it() {
    let mut p = plane();
    let words = Prompt::orbit_announcement("702");
    p.apply(t(0), MediaCommand::Hold { leg: MediaLegId::solo(20_000), remote: remote(), codec: Codec::Pcmu, music: MusicId(0) });
    p.apply(t(0), MediaCommand::Announce { leg: MediaLegId::solo(20_000), words: words.clone() });
    p.apply(t(0), MediaCommand::Update { leg: MediaLegId::solo(20_002), remote: "10.0.0.2:4000".parse().unwrap(), codec: Codec::Pcmu, send: true });
    let first = run(&mut p, 0, 100);
    assert_eq!(first.len(), 5);
    assert_eq!(first[0].payload, spoken(Codec::Pcmu, &words)[0]);
    p.apply(t(100), MediaCommand::Bridge { a: MediaLegId::solo(20_000), b: MediaLegId::solo(20_002) });
    assert!(run(&mut p, 100, 300).is_empty(), "Bridge stops the announcement with the music");
    // Back on hold: music from the start, not the rest of the announcement.
    p.apply(t(300), MediaCommand::Hold { leg: MediaLegId::solo(20_000), remote: remote(), codec: Codec::Pcmu, music: MusicId(0) });
    let again = run(&mut p, 300, 400);
    assert_eq!(again.len(), 5);
    for (k, pkt) in again.iter().enumerate() {
        assert_eq!(pkt.payload, music_frame(Codec::Pcmu, k), "music frame {k} after the bridge");
    }

    // Stop: the leg is forgotten, nothing more is sent.
    p.apply(t(400), MediaCommand::Announce { leg: MediaLegId::solo(20_000), words: words.clone() });
    p.apply(t(400), MediaCommand::Stop { leg: MediaLegId::solo(20_000) });
    assert!(run(&mut p, 400, 600).is_empty());
    assert_eq!(p.stats().hold_streams, 0);
}

#[test]
fn announce_is_ignored_unless_hold_music_is_playing() {
    let mut p = plane();
    let words = vec![Prompt::Digit(1)];
    // An idle leg (set up by Update) and an unknown port: nothing to speak over.
    p.apply(t(0), MediaCommand::Update { leg: MediaLegId::solo(20_000), remote: remote(), codec: Codec::Pcmu, send: true });
    p.apply(t(0), MediaCommand::Announce { leg: MediaLegId::solo(20_000), words: words.clone() });
    p.apply(t(0), MediaCommand::Announce { leg: MediaLegId::solo(30_000), words: words.clone() });
    assert!(run(&mut p, 0, 100).is_empty());
    assert_eq!(p.stats().legs, 1, "Announce creates no leg");
    // Hold paused by a sendonly peer: ignored too, and not replayed when the music resumes.
    p.apply(t(100), MediaCommand::Hold { leg: MediaLegId::solo(20_000), remote: remote(), codec: Codec::Pcmu, music: MusicId(0) });
    p.apply(t(100), MediaCommand::Update { leg: MediaLegId::solo(20_000), remote: remote(), codec: Codec::Pcmu, send: false });
    p.apply(t(100), MediaCommand::Announce { leg: MediaLegId::solo(20_000), words: words.clone() });
    p.apply(t(200), MediaCommand::Update { leg: MediaLegId::solo(20_000), remote: remote(), codec: Codec::Pcmu, send: true });
    let pkts = run(&mut p, 200, 300);
    assert_eq!(pkts.len(), 5);
    assert!(pkts.iter().enumerate().all(|(k, pkt)| pkt.payload == music_frame(Codec::Pcmu, k)), "music only");
    // Nothing speakable (a digit above 9): no announcement, the music goes on.
    p.apply(t(300), MediaCommand::Announce { leg: MediaLegId::solo(20_000), words: vec![Prompt::Digit(12)] });
    let pkts = run(&mut p, 300, 340);
    assert_eq!(pkts[0].payload, music_frame(Codec::Pcmu, 5));
}

#[test]
fn pausing_mid_announcement_cancels_it_and_a_new_one_replaces_the_old() {
    let mut p = plane();
    p.apply(t(0), MediaCommand::Hold { leg: MediaLegId::solo(20_000), remote: remote(), codec: Codec::Pcmu, music: MusicId(0) });
    p.apply(t(0), MediaCommand::Announce { leg: MediaLegId::solo(20_000), words: vec![Prompt::ParkedOn] });
    assert_eq!(run(&mut p, 0, 100).len(), 5);
    // A second announcement replaces the first at the next packet; music then resumes at frame 0.
    let words = vec![Prompt::Digit(4)];
    p.apply(t(100), MediaCommand::Announce { leg: MediaLegId::solo(20_000), words: words.clone() });
    let prompt = spoken(Codec::Pcmu, &words);
    let pkts = run(&mut p, 100, 100 + 20 * (prompt.len() as u64 + 2));
    assert_eq!(pkts.iter().take(prompt.len()).map(|p| p.payload.clone()).collect::<Vec<_>>(), prompt);
    assert_eq!(pkts[prompt.len()].payload, music_frame(Codec::Pcmu, 0));
    // Pause (sendonly re-INVITE) in the middle of an announcement: on resume, music, not the rest.
    let t1 = 100 + 20 * (prompt.len() as u64 + 2);
    p.apply(t(t1), MediaCommand::Announce { leg: MediaLegId::solo(20_000), words: vec![Prompt::ParkedOn] });
    assert_eq!(run(&mut p, t1, t1 + 40).len(), 2);
    p.apply(t(t1 + 40), MediaCommand::Update { leg: MediaLegId::solo(20_000), remote: remote(), codec: Codec::Pcmu, send: false });
    p.apply(t(t1 + 100), MediaCommand::Update { leg: MediaLegId::solo(20_000), remote: remote(), codec: Codec::Pcmu, send: true });
    let pkts = run(&mut p, t1 + 100, t1 + 140);
    assert_eq!(pkts[0].payload, music_frame(Codec::Pcmu, 2), "music resumes where the announcement paused it");
}

#[test]
fn a_late_poll_inside_an_announcement_stays_on_schedule() {
    let mut p = plane();
    let words = Prompt::orbit_announcement("705");
    p.apply(t(0), MediaCommand::Hold { leg: MediaLegId::solo(20_000), remote: remote(), codec: Codec::Pcmu, music: MusicId(0) });
    p.apply(t(0), MediaCommand::Announce { leg: MediaLegId::solo(20_000), words: words.clone() });
    let prompt = spoken(Codec::Pcmu, &words);
    let first = run(&mut p, 0, 40);
    assert_eq!(first.len(), 2);
    let first_ms = p.poll_timeout().unwrap().0.as_millis() - T0_MS - 2 * 20;
    // A 100 ms stall: the next packet is the frame the schedule says, not the next in line.
    let mut batch = HoldBatch::default();
    p.poll_hold(t(first_ms + 7 * 20), &mut batch);
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.packets()[0].payload, prompt[7]);
    // A stall past the end of the announcement lands in the music at the right place.
    let end_ms = first_ms + 20 * (prompt.len() as u64 + 3);
    batch.clear();
    p.poll_hold(t(end_ms), &mut batch);
    assert_eq!(batch.packets()[0].payload, music_frame(Codec::Pcmu, 3));
}

#[test]
fn announce_in_the_millisecond_a_packet_went_out_starts_with_the_next_packet() {
    let mut p = plane();
    p.apply(t(0), MediaCommand::Hold { leg: MediaLegId::solo(20_000), remote: remote(), codec: Codec::Pcmu, music: MusicId(0) });
    let first_ms = p.poll_timeout().unwrap().0.as_millis() - T0_MS;
    assert_eq!(run(&mut p, 0, first_ms + 1).len(), 1, "music frame 0 sent at {first_ms}");
    let words = vec![Prompt::Digit(8)];
    p.apply(t(first_ms), MediaCommand::Announce { leg: MediaLegId::solo(20_000), words: words.clone() });
    let pkts = run(&mut p, first_ms + 1, first_ms + 41);
    assert_eq!(pkts[0].payload, spoken(Codec::Pcmu, &words)[0], "no prompt frame is lost");
}
