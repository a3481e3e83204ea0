//! A cluster node's claims in the journal (issue 18): `orbit_claim/<call>` holds the fence of the Redis claim of
//! the orbit a call is parked in ([`ClaimRecord`]), written in the same group as the call's record (so a park's
//! `200 OK` waits for it too) and deleted when the call leaves its orbit or the node no longer holds the claim.
//!
//! At a restart, each restored parked call takes its claim back from the record ([`ClusterRoom::adopt`]) before
//! the node reaches Redis. The resync after connecting then keeps it when Redis still has it in this node's name
//! with this fence (a restart within the lease: the orbit never looks free to the other nodes), restores it when
//! Redis lost it, and reports it lost when another node took the orbit meanwhile (the call then moves). Without
//! the record (a single node's journal, an older parkd's) the call asks for its orbit again once Redis answers.
//!
//! [`ClusterRoom::adopt`]: crate::cluster::ClusterRoom::adopt

use crate::cluster::{ClaimInfo, Fence, Slot};
use crate::core::ids::CallRef;
use crate::core::Core;
use crate::ids::OrbitIdx;
use crate::journal::{from_value, to_value, LiveSet, Record, RecordKey, RecordKind};
use crate::time::Time;
use serde::{Deserialize, Serialize};

/// `RecordKind::ORBIT_CLAIM`, id = the call's number: the claim of the orbit the call is parked in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    pub lot: usize,
    pub orbit: usize,
    pub fence: Fence,
}

impl Core {
    /// What other nodes show of `call` (parked here) in the cluster's view.
    fn claim_info_of(&self, call: CallRef) -> Option<ClaimInfo> {
        let sip = self.cluster.as_ref()?.room.settings().sip.clone();
        Some(crate::core::cluster::claim_info(&self.dialogs, self.parking.get(call)?, sip))
    }

    /// The claim record of `call` as it should be now: written, rewritten or deleted (journaling on).
    pub(super) fn journal_claim(&mut self, call: CallRef, out: &mut Vec<Record>) {
        let now = self.parking.get(call).and_then(|p| {
            let own = self.cluster.as_ref()?.room.own_claim(Slot { lot: p.lot, orbit: p.orbit })?;
            Some(ClaimRecord { lot: p.lot, orbit: p.orbit.0, fence: own.fence })
        });
        let key = RecordKey::new(RecordKind::ORBIT_CLAIM, call.0.to_string());
        let written = self.journal.claims_written.get(&call).copied();
        match now {
            Some(r) if written != Some(r) => match to_value(&r) {
                Ok(value) => {
                    out.push(Record::put(key, value));
                    self.journal.claims_written.insert(call, r);
                }
                Err(e) => tracing::error!(%e, "cannot encode a claim record; not written"),
            },
            None if written.is_some() => {
                out.push(Record::delete(key));
                self.journal.claims_written.remove(&call);
            }
            _ => {}
        }
    }

    /// The restored parked calls take back the claims the journal holds for them (a cluster node; on a single
    /// node the records are deleted). Records of calls not restored, or of another orbit, are deleted.
    pub(super) fn restore_claims(&mut self, live: &LiveSet, now: Time) {
        for (id, bytes) in live.of_kind(RecordKind::ORBIT_CLAIM) {
            let key = RecordKey::new(RecordKind::ORBIT_CLAIM, id);
            let record = id.parse::<u64>().ok().map(CallRef).zip(from_value::<ClaimRecord>(bytes).ok());
            let adopted = record.and_then(|(call, r)| {
                let p = self.parking.get(call).filter(|p| p.lot == r.lot && p.orbit == OrbitIdx(r.orbit))?;
                let slot = Slot { lot: p.lot, orbit: p.orbit };
                let info = self.claim_info_of(call)?;
                let c = self.cluster.as_mut()?;
                c.room.adopt(now, slot, r.fence, info);
                c.room.own_claim(slot)?;
                Some((call, r))
            });
            match adopted {
                Some((call, r)) => {
                    tracing::info!(orbit = %self.parking.orbit_name(r.lot, OrbitIdx(r.orbit)), fence = r.fence.0, "cluster: the journal's claim of a restored call taken back");
                    self.journal.claims_written.insert(call, r);
                }
                None => self.journal.extra.push(Record::delete(key)),
            }
        }
    }
}
