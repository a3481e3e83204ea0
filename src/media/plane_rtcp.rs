//! The RTCP side of [`MediaPlane`] (see [`super::super::rtcp`] for the packets): RTCP received on a leg's RTP
//! port (rtcp-mux), relayed to its bridge peer, and the Sender Reports of hold streams.
//!
//! parkd binds only the even (RTP) port of each leg, so it speaks RTCP only with legs that multiplex it there
//! (RFC 5761): a leg whose offer and answer carried `a=rtcp-mux` ([`MediaCommand::RtcpMux`]), or one that sent
//! valid RTCP on the RTP port. A phone that does not multiplex sends its RTCP to parkd's odd port, where
//! nothing listens (the datagrams are discarded by the kernel), and gets none from parkd: binding the odd ports
//! would double the sockets (and file descriptors) per leg for statistics most such phones only display.
//!
//! Hold streams send an SR with SDES CNAME every [`SR_INTERVAL_MS`] on average, each interval drawn uniformly
//! from 0.5–1.5 times it (RFC 3550 §6.2: the randomisation keeps reports of many streams from synchronising),
//! the first one after half an interval (§6.2's initial delay). The report is written in the pacer turn of
//! the hold packet it describes (same slot time, same RTP timestamp) and leaves in the same batch: no timer, no
//! wake-up of its own. The 56 bytes are written into a stack array and appended to a shared arena
//! (`BytesMut`) that is split, not allocated per report (one allocation per some hundred reports once earlier
//! reports were sent); SRTP legs seal them as SRTCP (the cipher's output is allocated, as for SRTP hold
//! packets).

use std::net::SocketAddr;

use bytes::BytesMut;
use rand::rngs::SmallRng;
use rand::Rng;

use super::super::rtcp::{self, SenderInfo, Translation, REPORT_LEN};
use super::super::rtp::RTP_HEADER_LEN;
use super::super::{Forward, HoldBatch, HoldPacket, MediaLegId};
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

/// An interval drawn uniformly from 0.5–1.5 × `mean_ms`.
pub(super) fn interval(rng: &mut SmallRng, mean_ms: u64) -> u64 {
    rng.gen_range(mean_ms / 2..=mean_ms * 3 / 2)
}

/// The report arena and what a hold report needs from the plane besides the leg.
pub(super) struct Reporter<'a> {
    pub rng: &'a mut SmallRng,
    pub arena: &'a mut BytesMut,
    pub stats: &'a mut MediaStats,
}

impl Reporter<'_> {
    /// After hold packet `ts` of leg `id` at slot `t_ms`: the leg's Sender Report when one is due.
    pub fn after_hold_packet(&mut self, leg: &mut Leg, id: MediaLegId, to: SocketAddr, t_ms: u64, ts: u32, batch: &mut HoldBatch) {
        if !leg.rtcp.mux {
            return;
        }
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
        let bytes = match &mut leg.srtp {
            None => {
                self.arena.reserve(ARENA.max(REPORT_LEN));
                self.arena.extend_from_slice(&report);
                self.arena.split().freeze()
            }
            Some(c) => match c.ctx.protect_rtcp_frame(&report) {
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
        batch.push(HoldPacket { port: id.port(), to, header, payload: bytes.slice(RTP_HEADER_LEN..) });
        self.stats.rtcp_sent += 1;
    }
}

impl MediaPlane {
    /// Turns rtcp-mux on or off for leg `id` (see [`MediaCommand::RtcpMux`]).
    pub(super) fn set_rtcp_mux(&mut self, id: MediaLegId, on: bool) {
        match self.legs.get_mut(&id) {
            Some(leg) => leg.rtcp.mux = on,
            None if on => {
                self.rtcp_presets.insert(id);
            }
            None => {
                self.rtcp_presets.remove(&id);
            }
        }
    }

    /// A datagram that [`super::super::rtcp::is_rtcp`] on local `port` from `from` (`buf[..len]`, `buf` the
    /// whole receive buffer): authenticated and decrypted on an SRTP leg, checked, and relayed translated to a
    /// bridge peer that muxes RTCP. Routed and latched like RTP (an SRTP leg latches only on an authentic
    /// packet).
    pub(super) fn on_rtcp(&mut self, port: u16, from: SocketAddr, buf: &mut [u8], len: usize) -> Option<Forward> {
        self.stats.rtcp_received += 1;
        let route = self.demux.route(port, from);
        let id = self.routed_leg(route)?;
        let src = self.legs.get_mut(&id)?;
        let mut len = len;
        let mut authentic = true;
        if let Some(c) = &mut src.srtp {
            match c.ctx.unprotect_rtcp(buf, len) {
                Ok(n) => len = n,
                Err(_) => {
                    self.stats.srtp_auth_failed += 1;
                    self.stats.srtcp_auth_failed += 1;
                    authentic = false;
                }
            }
        }
        let valid = authentic && buf.get(..len).and_then(rtcp::parts).is_some();
        if !valid {
            if authentic {
                self.stats.dropped_invalid += 1;
            }
            if matches!(route, Route::NewlyLatched(_)) {
                // Only a valid (and on an SRTP leg, authentic) packet latches a leg: undo it.
                let sdp = src.sdp_remote;
                self.demux.set_remote(id, sdp);
            }
            return None;
        }
        src.latched = Some(from);
        src.rtcp.mux = true;
        let Mode::Bridged { peer, .. } = src.mode else {
            self.stats.absorbed += 1;
            return None;
        };
        let back = src.map.map(|m| (src.out.ssrc.0, m.src_ssrc.0, m.seq_offset));
        let dst = match self.legs.get_mut(&peer) {
            Some(d) if d.send && d.rtcp.mux => d,
            _ => {
                self.stats.rtcp_dropped += 1;
                return None;
            }
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
        Some(Forward { port: peer.port(), to: dst.send_to(), len: n })
    }
}
