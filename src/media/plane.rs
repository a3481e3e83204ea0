//! [`MediaPlane`]: the media state machine (legs, hold streams, bridges), driven by commands,
//! received datagrams and `now`, under the same engine contract as the SIP core (`core/contract.rs`):
//! inputs carry `now` ([`MediaPlane::apply`], [`MediaPlane::on_rtp`]), [`MediaPlane::poll_timeout`] gives
//! the next deadline with its reason, and [`MediaPlane::poll_hold`] hands out what is due then. Its outputs
//! are per packet, so they are returned to the caller (a forward, a batch it owns) rather than queued.

use std::collections::VecDeque;
use std::net::SocketAddr;

use bytes::BytesMut;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rustc_hash::FxHashMap;

use super::music::HoldMusic;
use super::pacer::{Pacer, PacerLateness, Scheduled, PERIOD_MS};
use super::prompts::{Prompt, PromptBank};
use super::courtesy::{self, Insertion};
use super::demux::{Demux, Route};
use super::dtmf::KeyDetector;
use super::relay::{self, Destination, RelayMap};
use super::rtcp;
use super::rtp::{self, OutStream, Pt, TS_PER_FRAME};
use super::srtp::{SrtpKeys, SrtpLeg};
use super::{Codec, Forward, HoldBatch, HoldPacket, MediaCommand, MediaLegId, MediaReport, MusicId};
use crate::time::Time;

/// Counters and gauges of the media plane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// Legs known.
    pub legs: usize,
    /// Legs currently scheduled for hold music.
    pub hold_streams: usize,
    /// Bridged pairs.
    pub bridged_pairs: usize,
    /// Hold-music packets produced.
    pub hold_sent: u64,
    /// Packets relayed between bridged legs.
    pub relayed: u64,
    /// Received packets dropped as invalid: no leg on the id, not RTP v2, shorter than 12 bytes.
    pub dropped_invalid: u64,
    /// Valid packets not relayed: unknown payload type, not from the latched source, or the peer
    /// must not be sent to (sendonly/inactive).
    pub dropped_unrelayable: u64,
    /// Valid packets on a shared port that no leg could claim: not from a latched source nor a
    /// leg's SDP address, and two or more legs on the port not latched yet (see `demux`).
    pub dropped_ambiguous: u64,
    /// Valid packets received on a leg that is on hold or idle (nothing to relay them to).
    pub absorbed: u64,
    /// How late each pacer slot that produced hold packets was served.
    pub pacer_lateness: PacerLateness,
    /// SRTP packets from a leg that failed authentication (forged, replayed, wrong key, not SRTP): dropped.
    pub srtp_auth_failed: u64,
    /// Packets to an SRTP leg that could not be protected (no room for the tag, key exhausted): dropped.
    pub srtp_protect_failed: u64,
    /// Of `srtp_auth_failed`: SRTCP packets (RTCP of an SRTP leg) that failed authentication.
    pub srtcp_auth_failed: u64,
    /// RTCP packets received on RTP ports (rtcp-mux, RFC 5761) or the RTCP port, before any check.
    pub rtcp_received: u64,
    /// RTCP packets relayed (translated) to a bridge peer.
    pub rtcp_relayed: u64,
    /// Valid RTCP packets of a bridged leg not relayed: the peer has no RTCP address (or must not be sent to),
    /// or the packet has no SR or RR (see [`super::rtcp`]).
    pub rtcp_dropped: u64,
    /// Sender Reports parkd sent with hold music.
    pub rtcp_sent: u64,
    /// Key presses (RFC 4733) reported from parked legs.
    pub dtmf_keys: u64,
    /// Relayed packets that carried the courtesy tone instead of the peer's audio.
    pub courtesy_packets: u64,
}

/// Why the media plane wants to be called: the reason next to [`MediaPlane::poll_timeout`]'s deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaWake {
    /// A pacer slot with hold-music (or announcement) packets due: call [`MediaPlane::poll_hold`].
    HoldFrame,
    /// A paused stream's RTCP report is due (see `plane_rtcp`): call [`MediaPlane::poll_hold`].
    RtcpReport,
}

