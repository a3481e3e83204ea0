//! Process plumbing: CPU pinning, CPU time and RSS from `/proc`, UDP counters, and the parkd child.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sip_tests::harness::{paths, process};
use sip_tests::sip::probe;

/// Pins the calling thread to `cpu` (sched_setaffinity). Errors are returned, not fatal.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// CPU time consumed by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Nice value of parkd and of this program: the machine may be shared, and a benchmark of
/// pacing jitter must not measure other programs' compiles.
pub const NICE: i32 = -15;

/// Sets the calling thread's nice value (threads spawned later inherit it), in a session of its
/// own whose scheduler autogroup gets the same nice (with autogroups, a plain nice only counts
/// inside the session).
pub fn renice_self(nice: i32) {
    // SAFETY: setsid/setpriority on the calling process/thread.
    unsafe {
        libc::setsid();
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
    }
    let _ = fs::write("/proc/self/autogroup", nice.to_string());
}

/// Raises RLIMIT_NOFILE to its hard limit (parkd binds one socket per RTP port; we inherit it).
pub fn raise_nofile() {
    // SAFETY: plain getrlimit/setrlimit on a stack struct.
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// CPU time of every thread of `pid` (sum of `/proc/<pid>/task/*/schedstat` run time), ns.
pub fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    dir.flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// CPU time of `pid`'s media thread (named `parkd-media`) alone, ns: the rest of [`process_cpu_ns`] is the
/// SIP/signalling side (the tokio thread, HTTP).
pub fn media_thread_cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    dir.flatten()
        .filter(|e| fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == "parkd-media"))
        .filter_map(|e| fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// VmRSS of `pid` in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    process::rss_kib(pid).unwrap_or(0)
}

/// System-wide UDP counters from `/proc/net/snmp` (loopback drops show up here).
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpCounters {
    pub rcvbuf_errors: u64,
    pub sndbuf_errors: u64,
}

impl UdpCounters {
    pub fn read() -> UdpCounters {
        let Ok(text) = fs::read_to_string("/proc/net/snmp") else { return UdpCounters::default() };
        let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return UdpCounters::default() };
        let get = |key: &str| {
            names.split_whitespace().position(|n| n == key).and_then(|i| values.split_whitespace().nth(i)?.parse().ok()).unwrap_or(0)
        };
        UdpCounters { rcvbuf_errors: get("RcvbufErrors"), sndbuf_errors: get("SndbufErrors") }
    }
    pub fn since(&self, before: &UdpCounters) -> UdpCounters {
        UdpCounters {
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(before.sndbuf_errors),
        }
    }
}

/// parkd flags a bench run varies.
#[derive(Clone, Debug)]
pub struct ParkdOpts {
    /// `--rtp-legs-per-port`.
    pub legs_per_port: u16,
    /// `--rtp-sender` (`auto`, `raw`, `io_uring`, `syscalls`); parkd's default when `None`.
    pub rtp_sender: Option<String>,
    /// `--media-threads`; parkd's default (one per core it may use) when `None`.
    pub media_threads: Option<u16>,
    /// The `taskset -c` CPU list instead of the single core given to [`Parkd::start`] (e.g. "0,1").
    pub cpus: Option<String>,
    /// More flags, appended as given (e.g. `--trusted-proxy 127.0.0.1/32`).
    pub extra: Vec<String>,
    /// The only RTP port range to try (several parkd at once need ranges of their own); else [`RTP_PORT_RANGES`].
    pub rtp_ports: Option<String>,
    /// More TOML appended to the configuration file (e.g. a `[cluster]` section).
    pub config: String,
}

/// A parkd process pinned to one core with `taskset`. Killed (by its own pid) on drop.
pub struct Parkd {
    child: Child,
    pub sip: SocketAddr,
    /// The command line (`setsid nice … parkd …`), to start the same parkd again ([`Parkd::restart`]).
    args: Vec<String>,
    log: PathBuf,
}

/// RTP port ranges tried in turn (each holds ≥ 10,000 even ports; a range fails when another
/// program on this shared machine holds one of its ports). Kept below the kernel's ephemeral
/// range (32768+) where possible, since our own sinks bind ephemeral ports.
pub const RTP_PORT_RANGES: &[&str] = &["6100-26099", "1100-21099", "24000-44999"];
/// 10,000 orbits (all of equal length) so 10,000 calls fit in one lot.
pub const ORBITS: &str = "10000-19999";

