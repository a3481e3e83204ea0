//! [`Sipp`]: runs one SIPp scenario against a [`Parkd`], bounded in time, with its traces in a log dir.

use crate::harness::parkd::Parkd;
use crate::harness::paths;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A SIPp invocation being put together: `Sipp::new("park_indirect_uac").service("700").rtp_port(p)...`.
#[derive(Clone, Debug)]
pub struct Sipp {
    scenario: String,
    service: String,
    keys: Vec<(String, String)>,
    hold_ms: u64,
    calls: u32,
    timeout: Duration,
    transport: String,
    extra: Vec<String>,
    /// `-p`: SIPp's SIP port when the test must know it before parkd starts (e.g. a URI in parkd's config).
    local_port: Option<u16>,
}

/// A SIPp process running in the background (see [`Sipp::spawn`]).
pub struct SippRun {
    child: Option<Child>,
    started: Instant,
    limit: Duration,
    dir: PathBuf,
    label: String,
    /// The local SIP port SIPp uses (its Contact/From/Via carry `127.0.0.1:<port>`).
    pub local_port: u16,
}

/// What a finished SIPp run left behind.
#[derive(Debug)]
pub struct SippOutcome {
    /// SIPp's exit code (0 = all calls succeeded, 1 = at least one failed); `None` if killed by the harness.
    pub code: Option<i32>,
    /// `-trace_err` log: unexpected messages, failed checks, timeouts.
    pub errors: String,
    /// `-trace_msg` log: every SIP message sent and received.
    pub messages: String,
    /// `-trace_logs` log: the scenario's `<log>` lines.
    pub logs: String,
    /// SIPp's own stderr/stdout (fatal errors land here).
    pub console: String,
    pub dir: PathBuf,
    pub label: String,
    /// The local SIP port SIPp used.
    pub local_port: u16,
}

impl Sipp {
    /// A run of `scenarios/<scenario>.xml`, one call, 60 s global timeout, UDP.
    pub fn new(scenario: &str) -> Sipp {
        Sipp {
            scenario: scenario.to_string(),
            service: "700".into(),
            keys: Vec::new(),
            hold_ms: 0,
            calls: 1,
            timeout: Duration::from_secs(60),
            transport: "u1".into(),
            extra: Vec::new(),
            local_port: None,
        }
    }

    /// `scenarios/parked_recallable.xml`: a transferee parking on 700 with RTP on `rtp_port`, its Referred-By
    /// naming the parker at `127.0.0.1:<parker_port>` (where parkd sends the recall), staying until parkd's BYE.
    pub fn parked_recallable(rtp_port: u16, parker_port: u16) -> Sipp {
        Sipp::new("parked_recallable").service("700").rtp_port(rtp_port).key("parker_port", &parker_port.to_string())
    }

    /// Uses this SIP port instead of one from parkd's port block (see [`free_udp_port`]).
    pub fn local_port(mut self, port: u16) -> Sipp {
        self.local_port = Some(port);
        self
    }

    /// The user part dialled (`-s`): a park code or an orbit.
    pub fn service(mut self, user: &str) -> Sipp {
        self.service = user.to_string();
        self
    }

    /// `-key rtp_port <port>`: the RTP port the scenario's SDP offer names.
    pub fn rtp_port(self, port: u16) -> Sipp {
        self.key("rtp_port", &port.to_string())
    }

    /// `-key name value`: a `[name]` keyword in the scenario.
    pub fn key(mut self, name: &str, value: &str) -> Sipp {
        self.keys.push((name.to_string(), value.to_string()));
        self
    }

    /// `-d <ms>`: how long `<pause/>` steps last (parked / talking time).
    pub fn hold_ms(mut self, ms: u64) -> Sipp {
        self.hold_ms = ms;
        self
    }

    /// `-m <n>`: number of calls.
    pub fn calls(mut self, n: u32) -> Sipp {
        self.calls = n;
        self
    }

    /// SIPp's `-timeout` (it then exits with failure); the harness kills it 15 s later if still running.
    pub fn timeout(mut self, t: Duration) -> Sipp {
        self.timeout = t;
        self
    }

    /// Use TCP (`-t t1`) instead of UDP.
    pub fn tcp(mut self) -> Sipp {
        self.transport = "t1".into();
        self
    }

    /// Extra raw SIPp arguments.
    pub fn arg(mut self, a: &str) -> Sipp {
        self.extra.push(a.to_string());
        self
    }

