//! The media plane: G.711, shared pre-encoded hold frames, the hold pacer and the RTP relay.
//!
//! A *leg* is one call leg of parkd's B2BUA, named by a [`MediaLegId`]: its local RTP port plus
//! an index among the legs sharing that port (always 0 in the default one-port-per-leg mode, see
//! `[server] rtp_legs_per_port`). The signalling core allocates ids and drives [`MediaPlane`] with
//! [`MediaCommand`]s; the io layer
//! ([`crate::io::media_thread`]) feeds received datagrams to [`MediaPlane::on_rtp`], sends what
//! it returns, and calls [`MediaPlane::poll_hold`] at [`MediaPlane::poll_timeout`]. Like the
//! rest of parkd's core, nothing here reads a clock or touches a socket.
//!
//! * [`g711`] — μ-law / A-law codecs and transcoding tables.
//! * [`music`] — hold music encoded once; 20 ms frames are refcounted slices.
//! * [`rtp`] — RTP header writing/reading, the typed values it carries between these modules
//!   ([`rtp::Ssrc`], [`rtp::Pt`], [`rtp::SeqNo`]) and the per-leg outbound stream identity.
//! * [`anchor`] — a stream's position as plain data (journaled, resumed after a restart).
//! * [`pacer`] — one 20-slot timing wheel for every hold stream.
//! * [`prompts`] — spoken prompts ("parked on", digits) compiled in and encoded once.
//! * [`relay`] — in-place rewriting of bridged packets.
//! * [`demux`] — which leg a received packet belongs to when legs share a port.
//! * [`dtmf`] — RFC 4733 telephone-events from a parked caller: one report per key press ([`MediaReport`]).
//! * [`courtesy`] — the courtesy tone inserted into the relay when a call is bridged.
//! * [`rtcp`] — RTCP on the RTP port (rtcp-mux) or the RTCP port: demultiplexing, parkd's hold Sender Reports, relayed reports.
//! * [`plane`] — [`MediaPlane`], the state machine tying it together.

pub mod anchor;
pub mod courtesy;
pub mod demux;
pub mod dtmf;
pub mod g711;
pub mod music;
pub mod pacer;
pub mod plane;
pub mod prefetch;
pub mod prompts;
pub mod relay;
pub mod rtcp;
pub mod rtp;
pub mod srtp;
pub mod srtp_crypto;

use std::net::SocketAddr;

use bytes::Bytes;

pub use music::{HoldMusic, MusicError};
pub use plane::{MediaPlane, MediaStats, MediaWake};
pub use prompts::Prompt;

/// The audio codecs parkd speaks: G.711 at 8 kHz, 20 ms packets (RFC 3551 §4.5.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Codec {
    /// G.711 μ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551 Table 4).
    pub const fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The codec of a static payload type, if it is one of ours.
    pub const fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The encoding name used in `a=rtpmap` (RFC 3551).
    pub const fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// Clock rate in Hz.
    pub const fn clock_rate(self) -> u32 {
        8000
    }
}

/// Index into the music list given to [`MediaPlane::new`]. An out-of-range id falls back to 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MusicId(pub u16);

/// The identity of one media leg: its local RTP port (the socket it sends from and receives on,
/// the port in parkd's SDP) and its index among the legs sharing that port.
///
/// The port is derivable from the id by the pure [`MediaLegId::port`] (the id packs
/// `port << 16 | share`), so commands carry only the id. With one leg per port (the default)
/// `share` is always 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct MediaLegId(pub u32);

impl MediaLegId {
    /// The leg with index `share` on local RTP port `port`.
    pub const fn new(port: u16, share: u16) -> MediaLegId {
        MediaLegId(((port as u32) << 16) | share as u32)
    }
    /// The only leg of `port` (one leg per port).
    pub const fn solo(port: u16) -> MediaLegId {
        MediaLegId::new(port, 0)
    }
    /// The local RTP port the leg sends from and receives on.
    pub const fn port(self) -> u16 {
        (self.0 >> 16) as u16
    }
    /// The leg's index among the legs sharing its port.
    pub const fn share(self) -> u16 {
        (self.0 & 0xFFFF) as u16
    }
}

impl std::fmt::Display for MediaLegId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.port(), self.share())
    }
}

