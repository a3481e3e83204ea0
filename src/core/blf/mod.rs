//! The BLF room: `SUBSCRIBE` / `NOTIFY` for the `dialog` event package (RFC 6665, RFC 4235) on orbits and park codes.
//!
//! * `SUBSCRIBE sip:701@..` with `Event: dialog` watches one orbit; to the lot's park code (`700`) it watches
//!   the whole lot (one document listing every occupied orbit's dialog), or, when the SUBSCRIBE asks for it
//!   (`Supported: eventlist`), an RFC 4662 resource list with one dialog-info part per orbit ([`eventlist`]).
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
//! subscriptions watching it; an orbit's body is O(1) and a whole lot's O(calls shown in it) (its free orbits
//! are not visited); expiries live in one heap with lazy deletion (a popped entry that no longer
//! matches the subscription's deadline is skipped), peeked by `Core::poll_timeout` ([`Wake::BlfExpiry`]).
//!
//! The room: each [`Subscription`] is serde plain data (its dialog, the entity, expiry, NOTIFY version and
//! sequencing state); [`Blf`] keeps them and their indexes, answers the requests of its dialogs and sends its
//! NOTIFYs through the endpoint. What it may not decide alone stays with `Core` (`subscribe.rs`): whether a new
//! SUBSCRIBE passes the lot's access lists, digest and the source's limits, and the admission hold a
//! subscription stands for (the room says when one is gone for good). It reads orbits through an
//! [`Orbits`] view.
//!
//! [`Wake::BlfExpiry`]: crate::core::Wake::BlfExpiry

pub mod eventlist;
mod request;

pub use request::{accepts_dialog_info, check_event, granted_expires};

use super::endpoint::{Endpoint, Purpose};
use super::orbit_view::{OrbitState, Orbits, ParkedView};
use super::reply::ALLOW_EVENTS;
use crate::config::BlfOccupiedState;
use crate::dialog::{text, Dialog, DialogKey};
use crate::park::dialog_info::{DialogEntry, DialogIds, DialogInfo, DialogState, Identity, DIALOG_INFO_CONTENT_TYPE};
use crate::park::lot::OrbitIdx;
use crate::sip::{Method, Peer, Request, Uri};
use crate::time::Time;
use crate::txn::{ClientTxnId, ClientVerdict, ServerTxnId};
use bytes::Bytes;
use std::cmp::Reverse;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{BinaryHeap, HashMap};
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Watched {
    /// One orbit of the lot.
    Orbit(OrbitIdx),
    /// Every orbit of the lot (a SUBSCRIBE to the park code).
    Lot,
}

/// Why a subscription ends (the `reason` of its final `Subscription-State: terminated`, RFC 6665 §4.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EndReason {
    /// It expired, was a fetch (`Expires: 0`), or the phone unsubscribed.
    Timeout,
    /// A reload took the watched orbit (or lot) out of the configuration (issue 21).
    NoResource,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Timeout => "timeout",
            EndReason::NoResource => "noresource",
        }
    }
}

/// One BLF subscription, as plain data.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    pub lot: usize,
    pub watched: Watched,
    pub dialog: Dialog,
    /// The Request-URI the phone subscribed to (without parameters): the document's `entity`.
    #[serde(with = "text::uri")]
    pub entity: Uri,
    /// The `id` parameter of the SUBSCRIBE's Event header, echoed in every NOTIFY (RFC 6665 §8.2.1).
    pub event_id: Option<String>,
    pub expires_at: Time,
    /// The version the next NOTIFY's body carries.
    pub next_version: u32,
    /// The NOTIFY awaiting its final response.
    pub in_flight: Option<ClientTxnId>,
    /// The state changed while a NOTIFY was in flight.
    pub dirty: bool,
    /// The subscription is ending with this reason: its final NOTIFY is due or in flight.
    pub ending: Option<EndReason>,
    /// The final (terminated) NOTIFY was sent: the subscription goes when it is answered.
    pub final_sent: bool,
    /// A whole lot as an RFC 4662 resource list (the SUBSCRIBE asked for `eventlist`); `None`: one body.
    #[serde(default)]
    pub list: Option<eventlist::ListState>,
}

/// What a new subscription is, once `Core` has admitted its SUBSCRIBE.
pub struct NewSubscription {
    pub lot: usize,
    pub watched: Watched,
    pub event_id: Option<String>,
    /// Seconds granted (0: a fetch).
    pub expires: u32,
    /// A whole lot as a resource list of this many orbits (RFC 4662); `None`: the one-body form.
    pub list: Option<usize>,
}

