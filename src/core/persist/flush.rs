//! Writing: at the end of every input, the records of what changed go out as one group (split only when very
//! large), with a token when the input held something back.

use super::records::{journaled_call, journaled_leg, journaled_sub, BridgeRecord, ParkedRecord, RingRecord, SubRecord, Volatile, WithLot};
use crate::core::blf::SubId;
use crate::core::ids::CallRef;
use crate::core::Core;
use crate::journal::{to_value, Record, RecordKey, RecordKind};
use crate::time::Time;
use serde::Serialize;
use std::hash::{Hash, Hasher};

/// A group is cut after this many bytes of values (a restore of thousands of calls writes several groups;
/// a frame holds at most 1 MiB).
const GROUP_BYTES: usize = 256 * 1024;

/// A call's record as it would be written now.
enum CallRecord {
    Parked(Box<ParkedRecord>),
    Bridged(Box<BridgeRecord>),
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The value to write for `rec` and its hash, or `None` when it has the hash `prev` (nothing to write). The hash
/// is of the record with its volatile fields blanked: those alone changing is no reason to write. `rec` is
/// blanked in place once its value is encoded (no copy of the record).
fn encode_if_changed<R: Serialize + Volatile>(mut rec: R, prev: Option<u64>) -> Option<(u64, Vec<u8>)> {
    let encoded = to_value(&rec).and_then(|value| {
        rec.blank_volatile();
        Ok((hash_of(&to_value(&rec)?), value))
    });
    match encoded {
        Ok((h, _)) if prev == Some(h) => None,
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(%e, "cannot encode a journal record; not written");
            None
        }
    }
}

impl Core {
    /// `call` may have changed (journaling on): its record is checked at the end of the input.
    pub(in crate::core) fn touch(&mut self, call: CallRef) {
        self.journal.touch(call);
    }

    /// Whether journaling is on.
    pub(in crate::core) fn journaling(&self) -> bool {
        self.journal.on()
    }

    /// Writes what the current input changed: one group (the calls and subscriptions touched whose record
    /// differs from the one written, deletes for those that ended), with a token for what the input held back.
    pub(in crate::core) fn flush_journal(&mut self, now: Time) {
        if !self.journal.on {
            return;
        }
        let mut records = std::mem::take(&mut self.journal.extra);
        for call in self.journal.take_touched() {
            self.journal_call(call, &mut records);
            self.journal_claim(call, &mut records);
            self.journal_srtp(call, &mut records);
            self.journal_stimers(call, &mut records);
        }
        let mut subs = self.blf.take_touched();
        subs.sort_unstable();
        subs.dedup();
        for id in subs {
            self.journal_sub(id, &mut records);
        }
        let held = std::mem::take(&mut self.journal.pending);
        if records.is_empty() && held.is_empty() {
            return;
        }
        // Large groups (a restore) are cut; the token goes with the last, durable only after the others.
        let mut group = Vec::new();
        let mut bytes = 0;
        for r in records {
            bytes += match &r {
                Record::Put { value, .. } => value.len() + 32,
                Record::Delete { .. } => 32,
            };
            group.push(r);
            if bytes >= GROUP_BYTES {
                self.ep.journal(std::mem::take(&mut group), None);
                bytes = 0;
            }
        }
        let token = (!held.is_empty()).then(|| {
            let token = self.journal.gate.hold(held);
            // A store that never answers (a hung disk, a stuck network filesystem) must not keep the park
            // waiting for ever: past the stall time the held outputs are refused as if the write had failed.
            self.journal.stall_until.push(std::cmp::Reverse((now + super::ack::JOURNAL_STALL, token)));
            token
        });
        if !group.is_empty() || token.is_some() {
            self.ep.journal(group, token);
        }
    }

    fn call_record(&self, call: CallRef) -> Option<CallRecord> {
        if let Some(c) = self.parking.get(call) {
            let leg = self.dialogs.get(c.parked)?;
            // A recall CANCELled by a restore and not rung again yet stays in the record: a second crash CANCELs it again.
            let ringing = self.bridging.ringing(call).map(RingRecord::of).or_else(|| self.journal.cancelling.get(&call).cloned());
            return Some(CallRecord::Parked(Box::new(ParkedRecord { call: journaled_call(c), leg: journaled_leg(leg), ringing })));
        }
        let b = self.bridging.get(call)?;
        let (parked, other) = (self.dialogs.get(b.parked)?, self.dialogs.get(b.other)?);
        Some(CallRecord::Bridged(Box::new(BridgeRecord { bridge: b.clone(), parked: journaled_leg(parked), other: journaled_leg(other) })))
    }

    fn journal_call(&mut self, call: CallRef, out: &mut Vec<Record>) {
        let prev = self.journal.written.get(&call).copied();
        let key = |kind| RecordKey::new(kind, call.0.to_string());
        let (kind, encoded) = match self.call_record(call) {
            None => {
                if let Some((kind, _)) = self.journal.written.remove(&call) {
                    out.push(Record::delete(key(kind)));
                }
                return;
            }
            Some(CallRecord::Parked(r)) => {
                let same = prev.filter(|(k, _)| *k == RecordKind::PARKED_CALL).map(|(_, h)| h);
                let lot = self.parking.lot_name(r.call.lot);
                (RecordKind::PARKED_CALL, encode_if_changed(WithLot { rec: *r, lot }, same))
            }
            Some(CallRecord::Bridged(r)) => {
                let same = prev.filter(|(k, _)| *k == RecordKind::BRIDGE).map(|(_, h)| h);
                let lot = self.parking.lot_name(r.bridge.lot);
                (RecordKind::BRIDGE, encode_if_changed(WithLot { rec: *r, lot }, same))
            }
        };
        let Some((hash, value)) = encoded else { return };
        if let Some((old, _)) = prev.filter(|(k, _)| *k != kind) {
            // A parked call taken into a bridge (or a bridge re-parked under its id): the old record goes.
            out.push(Record::delete(key(old)));
        }
        out.push(Record::put(key(kind), value));
        self.journal.written.insert(call, (kind, hash));
    }

    fn journal_sub(&mut self, id: SubId, out: &mut Vec<Record>) {
        let key = RecordKey::new(RecordKind::BLF_SUBSCRIPTION, id.0.to_string());
        let Some(sub) = self.blf.get(id).and_then(journaled_sub) else {
            if self.journal.subs_written.remove(&id).is_some() {
                out.push(Record::delete(key));
            }
            return;
        };
        let prev = self.journal.subs_written.get(&id).copied();
        let lot = self.parking.lot_name(sub.lot);
        if let Some((hash, value)) = encode_if_changed(WithLot { rec: SubRecord { sub }, lot }, prev) {
            out.push(Record::put(key, value));
            self.journal.subs_written.insert(id, hash);
        }
    }
}
