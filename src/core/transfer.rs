//! Transfers that move a party into an orbit when parkd is already in the call:
//! * **REFER** (RFC 3515, 4488) from a leg bridged through parkd: re-park the *other* leg; NOTIFY sipfrag.
//! * **Attended park swap** (RFC 3891): an INVITE with `Replaces` naming a parked (usually self-parked
//!   consultation) dialog, sent to the park code or carrying `Referred-By`: the new party takes that orbit and
//!   parkd releases the replaced leg with BYE.
//!
//! parkd never dials an arbitrary Refer-To: only its own park codes and orbits are accepted (toll fraud).

use super::dialogs::LegRole;
use super::events::ParkHow;
use super::ids::{CallRef, LegId};
use super::parking::{MediaMode, ParkedCall};
use super::persist::{Held, ReferDone};
use super::{Core, ParkEvent, Purpose};
use crate::park::lot::{ClaimError, Dialed, OrbitIdx};
use crate::sip::{Method, NameAddr, Peer, Replaces, Request};
use crate::ids::OrbitNumber;
use crate::time::Time;
use crate::txn::ServerTxnId;
use bytes::Bytes;

impl Core {
    /// An in-dialog REFER on leg `leg_id`.
    pub(super) fn on_refer(&mut self, now: Time, txn: ServerTxnId, req: Request, leg_id: LegId) {
        let refer_to = match req.refer_to() {
            Some(Ok(na)) => na,
            Some(Err(_)) => return self.ep.respond(now, txn, &req, 400, Some("Bad Refer-To Header"), None, |_| {}),
            None => return self.ep.respond(now, txn, &req, 400, Some("Missing Refer-To Header"), None, |_| {}),
        };
        let user = refer_to.uri.user.clone().unwrap_or_default();
        // The tenant: the Refer-To host, else the REFER's Request-URI and To hosts.
        let hosts = [refer_to.uri.host.as_str(), req.uri.host.as_str(), req.common.to.uri.host.as_str()];
        let target = match self.parking.lookup_in(&user, &hosts) {
            Some((lot, Dialed::ParkCode)) => (lot, None),
            Some((lot, Dialed::Orbit(i))) => (lot, Some(i)),
            _ => {
                tracing::warn!(refer_to = %refer_to.uri, "REFER to a target that is not parkd's: refused");
                return self.ep.respond(now, txn, &req, 403, Some("Refer-To Is Not A Park Code Or Orbit"), None, |_| {});
            }
        };
        let Some(leg) = self.dialogs.get(leg_id) else { return };
        let call_ref = leg.call;
        let Some(other) = self.bridging.get(call_ref).map(|b| b.across(leg_id)) else {
            return self.ep.respond(now, txn, &req, 403, Some("No Bridged Call To Park"), None, |_| {});
        };
        // RFC 4488: `Refer-Sub: false` asks for no implicit subscription (and no NOTIFYs).
        let subscribe = !req.common.header("Refer-Sub").is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
        let parker = match req.referred_by() {
            Some(Ok(na)) => na,
            _ => leg.dialog.remote_identity(),
        };
        let refer_cseq = req.common.cseq.seq;
        self.ep.respond(now, txn, &req, 202, None, None, |r| {
            if !subscribe {
                r.common.push_header("Refer-Sub", "false");
            }
        });
        if subscribe {
            self.notify_refer(now, leg_id, refer_cseq, "SIP/2.0 100 Trying\r\n", false);
        }
        if !self.capacity_admits(now) {
            // The capacity guard (core/capacity.rs): the call stays bridged; the referrer hears why.
            tracing::info!("REFER park refused by the capacity guard; the call stays bridged");
            if subscribe {
                self.notify_refer(now, leg_id, refer_cseq, "SIP/2.0 503 Service Unavailable\r\n", true);
            }
            return;
        }
        if self.clustered() {
            // The orbit is claimed cluster-wide first; the re-park (and its final NOTIFY) waits for the answer.
            let pending = super::cluster::PendingRefer { leg_id, refer_cseq, call_ref, other, lot: target.0, parker, subscribe };
            return self.refer_via_cluster(now, pending, target.1);
        }
        self.refer_repark(now, leg_id, refer_cseq, call_ref, other, target, parker, subscribe);
    }

