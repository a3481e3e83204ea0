//! The media io thread: one UDP socket per even port, one `mio::Poll`, one std thread
//! (`parkd-media`) driving the sans-IO [`MediaPlane`].
//!
//! Besides, ONE socket on the block's RTCP port (the odd port above its first even port): the RTCP of every
//! leg that does not multiplex it on the RTP port (RFC 3605 `a=rtcp:`, see `media::plane_rtcp`).
//!
//! Loop: sleep until the plane's next pacer deadline, a readable socket or a command; apply
//! commands; drain readable sockets into ONE reused buffer and send what the relay forwards;
//! then send every hold packet due. A hold packet (12-byte header + shared payload slice) is
//! assembled in a reused stack buffer: no heap allocation per packet. Send errors are counted.
//!
//! Hold packets go out through the [`super::hold_sender::HoldSend`] chosen by `rtp_sender` (`auto`: a
//! raw socket, else io_uring, else `sendto`/`sendmmsg`), under one policy: a packet refused by a full
//! buffer is retried once at the start of the next turn, then dropped and counted as `would_block`; any
//! other refusal is dropped and counted as a send error ([`super::hold_sender`]). Relayed RTP always
//! uses `send_to`, classified the same way but never retried (live audio is not worth a late packet).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};

use super::clock::Clock;
use super::deadline_timer::DeadlineTimer;
use super::dual_stack;
use super::hold_sender::{self, refusal_of, HoldOut, OpenError, PortSockets, Refusal, Slot};
use super::media_load::{LoadCell, LoadMeter};
use super::wake_gate::WakeGate;
use crate::config::RtpSender;
use crate::media::{HoldBatch, MediaCommand, MediaPlane, MediaReport, MediaStats};

const WAKER: Token = Token(usize::MAX);
/// The block's RTCP socket (see `media::plane_rtcp`).
const RTCP: Token = Token(usize::MAX - 1);
/// The pacer's deadline timer (see `deadline_timer`).
const TIMER: Token = Token(usize::MAX - 2);
/// Largest datagram we receive (RTP over UDP stays well under an Ethernet MTU).
const RECV_BUF: usize = 2048;
/// Upper bound on one sleep when no hold stream is scheduled, to refresh the stats snapshot.
const IDLE_WAKE: Duration = Duration::from_millis(500);