/// What a leg is doing.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Nothing is sent (set up, or its bridge peer went away).
    Idle,
    /// Hold music. `sched` is `None` while sending is paused (`send = false`). Packet `n` of the
    /// schedule (`n ≥ n0`, outside an announcement) plays loop frame `frame0 + n - n0`;
    /// `next_frame` is the loop frame to resume from, `next_n` the next packet index.
    Hold { music: usize, sched: Option<Scheduled>, frame0: usize, ts0: u32, next_frame: usize, n0: u64, next_n: u64 },
    /// Relaying to/from `peer`; `tone`: the courtesy tone being inserted into what is relayed to this leg (kept
    /// here, where the variant has room, so a leg costs no more).
    Bridged { peer: MediaLegId, tone: Option<Insertion> },
}

/// One local RTP id.
#[derive(Debug)]
struct Leg {
    sdp_remote: SocketAddr,
    /// Symmetric RTP: source of the first packet received (since the last Update).
    latched: Option<SocketAddr>,
    codec: Codec,
    send: bool,
    dtmf_pt: Option<Pt>,
    /// Tells key presses apart among the telephone-events received while on hold.
    keys: KeyDetector,
    out: OutStream,
    /// Mapping of the stream relayed *to* this leg.
    map: Option<RelayMap>,
    mode: Mode,
    /// Prompts being spoken over the hold stream (only while `mode` is a scheduled `Hold`).
    /// Boxed: rare (self-parks), and a leg should stay small.
    announce: Option<Box<Announcement>>,
    /// SRTP keys and contexts when the leg negotiated SRTP (boxed: most legs are plain).
    srtp: Option<Box<LegCrypto>>,
    /// rtcp-mux, the next hold Sender Report, the outbound stream's counts.
    rtcp: rtcp_side::LegRtcp,
}

/// Inline size of one leg's state (`mem_sizes` test).
#[cfg(test)]
pub(crate) fn leg_size() -> usize {
    size_of::<Leg>()
}

/// An SRTP leg's keys (to tell a rekey from the same keys again) and contexts.
#[derive(Debug)]
struct LegCrypto {
    keys: SrtpKeys,
    ctx: SrtpLeg,
}

impl LegCrypto {
    fn new(keys: &SrtpKeys, roc: u32, srtcp: u32) -> Option<Box<LegCrypto>> {
        match SrtpLeg::resuming(keys, roc) {
            Ok(ctx) => {
                let ctx = ctx.with_srtcp_floor(srtcp);
                Some(Box::new(LegCrypto { keys: keys.clone(), ctx }))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up SRTP for a leg; its packets are dropped");
                None
            }
        }
    }
}

/// An announcement in progress: packets `start_n..start_n + frames.len()` of the hold schedule
/// carry these prompt-bank frames instead of music.
#[derive(Debug)]
struct Announcement {
    start_n: u64,
    frames: Vec<u32>,
}

impl Leg {
    fn send_to(&self) -> SocketAddr {
        self.latched.unwrap_or(self.sdp_remote)
    }
}

/// Where a port's hold streams are in the pacer.
#[derive(Clone, Copy, Debug)]
struct PortSlot {
    slot: u8,
    streams: u32,
}

/// At most this many reports wait for [`MediaPlane::poll_report`] (more are dropped: a caller cannot press keys
/// faster than the driver drains them, so only a flood hits it).
const MAX_REPORTS: usize = 64;