/// What the signalling core asks of the media plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaCommand {
    /// Replace (or add) the hold music with id `id` (a reload, issue 21: a lot's new music, a new lot's music).
    /// Legs playing it go on with the new loop at the same frame count (no gap in sequence or timestamp). Sent to
    /// every media thread; carries no leg.
    SetMusic { id: MusicId, music: Box<music::HoldMusic> },
    /// Play hold music to `remote` from the leg's port (creates the leg if new; ends a bridge).
    Hold { leg: MediaLegId, remote: SocketAddr, codec: Codec, music: MusicId },
    /// New remote address/codec after a re-INVITE (creates an idle leg if new — use this to set up
    /// a retrieving leg before [`MediaCommand::Bridge`]). `send = false` when the peer is
    /// sendonly/inactive: nothing is sent to this leg then. Allows re-latching (see
    /// [`MediaPlane::on_rtp`]).
    Update { leg: MediaLegId, remote: SocketAddr, codec: Codec, send: bool },
    /// Stop hold on both legs and relay RTP between them.
    Bridge { a: MediaLegId, b: MediaLegId },
    /// Forget the leg entirely (its bridge peer, if any, goes idle).
    Stop { leg: MediaLegId },
    /// The RFC 4733 telephone-event payload type negotiated on this leg (`None`: not negotiated /
    /// unknown). Additive to the lead's design: lets relayed DTMF get the right PT per leg.
    DtmfPayloadType { leg: MediaLegId, pt: Option<u8> },
    /// Speak `words` on a leg that is playing hold music, then resume the music where it was.
    /// The prompt frames go out through the same pacer and RTP stream (seq/timestamps continue, same
    /// SSRC), each prompt followed by ~160 ms of silence. Ignored on a leg that is not sending hold
    /// music (idle, bridged, or paused by a sendonly/inactive peer). A new `Announce` replaces one in
    /// progress; `Bridge`, `Stop` or a pause cancels it. See [`prompts::Prompt::orbit_announcement`].
    Announce { leg: MediaLegId, words: Vec<Prompt> },
    /// The leg's outbound stream identity (issue 17): SSRC, the sequence number of its next packet and the
    /// timestamp of that packet, chosen by the core (journaled as a [`anchor::StreamAnchor`]) instead of the
    /// plane's own random ones. Sent before the command that creates the leg (`Hold`, `Update`), it is kept
    /// until then; for a leg that exists it replaces the identity (hold music restarts its schedule from it).
    /// The next packet carries the marker bit. Only sent with journaling on.
    Stream { leg: MediaLegId, ssrc: u32, seq: u16, ts: u32 },
    /// The leg's SRTP keys (issue 19; `None`: plain RTP). Like `Stream`, kept until the leg is created when sent
    /// before it. Hold music and relayed packets to the leg are then protected with `keys.local`, and what it
    /// sends is authenticated and decrypted with `keys.remote` (failures dropped and counted). The same keys
    /// again change nothing (the rollover counters and the replay window stay); a new peer key alone (a
    /// re-offer) renews only the inbound context. `roc` is the SRTP rollover counter of the stream's next packet
    /// when the keys are new to the plane: 0 for a new stream, the journaled one for a stream resumed after a
    /// restart (issue 17), so that the phone, whose context followed the old stream, opens the new packets.
    /// `srtcp` likewise: a bound on the SRTCP index the old process can have reached on the stream (0 for a new
    /// stream); parkd's first SRTCP packet to the leg carries a higher one, so the phone's replay window takes
    /// it (see [`srtp::SrtpLeg::with_srtcp_floor`]).
    Srtp { leg: MediaLegId, keys: Option<Box<srtp::SrtpKeys>>, roc: u32, srtcp: u32 },
    /// Whether the leg multiplexes RTCP on its RTP port (RFC 5761: both offer and answer had `a=rtcp-mux`).
    /// Such a leg gets its RTCP from parkd on the RTP port: Sender Reports with its hold music, its bridge
    /// peer's reports. Kept until the leg is created when sent before it. A leg also turns it on when it
    /// sends valid RTCP on the RTP port (it muxes: e.g. a call restored after a restart).
    RtcpMux { leg: MediaLegId, on: bool },
    /// Play the courtesy tone `tone` (an index into the list given to [`MediaPlane::set_tones`]; out of range:
    /// the built-in two beeps) to a bridged leg: the first audio packets relayed to it carry the tone instead
    /// (see [`courtesy`]). Send it after the `Bridge`; ignored on a leg that is not bridged.
    Courtesy { leg: MediaLegId, tone: MusicId },
    /// Courtesy tone `id` is now `tone` (a reload; ids past the end are added, the gap filled with the built-in
    /// beeps). Applies to the next `Courtesy`.
    SetTone { id: MusicId, tone: Box<HoldMusic> },
    /// The phone's RTCP port when it does not multiplex (its SDP's `a=rtcp:`, RFC 3605, else its RTP port + 1;
    /// 0: none), at the IP address of its SDP. parkd's side of that RTCP is the media thread's shared RTCP
    /// port (the one parkd's SDP names in `a=rtcp:`; see `plane_rtcp`): what arrives there from this address
    /// is the leg's RTCP, and the leg's Sender Reports and relayed reports leave from there to it. Kept until
    /// the leg is created when sent before it; mux, when on, wins.
    RtcpPort { leg: MediaLegId, port: u16 },
}

