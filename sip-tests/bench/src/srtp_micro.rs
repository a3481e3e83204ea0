//! `--srtp-micro`: nanoseconds per SRTP protect of one hold packet (12-byte RTP header + 160-byte PCMU frame),
//! per suite and per way of calling the library, against floors measured in the same run (issue 19's 1.3× goal).
//!
//! No parkd process, no socket: this is the user-space work of one protect, as the media plane does it for each
//! hold packet. Each variant protects `PACKETS` packets round-robin over `CONTEXTS` streams (each its own SRTP
//! context and sequence), so the per-stream state is not all in L1 as with one stream; the rounds alternate the
//! variants and the best round of each is printed (the VM is shared: the minimum is the least disturbed figure).
//! Figures and ratios only, never pass/fail.
//!
//! Variants (all on `rtc-srtp` 0.21 over ring, what parkd links):
//! * `before` — what parkd did until now: the stock provider, `encrypt_rtp` on header‖payload copied into a scratch
//!   buffer (the library parses the header), the result frozen and sliced after the header (a second, shared
//!   allocation).
//! * `+ AES key schedule kept` — the same with parkd's crypto ([`parkd::media::srtp::crypto`]: AES-CM's key schedule
//!   expanded once per context instead of per packet).
//! * `+ header given` — `encrypt_rtp_with_header` with the RTP header parkd wrote (no parse in the library), the
//!   result's start moved past the header in the same buffer (one allocation).
//! * `parkd now` — `SrtpLeg::protect_frame`, the media plane's call, which does all of the above.
//! * `crypto only` — the keystream and the tag alone through the same provider (AES-CM: AES-CTR over the payload and
//!   pre-keyed HMAC-SHA1 over packet‖ROC; GCM: ring's seal): what no way of calling the library can go below.
//!
//! With `cold`, the caches are overwritten (a 32 MiB write, not timed) after each pass over the N streams, as 20 ms
//! of a busy server's other work would: each stream's SRTP state is then fetched from memory, as in parkd at scale.

use std::hint::black_box;

use bytes::Bytes;
use parkd::media::srtp::{self, MasterKey, SrtpKeys, SrtpLeg, SrtpSuite};
use rtc_srtp::context::Context;
use rtc_srtp::crypto::{AeadAlgorithm, HmacAlgorithm, RTCCrypto, StreamCipherAlgorithm};
use rtc_srtp::protection_profile::ProtectionProfile;

const PAYLOAD: usize = 160;
const HEADER: usize = 12;

/// Settings: packets per round, rounds, streams.
pub struct Settings {
    pub packets: usize,
    pub rounds: usize,
    pub contexts: Vec<usize>,
    /// Also measure with the caches overwritten between passes (N > 1 only).
    pub cold: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { packets: 50_000, rounds: 25, contexts: vec![1, 2000], cold: true }
    }
}

fn header(seq: u16, ssrc: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0] = 0x80;
    h[2..4].copy_from_slice(&seq.to_be_bytes());
    h[4..8].copy_from_slice(&(160 * seq as u32).to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    h
}

fn profile(suite: SrtpSuite) -> ProtectionProfile {
    match suite {
        SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        SrtpSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    }
}

fn master(suite: SrtpSuite, i: usize) -> Vec<u8> {
    (0..suite.master_len()).map(|k| (k * 31 + i * 7) as u8).collect()
}

/// One way of protecting a hold packet, over `n` streams.
enum Way {
    Copy { scratch: Vec<u8> },
    CopyAlloc { scratch: Vec<u8> },
    Lib { ctx: Vec<Context>, scratch: Vec<u8> },
    Leg { legs: Vec<SrtpLeg>, scratch: Vec<u8> },
    WithHeader { ctx: Vec<Context>, scratch: Vec<u8> },
    CryptoCm { ctr: Vec<Box<dyn rtc_srtp::crypto::StreamCipher>>, mac: Vec<Box<dyn rtc_srtp::crypto::Mac>>, scratch: Vec<u8>, tag_len: usize },
    CryptoGcm { aead: Vec<Box<dyn rtc_srtp::crypto::AeadCipher>>, scratch: Vec<u8> },
}

