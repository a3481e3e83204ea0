//! [`ClusterRoom`]: this node's claims, its pending claims and the remote view, driven by (input, now).

use super::ops::ClaimReply;
use super::view::{RemoteClaim, RemoteView, ViewChange};
use super::wire::{Change, Keyspace};
use super::stats::{ClusterCounts, ClusterScrape};
use super::{ClaimId, ClaimInfo, ClusterSettings, Fence, NodeName, OpError, OpId, RedisOp, RedisReply, RenewStatus, Slot, SnapshotEntry};
use crate::config::SlotPolicy;
use crate::ids::OrbitIdx;
use crate::time::Time;
use rand::{Rng, SeedableRng};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Which orbit a claim asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// This one (a directed park).
    Orbit(OrbitIdx),
    /// Any free orbit of the lot (an indirect park), picked by Redis from where the lot's policy says.
    Any,
}

/// The answer to a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimResult {
    /// The orbit is this node's, with this fence, until it is released (or lost).
    Granted { slot: Slot, fence: Fence },
    /// Another node (or this one) holds the orbit asked for.
    Taken { slot: Slot, owner: NodeName },
    /// Every orbit of the lot is held.
    Full { lot: usize },
    /// Redis did not answer (in time): nothing was granted. A park answers 503 with Retry-After.
    Unavailable,
}

/// What the room asks its driver to do or tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterOutput {
    /// Run this operation and call [`ClusterRoom::handle_reply`] with `op` and its outcome.
    Redis { op: OpId, cmd: RedisOp },
    /// The answer to [`ClusterRoom::claim`] `id`.
    Claim { id: ClaimId, result: ClaimResult },
    /// This node no longer holds `slot`: its claim expired in Redis and another node (`to`) claimed the orbit
    /// (or this node holds it with another fence). The call parked there must move (re-park or recall).
    Lost { slot: Slot, fence: Fence, to: Option<(NodeName, Fence)> },
    /// The remote view changed (BLF, API, events, metrics).
    View(ViewChange),
    /// Whether claims can be made now (Redis answers). For `/readyz`, the metrics and the logs.
    Available(bool),
}

/// Why the room wants [`ClusterRoom::handle_timeout`] called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClusterWake {
    /// A pending claim waited `claim_timeout` for Redis.
    ClaimTimeout,
    /// Time to renew the leases (every lease / 3; sooner while Redis is suspect).
    Renew,
    /// A remote claim's lease ran out.
    ViewExpiry,
    /// Time to re-read the whole view (or to retry a failed resync).
    Resync,
}

/// An orbit this node holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnClaim {
    pub fence: Fence,
    pub info: ClaimInfo,
    /// Until when Redis keeps it for sure: the send time of the last renewal (or the claim) it confirmed, plus
    /// the lease. Past it, the claim is at risk (Redis may have dropped it); it is restored when Redis answers.
    pub until: Time,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Not connected (or not yet): claims are refused at once, nothing is renewed.
    Down,
    /// Connected and answering.
    Up,
    /// Connected, but an operation failed or timed out: claims are refused at once until a reply comes back.
    Suspect,
}

/// What an operation in flight was for.
#[derive(Debug)]
enum InFlightKind {
    /// Claim `id`, still waited for.
    Claim(ClaimId),
    /// A claim of this lot already answered (Unavailable) or cancelled: a grant is released when it comes.
    Abandoned(usize),
    Renew { sent: Time, claims: Vec<(Slot, Fence)> },
    Restore { sent: Time, claims: Vec<(Slot, Fence)> },
    Release,
    Resync,
}

#[derive(Debug)]
struct Pending {
    op: OpId,
    lot: usize,
    want: Want,
    info: ClaimInfo,
    sent: Time,
    deadline: Time,
}

