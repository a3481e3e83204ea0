//! Direct media after a retrieve (placeholder, filled in below).

use super::ids::{CallRef, LegId};
use super::Core;
use crate::time::Time;

impl Core {
    pub(super) fn invite_pending(&self, _leg: LegId) -> bool {
        false
    }
    pub(super) fn direct_body(&self, _leg: LegId) -> Option<bytes::Bytes> {
        None
    }
    pub(super) fn direct_step_due(&mut self, _now: Time, _leg: LegId) -> bool {
        false
    }
    pub(super) fn direct_reoffer(&mut self, _now: Time, _leg: LegId, _req: &crate::sip::Request) -> bool {
        false
    }
    pub(super) fn direct_forget(&mut self, _call: CallRef) {}
}
