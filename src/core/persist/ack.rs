//! Durable before acknowledged: what a park held back goes out when its group is durable, or is replaced by a
//! refusal (and the park undone) when the group could not be written.

use super::room::{Held, ReferDone};
use crate::core::parking::MediaMode;
use crate::core::Core;
use crate::time::Time;

/// The `Reason-Phrase` of a park refused because its records could not be made durable.
pub const NOT_STORED: &str = "Park Could Not Be Stored";

/// How long a park's `200 OK` (or a REFER's final NOTIFY) waits for its journal group before it is refused as if
/// the write had failed: a store that hangs (a dead disk, a stuck network filesystem) then costs new parks a `500`
/// after this long instead of leaving each one waiting until its caller gives up (Timer B, 32 s). Well above a
/// slow sync (this VM's disk stalls up to ~700 ms).
pub const JOURNAL_STALL: std::time::Duration = std::time::Duration::from_secs(3);

impl Core {
    /// Held groups whose store has not answered within [`JOURNAL_STALL`] are refused as failed writes. A late
    /// durable report for one of them finds nothing held and changes nothing; the deletes the refusal writes
    /// follow its records in the journal, so a restart does not bring the refused park back.
    pub(in crate::core) fn stalled_journal_timeouts(&mut self, now: Time) {
        while let Some(token) = self.journal.pop_stalled(now) {
            let held = self.journal.gate.fail(token);
            if held.is_empty() {
                continue;
            }
            tracing::error!(token = token.0, held = held.len(), stall_ms = JOURNAL_STALL.as_millis() as u64, "journal store not answering; refusing what waited for it");
            self.release_held(now, held, false);
        }
    }

    /// Lets out (`ok`) or refuses in their place (`!ok`) the outputs held for one durable group.
    pub(super) fn release_held(&mut self, now: Time, held: Vec<Held>, ok: bool) {
        // A park undone (its write failed, or it was CANCELled meanwhile) is not reported as parked.
        let mut undone = false;
        for h in held {
            match h {
                Held::Answer { leg, txn, resp } => undone |= !self.release_answer(now, leg, txn, &resp, ok),
                Held::Event(ev) if ok && !undone => self.ep.emit(ev),
                Held::Event(_) => {}
                Held::ReferDone(done) if ok => {
                    let frag = format!("SIP/2.0 200 OK\r\nPark-Orbit: {}\r\n", done.orbit);
                    self.notify_refer(now, done.referrer, done.refer_cseq, &frag, true);
                }
                Held::ReferDone(done) => self.undo_refer(now, *done),
            }
        }
    }

    /// The park's `200 OK` goes now; or, when its records failed (or the INVITE was CANCELled meanwhile and
    /// answered 487), the park is undone: `500` (if still unanswered), orbit freed, leg forgotten.
    /// True when the 200 went out.
    fn release_answer(&mut self, now: Time, leg: crate::core::LegId, txn: crate::txn::ServerTxnId, resp: &crate::sip::Response, ok: bool) -> bool {
        let unanswered = self.ep.txn.awaiting_final(txn);
        if ok && unanswered && self.dialogs.get(leg).is_some() {
            self.ep.txn.respond(now, txn, resp);
            return true;
        }
        if unanswered {
            if let Some(req) = self.ep.txn.server_request(txn).cloned() {
                self.ep.respond(now, txn, &req, 500, Some(NOT_STORED), None, |r| r.common.push_header("Retry-After", "5"));
            }
        }
        tracing::warn!(ok, unanswered, "park not acknowledged (journal write failed or INVITE cancelled); undoing it");
        self.touch_leg(leg);
        let Some((call, call_id)) = self.dialogs.get(leg).map(|l| (l.call, l.dialog.call_id.clone())) else { return false };
        if self.parking.get(call).is_none_or(|c| c.parked != leg) {
            // Taken meanwhile (a retrieve in the milliseconds of the sync): ends like a hang-up.
            self.end_leg(now, leg, false);
            return false;
        }
        self.stop_recall(now, call);
        if let Some(c) = self.parking.remove(call) {
            self.orbit_changed(now, c.lot, c.orbit);
            let (status, reason) = if ok { (487, "Request Terminated") } else { (500, NOT_STORED) };
            self.ep.emit(crate::core::ParkEvent::Refused { number: c.orbit_name.to_string(), status, reason: reason.into(), call_id });
        }
        self.forget_leg(leg);
        false
    }

    /// A REFER's re-park whose records failed: the call goes back into its bridge (relaying again) and the
    /// referrer's NOTIFY says the transfer failed, so its phone keeps the call. If the bridge cannot be put
    /// back (a leg is gone), the re-parked call stays.
    fn undo_refer(&mut self, now: Time, d: ReferDone) {
        let other = d.old.across(d.kept);
        let legs_there = self.dialogs.get(d.kept).is_some() && self.dialogs.get(other).is_some();
        let still_parked = self.parking.get(d.new_call).is_some_and(|c| c.parked == d.kept);
        if legs_there && still_parked {
            self.stop_recall(now, d.new_call);
            if let Some(c) = self.parking.remove(d.new_call) {
                self.orbit_changed(now, c.lot, c.orbit);
            }
            if let Some(leg) = self.dialogs.get_mut(d.kept) {
                leg.call = d.old.id;
                leg.role = d.kept_role;
                leg.orbit = d.kept_orbit.clone();
            }
            let id = d.old.id;
            self.bridging.insert(crate::core::bridging::Bridge { media_mode: MediaMode::None, ..d.old });
            self.touch(d.new_call);
            self.touch(id);
            self.sync_media(now, id);
            tracing::warn!(orbit = %d.orbit, "REFER re-park not stored; the call is bridged again");
        } else {
            tracing::warn!(orbit = %d.orbit, "REFER re-park not stored and its bridge is gone; the call stays parked");
        }
        self.notify_refer(now, d.referrer, d.refer_cseq, &format!("SIP/2.0 500 {NOT_STORED}\r\n"), true);
    }

    /// Touches the call leg `leg` belongs to.
    pub(in crate::core) fn touch_leg(&mut self, leg: crate::core::LegId) {
        if let Some(call) = self.dialogs.get(leg).map(|l| l.call) {
            self.touch(call);
        }
    }
}
