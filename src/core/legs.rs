//! The engine's parked calls.

pub use super::ids::{CallRef, LegId};
use crate::media::MediaLegId;
use crate::park::lot::OrbitIdx;
use crate::sdp::LocalSdp;
use crate::sip::{NameAddr, Peer};
use crate::time::Time;

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
