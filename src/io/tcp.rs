//! SIP over TCP: accept and connect, frame the byte stream by Content-Length, and write queued messages.
//! Each connection is two small tasks; the core sees whole messages tagged with the peer address.

use crate::sip::framing::StreamFramer;
use bytes::Bytes;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What TCP tasks tell the core task.
#[derive(Debug)]
pub enum TcpEvent {
    Opened { peer: SocketAddr, writer: mpsc::UnboundedSender<Bytes> },
    Message { peer: SocketAddr, bytes: Bytes },
    Closed { peer: SocketAddr },
}

pub async fn accept_loop(listener: TcpListener, events: mpsc::Sender<TcpEvent>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (w, r) = mpsc::unbounded_channel();
                if events.send(TcpEvent::Opened { peer, writer: w }).await.is_err() {
                    return;
                }
                tokio::spawn(serve(stream, peer, r, events.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Opens a connection to `peer` for messages parkd sends first (e.g. a BYE to a TCP phone that dropped its
/// connection), then serves it like an accepted one.
pub async fn connect(peer: SocketAddr, outbound: mpsc::UnboundedReceiver<Bytes>, events: mpsc::Sender<TcpEvent>) {
    match TcpStream::connect(peer).await {
        Ok(stream) => serve(stream, peer, outbound, events).await,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "TCP connect failed");
            let _ = events.send(TcpEvent::Closed { peer }).await;
        }
    }
}

async fn serve(stream: TcpStream, peer: SocketAddr, mut outbound: mpsc::UnboundedReceiver<Bytes>, events: mpsc::Sender<TcpEvent>) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(b) = outbound.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    'read: loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        framer.push(&buf[..n]);
        loop {
            match framer.next_message() {
                Ok(Some(bytes)) => {
                    if events.send(TcpEvent::Message { peer, bytes }).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "closing TCP connection: bad framing");
                    break 'read;
                }
            }
        }
    }
    writer.abort();
    let _ = events.send(TcpEvent::Closed { peer }).await;
}
