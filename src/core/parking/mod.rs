//! The parking room: lots and their orbits, the calls parked in them, recall rounds, keepalives and every
//! call-level deadline.
//!
//! State, all plain data: the lots (which orbit holds which call), the parked calls ([`ParkedCall`]: orbit,
//! parker, deadlines, rounds) and one ordered queue of their deadlines ([`timers`]). The room keeps these
//! consistent and answers questions about them; sending anything (a recall INVITE, a keepalive OPTIONS, a BYE)
//! is `Core`'s, which routes what [`Parking::pop_due`] hands it.
//!
//! Lifetimes: a call's orbit is claimed ([`Parking::claim`]), then the call enters with [`Parking::park`] (its
//! recall, maximum-park and keepalive deadlines armed) and leaves with [`Parking::remove`], which frees the
//! orbit: hung up, ended by parkd, or taken (it then becomes a bridge in the bridging room).

mod call;
pub mod timers;

pub use call::{MediaMode, ParkedCall};
pub use timers::{CallTimer, CallTimers};

use super::contract::Wake;
use super::ids::CallRef;
use super::events::RecallTarget;
use crate::config::{LotConfig, RecallFallback};
use crate::ids::OrbitNumber;
use crate::park::lot::{ClaimError, Dialed, Lot, Moved, OrbitIdx};
use crate::time::Time;
use rand::Rng;
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::time::Duration;

/// What a reload did to the lots, by name and index (see [`Parking::reload`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LotDiff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub added_idx: Vec<usize>,
    pub changed_idx: Vec<usize>,
    pub removed_idx: Vec<usize>,
}

/// The parking room (see the module doc). Calls are keyed by ids parkd mints: the fast Fx hash is safe.
#[derive(Debug)]
pub struct Parking {
    lots: Vec<Lot<CallRef>>,
    // Boxed: a map keeps spare capacity, and a spare slot should cost a pointer, not a whole call.
    calls: FxHashMap<CallRef, Box<ParkedCall>>,
    /// Per lot, its parked calls by (parked_at, call): the retrieve code's longest-parked call without a scan.
    by_age: Vec<BTreeSet<(Time, CallRef)>>,
    timers: CallTimers,
}

impl Parking {
    pub fn new(lots: Vec<LotConfig>) -> Parking {
        let by_age = lots.iter().map(|_| BTreeSet::new()).collect();
        Parking { lots: lots.into_iter().map(Lot::new).collect(), calls: FxHashMap::default(), by_age, timers: CallTimers::default() }
    }

    /// Every lot, in configuration order (a lot's index is its position).
    pub fn lots(&self) -> impl Iterator<Item = &Lot<CallRef>> {
        self.lots.iter()
    }

    pub fn lot(&self, lot: usize) -> Option<&Lot<CallRef>> {
        self.lots.get(lot)
    }

    /// Replaces a lot's configuration (tests build cores without a config file).
    #[cfg(test)]
    pub fn cfg_mut(&mut self, lot: usize) -> Option<&mut LotConfig> {
        self.lots.get_mut(lot).map(|l| &mut l.cfg)
    }

    /// Arms a deadline of `call` (a recall ring, a recall that fell due while an unpark rang).
    pub fn arm(&mut self, at: Time, call: CallRef, kind: CallTimer) {
        self.timers.arm(at, call, kind);
    }

    /// Which lot a Request-URI user part belongs to, and what it means there (park code or orbit), for a
    /// request naming no domain any lot serves (the lots without `domains`).
    pub fn lookup(&self, user: &str) -> Option<(usize, Dialed)> {
        self.lookup_in(user, &[])
    }

    /// Which lot `user` belongs to for a request whose hosts are `hosts` (Request-URI host, then To host): the
    /// first host some lot names in its `domains` picks the tenant, and only that tenant's lots are searched;
    /// when no host is named by a lot, the lots without `domains` are. A lot a reload removed answers only for
    /// the calls still in it (their orbit numbers), after the configured lots of the same scope.
    pub fn lookup_in(&self, user: &str, hosts: &[&str]) -> Option<(usize, Dialed)> {
        let scope = hosts.iter().find(|h| self.lots.iter().any(|l| !l.removed && l.cfg.serves_domain(h)));
        let in_scope = |l: &Lot<CallRef>| match scope {
            Some(h) => l.cfg.serves_domain(h),
            None => l.cfg.domains.is_empty(),
        };
        let lots = self.lots.iter().enumerate().filter(|(_, l)| in_scope(l));
        lots.clone()
            .filter(|(_, l)| !l.removed)
            .find_map(|(i, lot)| lot.dialed(user).map(|d| (i, d)))
            .or_else(|| lots.filter(|(_, l)| l.removed).find_map(|(i, lot)| lot.dialed_removed(user).map(|d| (i, d))))
    }

