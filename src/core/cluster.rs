//! The core's side of the cluster (issue 18): the [`ClusterRoom`] as one of the core's rooms, and the park flow
//! that waits for its claim. Off by default ([`Core::enable_cluster`]): a core without it behaves exactly as
//! before and emits no [`crate::core::Output::Cluster`].
//!
//! # The park waits for the claim
//! A park (an INVITE to a park code, a directed park, an empty-orbit park) asks the room for an orbit instead
//! of taking one from the local lot: it is kept as a [`PendingPark`] under a fresh [`ClaimId`] and nothing is
//! sent (no `100 Trying`; a claim takes about a millisecond, `claim_timeout` (1.5 s) at most, and a
//! retransmitted INVITE meets its server transaction). The room's answer continues it:
//! * `Granted { slot }` → the local lot takes that orbit and the park goes on as on a single node (its `200`
//!   then waits for the journal, as always);
//! * `Taken` (directed) → `486 Busy Here`; `Full` → the lot's `overflow_lot` (a new claim there) or
//!   `486 Parking Lot Full`;
//! * `Unavailable` (Redis down or late) → `503 Service Unavailable` with `Retry-After: 5`, never a 200;
//! * the INVITE was CANCELled (answered 487) meanwhile → the granted orbit is given back.
//!
//! Whenever an orbit this node holds becomes free locally (retrieve, hang-up, recall answered, a park undone),
//! [`Core::orbit_changed`] releases its claim.
//!
//! # Re-parks, retrieves, other nodes' calls
//! A REFER's re-park waits for its claim with its final NOTIFY (`refer_via_cluster`), an application's re-park
//! with its answer (`cluster_command.rs`). The remote view is shown by BLF and the API (with the owner's parked
//! dialog, so a pickup with `Replaces` works on any node), the metrics' occupancy and the events
//! (`remote_parked` / `remote_freed`). A retrieve of an orbit another node holds, plain or by `Replaces`, is
//! fetched from it (`cluster_fetch.rs`, with the `[cluster] secret`; else `404 Parked On Another Node`), and a
//! retrieve another node signs with that secret is taken here past the lot's access rules
//! (`Core::cluster_trusted`), the call being lent (`cluster_lend.rs`: parked again if that node's retriever gave
//! up). Calls restored from the journal take their journaled claims back (`persist/claims.rs`) or claim their
//! orbits again once Redis answers; one another node took meanwhile moves into a free orbit of its lot or recalls
//! its parker (`orbit_lost`).

use crate::cluster::NodeName;
use super::Core;
use crate::cluster::auth::ClusterAuth;
use crate::cluster::{Change, ClaimId, ClaimInfo, ParkedDialog, ClaimResult, ClusterOutput, ClusterRoom, OpError, RedisReply, Slot, Want};
use crate::ids::OrbitIdx;
use crate::sip::{NameAddr, Peer, Request};
use crate::time::Time;
use crate::txn::ServerTxnId;
use rustc_hash::FxHashMap;

/// The `Retry-After` of a park refused because the cluster cannot allocate an orbit now.
pub const CLUSTER_RETRY_AFTER: u32 = 5;

/// What the driver brings back from the cluster's io adapter.
#[derive(Debug)]
pub enum ClusterInput {
    /// The outcome of the operation `op` ([`crate::core::Output::Cluster`]): every one gets exactly one.
    Reply { op: crate::cluster::OpId, result: Result<RedisReply, OpError> },
    /// A message on the change channel.
    Change(Change),
    /// Redis is reachable (connected and subscribed) or not.
    Link(bool),
}

/// A park waiting for its claim.
#[derive(Debug)]
pub(super) struct PendingPark {
    txn: ServerTxnId,
    from: Peer,
    req: Request,
    lot: usize,
    parker: Option<NameAddr>,
    /// parkd's tag for the parked dialog, announced in the claim ([`ClaimInfo::dialog`]) and used by the 200.
    tag: String,
}

