//! Session timers (RFC 4028) on parked and bridged legs: the flows around [`SessionTimer`] (plain data in the
//! leg, deadlines in the dialogs room's queue, journaled beside the call: `persist::stimers`).
//!
//! * **Asked by the phone** (INVITE, re-INVITE, UPDATE with `Session-Expires`): below `[server] session_min_se`
//!   → `422` with `Min-SE`; else the 2xx carries `Session-Expires;refresher=...` (and `Require: timer` when the
//!   phone refreshes, §9) and the leg's deadlines are (re-)armed: any refresh from the phone, a re-INVITE or an
//!   UPDATE, with or without SDP, counts.
//! * **parkd refreshes** (the refresher is parkd) at half the interval: UPDATE without SDP when the phone's
//!   `Allow` lists UPDATE, else a re-INVITE with parkd's current SDP (same session version: nothing changed,
//!   RFC 3264 §8). A 422 raises the interval to its `Min-SE` and refreshes again at once, a 405/501 to the UPDATE
//!   falls back to re-INVITE, a 491 retries after the RFC 3261 §14.1 back-off, a 408/481 ends the leg.
//! * **The session expires** (no refresh by `interval - min(32, interval/3)`): parkd ends the leg with a BYE
//!   (`Reason: SIP;cause=408;text="Session expired"`) exactly as if its phone had hung up: a parked call frees
//!   its orbit (`Abandoned` event, BLF), a bridged call hangs up the other leg (`Ended` event).
//! * **Calls parkd makes** (recalls, fallback calls, API unparks: `originate.rs`) offer `Supported: timer` and
//!   ask for `session_expires` seconds; the 2xx decides (no `Session-Expires` in it: no timer, §7.2).

use super::dialogs::timer::{self, SessionExpires, SessionTimer, UasAnswer};
use super::ids::LegId;
use super::{Core, Purpose};
use crate::sip::{Method, Request, Response};
use crate::time::Time;
use crate::txn::{ClientTxnId, ClientVerdict, ServerTxnId};
use rand::Rng;
use std::time::Duration;

/// RFC 3326 Reason on the BYE of a leg whose session expired.
pub(super) const SESSION_EXPIRED: &str = "SIP;cause=408;text=\"Session expired\"";

impl Core {
    /// RFC 4028 §9: the answer to `req`'s `Session-Expires`; a too-small interval is answered `422` here (true:
    /// refused, nothing more to do).
    pub(super) fn session_answer(&mut self, now: Time, txn: ServerTxnId, req: &Request) -> Result<UasAnswer, ()> {
        match timer::answer_as_uas(req, &self.stimer) {
            UasAnswer::TooSmall { min_se } => {
                tracing::info!(min_se, asked = ?req.common.header("Session-Expires"), "session interval too small: 422");
                self.ep.respond(now, txn, req, 422, Some("Session Interval Too Small"), None, |r| {
                    r.common.push_header("Min-SE", min_se.to_string());
                });
                Err(())
            }
            a => Ok(a),
        }
    }

    /// A new leg's 2xx agreed `se` with the phone (the UAC of `req`): its timer starts now.
    pub(super) fn start_leg_timer(&mut self, now: Time, leg_id: LegId, se: SessionExpires, req: &Request) {
        let peer_update = timer::allows(&req.common, "UPDATE");
        let Some(leg) = self.dialogs.get_mut(leg_id) else { return };
        leg.timer = Some(Box::new(SessionTimer::agreed(now, se.delta, se.refresher_uac == Some(false), peer_update)));
        let call = leg.call;
        tracing::debug!(interval = se.delta, parkd_refreshes = se.refresher_uac == Some(false), "session timer agreed");
        self.dialogs.arm_timer(leg_id);
        self.touch(call);
    }

    /// A re-INVITE or UPDATE from the phone of `leg_id` is answered 2xx: it refreshes the session (RFC 4028 §10).
    /// Returns the `Session-Expires` the 2xx carries, if any: the one agreed in this request, or, for a request
    /// without one in a dialog that has a timer, the timer kept with parkd as the refresher unless the phone
    /// supports timers and refreshed (then it stays the refresher).
    pub(super) fn refreshed_by_peer(&mut self, now: Time, leg_id: LegId, answer: UasAnswer, req: &Request) -> Option<SessionExpires> {
        let leg = self.dialogs.get_mut(leg_id)?;
        let peer_update = leg.timer.as_ref().map(|t| t.peer_update).unwrap_or(false) || timer::allows(&req.common, "UPDATE");
        let se = match answer {
            UasAnswer::Agreed { se } => se,
            _ => {
                let t = *leg.timer.as_deref()?;
                let phone = !t.parkd_refreshes && timer::supports(&req.common, "timer");
                SessionExpires { delta: t.interval, refresher_uac: Some(phone) }
            }
        };
        let parkd_refreshes = se.refresher_uac == Some(false);
        match &mut leg.timer {
            Some(t) => {
                t.peer_update = peer_update;
                t.refreshed(now, se.delta, parkd_refreshes);
            }
            None => leg.timer = Some(Box::new(SessionTimer::agreed(now, se.delta, parkd_refreshes, peer_update))),
        }
        let call = leg.call;
        self.dialogs.arm_timer(leg_id);
        self.touch(call);
        Some(se)
    }

