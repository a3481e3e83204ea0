//! Is the parked party still there? A phone that crashes or loses its network sends no BYE, and its call would
//! hold the orbit (and ring the parker back to nobody) until `max_park_time`. parkd sends an in-dialog OPTIONS
//! every `keepalive_interval` seconds to each parked party (as Asterisk's and FreeSWITCH's keepalives do): any
//! answer means alive; `481` (the dialog is gone) or no answer at all (`408`, Timer F) ends the parked call.

use super::ids::CallRef;
use super::{Purpose, Core};
use crate::sip::Method;
use crate::time::Time;

impl Core {
    /// The keepalive deadline fired: send OPTIONS in the parked dialog and arm the next one.
    pub(super) fn send_keepalive(&mut self, now: Time, call: CallRef) {
        let Some(leg_id) = self.parking.get(call).map(|c| c.parked) else { return };
        self.touch(call);
        let Some(leg) = self.dialogs.get_mut(leg_id) else { return };
        let options = self.ep.request_in(&mut leg.dialog, Method::Options);
        let hop = leg.dialog.next_hop;
        self.ep.send(now, hop, &options, Purpose::Keepalive(call));
        self.parking.arm_keepalive(now, call);
    }

    /// The keepalive's outcome: 481 or a timeout (408) means the parked party is gone.
    pub(super) fn on_keepalive_result(&mut self, now: Time, call: CallRef, status: u16) {
        if status != 481 && status != 408 {
            return;
        }
        let Some(c) = self.parking.get(call) else { return };
        let leg = c.parked;
        tracing::info!(orbit = %c.orbit_name, status, "parked party no longer answers in its dialog; ending the parked call");
        self.end_leg(now, leg, true);
    }
}
