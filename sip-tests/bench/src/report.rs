//! `bench-results/README.md` (Markdown tables, targets, the README's performance text) and
//! `bench-results/density.svg` (CPU % and p99 inter-arrival against parked calls), hand-written.

use std::fmt::Write as _;

use crate::calib::Calib;
use crate::cycle::CycleResult;
use crate::density::DensityResult;
use crate::flood::{FloodResult, FLOOD_SOURCE, RECOVERY_WINDOW};
use crate::restart::{RestartResult, RESUME_WINDOW};

/// Everything one run measured.
pub struct Report {
    pub quick: bool,
    /// The bench's own arguments, as given.
    pub args: String,
    /// Cores parkd ran on (1: pinned to core 0; 2: `--both-cores`, sharing them with the load).
    pub cores: usize,
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub date: String,
    pub floor: Calib,
    /// Per density step: the calibrator paced at the same packet rate, and parkd.
    pub density: Vec<(Calib, DensityResult)>,
    pub cycles: Vec<CycleResult>,
    /// The flood step, unless skipped.
    pub flood: Option<FloodResult>,
    /// Cycles with the journal on and off, per rate (issue 17).
    pub journal: Vec<(CycleResult, CycleResult)>,
    /// The restart step, unless skipped (issue 17).
    pub restart: Option<RestartResult>,
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "**no**" }
}

impl Report {
    /// Largest step meeting the criteria.
    pub fn ceiling(&self) -> Option<&DensityResult> {
        self.density.iter().map(|(_, d)| d).filter(|d| d.pass()).max_by_key(|d| d.n)
    }

    /// RSS slope per parked call (KiB) between the smallest step ≥ 1000 and the largest step.
    pub fn rss_slope_kib(&self) -> Option<f64> {
        let mut ds: Vec<&DensityResult> = self.density.iter().map(|(_, d)| d).filter(|d| d.n >= 1000).collect();
        ds.sort_by_key(|d| d.n);
        let (a, b) = (ds.first()?, ds.last()?);
        (b.parked > a.parked).then(|| (b.rss_kib as f64 - a.rss_kib as f64) / (b.parked - a.parked) as f64)
    }