/// The media plane: every leg's state, one pacer for all hold streams, the relay.
/// Pure state machine: time is a parameter, io lives in [`crate::io::media_thread`].
#[derive(Debug)]
pub struct MediaPlane {
    music: Vec<HoldMusic>,
    /// Courtesy tones ([`MediaCommand::Courtesy`] indexes it), and the built-in one for an index out of range.
    tones: Vec<HoldMusic>,
    builtin_tone: HoldMusic,
    /// Key presses for the core, drained by [`MediaPlane::poll_report`] (capacity kept: no allocation per key).
    reports: VecDeque<MediaReport>,
    prompts: PromptBank,
    /// Keyed by parkd's own leg ids (not by anything a peer chooses), so a fast non-keyed hash is safe;
    /// every hold packet looks its leg up here.
    legs: FxHashMap<MediaLegId, Leg>,
    /// Which leg a received packet belongs to (legs may share a port).
    demux: Demux,
    /// The pacer slot of each port's hold streams, so a shared port's legs leave together.
    port_slots: FxHashMap<u16, PortSlot>,
    pacer: Pacer,
    rng: SmallRng,
    /// Stream identities given ([`MediaCommand::Stream`]) for legs not created yet.
    presets: FxHashMap<MediaLegId, OutStream>,
    /// SRTP keys given ([`MediaCommand::Srtp`]) for legs not created yet.
    srtp_presets: FxHashMap<MediaLegId, (Box<SrtpKeys>, u32, u32)>,
    /// Some leg has been given SRTP keys: from then on `poll_hold` hints the due legs' SRTP state into the cache
    /// first (a plane that only ever carried plain RTP skips that pass over the slot).
    srtp_seen: bool,
    /// Reused buffer an SRTP hold packet is assembled in before it is protected.
    scratch: Vec<u8>,
    /// rtcp-mux and RTCP ports given ([`MediaCommand::RtcpMux`], [`MediaCommand::RtcpPort`]) for legs not
    /// created yet.
    rtcp_presets: FxHashMap<MediaLegId, rtcp_side::LegRtcp>,
    /// The RTCP port of the plane's block (0: none), and the legs that send their RTCP there (see `plane_rtcp`).
    rtcp_port: u16,
    rtcp_demux: rtcp_side::RtcpDemux,
    /// The next reports of legs whose stream is paused (see `plane_rtcp`).
    paused_reports: rtcp_side::PausedReports,
    /// The hold Sender Reports' bytes are split off this arena (see `plane_rtcp`).
    rtcp_arena: BytesMut,
    stats: MediaStats,
}

impl MediaPlane {
    /// A plane with the given music list ([`MusicId`] indexes it; the built-in loop is used if the
    /// list is empty) and RNG seed (SSRCs, initial seq/timestamps).
    pub fn new(mut music: Vec<HoldMusic>, seed: u64) -> Self {
        if music.is_empty() {
            music.push(HoldMusic::builtin());
        }
        MediaPlane { music, prompts: PromptBank::builtin(), legs: FxHashMap::default(), demux: Demux::new(), port_slots: FxHashMap::default(), pacer: Pacer::new(), rng: SmallRng::seed_from_u64(seed), presets: FxHashMap::default(), srtp_presets: FxHashMap::default(), srtp_seen: false, scratch: Vec::with_capacity(256), tones: Vec::new(), builtin_tone: courtesy::builtin_tone(), reports: VecDeque::with_capacity(MAX_REPORTS), rtcp_presets: FxHashMap::default(), rtcp_port: 0, rtcp_demux: rtcp_side::RtcpDemux::default(), paused_reports: rtcp_side::PausedReports::new(), rtcp_arena: BytesMut::new(), stats: MediaStats::default() }
    }

    /// The courtesy tones [`MediaCommand::Courtesy`] picks from (by index; the built-in two beeps otherwise).
    pub fn set_tones(&mut self, tones: Vec<HoldMusic>) {
        self.tones = tones;
    }

    /// The next report for the core (a key pressed by a parked caller, a leg latched behind a NAT), if any. Drain
    /// after each received batch.
    pub fn poll_report(&mut self) -> Option<MediaReport> {
        self.reports.pop_front()
    }

    /// Applies a command from the signalling core.
    pub fn apply(&mut self, now: Time, cmd: MediaCommand) {
        match cmd {
            MediaCommand::Hold { leg: id, remote, codec, music } => self.hold(now, id, remote, codec, music),
            MediaCommand::Update { leg: id, remote, codec, send } => self.update(now, id, remote, codec, send),
            MediaCommand::Bridge { a, b } => self.bridge(a, b),
            MediaCommand::Stop { leg: id } => self.stop(id),
            MediaCommand::DtmfPayloadType { leg: id, pt } => {
                if let Some(leg) = self.legs.get_mut(&id) {
                    leg.dtmf_pt = pt.and_then(Pt::new);
                }
            }
            MediaCommand::Announce { leg: id, words } => self.announce(now, id, &words),
            MediaCommand::Stream { leg: id, ssrc, seq, ts } => self.set_stream(now, id, ssrc, seq, ts),
            MediaCommand::Srtp { leg: id, keys, roc, srtcp } => self.set_srtp(id, keys, roc, srtcp),
            MediaCommand::RtcpMux { leg: id, on } => self.set_rtcp_mux(id, on),
            MediaCommand::SetMusic { id, music } => {
                let fill = self.music[0].clone();
                put_at(&mut self.music, id, *music, &fill);
            }
            MediaCommand::SetTone { id, tone } => put_at(&mut self.tones, id, *tone, &self.builtin_tone),
            MediaCommand::Courtesy { leg: id, tone } => {
                if let Some(Mode::Bridged { tone: t, .. }) = self.legs.get_mut(&id).map(|l| &mut l.mode) {
                    *t = Some(Insertion { tone: tone.0, pos: 0 });
                }
            }
            MediaCommand::RtcpPort { leg: id, port } => self.set_rtcp_peer_port(id, port),
        }
    }

