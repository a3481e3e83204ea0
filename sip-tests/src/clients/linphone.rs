//! [`Linphone`]: a real softphone (linphone 5.1, Debian `linphone-cli`: `linphonec`) for end-to-end tests, one
//! process per phone, driven by its console commands on stdin, with no sound card: audio comes from and goes
//! to WAV files (`soundcard use files`, `play <wav>`, `record <wav>`).
//!
//! Each phone gets a temporary directory used as its `HOME` (liblinphone keeps its database under
//! `~/.local/share/linphone`) holding its rc file (see [`rc_text`]: SIP over TLS only, on a port of the test's
//! block, SDES SRTP mandatory, G.711 only, trusting the test CA), `tone.wav` (what it sends) and the
//! recordings (`rec-<n>.wav`, one per call, set before each call). Its console output goes to
//! `linphone-<name>.out` and liblinphone's log (`-d 6`: every SIP message with its SDP) to
//! `linphone-<name>.log`, both in parkd's log directory.
//!
//! linphone 5.1 facts this relies on (measured):
//! - liblinphone migrates old rc files to IPv6 (`use_ipv6=1`) unless `ipv6_migration_done=1`; without
//!   `[rtp] bind_address` it advertises the address of the default route (not loopback) in SDP, and without
//!   `guess_hostname=0` its From names that address too. All three are set: every packet stays on 127.0.0.1.
//! - The console prints `Call <id> with <uri> connected.` / `Media streams established` / `Call <id> with
//!   <uri> ended (<reason>).` as calls change state; `transfer <uri>` sends a REFER for the current call.
//! - `MSFileRec` writes the WAV header when the call's audio stops: read a recording after the call ended.
//! - Console lines reach a pipe only when stdio flushes: it runs under `stdbuf -oL` (line-buffered; stdbuf
//!   execs linphonec, so the child's PID is linphonec's).
//! - After a blind transfer, the console prints `The distant endpoint ... has been transfered` on the final
//!   NOTIFY, then linphone hangs up by itself (`Call <id> ... ended`).
//! - `quit` ends it cleanly (calls hung up, files closed).
//!
//! The process is stopped by PID when the guard drops (after `quit`); on a failing test its directory is
//! copied to the test's log directory first.

use crate::harness::parkd::Parkd;
use crate::media::audio_check;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Length of the phone's tone file (its microphone).
pub const TONE_SECONDS: u32 = 120;
/// Longest wait for a call to change state.
pub const PHONE_WAIT: Duration = Duration::from_secs(20);

/// The rc file of a phone: SIP over TLS on `tls_port` (UDP and TCP off), RTP on `rtp_port` (RTCP on the
/// next), everything on 127.0.0.1, SDES SRTP mandatory, PCMU/PCMA only, the server certificate checked
/// against `ca_file`.
pub fn rc_text(name: &str, tls_port: u16, rtp_port: u16, ca_file: &Path) -> String {
    format!(
        "# linphone 5.1 rc file written by sip-tests/src/clients/linphone.rs for phone {name}.\n\
         [sip]\n\
         sip_port=0\n\
         sip_tcp_port=0\n\
         sip_tls_port={tls_port}\n\
         use_ipv6=0\n\
         ipv6_migration_done=1\n\
         guess_hostname=0\n\
         contact=\"{name}\" <sip:{name}@127.0.0.1>\n\
         media_encryption=srtp\n\
         media_encryption_mandatory=1\n\
         srtp_crypto_suites=AES_CM_128_HMAC_SHA1_80,AES_CM_128_HMAC_SHA1_32\n\
         root_ca={ca}\n\
         verify_server_certs=1\n\
         verify_server_cn=1\n\
         [rtp]\n\
         audio_rtp_port={rtp_port}\n\
         bind_address=127.0.0.1\n\
         [sound]\n\
         echocancellation=0\n\
         [video]\n\
         capture=0\n\
         display=0\n\
         automatically_initiate=0\n\
         automatically_accept=0\n\
         [audio_codec_0]\n\
         mime=PCMU\n\
         rate=8000\n\
         channels=1\n\
         enabled=1\n\
         [audio_codec_1]\n\
         mime=PCMA\n\
         rate=8000\n\
         channels=1\n\
         enabled=1\n",
        ca = ca_file.display()
    )
}

#[derive(Default)]
struct Console {
    lines: Vec<String>,
    closed: bool,
}

type Shared = Arc<(Mutex<Console>, Condvar)>;

