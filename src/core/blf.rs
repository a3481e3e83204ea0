//! BLF: `SUBSCRIBE` / `NOTIFY` for the `dialog` event package (RFC 6665, RFC 4235) on orbits and park codes.
//!
//! * `SUBSCRIBE sip:701@..` with `Event: dialog` watches one orbit; to the lot's park code (`700`) it watches
//!   the whole lot (one document listing every occupied orbit's dialog).
//! * The 200 carries the granted `Expires`: the request's value capped at [`MAX_EXPIRES`], [`DEFAULT_EXPIRES`]
//!   when absent, `423` with `Min-Expires` below [`MIN_EXPIRES`]. `Expires: 0` is a fetch (initial) or an
//!   unsubscribe (refresh): one NOTIFY with the state and `Subscription-State: terminated;reason=timeout`.
//! * A NOTIFY is sent at once (RFC 6665 §4.2.2, also after every refresh) and whenever a watched orbit changes.
//!   At most one NOTIFY per subscription is in flight (RFC 6665 §4.2.1.2 ordering): a change meanwhile only
//!   marks the subscription dirty, and the *latest* state is sent when the pending NOTIFY is answered. The
//!   body's `version` increments with every NOTIFY of a subscription, starting at 0.
//! * A subscription ends when it expires (a final NOTIFY, `reason=timeout`), on `Expires: 0`, or when a NOTIFY
//!   fails (481, any other non-2xx final, or a transaction timeout: RFC 6665 §4.2.2), in which case no
//!   further NOTIFY is sent.
//!
//! Costs: watchers are indexed by (lot, orbit) and (lot, whole lot), so an orbit change touches only the
//! subscriptions watching it; expiries live in one heap with lazy deletion (a popped entry that no longer
//! matches the subscription's deadline is skipped), peeked by `Core::poll_timeout`.

use super::admission::{Action, Hold, Reason};
use super::orbit_view::{OrbitState, ParkedView};
use super::reply::ALLOW_EVENTS;
use super::{Purpose, Core};
use crate::config::BlfOccupiedState;
use crate::dialog::{Dialog, DialogKey};
use crate::park::dialog_info::{DialogEntry, DialogIds, DialogInfo, DialogState, Identity, DIALOG_INFO_CONTENT_TYPE};
use crate::park::lot::{Dialed, OrbitIdx};
use crate::sip::{Method, Peer, Request, Uri};
use crate::time::Time;
use crate::txn::{ClientTxnId, ClientVerdict, ServerTxnId};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

/// The only event package parkd serves.
pub const EVENT_PACKAGE: &str = "dialog";
/// Granted when the SUBSCRIBE has no `Expires` (seconds).
pub const DEFAULT_EXPIRES: u32 = 3600;
/// Longest subscription parkd grants (seconds).
pub const MAX_EXPIRES: u32 = 3600;
/// Shortest non-zero subscription parkd accepts; shorter → `423 Interval Too Brief` (RFC 6665 §4.2.1.1).
pub const MIN_EXPIRES: u32 = 60;

/// A subscription's handle. Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct SubId(pub u64);

/// What a subscription watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Watched {
    /// One orbit of the lot.
    Orbit(OrbitIdx),
    /// Every orbit of the lot (a SUBSCRIBE to the park code).
    Lot,
}

#[derive(Debug)]
struct Subscription {
    lot: usize,
    watched: Watched,
    dialog: Dialog,
    /// The Request-URI the phone subscribed to (without parameters): the document's `entity`.
    entity: Uri,
    /// The `id` parameter of the SUBSCRIBE's Event header, echoed in every NOTIFY (RFC 6665 §8.2.1).
    event_id: Option<String>,
    expires_at: Time,
    /// The version the next NOTIFY's body carries.
    next_version: u32,
    /// The NOTIFY awaiting its final response.
    in_flight: Option<ClientTxnId>,
    /// The state changed while a NOTIFY was in flight.
    dirty: bool,
    /// The subscription is ending with this reason: its final NOTIFY is due or in flight.
    ending: Option<&'static str>,
    /// The final (terminated) NOTIFY was sent: the subscription goes when it is answered.
    final_sent: bool,
}

/// Every subscription of the core, with the indexes that keep each operation proportional to what it touches.
#[derive(Debug, Default)]
pub struct Subscriptions {
    subs: HashMap<SubId, Subscription>,
    by_dialog: HashMap<DialogKey, SubId>,
    watchers: HashMap<(usize, Watched), HashSet<SubId>>,
    expiries: BinaryHeap<Reverse<(Time, SubId)>>,
    next_id: u64,
}

