//! The cluster step's runs (the nodes and Redis it starts, in what order) and `bench-results/cluster/README.md`.
//!
//! One run: a Redis `PING` floor; one parkd without `--redis` under the cycles at each rate (the single-node
//! floor); then Redis and three cluster nodes under the same cycles, Redis's command counters read before and
//! after each rate. parkd processes (one, then three) are pinned to the same core, Redis and this program to the
//! other, so the cluster and its floor get the same CPU.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::cluster::{self, Load, Redis, PARK_TRIES};
use crate::hist::Hist;
use crate::sys::{self, Parkd, ParkdOpts};

/// The secret the nodes share (node-to-node retrieve requests are signed with it).
const SECRET: &str = "bench-cluster-secret-0123456789";
const NODES: usize = 3;
const PINGS: usize = 2000;

/// One rate of one run: the single-node floor and the cluster.
pub struct RateResult {
    pub single: Load,
    pub cluster: Load,
    /// Redis command calls during the cluster load (`INFO commandstats` deltas, and `total_commands_processed`).
    pub redis: BTreeMap<String, u64>,
    /// redis-server's CPU per completed cluster cycle, µs.
    pub redis_cpu_us_per_cycle: f64,
}

pub struct RunResult {
    pub ping: Hist,
    pub rates: Vec<RateResult>,
}

/// Every run of the step, and where it ran.
pub struct ClusterReport {
    pub args: String,
    pub date: String,
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub secs: u64,
    pub runs: Vec<RunResult>,
}

fn opts(rtp: &str, extra: Vec<String>, config: String) -> ParkdOpts {
    ParkdOpts { legs_per_port: 1, rtp_sender: None, media_threads: None, cpus: None, extra, rtp_ports: Some(rtp.into()), config }
}

/// One run: the floors, then the cluster, at each of `rates` for `secs` seconds each.
#[allow(clippy::too_many_arguments)]
pub fn run_once(bin: &Path, parkd_cpu: usize, redis_cpu: usize, out: &Path, rates: &[u32], secs: u64, run: usize, progress: &mut dyn FnMut(String)) -> io::Result<RunResult> {
    let mut single = Vec::new();
    {
        let p = Parkd::start(bin, parkd_cpu, "127.0.0.1:27074".parse().expect("literal address"), &out.join("parkd-single.log"), &opts("6100-12099", vec!["--no-journal".into()], String::new()))?;
        cluster::wait_parks_granted(p.sip)?;
        for &rate in rates {
            let l = cluster::run(&[&p], rate, rate as usize * secs as usize, &format!("s{run}r{rate}"), progress)?;
            eprintln!(
                "\rrun {run}, single node {rate}/s: {} done, {} failed, {:.0} cycles/s, park p50/p99 {:.2}/{:.2} ms, retrieve p50/p99 {:.2}/{:.2} ms",
                l.completed, l.failed, l.cycles_per_s(), l.park.ms(0.5), l.park.ms(0.99), l.same.ms(0.5), l.same.ms(0.99)
            );
            single.push(l);
        }
    }
    let redis = Redis::start(27079, redis_cpu, &out.join("redis.log"))?;
    let ping = redis.ping_floor(PINGS)?;
    eprintln!("\rrun {run}: Redis PING round trip p50/p99 {:.3}/{:.3} ms", ping.ms(0.5), ping.ms(0.99));
    let config = format!("[cluster]\nsecret = \"{SECRET}\"\n");
    let mut nodes = Vec::new();
    for k in 0..NODES {
        let extra = ["--redis", &redis.url(), "--node", &format!("n{}", k + 1), "--no-journal"].map(String::from).to_vec();
        let rtp = format!("{}-{}", 12100 + 3000 * k, 15099 + 3000 * k);
        let sip = format!("127.0.0.1:{}", 27075 + k).parse().expect("literal address");
        nodes.push(Parkd::start(bin, parkd_cpu, sip, &out.join(format!("parkd-node{}.log", k + 1)), &opts(&rtp, extra, config.clone()))?);
    }
    for n in &nodes {
        cluster::wait_parks_granted(n.sip)?;
    }
    let refs: Vec<&Parkd> = nodes.iter().collect();
    let mut rates_out = Vec::new();
    for (&rate, single) in rates.iter().zip(single) {
        let before = redis.command_counts()?;
        let cpu0 = sys::process_cpu_ns(redis.pid());
        let l = cluster::run(&refs, rate, rate as usize * secs as usize, &format!("c{run}r{rate}"), progress)?;
        let redis_cpu_us_per_cycle = sys::process_cpu_ns(redis.pid()).saturating_sub(cpu0) as f64 / 1000.0 / l.completed.max(1) as f64;
        let d = cluster::delta(&before, &redis.command_counts()?);
        eprintln!(
            "\rrun {run}, {NODES} nodes {rate}/s: {} done, {} failed, {} retried, {:.0} cycles/s, park p50/p99 {:.2}/{:.2} ms, retrieve same p50/p99 {:.2}/{:.2} ms, cross {:.2}/{:.2} ms, EVALSHA {}",
            l.completed, l.failed, l.retried, l.cycles_per_s(), l.park.ms(0.5), l.park.ms(0.99), l.same.ms(0.5), l.same.ms(0.99), l.cross.ms(0.5), l.cross.ms(0.99),
            d.get("evalsha").copied().unwrap_or(0)
        );
        rates_out.push(RateResult { single, cluster: l, redis: d, redis_cpu_us_per_cycle });
    }
    drop(nodes);
    drop(redis);
    Ok(RunResult { ping, rates: rates_out })
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 { format!("{:.2}", a / b) } else { "–".into() }
}

