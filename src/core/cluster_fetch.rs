//! A retrieve of a call another node holds (issue 18, docs/cluster-design.md §3.3, B's half): this node (B) keeps
//! the retriever's INVITE, sends the owner (A) an INVITE to the orbit signed with the cluster's secret
//! (`Parkd-Cluster`, [`crate::cluster::auth`]), and when A answers, answers the retriever and bridges the two legs
//! with its own relay (one extra media hop: retriever ⇄ B ⇄ A ⇄ parked party). A's failure is passed on to the
//! retriever; no final answer from A within [`FETCH_TIMEOUT`] → `480` with `Retry-After`.
//!
//! A fetch the retriever gives up on (its CANCEL, or B's own timeout) is *abandoned*, not forgotten: B CANCELs its
//! INVITE to A at once (A sends no provisional response to a fetch, and one that is not pending any more answers
//! the CANCEL without effect), keeps the client transaction until its final answer, and a `200` that comes anyway
//! is ACKed and ended with a BYE carrying [`FETCH_ABANDONED_REASON`]: A then parks the call again in its orbit
//! (`cluster_lend.rs`) instead of hanging up the parked party.

use super::bridging::{Bridge, OutgoingInvite};
use super::dialogs::{read_offer, Leg, LegMedia, LegRole, LegState};
use super::ids::{CallRef, LegId};
use super::parking::MediaMode;
use super::srtp::OfferedSrtp;
use super::{Core, Purpose};
use crate::dialog::{uri_addr, Dialog};
use crate::ids::OrbitNumber;
use crate::media::{Codec, MediaCommand, MediaLegId};
use crate::sdp::{self, Direction, LocalSdp};
use crate::sip::{parse_uri, CSeq, Common, Method, NameAddr, Peer, Request, Response, Uri, Via};
use crate::time::Time;
use crate::txn::{ClientTxnId, ClientVerdict, ServerTxnId};
use rand::Rng;
use std::time::Duration;

/// How long B waits for the owner node's final answer before answering the retriever `480` (the 2 s;
/// a retrieve on A is answered at once, so only a node that is stopped, overloaded or cut off takes longer).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// The `Reason` (RFC 3326) of the BYE with which B ends a fetch the retriever gave up on: the owner parks the call
/// again instead of ending it.
pub const FETCH_ABANDONED_REASON: &str = "SIP;cause=487;text=\"Retriever Gave Up\"";

/// A retrieve waiting for the owner node's answer.
#[derive(Debug)]
pub(super) struct Fetch {
    txn: ServerTxnId,
    from: Peer,
    req: Request,
    lot: usize,
    orbit: crate::ids::OrbitIdx,
    orbit_name: OrbitNumber,
    invite: OutgoingInvite,
    /// The SRTP offered to the owner node (issue 19, [`OfferedSrtp`]); `None`: a plain offer.
    srtp: Option<OfferedSrtp>,
    next_hop: Peer,
    media_leg: MediaLegId,
    local_sdp: LocalSdp,
    /// When the retriever is answered `480` if A has not answered.
    deadline: Time,
    /// The retriever is gone (CANCEL, or answered `480`): A's answer is ended, its media port already given back.
    abandoned: bool,
    cancel_sent: bool,
}

impl Core {
    /// Sends the owner node of `orbit_name` the signed retrieve for the caller of `req`; false (nothing sent)
    /// when this node cannot (no secret, the owner's address unknown, no RTP port): the caller answers 404.
    ///
    /// The offer to the owner is `RTP/SAVP` with SDES keys by the rule of every call parkd starts
    /// ([`OfferedSrtp`]): keys only over a TLS hop or with `srtp_over_plain`, never for `srtp = "off"`; a 488 to it
    /// is tried once more plain under `optional`. A `required` lot whose keys may not go to the owner sends
    /// nothing and answers the retriever `488` itself (true: answered).
    pub(super) fn fetch_from_owner(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: &Request, lot: usize, orbit: crate::ids::OrbitIdx) -> bool {
        self.fetch_from_owner_as(now, txn, from, req, lot, orbit, false)
    }

