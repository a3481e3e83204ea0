//! [`Baresip`]: a real softphone (baresip 1.0, Debian `baresip-core`) for end-to-end tests, one process per
//! phone, on its own loopback address, driven through `ctrl_tcp`, with no audio device.
//!
//! Each phone gets a temporary config directory (`baresip -f DIR`) holding:
//! - `config` (see [`config_text`]): SIP over UDP on the phone's own address (`sip_listen`), the G.711 codec,
//!   `aufile` as microphone (a pure tone WAV written by the test), `aubridge` as a dead-end speaker, the
//!   `sndfile` filter recording what the phone decodes from the network, and `ctrl_tcp` for commands;
//! - `accounts`: one account, no registrar (`regint=0`), manual answer;
//! - `tone.wav` and `rec/` (the recordings: `dump-<YYYY-MM-DD-hh-mm-ss>-dec.wav` per call, named by the second
//!   the call's audio started: keep calls of one phone at least a second apart).
//!
//! baresip 1.0 facts this relies on (measured):
//! - `net_interface` in the config file is ignored; `-n <ip>` on the command line pins the address written in
//!   SDP and used for RTP (otherwise it picks the first non-loopback interface).
//! - `aufile` hangs up the call when its file ends: the tone lasts [`TONE_SECONDS`].
//! - `sndfile` writes the WAV header when the call's audio stops; read recordings after `CALL_CLOSED`.
//! - SIGTERM ends it cleanly (calls hung up, files closed).
//!
//! The process is killed by PID when the guard drops; the directory is removed then (on a failing test the
//! recordings and config are first copied to the test's log directory).

use crate::media::audio_check;
use crate::clients::baresip_ctrl::{CtrlClient, PhoneEvent};
use crate::harness::parkd::Parkd;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Length of each phone's tone file (baresip 1.0 ends the call when it runs out).
pub const TONE_SECONDS: u32 = 120;
/// Longest wait for a phone to start, answer a command, or report a call event.
pub const PHONE_WAIT: Duration = Duration::from_secs(20);

/// The baresip configuration for a phone (baresip 1.0 keys; comments on their own lines).
pub fn config_text(ip: Ipv4Addr, sip_port: u16, ctrl_port: u16, dir: &Path, name: &str) -> String {
    let dir = dir.display();
    format!(
        "# baresip 1.0 configuration written by sip-tests/src/clients/baresip.rs for phone {name}.\n\
         poll_method\t\tepoll\n\
         # SIP over UDP on this phone's own loopback address (no registrar: see accounts).\n\
         sip_listen\t\t{ip}:{sip_port}\n\
         # RTP on the address given by -n (the net_interface key is ignored by 1.0), ports above the e2e plan.\n\
         rtp_ports\t\t40000-49999\n\
         call_max_calls\t\t4\n\
         audio_path\t\t{dir}\n\
         # Microphone: a pure tone from a WAV (8 kHz mono S16). aufile ends the call at the end of the file.\n\
         audio_source\t\taufile,{dir}/tone.wav\n\
         # Speaker and ringer: an aubridge device nobody reads, i.e. no sound card needed.\n\
         audio_player\t\taubridge,{name}-speaker\n\
         audio_alert\t\taubridge,{name}-ringer\n\
         module_path\t\t/usr/lib/baresip/modules\n\
         # G.711 only (PCMU, PCMA).\n\
         module\t\t\tg711.so\n\
         module\t\t\taufile.so\n\
         module\t\t\taubridge.so\n\
         # Records decoded (received) audio per call to snd_path/dump-<time>-dec.wav (and -enc.wav, sent).\n\
         module\t\t\tsndfile.so\n\
         snd_path\t\t{dir}/rec\n\
         module_app\t\taccount.so\n\
         # menu provides the commands (dial, accept, hangup, transfer...) that ctrl_tcp runs.\n\
         module_app\t\tmenu.so\n\
         module_app\t\tctrl_tcp.so\n\
         ctrl_tcp_listen\t\t{ip}:{ctrl_port}\n"
    )
}