    /// Streams per core parkd would reach at its measured CPU per packet (largest passing step).
    pub fn parkd_streams_per_core(&self) -> Option<f64> {
        let d = self.ceiling()?;
        (d.us_per_pkt > 0.0).then(|| 1e6 / d.us_per_pkt / 50.0)
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# parkd benchmark results\n");
        let _ = writeln!(
            s,
            "Run: `cargo run --release -p parkd-bench{}` on {}. Machine: `nproc` = {}, CPU: {}, kernel {}. \
             {}, both at nice -15 (the VM is shared with other jobs), loopback only in a private network namespace.\n",
            if self.args.is_empty() { String::new() } else { format!(" -- {}", self.args) },
            self.date,
            self.nproc,
            self.cpu_model,
            self.kernel,
            if self.cores > 1 {
                "parkd on cores 0 and 1 (`taskset -c 0,1`, `--media-threads 2`), the load generator and RTP sinks unpinned on the same two cores"
            } else {
                "parkd pinned to core 0 (`taskset -c 0`), the load generator and RTP sinks on core 1"
            }
        );
        let _ = writeln!(s, "## Calibrator (bare UDP `sendmmsg`, 172-byte datagrams, one core, flat out)\n");
        let _ = writeln!(s, "| packets/s sent | CPU µs/packet | CPU % of core | = hold streams per core |");
        let _ = writeln!(s, "|---:|---:|---:|---:|");
        let f = &self.floor;
        let _ = writeln!(s, "| {:.0} | {:.2} | {:.0} | {:.0} |\n", f.pps, f.us_per_pkt, f.cpu_pct, f.streams_per_core());
        let _ = writeln!(s, "## Density (parked calls receiving hold music)\n");
        let _ = writeln!(
            s,
            "Criteria per step: 0 failed calls, < 0.1 % RTP loss, p99 inter-arrival ≤ 22 ms. Inter-arrival is per stream (kernel receive \
             timestamps), aggregated over all streams of the step. Loss counts missing sequence numbers and frames the \
             pacer skipped (a stream's time span / 20 ms). \"Floor\" is the calibrator paced at the same packet rate (N × 50/s) on \
             the same core.\n"
        );
        let _ = writeln!(s, "| N | parked | failed | silent | loss % | delivered | inter-arrival p50 / p99 / max ms | parkd CPU % | parkd µs/pkt | floor µs/pkt | ratio | RSS MiB | rcvbuf / sndbuf drops | pass |");
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---|");
        for (c, d) in &self.density {
            let ratio = if c.us_per_pkt > 0.0 { d.us_per_pkt / c.us_per_pkt } else { 0.0 };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.3} | {:.3} | {:.1} / {:.1} / {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {} / {} | {} |",
                d.n, d.parked, d.failed, d.silent, d.loss_pct, d.delivered_ratio, d.ia_p50_ms, d.ia_p99_ms, d.ia_max_ms, d.cpu_pct,
                d.us_per_pkt, c.us_per_pkt, ratio, d.rss_kib as f64 / 1024.0, d.udp.rcvbuf_errors, d.udp.sndbuf_errors, yes(d.pass())
            );
        }
        if let Some(k) = self.rss_slope_kib() {
            let _ = writeln!(s, "\nRSS per parked call (slope between the 1k step and the largest step): **{k:.2} KiB**.");
        }
        let _ = writeln!(s, "\n![CPU and p99 inter-arrival against parked calls](density.svg)\n");
        let _ = writeln!(s, "## Cycles (park → retrieve → bridged RTP → hang up)\n");
        let _ = writeln!(s, "| rate/s | cycles | failed | parkd CPU µs/cycle (signalling + media) | bare UDP responder µs/cycle (blocking / tokio) | parkd CPU % | INVITE→200 p50 / p99 / p99.9 ms | retransmissions ours / parkd's | unpark switch p50 / p99 / max ms | hold pkts after bridge (cycles) |");
        let _ = writeln!(s, "|---:|---:|---:|---|---:|---:|---|---|---|---|");
        for c in &self.cycles {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} ({:.0} + {:.0}) | {:.0} / {:.0} | {:.1} | {:.2} / {:.2} / {:.2} | {} / {} | {:.2} / {:.2} / {:.2} | {} ({}) |",
                c.rate, c.cycles, c.failed, c.cpu_us_per_cycle, c.cpu_us_per_cycle - c.media_cpu_us_per_cycle, c.media_cpu_us_per_cycle, c.sip_floor_us, c.tokio_floor_us, c.cpu_pct, c.invite.ms(0.5), c.invite.ms(0.99), c.invite.ms(0.999),
                c.our_retransmissions, c.their_retransmissions, c.switch.ms(0.5), c.switch.ms(0.99), c.switch.max_us() as f64 / 1000.0,
                c.hold_after_bridge, c.cycles_with_hold_after
            );
        }
        if let Some(f) = &self.flood {
            s.push_str(&flood_section(f));
        }
        s.push_str(&journal_section(&self.journal));
        if let Some(r) = &self.restart {
            s.push_str(&restart_section(r));
        }
        s.push_str(&self.targets());
        s.push_str(&self.performance_section());
        s
    }

    /// The "Performance" section for the project README (the figures of this run).
    pub fn performance_section(&self) -> String {
        let mut s = String::from("\n## Performance (text for the project README)\n\n");
        let _ = writeln!(
            s,
            "Measured with `cargo run --release -p parkd-bench` ({}; {} cores, {}, kernel {}), parkd pinned to one core, \
             loopback. Full tables: `bench-results/README.md`; profiles: `bench-results/PROFILE.md`.\n",
            self.date, self.nproc, self.cpu_model, self.kernel
        );
        let f = &self.floor;
        if let Some(d) = self.ceiling() {
            let floor_at = self.density.iter().find(|(_, x)| x.n == d.n).map(|(c, _)| c.us_per_pkt).unwrap_or(0.0);
            let _ = writeln!(
                s,
                "- **Hold music:** {} parked calls on one core with 0 failed calls, {:.3} % loss, inter-arrival p99 {:.1} ms, parkd at {:.0} % of \
                 its core. parkd spends {:.2} µs of CPU per hold packet; a bare UDP `sendmmsg` sender at the same rate spends {:.2} µs \
                 (flat out: {:.2} µs, {:.0} streams per core). At its cost per packet one core carries ≈ {:.0} streams, {:.0} % of the floor.",
                d.n, d.loss_pct, d.ia_p99_ms, d.cpu_pct, d.us_per_pkt, floor_at, f.us_per_pkt, f.streams_per_core(),
                self.parkd_streams_per_core().unwrap_or(0.0),
                self.parkd_streams_per_core().unwrap_or(0.0) / f.streams_per_core().max(1.0) * 100.0
            );
        }
        if let Some((_, d)) = self.density.iter().filter(|(_, d)| !d.pass()).max_by_key(|(_, d)| d.n) {
            let _ = writeln!(
                s,
                "- First failing step: {} calls (CPU {:.0} %, loss {:.3} %, inter-arrival p99 {:.1} ms, failed {}).",
                d.n, d.cpu_pct, d.loss_pct, d.ia_p99_ms, d.failed
            );
        }
        if let Some(k) = self.rss_slope_kib() {
            let _ = writeln!(s, "- **Memory:** {k:.2} KiB of RSS per parked call (slope from 1k calls to the largest step).");
        }
        for c in &self.cycles {
            let _ = writeln!(
                s,
                "- **{} park→retrieve→hang-up cycles/s:** {:.0} µs of server CPU per cycle, INVITE→200 p50 {:.2} / p99 {:.2} / p99.9 {:.2} ms, \
                 {} failed; unpark switch p99 {:.2} ms, {} hold packets after the bridge.",
                c.rate, c.cpu_us_per_cycle, c.invite.ms(0.5), c.invite.ms(0.99), c.invite.ms(0.999), c.failed, c.switch.ms(0.99), c.hold_after_bridge
            );
        }
        for (on, off) in &self.journal {
            let _ = writeln!(
                s,
                "- **Journal at {}/s:** {:.0} µs of CPU per cycle with it, {:.0} without (×{:.2}); INVITE→200 p99 {:.2} ms with it, {:.2} without.",
                on.rate, on.cpu_us_per_cycle, off.cpu_us_per_cycle, on.cpu_us_per_cycle / off.cpu_us_per_cycle.max(0.001), on.invite.ms(0.99), off.invite.ms(0.99)
            );
        }
        if let Some(r) = &self.restart {
            let _ = writeln!(
                s,
                "- **Restart:** {} parked calls, `kill -9`, started again: ready {:.0} ms after the spawn; hold music back (same port, SSRC, \
                 sequence going on) p50 {:.1} / p99 {:.1} / max {:.1} ms after ready; {} lost.",
                r.parked, r.ready_ms, r.gap_p50_ms, r.gap_p99_ms, r.gap_max_ms, r.lost
            );
        }
        s
    }

    fn targets(&self) -> String {
        let mut s = String::from("\n## Against the budget (issue 5)\n\n| target | measured | met |\n|---|---|---|\n");
        let floor = self.floor.streams_per_core();
        let ceiling = self.ceiling().map(|d| d.n).unwrap_or(0);
        let tried = self.density.iter().map(|(_, d)| d.n).max().unwrap_or(0);
        let est = self.parkd_streams_per_core().unwrap_or(0.0);
        if self.cores > 1 {
            let _ = writeln!(
                s,
                "| ≥ 10,000 parked calls with parkd on both cores | {} calls pass (largest step tried {}), parkd on {} cores with {} media threads, sharing them with the load generator and its RTP sinks | {} |",
                ceiling,
                tried,
                self.cores,
                self.cores,
                yes(ceiling >= 10_000)
            );
            return s;
        }
        let _ = writeln!(
            s,
            "| one-core ceiling ≥ 90 % of the calibrator ({:.0} streams) | {} calls pass (largest step tried {}); at its CPU/packet one core would carry ≈ {:.0} streams = {:.0} % of the floor | {} |",
            floor * 0.9,
            ceiling,
            tried,
            est,
            if floor > 0.0 { est / floor * 100.0 } else { 0.0 },
            yes(ceiling as f64 >= floor * 0.9)
        );
        // The budget names 500 cycles/s; the other rates are in the table above.
        if let Some(c) = self.cycles.iter().find(|c| c.rate == 500).or_else(|| self.cycles.iter().max_by_key(|c| c.rate)) {
            let best = self.cycles.iter().min_by(|a, b| a.cpu_us_per_cycle.total_cmp(&b.cpu_us_per_cycle)).unwrap_or(c);
            let _ = writeln!(
                s,
                "| ≤ 100 µs server CPU per park+retrieve cycle | {:.0} µs at {}/s (lowest: {:.0} µs at {}/s); a bare UDP responder takes {:.0} µs blocking / {:.0} µs on tokio for the same datagrams at {}/s | {} |",
                c.cpu_us_per_cycle,
                c.rate,
                best.cpu_us_per_cycle,
                best.rate,
                c.sip_floor_us,
                c.tokio_floor_us,
                c.rate,
                yes(c.cpu_us_per_cycle <= 100.0)
            );
            let _ = writeln!(s, "| p99 INVITE→200 ≤ 2 ms at 500 cycles/s | {:.2} ms at {}/s | {} |", c.invite.ms(0.99), c.rate, yes(c.rate >= 500 && c.invite.ms(0.99) <= 2.0));
            let _ = writeln!(
                s,
                "| unpark switch ≤ 20 ms p99, no hold packets after the bridge | p99 {:.2} ms, {} hold packets after | {} |",
                c.switch.ms(0.99),
                c.hold_after_bridge,
                yes(c.switch.ms(0.99) <= 20.0 && c.hold_after_bridge == 0)
            );
        }
        if let Some(k) = self.rss_slope_kib() {
            let _ = writeln!(s, "| ≤ 8 KiB RSS per parked call | {k:.2} KiB | {} |", yes(k <= 8.0));
        }
        s
    }

    /// CPU % (left axis) and p99 inter-arrival ms (right axis) against parked calls.
    pub fn svg(&self) -> String {
        let (w, h, l, r, t, b) = (720.0, 420.0, 70.0, 70.0, 40.0, 60.0);
        let pts: Vec<&DensityResult> = self.density.iter().map(|(_, d)| d).collect();
        let xmax = pts.iter().map(|d| d.n).max().unwrap_or(1).max(1) as f64;
        let ymax2 = pts.iter().map(|d| d.ia_p99_ms).fold(40.0f64, f64::max).ceil();
        let x = |n: f64| l + (w - l - r) * n / xmax;
        let y1 = |v: f64| t + (h - t - b) * (1.0 - v.min(100.0) / 100.0);
        let y2 = |v: f64| t + (h - t - b) * (1.0 - v / ymax2);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">parkd on one core: CPU and p99 RTP inter-arrival vs parked calls</text>\n",
            w / 2.0
        );
        let _ = writeln!(s, "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>", h - b, w - r, h - b);
        let _ = writeln!(s, "<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"#1f77b4\"/>", h - b);
        let _ = writeln!(s, "<line x1=\"{}\" y1=\"{t}\" x2=\"{}\" y2=\"{}\" stroke=\"#d62728\"/>", w - r, w - r, h - b);
        for i in 0..=5 {
            let v = i as f64 * 20.0;
            let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#1f77b4\">{v:.0}%</text>", l - 6.0, y1(v) + 4.0);
            let v2 = ymax2 * i as f64 / 5.0;
            let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" fill=\"#d62728\">{v2:.0} ms</text>", w - r + 6.0, y2(v2) + 4.0);
            let _ = writeln!(s, "<line x1=\"{l}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#eee\"/>", w - r, y = y1(v));
        }
        let _ = writeln!(s, "<line x1=\"{l}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#d62728\" stroke-dasharray=\"4 4\"/>", w - r, y = y2(22.0));
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" fill=\"#d62728\" font-size=\"10\">22 ms limit</text>", l + 4.0, y2(22.0) - 4.0);
        for d in &pts {
            let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>", x(d.n as f64), h - b + 16.0, d.n);
        }
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">parked calls (hold streams)</text>", (l + w - r) / 2.0, h - 14.0);
        for (color, f) in [("#1f77b4", &(|d: &DensityResult| y1(d.cpu_pct)) as &dyn Fn(&DensityResult) -> f64), ("#d62728", &|d: &DensityResult| y2(d.ia_p99_ms))] {
            let path: Vec<String> = pts.iter().map(|d| format!("{:.1},{:.1}", x(d.n as f64), f(d))).collect();
            let _ = writeln!(s, "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>", path.join(" "));
            for d in &pts {
                let _ = writeln!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{color}\"/>", x(d.n as f64), f(d));
            }
        }
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" fill=\"#1f77b4\">● parkd CPU % of its core</text>", l + 10.0, t + 14.0);
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" fill=\"#d62728\">● p99 inter-arrival (ms)</text>", l + 10.0, t + 30.0);
        s.push_str("</svg>\n");
        s
    }
}

