//! The journal room: what the core has written, what it holds back until a group is durable, and the state a
//! restore leaves behind (restored legs still waiting for their ACK).

use crate::core::bridging::Bridge;
use crate::core::blf::SubId;
use crate::core::dialogs::LegRole;
use crate::core::ids::{CallRef, LegId};
use crate::core::ParkEvent;
use super::records::RingRecord;
use crate::ids::{CallId, OrbitNumber};
use crate::journal::{AckGate, JournalToken, Record, RecordKind};
use crate::media::anchor::{Pace, StreamAnchor};
use crate::sip::Response;
use crate::time::Time;
use crate::txn::ServerTxnId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Something the core must not let out before the journal group of its change is durable.
#[derive(Debug)]
pub enum Held {
    /// The `200 OK` to a park INVITE (`leg` is the parked leg it creates).
    Answer { leg: LegId, txn: ServerTxnId, resp: Box<Response> },
    /// An event about the park (`Parked`), so that nobody hears of a park that is then undone.
    Event(ParkEvent),
    /// The final NOTIFY of a REFER that re-parked a bridged call, with what undoes the re-park.
    ReferDone(Box<ReferDone>),
}

/// A REFER's re-park, waiting for its records: the NOTIFY to send, and the bridge to put back on failure.
#[derive(Debug)]
pub struct ReferDone {
    /// The leg that sent the REFER (its implicit subscription gets the NOTIFY).
    pub referrer: LegId,
    pub refer_cseq: u32,
    pub orbit: OrbitNumber,
    /// The re-parked call and its leg.
    pub new_call: CallRef,
    pub kept: LegId,
    /// The bridge as it was, and the kept leg's role and orbit in it.
    pub old: Bridge,
    pub kept_role: LegRole,
    pub kept_orbit: OrbitNumber,
}

/// The journal room (see the module doc of [`super`]).
#[derive(Debug)]
pub struct JournalRoom {
    pub(super) on: bool,
    pub(super) gate: AckGate<Held>,
    /// What the current input holds back: it waits for the group this input's records go in.
    pub(super) pending: Vec<Held>,
    /// Calls that may have changed during the current input.
    touched: Vec<CallRef>,
    /// Records to write with the next group that no room produces (deletes of what a restore dropped).
    pub(super) extra: Vec<Record>,
    /// What is in the journal for each call: its record kind and the hash of its value (volatile fields blanked).
    pub(super) written: FxHashMap<CallRef, (RecordKind, u64)>,
    pub(super) subs_written: FxHashMap<SubId, u64>,
    /// The claim record written for each call parked in an orbit this node claimed (a cluster node).
    pub(super) claims_written: FxHashMap<CallRef, super::claims::ClaimRecord>,
    /// The SRTP record written for each SRTP leg of a journaled call: its call and the hash of its value (change
    /// it through [`JournalRoom::srtp_put`] / [`JournalRoom::srtp_remove`], which keep `srtp_by_call` in step).
    srtp_written: FxHashMap<LegId, (CallRef, u64)>,
    /// The legs in `srtp_written` per call: a touched call's stale SRTP records are found without a scan.
    srtp_by_call: FxHashMap<CallRef, Vec<LegId>>,
    /// The session-timer record written for each call whose legs have timers: the hash of its value.
    pub(super) stimers_written: FxHashMap<CallRef, u64>,
    /// Stream identities (SSRC, first sequence number and timestamp) of the legs parkd sends to.
    rng: SmallRng,
    /// Restored legs whose 2xx was never ACKed, by Call-ID and the caller's tag (a retransmitted INVITE).
    pub(super) unacked: HashMap<(CallId, String), LegId>,
    /// When each of them is asked whether it is in the call: at once, then, `last`, when it is given up on.
    pub(super) unacked_until: BinaryHeap<Reverse<(Time, LegId, bool)>>,
    /// Recalls that were ringing at the crash, CANCELled by the restore: rung again once their INVITE's final
    /// response came (and was ACKed), the CANCEL was refused (nothing rings there), or at the time given.
    pub(super) cancelling: FxHashMap<CallRef, RingRecord>,
    pub(super) cancel_until: BinaryHeap<Reverse<(Time, CallRef)>>,
    /// Groups holding outputs back, by the time they are given up on ([`super::ack::JOURNAL_STALL`] after they
    /// were written; a token reported meanwhile is no longer in the gate and is skipped).
    pub(super) stall_until: BinaryHeap<Reverse<(Time, JournalToken)>>,
}

impl JournalRoom {
    pub fn new(seed: u64) -> JournalRoom {
        JournalRoom {
            on: false,
            gate: AckGate::new(),
            pending: Vec::new(),
            touched: Vec::new(),
            extra: Vec::new(),
            written: FxHashMap::default(),
            subs_written: FxHashMap::default(),
            claims_written: FxHashMap::default(),
            srtp_written: FxHashMap::default(),
            srtp_by_call: FxHashMap::default(),
            stimers_written: FxHashMap::default(),
            rng: SmallRng::seed_from_u64(seed ^ 0x6a6f_7572_6e61_6c00),
            unacked: HashMap::new(),
            unacked_until: BinaryHeap::new(),
            cancelling: FxHashMap::default(),
            cancel_until: BinaryHeap::new(),
            stall_until: BinaryHeap::new(),
        }
    }

