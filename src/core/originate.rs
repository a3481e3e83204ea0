//! Calls parkd starts on behalf of a parked call: a recall to the parker or the fallback URI, or an unpark an
//! application asked for. One INVITE builder and sender for all of them, so every such call goes through the
//! outbound proxy, offers the same SDP and is tracked, cancelled and bridged the same way.

use super::events::RecallTarget;
use super::ids::CallRef;
use super::parking::CallTimer;
use super::{Purpose, Core};
use crate::dialog::{text, uri_addr};
use crate::media::{Codec, MediaLegId};
use crate::sdp::{self, Direction, LocalSdp};
use crate::sip::{CSeq, Common, Method, NameAddr, Peer, Request, Transport, Uri, Via};
use crate::time::Time;
use rand::Rng;
use std::net::SocketAddr;
use std::time::Duration;

/// What parkd keeps of an INVITE it sent: enough to CANCEL it (RFC 3261 §9.1: same Request-URI, Call-ID,
/// From, To, CSeq number, top Via and Route) and to form the dialog from its 2xx (§12.1.2). Plain data, not the
/// whole request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutgoingInvite {
    #[serde(with = "text::uri")]
    pub uri: Uri,
    #[serde(with = "text::name_addr")]
    pub from: NameAddr,
    #[serde(with = "text::name_addr")]
    pub to: NameAddr,
    pub call_id: String,
    pub cseq: u32,
    /// The top (and only) Via: parkd's sent-by, the transport and the branch.
    pub sent_by: SocketAddr,
    pub transport: Transport,
    pub branch: String,
    #[serde(with = "text::name_addrs")]
    pub route: Vec<NameAddr>,
}

impl OutgoingInvite {
    /// The INVITE's identifying fields as a request of `method` (no Contact, other headers or body): the
    /// dialog is formed from it, and its CANCEL is exactly this with method CANCEL.
    pub fn shape(&self, method: Method) -> Request {
        let via = Via::new(self.transport, self.sent_by, &self.branch);
        let cseq = CSeq { seq: self.cseq, method: method.clone() };
        Request {
            method,
            uri: self.uri.clone(),
            common: Common {
                max_forwards: Some(70),
                route: self.route.clone(),
                ..Common::new(vec![via], self.from.clone(), self.to.clone(), self.call_id.clone(), cseq)
            },
        }
    }
}

/// An outgoing call ringing for a parked call (a recall round or an API unpark) and what is known of it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recall {
    pub txn: crate::txn::ClientTxnId,
    pub invite: OutgoingInvite,
    pub next_hop: Peer,
    pub target: RecallTarget,
    /// The media leg offered in the INVITE (its port is in `local_sdp`).
    pub media_leg: MediaLegId,
    pub local_sdp: LocalSdp,
    pub ring_until: Time,
    /// A provisional response arrived (a CANCEL may be sent, RFC 3261 §9.1).
    pub provisional: bool,
}

/// Why parkd could not start an outgoing call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OriginateError {
    #[error("the destination has no IP address and no outbound_proxy is configured")]
    NoRoute,
    #[error("no RTP port is free")]
    NoPort,
    #[error("the parked call is gone")]
    NoCall,
}

