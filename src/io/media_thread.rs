//! The media io thread: one UDP socket per even port, one `mio::Poll`, one std thread
//! (`parkd-media`) driving the sans-IO [`MediaPlane`].
//!
//! Loop: sleep until the plane's next pacer deadline, a readable socket or a command; apply
//! commands; drain readable sockets into ONE reused buffer and send what the relay forwards;
//! then send every hold packet due. A hold packet (12-byte header + shared payload slice) is
//! assembled in a reused stack buffer: no heap allocation per packet. Send errors are counted.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};

use super::clock::Clock;
use crate::media::rtp::RTP_HEADER_LEN;
use crate::media::{HoldBatch, MediaCommand, MediaPlane, MediaStats};

const WAKER: Token = Token(usize::MAX);
/// Largest datagram we receive (RTP over UDP stays well under an Ethernet MTU).
const RECV_BUF: usize = 2048;
/// Upper bound on one sleep when no hold stream is scheduled, to refresh the stats snapshot.
const IDLE_WAKE: Duration = Duration::from_millis(500);

/// Why the media thread could not start.
#[derive(Debug, thiserror::Error)]
pub enum MediaIoError {
    #[error("RTP port range {lo}-{hi} contains no even port")]
    NoEvenPort { lo: u16, hi: u16 },
    #[error("cannot bind RTP port {ip}:{port}: {source}")]
    Bind { ip: IpAddr, port: u16, source: io::Error },
    #[error("cannot set up the media poller: {0}")]
    Poll(#[source] io::Error),
    #[error("cannot spawn the parkd-media thread: {0}")]
    Spawn(#[source] io::Error),
}

/// Io-side counters (the plane's own counters are in [`MediaStats`]).
#[derive(Debug, Default)]
pub struct IoCounters {
    /// `send_to` failures (other than a full socket buffer).
    pub send_errors: AtomicU64,
    /// Packets dropped because the socket buffer was full (`WouldBlock` on send).
    pub send_would_block: AtomicU64,
    /// `recv_from` failures other than `WouldBlock`.
    pub recv_errors: AtomicU64,
}

/// Handle to the running media thread. Dropping it stops the thread and joins it.
pub struct MediaHandle {
    tx: Sender<MediaCommand>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    ports: Vec<u16>,
    counters: Arc<IoCounters>,
    stats: Arc<Mutex<MediaStats>>,
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

    /// Wakes the media thread to apply queued commands.
    pub fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "cannot wake the media thread");
        }
    }

    /// The bound RTP ports (every even port of the range), ascending.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Io-side counters.
    pub fn io_counters(&self) -> &IoCounters {
        &self.counters
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
/// a thread named `parkd-media`.
pub fn spawn(bind_ip: IpAddr, ports: RangeInclusive<u16>, plane: MediaPlane) -> Result<MediaHandle, MediaIoError> {
    let (lo, hi) = (*ports.start(), *ports.end());
    let even: Vec<u16> = ports.filter(|p| p % 2 == 0).collect();
    let Some(&base) = even.first() else { return Err(MediaIoError::NoEvenPort { lo, hi }) };
    let poll = Poll::new().map_err(MediaIoError::Poll)?;
    let mut sockets = Vec::with_capacity(even.len());
    for (i, port) in even.iter().enumerate() {
        let mut sock = UdpSocket::bind(SocketAddr::new(bind_ip, *port))
            .map_err(|source| MediaIoError::Bind { ip: bind_ip, port: *port, source })?;
        poll.registry().register(&mut sock, Token(i), Interest::READABLE).map_err(MediaIoError::Poll)?;
        sockets.push(sock);
    }
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(MediaIoError::Poll)?);
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(IoCounters::default());
    let stats = Arc::new(Mutex::new(MediaStats::default()));
    let io = MediaIo { poll, sockets, base, rx, stop: stop.clone(), counters: counters.clone(), stats: stats.clone(), plane };
    let thread = std::thread::Builder::new().name("parkd-media".into()).spawn(move || io.run()).map_err(MediaIoError::Spawn)?;
    Ok(MediaHandle { tx, waker, stop, thread: Some(thread), ports: even, counters, stats })
}

/// State owned by the media thread.
struct MediaIo {
    poll: Poll,
    /// Socket `i` is bound to port `base + 2 * i`.
    sockets: Vec<UdpSocket>,
    base: u16,
    rx: Receiver<MediaCommand>,
    stop: Arc<AtomicBool>,
    counters: Arc<IoCounters>,
    stats: Arc<Mutex<MediaStats>>,
    plane: MediaPlane,
}

impl MediaIo {
    fn socket(&self, port: u16) -> Option<&UdpSocket> {
        let off = port.checked_sub(self.base)?;
        if off % 2 != 0 {
            return None;
        }
        self.sockets.get(off as usize / 2)
    }