/// Why the media thread could not start.
#[derive(Debug, thiserror::Error)]
pub enum MediaIoError {
    #[error("RTP port range {lo}-{hi} contains no even port")]
    NoEvenPort { lo: u16, hi: u16 },
    #[error("no media thread to start: the shard plan has no block of RTP ports")]
    NoShards,
    #[error("cannot bind RTP port {ip}:{port}: {source}")]
    Bind { ip: IpAddr, port: u16, source: io::Error },
    #[error("cannot bind the RTCP port {ip}:{port} (the odd port above the block's first RTP port): {source}")]
    BindRtcp { ip: IpAddr, port: u16, source: io::Error },
    #[error("cannot set up the media poller: {0}")]
    Poll(#[source] io::Error),
    #[error("cannot spawn the parkd-media thread: {0}")]
    Spawn(#[source] io::Error),
    #[error("rtp_sender = \"raw\" but parkd cannot open a raw socket: {0} (it needs CAP_NET_RAW: run as root, `setcap cap_net_raw+ep parkd`, or AmbientCapabilities=CAP_NET_RAW); use rtp_sender = \"auto\"")]
    Raw(#[source] io::Error),
    #[error("rtp_sender = \"io_uring\" but io_uring is unavailable: {0} (kernel.io_uring_disabled, a seccomp profile such as Docker's default, or a non-Linux kernel can forbid it); use rtp_sender = \"auto\" or \"syscalls\"")]
    IoUring(#[source] io::Error),
}

/// Io-side counters (the plane's own counters are in [`MediaStats`]).
#[derive(Debug, Default)]
pub struct IoCounters {
    /// Packets dropped because a send failed for good, or had no socket (see [`super::hold_sender`]).
    pub send_errors: AtomicU64,
    /// Packets dropped because a buffer was full (`EAGAIN`, `ENOBUFS`): relayed packets at once, hold
    /// packets when refused again on the next turn.
    pub send_would_block: AtomicU64,
    /// `recv_from` failures other than `WouldBlock`.
    pub recv_errors: AtomicU64,
}

/// Handle to the running media thread. Dropping it stops the thread and joins it.
pub struct MediaHandle {
    tx: Sender<MediaCommand>,
    waker: Arc<Waker>,
    gate: Arc<WakeGate>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    ports: Vec<u16>,
    rtcp_port: u16,
    counters: Arc<IoCounters>,
    stats: Arc<Mutex<MediaStats>>,
    load: Arc<LoadCell>,
}

impl MediaHandle {
    /// Queues a command for the media plane and wakes the thread. A command sent after the thread
    /// died is logged and dropped.
    pub fn send(&self, cmd: MediaCommand) {
        if self.queue(cmd) {
            self.wake();
        }
    }

    /// Queues a command without waking the thread; call [`MediaHandle::wake`] once after a batch (one
    /// eventfd write per batch instead of one per command). Returns false when the thread is gone.
    pub fn queue(&self, cmd: MediaCommand) -> bool {
        if self.tx.send(cmd).is_err() {
            tracing::warn!("media thread is gone; command dropped");
            return false;
        }
        true
    }

    /// Has the media thread apply queued commands: wakes it unless it wakes within
    /// [`WakeGate::SLACK`] on its own (its pacer's next slot), which saves a syscall and a
    /// cross-core wake-up per batch while calls are on hold.
    pub fn wake(&self) {
        if !self.gate.must_wake(std::time::Instant::now()) {
            return;
        }
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "cannot wake the media thread");
        }
    }

    /// The bound RTP ports (every even port of the range), ascending.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The bound RTCP port (see the module doc).
    pub fn rtcp_port(&self) -> u16 {
        self.rtcp_port
    }

    /// Io-side counters.
    pub fn io_counters(&self) -> &IoCounters {
        &self.counters
    }

    /// The thread's measured load, smoothed (at most ~0.1 s old; see [`super::media_load`]).
    pub fn load(&self) -> crate::core::admission::capacity::MediaLoad {
        self.load.load()
    }

    /// The plane's counters as of the thread's last loop iteration (at most ~0.5 s old).
    pub fn stats(&self) -> MediaStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }
}

impl Drop for MediaHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("media thread panicked");
            }
        }
    }
}

/// Binds one non-blocking UDP socket per even port of `ports` on `bind_ip`, and runs `plane` on
/// a thread named `parkd-media`. `legs_per_port` is `[server] rtp_legs_per_port`: above 1, hold
/// packets are sent with one `sendmmsg` per port and pacer slot. `sender` is `[server]
/// rtp_sender`: the io_uring ring is set up on the media thread before this returns, so
/// `RtpSender::IoUring` fails here ([`MediaIoError::IoUring`]) when the kernel refuses it.
pub fn spawn(bind_ip: IpAddr, ports: RangeInclusive<u16>, legs_per_port: u16, sender: RtpSender, plane: MediaPlane) -> Result<MediaHandle, MediaIoError> {
    spawn_reporting(bind_ip, ports, legs_per_port, sender, plane, None)
}

