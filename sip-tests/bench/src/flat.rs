//! Flat cost (issue 20): the park → retrieve → hang-up cycle's CPU and INVITE→200 latency against the number
//! of calls already parked, `cargo run --release -p parkd-bench -- --flat [--flat-steps 10,1000,5000,18500]
//! [--flat-rate R] [--flat-secs S] [--flat-runs N] [--out DIR]` (default `bench-results/flat/`).
//!
//! One parkd (pinned to its core) with a lot of 40,000 orbits (park code 700, `first` policy, no recall, no
//! maximum park time, no keepalive). For each K in the steps, in ascending order, background calls are parked
//! until K are (2,000 parks/s), each offering `a=inactive`: parkd holds the call, its orbit and an RTP leg,
//! but sends no hold music (20,000 streams would be twice what one core carries; music costs per packet, not
//! per park, and is measured by the density step). Then parkd's idle CPU with K parked is measured (2 s), and
//! `runs` runs of the cycle step ([`crate::cycle`]) at the fixed rate; each run's CPU per cycle has the idle
//! rate × its duration subtracted. Every figure is also given as a ratio to the K = 10 step of the same run,
//! and the CPU to the bare UDP responder's ([`crate::sip_floor`], tokio variant) at the same rate.
//!
//! Each run uses a rate one above the previous one (e.g. 200, 201, 202, …): the cycle step names its calls
//! after its rate, and a parkd that keeps running between runs must not see the same Call-IDs and branches
//! again while the old transactions linger (≤ 32 s).

use std::fmt::Write as _;
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use parkd::sip::Message;
use sip_tests::sip::ua::{self, CallIds, Ua};

use crate::cycle::{self, CycleResult};
use crate::net;
use crate::sip_floor;
use crate::sys::{self, Parkd, ParkdOpts};

/// Background parks started per second.
const SETUP_RATE: f64 = 2000.0;
/// The benchmark lot: 40,000 orbits of 6 digits (the first lot keeps the CLI's 5-digit orbits and another code).
const LOT_TOML: &str = "\n[[lot]]\nname = \"default\"\npark_code = \"699\"\norbits = \"10000-19999\"\n\n[[lot]]\nname = \"flat\"\npark_code = \"700\"\norbits = \"100000-139999\"\nslot_policy = \"first\"\nparking_time = 0\nmax_park_time = 0\nkeepalive_interval = 0\n";
/// One leg per RTP port, as the cycle step needs (its parked parties share one sink address: on a shared port
/// the bridged RTP would be ambiguous): 19,500 even ports, for up to ~19,000 background legs and the cycles'
/// (the bench machine allows 20,000 descriptors). Bound before this program takes an ephemeral port.
const RTP_PORTS: &str = "2000-40999";

/// One K.
pub struct FlatStep {
    pub k: usize,
    /// Background calls parked (200) and refused or unanswered.
    pub parked: usize,
    pub failed: usize,
    pub setup_s: f64,
    /// parkd's CPU with K parked and nothing happening, % of a core.
    pub idle_cpu_pct: f64,
    pub rss_kib: u64,
    pub runs: Vec<CycleResult>,
    /// Per run: CPU µs per cycle with the idle CPU subtracted.
    pub net_us: Vec<f64>,
}

impl FlatStep {
    fn median(mut v: Vec<f64>) -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }
    pub fn cpu_us(&self) -> f64 {
        FlatStep::median(self.net_us.clone())
    }
    pub fn p50_ms(&self) -> f64 {
        FlatStep::median(self.runs.iter().map(|r| r.invite.ms(0.5)).collect())
    }
    pub fn p99_ms(&self) -> f64 {
        FlatStep::median(self.runs.iter().map(|r| r.invite.ms(0.99)).collect())
    }
    pub fn failed_cycles(&self) -> usize {
        self.runs.iter().map(|r| r.failed).sum()
    }
}

/// The background calls: one UA, inactive offers to the park code.
struct Background {
    ua: Ua,
    sink_port: u16,
    calls: Vec<(CallIds, bool, Instant, u32)>,
    by_id: HashMap<String, usize>,
    ok: usize,
    failed: usize,
}

impl Background {
    fn invite(&self, i: usize) {
        let c = &self.calls[i].0;
        let (l, s) = (self.ua.local, self.ua.server);
        let ip = l.ip();
        let sdp = format!("v=0\r\no=bench 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=inactive\r\n", self.sink_port);
        let text = format!(
            "INVITE sip:700@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-bg{i}-inv;rport\r\nMax-Forwards: 70\r\nFrom: <sip:{u}@{l}>;tag={ft}\r\nTo: <sip:700@{s}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: <sip:{u}@{l}>\r\nReferred-By: <sip:parker@127.0.0.1>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            u = c.user,
            ft = c.from_tag,
            cid = c.call_id,
            len = sdp.len()
        );
        let _ = self.ua.sock.send_to(text.as_bytes(), s);
    }

