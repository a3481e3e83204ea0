//! Several media threads, one per block of the RTP range (`[server] media_threads`): what the SIP
//! driver and the API talk to. The blocks are those of the [`ShardPlan`] the core allocates legs from;
//! commands go to the thread owning the leg's port (both legs of a `Bridge` are in one block, see
//! [`crate::park::port_shards`]); counters are summed over threads.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::Ordering;

use super::media_thread::{self, MediaHandle, MediaIoError};
use crate::config::RtpSender;
use crate::media::{HoldMusic, MediaCommand, MediaPlane, MediaReport, MediaStats};
use crate::park::shard_plan::{ShardPlan, MAX_MEDIA_THREADS};

/// The io-side counters of every media thread, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoTotals {
    pub send_errors: u64,
    pub send_would_block: u64,
    pub recv_errors: u64,
}

/// The running media threads. Dropping it stops and joins them all.
pub struct Media {
    plan: ShardPlan,
    /// Thread `i` serves block `i` of `plan`.
    shards: Vec<MediaHandle>,
    /// Bit `i` set when thread `i` has commands queued since the last [`Media::wake`].
    queued: Cell<u64>,
    /// The threads' reports to the core, until the SIP driver takes the receiver ([`Media::take_reports`]).
    reports: RefCell<Option<tokio::sync::mpsc::UnboundedReceiver<MediaReport>>>,
}

// One bit of `Media::queued` per thread.
const _: () = assert!(MAX_MEDIA_THREADS as u32 <= u64::BITS);

/// What [`spawn`] needs to start each thread.
pub struct MediaSetup {
    pub bind_ip: IpAddr,
    /// The blocks, one thread each: the plan the core hands out legs from.
    pub plan: ShardPlan,
    /// `[server] rtp_sender`: each thread sets up its own io_uring (or not).
    pub rtp_sender: RtpSender,
    pub music: Vec<HoldMusic>,
    /// Courtesy tones, one per lot (`MediaCommand::Courtesy` indexes them); empty: the built-in tone.
    pub tones: Vec<HoldMusic>,
    pub seed: u64,
}

/// The ports media thread `i` binds: block `i` of the plan (its even ports; the thread skips odd ones).
fn thread_ports(plan: &ShardPlan, i: usize) -> Option<RangeInclusive<u16>> {
    plan.blocks().get(i).map(|b| b.lo..=b.hi)
}

/// The media thread a command for a leg on `port` goes to.
fn route(plan: &ShardPlan, port: u16) -> Option<usize> {
    plan.shard_of(port)
}

