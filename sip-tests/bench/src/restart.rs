//! The restart step (issue 17): N parked calls with hold music, `kill -9`, parkd started again on the same ports
//! and state directory. Measures how long until it answers OPTIONS again (ready), per call the gap from ready to
//! its first hold packet (the resume gap), and the calls lost (no hold packet within [`RESUME_WINDOW`] of ready,
//! or one from another port or SSRC than before).
//!
//! Bounded: N parks (at [`crate::density::SETUP_RATE`] per second, at most 60 s), 2 s of hold before the kill,
//! [`RESUME_WINDOW`] after ready.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parkd::sip::Message;
use sip_tests::sip::ua::{self, CallIds, Ua};

use crate::net::{self, RecvBatch};
use crate::sys::{Parkd, ParkdOpts};

/// How long after ready the step waits for every stream to come back.
pub const RESUME_WINDOW: Duration = Duration::from_secs(5);
/// Calls per RTP sink socket (streams are told apart by parkd's source port and SSRC).
const CALLS_PER_SINK: usize = 250;

/// What the restart step measured.
#[derive(Clone, Debug, Default)]
pub struct RestartResult {
    pub n: usize,
    pub parked: usize,
    /// Spawn of the new process → its first answer to OPTIONS.
    pub ready_ms: f64,
    /// Ready → each restored call's first hold packet.
    pub gap_p50_ms: f64,
    pub gap_p99_ms: f64,
    pub gap_max_ms: f64,
    /// Calls whose music did not come back within the window.
    pub lost: usize,
    /// Calls whose music came back from another parkd port or with another SSRC (counted in `lost` too).
    pub changed: usize,
    /// Calls whose sequence numbers did not continue (went back, or jumped by 2^15 or more).
    pub seq_breaks: usize,
    /// The journal file's size at the kill, bytes.
    pub journal_bytes: u64,
}

