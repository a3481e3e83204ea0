//! Rebuilding a fresh core from the journal's live records (see the module doc of [`super`] for the rules).

use super::records::{decode_with_lot, BridgeRecord, ParkedRecord, RingRecord, SubRecord};
use super::RestoreReport;
use crate::core::blf::SubId;
use crate::core::dialogs::{Leg, LegState};
use crate::core::events::RecallTarget;
use crate::core::ids::{CallRef, LegId};
use crate::core::parking::MediaMode;
use crate::park::lot::OrbitIdx;
use crate::core::{Core, Purpose};
use crate::journal::{LiveSet, Record, RecordKey, RecordKind};
use crate::media::anchor::Pace;
use crate::media::{MediaCommand, MusicId};
use crate::sip::Method;
use crate::time::Time;
use std::cmp::Reverse;
use std::time::Duration;

/// How long a restored leg whose 2xx was never ACKed waits for the ACK or a retransmitted INVITE (64·T1, as
/// Timer H) before parkd ends it.
pub const UNACKED_WAIT: Duration = Duration::from_secs(32);

/// How long a recall CANCELled by the restore waits for its INVITE's final response before ringing again
/// anyway (the parker's phone may be gone).
pub const CANCEL_WAIT: Duration = Duration::from_secs(4);

/// Why a record was not restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("value does not decode: {0}")]
    Decode(#[from] postcard::Error),
    #[error("inconsistent record: {0}")]
    Inconsistent(&'static str),
    #[error("lot {lot} / orbit {orbit} is not in this configuration")]
    NoSuchOrbit { lot: usize, orbit: String },
    #[error("orbit {0} is already held")]
    OrbitTaken(String),
    #[error("RTP port {0} is outside the configured range or already taken")]
    Port(u16),
}

impl Core {
    /// See [`Core::restore`].
    pub(super) fn restore_live(&mut self, live: &LiveSet, now: Time) -> RestoreReport {
        let mut report = RestoreReport::default();
        let mut max_id = 0u64;
        let mut ringing: Vec<(CallRef, RingRecord)> = Vec::new();
        let mut restored: Vec<CallRef> = Vec::new();
        let mut dropped: Vec<RecordKey> = Vec::new();
        for (key, bytes) in live.iter() {
            let outcome = match key.kind {
                RecordKind::PARKED_CALL => decode_with_lot::<ParkedRecord>(bytes).map_err(RestoreError::from).and_then(|(r, lot)| {
                    let ring = r.ringing.clone();
                    let (call, legs) = self.restore_parked(now, r, lot.as_deref())?;
                    report.parked += 1;
                    ringing.extend(ring.map(|r| (call, r)));
                    Ok((call, legs))
                }),
                RecordKind::BRIDGE => decode_with_lot::<BridgeRecord>(bytes).map_err(RestoreError::from).and_then(|(mut r, lot)| {
                    if let Some(i) = lot.and_then(|name| self.parking.lot_index(&name)) {
                        r.bridge.lot = i;
                    }
                    let restored = self.restore_bridge(now, r)?;
                    report.bridged += 1;
                    Ok(restored)
                }),
                RecordKind::BLF_SUBSCRIPTION | RecordKind::ORBIT_CLAIM | RecordKind::SRTP_KEYS => continue,
                _ => {
                    // Another kind (a newer parkd's): left in the journal untouched.
                    report.skipped.push(format!("{key}: a record kind this parkd does not restore"));
                    continue;
                }
            };
            match outcome {
                Ok((call, legs)) => {
                    max_id = legs.iter().map(|l| l.0).chain([call.0, max_id]).max().unwrap_or(max_id);
                    self.journal.written.insert(call, (key.kind, 0));
                    restored.push(call);
                }
                Err(e) => {
                    tracing::warn!(record = %key, %e, "journal record not restored");
                    report.skipped.push(format!("{key}: {e}"));
                    dropped.push(key.clone());
                }
            }
        }
        // Subscriptions after the calls: the orbits they watch are occupied again, and nobody is notified of it.
        for (id, bytes) in live.of_kind(RecordKind::BLF_SUBSCRIPTION) {
            let key = RecordKey::new(RecordKind::BLF_SUBSCRIPTION, id);
            let sub = match (id.parse::<u64>(), decode_with_lot::<SubRecord>(bytes)) {
                (Ok(n), Ok((r, lot))) => (SubId(n), self.relocate_sub(r.sub, lot.as_deref())),
                (Err(e), _) => {
                    report.skipped.push(format!("{key}: bad id: {e}"));
                    dropped.push(key);
                    continue;
                }
                (_, Err(e)) => {
                    report.skipped.push(format!("{key}: {}", RestoreError::from(e)));
                    dropped.push(key);
                    continue;
                }
            };
            if self.parking.lot(sub.1.lot).is_none() || self.blf.get(sub.0).is_some() {
                report.skipped.push(format!("{key}: lot {} is not in this configuration, or the id is taken", sub.1.lot));
                dropped.push(key);
                continue;
            }
            if sub.1.expires_at <= now {
                tracing::info!(sub = (sub.0).0, "BLF subscription expired while parkd was down; dropped");
                report.subscriptions_expired += 1;
                dropped.push(key);
                continue;
            }
            self.admission.hold(now, crate::core::admission::Hold::Subscription(sub.0), sub.1.dialog.next_hop.addr.ip());
            self.blf.restore(sub.0, sub.1);
            self.journal.subs_written.insert(sub.0, 0);
            report.subscriptions += 1;
        }
        self.ep.reserve_ids(max_id);
        self.journal.extra.extend(dropped.into_iter().map(Record::delete));
        self.restore_claims(live, now);
        self.restore_srtp(live);
        self.restore_stimers(live, now);
        for call in &restored {
            self.resume_media(now, *call);
            self.touch(*call);
        }
        // A recall ringing at the crash: CANCEL it (its branch was journaled); it rings again once that INVITE
        // has its final response (ACKed), so the parker never has two of parkd's calls ringing at once.
        for (call, ring) in ringing {
            let cancel = ring.invite.shape(Method::Cancel);
            tracing::info!(to = %ring.invite.uri, "recall was ringing when parkd stopped: CANCEL, then ring again");
            self.ep.send(now, ring.next_hop, &cancel, Purpose::RestoredCancel(call));
            self.journal.cancel_until.push(Reverse((now + CANCEL_WAIT, call)));
            self.journal.cancelling.insert(call, ring);
            report.recalls_restarted += 1;
        }
        report.recalls_restarted += self.parking.iter().filter(|c| c.recall_at.is_some_and(|t| t <= now)).count();
        // Recalls and maximum park times that fell due while parkd was down fire now, once.
        self.call_timeouts(now);
        self.settle(now);
        report
    }

    /// Puts a parked call back: orbit, port, leg, deadlines. Returns its id and its leg's.
    fn restore_parked(&mut self, now: Time, r: ParkedRecord, lot_name: Option<&str>) -> Result<(CallRef, Vec<LegId>), RestoreError> {
        let ParkedRecord { mut call, leg, .. } = r;
        if call.parked != leg.id || leg.call != call.id {
            return Err(RestoreError::Inconsistent("the call's leg is not its parked leg"));
        }
        if self.is_restored(call.id) || self.dialogs.get(leg.id).is_some() {
            return Err(RestoreError::Inconsistent("a call or leg restored twice"));
        }
        // The lot by name when the record has one (issue 21: reloads and tenants), else by its index; the orbit by
        // its number there. A number no longer in the lot's range comes back as a retired orbit (as after a
        // reload): the call stays until it leaves.
        let lot = match lot_name {
            Some(name) => self.parking.lot_index(name),
            None => Some(call.lot).filter(|l| self.parking.lot(*l).is_some()),
        };
        let Some(lot) = lot else {
            self.bye_unrestored(now, &leg);
            return Err(RestoreError::NoSuchOrbit { lot: call.lot, orbit: call.orbit_name.to_string() });
        };
        let in_range = self.parking.cfg(lot).and_then(|c| c.orbits.contains_number(&call.orbit_name));
        let retire = in_range.is_none() && lot_name.is_some();
        if in_range.is_none() && !retire {
            self.bye_unrestored(now, &leg);
            return Err(RestoreError::NoSuchOrbit { lot, orbit: call.orbit_name.to_string() });
        }
        call.lot = lot;
        call.orbit = OrbitIdx(in_range.unwrap_or(0));
        let orbit = call.orbit;
        if !self.ports.claim(leg.media.media_leg) {
            self.bye_unrestored(now, &leg);
            return Err(RestoreError::Port(leg.media.media_leg.port()));
        }
        let claimed = if retire {
            self.parking.adopt_retired(lot, &call.orbit_name, call.id)
        } else {
            self.parking.claim(lot, Some(orbit), call.id, self.ep.rng()).ok()
        };
        let Some(orbit) = claimed else {
            self.ports.give_back(leg.media.media_leg);
            return Err(RestoreError::OrbitTaken(call.orbit_name.to_string()));
        };
        call.orbit = orbit;
        let id = call.id;
        self.insert_restored_leg(now, leg.clone());
        self.parking.restore(now, call);
        self.admission_orbit_changed(now, lot, orbit);
        Ok((id, vec![leg.id]))
    }

    /// Puts a bridge back with both its legs.
    fn restore_bridge(&mut self, now: Time, r: BridgeRecord) -> Result<(CallRef, Vec<LegId>), RestoreError> {
        let BridgeRecord { bridge, parked, other } = r;
        if bridge.parked != parked.id || bridge.other != other.id || parked.call != bridge.id || other.call != bridge.id {
            return Err(RestoreError::Inconsistent("the bridge's legs are not its own"));
        }
        if self.is_restored(bridge.id) || self.dialogs.get(parked.id).is_some() || self.dialogs.get(other.id).is_some() || parked.id == other.id {
            return Err(RestoreError::Inconsistent("a call or leg restored twice"));
        }
        for (i, leg) in [&parked, &other].into_iter().enumerate() {
            if !self.ports.claim(leg.media.media_leg) {
                if i == 1 {
                    self.ports.give_back(parked.media.media_leg);
                }
                self.bye_unrestored(now, &parked);
                self.bye_unrestored(now, &other);
                return Err(RestoreError::Port(leg.media.media_leg.port()));
            }
        }
        let (id, legs) = (bridge.id, vec![parked.id, other.id]);
        self.insert_restored_leg(now, parked);
        self.insert_restored_leg(now, other);
        self.bridging.insert(bridge);
        Ok((id, legs))
    }

    /// A journaled subscription in its lot by name (when the record has one) and its orbit by the number it
    /// subscribed to: reloads and tenants may have moved both since it was written.
    fn relocate_sub(&self, mut sub: crate::core::blf::Subscription, lot_name: Option<&str>) -> crate::core::blf::Subscription {
        let Some(lot) = lot_name.and_then(|n| self.parking.lot_index(n)) else { return sub };
        sub.lot = lot;
        if let (crate::core::blf::Watched::Orbit(_), Some(user)) = (sub.watched, sub.entity.user.as_deref()) {
            if let Some(crate::park::lot::Dialed::Orbit(i)) = self.parking.lot(lot).and_then(|l| l.dialed(user)) {
                sub.watched = crate::core::blf::Watched::Orbit(i);
            }
        }
        sub
    }

    fn is_restored(&self, call: CallRef) -> bool {
        self.parking.get(call).is_some() || self.bridging.get(call).is_some()
    }

    /// Adds a restored leg; one whose 2xx was never ACKed waits for the ACK or the INVITE again, and is asked
    /// at once whether it is in the call (see [`Core::unacked_timeouts`]).
    fn insert_restored_leg(&mut self, now: Time, mut leg: Leg) {
        if let LegState::Answered { .. } | LegState::Unacked = leg.state {
            leg.state = LegState::Unacked;
            let key = (leg.dialog.call_id.clone(), leg.dialog.remote_tag().to_string());
            self.journal.unacked.insert(key, leg.id);
            self.journal.unacked_until.push(Reverse((now, leg.id, false)));
            self.journal.unacked_until.push(Reverse((now + UNACKED_WAIT, leg.id, true)));
        }
        // RTCP is not journaled (see `LegMedia::rtcp_mux`): parkd's RTCP port comes from the port plan, and the
        // phone's is taken to be its RTP port + 1 (RFC 3550 §11) until it sends RTCP on the RTP port (it muxes).
        leg.media.rtcp_port = self.ports.rtcp_port(leg.media.media_leg.port());
        leg.media.peer_rtcp = leg.media.remote.map_or(0, |r| r.port().saturating_add(1));
        self.rtcp_media(&leg.media, (false, 0));
        self.dialogs.insert(leg);
    }

    /// A call that cannot be put back (its orbit or port is not in this configuration) is hung up rather than
    /// left silent: BYE in its dialog.
    fn bye_unrestored(&mut self, now: Time, leg: &Leg) {
        let mut dialog = leg.dialog.clone();
        let bye = self.ep.request_in(&mut dialog, Method::Bye);
        self.ep.send(now, dialog.next_hop, &bye, Purpose::Bye);
    }

    /// The media plane resumes a restored call's streams from their anchors: hold music (same port, SSRC,
    /// sequence continuing), or the bridge's relay both ways.
    fn resume_media(&mut self, now: Time, call: CallRef) {
        if let Some(c) = self.parking.get(call) {
            if c.media_mode == MediaMode::Hold {
                let (lot, leg) = (c.lot, c.parked);
                self.resume_hold(now, leg, lot);
            }
            return;
        }
        let Some(b) = self.bridging.get(call) else { return };
        let (lot, parked, other, mode) = (b.lot, b.parked, b.other, b.media_mode);
        match mode {
            MediaMode::Hold => self.resume_hold(now, parked, lot),
            MediaMode::Bridged => {
                let mut ids = Vec::with_capacity(2);
                for leg_id in [parked, other] {
                    let Some(stream) = self.resumed_stream(now, leg_id, Pace::Relay) else { return };
                    let Some(srtp) = self.srtp_command(leg_id) else { return };
                    let Some(m) = self.dialogs.get(leg_id).map(|l| &l.media) else { return };
                    let Some(remote) = m.remote else { return };
                    let cmds = [
                        stream,
                        srtp,
                        MediaCommand::Update { leg: m.media_leg, remote, codec: m.codec, send: m.may_send() },
                        MediaCommand::DtmfPayloadType { leg: m.media_leg, pt: m.dtmf_pt },
                    ];
                    ids.push(m.media_leg);
                    for cmd in cmds {
                        self.ep.media(cmd);
                    }
                }
                if let [a, b] = ids[..] {
                    self.ep.media(MediaCommand::Bridge { a, b });
                }
            }
            MediaMode::None => {}
        }
    }

    fn resume_hold(&mut self, now: Time, leg_id: LegId, lot: usize) {
        let Some(stream) = self.resumed_stream(now, leg_id, Pace::Hold) else { return };
        // The keys with the resumed stream's rollover counter (`srtp_keys`), before the music.
        let Some(srtp) = self.srtp_command(leg_id) else { return };
        let Some(m) = self.dialogs.get(leg_id).map(|l| &l.media) else { return };
        let Some(remote) = m.remote else { return };
        let mut cmds = vec![stream, srtp, MediaCommand::Hold { leg: m.media_leg, remote, codec: m.codec, music: MusicId(lot as u16) }];
        if !m.may_send() {
            cmds.push(MediaCommand::Update { leg: m.media_leg, remote, codec: m.codec, send: false });
        }
        cmds.push(MediaCommand::DtmfPayloadType { leg: m.media_leg, pt: m.dtmf_pt });
        for cmd in cmds {
            self.ep.media(cmd);
        }
    }

    /// The leg's stream resumed from its anchor at `now` (a new one if it had none), recorded in the leg, as
    /// the media command that gives it to the plane.
    fn resumed_stream(&mut self, now: Time, leg_id: LegId, pace: Pace) -> Option<MediaCommand> {
        let fresh = self.journal.new_stream(now, pace);
        let leg = self.dialogs.get_mut(leg_id)?;
        let a = leg.media.stream.map_or(fresh, |a| a.resume(now));
        leg.media.stream = Some(a);
        Some(MediaCommand::Stream { leg: leg.media.media_leg, ssrc: a.ssrc, seq: a.seq, ts: a.ts })
    }

    /// A new INVITE that is the retransmission of one a restored leg answered before the restart (same
    /// Call-ID and From tag, its 2xx never ACKed): answered 200 again from the leg. True when it was one.
    /// A leg the first probe confirmed (a peer that answers OPTIONS outside a dialog it has) is answered too,
    /// without leaving the call, until the last probe: such an INVITE never becomes a second park.
    pub(in crate::core) fn answer_restored(&mut self, now: Time, txn: crate::txn::ServerTxnId, from: crate::sip::Peer, req: &crate::sip::Request) -> bool {
        if self.journal.unacked.is_empty() {
            return false;
        }
        let key = (crate::ids::CallId::from(req.common.call_id.as_str()), req.common.from.tag().unwrap_or("").to_string());
        let Some(&leg_id) = self.journal.unacked.get(&key) else { return false };
        let Some(leg) = self.dialogs.get(leg_id).filter(|l| matches!(l.state, LegState::Unacked | LegState::Confirmed)) else {
            self.journal.unacked.remove(&key);
            return false;
        };
        let confirmed = leg.state == LegState::Confirmed;
        if !confirmed {
            self.journal.unacked.remove(&key);
        }
        let (tag, body, orbit, call) = (leg.dialog.local_tag().to_string(), leg.media.current_body(), leg.orbit.clone(), leg.call);
        let lot = self.parking.get(call).map(|c| self.parking.lot_name(c.lot));
        let contact = self.ep.contact_for(&req.uri, from);
        tracing::info!(%orbit, "retransmitted INVITE of a call restored before its ACK: answered from the restored leg");
        self.ep.respond(now, txn, req, 200, None, Some(&tag), |r| {
            r.common.contact.push(contact);
            r.common.push_header("Allow", crate::core::reply::ALLOW);
            r.common.push_header(crate::core::invite::PARK_ORBIT_HEADER, orbit.to_string());
            if let Some(lot) = lot {
                r.common.push_header(crate::core::invite::PARK_LOT_HEADER, lot);
            }
            r.common.set_body("application/sdp", body);
        });
        if !confirmed {
            self.dialogs.answered(leg_id, txn);
        }
        true
    }

    /// A response no transaction matches: if it is the final response to the INVITE of a recall CANCELled by the
    /// restore (same top-Via branch), it is ACKed (RFC 3261 §17.1.1.3 for a non-2xx; a 2xx that crossed the
    /// CANCEL gets ACK and BYE, §15) and the recall rings again.
    pub(in crate::core) fn on_restored_invite_response(&mut self, now: Time, resp: &crate::sip::Response) {
        if self.journal.cancelling.is_empty() || resp.status < 200 || resp.common.cseq.method != Method::Invite {
            return;
        }
        let Some(branch) = resp.common.via.first().and_then(|v| v.branch()) else { return };
        let Some(call) = self.journal.cancelled_by_branch(branch) else { return };
        let Some(ring) = self.journal.cancelling.get(&call).cloned() else { return };
        if resp.is_success() {
            let mut dialog = crate::dialog::Dialog::as_uac(&ring.invite.shape(Method::Invite), resp, ring.next_hop);
            let contact = self.ep.contact_to(dialog.next_hop);
            let local = self.ep.sent_by_to(dialog.next_hop);
            let branch = self.ep.new_branch();
            let ack = dialog.ack(ring.invite.cseq, local, &branch, &contact);
            self.ep.send_ack(dialog.next_hop, ack.encode());
            dialog.local_seq = ring.invite.cseq;
            let branch = self.ep.new_branch();
            let bye = dialog.request(Method::Bye, local, &branch, &contact);
            self.ep.send(now, dialog.next_hop, &bye, Purpose::Bye);
        } else {
            let mut ack = ring.invite.shape(Method::Ack);
            ack.common.to = resp.common.to.clone();
            self.ep.send_ack(ring.next_hop, ack.encode());
        }
        self.ring_again(now, call);
    }

    /// The recall CANCELled by the restore is over: ring again (once) if the call is still parked and nothing
    /// rings for it.
    pub(in crate::core) fn ring_again(&mut self, now: Time, call: CallRef) {
        let Some(ring) = self.journal.cancelling.remove(&call) else { return };
        self.touch(call);
        if self.parking.get(call).is_none() || self.bridging.ringing(call).is_some() {
            return;
        }
        match ring.target {
            RecallTarget::Parker | RecallTarget::FallbackUri => {
                if !self.start_recall(now, call, ring.target) {
                    self.round_failed(now, call);
                }
            }
            RecallTarget::ApiUnpark | RecallTarget::DtmfKey => self.unpark_failed(now, call, ring.target, 503),
        }
    }

    /// Restored legs whose 2xx was never ACKed are asked with an in-dialog OPTIONS whether they are in the call:
    /// at once, since the peer may be in it (its ACK came, but the group saying so was lost in the crash) and
    /// would otherwise hear silence, and again, the last time, after [`UNACKED_WAIT`] with neither an ACK nor
    /// its INVITE again. An answer confirms the leg (media starts); 481 or silence to the last ask ends it as an
    /// unacknowledged 2xx would. Until then its retransmitted INVITE is still answered from the leg.
    pub(in crate::core) fn unacked_timeouts(&mut self, now: Time) {
        while let Some(call) = self.journal.pop_cancel_due(now) {
            self.ring_again(now, call);
        }
        while let Some((leg, last)) = self.journal.pop_unacked_due(now) {
            if last {
                self.journal.unacked.retain(|_, l| *l != leg);
            }
            let Some(l) = self.dialogs.get_mut(leg).filter(|l| l.state == LegState::Unacked) else { continue };
            tracing::info!(leg = leg.0, last, "restored call not acknowledged; asking the peer in its dialog");
            let options = self.ep.request_in(&mut l.dialog, Method::Options);
            let (hop, call) = (l.dialog.next_hop, l.call);
            self.ep.send(now, hop, &options, Purpose::Probe { leg, last });
            self.touch(call);
        }
    }

    /// The answer to a [`Purpose::Probe`]: the peer is in the call (the leg is confirmed and its media starts),
    /// or it is not (481, or no answer): after the last ask the leg ends as an unacknowledged 2xx would; after
    /// the first it waits for the INVITE again (the peer never had the 2xx) or the last ask.
    pub(in crate::core) fn on_probe_result(&mut self, now: Time, leg: LegId, status: u16, last: bool) {
        let Some(call) = self.dialogs.get(leg).filter(|l| l.state == LegState::Unacked).map(|l| l.call) else { return };
        self.touch(call);
        if status != 481 && status != 408 {
            self.dialogs.confirm(leg);
            self.sync_media(now, call);
        } else if last {
            tracing::warn!(leg = leg.0, status, "restored call not acknowledged and not in the call; ending it");
            self.end_leg(now, leg, true);
        } else {
            tracing::info!(leg = leg.0, status, "restored call not in the call at the peer yet; waiting for its INVITE again");
        }
    }
}