/// [`spawn`], with the plane's reports to the core (a parked caller's key presses, [`MediaReport`]) sent on
/// `reports` as they come (an unbounded send never blocks the media thread; reports are rare).
pub fn spawn_reporting(
    bind_ip: IpAddr,
    ports: RangeInclusive<u16>,
    legs_per_port: u16,
    sender: RtpSender,
    plane: MediaPlane,
    reports: Option<tokio::sync::mpsc::UnboundedSender<MediaReport>>,
) -> Result<MediaHandle, MediaIoError> {
    let (lo, hi) = (*ports.start(), *ports.end());
    let even: Vec<u16> = ports.filter(|p| p % 2 == 0).collect();
    let Some(&base) = even.first() else { return Err(MediaIoError::NoEvenPort { lo, hi }) };
    let poll = Poll::new().map_err(MediaIoError::Poll)?;
    let mut sockets = Vec::with_capacity(even.len());
    for (i, port) in even.iter().enumerate() {
        // `[::]`: one dual-stack socket per port serves IPv4 and IPv6 legs (see `dual_stack`).
        let mut sock = dual_stack::bind_udp(SocketAddr::new(bind_ip, *port))
            .and_then(|s| {
                s.set_nonblocking(true)?;
                Ok(UdpSocket::from_std(s))
            })
            .map_err(|source| MediaIoError::Bind { ip: bind_ip, port: *port, source })?;
        poll.registry().register(&mut sock, Token(i), Interest::READABLE).map_err(MediaIoError::Poll)?;
        sockets.push(sock);
    }
    let rtcp_port = crate::park::shard_plan::rtcp_port_of(base);
    let mut rtcp = dual_stack::bind_udp(SocketAddr::new(bind_ip, rtcp_port))
        .and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(UdpSocket::from_std(s))
        })
        .map_err(|source| MediaIoError::BindRtcp { ip: bind_ip, port: rtcp_port, source })?;
    poll.registry().register(&mut rtcp, RTCP, Interest::READABLE).map_err(MediaIoError::Poll)?;
    let mut plane = plane;
    plane.set_rtcp_port(rtcp_port);
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(MediaIoError::Poll)?);
    let timer = DeadlineTimer::new(poll.registry(), TIMER).map_err(MediaIoError::Poll)?;
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(IoCounters::default());
    let stats = Arc::new(Mutex::new(MediaStats::default()));
    let gate = Arc::new(WakeGate::new());
    let load = Arc::new(LoadCell::default());
    let io = MediaIo { gate: gate.clone(), poll, timer, sockets, rtcp, rtcp_port, base, bind_ip, rx, stop: stop.clone(), counters: counters.clone(), stats: stats.clone(), load: load.clone(), plane, reports };
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let shared_ports = legs_per_port > 1;
    let thread = std::thread::Builder::new()
        .name("parkd-media".into())
        .spawn(move || {
            // The RTCP socket last: fixed file `sockets.len()` (see `slot`).
            let fds: Vec<_> = io.sockets.iter().chain([&io.rtcp]).map(|s| s.as_raw_fd()).collect();
            match hold_sender::open(sender, bind_ip, &fds, shared_ports) {
                Ok(hold) => {
                    let _ = ready_tx.send(Ok(()));
                    io.run(hold);
                }
                Err(OpenError::Raw(e)) => {
                    let _ = ready_tx.send(Err(MediaIoError::Raw(e)));
                }
                Err(OpenError::IoUring(e)) => {
                    let _ = ready_tx.send(Err(MediaIoError::IoUring(e)));
                }
            }
        })
        .map_err(MediaIoError::Spawn)?;
    let started = ready_rx.recv().map_err(|_| MediaIoError::Spawn(io::Error::other("the media thread died while starting")));
    if let Err(e) = started.and_then(|r| r) {
        let _ = thread.join();
        return Err(e);
    }
    Ok(MediaHandle { tx, waker, gate, stop, thread: Some(thread), ports: even, rtcp_port, counters, stats, load })
}

/// State owned by the media thread.
struct MediaIo {
    gate: Arc<WakeGate>,
    poll: Poll,
    /// Wakes the thread at the pacer's next slot to the microsecond (the poll's own timeout is whole ms).
    timer: DeadlineTimer,
    /// Socket `i` is bound to port `base + 2 * i`.
    sockets: Vec<UdpSocket>,
    /// The block's RTCP socket, bound to `rtcp_port`.
    rtcp: UdpSocket,
    rtcp_port: u16,
    base: u16,
    /// The address the sockets are bound to: on `[::]` every address the plane sees is IPv6 (IPv4 peers
    /// IPv4-mapped), as the sockets report and take them.
    bind_ip: IpAddr,
    rx: Receiver<MediaCommand>,
    stop: Arc<AtomicBool>,
    counters: Arc<IoCounters>,
    stats: Arc<Mutex<MediaStats>>,
    /// The measured load, published for the SIP side (capacity guard).
    load: Arc<LoadCell>,
    plane: MediaPlane,
    /// Where the plane's reports go (the SIP driver), if anywhere.
    reports: Option<tokio::sync::mpsc::UnboundedSender<MediaReport>>,
}

impl MediaIo {
    fn socket(&self, port: u16) -> Option<&UdpSocket> {
        if port == self.rtcp_port {
            return Some(&self.rtcp);
        }
        let off = port.checked_sub(self.base)?;
        if off % 2 != 0 {
            return None;
        }
        self.sockets.get(off as usize / 2)
    }

