//! The engine's plain data: call legs (one per dialog parkd holds) and parked calls.
//!
//! Ids are numbers and deadlines absolute [`Time`]s, but a [`Leg`] still holds a `tracing::Span` and whole
//! dialogs: not yet plain data that a journal could write (issue 16 moves legs into rooms of plain data).

use crate::media::MediaLegId;
use crate::dialog::Dialog;
use crate::media::Codec;
use crate::park::lot::OrbitIdx;
use crate::sdp::{Direction, LocalSdp};
use crate::sip::{NameAddr, Peer};
use crate::time::Time;
use crate::txn::ServerTxnId;
use std::net::SocketAddr;

/// A call leg: one dialog between parkd and a phone. Ids are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct LegId(pub u64);

/// A parked call (and what became of it). Ids are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct CallRef(pub u64);

/// Which side of a parked call a leg is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegRole {
    /// The party that was parked (the transferee).
    Parked,
    /// Whoever dialed the orbit to take the call.
    Retriever,
    /// The parker (or fallback destination) parkd called back and who answered.
    Recall,
}

/// Where a leg's INVITE handshake stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegState {
    /// 2xx sent, waiting for the ACK.
    Answered { invite: ServerTxnId },
    /// ACK received: media may flow.
    Confirmed,
}

/// The negotiated media of a leg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegMedia {
    /// parkd's media leg (its RTP port is `media_leg.port()`, the port in `local_sdp`).
    pub media_leg: MediaLegId,
    /// The peer's RTP address from its SDP (None until an offer or answer names one).
    pub remote: Option<SocketAddr>,
    pub codec: Codec,
    pub dtmf_pt: Option<u8>,
    /// The peer's stated direction (`sendonly` = it holds us: parkd must not send).
    pub peer_direction: Direction,
    pub local_sdp: LocalSdp,
    /// parkd offered in its 2xx (the INVITE had no SDP); the answer comes in the ACK.
    pub awaiting_answer: bool,
}

impl LegMedia {
    /// Whether parkd may send RTP to the peer (RFC 3264 §5.1 / §6.1).
    pub fn may_send(&self) -> bool {
        matches!(self.peer_direction, Direction::SendRecv | Direction::RecvOnly) && self.remote.is_some()
    }
}

#[derive(Clone, Debug)]
pub struct Leg {
    pub id: LegId,
    pub call: CallRef,
    pub role: LegRole,
    pub state: LegState,
    pub dialog: Dialog,
    /// Where the dialog-creating request came from.
    pub source: Peer,
    pub media: LegMedia,
    /// The span every log line about this dialog is emitted in (call-id, orbit, role).
    pub span: tracing::Span,
    /// For a dialog parkd started: the ACK it sent (re-sent when the 2xx is retransmitted).
    pub uac_ack: Option<(Peer, bytes::Bytes)>,
}

/// What a parked call is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    /// In its orbit, hearing music.
    Parked,
    /// Taken by a retriever; the two legs' audio is bridged.
    Bridged { other: LegId },
}

/// Which media parkd has asked the media plane for, so commands are sent once per change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaMode {
    None,
    Hold,
    Bridged,
}

/// How the call came to be parked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParkHow {
    /// Dialed the park code; parkd chose the orbit.
    Indirect,
    /// Dialed an orbit with a Referred-By.
    Directed,
}

#[derive(Clone, Debug)]
pub struct ParkedCall {
    pub id: CallRef,
    pub lot: usize,
    /// The orbit while parked; None once retrieved.
    pub orbit: Option<OrbitIdx>,
    /// The orbit's number, kept after retrieval for logs.
    pub orbit_name: String,
    pub parked: LegId,
    /// Who parked the call (Referred-By), when known: the one a recall calls back.
    pub parker: Option<NameAddr>,
    /// The parked party's identity as asserted by a trusted proxy (P-Asserted-Identity), if any.
    pub asserted_identity: Option<NameAddr>,
    pub how: ParkHow,
    pub parked_at: Time,
    pub state: CallState,
    pub media_mode: MediaMode,
    /// How long each parking period lasts for this call (lot default or the park request's override).
    pub parking_time: Option<std::time::Duration>,
    /// When the next recall is due (None: never, or a recall is under way).
    pub recall_at: Option<Time>,
    /// When the call is ended regardless (`max_park_time`).
    pub expires_at: Option<Time>,
    /// When the next keepalive OPTIONS goes to the parked party.
    pub keepalive_at: Option<Time>,
    /// Recall rounds started so far.
    pub rounds: u32,
    /// The recall ringing right now, if any.
    /// Boxed: most parked calls are never being recalled.
    pub recall: Option<Box<Recall>>,
}

impl ParkedCall {
    /// A call that starts its parking period at `now` in `orbit` of `lot`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: CallRef,
        lot: usize,
        orbit: OrbitIdx,
        orbit_name: String,
        parked: LegId,
        parker: Option<NameAddr>,
        how: ParkHow,
        now: Time,
        parking_time: Option<std::time::Duration>,
    ) -> ParkedCall {
        ParkedCall {
            id,
            lot,
            orbit: Some(orbit),
            orbit_name,
            parked,
            parker,
            asserted_identity: None,
            how,
            parked_at: now,
            state: CallState::Parked,
            media_mode: MediaMode::None,
            parking_time,
            recall_at: None,
            expires_at: None,
            keepalive_at: None,
            rounds: 0,
            recall: None,
        }
    }
}

/// Whom a recall rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecallTarget {
    Parker,
    FallbackUri,
    /// An application asked parkd to unpark the call to a destination (HTTP API); not a recall round.
    ApiUnpark,
}

/// An outgoing recall INVITE and what is known of it.
#[derive(Clone, Debug)]
pub struct Recall {
    pub txn: crate::txn::ClientTxnId,
    pub invite: crate::sip::Request,
    pub next_hop: Peer,
    pub target: RecallTarget,
    /// The media leg offered in the INVITE (its port is in `local_sdp`).
    pub media_leg: MediaLegId,
    pub local_sdp: LocalSdp,
    pub ring_until: Time,
    /// A provisional response arrived (a CANCEL may be sent, RFC 3261 §9.1).
    pub provisional: bool,
}
