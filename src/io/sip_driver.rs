//! The thin tokio layer around the core: SIP over UDP, TCP and TLS, the clock, and the one sleep until the core's
//! next deadline. It owns the [`Core`]; nothing else touches it, so the core needs no lock.

use super::api_link::{self, ApiPort};
use super::clock::Clock;
use super::media_shards::Media;
use super::conn_limits::{Refusal, SipLimits};
use super::dual_stack;
use super::journal_writer::JournalWriter;
use super::tcp::{self, ConnId, TcpContext, TcpEvent, Writer};
use super::tls::{self, Aliases, TlsIo};
use super::udp_batch::{RecvBatch, SendBatch};
use crate::core::{Command, Core, Output};
use crate::journal::Durable;
use crate::sip::{Peer, Transport};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum SipIoError {
    #[error("cannot bind SIP UDP socket on {addr}: {source}")]
    BindUdp { addr: SocketAddr, source: std::io::Error },
    #[error("cannot bind SIP TCP listener on {addr}: {source}")]
    BindTcp { addr: SocketAddr, source: std::io::Error },
}

/// The bound SIP sockets, ready to run.
pub struct SipSockets {
    pub(super) udp: UdpSocket,
    pub(super) tcp: TcpListener,
    pub(super) limits: SipLimits,
    /// SIP over TLS, when configured ([`super::tls`]).
    pub(super) tls: Option<(TcpListener, TlsIo)>,
}

impl SipSockets {
    pub async fn bind(addr: SocketAddr) -> Result<SipSockets, SipIoError> {
        // `[::]` serves IPv4 and IPv6 peers on one socket (see `dual_stack`).
        let udp = dual_stack::bind_udp(addr)
            .and_then(|s| {
                s.set_nonblocking(true)?;
                UdpSocket::from_std(s)
            })
            .map_err(|source| SipIoError::BindUdp { addr, source })?;
        let tcp = dual_stack::bind_tcp(addr).and_then(TcpListener::from_std).map_err(|source| SipIoError::BindTcp { addr, source })?;
        Ok(SipSockets { udp, tcp, limits: SipLimits::default(), tls: None })
    }

    /// Another descriptor of the SIP UDP socket (for the other SIP threads' sends, `sip_shards.rs`).
    pub fn udp_clone(&self) -> std::io::Result<std::net::UdpSocket> {
        Ok(socket2::SockRef::from(&self.udp).try_clone()?.into())
    }

    /// Serves SIP over TLS on `listener` too (see [`super::tls::bind`]).
    pub fn with_tls(mut self, tls: Option<(TcpListener, TlsIo)>) -> SipSockets {
        self.tls = tls;
        self
    }

    /// Applies these message and connection limits (`[limits]`; the defaults otherwise).
    pub fn with_limits(mut self, limits: SipLimits) -> SipSockets {
        self.limits = limits;
        self
    }
}

/// The open TCP and TLS connections the core task can write to, by peer, and the TLS connections' aliases.
#[derive(Default)]
pub(super) struct Conns {
    pub(super) open: HashMap<Peer, (ConnId, Writer)>,
    pub(super) aliases: Aliases,
    pub(super) tls: Option<TlsIo>,
}

/// The journal as the driver sees it (issue 17): the writer thread that makes groups durable, and the channel its
/// completion hook reports on (see [`JournalLink::spawn`]).
pub struct JournalLink {
    pub writer: JournalWriter,
    pub durable: mpsc::UnboundedReceiver<Durable>,
}