impl Subscriptions {
    /// Subscriptions alive (including ones whose final NOTIFY is still unanswered).
    pub fn len(&self) -> usize {
        self.subs.len()
    }
    /// The earliest expiry deadline (possibly stale: waking early is harmless).
    pub fn next_expiry(&self) -> Option<Time> {
        self.expiries.peek().map(|Reverse((t, _))| *t)
    }
    /// The subscription whose dialog `key` names, if any.
    pub fn by_dialog(&self, key: &DialogKey) -> Option<SubId> {
        self.by_dialog.get(key).copied()
    }

    fn pop_due(&mut self, now: Time) -> Option<(Time, SubId)> {
        match self.expiries.peek() {
            Some(Reverse((t, _))) if *t <= now => self.expiries.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Stops indexing `id` (no more changes reach it, its dialog answers 481); the record itself stays.
    fn unindex(&mut self, id: SubId) {
        let Some(s) = self.subs.get(&id) else { return };
        self.by_dialog.remove(&s.dialog.key());
        let key = (s.lot, s.watched);
        if let Some(set) = self.watchers.get_mut(&key) {
            set.remove(&id);
            if set.is_empty() {
                self.watchers.remove(&key);
            }
        }
    }

    fn remove(&mut self, id: SubId) {
        self.unindex(id);
        self.subs.remove(&id);
    }
}

/// The granted expiry for a SUBSCRIBE's `Expires`, or the refusal (status, reason, Min-Expires).
fn granted_expires(req: &Request) -> Result<u32, (u16, &'static str)> {
    let granted = match (req.common.header("Expires"), req.common.expires()) {
        (None, _) => DEFAULT_EXPIRES,
        (Some(_), None) => return Err((400, "Bad Expires Header")),
        (Some(_), Some(0)) => 0,
        (Some(_), Some(v)) if v < MIN_EXPIRES => return Err((423, "Interval Too Brief")),
        (Some(_), Some(v)) => v.min(MAX_EXPIRES),
    };
    Ok(granted)
}

/// Checks the Event header: `Ok(id param)` for `dialog`; otherwise the refusal.
fn check_event(req: &Request) -> Result<Option<String>, (u16, &'static str)> {
    if req.common.header("Event").is_none() {
        return Err((400, "Missing Event Header"));
    }
    let Some((package, params)) = req.common.event() else { return Err((400, "Bad Event Header")) };
    if !package.eq_ignore_ascii_case(EVENT_PACKAGE) {
        return Err((489, "Bad Event"));
    }
    Ok(params.value("id").map(str::to_string))
}

/// Whether the SUBSCRIBE's `Accept` (if any) admits `application/dialog-info+xml` (RFC 6665 §4.2.1.1 → 406).
fn accepts_dialog_info(req: &Request) -> bool {
    let mut any = false;
    for value in req.common.headers_named("Accept") {
        for item in value.split(',') {
            let media = item.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if media.is_empty() {
                continue;
            }
            any = true;
            if media == DIALOG_INFO_CONTENT_TYPE || media == "*/*" || media == "application/*" {
                return true;
            }
        }
    }
    !any
}

impl Core {
    /// A SUBSCRIBE outside any dialog: validate, create the subscription and its dialog, answer 200, NOTIFY.
    pub(super) fn on_subscribe(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: Request) {
        let event_id = match check_event(&req) {
            Ok(id) => id,
            Err((status, why)) => {
                return self.ep.respond(now, txn, &req, status, Some(why), None, |r| r.common.push_header("Allow-Events", ALLOW_EVENTS));
            }
        };
        let user = req.uri.user.clone().unwrap_or_default();
        let Some((lot, dialed)) = self.parking.lookup(&user) else {
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
        if !accepts_dialog_info(&req) {
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
        let tag = self.ep.new_tag();
        let dialog = Dialog::as_uas(&req, from, &tag);
        let contact = self.ep.contact(from.transport);
        self.ep.respond(now, txn, &req, 200, None, Some(&tag), |r| {
            r.common.contact.push(contact);
            r.common.push_header("Expires", expires.to_string());
            r.common.push_header("Allow-Events", ALLOW_EVENTS);
        });
        let mut entity = req.uri.without_headers();
        entity.params = Default::default();
        let id = SubId(self.blf.next_id);
        self.blf.next_id += 1;
        let expires_at = now + Duration::from_secs(expires.into());
        tracing::info!(sub = id.0, number = %user, expires, from = %from.addr, "BLF subscription");
        self.blf.by_dialog.insert(dialog.key(), id);
        self.blf.watchers.entry((lot, watched)).or_default().insert(id);
        self.admission.hold(now, Hold::Subscription(id), from.addr.ip());
        self.blf.subs.insert(
            id,
            Subscription {
                lot,
                watched,
                dialog,
                entity,
                event_id,
                expires_at,
                next_version: 0,
                in_flight: None,
                dirty: false,
                ending: None,
                final_sent: false,
            },
        );
        if expires == 0 {
            // A fetch (RFC 6665 §4.4.3): the state once, in a terminating NOTIFY.
            return self.end_subscription(now, id, "timeout");
        }
        self.blf.expiries.push(Reverse((expires_at, id)));
        self.send_notify(now, id);
    }

    /// A request inside a subscription dialog: a refresh or unsubscribe (SUBSCRIBE), anything else refused.
    pub(super) fn on_subscription_request(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: Request, id: SubId) {
        let Some(sub) = self.blf.subs.get_mut(&id) else {
            return self.ep.respond(now, txn, &req, 481, None, None, |_| {});
        };
        if !sub.dialog.accept_remote_cseq(req.common.cseq.seq, &req.method) {
            return self.ep.respond(now, txn, &req, 500, Some("CSeq Out of Order"), None, |_| {});
        }
        match req.method {
            Method::Subscribe => {}
            Method::Ack | Method::Cancel => return,
            _ => return self.ep.respond(now, txn, &req, 405, None, None, |r| r.common.push_header("Allow", "SUBSCRIBE")),
        }
        if let Err((status, why)) = check_event(&req) {
            return self.ep.respond(now, txn, &req, status, Some(why), None, |r| r.common.push_header("Allow-Events", ALLOW_EVENTS));
        }
        let expires = match granted_expires(&req) {
            Ok(e) => e,
            Err((status, why)) => {
                return self.ep.respond(now, txn, &req, status, Some(why), None, |r| r.common.push_header("Min-Expires", MIN_EXPIRES.to_string()));
            }
        };
        let contact = self.ep.contact(from.transport);
        let Some(sub) = self.blf.subs.get_mut(&id) else { return };
        sub.dialog.refresh_target(&req, from);
        let tag = sub.dialog.local_tag().to_string();
        self.ep.respond(now, txn, &req, 200, None, Some(&tag), |r| {
            r.common.contact.push(contact);
            r.common.push_header("Expires", expires.to_string());
        });
        if expires == 0 {
            tracing::info!(sub = id.0, "BLF unsubscribe");
            return self.end_subscription(now, id, "timeout");
        }
        let at = now + Duration::from_secs(expires.into());
        if let Some(sub) = self.blf.subs.get_mut(&id) {
            sub.expires_at = at;
        }
        self.blf.expiries.push(Reverse((at, id)));
        // RFC 6665 §4.2.2: every accepted refresh is followed by a NOTIFY with the current state.
        self.queue_notify(now, id);
    }

    /// The hook behind `Core::orbit_changed`: NOTIFY the watchers of that orbit and of its whole lot.
    pub(super) fn blf_orbit_changed(&mut self, now: Time, lot: usize, orbit: OrbitIdx) {
        let ids: Vec<SubId> = [Watched::Orbit(orbit), Watched::Lot]
            .iter()
            .filter_map(|w| self.blf.watchers.get(&(lot, *w)))
            .flat_map(|set| set.iter().copied())
            .collect();
        for id in ids {
            self.queue_notify(now, id);
        }
    }

    /// Fires due subscription expiries (lazy deletion: stale heap entries are skipped).
    pub(super) fn blf_handle_timeout(&mut self, now: Time) {
        while let Some((at, id)) = self.blf.pop_due(now) {
            let due = self.blf.subs.get(&id).is_some_and(|s| s.expires_at == at && s.ending.is_none());
            if due {
                tracing::info!(sub = id.0, "BLF subscription expired");
                self.end_subscription(now, id, "timeout");
            }
        }
    }

    /// A response to a NOTIFY parkd sent.
    pub(super) fn on_notify_response(&mut self, now: Time, id: SubId, txn: ClientTxnId, verdict: ClientVerdict) {
        let ClientVerdict::Final(resp) = verdict else { return };
        self.ep.finish(txn);
        let Some(sub) = self.blf.subs.get_mut(&id) else { return };
        if sub.in_flight != Some(txn) {
            return;
        }
        sub.in_flight = None;
        if !resp.is_success() {
            // RFC 6665 §4.2.2: a failed NOTIFY (481 included) removes the subscription, without another NOTIFY.
            tracing::info!(sub = id.0, status = resp.status, "NOTIFY refused; subscription ended");
            return self.forget_subscription(id);
        }
        if sub.final_sent {
            return self.forget_subscription(id);
        }
        if sub.dirty || sub.ending.is_some() {
            self.send_notify(now, id);
        }
    }

    /// A NOTIFY's transaction timed out (Timer F) or could not be sent: the subscription ends.
    pub(super) fn on_notify_timeout(&mut self, id: SubId, txn: ClientTxnId) {
        if self.blf.subs.get(&id).is_some_and(|s| s.in_flight == Some(txn)) {
            tracing::info!(sub = id.0, "NOTIFY timed out; subscription ended");
            self.forget_subscription(id);
        }
    }

    /// Removes subscription `id` for good (its source no longer holds it).
    fn forget_subscription(&mut self, id: SubId) {
        self.blf.remove(id);
        self.admission.release(Hold::Subscription(id));
    }

    /// Ends subscription `id`: no more changes reach it; its final NOTIFY goes now, or once the one in flight
    /// is answered.
    fn end_subscription(&mut self, now: Time, id: SubId, reason: &'static str) {
        self.blf.unindex(id);
        let Some(sub) = self.blf.subs.get_mut(&id) else { return };
        sub.ending = Some(reason);
        if sub.in_flight.is_none() {
            self.send_notify(now, id);
        }
    }

    /// Sends a NOTIFY now, or marks the subscription dirty if one is in flight.
    fn queue_notify(&mut self, now: Time, id: SubId) {
        let Some(sub) = self.blf.subs.get_mut(&id) else { return };
        if sub.in_flight.is_some() {
            sub.dirty = true;
        } else {
            self.send_notify(now, id);
        }
    }

    /// Builds and sends the NOTIFY with the current state (a client transaction); the terminated one if ending.
    fn send_notify(&mut self, now: Time, id: SubId) {
        let Some(sub) = self.blf.subs.get(&id) else { return };
        let body = self.dialog_info(sub.lot, sub.watched, &sub.entity, sub.next_version).to_xml();
        let state = match sub.ending {
            Some(reason) => format!("terminated;reason={reason}"),
            None => format!("active;expires={}", sub.expires_at.saturating_since(now).as_secs_f64().ceil() as u64),
        };
        let event = match &sub.event_id {
            Some(i) => format!("{EVENT_PACKAGE};id={i}"),
            None => EVENT_PACKAGE.to_string(),
        };
        let Some(sub) = self.blf.subs.get_mut(&id) else { return };
        let mut notify = self.ep.request_in(&mut sub.dialog, Method::Notify);
        notify.common.push_header("Event", event);
        notify.common.push_header("Subscription-State", state);
        notify.common.push_header("User-Agent", super::reply::PRODUCT);
        notify.common.set_body(DIALOG_INFO_CONTENT_TYPE, Bytes::from(body));
        let next_hop = sub.dialog.next_hop;
        sub.next_version += 1;
        sub.dirty = false;
        sub.final_sent = sub.ending.is_some();
        let txn = self.ep.send(now, next_hop, &notify, Purpose::BlfNotify(id));
        if let Some(sub) = self.blf.subs.get_mut(&id) {
            sub.in_flight = Some(txn);
        }
    }

    /// The dialog-info document for what a subscription watches.
    fn dialog_info(&self, lot: usize, watched: Watched, entity: &Uri, version: u32) -> DialogInfo {
        let occupied = match self.parking.lot(lot).map(|l| l.cfg.blf_occupied_state) {
            Some(BlfOccupiedState::Early) => DialogState::Early,
            _ => DialogState::Confirmed,
        };
        let orbits: Vec<OrbitIdx> = match watched {
            Watched::Orbit(i) => vec![i],
            Watched::Lot => (0..self.parking.lot(lot).map_or(0, |l| l.capacity())).collect(),
        };
        let mut dialogs = Vec::new();
        for i in orbits {
            let name = self.parking.lot(lot).map(|l| l.orbit_name(i)).unwrap_or_default();
            match self.orbit_state(lot, i) {
                OrbitState::Parked(view) => dialogs.push(parked_entry(&view, &name, entity, occupied)),
                OrbitState::Free if watched != Watched::Lot => dialogs.push(DialogEntry::idle(&name)),
                OrbitState::Free => {}
            }
        }
        DialogInfo { version, entity: entity.to_string(), dialogs }
    }
}

/// The `<dialog>` of a parked call: the orbit as `<local>`, the parked party as `<remote>`.
fn parked_entry(view: &ParkedView, orbit_name: &str, entity: &Uri, state: DialogState) -> DialogEntry {
    let mut orbit_uri = entity.clone();
    orbit_uri.user = Some(orbit_name.to_string());
    DialogEntry {
        id: view.call_id.clone(),
        state,
        ids: Some(DialogIds { call_id: view.call_id.clone(), local_tag: view.local_tag.clone(), remote_tag: view.remote_tag.clone() }),
        local: Some(Identity { display: None, uri: orbit_uri.to_string(), target: Some(orbit_uri.to_string()) }),
        remote: Some(Identity { display: view.parked.display.clone(), uri: view.parked.uri.to_string(), target: None }),
    }
}