    /// Gives leg `id` its SRTP keys (see [`MediaCommand::Srtp`]).
    fn set_srtp(&mut self, id: MediaLegId, keys: Option<Box<SrtpKeys>>, roc: u32, srtcp: u32) {
        self.srtp_seen |= keys.is_some();
        let Some(leg) = self.legs.get_mut(&id) else {
            match keys {
                Some(k) => self.srtp_presets.insert(id, (k, roc, srtcp)),
                None => self.srtp_presets.remove(&id),
            };
            return;
        };
        match (keys, &mut leg.srtp) {
            (Some(k), Some(c)) if c.keys == *k => {}
            (Some(k), Some(c)) if c.keys.suite == k.suite && c.keys.local == k.local => {
                // The peer's new key only: parkd's outbound stream (its rollover counter) goes on.
                if c.ctx.rekey_remote(&k.remote).is_ok() {
                    c.keys = *k;
                } else {
                    leg.srtp = None;
                }
            }
            (Some(k), _) => leg.srtp = LegCrypto::new(&k, roc, srtcp),
            (None, _) => leg.srtp = None,
        }
    }

    /// Gives leg `id` the outbound stream identity the core chose (see [`MediaCommand::Stream`]).
    fn set_stream(&mut self, now: Time, id: MediaLegId, ssrc: u32, seq: u16, ts: u32) {
        let out = OutStream { ssrc: rtp::Ssrc(ssrc), next_seq: rtp::SeqNo(seq), last_ts: ts, last_at: None, marker_pending: true };
        let Some(leg) = self.legs.get_mut(&id) else {
            self.presets.insert(id, out);
            return;
        };
        if leg.out.ssrc != out.ssrc {
            // A new SSRC is a new stream: its reports count from zero (RFC 3550 §6.4.1).
            leg.rtcp.packets = 0;
            leg.rtcp.octets = 0;
        }
        leg.out = out;
        leg.map = None;
        if let Mode::Hold { music, sched: Some(_), next_frame, .. } = leg.mode {
            self.detach(id);
            self.start_hold(now, id, music, next_frame);
        }
    }

    fn leg_entry(&mut self, id: MediaLegId, remote: SocketAddr, codec: Codec) -> &mut Leg {
        let rng = &mut self.rng;
        let presets = &mut self.presets;
        let srtp = self.srtp_presets.remove(&id);
        let rtcp = self.rtcp_presets.remove(&id).unwrap_or_default();
        self.legs.entry(id).or_insert_with(|| Leg {
            sdp_remote: remote,
            latched: None,
            codec,
            send: true,
            dtmf_pt: None,
            keys: KeyDetector::default(),
            out: presets.remove(&id).unwrap_or_else(|| OutStream::new(rng)),
            map: None,
            mode: Mode::Idle,
            announce: None,
            srtp: srtp.and_then(|(k, roc, srtcp)| LegCrypto::new(&k, roc, srtcp)),
            rtcp,
        })
    }

    /// Takes `id` out of whatever it was doing: unschedules hold music, and turns a bridge
    /// peer idle. The leg itself is left in `Mode::Idle`.
    fn detach(&mut self, id: MediaLegId) {
        let Some(leg) = self.legs.get_mut(&id) else { return };
        let mode = std::mem::replace(&mut leg.mode, Mode::Idle);
        leg.map = None;
        leg.announce = None;
        match mode {
            Mode::Hold { sched: Some(s), .. } => {
                self.unschedule(s.slot, id);
            }
            Mode::Bridged { peer, .. } => {
                if let Some(p) = self.legs.get_mut(&peer) {
                    if matches!(p.mode, Mode::Bridged { peer: pp, .. } if pp == id) {
                        p.mode = Mode::Idle;
                        p.map = None;
                    }
                }
            }
            _ => {}
        }
    }