    /// [`Core::fetch_from_owner`]; `plain`: a plain offer whatever the policy (the retry after a 488).
    #[allow(clippy::too_many_arguments)]
    fn fetch_from_owner_as(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: &Request, lot: usize, orbit: crate::ids::OrbitIdx, plain: bool) -> bool {
        let Some((owner, Some(sip))) = self.remote_owner(lot, orbit) else { return false };
        let Some(c) = self.cluster.as_ref() else { return false };
        if c.auth.is_none() {
            return false;
        }
        let me = c.room.settings().node.clone();
        let orbit_name = self.parking.orbit_name(lot, orbit);
        let Ok(mut target) = parse_uri(&sip) else { return false };
        target.user = Some(orbit_name.as_str().into());
        let Some(addr) = uri_addr(&target) else { return false };
        let next_hop = Peer { transport: target.transport(), addr };
        if read_offer(req).is_err() {
            return false;
        }
        let srtp = match self.srtp_offer(Some(lot), &next_hop, plain) {
            Ok(s) => s,
            Err(why) => {
                tracing::warn!(to = %target, reason = why, "retrieve of an orbit another node holds: not fetched");
                self.ep.refuse(now, txn, req, 488, "Not Acceptable Here: SRTP required; no TLS to the owner node");
                return true;
            }
        };
        let Some(media_leg) = self.ports.take(now) else { return false };
        let host = self.ep.local_for(next_hop.addr.ip()).ip();
        let call_id = self.ep.new_call_id("xnode", host);
        let nonce = self.ep.rng().gen::<u64>();
        let Some(header) = self.cluster.as_ref().and_then(|c| c.auth.as_ref()).map(|a| a.sign(&me, now, nonce, &call_id, orbit_name.as_str())) else {
            self.ports.give_back(media_leg);
            return false;
        };
        let local_sdp = LocalSdp { session_id: self.ep.rng().gen::<u32>() as u64, version: 1, ip: self.ep.media_ip_for(next_hop.addr.ip()), port: media_leg.port() };
        let body = sdp::build_offer(&local_sdp, &[Codec::Pcmu, Codec::Pcma], Some(101), Direction::SendRecv);
        let mut body = sdp::with_rtcp(&body, self.ports.rtcp_port(media_leg.port()), true, true);
        if let Some(s) = &srtp {
            body = s.secure(&body);
        }
        let from_na = NameAddr::new(Uri::from_addr(Some(me.as_str()), self.ep.local_for(next_hop.addr.ip()))).with_tag(&self.ep.new_tag());
        let branch = self.ep.new_branch();
        let mut invite = Request {
            method: Method::Invite,
            uri: target.clone(),
            common: Common {
                max_forwards: Some(70),
                contact: vec![self.ep.contact_to(next_hop)],
                ..Common::new(
                    vec![Via::new(next_hop.transport, self.ep.sent_by_to(next_hop), &branch)],
                    from_na,
                    NameAddr::new(target.clone()),
                    call_id.into(),
                    CSeq { seq: 1, method: Method::Invite },
                )
            },
        };
        invite.common.push_header(crate::cluster::auth::HEADER, header);
        invite.common.push_header("User-Agent", super::reply::PRODUCT);
        invite.common.set_body("application/sdp", body);
        let call = CallRef(self.ep.next_id());
        self.ep.send(now, next_hop, &invite, Purpose::ClusterFetch(call));
        let invite = OutgoingInvite::of(invite, self.ep.sent_by_to(next_hop), next_hop.transport, branch);
        tracing::info!(%orbit_name, %owner, to = %target, "retrieve of an orbit another node holds: fetching the call");
        let fetch = Fetch { txn, from, req: req.clone(), lot, orbit, orbit_name, invite, srtp, next_hop, media_leg, local_sdp, deadline: now + FETCH_TIMEOUT, abandoned: false, cancel_sent: false };
        if let Some(c) = self.cluster.as_mut() {
            c.fetches.insert(call, fetch);
        }
        true
    }