/// What to call and how: everything that differs between a recall and an API unpark.
#[derive(Clone, Debug)]
pub(super) struct OriginateSpec {
    /// The Request-URI and To.
    pub to: Uri,
    /// From's display name (e.g. `Parked 701: bob`); From's URI is the orbit at parkd.
    pub from_display: String,
    /// Extra headers in order (Alert-Info, History-Info, Park-Recall, ...).
    pub headers: Vec<(&'static str, String)>,
    /// How long parkd lets it ring before giving up (the `RecallRing` call timer).
    pub ring: Duration,
    /// Recorded in the call's [`Recall`] so the outcome is routed (recall rounds vs. API unpark).
    pub target: RecallTarget,
}

impl Core {
    /// Sends an INVITE for parked call `call` to `spec.to` (through the outbound proxy when configured), with an
    /// SDP offer on a fresh RTP port, arms the ring timer and records it as the call's ringing [`Recall`].
    /// The answer is bridged to the parked party by the recall response handling.
    pub(super) fn originate(&mut self, now: Time, call: CallRef, spec: OriginateSpec) -> Result<(), OriginateError> {
        let Some(c) = self.parking.get(call) else { return Err(OriginateError::NoCall) };
        let orbit = c.orbit_name.clone();
        let mut target_uri = spec.to;
        target_uri.params.remove("tag");
        let next_hop = match (&self.ep.outbound_proxy, uri_addr(&target_uri)) {
            (Some((_, hop)), _) => *hop,
            (None, Some(addr)) => Peer { transport: target_uri.transport(), addr },
            (None, None) => {
                tracing::warn!(target = %target_uri, "destination has no IP address and no outbound_proxy is configured");
                return Err(OriginateError::NoRoute);
            }
        };
        let Some(media_leg) = self.port_beside_parked(now, call) else {
            tracing::warn!("no RTP port free for an outgoing call");
            return Err(OriginateError::NoPort);
        };
        // The parked party as the destination should see it (a trusted P-Asserted-Identity wins, see proxy.rs).
        let parked = self.parked_identity(call);
        let local_sdp = LocalSdp { session_id: self.ep.rng().gen::<u32>() as u64, version: 1, ip: self.ep.media_ip, port: media_leg.port() };
        let body = sdp::build_offer(&local_sdp, &[Codec::Pcmu, Codec::Pcma], Some(101), Direction::SendRecv);

        let mut from = NameAddr::new(Uri::from_addr(Some(&orbit), self.ep.local_addr));
        from.display = Some(spec.from_display);
        let from = from.with_tag(&self.ep.new_tag());
        let branch = self.ep.new_branch();
        let via_addr = self.ep.local_addr;
        let mut invite = Request {
            method: Method::Invite,
            uri: target_uri.clone(),
            common: Common {
                max_forwards: Some(70),
                contact: vec![self.ep.contact(next_hop.transport)],
                route: self.ep.outbound_proxy.iter().map(|(r, _)| r.clone()).collect(),
                ..Common::new(
                    vec![Via::new(next_hop.transport, self.ep.local_addr, &branch)],
                    from,
                    NameAddr::new(target_uri.clone()),
                    format!("recall-{:016x}@{}", self.ep.rng().gen::<u64>(), self.ep.local_addr.ip()),
                    CSeq { seq: 1, method: Method::Invite },
                )
            },
        };
        let c = &mut invite.common;
        for (name, value) in spec.headers {
            c.push_header(name, value);
        }
        if let Some(id) = &parked {
            c.push_header("P-Asserted-Identity", id.to_string());
        }
        c.push_header(super::invite::PARK_ORBIT_HEADER, orbit.clone());
        c.push_header("Allow", super::reply::ALLOW);
        c.push_header("User-Agent", super::reply::PRODUCT);
        c.set_body("application/sdp", body);

        let txn = self.ep.send(now, next_hop, &invite, Purpose::Recall(call));
        let ring_until = now + spec.ring;
        self.parking.arm(ring_until, call, CallTimer::RecallRing);
        let target = spec.target;
        let Common { from, to, call_id, cseq, route, .. } = invite.common;
        let invite = OutgoingInvite { uri: invite.uri, from, to, call_id, cseq: cseq.seq, sent_by: via_addr, transport: next_hop.transport, branch, route };
        if let Some(c) = self.parking.get_mut(call) {
            c.recall = Some(Box::new(Recall { txn, invite, next_hop, target, media_leg, local_sdp, ring_until, provisional: false }));
            if let Some(o) = c.orbit {
                let lot = c.lot;
                self.orbit_changed(now, lot, o);
            }
        }
        tracing::info!(%orbit, to = %target_uri, via = %next_hop.addr, ?target, "outgoing call started");
        Ok(())
    }
}