    /// Starts SIPp in the background against `parkd`.
    pub fn spawn(&self, parkd: &Parkd) -> SippRun {
        let scenario = paths::scenario(&self.scenario);
        assert!(scenario.is_file(), "scenario {} is missing", scenario.display());
        let local_port = self.local_port.unwrap_or_else(|| parkd.ports.aux_port());
        let control_port = parkd.ports.aux_port();
        let label = format!("{}-{}", self.scenario, local_port);
        let dir = parkd.log_dir.join(&label);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {e}", dir.display());
        }
        let console = std::fs::File::create(dir.join("console.log")).unwrap_or_else(|e| panic!("console log: {e}"));
        let console2 = console.try_clone().unwrap_or_else(|e| panic!("console log: {e}"));
        let secs = self.timeout.as_secs().max(1);
        let mut cmd = Command::new("sipp");
        cmd.arg(parkd.sip_addr().to_string())
            .arg("-sf")
            .arg(&scenario)
            .args(["-s", &self.service])
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1", "-bind_local"])
            .args(["-p", &local_port.to_string(), "-cp", &control_port.to_string()])
            .args(["-t", &self.transport])
            .args(["-m", &self.calls.to_string(), "-l", &self.calls.to_string()])
            .args(["-r", "1", "-rp", "1000"])
            .args(["-d", &self.hold_ms.to_string()])
            .args(["-timeout", &format!("{secs}s"), "-timeout_error"])
            .args(["-nostdin", "-trace_err", "-trace_msg", "-trace_logs"])
            .args(["-error_file", "errors.log", "-message_file", "messages.log", "-log_file", "logs.log"])
            .args(&self.extra)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(console))
            .stderr(Stdio::from(console2));
        for (k, v) in &self.keys {
            cmd.args(["-key", k, v]);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run sipp ({e}): install it with `apt-get install sip-tester` or run scripts/test.sh")
        });
        SippRun {
            child: Some(child),
            started: Instant::now(),
            limit: self.timeout + Duration::from_secs(15),
            dir,
            label,
            local_port,
        }
    }

    /// Runs SIPp against `parkd` to completion.
    pub fn run(&self, parkd: &Parkd) -> SippOutcome {
        self.spawn(parkd).wait()
    }
}

impl SippRun {
    /// Waits for SIPp to exit (killing it by PID when it overruns its own timeout by 15 s).
    pub fn wait(mut self) -> SippOutcome {
        let code = self.wait_code();
        SippOutcome::read(code, &self.dir, &self.label, self.local_port)
    }

    /// The messages received so far, read from the live `-trace_msg` log (SIPp writes it as it goes).
    pub fn received_so_far(&self) -> Vec<String> {
        let log = std::fs::read(self.dir.join("messages.log")).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        received_messages(&log).into_iter().map(|(_, m)| m).collect()
    }

    /// Waits (at most `timeout`) until SIPp has received a message for which `pred` holds; returns it.
    pub fn wait_for_received(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.received_so_far().into_iter().find(|m| pred(m)) {
                return Some(m);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether SIPp is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn wait_code(&mut self) -> Option<i32> {
        let child = self.child.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return exit_code(status);
                }
                Ok(None) if self.started.elapsed() > self.limit => {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.child = None;
                    return None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(25)),
                Err(_) => return None,
            }
        }
    }
}

impl Drop for SippRun {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn exit_code(status: ExitStatus) -> Option<i32> {
    status.code()
}

impl SippOutcome {
    /// Collects what a finished SIPp run left in `dir` (its `-trace_*` logs and console output).
    pub fn read(code: Option<i32>, dir: &std::path::Path, label: &str, local_port: u16) -> SippOutcome {
        let read = |name: &str| std::fs::read(dir.join(name)).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        SippOutcome {
            code,
            errors: read("errors.log"),
            messages: read("messages.log"),
            logs: read("logs.log"),
            console: read("console.log"),
            dir: dir.to_path_buf(),
            label: label.to_string(),
            local_port,
        }
    }