    /// The orbit another node holds whose parked dialog (as the claim shows it) is the one `r` names: to-tag =
    /// the owner's tag, from-tag = the parked party's (swapped tags are accepted, as for a local dialog).
    pub(super) fn remote_named_by(&self, r: &crate::sip::Replaces) -> Option<(usize, crate::ids::OrbitIdx)> {
        let view = self.cluster.as_ref()?.room.view();
        let named = |local: &str, remote: &str| {
            if local.is_empty() || remote.is_empty() {
                return None;
            }
            // By the view's Call-ID index: O(1) in the number of calls other nodes hold.
            view.with_call_id(&r.call_id).find(|(_, c)| c.info.dialog.as_ref().is_some_and(|d| d.local_tag == local && d.remote_tag == remote)).map(|(s, _)| (s.lot, s.orbit))
        };
        named(&r.to_tag, &r.from_tag).or_else(|| named(&r.from_tag, &r.to_tag))
    }

    /// A response to the INVITE of fetch `call`.
    pub(super) fn on_fetch_response(&mut self, now: Time, call: CallRef, id: ClientTxnId, verdict: ClientVerdict) {
        let Some(f) = self.cluster.as_ref().and_then(|c| c.fetches.get(&call)) else { return };
        // The retriever may also be gone without a CANCEL reaching the fetch (its transaction ended otherwise).
        let gone = f.abandoned || !self.ep.txn.awaiting_final(f.txn);
        let resp = match verdict {
            ClientVerdict::Provisional(_) => {
                if gone {
                    self.abandon_fetch(now, call);
                }
                return;
            }
            ClientVerdict::Final(resp) => resp,
        };
        let Some(f) = self.cluster.as_mut().and_then(|c| c.fetches.remove(&call)) else { return };
        if gone {
            self.ep.finish(id);
            if !f.abandoned {
                self.ports.give_back(f.media_leg);
            }
            if resp.is_success() {
                self.end_abandoned_fetch(now, &f, &resp);
            }
            return;
        }
        if resp.is_success() {
            self.fetch_answered(now, call, id, f, resp);
        } else {
            self.ep.finish(id);
            self.ports.give_back(f.media_leg);
            if resp.status == 488 && f.srtp.as_ref().is_some_and(|s| s.plain_retry()) {
                tracing::info!(orbit = %f.orbit_name, "the owner node refused the SRTP offer (488); fetching again with plain RTP");
                if self.fetch_from_owner_as(now, f.txn, f.from, &f.req, f.lot, f.orbit, true) {
                    return;
                }
            }
            tracing::info!(orbit = %f.orbit_name, status = resp.status, "the owner node refused the retrieve");
            let (status, reason) = match resp.status {
                404 => (404, "Orbit Empty"),
                s if s >= 400 => (s, resp.reason.as_str()),
                _ => (502, "Bad Answer From Owner Node"),
            };
            self.ep.refuse(now, f.txn, &f.req, status, reason);
        }
    }

    /// A answered a fetch nobody waits for any more: ACK, then BYE with [`FETCH_ABANDONED_REASON`] (A parks the
    /// call again).
    fn end_abandoned_fetch(&mut self, now: Time, f: &Fetch, resp: &Response) {
        tracing::info!(orbit = %f.orbit_name, "the owner node answered a fetch the retriever gave up on: handing the call back");
        let mut dialog = Dialog::as_uac(&f.invite.shape(Method::Invite), resp, f.next_hop);
        let contact = self.ep.contact_to(dialog.next_hop);
        let branch = self.ep.new_branch();
        let ack = dialog.ack(f.invite.cseq, self.ep.sent_by_to(dialog.next_hop), &branch, &contact);
        self.ep.send_ack(dialog.next_hop, ack.encode());
        dialog.local_seq = f.invite.cseq;
        let branch = self.ep.new_branch();
        let mut bye = dialog.request(Method::Bye, self.ep.sent_by_to(dialog.next_hop), &branch, &contact);
        bye.common.push_header("Reason", FETCH_ABANDONED_REASON);
        self.ep.send(now, dialog.next_hop, &bye, Purpose::Bye);
    }

