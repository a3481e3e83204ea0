//! parkd benchmark: `cargo run --release -p parkd-bench -- [--quick] [--out DIR] [--steps N,N] [--hold SECS]
//! [--no-cycle] [--no-density] [--rates R,R] [--legs-per-port K] [--rtp-sender auto|raw|io_uring|syscalls]
//! [--both-cores] [--flood-rate N] [--flood-secs S] [--no-flood] [--restart-calls N] [--no-restart]
//! [--journal-rates R,R] [--no-journal-cmp]`, or only the cluster step (issue 18): `-- --cluster [--cluster-rates R,R]
//! [--cluster-secs S] [--cluster-runs N] [--out DIR]` (default `bench-results/cluster/`; needs `redis-server`), or only the
//! encrypted-phones step (issue 19): `-- --secure [--secure-steps N,N] [--secure-rates R,R] [--secure-runs N] [--out DIR]`
//! (default `bench-results/secure/`), or only the capacity-guard step (issue 20): `-- --guard [--ceiling N]
//! [--guard-steps N,N] [--guard-hold S] [--push-pct P] [--out DIR]` (default `bench-results/guard/`), or only the SRTP
//! protect micro-benchmark (issue 19, printed): `-- --srtp-micro [--micro-packets N] [--micro-rounds N] [--micro-streams N,N] [--micro-warm-only]`,
//! or only the 2-core signalling step (issue 20): `-- --shards [--shards-rates R,R] [--shards-secs S] [--shards-p99-ms MS]`
//! (default `bench-results/shards/`), or only the calibrator's ways of sending (issue 20): `-- --calib-senders
//! [--calib-streams N,N] [--calib-secs S] [--calib-rounds R]` (default `bench-results/calib/`).
//! `PARKD_BIN=<path>` measures that parkd build as it is instead of building this workspace's (A/B runs).
//!
//! Loopback only (in a private network namespace when possible), parkd and this program at nice -15, every load
//! bounded in count and time, stops by itself. parkd runs pinned to core 0, this program to core 1. Writes
//! `DIR/README.md` and `DIR/density.svg` (default `bench-results/` at the workspace root). Not part of the test
//! suite. The steps live in the `parkd_bench` library (`src/lib.rs`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use parkd_bench::{calib, cluster_report, cycle, density, flood, report::Report, restart, sip_floor, sys};
use sip_tests::harness::paths;

const PARKD_CPU: usize = 0;
const BENCH_CPU: usize = 1;
const NETNS_ENV: &str = "PARKD_BENCH_NETNS";
/// Cycles per second the legitimate source runs during the flood step.
const FLOOD_LEGIT_RATE: u32 = 50;

