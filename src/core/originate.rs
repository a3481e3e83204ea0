//! Calls parkd starts on behalf of a parked call: a recall to the parker or the fallback URI, or an unpark an
//! application asked for. One INVITE builder and sender for all of them, so every such call goes through the
//! outbound proxy, offers the same SDP (`RTP/SAVP` with SDES keys when the lot and the hop allow, issue 19:
//! `core::srtp::OfferedSrtp`) and is tracked, cancelled and bridged the same way.

use super::bridging::{OutgoingInvite, Recall};
use super::events::RecallTarget;
use super::ids::CallRef;
use super::{Core, Purpose};
use crate::dialog::uri_addr;
use crate::media::Codec;
use crate::sdp::{self, Direction, LocalSdp};
use crate::sip::{CSeq, Common, Method, NameAddr, Peer, Request, Uri, Via};
use crate::time::Time;
use rand::Rng;
use std::time::Duration;

/// Why parkd could not start an outgoing call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OriginateError {
    #[error("the destination has no IP address and no outbound_proxy is configured")]
    NoRoute,
    #[error("no RTP port is free")]
    NoPort,
    #[error("the parked call is gone")]
    NoCall,
    /// The lot requires SRTP and the SDES keys may not be sent to the next hop (see `core::srtp::OfferedSrtp`).
    #[error("the lot requires SRTP and SDES keys may only be sent over TLS here (srtp_over_plain is off)")]
    SrtpNeedsTls,
}

/// What to call and how: everything that differs between a recall and an API unpark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct OriginateSpec {
    /// The Request-URI and To.
    pub to: Uri,
    /// From's display name (e.g. `Parked 701: bob`); From's URI is the orbit at parkd.
    pub from_display: String,
    /// Extra headers in order (Alert-Info, History-Info, Park-Recall, ...).
    pub headers: Vec<(&'static str, String)>,
    /// How long parkd lets it ring before giving up (the bridging room's ring deadline).
    pub ring: Duration,
    /// Recorded in the call's [`Recall`] so the outcome is routed (recall rounds vs. API unpark).
    pub target: RecallTarget,
}

impl Core {
    /// Sends an INVITE for parked call `call` to `spec.to` (through the outbound proxy when configured), with an
    /// SDP offer on a fresh RTP port, arms the ring timer and records it as the call's ringing [`Recall`].
    /// The answer is bridged to the parked party by the recall response handling.
    ///
    /// The offer is `RTP/SAVP` with parkd's SDES keys when the lot's SRTP policy and the next hop allow
    /// ([`super::srtp::OfferedSrtp`] has the rule, including a `required` lot whose keys may not be sent:
    /// [`OriginateError::SrtpNeedsTls`], nothing sent).
    pub(super) fn originate(&mut self, now: Time, call: CallRef, spec: OriginateSpec) -> Result<(), OriginateError> {
        self.originate_as(now, call, spec, false)
    }

    /// [`Core::originate`]; `plain`: a plain `RTP/AVP` offer whatever the policy (the retry after a 488 to an SRTP
    /// offer under `srtp = "optional"`).
    pub(super) fn originate_as(&mut self, now: Time, call: CallRef, spec: OriginateSpec, plain: bool) -> Result<(), OriginateError> {
        let Some(c) = self.parking.get(call) else { return Err(OriginateError::NoCall) };
        let lot = c.lot;
        let orbit = c.orbit_name.clone();
        let mut target_uri = spec.to.clone();
        target_uri.params.remove("tag");
        let next_hop = match (&self.ep.outbound_proxy, uri_addr(&target_uri)) {
            (Some((_, hop)), _) => *hop,
            (None, Some(addr)) => Peer { transport: target_uri.transport(), addr },
            (None, None) => {
                tracing::warn!(target = %target_uri, "destination has no IP address and no outbound_proxy is configured");
                return Err(OriginateError::NoRoute);
            }
        };
        let srtp = match self.srtp_offer(Some(lot), &next_hop, plain) {
            Ok(s) => s,
            Err(why) => {
                tracing::warn!(target = %target_uri, via = %next_hop.addr, reason = why, "outgoing call not started");
                return Err(OriginateError::SrtpNeedsTls);
            }
        };
        let plain_retry = srtp.as_ref().filter(|s| s.plain_retry()).map(|_| spec.clone());
        let Some(media_leg) = self.port_beside_parked(now, call) else {
            tracing::warn!("no RTP port free for an outgoing call");
            return Err(OriginateError::NoPort);
        };
        // The parked party as the destination should see it (a trusted P-Asserted-Identity wins, see proxy.rs).
        let parked = self.parked_identity(call);
        let local_sdp = LocalSdp { session_id: self.ep.rng().gen::<u32>() as u64, version: 1, ip: self.ep.media_ip_for(next_hop.addr.ip()), port: media_leg.port() };
        // rtcp-mux offered, with the RTCP port for an answerer that does not take it (RFC 5761 §5.1.3).
        let body = sdp::build_offer(&local_sdp, &[Codec::Pcmu, Codec::Pcma], Some(101), Direction::SendRecv);
        let mut body = sdp::with_rtcp(&body, self.ports.rtcp_port(media_leg.port()), true, true);
        if let Some(s) = &srtp {
            body = s.secure(&body);
        }

        let local = self.ep.local_for(next_hop.addr.ip());
        let mut from = NameAddr::new(Uri::from_addr(Some(&orbit), local));
        from.display = Some(spec.from_display.into());
        let from = from.with_tag(&self.ep.new_tag());
        let branch = self.ep.new_branch();
        let via_addr = self.ep.sent_by_to(next_hop);
        let mut invite = Request {
            method: Method::Invite,
            uri: target_uri.clone(),
            common: Common {
                max_forwards: Some(70),
                contact: vec![self.ep.contact_for(&target_uri, next_hop)],
                route: self.ep.outbound_proxy.iter().map(|(r, _)| r.clone()).collect(),
                ..Common::new(
                    vec![Via::new(next_hop.transport, via_addr, &branch)],
                    from,
                    NameAddr::new(target_uri.clone()),
                    self.ep.new_call_id("recall", local.ip()).into(),
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
        // RFC 4028 §7.1: parkd offers session timers and asks for its interval; the 2xx decides (recall.rs).
        if self.stimer.enabled {
            c.push_header("Supported", super::inbound::SUPPORTED.join(", "));
            if self.stimer.expires > 0 {
                c.push_header("Session-Expires", self.stimer.expires.to_string());
                c.push_header("Min-SE", self.stimer.min_se.to_string());
            }
        }
        c.set_body("application/sdp", body);

        let txn = self.ep.send(now, next_hop, &invite, Purpose::Recall(call));
        let ring_until = now + spec.ring;
        let target = spec.target;
        let invite = OutgoingInvite::of(invite, via_addr, next_hop.transport, branch);
        self.touch(call);
        let srtp_offered = srtp.is_some();
        self.bridging.ring(call, Recall { txn, invite, next_hop, target, media_leg, local_sdp, ring_until, provisional: false, srtp, plain_retry });
        if let Some(c) = self.parking.get(call) {
            let (lot, o) = (c.lot, c.orbit);
            self.orbit_changed(now, lot, o);
        }
        tracing::info!(%orbit, to = %target_uri, via = %next_hop.addr, ?target, srtp = srtp_offered, "outgoing call started");
        Ok(())
    }
}
