//! The media plane: G.711, shared pre-encoded hold frames, the hold pacer and the RTP relay.
//!
//! A *leg* is one local RTP port (one call leg of parkd's B2BUA). The signalling core allocates
//! ports and drives [`MediaPlane`] with [`MediaCommand`]s; the io layer
//! ([`crate::io::media_thread`]) feeds received datagrams to [`MediaPlane::on_rtp`], sends what
//! it returns, and calls [`MediaPlane::poll_hold`] at [`MediaPlane::next_deadline`]. Like the
//! rest of parkd's core, nothing here reads a clock or touches a socket.
//!
//! * [`g711`] — μ-law / A-law codecs and transcoding tables.
//! * [`music`] — hold music encoded once; 20 ms frames are refcounted slices.
//! * [`rtp`] — RTP header writing/reading and the per-leg outbound stream identity.
//! * [`pacer`] — one 20-slot timing wheel for every hold stream.
//! * [`prompts`] — spoken prompts ("parked on", digits) compiled in and encoded once.
//! * [`relay`] — in-place rewriting of bridged packets.
//! * [`plane`] — [`MediaPlane`], the state machine tying it together.

pub mod g711;
pub mod music;
pub mod pacer;
pub mod plane;
pub mod prompts;
pub mod relay;
pub mod rtp;

use std::net::SocketAddr;

use bytes::Bytes;

pub use music::{HoldMusic, MusicError};
pub use plane::{MediaPlane, MediaStats};
pub use prompts::Prompt;

/// The audio codecs parkd speaks: G.711 at 8 kHz, 20 ms packets (RFC 3551 §4.5.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// What the signalling core asks of the media plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaCommand {
    /// Play hold music to `remote` from local `port` (creates the leg if new; ends a bridge).
    Hold { port: u16, remote: SocketAddr, codec: Codec, music: MusicId },
    /// New remote address/codec after a re-INVITE (creates an idle leg if new — use this to set up
    /// a retrieving leg before [`MediaCommand::Bridge`]). `send = false` when the peer is
    /// sendonly/inactive: nothing is sent to this leg then. Allows re-latching (see
    /// [`MediaPlane::on_rtp`]).
    Update { port: u16, remote: SocketAddr, codec: Codec, send: bool },
    /// Stop hold on both legs and relay RTP between them.
    Bridge { a: u16, b: u16 },
    /// Forget the leg entirely (its bridge peer, if any, goes idle).
    Stop { port: u16 },
    /// The RFC 4733 telephone-event payload type negotiated on this leg (`None`: not negotiated /
    /// unknown). Additive to the lead's design: lets relayed DTMF get the right PT per leg.
    DtmfPayloadType { port: u16, pt: Option<u8> },
    /// Speak `words` on a leg that is playing hold music, then resume the music where it was.
    /// The prompt frames go out through the same pacer and RTP stream (seq/timestamps continue, same
    /// SSRC), each prompt followed by ~160 ms of silence. Ignored on a leg that is not sending hold
    /// music (idle, bridged, or paused by a sendonly/inactive peer). A new `Announce` replaces one in
    /// progress; `Bridge`, `Stop` or a pause cancels it. See [`prompts::Prompt::orbit_announcement`].
    Announce { port: u16, words: Vec<Prompt> },
}

/// A relayed packet: the caller sends `buf[..len]` (rewritten in place) from local `port` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub port: u16,
    pub to: SocketAddr,
    pub len: usize,
}

/// One hold-music packet: 12-byte header + a refcounted slice of the shared encoded loop.
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
}
