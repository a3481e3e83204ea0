//! The remote view: the orbits other nodes hold, as far as this node knows (from `claim`/`release` messages and
//! resync snapshots), and the nodes it has heard from.
//!
//! An entry lives until its own lease (counted from the message or the snapshot's TTL) or its owner's last
//! heartbeat plus the lease, whichever is later: a node that dies stops its heartbeat, and its orbits disappear
//! from every view one lease after its last renewal, when Redis lets their keys expire too. Expiries sit in one
//! heap with lazy deletion (an entry whose owner is still alive is pushed again at its owner's horizon), so the
//! next deadline is a peek.
//!
//! Indexes, so nothing a park, a retrieve or a NOTIFY asks walks the whole view: per lot, how many orbits other
//! nodes hold (a counter) and which (a range of the ordered map); by the parked dialog's Call-ID, which orbit shows
//! it (an INVITE with `Replaces` for a call parked on another node).

use super::{ClaimInfo, Fence, NodeName, Slot};
use crate::time::Time;
use rustc_hash::{FxHashMap, FxHashSet};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

/// An orbit another node holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteClaim {
    pub owner: NodeName,
    pub fence: Fence,
    pub info: ClaimInfo,
    /// Until when the claim itself is known to live (message time or snapshot time + its TTL).
    pub expires: Time,
}

/// A node heard from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    /// Its SIP address, from its heartbeat (where a cross-node retrieve goes).
    pub sip: String,
    /// Its last heartbeat plus its lease.
    pub alive_until: Time,
}

/// A change of the remote view, for the BLF, the API, the events and the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewChange {
    /// `owner` holds `slot` now (new, or another owner or fence than before).
    Claimed { slot: Slot, owner: NodeName, fence: Fence, info: ClaimInfo },
    /// `slot` is no longer held by `owner`: released (`expired == false`) or its lease ran out.
    Freed { slot: Slot, owner: NodeName, expired: bool },
}

#[derive(Debug, Default)]
pub struct RemoteView {
    entries: BTreeMap<Slot, RemoteClaim>,
    nodes: FxHashMap<NodeName, NodeState>,
    expiry: BinaryHeap<Reverse<(Time, Slot)>>,
    /// Entries per lot (index = lot).
    per_lot: Vec<usize>,
    /// The slots whose claim shows a parked dialog, by its Call-ID.
    by_call_id: FxHashMap<String, Vec<Slot>>,
    /// Per lot (index = lot), its claims by (parked since, slot): a retrieve code's longest-parked call.
    by_age: Vec<BTreeSet<(u64, Slot)>>,
}