/// The BLF room: every subscription, with the indexes that keep each operation proportional to what it touches.
#[derive(Debug, Default)]
pub struct Blf {
    // Subscription ids and watched orbits are parkd's own keys (fast Fx hash); a dialog key holds the peer's
    // Call-ID (std's SipHash).
    subs: FxHashMap<SubId, Subscription>,
    by_dialog: HashMap<DialogKey, SubId>,
    watchers: FxHashMap<(usize, Watched), FxHashSet<SubId>>,
    expiries: BinaryHeap<Reverse<(Time, SubId)>>,
    next_id: u64,
    /// Journaling is on (issue 17): subscriptions that changed are listed in `touched` for the journal.
    journal: bool,
    touched: Vec<SubId>,
}

impl Blf {
    /// Subscriptions alive (including ones whose final NOTIFY is still unanswered).
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Every subscription, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (SubId, &Subscription)> {
        self.subs.iter().map(|(id, s)| (*id, s))
    }

    pub fn get(&self, id: SubId) -> Option<&Subscription> {
        self.subs.get(&id)
    }

    /// Turns the list of changed subscriptions for the journal on or off.
    pub fn set_journaling(&mut self, on: bool) {
        self.journal = on;
        self.touched.clear();
    }

    /// The subscriptions that changed since the last call (journaling on), possibly repeated.
    pub fn take_touched(&mut self) -> Vec<SubId> {
        std::mem::take(&mut self.touched)
    }

    fn touch(&mut self, id: SubId) {
        if self.journal {
            self.touched.push(id);
        }
    }

    /// Puts back a subscription restored from the journal after a restart (nothing in flight; its expiry as
    /// journaled). Ids handed out later are above `id`.
    pub fn restore(&mut self, id: SubId, sub: Subscription) {
        self.next_id = self.next_id.max(id.0 + 1);
        self.by_dialog.insert(sub.dialog.key(), id);
        self.watchers.entry((sub.lot, sub.watched)).or_default().insert(id);
        self.expiries.push(Reverse((sub.expires_at, id)));
        self.subs.insert(id, sub);
    }

    /// The earliest expiry deadline (possibly stale: waking early is harmless).
    pub fn next_expiry(&self) -> Option<Time> {
        self.expiries.peek().map(|Reverse((t, _))| *t)
    }

    /// The subscription whose dialog `key` names, if any.
    pub fn by_dialog(&self, key: &DialogKey) -> Option<SubId> {
        self.by_dialog.get(key).copied()
    }

    /// Creates the subscription `new` asks for from `req` (a SUBSCRIBE `Core` admitted), answers it 200 and
    /// sends the first NOTIFY (a fetch gets its only, terminating one). Returns its id.
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe(&mut self, ep: &mut Endpoint, now: Time, txn: ServerTxnId, from: Peer, req: &Request, new: NewSubscription, orbits: &Orbits<'_>) -> SubId {
        let NewSubscription { lot, watched, event_id, expires, list } = new;
        let tag = ep.new_tag();
        let dialog = Dialog::as_uas(req, from, &tag);
        let contact = ep.contact_for(&req.uri, from);
        ep.respond(now, txn, req, 200, None, Some(&tag), |r| {
            r.common.contact.push(contact);
            r.common.push_header("Expires", expires.to_string());
            r.common.push_header("Allow-Events", ALLOW_EVENTS);
            if list.is_some() {
                r.common.push_header("Require", eventlist::EVENTLIST);
            }
        });
        let mut entity = req.uri.without_headers();
        entity.params = Default::default();
        let id = SubId(self.next_id);
        self.next_id += 1;
        let expires_at = now + Duration::from_secs(expires.into());
        tracing::info!(sub = id.0, number = req.uri.user.as_deref().unwrap_or(""), expires, from = %from.addr, "BLF subscription");
        self.by_dialog.insert(dialog.key(), id);
        self.watchers.entry((lot, watched)).or_default().insert(id);
        let sub = Subscription {
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
            list: list.map(eventlist::ListState::new),
        };
        self.subs.insert(id, sub);
        self.touch(id);
        if expires == 0 {
            // A fetch (RFC 6665 §4.4.3): the state once, in a terminating NOTIFY.
            self.end(ep, now, id, EndReason::Timeout, orbits);
            return id;
        }
        self.expiries.push(Reverse((expires_at, id)));
        self.send_notify(ep, now, id, orbits);
        id
    }

