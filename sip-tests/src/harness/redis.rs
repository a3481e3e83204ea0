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
    /// Extra arguments (a replica's `--replicaof`), or the Sentinel configuration file to run with `--sentinel`.
    role: Role,
}

enum Role {
    Master,
    Replica { of: u16 },
    Sentinel { conf: PathBuf },
}

impl RedisServer {
    /// Whether `redis-server` can be run here.
    pub fn available() -> bool {
        Command::new("redis-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    /// Starts one on a free loopback port and waits until it answers PING (panics after 10 s).
    pub fn start(name: &str) -> RedisServer {
        Self::start_as(name, Role::Master)
    }

    /// A replica of `master` (`--replicaof`), started and answering PING (it syncs in the background).
    pub fn start_replica(name: &str, master: &RedisServer) -> RedisServer {
        Self::start_as(name, Role::Replica { of: master.port })
    }

    /// A Sentinel (`redis-server <conf> --sentinel`) watching `master` under the name `service`, quorum 1,
    /// declaring it down after 1 s without an answer.
    pub fn start_sentinel(name: &str, master: &RedisServer, service: &str) -> RedisServer {
        let dir = fresh_log_dir(&format!("sentinel-{name}"));
        let ports = PortPlan::allocate();
        let conf = dir.join("sentinel.conf");
        let text = format!(
            "port {}\nbind 127.0.0.1\nprotected-mode no\ndir {}\nsentinel monitor {service} 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds {service} 1000\nsentinel failover-timeout {service} 5000\n",
            ports.sip,
            dir.display(),
            master.port
        );
        std::fs::write(&conf, text).expect("sentinel.conf");
        let mut r = RedisServer { child: None, port: ports.sip, dir, _ports: ports, paused: false, role: Role::Sentinel { conf } };
        r.spawn();
        r
    }

    fn start_as(name: &str, role: Role) -> RedisServer {
        let ports = PortPlan::allocate();
        let mut r = RedisServer { child: None, port: ports.sip, dir: fresh_log_dir(&format!("redis-{name}")), _ports: ports, paused: false, role };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("redis log file");
        let mut cmd = Command::new("redis-server");
        match &self.role {
            Role::Sentinel { conf } => {
                cmd.arg(conf).arg("--sentinel");
            }
            role => {
                cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .args(["--protected-mode", "no", "--repl-diskless-sync-delay", "0", "--dir"])
                    .arg(&self.dir);
                if let Role::Replica { of } = role {
                    cmd.args(["--replicaof", "127.0.0.1", &of.to_string()]);
                }
            }
        }
        let child = cmd.stdout(log.try_clone().expect("log")).stderr(log).spawn().expect("start redis-server");
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

    /// Kills it (SIGKILL) for good (a master dying, for a failover).
    pub fn kill_now(&mut self) {
        self.kill();
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
