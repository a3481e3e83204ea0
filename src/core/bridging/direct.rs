//! Direct media (`direct_media = true`) as plain data: where the re-INVITE pair of a bridge stands, the SDP
//! parkd sent each phone in that mode, and the step's deadline (the settle delay after the bridge, or a 491's
//! back-off). The flow is `core::direct_media`.

use crate::core::ids::LegId;
use crate::time::Time;
use crate::txn::ClientTxnId;
use bytes::Bytes;
use std::net::SocketAddr;

/// One re-INVITE of the pair (or of the way back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Offer `leg` the other phone's address (its `c=`/`m=`), so it sends its RTP there.
    Direct(LegId),
    /// Offer `leg` parkd's own address again: relaying (a failed pair undone, a re-park, a phone's new offer).
    Relay(LegId),
}

impl Step {
    pub fn leg(self) -> LegId {
        match self {
            Step::Direct(l) | Step::Relay(l) => l,
        }
    }
}

/// Where a bridge's direct media stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Working through the steps (`next`, at `at` or in flight as `txn`).
    Moving,
    /// Both phones send to each other; parkd relays nothing.
    Direct,
    /// parkd relays (never tried, refused, undone): it is not tried again for this bridge.
    Relaying,
}

/// The direct-media state of one bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectMedia {
    pub phase: Phase,
    /// The steps still to do, first = the current one.
    pub steps: Vec<Step>,
    /// When the current step is (re)sent; `None` while it is in flight.
    pub at: Option<Time>,
    /// The current step's re-INVITE, in flight.
    pub txn: Option<(LegId, ClientTxnId)>,
    /// The SDP parkd last sent each leg in direct mode (answers a refresh from that phone, and is the body of
    /// parkd's refresh re-INVITE).
    pub sent: Vec<(LegId, Bytes)>,
    /// The RTP address the first phone answered its direct offer with (offered to the second one).
    pub answered: Option<SocketAddr>,
    /// A step failed: the pair is being undone and the bridge stays relayed.
    pub undoing: bool,
    /// Each phone's SDP origin (`o=` session id and version) in its answer to parkd's direct offer: a re-INVITE
    /// from it with the same origin is a refresh, another one a new offer.
    pub peer_origin: Vec<(LegId, (String, String))>,
    /// The bridge's other leg when this is its pair (a re-parked call retrieved again is a new bridge: tried anew).
    pub bridge_other: Option<LegId>,
}

impl DirectMedia {
    /// The pair for a bridge of `parked` and `other`, starting at `at`.
    pub fn pair(parked: LegId, other: LegId, at: Time) -> DirectMedia {
        DirectMedia { phase: Phase::Moving, steps: vec![Step::Direct(parked), Step::Direct(other)], at: Some(at), txn: None, sent: Vec::new(), answered: None, undoing: false, peer_origin: Vec::new(), bridge_other: Some(other) }
    }

    /// Nothing in progress (no step left, none in flight).
    pub fn idle(&self) -> bool {
        self.steps.is_empty() && self.txn.is_none()
    }

    /// Back to relaying for `legs` (re-INVITEs with parkd's SDP), starting at `at`.
    pub fn back(legs: &[LegId], at: Time) -> DirectMedia {
        DirectMedia { phase: Phase::Moving, steps: legs.iter().map(|l| Step::Relay(*l)).collect(), at: Some(at), txn: None, sent: Vec::new(), answered: None, undoing: true, peer_origin: Vec::new(), bridge_other: None }
    }

    /// The SDP parkd last sent `leg` in direct mode.
    pub fn sent_to(&self, leg: LegId) -> Option<&Bytes> {
        self.sent.iter().find(|(l, _)| *l == leg).map(|(_, b)| b)
    }

    pub fn set_sent(&mut self, leg: LegId, body: Bytes) {
        self.sent.retain(|(l, _)| *l != leg);
        self.sent.push((leg, body));
    }
}
