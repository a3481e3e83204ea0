//! What happens to a call's media and legs after the handshake: media commands, re-INVITEs, hang-ups.

use super::dialogs::LegState;
use super::events::ParkHow;
use super::ids::LegId;
use super::parking::MediaMode;
use super::{Core, ParkEvent, Purpose};
use crate::media::anchor::{Pace, StreamAnchor};
use crate::media::{MediaCommand, MusicId, Prompt};
use crate::sip::{Method, Peer, Request};
use crate::time::Time;
use crate::txn::ServerTxnId;

impl Core {
    /// A media leg for a call that will be bridged to `call`'s parked party (retrieve, recall, API unpark):
    /// in the same media thread's block of ports, since relaying stays within one thread.
    pub(super) fn port_beside_parked(&mut self, now: Time, call: super::ids::CallRef) -> Option<crate::media::MediaLegId> {
        match self.parking.get(call).and_then(|c| self.dialogs.get(c.parked)).map(|l| l.media.media_leg) {
            Some(partner) => self.ports.take_beside(now, partner),
            None => self.ports.take(now),
        }
    }

    /// Brings the media plane in line with the call's state: hold music while parked (once the parked leg is
    /// confirmed), a bridge once both legs of a taken call are confirmed.
    pub(super) fn sync_media(&mut self, now: Time, call: super::CallRef) {
        self.touch(call);
        if self.parking.get(call).is_some() {
            self.sync_hold(now, call);
        } else {
            self.sync_bridge(now, call);
        }
    }

    /// With journaling on: the leg's outbound stream from now on with `pace`, recorded in the leg, and the
    /// command giving the media plane its identity when the stream is new (see `persist`). `None` when off.
    fn stream_for(&mut self, now: Time, leg: LegId, pace: Pace) -> Option<MediaCommand> {
        if !self.journaling() {
            return None;
        }
        let fresh = self.journal.new_stream(now, pace);
        let l = self.dialogs.get_mut(leg)?;
        match l.media.stream {
            // A relayed stream's position is a guess (the peer paces it): parkd's own stream restarts past it,
            // with the margin a restart would use, so that the sequence never goes back.
            Some(a) if a.pace == Pace::Relay && pace != Pace::Relay => {
                let r = StreamAnchor { pace, ..a.resume(now) };
                l.media.stream = Some(r);
                Some(MediaCommand::Stream { leg: l.media.media_leg, ssrc: r.ssrc, seq: r.seq, ts: r.ts })
            }
            Some(a) => {
                l.media.stream = Some(a.moved(now, pace));
                None
            }
            None => {
                l.media.stream = Some(fresh);
                Some(MediaCommand::Stream { leg: l.media.media_leg, ssrc: fresh.ssrc, seq: fresh.seq, ts: fresh.ts })
            }
        }
    }

    /// Hold music for parked call `call`, once its leg is confirmed and has an address.
    fn sync_hold(&mut self, now: Time, call: super::CallRef) {
        let Some(c) = self.parking.get(call) else { return };
        if c.media_mode != MediaMode::None {
            return;
        }
        // A caller who parked itself (park code, no Referred-By) hears where it went: "parked on 701".
        let announce = c.how == ParkHow::Indirect && c.parker.is_none() && self.parking.cfg(c.lot).is_some_and(|l| l.announce_orbit);
        let orbit_name = announce.then(|| c.orbit_name.clone());
        let (lot, leg_id) = (c.lot, c.parked);
        let ready = self.dialogs.get(leg_id).is_some_and(|l| l.state == LegState::Confirmed && l.media.remote.is_some());
        if !ready {
            return;
        }
        let pace = if self.dialogs.get(leg_id).is_some_and(|l| l.media.may_send()) { Pace::Hold } else { Pace::Paused };
        let stream = self.stream_for(now, leg_id, pace);
        let Some(parked) = self.dialogs.get(leg_id) else { return };
        let m = &parked.media;
        let Some(remote) = m.remote else { return };
        let mut cmds: Vec<MediaCommand> = stream.into_iter().collect();
        cmds.push(MediaCommand::Hold { leg: m.media_leg, remote, codec: m.codec, music: MusicId(lot as u16) });
        if !m.may_send() {
            cmds.push(MediaCommand::Update { leg: m.media_leg, remote, codec: m.codec, send: false });
        }
        cmds.push(MediaCommand::DtmfPayloadType { leg: m.media_leg, pt: m.dtmf_pt });
        if let Some(orbit) = orbit_name.as_deref().filter(|_| m.may_send()) {
            cmds.push(MediaCommand::Announce { leg: m.media_leg, words: Prompt::orbit_announcement(orbit) });
        }
        if let Some(c) = self.parking.get_mut(call) {
            c.media_mode = MediaMode::Hold;
        }
        for cmd in cmds {
            self.ep.media(cmd);
        }
    }

