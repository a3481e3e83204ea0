//! parkd behind a proxy or PBX (RFC 3261 §16, RFC 3325): what a request that came through a proxy needs
//! before the engine looks at it, whom to trust with identity, and drain mode.
//!
//! * A Route naming parkd itself at the top of a request is consumed (loose routing, RFC 3261 §16.4): parkd is
//!   the destination, so its own entry is removed before the request is processed
//!   ([`super::endpoint::Endpoint::accept_routed`]: the endpoint knows parkd's addresses).
//! * A request whose Via list holds parkd's own sent-by with a branch parkd made has looped back
//!   (RFC 3261 §16.3 step 4 / §8.2.2.2 spirit): answered 482 (the endpoint too).
//! * `trusted_proxies`: only requests from those networks may assert an identity (P-Asserted-Identity,
//!   [`super::admission::Admission::asserted_identity`]); from anywhere else the header is ignored. A lot with
//!   `trusted_only` refuses untrusted sources with 403.
//! * Drain mode ([`Core::set_draining`], SIGUSR1 or `drain = true`): new parks get `503` with `Retry-After`
//!   while retrieves, recalls and parked calls go on. OPTIONS stays 200 on purpose: retrieves of the calls
//!   still parked here must keep reaching this instance, so a dispatcher must not take it out of service;
//!   a proxy retries a 503'd park on another parkd (Kamailio: `failure_route` + `ds_next_dst`).

use super::ids::CallRef;
use super::Core;
use crate::sip::{NameAddr, Peer, Request};
use crate::time::Time;
use crate::txn::ServerTxnId;

/// What every branch parkd generates starts with, after the RFC 3261 magic cookie, so a looped request is
/// recognisable (RFC 3261 §8.1.1.7 leaves the rest of the branch to the UA).
pub const BRANCH_MARK: &str = "z9hG4bKpk";
/// Seconds a draining parkd asks callers to wait before trying it again (RFC 3261 §20.33).
pub const DRAIN_RETRY_AFTER: u32 = 60;

impl Core {
    /// Turns drain mode on or off. While draining, new parks are refused with 503 + Retry-After; everything
    /// already under way (parked calls, their recalls, retrieves) continues.
    pub fn set_draining(&mut self, on: bool) {
        if self.admission.is_draining() != on {
            tracing::info!(draining = on, "drain mode {}", if on { "on: new parks are refused" } else { "off" });
        }
        self.admission.set_draining(on);
    }

    /// Whether drain mode is on.
    pub fn is_draining(&self) -> bool {
        self.admission.is_draining()
    }

    /// Whether requests from `from` are trusted (`trusted_proxies`, the admission room's one rule).
    pub(super) fn trusted(&self, from: Peer) -> bool {
        self.admission.is_trusted(from.addr.ip())
    }

    /// Who the parked party of `call` is, for P-Asserted-Identity in retrieves and recalls: the identity a
    /// trusted proxy asserted when it was parked, else its From (without tag).
    pub(super) fn parked_identity(&self, call: CallRef) -> Option<NameAddr> {
        let c = self.parking.get(call)?;
        if let Some(id) = &c.asserted_identity {
            return Some(NameAddr::clone(id));
        }
        self.dialogs.remote_identity(c.parked)
    }

    /// Refuses a new park while draining: 503 with Retry-After, reported as an event.
    pub(super) fn refuse_draining(&mut self, now: Time, txn: ServerTxnId, req: &Request) {
        tracing::info!(number = req.uri.user.as_deref().unwrap_or(""), "draining: park refused");
        self.ep.emit(super::ParkEvent::Refused {
            number: req.uri.user.as_deref().unwrap_or_default().to_string(),
            status: 503,
            reason: "Draining".into(),
            call_id: req.common.call_id.as_str().into(),
        });
        self.ep.respond(now, txn, req, 503, Some("Service Unavailable: Draining"), None, |r| {
            r.common.push_header("Retry-After", DRAIN_RETRY_AFTER.to_string());
        });
    }
}
