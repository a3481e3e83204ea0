//! Direct media after a retrieve or an answered recall (`direct_media = true` per lot, off by default).
//!
//! Once a bridge relays (both legs confirmed), parkd waits [`SETTLE`] — the first packets latch each leg in the
//! media plane, and a leg whose RTP comes from another address than its SDP names (NAT) is reported
//! ([`Core::handle_media_latched`]) — then, if the bridge qualifies, re-INVITEs the **parked** phone with the
//! other phone's address (`c=`/`m=`, its codec and telephone-event), and on its 2xx the **other** phone with
//! the address the parked one answered with. Both answered: RTP flows phone to phone, parkd stops the two
//! media-plane legs (no relaying, no sockets' work; the ports stay reserved for the way back) and keeps only the
//! signalling — BYE, REFER, session refreshes go on as before.
//!
//! * **Not tried** when either leg is SRTP (parkd holds the keys: a phone could not open the other's packets;
//!   WebRTC legs are SRTP), the legs' codecs differ (parkd transcodes PCMU↔PCMA), or a leg is NAT-latched.
//! * **Refused** (488, any failure, a timeout) at the first re-INVITE: nothing changed, parkd relays. At the
//!   second: the first phone is re-INVITEd back to parkd's address. Either way the bridge is not tried again.
//! * **Glare** (RFC 3261 §14.1): a 491 to parkd's re-INVITE sends it again after 2.1–4 s when parkd chose the
//!   dialog's Call-ID (a call it made), 0–2 s otherwise, from the core's seeded RNG; a phone's re-INVITE arriving
//!   while parkd's is pending in that dialog is answered 491 (`session.rs`).
//! * **Afterwards**: a phone's re-INVITE with the same SDP version (a refresh) is answered with the SDP parkd
//!   sent it; a changed one (hold, a new address) takes the call back to relaying (the media-plane legs again,
//!   the other phone re-INVITEd with parkd's address). A re-park by REFER re-INVITEs the kept phone back to
//!   parkd's address so that it hears the hold music.
//! * Not journaled: a bridge restored after a restart relays as far as parkd knows (its phones may still send
//!   to each other, which works until a transfer).

use super::bridging::direct::{DirectMedia, Phase, Step};
use super::ids::{CallRef, LegId};
use super::parking::MediaMode;
use super::{Core, Purpose};
use crate::media::{MediaCommand, MediaLegId};
use crate::sdp::{self, Direction, LocalSdp};
use crate::sip::{Method, Request};
use crate::time::Time;
use crate::txn::{ClientTxnId, ClientVerdict};
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Duration;

/// How long a new bridge relays before parkd tries direct media (the media plane latches each leg meanwhile).
pub const SETTLE: Duration = Duration::from_secs(1);

/// The `o=` session id and version of an SDP body (the same in a re-offer: a refresh, RFC 3264 §8).
fn sdp_version(body: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let o = text.lines().find(|l| l.starts_with("o="))?;
    let f: Vec<&str> = o.split_whitespace().collect();
    Some((f.get(1)?.to_string(), f.get(2)?.to_string()))
}

/// The classic NAT sign: the SDP names a private address (RFC 1918, RFC 6598 shared space) while the phone's
/// SIP came from a public one.
fn behind_nat(leg: &super::dialogs::Leg) -> bool {
    let private = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v) => v.is_private() || (v.octets()[0] == 100 && (v.octets()[1] & 0xC0) == 64),
        std::net::IpAddr::V6(v) => (v.segments()[0] & 0xfe00) == 0xfc00,
    };
    let public = |ip: std::net::IpAddr| !private(ip) && !ip.is_loopback() && !ip.is_unspecified();
    leg.media.remote.is_some_and(|r| private(r.ip()) && public(leg.source.addr.ip()))
}

impl Core {
    /// The media plane latched `leg` to `source`, which differs from the address its SDP names (symmetric RTP
    /// behind a NAT: `MediaPlane::on_packet` on a leg's first packet, reported by the media thread and handed in by
    /// the SIP driver as [`MediaReport::Latched`](crate::media::MediaReport)). Such a phone is not reachable at its SDP address: no direct media for its call. Legs
    /// reported stay marked until their leg ends (a report racing the leg's end can leave its port marked for the
    /// next leg on it: that one is then relayed, the safe side).
    pub(super) fn media_latched(&mut self, leg: MediaLegId, source: SocketAddr) {
        tracing::debug!(%leg, %source, "media leg latched to a source its SDP does not name");
        self.bridging.set_nat_latched(leg, true);
    }

