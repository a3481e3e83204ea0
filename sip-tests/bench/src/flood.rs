//! The flood step (issue 15): one source (127.0.0.2) sends INVITEs to the park code at a fixed rate and never
//! ACKs, while another source (127.0.0.1) runs park → retrieve → hang-up cycles. Measures what the legitimate
//! source gets (cycles completed, INVITE→200) and parkd's memory during and after the flood.
//!
//! Bounded: the flood sends `rate × secs` INVITEs and stops; afterwards RSS is sampled for at most
//! [`RECOVERY_WINDOW`].

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sip_tests::sip::flood::InviteFlood;

use crate::cycle::{self, CycleResult};
use crate::sys;

/// The flooding source.
pub const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// How long RSS is watched after the flood for it to come back.
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(30);
/// How long the legitimate load runs alone before the flood, so the baseline RSS includes its working set. Its
/// transactions live 64·T1 = 32 s after they end (RFC 6026 Timer L for the 2xx INVITEs, Timer J for the BYEs), so
/// parkd's memory for a steady load only stops growing after 32 s: the baseline is taken after that.
const WARM_UP: Duration = Duration::from_secs(35);
/// "Back" means within this much of the RSS before the flood.
const RSS_SLACK_KIB: u64 = 2048;

/// What one flood step measured.
#[derive(Default)]
pub struct FloodResult {
    /// INVITEs per second the flooding source sent, and how many in all.
    pub flood_rate: u32,
    pub flood_sent: u64,
    /// Final answers the flooding source got, by status code (first final answer per call).
    pub flood_answers: BTreeMap<u16, u64>,
    /// Flood INVITEs that got no final answer at all (dropped by parkd, or answered only after the step).
    pub flood_unanswered: u64,
    /// The legitimate source's cycles during the flood.
    pub legit: CycleResult,
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
    /// RSS when the recovery window ended (or when it came back).
    pub rss_after_kib: u64,
    /// Seconds after the flood ended until RSS was back within 2 MiB of before; `None` if not within the window.
    pub rss_back_after_s: Option<f64>,
}

impl FloodResult {
    /// Share of the legitimate cycles that completed, in percent.
    pub fn legit_success_pct(&self) -> f64 {
        100.0 * self.legit.completed as f64 / self.legit.cycles.max(1) as f64
    }

    /// Peak RSS growth over the RSS before the flood, MiB.
    pub fn rss_growth_mib(&self) -> f64 {
        self.rss_peak_kib.saturating_sub(self.rss_before_kib) as f64 / 1024.0
    }
}

/// Floods `parkd` with `rate` INVITEs/s for `secs` from [`FLOOD_SOURCE`] while running `legit_rate` cycles/s from
/// 127.0.0.1 for the same time.
pub fn run(parkd: &sys::Parkd, rate: u32, secs: u64, legit_rate: u32, progress: &mut dyn FnMut(String)) -> io::Result<FloodResult> {
    let pid = parkd.pid();
    // Warm up with the legitimate load alone first, so "before" already holds what normal calls make parkd
    // allocate (their transactions for 32 s, maps at their working size, media buffers) and the growth measured is
    // the flood's.
    cycle::run(parkd, legit_rate, (legit_rate as u64 * WARM_UP.as_secs()) as usize, progress)?;
    let rss_before = sys::rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(sys::rss_kib(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    // Each INVITE a new call to the park code, never ACKed; answers may trail the last INVITE a little, so the
    // flood listens one more second after sending.
    let flood = InviteFlood::start(parkd.sip, IpAddr::V4(FLOOD_SOURCE), "700", (rate as u64 * secs) as usize, Duration::from_secs(secs))?;
    let legit = cycle::run(parkd, legit_rate, (legit_rate as u64 * secs) as usize, progress)?;
    let report = flood.finish(Duration::from_secs(1));
    let flood_end = Instant::now();
    let mut rss_after = sys::rss_kib(pid);
    let mut back = None;
    while flood_end.elapsed() < RECOVERY_WINDOW {
        rss_after = sys::rss_kib(pid);
        if rss_after <= rss_before + RSS_SLACK_KIB {
            back = Some(flood_end.elapsed().as_secs_f64());
            break;
        }
        progress(format!("flood: waiting for RSS to come back ({} KiB, was {rss_before} KiB)", rss_after));
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    let rss_peak = peak.join().unwrap_or(0).max(rss_after);
    Ok(FloodResult {
        flood_rate: rate,
        flood_sent: report.sent as u64,
        flood_answers: report.answered.iter().map(|(&status, &n)| (status, n as u64)).collect(),
        flood_unanswered: report.unanswered() as u64,
        legit,
        rss_before_kib: rss_before,
        rss_peak_kib: rss_peak,
        rss_after_kib: rss_after,
        rss_back_after_s: back,
    })
}
