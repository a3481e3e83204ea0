//! A parked call as plain data: which orbit, who parked it, its deadlines and recall rounds.
//!
//! serde plain data for the journal: ids are numbers, deadlines absolute [`Time`]s, identities SIP text. A call
//! is here while it is in its orbit; taken (retrieved, recall answered) it becomes a bridge (bridging room), and
//! the outgoing call of a recall round is the bridging room's too.

use crate::core::events::ParkHow;
use crate::core::ids::{CallRef, LegId};
use crate::dialog::text;
use crate::ids::OrbitNumber;
use crate::park::lot::OrbitIdx;
use crate::sip::NameAddr;
use crate::time::Time;
use std::time::Duration;

/// Which media parkd has asked the media plane for, so commands are sent once per change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MediaMode {
    None,
    Hold,
    Bridged,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParkedCall {
    pub id: CallRef,
    pub lot: usize,
    pub orbit: OrbitIdx,
    /// The orbit's number ("701").
    pub orbit_name: OrbitNumber,
    pub parked: LegId,
    /// Who parked the call (Referred-By), when known: the one a recall calls back. Boxed (here and below): a
    /// `NameAddr` is 200 bytes inline, often absent, and every parked call carries both fields; the journal
    /// writes the same text either way.
    #[serde(with = "text::opt_boxed_name_addr")]
    pub parker: Option<Box<NameAddr>>,
    /// The parked party's identity as asserted by a trusted proxy (P-Asserted-Identity), if any.
    #[serde(with = "text::opt_boxed_name_addr")]
    pub asserted_identity: Option<Box<NameAddr>>,
    pub how: ParkHow,
    pub parked_at: Time,
    /// Hold music asked for yet (once the parked leg is confirmed and has an address).
    pub media_mode: MediaMode,
    /// How long each parking period lasts for this call (lot default or the park request's override).
    pub parking_time: Option<Duration>,
    /// When the next recall is due (None: never, or a recall is under way).
    pub recall_at: Option<Time>,
    /// When the call is ended regardless (`max_park_time`).
    pub expires_at: Option<Time>,
    /// When the next keepalive OPTIONS goes to the parked party.
    pub keepalive_at: Option<Time>,
    /// Recall rounds started so far.
    pub rounds: u32,
}

impl ParkedCall {
    /// A call that starts its parking period at `now` in `orbit` of `lot`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: CallRef,
        lot: usize,
        orbit: OrbitIdx,
        orbit_name: OrbitNumber,
        parked: LegId,
        parker: Option<NameAddr>,
        how: ParkHow,
        now: Time,
        parking_time: Option<Duration>,
    ) -> ParkedCall {
        ParkedCall {
            id,
            lot,
            orbit,
            orbit_name,
            parked,
            parker: parker.map(Box::new),
            asserted_identity: None,
            how,
            parked_at: now,
            media_mode: MediaMode::None,
            parking_time,
            recall_at: None,
            expires_at: None,
            keepalive_at: None,
            rounds: 0,
        }
    }
}