    /// True when SIPp exited 0 (every call passed every check of the scenario).
    pub fn passed(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with SIPp's error log, console and the parkd stderr tail unless the run passed.
    pub fn assert_passed(&self, parkd: &Parkd, what: &str) {
        if !self.passed() {
            panic!(
                "{what}: SIPp {} exited {:?} (logs in {})\n--- SIPp errors (tail) ---\n{}\n--- SIPp console (tail) ---\n{}\n\
                 --- SIP messages (tail) ---\n{}\n--- parkd stderr (tail) ---\n{}",
                self.label,
                self.code,
                self.dir.display(),
                tail(&self.errors, 40),
                tail(&self.console, 15),
                tail(&self.messages, 60),
                parkd.stderr_tail(40)
            );
        }
    }

    /// The messages SIPp received, in order, each as its full text (from the `-trace_msg` log).
    pub fn received(&self) -> Vec<String> {
        received_messages(&self.messages).into_iter().map(|(_, m)| m).collect()
    }

    /// The received messages with their arrival time (seconds since midnight, from the log's timestamps).
    pub fn received_timed(&self) -> Vec<(f64, String)> {
        received_messages(&self.messages)
    }

    /// Every received request with this method, in order.
    pub fn requests(&self, method: &str) -> Vec<String> {
        let prefix = format!("{method} ");
        self.received().into_iter().filter(|m| m.starts_with(&prefix)).collect()
    }

    /// The first received response whose status line starts with `SIP/2.0 <code>`.
    pub fn response(&self, code: u16) -> Option<String> {
        let prefix = format!("SIP/2.0 {code}");
        self.received().into_iter().find(|m| m.starts_with(&prefix))
    }

    /// The first received `code` response to a request of `method` (per its CSeq).
    pub fn response_for(&self, code: u16, method: &str) -> Option<String> {
        let prefix = format!("SIP/2.0 {code}");
        self.received().into_iter().find(|m| {
            m.starts_with(&prefix) && header(m, "CSeq").and_then(|c| c.split_whitespace().nth(1)) == Some(method)
        })
    }

    /// The first received request with this method.
    pub fn request(&self, method: &str) -> Option<String> {
        let prefix = format!("{method} ");
        self.received().into_iter().find(|m| m.starts_with(&prefix))
    }
}

/// Splits a `-trace_msg` log into the received messages, each with its arrival time in seconds since
/// midnight (0.0 when the timestamp cannot be read).
pub fn received_messages(log: &str) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    for block in log.split("\n-----------------------------------------------") {
        let mut lines = block.lines();
        // First line: the timestamp remainder; second: "UDP message received [n] bytes :".
        let stamp = lines.next().map(seconds_of_day).unwrap_or(0.0);
        let Some(kind) = lines.next() else { continue };
        if kind.contains("received") {
            let body: Vec<&str> = lines.collect();
            out.push((stamp, body.join("\n").trim().to_string()));
        }
    }
    out
}

/// `... 2026-11-25 18:03:34.476728` → seconds since midnight.
fn seconds_of_day(line: &str) -> f64 {
    let Some(time) = line.split_whitespace().last() else { return 0.0 };
    let parts: Vec<f64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
    match parts.as_slice() {
        [h, m, s] => h * 3600.0 + m * 60.0 + s,
        _ => 0.0,
    }
}

/// The value of header `name` (case-insensitive, first occurrence) in a SIP message text.
pub fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    for line in message.lines().skip(1) {
        if line.trim().is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            if n.trim().eq_ignore_ascii_case(name) {
                return Some(v.trim());
            }
        }
    }
    None
}

/// The body of a SIP message text (after the first empty line).
pub fn body(message: &str) -> &str {
    message.split_once("\n\n").or_else(|| message.split_once("\r\n\r\n")).map(|(_, b)| b).unwrap_or("")
}

/// The RTP port of the first `m=audio` line of an SDP body.
pub fn sdp_audio_port(sdp: &str) -> Option<u16> {
    sdp.lines().find_map(|l| l.trim().strip_prefix("m=audio ")).and_then(|rest| rest.split_whitespace().next()).and_then(|p| p.parse().ok())
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A UDP port on 127.0.0.1 that is free right now (bound to port 0, then released), for a SIPp instance whose
/// address must go into parkd's configuration before parkd starts.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).unwrap_or_else(|e| panic!("no free UDP port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "----------------------------------------------- 2026-11-25 18:03:34.476728\n\
UDP message sent (10 bytes):\n\nINVITE sip:700@127.0.0.1:5060 SIP/2.0\nCall-ID: a\n\n\
----------------------------------------------- 2026-11-25 18:03:34.476828\n\
UDP message received [232] bytes :\n\nSIP/2.0 200 OK\nPark-Orbit: 701\nContent-Type: application/sdp\n\n\
v=0\nc=IN IP4 127.0.0.1\nm=audio 20012 RTP/AVP 0\n\n\
----------------------------------------------- 2026-11-25 18:03:35.0\n\
UDP message received [100] bytes :\n\nBYE sip:bob@127.0.0.1 SIP/2.0\nCall-ID: a\n\n";

    fn outcome() -> SippOutcome {
        SippOutcome {
            code: Some(0),
            errors: String::new(),
            messages: LOG.to_string(),
            logs: String::new(),
            console: String::new(),
            dir: PathBuf::new(),
            label: "t".into(),
            local_port: 1,
        }
    }

    #[test]
    fn message_log_is_split_into_received_messages() {
        let o = outcome();
        let received = o.received();
        assert_eq!(received.len(), 2, "{received:?}");
        let ok = o.response(200).unwrap_or_default();
        assert_eq!(header(&ok, "park-orbit"), Some("701"));
        assert_eq!(sdp_audio_port(body(&ok)), Some(20012));
        assert!(o.request("BYE").is_some());
        assert!(o.request("INVITE").is_none(), "sent messages are not received ones");
        assert!(o.response(486).is_none());
        let timed = o.received_timed();
        assert!((timed[0].0 - (18.0 * 3600.0 + 3.0 * 60.0 + 34.476828)).abs() < 1e-6, "{timed:?}");
        assert!((timed[1].0 - timed[0].0 - 0.523172).abs() < 1e-6);
        assert_eq!(o.requests("BYE").len(), 1);
    }
}
