//! The RTCP side of [`MediaPlane`] (see [`super::super::rtcp`] for the packets): RTCP received from a leg,
//! relayed to its bridge peer, and the Sender Reports of hold streams.
//!
//! A leg's RTCP travels one of two ways:
//! * **rtcp-mux** (RFC 5761): on the leg's RTP port, for a leg whose offer and answer carried `a=rtcp-mux`
//!   ([`MediaCommand::RtcpMux`]), or one that sent valid RTCP on the RTP port.
//! * **A separate RTCP port** (RFC 3550 §11, RFC 3605): each media thread binds ONE extra socket, its block's
//!   RTCP port ([`MediaPlane::set_rtcp_port`]: the odd port above the block's first RTP port), which parkd's
//!   SDP names in `a=rtcp:` for every leg that does not mux. The phone's RTCP address is its SDP's `a=rtcp:`
//!   port (else its RTP port + 1) at its SDP's IP address ([`MediaCommand::RtcpPort`]); a datagram on the
//!   RTCP port is the leg's whose phone address it comes from ([`RtcpDemux`], keyed by that address: RFC 4961
//!   symmetric RTCP, which phones practise, sends from the port it receives on), and the leg's reports leave
//!   from the RTCP port to that address. One socket per thread instead of one per leg keeps the descriptors at
//!   one per RTP port (see the README's RTCP section). A phone behind a NAT whose RTCP comes from another
//!   address than its SDP names is not recognised (its RTCP is dropped and counted; it gets parkd's reports
//!   only if the NAT maps them back).
//!
//! A stream that is paused (the phone holds parkd: `sendonly`/`inactive`) leaves the pacer, so its reports
//! come from [`PausedReports`] instead: an RR (parkd is not sending) with SDES CNAME every [`SR_INTERVAL_MS`]
//! on average, drawn the same way, one heap entry per paused leg (no per-slot work): the phone still hears from
//! parkd while it holds it (RFC 3550 §6), which keeps its RTCP-based liveness checks and NAT bindings happy.
//!
//! Hold streams send an SR with SDES CNAME every [`SR_INTERVAL_MS`] on average, each interval drawn uniformly
//! from 0.5–1.5 times it (RFC 3550 §6.2: the randomisation keeps reports of many streams from synchronising),
//! the first one after half an interval (§6.2's initial delay). The report is written in the pacer turn of
//! the hold packet it describes (same slot time, same RTP timestamp) and leaves in the same batch: no timer, no
//! wake-up of its own. The 56 bytes are written into a stack array and appended to a shared arena
//! (`BytesMut`) that is split, not allocated per report (one allocation per some hundred reports once earlier
//! reports were sent); SRTP legs seal them as SRTCP (the cipher's output is allocated, as for SRTP hold
//! packets).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;

use bytes::BytesMut;
use rand::rngs::SmallRng;
use rand::Rng;

use super::super::rtcp::{self, SenderInfo, Translation, REPORT_LEN};
use super::super::rtp::RTP_HEADER_LEN;
use super::super::{Forward, HoldBatch, HoldPacket, MediaLegId};
use rustc_hash::FxHashMap;
use super::{Leg, MediaPlane, MediaStats, Mode};
use crate::media::demux::Route;
use crate::time::Time;

/// Mean interval between two Sender Reports of a hold stream (RFC 3550 §6.2's minimum).
pub const SR_INTERVAL_MS: u64 = 5_000;
/// Room kept in the report arena: reports are split off it until it is used up.
const ARENA: usize = 16 * 1024;

/// A leg's RTCP state.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct LegRtcp {
    /// RTCP goes on the RTP port (RFC 5761).
    pub mux: bool,
    /// Else the phone's RTCP port (0: none), at the IP address of its SDP: see the module doc.
    pub peer_port: u16,
    /// Slot time (ms) of the next hold Sender Report; 0 before the first is scheduled.
    pub next_sr_ms: u64,
    /// parkd's packets and payload octets on the leg's outbound stream (RFC 3550 §6.4.1), modulo 2^32.
    pub packets: u32,
    pub octets: u32,
}

impl LegRtcp {
    /// Counts one packet of `payload` bytes sent on the stream.
    pub fn sent(&mut self, payload: usize) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload as u32);
    }
}