    fn hold(&mut self, now: Time, id: MediaLegId, remote: SocketAddr, codec: Codec, music: MusicId) {
        let music = if (music.0 as usize) < self.music.len() { music.0 as usize } else { 0 };
        let is_new = !self.legs.contains_key(&id);
        let leg = self.leg_entry(id, remote, codec);
        if is_new || leg.sdp_remote != remote {
            leg.latched = None;
            self.demux.set_remote(id, remote);
        }
        let Some(leg) = self.legs.get_mut(&id) else { return };
        leg.sdp_remote = remote;
        leg.codec = codec;
        leg.send = true;
        self.sync_rtcp_key(id);
        let Some(leg) = self.legs.get_mut(&id) else { return };
        if let Mode::Hold { music: m, sched: Some(_), .. } = &mut leg.mode {
            *m = music; // already playing: switch the loop, keep the schedule
            return;
        }
        let next_frame = match leg.mode {
            Mode::Hold { next_frame, .. } => next_frame,
            _ => 0,
        };
        self.detach(id);
        self.start_hold(now, id, music, next_frame);
    }

    /// Puts `id` in the pacer, in the slot of its port's other hold streams if there are any (one
    /// `sendmmsg` per port and slot when legs share ports; with one leg per port this is simply
    /// the least-loaded slot).
    fn schedule(&mut self, now: Time, id: MediaLegId) -> Scheduled {
        let port = id.port();
        let slot = self.port_slots.get(&port).map(|p| p.slot);
        let sched = self.pacer.add_to(now, id, slot);
        self.port_slots.entry(port).or_insert(PortSlot { slot: sched.slot, streams: 0 }).streams += 1;
        sched
    }

    /// Takes `id` out of the pacer.
    fn unschedule(&mut self, slot: u8, id: MediaLegId) {
        if !self.pacer.remove(slot, id) {
            return;
        }
        let port = id.port();
        if let Some(p) = self.port_slots.get_mut(&port) {
            p.streams = p.streams.saturating_sub(1);
            if p.streams == 0 {
                self.port_slots.remove(&port);
            }
        }
    }

    /// Schedules hold music on `id` starting at loop frame `frame0`.
    fn start_hold(&mut self, now: Time, id: MediaLegId, music: usize, frame0: usize) {
        if !self.legs.contains_key(&id) {
            return;
        }
        let sched = self.schedule(now, id);
        let Some(leg) = self.legs.get_mut(&id) else { return };
        let first_at = Time::from_millis(sched.first_ms);
        let ts0 = match leg.out.last_at {
            None => leg.out.last_ts,
            Some(_) => {
                let t = leg.out.ts_at(first_at);
                if t.wrapping_sub(leg.out.last_ts) < TS_PER_FRAME { leg.out.last_ts.wrapping_add(TS_PER_FRAME) } else { t }
            }
        };
        leg.out.marker_pending = true;
        leg.map = None;
        leg.mode = Mode::Hold { music, sched: Some(sched), frame0, ts0, next_frame: frame0, n0: 0, next_n: 0 };
    }

    fn update(&mut self, now: Time, id: MediaLegId, remote: SocketAddr, codec: Codec, send: bool) {
        let leg = self.leg_entry(id, remote, codec);
        leg.sdp_remote = remote;
        leg.latched = None; // RFC 3264 re-offer: learn the (possibly new) source again
        self.demux.set_remote(id, remote);
        self.sync_rtcp_key(id);
        let Some(leg) = self.legs.get_mut(&id) else { return };
        leg.codec = codec;
        leg.send = send;
        let mode = leg.mode;
        match mode {
            Mode::Hold { sched: Some(s), music, next_frame, .. } if !send => {
                self.unschedule(s.slot, id);
                if let Some(leg) = self.legs.get_mut(&id) {
                    // Pausing cancels an announcement: the peer would not hear it.
                    leg.announce = None;
                    leg.mode = Mode::Hold { music, sched: None, frame0: next_frame, ts0: 0, next_frame, n0: 0, next_n: 0 };
                }
                self.schedule_paused_report(now, id);
            }
            Mode::Hold { sched: None, music, next_frame, .. } if send => {
                self.start_hold(now, id, music, next_frame);
            }
            _ => {}
        }
    }