    /// The SRTP record written for `leg`: its call and hash.
    pub(super) fn srtp_get(&self, leg: LegId) -> Option<(CallRef, u64)> {
        self.srtp_written.get(&leg).copied()
    }

    /// Notes the SRTP record of `leg` (of `call`, value hash `h`) as written.
    pub(super) fn srtp_put(&mut self, leg: LegId, call: CallRef, h: u64) {
        if let Some((old, _)) = self.srtp_written.insert(leg, (call, h)) {
            if old == call {
                return;
            }
            self.srtp_unindex(leg, old);
        }
        self.srtp_by_call.entry(call).or_default().push(leg);
    }

    /// Forgets the SRTP record of `leg`; returns whether there was one.
    pub(super) fn srtp_remove(&mut self, leg: LegId) -> bool {
        let Some((call, _)) = self.srtp_written.remove(&leg) else { return false };
        self.srtp_unindex(leg, call);
        true
    }

    /// The legs of `call` with an SRTP record written.
    pub(super) fn srtp_legs_of(&self, call: CallRef) -> Vec<LegId> {
        self.srtp_by_call.get(&call).cloned().unwrap_or_default()
    }

    fn srtp_unindex(&mut self, leg: LegId, call: CallRef) {
        if let Some(v) = self.srtp_by_call.get_mut(&call) {
            v.retain(|l| *l != leg);
            if v.is_empty() {
                self.srtp_by_call.remove(&call);
            }
        }
    }

    /// Journaling is on.
    pub fn on(&self) -> bool {
        self.on
    }

    /// `call` may have changed: its record is compared (and written if it did) at the end of the input.
    pub fn touch(&mut self, call: CallRef) {
        if self.on {
            self.touched.push(call);
        }
    }

    /// The calls touched since the last call, each once, in order.
    pub(super) fn take_touched(&mut self) -> Vec<CallRef> {
        let mut v = std::mem::take(&mut self.touched);
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Holds `what` until the group of the current input is durable.
    pub fn hold(&mut self, what: Held) {
        self.pending.push(what);
    }

    /// A new outbound stream starting at `at`: random SSRC, sequence number (below 2^15, see
    /// [`crate::media::rtp::initial_seq`]) and timestamp (RFC 3550 §5.1).
    pub fn new_stream(&mut self, at: Time, pace: Pace) -> StreamAnchor {
        let ssrc = self.rng.gen();
        let seq = crate::media::rtp::initial_seq(&mut self.rng);
        StreamAnchor::new(ssrc, seq, self.rng.gen(), at, pace)
    }

    /// The earliest time a restored unacknowledged leg is given up on, a cancelled recall rings again, or a held
    /// group is given up on.
    pub fn next_deadline(&self) -> Option<Time> {
        let a = self.unacked_until.peek().map(|Reverse((t, _, _))| *t);
        let b = self.cancel_until.peek().map(|Reverse((t, _))| *t);
        let c = self.stall_until.peek().map(|Reverse((t, _))| *t);
        a.into_iter().chain(b).chain(c).min()
    }

    /// Pops a held group whose stall time is over at `now`.
    pub(super) fn pop_stalled(&mut self, now: Time) -> Option<JournalToken> {
        match self.stall_until.peek() {
            Some(Reverse((t, _))) if *t <= now => self.stall_until.pop().map(|Reverse((_, token))| token),
            _ => None,
        }
    }

    /// Pops a cancelled recall whose wait is over at `now`.
    pub(super) fn pop_cancel_due(&mut self, now: Time) -> Option<CallRef> {
        match self.cancel_until.peek() {
            Some(Reverse((t, _))) if *t <= now => self.cancel_until.pop().map(|Reverse((_, call))| call),
            _ => None,
        }
    }

    /// The cancelled recall whose INVITE had top-Via branch `branch`.
    pub(super) fn cancelled_by_branch(&self, branch: &str) -> Option<CallRef> {
        self.cancelling.iter().find(|(_, r)| r.invite.branch == branch).map(|(c, _)| *c)
    }

    /// Pops a restored unacknowledged leg whose time to be asked is up at `now`, and whether it is the last ask.
    pub(super) fn pop_unacked_due(&mut self, now: Time) -> Option<(LegId, bool)> {
        match self.unacked_until.peek() {
            Some(Reverse((t, _, _))) if *t <= now => self.unacked_until.pop().map(|Reverse((_, leg, last))| (leg, last)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::MAX_INITIAL_SEQ;

    /// The journaled streams (those the core chooses when the journal is on, parkd's default) start below
    /// sequence number 2^15 like the media plane's own (see `media::rtp::initial_seq`).
    #[test]
    fn new_streams_start_below_2_15() {
        let mut room = JournalRoom::new(11);
        let seqs: Vec<u16> = (0..4000).map(|i| room.new_stream(Time::from_millis(i), Pace::Hold).seq).collect();
        assert!(seqs.iter().all(|&s| s <= MAX_INITIAL_SEQ), "a journaled stream starts at or above 2^15");
        assert!(seqs.iter().any(|&s| s < 1000) && seqs.iter().any(|&s| s > MAX_INITIAL_SEQ - 1000));
    }
}
