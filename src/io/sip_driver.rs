//! The thin tokio layer around the core: SIP over UDP and TCP, the clock, and the one sleep until the core's
//! next deadline. It owns the [`Core`]; nothing else touches it, so the core needs no lock.

use super::api_link::{self, ApiPort};
use super::clock::Clock;
use super::media_shards::Media;
use super::tcp::{self, TcpEvent};
use crate::core::{Core, Output};
use crate::sip::{Peer, Transport};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
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
    udp: UdpSocket,
    tcp: TcpListener,
}

impl SipSockets {
    pub async fn bind(addr: SocketAddr) -> Result<SipSockets, SipIoError> {
        let udp = UdpSocket::bind(addr).await.map_err(|source| SipIoError::BindUdp { addr, source })?;
        let tcp = TcpListener::bind(addr).await.map_err(|source| SipIoError::BindTcp { addr, source })?;
        Ok(SipSockets { udp, tcp })
    }
}

/// Runs the core until `shutdown` resolves. `api` brings HTTP API requests in and takes events and counts out.
pub async fn run(mut core: Core, sockets: SipSockets, media: Media, clock: Clock, mut api: ApiPort, shutdown: impl std::future::Future<Output = ()>) {
    let SipSockets { udp, tcp } = sockets;
    let (tcp_tx, mut tcp_rx) = mpsc::channel::<TcpEvent>(1024);
    tokio::spawn(tcp::accept_loop(tcp, tcp_tx.clone()));
    let mut conns: HashMap<SocketAddr, mpsc::UnboundedSender<Bytes>> = HashMap::new();
    let mut buf = vec![0u8; 65_535];
    let mut drain_toggle = DrainSignal::new();
    tokio::pin!(shutdown);
    // One timer, moved when the core's next deadline moves (not a new timer entry per datagram).
    let far = || tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
    let timer = tokio::time::sleep_until(far());
    tokio::pin!(timer);
    let mut armed: Option<crate::time::Time> = None;
    loop {
        drain(&mut core, &udp, &mut conns, &tcp_tx, &media, &api, &clock);
        let deadline = core.poll_timeout();
        if deadline != armed {
            armed = deadline;
            timer.as_mut().reset(deadline.map(|t| tokio::time::Instant::from_std(clock.instant_at(t))).unwrap_or_else(far));
        }
        tokio::select! {
            r = udp.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    api.metrics.count_sip(false, &buf[..n]);
                    core.handle_sip(clock.now(), Peer { transport: Transport::Udp, addr: from }, &buf[..n]);
                    // Take whatever else is already queued before sleeping again.
                    for _ in 0..64 {
                        match udp.try_recv_from(&mut buf) {
                            Ok((n, from)) => {
                                api.metrics.count_sip(false, &buf[..n]);
                                core.handle_sip(clock.now(), Peer { transport: Transport::Udp, addr: from }, &buf[..n])
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "UDP receive error"),
            },
            Some(ev) = tcp_rx.recv() => match ev {
                TcpEvent::Message { peer, bytes } => {
                    api.metrics.count_sip(false, &bytes);
                    core.handle_sip(clock.now(), Peer { transport: Transport::Tcp, addr: peer }, &bytes);
                }
                TcpEvent::Opened { peer, writer } => { conns.insert(peer, writer); }
                TcpEvent::Closed { peer } => { conns.remove(&peer); }
            },
            Some(req) = api.rx.recv() => api_link::serve(&mut core, &media, clock.now(), req),
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
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                return;
            }
        }
        // Check the clock, not only the sleep (a starved Sleep can report late; quinn#2677).
        if let Some(t) = core.poll_timeout() {
            let now = clock.now();
            if t <= now {
                core.handle_timeout(now);
            }
        }
    }
}

/// SIGUSR1, which toggles drain mode (never fires where signals do not exist or cannot be installed).
struct DrainSignal {
    #[cfg(unix)]
    usr1: Option<tokio::signal::unix::Signal>,
}

impl DrainSignal {
    fn new() -> DrainSignal {
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

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.usr1.as_mut() {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

fn drain(
    core: &mut Core,
    udp: &UdpSocket,
    conns: &mut HashMap<SocketAddr, mpsc::UnboundedSender<Bytes>>,
    tcp_tx: &mpsc::Sender<TcpEvent>,
    media: &Media,
    api: &ApiPort,
    clock: &Clock,
) {
    let mut media_queued = false;
    while let Some(out) = core.poll_output() {
        match out {
            Output::Sip { to, bytes } => {
                api.metrics.count_sip(true, &bytes);
                match to.transport {
                Transport::Udp => {
                    if let Err(e) = udp.try_send_to(&bytes, to.addr) {
                        tracing::warn!(to = %to.addr, error = %e, "SIP UDP send failed");
                    }
                }
                Transport::Tcp => match conns.get(&to.addr) {
                    Some(w) if w.send(bytes.clone()).is_ok() => {}
                    _ => {
                        conns.remove(&to.addr);
                        let (w, r) = mpsc::unbounded_channel();
                        let _ = w.send(bytes);
                        conns.insert(to.addr, w);
                        tokio::spawn(tcp::connect(to.addr, r, tcp_tx.clone()));
                    }
                },
                }
            }
            Output::Media(cmd) => media_queued |= media.queue(cmd),
            Output::Event(ev) => {
                if tracing::enabled!(target: "parkd::events", tracing::Level::INFO) {
                    match serde_json::to_string(&ev) {
                        Ok(json) => tracing::info!(target: "parkd::events", event = %json, "park event"),
                        Err(_) => tracing::info!(target: "parkd::events", ?ev, "park event"),
                    }
                }
                api.metrics.on_event(&ev, std::time::Instant::now());
                api.hub.publish(ev, clock.now().as_millis());
            }
        }
    }
    if media_queued {
        media.wake();
    }
}