/// A REFER's re-park waiting for its claim (its final NOTIFY waits with it).
#[derive(Debug)]
pub(super) struct PendingRefer {
    pub(super) leg_id: crate::core::ids::LegId,
    pub(super) refer_cseq: u32,
    pub(super) call_ref: crate::core::ids::CallRef,
    pub(super) other: crate::core::ids::LegId,
    pub(super) lot: usize,
    pub(super) parker: NameAddr,
    pub(super) subscribe: bool,
}

/// The cluster room and the parks waiting for it.
#[derive(Debug)]
pub(super) struct CoreCluster {
    pub(super) room: ClusterRoom,
    pending: FxHashMap<ClaimId, PendingPark>,
    /// REFER re-parks waiting for their claims.
    refers: FxHashMap<ClaimId, PendingRefer>,
    /// Claims of a free orbit for calls whose orbit another node took: (call, the orbit lost, its new owner).
    moves: FxHashMap<ClaimId, (crate::core::ids::CallRef, Slot, NodeName)>,
    /// Claims asked for calls parked here without one (restored from the journal), by the orbit they hold.
    reclaims: FxHashMap<ClaimId, Slot>,
    pub(super) next_id: u64,
    /// Checks the signed header of a retrieve another node sends here (`[cluster] secret`); none: refused.
    pub(super) auth: Option<ClusterAuth>,
    /// Re-parks an application asked for, waiting for their claims (`cluster_command.rs`).
    pub(super) api_parks: FxHashMap<ClaimId, (super::commands::CommandTicket, super::commands::ParkCallTarget)>,
    /// Retrieves waiting for the node that holds their orbit (`cluster_fetch.rs`), by the bridge's id.
    pub(super) fetches: FxHashMap<crate::core::ids::CallRef, super::cluster_fetch::Fetch>,
    /// Calls this node handed to another node's fetch, kept while that bridge lasts (`cluster_lend.rs`).
    pub(super) lent: FxHashMap<crate::core::ids::CallRef, Box<super::parking::ParkedCall>>,
}

/// How far a node-to-node header's time may be from this node's clock.
pub const CLUSTER_AUTH_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

impl Core {
    /// Makes this core a node of a cluster (call before any traffic). Redis counts as down (parks answer 503)
    /// until the driver reports the link up ([`ClusterInput::Link`]).
    pub fn enable_cluster(&mut self, room: ClusterRoom) {
        self.cluster = Some(CoreCluster { room, pending: FxHashMap::default(), refers: FxHashMap::default(), moves: FxHashMap::default(), reclaims: FxHashMap::default(), api_parks: FxHashMap::default(), next_id: 0, auth: None, fetches: FxHashMap::default(), lent: FxHashMap::default() });
    }

    /// The cluster's shared secret (`[cluster] secret`): with it, a retrieve another node sends here with a
    /// valid signed [`crate::cluster::auth::HEADER`] is trusted (call after [`Core::enable_cluster`]).
    pub fn set_cluster_secret(&mut self, secret: &[u8]) {
        if let Some(c) = self.cluster.as_mut() {
            c.auth = Some(ClusterAuth::new(secret, CLUSTER_AUTH_WINDOW));
        }
    }

    /// A request carrying the node-to-node header: `None` without it; `Some(true)` when it is signed by a node of
    /// this cluster for this Call-ID and orbit (the request skips this node's access rules: the sending node
    /// admitted it); `Some(false)` when it is refused (answered `403` here).
    pub(super) fn cluster_trusted(&mut self, now: Time, txn: ServerTxnId, req: &Request, orbit: &str) -> Option<bool> {
        self.cluster.as_ref()?;
        let header = req.common.header(crate::cluster::auth::HEADER)?;
        let verdict = match self.cluster.as_mut().and_then(|c| c.auth.as_mut()) {
            Some(auth) => auth.verify(header, now, req.common.call_id.as_str(), orbit).map_err(|e| e.to_string()),
            None => Err("no [cluster] secret on this node".to_string()),
        };
        match verdict {
            Ok(node) => {
                tracing::info!(%node, %orbit, "cluster: retrieve from a node of the cluster");
                Some(true)
            }
            Err(why) => {
                tracing::warn!(%why, %orbit, "cluster: node-to-node request refused");
                self.ep.refuse(now, txn, req, 403, "Forbidden: Bad Cluster Signature");
                Some(false)
            }
        }
    }