/// The next report of each paused leg: `(slot time in ms, leg)`, soonest first. An entry is current while its
/// leg is still paused and its `next_sr_ms` is the entry's time; others are dropped when they come up.
pub(super) type PausedReports = BinaryHeap<Reverse<(u64, MediaLegId)>>;

/// Which leg's RTCP arrives on the RTCP port from which address (see the module doc). The addresses are the
/// phones' (std `HashMap`: keys a peer chooses), the reverse map parkd's.
#[derive(Debug, Default)]
pub(super) struct RtcpDemux {
    pub(super) by_addr: HashMap<SocketAddr, MediaLegId>,
    pub(super) by_leg: FxHashMap<MediaLegId, SocketAddr>,
}

impl RtcpDemux {
    /// Leg `id`'s RTCP comes from `addr` (`None`: not on the RTCP port).
    fn set(&mut self, id: MediaLegId, addr: Option<SocketAddr>) {
        if let Some(old) = self.by_leg.remove(&id) {
            if self.by_addr.get(&old) == Some(&id) {
                self.by_addr.remove(&old);
            }
        }
        if let Some(a) = addr {
            self.by_addr.insert(a, id);
            self.by_leg.insert(id, a);
        }
    }
}

impl Leg {
    /// Where the leg's RTCP goes, from which local port: its RTP port with rtcp-mux, else the plane's RTCP port
    /// (`rtcp_port`, 0: none) to the phone's RTCP address.
    pub(super) fn rtcp_dest(&self, id: MediaLegId, rtcp_port: u16) -> Option<(u16, SocketAddr)> {
        if self.rtcp.mux {
            return Some((id.port(), self.send_to()));
        }
        self.rtcp_peer().filter(|_| rtcp_port != 0).map(|a| (rtcp_port, a))
    }

    /// The phone's RTCP address when it does not mux.
    fn rtcp_peer(&self) -> Option<SocketAddr> {
        (!self.rtcp.mux && self.rtcp.peer_port != 0 && !self.sdp_remote.ip().is_unspecified()).then(|| SocketAddr::new(self.sdp_remote.ip(), self.rtcp.peer_port))
    }
}

/// An interval drawn uniformly from 0.5–1.5 × `mean_ms`.
pub(super) fn interval(rng: &mut SmallRng, mean_ms: u64) -> u64 {
    rng.gen_range(mean_ms / 2..=mean_ms * 3 / 2)
}

/// The report arena and what a hold report needs from the plane besides the leg.
pub(super) struct Reporter<'a> {
    pub rng: &'a mut SmallRng,
    pub arena: &'a mut BytesMut,
    pub stats: &'a mut MediaStats,
    /// The plane's RTCP port (0: none).
    pub rtcp_port: u16,
}

impl Reporter<'_> {
    /// After hold packet `ts` of leg `id` at slot `t_ms`: the leg's Sender Report when one is due.
    pub fn after_hold_packet(&mut self, leg: &mut Leg, id: MediaLegId, t_ms: u64, ts: u32, batch: &mut HoldBatch) {
        let Some((port, to)) = leg.rtcp_dest(id, self.rtcp_port) else { return };
        if leg.rtcp.next_sr_ms == 0 {
            leg.rtcp.next_sr_ms = t_ms + interval(self.rng, SR_INTERVAL_MS / 2);
            return;
        }
        if t_ms < leg.rtcp.next_sr_ms {
            return;
        }
        leg.rtcp.next_sr_ms = t_ms + interval(self.rng, SR_INTERVAL_MS);
        let info = SenderInfo { ssrc: leg.out.ssrc.0, ntp: rtcp::ntp(Time::from_millis(t_ms)), rtp_ts: ts, packets: leg.rtcp.packets, octets: leg.rtcp.octets };
        let mut report = [0u8; REPORT_LEN];
        rtcp::write_report(&info, &mut report);
        self.emit(leg, port, to, &report, batch);
    }

    /// Appends `report` (parkd's compound RTCP packet for `leg`, sealed as SRTCP on an SRTP leg) to `batch`,
    /// from local `port` to `to`.
    fn emit(&mut self, leg: &mut Leg, port: u16, to: SocketAddr, report: &[u8], batch: &mut HoldBatch) {
        let bytes = match &mut leg.srtp {
            None => {
                self.arena.reserve(ARENA.max(report.len()));
                self.arena.extend_from_slice(report);
                self.arena.split().freeze()
            }
            Some(c) => match c.ctx.protect_rtcp_frame(report) {
                Ok(b) => b,
                Err(_) => {
                    self.stats.srtp_protect_failed += 1;
                    return;
                }
            },
        };
        let (Some(h), Some(_)) = (bytes.get(..RTP_HEADER_LEN), bytes.get(RTP_HEADER_LEN..)) else { return };
        let mut header = [0u8; RTP_HEADER_LEN];
        header.copy_from_slice(h);
        batch.push(HoldPacket { port, to, header, payload: bytes.slice(RTP_HEADER_LEN..) });
        self.stats.rtcp_sent += 1;
    }
}

