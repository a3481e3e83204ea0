//! SIP over TCP: accept (within the connection caps) and connect, frame the byte stream
//! ([`StreamFramer`]: Content-Length, keep-alives, pings, limits), and write queued messages. SIP over TLS
//! ([`super::tls`]) runs the same connection task ([`serve`]) on the decrypted stream, under the same caps.
//!
//! Each connection is one task: it reads and frames, writes what the core task queues for it (a bounded
//! queue), answers CRLFCRLF pings with a CRLF pong, and closes the connection on silence ([`ConnTimer`]). On a
//! framing error or the peer's EOF it stops reading, hands the core task its last words (the 400 to send after
//! the answers to every earlier message) and flushes them before closing.

use super::conn_limits::{ConnCounter, ConnTimer, Refusal, RefusalLog, SipLimits, CLOSE_GRACE, OUTBOUND_QUEUE, WRITE_TIMEOUT};
use super::metrics::Metrics;
use crate::sip::framing::{Frame, StreamFramer};
use crate::sip::{Peer, Transport};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Tells connections apart when one peer address is reused (a stale `Closed` must not drop a new writer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

impl ConnId {
    pub fn next() -> ConnId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The sending end of a connection's bounded outbound queue.
pub type Writer = mpsc::Sender<Bytes>;

/// A new outbound queue.
pub fn outbound_queue() -> (Writer, mpsc::Receiver<Bytes>) {
    mpsc::channel(OUTBOUND_QUEUE)
}

/// What TCP and TLS tasks tell the core task (in order, on one channel); `peer` says which transport.
#[derive(Debug)]
pub enum TcpEvent {
    Opened { peer: Peer, conn: ConnId, writer: Writer },
    Message { peer: Peer, bytes: Bytes },
    /// The connection stopped reading. The core task drops its writer after queueing `last_words` (the answer
    /// to a framing error), so the connection flushes every answer queued before and then closes.
    Closed { peer: Peer, conn: ConnId, last_words: Option<Bytes> },
}

/// What every connection task (and the UDP path of the core task) shares.
#[derive(Clone)]
pub struct TcpContext {
    pub limits: Arc<SipLimits>,
    pub metrics: Arc<Metrics>,
    pub refusal_log: Arc<Mutex<RefusalLog>>,
    pub events: mpsc::Sender<TcpEvent>,
    /// The accepted connections, TCP and TLS together, within `[limits]`.
    pub counter: Arc<Mutex<ConnCounter>>,
}

impl TcpContext {
    /// Counts and logs a refusal of `source`.
    pub fn refuse(&self, why: Refusal, source: std::net::IpAddr) {
        why.record(source, std::time::Instant::now(), &self.metrics, &self.refusal_log);
    }

    /// A context whose connection counter applies `limits`.
    pub fn new(limits: super::conn_limits::SipLimits, metrics: Arc<Metrics>, events: mpsc::Sender<TcpEvent>) -> TcpContext {
        let counter = Arc::new(Mutex::new(ConnCounter::new(limits.clone())));
        TcpContext { limits: Arc::new(limits), metrics, refusal_log: Default::default(), events, counter }
    }

    /// Accepts `stream` from `peer` within the connection caps (its [`Slot`] is held until the connection task
    /// ends), or closes it at once with a reset, counted and logged.
    pub fn admit(&self, stream: &TcpStream, peer: SocketAddr) -> Option<Slot> {
        let admitted = self.counter.lock().map_or(Ok(()), |mut c| c.try_open(peer.ip()));
        match admitted {
            Ok(()) => Some(Slot { counter: self.counter.clone(), peer }),
            Err(why) => {
                // Closed at once with a reset: no task, no buffer, no TIME_WAIT. (A zero linger never blocks
                // the thread, the reason tokio deprecated `set_linger`.)
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(std::time::Duration::ZERO));
                self.refuse(why, peer.ip());
                None
            }
        }
    }
}

pub async fn accept_loop(listener: TcpListener, ctx: TcpContext) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let addr = super::dual_stack::canonical(addr);
                let Some(slot) = ctx.admit(&stream, addr) else { continue };
                let _ = stream.set_nodelay(true);
                let peer = Peer { transport: Transport::Tcp, addr };
                let conn = ConnId::next();
                let (w, r) = outbound_queue();
                if ctx.events.send(TcpEvent::Opened { peer, conn, writer: w }).await.is_err() {
                    return;
                }
                tokio::spawn(serve(stream, peer, conn, r, ctx.clone(), Some(slot)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// An accepted connection's place in the [`ConnCounter`], given back when the connection task ends.
pub struct Slot {
    counter: Arc<Mutex<ConnCounter>>,
    peer: SocketAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut c) = self.counter.lock() {
            c.close(self.peer.ip());
        }
    }
}

/// Opens a connection to `peer` for messages parkd sends first (e.g. a BYE to a TCP phone that dropped its
/// connection), then serves it like an accepted one.
pub async fn connect(addr: SocketAddr, conn: ConnId, outbound: mpsc::Receiver<Bytes>, ctx: TcpContext) {
    let peer = Peer { transport: Transport::Tcp, addr };
    match tokio::time::timeout(WRITE_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            serve(stream, peer, conn, outbound, ctx, None).await
        }
        Ok(Err(e)) => {
            tracing::warn!(peer = %addr, error = %e, "TCP connect failed");
            let _ = ctx.events.send(TcpEvent::Closed { peer, conn, last_words: None }).await;
        }
        Err(_) => {
            tracing::warn!(peer = %addr, "TCP connect timed out");
            let _ = ctx.events.send(TcpEvent::Closed { peer, conn, last_words: None }).await;
        }
    }
}

