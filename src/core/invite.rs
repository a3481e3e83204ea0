//! A new INVITE (no To tag): park it, retrieve with it, or refuse it.
//!
//! The rule, documented in the README and kept deterministic:
//! * to a lot's **park code** → park the caller in a free orbit (indirect park). The parker is the
//!   `Referred-By` identity when present, else unknown (the caller parked itself).
//! * to an **orbit** with `Referred-By` → park the caller in that orbit (directed park); occupied → 486.
//! * to an **orbit** without `Referred-By` → retrieve the call parked there; empty → 404.
//! * with `Replaces` naming a parked call's dialog: to the park code or with `Referred-By` → *swap* (attended
//!   park: the new party takes the orbit, the replaced leg is released); otherwise → retrieve that call (BLF
//!   pickup). Naming nothing → 481.
//! * to a lot's **retrieve code** → retrieve the lot's longest-parked call.
//! * to an empty orbit without `Referred-By` → 404, or park there when the lot's `empty_orbit = "park"`.
//! * a full lot with an `overflow_lot` parks there instead of refusing.
//! * anything else → 404.

use crate::media::MediaLegId;
use super::dialogs::{read_offer, Leg, LegMedia, LegRole, LegState};
use super::events::ParkHow;
use super::ids::{CallRef, LegId};
use super::bridging::Bridge;
use super::parking::ParkedCall;
use super::admission::Action;
use super::{Core, ParkEvent};
use crate::dialog::Dialog;
use crate::park::lot::{ClaimError, Dialed, OrbitIdx};
use crate::sdp::{LocalSdp, RemoteSdp};
use crate::sip::{NameAddr, Peer, Request};
use crate::ids::OrbitNumber;
use crate::time::Time;
use crate::txn::ServerTxnId;
use rand::Rng;

/// The header naming the orbit in parkd's 2xx to a park (documented in the README).
pub const PARK_ORBIT_HEADER: &str = "Park-Orbit";
pub const PARK_LOT_HEADER: &str = "Park-Lot";

impl Core {
    pub(super) fn on_invite(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: Request) {
        if self.answer_restored(now, txn, from, &req) {
            return;
        }
        // RFC 4028 §9: a Session-Expires below parkd's minimum is refused before anything is taken.
        if self.session_answer(now, txn, &req).is_err() {
            return;
        }
        if let Some(replaces) = req.replaces() {
            let to_park_code = self.lookup_request(&req).is_some_and(|(_, d)| d == Dialed::ParkCode);
            return match replaces {
                Ok(r) if to_park_code || req.referred_by().is_some() => self.swap_by_replaces(now, txn, from, req, &r),
                Ok(r) => self.retrieve_by_replaces(now, txn, from, req, &r),
                Err(_) => self.ep.refuse(now, txn, &req, 400, "Bad Replaces Header"),
            };
        }
        let Some((lot, dialed)) = self.lookup_request(&req) else {
            if !self.authorized_for_unknown_number(now, txn, from, &req) {
                return;
            }
            return self.ep.refuse(now, txn, &req, 404, "Not Found");
        };
        let parker = match req.referred_by() {
            None => None,
            Some(Ok(na)) => Some(na),
            Some(Err(_)) => return self.ep.refuse(now, txn, &req, 400, "Bad Referred-By Header"),
        };
        // A plain INVITE to an empty orbit parks the caller when the lot says `empty_orbit = "park"`: it is then
        // a park for access lists, authentication and drain.
        let parks_into_empty = |i: OrbitIdx| {
            self.parking.empty_orbit_parks(lot) && self.parking.occupant(lot, i).is_none()
        };
        let action = match dialed {
            Dialed::Orbit(i) if parker.is_none() && !parks_into_empty(i) => Action::Retrieve,
            Dialed::RetrieveCode => Action::Retrieve,
            Dialed::Orbit(_) | Dialed::ParkCode => Action::Park,
        };
        // A retrieve another node of the cluster sends for a caller it admitted (docs/cluster-design.md §3.3).
        let trusted = match dialed {
            Dialed::Orbit(i) if action == Action::Retrieve => match self.cluster_trusted(now, txn, &req, &self.parking.orbit_name(lot, i)) {
                Some(false) => return,
                t => t.is_some(),
            },
            // A node's fetch is a retrieve only: never a park into an empty orbit (`empty_orbit = "park"`).
            _ if self.clustered() && req.common.header(crate::cluster::auth::HEADER).is_some() => {
                return self.ep.refuse(now, txn, &req, 404, "Orbit Empty");
            }
            _ => false,
        };
        if !trusted && !self.gate(now, txn, from, &req, lot, action) {
            return;
        }
        if let Some(why) = self.srtp_refusal(&req, &from, lot) {
            return self.ep.refuse(now, txn, &req, 488, why);
        }
        match dialed {
            Dialed::ParkCode => self.park(now, txn, from, req, lot, None, parker),
            Dialed::Orbit(i) if parker.is_some() => self.park(now, txn, from, req, lot, Some(i), parker),
            Dialed::Orbit(i) if trusted => self.retrieve_for_node(now, txn, from, req, lot, i),
            Dialed::Orbit(i) => self.retrieve(now, txn, from, req, lot, i),
            Dialed::RetrieveCode => self.retrieve_oldest(now, txn, from, req, lot),
        }
    }