    /// Whether this core is a node of a cluster.
    pub fn clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// Whether Redis answers (parks can be granted); `true` without a cluster.
    pub fn cluster_available(&self) -> bool {
        self.cluster.as_ref().is_none_or(|c| c.room.available())
    }

    /// The cluster room, read-only (API, tests).
    pub fn cluster_room(&self) -> Option<&ClusterRoom> {
        self.cluster.as_ref().map(|c| &c.room)
    }

    /// The cluster as `/metrics` shows it at `now`; `None` on a single node.
    pub fn cluster_scrape(&self, now: Time) -> Option<crate::cluster::ClusterScrape> {
        self.cluster.as_ref().map(|c| c.room.scrape(now))
    }

    /// Parks waiting for their claim.
    pub fn cluster_pending(&self) -> usize {
        self.cluster.as_ref().map_or(0, |c| c.pending.len())
    }

    /// An input from the cluster's io adapter. Drain outputs afterwards, as after any input.
    pub fn handle_cluster(&mut self, input: ClusterInput, now: Time) {
        if let Some(c) = self.cluster.as_mut() {
            match input {
                ClusterInput::Reply { op, result } => c.room.handle_reply(now, op, result),
                ClusterInput::Change(change) => c.room.handle_change(now, change),
                ClusterInput::Link(up) => c.room.set_link(now, up),
            }
        }
        self.settle(now);
    }

