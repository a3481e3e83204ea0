//! The bridging room: the calls parkd is in the middle of once a parked call leaves its orbit, and the calls it
//! makes to get there.
//!
//! State, all plain data:
//! * **bridges** ([`Bridge`]): a parked call taken by a retriever (a call to the orbit, a BLF pickup with
//!   Replaces) or by whoever answered its recall or unpark: two legs whose RTP parkd relays. A bridge keeps the
//!   parked call's id ([`CallRef`]), so the legs' `call` names it before and after.
//! * **ringing** ([`Recall`]): the outgoing call of a parked call (a recall round to the parker or fallback
//!   URI, an API unpark), with its ring deadline; at most one per parked call.
//! * **orphans** ([`Orphan`]): outgoing calls parkd gave up on whose INVITE may still be answered (CANCEL
//!   when allowed, ACK + BYE a late 2xx).
//! * `[http] dial_allow` ([`dial_allow`]): where an application may make parkd dial.
//!
//! The flows that use it — retrieve (`invite.rs`), REFER and the attended-park swap (`transfer.rs`), originate
//! (`originate.rs`), recall responses (`recall.rs`), API commands (`commands.rs`) — are `Core`'s routing.

pub mod dial_allow;
pub mod direct;
mod outgoing;

pub use outgoing::{Orphan, OutgoingInvite, Recall};

use super::contract::Wake;
use super::ids::{CallRef, LegId};
use super::parking::MediaMode;
use crate::config::DialPattern;
use crate::ids::OrbitNumber;
use crate::time::Time;
use crate::txn::ClientTxnId;
use std::cmp::Reverse;
use rustc_hash::FxHashMap;
use std::collections::BinaryHeap;

/// Two legs parkd relays between: the parked party and whoever took the call.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bridge {
    /// The parked call's id, kept.
    pub id: CallRef,
    pub lot: usize,
    /// The orbit the call was taken from (its number, for logs and the API).
    pub orbit_name: OrbitNumber,
    /// The originally parked party's leg.
    pub parked: LegId,
    /// The retriever's, or whoever answered the recall or unpark.
    pub other: LegId,
    /// What parkd has asked the media plane for (hold music until both legs are confirmed, then the bridge).
    pub media_mode: MediaMode,
}

impl Bridge {
    /// The leg across from `leg` (the parked party for the other side, and back).
    pub fn across(&self, leg: LegId) -> LegId {
        if leg == self.parked {
            self.other
        } else {
            self.parked
        }
    }
}

/// The bridging room (see the module doc). Every key is an id parkd mints: the fast Fx hash is safe.
#[derive(Debug, Default)]
pub struct Bridging {
    bridges: FxHashMap<CallRef, Bridge>,
    // Boxed: a map keeps spare capacity, and a spare slot should cost a pointer, not a whole call.
    ringing: FxHashMap<CallRef, Box<Recall>>,
    /// Ring deadlines of `ringing`, earliest first (lazy deletion: an entry whose call no longer rings until
    /// then is skipped).
    rings: BinaryHeap<Reverse<(Time, CallRef)>>,
    orphans: FxHashMap<ClientTxnId, Orphan>,
    dial_allow: Vec<DialPattern>,
    /// Direct media (`direct_media = true`) of the bridges that have tried it, by call.
    direct: FxHashMap<CallRef, direct::DirectMedia>,
    /// Deadlines of direct-media steps, earliest first (lazy deletion: checked against the call's `at`).
    direct_due: BinaryHeap<Reverse<(Time, CallRef)>>,
    /// Media legs whose RTP came from another address than their SDP names (NAT: the media plane latched to
    /// it): such a leg's phone cannot be reached at its SDP address, so no direct media for it.
    nat_latched: rustc_hash::FxHashSet<crate::media::MediaLegId>,
}

impl Bridging {
    /// Bridges held.
    pub fn len(&self) -> usize {
        self.bridges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bridges.is_empty()
    }

    pub fn get(&self, call: CallRef) -> Option<&Bridge> {
        self.bridges.get(&call)
    }

    pub fn get_mut(&mut self, call: CallRef) -> Option<&mut Bridge> {
        self.bridges.get_mut(&call)
    }

