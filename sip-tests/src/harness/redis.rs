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
    /// TLS only (`--port 0 --tls-port`), client certificates required; the files are in `dir`.
    Tls,
}

/// The certificates of a TLS Redis ([`RedisServer::start_tls`]): a test CA, the server's (for 127.0.0.1) and a
/// client's, all PEM.
#[derive(Clone, Debug)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
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

    /// Whether `openssl` can be run here (to make the test certificates of [`RedisServer::start_tls`]).
    pub fn openssl_available() -> bool {
        Command::new("openssl").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }

    /// A Redis that speaks only TLS, with certificates made for this test by `openssl` (a CA, the server's for
    /// IP 127.0.0.1, a client's); it requires the client's certificate (`tls-auth-clients yes`).
    pub fn start_tls(name: &str) -> RedisServer {
        let ports = PortPlan::allocate();
        let dir = fresh_log_dir(&format!("redis-tls-{name}"));
        make_certificates(&dir);
        let mut r = RedisServer { child: None, port: ports.sip, dir, _ports: ports, paused: false, role: Role::Tls };
        r.spawn();
        r
    }

    /// The certificates of a [`RedisServer::start_tls`] server.
    pub fn tls_paths(&self) -> TlsPaths {
        TlsPaths {
            ca: self.dir.join("ca.crt"),
            client_cert: self.dir.join("client.crt"),
            client_key: self.dir.join("client.key"),
            server_cert: self.dir.join("server.crt"),
            server_key: self.dir.join("server.key"),
        }
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
            Role::Tls => {
                let t = self.tls_paths();
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .args(["--protected-mode", "no", "--tls-cert-file"])
                    .arg(&t.server_cert)
                    .arg("--tls-key-file")
                    .arg(&t.server_key)
                    .arg("--tls-ca-cert-file")
                    .arg(&t.ca)
                    .arg("--dir")
                    .arg(&self.dir);
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
        if matches!(self.role, Role::Tls) {
            return self.cli(&["PING"]) == "PONG";
        }
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
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if matches!(self.role, Role::Tls) {
            let t = self.tls_paths();
            cmd.arg("--tls").arg("--cacert").arg(&t.ca).arg("--cert").arg(&t.client_cert).arg("--key").arg(&t.client_key);
        }
        let out = cmd.args(args).output().expect("redis-cli");
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

/// A test CA, a server certificate for IP 127.0.0.1 and a client certificate, in `dir` (openssl, RSA 2048).
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n").expect("server.ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("client.ext");
    run(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=parkd test CA"]);
    for (who, cn) in [("server", "127.0.0.1"), ("client", "parkd-node")] {
        run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &format!("{who}.key"), "-out", &format!("{who}.csr"), "-subj", &format!("/CN={cn}")]);
        run(&[
            "x509", "-req", "-in", &format!("{who}.csr"), "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", &format!("{who}.crt"), "-days",
            "2", "-extfile", &format!("{who}.ext"),
        ]);
    }
}