fn progress(msg: String) {
    eprint!("\r\x1b[2K{msg}");
    let _ = std::io::stderr().flush();
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nbench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // --srtp-micro: only ns per SRTP protect of a hold packet per suite and way of calling rtc-srtp, printed (no
    // parkd process, no network; src/srtp_micro.rs). --micro-packets N, --micro-rounds N, --micro-streams N,N,
    // --micro-warm-only (skips the cold-cache runs).
    if args.iter().any(|a| a == "--srtp-micro") {
        let num = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
        let mut s = parkd_bench::srtp_micro::Settings::default();
        if let Some(v) = num("--micro-packets").and_then(|v| v.parse().ok()) {
            s.packets = v;
        }
        if let Some(v) = num("--micro-rounds").and_then(|v| v.parse().ok()) {
            s.rounds = v;
        }
        if let Some(v) = num("--micro-streams") {
            s.contexts = v.split(',').filter_map(|x| x.parse().ok()).filter(|&n| n > 0).collect();
        }
        s.cold = !args.iter().any(|a| a == "--micro-warm-only");
        print!("{}", parkd_bench::srtp_micro::run(&s));
        return Ok(());
    }
    let out = args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)).map(PathBuf::from).unwrap_or_else(|| paths::workspace_dir().join("bench-results"));
    std::fs::create_dir_all(&out)?;
    sys::raise_nofile();
    let bin = sys::parkd_binary()?;
    // Run in a private network namespace (its own loopback) when we can: no port clash with other
    // programs on this machine, and /proc/net/snmp counts only our traffic.
    if std::env::var_os(NETNS_ENV).is_none() {
        if let Some(code) = sys::reexec_in_netns(NETNS_ENV)? {
            return if code == 0 { Ok(()) } else { Err(std::io::Error::other(format!("bench in netns exited with {code}"))) };
        }
        eprintln!("bench: cannot create a network namespace (need root / unshare); using the host loopback");
    }
    if !args.iter().any(|a| a == "--both-cores") {
        sys::pin_current_thread(BENCH_CPU)?;
    }
    sys::renice_self(sys::NICE);
    // --cluster: only the cluster step (three nodes on one Redis, with its floors), into bench-results/cluster/.
    if args.iter().any(|a| a == "--cluster") {
        let list = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect::<Vec<u64>>());
        let rates: Vec<u32> = list("--cluster-rates").unwrap_or_else(|| vec![100, 300]).into_iter().map(|r| r as u32).collect();
        let secs = list("--cluster-secs").and_then(|v| v.first().copied()).unwrap_or(5);
        let runs = list("--cluster-runs").and_then(|v| v.first().copied()).unwrap_or(2) as usize;
        let dir = if args.iter().any(|a| a == "--out") { out } else { out.join("cluster") };
        return cluster_report::step(&bin, PARKD_CPU, BENCH_CPU, &dir, args.join(" "), &rates, secs, runs, &mut progress);
    }
    // --secure: only the encrypted-phones step (issue 19: SRTP density, cycles over TLS, handshakes), into bench-results/secure/.
    if args.iter().any(|a| a == "--secure") {
        let dir = if args.iter().any(|a| a == "--out") { out } else { out.join("secure") };
        return parkd_bench::secure_report::step(&bin, PARKD_CPU, &dir, args.join(" "), parkd_bench::secure_report::Settings::from_args(&args), &mut progress);
    }
    // --calib-senders: only the calibrator's ways of sending (issue 20), into bench-results/calib/.
    if args.iter().any(|a| a == "--calib-senders") {
        return parkd_bench::calib_report::cli(PARKD_CPU, &args, &out, &mut progress);
    }
    // --shards: only the 2-core signalling step (issue 20), into bench-results/shards/ (flags: src/shards.rs).
    if args.iter().any(|a| a == "--shards") {
        return parkd_bench::shards::cli(&bin, &args, &out, &mut progress);
    }
    // --flat: only the flat-cost curve (issue 20), into bench-results/flat/ (flags: src/flat.rs).
    if args.iter().any(|a| a == "--flat") {
        return parkd_bench::flat::cli(&bin, PARKD_CPU, &args, &out, &mut progress);
    }
    let (steps, hold, calib_for, rates, cycle_secs): (&[usize], u64, u64, &[u32], u64) =
        if quick { (&[200, 1000], 10, 2, &[50, 500], 2) } else { (&[500, 1000, 2000, 4000, 5000, 6000, 7000, 8000, 10000], 20, 3, &[50, 200, 500, 2000], 4) };
    // --steps 200,1000 overrides the density steps; --hold SECS the hold; --no-cycle skips cycles.
    let custom: Vec<usize> = args.iter().position(|a| a == "--steps").and_then(|i| args.get(i + 1)).map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect()).unwrap_or_default();
    let steps: &[usize] = if custom.is_empty() { steps } else { &custom };
    let hold = args.iter().position(|a| a == "--hold").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(hold);
    let rates: &[u32] = if args.iter().any(|a| a == "--no-cycle") { &[] } else { rates };
    // --rates 500,2000 overrides the cycle rates; --no-density skips the density steps.
    let custom_rates: Vec<u32> = args.iter().position(|a| a == "--rates").and_then(|i| args.get(i + 1)).map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect()).unwrap_or_default();
    let rates: &[u32] = if custom_rates.is_empty() || rates.is_empty() { rates } else { &custom_rates };
    let steps: &[usize] = if args.iter().any(|a| a == "--no-density") { &[] } else { steps };
    // --legs-per-port K runs parkd with `--rtp-legs-per-port K` (default 1: one port per leg).
    let legs_per_port: u16 = args.iter().position(|a| a == "--legs-per-port").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(1);
    // --rtp-sender auto|io_uring|syscalls runs parkd with that `--rtp-sender` (default: parkd's own).
    let rtp_sender = args.iter().position(|a| a == "--rtp-sender").and_then(|i| args.get(i + 1)).cloned();
    // --both-cores: parkd on cores 0 and 1 with two media threads; this program is not pinned and
    // shares both cores with it (a 2-core machine has no third one for the load).
    let both_cores = args.iter().any(|a| a == "--both-cores");
    let cores = if both_cores { 2 } else { 1 };
    let parkd_opts = sys::ParkdOpts {
        legs_per_port,
        rtp_sender,
        media_threads: both_cores.then_some(2),
        cpus: both_cores.then(|| "0,1".to_string()),
        // --no-journal: parkd without its journal (what the journal's memory costs per parked call).
        extra: if args.iter().any(|a| a == "--no-journal") { vec!["--no-journal".into()] } else { Vec::new() },
        rtp_ports: None,
        // The density steps measure hold music's own ceiling: the capacity guard (issue 20) stays out of it.
        config: "[limits]\nmedia_guard = false\n".into(),
    };
    // --guard: only the capacity-guard step (issue 20), into bench-results/guard/.
    if args.iter().any(|a| a == "--guard") {
        let dir = if args.iter().any(|a| a == "--out") { out } else { out.join("guard") };
        return parkd_bench::guard::step(&bin, PARKD_CPU, &parkd_opts, &dir, &args, &mut progress);
    }
    let (nproc, cpu_model, kernel) = sys::machine_info();
    let date = std::process::Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();

    progress("calibrator: flat-out sendmmsg on core 0".into());
    let floor = calib::run(PARKD_CPU, None, Duration::from_secs(calib_for), &density::calib_sinks(2000)?)?;
    eprintln!("\rcalibrator floor: {:.0} pps, {:.2} µs/pkt => {:.0} streams/core", floor.pps, floor.us_per_pkt, floor.streams_per_core());

    let mut dens = Vec::new();
    let mut queue: Vec<usize> = steps.iter().rev().copied().collect();
    let mut bisected = false;
    while let Some(n) = queue.pop() {
        progress(format!("calibrator paced at {} pps (N={n})", n * 50));
        let c = calib::run(PARKD_CPU, Some(n as u64 * 50), Duration::from_secs(calib_for), &density::calib_sinks(n)?)?;
        let d = density::run(&bin, PARKD_CPU, &parkd_opts, n, Duration::from_secs(hold), &out.join(format!("parkd-density-{n}.log")), &mut progress)?;
        eprintln!(
            "\rN={n}: parked {} failed {} silent {} loss {:.3}% ia p50/p90/p99/max {:.1}/{:.1}/{:.1}/{:.1} ms cpu {:.1}% {:.2} µs/pkt (floor {:.2}) rss {} KiB {}",
            d.parked, d.failed, d.silent, d.loss_pct, d.ia_p50_ms, d.ia_p90_ms, d.ia_p99_ms, d.ia_max_ms, d.cpu_pct, d.us_per_pkt, c.us_per_pkt, d.rss_kib,
            if d.pass() { "PASS" } else { "FAIL" }
        );
        // Stop at a hard failure (failed calls, loss, saturated core). A step failing only the
        // jitter criterion on an unsaturated core is reported as failed but stepping goes on, so
        // the CPU ceiling is still measured on a shared VM whose scheduling adds tail latency.
        let stop = d.failed > 0 || d.silent > 0 || d.loss_pct >= 0.1 || d.cpu_pct >= 90.0 * cores as f64;
        let last_pass = dens.iter().filter(|(_, p): &&(calib::Calib, density::DensityResult)| p.pass() && p.n < n).map(|(_, p)| p.n).max();
        let passed = d.pass();
        dens.push((c, d));
        if stop {
            // A failed step: once, try halfway between the last passing step and it (rounded to
            // 500). A passing step at a saturated core ends the stepping: it is the ceiling.
            match last_pass {
                Some(lo) if !passed && !bisected && n - lo > 1000 => {
                    bisected = true;
                    queue.clear();
                    queue.push((lo + n) / 2 / 500 * 500);
                }
                _ => break,
            }
        }
    }
    dens.sort_by_key(|(_, d)| d.n);

    let parkd = sys::Parkd::start(&bin, PARKD_CPU, "127.0.0.1:27062".parse().expect("literal address"), &out.join("parkd-cycle.log"), &parkd_opts)?;
    let mut cycles = Vec::new();
    for &rate in rates {
        let mut c = cycle::run(&parkd, rate, (rate as u64 * cycle_secs) as usize, &mut progress)?;
        progress(format!("bare UDP responder at {rate} cycles/s"));
        c.sip_floor_us = sip_floor::run(PARKD_CPU, rate, Duration::from_secs(2), sip_floor::Responder::Blocking)?.us_per_cycle;
        c.tokio_floor_us = sip_floor::run(PARKD_CPU, rate, Duration::from_secs(2), sip_floor::Responder::Tokio)?.us_per_cycle;
        eprintln!(
            "\rcycle {rate}/s: {} done, {} failed, {:.0} µs CPU/cycle ({:.0} of it the media thread; bare responder {:.0}, on tokio {:.0}), INVITE→200 p50/p99/p99.9 {:.2}/{:.2}/{:.2} ms, switch p99 {:.2} ms, hold after {}",
            c.completed, c.failed, c.cpu_us_per_cycle, c.media_cpu_us_per_cycle, c.sip_floor_us, c.tokio_floor_us, c.invite.ms(0.5), c.invite.ms(0.99), c.invite.ms(0.999), c.switch.ms(0.99), c.hold_after_bridge
        );
        cycles.push(c);
    }
    drop(parkd);

    // Flood step: 127.0.0.2 floods never-ACKed INVITEs while 127.0.0.1 (trusted, standing for the PBX) cycles.
    // --flood-rate N (default 5000 INVITEs/s), --flood-secs S (default 10, 3 with --quick), --no-flood skips it.
    let flood = if args.iter().any(|a| a == "--no-flood") {
        None
    } else {
        let rate = args.iter().position(|a| a == "--flood-rate").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(5000);
        let secs = args.iter().position(|a| a == "--flood-secs").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(if quick { 3 } else { 10 });
        let opts = sys::ParkdOpts { extra: vec!["--trusted-proxy".into(), "127.0.0.1/32".into()], ..parkd_opts.clone() };
        let parkd = sys::Parkd::start(&bin, PARKD_CPU, "127.0.0.1:27064".parse().expect("literal address"), &out.join("parkd-flood.log"), &opts)?;
        let f = flood::run(&parkd, rate, secs, FLOOD_LEGIT_RATE, &mut progress)?;
        eprintln!(
            "\rflood {rate} INVITE/s from {}: sent {}, answers {:?}, unanswered {}; legit {}/s: {}/{} cycles ({:.2} %), INVITE→200 p99 {:.2} ms; RSS {} → peak {} → {} KiB (back after {})",
            flood::FLOOD_SOURCE, f.flood_sent, f.flood_answers, f.flood_unanswered, FLOOD_LEGIT_RATE, f.legit.completed, f.legit.cycles, f.legit_success_pct(),
            f.legit.invite.ms(0.99), f.rss_before_kib, f.rss_peak_kib, f.rss_after_kib, f.rss_back_after_s.map(|s| format!("{s:.1} s")).unwrap_or_else(|| "not within 30 s".into())
        );
        Some(f)
    };

    // Journal on vs off (issue 17): the same cycles against parkd with its journal (the default) and with
    // `--no-journal`. --journal-rates R,R (default 500 cycles/s), --no-journal-cmp skips it.
    let mut journal_cmp = Vec::new();
    if !args.iter().any(|a| a == "--no-journal-cmp") {
        let jrates: Vec<u32> = args.iter().position(|a| a == "--journal-rates").and_then(|i| args.get(i + 1)).map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect()).unwrap_or_else(|| vec![500]);
        let jsecs: u64 = if quick { 2 } else { 4 };
        for &rate in &jrates {
            let mut pair = Vec::new();
            for (journal, extra) in [(true, vec![]), (false, vec!["--no-journal".to_string()])] {
                let opts = sys::ParkdOpts { extra, ..parkd_opts.clone() };
                let name = if journal { "parkd-journal-on.log" } else { "parkd-journal-off.log" };
                let parkd = sys::Parkd::start(&bin, PARKD_CPU, "127.0.0.1:27068".parse().expect("literal address"), &out.join(name), &opts)?;
                let mut c = cycle::run(&parkd, rate, (rate as u64 * jsecs) as usize, &mut progress)?;
                drop(parkd);
                c.sip_floor_us = sip_floor::run(PARKD_CPU, rate, Duration::from_secs(2), sip_floor::Responder::Tokio)?.us_per_cycle;
                eprintln!(
                    "\rjournal {} at {rate}/s: {} done, {} failed, {:.0} µs CPU/cycle ({:.1}× the bare tokio responder), INVITE→200 p50/p99 {:.2}/{:.2} ms",
                    if journal { "on " } else { "off" }, c.completed, c.failed, c.cpu_us_per_cycle, c.cpu_us_per_cycle / c.sip_floor_us.max(0.001), c.invite.ms(0.5), c.invite.ms(0.99)
                );
                pair.push(c);
            }
            let off = pair.pop().expect("two runs");
            let on = pair.pop().expect("two runs");
            journal_cmp.push((on, off));
        }
    }

    // Restart step (issue 17): N parked calls, kill -9, restart. --restart-calls N (default 1000), --no-restart.
    let restart = if args.iter().any(|a| a == "--no-restart") {
        None
    } else {
        let n = args.iter().position(|a| a == "--restart-calls").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(1000);
        let r = restart::run(&bin, PARKD_CPU, &parkd_opts, n, &out.join("parkd-restart.log"), &mut progress)?;
        eprintln!(
            "\rrestart N={n}: parked {}, journal {} KiB; ready {:.0} ms after the spawn; first hold packet after ready p50/p99/max {:.1}/{:.1}/{:.1} ms; lost {}, changed port/SSRC {}, seq breaks {}",
            r.parked, r.journal_bytes / 1024, r.ready_ms, r.gap_p50_ms, r.gap_p99_ms, r.gap_max_ms, r.lost, r.changed, r.seq_breaks
        );
        Some(r)
    };

    let rep = Report { quick, args: args.join(" "), cores, nproc, cpu_model, kernel, date, floor, density: dens, cycles, flood, journal: journal_cmp, restart };
    std::fs::write(out.join("README.md"), rep.markdown())?;
    std::fs::write(out.join("density.svg"), rep.svg())?;
    eprintln!("wrote {}", out.join("README.md").display());
    Ok(())
}
