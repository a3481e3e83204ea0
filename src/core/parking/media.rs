//! What a parked call hears: the parking room decides when hold music starts for a call and what the media
//! plane is told, reading the parked leg from the dialogs room.

use super::{MediaMode, Parking};
use crate::core::dialogs::{Dialogs, LegState};
use crate::core::events::ParkHow;
use crate::core::ids::CallRef;
use crate::media::{MediaCommand, MusicId, Prompt};

impl Parking {
    /// Starts hold music for `call` if it has none yet and its parked leg is confirmed with an address: the
    /// commands for the media plane (music of the call's lot, a send-only leg muted, its DTMF payload type,
    /// and for a caller who parked itself with the park code, "parked on 701" when the lot announces orbits).
    /// `None` while there is nothing to start.
    pub fn start_hold(&mut self, call: CallRef, dialogs: &Dialogs) -> Option<Vec<MediaCommand>> {
        let c = self.get(call).filter(|c| c.media_mode == MediaMode::None)?;
        let announce = c.how == ParkHow::Indirect && c.parker.is_none() && self.cfg(c.lot).is_some_and(|l| l.announce_orbit);
        let parked = dialogs.get(c.parked)?;
        let m = &parked.media;
        let remote = m.remote.filter(|_| parked.state == LegState::Confirmed)?;
        let mut cmds = vec![MediaCommand::Hold { leg: m.media_leg, remote, codec: m.codec, music: MusicId(c.lot as u16) }];
        if !m.may_send() {
            cmds.push(MediaCommand::Update { leg: m.media_leg, remote, codec: m.codec, send: false });
        }
        cmds.push(MediaCommand::DtmfPayloadType { leg: m.media_leg, pt: m.dtmf_pt });
        if announce && m.may_send() {
            cmds.push(MediaCommand::Announce { leg: m.media_leg, words: Prompt::orbit_announcement(&c.orbit_name) });
        }
        self.get_mut(call)?.media_mode = MediaMode::Hold;
        Some(cmds)
    }
}
