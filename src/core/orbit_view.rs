//! A read-only view of orbits for watchers (BLF subscriptions, the HTTP API), and the one hook the engine
//! calls whenever an orbit's state may have changed.
//!
//! What an orbit shows comes from three rooms: the parking room (which call is parked there, since when, its
//! recall deadline), the dialogs room (the parked party and its dialog's tags) and the bridging room (whether a
//! recall or unpark is ringing for it). [`Orbits`] borrows the three, read-only.

use super::bridging::Bridging;
use super::dialogs::Dialogs;
use super::events::RecallTarget;
use super::parking::Parking;
use super::Core;
use crate::ids::CallId;
use crate::park::lot::OrbitIdx;
use crate::sip::{NameAddr, SipStr};
use crate::time::Time;

/// What a watcher sees of one orbit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // a short-lived view, returned by value
pub enum OrbitState {
    Free,
    /// A call is parked here.
    Parked(ParkedView),
}

/// A parked call as watchers see it: who, since when, and the dialog a phone needs to retrieve it with Replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedView {
    /// The parked party's identity (its From, without tag).
    pub parked: NameAddr,
    /// Who parked it, if known.
    pub parker: Option<NameAddr>,
    pub since: Time,
    /// When the recall is due, if one is scheduled.
    pub recall_at: Option<Time>,
    /// The recall ringing now, if any.
    pub recalling: Option<RecallTarget>,
    /// The parked dialog: Call-ID, parkd's tag, the parked party's tag (RFC 3891 Replaces from parkd's side).
    pub call_id: CallId,
    pub local_tag: String,
    pub remote_tag: String,
    /// In a cluster, the node holding the call when it is another one (`None`: parked here). A remote call's
    /// dialog ids are the owner's (from the claim's info; empty when the claim did not carry them: BLF then
    /// shows it without them).
    pub node: Option<String>,
}

impl Core {
    /// Every lot with the state of each orbit (for applications: see [`super::snapshot`]).
    pub fn lots_snapshot(&self) -> Vec<super::snapshot::LotSnapshot> {
        self.orbits().lots_snapshot()
    }

    /// One lot by name with the state of each orbit (`None`: no such lot).
    pub fn lot_snapshot_named(&self, name: &str) -> Option<super::snapshot::LotSnapshot> {
        self.orbits().lot_snapshot(self.parking.lots().position(|l| l.name() == name)?)
    }

    /// Calls bridged through parkd right now, oldest first.
    pub fn bridged_snapshot(&self) -> Vec<super::snapshot::BridgedSnapshot> {
        self.orbits().bridged_snapshot()
    }

    /// Which lot and orbit a dialed number names (`None` for park codes and unknown numbers).
    /// Which lot a request's Request-URI user belongs to and what it means there, its tenant picked by the
    /// Request-URI host, then the To host (lots' `domains`; see [`super::parking::Parking::lookup_in`]).
    pub(super) fn lookup_request(&self, req: &crate::sip::Request) -> Option<(usize, crate::park::lot::Dialed)> {
        let user = req.uri.user.as_deref()?;
        self.parking.lookup_in(user, &[req.uri.host.as_str(), req.common.to.uri.host.as_str()])
    }

    pub fn find_orbit(&self, user: &str) -> Option<(usize, OrbitIdx)> {
        self.resolve_orbit(user).ok()
    }