#[derive(Debug)]
pub struct ClusterRoom {
    settings: ClusterSettings,
    keys: Keyspace,
    link: Link,
    own: BTreeMap<Slot, OwnClaim>,
    view: RemoteView,
    in_flight: FxHashMap<OpId, InFlightKind>,
    pending: FxHashMap<ClaimId, Pending>,
    deadlines: BTreeSet<(Time, ClaimId)>,
    /// Claims in this node's name seen in messages or a snapshot that no claim of ours explains yet.
    unmatched: Vec<(Slot, Fence)>,
    next_op: u64,
    next_renew: Option<Time>,
    renew_in_flight: bool,
    resync_in_flight: bool,
    touched: FxHashSet<Slot>,
    next_resync: Option<Time>,
    next_start: Vec<usize>,
    rng: rand::rngs::SmallRng,
    out: VecDeque<ClusterOutput>,
    counts: ClusterCounts,
}

/// How soon a failed renewal or resync is tried again.
const RETRY: Duration = Duration::from_millis(500);

impl ClusterRoom {
    /// A room for this node; Redis counts as down until [`ClusterRoom::set_link`] says otherwise.
    pub fn new(settings: ClusterSettings, keys: Keyspace) -> ClusterRoom {
        let rng = rand::rngs::SmallRng::seed_from_u64(settings.seed);
        ClusterRoom {
            next_start: vec![0; keys.lots.len()],
            settings,
            keys,
            link: Link::Down,
            own: BTreeMap::new(),
            view: RemoteView::default(),
            in_flight: FxHashMap::default(),
            pending: FxHashMap::default(),
            deadlines: BTreeSet::new(),
            unmatched: Vec::new(),
            next_op: 0,
            next_renew: None,
            renew_in_flight: false,
            resync_in_flight: false,
            touched: FxHashSet::default(),
            next_resync: None,
            rng,
            out: VecDeque::new(),
            counts: ClusterCounts::default(),
        }
    }