    /// The relay of bridge `call`, once both legs are confirmed (the parked one with an address).
    fn sync_bridge(&mut self, now: Time, call: super::CallRef) {
        let Some(b) = self.bridging.get(call).filter(|b| b.media_mode != MediaMode::Bridged) else { return };
        let (parked_id, other_id, lot) = (b.parked, b.other, b.lot);
        let (Some(parked), Some(o)) = (self.dialogs.get(parked_id), self.dialogs.get(other_id)) else { return };
        let parked_ready = parked.state == LegState::Confirmed && parked.media.remote.is_some();
        if !(parked_ready && o.state == LegState::Confirmed && o.media.remote.is_some()) {
            return;
        }
        let _ = self.stream_for(now, parked_id, Pace::Relay);
        let stream = self.stream_for(now, other_id, Pace::Relay);
        let (Some(parked), Some(o)) = (self.dialogs.get(parked_id), self.dialogs.get(other_id)) else { return };
        let Some(remote) = o.media.remote else { return };
        // The other leg is new to the media plane: describe it (its stream first), then bridge.
        if let Some(s) = stream {
            self.ep.media(s);
        }
        let mut cmds = vec![
            MediaCommand::Update { leg: o.media.media_leg, remote, codec: o.media.codec, send: o.media.may_send() },
            MediaCommand::DtmfPayloadType { leg: o.media.media_leg, pt: o.media.dtmf_pt },
            MediaCommand::Bridge { a: parked.media.media_leg, b: o.media.media_leg },
        ];
        // The courtesy tone (issue 21): to whom the lot says, inserted into what the relay sends them.
        let (to_parked, to_other) = self.parking.cfg(lot).map_or((false, false), |l| l.courtesy_tone.parties());
        for (yes, leg) in [(to_parked, parked.media.media_leg), (to_other, o.media.media_leg)] {
            if yes {
                cmds.push(MediaCommand::Courtesy { leg, tone: MusicId(lot as u16) });
            }
        }
        if let Some(b) = self.bridging.get_mut(call) {
            b.media_mode = MediaMode::Bridged;
        }
        for cmd in cmds {
            self.ep.media(cmd);
        }
        self.direct_start(now, call);
    }

    /// Starts the parking period of `call` (just parked, or re-parked): records it, reports it, arms its recall
    /// and maximum-park deadlines, tells watchers, and starts music if its leg is already confirmed.
    pub(super) fn start_parking(&mut self, now: Time, call: super::parking::ParkedCall, call_id: crate::ids::CallId, parked_label: String) {
        let (id, lot, orbit) = (call.id, call.lot, call.orbit);
        let lot_name = self.parking.lot_name(lot);
        tracing::info!(orbit = %call.orbit_name, lot = %lot_name, parker = ?call.parker.as_ref().map(|p| p.uri.to_string()), how = ?call.how, "parked");
        self.emit_when_stored(ParkEvent::Parked {
            lot: lot_name,
            orbit: call.orbit_name.clone(),
            call_id,
            parked: parked_label,
            parker: call.parker.as_ref().map(|p| p.uri.to_string()),
            how: call.how,
            domain: self.parking.cfg(lot).and_then(|c| c.domains.first().cloned()),
        });
        self.parking.park(now, call);
        self.orbit_changed(now, lot, orbit);
        self.sync_media(now, id);
    }

    /// Tells the media plane how leg `m` carries RTCP when that changed from `was` (`(rtcp_mux, peer_rtcp)`
    /// before; a new leg: `(false, 0)`): rtcp-mux on the RTP port, else the phone's RTCP port (see
    /// `media::plane_rtcp`).
    pub(super) fn rtcp_media(&mut self, m: &crate::core::dialogs::LegMedia, was: (bool, u16)) {
        rtcp_commands(&mut self.ep, m, was);
    }

    /// [`Core::rtcp_media`] for a leg parkd just created (a call it made, answered).
    pub(super) fn rtcp_media_of(&mut self, leg_id: LegId) {
        if let Some(leg) = self.dialogs.get(leg_id) {
            rtcp_commands(&mut self.ep, &leg.media, (false, 0));
        }
    }