    /// A request inside subscription `id`'s dialog: a refresh or unsubscribe (SUBSCRIBE), anything else refused.
    #[allow(clippy::too_many_arguments)]
    pub fn on_request(&mut self, ep: &mut Endpoint, now: Time, txn: ServerTxnId, from: Peer, req: &Request, id: SubId, orbits: &Orbits<'_>) {
        let Some(sub) = self.subs.get_mut(&id) else {
            return ep.respond(now, txn, req, 481, None, None, |_| {});
        };
        if !sub.dialog.accept_remote_cseq(req.common.cseq.seq, &req.method) {
            return ep.respond(now, txn, req, 500, Some("CSeq Out of Order"), None, |_| {});
        }
        match req.method {
            Method::Subscribe => {}
            Method::Ack | Method::Cancel => return,
            _ => return ep.respond(now, txn, req, 405, None, None, |r| r.common.push_header("Allow", "SUBSCRIBE")),
        }
        if let Err((status, why)) = check_event(req) {
            return ep.respond(now, txn, req, status, Some(why), None, |r| r.common.push_header("Allow-Events", ALLOW_EVENTS));
        }
        let expires = match granted_expires(req) {
            Ok(e) => e,
            Err((status, why)) => {
                return ep.respond(now, txn, req, status, Some(why), None, |r| r.common.push_header("Min-Expires", MIN_EXPIRES.to_string()));
            }
        };
        let contact = ep.contact_for(&req.uri, from);
        sub.dialog.refresh_target(req, from);
        let tag = sub.dialog.local_tag().to_string();
        let is_list = sub.list.is_some();
        ep.respond(now, txn, req, 200, None, Some(&tag), |r| {
            r.common.contact.push(contact);
            r.common.push_header("Expires", expires.to_string());
            if is_list {
                r.common.push_header("Require", eventlist::EVENTLIST);
            }
        });
        if expires == 0 {
            tracing::info!(sub = id.0, "BLF unsubscribe");
            return self.end(ep, now, id, EndReason::Timeout, orbits);
        }
        let at = now + Duration::from_secs(expires.into());
        sub.expires_at = at;
        if let Some(l) = &mut sub.list {
            // The NOTIFY after a refresh carries the full list again (the watcher resynchronises).
            l.full_due = true;
        }
        self.touch(id);
        self.expiries.push(Reverse((at, id)));
        // RFC 6665 §4.2.2: every accepted refresh is followed by a NOTIFY with the current state.
        self.queue_notify(ep, now, id, orbits);
    }

    /// Orbit `orbit` of lot `lot` may have changed: NOTIFY the watchers of that orbit and of its whole lot.
    pub fn orbit_changed(&mut self, ep: &mut Endpoint, now: Time, lot: usize, orbit: OrbitIdx, orbits: &Orbits<'_>) {
        let ids: Vec<SubId> = [Watched::Orbit(orbit), Watched::Lot]
            .iter()
            .filter_map(|w| self.watchers.get(&(lot, *w)))
            .flat_map(|set| set.iter().copied())
            .collect();
        for id in ids {
            if let Some(l) = self.subs.get_mut(&id).and_then(|s| s.list.as_mut()) {
                l.changed.insert(orbit.0);
            }
            self.queue_notify(ep, now, id, orbits);
        }
    }

    /// A reload re-laid out the orbits of subscription `id`'s lot (issue 21): it now watches orbit `to` (the same
    /// number at its new index), or, when that number left the configuration, it ends
    /// (`terminated;reason=noresource`). The dialog, expiry and NOTIFY versions go on.
    pub fn rewatch(&mut self, ep: &mut Endpoint, now: Time, id: SubId, to: Option<OrbitIdx>, orbits: &Orbits<'_>) {
        let Some(sub) = self.subs.get_mut(&id) else { return };
        let Some(to) = to else { return self.end(ep, now, id, EndReason::NoResource, orbits) };
        let old = (sub.lot, sub.watched);
        sub.watched = Watched::Orbit(to);
        let new = (sub.lot, sub.watched);
        if let Some(set) = self.watchers.get_mut(&old) {
            set.remove(&id);
            if set.is_empty() {
                self.watchers.remove(&old);
            }
        }
        self.watchers.entry(new).or_default().insert(id);
        self.touch(id);
    }

    /// Every live subscription to `lot`, with what it watches (a reload re-notifies them).
    pub fn of_lot(&self, lot: usize) -> Vec<(SubId, Watched)> {
        self.subs.iter().filter(|(_, s)| s.lot == lot && s.ending.is_none()).map(|(id, s)| (*id, s.watched)).collect()
    }