impl RemoteView {
    pub fn get(&self, slot: Slot) -> Option<&RemoteClaim> {
        self.entries.get(&slot)
    }
    /// Every remote claim, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &RemoteClaim)> {
        self.entries.iter().map(|(s, c)| (*s, c))
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Other nodes heard from whose lease runs past `now`.
    pub fn nodes_alive(&self, now: Time) -> usize {
        self.nodes.values().filter(|n| n.alive_until > now).count()
    }
    pub fn node(&self, name: &NodeName) -> Option<&NodeState> {
        self.nodes.get(name)
    }
    /// How many orbits of `lot` other nodes hold. O(1).
    pub fn count_in_lot(&self, lot: usize) -> usize {
        self.per_lot.get(lot).copied().unwrap_or(0)
    }
    /// The orbits of `lot` other nodes hold, in orbit order.
    pub fn in_lot(&self, lot: usize) -> impl Iterator<Item = (Slot, &RemoteClaim)> {
        self.entries.range(Slot { lot, orbit: crate::ids::OrbitIdx(0) }..Slot { lot: lot + 1, orbit: crate::ids::OrbitIdx(0) }).map(|(s, c)| (*s, c))
    }
    /// The orbit of `lot` another node holds whose call was parked longest (earliest `since_ms`, then lowest
    /// orbit), with its claim. O(log n).
    pub fn oldest_in_lot(&self, lot: usize) -> Option<(Slot, &RemoteClaim)> {
        let (_, slot) = self.by_age.get(lot)?.first()?;
        Some((*slot, self.entries.get(slot)?))
    }
    /// The orbits whose claim shows a parked dialog with this Call-ID (usually one), with their claims.
    pub fn with_call_id<'a>(&'a self, call_id: &str) -> impl Iterator<Item = (Slot, &'a RemoteClaim)> + 'a {
        self.by_call_id.get(call_id).into_iter().flatten().filter_map(|s| self.entries.get(s).map(|c| (*s, c)))
    }

    /// Puts `claim` at `slot` (replacing what was there), keeping the indexes in step.
    fn put(&mut self, slot: Slot, claim: RemoteClaim) {
        let call_id = claim.info.dialog.as_ref().map(|d| d.call_id.clone());
        let since = claim.info.since_ms;
        if let Some(old) = self.entries.insert(slot, claim) {
            self.unindex(slot, &old);
        } else {
            if self.per_lot.len() <= slot.lot {
                self.per_lot.resize(slot.lot + 1, 0);
            }
            self.per_lot[slot.lot] += 1;
        }
        if let Some(id) = call_id {
            self.by_call_id.entry(id).or_default().push(slot);
        }
        // After the old claim's entries left (it may have had the same age).
        if self.by_age.len() <= slot.lot {
            self.by_age.resize_with(slot.lot + 1, BTreeSet::new);
        }
        self.by_age[slot.lot].insert((since, slot));
    }

    /// Removes what `slot` holds, keeping the indexes in step.
    fn take(&mut self, slot: Slot) -> Option<RemoteClaim> {
        let old = self.entries.remove(&slot)?;
        self.unindex(slot, &old);
        if let Some(n) = self.per_lot.get_mut(slot.lot) {
            *n = n.saturating_sub(1);
        }
        Some(old)
    }

    fn unindex(&mut self, slot: Slot, old: &RemoteClaim) {
        if let Some(ages) = self.by_age.get_mut(slot.lot) {
            ages.remove(&(old.info.since_ms, slot));
        }
        let Some(d) = &old.info.dialog else { return };
        if let Some(v) = self.by_call_id.get_mut(&d.call_id) {
            v.retain(|s| *s != slot);
            if v.is_empty() {
                self.by_call_id.remove(&d.call_id);
            }
        }
    }

    /// Another node holds `slot` (a `claim` message or a snapshot entry).
    pub(super) fn upsert(&mut self, slot: Slot, claim: RemoteClaim, out: &mut Vec<ViewChange>) {
        let changed = match self.entries.get(&slot) {
            Some(c) => c.owner != claim.owner || c.fence != claim.fence || c.info != claim.info,
            None => true,
        };
        if let Some(old) = self.entries.get(&slot) {
            if old.owner != claim.owner {
                out.push(ViewChange::Freed { slot, owner: old.owner.clone(), expired: false });
            }
        }
        if changed {
            out.push(ViewChange::Claimed { slot, owner: claim.owner.clone(), fence: claim.fence, info: claim.info.clone() });
        }
        self.expiry.push(Reverse((claim.expires, slot)));
        self.put(slot, claim);
    }

    /// `owner` released `slot` with `fence`: removed if the view still shows exactly that claim.
    pub(super) fn release(&mut self, slot: Slot, owner: &NodeName, fence: Fence, out: &mut Vec<ViewChange>) {
        if self.entries.get(&slot).is_some_and(|c| &c.owner == owner && c.fence == fence) {
            self.take(slot);
            out.push(ViewChange::Freed { slot, owner: owner.clone(), expired: false });
        }
    }

    /// Removes whatever the view shows for `slot` (this node holds it now, per Redis).
    pub(super) fn forget(&mut self, slot: Slot, out: &mut Vec<ViewChange>) {
        if let Some(c) = self.take(slot) {
            out.push(ViewChange::Freed { slot, owner: c.owner, expired: false });
        }
    }

    /// `node` renewed its claims at `now` for `lease`.
    pub(super) fn alive(&mut self, now: Time, node: NodeName, sip: String, lease: Duration) {
        let until = now + lease;
        match self.nodes.get_mut(&node) {
            Some(n) => {
                n.alive_until = n.alive_until.max(until);
                n.sip = sip;
            }
            None => {
                self.nodes.insert(node, NodeState { sip, alive_until: until });
            }
        }
    }

    /// A `claim` from `node` shows it alive too (without changing its SIP address).
    pub(super) fn touch(&mut self, now: Time, node: &NodeName, lease: Duration) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.alive_until = n.alive_until.max(now + lease);
        }
    }

    /// Drops the claims whose lease and owner's heartbeat have both run out by `now`.
    pub(super) fn expire(&mut self, now: Time, out: &mut Vec<ViewChange>) {
        while let Some(Reverse((t, slot))) = self.expiry.peek().copied() {
            if t > now {
                break;
            }
            self.expiry.pop();
            let Some(c) = self.entries.get_mut(&slot) else { continue };
            if c.expires != t {
                continue; // superseded by a later push
            }
            let horizon = self.nodes.get(&c.owner).map_or(c.expires, |n| n.alive_until.max(c.expires));
            if horizon > now {
                c.expires = horizon;
                self.expiry.push(Reverse((horizon, slot)));
            } else {
                let Some(c) = self.take(slot) else { continue };
                out.push(ViewChange::Freed { slot, owner: c.owner, expired: true });
            }
        }
        self.nodes.retain(|_, n| n.alive_until > now);
    }

    /// The next time [`RemoteView::expire`] may drop something.
    pub(super) fn next_expiry(&self) -> Option<Time> {
        self.expiry.peek().map(|Reverse((t, _))| *t)
    }

    /// Replaces the view by a snapshot, except the slots in `keep` (changed by messages since the snapshot was
    /// asked for, which are newer than it).
    pub(super) fn replace(&mut self, snapshot: Vec<(Slot, RemoteClaim)>, keep: &FxHashSet<Slot>, out: &mut Vec<ViewChange>) {
        let fresh: FxHashSet<Slot> = snapshot.iter().map(|e| e.0).collect();
        let gone: Vec<Slot> = self.entries.keys().copied().filter(|s| !fresh.contains(s) && !keep.contains(s)).collect();
        for slot in gone {
            self.forget(slot, out);
        }
        for (slot, claim) in snapshot {
            if !keep.contains(&slot) {
                self.upsert(slot, claim, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ParkedDialog;
    use crate::ids::OrbitIdx;

    fn claim(owner: &str, call_id: Option<&str>, expires: u64) -> RemoteClaim {
        let dialog = call_id.map(|c| ParkedDialog { call_id: c.into(), local_tag: "l".into(), remote_tag: "r".into() });
        RemoteClaim { owner: NodeName::new(owner).unwrap(), fence: Fence(1), info: ClaimInfo { dialog, ..ClaimInfo::default() }, expires: Time::from_secs(expires) }
    }

    /// The per-lot counts and the Call-ID index follow every way an entry comes and goes.
    #[test]
    fn indexes_follow_upserts_releases_forgets_and_expiries() {
        let mut v = RemoteView::default();
        let mut out = Vec::new();
        let s = |lot, o| Slot { lot, orbit: OrbitIdx(o) };
        v.upsert(s(0, 3), claim("b", Some("x@1"), 10), &mut out);
        v.upsert(s(0, 1), claim("b", Some("y@1"), 10), &mut out);
        v.upsert(s(1, 0), claim("c", None, 20), &mut out);
        assert_eq!((v.count_in_lot(0), v.count_in_lot(1), v.count_in_lot(2)), (2, 1, 0));
        assert_eq!(v.in_lot(0).map(|(s, _)| s.orbit.0).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(v.with_call_id("x@1").map(|(s, _)| s).collect::<Vec<_>>(), vec![s(0, 3)]);
        // Another call in the same orbit: the old Call-ID no longer finds it.
        v.upsert(s(0, 3), claim("b", Some("z@1"), 10), &mut out);
        assert_eq!((v.with_call_id("x@1").count(), v.with_call_id("z@1").count(), v.count_in_lot(0)), (0, 1, 2));
        v.release(s(0, 1), &NodeName::new("b").unwrap(), Fence(1), &mut out);
        assert_eq!((v.with_call_id("y@1").count(), v.count_in_lot(0)), (0, 1));
        v.forget(s(1, 0), &mut out);
        assert_eq!(v.count_in_lot(1), 0);
        v.expire(Time::from_secs(11), &mut out);
        assert_eq!((v.with_call_id("z@1").count(), v.count_in_lot(0), v.len()), (0, 0, 0));
    }

    /// The retrieve code's index: per lot, the earliest `since_ms` first; a claim rewritten with the same age, or
    /// with a new one, and a released claim, are followed.
    #[test]
    fn the_longest_parked_remote_call_of_a_lot_follows_its_claims() {
        let mut v = RemoteView::default();
        let mut out = Vec::new();
        let s = |lot, o| Slot { lot, orbit: OrbitIdx(o) };
        let aged = |since_ms, call: &str| RemoteClaim { info: ClaimInfo { since_ms, ..claim("b", Some(call), 99).info }, ..claim("b", Some(call), 99) };
        assert!(v.oldest_in_lot(0).is_none());
        v.upsert(s(0, 3), aged(500, "a"), &mut out);
        v.upsert(s(0, 1), aged(700, "b"), &mut out);
        v.upsert(s(1, 0), aged(100, "c"), &mut out);
        assert_eq!(v.oldest_in_lot(0).map(|(s, _)| s), Some(s(0, 3)), "lot 0's oldest, lot 1's not counted");
        // The same claim again (a renewal's restore): still indexed once, still the oldest.
        v.upsert(s(0, 3), aged(500, "a"), &mut out);
        assert_eq!(v.oldest_in_lot(0).map(|(s, _)| s), Some(s(0, 3)));
        // An attended park swapped another party into orbit 3: its age restarts.
        v.upsert(s(0, 3), aged(900, "d"), &mut out);
        assert_eq!(v.oldest_in_lot(0).map(|(s, _)| s), Some(s(0, 1)));
        v.release(s(0, 1), &NodeName::new("b").unwrap(), Fence(1), &mut out);
        assert_eq!(v.oldest_in_lot(0).map(|(s, c)| (s, c.info.since_ms)), Some((s(0, 3), 900)));
        v.forget(s(0, 3), &mut out);
        assert!(v.oldest_in_lot(0).is_none());
        assert_eq!(v.oldest_in_lot(1).map(|(s, _)| s), Some(s(1, 0)));
    }
}