impl MediaPlane {
    /// The RTCP port of the plane's block (the io binds it; 0: none, only rtcp-mux legs get RTCP).
    pub fn set_rtcp_port(&mut self, port: u16) {
        self.rtcp_port = port;
    }

    /// Leg `id`'s stream was just paused at `now`: its next report comes from [`PausedReports`].
    pub(super) fn schedule_paused_report(&mut self, now: Time, id: MediaLegId) {
        let Some(leg) = self.legs.get_mut(&id) else { return };
        let at = now.as_millis() + interval(&mut self.rng, SR_INTERVAL_MS);
        leg.rtcp.next_sr_ms = at;
        self.paused_reports.push(Reverse((at, id)));
    }

    /// When the soonest paused report is due (possibly a stale entry: an early call does nothing).
    pub(super) fn next_paused_report(&self) -> Option<Time> {
        self.paused_reports.peek().map(|Reverse((at, _))| Time::from_millis(*at))
    }

    /// Appends the reports of paused legs due at `now` to `batch` and schedules their next ones.
    pub(super) fn poll_paused_reports(&mut self, now: Time, batch: &mut HoldBatch) {
        let now_ms = now.as_millis();
        while let Some(&Reverse((at, id))) = self.paused_reports.peek() {
            if at > now_ms {
                return;
            }
            self.paused_reports.pop();
            let rtcp_port = self.rtcp_port;
            let MediaPlane { legs, rng, rtcp_arena, stats, paused_reports, .. } = self;
            let Some(leg) = legs.get_mut(&id) else { continue };
            if !matches!(leg.mode, Mode::Hold { sched: None, .. }) || leg.rtcp.next_sr_ms != at {
                continue;
            }
            let next = at + interval(rng, SR_INTERVAL_MS);
            leg.rtcp.next_sr_ms = next;
            paused_reports.push(Reverse((next, id)));
            let Some((port, to)) = leg.rtcp_dest(id, rtcp_port) else { continue };
            let mut report = [0u8; rtcp::RR_REPORT_LEN];
            rtcp::write_receiver_report(leg.out.ssrc.0, &mut report);
            let mut reporter = Reporter { rng, arena: rtcp_arena, stats, rtcp_port };
            reporter.emit(leg, port, to, &report, batch);
        }
    }

    /// Keeps [`RtcpDemux`] in step with leg `id` (after its mux, RTCP port or SDP address changed, or it ended).
    pub(super) fn sync_rtcp_key(&mut self, id: MediaLegId) {
        let addr = self.legs.get(&id).and_then(Leg::rtcp_peer);
        self.rtcp_demux.set(id, addr);
    }

    /// Turns rtcp-mux on or off for leg `id` (see [`MediaCommand::RtcpMux`]).
    pub(super) fn set_rtcp_mux(&mut self, id: MediaLegId, on: bool) {
        match self.legs.get_mut(&id) {
            Some(leg) => leg.rtcp.mux = on,
            None => self.rtcp_presets.entry(id).or_default().mux = on,
        }
        self.sync_rtcp_key(id);
    }

    /// Sets the phone's RTCP port for leg `id` (see [`MediaCommand::RtcpPort`]).
    pub(super) fn set_rtcp_peer_port(&mut self, id: MediaLegId, port: u16) {
        match self.legs.get_mut(&id) {
            Some(leg) => leg.rtcp.peer_port = port,
            None => self.rtcp_presets.entry(id).or_default().peer_port = port,
        }
        self.sync_rtcp_key(id);
    }

