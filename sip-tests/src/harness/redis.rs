//! A real Redis per test: `redis-server` on a loopback port of its own, without persistence, stopped by its PID
//! when the guard drops. It can be paused (SIGSTOP) and resumed (SIGCONT), and restarted empty on the same port.
//! `scripts/test.sh` installs `redis-server`; where it is missing, [`RedisServer::available`] is false and the
//! tests say they were skipped.

use super::paths::fresh_log_dir;
use super::ports::PortPlan;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server` the test owns.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    _ports: PortPlan,
    paused: bool,
}

impl RedisServer {
    /// Whether `redis-server` can be run here.
    pub fn available() -> bool {
        Command::new("redis-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    /// Starts one on a free loopback port and waits until it answers PING (panics after 10 s).
    pub fn start(name: &str) -> RedisServer {
        let ports = PortPlan::allocate();
        let mut r = RedisServer { child: None, port: ports.sip, dir: fresh_log_dir(&format!("redis-{name}")), _ports: ports, paused: false };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("redis log file");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--dir"])
            .arg(&self.dir)
            .stdout(log.try_clone().expect("log")).stderr(log)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING within 10 s (log: {})", self.port, self.dir.join("redis.log").display());
    }

    /// `redis://127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether it answers a PING within 300 ms.
    pub fn ping(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// Runs one command with redis-cli and returns its output (for inspecting keys from a test).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.child.as_ref().and_then(|c| libc::pid_t::try_from(c.id()).ok()) {
            // SAFETY: kill(2) on the PID of the child we spawned and have not reaped; no memory is involved.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// SIGSTOP: the server stops answering, its connections stay open.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    /// Kills it (SIGKILL) and starts a new, empty one on the same port.
    pub fn restart_empty(&mut self) {
        self.kill();
        self.spawn();
    }

    fn kill(&mut self) {
        if self.paused {
            self.resume();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