impl JournalLink {
    /// Starts the writer thread on `store`; its completions come back on [`JournalLink::durable`].
    pub fn spawn<S: crate::journal::Store + 'static>(store: S, cfg: super::journal_writer::WriterConfig) -> std::io::Result<JournalLink> {
        Self::spawn_counting(store, cfg, Default::default())
    }

    /// As [`spawn`](Self::spawn), the writer counting into `stats` (shared by the SIP shards' journals).
    pub fn spawn_counting<S: crate::journal::Store + 'static>(
        store: S,
        cfg: super::journal_writer::WriterConfig,
        stats: std::sync::Arc<super::journal_writer::WriterStats>,
    ) -> std::io::Result<JournalLink> {
        let (tx, durable) = mpsc::unbounded_channel();
        // The hook runs on the writer thread: an unbounded send never blocks it.
        let writer = JournalWriter::spawn_counting(store, cfg, stats, move |d| {
            let _ = tx.send(d);
        })?;
        Ok(JournalLink { writer, durable })
    }
}

/// How the driver was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM / Ctrl-C: stop and keep every call (journaled; the next start restores them). No BYE is sent.
    KeepCalls,
    /// SIGUSR2: hang up every call (BYE with a Reason), give the BYEs a moment, then stop.
    HangUpAll,
}