#[derive(Clone, Copy, Default)]
struct Stream {
    /// Before the kill: the last packet's sequence number.
    last_seq: u16,
    seen: bool,
    /// After the restart: the first packet's arrival (ns since the epoch) and whether it continued the stream.
    resumed_ns: Option<u64>,
    continued: bool,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Drains every sink; `f(source port, ssrc, seq, kernel receive time ns)` per RTP packet.
fn drain(socks: &[UdpSocket], rb: &mut RecvBatch, mut f: impl FnMut(u16, u32, u16, u64)) -> usize {
    let mut total = 0;
    for s in socks {
        loop {
            let got = rb.recv_ts(s, |from, pkt, ts| {
                if pkt.len() >= 12 {
                    let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
                    let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
                    f(from.port(), ssrc, seq, ts.unwrap_or_else(now_ns));
                }
            });
            total += got;
            if got < net::BATCH {
                break;
            }
        }
    }
    total
}

/// Parks `n` calls on a fresh parkd (journal on), kills it with SIGKILL after 2 s of hold, starts it again and
/// measures the resume.
pub fn run(bin: &Path, cpu: usize, opts: &ParkdOpts, n: usize, log: &Path, progress: &mut dyn FnMut(String)) -> io::Result<RestartResult> {
    let socks = (0..n.div_ceil(CALLS_PER_SINK)).map(|_| net::loopback_socket(16 << 20)).collect::<io::Result<Vec<_>>>()?;
    for s in &socks {
        net::enable_rx_timestamps(s)?;
    }
    let sink_ports: Vec<u16> = socks.iter().map(|s| s.local_addr().map(|a| a.port())).collect::<io::Result<_>>()?;
    let mut rb = RecvBatch::new();
    let mut parkd = Parkd::start(bin, cpu, "127.0.0.1:27066".parse().expect("literal address"), log, opts)?;
    let mut ua = Ua::new(parkd.sip)?;
    let referred = "Referred-By: <sip:parker@127.0.0.1>\r\n";
    let mut calls: Vec<(CallIds, Option<u16>, Instant, u32)> = Vec::with_capacity(n);
    let by_id: HashMap<String, usize> = (0..n).map(|i| (format!("rs{i}@bench"), i)).collect();
    let t0 = Instant::now();
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut streams: HashMap<(u16, u32), Stream> = HashMap::with_capacity(n);
    while ok + failed < n && t0.elapsed() < Duration::from_secs(60) {
        let due = ((t0.elapsed().as_secs_f64() * crate::density::SETUP_RATE) as usize + 1).min(n);
        while calls.len() < due {
            let i = calls.len();
            let c = CallIds { call_id: format!("rs{i}@bench"), from_tag: format!("f{i}"), user: format!("caller{i}"), target: "700".into(), to_tag: None };
            ua.invite(&c, sink_ports[i / CALLS_PER_SINK], referred);
            calls.push((c, None, Instant::now(), 0));
        }
        while let Some(m) = ua.try_recv() {
            match m {
                Message::Response(r) if ua::answers_invite(&r) && r.status >= 200 => {
                    let Some(c) = by_id.get(r.common.call_id.as_str()).and_then(|&i| calls.get_mut(i)) else { continue };
                    c.0.to_tag = r.common.to.tag().map(str::to_string);
                    ua.ack(&c.0, r.status < 300);
                    if c.1.is_none() {
                        c.1 = Some(r.status);
                        if r.status < 300 { ok += 1 } else { failed += 1 }
                    }
                }
                Message::Request(req) => ua.ok_to(&req),
                _ => {}
            }
        }
        for (i, c) in calls.iter_mut().enumerate().filter(|(_, c)| c.1.is_none()) {
            let age = c.2.elapsed().as_millis() as u64;
            if age > 8000 {
                c.1 = Some(408);
                failed += 1;
            } else if c.3 < 3 && age > 500 * ((1 << (c.3 + 1)) - 1) {
                c.3 += 1;
                ua.invite(&c.0, sink_ports[i / CALLS_PER_SINK], referred);
            }
        }
        drain(&socks, &mut rb, |_, _, _, _| {});
        progress(format!("restart N={n}: parking {ok}/{n} ok, {failed} failed"));
    }
    // 2 s of hold, remembering each stream's last sequence number.
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(2) {
        if drain(&socks, &mut rb, |port, ssrc, seq, _| {
            let st = streams.entry((port, ssrc)).or_default();
            st.seen = true;
            st.last_seq = seq;
        }) == 0
        {
            net::wait_readable(&socks.iter().collect::<Vec<_>>(), 1);
        }
        while let Some(m) = ua.try_recv() {
            if let Message::Request(req) = m {
                ua.ok_to(&req);
            }
        }
    }
    let journal_bytes = std::fs::metadata(log.with_extension("state").join("journal")).map(|m| m.len()).unwrap_or(0);
    progress(format!("restart N={n}: kill -9 with {} streams playing", streams.len()));
    parkd.kill9();
    // Packets still in the sockets were sent before the kill.
    drain(&socks, &mut rb, |port, ssrc, seq, _| {
        if let Some(st) = streams.get_mut(&(port, ssrc)) {
            st.last_seq = seq;
        }
    });
    let ready = parkd.restart(&log.with_extension("restarted.log"))?;
    let ready_ns = now_ns();
    let mut unknown: HashSet<(u16, u32)> = HashSet::new();
    let window = Instant::now();
    let mut resumed = 0usize;
    while window.elapsed() < RESUME_WINDOW && resumed < streams.len() {
        let got = drain(&socks, &mut rb, |port, ssrc, seq, at| match streams.get_mut(&(port, ssrc)) {
            Some(st) if st.resumed_ns.is_none() => {
                st.resumed_ns = Some(at);
                let step = seq.wrapping_sub(st.last_seq);
                st.continued = (1..0x8000).contains(&step);
                resumed += 1;
            }
            Some(_) => {}
            None => {
                unknown.insert((port, ssrc));
            }
        });
        if got == 0 {
            net::wait_readable(&socks.iter().collect::<Vec<_>>(), 1);
        }
        while let Some(m) = ua.try_recv() {
            if let Message::Request(req) = m {
                ua.ok_to(&req);
            }
        }
        progress(format!("restart N={n}: {resumed}/{} streams resumed", streams.len()));
    }
    drop(parkd);
    let mut gaps: Vec<u64> = streams.values().filter_map(|s| s.resumed_ns).map(|t| t.saturating_sub(ready_ns)).collect();
    gaps.sort_unstable();
    let pct = |q: f64| gaps.get(((gaps.len() as f64 - 1.0) * q).round() as usize).map_or(f64::NAN, |&ns| ns as f64 / 1e6);
    let seq_breaks = streams.values().filter(|s| s.resumed_ns.is_some() && !s.continued).count();
    Ok(RestartResult {
        n,
        parked: ok,
        ready_ms: ready.as_secs_f64() * 1e3,
        gap_p50_ms: pct(0.5),
        gap_p99_ms: pct(0.99),
        gap_max_ms: gaps.last().map_or(f64::NAN, |&ns| ns as f64 / 1e6),
        // Calls parked but not heard again on the same (port, SSRC); streams never heard before the kill count too.
        lost: ok.saturating_sub(resumed),
        changed: unknown.len(),
        seq_breaks,
        journal_bytes,
    })
}