    /// Fires the session-timer deadlines due at `now`: parkd's refreshes and the expiries.
    pub(super) fn session_timeouts(&mut self, now: Time) {
        while let Some(due) = self.dialogs.pop_due_timer(now) {
            let Some(leg_id) = due else { continue };
            let Some(t) = self.dialogs.get(leg_id).and_then(|l| l.timer.as_deref().copied()) else { continue };
            if t.expires_at <= now {
                self.expire_leg(now, leg_id);
            } else if t.refresh_at.is_some_and(|r| r <= now) {
                self.send_refresh(now, leg_id);
            }
        }
    }

    /// The session of `leg_id` expired without a refresh: BYE it as its phone would have hung up.
    fn expire_leg(&mut self, now: Time, leg_id: LegId) {
        let Some(leg) = self.dialogs.get(leg_id) else { return };
        let span = leg.span();
        let _enter = span.enter();
        tracing::info!(interval = leg.timer.as_ref().map(|t| t.interval), "session expired without a refresh; ending the leg");
        self.end_leg_with_reason(now, leg_id, Some(SESSION_EXPIRED.to_string()));
    }

    /// parkd's refresh of the session of `leg_id`: UPDATE when the phone allows it, else a re-INVITE with the
    /// SDP parkd last sent (same version).
    fn send_refresh(&mut self, now: Time, leg_id: LegId) {
        if self.invite_pending(leg_id) {
            // A direct-media re-INVITE is in flight: its 2xx refreshes (RFC 4028 §10 counts any re-INVITE); retry
            // shortly otherwise.
            if let Some(t) = self.dialogs.get_mut(leg_id).and_then(|l| l.timer.as_mut()) {
                t.refresh_at = Some(now + Duration::from_secs(2));
            }
            self.dialogs.arm_timer(leg_id);
            return;
        }
        let body = self.refresh_body(leg_id);
        let Some(leg) = self.dialogs.get_mut(leg_id) else { return };
        let Some(t) = leg.timer.as_mut() else { return };
        let method = t.refresh_method();
        let se = t.refresh_header();
        t.in_flight = true;
        t.refresh_at = None;
        let call = leg.call;
        let mut req = self.ep.request_in(&mut leg.dialog, method.clone());
        req.common.push_header("Session-Expires", se);
        req.common.push_header("Min-SE", self.stimer.min_se.max(timer::RFC_MIN_SE).to_string());
        req.common.push_header("Supported", super::inbound::SUPPORTED.join(", "));
        req.common.push_header("Allow", super::reply::ALLOW);
        if method == Method::Invite {
            req.common.set_body("application/sdp", body);
        }
        let hop = leg.dialog.next_hop;
        let span = leg.span();
        let _enter = span.enter();
        tracing::debug!(%method, "session refresh");
        self.ep.send(now, hop, &req, Purpose::SessionRefresh(leg_id));
        self.dialogs.arm_timer(leg_id);
        self.touch(call);
    }

    /// The SDP of a refresh re-INVITE on `leg_id`: what parkd last sent in that dialog.
    fn refresh_body(&self, leg_id: LegId) -> bytes::Bytes {
        if let Some(body) = self.direct_body(leg_id) {
            return body;
        }
        self.dialogs.get(leg_id).map(|l| l.media.current_body()).unwrap_or_default()
    }