    /// Parks background calls until `k` are parked (or have failed), within 60 s.
    fn fill(&mut self, k: usize, progress: &mut dyn FnMut(String)) {
        let t0 = Instant::now();
        let first = self.calls.len();
        let mut last = Instant::now();
        while self.ok + self.failed < k && t0.elapsed() < Duration::from_secs(60) {
            let due = (first + (t0.elapsed().as_secs_f64() * SETUP_RATE) as usize + 1).min(k);
            while self.calls.len() < due {
                let i = self.calls.len();
                let c = CallIds { call_id: format!("bg{i}@flat.bench"), from_tag: format!("bt{i}"), user: format!("bg{i}"), target: "700".into(), to_tag: None };
                self.by_id.insert(c.call_id.clone(), i);
                self.calls.push((c, false, Instant::now(), 0));
                self.invite(i);
            }
            let mut got = 0;
            while let Some(m) = self.ua.try_recv() {
                got += 1;
                match m {
                    Message::Response(r) if ua::answers_invite(&r) && r.status >= 200 => {
                        let Some(&i) = self.by_id.get(r.common.call_id.as_str()) else { continue };
                        let c = &mut self.calls[i];
                        c.0.to_tag = r.common.to.tag().map(str::to_string);
                        self.ua.ack(&c.0, r.status < 300);
                        if !c.1 {
                            c.1 = true;
                            if r.status < 300 {
                                self.ok += 1;
                            } else {
                                self.failed += 1;
                            }
                        }
                    }
                    Message::Request(req) => self.ua.ok_to(&req),
                    _ => {}
                }
            }
            // Retransmissions 0.5, 1, 2 s apart; given up after 8 s.
            let mut resend = Vec::new();
            for (i, c) in self.calls.iter_mut().enumerate().skip(first).filter(|(_, c)| !c.1) {
                let age = c.2.elapsed().as_millis() as u64;
                if age > 8000 {
                    c.1 = true;
                    self.failed += 1;
                } else if c.3 < 3 && age > 500 * ((1 << (c.3 + 1)) - 1) {
                    c.3 += 1;
                    resend.push(i);
                }
            }
            for i in resend {
                self.invite(i);
            }
            if got == 0 {
                net::wait_readable(&[&self.ua.sock], 1);
            }
            if last.elapsed() > Duration::from_millis(250) {
                last = Instant::now();
                progress(format!("flat: parking background calls {}/{k} ok, {} failed", self.ok, self.failed));
            }
        }
    }
}

/// `--flat` from the command line: its flags (see the module doc), then [`run`]. `out` is the `--out` directory
/// or `bench-results/` (the report goes to its `flat/`).
pub fn cli(bin: &Path, cpu: usize, args: &[String], out: &Path, progress: &mut dyn FnMut(String)) -> io::Result<()> {
    let list = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect::<Vec<u64>>());
    let steps: Vec<usize> = list("--flat-steps").unwrap_or_else(|| vec![10, 1000, 5000, 18500]).into_iter().map(|k| k as usize).collect();
    let rate = list("--flat-rate").and_then(|v| v.first().copied()).unwrap_or(200) as u32;
    let secs = list("--flat-secs").and_then(|v| v.first().copied()).unwrap_or(3);
    let runs = list("--flat-runs").and_then(|v| v.first().copied()).unwrap_or(3) as usize;
    let dir = if args.iter().any(|a| a == "--out") { out.to_path_buf() } else { out.join("flat") };
    run(bin, cpu, &dir, args.join(" "), &steps, rate, secs, runs.max(1), progress)
}

