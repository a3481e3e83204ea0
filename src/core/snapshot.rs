//! Read-only snapshots of lots, orbits and bridged calls for applications (the HTTP API, the attendant page),
//! built by the [`Orbits`] view from the rooms that know them (parking, dialogs, bridging); `Core` only hands
//! the view out. Times are milliseconds since the Unix epoch, ready for JSON.

use super::events::RecallTarget;
use super::orbit_view::{OrbitState, Orbits};
use crate::ids::{CallId, OrbitNumber};
use crate::park::lot::OrbitIdx;
use serde::Serialize;

/// One lot and every orbit in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LotSnapshot {
    pub name: String,
    pub park_code: String,
    pub capacity: usize,
    pub occupied: usize,
    /// The SIP domains the lot serves (its tenant; empty: every domain no other lot names).
    pub domains: Vec<String>,
    /// A reload removed the lot: it lists the calls still in it until they leave.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    pub orbits: Vec<OrbitSnapshot>,
}

/// What an orbit shows: `free`, `parked`, or `recalling` (parked, and parkd is ringing someone for it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrbitSnapshot {
    pub orbit: OrbitNumber,
    pub state: &'static str,
    /// The orbit left the lot's range in a reload while this call was in it: shown with its old number until
    /// the call leaves; nothing can be parked there.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
    /// The parked party's identity (`"Bob" <sip:bob@host>`), when occupied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parked: Option<String>,
    /// The parked party's display name or user part, for boards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parked_label: Option<String>,
    /// Who parked it, or `"unknown"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parker: Option<String>,
    /// The parked leg's Call-ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<CallId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parked_since_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall_at_ms: Option<u64>,
    /// Whom parkd is ringing now for this call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recalling: Option<RecallTarget>,
    /// In a cluster, the node the call is parked on when it is another one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A call bridged through parkd (retrieved, recalled or unparked): either leg's Call-ID can be parked again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BridgedSnapshot {
    pub lot: String,
    /// The orbit it was taken from.
    pub from_orbit: OrbitNumber,
    pub state: &'static str,
    /// The originally parked party's leg.
    pub parked_call_id: CallId,
    pub parked: String,
    /// The other leg (retriever, recall or unpark destination).
    pub other_call_id: CallId,
    pub other: String,
}

impl Orbits<'_> {
    /// Every lot with the state of each orbit.
    /// Every lot with the state of each orbit; a lot a reload removed is listed while calls remain in it.
    pub fn lots_snapshot(&self) -> Vec<LotSnapshot> {
        let shown = |i: &usize| self.parking.lot(*i).is_some_and(|l| !l.removed || l.occupied() > 0);
        (0..self.parking.lots().count()).filter(shown).filter_map(|i| self.lot_snapshot(i)).collect()
    }

    /// Lot `lot` (by index) with the state of each orbit.
    pub fn lot_snapshot(&self, lot: usize) -> Option<LotSnapshot> {
        let l = self.parking.lot(lot)?;
        let retired = l.occupants().map(|(i, _)| i).filter(|i| l.is_retired(*i));
        let orbits = (0..l.capacity())
            .map(OrbitIdx)
            .chain(retired)
            .map(|i| {
                let is_retired = l.is_retired(i);
                let orbit = OrbitNumber::from(l.orbit_name(i));
                match self.state(lot, i) {
                    OrbitState::Free => OrbitSnapshot {
                        orbit,
                        retired: is_retired,
                        state: "free",
                        parked: None,
                        parked_label: None,
                        parker: None,
                        call_id: None,
                        parked_since_ms: None,
                        recall_at_ms: None,
                        recalling: None,
                        node: None,
                    },
                    OrbitState::Parked(v) => OrbitSnapshot {
                        orbit,
                        retired: is_retired,
                        state: if v.recalling.is_some() { "recalling" } else { "parked" },
                        parked_label: Some(v.parked.label()),
                        parked: Some(v.parked.to_string()),
                        parker: Some(v.parker.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into())),
                        call_id: Some(v.call_id),
                        parked_since_ms: Some(v.since.as_millis()),
                        recall_at_ms: v.recall_at.map(|t| t.as_millis()),
                        recalling: v.recalling,
                        node: v.node,
                    },
                }
            })
            .collect();
        Some(LotSnapshot {
            name: l.name().to_string(),
            park_code: l.cfg.park_code.clone(),
            capacity: l.capacity(),
            occupied: l.occupied() + self.remote_in_lot(lot),
            domains: l.cfg.domains.clone(),
            removed: l.removed,
            orbits,
        })
    }

    /// Calls bridged through parkd right now, oldest first.
    pub fn bridged_snapshot(&self) -> Vec<BridgedSnapshot> {
        let mut bridges: Vec<_> = self.bridging.iter().collect();
        bridges.sort_by_key(|b| b.id);
        bridges
            .into_iter()
            .filter_map(|c| {
                let (p, o) = (self.dialogs.get(c.parked)?, self.dialogs.get(c.other)?);
                Some(BridgedSnapshot {
                    lot: self.parking.lot_name(c.lot),
                    from_orbit: c.orbit_name.clone(),
                    state: "bridged",
                    parked_call_id: p.dialog.call_id.clone(),
                    parked: p.dialog.remote().uri.to_string(),
                    other_call_id: o.dialog.call_id.clone(),
                    other: o.dialog.remote().uri.to_string(),
                })
            })
            .collect()
    }
}