    /// Every bridge, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Bridge> {
        self.bridges.values()
    }

    pub fn insert(&mut self, bridge: Bridge) {
        self.bridges.insert(bridge.id, bridge);
    }

    pub fn remove(&mut self, call: CallRef) -> Option<Bridge> {
        self.bridges.remove(&call)
    }

    /// `call` now rings `recall` (until `recall.ring_until`).
    pub fn ring(&mut self, call: CallRef, recall: Recall) {
        self.rings.push(Reverse((recall.ring_until, call)));
        self.ringing.insert(call, Box::new(recall));
    }

    /// The outgoing call ringing for `call`.
    pub fn ringing(&self, call: CallRef) -> Option<&Recall> {
        self.ringing.get(&call).map(|r| &**r)
    }

    pub fn ringing_mut(&mut self, call: CallRef) -> Option<&mut Recall> {
        self.ringing.get_mut(&call).map(|r| &mut **r)
    }

    /// Stops tracking the outgoing call of `call` (answered, refused, or given up on) and returns it.
    pub fn stop_ringing(&mut self, call: CallRef) -> Option<Recall> {
        self.ringing.remove(&call).map(|r| *r)
    }

    /// The earliest ring deadline and its call (possibly stale), if due at `now`.
    pub fn next_due(&self, now: Time) -> Option<(Time, CallRef)> {
        self.rings.peek().map(|Reverse(e)| *e).filter(|(t, _)| *t <= now)
    }

    /// Pops the earliest ring deadline if due at `now`: `Some(Some(call))` when `call` has rung long enough,
    /// `Some(None)` for a stale entry.
    pub fn pop_due(&mut self, now: Time) -> Option<Option<CallRef>> {
        let (at, call) = self.next_due(now)?;
        self.rings.pop();
        Some(self.ringing.get(&call).filter(|r| r.ring_until == at).map(|_| call))
    }

    /// The room's next deadline and its reason (a peek; possibly stale).
    pub fn poll_timeout(&self) -> Option<(Time, Wake)> {
        super::contract::earliest([
            self.rings.peek().map(|Reverse((t, _))| (*t, Wake::RecallRing)),
            self.direct_due.peek().map(|Reverse((t, _))| (*t, Wake::DirectMedia)),
        ])
    }

    /// The direct-media state of `call`.
    pub fn direct(&self, call: CallRef) -> Option<&direct::DirectMedia> {
        self.direct.get(&call)
    }

    pub fn direct_mut(&mut self, call: CallRef) -> Option<&mut direct::DirectMedia> {
        self.direct.get_mut(&call)
    }

    /// Sets `call`'s direct-media state and queues its step's deadline, if any.
    pub fn set_direct(&mut self, call: CallRef, d: direct::DirectMedia) {
        if let Some(at) = d.at {
            self.direct_due.push(Reverse((at, call)));
        }
        self.direct.insert(call, d);
    }

    /// `call`'s current step is due at `at` (re-queued).
    pub fn direct_at(&mut self, call: CallRef, at: Time) {
        if let Some(d) = self.direct.get_mut(&call) {
            d.at = Some(at);
            self.direct_due.push(Reverse((at, call)));
        }
    }

    pub fn remove_direct(&mut self, call: CallRef) -> Option<direct::DirectMedia> {
        self.direct.remove(&call)
    }

    /// Pops the earliest direct-media deadline due at `now`: `Some(Some(call))` when it is the call's current
    /// one, `Some(None)` for a stale entry.
    pub fn pop_direct_due(&mut self, now: Time) -> Option<Option<CallRef>> {
        let Reverse((at, call)) = *self.direct_due.peek().filter(|Reverse((t, _))| *t <= now)?;
        self.direct_due.pop();
        Some(self.direct.get(&call).filter(|d| d.at == Some(at)).map(|_| call))
    }

    /// The media plane latched leg `leg` to a source other than its SDP address (NAT); `false` forgets it.
    pub fn set_nat_latched(&mut self, leg: crate::media::MediaLegId, latched: bool) {
        if latched {
            self.nat_latched.insert(leg);
        } else {
            self.nat_latched.remove(&leg);
        }
    }

    pub fn nat_latched(&self, leg: crate::media::MediaLegId) -> bool {
        self.nat_latched.contains(&leg)
    }

    /// Remembers an outgoing call parkd gave up on, by its INVITE transaction.
    pub fn orphan(&mut self, txn: ClientTxnId, orphan: Orphan) {
        self.orphans.insert(txn, orphan);
    }

    /// Stops tracking an orphan (answered, refused, or timed out) and returns it.
    pub fn take_orphan(&mut self, txn: ClientTxnId) -> Option<Orphan> {
        self.orphans.remove(&txn)
    }

    /// Every orphan, in no particular order.
    pub fn orphans(&self) -> impl Iterator<Item = &Orphan> {
        self.orphans.values()
    }

    /// `[http] dial_allow`.
    pub fn dial_allow(&self) -> &[DialPattern] {
        &self.dial_allow
    }

    pub fn set_dial_allow(&mut self, patterns: Vec<DialPattern>) {
        self.dial_allow = patterns;
    }
}