    /// The answer to parkd's refresh in `leg_id`.
    pub(super) fn on_refresh_response(&mut self, now: Time, leg_id: LegId, txn: ClientTxnId, verdict: ClientVerdict) {
        let ClientVerdict::Final(resp) = verdict else { return };
        let is_invite = resp.common.cseq.method == Method::Invite;
        if resp.is_success() {
            if is_invite {
                self.ack_reinvite(leg_id, &resp);
            }
            let in_flight = self.dialogs.get(leg_id).and_then(|l| l.timer.as_deref().copied()).is_some_and(|t| t.in_flight);
            if !in_flight {
                // A retransmitted 2xx: re-ACKed above, nothing else.
                return;
            }
            if !is_invite {
                self.ep.finish(txn);
            }
            if is_invite && !resp.common.body.is_empty() {
                self.apply_remote_sdp(now, leg_id, &resp.common.body);
            }
            return self.refresh_answered(now, leg_id, &resp);
        }
        self.ep.finish(txn);
        match resp.status {
            422 => {
                let min = timer::min_se_of(&resp.common).unwrap_or(0);
                if let Some(t) = self.dialogs.get_mut(leg_id).and_then(|l| l.timer.as_mut()) {
                    t.interval = t.interval.max(min);
                    t.in_flight = false;
                    t.refresh_at = Some(now);
                }
                self.dialogs.arm_timer(leg_id);
                self.send_refresh(now, leg_id);
            }
            405 | 501 if !is_invite => {
                if let Some(t) = self.dialogs.get_mut(leg_id).and_then(|l| l.timer.as_mut()) {
                    t.peer_update = false;
                    t.in_flight = false;
                }
                self.send_refresh(now, leg_id);
            }
            491 => {
                let wait = self.glare_backoff(leg_id);
                if let Some(t) = self.dialogs.get_mut(leg_id).and_then(|l| l.timer.as_mut()) {
                    t.in_flight = false;
                    t.refresh_at = Some(now + wait);
                }
                self.dialogs.arm_timer(leg_id);
            }
            s => self.on_refresh_failed(now, leg_id, s),
        }
    }

    /// parkd's refresh failed with `status` (or timed out: 408). RFC 4028 §10: 408 and 481 end the session at
    /// once; otherwise it ends when it expires (no further refresh).
    pub(super) fn on_refresh_failed(&mut self, now: Time, leg_id: LegId, status: u16) {
        if status == 408 || status == 481 {
            tracing::info!(status, "session refresh failed; ending the leg");
            return self.end_leg_with_reason(now, leg_id, Some(SESSION_EXPIRED.to_string()));
        }
        if let Some(t) = self.dialogs.get_mut(leg_id).and_then(|l| l.timer.as_mut()) {
            tracing::info!(status, "session refresh refused; the session ends when it expires");
            t.in_flight = false;
            t.refresh_at = None;
        }
        self.dialogs.arm_timer(leg_id);
    }

    /// parkd's refresh got its 2xx: the interval and refresher it names (none: parkd keeps refreshing with the
    /// same interval, the peer not knowing about timers).
    fn refresh_answered(&mut self, now: Time, leg_id: LegId, resp: &Response) {
        let Some(leg) = self.dialogs.get_mut(leg_id) else { return };
        let Some(t) = leg.timer.as_mut() else { return };
        let (interval, parkd_refreshes) = match SessionExpires::of(&resp.common) {
            Some(se) => (se.delta.max(timer::RFC_MIN_SE), se.refresher_uac.unwrap_or(true)),
            None => (t.interval, true),
        };
        if timer::allows(&resp.common, "UPDATE") {
            t.peer_update = true;
        }
        t.refreshed(now, interval, parkd_refreshes);
        let call = leg.call;
        self.dialogs.arm_timer(leg_id);
        self.touch(call);
    }

    /// ACKs a 2xx to a re-INVITE parkd sent in `leg_id`'s dialog (RFC 3261 §13.2.2.4), also when retransmitted.
    pub(super) fn ack_reinvite(&mut self, leg_id: LegId, resp: &Response) {
        let Some(leg) = self.dialogs.get(leg_id) else { return };
        let hop = leg.dialog.next_hop;
        let branch = self.ep.new_branch();
        let contact = self.ep.contact_to(hop);
        let ack = leg.dialog.ack(resp.common.cseq.seq, self.ep.sent_by_to(hop), &branch, &contact);
        self.ep.send_ack(hop, ack.encode());
    }

    /// RFC 3261 §14.1: how long to wait before sending a re-INVITE again after a 491 in `leg_id`'s dialog — 2.1 to
    /// 4 s when parkd chose the Call-ID (a call it made), 0 to 2 s otherwise, in 10 ms steps, from the core's
    /// seeded RNG.
    pub(super) fn glare_backoff(&mut self, leg_id: LegId) -> Duration {
        let owns = self.dialogs.get(leg_id).is_some_and(|l| l.uac_ack.is_some());
        let ms = if owns { self.ep.rng().gen_range(210..=400u64) * 10 } else { self.ep.rng().gen_range(0..=200u64) * 10 };
        Duration::from_millis(ms)
    }
}
