//! An application's re-park of a bridged call ([`Command::ParkCall`], HTTP `POST /v1/calls/{call_id}/park`) on a
//! node of a cluster (issue 18): like a REFER's re-park, it first claims its orbit cluster-wide, and is answered
//! when the claim is ([`Output::CommandDone`], within the room's `claim_timeout`):
//! * granted → the call is parked into that orbit and the application's leg released, as on a single node;
//! * the orbit held by another node → `OrbitOccupied` (409); the lot full everywhere → `LotFull`;
//! * Redis not answering → `ClusterUnavailable` (503): nothing parked, the call stays bridged.
//!
//! [`Command::ParkCall`]: super::Command::ParkCall
//! [`Output::CommandDone`]: super::Output::CommandDone

use super::commands::{CommandError, CommandTicket, ParkCallTarget};
use super::Core;
use crate::cluster::{ClaimId, ClaimInfo, ClaimResult, Want};
use crate::time::Time;

impl Core {
    /// Claims the orbit of a re-park the application asked for; the answer comes as `Output::CommandDone`.
    pub(super) fn api_park_via_cluster(&mut self, now: Time, ticket: CommandTicket, t: ParkCallTarget) {
        let parked = self.dialogs.get(t.keep).map(|l| l.dialog.remote()).map(|na| (na.uri.to_string(), na.display.map(String::from)));
        let Some(c) = self.cluster.as_mut() else { return };
        let (parked, parked_name) = parked.unwrap_or_default();
        let info = ClaimInfo {
            parked,
            parked_name,
            parker: t.parker.as_ref().map(|p| p.uri.to_string()),
            since_ms: now.as_millis(),
            dialog: super::cluster::parked_dialog(&self.dialogs, t.keep),
            node_sip: Some(c.room.settings().sip.clone()),
        };
        c.next_id += 1;
        let id = ClaimId(c.next_id);
        let (lot, want) = (t.lot, t.wanted.map_or(Want::Any, Want::Orbit));
        c.api_parks.insert(id, (ticket, t));
        c.room.claim(now, id, lot, want, info);
    }

    /// The claim of an application's re-park was answered.
    pub(super) fn on_api_claim(&mut self, now: Time, ticket: CommandTicket, t: ParkCallTarget, result: ClaimResult) {
        let answer = match result {
            ClaimResult::Granted { slot, fence } => {
                tracing::debug!(lot = slot.lot, orbit = slot.orbit.0, fence = fence.0, "cluster: orbit granted to an API re-park");
                let t = ParkCallTarget { lot: slot.lot, ..t };
                let r = self.park_call_into(now, t, Some(slot.orbit));
                if r.is_err() {
                    // The call ended (or the orbit got taken here) meanwhile: give the orbit back.
                    self.release_claim(slot);
                }
                r
            }
            ClaimResult::Taken { owner, .. } => {
                tracing::info!(%owner, "cluster: the orbit an application asked for is held by a node");
                Err(CommandError::OrbitOccupied(t.orbit.unwrap_or_default()))
            }
            ClaimResult::Full { .. } => Err(CommandError::LotFull(self.parking.lot_name(t.lot))),
            ClaimResult::Unavailable => Err(CommandError::ClusterUnavailable),
        };
        self.ep.command_done(ticket, answer);
    }
}
