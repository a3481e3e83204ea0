//! Recall ("park callback", Asterisk `comebacktoorigin`, CUCM park reversion): when a call's parking time runs
//! out, parkd INVITEs the parker; on answer the two are bridged, otherwise the lot's fallback applies.
//!
//! One round = ring the parker (when known), then, with `recall_fallback = "fallback_uri"`, ring that URI.
//! A failed round reparks the call for another parking time, up to `recall_rounds` rounds; `hangup` ends it at
//! once. `max_park_time` ends any call. The parked party hears music throughout and is never dropped silently:
//! every end is a BYE with a Reason, logged and reported as an event.
//!
//! Core's routing between two rooms: the parking room decides (whom a round rings, repark or end: see
//! `parking::Parking::start_round`), the bridging room holds the outgoing call while it rings and the ones
//! parkd gave up on (`bridging::Recall`, `bridging::Orphan`).

use super::bridging::{Bridge, Orphan, Recall};
use super::dialogs::{Leg, LegMedia, LegRole, LegState};
use super::events::RecallTarget;
use super::ids::{CallRef, LegId};
use super::originate::OriginateSpec;
use super::parking::CallTimer;
use super::{Core, ParkEvent, Purpose};
use crate::dialog::Dialog;
use crate::sip::{Method, Response, Uri};
use crate::time::Time;
use crate::txn::{ClientTxnId, ClientVerdict};
use std::time::Duration;

/// RFC 7462 alert URN for a call-back recall; phones map it (or the lot's extra Alert-Info) to a ring.
pub const RECALL_ALERT_URN: &str = "<urn:alert:service:recall:callback>";
/// parkd's machine-readable recall marker (documented in the README).
pub const PARK_RECALL_HEADER: &str = "Park-Recall";
/// RFC 3326 Reason for a recall CANCEL / late-answer BYE when someone else took the call.
const COMPLETED_ELSEWHERE: &str = "SIP;cause=200;text=\"Call completed elsewhere\"";
/// RFC 3326 Reason for the BYE ending a recall whose answer to parkd's SRTP offer cannot be used (see `core::srtp`).
const NOT_ACCEPTABLE: &str = "SIP;cause=488;text=\"SRTP answer not acceptable\"";