/// Starts one media thread per block of the plan.
pub fn spawn(setup: MediaSetup) -> Result<Media, MediaIoError> {
    let mut shards = Vec::with_capacity(setup.plan.threads());
    let (tx, reports) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..setup.plan.threads() {
        let Some(ports) = thread_ports(&setup.plan, i) else { break };
        // Each thread's SSRCs and sequence numbers come from its own seed.
        let mut plane = MediaPlane::new(setup.music.clone(), setup.seed.wrapping_add(i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        plane.set_tones(setup.tones.clone());
        shards.push(media_thread::spawn_reporting(setup.bind_ip, ports, setup.plan.legs_per_port(), setup.rtp_sender, plane, Some(tx.clone()))?);
    }
    if shards.is_empty() {
        return Err(MediaIoError::NoShards);
    }
    Ok(Media { plan: setup.plan, shards, queued: Cell::new(0), reports: RefCell::new(Some(reports)) })
}

impl Media {
    /// The media threads' reports (key presses of parked callers, NAT latches) for the core: the receiver, once (the SIP
    /// driver takes it; `None` afterwards).
    pub fn take_reports(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<MediaReport>> {
        self.reports.borrow_mut().take()
    }

    /// Queues a command for the thread owning its leg and wakes that thread.
    pub fn send(&self, cmd: MediaCommand) {
        if self.queue(cmd) {
            self.wake();
        }
    }

    /// Queues a command without waking; call [`Media::wake`] once after a batch. False when the
    /// thread is gone.
    pub fn queue(&self, cmd: MediaCommand) -> bool {
        let port = match &cmd {
            MediaCommand::Hold { leg, .. }
            | MediaCommand::Update { leg, .. }
            | MediaCommand::Stop { leg }
            | MediaCommand::DtmfPayloadType { leg, .. }
            | MediaCommand::Announce { leg, .. }
            | MediaCommand::Stream { leg, .. }
            | MediaCommand::Srtp { leg, .. }
            | MediaCommand::RtcpMux { leg, .. }
            | MediaCommand::Courtesy { leg, .. }
            | MediaCommand::RtcpPort { leg, .. } => leg.port(),
            MediaCommand::SetMusic { .. } | MediaCommand::SetTone { .. } => {
                // Every thread plays every lot's music and tone.
                let mut ok = true;
                for (i, h) in self.shards.iter().enumerate() {
                    ok &= h.queue(cmd.clone());
                    self.queued.set(self.queued.get() | 1 << i);
                }
                return ok;
            }
            MediaCommand::Bridge { a, b } => {
                if route(&self.plan, a.port()) != route(&self.plan, b.port()) {
                    tracing::error!(a = a.port(), b = b.port(), "bridge across media threads; not relayed");
                    return false;
                }
                a.port()
            }
        };
        let Some((i, h)) = route(&self.plan, port).and_then(|i| Some((i, self.shards.get(i)?))) else {
            tracing::error!(port, "media command for a port outside the RTP range; dropped");
            return false;
        };
        let ok = h.queue(cmd);
        if ok {
            self.queued.set(self.queued.get() | 1 << i);
        }
        ok
    }

    /// Has every thread with queued commands apply them (see [`MediaHandle::wake`]).
    pub fn wake(&self) {
        let mut q = self.queued.replace(0);
        while q != 0 {
            let i = q.trailing_zeros() as usize;
            q &= q - 1;
            if let Some(h) = self.shards.get(i) {
                h.wake();
            }
        }
    }

    /// Number of media threads.
    pub fn threads(&self) -> usize {
        self.shards.len()
    }

    /// Every bound RTP port, ascending.
    pub fn ports(&self) -> Vec<u16> {
        self.shards.iter().flat_map(|h| h.ports().iter().copied()).collect()
    }

    /// Each thread's measured load (index = thread), for the capacity guard and `parkd_media_load`.
    pub fn loads(&self) -> Vec<crate::core::admission::capacity::MediaLoad> {
        self.shards.iter().map(|h| h.load()).collect()
    }

    /// The io counters of all threads, summed.
    pub fn io_totals(&self) -> IoTotals {
        let mut t = IoTotals::default();
        for h in &self.shards {
            let c = h.io_counters();
            t.send_errors += c.send_errors.load(Ordering::Relaxed);
            t.send_would_block += c.send_would_block.load(Ordering::Relaxed);
            t.recv_errors += c.recv_errors.load(Ordering::Relaxed);
        }
        t
    }

    /// The planes' counters, summed (each at most ~0.5 s old).
    pub fn stats(&self) -> MediaStats {
        let mut total = MediaStats::default();
        for h in &self.shards {
            let s = h.stats();
            total.legs += s.legs;
            total.hold_streams += s.hold_streams;
            total.bridged_pairs += s.bridged_pairs;
            total.hold_sent += s.hold_sent;
            total.relayed += s.relayed;
            total.dropped_invalid += s.dropped_invalid;
            total.dropped_unrelayable += s.dropped_unrelayable;
            total.dropped_ambiguous += s.dropped_ambiguous;
            total.absorbed += s.absorbed;
            total.srtp_auth_failed += s.srtp_auth_failed;
            total.srtp_protect_failed += s.srtp_protect_failed;
            total.srtcp_auth_failed += s.srtcp_auth_failed;
            total.rtcp_received += s.rtcp_received;
            total.rtcp_relayed += s.rtcp_relayed;
            total.rtcp_dropped += s.rtcp_dropped;
            total.rtcp_sent += s.rtcp_sent;
            for (a, b) in total.pacer_lateness.buckets.iter_mut().zip(s.pacer_lateness.buckets) {
                *a += b;
            }
            total.pacer_lateness.sum_us += s.pacer_lateness.sum_us;
            total.pacer_lateness.count += s.pacer_lateness.count;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{parse, write_header, Pt, SeqNo, Ssrc};
    use crate::media::{Codec, MediaLegId, MusicId};
    use std::net::UdpSocket;
    use std::time::Duration;

    fn spawn_two() -> Media {
        let music = HoldMusic::from_pcm(&[500; 1600]).unwrap();
        let start = 42_000 + (std::process::id() % 1000) as u16 * 8;
        for k in 0..20u16 {
            let lo = start + k * 8;
            let plan = ShardPlan::new(lo, lo + 7, 1, 2).unwrap();
            let setup = MediaSetup { bind_ip: "127.0.0.1".parse().unwrap(), plan, rtp_sender: RtpSender::Auto, music: vec![music.clone()], tones: Vec::new(), seed: 9 };
            match spawn(setup) {
                Ok(m) => return m,
                Err(MediaIoError::Bind { .. } | MediaIoError::BindRtcp { .. }) => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no free loopback ports");
    }

    #[test]
    fn each_thread_serves_its_block_and_bridges_relay_within_a_block() {
        let m = spawn_two();
        assert_eq!(m.threads(), 2);
        let ports = m.ports();
        assert_eq!(ports.len(), 4);
        let (first_block, second_block) = (ports[0], ports[2]);
        let phone = |_: u8| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            s
        };
        let (a, b) = (phone(0), phone(1));
        m.send(MediaCommand::Hold { leg: MediaLegId::solo(first_block), remote: a.local_addr().unwrap(), codec: Codec::Pcmu, music: MusicId(0) });
        m.send(MediaCommand::Hold { leg: MediaLegId::solo(second_block), remote: b.local_addr().unwrap(), codec: Codec::Pcmu, music: MusicId(0) });
        let mut buf = [0u8; 2048];
        for (sock, port) in [(&a, first_block), (&b, second_block)] {
            let (n, from) = sock.recv_from(&mut buf).expect("hold music from each thread");
            assert_eq!((n, from.port()), (172, port));
            assert!(parse(&buf[..n]).is_some());
        }
        // A bridge across the blocks is refused (the engine never asks for one).
        assert!(!m.queue(MediaCommand::Bridge { a: MediaLegId::solo(first_block), b: MediaLegId::solo(second_block) }));
        // Within the second block: b's party is bridged with a new leg on the block's other port.
        let c = phone(2);
        m.queue(MediaCommand::Update { leg: MediaLegId::solo(ports[3]), remote: c.local_addr().unwrap(), codec: Codec::Pcmu, send: true });
        m.queue(MediaCommand::Bridge { a: MediaLegId::solo(second_block), b: MediaLegId::solo(ports[3]) });
        m.wake();
        let mut pkt = write_header(Pt::from(Codec::Pcmu), false, SeqNo(1), 1, Ssrc(77)).to_vec();
        pkt.extend_from_slice(&[0x11; 160]);
        let mut relayed = false;
        for _ in 0..10 {
            c.send_to(&pkt, ("127.0.0.1", ports[3])).unwrap();
            while let Ok((n, from)) = b.recv_from(&mut buf) {
                if n == 172 && from.port() == second_block && buf[12..172].iter().all(|x| *x == 0x11) {
                    relayed = true;
                    break;
                }
            }
            if relayed {
                break;
            }
        }
        assert!(relayed, "the second thread relays between its two legs");
        assert_eq!(m.io_totals().send_errors, 0);
    }

    /// The core hands out legs from [`PortShards`] over a plan, io binds and routes by the same plan: for
    /// every thread count 1..=100 (above 64 or the port pairs, what the core does with an unvalidated
    /// config) and several ranges, each leg the core hands out is bound by the thread io routes it to, and
    /// a bridge partner taken beside a leg is routed to that leg's thread.
    #[test]
    fn every_leg_the_core_hands_out_is_bound_by_the_thread_io_routes_it_to() {
        use crate::park::port_shards::PortShards;
        use crate::park::ports::PortPool;
        use crate::time::Time;
        let now = Time::from_secs(1_000);
        for (lo, hi) in [(10_000, 10_999), (10_001, 10_022), (20_000, 20_003), (30_000, 30_255), (40_001, 40_200)] {
            let pairs = PortPool::all_ports(lo, hi).count();
            for legs_per_port in [1, 3] {
                for threads in 1..=100u16 {
                    let valid = ShardPlan::new(lo, hi, legs_per_port, threads);
                    assert_eq!(valid.is_ok(), usize::from(threads) <= pairs.min(64), "{lo}-{hi} with {threads} threads");
                    let server = crate::config::ServerConfig {
                        rtp_ports: crate::config::NumRange { lo: u32::from(lo), hi: u32::from(hi), width: 5 },
                        rtp_legs_per_port: legs_per_port,
                        media_threads: threads,
                        ..Default::default()
                    };
                    let plan = ShardPlan::for_server(&server);
                    if let Ok(v) = &valid {
                        assert_eq!(v, &plan, "a validated config and the core's plan are one plan");
                    }
                    let mut core = PortShards::new(&plan);
                    let bound = |port: u16| route(&plan, port).and_then(|i| thread_ports(&plan, i)).is_some_and(|r| r.contains(&port) && port.is_multiple_of(2));
                    let mut legs = 0;
                    while let Some(parked) = core.take(now) {
                        legs += 1;
                        assert!(bound(parked.port()), "{lo}-{hi}, {threads} threads: port {} of a parked leg", parked.port());
                        if let Some(partner) = core.take_beside(now, parked) {
                            legs += 1;
                            assert_eq!(route(&plan, partner.port()), route(&plan, parked.port()), "a bridge stays in one thread");
                            assert!(bound(partner.port()));
                        }
                    }
                    for (i, b) in plan.blocks().iter().enumerate() {
                        let rtcp = b.rtcp_port();
                        assert!(thread_ports(&plan, i).is_some_and(|r| crate::park::shard_plan::rtcp_port_of(*r.start() + r.start() % 2) == rtcp), "the thread binds the RTCP port the core names");
                        assert!(rtcp % 2 == 1 && core.plan().shard_of(rtcp).is_none(), "the RTCP port is never a leg's");
                    }
                    assert_eq!(legs, pairs * usize::from(legs_per_port), "{lo}-{hi}, {threads} threads: every leg handed out once");
                    assert_eq!(plan.blocks().iter().map(|b| PortPool::all_ports(b.lo, b.hi).count()).sum::<usize>(), pairs, "the threads bind every port once");
                }
            }
        }
    }
}