    /// Whether `user` is a number of any configured lot, whatever its domains.
    pub fn is_lot_number(&self, user: &str) -> bool {
        self.lots.iter().any(|l| !l.removed && l.dialed(user).is_some())
    }

    /// Every lot (removed ones included) where `user` is an orbit, with its index there.
    pub fn orbits_named(&self, user: &str) -> impl Iterator<Item = (usize, OrbitIdx)> + '_ {
        let user = user.to_string();
        self.lots.iter().enumerate().filter_map(move |(i, l)| match if l.removed { l.dialed_removed(&user) } else { l.dialed(&user) } {
            Some(Dialed::Orbit(o)) => Some((i, o)),
            _ => None,
        })
    }

    /// Applies the lots of a reloaded configuration (issue 21), keeping every parked call and every lot's index
    /// (the calls, bridges, subscriptions and media refer to lots by index): a lot of the same name is changed in
    /// place (its orbits re-laid out by [`Lot::reconfigure`] when the range changed), a new one is appended (or a
    /// removed one of that name comes back), and one missing from `lots` is marked removed (its calls stay until
    /// they leave). Returns what changed and every parked call whose orbit index moved.
    pub fn reload(&mut self, lots: Vec<LotConfig>) -> (LotDiff, Vec<(usize, Moved<CallRef>)>) {
        let mut diff = LotDiff::default();
        let mut moves = Vec::new();
        let mut seen = vec![false; self.lots.len()];
        for cfg in lots {
            let Some(i) = self.lot_index_any(&cfg.name) else {
                diff.added.push(cfg.name.clone());
                diff.added_idx.push(self.lots.len());
                self.lots.push(Lot::new(cfg));
                self.by_age.push(BTreeSet::new());
                continue;
            };
            seen[i] = true;
            let lot = &mut self.lots[i];
            let revived = std::mem::replace(&mut lot.removed, false);
            if revived {
                diff.added.push(cfg.name.clone());
                diff.added_idx.push(i);
            } else if lot.cfg != cfg {
                diff.changed.push(cfg.name.clone());
                diff.changed_idx.push(i);
            }
            if revived || lot.cfg.orbits != cfg.orbits {
                moves.extend(lot.reconfigure(cfg).into_iter().map(|m| (i, m)));
            } else {
                lot.cfg = cfg;
            }
        }
        for (i, lot) in self.lots.iter_mut().enumerate() {
            if !seen.get(i).copied().unwrap_or(true) && !lot.removed {
                lot.removed = true;
                diff.removed.push(lot.name().to_string());
                diff.removed_idx.push(i);
            }
        }
        for (_, m) in &moves {
            if let Some(c) = self.calls.get_mut(&m.who) {
                c.orbit = m.to;
            }
        }
        (diff, moves)
    }

    /// The index of the lot named `name`, removed ones included.
    fn lot_index_any(&self, name: &str) -> Option<usize> {
        self.lots.iter().position(|l| l.name() == name)
    }

    /// Whether a reload removed `lot` (nothing new is parked there).
    pub fn is_removed(&self, lot: usize) -> bool {
        self.lots.get(lot).is_some_and(|l| l.removed)
    }

    /// The lot's configuration.
    pub fn cfg(&self, lot: usize) -> Option<&LotConfig> {
        self.lots.get(lot).map(|l| &l.cfg)
    }

    /// The index of the configured lot named `name` (not one a reload removed).
    pub fn lot_index(&self, name: &str) -> Option<usize> {
        self.lots.iter().position(|l| l.name() == name && !l.removed)
    }

    /// The lot's name ("" for an unknown index).
    pub fn lot_name(&self, lot: usize) -> String {
        self.lots.get(lot).map(|l| l.name().to_string()).unwrap_or_default()
    }

    /// Orbits occupied, over all lots.
    pub fn orbits_occupied(&self) -> usize {
        self.lots.iter().map(|l| l.occupied()).sum()
    }

    /// Takes `orbit` of `lot` for `call` (directed), or a free one by the lot's policy.
    pub fn claim(&mut self, lot: usize, orbit: Option<OrbitIdx>, call: CallRef, rng: &mut impl Rng) -> Result<OrbitIdx, ClaimError> {
        let Some(l) = self.lots.get_mut(lot).filter(|l| !l.removed) else { return Err(ClaimError::LotFull) };
        match orbit {
            Some(i) => l.claim(i, call).map(|_| i),
            None => l.claim_any(call, rng),
        }
    }

    /// Puts `call` in a retired orbit named `name` of `lot` (a restored call whose number left the lot's range
    /// while parkd was down, see [`Lot::reconfigure`]).
    pub fn adopt_retired(&mut self, lot: usize, name: &str, call: CallRef) -> Option<OrbitIdx> {
        Some(self.lots.get_mut(lot)?.adopt_retired(name, call))
    }

    /// Frees `orbit` of `lot` if `call` holds it.
    pub fn release(&mut self, lot: usize, orbit: OrbitIdx, call: CallRef) {
        if let Some(l) = self.lots.get_mut(lot) {
            l.release(orbit, call);
        }
    }

    /// Whatever holds `orbit` of `lot`.
    pub fn occupant(&self, lot: usize, orbit: OrbitIdx) -> Option<CallRef> {
        self.lots.get(lot)?.occupant(orbit)
    }

    /// The number of `orbit` of `lot` as dialed ("701").
    pub fn orbit_name(&self, lot: usize, orbit: OrbitIdx) -> OrbitNumber {
        self.lots.get(lot).map(|l| l.orbit_name(orbit)).unwrap_or_default().into()
    }

    /// Whether a plain call to an empty orbit of `lot` parks the caller there (`empty_orbit = "park"`).
    pub fn empty_orbit_parks(&self, lot: usize) -> bool {
        self.cfg(lot).is_some_and(|c| c.empty_orbit == crate::config::EmptyOrbit::Park)
    }

    /// The call parked in `orbit` of `lot`.
    pub fn parked_in(&self, lot: usize, orbit: OrbitIdx) -> Option<CallRef> {
        let call = self.lots.get(lot)?.occupant(orbit)?;
        self.calls.get(&call).map(|c| c.id)
    }

    /// The lot parks overflow in when `lot` is full (one hop only: its own overflow is not followed, so lots
    /// cannot loop), if it has room.
    pub fn overflow_of(&self, lot: usize) -> Option<usize> {
        let name = self.lots.get(lot)?.cfg.overflow_lot.as_deref()?;
        self.lot_index(name).filter(|o| *o != lot && !self.lots[*o].is_full())
    }

    /// The lot's longest-parked call (earliest `parked_at`, then lowest id), for its retrieve code. O(log n).
    pub fn oldest(&self, lot: usize) -> Option<CallRef> {
        self.by_age.get(lot)?.first().map(|(_, c)| *c)
    }

    /// Restarts `call`'s parking age at `at` (an attended park swapped another party into its orbit). The only
    /// way to change `parked_at` of a parked call: the retrieve code's index follows it.
    pub fn set_parked_at(&mut self, call: CallRef, at: Time) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        if let Some(set) = self.by_age.get_mut(c.lot) {
            set.remove(&(c.parked_at, call));
            set.insert((at, call));
        }
        c.parked_at = at;
    }

    pub fn get(&self, call: CallRef) -> Option<&ParkedCall> {
        self.calls.get(&call).map(|c| &**c)
    }

    /// The call, to change: not its `lot` nor its `parked_at` (indexed; see [`Parking::set_parked_at`]).
    pub fn get_mut(&mut self, call: CallRef) -> Option<&mut ParkedCall> {
        self.calls.get_mut(&call).map(|c| &mut **c)
    }

    /// Calls parked.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Every call, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ParkedCall> {
        self.calls.values().map(|c| &**c)
    }

    /// Removes `call` and frees its orbit (its deadlines become stale).
    pub fn remove(&mut self, call: CallRef) -> Option<Box<ParkedCall>> {
        let c = self.calls.remove(&call)?;
        if let Some(set) = self.by_age.get_mut(c.lot) {
            set.remove(&(c.parked_at, call));
        }
        self.release(c.lot, c.orbit, call);
        Some(c)
    }

    /// Starts `call`'s parking period at `now`: records it and arms its recall, maximum-park and keepalive
    /// deadlines.
    pub fn park(&mut self, now: Time, call: ParkedCall) {
        let id = call.id;
        self.insert(call);
        self.arm_period(now, id);
    }

    /// Puts back a call restored from the journal after a restart (its orbit claimed first): its recall and
    /// maximum-park deadlines as journaled (absolute times: one that passed while parkd was down fires at the
    /// next `handle_timeout`), its keepalive counted from `now`.
    pub fn restore(&mut self, now: Time, call: ParkedCall) {
        let id = call.id;
        if let Some(t) = call.recall_at {
            self.timers.arm(t, id, CallTimer::Recall);
        }
        if let Some(t) = call.expires_at {
            self.timers.arm(t, id, CallTimer::MaxPark);
        }
        self.insert(call);
        self.arm_keepalive(now, id);
    }

    /// Records `call` and indexes its age (a call parked again under the same id replaces its old entry).
    fn insert(&mut self, call: ParkedCall) {
        let (id, key) = (call.id, (call.lot, call.parked_at));
        if let Some(old) = self.calls.insert(id, Box::new(call)) {
            if let Some(set) = self.by_age.get_mut(old.lot) {
                set.remove(&(old.parked_at, id));
            }
        }
        if let Some(set) = self.by_age.get_mut(key.0) {
            set.insert((key.1, id));
        }
    }

    /// Arms `call`'s recall and maximum-park deadlines for a parking period starting at `now`, and its keepalive.
    pub fn arm_period(&mut self, now: Time, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        let lot_max = self.lots.get(c.lot).map(|l| l.cfg.max_park_time).unwrap_or(0);
        c.recall_at = c.parking_time.map(|d| now + d);
        c.expires_at = (lot_max > 0).then(|| now + Duration::from_secs(lot_max));
        if let Some(t) = c.recall_at {
            self.timers.arm(t, call, CallTimer::Recall);
        }
        if let Some(t) = c.expires_at {
            self.timers.arm(t, call, CallTimer::MaxPark);
        }
        self.arm_keepalive(now, call);
    }

    /// Arms `call`'s next keepalive (none when the lot's interval is 0).
    pub fn arm_keepalive(&mut self, now: Time, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else { return };
        let interval = self.lots.get(c.lot).map(|l| l.cfg.keepalive_interval).unwrap_or(0);
        c.keepalive_at = (interval > 0).then(|| now + Duration::from_secs(interval));
        if let Some(at) = c.keepalive_at {
            self.timers.arm(at, call, CallTimer::Keepalive);
        }
    }

    /// A recall round starts for `call` (its parking time ran out): counts the round and returns whom to ring,
    /// in order: the parker when known, then the lot's fallback URI when its `recall_fallback` says so. Empty:
    /// the round fails at once.
    pub fn start_round(&mut self, call: CallRef) -> Vec<RecallTarget> {
        let Some(c) = self.calls.get_mut(&call) else { return Vec::new() };
        c.rounds += 1;
        let fallback = self.lots.get(c.lot).is_some_and(|l| l.cfg.recall_fallback == RecallFallback::FallbackUri);
        if c.parker.is_none() {
            tracing::info!(orbit = %c.orbit_name, "parking time over, parker unknown: applying the lot's fallback");
        }
        let mut targets = Vec::with_capacity(2);
        if c.parker.is_some() {
            targets.push(RecallTarget::Parker);
        }
        if fallback {
            targets.push(RecallTarget::FallbackUri);
        }
        targets
    }

    /// Whom to ring this round after `target` did not answer (the fallback URI after the parker, when the lot's
    /// `recall_fallback` says so).
    pub fn after_unanswered(&self, call: CallRef, target: RecallTarget) -> Option<RecallTarget> {
        let c = self.calls.get(&call)?;
        let fallback = self.lots.get(c.lot).is_some_and(|l| l.cfg.recall_fallback == RecallFallback::FallbackUri);
        (target == RecallTarget::Parker && fallback).then_some(RecallTarget::FallbackUri)
    }

    /// Parks `call` again for another period after an unanswered round: true when the lot allows another round
    /// (its fallback is not `hangup`, rounds remain, the call has a parking time).
    pub fn repark(&mut self, now: Time, call: CallRef) -> bool {
        let Some(c) = self.calls.get_mut(&call) else { return false };
        let Some(lot) = self.lots.get(c.lot) else { return false };
        let again = lot.cfg.recall_fallback != RecallFallback::Hangup && c.rounds < lot.cfg.recall_rounds;
        match (again, c.parking_time) {
            (true, Some(period)) => {
                let at = now + period;
                c.recall_at = Some(at);
                self.timers.arm(at, call, CallTimer::Recall);
                true
            }
            _ => false,
        }
    }

    /// Makes `call`'s recall due at `now` (the caller pressed a `recall` key): the next [`Parking::pop_due`] at
    /// `now` starts the round, exactly as when the parking time runs out. False for a call not parked here.
    pub fn recall_now(&mut self, now: Time, call: CallRef) -> bool {
        let Some(c) = self.calls.get_mut(&call) else { return false };
        c.recall_at = Some(now);
        self.timers.arm(now, call, CallTimer::Recall);
        true
    }

    /// The room's next deadline and its reason (a peek; possibly stale).
    pub fn poll_timeout(&self) -> Option<(Time, Wake)> {
        self.timers.next()
    }

    /// The earliest deadline due at `now` (possibly stale), for ordering it against other rooms' deadlines.
    pub fn next_due(&self, now: Time) -> Option<(Time, CallRef, CallTimer)> {
        self.timers.peek_due(now)
    }

    /// Pops the earliest deadline due at `now`: `Some(Some((call, kind)))` when it still holds (re-armed and
    /// finished calls' entries are stale: `Some(None)`). A recall does not fall due while `ringing(call)` (an
    /// unpark rings); a due recall is marked as no longer scheduled.
    pub fn pop_due(&mut self, now: Time, ringing: impl Fn(CallRef) -> bool) -> Option<Option<(CallRef, CallTimer)>> {
        let (at, call, kind) = self.timers.pop_due(now)?;
        let Some(c) = self.calls.get_mut(&call) else { return Some(None) };
        let holds = match kind {
            CallTimer::Recall => c.recall_at == Some(at) && !ringing(call),
            CallTimer::MaxPark => c.expires_at == Some(at),
            CallTimer::Keepalive => c.keepalive_at == Some(at),
        };
        if !holds {
            return Some(None);
        }
        if kind == CallTimer::Recall {
            c.recall_at = None;
        }
        Some(Some((call, kind)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events::ParkHow;
    use crate::core::ids::LegId;
    use rand::SeedableRng;

    fn parked(p: &mut Parking, id: u64, at: u64) -> CallRef {
        let call = CallRef(id);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let orbit = p.claim(0, None, call, &mut rng).unwrap();
        let name = p.orbit_name(0, orbit);
        p.park(Time::from_secs(at), ParkedCall::new(call, 0, orbit, name, LegId(id), None, ParkHow::Indirect, Time::from_secs(at), None));
        call
    }

    /// The retrieve code's oldest call comes from the age index: it follows parks, removals and a swap's new age.
    #[test]
    fn oldest_follows_parks_removals_and_swaps() {
        let mut p = Parking::new(vec![LotConfig::default_lot()]);
        assert_eq!(p.oldest(0), None);
        let (a, b, c) = (parked(&mut p, 1, 30), parked(&mut p, 2, 10), parked(&mut p, 3, 20));
        assert_eq!(p.oldest(0), Some(b));
        p.set_parked_at(b, Time::from_secs(40));
        assert_eq!(p.oldest(0), Some(c));
        p.remove(c);
        assert_eq!(p.oldest(0), Some(a));
        p.remove(a);
        assert_eq!(p.oldest(0), Some(b));
        p.remove(b);
        assert_eq!((p.oldest(0), p.oldest(7)), (None, None));
    }
}