    /// Re-parks `other` (the party across from the REFER's leg `leg_id`) into `target` and tells the referrer
    /// (the final NOTIFY, held for the journal when journaling). In a cluster `target` is the orbit granted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn refer_repark(
        &mut self,
        now: Time,
        leg_id: LegId,
        refer_cseq: u32,
        call_ref: CallRef,
        other: LegId,
        target: (usize, Option<OrbitIdx>),
        parker: NameAddr,
        subscribe: bool,
    ) {
        let before = (self.bridging.get(call_ref).cloned(), self.dialogs.get(other).map(|l| (l.role, l.orbit.clone())));
        let outcome = if self.bridging.get(call_ref).is_some_and(|b| (b.parked, b.other) == (leg_id, other) || (b.parked, b.other) == (other, leg_id)) {
            self.repark_local(now, call_ref, other, target.0, target.1, Some(parker))
        } else {
            Err((481, "Call/Transaction Does Not Exist"))
        };
        self.refer_outcome(now, leg_id, refer_cseq, call_ref, other, before, outcome, subscribe);
    }

    /// Tells the referrer how its REFER's re-park went (the final NOTIFY; held for the journal on success).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn refer_outcome(
        &mut self,
        now: Time,
        leg_id: LegId,
        refer_cseq: u32,
        call_ref: CallRef,
        other: LegId,
        before: (Option<super::bridging::Bridge>, Option<(LegRole, OrbitNumber)>),
        outcome: Result<OrbitNumber, (u16, &'static str)>,
        subscribe: bool,
    ) {
        if let (true, Ok(orbit), (Some(old), Some((kept_role, kept_orbit)))) = (subscribe && self.journaling(), &outcome, before) {
            // Durable before acknowledged: the NOTIFY saying the park worked waits for its records.
            let new_call = self.dialogs.get(other).map(|l| l.call).unwrap_or(call_ref);
            let done = ReferDone { referrer: leg_id, refer_cseq, orbit: orbit.clone(), new_call, kept: other, old, kept_role, kept_orbit };
            self.journal.hold(Held::ReferDone(Box::new(done)));
            tracing::info!(%orbit, "REFER re-parked the other party; its NOTIFY waits for the journal");
            return;
        }
        if subscribe {
            let frag = match &outcome {
                Ok(orbit) => format!("SIP/2.0 200 OK\r\nPark-Orbit: {orbit}\r\n"),
                Err((status, reason)) => format!("SIP/2.0 {status} {reason}\r\n"),
            };
            self.notify_refer(now, leg_id, refer_cseq, &frag, true);
        }
        match outcome {
            Ok(orbit) => tracing::info!(%orbit, "REFER re-parked the other party; waiting for the referrer's BYE"),
            Err((status, reason)) => tracing::info!(status, reason, "REFER re-park refused; the call stays bridged"),
        }
    }

    /// Re-parks leg `keep` of bridged call `call_ref` into `orbit` (directed) or a free orbit of `lot`. The
    /// other leg is detached from the call (its BYE then ends only itself; the caller decides whether parkd
    /// hangs it up). Returns the orbit's number, or the SIP status that refuses it (the bridge then stays).
    pub(super) fn repark_bridged(
        &mut self,
        now: Time,
        call_ref: CallRef,
        keep: LegId,
        lot: usize,
        orbit: Option<OrbitIdx>,
        parker: Option<NameAddr>,
    ) -> Result<OrbitNumber, (u16, &'static str)> {
        if self.clustered() {
            // A cluster's re-parks claim their orbit first (REFER: `refer_via_cluster`; API: `api_park_via_cluster`).
            return Err((503, "Orbit Not Claimed"));
        }
        self.repark_local(now, call_ref, keep, lot, orbit, parker)
    }

    /// [`Core::repark_bridged`] on this node's lots only (in a cluster: into an orbit already claimed).
    pub(super) fn repark_local(
        &mut self,
        now: Time,
        call_ref: CallRef,
        keep: LegId,
        lot: usize,
        orbit: Option<OrbitIdx>,
        parker: Option<NameAddr>,
    ) -> Result<OrbitNumber, (u16, &'static str)> {
        if self.dialogs.get(keep).is_none() {
            return Err((481, "Call/Transaction Does Not Exist"));
        }
        let new_call = CallRef(self.ep.next_id());
        let how = if orbit.is_some() { ParkHow::Directed } else { ParkHow::Indirect };
        let orbit = match self.parking.claim(lot, orbit, new_call, self.ep.rng()) {
            Ok(i) => i,
            Err(ClaimError::Occupied) => return Err((486, "Busy Here")),
            Err(ClaimError::LotFull) => return Err((486, "Parking Lot Full")),
        };
        // The bridge ends here; its other leg no longer belongs to any call.
        self.bridging.remove(call_ref);
        self.touch(call_ref);
        self.touch(new_call);
        let orbit_name = self.parking.orbit_name(lot, orbit);
        let Some(leg) = self.dialogs.get_mut(keep) else { return Err((481, "Call/Transaction Does Not Exist")) };
        leg.call = new_call;
        leg.role = LegRole::Parked;
        leg.orbit = orbit_name.clone();
        let parked_label = leg.dialog.remote().uri.to_string();
        let call_id = leg.dialog.call_id.clone();
        let parking_time = self.parking.cfg(lot).and_then(|c| c.parking_duration());
        self.start_parking(now, ParkedCall::new(new_call, lot, orbit, orbit_name.clone(), keep, parker, how, now, parking_time), call_id, parked_label);
        // After direct media, the kept phone sends to the other one: re-INVITEd back to parkd's address.
        self.direct_repark(now, call_ref, new_call, keep);
        Ok(orbit_name)
    }

    /// NOTIFY for the implicit REFER subscription (RFC 3515 §2.4.4): `message/sipfrag` body.
    pub(super) fn notify_refer(&mut self, now: Time, leg_id: LegId, refer_cseq: u32, frag: &str, last: bool) {
        let Some(leg) = self.dialogs.get_mut(leg_id) else { return };
        self.journal.touch(leg.call);
        // The REFER's implicit subscription shares the call's dialog (and parkd's Contact in it).
        let mut notify: Request = self.ep.request_in(&mut leg.dialog, Method::Notify);
        let hop: Peer = leg.dialog.next_hop;
        notify.common.push_header("Event", format!("refer;id={refer_cseq}"));
        notify.common.push_header("Subscription-State", if last { "terminated;reason=noresource" } else { "active;expires=60" });
        notify.common.set_body("message/sipfrag;version=2.0", Bytes::copy_from_slice(frag.as_bytes()));
        self.ep.send(now, hop, &notify, Purpose::Notify);
    }

    /// Attended park (RFC 3891 §3): `req` replaces the parked dialog named by `r`: the new party takes the orbit,
    /// the replaced leg's caller becomes the parker (unless Referred-By names one), the replaced leg gets a BYE.
    pub(super) fn swap_by_replaces(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: Request, r: &Replaces) {
        let Some(replaced) = self.dialogs.parked_leg_named_by(r) else {
            return self.ep.refuse(now, txn, &req, 481, "Call/Transaction Does Not Exist");
        };
        let Some(call_ref) = self.dialogs.get(replaced).map(|l| l.call) else { return };
        let Some(call) = self.parking.get(call_ref) else {
            return self.ep.refuse(now, txn, &req, 481, "Call/Transaction Does Not Exist");
        };
        let (lot, orbit, orbit_name) = (call.lot, call.orbit, call.orbit_name.clone());
        if !self.gate(now, txn, from, &req, lot, super::admission::Action::Park) {
            return;
        }
        let offer = match super::dialogs::read_offer(&req) {
            Ok(o) => o,
            Err((status, why)) => return self.ep.refuse(now, txn, &req, status, why),
        };
        if let Some(why) = self.srtp_refusal(&req, &from, lot) {
            return self.ep.refuse(now, txn, &req, 488, why);
        }
        let Some(media_leg) = self.ports.take(now) else {
            return self.ep.refuse(now, txn, &req, 503, "No Media Ports Available");
        };
        self.abandon_recall(now, call_ref);
        self.touch(call_ref);
        let lot_name = self.parking.lot_name(lot);
        let leg = self.answer_new_leg(now, txn, from, &req, call_ref, LegRole::Parked, media_leg, offer, &orbit_name, None, |resp| {
            resp.common.push_header(super::invite::PARK_ORBIT_HEADER, orbit_name.clone());
            resp.common.push_header(super::invite::PARK_LOT_HEADER, lot_name.clone());
        });
        let parker = match req.referred_by() {
            Some(Ok(na)) => Some(na),
            _ => self.dialogs.remote_identity(replaced),
        };
        if let Some(c) = self.parking.get_mut(call_ref) {
            c.parked = leg;
            c.parker = parker.clone().map(Box::new);
            c.media_mode = MediaMode::None;
            c.rounds = 0;
        }
        self.parking.set_parked_at(call_ref, now);
        tracing::info!(orbit = %orbit_name, "attended park: swapped the new party into the orbit");
        self.ep.emit(ParkEvent::Swapped {
            lot: lot_name,
            orbit: orbit_name,
            call_id: req.common.call_id.as_str().into(),
            parked: req.common.from.uri.to_string(),
            parker: parker.map(|p| p.uri.to_string()),
        });
        // RFC 3891 §3: the replaced dialog is ended with a BYE (phones such as linphone do not do it themselves).
        self.hangup_leg(now, replaced);
        self.parking.arm_period(now, call_ref);
        // In a cluster, other nodes show the new party's dialog (BLF pickup there).
        self.refresh_claim_info(now, call_ref);
        self.orbit_changed(now, lot, orbit);
    }
}