    /// Applies an SDP body from the peer of `leg_id` (an answer in an ACK, or an offer in a re-INVITE).
    /// Returns false when it cannot be used.
    pub(super) fn apply_remote_sdp(&mut self, now: Time, leg_id: LegId, body: &[u8]) -> bool {
        let Some(leg) = self.dialogs.get_mut(leg_id) else { return false };
        let was = (leg.media.rtcp_mux, leg.media.peer_rtcp);
        if !leg.media.apply_remote(body) {
            return false;
        }
        let Some(leg) = self.dialogs.get(leg_id) else { return false };
        let (ep, media) = (&mut self.ep, &leg.media);
        rtcp_commands(ep, media, was);
        let call = leg.call;
        let mode = self.parking.get(call).map(|c| c.media_mode).or_else(|| self.bridging.get(call).map(|b| b.media_mode));
        let started = mode.is_some_and(|m| m != MediaMode::None);
        let Some(leg) = self.dialogs.get_mut(leg_id) else { return false };
        let m = &mut leg.media;
        if started {
            if let Some(remote) = m.remote {
                // A held stream pauses or resumes with the peer's direction: its anchor follows.
                if let Some(a) = m.stream.filter(|a| a.pace != Pace::Relay) {
                    m.stream = Some(a.moved(now, if m.may_send() { Pace::Hold } else { Pace::Paused }));
                }
                let roc = crate::core::persist::follow_index(m);
                let (srtp, media_leg) = (m.srtp.clone(), m.media_leg);
                let update = MediaCommand::Update { leg: media_leg, remote, codec: m.codec, send: m.may_send() };
                if let Some(s) = &srtp {
                    // The re-offer may have rekeyed the peer's direction (the plane keeps its state when unchanged).
                    self.srtp_media(media_leg, Some(s), roc);
                }
                self.ep.media(update);
            }
        }
        self.touch(call);
        true
    }

    /// Reports `ev` now, or (journaling on) once the input's journal group is durable.
    pub(super) fn emit_when_stored(&mut self, ev: ParkEvent) {
        if self.journaling() {
            self.journal.hold(super::persist::Held::Event(ev));
        } else {
            self.ep.emit(ev);
        }
    }

    /// A re-INVITE or UPDATE from a parked or bridged party: hold/unhold, a new address, a codec change, a session
    /// refresh (RFC 4028). Answered 200 with parkd's SDP (direction mirrored; an UPDATE without SDP gets none);
    /// media follows. A re-INVITE arriving while parkd's own is pending in the dialog gets 491 (RFC 3261 §14.2).
    pub(super) fn on_reinvite(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: Request, leg_id: LegId) {
        let has_offer = !req.common.body.is_empty();
        if req.method == Method::Invite && self.invite_pending(leg_id) {
            tracing::info!("re-INVITE while parkd's own is pending: 491");
            return self.ep.respond(now, txn, &req, 491, None, None, |_| {});
        }
        let Ok(stimer) = self.session_answer(now, txn, &req) else { return };
        // Direct media: the same SDP again is a refresh (nothing changes); a new offer takes the call back to
        // relaying (`direct_media.rs`) and is applied as any other.
        let unchanged = has_offer && self.direct_reoffer(now, leg_id, &req);
        if has_offer && !unchanged && !self.apply_remote_sdp(now, leg_id, &req.common.body) {
            return self.ep.respond(now, txn, &req, 488, None, None, |_| {});
        }
        let se = self.refreshed_by_peer(now, leg_id, stimer, &req);
        let contact = self.ep.contact_for(&req.uri, from);
        let direct = self.direct_body(leg_id).filter(|_| has_offer || req.method == Method::Invite);
        let Some(leg) = self.dialogs.get_mut(leg_id) else { return };
        leg.dialog.refresh_target(&req, from);
        // RFC 3264 §5: an INVITE without SDP asks for an offer in the 2xx; the answer comes in the ACK. An UPDATE
        // without SDP (a session refresh) is answered without.
        let body = match direct {
            Some(d) => Some(d),
            None if has_offer || req.method == Method::Invite => Some(leg.media.reanswer(has_offer)),
            None => None,
        };
        let tag = leg.dialog.local_tag().to_string();
        if req.method == Method::Invite {
            self.dialogs.answered(leg_id, txn);
        }
        self.ep.respond(now, txn, &req, 200, None, Some(&tag), |r| {
            r.common.contact.push(contact);
            r.common.push_header("Supported", super::inbound::SUPPORTED.join(", "));
            if let Some(se) = se {
                super::dialogs::timer::decorate_2xx(r, se);
            }
            if let Some(body) = body {
                r.common.set_body("application/sdp", body);
            }
        });
    }

