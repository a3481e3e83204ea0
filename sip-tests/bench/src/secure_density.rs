//! SRTP density (issue 19): park N calls whose offers are `RTP/SAVP` with an `a=crypto` key (or plain `RTP/AVP`,
//! the floor), hold them, and measure what arrives, as [`crate::density`] does for plain calls: per stream (parkd's
//! source port and SSRC) loss and kernel-timestamped inter-arrival, parkd's CPU per packet.
//!
//! The sinks count and time every packet from its clear RTP header (SRTP leaves it in clear) and check its size
//! (172 bytes + the suite's tag). One call in [`SAMPLE_EVERY`] keeps an SRTP context with the key parkd answered
//! in its 200: every packet of those streams must authenticate and decrypt to a frame of parkd's built-in hold
//! music, and must not carry a frame in clear. For plain calls the same sample must carry the music in clear.
//! Keys over plain UDP need `[server] srtp_over_plain = true` (the step's parkd has it).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use parkd::media::srtp::{MasterKey, SrtpKeys, SrtpLeg, SrtpSuite};
use parkd::media::{Codec, HoldMusic};
use parkd::sdp::crypto::offer_security;
use parkd::sip::Message;
use sip_tests::sip::ua;

use crate::density::{stream_loss, DensityResult, Stream, CALLS_PER_SINK, SETUP_RATE};
use crate::hist::Hist;
use crate::net::{self, RecvBatch};
use crate::secure_sip::{Link, Transport};
use crate::sys::{self, Parkd, ParkdOpts, UdpCounters};

/// One call in this many has its hold music decrypted and checked.
pub const SAMPLE_EVERY: usize = 100;
/// The phones' own key || salt (30 bytes, AES-CM; its first 28 for GCM), base64.
const KEY_CM: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk";
const KEY_GCM: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYg==";
const KEY_RAW: &[u8; 30] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcd";

/// What the parked calls offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    Plain,
    Srtp(SrtpSuite),
}

impl Media {
    pub const ALL: [Media; 3] = [Media::Plain, Media::Srtp(SrtpSuite::AesCm128HmacSha1_80), Media::Srtp(SrtpSuite::AeadAes128Gcm)];

    pub fn name(self) -> &'static str {
        match self {
            Media::Plain => "plain RTP",
            Media::Srtp(s) => s.name(),
        }
    }

    fn overhead(self) -> usize {
        match self {
            Media::Plain => 0,
            Media::Srtp(s) => s.overhead(),
        }
    }

    fn sdp(self, port: u16) -> String {
        let (proto, crypto) = match self {
            Media::Plain => ("RTP/AVP", String::new()),
            Media::Srtp(s) => ("RTP/SAVP", format!("a=crypto:1 {} inline:{}\r\n", s.name(), if s == SrtpSuite::AeadAes128Gcm { KEY_GCM } else { KEY_CM })),
        };
        format!("v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{crypto}a=sendrecv\r\n")
    }
}

/// The sampled calls' check.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub calls: usize,
    /// Packets that authenticated and decrypted to a frame of the hold music (plain: that were one in clear).
    pub genuine: u64,
    /// Packets that failed authentication, or decrypted to something else (plain: were not music).
    pub bad: u64,
    /// SRTP packets whose payload was a music frame in clear.
    pub clear: u64,
    /// Packets of the wrong size (every stream, not only the sample).
    pub wrong_size: u64,
}

/// One density step of one media kind.
pub struct SecureDensity {
    pub media: Media,
    pub d: DensityResult,
    pub sample: Sample,
}

struct Sinks {
    socks: Vec<UdpSocket>,
    rb: RecvBatch,
    streams: HashMap<(u16, u32), Stream>,
    hist: Hist,
    measuring: bool,
    epoch: Instant,
    media: Media,
    /// Sampled calls: parkd's RTP port → the phone's SRTP context (None for plain).
    sampled: HashMap<u16, Option<SrtpLeg>>,
    music: HashSet<Vec<u8>>,
    sample: Sample,
    scratch: Vec<u8>,
}

