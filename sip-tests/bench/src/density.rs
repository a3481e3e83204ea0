//! Density: park N calls (each with a hold-music stream), hold them, and measure what arrives.
//!
//! Calls point their SDP at a few shared sink sockets (one per 500 calls); streams are told
//! apart by parkd's source port (one RTP port per leg). Inter-arrival is measured per stream,
//! with the kernel's receive timestamp of each datagram (SO_TIMESTAMPNS), so the
//! sink's own scheduling does not count.

use std::collections::HashMap;
use std::io;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use parkd::sip::Message;
use sip_tests::sip::ua::{self, CallIds, Ua};

use crate::hist::Hist;
use crate::net::{self, RecvBatch};
use crate::sys::{self, Parkd, ParkdOpts, UdpCounters};

/// Calls per shared RTP sink socket.
pub const CALLS_PER_SINK: usize = 500;
/// Parks started per second during setup.
pub const SETUP_RATE: f64 = 1000.0;

/// Figures for one density step.
#[derive(Clone, Debug, Default)]
pub struct DensityResult {
    pub n: usize,
    pub parked: usize,
    pub failed: usize,
    /// Parks answered `503` (the capacity guard's refusals; counted in `failed` too).
    pub refused: usize,
    pub setup_s: f64,
    pub window_s: f64,
    /// Calls parked but with no packet during the window.
    pub silent: usize,
    pub loss_pct: f64,
    /// Packets received / (parked × 50 × window).
    pub delivered_ratio: f64,
    pub ia_p50_ms: f64,
    pub ia_p90_ms: f64,
    pub ia_p99_ms: f64,
    pub ia_max_ms: f64,
    pub cpu_pct: f64,
    pub us_per_pkt: f64,
    pub rss_kib: u64,
    pub udp: UdpCounters,
    pub packets: u64,
}

impl DensityResult {
    /// The criteria: 0 failed calls, < 0.1 % loss, p99 inter-arrival ≤ 22 ms.
    pub fn pass(&self) -> bool {
        self.failed == 0 && self.silent == 0 && self.loss_pct < 0.1 && self.ia_p99_ms <= 22.0
    }
}

/// One received hold stream (a parkd port and SSRC): what arrived, by extended sequence number and time.
#[derive(Clone, Copy, Default)]
pub(crate) struct Stream {
    recv: u64,
    first_ext: i64,
    max_ext: i64,
    last_ext: i64,
    last_seq: u16,
    first_ns: u64,
    last_ns: u64,
}

impl Stream {
    /// A packet with sequence number `seq` arrived at `now_ns`; its inter-arrival gap goes into `hist` (µs).
    pub(crate) fn observe(&mut self, seq: u16, now_ns: u64, hist: &mut Hist) {
        if self.recv == 0 {
            *self = Stream { recv: 1, first_ext: 0, max_ext: 0, last_ext: 0, last_seq: seq, first_ns: now_ns, last_ns: now_ns };
            return;
        }
        let ext = self.last_ext + seq.wrapping_sub(self.last_seq) as i16 as i64;
        self.last_ext = ext;
        self.last_seq = seq;
        self.max_ext = self.max_ext.max(ext);
        self.first_ext = self.first_ext.min(ext);
        self.recv += 1;
        hist.add(now_ns.saturating_sub(self.last_ns) / 1000);
        self.last_ns = now_ns;
    }
}

/// Over every stream heard: (streams heard, packets received, loss %). A late pacer skips frames without spending
/// sequence numbers, so a stream is expected to carry the larger of its sequence span and its time span.
pub(crate) fn stream_loss<'a>(streams: impl Iterator<Item = &'a Stream>) -> (usize, u64, f64) {
    let (mut packets, mut expected, mut heard) = (0u64, 0u64, 0usize);
    for st in streams.filter(|st| st.recv > 0) {
        heard += 1;
        packets += st.recv;
        let by_seq = (st.max_ext - st.first_ext + 1).max(0) as u64;
        let by_time = ((st.last_ns - st.first_ns) as f64 / 20e6).round() as u64 + 1;
        expected += by_seq.max(by_time);
    }
    let loss_pct = if expected > 0 { expected.saturating_sub(packets) as f64 / expected as f64 * 100.0 } else { 100.0 };
    (heard, packets, loss_pct)
}

struct Sinks {
    socks: Vec<UdpSocket>,
    rb: RecvBatch,
    /// Per stream, keyed by parkd's source port and the SSRC (legs may share a port).
    streams: HashMap<(u16, u32), Stream>,
    hist: Hist,
    measuring: bool,
    epoch: Instant,
}