    /// Starts speaking `words` at the next packet of `id`'s hold stream; music pauses meanwhile.
    fn announce(&mut self, now: Time, id: MediaLegId, words: &[Prompt]) {
        let Some(leg) = self.legs.get_mut(&id) else { return };
        let Mode::Hold { sched: Some(sched), frame0, n0, next_n, .. } = &mut leg.mode else {
            tracing::debug!(leg = %id, "announce ignored: leg is not playing hold music");
            return;
        };
        let frames = self.prompts.sequence(words);
        if frames.is_empty() {
            return;
        }
        // The next packet not yet sent: at or after `now` on this stream's schedule.
        let now_ms = now.as_millis();
        let due_n = if now_ms <= sched.first_ms { 0 } else { (now_ms - sched.first_ms).div_ceil(PERIOD_MS) };
        let start_n = due_n.max(*next_n);
        // Where the music stands at `start_n` (or stood when an announcement in progress began).
        let paused_at = leg.announce.as_ref().map_or(start_n, |a| a.start_n.min(start_n));
        *frame0 += paused_at.saturating_sub(*n0) as usize;
        *n0 = start_n;
        leg.announce = Some(Box::new(Announcement { start_n, frames }));
    }

    fn bridge(&mut self, a: MediaLegId, b: MediaLegId) {
        if a == b || !self.legs.contains_key(&a) || !self.legs.contains_key(&b) {
            tracing::debug!(a = %a, b = %b, "bridge ignored: unknown leg or same id");
            return;
        }
        self.detach(a);
        self.detach(b);
        for (me, peer) in [(a, b), (b, a)] {
            if let Some(leg) = self.legs.get_mut(&me) {
                leg.mode = Mode::Bridged { peer, tone: None };
                leg.map = None;
                leg.out.marker_pending = true;
            }
        }
    }

    fn stop(&mut self, id: MediaLegId) {
        self.presets.remove(&id);
        self.srtp_presets.remove(&id);
        self.rtcp_presets.remove(&id);
        self.detach(id);
        self.legs.remove(&id);
        self.demux.remove(id);
        self.sync_rtcp_key(id);
    }

    /// Handles one datagram received on local `port` from `from`. Returns where to send the
    /// (rewritten in place) packet when the leg is bridged; `None` when it is dropped or absorbed.
    /// With SRTP legs the packet needs room for the tag: use [`MediaPlane::on_packet`].
    pub fn on_rtp(&mut self, now: Time, port: u16, from: SocketAddr, pkt: &mut [u8]) -> Option<Forward> {
        let len = pkt.len();
        self.on_packet(now, port, from, pkt, len)
    }

    /// [`MediaPlane::on_rtp`] for the datagram `buf[..len]`, `buf` being the whole receive buffer: a packet
    /// relayed to an SRTP leg grows by its tag (the forward's `len` counts from `buf`'s start). A packet from an
    /// SRTP leg is authenticated and decrypted first (a failure is dropped and counted).
    /// The leg a routed datagram (RTP or RTCP) belongs to; a packet no leg takes is counted by why.
    pub(super) fn routed_leg(&mut self, route: Route) -> Option<MediaLegId> {
        match route {
            Route::Latched(id) | Route::NewlyLatched(id) => Some(id),
            Route::NoLeg => {
                self.stats.dropped_invalid += 1;
                None
            }
            Route::Foreign => {
                self.stats.dropped_unrelayable += 1;
                None
            }
            Route::Ambiguous => {
                self.stats.dropped_ambiguous += 1;
                None
            }
        }
    }