/// The phone's one account: its AOR on its own address, no registration, calls answered by `accept`.
pub fn account_line(name: &str, ip: Ipv4Addr, sip_port: u16) -> String {
    format!("<sip:{name}@{ip}:{sip_port}>;regint=0;answermode=manual\n")
}

/// Media encryption and TLS trust for a phone ([`Baresip::start_secure`]).
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// The account's `mediaenc` (`srtp`: SDES offered, plain accepted; `srtp-mand`: SDES only, `RTP/SAVP`
    /// offered); `None`: plain RTP, the srtp module not loaded.
    pub mediaenc: Option<&'static str>,
    /// `sip_cafile`: the CA (PEM) the phone trusts for SIP over TLS.
    pub ca_file: Option<PathBuf>,
    /// `-s`: SIP messages (with their SDP) written to the phone's log.
    pub sip_trace: bool,
}

impl Security {
    /// The config lines for these settings (appended to [`config_text`]).
    pub fn config_lines(&self) -> String {
        let mut text = String::new();
        if let Some(ca) = &self.ca_file {
            text.push_str(&format!("# Trusted CA for SIP over TLS.\nsip_cafile\t\t{}\n", ca.display()));
        }
        if self.mediaenc.is_some() {
            text.push_str("# SDES SRTP (RFC 4568), selected per account by mediaenc.\nmodule\t\t\tsrtp.so\n");
        }
        text
    }

    /// The account parameters for these settings (appended to [`account_line`]).
    pub fn account_params(&self) -> String {
        self.mediaenc.map(|m| format!(";mediaenc={m}")).unwrap_or_default()
    }
}

/// A running baresip phone.
pub struct Baresip {
    pub name: String,
    pub ip: Ipv4Addr,
    pub sip_port: u16,
    pub tone_hz: f64,
    ctrl: Option<CtrlClient>,
    child: Child,
    log_path: PathBuf,
    keep_dir: PathBuf,
    dir: tempfile::TempDir,
}

/// Panics with an install hint if the `baresip` binary is missing.
pub fn require_baresip() {
    if Command::new("baresip").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        panic!("baresip not found: install the Debian package baresip-core (bash scripts/test.sh does it as root)");
    }
}

impl Baresip {
    /// Starts phone `name` on `ip` sending a `tone_hz` tone, with its SIP and ctrl_tcp ports taken from
    /// `parkd`'s port plan (three each: SIP, SIP+1 for baresip's TLS listener, ctrl_tcp) and its log in `parkd`'s log directory; waits until ctrl_tcp answers.
    pub fn start(parkd: &Parkd, name: &str, ip: Ipv4Addr, tone_hz: f64) -> Baresip {
        Baresip::start_secure(parkd, name, ip, tone_hz, &Security::default())
    }