    // ---- getters ----

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }
    pub fn keyspace(&self) -> &Keyspace {
        &self.keys
    }
    /// Whether a claim made now goes to Redis (else it is answered `Unavailable` at once).
    pub fn available(&self) -> bool {
        self.link == Link::Up
    }
    /// The orbits this node holds.
    pub fn own(&self) -> impl Iterator<Item = (Slot, &OwnClaim)> {
        self.own.iter().map(|(s, c)| (*s, c))
    }
    pub fn own_claim(&self, slot: Slot) -> Option<&OwnClaim> {
        self.own.get(&slot)
    }
    /// The orbits other nodes hold.
    pub fn view(&self) -> &RemoteView {
        &self.view
    }
    /// Claims waiting for Redis.
    pub fn pending_claims(&self) -> usize {
        self.pending.len()
    }

    // ---- inputs ----

    /// Asks for an orbit of `lot`; the answer comes out as [`ClusterOutput::Claim`] with `id` (at once when
    /// Redis is down or suspect).
    pub fn claim(&mut self, now: Time, id: ClaimId, lot: usize, want: Want, info: ClaimInfo) {
        let known = lot < self.keys.lots.len() && match want {
            Want::Orbit(o) => o.0 < self.keys.lots[lot].orbits.len(),
            Want::Any => true,
        };
        if self.link != Link::Up || !known {
            self.out.push_back(ClusterOutput::Claim { id, result: ClaimResult::Unavailable });
            return;
        }
        let cmd = match want {
            Want::Orbit(orbit) => RedisOp::Claim { slot: Slot { lot, orbit }, info: info.clone() },
            Want::Any => {
                let n = self.keys.lots[lot].orbits.len();
                let start = match self.keys.lots[lot].policy {
                    SlotPolicy::First => 0,
                    SlotPolicy::Next => self.next_start[lot] % n,
                    SlotPolicy::Random => self.rng.gen_range(0..n),
                };
                RedisOp::ClaimAny { lot, start: OrbitIdx(start), info: info.clone() }
            }
        };
        let op = self.issue(cmd, InFlightKind::Claim(id));
        let deadline = now + self.settings.claim_timeout;
        self.pending.insert(id, Pending { op, lot, want, info, sent: now, deadline });
        self.deadlines.insert((deadline, id));
    }

    /// The caller no longer waits for claim `id` (its call went away): no answer comes, and an orbit Redis
    /// grants for it anyway is released.
    pub fn cancel(&mut self, id: ClaimId) {
        if let Some(p) = self.pending.remove(&id) {
            self.deadlines.remove(&(p.deadline, id));
            self.in_flight.insert(p.op, InFlightKind::Abandoned(p.lot));
        }
    }

    /// Takes back a claim this node held before a restart (from the journal, with its fence and info), before
    /// the link comes up. The resync after connecting keeps it if Redis still has it in this node's name with this
    /// fence (a restart within the lease), restores it if Redis lost it, and reports it [`ClusterOutput::Lost`]
    /// if another node holds the orbit now (the node came back after its lease ran out and the orbit was
    /// taken). Claims in this node's name that were not adopted (granted, but never journaled: their park was
    /// never answered 200) are released.
    pub fn adopt(&mut self, now: Time, slot: Slot, fence: Fence, info: ClaimInfo) {
        if slot.lot < self.keys.lots.len() && slot.orbit.0 < self.keys.lots[slot.lot].orbits.len() {
            // Unknown how long Redis still keeps it: at risk until the first renewal or restore confirms it.
            self.own.insert(slot, OwnClaim { fence, info, until: now });
        }
    }

    /// The public info of a claim this node holds changed (an attended park put another party into the orbit):
    /// Redis's value is rewritten with the same fence and the other nodes are told (a `restore`, which extends a
    /// claim still ours and rewrites it when its info differs). No-op for an orbit this node does not hold; while
    /// Redis is down, the next resync's restore carries it.
    pub fn update_info(&mut self, now: Time, slot: Slot, info: ClaimInfo) {
        let Some(c) = self.own.get_mut(&slot) else { return };
        if c.info == info {
            return;
        }
        c.info = info.clone();
        let fence = c.fence;
        if self.link != Link::Down {
            self.issue(RedisOp::Restore { claims: vec![(slot, fence, info)] }, InFlightKind::Restore { sent: now, claims: vec![(slot, fence)] });
        }
    }

    /// This node lets `slot` go (the parked call was retrieved or ended).
    pub fn release(&mut self, slot: Slot) {
        if let Some(c) = self.own.remove(&slot) {
            if self.link != Link::Down {
                self.issue(RedisOp::Release { slot, fence: c.fence }, InFlightKind::Release);
            }
            // Down: the key expires with the lease (no renewal covers it), or the resync after reconnection finds
            // it in this node's name with a fence no claim explains and releases it.
        }
    }

    /// Redis is reachable (connected, subscribed) or not. Reachable again: the view is re-read and own claims
    /// Redis lost are restored. Unreachable: pending claims are answered `Unavailable`.
    pub fn set_link(&mut self, now: Time, up: bool) {
        if up {
            let was = self.link;
            self.link = Link::Up;
            if was != Link::Up {
                self.out.push_back(ClusterOutput::Available(true));
            }
            self.start_resync();
            self.next_renew = Some(now);
        } else if self.link != Link::Down {
            self.link = Link::Down;
            self.out.push_back(ClusterOutput::Available(false));
            let ids: Vec<ClaimId> = self.pending.keys().copied().collect();
            for id in ids {
                self.give_up(id);
            }
        }
    }

    /// A change from the pub/sub channel.
    pub fn handle_change(&mut self, now: Time, change: Change) {
        let mut vc = Vec::new();
        match change {
            Change::Claimed { slot, fence, owner, lease_ms, info } => {
                if self.resync_in_flight {
                    self.touched.insert(slot);
                }
                if owner == self.settings.node {
                    if self.own.get(&slot).map(|c| c.fence) != Some(fence) {
                        self.unmatched.push((slot, fence));
                        self.sweep_unmatched();
                    }
                    return;
                }
                if self.own.contains_key(&slot) {
                    // Redis gave our orbit to another node: our key must have expired. The renewal tells for sure.
                    self.next_renew = Some(now);
                }
                let lease = Duration::from_millis(lease_ms);
                self.view.touch(now, &owner, lease);
                self.view.upsert(slot, RemoteClaim { owner, fence, info, expires: now + lease }, &mut vc);
            }
            Change::Released { slot, fence, owner } => {
                if self.resync_in_flight {
                    self.touched.insert(slot);
                }
                if owner != self.settings.node {
                    self.view.release(slot, &owner, fence, &mut vc);
                }
            }
            Change::Alive { node, lease_ms, sip } => {
                if node != self.settings.node {
                    self.view.alive(now, node, sip, Duration::from_millis(lease_ms));
                }
            }
        }
        self.out.extend(vc.into_iter().map(ClusterOutput::View));
    }

    /// The outcome of operation `op`.
    pub fn handle_reply(&mut self, now: Time, op: OpId, reply: Result<RedisReply, OpError>) {
        let Some(kind) = self.in_flight.remove(&op) else { return };
        let ok = reply.is_ok();
        self.counts.op_errors += u64::from(!ok);
        match kind {
            InFlightKind::Claim(id) => self.claim_reply(id, reply),
            InFlightKind::Abandoned(lot) => {
                // Answered Unavailable (or cancelled) already; if Redis granted it after all, give it back.
                if let Ok(RedisReply::Claim(ClaimReply::Granted { orbit, fence })) = &reply {
                    self.issue(RedisOp::Release { slot: Slot { lot, orbit: *orbit }, fence: *fence }, InFlightKind::Release);
                }
                self.sweep_unmatched();
            }
            InFlightKind::Renew { sent, claims } => {
                self.renew_in_flight = false;
                match reply {
                    Ok(RedisReply::Renewed(st)) if st.len() == claims.len() => {
                        let mut restore = Vec::new();
                        for ((slot, fence), s) in claims.into_iter().zip(st) {
                            match s {
                                RenewStatus::Missing => {
                                    if let Some(c) = self.own.get(&slot).filter(|c| c.fence == fence) {
                                        restore.push((slot, fence, c.info.clone()));
                                    }
                                }
                                s => self.renewed(sent, slot, fence, s),
                            }
                        }
                        if !restore.is_empty() {
                            let claims = restore.iter().map(|(s, f, _)| (*s, *f)).collect();
                            self.issue(RedisOp::Restore { claims: restore }, InFlightKind::Restore { sent: now, claims });
                        }
                    }
                    _ => self.next_renew = Some(now + RETRY.min(self.settings.lease / 3)),
                }
            }
            InFlightKind::Restore { sent, claims } => {
                if let Ok(RedisReply::Renewed(st)) = reply {
                    for ((slot, fence), s) in claims.into_iter().zip(st) {
                        self.renewed(sent, slot, fence, s);
                    }
                }
            }
            InFlightKind::Release => {}
            InFlightKind::Resync => {
                self.resync_in_flight = false;
                match reply {
                    Ok(RedisReply::Snapshot(entries)) => self.apply_snapshot(now, entries),
                    _ => self.next_resync = Some(now + RETRY),
                }
                self.touched.clear();
            }
        }
        self.note_outcome(ok);
    }

    /// Fires what is due at `now`: claims that waited too long (→ `Unavailable`), the renewal, the periodic
    /// resync, remote claims whose lease ran out. Early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(&(t, id)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            if self.pending.contains_key(&id) {
                self.give_up(id);
                if self.link == Link::Up {
                    self.link = Link::Suspect;
                    self.out.push_back(ClusterOutput::Available(false));
                }
            }
        }
        if self.link != Link::Down {
            if self.next_renew.is_some_and(|t| t <= now) {
                if self.renew_in_flight {
                    self.next_renew = Some(now + self.settings.lease / 3);
                } else {
                    let claims: Vec<(Slot, Fence)> = self.own.iter().map(|(s, c)| (*s, c.fence)).collect();
                    self.issue(RedisOp::Renew { claims: claims.clone() }, InFlightKind::Renew { sent: now, claims });
                    self.renew_in_flight = true;
                    self.next_renew = Some(now + self.settings.lease / 3);
                }
            }
            if self.next_resync.is_some_and(|t| t <= now) {
                self.start_resync();
            }
        }
        let mut vc = Vec::new();
        self.view.expire(now, &mut vc);
        self.out.extend(vc.into_iter().map(ClusterOutput::View));
    }

    /// The next output, in order; drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<ClusterOutput> {
        let out = self.out.pop_front()?;
        self.counts.note(&out);
        Some(out)
    }

    /// What the room counted and holds, for a scrape at `now`.
    pub fn scrape(&self, now: Time) -> ClusterScrape {
        ClusterScrape {
            up: self.available(),
            own: self.own.len(),
            remote: self.view.len(),
            nodes: self.view.nodes_alive(now),
            pending: self.pending.len(),
            counts: self.counts.clone(),
        }
    }

    /// The earliest deadline and why (it may name one since cancelled: waking early is harmless).
    pub fn poll_timeout(&self) -> Option<(Time, ClusterWake)> {
        let linked = self.link != Link::Down;
        [
            self.deadlines.first().map(|(t, _)| (*t, ClusterWake::ClaimTimeout)),
            self.next_renew.filter(|_| linked).map(|t| (t, ClusterWake::Renew)),
            self.next_resync.filter(|_| linked && !self.resync_in_flight).map(|t| (t, ClusterWake::Resync)),
            self.view.next_expiry().map(|t| (t, ClusterWake::ViewExpiry)),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(t, _)| *t)
    }

    // ---- internals ----

    fn issue(&mut self, cmd: RedisOp, kind: InFlightKind) -> OpId {
        self.next_op += 1;
        let op = OpId(self.next_op);
        self.in_flight.insert(op, kind);
        self.out.push_back(ClusterOutput::Redis { op, cmd });
        op
    }

    fn start_resync(&mut self) {
        if !self.resync_in_flight {
            self.resync_in_flight = true;
            self.touched.clear();
            self.issue(RedisOp::Resync, InFlightKind::Resync);
            self.next_resync = None;
        }
    }

    /// Answers claim `id` Unavailable; its operation, if it still comes back granted, is released.
    fn give_up(&mut self, id: ClaimId) {
        if let Some(p) = self.pending.remove(&id) {
            self.deadlines.remove(&(p.deadline, id));
            self.in_flight.insert(p.op, InFlightKind::Abandoned(p.lot));
            self.out.push_back(ClusterOutput::Claim { id, result: ClaimResult::Unavailable });
        }
    }

    fn claim_reply(&mut self, id: ClaimId, reply: Result<RedisReply, OpError>) {
        let Some(p) = self.pending.remove(&id) else { return };
        self.deadlines.remove(&(p.deadline, id));
        let slot_of = |orbit| Slot { lot: p.lot, orbit };
        let mut vc = Vec::new();
        let result = match reply {
            Ok(RedisReply::Claim(ClaimReply::Granted { orbit, fence })) => {
                let slot = slot_of(orbit);
                self.view.forget(slot, &mut vc);
                self.own.insert(slot, OwnClaim { fence, info: p.info, until: p.sent + self.settings.lease });
                self.next_start[p.lot] = orbit.0 + 1;
                ClaimResult::Granted { slot, fence }
            }
            Ok(RedisReply::Claim(ClaimReply::Taken { owner, .. })) => match p.want {
                Want::Orbit(orbit) => ClaimResult::Taken { slot: slot_of(orbit), owner },
                Want::Any => ClaimResult::Full { lot: p.lot },
            },
            Ok(RedisReply::Claim(ClaimReply::Full)) => ClaimResult::Full { lot: p.lot },
            Ok(_) | Err(_) => {
                if self.link == Link::Up {
                    self.link = Link::Suspect;
                    self.out.push_back(ClusterOutput::Available(false));
                }
                ClaimResult::Unavailable
            }
        };
        self.out.push_back(ClusterOutput::Claim { id, result });
        // After the grant: the core parks into the orbit first, so the change of its view (another node's stale
        // entry for it dropped) finds the orbit occupied here, not free with a claim to give back.
        self.out.extend(vc.into_iter().map(ClusterOutput::View));
        self.sweep_unmatched();
    }

    /// A renewal's (or restoration's) verdict on one claim sent at `sent`.
    fn renewed(&mut self, sent: Time, slot: Slot, fence: Fence, status: RenewStatus) {
        let Some(c) = self.own.get_mut(&slot).filter(|c| c.fence == fence) else { return };
        match status {
            RenewStatus::Held => c.until = c.until.max(sent + self.settings.lease),
            RenewStatus::Missing => {}
            RenewStatus::Taken { owner, fence: theirs } => {
                self.own.remove(&slot);
                self.out.push_back(ClusterOutput::Lost { slot, fence, to: Some((owner, theirs)) });
            }
        }
    }

    fn apply_snapshot(&mut self, now: Time, entries: Vec<SnapshotEntry>) {
        let me = self.settings.node.clone();
        let mut seen_own = FxHashSet::default();
        let mut others = Vec::with_capacity(entries.len());
        for e in entries {
            if e.owner == me {
                seen_own.insert(e.slot);
                if self.own.get(&e.slot).map(|c| c.fence) != Some(e.fence) {
                    self.unmatched.push((e.slot, e.fence));
                }
            } else {
                if let Some(c) = self.own.get(&e.slot) {
                    if !self.touched.contains(&e.slot) {
                        let fence = c.fence;
                        self.own.remove(&e.slot);
                        self.out.push_back(ClusterOutput::Lost { slot: e.slot, fence, to: Some((e.owner.clone(), e.fence)) });
                    }
                }
                others.push((e.slot, RemoteClaim { owner: e.owner, fence: e.fence, info: e.info, expires: now + Duration::from_millis(e.ttl_ms) }));
            }
        }
        // Own claims Redis does not have (it lost them, or they expired while we were cut off): put them back.
        let restore: Vec<(Slot, Fence, ClaimInfo)> =
            self.own.iter().filter(|(s, _)| !seen_own.contains(*s)).map(|(s, c)| (*s, c.fence, c.info.clone())).collect();
        if !restore.is_empty() {
            let claims = restore.iter().map(|(s, f, _)| (*s, *f)).collect();
            self.issue(RedisOp::Restore { claims: restore }, InFlightKind::Restore { sent: now, claims });
        }
        let mut vc = Vec::new();
        let touched = std::mem::take(&mut self.touched);
        others.retain(|e| !self.own.contains_key(&e.0));
        self.view.replace(others, &touched, &mut vc);
        self.out.extend(vc.into_iter().map(ClusterOutput::View));
        self.sweep_unmatched();
        self.next_resync = Some(now + self.settings.resync_every);
    }

    /// Releases claims in this node's name that no claim of ours explains and no pending claim may explain.
    fn sweep_unmatched(&mut self) {
        if self.unmatched.is_empty() {
            return;
        }
        let unmatched = std::mem::take(&mut self.unmatched);
        for (slot, fence) in unmatched {
            if self.own.get(&slot).is_some_and(|c| c.fence == fence) {
                continue;
            }
            let may_explain = self.pending.values().any(|p| p.lot == slot.lot && (p.want == Want::Any || p.want == Want::Orbit(slot.orbit)));
            if may_explain {
                self.unmatched.push((slot, fence));
            } else if self.link != Link::Down {
                self.issue(RedisOp::Release { slot, fence }, InFlightKind::Release);
            }
        }
    }

    fn note_outcome(&mut self, ok: bool) {
        if ok && self.link == Link::Suspect {
            self.link = Link::Up;
            self.out.push_back(ClusterOutput::Available(true));
        }
    }
}