impl Sinks {
    /// Drains every sink once; returns datagrams received.
    fn drain(&mut self) -> usize {
        let mut total = 0;
        let Sinks { socks, rb, streams, hist, measuring, epoch } = self;
        for s in socks.iter() {
            loop {
                let batch_now = epoch.elapsed().as_nanos() as u64;
                let got = rb.recv_ts(s, |from, pkt, ts| {
                    let now = ts.unwrap_or(batch_now);
                    if !*measuring || pkt.len() < 12 {
                        return;
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Pending,
    Ok,
    Failed,
}

/// Runs one step: a fresh parkd on `cpu`, N parks, `hold` of measurement.
pub fn run(bin: &Path, cpu: usize, opts: &ParkdOpts, n: usize, hold: Duration, log: &Path, progress: &mut dyn FnMut(String)) -> io::Result<DensityResult> {
    let nsinks = n.div_ceil(CALLS_PER_SINK);
    let socks = (0..nsinks).map(|_| net::loopback_socket(16 << 20)).collect::<io::Result<Vec<_>>>()?;
    for s in &socks {
        net::enable_rx_timestamps(s)?;
    }
    let sink_ports: Vec<u16> = socks.iter().map(|s| s.local_addr().map(|a| a.port())).collect::<io::Result<_>>()?;
    let mut sinks = Sinks { socks, rb: RecvBatch::new(), streams: HashMap::with_capacity(n), hist: Hist::default(), measuring: false, epoch: Instant::now() };
    let parkd = Parkd::start(bin, cpu, "127.0.0.1:27060".parse().expect("literal address"), log, opts)?;
    let mut ua = Ua::new(parkd.sip)?;
    let mut calls: Vec<(CallIds, St, Instant, u32, u16)> = Vec::with_capacity(n);
    let by_id: HashMap<String, usize> = (0..n).map(|i| (format!("d{i}@bench"), i)).collect();
    let referred = "Referred-By: <sip:parker@127.0.0.1>\r\n";
    let t0 = Instant::now();
    let (mut ok, mut failed, mut refused) = (0usize, 0usize, 0usize);
    let mut last_progress = Instant::now();
    while ok + failed < n && t0.elapsed() < Duration::from_secs(60) {
        // Start the parks due by now.
        let due = ((t0.elapsed().as_secs_f64() * SETUP_RATE) as usize + 1).min(n);
        while calls.len() < due {
            let i = calls.len();
            let c = CallIds { call_id: format!("d{i}@bench"), from_tag: format!("f{i}"), user: format!("caller{i}"), target: "700".into(), to_tag: None };
            ua.invite(&c, sink_ports[i / CALLS_PER_SINK], referred);
            calls.push((c, St::Pending, Instant::now(), 0, 0));
        }
        while let Some(m) = ua.try_recv() {
            match m {
                Message::Response(r) if ua::answers_invite(&r) && r.status >= 200 => {
                    let Some(&i) = by_id.get(r.common.call_id.as_str()) else { continue };
                    let Some(c) = calls.get_mut(i) else { continue };
                    c.0.to_tag = r.common.to.tag().map(str::to_string);
                    ua.ack(&c.0, r.status < 300);
                    if c.1 == St::Pending {
                        if r.status < 300 {
                            c.1 = St::Ok;
                            c.4 = ua::sdp_audio_port(&r).unwrap_or(0);
                            ok += 1;
                        } else {
                            c.1 = St::Failed;
                            failed += 1;
                            refused += usize::from(r.status == 503);
                        }
                    }
                }
                Message::Request(req) => ua.ok_to(&req),
                _ => {}
            }
        }
        // Timer A/B-like retransmission: 0.5, 1, 2 s apart, give up after 8 s.
        for (i, c) in calls.iter_mut().enumerate().filter(|(_, c)| c.1 == St::Pending) {
            let age = c.2.elapsed().as_millis() as u64;
            if age > 8000 {
                c.1 = St::Failed;
                failed += 1;
            } else if c.3 < 3 && age > 500 * ((1 << (c.3 + 1)) - 1) {
                c.3 += 1;
                ua.invite(&c.0, sink_ports[i / CALLS_PER_SINK], referred);
            }
        }
        if sinks.drain() == 0 {
            sinks.idle_wait();
        }
        if last_progress.elapsed() > Duration::from_millis(250) {
            last_progress = Instant::now();
            progress(format!("density N={n}: parking {ok}/{n} ok, {failed} failed"));
        }
    }
    let setup_s = t0.elapsed().as_secs_f64();
    // Let the pacer settle, then measure.
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
            progress(format!("density N={n}: holding {:.0}/{} s", w0.elapsed().as_secs_f64(), hold.as_secs()));
        }
    }
    let window_s = w0.elapsed().as_secs_f64();
    let cpu_ns = sys::process_cpu_ns(pid) - cpu0;
    let udp = UdpCounters::read().since(&udp0);
    let rss_kib = sys::rss_kib(pid);
    drop(parkd);
    let (heard, packets, loss_pct) = stream_loss(sinks.streams.values());
    // Streams are told apart by (parkd port, SSRC): calls parked but never heard are silent.
    let silent = ok.saturating_sub(heard);
    Ok(DensityResult {
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
    })
}

/// Sink sockets for a calibrator run sized like an N-call step.
pub fn calib_sinks(n: usize) -> io::Result<Vec<UdpSocket>> {
    (0..n.div_ceil(CALLS_PER_SINK)).map(|_| net::loopback_socket(16 << 20)).collect()
}