    /// A datagram that [`super::super::rtcp::is_rtcp`] on local `port` from `from` (`buf[..len]`, `buf` the
    /// whole receive buffer): authenticated and decrypted on an SRTP leg, checked, and relayed translated to a
    /// bridge peer (on its RTP port or to its RTCP port). Routed and latched like RTP (an SRTP leg latches only
    /// on an authentic packet); the leg muxes from then on.
    pub(super) fn on_rtcp(&mut self, port: u16, from: SocketAddr, buf: &mut [u8], len: usize) -> Option<Forward> {
        self.stats.rtcp_received += 1;
        let route = self.demux.route(port, from);
        let id = self.routed_leg(route)?;
        let Some(len) = self.open_rtcp(id, buf, len) else {
            if matches!(route, Route::NewlyLatched(_)) {
                // Only a valid (and on an SRTP leg, authentic) packet latches a leg: undo it.
                if let Some(sdp) = self.legs.get(&id).map(|l| l.sdp_remote) {
                    self.demux.set_remote(id, sdp);
                }
            }
            return None;
        };
        let src = self.legs.get_mut(&id)?;
        src.latched = Some(from);
        if !src.rtcp.mux {
            src.rtcp.mux = true;
            self.sync_rtcp_key(id);
        }
        self.relay_rtcp(id, buf, len)
    }

    /// A datagram received on the plane's RTCP port from `from` (`buf[..len]`, `buf` the whole receive buffer):
    /// the RTCP of the leg whose phone sends its RTCP from `from` (see the module doc), opened, checked and
    /// relayed as `on_rtcp` does for the RTP port. The forward leaves from the receiver's RTP or RTCP port.
    pub fn on_rtcp_port(&mut self, _now: Time, from: SocketAddr, buf: &mut [u8], len: usize) -> Option<Forward> {
        if !buf.get(..len).is_some_and(rtcp::is_rtcp) {
            self.stats.dropped_invalid += 1;
            return None;
        }
        self.stats.rtcp_received += 1;
        let Some(&id) = self.rtcp_demux.by_addr.get(&from) else {
            self.stats.dropped_unrelayable += 1;
            return None;
        };
        let len = self.open_rtcp(id, buf, len)?;
        self.relay_rtcp(id, buf, len)
    }

    /// Opens leg `id`'s (S)RTCP packet `buf[..len]` in place: its plain length when it authenticates (SRTP
    /// legs) and is a valid compound packet; `None` (counted) otherwise.
    fn open_rtcp(&mut self, id: MediaLegId, buf: &mut [u8], len: usize) -> Option<usize> {
        let src = self.legs.get_mut(&id)?;
        let mut len = len;
        if let Some(c) = &mut src.srtp {
            match c.ctx.unprotect_rtcp(buf, len) {
                Ok(n) => len = n,
                Err(_) => {
                    self.stats.srtp_auth_failed += 1;
                    self.stats.srtcp_auth_failed += 1;
                    return None;
                }
            }
        }
        if buf.get(..len).and_then(rtcp::parts).is_none() {
            self.stats.dropped_invalid += 1;
            return None;
        }
        Some(len)
    }

    /// Relays leg `id`'s valid plain RTCP `buf[..len]` to its bridge peer, translated (and sealed for an SRTP
    /// peer); absorbed when the leg is not bridged.
    fn relay_rtcp(&mut self, id: MediaLegId, buf: &mut [u8], len: usize) -> Option<Forward> {
        let rtcp_port = self.rtcp_port;
        let src = self.legs.get(&id)?;
        let Mode::Bridged { peer, .. } = src.mode else {
            self.stats.absorbed += 1;
            return None;
        };
        let back = src.map.map(|m| (src.out.ssrc.0, m.src_ssrc.0, m.seq_offset));
        let dst = self.legs.get_mut(&peer).filter(|d| d.send);
        let Some((dst, (port, to))) = dst.and_then(|d| d.rtcp_dest(peer, rtcp_port).map(|r| (d, r))) else {
            self.stats.rtcp_dropped += 1;
            return None;
        };
        let t = Translation { out_ssrc: dst.out.ssrc.0, packets: dst.rtcp.packets, octets: dst.rtcp.octets, forward: dst.map.map(|m| (m.src_ssrc.0, m.ts_offset)), back };
        let Some(mut n) = rtcp::translate(buf, len, &t) else {
            self.stats.rtcp_dropped += 1;
            return None;
        };
        if let Some(c) = &mut dst.srtp {
            let Ok(sealed) = c.ctx.protect_rtcp(buf, n) else {
                self.stats.srtp_protect_failed += 1;
                return None;
            };
            n = sealed;
        }
        self.stats.rtcp_relayed += 1;
        Some(Forward { port, to, len: n })
    }
}