    /// `cmd` with its remote address in the sockets' form (IPv4-mapped on dual-stack sockets). Logs, per
    /// leg, when an IPv6 leg's hold music cannot take the raw sender (IPv4 only) and leaves from the leg's
    /// own socket instead.
    fn in_socket_form(&self, cmd: MediaCommand, sender: &'static str) -> MediaCommand {
        match cmd {
            MediaCommand::Hold { leg, remote, codec, music } => {
                let remote = dual_stack::for_socket(remote, self.bind_ip);
                if sender == "raw" && remote.ip().to_canonical().is_ipv6() {
                    tracing::info!(port = leg.port(), %remote, sender = "sendto", "hold music to an IPv6 leg: sendto from the leg's socket (the raw sender is IPv4 only)");
                }
                MediaCommand::Hold { leg, remote, codec, music }
            }
            MediaCommand::Update { leg, remote, codec, send } => MediaCommand::Update { leg, remote: dual_stack::for_socket(remote, self.bind_ip), codec, send },
            other => other,
        }
    }

    /// Sends a relayed packet: repeated when interrupted, else counted when refused (never retried).
    fn relay(&self, sock: &UdpSocket, data: &[u8], to: SocketAddr) {
        loop {
            let counter = match sock.send_to(data, to) {
                Ok(_) => return,
                Err(e) => match refusal_of(&e) {
                    Refusal::Interrupted => continue,
                    Refusal::Full => &self.counters.send_would_block,
                    Refusal::Failed => &self.counters.send_errors,
                },
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }

    /// Reads every datagram waiting on the RTCP socket into `buf` and sends what the plane relays.
    fn drain_rtcp(&mut self, clock: &Clock, buf: &mut [u8]) {
        loop {
            match self.rtcp.recv_from(buf) {
                Ok((n, from)) => {
                    if let Some(f) = self.plane.on_rtcp_port(clock.now(), from, buf, n) {
                        if let (Some(s), Some(data)) = (self.socket(f.port), buf.get(..f.len)) {
                            self.relay(s, data, f.to);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.counters.recv_errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    fn run(mut self, mut hold: HoldOut) {
        let clock = Clock::new();
        let mut events = Events::with_capacity(256);
        let mut buf = vec![0u8; RECV_BUF];
        let mut batch = HoldBatch::with_capacity(1024);
        let mut last_stats = clock.now();
        let mut meter = LoadMeter::new(std::time::Instant::now());
        loop {
            let now = clock.now();
            let due = self.plane.poll_timeout().map(|(t, _)| t);
            let sleep = match due {
                Some(d) => d.saturating_since(now).min(IDLE_WAKE),
                None => IDLE_WAKE,
            };
            // The timer wakes the thread at the deadline; the poll's own timeout (rounded up to whole
            // milliseconds by mio) is only the fallback should arming fail.
            let mut timeout = match due {
                Some(d) if !sleep.is_zero() && sleep < IDLE_WAKE && self.timer.arm(d, sleep).is_ok() => IDLE_WAKE,
                _ => sleep,
            };
            if !self.gate.before_sleep(std::time::Instant::now() + sleep) {
                timeout = Duration::ZERO; // commands were queued without a wake-up
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "media poll failed; media thread stops");
                    return;
                }
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let woke = std::time::Instant::now();
            let late = due.map_or(Duration::ZERO, |d| clock.now().saturating_since(d));
            self.gate.after_wake();
            loop {
                match self.rx.try_recv() {
                    Ok(cmd) => {
                        let cmd = self.in_socket_form(cmd, hold.name());
                        self.plane.apply(clock.now(), cmd)
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            for ev in events.iter() {
                if ev.token() == RTCP {
                    self.drain_rtcp(&clock, &mut buf);
                    continue;
                }
                let idx = ev.token().0;
                if ev.token() == TIMER {
                    self.timer.fired();
                    continue;
                }
                if ev.token() == WAKER || idx >= self.sockets.len() {
                    continue;
                }
                let port = self.base.wrapping_add((idx as u16).wrapping_mul(2));
                while let Some(sock) = self.sockets.get(idx) {
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            // The whole buffer: a packet relayed to an SRTP leg grows by its tag.
                            if let Some(f) = self.plane.on_packet(clock.now(), port, from, &mut buf, n) {
                                if let (Some(s), Some(data)) = (self.socket(f.port), buf.get(..f.len)) {
                                    self.relay(s, data, f.to);
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => {
                            // e.g. ECONNREFUSED after an ICMP port unreachable. Counted; new data
                            // re-arms the (edge-triggered) readiness.
                            self.counters.recv_errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
            while let Some(r) = self.plane.poll_report() {
                if let Some(tx) = &self.reports {
                    let _ = tx.send(r);
                }
            }
            batch.clear();
            self.plane.poll_hold(clock.now(), &mut batch);
            let turn = hold.send_turn(&mut batch, &self);
            self.counters.send_errors.fetch_add(turn.errors, Ordering::Relaxed);
            self.counters.send_would_block.fetch_add(turn.would_block, Ordering::Relaxed);
            meter.turn(woke, std::time::Instant::now(), late, &self.load);
            let now = clock.now();
            if now.saturating_since(last_stats) >= IDLE_WAKE {
                last_stats = now;
                if let Ok(mut s) = self.stats.lock() {
                    *s = self.plane.stats();
                }
            }
        }
    }
}

impl PortSockets for MediaIo {
    /// Socket `i` (port `base + 2 * i`) is io_uring fixed file `i`; the RTCP socket comes after them.
    fn slot(&self, port: u16) -> Option<Slot> {
        if port == self.rtcp_port {
            return Some(Slot { fd: self.rtcp.as_raw_fd(), file: self.sockets.len() as u32 });
        }
        let off = port.checked_sub(self.base)?;
        let i = usize::from(off / 2);
        let sock = self.sockets.get(i).filter(|_| off % 2 == 0)?;
        Some(Slot { fd: sock.as_raw_fd(), file: i as u32 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{parse, write_header, Pt, SeqNo, Ssrc};
    use crate::media::{Codec, HoldMusic, MediaLegId, MusicId};
    use std::net::UdpSocket as StdUdp;

    /// Spawns on two loopback ports, trying a few bases in case one is taken.
    fn spawn_loopback() -> MediaHandle {
        spawn_loopback_shared(1, RtpSender::Auto).expect("auto always starts")
    }

    /// Spawns on two loopback ports with `legs_per_port` legs per port and hold sender `sender`;
    /// `None` (the reason printed) when `RtpSender::IoUring` is asked for and the kernel refuses it.
    fn spawn_loopback_shared(legs_per_port: u16, sender: RtpSender) -> Option<MediaHandle> {
        spawn_on("127.0.0.1".parse().unwrap(), legs_per_port, sender)
    }

    /// As [`spawn_loopback_shared`], the sockets bound to `ip`.
    fn spawn_on(ip: IpAddr, legs_per_port: u16, sender: RtpSender) -> Option<MediaHandle> {
        let music = HoldMusic::from_pcm(&[500; 1600]).unwrap();
        // Tests run in parallel: each spawn takes its own port block.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let start = 40_000 + (std::process::id() % 1000) as u16 * 8;
        for _ in 0..20 {
            let base = start + (NEXT.fetch_add(1, Ordering::Relaxed) % 2000) as u16 * 4;
            match spawn(ip, base..=base + 3, legs_per_port, sender, MediaPlane::new(vec![music.clone()], 7)) {
                Ok(h) => return Some(h),
                Err(MediaIoError::Bind { .. } | MediaIoError::BindRtcp { .. }) => continue,
                Err(e @ (MediaIoError::IoUring(_) | MediaIoError::Raw(_))) => {
                    eprintln!("SKIPPED: {e}");
                    return None;
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no free loopback port pair");
    }

    fn receiver() -> StdUdp {
        let s = StdUdp::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        s
    }

    #[test]
    fn hold_music_reaches_a_loopback_socket_and_stops_with_syscalls() {
        hold_music_reaches_a_loopback_socket_and_stops(RtpSender::Syscalls);
    }

    #[test]
    fn hold_music_reaches_a_loopback_socket_and_stops_with_io_uring() {
        hold_music_reaches_a_loopback_socket_and_stops(RtpSender::IoUring);
    }

    #[test]
    fn hold_music_reaches_a_loopback_socket_and_stops_with_a_raw_socket() {
        hold_music_reaches_a_loopback_socket_and_stops(RtpSender::Raw);
    }

    fn hold_music_reaches_a_loopback_socket_and_stops(sender: RtpSender) {
        let Some(h) = spawn_loopback_shared(1, sender) else { return };
        assert_eq!(h.ports().len(), 2);
        assert!(matches!(
            spawn("127.0.0.1".parse().unwrap(), 41_001..=41_001, 1, sender, MediaPlane::new(vec![], 1)),
            Err(MediaIoError::NoEvenPort { .. })
        ));
        let port = h.ports()[0];
        let rx = receiver();
        h.send(MediaCommand::Hold { leg: MediaLegId::solo(port), remote: rx.local_addr().unwrap(), codec: Codec::Pcmu, music: MusicId(0) });
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while got.len() < 8 {
            let (n, from) = rx.recv_from(&mut buf).expect("hold packets within 200 ms of each other");
            assert_eq!(from.port(), port, "sent from the leg's own port (symmetric RTP)");
            assert_eq!(n, 172);
            got.push(parse(&buf[..n]).unwrap());
        }
        assert!(got[0].marker);
        for w in got.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            // A late wake on a loaded machine skips whole frames by design (timestamps follow the schedule).
            let step = w[1].ts.wrapping_sub(w[0].ts);
            assert!(step >= 160 && step % 160 == 0 && step <= 160 * 50, "timestamp step {step}");
            assert_eq!((w[1].ssrc, w[1].pt.get(), w[1].marker), (w[0].ssrc, 0, false));
        }
        h.send(MediaCommand::Stop { leg: MediaLegId::solo(port) });
        std::thread::sleep(Duration::from_millis(60));
        while rx.recv_from(&mut buf).is_ok() {} // drain what was in flight
        assert!(rx.recv_from(&mut buf).is_err(), "no packet after Stop");
        assert_eq!(h.io_counters().send_errors.load(Ordering::Relaxed), 0);
        drop(h); // joins the thread
    }

    /// A phone that does not mux gets its Sender Reports from the thread's RTCP port (the odd port above the
    /// first RTP port) on its own RTCP socket, whichever hold sender is in use; its RTCP sent there is read.
    fn sender_reports_leave_from_the_rtcp_port(sender: RtpSender) {
        let Some(h) = spawn_loopback_shared(1, sender) else { return };
        let port = h.ports()[0];
        assert_eq!(h.rtcp_port(), port + 1);
        let (rtp, rtcp) = (receiver(), receiver());
        let leg = MediaLegId::solo(port);
        h.send(MediaCommand::RtcpPort { leg, port: rtcp.local_addr().unwrap().port() });
        h.send(MediaCommand::Hold { leg, remote: rtp.local_addr().unwrap(), codec: Codec::Pcmu, music: MusicId(0) });
        let mut buf = [0u8; 2048];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let (n, from) = loop {
            assert!(std::time::Instant::now() < deadline, "no SR within 10 s");
            if let Ok(got) = rtcp.recv_from(&mut buf) {
                break got;
            }
        };
        assert_eq!(from.port(), h.rtcp_port(), "from the RTCP port");
        assert_eq!((n, buf[1]), (crate::media::rtcp::REPORT_LEN, crate::media::rtcp::PT_SR));
        let rr = [0x80, crate::media::rtcp::PT_RR, 0, 1, 0, 0, 0, 9];
        rtcp.send_to(&rr, from).unwrap();
        for _ in 0..40 {
            if h.stats().rtcp_received == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(h.stats().rtcp_received, 1, "the phone's RR read on the RTCP port");
        assert_eq!(h.io_counters().send_errors.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn sender_reports_leave_from_the_rtcp_port_with_syscalls() {
        sender_reports_leave_from_the_rtcp_port(RtpSender::Syscalls);
    }

    #[test]
    fn sender_reports_leave_from_the_rtcp_port_with_io_uring() {
        sender_reports_leave_from_the_rtcp_port(RtpSender::IoUring);
    }

    #[test]
    fn sender_reports_leave_from_the_rtcp_port_with_a_raw_socket() {
        sender_reports_leave_from_the_rtcp_port(RtpSender::Raw);
    }

    #[test]
    fn bridge_relays_between_two_loopback_phones() {
        let h = spawn_loopback();
        let (pa, pb) = (h.ports()[0], h.ports()[1]);
        let (a, b) = (receiver(), receiver());
        h.send(MediaCommand::Hold { leg: MediaLegId::solo(pa), remote: a.local_addr().unwrap(), codec: Codec::Pcmu, music: MusicId(0) });
        h.send(MediaCommand::Update { leg: MediaLegId::solo(pb), remote: b.local_addr().unwrap(), codec: Codec::Pcma, send: true });
        h.send(MediaCommand::Bridge { a: MediaLegId::solo(pa), b: MediaLegId::solo(pb) });
        let mut pkt = write_header(Pt::from(Codec::Pcmu), false, SeqNo(1), 1, Ssrc(99)).to_vec();
        pkt.extend_from_slice(&[0xFF; 160]);
        let mut buf = [0u8; 2048];
        // Retry a few times: the commands may not be applied when the first packet arrives.
        let mut relayed = None;
        for _ in 0..10 {
            a.send_to(&pkt, ("127.0.0.1", pa)).unwrap();
            if let Ok((n, from)) = b.recv_from(&mut buf) {
                assert_eq!(from.port(), pb);
                relayed = Some(parse(&buf[..n]).unwrap());
                break;
            }
        }
        let r = relayed.expect("packet relayed from A to B");
        assert_eq!(r.pt.get(), 8, "translated to B's codec");
        assert_eq!(&buf[12..172], &[0xD5; 160][..]);
        assert!(h.io_counters().send_errors.load(Ordering::Relaxed) == 0);
    }

    /// Dual-stack RTP (`listen = "[::]:..."`, issue 19): hold music reaches an IPv4 and an IPv6 phone, then the
    /// two are bridged and relayed both ways.
    fn dual_stack_hold_and_bridge(sender: RtpSender) {
        if StdUdp::bind("[::1]:0").is_err() {
            eprintln!("SKIPPED: this machine has no ::1");
            return;
        }
        let Some(h) = spawn_on("::".parse().unwrap(), 1, sender) else { return };
        let (p4, p6) = (h.ports()[0], h.ports()[1]);
        let v4 = receiver();
        let v6 = StdUdp::bind("[::1]:0").unwrap();
        v6.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 2048];
        for (phone, port) in [(&v4, p4), (&v6, p6)] {
            h.send(MediaCommand::Hold { leg: MediaLegId::solo(port), remote: phone.local_addr().unwrap(), codec: Codec::Pcmu, music: MusicId(0) });
            for _ in 0..3 {
                let (n, from) = phone.recv_from(&mut buf).expect("hold music on both families");
                assert_eq!((n, from.port(), from.is_ipv6()), (172, port, phone.local_addr().unwrap().is_ipv6()), "from the leg's port, in the phone's family");
            }
        }
        h.send(MediaCommand::Bridge { a: MediaLegId::solo(p4), b: MediaLegId::solo(p6) });
        let mut pkt = write_header(Pt::from(Codec::Pcmu), false, SeqNo(1), 1, Ssrc(99)).to_vec();
        pkt.extend_from_slice(&[0x11; 160]);
        for (from, to, port_in, port_out) in [(&v4, &v6, p4, p6), (&v6, &v4, p6, p4)] {
            let dest: SocketAddr = if from.local_addr().unwrap().is_ipv6() { ("::1".parse::<IpAddr>().unwrap(), port_in).into() } else { ("127.0.0.1".parse::<IpAddr>().unwrap(), port_in).into() };
            let mut relayed = false;
            for _ in 0..20 {
                from.send_to(&pkt, dest).unwrap();
                match to.recv_from(&mut buf) {
                    Ok((n, src)) if n == 172 && buf[12..172] == [0x11; 160] => {
                        assert_eq!(src.port(), port_out);
                        relayed = true;
                        break;
                    }
                    _ => continue, // hold music still in flight, or the bridge not applied yet
                }
            }
            assert!(relayed, "relayed {} -> {}", from.local_addr().unwrap(), to.local_addr().unwrap());
        }
        assert_eq!(h.io_counters().send_errors.load(Ordering::Relaxed), 0, "no packet sent to the wrong family");
    }

    #[test]
    fn dual_stack_hold_and_bridge_with_syscalls() {
        dual_stack_hold_and_bridge(RtpSender::Syscalls);
    }

    #[test]
    fn dual_stack_hold_and_bridge_with_io_uring() {
        dual_stack_hold_and_bridge(RtpSender::IoUring);
    }

    #[test]
    fn dual_stack_hold_and_bridge_with_a_raw_socket() {
        dual_stack_hold_and_bridge(RtpSender::Raw);
    }

    #[test]
    fn four_legs_on_one_shared_port_get_their_own_streams_and_bridge_with_sendmmsg() {
        four_legs_on_one_shared_port_get_their_own_streams_and_bridge(RtpSender::Syscalls);
    }

    #[test]
    fn four_legs_on_one_shared_port_get_their_own_streams_and_bridge_with_io_uring() {
        four_legs_on_one_shared_port_get_their_own_streams_and_bridge(RtpSender::IoUring);
    }

    #[test]
    fn four_legs_on_one_shared_port_get_their_own_streams_and_bridge_with_a_raw_socket() {
        four_legs_on_one_shared_port_get_their_own_streams_and_bridge(RtpSender::Raw);
    }

    fn four_legs_on_one_shared_port_get_their_own_streams_and_bridge(sender: RtpSender) {
        let Some(h) = spawn_loopback_shared(4, sender) else { return };
        let port = h.ports()[0];
        let legs: Vec<MediaLegId> = (0..4).map(|s| MediaLegId::new(port, s)).collect();
        let phones: Vec<StdUdp> = (0..4).map(|_| receiver()).collect();
        for (leg, phone) in legs.iter().zip(&phones) {
            h.send(MediaCommand::Hold { leg: *leg, remote: phone.local_addr().unwrap(), codec: Codec::Pcmu, music: MusicId(0) });
        }
        let mut buf = [0u8; 2048];
        let mut ssrcs = Vec::new();
        for phone in &phones {
            let mut stream = Vec::new();
            while stream.len() < 5 {
                let (n, from) = phone.recv_from(&mut buf).expect("each leg gets its hold stream");
                assert_eq!(from.port(), port, "sent from the shared port");
                assert_eq!(n, 172);
                stream.push(parse(&buf[..n]).unwrap());
            }
            assert!(stream.windows(2).all(|w| w[1].seq == w[0].seq.wrapping_add(1) && w[1].ssrc == w[0].ssrc), "one continuous stream");
            ssrcs.push(stream[0].ssrc);
        }
        let mut distinct = ssrcs.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "four distinct streams");
        // Bridge legs 0 and 1 (same port). Phone 1 speaks first: with legs 0, 2, 3 unlatched too,
        // its packet is told apart by its SDP address, then relayed to phone 0 as leg 0's stream.
        h.send(MediaCommand::Bridge { a: legs[0], b: legs[1] });
        let mut pkt = write_header(Pt::from(Codec::Pcmu), false, SeqNo(1), 1, Ssrc(99)).to_vec();
        pkt.extend_from_slice(&[0xFF; 160]); // μ-law silence; the hold music here is not silent
        let is_relayed = |n: usize, buf: &[u8]| n == 172 && buf[12..172].iter().all(|b| *b == 0xFF);
        let mut relayed = None;
        'tries: for _ in 0..10 {
            phones[1].send_to(&pkt, ("127.0.0.1", port)).unwrap();
            // Hold packets sent before the bridge may still be queued: skip them.
            while let Ok((n, from)) = phones[0].recv_from(&mut buf) {
                if is_relayed(n, &buf) {
                    relayed = Some((from.port(), parse(&buf[..n]).unwrap()));
                    break 'tries;
                }
            }
        }
        let (from_port, r) = relayed.expect("phone 1's packet relayed to phone 0 across the shared port");
        assert_eq!(from_port, port);
        assert_eq!(r.ssrc, ssrcs[0], "relayed as leg 0's stream");
        // Phone 2 still hears its own hold music, not the relayed audio.
        for _ in 0..5 {
            let (n, _) = phones[2].recv_from(&mut buf).expect("leg 2 still on hold");
            assert!(!is_relayed(n, &buf));
            assert_eq!(parse(&buf[..n]).unwrap().ssrc, ssrcs[2]);
        }
        assert_eq!(h.io_counters().send_errors.load(Ordering::Relaxed), 0);
    }
}
