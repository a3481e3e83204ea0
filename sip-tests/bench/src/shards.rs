//! Signalling on every core (issue 20): the park → retrieve → hang-up cycle ([`crate::cycle`]) against parkd with
//! one SIP thread and with two (`--sip-threads 2`, README "Signalling shards"), in the same run, each on both
//! cores (`taskset -c 0,1`; the benchmark pinned to core 1 as always, unpinned with `--both-cores`: on a
//! two-core machine the load generator shares a core with parkd). `cargo run --release -p parkd-bench -- --shards [--shards-rates R,R] [--shards-secs S]
//! [--shards-p99-ms MS] [--shards-journal] [--out DIR]` (default `bench-results/shards/`). Without the journal
//! unless `--shards-journal` (then each shard journals its calls, as parkd does by default).
//!
//! For each configuration the rates are offered in ascending order (a fresh parkd per configuration, every
//! rate `S` seconds); a rate is *sustained* when at most 0.5 % of its cycles fail and its INVITE→200 p99 stays
//! within the budget (`--shards-p99-ms`, default 5 ms). The figure is the highest sustained rate of each, and
//! their ratio (two threads ÷ one); the ladder of a configuration stops at its first rate not sustained. Half of
//! the retrieves land on the other shard than their park (the cycle's Call-IDs hash independently), so the
//! two-thread figure includes the cross-shard fetch and its relay hop. The machine's load average is read
//! before and after; other programs on the machine make the figure noisy, and the report says so.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::cycle::{self, CycleResult};
use crate::sys::{self, Parkd, ParkdOpts};

/// The figures of one configuration (1 or 2 SIP threads).
pub struct ShardRun {
    pub threads: u16,
    pub steps: Vec<CycleResult>,
    /// The highest rate sustained (0: none).
    pub sustained: u32,
}

/// Whether `r` is sustained within `p99_ms`.
fn sustained(r: &CycleResult, p99_ms: f64) -> bool {
    r.cycles > 0 && (r.failed as f64) <= 0.005 * r.cycles as f64 && r.invite.ms(0.99) <= p99_ms
}

pub fn cli(bin: &Path, args: &[String], out: &Path, progress: &mut dyn FnMut(String)) -> io::Result<()> {
    let list = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect::<Vec<f64>>());
    let rates: Vec<u32> = list("--shards-rates").unwrap_or_else(|| vec![250.0, 500.0, 1000.0, 1500.0, 2000.0, 3000.0, 4000.0]).into_iter().map(|r| r as u32).collect();
    let secs = list("--shards-secs").and_then(|v| v.first().copied()).unwrap_or(3.0) as u64;
    let p99_ms = list("--shards-p99-ms").and_then(|v| v.first().copied()).unwrap_or(5.0);
    let dir = if args.iter().any(|a| a == "--out") { out.to_path_buf() } else { out.join("shards") };
    let journal = args.iter().any(|a| a == "--shards-journal");
    std::fs::create_dir_all(&dir)?;
    let load_before = sys::loadavg();
    let mut runs = Vec::new();
    for (i, threads) in [1u16, 2].into_iter().enumerate() {
        let opts = ParkdOpts {
            legs_per_port: 1,
            rtp_sender: None,
            media_threads: None,
            cpus: Some("0,1".into()),
            extra: ["--sip-threads".to_string(), threads.to_string()].into_iter().chain((!journal).then(|| "--no-journal".to_string())).collect(),
            rtp_ports: None,
            config: String::new(),
        };
        let sip = format!("127.0.0.1:{}", 44_600 + i).parse().map_err(io::Error::other)?;
        let parkd = Parkd::start(bin, 0, sip, &dir.join(format!("parkd-{threads}.log")), &opts)?;
        let mut run = ShardRun { threads, steps: Vec::new(), sustained: 0 };
        for &rate in &rates {
            let r = cycle::run(&parkd, rate, (u64::from(rate) * secs) as usize, progress)?;
            let ok = sustained(&r, p99_ms);
            eprintln!(
                "\rshards: {threads} SIP thread(s), {rate} cycles/s: {} done, {} failed, INVITE→200 p50/p99 {:.2}/{:.2} ms, {:.0} µs CPU/cycle, parkd {:.0} % CPU{}",
                r.completed,
                r.failed,
                r.invite.ms(0.5),
                r.invite.ms(0.99),
                r.cpu_us_per_cycle,
                r.cpu_pct,
                if ok { "" } else { " — not sustained" }
            );
            run.steps.push(r);
            if !ok {
                break;
            }
            run.sustained = rate;
        }
        drop(parkd);
        runs.push(run);
    }
    let load_after = sys::loadavg();
    let text = report(&runs, secs, p99_ms, journal, &load_before, &load_after, &args.join(" "));
    std::fs::write(dir.join("README.md"), &text)?;
    println!("{text}");
    eprintln!("shards: wrote {}", dir.join("README.md").display());
    Ok(())
}

fn report(runs: &[ShardRun], secs: u64, p99_ms: f64, journal: bool, load_before: &str, load_after: &str, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Signalling on every core: one SIP thread vs two (issue 20)\n");
    let _ = writeln!(s, "`{command}`; each rate offered for {secs} s to a fresh parkd on `taskset -c 0,1` (media threads: parkd's default, one per core, split between the SIP threads); the benchmark on core 1 (unpinned with `--both-cores`), sharing it with parkd. Sustained: ≤ 0.5 % failed cycles and INVITE→200 p99 ≤ {p99_ms} ms. Journal: {}.\n", if journal { "on (one per shard)" } else { "off (`--no-journal`)" });
    let _ = writeln!(s, "Load average (1/5/15 min) before: {load_before}; after: {load_after}. Other programs ran on this two-core machine meanwhile, and the load generator itself needs most of a core: the figures are noisy and the ratio is a lower bound of what two SIP threads give on a machine with cores to spare.\n");
    let _ = writeln!(s, "| SIP threads | cycles/s offered | done | failed | INVITE→200 p50 ms | p99 ms | parkd CPU µs/cycle | parkd CPU % |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for run in runs {
        for r in &run.steps {
            let _ = writeln!(s, "| {} | {} | {} | {} | {:.2} | {:.2} | {:.0} | {:.0} |", run.threads, r.rate, r.completed, r.failed, r.invite.ms(0.5), r.invite.ms(0.99), r.cpu_us_per_cycle, r.cpu_pct);
        }
    }
    let one = runs.iter().find(|r| r.threads == 1).map_or(0, |r| r.sustained);
    let two = runs.iter().find(|r| r.threads == 2).map_or(0, |r| r.sustained);
    let ratio = if one > 0 { two as f64 / one as f64 } else { 0.0 };
    let _ = writeln!(s, "\n**Sustained at p99 ≤ {p99_ms} ms: one SIP thread {one} cycles/s, two {two} cycles/s — ratio {ratio:.2}×** (the goal: ≥ 1.8×).");
    s
}
