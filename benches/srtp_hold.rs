//! CPU per hold-music packet with SRTP against plain RTP, measured in the same run on the same plane:
//! `cargo bench --bench srtp_hold` (prints figures, never pass/fail).
//!
//! For each suite, `LEGS` legs are put on hold (one set plain, one set SRTP) and the sans-IO media plane's
//! `poll_hold` is run over `SECONDS` of virtual time, 1 ms per call as the media thread does. What is measured is
//! the user-space work of producing the packets (pacer, header, and for SRTP the copy into the scratch buffer and
//! the protect step); sending (the kernel's part, the same for both but 10 or 16 bytes longer) is not included.
//! The density ceiling printed is one core's budget divided by the SRTP cost (50 packets/s per stream), before
//! the send syscalls. The last lines run the same with rtcp-mux on every leg over `RTCP_SECONDS`: the hold
//! Sender Reports (one every ~5 s per stream, SRTCP on SRTP legs) are produced in the same pacer turns, and their
//! cost is shown per hold RTP packet.

use std::hint::black_box;
use std::time::{Duration, Instant};

use parkd::media::srtp::{MasterKey, SrtpKeys, SrtpSuite};
use parkd::media::{Codec, HoldBatch, MediaCommand, MediaLegId, MediaPlane, MusicId};
use parkd::time::Time;

const LEGS: u16 = 2000;
const SECONDS: u64 = 5;
const RTCP_SECONDS: u64 = 20;
const RTCP_ROUNDS: usize = 3;

fn run(srtp: Option<SrtpSuite>) -> (Duration, u64) {
    run_for(srtp, false, SECONDS)
}

/// `(time, hold RTP packets)` of `seconds` of hold on `LEGS` legs.
fn run_for(srtp: Option<SrtpSuite>, mux: bool, seconds: u64) -> (Duration, u64) {
    let mut plane = MediaPlane::new(vec![], 7);
    let t0 = Time::from_secs(1_000_000);
    for i in 0..LEGS {
        let leg = MediaLegId::solo(10_000 + 2 * i);
        if let Some(suite) = srtp {
            let key = |x: u8| MasterKey::new(suite, &vec![x; suite.master_len()]).unwrap();
            plane.apply(t0, MediaCommand::Srtp { leg, keys: Some(Box::new(SrtpKeys { suite, local: key(i as u8), remote: key(!(i as u8)) })), roc: 0, srtcp: 0 });
        }
        plane.apply(t0, MediaCommand::RtcpMux { leg, on: mux });
        plane.apply(t0, MediaCommand::Hold { leg, remote: "127.0.0.1:4000".parse().unwrap(), codec: Codec::Pcmu, music: MusicId(0) });
    }
    let mut batch = HoldBatch::with_capacity(LEGS as usize);
    let mut packets = 0u64;
    let start = Instant::now();
    for ms in 0..seconds * 1000 {
        batch.clear();
        plane.poll_hold(t0 + Duration::from_millis(ms), &mut batch);
        packets += batch.len() as u64;
        black_box(batch.packets());
    }
    let elapsed = start.elapsed();
    // Per hold RTP packet: the reports are counted in the cost, not in the packets.
    (elapsed, packets - plane.stats().rtcp_sent)
}

fn main() {
    let (plain, n_plain) = run(None);
    let ns_plain = plain.as_nanos() as f64 / n_plain.max(1) as f64;
    println!("{LEGS} hold streams, {SECONDS} s of virtual time, poll_hold every 1 ms");
    println!("plain RTP:               {ns_plain:>8.0} ns per hold packet ({n_plain} packets)");
    for suite in SrtpSuite::ALL {
        let (t, n) = run(Some(suite));
        let ns = t.as_nanos() as f64 / n.max(1) as f64;
        // The whole per-packet path of the plain plane is tiny; the ratio that matters for a server also counts
        // the send syscall (~1-2 µs per packet with sendto, ~0.3 µs with sendmmsg/raw): see the README.
        println!(
            "{:<24} {ns:>8.0} ns per hold packet ({n} packets): +{:.0} ns, {:.1}x the plane's plain cost; one core ≈ {:.0} SRTP hold streams before sending",
            suite.name(),
            ns - ns_plain,
            ns / ns_plain.max(1.0),
            1e9 / ns / 50.0
        );
    }
    report_alone();
    println!("{LEGS} hold streams, {RTCP_SECONDS} s of virtual time, without and with rtcp-mux (hold Sender Reports)");
    for suite in [None, Some(SrtpSuite::AesCm128HmacSha1_80)] {
        let name = suite.map_or("plain RTP", SrtpSuite::name);
        // Alternated rounds, the best of each: the difference is a few ns, below a loaded machine's drift.
        let (mut ns0, mut ns1) = (f64::MAX, f64::MAX);
        for _ in 0..RTCP_ROUNDS {
            for (mux, best) in [(false, &mut ns0), (true, &mut ns1)] {
                let (t, n) = run_for(suite, mux, RTCP_SECONDS);
                *best = best.min(t.as_nanos() as f64 / n.max(1) as f64);
            }
        }
        println!("{name:<24} {ns0:>8.0} ns per hold packet without RTCP, {ns1:>8.0} with (best of {RTCP_ROUNDS}): {:+.0} ns ({:+.1} %)", ns1 - ns0, (ns1 / ns0.max(1.0) - 1.0) * 100.0);
    }
}

/// One Sender Report alone (written, copied out, and sealed as SRTCP), amortised over the ~250 hold packets
/// (5 s at 50/s) a stream sends per report: short loops, less exposed to a loaded machine than the runs above.
fn report_alone() {
    use parkd::media::rtcp::{write_report, SenderInfo, REPORT_LEN};
    use parkd::media::srtp::SrtpLeg;
    const N: u32 = 200_000;
    let start = Instant::now();
    for i in 0..N {
        let mut out = [0u8; REPORT_LEN];
        write_report(&SenderInfo { ssrc: i, ntp: u64::from(i) << 20, rtp_ts: i * 160, packets: i, octets: i * 160 }, &mut out);
        black_box(bytes::Bytes::copy_from_slice(black_box(&out)));
    }
    let plain = start.elapsed().as_nanos() as f64 / f64::from(N);
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let key = |x: u8| MasterKey::new(suite, &vec![x; suite.master_len()]).unwrap();
    let mut leg = SrtpLeg::new(&SrtpKeys { suite, local: key(1), remote: key(2) }).unwrap();
    let start = Instant::now();
    for i in 0..N {
        let mut out = [0u8; REPORT_LEN];
        write_report(&SenderInfo { ssrc: 7, ntp: u64::from(i) << 20, rtp_ts: i * 160, packets: i, octets: i * 160 }, &mut out);
        black_box(leg.protect_rtcp_frame(&out).unwrap());
    }
    let sealed = start.elapsed().as_nanos() as f64 / f64::from(N);
    println!("one hold Sender Report: {plain:.0} ns plain, {sealed:.0} ns as SRTCP (AES-CM-80); per hold packet (1 report per ~250): {:.1} ns, {:.1} ns", plain / 250.0, sealed / 250.0);
}