/// What the media plane tells the core (drained with [`MediaPlane::poll_report`]; rare: never per packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaReport {
    /// A parked leg (on hold music) pressed a key: the first packet of a new RFC 4733 event on its negotiated
    /// telephone-event payload type (see [`dtmf`]).
    Dtmf { leg: MediaLegId, key: dtmf::DtmfKey },
    /// A leg latched to `source`, another address than its SDP names (symmetric RTP behind a NAT; once per
    /// latch): the core never tries direct media for its call.
    Latched { leg: MediaLegId, source: SocketAddr },
}

/// A relayed packet: the caller sends `buf[..len]` (rewritten in place) from local `port` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub port: u16,
    pub to: SocketAddr,
    pub len: usize,
}

/// One hold-music packet: 12-byte header + a refcounted slice of the shared encoded loop, sent
/// from local `port` (the leg's [`MediaLegId::port`]) to `to`. A hold stream's RTCP Sender Report travels the
/// same way (its first 12 bytes in `header`, the rest in `payload`: see `plane_rtcp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldPacket {
    pub port: u16,
    pub to: SocketAddr,
    pub header: [u8; 12],
    pub payload: Bytes,
}

/// A reusable batch of hold packets: [`HoldBatch::clear`] keeps the capacity, so a steady
/// state of N hold streams allocates nothing per packet.
#[derive(Debug, Default)]
pub struct HoldBatch {
    packets: Vec<HoldPacket>,
}

impl HoldBatch {
    /// A batch with room for `capacity` packets.
    pub fn with_capacity(capacity: usize) -> Self {
        HoldBatch { packets: Vec::with_capacity(capacity) }
    }
    /// Drops the packets, keeps the allocation.
    pub fn clear(&mut self) {
        self.packets.clear();
    }
    /// The packets gathered so far.
    pub fn packets(&self) -> &[HoldPacket] {
        &self.packets
    }
    /// Number of packets.
    pub fn len(&self) -> usize {
        self.packets.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
    /// Allocated capacity (for tests and metrics).
    pub fn capacity(&self) -> usize {
        self.packets.capacity()
    }
    pub(crate) fn push(&mut self, p: HoldPacket) {
        self.packets.push(p);
    }
    /// Orders the packets by local port (in place, no allocation), so [`HoldBatch::port_runs`]
    /// yields one run per socket. Packets of one port keep no particular order among themselves
    /// (they belong to different legs; each leg has at most one RTP packet per batch, and now and then its RTCP
    /// Sender Report, whose order relative to it does not matter).
    pub fn sort_by_port(&mut self) {
        self.packets.sort_unstable_by_key(|p| p.port);
    }
    /// Consecutive packets with the same local port, at most `max` per run (`max` 0 counts as 1):
    /// after [`HoldBatch::sort_by_port`], one `sendmmsg` per run.
    pub fn port_runs(&self, max: usize) -> PortRuns<'_> {
        PortRuns { rest: &self.packets, max: max.max(1) }
    }
}

/// Iterator of [`HoldBatch::port_runs`].
#[derive(Debug)]
pub struct PortRuns<'a> {
    rest: &'a [HoldPacket],
    max: usize,
}

impl<'a> Iterator for PortRuns<'a> {
    type Item = &'a [HoldPacket];
    fn next(&mut self) -> Option<&'a [HoldPacket]> {
        let port = self.rest.first()?.port;
        let n = self.rest.iter().take(self.max).take_while(|p| p.port == port).count();
        let (run, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(run)
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    fn packet(port: u16) -> HoldPacket {
        HoldPacket { port, to: "127.0.0.1:4000".parse().unwrap(), header: [0; 12], payload: Bytes::from_static(&[0; 160]) }
    }

    #[test]
    fn a_slot_with_100_legs_on_2_ports_is_2_send_batches() {
        let mut b = HoldBatch::with_capacity(128);
        for i in 0..100u16 {
            b.push(packet(if i % 2 == 0 { 20_000 } else { 20_002 }));
        }
        b.sort_by_port();
        let runs: Vec<(u16, usize)> = b.port_runs(64).map(|r| (r[0].port, r.len())).collect();
        assert_eq!(runs, vec![(20_000, 50), (20_002, 50)]);
    }

    #[test]
    fn runs_are_cut_at_the_batch_limit() {
        let mut b = HoldBatch::with_capacity(200);
        for _ in 0..150 {
            b.push(packet(20_000));
        }
        b.push(packet(20_004));
        let lens: Vec<usize> = b.port_runs(64).map(<[HoldPacket]>::len).collect();
        assert_eq!(lens, vec![64, 64, 22, 1]);
        assert_eq!(b.port_runs(0).count(), 151, "a limit of 0 is one packet per run");
    }

    #[test]
    fn media_leg_id_packs_port_and_share() {
        let id = MediaLegId::new(20_002, 7);
        assert_eq!((id.port(), id.share()), (20_002, 7));
        assert_eq!(MediaLegId::solo(65_534).port(), 65_534);
        assert_eq!(id.to_string(), "20002#7");
    }
}