/// How often the media threads' load is read and handed to the core (their figure is smoothed over ~0.5 s).
pub(super) const MEDIA_LOAD_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a hang-up-everything stop lets its BYEs retransmit and be answered before parkd exits.
pub(super) const HANGUP_LINGER: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs the core until `shutdown` resolves. `api` brings HTTP API requests in and takes events and counts out;
/// `journal` (journaling on) takes the core's journal groups and brings back their completions. On the way out
/// the journal writer commits what is queued (everything the core wrote is durable when this returns).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut core: Core,
    sockets: SipSockets,
    media: Media,
    clock: Clock,
    mut api: ApiPort,
    journal: Option<JournalLink>,
    cluster: Option<super::cluster::core_link::CoreLink>,
    shutdown: impl std::future::Future<Output = Stop>,
) -> Stop {
    let (cluster_ops, mut cluster_in) = match cluster {
        Some(c) => (Some(c.ops), Some(c.inputs)),
        None => (None, None),
    };
    let (writer, mut durable) = match journal {
        Some(j) => (Some(j.writer), Some(j.durable)),
        None => (None, None),
    };
    let cluster = ClusterIo { ops: cluster_ops, inputs: cluster_in.as_mut() };
    let stop = drive(&mut core, sockets, &media, &clock, &mut api, writer.as_ref(), durable.as_mut(), cluster, shutdown).await;
    if let Some(w) = writer {
        // Commits everything queued (the deletes of a hang-up-all included), then closes the file and its lock.
        w.shutdown();
        tracing::info!("journal flushed and closed");
    }
    stop
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    core: &mut Core,
    sockets: SipSockets,
    media: &Media,
    clock: &Clock,
    api: &mut ApiPort,
    journal: Option<&JournalWriter>,
    mut durable: Option<&mut mpsc::UnboundedReceiver<Durable>>,
    mut cluster: ClusterIo<'_>,
    shutdown: impl std::future::Future<Output = Stop>,
) -> Stop {
    let SipSockets { udp, tcp, limits, tls } = sockets;
    let mut udp = SipUdp::new(udp);
    let (tcp_tx, mut tcp_rx) = mpsc::channel::<TcpEvent>(1024);
    let tcp_ctx = TcpContext::new(limits, api.metrics.clone(), tcp_tx);
    tokio::spawn(tcp::accept_loop(tcp, tcp_ctx.clone()));
    let mut conns = Conns::default();
    if let Some((listener, t)) = tls {
        tokio::spawn(tls::accept_loop(listener, tcp_ctx.clone(), t.clone()));
        // SIGHUP reloads the certificate with the configuration (below, `super::reload`).
        conns.tls = Some(t);
    }
    // tokio knows a fresh socket is writable only once its reactor has polled it: without this wait the first
    // drain (a restore's CANCELs and recalls) would meet `WouldBlock` on `try_send_to` and lose those datagrams.
    if let Err(e) = udp.writable().await {
        tracing::warn!(error = %e, "SIP UDP socket not writable");
    }
    let mut rx_batch = RecvBatch::new();
    // The media threads' reports (a parked caller's key press, a NAT latch), handed to the core as inputs.
    let mut media_reports = media.take_reports();
    let mut drain_toggle = DrainSignal::new();
    let mut hup = super::reload::HupSignal::new();
    tokio::pin!(shutdown);
    // Set once a hang-up-everything stop has sent its BYEs: stop when they are done or at this instant.
    let mut leaving: Option<std::time::Instant> = None;
    // One timer, moved when the core's next deadline moves (not a new timer entry per datagram).
    let far = || tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
    let timer = tokio::time::sleep_until(far());
    tokio::pin!(timer);
    let mut armed: Option<crate::time::Time> = None;
    // The media threads' measured load, handed to the core's capacity guard (core/capacity.rs) ten times a second.
    let mut load_tick = tokio::time::interval(MEDIA_LOAD_EVERY);
    load_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The core's contract (core/mod.rs): after every input, drain its output until None. Every branch
        // below feeds at most one input before coming back here, except the UDP batch, which drains after
        // each datagram itself; only the media threads' wake-up and the UDP sends wait for the end of the batch.
        if drain(core, &mut udp, &mut conns, &tcp_ctx, media, &mut *api, clock, journal, cluster.ops.as_ref()) {
            media.wake();
        }
        // Every UDP datagram the core produced since the last flush, in one `sendmmsg`, before sleeping.
        udp.flush();
        if let Some(until) = leaving {
            let live = core.live();
            if (live.calls == 0 && live.client_txns == 0) || std::time::Instant::now() >= until {
                tracing::info!(calls = live.calls, unanswered = live.client_txns, "every call hung up; stopping");
                return Stop::HangUpAll;
            }
        }
        let deadline = core.poll_timeout().map(|(t, _)| t);
        if deadline != armed {
            armed = deadline;
            timer.as_mut().reset(deadline.map(|t| tokio::time::Instant::from_std(clock.instant_at(t))).unwrap_or_else(far));
        }
        tokio::select! {
            r = udp.readable() => match r {
                Ok(()) => {
                    udp.recv_batch(&mut rx_batch);
                    let mut media_queued = false;
                    for i in 0..rx_batch.len() {
                        let Some((from, bytes)) = rx_batch.get(i) else { break };
                        on_datagram(core, &udp, &tcp_ctx, clock, dual_stack::canonical(from), bytes);
                        // The core's contract: drain after each input.
                        media_queued |= drain(core, &mut udp, &mut conns, &tcp_ctx, media, &mut *api, clock, journal, cluster.ops.as_ref());
                    }
                    // One wake-up of the media threads for the whole batch (their commands are queued in order).
                    if media_queued {
                        media.wake();
                    }
                }
                Err(e) => tracing::debug!(error = %e, "UDP socket not readable"),
            },
            Some(ev) = tcp_rx.recv() => {
                if let Some((peer, bytes)) = on_tcp_event(&mut conns, ev) {
                    core.handle_sip(clock.now(), peer, &bytes);
                }
            }
            Some(req) = api.rx.recv() => api_link::serve(core, media, clock.now(), req, &mut api.deferred, &api.reloader),
            _ = hup.recv() => {
                // SIGHUP: the TLS certificate and the configuration file (issue 21).
                let _ = api.reloader.reload(core, media, conns.tls.as_ref(), clock.now(), "SIGHUP");
            }
            Some(input) = recv_or_never(cluster.inputs.as_deref_mut()) => core.handle_cluster(input, clock.now()),
            Some(report) = recv_or_never(media_reports.as_mut()) => core.handle_media_report(clock.now(), report),
            Some(done) = recv_or_never(durable.as_deref_mut()) => {
                // The journal writer synced (or failed to sync) these groups: the core releases what it held
                // back for them (a park's 200 OK) or refuses in its place. Drained at the top of the loop.
                let now = clock.now();
                let ok = done.result.is_ok();
                for token in done.tokens {
                    core.handle_journal_durable(token, ok, now);
                }
            }
            _ = load_tick.tick() => core.handle_media_load(clock.now(), &media.loads()),
            _ = drain_toggle.recv() => {
                // SIGUSR1: drain mode on/off (new parks get 503; see core/proxy.rs).
                let on = !core.is_draining();
                core.set_draining(on);
            }
            _ = timer.as_mut() => {
                // Fired: re-arm below even if the core reports the same deadline again.
                armed = None;
                timer.as_mut().reset(far());
            }
            how = &mut shutdown, if leaving.is_none() => match how {
                Stop::KeepCalls => {
                    let live = core.live();
                    tracing::info!(calls = live.calls, "stopping; every call is kept (journaled, restored at the next start; no BYE sent)");
                    return Stop::KeepCalls;
                }
                Stop::HangUpAll => {
                    // No new parks while the BYEs go out: they would be journaled and outlive the exit.
                    core.set_draining(true);
                    let r = core.handle_command(clock.now(), Command::HangupAll);
                    tracing::warn!(outcome = ?r, "SIGUSR2: hanging up every call, then stopping");
                    leaving = Some(std::time::Instant::now() + HANGUP_LINGER);
                }
            },
        }
        // Check the clock, not only the sleep (a starved Sleep can report late; quinn#2677).
        if let Some((t, _)) = core.poll_timeout() {
            let now = clock.now();
            if t <= now {
                core.handle_timeout(now);
            }
        }
    }
}

