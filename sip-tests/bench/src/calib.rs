//! The calibrator: a bare `sendmmsg` sender of 172-byte RTP-sized datagrams on parkd's core, to
//! measure the machine's floor cost per packet over loopback. Other ways to send the same packets, for
//! `--calib-senders`: [`crate::calib_senders`].

use std::net::{SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use crate::calib_senders::{Sender, Way};
use crate::net::{self, RecvBatch};
use crate::sys;

/// What one calibrator run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Calib {
    /// Packets per second actually sent.
    pub pps: f64,
    /// Sender thread CPU per packet, µs.
    pub us_per_pkt: f64,
    /// Sender thread CPU as % of its core.
    pub cpu_pct: f64,
    /// Datagrams the kernel took from the sender.
    pub sent: u64,
    /// Datagrams the sinks received.
    pub received: u64,
}

impl Calib {
    /// Hold streams (50 packets/s) one full core could feed at this cost per packet.
    pub fn streams_per_core(&self) -> f64 {
        if self.us_per_pkt > 0.0 { 1e6 / self.us_per_pkt / 50.0 } else { 0.0 }
    }
}

/// Sends for `dur` from a thread pinned to `cpu`: at `rate` packets/s (paced per millisecond, as
/// parkd's pacer does) or flat out when `rate` is `None`. The calling thread drains `sinks`.
pub fn run(cpu: usize, rate: Option<u64>, dur: Duration, sinks: &[UdpSocket]) -> std::io::Result<Calib> {
    run_way(Way::SendMmsg(net::BATCH), cpu, rate, dur, sinks)
}

/// [`run`], sending `way`.
pub fn run_way(way: Way, cpu: usize, rate: Option<u64>, dur: Duration, sinks: &[UdpSocket]) -> std::io::Result<Calib> {
    let dests: Vec<SocketAddrV4> = sinks
        .iter()
        .filter_map(|s| match s.local_addr() {
            Ok(std::net::SocketAddr::V4(a)) => Some(a),
            _ => None,
        })
        .collect();
    let sender = std::thread::spawn(move || -> std::io::Result<(u64, u64, Duration)> {
        let _ = sys::pin_current_thread(cpu);
        let mut sender = Sender::open(way, &dests)?;
        let mut next = 0usize;
        let cpu0 = sys::thread_cpu_ns();
        let start = Instant::now();
        let mut sent: u64 = 0;
        while start.elapsed() < dur {
            match rate {
                None => sent += sender.send(1024, &mut next) as u64,
                Some(r) => {
                    let due = (r as f64 * start.elapsed().as_secs_f64()) as u64;
                    if due > sent {
                        sent += sender.send((due - sent) as usize, &mut next) as u64;
                    }
                    let el = start.elapsed();
                    let next_ms = Duration::from_millis(el.as_millis() as u64 + 1);
                    std::thread::sleep(next_ms.saturating_sub(el));
                }
            }
        }
        Ok((sent, sys::thread_cpu_ns() - cpu0, start.elapsed()))
    });
    let mut rb = RecvBatch::new();
    let mut received = 0u64;
    let refs: Vec<&UdpSocket> = sinks.iter().collect();
    while !sender.is_finished() {
        let mut got = 0;
        for s in sinks {
            got += rb.recv(s, |_, _| {});
        }
        received += got as u64;
        if got == 0 {
            net::wait_readable(&refs, 2);
        }
    }
    let (sent, cpu_ns, el) = sender.join().map_err(|_| std::io::Error::other("calibrator thread panicked"))??;
    // Drain what is still queued.
    loop {
        let got: usize = sinks.iter().map(|s| rb.recv(s, |_, _| {})).sum();
        if got == 0 {
            break;
        }
        received += got as u64;
    }
    let secs = el.as_secs_f64();
    Ok(Calib {
        pps: sent as f64 / secs,
        us_per_pkt: if sent > 0 { cpu_ns as f64 / 1000.0 / sent as f64 } else { 0.0 },
        cpu_pct: cpu_ns as f64 / 1e9 / secs * 100.0,
        sent,
        received,
    })
}
