//! Events the core reports: what happened to parked calls, in words an admin (and later an API) can use.
//! Orbits and Call-IDs are typed ([`OrbitNumber`], [`CallId`]); in JSON they are the plain strings they wrap.
//!
//! Every event that ends a call's stay in its orbit carries `dwell_ms`: how long it was parked, from when it
//! was parked (or swapped into the orbit by an attended park) to the input that ended the stay, in the core's
//! own time. Recall rounds and reparks do not restart it. The metrics' dwell histogram is built from these.

use crate::ids::{CallId, OrbitNumber};

/// How the call came to be parked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParkHow {
    /// Dialed the park code; parkd chose the orbit.
    Indirect,
    /// Dialed an orbit with a Referred-By.
    Directed,
}

/// Whom a recall rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecallTarget {
    Parker,
    FallbackUri,
    /// An application asked parkd to unpark the call to a destination (HTTP API); not a recall round.
    ApiUnpark,
    /// The parked caller pressed a key of the lot's `dtmf_keys` naming a SIP URI; not a recall round.
    DtmfKey,
}

impl RecallTarget {
    /// A call to a destination someone chose (an API unpark, a caller's key), not a recall round: on no
    /// answer the call simply stays parked.
    pub fn is_unpark(self) -> bool {
        matches!(self, RecallTarget::ApiUnpark | RecallTarget::DtmfKey)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ParkEvent {
    /// A call was parked in an orbit.
    /// `domain`: the lot's tenant (its first `domains` entry), absent for a lot serving every domain.
    Parked {
        lot: String,
        orbit: OrbitNumber,
        call_id: CallId,
        parked: String,
        parker: Option<String>,
        how: ParkHow,
        #[serde(skip_serializing_if = "Option::is_none")]
        domain: Option<String>,
    },
    /// Someone dialed the orbit and took the call.
    Retrieved { lot: String, orbit: OrbitNumber, call_id: CallId, by: String, dwell_ms: u64 },
    /// Attended park: a new party replaced the (self-parked) consultation leg in its orbit.
    Swapped { lot: String, orbit: OrbitNumber, call_id: CallId, parked: String, parker: Option<String> },
    /// The parked party hung up while parked.
    Abandoned { lot: String, orbit: OrbitNumber, call_id: CallId, dwell_ms: u64 },
    /// A bridged (retrieved) call ended; `by` says which side hung up.
    Ended { orbit: OrbitNumber, call_id: CallId, by: String },
    /// A park or retrieve was refused with a SIP status.
    Refused { number: String, status: u16, reason: String, call_id: CallId },
    /// The parking time ran out and parkd is calling the parker (or the fallback URI) back.
    RecallStarted { orbit: OrbitNumber, to: String, target: RecallTarget, round: u32 },
    /// The recall was answered: the call is bridged to whoever answered.
    RecallAnswered { orbit: OrbitNumber, by: String, target: RecallTarget, dwell_ms: u64 },
    /// The recall was not answered (status 408 = rang out).
    RecallFailed { orbit: OrbitNumber, status: u16, target: RecallTarget },
    /// Nobody took the call this round: it stays parked until the next recall.
    Reparked { orbit: OrbitNumber, round: u32 },
    /// parkd ended a parked call (recall rounds exhausted, `hangup` fallback, or `max_park_time`).
    TimedOut { orbit: OrbitNumber, reason: String, dwell_ms: u64 },
    /// An application ended the parked call (HTTP API `DELETE /v1/orbits/{orbit}`).
    HungUp { lot: String, orbit: OrbitNumber, call_id: CallId, dwell_ms: u64 },
    /// In a cluster, another node took the orbit of a call parked here (this node was cut off from Redis or
    /// away past its lease): the call was moved into `moved_to`, a free orbit of the same lot, or, the lot being
    /// full everywhere (`moved_to` null), its parker is recalled.
    OrbitLost { lot: String, orbit: OrbitNumber, call_id: CallId, owner: String, moved_to: Option<OrbitNumber> },
    /// A 2xx was never acknowledged: the leg was torn down (RFC 3261 §13.3.1.4).
    AckTimeout { call_id: CallId },
    /// In a cluster, another node (`node`) holds `orbit` now: a call parked there, as its claim reached this node
    /// (change message or resync). `since_ms` is when it was parked (Unix epoch ms, the owner's clock).
    RemoteParked { lot: String, orbit: OrbitNumber, node: String, parked: String, parker: Option<String>, since_ms: u64 },
    /// In a cluster, an orbit another node held is free again: `node` released it (retrieved, ended, …), or its
    /// lease ran out (`expired`: that node is gone or cut off from Redis).
    RemoteFreed { lot: String, orbit: OrbitNumber, node: String, expired: bool },
    /// The parked caller pressed a key of its lot's `dtmf_keys` (`via`: `rfc4733` or `info`); `action` is what
    /// it does: `dial` (parkd calls `to`), `recall` or `callback`. Keys the lot does not map, and keys within
    /// `dtmf_min_gap_ms` of the last action, are not reported.
    DtmfKey { lot: String, orbit: OrbitNumber, call_id: CallId, key: String, action: String, to: Option<String>, via: String },
    /// The parked caller asked to be called back (a `callback` key): `caller` is its identity; it stays parked.
    CallbackRequested { lot: String, orbit: OrbitNumber, call_id: CallId, caller: String, key: String },
    /// The capacity guard turned (issue 20): `state` is `refusing` (new parks get 503 + Retry-After) or
    /// `accepting`; `cause` is `media_busy`, `media_late`, `max_parked` or `recovered`; `load_pct` and
    /// `late_us` are the busiest media thread's smoothed busy share (percent) and pacer lateness then.
    Capacity { state: String, cause: String, load_pct: u32, late_us: u64 },
    /// The configuration was reloaded (SIGHUP or `POST /v1/reload`, issue 21): lots added, changed and removed
    /// (a removed lot's calls stay until they leave), orbits that left a lot's range while a call was in them
    /// (`"lot/701"`: shown with their old number until the call leaves), and the changed settings that only
    /// take effect at the next start (left as they were).
    ConfigReloaded { lots_added: Vec<String>, lots_changed: Vec<String>, lots_removed: Vec<String>, orbits_retired: Vec<String>, needs_restart: Vec<String> },
}

impl ParkEvent {
    /// How long the call was parked, for an event that ends its stay in the orbit (see the module doc).
    pub fn dwell(&self) -> Option<std::time::Duration> {
        match self {
            ParkEvent::Retrieved { dwell_ms, .. }
            | ParkEvent::Abandoned { dwell_ms, .. }
            | ParkEvent::RecallAnswered { dwell_ms, .. }
            | ParkEvent::TimedOut { dwell_ms, .. }
            | ParkEvent::HungUp { dwell_ms, .. } => Some(std::time::Duration::from_millis(*dwell_ms)),
            _ => None,
        }
    }
}

/// `now - parked_at` in whole milliseconds, for an event's `dwell_ms`.
pub(super) fn dwell_ms(parked_at: crate::time::Time, now: crate::time::Time) -> u64 {
    u64::try_from(now.saturating_since(parked_at).as_millis()).unwrap_or(u64::MAX)
}