    /// Parks the caller of `req` in `orbit` (directed) or in a free orbit chosen by the lot's policy.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn park(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: Request, lot: usize, orbit: Option<OrbitIdx>, parker: Option<NameAddr>) {
        if self.clustered() {
            // The orbit is Redis's to give: the park waits for the claim (core/cluster.rs).
            if let Err((status, why)) = read_offer(&req) {
                return self.ep.refuse(now, txn, &req, status, why);
            }
            return self.park_via_cluster(now, txn, from, req, lot, orbit, parker);
        }
        self.park_local(now, txn, from, req, lot, orbit, parker, None)
    }

    /// Parks in the local lot. `granted`: the cluster granted this node `orbit` (given back if the park fails),
    /// with the tag parkd announced for the parked dialog in the claim (the 200 carries it, so the dialog other
    /// nodes show for BLF pickup is this one).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn park_local(
        &mut self,
        now: Time,
        txn: ServerTxnId,
        from: Peer,
        req: Request,
        lot: usize,
        orbit: Option<OrbitIdx>,
        parker: Option<NameAddr>,
        granted: Option<String>,
    ) {
        let offer = match read_offer(&req) {
            Ok(o) => o,
            Err((status, why)) => return self.ep.refuse(now, txn, &req, status, why),
        };
        let parking_time = match parking_time_override(&req) {
            Some(secs) => (secs > 0).then(|| std::time::Duration::from_secs(secs)),
            None => self.parking.cfg(lot).and_then(|c| c.parking_duration()),
        };
        let call = CallRef(self.ep.next_id());
        let asked = orbit;
        let orbit = match self.parking.claim(lot, orbit, call, self.ep.rng()) {
            Ok(i) => i,
            Err(e) if granted.is_some() => {
                // The cluster granted an orbit this node still has a call in (should not happen): give it back.
                tracing::warn!(error = ?e, "cluster granted an orbit that is occupied here");
                if let Some(o) = asked {
                    self.release_claim(crate::cluster::Slot { lot, orbit: o });
                }
                return self.ep.refuse(now, txn, &req, 486, "Busy Here");
            }
            Err(ClaimError::Occupied) => return self.ep.refuse(now, txn, &req, 486, "Busy Here"),
            Err(ClaimError::LotFull) => {
                return match self.parking.overflow_of(lot) {
                    Some(o) => self.park(now, txn, from, req, o, None, parker),
                    None => self.ep.refuse(now, txn, &req, 486, "Parking Lot Full"),
                };
            }
        };
        let Some(media_leg) = self.ports.take(now) else {
            self.parking.release(lot, orbit, call);
            if granted.is_some() {
                self.release_claim(crate::cluster::Slot { lot, orbit });
            }
            return self.ep.refuse(now, txn, &req, 503, "No Media Ports Available");
        };
        let orbit_name = self.parking.orbit_name(lot, orbit);
        let lot_name = self.parking.lot_name(lot);
        let how = if req.uri.user.as_deref() == Some(orbit_name.as_str()) { ParkHow::Directed } else { ParkHow::Indirect };
        let leg = self.answer_new_leg(now, txn, from, &req, call, LegRole::Parked, media_leg, offer, &orbit_name, granted, |r| {
            r.common.push_header(PARK_ORBIT_HEADER, orbit_name.clone());
            r.common.push_header(PARK_LOT_HEADER, lot_name.clone());
        });
        let call_id = req.common.call_id.as_str().into();
        let asserted_identity = self.admission.asserted_identity(from.addr.ip(), &req);
        let parked_label = asserted_identity.as_ref().unwrap_or(&req.common.from).uri.to_string();
        let mut parked_call = ParkedCall::new(call, lot, orbit, orbit_name, leg, parker, how, now, parking_time);
        parked_call.asserted_identity = asserted_identity.map(Box::new);
        self.start_parking(now, parked_call, call_id, parked_label);
    }

    /// Hands the call parked in `orbit` to the caller of `req`.
    pub(super) fn retrieve(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: Request, lot: usize, orbit: OrbitIdx) {
        match self.parking.occupant(lot, orbit) {
            Some(call) => self.take_call(now, txn, from, req, call),
            None if self.parking.empty_orbit_parks(lot) => {
                self.park(now, txn, from, req, lot, Some(orbit), None)
            }
            // Fetched from the node that holds it (cluster_fetch.rs); 404 when this node cannot.
            None if self.held_remotely(lot, orbit) => {
                if self.fetch_from_owner(now, txn, from, &req, lot, orbit) {
                    return;
                }
                if let Some((owner, sip)) = self.remote_owner(lot, orbit) {
                    tracing::info!(%owner, sip = sip.as_deref().unwrap_or("?"), "retrieve of an orbit another node holds: 404");
                }
                self.ep.refuse(now, txn, &req, 404, "Parked On Another Node")
            }
            None => self.ep.refuse(now, txn, &req, 404, "Orbit Empty"),
        }
    }

    /// The lot's retrieve code: the call parked longest (earliest `parked_at`) is taken. In a cluster (or on SIP
    /// shards) that is the lot's longest-parked call on any node: one another node holds, parked before this
    /// node's own, is fetched from it (`cluster_fetch.rs`), as a retrieve of its orbit would be; should the
    /// fetch not start, this node's own longest-parked call is taken.
    fn retrieve_oldest(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: Request, lot: usize) {
        let local = self.parking.oldest(lot);
        let local_since = local.and_then(|c| self.parking.get(c)).map_or(u64::MAX, |p| p.parked_at.as_millis());
        let remote = self.cluster.as_ref().and_then(|c| c.room.view().oldest_in_lot(lot)).map(|(slot, claim)| (slot.orbit, claim.info.since_ms));
        if let Some((orbit, since)) = remote.filter(|(_, since)| *since < local_since) {
            tracing::debug!(orbit = %self.parking.orbit_name(lot, orbit), since_ms = since, "retrieve code: the longest-parked call is on another node");
            if self.fetch_from_owner(now, txn, from, &req, lot, orbit) {
                return;
            }
        }
        match local {
            Some(call) => self.take_call(now, txn, from, req, call),
            None if remote.is_some() => self.ep.refuse(now, txn, &req, 404, "Parked On Another Node"),
            None => self.ep.refuse(now, txn, &req, 404, "Lot Empty"),
        }
    }

    /// RFC 3891: an INVITE whose Replaces names a parked call's dialog retrieves that call (a phone learns the
    /// dialog from BLF). The tags are matched from parkd's side: to-tag = parkd's tag, from-tag = the peer's.
    fn retrieve_by_replaces(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: Request, r: &crate::sip::Replaces) {
        let target = self.dialogs.parked_leg_named_by(r).and_then(|id| self.dialogs.get(id)).map(|leg| leg.call);
        if target.is_none() {
            // In a cluster, a call another node holds (its dialog from the claim, as this node's BLF showed it):
            // gated here like a local one, then fetched from the owner as a plain retrieve of its orbit.
            if let Some((lot, orbit)) = self.remote_named_by(r) {
                if !self.gate(now, txn, from, &req, lot, Action::Retrieve) {
                    return;
                }
                if !self.fetch_from_owner(now, txn, from, &req, lot, orbit) {
                    self.ep.refuse(now, txn, &req, 404, "Parked On Another Node");
                }
                return;
            }
        }
        // A call already taken (bridged) still names its lot: the request is gated there before it is refused.
        let lot = target.and_then(|call| self.parking.get(call).map(|c| c.lot).or_else(|| self.bridging.get(call).map(|b| b.lot)));
        if let Some(lot) = lot {
            if !self.gate(now, txn, from, &req, lot, Action::Retrieve) {
                return;
            }
        }
        match target {
            Some(call) if self.parking.get(call).is_some() => self.take_call(now, txn, from, req, call),
            _ => self.ep.refuse(now, txn, &req, 481, "Call/Transaction Does Not Exist"),
        }
    }

    fn take_call(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: Request, call: CallRef) {
        let Some(parked) = self.parking.get(call) else {
            return self.ep.refuse(now, txn, &req, 404, "Orbit Empty");
        };
        let (lot, orbit_name, dwell_ms) = (parked.lot, parked.orbit_name.clone(), super::events::dwell_ms(parked.parked_at, now));
        // A recall may be ringing: the retriever wins and the recall is cancelled.
        self.abandon_recall(now, call);
        let offer = match read_offer(&req) {
            Ok(o) => o,
            Err((status, why)) => return self.ep.refuse(now, txn, &req, status, why),
        };
        // Retrieves by Replaces and by the retrieve code come here without the check of `on_invite`.
        if let Some(why) = self.srtp_refusal(&req, &from, lot) {
            return self.ep.refuse(now, txn, &req, 488, why);
        }
        let Some(media_leg) = self.port_beside_parked(now, call) else {
            return self.ep.refuse(now, txn, &req, 503, "No Media Ports Available");
        };
        let identity = self.parked_identity(call);
        let leg = self.answer_new_leg(now, txn, from, &req, call, LegRole::Retriever, media_leg, offer, &orbit_name, None, |r| {
            if let Some(id) = &identity {
                r.common.push_header("P-Asserted-Identity", id.to_string());
            }
            r.common.push_header(PARK_ORBIT_HEADER, orbit_name.clone());
        });
        // The parked call leaves its orbit and becomes a bridge to the retriever.
        self.touch(call);
        if let Some(c) = self.parking.remove(call) {
            self.bridging.insert(Bridge { id: call, lot: c.lot, orbit_name: c.orbit_name.clone(), parked: c.parked, other: leg, media_mode: c.media_mode });
            self.orbit_changed(now, c.lot, c.orbit);
        }
        let by = req.common.from.uri.to_string();
        tracing::info!(orbit = %orbit_name, %by, "retrieved");
        self.ep.emit(ParkEvent::Retrieved {
            lot: self.parking.lot_name(lot),
            orbit: orbit_name,
            call_id: req.common.call_id.as_str().into(),
            by,
            dwell_ms,
        });
    }

    /// Creates the leg for `req` (a dialog-creating INVITE) and answers it 200 with SDP; `tag` is parkd's tag when
    /// chosen beforehand (a cluster park's claim carries it), `None` for a fresh one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer_new_leg(
        &mut self,
        now: Time,
        txn: ServerTxnId,
        from: Peer,
        req: &Request,
        call: CallRef,
        role: LegRole,
        media_leg: MediaLegId,
        offer: Option<RemoteSdp>,
        orbit_name: &OrbitNumber,
        tag: Option<String>,
        extra: impl FnOnce(&mut crate::sip::Response),
    ) -> LegId {
        let id = LegId(self.ep.next_id());
        let tag = tag.unwrap_or_else(|| self.ep.new_tag());
        let dialog = Dialog::as_uas(req, from, &tag);
        // The SDP names parkd's address in the family of the offer's (else of the signalling peer's) address.
        let media_peer = offer.as_ref().map_or(from.addr.ip(), |o| o.addr.ip());
        let local_sdp = LocalSdp { session_id: self.ep.rng().gen::<u32>() as u64, version: 1, ip: self.ep.media_ip_for(media_peer), port: media_leg.port() };
        let srtp = self.srtp_answer(req, &from, call);
        let rtcp_port = self.ports.rtcp_port(media_leg.port());
        let (media, body) = LegMedia::answering(media_leg, local_sdp, rtcp_port, offer.as_ref(), srtp);
        if media.srtp.is_some() {
            self.srtp_media(media_leg, media.srtp.as_deref(), 0);
        }
        self.rtcp_media(&media, (false, 0));
        let contact = self.ep.contact_for(&req.uri, from);
        let stimer = match super::dialogs::timer::answer_as_uas(req, &self.stimer) {
            super::dialogs::timer::UasAnswer::Agreed { se } => Some(se),
            _ => None,
        };
        let resp = self.ep.response(req, 200, None, Some(&tag), |r| {
            r.common.contact.push(contact);
            r.common.push_header("Allow", super::reply::ALLOW);
            r.common.push_header("Supported", super::inbound::SUPPORTED.join(", "));
            if let Some(se) = stimer {
                super::dialogs::timer::decorate_2xx(r, se);
            }
            extra(r);
            r.common.set_body("application/sdp", body);
        });
        if role == LegRole::Parked && self.journaling() {
            // Durable before acknowledged: the 200 waits for the park's journal group. No 100 Trying: a sync
            // takes milliseconds, and if parkd dies before the 200 goes out, the caller's retransmitted INVITE
            // (which a 100 would stop) is what the restored leg answers.
            self.journal.hold(super::persist::Held::Answer { leg: id, txn, resp: Box::new(resp) });
        } else {
            self.ep.txn.respond(now, txn, &resp);
        }
        self.touch(call);
        self.admission_unconfirmed(now, id, from);
        let state = LegState::Answered { invite: txn };
        self.dialogs.insert(Leg { id, call, role, state, dialog, source: from, media, orbit: orbit_name.clone(), uac_ack: None, timer: None });
        if let Some(se) = stimer {
            self.start_leg_timer(now, id, se, req);
        }
        id
    }
}

/// A per-call parking time from the park request: the Request-URI parameter `park-timeout=SECONDS` (it survives
/// a Refer-To such as `<sip:700@parkd;park-timeout=120>`) or the header `Park-Timeout: SECONDS`.
fn parking_time_override(req: &Request) -> Option<u64> {
    req.uri
        .params
        .value("park-timeout")
        .map(str::to_string)
        .or_else(|| req.common.header("Park-Timeout").map(str::to_string))
        .and_then(|v| v.trim().parse().ok())
}