    /// RTCP on the RTP port (RFC 5761 §4: second byte 192–223) is never taken for RTP: see `plane_rtcp`.
    pub fn on_packet(&mut self, now: Time, port: u16, from: SocketAddr, buf: &mut [u8], len: usize) -> Option<Forward> {
        if buf.get(..len).is_some_and(rtcp::is_rtcp) {
            return self.on_rtcp(port, from, buf, len);
        }
        let Some(mut info) = buf.get(..len).and_then(rtp::parse) else {
            self.stats.dropped_invalid += 1;
            return None;
        };
        // Symmetric RTP (RFC 4961): a leg latches to its first source and ignores others until an
        // Update; legs sharing the port are told apart by source (see `demux`).
        let route = self.demux.route(port, from);
        let id = self.routed_leg(route)?;
        let Some(src) = self.legs.get_mut(&id) else {
            self.stats.dropped_invalid += 1;
            return None;
        };
        let mut len = len;
        if let Some(c) = &mut src.srtp {
            let opened = c.ctx.unprotect(buf, len).ok().and_then(|n| Some((n, rtp::parse(buf.get(..n)?)?)));
            let Some((n, plain)) = opened else {
                self.stats.srtp_auth_failed += 1;
                if matches!(route, Route::NewlyLatched(_)) {
                    // An SRTP leg latches to a source only once it sent an authentic packet: undo the latch.
                    let sdp = src.sdp_remote;
                    self.demux.set_remote(id, sdp);
                }
                return None;
            };
            (len, info) = (n, plain);
        }
        if matches!(route, Route::NewlyLatched(_)) && from != src.sdp_remote && self.reports.len() < MAX_REPORTS {
            self.reports.push_back(MediaReport::Latched { leg: id, source: from });
        }
        src.latched = Some(from);
        let Mode::Bridged { peer, .. } = src.mode else {
            // A parked caller's key press (RFC 4733 on its negotiated PT): reported once per press.
            if matches!(src.mode, Mode::Hold { .. }) && src.dtmf_pt == Some(info.pt) {
                let payload = buf.get(info.payload_start..info.payload_end).unwrap_or_default();
                if let Some(key) = src.keys.on_event(info.ts, payload) {
                    self.stats.dtmf_keys += 1;
                    if self.reports.len() < MAX_REPORTS {
                        self.reports.push_back(MediaReport::Dtmf { leg: id, key });
                    }
                }
            }
            self.stats.absorbed += 1;
            return None;
        };
        let Some(kind) = relay::classify(info.pt, src.dtmf_pt) else {
            self.stats.dropped_unrelayable += 1;
            return None;
        };
        let dst = match self.legs.get_mut(&peer) {
            Some(d) if d.send => d,
            _ => {
                self.stats.dropped_unrelayable += 1;
                return None;
            }
        };
        let to = dst.send_to();
        let dest = Destination { codec: dst.codec, dtmf_pt: dst.dtmf_pt, out: &mut dst.out, map: &mut dst.map };
        let mut len = relay::rewrite(buf.get_mut(..len)?, &info, kind, dest, now);
        if let (Mode::Bridged { tone: slot @ Some(_), .. }, relay::PayloadKind::Audio(_)) = (&mut dst.mode, kind) {
            // The courtesy tone replaces this packet's audio (same seq/ts: the stream stays continuous).
            if let Some(ins) = slot.as_mut() {
                let tone = self.tones.get(usize::from(ins.tone)).unwrap_or(&self.builtin_tone);
                let more = buf.get_mut(info.payload_start..info.payload_end).is_some_and(|p| courtesy::insert(ins, tone, dst.codec, p));
                self.stats.courtesy_packets += 1;
                if !more {
                    *slot = None;
                }
            }
        }
        dst.rtcp.sent(info.payload_end.saturating_sub(info.payload_start));
        if let Some(c) = &mut dst.srtp {
            let Ok(n) = c.ctx.protect(buf, len) else {
                self.stats.srtp_protect_failed += 1;
                return None;
            };
            len = n;
        }
        self.stats.relayed += 1;
        Some(Forward { port: peer.port(), to, len })
    }