impl Parkd {
    /// Starts `bin` on `taskset -c <cpu>`, SIP on `sip`, with `opts`' flags, and waits until it
    /// answers OPTIONS.
    pub fn start(bin: &Path, cpu: usize, sip: SocketAddr, log: &Path, opts: &ParkdOpts) -> io::Result<Parkd> {
        let mut last = io::Error::other("no RTP port range");
        // The load comes from 127.0.0.1 alone, as all traffic does behind a PBX: that address is a trusted
        // proxy, with the rate and unconfirmed-call limits off (0) since the benchmark sends far beyond a
        // PBX's defaults (1,000 new dialogs/s) on purpose.
        let limits = log.with_extension("limits.toml");
        // A fresh state directory per start: the journal of an earlier run must not bring its calls back.
        let state = log.with_extension("state");
        match fs::remove_dir_all(&state) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::other(format!("cannot clear {}: {e}", state.display()))),
        }
        fs::write(
            &limits,
            format!(
                "[limits.trusted]\nnew_dialogs_per_second = 0\nout_of_dialog_per_second = 0\nin_dialog_per_second = 0\nunconfirmed_per_source = 0\nparked_per_source = 0\n{}",
                opts.config
            ),
        )?;
        let ranges: Vec<&str> = match &opts.rtp_ports {
            Some(r) => vec![r.as_str()],
            None => RTP_PORT_RANGES.to_vec(),
        };
        for range in ranges {
            let mut args: Vec<String> = ["nice", "-n", &NICE.to_string(), "taskset", "-c"].iter().map(|a| a.to_string()).collect();
            args.push(opts.cpus.clone().unwrap_or_else(|| cpu.to_string()));
            args.push(bin.display().to_string());
            for a in ["--listen", &sip.to_string(), "--rtp-ports", range, "--orbits", ORBITS, "--parking-time", "0", "--log", "warn"] {
                args.push(a.to_string());
            }
            args.extend(["--config".into(), limits.display().to_string(), "--trusted-proxy".into(), "127.0.0.1/32".into()]);
            args.extend(["--rtp-legs-per-port".into(), opts.legs_per_port.to_string()]);
            args.extend(opts.rtp_sender.iter().flat_map(|s| ["--rtp-sender".to_string(), s.clone()]));
            args.extend(opts.media_threads.iter().flat_map(|n| ["--media-threads".to_string(), n.to_string()]));
            args.extend(["--http".into(), "off".into(), "--state-dir".into(), state.display().to_string()]);
            args.extend(opts.extra.iter().cloned());
            let child = spawn(&args, log)?;
            let mut p = Parkd { child, sip, args, log: log.to_path_buf() };
            match p.wait_ready(Duration::from_secs(15)) {
                Ok(()) => {
                    p.set_autogroup_nice();
                    return Ok(p);
                }
                Err(e) => last = io::Error::other(format!("{e}; log: {}", fs::read_to_string(log).unwrap_or_default().trim())),
            }
        }
        Err(last)
    }

    /// Its own session = its own scheduler autogroup (set up by now); give the group the same nice.
    fn set_autogroup_nice(&self) {
        let _ = fs::write(format!("/proc/{}/autogroup", self.pid()), NICE.to_string());
    }

    /// `kill -9`: parkd dies at once, as in a crash (its journal stays in the state directory).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the same parkd again (same ports, same state directory; its log appended to `log`) after
    /// [`Parkd::kill9`], and waits until it answers OPTIONS, probing every millisecond. Returns the time from the
    /// spawn to that answer.
    pub fn restart(&mut self, log: &Path) -> io::Result<Duration> {
        let t0 = Instant::now();
        self.child = spawn(&self.args, log)?;
        self.log = log.to_path_buf();
        let mut n = 1_000_000;
        while t0.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(io::Error::other(format!("restarted parkd exited: {status}; log: {}", fs::read_to_string(log).unwrap_or_default().trim())));
            }
            n += 1;
            if probe::options_ping(self.sip, n, Duration::from_millis(1)) {
                let ready = t0.elapsed();
                self.set_autogroup_nice();
                return Ok(ready);
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "restarted parkd did not answer OPTIONS within 30 s"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self, limit: Duration) -> io::Result<()> {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(io::Error::other(format!("parkd exited: {status}")));
            }
            n += 1;
            if probe::options_ping(self.sip, n, Duration::from_millis(100)) {
                return Ok(());
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "parkd did not answer OPTIONS"))
    }
}

impl Drop for Parkd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `setsid <args>` with stderr to `log`.
fn spawn(args: &[String], log: &Path) -> io::Result<Child> {
    let logf = fs::File::create(log)?;
    Command::new("setsid").args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(logf).spawn()
}

/// `<target>/release/parkd` of this workspace (see [`paths::target_dir`]), built first (cargo does nothing when
/// it is up to date).
pub fn parkd_binary() -> io::Result<PathBuf> {
    // A/B runs: `PARKD_BIN=/path/to/parkd` measures that build as it is (no cargo build).
    if let Some(bin) = std::env::var_os("PARKD_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let status = Command::new("cargo").current_dir(paths::workspace_dir()).args(["build", "--release", "--bin", "parkd"]).status()?;
    if !status.success() {
        return Err(io::Error::other("cargo build --release --bin parkd failed"));
    }
    Ok(paths::target_dir().join("release/parkd"))
}

/// nproc, CPU model and kernel of this machine.
/// The machine's load average over 1, 5 and 15 minutes, as `/proc/loadavg` gives them (empty when unreadable).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

pub fn machine_info() -> (usize, String, String) {
    // SAFETY: sysconf has no preconditions. (available_parallelism would count only our affinity mask.)
    let nproc = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(0) as usize;
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|m| m.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default();
    (nproc, model, kernel)
}

/// Re-runs this program inside `unshare --net` with `lo` up and `env_var` set. `Ok(None)` when
/// namespaces are unavailable (the caller goes on in the host namespace).
pub fn reexec_in_netns(env_var: &str) -> io::Result<Option<i32>> {
    let ok = Command::new("unshare").args(["-n", "true"]).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        return Ok(None);
    }
    let exe = std::env::current_exe()?;
    let status = Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(exe)
        .args(std::env::args().skip(1))
        .env(env_var, "1")
        .status()?;
    Ok(Some(status.code().unwrap_or(1)))
}
