//! [`Parkd`]: one parkd process per test, on its own ports, killed (by PID) when the guard drops.

use crate::harness::ports::PortPlan;
use crate::harness::{paths, process};
use crate::sip::probe;
use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long parkd gets to answer its first OPTIONS.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// How a test wants parkd configured (passed as command-line flags).
#[derive(Clone, Debug)]
pub struct ParkdOptions {
    pub park_code: String,
    pub orbits: String,
    /// Seconds before a parked call is recalled; tests use a long one so no recall interferes.
    pub parking_time: u32,
    /// More flags, appended as given.
    pub extra_args: Vec<String>,
    /// A TOML configuration (see `parkd.example.toml`), written to `<log dir>/parkd.toml` and passed with
    /// `--config`; the flags above still override the first lot's code, orbits and parking time.
    pub config: Option<String>,
    /// Serve the HTTP API on a port of this test's block (see [`Parkd::http_addr`]); otherwise `--http off`.
    pub http: bool,
    /// `--state-dir`; default `<log dir>/state` (a fresh one per start). Give the same one to a restarted parkd.
    pub state_dir: Option<PathBuf>,
    /// The IP of `--listen` (the port is this test's); default 127.0.0.1. `::` is dual-stack, `::1` IPv6 only.
    pub listen_ip: Option<std::net::IpAddr>,
}

impl Default for ParkdOptions {
    fn default() -> Self {
        ParkdOptions {
            park_code: "700".into(),
            orbits: "701-720".into(),
            parking_time: 600,
            extra_args: Vec::new(),
            config: None,
            http: false,
            state_dir: None,
            listen_ip: None,
        }
    }
}

/// A running parkd. Its stderr goes to `<target>/e2e-logs/<test>-<pid>-<n>/parkd.stderr`; when the test
/// panics, dropping the guard prints the tail of that file.
pub struct Parkd {
    child: Child,
    /// The ports this test owns (parkd's SIP port, its RTP range, SIPp's ports).
    pub ports: PortPlan,
    /// The directory holding parkd's stderr and the SIPp logs of this test.
    pub log_dir: PathBuf,
    stderr_path: PathBuf,
    name: String,
    /// The HTTP API address when started with `http: true`.
    pub http_addr: Option<SocketAddr>,
    state_dir: PathBuf,
    /// The command line, kept to start the same parkd again ([`Parkd::restart`]).
    args: Vec<std::ffi::OsString>,
    /// Starts so far (1 = the first).
    starts: u32,
    /// Where parkd listens (`--listen`).
    listen: SocketAddr,
}

impl Parkd {
    /// This parkd's `--state-dir` (its own under the test's log directory, unless the options named one).
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone()
    }

    /// The HTTP API's bearer token parkd generated in its state directory (`<state_dir>/http-token`); panics
    /// when there is none (HTTP off, or a token was configured).
    pub fn http_token(&self) -> String {
        let file = self.state_dir.join("http-token");
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}; stderr:\n{}", file.display(), self.stderr_tail(30)));
        text.trim().to_string()
    }

    /// The parkd process id (e.g. to read its RSS from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The parkd binary: `$PARKD_BIN`, else `<target>/debug/parkd`.
pub fn binary_path() -> PathBuf {
    match std::env::var_os("PARKD_BIN") {
        Some(p) => PathBuf::from(p),
        None => paths::target_dir().join("debug").join("parkd"),
    }
}

impl Parkd {
    /// Starts parkd with the default lot (700, 701-720) and waits until it answers OPTIONS.
    pub fn start(test_name: &str) -> Parkd {
        Parkd::start_with(test_name, ParkdOptions::default())
    }

