//! Session timers in the journal (issue 21 over issue 17): `session_timers/<call>` ([`StimerRecord`]) holds the
//! [`SessionTimer`] of each of the call's legs that has one — interval, who refreshes, and the absolute
//! deadlines — written in the same group as the call's record whenever a timer changes (a refresh moves its
//! deadlines: one small write per refresh), deleted when the call ends or no leg has a timer any more. The legs'
//! own records are unchanged, so an older parkd still reads the journal (and carries the unknown kind along).
//!
//! Restored, a deadline that passed while parkd was down fires at once (an expired session is ended with a
//! BYE, a refresh parkd owed is sent now); a refresh that was in flight at the crash is sent again now.

use crate::core::dialogs::timer::SessionTimer;
use crate::core::ids::{CallRef, LegId};
use crate::core::Core;
use crate::journal::{from_value, to_value, LiveSet, Record, RecordKey, RecordKind};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

/// `RecordKind::SESSION_TIMERS`, id = the call's number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StimerRecord {
    pub legs: Vec<(LegId, SessionTimer)>,
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn key(call: CallRef) -> RecordKey {
    RecordKey::new(RecordKind::SESSION_TIMERS, call.0.to_string())
}

impl Core {
    /// The session-timer record of `call` as it should be now: written, rewritten or deleted (journaling on).
    pub(super) fn journal_stimers(&mut self, call: CallRef, out: &mut Vec<Record>) {
        let legs: Vec<LegId> = match (self.parking.get(call), self.bridging.get(call)) {
            (Some(c), _) => vec![c.parked],
            (None, Some(b)) => vec![b.parked, b.other],
            _ => Vec::new(),
        };
        let timers: Vec<(LegId, SessionTimer)> = legs.iter().filter_map(|id| Some((*id, *self.dialogs.get(*id)?.timer.as_deref()?))).collect();
        if timers.is_empty() {
            if self.journal.stimers_written.remove(&call).is_some() {
                out.push(Record::delete(key(call)));
            }
            return;
        }
        match to_value(&StimerRecord { legs: timers }) {
            Ok(value) => {
                let h = hash_of(&value);
                if self.journal.stimers_written.insert(call, h) != Some(h) {
                    out.push(Record::put(key(call), value));
                }
            }
            Err(e) => tracing::error!(%e, "cannot encode a session-timer record; not written"),
        }
    }

    /// Puts the journal's session timers back on the restored legs and arms them; records of calls not restored
    /// are deleted.
    pub(super) fn restore_stimers(&mut self, live: &LiveSet, now: Time) {
        for (id, bytes) in live.of_kind(RecordKind::SESSION_TIMERS) {
            let record = id.parse::<u64>().ok().map(CallRef).zip(from_value::<StimerRecord>(bytes).ok());
            let Some((call, r)) = record else {
                self.journal.extra.push(Record::delete(RecordKey::new(RecordKind::SESSION_TIMERS, id)));
                continue;
            };
            let mut any = false;
            for (leg_id, mut t) in r.legs {
                let Some(leg) = self.dialogs.get_mut(leg_id).filter(|l| l.call == call) else { continue };
                if t.in_flight || (t.parkd_refreshes && t.refresh_at.is_none()) {
                    // The refresh in flight at the crash has no transaction any more: send it again now.
                    t.in_flight = false;
                    t.refresh_at = t.parkd_refreshes.then_some(now);
                }
                leg.timer = Some(Box::new(t));
                self.dialogs.arm_timer(leg_id);
                any = true;
            }
            if any {
                self.journal.stimers_written.insert(call, hash_of(bytes));
                self.touch(call);
            } else {
                self.journal.extra.push(Record::delete(key(call)));
            }
        }
    }
}