    /// An orbit as an application names it: `701` (when only one lot has that number), `<lot>:701`, or
    /// `701@<domain>` (the tenant's lot, as a phone of that domain dialing 701 would reach it).
    pub fn resolve_orbit(&self, name: &str) -> Result<(usize, OrbitIdx), super::CommandError> {
        use crate::park::lot::Dialed;
        let unknown = || super::CommandError::UnknownOrbit(name.to_string());
        if let Some((lot, number)) = name.split_once(':') {
            let l = self.parking.lots().position(|l| l.name() == lot).ok_or_else(unknown)?;
            return match self.parking.lot(l).and_then(|x| if x.removed { x.dialed_removed(number) } else { x.dialed(number) }) {
                Some(Dialed::Orbit(i)) => Ok((l, i)),
                _ => Err(unknown()),
            };
        }
        if let Some((number, domain)) = name.split_once('@') {
            return match self.parking.lookup_in(number, &[domain]) {
                Some((lot, Dialed::Orbit(i))) => Ok((lot, i)),
                _ => Err(unknown()),
            };
        }
        let found: Vec<(usize, OrbitIdx)> = self.parking.orbits_named(name).collect();
        match found[..] {
            [one] => Ok(one),
            [] => Err(unknown()),
            _ => Err(super::CommandError::AmbiguousOrbit {
                number: name.to_string(),
                lots: found.iter().map(|(l, _)| self.parking.lot_name(*l)).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// The state of orbit `orbit` of lot `lot` (Free for out-of-range indices).
    pub fn orbit_state(&self, lot: usize, orbit: OrbitIdx) -> OrbitState {
        self.orbits().state(lot, orbit)
    }

    /// A read-only view of the orbits.
    pub(super) fn orbits(&self) -> Orbits<'_> {
        Orbits { parking: &self.parking, dialogs: &self.dialogs, bridging: &self.bridging, remote: self.cluster.as_ref().map(|c| c.room.view()) }
    }

    /// Called by the engine whenever orbit `orbit` of lot `lot` may have changed (parked, retrieved, abandoned,
    /// recall started or ended). Watchers (BLF) and the admission room (who holds the orbit) hook in here.
    pub(super) fn orbit_changed(&mut self, now: Time, lot: usize, orbit: OrbitIdx) {
        self.cluster_orbit_changed(lot, orbit);
        self.orbit_shown_changed(now, lot, orbit);
    }

    /// Only what is shown of orbit `orbit` of `lot` changed (the cluster's view of other nodes' orbits): watchers
    /// and the admission room are told; no claim of this node is given back, since nothing left an orbit here.
    pub(super) fn orbit_shown_changed(&mut self, now: Time, lot: usize, orbit: OrbitIdx) {
        self.admission_orbit_changed(now, lot, orbit);
        let orbits = Orbits { parking: &self.parking, dialogs: &self.dialogs, bridging: &self.bridging, remote: self.cluster.as_ref().map(|c| c.room.view()) };
        self.blf.orbit_changed(&mut self.ep, now, lot, orbit, &orbits);
    }
}

/// The orbits as the rooms that know about them describe them (read-only borrows of each).
pub struct Orbits<'a> {
    pub parking: &'a Parking,
    pub dialogs: &'a Dialogs,
    pub bridging: &'a Bridging,
    /// In a cluster, the orbits other nodes hold (issue 18).
    pub remote: Option<&'a crate::cluster::view::RemoteView>,
}

impl Orbits<'_> {
    /// The state of orbit `orbit` of lot `lot` (Free for out-of-range indices).
    pub fn state(&self, lot: usize, orbit: OrbitIdx) -> OrbitState {
        let Some(call) = self.parking.parked_in(lot, orbit) else { return self.remote_state(lot, orbit) };
        let Some(c) = self.parking.get(call) else { return OrbitState::Free };
        let Some(leg) = self.dialogs.get(c.parked) else { return OrbitState::Free };
        let parked = leg.dialog.remote_identity();
        OrbitState::Parked(ParkedView {
            parked,
            parker: c.parker.as_deref().cloned(),
            since: c.parked_at,
            recall_at: c.recall_at,
            recalling: self.bridging.ringing(call).map(|r| r.target),
            call_id: leg.dialog.call_id.clone(),
            local_tag: leg.dialog.local_tag().to_string(),
            remote_tag: leg.dialog.remote_tag().to_string(),
            node: None,
        })
    }

    /// An orbit not occupied here: parked on another node of the cluster, or free.
    fn remote_state(&self, lot: usize, orbit: OrbitIdx) -> OrbitState {
        let Some(rc) = self.remote.and_then(|v| v.get(crate::cluster::Slot { lot, orbit })) else { return OrbitState::Free };
        let uri = crate::sip::parse_uri(&rc.info.parked).unwrap_or_else(|_| crate::sip::Uri::sip(None, "invalid", None));
        let mut parked = NameAddr::new(uri);
        parked.display = rc.info.parked_name.as_deref().map(SipStr::from);
        let parker = rc.info.parker.as_deref().and_then(|p| crate::sip::parse_uri(p).ok()).map(NameAddr::new);
        let d = rc.info.dialog.clone().unwrap_or_default();
        OrbitState::Parked(ParkedView {
            parked,
            parker,
            since: Time::from_millis(rc.info.since_ms),
            recall_at: None,
            recalling: None,
            call_id: d.call_id.as_str().into(),
            local_tag: d.local_tag,
            remote_tag: d.remote_tag,
            node: Some(rc.owner.to_string()),
        })
    }

    /// The orbits of `lot` that may show a call (occupied here, or held by another node), in orbit order: what a
    /// whole-lot document walks, in O(occupied) rather than the lot's size.
    pub fn shown_in_lot(&self, lot: usize) -> Vec<OrbitIdx> {
        let mut v: Vec<OrbitIdx> = self.parking.lot(lot).map(|l| l.occupants().map(|(i, _)| i).collect()).unwrap_or_default();
        if let Some(r) = self.remote {
            let local = v.len();
            v.extend(r.in_lot(lot).map(|(s, _)| s.orbit));
            if v.len() > local && local > 0 {
                v.sort_unstable();
                v.dedup();
            }
        }
        v
    }

    /// Orbits of `lot` other nodes hold.
    pub fn remote_in_lot(&self, lot: usize) -> usize {
        self.remote.map_or(0, |v| v.count_in_lot(lot))
    }
}
