//! The dialogs room: every call leg parkd holds — one SIP dialog each (RFC 3261 §12) and the media negotiated
//! in it — as plain data ([`Leg`]), with the indexes that find them.
//!
//! * by [`LegId`], the handle the other rooms keep (a parked call names its parked leg, a bridge its two);
//! * by [`DialogKey`] (Call-ID + parkd's tag), how an in-dialog request or an ACK finds its leg;
//! * by the INVITE server transaction whose 2xx waits for its ACK ([`Dialogs::awaiting_ack`]);
//! * by media leg ([`Dialogs::by_media`]), how a report of the media plane (a key press) finds its leg.
//!
//! The room only keeps these tables consistent: inserting a leg indexes it, [`Dialogs::remove`] takes it out of
//! every index. What a leg's end means for its call is the other rooms' business; releasing its media port, its
//! admission hold and its media-plane leg is `Core::forget_leg`'s.

mod leg;
pub mod timer;

pub use leg::{read_offer, Leg, LegMedia, LegRole, LegSrtp, LegState, CODECS};

use crate::core::ids::LegId;
use crate::media::MediaLegId;
use crate::dialog::DialogKey;
use crate::sip::{NameAddr, Replaces};
use crate::txn::ServerTxnId;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use crate::time::Time;

/// The dialogs room (see the module doc). Keys parkd mints itself (leg ids, transaction handles) are hashed
/// with the fast Fx hash; a dialog key holds the peer's Call-ID, so it keeps std's SipHash (collision attacks).
#[derive(Debug, Default)]
pub struct Dialogs {
    // Boxed: a map keeps spare capacity, and a spare slot should cost a pointer, not a whole leg.
    legs: FxHashMap<LegId, Box<Leg>>,
    by_key: HashMap<DialogKey, LegId>,
    /// 2xx responses waiting for their ACK, by INVITE server transaction.
    pending_acks: FxHashMap<ServerTxnId, LegId>,
    /// Session-timer deadlines (RFC 4028) of the legs that have one, earliest first (lazy deletion: an entry
    /// that is not its leg's current deadline any more is skipped).
    timers: BinaryHeap<Reverse<(Time, LegId)>>,
    /// Legs by their media leg (a leg's media leg never changes).
    media: FxHashMap<MediaLegId, LegId>,
}

impl Dialogs {
    /// Legs held.
    pub fn len(&self) -> usize {
        self.legs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.legs.is_empty()
    }

    pub fn get(&self, id: LegId) -> Option<&Leg> {
        self.legs.get(&id).map(|l| &**l)
    }

    pub fn get_mut(&mut self, id: LegId) -> Option<&mut Leg> {
        self.legs.get_mut(&id).map(|l| &mut **l)
    }

    /// The leg whose dialog `key` names.
    pub fn find(&self, key: &DialogKey) -> Option<LegId> {
        self.by_key.get(key).copied()
    }