/// A TCP/TLS connection's event: an opened or closed connection updates `conns`; a message is returned, for
/// the core (a TLS peer's address is learned as an alias first).
pub(super) fn on_tcp_event(conns: &mut Conns, ev: TcpEvent) -> Option<(Peer, Bytes)> {
    match ev {
        TcpEvent::Message { peer, bytes } => {
            if peer.transport == Transport::Tls {
                conns.aliases.learn(peer.addr, &bytes);
            }
            return Some((peer, bytes));
        }
        TcpEvent::Opened { peer, conn, writer } => {
            conns.open.insert(peer, (conn, writer));
        }
        TcpEvent::Closed { peer, conn, last_words } => {
            // Dropping the writer lets the connection flush what is queued (answers to its earlier
            // messages, then these last words) and close.
            if conns.open.get(&peer).is_some_and(|(c, _)| *c == conn) {
                if peer.transport == Transport::Tls {
                    conns.aliases.forget(peer.addr);
                }
                if let Some((_, w)) = conns.open.remove(&peer) {
                    if let Some(b) = last_words {
                        let _ = w.try_send(b);
                    }
                }
            }
        }
    }
    None
}

/// An event of the core: logged (`parkd::events`), counted and published to the API's subscribers.
pub(super) fn report_event(metrics: &super::metrics::Metrics, hub: &super::events_hub::EventHub, clock: &Clock, ev: crate::core::ParkEvent) {
    if tracing::enabled!(target: "parkd::events", tracing::Level::INFO) {
        match serde_json::to_string(&ev) {
            Ok(json) => tracing::info!(target: "parkd::events", event = %json, "park event"),
            Err(_) => tracing::info!(target: "parkd::events", ?ev, "park event"),
        }
    }
    metrics.on_event(&ev);
    hub.publish(ev, clock.now().as_millis());
}

/// SIGUSR1, which toggles drain mode (never fires where signals do not exist or cannot be installed).
pub(super) struct DrainSignal {
    #[cfg(unix)]
    usr1: Option<tokio::signal::unix::Signal>,
}