/// Cycles with the journal on (the default: a park is answered once its record is synced) and off.
fn journal_section(pairs: &[(CycleResult, CycleResult)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n## Journal on vs off (park → retrieve → hang-up cycles)\n\n");
    let _ = writeln!(
        s,
        "The same cycles against a fresh parkd with its journal (`[server] journal = true`, the default: a park's \
         200 OK waits for its record's `fdatasync`, group commit) and with `--no-journal`. CPU is the whole process's \
         (the journal writer thread included); \"floor\" is the bare UDP responder on tokio at the same rate.\n"
    );
    let _ = writeln!(s, "| rate/s | journal | cycles | failed | CPU µs/cycle | × floor | INVITE→200 p50 / p99 / p99.9 ms |");
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---|");
    for (on, off) in pairs {
        for (name, c) in [("on", on), ("off", off)] {
            let _ = writeln!(
                s,
                "| {} | {name} | {} | {} | {:.0} | {:.1} | {:.2} / {:.2} / {:.2} |",
                c.rate, c.cycles, c.failed, c.cpu_us_per_cycle, c.cpu_us_per_cycle / c.sip_floor_us.max(0.001), c.invite.ms(0.5), c.invite.ms(0.99), c.invite.ms(0.999)
            );
        }
        let _ = writeln!(
            s,
            "\nAt {}/s the journal costs ×{:.2} CPU per cycle and moves INVITE→200 p99 from {:.2} to {:.2} ms.",
            on.rate,
            on.cpu_us_per_cycle / off.cpu_us_per_cycle.max(0.001),
            off.invite.ms(0.99),
            on.invite.ms(0.99)
        );
    }
    s
}

/// The restart step: N parked calls, `kill -9`, the same parkd started again.
fn restart_section(r: &RestartResult) -> String {
    let mut s = String::from("\n## Restart (N parked calls, `kill -9`, started again on the same ports and state directory)\n\n");
    let _ = writeln!(
        s,
        "Ready = from the new process's spawn to its first answer to OPTIONS (probed every millisecond). Resume gap = \
         ready → a call's first hold packet (kernel receive time). Lost = parked calls not heard again within {} s on \
         the same parkd port and SSRC. Issue 17's goals: ready ≤ 2 s with 1,000 calls, resume gap p99 ≤ 250 ms, 0 lost.\n",
        RESUME_WINDOW.as_secs()
    );
    let _ = writeln!(s, "| calls | parked | journal KiB | ready ms | resume gap p50 / p99 / max ms | lost | other port/SSRC | seq breaks |");
    let _ = writeln!(s, "|---:|---:|---:|---:|---|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| {} | {} | {} | {:.0} | {:.1} / {:.1} / {:.1} | {} | {} | {} |",
        r.n, r.parked, r.journal_bytes / 1024, r.ready_ms, r.gap_p50_ms, r.gap_p99_ms, r.gap_max_ms, r.lost, r.changed, r.seq_breaks
    );
    s
}

/// The flood step's table: what the legitimate source got while another flooded, and parkd's memory.
fn flood_section(f: &FloodResult) -> String {
    let mut s = String::from("\n## Flood (one source floods, another parks and retrieves)\n\n");
    let _ = writeln!(
        s,
        "{FLOOD_SOURCE} sends {} INVITEs/s to the park code, each a new call never ACKed ({} in all), while 127.0.0.1 \
         (listed in `trusted_proxies`, standing for the PBX) runs {} park → retrieve → hang-up cycles/s (the same load runs 35 s alone \
         first — its transactions live 32 s — so RSS \"before\" includes its working set). Goals: ≥ 99 % of \
         the legitimate cycles complete, their INVITE→200 p99 ≤ 100 ms, RSS growth ≤ 64 MiB and back within {} s.\n",
        f.flood_rate,
        f.flood_sent,
        f.legit.rate,
        RECOVERY_WINDOW.as_secs()
    );
    let answers: Vec<String> = f.flood_answers.iter().map(|(st, n)| format!("{st}: {n}")).collect();
    let _ = writeln!(s, "| flood sent | flood answers (first final per call) | flood unanswered | legit cycles | completed | INVITE→200 p50 / p99 ms | RSS before / peak / after MiB | RSS back after |");
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---|---|---|");
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {} ({:.2} %) | {:.2} / {:.2} | {:.1} / {:.1} / {:.1} | {} |",
        f.flood_sent,
        answers.join(", "),
        f.flood_unanswered,
        f.legit.cycles,
        f.legit.completed,
        f.legit_success_pct(),
        f.legit.invite.ms(0.5),
        f.legit.invite.ms(0.99),
        f.rss_before_kib as f64 / 1024.0,
        f.rss_peak_kib as f64 / 1024.0,
        f.rss_after_kib as f64 / 1024.0,
        f.rss_back_after_s.map(|t| format!("{t:.1} s")).unwrap_or_else(|| format!("not within {} s", RECOVERY_WINDOW.as_secs()))
    );
    let _ = writeln!(
        s,
        "\nGoals met: legit ≥ 99 % {}, p99 ≤ 100 ms {}, growth ≤ 64 MiB {}, back within {} s {}.",
        yes(f.legit_success_pct() >= 99.0),
        yes(f.legit.invite.ms(0.99) <= 100.0),
        yes(f.rss_growth_mib() <= 64.0),
        RECOVERY_WINDOW.as_secs(),
        yes(f.rss_back_after_s.is_some())
    );
    s
}