/// How a connection ended.
enum End {
    /// Stop reading, let the core task queue its last answers, flush them, close.
    Flush { last_words: Option<Bytes> },
    /// Close now (a timeout or a write error).
    Abort,
}

/// One connection's task (TCP, or TLS once its handshake is done): frame what it reads, write what is queued.
pub async fn serve<S>(stream: S, peer: Peer, conn: ConnId, mut outbound: mpsc::Receiver<Bytes>, ctx: TcpContext, slot: Option<Slot>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let addr = peer.addr;
    let mut framer = StreamFramer::with_limits(ctx.limits.frame);
    let mut timer = ConnTimer::new(std::time::Instant::now(), slot.is_some(), &ctx.limits);
    let mut buf = vec![0u8; 4096];
    let end = 'conn: loop {
        let deadline = timer.deadline().map(|(at, _)| tokio::time::Instant::from_std(at));
        tokio::select! {
            r = rd.read(&mut buf) => {
                let n = match r {
                    Ok(0) | Err(_) => break 'conn End::Flush { last_words: None },
                    Ok(n) => n,
                };
                timer.activity(std::time::Instant::now());
                framer.push(buf.get(..n).unwrap_or_default());
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(bytes))) => {
                            timer.message(std::time::Instant::now());
                            if ctx.events.send(TcpEvent::Message { peer, bytes }).await.is_err() {
                                break 'conn End::Abort;
                            }
                        }
                        Ok(Some(Frame::Ping)) => {
                            // RFC 5626 §3.5.1: answer a CRLFCRLF ping with a CRLF pong.
                            if let Err(stalled) = write(&mut wr, b"\r\n").await {
                                break 'conn abort(stalled, addr, &ctx);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            ctx.refuse(Refusal::of_framing(&e), addr.ip());
                            tracing::debug!(peer = %addr, transport = peer.transport.as_str(), error = %e, "closing connection: bad framing");
                            break 'conn End::Flush { last_words: e.response_bytes() };
                        }
                    }
                }
            }
            m = outbound.recv() => match m {
                Some(bytes) => {
                    if let Err(stalled) = write(&mut wr, &bytes).await {
                        break 'conn abort(stalled, addr, &ctx);
                    }
                    timer.activity(std::time::Instant::now());
                }
                // The core task dropped this connection (its queue overflowed): close.
                None => break 'conn End::Abort,
            },
            _ = sleep_until(deadline) => {
                if let Some(why) = timer.expired(std::time::Instant::now()) {
                    ctx.refuse(why, addr.ip());
                    break 'conn End::Abort;
                }
            }
        }
    };
    match end {
        End::Abort => {
            let _ = ctx.events.send(TcpEvent::Closed { peer, conn, last_words: None }).await;
        }
        End::Flush { last_words } => {
            let _ = ctx.events.send(TcpEvent::Closed { peer, conn, last_words }).await;
            // Everything queued before the core task dropped the writer, then close (bounded in time).
            let flush = async {
                while let Some(bytes) = outbound.recv().await {
                    if write(&mut wr, &bytes).await.is_err() {
                        return;
                    }
                }
                let _ = wr.shutdown().await;
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, flush).await;
        }
    }
    drop(slot);
}

/// Writes all of `bytes`. `Err(true)`: the peer did not take them within [`WRITE_TIMEOUT`]; `Err(false)`: the
/// connection failed.
async fn write<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8]) -> Result<(), bool> {
    match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(false),
        Err(_) => Err(true),
    }
}

/// A failed write ends the connection; one that stalled is a refusal (the peer does not read).
fn abort(stalled: bool, peer: SocketAddr, ctx: &TcpContext) -> End {
    if stalled {
        ctx.refuse(Refusal::TcpBacklog, peer.ip());
    }
    End::Abort
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