impl DrainSignal {
    pub(super) fn new() -> DrainSignal {
        #[cfg(unix)]
        {
            let usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1());
            if let Err(e) = &usr1 {
                tracing::warn!(error = %e, "cannot install the SIGUSR1 handler; drain mode only from the config");
            }
            DrainSignal { usr1: usr1.ok() }
        }
        #[cfg(not(unix))]
        DrainSignal {}
    }

    pub(super) async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.usr1.as_mut() {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

/// The cluster's io as the driver loop sees it (issue 18): operations out, replies/messages/link state in.
struct ClusterIo<'a> {
    ops: Option<mpsc::UnboundedSender<(crate::cluster::OpId, crate::cluster::RedisOp)>>,
    inputs: Option<&'a mut mpsc::UnboundedReceiver<crate::core::ClusterInput>>,
}

/// The next message of an optional channel (the cluster's io, the media threads' reports, the journal's
/// completions), or never when there is none.
pub(super) async fn recv_or_never<T>(rx: Option<&mut mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One datagram: checked against the message limits (size, header count), then handed to the core. One over a
/// limit is answered (413 / 400) when it can be, and refused.
fn on_datagram(core: &mut Core, udp: &SipUdp, tcp: &TcpContext, clock: &Clock, from: SocketAddr, bytes: &[u8]) {
    match crate::sip::check_datagram(bytes, &tcp.limits.frame) {
        Ok(()) => core.handle_sip(clock.now(), Peer { transport: Transport::Udp, addr: from }, bytes),
        Err(e) => {
            tcp.refuse(Refusal::of_framing(&e), from.ip());
            if let Some(answer) = e.response_bytes() {
                let _ = udp.try_send_to(&answer, udp.destination(from));
            }
        }
    }
}

/// The SIP UDP socket, the address it is bound to (a dual-stack one sends to IPv4 peers IPv4-mapped), and the
/// datagrams the core produced since the last [`SipUdp::flush`].
pub(super) struct SipUdp {
    pub(super) sock: UdpSocket,
    ip: std::net::IpAddr,
    out: SendBatch,
}

impl SipUdp {
    /// Receives every datagram already queued into `batch`, in one `recvmmsg`. Fewer than a batch means the queue
    /// was emptied: `WouldBlock` is reported so tokio clears the readiness now instead of after a second, empty
    /// receive (a datagram arriving meanwhile brings a new edge from epoll).
    pub(super) fn recv_batch(&self, batch: &mut RecvBatch) {
        let fd = self.sock.as_raw_fd();
        batch.clear();
        let r = self.sock.try_io(Interest::READABLE, || match batch.recv(fd) {
            Ok(true) => Err(std::io::ErrorKind::WouldBlock.into()),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        });
        if let Err(e) = r.as_ref().map_err(std::io::Error::kind) {
            if e != std::io::ErrorKind::WouldBlock {
                tracing::debug!(error = ?e, "UDP receive error");
            }
        }
    }

    pub(super) fn new(sock: UdpSocket) -> SipUdp {
        let ip = sock.local_addr().map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        SipUdp { sock, ip, out: SendBatch::new() }
    }

    /// Queues `bytes` for `to`; sent at the next [`flush`](Self::flush), before the driver sleeps.
    pub(super) fn queue(&mut self, to: SocketAddr, bytes: Bytes) {
        let to = self.destination(to);
        self.out.push(bytes, to);
    }

    /// Sends what is queued, in order, in one `sendmmsg` per [`super::udp_batch::BATCH`] datagrams.
    pub(super) fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let f = self.out.flush(self.sock.as_raw_fd());
        if let Some((to, error)) = f.first_error {
            tracing::warn!(%to, ?error, failed = f.failed, "SIP UDP send failed");
        }
    }

    /// `to` in the form this socket sends to.
    pub(super) fn destination(&self, to: SocketAddr) -> SocketAddr {
        dual_stack::for_socket(to, self.ip)
    }
}

impl std::ops::Deref for SipUdp {
    type Target = UdpSocket;
    fn deref(&self) -> &UdpSocket {
        &self.sock
    }
}