/// "min–max" of `f` over the runs (one value when they agree to the shown precision).
fn range(vals: &[f64], prec: usize) -> String {
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (a, b) = (format!("{lo:.prec$}"), format!("{hi:.prec$}"));
    if a == b { a } else { format!("{a}–{b}") }
}

impl RateResult {
    fn per_park(&self, cmd: &str) -> f64 {
        self.redis.get(cmd).copied().unwrap_or(0) as f64 / self.cluster.park_attempts.max(1) as f64
    }
    fn per_cycle(&self, cmd: &str) -> f64 {
        self.redis.get(cmd).copied().unwrap_or(0) as f64 / self.cluster.completed.max(1) as f64
    }
    /// Cross-node minus same-node retrieve INVITE→200 at quantile `q`, ms.
    fn cross_extra(&self, q: f64) -> f64 {
        self.cluster.cross.ms(q) - self.cluster.same.ms(q)
    }
}

impl ClusterReport {
    pub fn markdown(&self) -> String {
        let mut s = String::from("# parkd benchmark: three cluster nodes on one Redis (issue 18)\n\n");
        let _ = writeln!(
            s,
            "Run: `cargo run --release -p parkd-bench -- {}` on {}. Machine: `nproc` = {}, CPU: {}, kernel {}. Loopback only, in a \
             private network namespace. parkd (the single node, then the three nodes) pinned to core 0; `redis-server` {} and this \
             program (the phones) on core 1; all at nice -15 (the VM is shared with other jobs). Each figure below is from this run; \
             nothing is a pass/fail threshold.\n",
            self.args,
            self.date,
            self.nproc,
            self.cpu_model,
            self.kernel,
            redis_version()
        );
        let _ = writeln!(
            s,
            "**A cycle:** a phone parks on node `i mod 3` (INVITE to 700 with `Referred-By`; in the cluster the 200 waits for the \
             Redis claim), 60 ms later another phone dials the orbit from the 200's `Park-Orbit`, 40 ms after that 200 it hangs up; \
             done when its BYE is answered and the owner node has BYEd the parked party. Every other round of three cycles \
             retrieves on the node holding the call (*same-node*), the others on another node (*cross-node*: that node fetches the \
             call from the owner with a signed INVITE and relays the media). A park answered 486 or 503 is sent again as a new call \
             (up to {PARK_TRIES} tries) and counted as *retried*. {} s per rate. Every parkd runs with `--no-journal` (the \
             restart journal's `fdatasync` on this shared VM's disk adds up to hundreds of ms to a park's 200 and would drown the \
             cluster's share; its own cost is in `../restart/`). **Floors, same run:** the same cycles against one \
             parkd without `--redis` (all retrieves same-node), and a Redis `PING` round trip ({PINGS} in a row, one connection).\n",
            self.secs
        );
        for (k, run) in self.runs.iter().enumerate() {
            let _ = writeln!(s, "## Run {} (Redis PING round trip p50 / p99: {:.3} / {:.3} ms)\n", k + 1, run.ping.ms(0.5), run.ping.ms(0.99));
            let _ = writeln!(
                s,
                "| rate/s | parkd | cycles done / failed | cycles/s | CPU µs/cycle (all nodes) | park INVITE→200 p50 / p99 ms | retrieve same-node p50 / p99 ms | retrieve cross-node p50 / p99 ms | parks retried | refusals |"
            );
            let _ = writeln!(s, "|---:|---|---|---:|---:|---|---|---|---:|---|");
            for r in &run.rates {
                for (what, l) in [("1 node, no Redis (floor)", &r.single), ("3 nodes + Redis", &r.cluster)] {
                    let cross = if l.cross.count() > 0 { format!("{:.2} / {:.2}", l.cross.ms(0.5), l.cross.ms(0.99)) } else { "–".into() };
                    let _ = writeln!(
                        s,
                        "| {} | {what} | {} / {} | {:.0} | {:.0} | {:.2} / {:.2} | {:.2} / {:.2} | {cross} | {} | {:?} |",
                        l.rate, l.completed, l.failed, l.cycles_per_s(), l.cpu_us_per_cycle, l.park.ms(0.5), l.park.ms(0.99), l.same.ms(0.5), l.same.ms(0.99),
                        l.retried, l.refusals
                    );
                }
            }
            let _ = writeln!(s, "\nAs ratios to the floors of this run, and Redis's work (`INFO commandstats` deltas over the cluster load; commands run inside the Lua scripts are counted under their own names):\n");
            let _ = writeln!(
                s,
                "| rate/s | cycles/s ÷ floor | CPU/cycle ÷ floor (+ Redis µs/cycle) | park p99 ÷ floor park p99 | park p50 − floor, in PING p50s | cross − same retrieve p50 / p99 ms | cross p99 ÷ same p99 | EVALSHA (round trips) per cycle | INCR (fence = claim granted) per park | DEL per cycle | PUBLISH per cycle | all commands (inside scripts too) per park | Redis command counts |"
            );
            let _ = writeln!(s, "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|");
            for r in &run.rates {
                let (c, f) = (&r.cluster, &r.single);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} (+{:.0}) | {} | {:.1} | {:.2} / {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:?} |",
                    c.rate,
                    ratio(c.cycles_per_s(), f.cycles_per_s()),
                    ratio(c.cpu_us_per_cycle, f.cpu_us_per_cycle),
                    r.redis_cpu_us_per_cycle,
                    ratio(c.park.ms(0.99), f.park.ms(0.99)),
                    (c.park.ms(0.5) - f.park.ms(0.5)) / run.ping.ms(0.5).max(1e-6),
                    r.cross_extra(0.5),
                    r.cross_extra(0.99),
                    ratio(c.cross.ms(0.99), c.same.ms(0.99)),
                    r.per_cycle("evalsha"),
                    r.per_park("incr"),
                    r.per_cycle("del"),
                    r.per_cycle("publish"),
                    r.per_park("total_commands_processed"),
                    r.redis
                );
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "**Redis round trips.** parkd sends Redis one `EVALSHA` per operation: the claim before a park's 200 (the claim-any \
             script: `EXISTS` over the lot's orbits from the start index until a free one, `INCR` of the lot's fence, `SET NX PX` \
             with the lease, `PUBLISH`) and the release when the call leaves its orbit (`GET`, compare, `DEL`, `PUBLISH`); lease \
             renewals (one `EVALSHA` per node every lease / 3, whatever the number of calls) fall into the same counters. So \
             EVALSHA per cycle ≈ 2 means one round trip before each park's 200 and one after the retrieve. Allocation happens \
             inside Redis, so no park can lose a race and be retried: *retried* counts 486/503 answers, expected 0. The \
             `EXISTS` per park grow with the orbits in use (the lot's `slot_policy = \"first\"` scans from the first orbit): \
             a few here, up to the lot's size in one script when a lot is nearly full.\n"
        );
        s.push_str(&self.ranges());
        s
    }

    /// The key figures as ranges over the runs, per rate.
    fn ranges(&self) -> String {
        let mut s = format!("## Over the {} runs (min–max)\n\n", self.runs.len());
        let _ = writeln!(
            s,
            "The issue's goal, a cross-node retrieve adding at most 50 ms p99 to INVITE→200 over a same-node one, is the \
             *cross − same p99* column. *Cycles/s per core* is 10⁶ ÷ the three nodes' CPU µs per cycle: the rate one core \
             would carry at that cost (the floor's in brackets), an estimate, not a measured ceiling.\n"
        );
        let _ = writeln!(
            s,
            "| rate/s | cycles/s (floor) | cycles failed | parks retried | park p99 ms (floor) | retrieve p99 same / cross ms | cross − same p99 ms | cross − same p50 ms | EVALSHA per cycle | CPU/cycle ÷ floor | cycles/s per core (floor) | PING p50 ms |"
        );
        let _ = writeln!(s, "|---:|---|---|---|---|---|---|---|---|---|---|---|");
        let Some(first) = self.runs.first() else { return s };
        for (i, r0) in first.rates.iter().enumerate() {
            let at: Vec<&RateResult> = self.runs.iter().filter_map(|r| r.rates.get(i)).collect();
            let v = |f: &dyn Fn(&RateResult) -> f64| at.iter().map(|r| f(r)).collect::<Vec<f64>>();
            let pings: Vec<f64> = self.runs.iter().map(|r| r.ping.ms(0.5)).collect();
            let _ = writeln!(
                s,
                "| {} | {} ({}) | {} | {} | {} ({}) | {} / {} | {} | {} | {} | {} | {} ({}) | {} |",
                r0.cluster.rate,
                range(&v(&|r| r.cluster.cycles_per_s()), 0),
                range(&v(&|r| r.single.cycles_per_s()), 0),
                range(&v(&|r| r.cluster.failed as f64), 0),
                range(&v(&|r| r.cluster.retried as f64), 0),
                range(&v(&|r| r.cluster.park.ms(0.99)), 2),
                range(&v(&|r| r.single.park.ms(0.99)), 2),
                range(&v(&|r| r.cluster.same.ms(0.99)), 2),
                range(&v(&|r| r.cluster.cross.ms(0.99)), 2),
                range(&v(&|r| r.cross_extra(0.99)), 2),
                range(&v(&|r| r.cross_extra(0.5)), 2),
                range(&v(&|r| r.per_cycle("evalsha")), 2),
                range(&v(&|r| r.cluster.cpu_us_per_cycle / r.single.cpu_us_per_cycle.max(1e-9)), 2),
                range(&v(&|r| 1e6 / r.cluster.cpu_us_per_cycle.max(1e-9)), 0),
                range(&v(&|r| 1e6 / r.single.cpu_us_per_cycle.max(1e-9)), 0),
                range(&pings, 3),
            );
        }
        s
    }
}

/// `redis-server --version`'s `v=…`, for the report.
fn redis_version() -> String {
    let out = std::process::Command::new("redis-server").arg("--version").output().map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    out.split_whitespace().find_map(|w| w.strip_prefix("v=")).map(|v| format!("{v} (no persistence)")).unwrap_or_default()
}

/// The step as `main.rs` runs it: `runs` runs, the README written to `out/README.md`.
#[allow(clippy::too_many_arguments)]
pub fn step(bin: &Path, parkd_cpu: usize, bench_cpu: usize, out: &Path, args: String, rates: &[u32], secs: u64, runs: usize, progress: &mut dyn FnMut(String)) -> io::Result<()> {
    std::fs::create_dir_all(out)?;
    let (nproc, cpu_model, kernel) = sys::machine_info();
    let date = std::process::Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let mut rep = ClusterReport { args, date, nproc, cpu_model, kernel, secs, runs: Vec::new() };
    for run in 1..=runs {
        rep.runs.push(run_once(bin, parkd_cpu, bench_cpu, out, rates, secs, run, progress)?);
        std::fs::write(out.join("README.md"), rep.markdown())?;
    }
    eprintln!("wrote {}", out.join("README.md").display());
    Ok(())
}