impl Way {
    fn protect(&mut self, i: usize, seq: u16, payload: &[u8]) -> usize {
        let ssrc = 0x1000 + i as u32;
        let h = header(seq, ssrc);
        match self {
            Way::Copy { scratch } => {
                scratch.clear();
                scratch.extend_from_slice(&h);
                scratch.extend_from_slice(payload);
                black_box(&scratch[..]).len()
            }
            Way::CopyAlloc { scratch } => {
                scratch.clear();
                scratch.extend_from_slice(&h);
                scratch.extend_from_slice(payload);
                black_box(Bytes::copy_from_slice(&scratch[HEADER..])).len()
            }
            Way::Lib { ctx, scratch } => {
                scratch.clear();
                scratch.extend_from_slice(&h);
                scratch.extend_from_slice(payload);
                let sealed = ctx[i].encrypt_rtp(scratch).expect("protect").freeze();
                let mut out = [0u8; HEADER];
                out.copy_from_slice(&sealed[..HEADER]);
                black_box((out, sealed.slice(HEADER..))).1.len()
            }
            Way::Leg { legs, scratch } => black_box(legs[i].protect_frame(&h, payload, scratch).expect("protect")).1.len(),
            Way::WithHeader { ctx, scratch } => {
                scratch.clear();
                scratch.extend_from_slice(&h);
                scratch.extend_from_slice(payload);
                let hdr = rtc_rtp::header::Header {
                    version: 2,
                    sequence_number: seq,
                    timestamp: 160 * seq as u32,
                    ssrc,
                    ..Default::default()
                };
                let mut sealed = ctx[i].encrypt_rtp_with_header(scratch, &hdr).expect("protect");
                let mut out = [0u8; HEADER];
                out.copy_from_slice(&sealed[..HEADER]);
                bytes::Buf::advance(&mut sealed, HEADER);
                black_box((out, sealed.freeze())).1.len()
            }
            Way::CryptoCm { ctr, mac, scratch, tag_len } => {
                scratch.clear();
                scratch.extend_from_slice(&h);
                scratch.extend_from_slice(payload);
                let mut iv = [0u8; 16];
                iv[4..8].copy_from_slice(&ssrc.to_be_bytes());
                iv[12..14].copy_from_slice(&seq.to_be_bytes());
                ctr[i].apply_keystream(&iv, &mut scratch[HEADER..]).expect("ctr");
                let mut tag = [0u8; 20];
                mac[i].sign(&[scratch, &0u32.to_be_bytes()], &mut tag).expect("hmac");
                scratch.extend_from_slice(&tag[..*tag_len]);
                black_box(&scratch[..]).len()
            }
            Way::CryptoGcm { aead, scratch } => {
                scratch.clear();
                scratch.extend_from_slice(&h);
                scratch.extend_from_slice(payload);
                let mut nonce = [0u8; 12];
                nonce[2..6].copy_from_slice(&ssrc.to_be_bytes());
                nonce[10..12].copy_from_slice(&seq.to_be_bytes());
                let mut tag = [0u8; 16];
                let (aad, body) = scratch.split_at_mut(HEADER);
                aead[i].seal_in_place(&nonce, aad, body, &mut tag).expect("gcm");
                scratch.extend_from_slice(&tag);
                black_box(&scratch[..]).len()
            }
        }
    }
}

fn ways(suite: SrtpSuite, n: usize) -> Vec<(&'static str, Way)> {
    let stock = srtp::ring_crypto().expect("ring provider");
    let ours = srtp::crypto().expect("parkd crypto");
    let ctxs = |c: &dyn RTCCrypto| -> Vec<Context> {
        (0..n)
            .map(|i| {
                let m = master(suite, i);
                let (k, s) = m.split_at(16);
                Context::new(k, s, profile(suite), None, None, c).expect("context")
            })
            .collect()
    };
    let legs = (0..n)
        .map(|i| {
            let key = |x: usize| MasterKey::new(suite, &master(suite, x)).expect("key");
            SrtpLeg::new(&SrtpKeys { suite, local: key(i), remote: key(i + 100_000) }).expect("leg")
        })
        .collect();
    let scratch = || Vec::with_capacity(256);
    let crypto = match suite {
        SrtpSuite::AeadAes128Gcm => Way::CryptoGcm {
            aead: (0..n).map(|i| ours.new_aead(AeadAlgorithm::Aes128Gcm, &master(suite, i)[..16]).expect("gcm")).collect(),
            scratch: scratch(),
        },
        _ => Way::CryptoCm {
            ctr: (0..n).map(|i| ours.new_stream_cipher(StreamCipherAlgorithm::Aes128Ctr, &master(suite, i)[..16]).expect("ctr")).collect(),
            mac: (0..n).map(|i| ours.new_hmac(HmacAlgorithm::Sha1, &master(suite, i)[..20]).expect("hmac")).collect(),
            scratch: scratch(),
            tag_len: suite.overhead(),
        },
    };
    vec![
        ("before: stock crypto, library's parse, sliced", Way::Lib { ctx: ctxs(stock), scratch: scratch() }),
        ("+ AES key schedule kept (parkd crypto)", Way::Lib { ctx: ctxs(ours), scratch: scratch() }),
        ("+ header given, buffer handed over whole", Way::WithHeader { ctx: ctxs(ours), scratch: scratch() }),
        ("parkd now: SrtpLeg::protect_frame", Way::Leg { legs, scratch: scratch() }),
        ("crypto only (cipher + tag, no library)", crypto),
    ]
}