/// The whole step: floors, one parkd, every K; writes `dir/README.md` and `dir/flat.svg`.
#[allow(clippy::too_many_arguments)]
pub fn run(bin: &Path, cpu: usize, dir: &Path, command: String, steps: &[usize], rate: u32, secs: u64, runs: usize, progress: &mut dyn FnMut(String)) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    progress(format!("flat: bare UDP responders at {rate} cycles/s"));
    let floor_tokio = sip_floor::run(cpu, rate, Duration::from_secs(2), sip_floor::Responder::Tokio)?.us_per_cycle;
    let floor_blocking = sip_floor::run(cpu, rate, Duration::from_secs(2), sip_floor::Responder::Blocking)?.us_per_cycle;
    eprintln!("\rflat: bare responder {floor_blocking:.0} µs/cycle, on tokio {floor_tokio:.0} µs/cycle at {rate}/s");
    // 19,500 RTP sockets: near a common 20,000 descriptor limit; raised where allowed (parkd inherits it).
    // SAFETY: plain setrlimit on a stack struct.
    unsafe {
        let r = libc::rlimit { rlim_cur: 65_536, rlim_max: 65_536 };
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    let opts = ParkdOpts { legs_per_port: 1, rtp_sender: None, media_threads: None, cpus: None, extra: Vec::new(), rtp_ports: Some(RTP_PORTS.into()), config: LOT_TOML.to_string() };
    let parkd = Parkd::start(bin, cpu, "127.0.0.1:44500".parse().expect("literal address"), &dir.join("parkd-flat.log"), &opts)?;
    let sink = net::loopback_socket(1 << 20)?;
    let mut bg = Background { ua: Ua::new(parkd.sip)?, sink_port: sink.local_addr()?.port(), calls: Vec::new(), by_id: HashMap::new(), ok: 0, failed: 0 };
    let mut sorted: Vec<usize> = steps.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut next_rate = rate;
    for &k in &sorted {
        let t0 = Instant::now();
        bg.fill(k, progress);
        let setup_s = t0.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(1));
        let pid = parkd.pid();
        let (c0, w0) = (sys::process_cpu_ns(pid), Instant::now());
        std::thread::sleep(Duration::from_secs(2));
        let idle_ns_per_s = (sys::process_cpu_ns(pid) - c0) as f64 / w0.elapsed().as_secs_f64();
        let mut step = FlatStep { k, parked: bg.ok, failed: bg.failed, setup_s, idle_cpu_pct: idle_ns_per_s / 1e7, rss_kib: sys::rss_kib(pid), runs: Vec::new(), net_us: Vec::new() };
        for _ in 0..runs {
            let r = cycle::run(&parkd, next_rate, (next_rate as u64 * secs) as usize, progress)?;
            next_rate += 1;
            let total_us = r.cpu_us_per_cycle * r.completed.max(1) as f64;
            let net = (total_us - idle_ns_per_s / 1000.0 * r.elapsed_s) / r.completed.max(1) as f64;
            step.net_us.push(net);
            step.runs.push(r);
        }
        eprintln!(
            "\rflat K={k}: parked {} (failed {}), idle {:.1} % CPU, RSS {} KiB; cycle {:.0} µs CPU (net of idle; runs {:?}), INVITE→200 p50/p99 {:.2}/{:.2} ms, {} failed cycles",
            step.parked, step.failed, step.idle_cpu_pct, step.rss_kib, step.cpu_us(), step.net_us.iter().map(|v| v.round()).collect::<Vec<_>>(), step.p50_ms(), step.p99_ms(), step.failed_cycles()
        );
        out.push(step);
    }
    drop(parkd);
    std::fs::write(dir.join("README.md"), report(&out, rate, secs, runs, floor_tokio, floor_blocking, &command))?;
    std::fs::write(dir.join("flat.svg"), svg(&out))?;
    eprintln!("flat: wrote {}", dir.join("README.md").display());
    Ok(())
}

fn ratio(v: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}×", v / base)
    } else {
        "–".into()
    }
}

fn report(steps: &[FlatStep], rate: u32, secs: u64, runs: usize, floor_tokio: f64, floor_blocking: f64, command: &str) -> String {
    let (nproc, cpu_model, kernel) = sys::machine_info();
    let date = std::process::Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let base = steps.first();
    let (b_cpu, b_p50, b_p99) = base.map_or((0.0, 0.0, 0.0), |b| (b.cpu_us(), b.p50_ms(), b.p99_ms()));
    let mut s = String::new();
    let _ = writeln!(s, "# Flat cost: the cycle against the number of calls parked (issue 20)\n");
    let _ = writeln!(s, "`cargo run --release -p parkd-bench -- {command}` on {date}: {nproc} CPUs ({cpu_model}), kernel {kernel}.\n");
    let _ = writeln!(
        s,
        "One parkd on one core, lot of 40,000 orbits (`first` policy). For each K, background calls are parked (offering \
         `a=inactive`: they hold an orbit, a dialog, a journal record and an RTP leg, but get no hold music), parkd's idle CPU \
         with them is measured, then {runs} run(s) of {secs} s of park → retrieve → hang-up cycles at ~{rate}/s (each run one \
         cycle/s faster, so that Call-IDs never repeat). CPU per cycle is parkd's whole process (SIP thread, media thread, \
         journal writer) minus the idle rate over the run, median of the runs; INVITE→200 counts both the park's and the \
         retrieve's INVITE, median of the runs' quantiles. Ratios are to the K = {} step of this run, and to the bare UDP \
         responder at the same rate ({floor_tokio:.0} µs/cycle on tokio, {floor_blocking:.0} µs blocking).\n",
        base.map_or(0, |b| b.k)
    );
    let _ = writeln!(s, "| K parked | idle CPU | RSS | cycle CPU µs | vs K={} | vs tokio responder | INVITE→200 p50 | vs K={} | p99 | vs K={} | failed |", base.map_or(0, |b| b.k), base.map_or(0, |b| b.k), base.map_or(0, |b| b.k));
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for st in steps {
        let _ = writeln!(
            s,
            "| {} | {:.1} % | {} MiB | {:.0} | {} | {} | {:.2} ms | {} | {:.2} ms | {} | {} bg, {} cycles |",
            st.parked,
            st.idle_cpu_pct,
            st.rss_kib / 1024,
            st.cpu_us(),
            ratio(st.cpu_us(), b_cpu),
            ratio(st.cpu_us(), floor_tokio),
            st.p50_ms(),
            ratio(st.p50_ms(), b_p50),
            st.p99_ms(),
            ratio(st.p99_ms(), b_p99),
            st.failed,
            st.failed_cycles()
        );
    }
    let _ = writeln!(s, "\n![cycle CPU and INVITE→200 p99 against calls parked](flat.svg)\n");
    let _ = writeln!(s, "Every run (net CPU µs per cycle; p50 / p99 ms; cycles done / failed):\n");
    for st in steps {
        let runs: Vec<String> = st
            .runs
            .iter()
            .zip(&st.net_us)
            .map(|(r, n)| format!("{}/s: {n:.0} µs, {:.2} / {:.2} ms, {}/{}", r.rate, r.invite.ms(0.5), r.invite.ms(0.99), r.completed, r.failed))
            .collect();
        let _ = writeln!(s, "* K = {}: {}", st.k, runs.join("; "));
    }
    s
}