impl Core {
    /// Fires the call-level deadlines due at `now` in the order of time, whichever room holds them: a recall
    /// round, the maximum park time, a keepalive (parking room), a recall that rang long enough (bridging room).
    pub(super) fn call_timeouts(&mut self, now: Time) {
        loop {
            let parking = self.parking.next_due(now);
            let ring = self.bridging.next_due(now);
            // The same order one queue of (time, call, kind) would give, recall rings ranking after recalls.
            let ring_first = match (parking, ring) {
                (Some((pt, pc, pk)), Some((rt, rc))) => (rt, rc, 1) < (pt, pc, if pk == CallTimer::Recall { 0 } else { 2 }),
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if ring_first {
                let Some(due) = self.bridging.pop_due(now) else { break };
                if let Some(call) = due {
                    self.touch(call);
                    let target = self.bridging.ringing(call).map(|r| r.target).unwrap_or(RecallTarget::Parker);
                    self.stop_recall(now, call);
                    self.recall_failed(now, call, target, 408);
                }
                continue;
            }
            let bridging = &self.bridging;
            let Some(due) = self.parking.pop_due(now, |c| bridging.ringing(c).is_some()) else { break };
            if let Some((call, _)) = due {
                self.touch(call);
            }
            match due {
                Some((call, CallTimer::Recall)) => {
                    let targets = self.parking.start_round(call);
                    if !targets.into_iter().any(|t| self.start_recall(now, call, t)) {
                        self.round_failed(now, call);
                    }
                }
                Some((call, CallTimer::MaxPark)) => self.end_parked_call(now, call, "Maximum Park Time Reached"),
                Some((call, CallTimer::Keepalive)) => self.send_keepalive(now, call),
                None => {}
            }
        }
    }

    /// Sends a recall INVITE to the parker or the fallback URI. False when it cannot be sent (no route, no port).
    pub(super) fn start_recall(&mut self, now: Time, call: CallRef, target: RecallTarget) -> bool {
        let Some(c) = self.parking.get(call) else { return false };
        let Some(lot) = self.parking.cfg(c.lot) else { return false };
        let target_uri = match target {
            RecallTarget::Parker => c.parker.as_ref().map(|p| p.uri.without_headers()),
            RecallTarget::FallbackUri => lot.fallback_uri.as_deref().and_then(|u| crate::sip::parse_uri(u).ok()),
            RecallTarget::ApiUnpark | RecallTarget::DtmfKey => None,
        };
        let Some(mut target_uri) = target_uri else { return false };
        target_uri.params.remove("tag");
        let ring = Duration::from_secs(lot.recall_ring_time.max(1));
        let (lot_name, orbit, round) = (lot.name.clone(), c.orbit_name.clone(), c.rounds);
        let who = self.parked_identity(call).map(|p| p.label()).unwrap_or_else(|| "caller".into());
        let mut headers = vec![("Alert-Info", RECALL_ALERT_URN.to_string())];
        if let Some(extra) = lot.recall_alert_info.clone() {
            headers.push(("Alert-Info", extra));
        }
        // RFC 7044 History-Info: the orbit was "called" and is now retargeted back, with the cause as a Reason.
        let mut orbit_uri = Uri::from_addr(Some(&orbit), self.ep.local_addr);
        orbit_uri.headers.push(("Reason".into(), "SIP;cause=408;text=\"park callback\"".into()));
        headers.push(("History-Info", format!("<{orbit_uri}>;index=1")));
        headers.push(("History-Info", format!("<{target_uri}>;index=1.1")));
        let kind = if target == RecallTarget::Parker { "callback" } else { "fallback" };
        headers.push((PARK_RECALL_HEADER, format!("{kind};orbit={orbit};lot={lot_name};round={round}")));
        let spec = OriginateSpec { to: target_uri.clone(), from_display: format!("Parked {orbit}: {who}"), headers, ring, target };
        if self.originate(now, call, spec).is_err() {
            return false;
        }
        tracing::info!(%orbit, to = %target_uri, ?target, round, "recall started");
        self.ep.emit(ParkEvent::RecallStarted { orbit, to: target_uri.to_string(), target, round });
        true
    }

    /// A response to a recall INVITE.
    pub(super) fn on_recall_response(&mut self, now: Time, call: CallRef, txn: ClientTxnId, verdict: ClientVerdict) {
        let active = self.bridging.ringing(call).is_some_and(|r| r.txn == txn);
        if !active {
            return self.on_orphan_response(now, txn, verdict);
        }
        match verdict {
            ClientVerdict::Provisional(_) => {
                if let Some(r) = self.bridging.ringing_mut(call) {
                    r.provisional = true;
                }
            }
            ClientVerdict::Final(resp) if resp.is_success() => self.recall_answered(now, call, txn, resp),
            ClientVerdict::Final(resp) => {
                self.ep.finish(txn);
                let Some(r) = self.bridging.stop_ringing(call) else { return };
                self.ports.give_back(r.media_leg);
                if let Some(spec) = r.plain_retry.filter(|_| resp.status == 488) {
                    // The SRTP offer refused under `srtp = "optional"`: once more with plain RTP.
                    tracing::info!(to = %r.invite.uri, "SRTP offer refused (488); calling again with plain RTP");
                    if self.originate_as(now, call, spec, true).is_ok() {
                        return;
                    }
                }
                self.recall_failed(now, call, r.target, resp.status);
            }
        }
    }

    /// The recall INVITE timed out (Timer B) or could not be sent.
    pub(super) fn on_recall_timeout(&mut self, now: Time, call: CallRef, txn: ClientTxnId) {
        self.ep.finish(txn);
        self.bridging.take_orphan(txn);
        if self.bridging.ringing(call).is_some_and(|r| r.txn == txn) {
            if let Some(r) = self.bridging.stop_ringing(call) {
                self.ports.give_back(r.media_leg);
                self.recall_failed(now, call, r.target, 408);
            }
        }
    }

    fn recall_answered(&mut self, now: Time, call: CallRef, txn: ClientTxnId, resp: Response) {
        let Some(r) = self.bridging.stop_ringing(call) else { return };
        let srtp = match r.srtp.as_ref().map(|offered| offered.answered(&resp.common.body)) {
            None => None,
            Some(Ok(srtp)) => srtp,
            Some(Err(why)) => {
                // Not a usable answer to the SRTP offer: ACK, BYE, and the attempt failed (fallback logic).
                tracing::warn!(to = %r.invite.uri, reason = why, "recall answer refused");
                self.ep.finish(txn);
                self.end_answered(now, &r.invite, r.next_hop, &resp, Some(NOT_ACCEPTABLE));
                self.ports.give_back(r.media_leg);
                return self.recall_failed(now, call, r.target, 488);
            }
        };
        let mut dialog = Dialog::as_uac(&r.invite.shape(Method::Invite), &resp, r.next_hop);
        dialog.local_seq = r.invite.cseq;
        let branch = self.ep.new_branch();
        let contact = self.ep.contact_to(dialog.next_hop);
        let ack = dialog.ack(r.invite.cseq, self.ep.sent_by_to(dialog.next_hop), &branch, &contact).encode();
        self.ep.send_ack(dialog.next_hop, ack.clone());
        let mut media = LegMedia::answered(r.media_leg, r.local_sdp, self.ports.rtcp_port(r.media_leg.port()), &resp.common.body);
        media.srtp = srtp.map(Box::new);
        if media.srtp.is_some() {
            // The keys before the bridge's media commands (as for an inbound leg).
            self.srtp_media(media.media_leg, media.srtp.as_deref(), 0);
        }
        let id = LegId(self.ep.next_id());
        // The parked call leaves its orbit and becomes a bridge to whoever answered.
        let Some(parked) = self.parking.remove(call) else { return };
        let orbit = parked.orbit_name.clone();
        let freed = (parked.lot, parked.orbit);
        self.bridging.insert(Bridge { id: call, lot: parked.lot, orbit_name: orbit.clone(), parked: parked.parked, other: id, media_mode: parked.media_mode });
        self.ep.repurpose(txn, Purpose::RecallAnswered { leg: id });
        let to = r.invite.uri.to_string();
        let uac_ack = Some(Box::new((r.next_hop, ack.to_vec())));
        let timer = if self.stimer.enabled { super::dialogs::timer::from_uac_2xx(now, &resp).map(Box::new) } else { None };
        let leg = Leg { id, call, role: LegRole::Recall, state: LegState::Confirmed, dialog, source: r.next_hop, media, orbit: orbit.clone(), uac_ack, timer };
        self.dialogs.insert(leg);
        self.dialogs.arm_timer(id);
        self.rtcp_media_of(id);
        tracing::info!(%orbit, %to, "recall answered; bridging");
        self.ep.emit(ParkEvent::RecallAnswered { orbit, by: to, target: r.target, dwell_ms: super::events::dwell_ms(parked.parked_at, now) });
        self.orbit_changed(now, freed.0, freed.1);
        self.sync_media(now, call);
    }

    /// A recall ended without an answer: ring the fallback URI next, or end the round.
    fn recall_failed(&mut self, now: Time, call: CallRef, target: RecallTarget, status: u16) {
        if target.is_unpark() {
            return self.unpark_failed(now, call, target, status);
        }
        let Some(c) = self.parking.get(call) else { return };
        let (orbit, lot, o) = (c.orbit_name.clone(), c.lot, c.orbit);
        self.orbit_changed(now, lot, o);
        tracing::info!(%orbit, status, ?target, "recall not answered");
        self.ep.emit(ParkEvent::RecallFailed { orbit, status, target });
        if let Some(next) = self.parking.after_unanswered(call, target) {
            if self.start_recall(now, call, next) {
                return;
            }
        }
        self.round_failed(now, call);
    }

    /// Nobody took the call this round: park again for another period, or end the call.
    pub(super) fn round_failed(&mut self, now: Time, call: CallRef) {
        if !self.parking.repark(now, call) {
            return self.end_parked_call(now, call, "Recall Not Answered");
        }
        let Some(c) = self.parking.get(call) else { return };
        let (orbit, round) = (c.orbit_name.clone(), c.rounds);
        tracing::info!(%orbit, round, "reparked until the next recall");
        self.ep.emit(ParkEvent::Reparked { orbit, round });
    }

    /// Gives up on the ringing recall of `call` (if any) because someone else took the call: CANCEL it (with
    /// "Call completed elsewhere") now or as soon as it is allowed.
    pub(super) fn abandon_recall(&mut self, now: Time, call: CallRef) {
        self.touch(call);
        if let Some(r) = self.bridging.stop_ringing(call) {
            self.cancel_recall(now, r, true);
        }
    }

    /// Gives up on the ringing recall of `call` (if any) because it rang too long or the call ended: CANCEL it
    /// without claiming the call was completed elsewhere.
    pub(super) fn stop_recall(&mut self, now: Time, call: CallRef) {
        self.touch(call);
        if let Some(r) = self.bridging.stop_ringing(call) {
            self.cancel_recall(now, r, false);
        }
    }

    /// Releases a recall's port and CANCELs its INVITE now, or once a provisional response allows it.
    fn cancel_recall(&mut self, now: Time, r: Recall, completed_elsewhere: bool) {
        self.ports.give_back(r.media_leg);
        let mut orphan = Orphan { invite: r.invite, next_hop: r.next_hop, cancel_sent: false, completed_elsewhere };
        if r.provisional {
            self.send_cancel(now, &mut orphan);
        }
        self.ep.repurpose(r.txn, Purpose::OrphanRecall);
        self.bridging.orphan(r.txn, orphan);
    }

    /// CANCEL for a recall INVITE (RFC 3261 §9.1): same Request-URI, Call-ID, From, To, CSeq number, top Via
    /// and Route as the INVITE.
    fn send_cancel(&mut self, now: Time, orphan: &mut Orphan) {
        let mut cancel = orphan.invite.shape(Method::Cancel);
        if orphan.completed_elsewhere {
            cancel.common.push_header("Reason", COMPLETED_ELSEWHERE);
        }
        self.ep.send(now, orphan.next_hop, &cancel, Purpose::Cancel);
        orphan.cancel_sent = true;
    }

    pub(super) fn on_orphan_response(&mut self, now: Time, txn: ClientTxnId, verdict: ClientVerdict) {
        let Some(mut orphan) = self.bridging.take_orphan(txn) else { return };
        match verdict {
            ClientVerdict::Provisional(_) => {
                if !orphan.cancel_sent {
                    self.send_cancel(now, &mut orphan);
                }
                self.bridging.orphan(txn, orphan);
            }
            ClientVerdict::Final(resp) if resp.is_success() => {
                // Answered after parkd gave up (e.g. a retrieve won the race): ACK, then BYE (RFC 3261 §15).
                self.end_answered(now, &orphan.invite, orphan.next_hop, &resp, orphan.completed_elsewhere.then_some(COMPLETED_ELSEWHERE));
                self.ep.finish(txn);
            }
            ClientVerdict::Final(_) => {
                self.ep.finish(txn);
            }
        }
    }

    /// ACKs a 2xx to `invite` parkd does not want (any more), then ends the dialog with a BYE (RFC 3261 §15),
    /// with `reason` as its `Reason` header.
    fn end_answered(&mut self, now: Time, invite: &super::bridging::OutgoingInvite, next_hop: crate::sip::Peer, resp: &Response, reason: Option<&str>) {
        let mut dialog = Dialog::as_uac(&invite.shape(Method::Invite), resp, next_hop);
        let contact = self.ep.contact_to(dialog.next_hop);
        let branch = self.ep.new_branch();
        let local = self.ep.sent_by_to(dialog.next_hop);
        let ack = dialog.ack(invite.cseq, local, &branch, &contact);
        self.ep.send_ack(dialog.next_hop, ack.encode());
        dialog.local_seq = invite.cseq;
        let branch = self.ep.new_branch();
        let mut bye = dialog.request(Method::Bye, local, &branch, &contact);
        if let Some(reason) = reason {
            bye.common.push_header("Reason", reason);
        }
        self.ep.send(now, dialog.next_hop, &bye, Purpose::Bye);
    }

    /// Ends a parked call from parkd's side: BYE to the parked party with a Reason, orbit freed, recall cancelled.
    pub(super) fn end_parked_call(&mut self, now: Time, call: CallRef, why: &str) {
        self.touch(call);
        self.stop_recall(now, call);
        let Some(c) = self.parking.remove(call) else { return };
        self.orbit_changed(now, c.lot, c.orbit);
        tracing::info!(orbit = %c.orbit_name, reason = why, "ending parked call");
        self.ep.emit(ParkEvent::TimedOut { orbit: c.orbit_name.clone(), reason: why.to_string(), dwell_ms: super::events::dwell_ms(c.parked_at, now) });
        self.hangup_leg_with_reason(now, c.parked, Some(format!("SIP;cause=408;text=\"{why}\"")));
    }
}
