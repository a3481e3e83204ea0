//! A call this node (A, the owner) hands to another node's fetch (issue 18, docs/cluster-design.md §3.3, A's
//! half): a signed retrieve is taken like a local one, but the parked call's record is kept while the bridge to
//! the fetching node lasts. When that node ends its leg with [`FETCH_ABANDONED_REASON`] (its retriever hung up
//! before being answered, or it timed out), the parked party is not hung up: it goes back into its orbit with its
//! hold music, its parker and parking time as before, and the orbit is claimed in the cluster again (if another
//! node took it in that instant, the call moves into a free orbit of its lot or its parker is recalled, as for any
//! lost orbit).

use super::ids::{CallRef, LegId};
use super::parking::{MediaMode, ParkedCall};
use super::{Core, ParkEvent};
use crate::ids::OrbitIdx;
use crate::sip::{Peer, Request};
use crate::time::Time;
use crate::txn::ServerTxnId;

impl Core {
    /// The retrieve of `orbit` signed by another node: a local retrieve whose parked call is kept aside.
    pub(super) fn retrieve_for_node(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: Request, lot: usize, orbit: OrbitIdx) {
        let kept = self.parking.occupant(lot, orbit).and_then(|call| self.parking.get(call)).cloned();
        self.retrieve(now, txn, from, req, lot, orbit);
        let Some(kept) = kept.filter(|k| self.bridging.get(k.id).is_some()) else { return };
        let Some(c) = self.cluster.as_mut() else { return };
        // Only bridges that still exist are worth keeping for.
        c.lent.retain(|call, _| self.bridging.get(*call).is_some());
        c.lent.insert(kept.id, Box::new(kept));
    }

    /// A BYE on `leg_id`: when it is the fetching node's leg of a lent call and says the retriever gave up, the
    /// call is parked again (true: handled). Otherwise false (the BYE ends the leg as usual).
    pub(super) fn hand_back(&mut self, now: Time, leg_id: LegId, bye: &Request) -> bool {
        // `SIP;cause=487` (the text may be anything): see FETCH_ABANDONED_REASON.
        let gave_up = bye.common.header("Reason").is_some_and(|r| {
            let r = r.to_ascii_lowercase().replace(' ', "");
            r.starts_with("sip;") && r.split(';').any(|p| p == "cause=487")
        });
        let Some(call) = self.dialogs.get(leg_id).map(|l| l.call) else { return false };
        let ours = self.bridging.get(call).is_some_and(|b| b.other == leg_id);
        let Some(c) = self.cluster.as_mut() else { return false };
        if !ours || !c.lent.contains_key(&call) {
            return false;
        }
        let Some(kept) = c.lent.remove(&call) else { return false };
        if !gave_up {
            return false;
        }
        let Some(bridge) = self.bridging.remove(call) else { return false };
        self.forget_leg(leg_id);
        if bridge.parked != kept.parked || self.dialogs.get(kept.parked).is_none() {
            self.hangup_leg(now, bridge.parked);
            return true;
        }
        self.park_again(now, call, *kept);
        true
    }

    /// Puts lent call `call` back into its orbit (or, should a local park have taken it meanwhile, any free orbit
    /// of its lot; none: the parked party is hung up, as the BYE would have done).
    fn park_again(&mut self, now: Time, call: CallRef, mut kept: ParkedCall) {
        let lot = kept.lot;
        let orbit = match self.parking.claim(lot, Some(kept.orbit), call, self.ep.rng()) {
            Ok(i) => i,
            Err(_) => match self.parking.claim(lot, None, call, self.ep.rng()) {
                Ok(i) => i,
                Err(_) => {
                    tracing::warn!(orbit = %kept.orbit_name, "the retriever on another node gave up and the lot is full here: ending the call");
                    return self.hangup_leg(now, kept.parked);
                }
            },
        };
        let orbit_name = self.parking.orbit_name(lot, orbit);
        kept.orbit = orbit;
        kept.orbit_name = orbit_name.clone();
        kept.media_mode = MediaMode::None;
        let leg = self.dialogs.get_mut(kept.parked);
        let (call_id, parked_label) = match leg {
            Some(l) => {
                l.orbit = orbit_name.clone();
                (l.dialog.call_id.clone(), l.dialog.remote().uri.to_string())
            }
            None => return,
        };
        let event = ParkEvent::Parked {
            lot: self.parking.lot_name(lot),
            orbit: orbit_name.clone(),
            call_id,
            parked: parked_label,
            parker: kept.parker.as_ref().map(|p| p.uri.to_string()),
            how: kept.how,
            domain: self.parking.cfg(lot).and_then(|c| c.domains.first().cloned()),
        };
        // Its recall and maximum-park deadlines as they were; a recall that was ringing starts a new period.
        let rearm = kept.recall_at.is_none() && kept.parking_time.is_some();
        self.parking.restore(now, kept);
        if rearm {
            self.parking.arm_period(now, call);
        }
        self.touch(call);
        tracing::info!(orbit = %orbit_name, "the retriever on another node gave up: the call is parked here again");
        self.emit_when_stored(event);
        self.orbit_changed(now, lot, orbit);
        self.sync_media(now, call);
        self.claim_unclaimed(now);
    }
}