    /// A bridge just started relaying: with its lot's `direct_media`, the pair is tried after [`SETTLE`].
    pub(super) fn direct_start(&mut self, now: Time, call: CallRef) {
        let Some(b) = self.bridging.get(call) else { return };
        if !self.parking.cfg(b.lot).is_some_and(|l| l.direct_media) {
            return;
        }
        // Tried once per bridge (a relay set up again after direct media is not tried again); a re-parked call
        // retrieved anew is a new bridge.
        if self.bridging.direct(call).is_some_and(|d| !d.idle() || d.bridge_other == Some(b.other)) {
            return;
        }
        let pair = DirectMedia::pair(b.parked, b.other, now + SETTLE);
        self.bridging.set_direct(call, pair);
    }

    /// Why bridge `call` cannot go direct now, if it cannot.
    fn direct_refusal(&self, call: CallRef) -> Option<&'static str> {
        let b = self.bridging.get(call)?;
        let (p, o) = (self.dialogs.get(b.parked)?, self.dialogs.get(b.other)?);
        if p.media.srtp.is_some() || o.media.srtp.is_some() {
            return Some("SRTP leg");
        }
        if p.media.codec != o.media.codec {
            return Some("codecs differ (parkd transcodes)");
        }
        if self.bridging.nat_latched(p.media.media_leg) || self.bridging.nat_latched(o.media.media_leg) {
            return Some("NAT-latched leg");
        }
        if [p, o].iter().any(|l| behind_nat(l)) {
            return Some("a phone behind NAT (private SDP address, public signalling source)");
        }
        if p.media.remote.is_none() || o.media.remote.is_none() || !p.media.may_send() || !o.media.may_send() {
            return Some("a leg without a usable address or on hold");
        }
        None
    }

    /// Fires the direct-media steps due at `now`.
    pub(super) fn direct_timeouts(&mut self, now: Time) {
        while let Some(due) = self.bridging.pop_direct_due(now) {
            let Some(call) = due else { continue };
            self.direct_step(now, call);
        }
    }

    /// Sends the current step of `call`'s direct media (or ends the pair when there is none left).
    fn direct_step(&mut self, now: Time, call: CallRef) {
        let Some(d) = self.bridging.direct_mut(call) else { return };
        d.at = None;
        let Some(step) = d.steps.first().copied() else { return self.direct_done(now, call) };
        if let (Step::Direct(_), false) = (step, d.undoing) {
            if let Some(why) = self.direct_refusal(call) {
                tracing::info!(reason = why, "no direct media for this bridge; parkd relays");
                if let Some(d) = self.bridging.direct_mut(call) {
                    d.phase = Phase::Relaying;
                    d.steps.clear();
                }
                return;
            }
        }
        if self.refresh_invite_pending(step.leg()) {
            // parkd's own session refresh (re-INVITE) is pending in that dialog: after it.
            return self.bridging.direct_at(call, now + Duration::from_millis(500));
        }
        let Some(body) = self.step_body(call, step) else {
            return self.direct_failed(now, call, 0);
        };
        let Some(leg) = self.dialogs.get_mut(step.leg()) else { return };
        let mut req = self.ep.request_in(&mut leg.dialog, Method::Invite);
        req.common.push_header("Allow", super::reply::ALLOW);
        req.common.push_header("Supported", super::inbound::SUPPORTED.join(", "));
        if let Some(t) = leg.timer.as_deref() {
            // Any re-INVITE refreshes the session (RFC 4028 §10): it says so, parkd the refresher of this request
            // only when it was already.
            req.common.push_header("Session-Expires", super::dialogs::timer::SessionExpires { delta: t.interval, refresher_uac: Some(t.parkd_refreshes) }.value());
        }
        req.common.set_body("application/sdp", body.clone());
        let hop = leg.dialog.next_hop;
        let span = leg.span();
        let _enter = span.enter();
        tracing::info!(?step, "direct media: re-INVITE");
        let txn = self.ep.send(now, hop, &req, Purpose::DirectMedia { call, leg: step.leg() });
        if let Some(d) = self.bridging.direct_mut(call) {
            d.txn = Some((step.leg(), txn));
            match step {
                Step::Direct(l) => d.set_sent(l, body),
                Step::Relay(l) => d.sent.retain(|(x, _)| *x != l),
            }
        }
    }

    /// The SDP of `step`: the other phone's address for a direct offer (the first phone's answer for the second
    /// offer), parkd's own for the way back; the leg's session version incremented either way.
    fn step_body(&mut self, call: CallRef, step: Step) -> Option<Bytes> {
        let b = self.bridging.get(call).cloned().or_else(|| {
            // A re-park's way back: the call is parked now, its one leg is the step's.
            self.parking.get(call).map(|c| super::bridging::Bridge { id: call, lot: c.lot, orbit_name: c.orbit_name.clone(), parked: c.parked, other: c.parked, media_mode: MediaMode::None })
        })?;
        let answered = self.bridging.direct(call).and_then(|d| d.answered);
        let across = self.dialogs.get(b.across(step.leg())).map(|l| (l.media.remote, l.media.codec, l.media.dtmf_pt));
        let leg = self.dialogs.get_mut(step.leg())?;
        let m = &mut leg.media;
        m.local_sdp.version += 1;
        match step {
            Step::Direct(_) => {
                let (remote, codec, dtmf) = across?;
                let addr = if step.leg() == b.other { answered.or(remote)? } else { remote? };
                let l = LocalSdp { ip: addr.ip(), port: addr.port(), ..m.local_sdp };
                Some(sdp::build_offer(&l, &[codec], dtmf, Direction::SendRecv))
            }
            Step::Relay(_) => Some(sdp::build_offer(&m.local_sdp, &[m.codec], m.dtmf_pt, Direction::SendRecv)),
        }
    }

    /// A direct-media re-INVITE of `call` got no answer (Timer B): a failure.
    pub(super) fn on_direct_timeout(&mut self, now: Time, call: CallRef, txn: ClientTxnId) {
        if self.bridging.direct(call).and_then(|d| d.txn).is_some_and(|(_, t)| t == txn) {
            if let Some(d) = self.bridging.direct_mut(call) {
                d.txn = None;
            }
            self.direct_failed(now, call, 408);
        }
    }

    /// The answer to a direct-media re-INVITE of `call`.
    pub(super) fn on_direct_response(&mut self, now: Time, call: CallRef, sent_in: LegId, txn: ClientTxnId, verdict: ClientVerdict) {
        let ClientVerdict::Final(resp) = verdict else { return };
        if resp.is_success() {
            // ACK every 2xx, a retransmission too (the purpose stays for them, as for an answered recall).
            self.ack_reinvite(sent_in, &resp);
        } else {
            self.ep.finish(txn);
        }
        let current = self.bridging.direct(call).and_then(|d| d.txn).is_some_and(|(_, t)| t == txn);
        if !current {
            return;
        }
        let leg = sent_in;
        if let Some(d) = self.bridging.direct_mut(call) {
            d.txn = None;
        }
        if resp.status == 491 {
            let wait = self.glare_backoff(leg);
            tracing::info!(wait_ms = wait.as_millis() as u64, "direct media: 491 (glare); sending again after the back-off");
            return self.bridging.direct_at(call, now + wait);
        }
        if !resp.is_success() {
            return self.direct_failed(now, call, resp.status);
        }
        // The re-INVITE refreshed the session too.
        if let Some(t) = self.dialogs.get_mut(leg).and_then(|l| l.timer.as_deref_mut()) {
            let (i, p) = (t.interval, t.parkd_refreshes);
            t.refreshed(now, i, p);
            self.dialogs.arm_timer(leg);
        }
        let Some(d) = self.bridging.direct_mut(call) else { return };
        let step = if d.steps.is_empty() { None } else { Some(d.steps.remove(0)) };
        if let Some(Step::Direct(l)) = step {
            if let Some(o) = sdp_version(&resp.common.body) {
                d.peer_origin.retain(|(x, _)| *x != l);
                d.peer_origin.push((l, o));
            }
            if d.answered.is_none() {
                d.answered = sdp::parse_sdp(&resp.common.body).ok().map(|s| s.addr).filter(|a| !a.ip().is_unspecified() && a.port() != 0);
            }
        }
        if d.steps.is_empty() {
            return self.direct_done(now, call);
        }
        self.direct_step(now, call);
    }

    /// A direct-media re-INVITE failed (`status`; 0: it could not be built): undo what was done, relay.
    fn direct_failed(&mut self, now: Time, call: CallRef, status: u16) {
        let Some(d) = self.bridging.direct_mut(call) else { return };
        if d.undoing {
            // The way back failed too: parkd relays what it gets.
            tracing::warn!(status, "direct media: the re-INVITE back to relaying failed");
            d.steps.remove(0);
            if d.steps.is_empty() {
                return self.direct_done(now, call);
            }
            return self.direct_step(now, call);
        }
        tracing::info!(status, "direct media refused; parkd keeps relaying");
        let done: Vec<LegId> = d.sent.iter().map(|(l, _)| *l).filter(|l| d.steps.first().is_none_or(|s| s.leg() != *l)).collect();
        d.undoing = true;
        d.steps = done.into_iter().map(Step::Relay).collect();
        if d.steps.is_empty() {
            d.phase = Phase::Relaying;
            return;
        }
        self.direct_step(now, call);
    }

    /// The steps are done: direct media (the relay stopped) or relaying (the media plane's legs back).
    fn direct_done(&mut self, now: Time, call: CallRef) {
        let Some(d) = self.bridging.direct_mut(call) else { return };
        if d.undoing {
            d.phase = Phase::Relaying;
            d.sent.clear();
            return self.relay_again(now, call);
        }
        d.phase = Phase::Direct;
        let Some(b) = self.bridging.get(call) else { return };
        let (p, o) = (b.parked, b.other);
        tracing::info!("direct media: the phones send to each other; parkd stops relaying");
        for l in [p, o] {
            if let Some(leg) = self.dialogs.get(l) {
                self.ep.media(MediaCommand::Stop { leg: leg.media.media_leg });
            }
        }
    }

    /// The media plane's legs of `call` again (after direct media): the bridge's relay, or a parked call's music.
    fn relay_again(&mut self, now: Time, call: CallRef) {
        if let Some(b) = self.bridging.get_mut(call) {
            b.media_mode = MediaMode::None;
            let parked = b.parked;
            if let Some(m) = self.dialogs.get(parked).map(|l| &l.media) {
                if let Some(remote) = m.remote {
                    let cmd = MediaCommand::Update { leg: m.media_leg, remote, codec: m.codec, send: m.may_send() };
                    self.ep.media(cmd);
                }
            }
            // A re-parked leg's hold music started with its parking period.
            self.sync_media(now, call);
        }
    }

    /// A phone's re-INVITE offer in a bridge that went direct (or is going): the same SDP version is a refresh
    /// (answered with what parkd sent it); a new one takes the call back to relaying. True when it is handled as
    /// a refresh (the caller answers with [`Core::direct_body`]).
    pub(super) fn direct_reoffer(&mut self, now: Time, leg_id: LegId, req: &Request) -> bool {
        let Some(call) = self.dialogs.get(leg_id).map(|l| l.call) else { return false };
        let Some(d) = self.bridging.direct(call) else { return false };
        if d.phase != Phase::Direct || d.sent_to(leg_id).is_none() {
            return false;
        }
        let seen = d.peer_origin.iter().find(|(l, _)| *l == leg_id).map(|(_, o)| o.clone());
        if seen.is_some() && sdp_version(&req.common.body) == seen {
            return true;
        }
        tracing::info!("a new offer from a phone in direct media; back to relaying");
        let Some(b) = self.bridging.get(call) else { return false };
        let other = b.across(leg_id);
        self.bridging.set_direct(call, DirectMedia::back(&[other], now));
        false
    }

    /// The SDP parkd sent `leg` in direct mode (a refresh answer, parkd's refresh re-INVITE), if it is direct.
    pub(super) fn direct_body(&self, leg: LegId) -> Option<Bytes> {
        let call = self.dialogs.get(leg)?.call;
        let d = self.bridging.direct(call)?;
        d.sent_to(leg).cloned()
    }

    /// Whether parkd has a re-INVITE of its own pending in `leg`'s dialog (a direct-media step or a refresh):
    /// a phone's re-INVITE then gets 491 (RFC 3261 §14.2).
    pub(super) fn invite_pending(&self, leg: LegId) -> bool {
        let direct = self.dialogs.get(leg).and_then(|l| self.bridging.direct(l.call)).is_some_and(|d| d.txn.is_some_and(|(l, _)| l == leg));
        direct || self.refresh_invite_pending(leg)
    }

    fn refresh_invite_pending(&self, leg: LegId) -> bool {
        self.dialogs.get(leg).and_then(|l| l.timer.as_deref()).is_some_and(|t| t.in_flight && t.refresh_method() == Method::Invite)
    }

    /// Bridge `call` ends (a hang-up): its direct-media state goes with it.
    pub(super) fn direct_forget(&mut self, call: CallRef) {
        self.bridging.remove_direct(call);
    }

    /// Leg `keep` of bridge `old` is re-parked as `new`: if it was sent the other phone's address, it is
    /// re-INVITEd back to parkd's (the hold music reaches it).
    pub(super) fn direct_repark(&mut self, now: Time, old: CallRef, new: CallRef, keep: LegId) {
        let Some(d) = self.bridging.remove_direct(old) else { return };
        if d.sent_to(keep).is_none() && d.txn.is_none_or(|(l, _)| l != keep) {
            return;
        }
        self.bridging.set_direct(new, DirectMedia::back(&[keep], now));
        self.direct_step(now, new);
    }
}