    /// Every leg, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Leg> {
        self.legs.values().map(|l| &**l)
    }

    /// Every leg whose dialog has Call-ID `call_id`.
    pub fn with_call_id<'a>(&'a self, call_id: &'a str) -> impl Iterator<Item = &'a Leg> + 'a {
        self.legs.values().map(|l| &**l).filter(move |l| l.dialog.call_id == call_id)
    }

    /// Adds `leg` and indexes it (an `Answered` leg also as waiting for its ACK).
    pub fn insert(&mut self, leg: Leg) {
        let id = leg.id;
        self.by_key.insert(leg.dialog.key(), id);
        if let LegState::Answered { invite } = leg.state {
            self.pending_acks.insert(invite, id);
        }
        self.media.insert(leg.media.media_leg, id);
        self.legs.insert(id, Box::new(leg));
    }

    /// Leg `id` answered a re-INVITE (server transaction `invite`) with a 2xx: it waits for that ACK.
    pub fn answered(&mut self, id: LegId, invite: ServerTxnId) {
        if let Some(leg) = self.legs.get_mut(&id) {
            leg.state = LegState::Answered { invite };
            self.pending_acks.insert(invite, id);
        }
    }

    /// The ACK for leg `id`'s 2xx came: the dialog is confirmed.
    pub fn confirm(&mut self, id: LegId) -> Option<&mut Leg> {
        let leg = self.legs.get_mut(&id)?;
        if let LegState::Answered { invite } = leg.state {
            self.pending_acks.remove(&invite);
        }
        leg.state = LegState::Confirmed;
        Some(&mut **leg)
    }

    /// The leg whose 2xx to INVITE `invite` waits for its ACK.
    pub fn awaiting_ack(&self, invite: ServerTxnId) -> Option<&Leg> {
        self.pending_acks.get(&invite).and_then(|id| self.get(*id))
    }

    /// The 2xx to INVITE `invite` was never ACKed: the leg it answered, no longer waiting.
    pub fn ack_timed_out(&mut self, invite: ServerTxnId) -> Option<LegId> {
        self.pending_acks.remove(&invite)
    }

    /// Removes leg `id` from every table and returns it.
    pub fn remove(&mut self, id: LegId) -> Option<Box<Leg>> {
        let leg = self.legs.remove(&id)?;
        self.by_key.remove(&leg.dialog.key());
        if let LegState::Answered { invite } = leg.state {
            self.pending_acks.remove(&invite);
        }
        if self.media.get(&leg.media.media_leg) == Some(&id) {
            self.media.remove(&leg.media.media_leg);
        }
        Some(leg)
    }

    /// The leg whose media leg is `media`.
    pub fn by_media(&self, media: MediaLegId) -> Option<LegId> {
        self.media.get(&media).copied().filter(|id| self.legs.get(id).is_some_and(|l| l.media.media_leg == media))
    }

    /// The peer's identity in leg `id` (its From or To, without tag).
    pub fn remote_identity(&self, id: LegId) -> Option<NameAddr> {
        self.get(id).map(|l| l.dialog.remote_identity())
    }

    /// The parked leg a Replaces header names. RFC 3891 §3 gives the tags from the recipient's side (to-tag =
    /// parkd's tag, from-tag = the parked party's); some phones send them the other way round, and since tags
    /// are random that orientation is accepted too.
    pub fn parked_leg_named_by(&self, r: &Replaces) -> Option<LegId> {
        let find = |local: &str, remote: &str| {
            let key = DialogKey { call_id: r.call_id.as_str().into(), local_tag: local.to_string() };
            self.find(&key).filter(|id| self.get(*id).is_some_and(|l| l.dialog.remote_tag() == remote && l.role == LegRole::Parked))
        };
        find(&r.to_tag, &r.from_tag).or_else(|| {
            let swapped = find(&r.from_tag, &r.to_tag);
            if swapped.is_some() {
                tracing::debug!(call_id = %r.call_id, "Replaces with to-tag/from-tag swapped; accepted");
            }
            swapped
        })
    }

    /// Leg `id`'s session timer changed: its next deadline goes into the queue.
    pub fn arm_timer(&mut self, id: LegId) {
        if let Some(t) = self.get(id).and_then(|l| l.timer.as_deref().copied()) {
            self.timers.push(Reverse((t.next_deadline(), id)));
        }
    }

    /// The earliest session-timer deadline (a peek; possibly stale: waking early is harmless).
    pub fn next_timer(&self) -> Option<Time> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Pops the earliest session-timer deadline if due at `now`: `Some(Some(leg))` when it is that leg's
    /// current deadline, `Some(None)` for a stale entry.
    pub fn pop_due_timer(&mut self, now: Time) -> Option<Option<LegId>> {
        let Reverse((at, id)) = *self.timers.peek().filter(|Reverse((t, _))| *t <= now)?;
        self.timers.pop();
        let current = self.get(id).and_then(|l| l.timer.as_deref().copied()).is_some_and(|t| t.next_deadline() == at);
        Some(current.then_some(id))
    }
}
