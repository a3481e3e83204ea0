//! The signalling floor: what the kernel alone charges a UDP server for a cycle's datagrams.
//!
//! A park → retrieve → hang-up cycle brings parkd 6 SIP datagrams (INVITE, ACK, INVITE, ACK, BYE, 200)
//! and makes it send 4 (200, 200, 200, BYE). This responder does nothing but that: a thread pinned to
//! parkd's core blocks in `recv_from` on one socket (no epoll, no timers, no parsing) and answers 4 of
//! every 6 datagrams with a 500-byte datagram. Driven at the cycle rate's datagram rate, its CPU per 6
//! datagrams is the least any user-space SIP server spends per cycle on this machine when each datagram
//! arrives on its own (one wake-up each), as they do at a few hundred cycles per second.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::net::{self, RecvBatch};
use crate::sys;

/// Datagrams a cycle brings parkd, and how many of them it answers.
pub const IN_PER_CYCLE: u64 = 6;
pub const OUT_PER_CYCLE: u64 = 4;
const REQUEST_LEN: usize = 600;
const ANSWER_LEN: usize = 500;

/// The responder's cost at one rate.
#[derive(Clone, Copy, Debug, Default)]
pub struct SipFloor {
    pub cycles_per_s: u32,
    /// Responder thread CPU per 6 datagrams in and 4 out, µs.
    pub us_per_cycle: f64,
    /// Datagrams the responder received (a check that the load arrived).
    pub received: u64,
}

/// How the responder waits for datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Responder {
    /// Blocking `recv_from` on one socket: nothing but the kernel's work.
    Blocking,
    /// A tokio current-thread runtime (epoll, readiness, a timer in the `select!`), as parkd's SIP driver.
    Tokio,
}

/// Runs the responder on `cpu` for `dur` at `rate` cycles/s; the calling thread (pinned elsewhere)
/// sends the datagrams, paced per millisecond, and drains the answers.
pub fn run(cpu: usize, rate: u32, dur: Duration, kind: Responder) -> std::io::Result<SipFloor> {
    let server = UdpSocket::bind("127.0.0.1:0")?;
    server.set_read_timeout(Some(Duration::from_millis(50)))?;
    let server_addr = server.local_addr()?;
    let client = net::loopback_socket(4 << 20)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_srv = stop.clone();
    let responder = std::thread::spawn(move || -> (u64, u64) {
        let _ = sys::pin_current_thread(cpu);
        let cpu0 = sys::thread_cpu_ns();
        let received = match kind {
            Responder::Blocking => respond_blocking(server, &stop_srv),
            Responder::Tokio => respond_tokio(server, &stop_srv),
        };
        (received, sys::thread_cpu_ns() - cpu0)
    });
    let per_s = rate as u64 * IN_PER_CYCLE;
    let (mut answer, mut plain) = ([b'A'; REQUEST_LEN], [b'P'; REQUEST_LEN]);
    answer[1] = b'!';
    plain[1] = b'!';
    let mut rb = RecvBatch::new();
    let (start, mut sent) = (Instant::now(), 0u64);
    // One datagram at a time, evenly spaced, as a cycle's messages reach parkd at these rates.
    while start.elapsed() < dur {
        let d = if sent % IN_PER_CYCLE < OUT_PER_CYCLE { &answer } else { &plain };
        let _ = client.send_to(d, server_addr);
        sent += 1;
        rb.recv(&client, |_, _| {});
        let next = Duration::from_secs_f64(sent as f64 / per_s as f64);
        std::thread::sleep(next.saturating_sub(start.elapsed()));
    }
    std::thread::sleep(Duration::from_millis(60));
    stop.store(true, Ordering::Relaxed);
    let (received, cpu_ns) = responder.join().map_err(|_| std::io::Error::other("responder thread panicked"))?;
    let cycles = received as f64 / IN_PER_CYCLE as f64;
    Ok(SipFloor { cycles_per_s: rate, us_per_cycle: if cycles > 0.0 { cpu_ns as f64 / 1000.0 / cycles } else { 0.0 }, received })
}

fn respond_blocking(server: UdpSocket, stop: &AtomicBool) -> u64 {
    let mut buf = [0u8; 2048];
    let answer = [b'S'; ANSWER_LEN];
    let mut received = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = server.recv_from(&mut buf) {
            received += 1;
            // The sender marks the datagrams to answer.
            if n > 0 && buf[0] == b'A' {
                let _ = server.send_to(&answer, from);
            }
        }
    }
    received
}

/// The same responder on tokio, shaped like parkd's SIP loop: `select!` over the socket and a timer,
/// then whatever else is queued with `try_recv_from`.
fn respond_tokio(server: UdpSocket, stop: &AtomicBool) -> u64 {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return 0 };
    rt.block_on(async {
        let _ = server.set_nonblocking(true);
        let Ok(sock) = tokio::net::UdpSocket::from_std(server) else { return 0 };
        let mut buf = [0u8; 2048];
        let answer = [b'S'; ANSWER_LEN];
        let mut received = 0u64;
        let tick = tokio::time::sleep(Duration::from_millis(50));
        tokio::pin!(tick);
        while !stop.load(Ordering::Relaxed) {
            tokio::select! {
                r = sock.recv_from(&mut buf) => {
                    let mut next = r.ok();
                    while let Some((n, from)) = next {
                        received += 1;
                        if n > 0 && buf[0] == b'A' {
                            let _ = sock.try_send_to(&answer, from);
                        }
                        next = sock.try_recv_from(&mut buf).ok();
                    }
                }
                _ = tick.as_mut() => tick.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(50)),
            }
        }
        received
    })
}