    /// The retriever CANCELled its INVITE (answered 487): the fetch is abandoned (its INVITE to A CANCELled).
    pub(super) fn fetch_cancelled(&mut self, now: Time, txn: ServerTxnId) {
        let Some(c) = self.cluster.as_ref() else { return };
        let Some(call) = c.fetches.iter().find(|(_, f)| f.txn == txn).map(|(call, _)| *call) else { return };
        tracing::info!("the retriever gave up while the owner node was asked: CANCEL towards it");
        self.abandon_fetch(now, call);
    }

    /// Nobody waits for fetch `call` any more: its media port goes back, its INVITE to A is CANCELled (once),
    /// and it is kept until A's final answer (or Timer B).
    fn abandon_fetch(&mut self, now: Time, call: CallRef) {
        let Some(f) = self.cluster.as_mut().and_then(|c| c.fetches.get_mut(&call)) else { return };
        let give_back = (!f.abandoned).then_some(f.media_leg);
        f.abandoned = true;
        let cancel = (!f.cancel_sent).then(|| {
            f.cancel_sent = true;
            let mut cancel = f.invite.shape(Method::Cancel);
            cancel.common.push_header("Reason", FETCH_ABANDONED_REASON);
            (f.next_hop, cancel)
        });
        if let Some(leg) = give_back {
            self.ports.give_back(leg);
        }
        if let Some((hop, cancel)) = cancel {
            self.ep.send(now, hop, &cancel, Purpose::Cancel);
        }
    }

    /// The INVITE of fetch `call` got no final answer at all (Timer B).
    pub(super) fn on_fetch_timeout(&mut self, now: Time, call: CallRef) {
        let Some(f) = self.cluster.as_mut().and_then(|c| c.fetches.remove(&call)) else { return };
        if !f.abandoned {
            self.ports.give_back(f.media_leg);
        }
        if self.ep.txn.awaiting_final(f.txn) {
            self.refuse_not_answering(now, &f);
        }
    }

    /// When the next fetch gives up on its owner node.
    pub(super) fn next_fetch_deadline(&self) -> Option<Time> {
        self.cluster.as_ref()?.fetches.values().filter(|f| !f.abandoned).map(|f| f.deadline).min()
    }

    /// Fetches whose owner node did not answer within [`FETCH_TIMEOUT`]: `480` to the retriever, CANCEL to A.
    pub(super) fn fetch_timeouts(&mut self, now: Time) {
        let Some(c) = self.cluster.as_ref() else { return };
        let due: Vec<CallRef> = c.fetches.iter().filter(|(_, f)| !f.abandoned && f.deadline <= now).map(|(call, _)| *call).collect();
        for call in due {
            let Some(f) = self.cluster.as_mut().and_then(|c| c.fetches.remove(&call)) else { continue };
            tracing::warn!(orbit = %f.orbit_name, to = %f.next_hop.addr, "the owner node did not answer the fetch in time: 480");
            if self.ep.txn.awaiting_final(f.txn) {
                self.refuse_not_answering(now, &f);
            }
            if let Some(c) = self.cluster.as_mut() {
                c.fetches.insert(call, f);
            }
            self.abandon_fetch(now, call);
        }
    }

    fn refuse_not_answering(&mut self, now: Time, f: &Fetch) {
        self.ep.respond(now, f.txn, &f.req, 480, Some("Owner Node Not Answering"), None, |r| {
            r.common.push_header("Retry-After", super::cluster::CLUSTER_RETRY_AFTER.to_string());
        });
    }