/// Queues `bytes` on the connection to `to` (TCP or TLS), opening one when there is none: for TLS, first the
/// connection a peer opened under that address ([`Aliases`], RFC 5923 style). A connection whose queue is full
/// (its peer does not read) is dropped.
pub(super) fn send_stream(conns: &mut Conns, tcp: &TcpContext, mut to: Peer, bytes: Bytes) {
    if to.transport == Transport::Tls && !conns.open.contains_key(&to) {
        if let Some(addr) = conns.aliases.resolve(to.addr) {
            to.addr = addr;
        }
    }
    let bytes = match conns.open.get(&to) {
        Some((_, w)) => match w.try_send(bytes) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => {
                conns.open.remove(&to);
                conns.aliases.forget(to.addr);
                tcp.refuse(Refusal::TcpBacklog, to.addr.ip());
                return;
            }
            Err(mpsc::error::TrySendError::Closed(b)) => b,
        },
        None => bytes,
    };
    conns.open.remove(&to);
    let (w, r) = tcp::outbound_queue();
    let _ = w.try_send(bytes);
    let conn = ConnId::next();
    match (to.transport, &conns.tls) {
        (Transport::Tls, Some(t)) => {
            tokio::spawn(tls::connect(to.addr, conn, r, tcp.clone(), t.clone()));
        }
        (Transport::Tls, None) => {
            tracing::warn!(to = %to.addr, "a message for a TLS destination, but TLS is not configured (tls_cert/tls_key): dropped");
            return;
        }
        _ => {
            tokio::spawn(tcp::connect(to.addr, conn, r, tcp.clone()));
        }
    }
    conns.open.insert(to, (conn, w));
}

/// Drains the core's output until `None`: SIP over UDP is queued for the loop's next flush (one `sendmmsg`, before
/// it sleeps), over TCP/TLS handed to its connection; media commands are queued for their threads
/// (the caller wakes them: true when some were queued), events are logged, counted and published.
/// Hands a journal group to the writer. One it refuses (stopped, too large) counts as a failed sync: the core
/// answers in place of what it held for it. With journaling off (`journal = false`) the core emits none, so
/// there is nothing to keep without a writer.
pub(super) fn submit_journal(core: &mut Core, journal: Option<&JournalWriter>, records: Vec<crate::journal::Record>, token: Option<crate::journal::JournalToken>, now: crate::time::Time) {
    let Some(w) = journal else { return };
    if let Err(e) = w.submit(records, token) {
        tracing::error!(error = %e, "cannot journal a change");
        if let Some(t) = token {
            core.handle_journal_durable(t, false, now);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn drain(
    core: &mut Core,
    udp: &mut SipUdp,
    conns: &mut Conns,
    tcp: &TcpContext,
    media: &Media,
    api: &mut ApiPort,
    clock: &Clock,
    journal: Option<&JournalWriter>,
    cluster: Option<&mpsc::UnboundedSender<(crate::cluster::OpId, crate::cluster::RedisOp)>>,
) -> bool {
    let mut media_queued = false;
    while let Some(out) = core.poll_output() {
        match out {
            Output::Sip { to, bytes } => {
                match to.transport {
                Transport::Udp => udp.queue(to.addr, bytes),
                Transport::Tcp | Transport::Tls => send_stream(conns, tcp, to, bytes),
                }
            }
            Output::Media(cmd) => media_queued |= media.queue(cmd),
            Output::Event(ev) => report_event(&api.metrics, &api.hub, clock, ev),
            Output::Cluster { op, cmd } => {
                let sent = cluster.is_some_and(|c| c.send((op, cmd)).is_ok());
                if !sent {
                    // No io task: the operation fails at once (the room then answers its claim Unavailable).
                    let result = Err(crate::cluster::OpError::Connection("no cluster link".into()));
                    core.handle_cluster(crate::core::ClusterInput::Reply { op, result }, clock.now());
                }
            }
            Output::CommandDone { ticket, result } => api.deferred.answer(ticket, result),
            Output::Journal { records, token } => submit_journal(core, journal, records, token, clock.now()),
        }
    }
    media_queued
}