/// CPU per cycle (left axis) and p99 INVITE→200 (right axis) against K (log scale), hand-written SVG.
fn svg(steps: &[FlatStep]) -> String {
    let (w, h, l, r, t, b) = (720.0, 360.0, 70.0, 70.0, 40.0, 50.0);
    let kmin = steps.iter().map(|s| s.k.max(1)).min().unwrap_or(1) as f64;
    let kmax = steps.iter().map(|s| s.k.max(1)).max().unwrap_or(10).max(kmin as usize * 10) as f64;
    let cmax = steps.iter().map(|s| s.cpu_us()).fold(1.0f64, f64::max) * 1.25;
    let pmax = steps.iter().map(|s| s.p99_ms()).fold(0.1f64, f64::max) * 1.25;
    let x = |k: usize| l + ((k.max(1) as f64).ln() - kmin.ln()) / (kmax.ln() - kmin.ln()).max(1e-9) * (w - l - r);
    let yc = |v: f64| h - b - v / cmax * (h - t - b);
    let yp = |v: f64| h - b - v / pmax * (h - t - b);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">parkd: cycle CPU and INVITE→200 p99 vs calls already parked</text>\n",
        w / 2.0
    );
    let _ = writeln!(s, "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>", h - b, w - r, h - b);
    let _ = writeln!(s, "<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"#1f77b4\"/>", h - b);
    let _ = writeln!(s, "<line x1=\"{}\" y1=\"{t}\" x2=\"{}\" y2=\"{}\" stroke=\"#d62728\"/>", w - r, w - r, h - b);
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let y = h - b - f * (h - t - b);
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#1f77b4\">{:.0}</text>", l - 6.0, y + 4.0, f * cmax);
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" fill=\"#d62728\">{:.2}</text>", w - r + 6.0, y + 4.0, f * pmax);
    }
    for st in steps {
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>", x(st.k), h - b + 16.0, st.k);
    }
    let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">calls parked (log scale)</text>", (l + w - r) / 2.0, h - 12.0);
    let _ = writeln!(s, "<text x=\"16\" y=\"{}\" fill=\"#1f77b4\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">CPU µs per cycle (net of idle)</text>", h / 2.0, h / 2.0);
    let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" fill=\"#d62728\" transform=\"rotate(90 {} {})\" text-anchor=\"middle\">INVITE→200 p99, ms</text>", w - 14.0, h / 2.0, w - 14.0, h / 2.0);
    for (color, pts) in [
        ("#1f77b4", steps.iter().map(|st| (x(st.k), yc(st.cpu_us()))).collect::<Vec<_>>()),
        ("#d62728", steps.iter().map(|st| (x(st.k), yp(st.p99_ms()))).collect::<Vec<_>>()),
    ] {
        let path: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        let _ = writeln!(s, "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>", path.join(" "));
        for (a, b) in pts {
            let _ = writeln!(s, "<circle cx=\"{a:.1}\" cy=\"{b:.1}\" r=\"3.5\" fill=\"{color}\"/>");
        }
    }
    s.push_str("</svg>\n");
    s
}