/// Best ns per packet of each way over `rounds` alternated rounds; with `cold`, the caches are overwritten
/// (untimed) before each pass over the `n` streams.
fn measure(ways: &mut [(&'static str, Way)], n: usize, s: &Settings, seq0: &mut u16, cold: bool) -> Vec<f64> {
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 3) as u8).collect();
    let mut evict = if cold { vec![0u8; 32 << 20] } else { Vec::new() };
    let mut best = vec![f64::MAX; ways.len()];
    for round in 0..s.rounds {
        for (w, (_, way)) in ways.iter_mut().enumerate() {
            let mut seq = *seq0;
            let mut sum = 0usize;
            let mut spent = 0u64;
            let mut t = thread_cpu_ns();
            for p in 0..s.packets {
                let i = p % n;
                if i == 0 {
                    seq = seq.wrapping_add(1);
                    if cold {
                        spent += thread_cpu_ns() - t;
                        evict.iter_mut().step_by(64).for_each(|b| *b = b.wrapping_add(round as u8 | 1));
                        black_box(&evict);
                        t = thread_cpu_ns();
                    }
                }
                sum += way.protect(i, seq, &payload);
            }
            spent += thread_cpu_ns() - t;
            let ns = spent as f64 / s.packets as f64;
            black_box(sum);
            best[w] = best[w].min(ns);
        }
        *seq0 = seq0.wrapping_add((s.packets / n + 1) as u16);
    }
    best
}

/// This thread's CPU time: time the thread was descheduled (other jobs on a shared machine) is not counted.
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Runs the micro-benchmark and returns the report (Markdown).
pub fn run(s: &Settings) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "SRTP protect of one hold packet ({HEADER}-byte RTP header + {PAYLOAD}-byte PCMU), rtc-srtp 0.21 over ring; best of {} rounds of {} packets (thread CPU time), round-robin over N streams\n\n",
        s.rounds, s.packets
    ));
    let runs = s.contexts.iter().map(|&n| (n, false)).chain(s.contexts.iter().filter(|&&n| s.cold && n > 1).map(|&n| (n, true)));
    for (n, cold) in runs.collect::<Vec<_>>() {
        let mut seq0 = 1u16;
        let mut floors = [(" floor: memcpy of the packet", Way::Copy { scratch: Vec::with_capacity(256) }), (" floor: memcpy + a new buffer", Way::CopyAlloc { scratch: Vec::with_capacity(256) })];
        let f = measure(&mut floors, 1, s, &mut seq0, false);
        let how = if cold { ", caches overwritten between passes (cold)" } else { "" };
        out.push_str(&format!("N = {n} streams{how}; floors: memcpy {:.1} ns, memcpy + new buffer {:.1} ns\n\n", f[0], f[1]));
        out.push_str("| suite | way | ns per packet | × memcpy floor | × before |\n|---|---|---|---|---|\n");
        for suite in SrtpSuite::ALL {
            let mut w = ways(suite, n);
            let ns = measure(&mut w, n, s, &mut seq0, cold);
            for ((name, _), v) in w.iter().zip(&ns) {
                out.push_str(&format!("| {} | {name} | {v:.0} | {:.1}× | {:.2}× |\n", suite.name(), v / f[0].max(0.1), v / ns[0]));
            }
        }
        out.push('\n');
    }
    out
}