    /// [`Baresip::start`] with media encryption and a trusted CA ([`Security`]).
    pub fn start_secure(parkd: &Parkd, name: &str, ip: Ipv4Addr, tone_hz: f64, security: &Security) -> Baresip {
        require_baresip();
        // baresip listens for SIP on UDP and TCP at sip_listen's port and for SIP over TLS on the next port.
        let sip_port = parkd.ports.aux_port();
        let tls_port = parkd.ports.aux_port();
        assert_eq!(tls_port, sip_port + 1, "aux ports are consecutive");
        let ctrl_port = parkd.ports.aux_port();
        let dir = tempfile::Builder::new()
            .prefix(&format!("parkd-baresip-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let path = dir.path();
        std::fs::create_dir_all(path.join("rec")).unwrap_or_else(|e| panic!("cannot create rec dir: {e}"));
        audio_check::write_tone_wav(&path.join("tone.wav"), tone_hz, TONE_SECONDS);
        write(&path.join("config"), &(config_text(ip, sip_port, ctrl_port, path, name) + &security.config_lines()));
        let account = account_line(name, ip, sip_port).replace('\n', &(security.account_params() + "\n"));
        write(&path.join("accounts"), &account);
        let log_path = parkd.log_dir.join(format!("baresip-{name}.log"));
        let log = File::create(&log_path).unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let log2 = log.try_clone().unwrap_or_else(|e| panic!("cannot clone log handle: {e}"));
        let mut command = Command::new("baresip");
        if security.sip_trace {
            command.arg("-s");
        }
        let child = command
            .arg("-f")
            .arg(path)
            .arg("-n")
            .arg(ip.to_string())
            .current_dir(path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start baresip: {e}"));
        let keep_dir = parkd.log_dir.join(format!("baresip-{name}"));
        let mut phone =
            Baresip { name: name.to_string(), ip, sip_port, tone_hz, ctrl: None, child, log_path, keep_dir, dir };
        phone.connect_ctrl(SocketAddr::from((ip, ctrl_port)));
        phone
    }

    fn connect_ctrl(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + PHONE_WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("baresip {} exited ({status}) at start; log:\n{}", self.name, self.log_tail(40));
            }
            if let Ok(c) = CtrlClient::connect(addr, Duration::from_millis(500)) {
                self.ctrl = Some(c);
                return;
            }
            if Instant::now() >= deadline {
                panic!("baresip {} did not open ctrl_tcp {addr} within {PHONE_WAIT:?}; log:\n{}", self.name, self.log_tail(40));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ctrl(&self) -> &CtrlClient {
        match &self.ctrl {
            Some(c) => c,
            None => panic!("baresip {}: ctrl_tcp not connected", self.name),
        }
    }

    /// This phone's address of record, e.g. `sip:b@127.0.0.12:20001`.
    pub fn aor(&self) -> String {
        format!("sip:{}@{}:{}", self.name, self.ip, self.sip_port)
    }

    /// Runs a ctrl_tcp command and returns its reply data; panics if baresip refuses it or does not answer.
    pub fn command(&self, command: &str, params: &str) -> String {
        match self.ctrl().command(command, params, PHONE_WAIT) {
            Ok(data) => data,
            Err(e) => panic!("baresip {}: `{command} {params}` failed: {e}; log:\n{}", self.name, self.log_tail(30)),
        }
    }

    /// Dials `uri`.
    pub fn dial(&self, uri: &str) {
        self.command("dial", uri);
    }

    /// Answers the ringing call.
    pub fn accept(&self) {
        self.command("accept", "");
    }

    /// Hangs up the current call.
    pub fn hangup(&self) {
        self.command("hangup", "");
    }

    /// Blind-transfers the current call to `uri` (REFER).
    pub fn transfer(&self, uri: &str) {
        self.command("transfer", uri);
    }

    /// Waits for event `kind` whose peer URI contains `peer` (empty: any); panics after [`PHONE_WAIT`].
    pub fn wait_event(&self, kind: &str, peer: &str) -> PhoneEvent {
        match self.ctrl().wait_event(kind, PHONE_WAIT, |e| e.peer_uri.contains(peer)) {
            Some(ev) => ev,
            None => {
                let seen: Vec<String> = self.ctrl().events().iter().map(|e| format!("{} {} {}", e.kind, e.peer_uri, e.param)).collect();
                panic!(
                    "baresip {}: no {kind} event with peer {peer:?} within {PHONE_WAIT:?}; events:\n  {}\nlog:\n{}",
                    self.name,
                    seen.join("\n  "),
                    self.log_tail(30)
                )
            }
        }
    }

    /// The recordings of received audio, one per call, oldest first.
    pub fn recordings(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("rec"))
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.to_string_lossy().ends_with("-dec.wav"));
        files.sort();
        files
    }

    /// This phone's whole log (status-line carriage returns turned into newlines).
    pub fn log_all(&self) -> String {
        std::fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).replace('\r', "\n")).unwrap_or_default()
    }

    /// The last `lines` lines of this phone's log (status-line carriage returns turned into newlines).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).replace('\r', "\n")).unwrap_or_default();
        let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.contains("audio=")).collect();
        kept[kept.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.ctrl = None;
        crate::harness::process::stop(&mut self.child, Duration::from_secs(3));
        if std::thread::panicking() {
            let _ = copy_dir(self.dir.path(), &self.keep_dir);
            eprintln!(
                "---- baresip {} ({}; config and recordings kept in {}) ----\n{}\n---- end of baresip {} ----",
                self.name,
                self.log_path.display(),
                self.keep_dir.display(),
                self.log_tail(40),
                self.name
            );
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if entry.file_name() != "tone.wav" {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