    fn count_send(&self, r: io::Result<usize>) {
        match r {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.counters.send_would_block.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn run(mut self) {
        let clock = Clock::new();
        let mut events = Events::with_capacity(256);
        let mut buf = vec![0u8; RECV_BUF];
        let mut out = [0u8; RECV_BUF];
        let mut batch = HoldBatch::with_capacity(1024);
        let mut last_stats = clock.now();
        loop {
            let now = clock.now();
            let timeout = match self.plane.next_deadline() {
                Some(d) => d.saturating_since(now).min(IDLE_WAKE),
                None => IDLE_WAKE,
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "media poll failed; media thread stops");
                    return;
                }
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            loop {
                match self.rx.try_recv() {
                    Ok(cmd) => self.plane.apply(clock.now(), cmd),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            for ev in events.iter() {
                let idx = ev.token().0;
                if ev.token() == WAKER || idx >= self.sockets.len() {
                    continue;
                }
                let port = self.base.wrapping_add((idx as u16).wrapping_mul(2));
                while let Some(sock) = self.sockets.get(idx) {
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            let Some(pkt) = buf.get_mut(..n) else { continue };
                            if let Some(f) = self.plane.on_rtp(clock.now(), port, from, pkt) {
                                if let (Some(s), Some(data)) = (self.socket(f.port), buf.get(..f.len)) {
                                    self.count_send(s.send_to(data, f.to));
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
            batch.clear();
            self.plane.poll_hold(clock.now(), &mut batch);
            for p in batch.packets() {
                let Some(sock) = self.socket(p.port) else { continue };
                let total = RTP_HEADER_LEN + p.payload.len();
                let Some(frame) = out.get_mut(..total) else { continue };
                let (header, body) = frame.split_at_mut(RTP_HEADER_LEN);
                header.copy_from_slice(&p.header);
                body.copy_from_slice(&p.payload);
                self.count_send(sock.send_to(frame, p.to));
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::parse;
    use crate::media::{Codec, HoldMusic, MusicId};
    use std::net::UdpSocket as StdUdp;

    /// Spawns on two loopback ports, trying a few bases in case one is taken.
    fn spawn_loopback() -> MediaHandle {
        let music = HoldMusic::from_pcm(&[500; 1600]).unwrap();
        let start = 40_000 + (std::process::id() % 2000) as u16 * 4;
        for k in 0..20u16 {
            let base = start + k * 4;
            match spawn("127.0.0.1".parse().unwrap(), base..=base + 3, MediaPlane::new(vec![music.clone()], 7)) {
                Ok(h) => return h,
                Err(MediaIoError::Bind { .. }) => continue,
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
    fn hold_music_reaches_a_loopback_socket_and_stops() {
        let h = spawn_loopback();
        assert_eq!(h.ports().len(), 2);
        assert!(matches!(
            spawn("127.0.0.1".parse().unwrap(), 41_001..=41_001, MediaPlane::new(vec![], 1)),
            Err(MediaIoError::NoEvenPort { .. })
        ));
        let port = h.ports()[0];
        let rx = receiver();
        h.send(MediaCommand::Hold { port, remote: rx.local_addr().unwrap(), codec: Codec::Pcmu, music: MusicId(0) });
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
            assert_eq!(w[1].ts, w[0].ts.wrapping_add(160));
            assert_eq!((w[1].ssrc, w[1].pt, w[1].marker), (w[0].ssrc, 0, false));
        }
        h.send(MediaCommand::Stop { port });
        std::thread::sleep(Duration::from_millis(60));
        while rx.recv_from(&mut buf).is_ok() {} // drain what was in flight
        assert!(rx.recv_from(&mut buf).is_err(), "no packet after Stop");
        drop(h); // joins the thread
    }

    #[test]
    fn bridge_relays_between_two_loopback_phones() {
        let h = spawn_loopback();
        let (pa, pb) = (h.ports()[0], h.ports()[1]);
        let (a, b) = (receiver(), receiver());
        h.send(MediaCommand::Hold { port: pa, remote: a.local_addr().unwrap(), codec: Codec::Pcmu, music: MusicId(0) });
        h.send(MediaCommand::Update { port: pb, remote: b.local_addr().unwrap(), codec: Codec::Pcma, send: true });
        h.send(MediaCommand::Bridge { a: pa, b: pb });
        let mut pkt = crate::media::rtp::write_header(0, false, 1, 1, 99).to_vec();
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
        assert_eq!(r.pt, 8, "translated to B's codec");
        assert_eq!(&buf[12..172], &[0xD5; 160][..]);
        assert!(h.io_counters().send_errors.load(Ordering::Relaxed) == 0);
    }
}