    /// Ends leg `leg_id` (its BYE was answered, or parkd gives up on it) and whatever depended on it: a parked
    /// call frees its orbit; a bridged call's other leg is hung up by parkd. `send_bye`: parkd must also BYE this leg.
    pub(super) fn end_leg(&mut self, now: Time, leg_id: LegId, send_bye: bool) {
        if send_bye {
            self.end_leg_with_reason(now, leg_id, None);
        } else {
            self.end_leg_as(now, leg_id, None);
        }
    }

    /// [`Core::end_leg`] with a BYE to the leg carrying `reason` (RFC 3326), e.g. a session that expired.
    pub(super) fn end_leg_with_reason(&mut self, now: Time, leg_id: LegId, reason: Option<String>) {
        self.end_leg_as(now, leg_id, Some(reason));
    }

    /// `bye`: `Some(reason)` when parkd must also BYE the leg (with that Reason, if any).
    fn end_leg_as(&mut self, now: Time, leg_id: LegId, bye: Option<Option<String>>) {
        let Some(leg) = self.dialogs.get(leg_id) else { return };
        let (call_ref, call_id) = (leg.call, leg.dialog.call_id.clone());
        self.touch(call_ref);
        self.direct_forget(call_ref);
        match bye {
            Some(reason) => self.hangup_leg_with_reason(now, leg_id, reason),
            None => {
                self.forget_leg(leg_id);
            }
        }
        if let Some(call) = self.parking.remove(call_ref) {
            // The parked party is gone: its orbit is free (freed by the removal), its recall is called off.
            self.stop_recall(now, call_ref);
            self.orbit_changed(now, call.lot, call.orbit);
            tracing::info!(orbit = %call.orbit_name, "parked party hung up; orbit freed");
            let dwell_ms = super::events::dwell_ms(call.parked_at, now);
            self.ep.emit(ParkEvent::Abandoned { lot: self.parking.lot_name(call.lot), orbit: call.orbit_name, call_id, dwell_ms });
            // A parked call has one leg; if parkd was still holding it (e.g. ACK timeout), it is gone now.
            self.forget_leg(call.parked);
        } else if let Some(bridge) = self.bridging.remove(call_ref) {
            let by = if leg_id == bridge.parked { "parked" } else { "retriever" };
            self.ep.emit(ParkEvent::Ended { orbit: bridge.orbit_name.clone(), call_id, by: by.into() });
            self.hangup_leg(now, bridge.across(leg_id));
        }
    }

    /// parkd sends BYE on a leg and forgets it; the BYE's client transaction retransmits on its own.
    pub(super) fn hangup_leg(&mut self, now: Time, leg_id: LegId) {
        self.hangup_leg_with_reason(now, leg_id, None);
    }

    /// Like [`Core::hangup_leg`], with an RFC 3326 `Reason` header on the BYE.
    pub(super) fn hangup_leg_with_reason(&mut self, now: Time, leg_id: LegId, reason: Option<String>) {
        let Some(mut leg) = self.forget_leg(leg_id) else { return };
        let mut bye = self.ep.request_in(&mut leg.dialog, Method::Bye);
        if let Some(r) = reason {
            bye.common.push_header("Reason", r);
        }
        let span = leg.span();
        let _enter = span.enter();
        tracing::info!(to = %leg.dialog.next_hop.addr, "sending BYE");
        self.ep.send(now, leg.dialog.next_hop, &bye, Purpose::Bye);
    }

    /// Removes a leg from every table and releases its media; returns it.
    pub(super) fn forget_leg(&mut self, leg_id: LegId) -> Option<Box<super::dialogs::Leg>> {
        let leg = self.dialogs.remove(leg_id)?;
        self.touch(leg.call);
        self.admission.release(super::admission::Hold::Unconfirmed(leg_id));
        self.ep.media(MediaCommand::Stop { leg: leg.media.media_leg });
        self.ports.give_back(leg.media.media_leg);
        self.bridging.set_nat_latched(leg.media.media_leg, false);
        Some(leg)
    }
}

/// [`Core::rtcp_media`]'s commands.
fn rtcp_commands(ep: &mut super::endpoint::Endpoint, m: &crate::core::dialogs::LegMedia, was: (bool, u16)) {
    let leg = m.media_leg;
    if m.rtcp_mux != was.0 {
        ep.media(MediaCommand::RtcpMux { leg, on: m.rtcp_mux });
    }
    let (port, before) = (if m.rtcp_mux { 0 } else { m.peer_rtcp }, if was.0 { 0 } else { was.1 });
    if port != before {
        ep.media(MediaCommand::RtcpPort { leg, port });
    }
}