impl Sinks {
    fn drain(&mut self) -> usize {
        let mut total = 0;
        let Sinks { socks, rb, streams, hist, measuring, epoch, media, sampled, music, sample, scratch } = self;
        let size = 172 + media.overhead();
        for s in socks.iter() {
            loop {
                let batch_now = epoch.elapsed().as_nanos() as u64;
                let got = rb.recv_ts(s, |from, pkt, ts| {
                    let now = ts.unwrap_or(batch_now);
                    if pkt.len() < 12 {
                        return;
                    }
                    // A sampled SRTP stream is opened from its first packet on, as a phone does: the phone's
                    // context learns the rollover counter from the sequence numbers it has seen (RFC 3711
                    // §3.3.1), so a context that first saw the stream after its sequence number wrapped (a
                    // stream starting near 65535, wrapped during the settle) would guess the wrong ROC and
                    // reject every packet. Only the window's packets are counted.
                    // (the packet carries music in clear, the packet is genuine) for a sampled stream.
                    let verdict = sampled.get_mut(&from.port()).map(|ctx| {
                        let clear = pkt.get(12..172).is_some_and(|p| music.contains(p));
                        match ctx {
                            // Plain: genuine when the music is in clear.
                            None => (false, clear),
                            Some(leg) => {
                                scratch.clear();
                                scratch.extend_from_slice(pkt);
                                scratch.resize(pkt.len() + 64, 0);
                                let opened = leg.unprotect(scratch, pkt.len());
                                (clear, matches!(opened, Ok(172) if scratch.get(12..172).is_some_and(|p| music.contains(p))))
                            }
                        }
                    });
                    if !*measuring {
                        return;
                    }
                    if pkt.len() != size {
                        sample.wrong_size += 1;
                    }
                    if let Some((clear, genuine)) = verdict {
                        sample.clear += clear as u64;
                        if genuine {
                            sample.genuine += 1;
                        } else {
                            sample.bad += 1;
                        }
                    }
                    let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
                    let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
                    streams.entry((from.port(), ssrc)).or_default().observe(seq, now, hist);
                });
                total += got;
                if got < net::BATCH {
                    break;
                }
            }
        }
        total
    }

    fn idle_wait(&self) {
        let refs: Vec<&UdpSocket> = self.socks.iter().collect();
        net::wait_readable(&refs, 1);
    }
}

/// The phone's SRTP context for a 200 (its own key protects, parkd's answered key opens).
fn phone_leg(media: Media, body: &[u8]) -> Option<SrtpLeg> {
    let Media::Srtp(suite) = media else { return None };
    let sec = offer_security(body);
    let parkd_key = sec.crypto.first().filter(|c| c.suite == suite)?.key.clone();
    let phone_key = MasterKey::new(suite, KEY_RAW.get(..suite.master_len())?)?;
    SrtpLeg::new(&SrtpKeys { suite, local: phone_key, remote: parkd_key }).ok()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Pending,
    Ok,
    Failed,
}

