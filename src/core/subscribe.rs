//! Core's routing for BLF: a new SUBSCRIBE passes the checks only `Core` can make (the lot's access lists,
//! digest authentication, the source's cap on subscriptions), then the BLF room takes it; the admission hold
//! a subscription stands for follows what the room reports.
//!
//! The order of the checks is what a phone sees: Event (489 / 400), the number (404, or a challenge for an
//! unknown number when a lot authenticates), the lot's `allow_subscribe` (403), digest (401), Accept (406),
//! Contact (400), Expires (423 / 400), then the source's limit (503 / silence).

use super::admission::{Action, Hold, Reason};
use super::blf::{accepts_dialog_info, eventlist, check_event, granted_expires, NewSubscription, SubId, Watched, MIN_EXPIRES};
use super::orbit_view::Orbits;
use super::reply::ALLOW_EVENTS;
use super::Core;
use crate::park::dialog_info::DIALOG_INFO_CONTENT_TYPE;
use crate::park::lot::Dialed;
use crate::sip::{Peer, Request};
use crate::time::Time;
use crate::txn::{ClientTxnId, ClientVerdict, ServerTxnId};

impl Core {
    /// A SUBSCRIBE outside any dialog: checked here, then created by the BLF room (200, NOTIFY).
    pub(super) fn on_subscribe(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: Request) {
        let event_id = match check_event(&req) {
            Ok(id) => id,
            Err((status, why)) => {
                return self.ep.respond(now, txn, &req, status, Some(why), None, |r| r.common.push_header("Allow-Events", ALLOW_EVENTS));
            }
        };
        let Some((lot, dialed)) = self.lookup_request(&req) else {
            if !self.authorized_for_unknown_number(now, txn, from, &req) {
                return;
            }
            return self.ep.respond(now, txn, &req, 404, None, None, |_| {});
        };
        if let Err(e) = self.access(lot, Action::Subscribe, from) {
            self.admission.refused(now, from.addr.ip(), Reason::Acl);
            return self.ep.respond(now, txn, &req, 403, Some(e.reason()), None, |_| {});
        }
        if !self.authorized(now, txn, from, &req, lot, Action::Subscribe) {
            return;
        }
        if !accepts_dialog_info(&req) && !eventlist::wants_list(&req) {
            return self.ep.respond(now, txn, &req, 406, Some("Not Acceptable"), None, |r| r.common.push_header("Accept", DIALOG_INFO_CONTENT_TYPE));
        }
        if req.common.contact.is_empty() {
            return self.ep.respond(now, txn, &req, 400, Some("Missing Contact Header"), None, |_| {});
        }
        let expires = match granted_expires(&req) {
            Ok(e) => e,
            Err((status, why)) => {
                return self.ep.respond(now, txn, &req, status, Some(why), None, |r| r.common.push_header("Min-Expires", MIN_EXPIRES.to_string()));
            }
        };
        if expires > 0 {
            let verdict = self.admission.admit_subscription(now, from.addr.ip());
            if !self.obey(now, txn, &req, verdict) {
                return;
            }
        }
        let watched = match dialed {
            Dialed::Orbit(i) => Watched::Orbit(i),
            Dialed::ParkCode | Dialed::RetrieveCode => Watched::Lot,
        };
        // RFC 4662: a whole lot as a resource list when the SUBSCRIBE asks for one and the lot is small enough.
        let list = match watched {
            Watched::Lot if eventlist::wants_list(&req) => self.parking.lot(lot).map(|l| l.capacity()).filter(|&n| n <= eventlist::MAX_LIST_ORBITS),
            _ => None,
        };
        let new = NewSubscription { lot, watched, event_id, expires, list };
        let orbits = Orbits { parking: &self.parking, dialogs: &self.dialogs, bridging: &self.bridging, remote: self.cluster.as_ref().map(|c| c.room.view()) };
        let id = self.blf.subscribe(&mut self.ep, now, txn, from, &req, new, &orbits);
        // A fetch is already ending; its source holds it until the final NOTIFY is answered, as any other.
        self.admission.hold(now, Hold::Subscription(id), from.addr.ip());
    }

    /// A request inside subscription `id`'s dialog.
    pub(super) fn on_subscription_request(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: Request, id: SubId) {
        let orbits = Orbits { parking: &self.parking, dialogs: &self.dialogs, bridging: &self.bridging, remote: self.cluster.as_ref().map(|c| c.room.view()) };
        self.blf.on_request(&mut self.ep, now, txn, from, &req, id, &orbits);
    }

    /// A response to a NOTIFY of subscription `id`.
    pub(super) fn on_notify_response(&mut self, now: Time, id: SubId, txn: ClientTxnId, verdict: ClientVerdict) {
        let orbits = Orbits { parking: &self.parking, dialogs: &self.dialogs, bridging: &self.bridging, remote: self.cluster.as_ref().map(|c| c.room.view()) };
        if let Some(gone) = self.blf.on_notify_response(&mut self.ep, now, id, txn, verdict, &orbits) {
            self.admission.release(Hold::Subscription(gone));
        }
    }

    /// A NOTIFY of subscription `id` timed out.
    pub(super) fn on_notify_timeout(&mut self, id: SubId, txn: ClientTxnId) {
        if let Some(gone) = self.blf.on_notify_timeout(id, txn) {
            self.admission.release(Hold::Subscription(gone));
        }
    }
}