    /// Sends subscription `id` a NOTIFY with the current state (after a reload changed its lot).
    pub fn refresh(&mut self, ep: &mut Endpoint, now: Time, id: SubId, orbits: &Orbits<'_>) {
        self.queue_notify(ep, now, id, orbits);
    }

    /// Fires due subscription expiries (lazy deletion: stale heap entries are skipped).
    pub fn handle_timeout(&mut self, ep: &mut Endpoint, now: Time, orbits: &Orbits<'_>) {
        while let Some(Reverse((at, id))) = self.expiries.peek().copied().filter(|Reverse((t, _))| *t <= now) {
            self.expiries.pop();
            let due = self.subs.get(&id).is_some_and(|s| s.expires_at == at && s.ending.is_none());
            if due {
                tracing::info!(sub = id.0, "BLF subscription expired");
                self.end(ep, now, id, EndReason::Timeout, orbits);
            }
        }
    }

    /// A final response to a NOTIFY of subscription `id` (its transaction `txn` is finished). Returns the id
    /// when the subscription is gone for good (its source no longer holds it).
    pub fn on_notify_response(&mut self, ep: &mut Endpoint, now: Time, id: SubId, txn: ClientTxnId, verdict: ClientVerdict, orbits: &Orbits<'_>) -> Option<SubId> {
        let ClientVerdict::Final(resp) = verdict else { return None };
        ep.finish(txn);
        let sub = self.subs.get_mut(&id)?;
        if sub.in_flight != Some(txn) {
            return None;
        }
        sub.in_flight = None;
        if !resp.is_success() {
            // RFC 6665 §4.2.2: a failed NOTIFY (481 included) removes the subscription, without another NOTIFY.
            tracing::info!(sub = id.0, status = resp.status, "NOTIFY refused; subscription ended");
            return self.remove(id);
        }
        if sub.final_sent {
            return self.remove(id);
        }
        if sub.dirty || sub.ending.is_some() {
            self.send_notify(ep, now, id, orbits);
        }
        None
    }