/// One step: a fresh parkd on `cpu` (with `opts`, which must allow keys over UDP), N parks offering `media`,
/// `hold` of measurement.
#[allow(clippy::too_many_arguments)]
pub fn run(bin: &Path, cpu: usize, opts: &ParkdOpts, media: Media, n: usize, hold: Duration, log: &Path, progress: &mut dyn FnMut(String)) -> io::Result<SecureDensity> {
    let nsinks = n.div_ceil(CALLS_PER_SINK);
    let socks = (0..nsinks).map(|_| net::loopback_socket(16 << 20)).collect::<io::Result<Vec<_>>>()?;
    for s in &socks {
        net::enable_rx_timestamps(s)?;
    }
    let sink_ports: Vec<u16> = socks.iter().map(|s| s.local_addr().map(|a| a.port())).collect::<io::Result<_>>()?;
    let m = HoldMusic::builtin();
    let music: HashSet<Vec<u8>> = (0..5000).map(|i| m.frame(Codec::Pcmu, i).to_vec()).collect();
    let mut sinks = Sinks {
        socks,
        rb: RecvBatch::new(),
        streams: HashMap::with_capacity(n),
        hist: Hist::default(),
        measuring: false,
        epoch: Instant::now(),
        media,
        sampled: HashMap::new(),
        music,
        sample: Sample::default(),
        scratch: Vec::with_capacity(512),
    };
    let parkd = Parkd::start(bin, cpu, "127.0.0.1:27080".parse().expect("literal address"), log, opts)?;
    let mut link = Link::connect(Transport::Udp, parkd.sip, None)?;
    let mut calls: Vec<(St, Instant, u32)> = Vec::with_capacity(n);
    let referred = "Referred-By: <sip:parker@127.0.0.1>\r\n";
    let invite = |link: &mut Link, i: usize| {
        let text = link.request("INVITE", "700", &format!("c{i}"), &format!("f{i}"), None, &format!("s{i}@bench"), 1, &format!("s{i}-inv"), referred, &media.sdp(sink_ports[i / CALLS_PER_SINK]));
        link.send(&text);
    };
    let t0 = Instant::now();
    let (mut ok, mut failed, mut refused) = (0usize, 0usize, 0usize);
    let mut last_progress = Instant::now();
    let mut msgs = Vec::new();
    while ok + failed < n && t0.elapsed() < Duration::from_secs(60) {
        let due = ((t0.elapsed().as_secs_f64() * SETUP_RATE) as usize + 1).min(n);
        while calls.len() < due {
            invite(&mut link, calls.len());
            calls.push((St::Pending, Instant::now(), 0));
        }
        msgs.clear();
        link.poll(&mut msgs);
        for msg in msgs.drain(..) {
            match msg {
                Message::Response(r) if ua::answers_invite(&r) && r.status >= 200 => {
                    let Some(i) = r.common.call_id.strip_prefix('s').and_then(|s| s.split('@').next()).and_then(|s| s.parse::<usize>().ok()) else { continue };
                    let tag = r.common.to.tag().unwrap_or("").to_string();
                    let success = r.status < 300;
                    let branch = if success { format!("s{i}-ack") } else { format!("s{i}-inv") };
                    let ack = link.request("ACK", "700", &format!("c{i}"), &format!("f{i}"), Some(&tag), &format!("s{i}@bench"), 1, &branch, "", "");
                    link.send(&ack);
                    let Some(c) = calls.get_mut(i) else { continue };
                    if c.0 != St::Pending {
                        continue;
                    }
                    if success {
                        c.0 = St::Ok;
                        ok += 1;
                        if i % SAMPLE_EVERY == 0 {
                            let port = ua::sdp_audio_port(&r).unwrap_or(0);
                            let leg = phone_leg(media, &r.common.body);
                            // An SRTP call whose answer gave no usable key counts as bad at once.
                            if media != Media::Plain && leg.is_none() {
                                sinks.sample.bad += 1;
                            } else {
                                sinks.sample.calls += 1;
                                sinks.sampled.insert(port, leg);
                            }
                        }
                    } else {
                        c.0 = St::Failed;
                        failed += 1;
                        refused += usize::from(r.status == 503);
                    }
                }
                Message::Request(req) => link.ok_to(&req),
                _ => {}
            }
        }
        for (i, c) in calls.iter_mut().enumerate().filter(|(_, c)| c.0 == St::Pending) {
            let age = c.1.elapsed().as_millis() as u64;
            if age > 8000 {
                c.0 = St::Failed;
                failed += 1;
            } else if c.2 < 3 && age > 500 * ((1 << (c.2 + 1)) - 1) {
                c.2 += 1;
                invite(&mut link, i);
            }
        }
        if sinks.drain() == 0 {
            sinks.idle_wait();
        }
        if last_progress.elapsed() > Duration::from_millis(250) {
            last_progress = Instant::now();
            progress(format!("SRTP density {} N={n}: parking {ok}/{n} ok, {failed} failed", media.name()));
        }
    }
    let setup_s = t0.elapsed().as_secs_f64();
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(2) {
        if sinks.drain() == 0 {
            sinks.idle_wait();
        }
    }
    sinks.measuring = true;
    let pid = parkd.pid();
    let (cpu0, udp0, w0) = (sys::process_cpu_ns(pid), UdpCounters::read(), Instant::now());
    while w0.elapsed() < hold {
        if sinks.drain() == 0 {
            sinks.idle_wait();
        }
        if last_progress.elapsed() > Duration::from_millis(500) {
            last_progress = Instant::now();
            progress(format!("SRTP density {} N={n}: holding {:.0}/{} s", media.name(), w0.elapsed().as_secs_f64(), hold.as_secs()));
        }
    }
    let window_s = w0.elapsed().as_secs_f64();
    let cpu_ns = sys::process_cpu_ns(pid) - cpu0;
    let udp = UdpCounters::read().since(&udp0);
    let rss_kib = sys::rss_kib(pid);
    drop(parkd);
    let (heard, packets, loss_pct) = stream_loss(sinks.streams.values());
    let silent = ok.saturating_sub(heard);
    let d = DensityResult {
        n,
        parked: ok,
        failed: n - ok,
        refused,
        setup_s,
        window_s,
        silent,
        loss_pct,
        delivered_ratio: packets as f64 / (ok.max(1) as f64 * 50.0 * window_s),
        ia_p50_ms: sinks.hist.ms(0.5),
        ia_p90_ms: sinks.hist.ms(0.9),
        ia_p99_ms: sinks.hist.ms(0.99),
        ia_max_ms: sinks.hist.max_us() as f64 / 1000.0,
        cpu_pct: cpu_ns as f64 / 1e9 / window_s * 100.0,
        us_per_pkt: if packets > 0 { cpu_ns as f64 / 1000.0 / packets as f64 } else { 0.0 },
        rss_kib,
        udp,
        packets,
    };
    Ok(SecureDensity { media, d, sample: sinks.sample })
}

impl SecureDensity {
    /// The density criteria, and the sample genuine: every sampled packet authentic music, none in clear, sizes right.
    pub fn pass(&self) -> bool {
        self.d.pass() && self.genuine()
    }
    pub fn genuine(&self) -> bool {
        self.sample.calls > 0 && self.sample.genuine > 0 && self.sample.bad == 0 && self.sample.clear == 0 && self.sample.wrong_size == 0
    }
}