    /// Appends every hold packet due at `now` (at most one per stream: a late call skips frames,
    /// keeping timestamps on schedule). Allocates nothing once `batch` has grown to the number of
    /// hold streams. Each slot time that produced a packet records its lateness (`now` − slot time)
    /// in [`MediaStats::pacer_lateness`].
    pub fn poll_hold(&mut self, now: Time, batch: &mut HoldBatch) {
        let MediaPlane { music, prompts, legs, pacer, stats, scratch, rng, rtcp_arena, rtcp_port, srtp_seen, .. } = self;
        // The due SRTP legs' contexts are fetched from memory all at once (see `SrtpLeg::prefetch_tx`).
        if *srtp_seen {
            pacer.peek_due(now, |_, id| {
                if let Some(c) = legs.get(&id).and_then(|leg| leg.srtp.as_deref()) {
                    c.ctx.prefetch_tx();
                }
            });
        }
        let mut last_slot_ms = None;
        let mut reporter = rtcp_side::Reporter { rng, arena: rtcp_arena, stats, rtcp_port: *rtcp_port };
        pacer.due(now, |t_ms, id| {
            let stats = &mut *reporter.stats;
            let Some(leg) = legs.get_mut(&id) else { return };
            let to = leg.send_to();
            let Mode::Hold { music: m, sched: Some(sched), frame0, ts0, next_frame, n0, next_n } = &mut leg.mode else { return };
            if t_ms < sched.first_ms {
                return;
            }
            let n = (t_ms - sched.first_ms) / PERIOD_MS;
            *next_n = n + 1;
            let ts = ts0.wrapping_add((n as u32).wrapping_mul(TS_PER_FRAME));
            let spoken = leg.announce.as_ref().and_then(|a| {
                let k = usize::try_from(n.checked_sub(a.start_n)?).ok()?;
                Some(a.frames.get(k).copied().ok_or(a.start_n + a.frames.len() as u64))
            });
            let payload = match spoken {
                Some(Ok(f)) => {
                    *next_frame = *frame0; // music resumes where it paused
                    prompts.frame(leg.codec, f)
                }
                finished => {
                    if let Some(Err(end_n)) = finished {
                        // The announcement is over: music continues from where it paused.
                        leg.announce = None;
                        *n0 = end_n;
                    }
                    let frame = *frame0 + n.saturating_sub(*n0) as usize;
                    *next_frame = frame + 1;
                    let Some(track) = music.get(*m) else { return };
                    track.frame(leg.codec, frame)
                }
            };
            let header = leg.out.next_header(Pt::from(leg.codec), ts, Time::from_millis(t_ms));
            leg.rtcp.sent(payload.len());
            let (header, payload) = match &mut leg.srtp {
                None => (header, payload),
                // The shared frame is only read: copied after the header into the scratch buffer and protected.
                Some(c) => match c.ctx.protect_frame(&header, &payload, scratch) {
                    Ok(sealed) => sealed,
                    Err(_) => {
                        stats.srtp_protect_failed += 1;
                        return;
                    }
                },
            };
            batch.push(HoldPacket { port: id.port(), to, header, payload });
            stats.hold_sent += 1;
            // Slot times come in increasing order: one observation per slot, not per stream.
            if last_slot_ms != Some(t_ms) {
                last_slot_ms = Some(t_ms);
                stats.pacer_lateness.observe(now.as_micros().saturating_sub(Time::from_millis(t_ms).as_micros()));
            }
            reporter.after_hold_packet(leg, id, t_ms, ts, batch);
        });
        self.poll_paused_reports(now, batch);
    }

    /// When [`MediaPlane::poll_hold`] should next be called, and why: the next pacer slot time with work (O(1));
    /// `None` when no hold stream is scheduled. See the engine contract (`core/contract.rs`).
    pub fn poll_timeout(&self) -> Option<(Time, MediaWake)> {
        let hold = self.pacer.next_deadline().map(|t| (t, MediaWake::HoldFrame));
        let report = self.next_paused_report().map(|t| (t, MediaWake::RtcpReport));
        match (hold, report) {
            (Some(h), Some(r)) => Some(if r.0 < h.0 { r } else { h }),
            (h, r) => h.or(r),
        }
    }

    /// Current counters. Counting bridged pairs walks the legs (O(legs)).
    pub fn stats(&self) -> MediaStats {
        let bridged = self.legs.values().filter(|l| matches!(l.mode, Mode::Bridged { .. })).count();
        MediaStats { legs: self.legs.len(), hold_streams: self.pacer.len(), bridged_pairs: bridged / 2, ..self.stats }
    }

    /// The address a leg currently sends to (latched source, else the SDP address).
    pub fn send_address(&self, id: MediaLegId) -> Option<SocketAddr> {
        self.legs.get(&id).map(Leg::send_to)
    }
}

/// Puts `item` at `id` in a list indexed by [`MusicId`] (a reload's music or tone), filling any gap with `fill`.
fn put_at(list: &mut Vec<HoldMusic>, id: MusicId, item: HoldMusic, fill: &HoldMusic) {
    let i = usize::from(id.0);
    if list.len() <= i {
        list.resize(i + 1, fill.clone());
    }
    list[i] = item;
}

#[path = "plane_rtcp.rs"]
mod rtcp_side;

#[cfg(test)]
#[path = "plane_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "announce_tests.rs"]
mod announce_tests;

#[cfg(test)]
#[path = "srtp_plane_tests.rs"]
mod srtp_tests;

#[cfg(test)]
#[path = "plane_rtcp_tests.rs"]
mod rtcp_tests;

#[cfg(test)]
#[path = "dtmf_plane_tests.rs"]
mod dtmf_tests;

#[cfg(test)]
#[path = "plane_rtcp_port_tests.rs"]
mod rtcp_port_tests;

#[cfg(test)]
#[path = "plane_rtcp_test_support.rs"]
mod rtcp_test_support;