    /// Starts parkd with `options` and waits until it answers OPTIONS (panics with its stderr otherwise).
    pub fn start_with(test_name: &str, options: ParkdOptions) -> Parkd {
        let bin = binary_path();
        if !bin.is_file() {
            panic!(
                "parkd binary not found at {}: run `bash scripts/test.sh` (or `cargo build --workspace --bins` \
                 before `cargo test`), or point $PARKD_BIN at a built parkd",
                bin.display()
            );
        }
        let ports = PortPlan::allocate();
        let log_dir = paths::fresh_log_dir(test_name);
        let stderr_path = log_dir.join("parkd.stderr");
        let http_addr = options.http.then(|| SocketAddr::from(([127, 0, 0, 1], ports.aux_port())));
        let state_dir = options.state_dir.clone().unwrap_or_else(|| log_dir.join("state"));
        let listen = options.listen_ip.map_or(ports.sip_addr(), |ip| SocketAddr::new(ip, ports.sip));
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(toml) = &options.config {
            let path = log_dir.join("parkd.toml");
            std::fs::write(&path, toml).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            args.extend(["--config".into(), path.into_os_string()]);
        }
        let flags = [
            ("--listen", listen.to_string()),
            ("--rtp-ports", format!("{}-{}", ports.rtp_lo, ports.rtp_hi)),
            ("--park-code", options.park_code.clone()),
            ("--orbits", options.orbits.clone()),
            ("--parking-time", options.parking_time.to_string()),
        ];
        for (flag, value) in flags {
            args.extend([flag.into(), value.into()]);
        }
        args.extend(["--state-dir".into(), state_dir.clone().into_os_string()]);
        args.extend(options.extra_args.iter().map(Into::into));
        args.extend(["--http".into(), http_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()).into()]);
        let child = spawn(&bin, &args, &stderr_path, &[]);
        let mut parkd = Parkd { child, ports, log_dir, stderr_path, name: test_name.to_string(), http_addr, state_dir, args, starts: 1, listen };
        parkd.wait_ready();
        parkd
    }

    /// Stops this parkd with `kill -9` (no chance to flush or say goodbye: a crash) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`, `libc::SIGUSR2`) and waits up to `wait` for parkd to exit on its
    /// own; returns its exit status (`None`: still running after `wait`).
    pub fn signal_and_wait(&mut self, signal: libc::c_int, wait: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the PID of our own child, not reaped yet; no memory is involved.
            unsafe { libc::kill(pid, signal) };
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Starts parkd again with the same command line: the same SIP port, RTP range, HTTP port and state
    /// directory (the previous process must be gone: [`Parkd::kill9`] or [`Parkd::signal_and_wait`]). Its log
    /// goes to `parkd-<n>.stderr` next to the first. Returns how long it took from the spawn until it answered
    /// OPTIONS (polled every few ms; a figure to report, not to assert on).
    pub fn restart(&mut self) -> Duration {
        self.restart_with_env(&[])
    }

    /// As [`Parkd::restart`], with these environment variables set for the new process (test hooks such as
    /// `PARKD_TEST_SHARD_START_DELAY_MS`).
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) -> Duration {
        if let Ok(None) = self.child.try_wait() {
            panic!("parkd for {} is still running: stop it before restarting it", self.name);
        }
        self.starts += 1;
        self.stderr_path = self.log_dir.join(format!("parkd-{}.stderr", self.starts));
        let t0 = Instant::now();
        self.child = spawn(&binary_path(), &self.args, &self.stderr_path, env);
        self.wait_ready_every(Duration::from_millis(5));
        t0.elapsed()
    }

    /// The log of an earlier start (`1` = the first), e.g. to read what the process before a restart logged.
    pub fn stderr_of_start(&self, start: u32) -> String {
        let path = if start <= 1 { self.log_dir.join("parkd.stderr") } else { self.log_dir.join(format!("parkd-{start}.stderr")) };
        std::fs::read_to_string(&path).unwrap_or_default()
    }

    /// The logs of every start so far, oldest first, one after the other.
    pub fn stderr_of_every_start(&self) -> String {
        (1..=self.starts).map(|n| self.stderr_of_start(n)).collect()
    }

    /// The whole log of the current process.
    pub fn stderr_all(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// parkd's SIP address (UDP and TCP): where it listens, 127.0.0.1 when that is a wildcard.
    pub fn sip_addr(&self) -> SocketAddr {
        if self.listen.ip().is_unspecified() {
            self.ports.sip_addr()
        } else {
            self.listen
        }
    }

    /// The last `lines` lines parkd wrote to stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        paths::file_tail(&self.stderr_path, lines)
    }

    /// parkd's resident set size (`VmRSS` of `/proc/<pid>/status`), KiB; `None` once it is gone.
    pub fn rss_kib(&self) -> Option<u64> {
        process::rss_kib(self.pid())
    }

    /// Where parkd's stderr (its log) goes.
    pub fn stderr_path(&self) -> &std::path::Path {
        &self.stderr_path
    }

    /// Panics (with parkd's stderr) if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("parkd for {} exited ({status}); stderr tail:\n{}", self.name, self.stderr_tail(60));
        }
    }

    /// Sends an OPTIONS and says whether parkd answered 200 within `wait`.
    pub fn answers_options(&self, wait: Duration) -> bool {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1_000_000);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        probe::options_ping(self.sip_addr(), n, wait)
    }

    fn wait_ready(&mut self) {
        self.wait_ready_every(Duration::from_millis(50));
    }

    fn wait_ready_every(&mut self, pause: Duration) {
        let deadline = Instant::now() + READY_DEADLINE;
        let mut attempt = self.starts * 100_000;
        while Instant::now() < deadline {
            self.assert_alive();
            attempt += 1;
            if probe::options_ping(self.sip_addr(), attempt, Duration::from_millis(200)) {
                return;
            }
            std::thread::sleep(pause);
        }
        panic!(
            "parkd for {} did not answer OPTIONS on {} within {:?}; stderr tail:\n{}",
            self.name,
            self.sip_addr(),
            READY_DEADLINE,
            self.stderr_tail(60)
        );
    }
}

/// Spawns the parkd binary with `args`, stdout and stderr to `stderr_path`.
fn spawn(bin: &std::path::Path, args: &[std::ffi::OsString], stderr_path: &std::path::Path, env: &[(&str, &str)]) -> Child {
    let stderr = File::create(stderr_path).unwrap_or_else(|e| panic!("cannot create {}: {e}", stderr_path.display()));
    let stdout = stderr.try_clone().unwrap_or_else(|e| panic!("cannot clone stderr file handle: {e}"));
    Command::new(bin)
        .args(args)
        .env("RUST_LOG", std::env::var("PARKD_LOG").unwrap_or_else(|_| "debug".into()))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

impl Drop for Parkd {
    fn drop(&mut self) {
        // SIGTERM to this child's PID (a chance to flush its log), then SIGKILL after 2 s.
        process::stop(&mut self.child, Duration::from_secs(2));
        if std::thread::panicking() {
            eprintln!(
                "---- parkd stderr for {} ({}), last 80 lines ----\n{}\n---- end of parkd stderr ----",
                self.name,
                self.stderr_path.display(),
                self.stderr_tail(80)
            );
        }
    }
}
