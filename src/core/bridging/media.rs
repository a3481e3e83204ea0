//! When a bridge starts relaying: the bridging room decides, reading both legs from the dialogs room.

use super::Bridging;
use crate::core::dialogs::{Dialogs, LegState};
use crate::core::ids::CallRef;
use crate::core::parking::MediaMode;
use crate::media::MediaCommand;

impl Bridging {
    /// Starts the relay of bridge `call` once both legs are confirmed (the parked one with an address): the
    /// other leg is described to the media plane (it is new there), then the two are bridged. `None` while it
    /// cannot start yet, or when it already relays.
    pub fn start_relay(&mut self, call: CallRef, dialogs: &Dialogs) -> Option<[MediaCommand; 3]> {
        let b = self.get(call).filter(|b| b.media_mode != MediaMode::Bridged)?;
        let (parked, o) = (dialogs.get(b.parked)?, dialogs.get(b.other)?);
        let parked_ready = parked.state == LegState::Confirmed && parked.media.remote.is_some();
        let remote = o.media.remote.filter(|_| parked_ready && o.state == LegState::Confirmed)?;
        let cmds = [
            MediaCommand::Update { leg: o.media.media_leg, remote, codec: o.media.codec, send: o.media.may_send() },
            MediaCommand::DtmfPayloadType { leg: o.media.media_leg, pt: o.media.dtmf_pt },
            MediaCommand::Bridge { a: parked.media.media_leg, b: o.media.media_leg },
        ];
        self.get_mut(call)?.media_mode = MediaMode::Bridged;
        Some(cmds)
    }
}