fn lock(m: &Mutex<Console>) -> MutexGuard<'_, Console> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running linphonec.
pub struct Linphone {
    pub name: String,
    pub tls_port: u16,
    pub tone_hz: f64,
    stdin: Option<ChildStdin>,
    console: Shared,
    child: Child,
    log_path: PathBuf,
    out_path: PathBuf,
    keep_dir: PathBuf,
    recordings: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

/// Panics with an install hint if the `linphonec` binary is missing.
pub fn require_linphone() {
    if Command::new("linphonec").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        panic!("linphonec not found: install the Debian package linphone-cli (bash scripts/test.sh does it as root)");
    }
}

impl Linphone {
    /// Starts phone `name` sending a `tone_hz` tone, trusting `ca_file` for TLS, with its SIP (TLS) and RTP
    /// ports taken from `parkd`'s port plan (three: TLS, RTP, RTCP); waits until its console is ready.
    pub fn start(parkd: &Parkd, name: &str, tone_hz: f64, ca_file: &Path) -> Linphone {
        require_linphone();
        let tls_port = parkd.ports.aux_port();
        let rtp_port = parkd.ports.aux_port();
        assert_eq!(parkd.ports.aux_port(), rtp_port + 1, "aux ports are consecutive (RTCP)");
        let dir = tempfile::Builder::new()
            .prefix(&format!("parkd-linphone-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let path = dir.path();
        let db_dir = path.join(".local/share/linphone");
        std::fs::create_dir_all(&db_dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", db_dir.display()));
        audio_check::write_tone_wav(&path.join("tone.wav"), tone_hz, TONE_SECONDS);
        let rc = path.join("linphonerc");
        std::fs::write(&rc, rc_text(name, tls_port, rtp_port, ca_file)).unwrap_or_else(|e| panic!("cannot write {}: {e}", rc.display()));
        let log_path = parkd.log_dir.join(format!("linphone-{name}.log"));
        let out_path = parkd.log_dir.join(format!("linphone-{name}.out"));
        let err = File::create(parkd.log_dir.join(format!("linphone-{name}.stderr"))).unwrap_or_else(|e| panic!("cannot create a log file: {e}"));
        // Its console prints go through stdio: line-buffered by stdbuf (coreutils), else a pipe holds them back.
        let mut child = Command::new("stdbuf")
            .arg("-oL")
            .arg("linphonec")
            .arg("-c")
            .arg(&rc)
            .arg("-d")
            .arg("6")
            .arg("-l")
            .arg(&log_path)
            .env("HOME", path)
            .current_dir(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start linphonec: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let console: Shared = Arc::new((Mutex::new(Console::default()), Condvar::new()));
        let out_file = File::create(&out_path).unwrap_or_else(|e| panic!("cannot create {}: {e}", out_path.display()));
        if let Some(stdout) = stdout {
            let shared = Arc::clone(&console);
            std::thread::spawn(move || read_console(stdout, out_file, &shared));
        }
        let keep_dir = parkd.log_dir.join(format!("linphone-{name}"));
        let phone = Linphone {
            name: name.to_string(),
            tls_port,
            tone_hz,
            stdin,
            console,
            child,
            log_path,
            out_path,
            keep_dir,
            recordings: Vec::new(),
            dir,
        };
        phone.send("soundcard use files");
        phone.wait_output("Using wav files instead of soundcard");
        phone.send(&format!("play {}", phone.dir.path().join("tone.wav").display()));
        phone
    }

    /// Writes one console command.
    pub fn send(&self, command: &str) {
        let Some(mut stdin) = self.stdin.as_ref() else { panic!("linphone {}: stdin closed", self.name) };
        if let Err(e) = writeln!(stdin, "{command}").and_then(|()| stdin.flush()) {
            panic!("linphone {}: cannot send `{command}`: {e}; output:\n{}", self.name, self.output_tail(30));
        }
    }

    /// Waits (up to [`PHONE_WAIT`]) for a console line containing `text` and returns it; panics otherwise.
    pub fn wait_output(&self, text: &str) -> String {
        self.wait_output_after(0, text)
    }

    /// [`Linphone::wait_output`] counting only lines from number `from` on (see [`Linphone::output_len`]).
    pub fn wait_output_after(&self, from: usize, text: &str) -> String {
        let (m, cvar) = &*self.console;
        let deadline = Instant::now() + PHONE_WAIT;
        let mut console = lock(m);
        loop {
            if let Some(line) = console.lines.iter().skip(from).find(|l| l.contains(text)) {
                return line.clone();
            }
            let now = Instant::now();
            if console.closed || now >= deadline {
                drop(console);
                panic!(
                    "linphone {}: no console line with {text:?} within {PHONE_WAIT:?}; output:\n{}\nlog:\n{}",
                    self.name,
                    self.output_tail(30),
                    self.log_tail(40)
                );
            }
            console = cvar.wait_timeout(console, deadline - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Number of console lines so far (a mark for [`Linphone::wait_output_after`]).
    pub fn output_len(&self) -> usize {
        lock(&self.console.0).lines.len()
    }

    /// Calls `uri` (recording what it hears to a new file) and waits until the media streams run.
    pub fn call(&mut self, uri: &str) {
        let rec = self.dir.path().join(format!("rec-{}.wav", self.recordings.len() + 1));
        self.send(&format!("record {}", rec.display()));
        self.recordings.push(rec);
        let mark = self.output_len();
        self.send(&format!("call {uri}"));
        self.wait_output_after(mark, "Media streams established");
    }

    /// Blind-transfers the current call to `uri` (REFER).
    pub fn transfer(&self, uri: &str) {
        self.send(&format!("transfer {uri}"));
    }

    /// Hangs up the current call.
    pub fn terminate(&self) {
        self.send("terminate");
    }

    /// Waits for the console line saying a call ended and returns it.
    pub fn wait_call_ended(&self) -> String {
        self.wait_output("> ended (")
    }

    /// The recordings of received audio, one per [`Linphone::call`], oldest first.
    pub fn recordings(&self) -> &[PathBuf] {
        &self.recordings
    }

    /// The samples of recording `n` (0: the first call's), waiting up to `wait` for linphone to close it.
    pub fn recording(&self, n: usize, wait: Duration) -> Vec<i16> {
        let Some(path) = self.recordings.get(n) else { panic!("linphone {}: no recording #{n}", self.name) };
        read_recording(path, wait)
    }

    /// liblinphone's whole log (SIP messages with their SDP at `-d 6`).
    pub fn log_all(&self) -> String {
        std::fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The last `lines` lines of liblinphone's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_all(), lines)
    }

    /// The last `lines` lines of the console output.
    pub fn output_tail(&self, lines: usize) -> String {
        tail(&std::fs::read_to_string(&self.out_path).unwrap_or_default(), lines)
    }
}

/// Reads a WAV file written by mediastreamer's `MSFileRec` (8 kHz mono 16-bit): its header is written when the
/// call's audio stops, and its `data` size counts the 44-byte header too (a strict reader such as hound
/// refuses the file), so the samples are read from after the header to the end of the file.
pub fn read_recording(path: &Path, wait: Duration) -> Vec<i16> {
    let deadline = Instant::now() + wait;
    loop {
        let bytes = std::fs::read(path).unwrap_or_default();
        let header = bytes.get(..44).unwrap_or_default();
        let le16 = |at: usize| header.get(at..at + 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
        let le32 = |at: usize| header.get(at..at + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if header.starts_with(b"RIFF") && header.get(36..40) == Some(b"data") && le32(40) > 0 {
            let format = (le16(20), le16(22), le32(24), le16(34));
            assert_eq!(format, (1, 1, audio_check::SAMPLE_RATE, 16), "{}: expected 8 kHz mono 16-bit PCM", path.display());
            let data = bytes.get(44..).unwrap_or_default();
            return data.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
        }
        assert!(Instant::now() < deadline, "{}: no finished WAV within {wait:?} ({} bytes)", path.display(), bytes.len());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tail(text: &str, lines: usize) -> String {
    let kept: Vec<&str> = text.lines().collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

fn read_console(stdout: std::process::ChildStdout, mut out_file: File, shared: &Shared) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                let _ = writeln!(out_file, "{line}");
                let (m, cvar) = &**shared;
                lock(m).lines.push(line);
                cvar.notify_all();
            }
        }
    }
    let (m, cvar) = &**shared;
    lock(m).closed = true;
    cvar.notify_all();
}

impl Linphone {
    /// Ends linphonec with `quit` (calls hung up, recordings closed) and waits up to 5 s for it to exit (then
    /// stops it by PID). The recordings stay readable until the guard drops.
    pub fn quit(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "quit").and_then(|()| stdin.flush());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        crate::harness::process::stop(&mut self.child, Duration::from_secs(2));
    }
}

impl Drop for Linphone {
    fn drop(&mut self) {
        self.quit();
        if std::thread::panicking() {
            let _ = copy_dir(self.dir.path(), &self.keep_dir);
            eprintln!(
                "---- linphone {} ({}; rc and recordings kept in {}) ----\n{}\n---- end of linphone {} ----",
                self.name,
                self.log_path.display(),
                self.keep_dir.display(),
                self.output_tail(40),
                self.name
            );
        }
    }
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
