//! What the journal holds, as the rooms' own plain data: one record per parked call, one per bridge, one per
//! BLF subscription (see the module doc of [`super`] for when each is written).

use crate::core::blf::Subscription;
use crate::core::bridging::{Bridge, OutgoingInvite, Recall};
use crate::core::dialogs::Leg;
use crate::core::events::RecallTarget;
use crate::core::parking::ParkedCall;
use crate::sip::Peer;
use crate::time::Time;
use serde::{Deserialize, Serialize};

/// CSeq numbers (and BLF NOTIFY versions) are reserved in blocks of this many: the journal holds a ceiling
/// above every one sent, rewritten only when the counter crosses a block boundary.
pub const RESERVE_BLOCK: u32 = 100;

/// The reserved ceiling for a counter at `n`: at least one block above it, changing only when `n` crosses a
/// multiple of [`RESERVE_BLOCK`]. While the journal holds `ceiling(n0)`, the counter sent values below
/// `(n0 / B + 1) · B` before the next crossing writes a new ceiling, so a restored counter set to the journaled
/// ceiling is above every value sent (unless a whole block went out between a write and its sync).
pub fn ceiling(n: u32) -> u32 {
    (n / RESERVE_BLOCK).saturating_add(2).saturating_mul(RESERVE_BLOCK)
}

/// A recall (or API unpark) ringing when the record was written: enough to CANCEL it after a restart (RFC 3261
/// §9.1: the INVITE's Request-URI, Call-ID, From, To, CSeq, top Via with its branch, Route) and whom it rang.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingRecord {
    pub invite: OutgoingInvite,
    pub next_hop: Peer,
    pub target: RecallTarget,
    pub ring_until: Time,
}

impl RingRecord {
    pub fn of(r: &Recall) -> RingRecord {
        RingRecord { invite: r.invite.clone(), next_hop: r.next_hop, target: r.target, ring_until: r.ring_until }
    }
}

/// `RecordKind::PARKED_CALL`, id = the call's number: the call in its orbit, its leg (dialog and media with
/// the stream anchor) and the recall ringing for it, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedRecord {
    pub call: ParkedCall,
    pub leg: Leg,
    pub ringing: Option<RingRecord>,
}

/// `RecordKind::BRIDGE`, id = the call's number: the bridge and both its legs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeRecord {
    pub bridge: Bridge,
    pub parked: Leg,
    pub other: Leg,
}

/// `RecordKind::BLF_SUBSCRIPTION`, id = the subscription's number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubRecord {
    pub sub: Subscription,
}

/// A record followed by the name of its lot (issue 21): lots are found again by name at a restart, so a reload
/// that removed, added or reordered lots (or two tenants' lots with the same numbers) restores each call into
/// its own lot. postcard writes the two one after the other: a record written before the name existed still
/// decodes ([`decode_with_lot`]: no name, the journaled lot index is used), and an older parkd reading a newer
/// record ignores the trailing name.
#[derive(Clone, Debug, Serialize)]
pub struct WithLot<R> {
    pub rec: R,
    pub lot: String,
}

impl<R: Volatile> Volatile for WithLot<R> {
    fn blank_volatile(&mut self) {
        self.rec.blank_volatile();
    }
}

/// A record and, when it was written with one, the name of its lot (see [`WithLot`]).
pub fn decode_with_lot<'a, R: Deserialize<'a>>(bytes: &'a [u8]) -> Result<(R, Option<String>), postcard::Error> {
    let (rec, rest) = postcard::take_from_bytes::<R>(bytes)?;
    let lot = if rest.is_empty() { None } else { Some(postcard::from_bytes::<String>(rest)?) };
    Ok((rec, lot))
}

/// A leg as journaled: its CSeq counter replaced by the reserved ceiling.
pub fn journaled_leg(leg: &Leg) -> Leg {
    let mut l = leg.clone();
    l.dialog.local_seq = ceiling(l.dialog.local_seq);
    l
}

/// A parked call as journaled: the keepalive deadline is not (it is re-armed from the restart).
pub fn journaled_call(call: &ParkedCall) -> ParkedCall {
    ParkedCall { keepalive_at: None, ..call.clone() }
}

/// A subscription as journaled, or `None` when it is ending (nothing to restore): nothing in flight, CSeq and
/// NOTIFY version replaced by their reserved ceilings.
pub fn journaled_sub(sub: &Subscription) -> Option<Subscription> {
    if sub.ending.is_some() || sub.final_sent {
        return None;
    }
    let mut s = sub.clone();
    s.in_flight = None;
    s.dirty = false;
    s.next_version = ceiling(s.next_version);
    s.dialog.local_seq = ceiling(s.dialog.local_seq);
    Some(s)
}

/// The fields of a record that change without needing a write (the peer's CSeq, moved by every request it
/// sends: its OPTIONS keepalives): blanked in the copy whose hash decides whether to write.
pub trait Volatile {
    fn blank_volatile(&mut self);
}

impl Volatile for ParkedRecord {
    fn blank_volatile(&mut self) {
        self.leg.dialog.remote_seq = None;
    }
}

impl Volatile for BridgeRecord {
    fn blank_volatile(&mut self) {
        self.parked.dialog.remote_seq = None;
        self.other.dialog.remote_seq = None;
    }
}

impl Volatile for SubRecord {
    fn blank_volatile(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record written before lot names existed decodes without one; a named one gives its name back.
    #[test]
    fn records_decode_with_and_without_their_lot_name() {
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        struct R {
            a: u32,
            b: Option<String>,
        }
        let r = R { a: 7, b: Some("x".into()) };
        let old = crate::journal::to_value(&r).unwrap();
        assert_eq!(decode_with_lot::<R>(&old).unwrap(), (r.clone(), None));
        #[derive(Serialize)]
        struct W<'a> {
            rec: &'a R,
            lot: String,
        }
        let new = crate::journal::to_value(&W { rec: &r, lot: "tenant-a".into() }).unwrap();
        assert_eq!(decode_with_lot::<R>(&new).unwrap(), (r.clone(), Some("tenant-a".into())));
        assert_eq!(crate::journal::from_value::<R>(&new).unwrap(), r, "an older parkd ignores the trailing name");
    }

    #[test]
    fn the_ceiling_stays_a_block_ahead_and_moves_only_at_block_boundaries() {
        assert_eq!(ceiling(0), 200);
        assert_eq!(ceiling(99), 200);
        assert_eq!(ceiling(100), 300);
        for n in 0..1_000 {
            assert!(ceiling(n) > n + RESERVE_BLOCK, "{n}");
            // Every value sent before the next write (the next boundary) is below the journaled ceiling.
            let next_boundary = (n / RESERVE_BLOCK + 1) * RESERVE_BLOCK;
            assert!(next_boundary <= ceiling(n));
        }
        assert_eq!(ceiling(u32::MAX), u32::MAX);
    }
}