    /// In a cluster, the park is kept until the room answers its claim.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn park_via_cluster(
        &mut self,
        now: Time,
        txn: ServerTxnId,
        from: Peer,
        req: Request,
        lot: usize,
        orbit: Option<OrbitIdx>,
        parker: Option<NameAddr>,
    ) {
        let Some(c) = self.cluster.as_mut() else { return };
        c.next_id += 1;
        let id = ClaimId(c.next_id);
        let mut parked = req.common.from.uri.clone();
        parked.params = Default::default();
        // The parked dialog as it will be (the 200 uses this tag): what other nodes' BLF shows for pickup.
        let tag = self.ep.new_tag();
        let dialog = ParkedDialog {
            call_id: req.common.call_id.as_str().to_string(),
            local_tag: tag.clone(),
            remote_tag: req.common.from.tag().unwrap_or("").to_string(),
        };
        let Some(c) = self.cluster.as_mut() else { return };
        let info = ClaimInfo {
            parked: parked.to_string(),
            parked_name: req.common.from.display.as_deref().map(str::to_string),
            parker: parker.as_ref().map(|p| p.uri.to_string()),
            since_ms: now.as_millis(),
            dialog: Some(dialog),
            node_sip: Some(c.room.settings().sip.clone()),
        };
        let want = orbit.map_or(Want::Any, Want::Orbit);
        c.pending.insert(id, PendingPark { txn, from, req, lot, parker, tag });
        c.room.claim(now, id, lot, want, info);
    }

    /// In a cluster, a REFER's re-park first claims its orbit (`orbit`, or any of the lot's).
    pub(super) fn refer_via_cluster(&mut self, now: Time, p: PendingRefer, orbit: Option<OrbitIdx>) {
        let Some(c) = self.cluster.as_mut() else { return };
        let info = ClaimInfo {
            parked: self.dialogs.get(p.other).map(|l| l.dialog.remote().uri.to_string()).unwrap_or_default(),
            parker: Some(p.parker.uri.to_string()),
            since_ms: now.as_millis(),
            dialog: parked_dialog(&self.dialogs, p.other),
            node_sip: Some(c.room.settings().sip.clone()),
            ..ClaimInfo::default()
        };
        c.next_id += 1;
        let id = ClaimId(c.next_id);
        let lot = p.lot;
        c.refers.insert(id, p);
        c.room.claim(now, id, lot, orbit.map_or(Want::Any, Want::Orbit), info);
    }

    fn on_refer_claim(&mut self, now: Time, p: PendingRefer, result: ClaimResult) {
        let PendingRefer { leg_id, refer_cseq, call_ref, other, lot: _, parker, subscribe } = p;
        let refused = match result {
            ClaimResult::Granted { slot, fence } => {
                tracing::debug!(lot = slot.lot, orbit = slot.orbit.0, fence = fence.0, "cluster: orbit granted to a REFER");
                self.refer_repark(now, leg_id, refer_cseq, call_ref, other, (slot.lot, Some(slot.orbit)), parker, subscribe);
                // Not parked there after all (the call ended meanwhile): give the orbit back.
                if self.parking.parked_in(slot.lot, slot.orbit).is_none() {
                    self.release_claim(slot);
                }
                return;
            }
            ClaimResult::Taken { .. } => (486, "Busy Here"),
            ClaimResult::Full { .. } => (486, "Parking Lot Full"),
            ClaimResult::Unavailable => (503, "Cluster Unavailable"),
        };
        let before = (self.bridging.get(call_ref).cloned(), self.dialogs.get(other).map(|l| (l.role, l.orbit.clone())));
        self.refer_outcome(now, leg_id, refer_cseq, call_ref, other, before, Err(refused), subscribe);
    }

    /// Carries the room's outputs: operations to the driver, claim answers to their parks. True when it did
    /// anything (the caller then settles the transaction layer again).
    pub(super) fn drain_cluster(&mut self, now: Time) -> bool {
        let mut any = false;
        loop {
            let Some(c) = self.cluster.as_mut() else { return any };
            let Some(out) = c.room.poll_output() else { return any };
            any = true;
            match out {
                ClusterOutput::Redis { op, cmd } => self.ep.cluster(op, cmd),
                ClusterOutput::Claim { id, result } => {
                    if let Some(p) = c.pending.remove(&id) {
                        self.on_claim(now, p, result);
                    } else if let Some(p) = c.refers.remove(&id) {
                        self.on_refer_claim(now, p, result);
                    } else if let Some((call, lost, owner)) = c.moves.remove(&id) {
                        self.on_move_claim(now, call, lost, owner, result);
                    } else if let Some(slot) = c.reclaims.remove(&id) {
                        self.on_reclaim(now, slot, result);
                    } else if let Some((ticket, t)) = c.api_parks.remove(&id) {
                        self.on_api_claim(now, ticket, t, result);
                    }
                }
                ClusterOutput::Lost { slot, fence, to } => {
                    tracing::warn!(lot = slot.lot, orbit = slot.orbit.0, fence = fence.0, to = ?to.as_ref().map(|t| &t.0), "cluster: orbit lost to another node");
                    if let Some((owner, _)) = to {
                        self.orbit_lost(now, slot, owner);
                    }
                }
                ClusterOutput::View(v) => {
                    // Watchers (BLF, the events stream) see orbits other nodes hold as parked.
                    tracing::debug!(change = ?v, "cluster view");
                    let slot = self.emit_view_change(v);
                    self.orbit_shown_changed(now, slot.lot, slot.orbit);
                }
                ClusterOutput::Available(a) => {
                    tracing::info!(available = a, "cluster: Redis {}", if a { "answers; parks are granted" } else { "does not answer; parks get 503" });
                    if a {
                        self.claim_unclaimed(now);
                    }
                }
            }
        }
    }

    fn on_claim(&mut self, now: Time, p: PendingPark, result: ClaimResult) {
        let PendingPark { txn, from, req, lot, parker, tag } = p;
        if !self.ep.txn.awaiting_final(txn) {
            // CANCELled (487) or gone meanwhile: give the orbit back.
            if let ClaimResult::Granted { slot, .. } = result {
                self.release_claim(slot);
            }
            return;
        }
        match result {
            ClaimResult::Granted { slot, fence } => {
                tracing::debug!(lot = slot.lot, orbit = slot.orbit.0, fence = fence.0, "cluster: orbit granted");
                self.park_local(now, txn, from, req, slot.lot, Some(slot.orbit), parker, Some(tag));
            }
            ClaimResult::Taken { owner, .. } => {
                tracing::info!(%owner, "cluster: orbit held by a node");
                self.ep.refuse(now, txn, &req, 486, "Busy Here");
            }
            ClaimResult::Full { .. } => match self.parking.overflow_of(lot) {
                Some(o) => self.park(now, txn, from, req, o, None, parker),
                None => self.ep.refuse(now, txn, &req, 486, "Parking Lot Full"),
            },
            ClaimResult::Unavailable => {
                tracing::info!(number = req.uri.user.as_deref().unwrap_or(""), "cluster unavailable: park refused");
                self.ep.emit(super::ParkEvent::Refused {
                    number: req.uri.user.as_deref().unwrap_or_default().to_string(),
                    status: 503,
                    reason: "Cluster Unavailable".into(),
                    call_id: req.common.call_id.as_str().into(),
                });
                self.ep.respond(now, txn, &req, 503, Some("Cluster Unavailable"), None, |r| {
                    r.common.push_header("Retry-After", CLUSTER_RETRY_AFTER.to_string());
                });
            }
        }
    }

    /// Claims the orbit of every call parked here without a claim (calls restored from the journal, whose
    /// fence is not journaled yet): asked each time Redis becomes reachable until it answers.
    pub(super) fn claim_unclaimed(&mut self, now: Time) {
        let Some(c) = self.cluster.as_mut() else { return };
        let asked: rustc_hash::FxHashSet<Slot> = c.reclaims.values().copied().collect();
        let todo: Vec<(Slot, ClaimInfo)> = self
            .parking
            .iter()
            .map(|p| (Slot { lot: p.lot, orbit: p.orbit }, p))
            .filter(|(slot, _)| c.room.own_claim(*slot).is_none() && !asked.contains(slot))
            .map(|(slot, p)| (slot, claim_info(&self.dialogs, p, c.room.settings().sip.clone())))
            .collect();
        for (slot, info) in todo {
            c.next_id += 1;
            let id = ClaimId(c.next_id);
            c.reclaims.insert(id, slot);
            c.room.claim(now, id, slot.lot, Want::Orbit(slot.orbit), info);
        }
    }

    fn on_reclaim(&mut self, now: Time, slot: Slot, result: ClaimResult) {
        let orbit = self.parking.orbit_name(slot.lot, slot.orbit);
        let me = self.cluster.as_ref().map(|c| c.room.settings().node.clone());
        match result {
            // This node's name holds it: the claim of this node's previous process (restarted within its lease).
            // The room gives such a stale claim back (compare-and-delete on its fence) right after this answer,
            // ahead of the claim asked again here, which then gets the orbit with a fence of this process.
            ClaimResult::Taken { owner, .. } if Some(&owner) == me.as_ref() && self.parking.parked_in(slot.lot, slot.orbit).is_some() => {
                tracing::info!(%orbit, "cluster: the orbit is still claimed by this node's previous process; claiming it anew");
                self.claim_unclaimed(now);
            }
            ClaimResult::Granted { .. } if self.parking.parked_in(slot.lot, slot.orbit).is_none() => self.release_claim(slot),
            ClaimResult::Granted { fence, .. } => {
                tracing::info!(%orbit, fence = fence.0, "cluster: the orbit of a call parked here is claimed");
                // Its claim record (the fence) goes to the journal with the next group.
                if let Some(call) = self.parking.parked_in(slot.lot, slot.orbit) {
                    self.touch(call);
                }
            }
            ClaimResult::Taken { owner, .. } => {
                tracing::warn!(%orbit, %owner, "cluster: another node holds the orbit of a call parked here");
                self.orbit_lost(now, slot, owner);
            }
            ClaimResult::Full { .. } | ClaimResult::Unavailable => {}
        }
    }

    /// Another node holds `slot`, where a call of this node is parked: ask for a free orbit of the same lot.
    fn orbit_lost(&mut self, now: Time, slot: Slot, owner: NodeName) {
        let Some(call) = self.parking.parked_in(slot.lot, slot.orbit) else { return };
        let Some(c) = self.cluster.as_mut() else { return };
        if c.moves.values().any(|m| m.0 == call) {
            return;
        }
        let Some(info) = self.parking.get(call).map(|p| claim_info(&self.dialogs, p, c.room.settings().sip.clone())) else { return };
        c.next_id += 1;
        let id = ClaimId(c.next_id);
        c.moves.insert(id, (call, slot, owner));
        c.room.claim(now, id, slot.lot, Want::Any, info);
    }

    /// The answer to [`Core::orbit_lost`]'s claim: move the call into the orbit granted, or recall its parker
    /// when the lot is full everywhere.
    fn on_move_claim(&mut self, now: Time, call: crate::core::ids::CallRef, lost: Slot, owner: NodeName, result: ClaimResult) {
        if self.parking.parked_in(lost.lot, lost.orbit) != Some(call) {
            // Retrieved, hung up or moved meanwhile.
            if let ClaimResult::Granted { slot, .. } = result {
                self.release_claim(slot);
            }
            return;
        }
        let old_name = self.parking.orbit_name(lost.lot, lost.orbit);
        let lot_name = self.parking.lot_name(lost.lot);
        let call_id = self.parking.get(call).and_then(|p| self.dialogs.get(p.parked)).map(|l| l.dialog.call_id.as_str().into()).unwrap_or_default();
        let moved_to = match result {
            ClaimResult::Granted { slot, .. } => {
                if self.parking.claim(slot.lot, Some(slot.orbit), call, self.ep.rng()).is_err() {
                    tracing::warn!(orbit = %self.parking.orbit_name(slot.lot, slot.orbit), "cluster: the orbit granted for a move is taken here");
                    self.release_claim(slot);
                    return;
                }
                self.parking.release(lost.lot, lost.orbit, call);
                let new_name = self.parking.orbit_name(slot.lot, slot.orbit);
                let parked = self.parking.get_mut(call).map(|p| {
                    p.orbit = slot.orbit;
                    p.orbit_name = new_name.clone();
                    p.parked
                });
                if let Some(leg) = parked.and_then(|l| self.dialogs.get_mut(l)) {
                    leg.orbit = new_name.clone();
                }
                self.touch(call);
                tracing::warn!(from = %old_name, to = %new_name, %owner, "cluster: another node took the orbit; the call moved into a free one");
                self.orbit_changed(now, lost.lot, lost.orbit);
                self.orbit_changed(now, slot.lot, slot.orbit);
                Some(new_name)
            }
            ClaimResult::Full { .. } => {
                tracing::warn!(orbit = %old_name, %owner, "cluster: another node took the orbit and the lot is full: recalling the parker");
                None
            }
            ClaimResult::Taken { .. } | ClaimResult::Unavailable => {
                tracing::warn!(orbit = %old_name, "cluster: no orbit to move the call into yet (asked again when Redis answers)");
                return;
            }
        };
        let recall = moved_to.is_none();
        self.ep.emit(super::ParkEvent::OrbitLost { lot: lot_name, orbit: old_name, call_id, owner: owner.as_str().to_string(), moved_to });
        if recall {
            self.touch(call);
            let targets = self.parking.start_round(call);
            if !targets.into_iter().any(|t| self.start_recall(now, call, t)) {
                self.round_failed(now, call);
            }
        }
    }

    /// Reports a change of the remote view as an event (`remote_parked` / `remote_freed`); returns its slot.
    fn emit_view_change(&mut self, v: crate::cluster::ViewChange) -> Slot {
        use crate::cluster::ViewChange;
        let (slot, ev) = match v {
            ViewChange::Claimed { slot, owner, info, .. } => (
                slot,
                super::ParkEvent::RemoteParked {
                    lot: self.parking.lot_name(slot.lot),
                    orbit: self.parking.orbit_name(slot.lot, slot.orbit),
                    node: owner.as_str().to_string(),
                    parked: info.parked,
                    parker: info.parker,
                    since_ms: info.since_ms,
                },
            ),
            ViewChange::Freed { slot, owner, expired } => (
                slot,
                super::ParkEvent::RemoteFreed {
                    lot: self.parking.lot_name(slot.lot),
                    orbit: self.parking.orbit_name(slot.lot, slot.orbit),
                    node: owner.as_str().to_string(),
                    expired,
                },
            ),
        };
        // Sharded, the other "nodes" are this process's other shards: their parks are reported by them.
        if self.ep.shard().1 <= 1 {
            self.ep.emit(ev);
        }
        slot
    }

    /// The call parked in `call`'s orbit changed its party (an attended park): the claim's info (parked party,
    /// parker, since, the parked dialog) is rewritten in Redis so other nodes' BLF shows the new dialog.
    pub(super) fn refresh_claim_info(&mut self, now: Time, call: crate::core::ids::CallRef) {
        let Some(c) = self.cluster.as_mut() else { return };
        let Some(p) = self.parking.get(call) else { return };
        let info = claim_info(&self.dialogs, p, c.room.settings().sip.clone());
        c.room.update_info(now, Slot { lot: p.lot, orbit: p.orbit }, info);
    }

    /// Gives back this node's claim of `slot` (no-op without a cluster or when the node does not hold it).
    pub(super) fn release_claim(&mut self, slot: Slot) {
        if let Some(c) = self.cluster.as_mut() {
            c.room.release(slot);
        }
    }

    /// Orbit `orbit` of `lot` may have changed: a claim this node holds for it is released once it is free here.
    pub(super) fn cluster_orbit_changed(&mut self, lot: usize, orbit: OrbitIdx) {
        let slot = Slot { lot, orbit };
        let held = self.cluster.as_ref().is_some_and(|c| c.room.own_claim(slot).is_some());
        if held && self.parking.parked_in(lot, orbit).is_none() {
            self.release_claim(slot);
        }
    }

    /// Whether another node holds orbit `orbit` of `lot` (as this node's view knows).
    pub(super) fn held_remotely(&self, lot: usize, orbit: OrbitIdx) -> bool {
        self.cluster.as_ref().is_some_and(|c| c.room.view().get(Slot { lot, orbit }).is_some())
    }

    /// The node holding orbit `orbit` of `lot` (another node, as this node's view knows) and where it takes SIP:
    /// the claim's `node_sip`, else the node's heartbeat. Where a cross-node retrieve will be sent.
    pub(super) fn remote_owner(&self, lot: usize, orbit: OrbitIdx) -> Option<(crate::cluster::NodeName, Option<String>)> {
        let view = self.cluster.as_ref()?.room.view();
        let claim = view.get(Slot { lot, orbit })?;
        let sip = claim.info.node_sip.clone().or_else(|| view.node(&claim.owner).map(|n| n.sip.clone()));
        Some((claim.owner.clone(), sip))
    }

    /// Orbits of `lot` other nodes hold.
    pub(super) fn remote_in_lot(&self, lot: usize) -> usize {
        self.cluster.as_ref().map_or(0, |c| c.room.view().count_in_lot(lot))
    }
}