    fn fetch_answered(&mut self, now: Time, call: CallRef, id: ClientTxnId, f: Fetch, resp: Response) {
        let srtp = match f.srtp.as_ref().map(|offered| offered.answered(&resp.common.body)) {
            None => None,
            Some(Ok(srtp)) => srtp,
            Some(Err(why)) => {
                // Not a usable answer to the SRTP offer: A's leg ends as an abandoned fetch (ACK, BYE: A parks the
                // call again), the retriever gets 488.
                tracing::warn!(orbit = %f.orbit_name, reason = why, "the owner node's answer refused");
                self.ep.finish(id);
                self.ports.give_back(f.media_leg);
                self.end_abandoned_fetch(now, &f, &resp);
                return self.ep.refuse(now, f.txn, &f.req, 488, "Not Acceptable Here: SRTP required");
            }
        };
        let mut dialog = Dialog::as_uac(&f.invite.shape(Method::Invite), &resp, f.next_hop);
        dialog.local_seq = f.invite.cseq;
        let branch = self.ep.new_branch();
        let contact = self.ep.contact_to(dialog.next_hop);
        let ack = dialog.ack(f.invite.cseq, self.ep.sent_by_to(dialog.next_hop), &branch, &contact).encode();
        self.ep.send_ack(dialog.next_hop, ack.clone());
        let mut media = LegMedia::answered(f.media_leg, f.local_sdp, self.ports.rtcp_port(f.media_leg.port()), &resp.common.body);
        media.srtp = srtp.map(Box::new);
        if media.srtp.is_some() {
            self.srtp_media(media.media_leg, media.srtp.as_deref(), 0);
        }
        let owner_leg = LegId(self.ep.next_id());
        self.ep.repurpose(id, Purpose::RecallAnswered { leg: owner_leg });
        let uac_ack = Some(Box::new((f.next_hop, ack.to_vec())));
        // The owner's leg is new to the media plane (a parked leg is known from its hold music): describe it.
        if let Some(remote) = media.remote {
            self.ep.media(MediaCommand::Update { leg: media.media_leg, remote, codec: media.codec, send: media.may_send() });
            self.ep.media(MediaCommand::DtmfPayloadType { leg: media.media_leg, pt: media.dtmf_pt });
        }
        let leg = Leg { id: owner_leg, call, role: LegRole::Parked, state: LegState::Confirmed, dialog, source: f.next_hop, media, orbit: f.orbit_name.clone(), uac_ack, timer: None };
        self.dialogs.insert(leg);
        self.rtcp_media_of(owner_leg);
        let offer = read_offer(&f.req).ok().flatten();
        let Some(retriever_media) = self.ports.take_beside(now, f.media_leg) else {
            self.ep.refuse(now, f.txn, &f.req, 503, "No Media Ports Available");
            return self.end_fetched_leg(now, owner_leg);
        };
        let orbit = f.orbit_name.clone();
        let other = self.answer_new_leg(now, f.txn, f.from, &f.req, call, LegRole::Retriever, retriever_media, offer, &orbit, None, |r| {
            r.common.push_header(super::invite::PARK_ORBIT_HEADER, orbit.to_string());
        });
        self.bridging.insert(Bridge { id: call, lot: f.lot, orbit_name: orbit.clone(), parked: owner_leg, other, media_mode: MediaMode::None });
        tracing::info!(%orbit, "retrieved from another node; bridging");
        self.sync_media(now, call);
    }

    /// BYE to the owner node's leg and forget it (the retriever could not be answered): A parks the call again.
    fn end_fetched_leg(&mut self, now: Time, leg: LegId) {
        let Some(l) = self.dialogs.remove(leg) else { return };
        let mut dialog = l.dialog;
        let contact = self.ep.contact_to(dialog.next_hop);
        let branch = self.ep.new_branch();
        let mut bye = dialog.request(Method::Bye, self.ep.sent_by_to(dialog.next_hop), &branch, &contact);
        bye.common.push_header("Reason", FETCH_ABANDONED_REASON);
        self.ep.send(now, dialog.next_hop, &bye, Purpose::Bye);
        self.ports.give_back(l.media.media_leg);
    }
}