    /// A NOTIFY's transaction timed out (Timer F) or could not be sent: the subscription ends. Returns the id
    /// when it is gone.
    pub fn on_notify_timeout(&mut self, id: SubId, txn: ClientTxnId) -> Option<SubId> {
        if self.subs.get(&id).is_some_and(|s| s.in_flight == Some(txn)) {
            tracing::info!(sub = id.0, "NOTIFY timed out; subscription ended");
            return self.remove(id);
        }
        None
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

    /// Removes subscription `id` for good.
    fn remove(&mut self, id: SubId) -> Option<SubId> {
        self.touch(id);
        self.unindex(id);
        self.subs.remove(&id).map(|_| id)
    }

    /// Ends subscription `id`: no more changes reach it; its final NOTIFY goes now, or once the one in flight
    /// is answered.
    fn end(&mut self, ep: &mut Endpoint, now: Time, id: SubId, reason: EndReason, orbits: &Orbits<'_>) {
        self.touch(id);
        self.unindex(id);
        let Some(sub) = self.subs.get_mut(&id) else { return };
        sub.ending = Some(reason);
        if sub.in_flight.is_none() {
            self.send_notify(ep, now, id, orbits);
        }
    }

    /// Sends a NOTIFY now, or marks the subscription dirty if one is in flight.
    fn queue_notify(&mut self, ep: &mut Endpoint, now: Time, id: SubId, orbits: &Orbits<'_>) {
        let Some(sub) = self.subs.get_mut(&id) else { return };
        if sub.in_flight.is_some() {
            sub.dirty = true;
        } else {
            self.send_notify(ep, now, id, orbits);
        }
    }

    /// Builds and sends the NOTIFY with the current state (a client transaction); the terminated one if ending.
    fn send_notify(&mut self, ep: &mut Endpoint, now: Time, id: SubId, orbits: &Orbits<'_>) {
        let Some(sub) = self.subs.get_mut(&id) else { return };
        let (content_type, body) = match sub.list.as_mut() {
            Some(list) => {
                let b = list_notify_body(orbits, sub.lot, &sub.entity, sub.next_version, list, sub.ending.is_some(), id);
                (b.content_type, b.body)
            }
            None => (DIALOG_INFO_CONTENT_TYPE.to_string(), dialog_info(orbits, sub.lot, sub.watched, &sub.entity, sub.next_version).to_xml()),
        };
        let state = match sub.ending {
            Some(reason) => format!("terminated;reason={}", reason.as_str()),
            None => format!("active;expires={}", sub.expires_at.saturating_since(now).as_secs_f64().ceil() as u64),
        };
        let event = match &sub.event_id {
            Some(i) => format!("{EVENT_PACKAGE};id={i}"),
            None => EVENT_PACKAGE.to_string(),
        };
        let mut notify = ep.request_in(&mut sub.dialog, Method::Notify);
        notify.common.push_header("Event", event);
        notify.common.push_header("Subscription-State", state);
        notify.common.push_header("User-Agent", super::reply::PRODUCT);
        if sub.list.is_some() {
            notify.common.push_header("Require", eventlist::EVENTLIST);
        }
        notify.common.set_body(&content_type, Bytes::from(body));
        sub.next_version += 1;
        sub.dirty = false;
        sub.final_sent = sub.ending.is_some();
        sub.in_flight = Some(ep.send(now, sub.dialog.next_hop, &notify, Purpose::BlfNotify(id)));
        self.touch(id);
    }
}

/// The dialog-info document for what a subscription watches.
fn dialog_info(orbits: &Orbits<'_>, lot: usize, watched: Watched, entity: &Uri, version: u32) -> DialogInfo {
    let cfg = orbits.parking.cfg(lot);
    let occupied = match cfg.map(|c| c.blf_occupied_state) {
        Some(BlfOccupiedState::Early) => DialogState::Early,
        _ => DialogState::Confirmed,
    };
    // A whole lot: only the orbits that may show a call (occupied here or on another node), in orbit order; the
    // free ones have no <dialog> in a lot's document, so the body costs O(occupied), not O(lot size).
    let watched_orbits: Vec<OrbitIdx> = match watched {
        Watched::Orbit(i) => vec![i],
        Watched::Lot => orbits.shown_in_lot(lot),
    };
    let mut dialogs = Vec::new();
    for i in watched_orbits {
        let name = orbits.parking.orbit_name(lot, i);
        match orbits.state(lot, i) {
            OrbitState::Parked(view) => dialogs.push(parked_entry(&view, &name, entity, occupied)),
            OrbitState::Free if watched != Watched::Lot => dialogs.push(DialogEntry::idle(&name)),
            OrbitState::Free => {}
        }
    }
    DialogInfo { version, entity: entity.to_string(), dialogs }
}

/// A list subscription's NOTIFY body: the RLMI root and one dialog-info part per orbit due (all of them in a full
/// state, the changed ones otherwise), each with its own version.
fn list_notify_body(orbits: &Orbits<'_>, lot: usize, entity: &Uri, version: u32, list: &mut eventlist::ListState, ending: bool, id: SubId) -> eventlist::ListBody {
    let (due, full) = list.take_due(ending);
    let parts: Vec<eventlist::Part> = due
        .into_iter()
        .map(|i| {
            let name = orbits.parking.orbit_name(lot, OrbitIdx(i)).to_string();
            let mut uri = entity.clone();
            uri.user = Some(name.as_str().into());
            let dialog_info = dialog_info(orbits, lot, Watched::Orbit(OrbitIdx(i)), &uri, list.next_version(i)).to_xml();
            eventlist::Part { uri: uri.to_string(), name, dialog_info }
        })
        .collect();
    eventlist::list_body(&entity.to_string(), version, full, &parts, &format!("s{}", id.0))
}

/// The `<dialog>` of a parked call: the orbit as `<local>`, the parked party as `<remote>`.
fn parked_entry(view: &ParkedView, orbit_name: &str, entity: &Uri, state: DialogState) -> DialogEntry {
    let mut orbit_uri = entity.clone();
    orbit_uri.user = Some(orbit_name.into());
    DialogEntry {
        id: view.call_id.to_string(),
        state,
        // A call on another node of a cluster: the dialog as its owner holds it (from the claim), when known; a
        // phone picks it up with Replaces at this node, which fetches it from the owner.
        ids: (view.node.is_none() || !view.call_id.is_empty()).then(|| DialogIds { call_id: view.call_id.to_string(), local_tag: view.local_tag.clone(), remote_tag: view.remote_tag.clone() }),
        local: Some(Identity { display: None, uri: orbit_uri.to_string(), target: Some(orbit_uri.to_string()) }),
        remote: Some(Identity { display: view.parked.display.as_deref().map(str::to_string), uri: view.parked.uri.to_string(), target: None }),
    }
}