/// The dialog of parked leg `leg` as this node holds it (Call-ID, parkd's tag, the parked party's tag): what the
/// claim shows other nodes, so their BLF NOTIFYs carry it and a pickup with `Replaces` works there.
pub(super) fn parked_dialog(dialogs: &super::dialogs::Dialogs, leg: crate::core::ids::LegId) -> Option<ParkedDialog> {
    let d = &dialogs.get(leg)?.dialog;
    Some(ParkedDialog { call_id: d.call_id.to_string(), local_tag: d.local_tag().to_string(), remote_tag: d.remote_tag().to_string() })
}

/// What the claim of parked call `p` shows other nodes (the node's SIP address `sip`).
pub(super) fn claim_info(dialogs: &super::dialogs::Dialogs, p: &super::parking::ParkedCall, sip: String) -> ClaimInfo {
    let leg = dialogs.get(p.parked);
    let parked = leg.map(|l| l.dialog.remote_identity());
    ClaimInfo {
        parked: parked.as_ref().map(|n| n.uri.to_string()).unwrap_or_default(),
        parked_name: parked.and_then(|n| n.display).map(String::from),
        parker: p.parker.as_ref().map(|n| n.uri.to_string()),
        since_ms: p.parked_at.as_millis(),
        dialog: parked_dialog(dialogs, p.parked),
        node_sip: Some(sip),
    }
}
