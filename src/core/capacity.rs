//! The capacity guard's place in the core (issue 20): the media threads' load comes in as an input
//! ([`Core::handle_media_load`], the io side measures, the core decides), a new park asks
//! [`Core::capacity_admits`] after drain, and a refused one is answered `503` + `Retry-After`. The state machine
//! itself is the admission room's ([`super::admission::capacity`]).
//!
//! Where parks are refused: an INVITE to a park code or orbit (and an attended-park swap) in [`Core::gate`], a
//! REFER (202, then a final NOTIFY `SIP/2.0 503 Service Unavailable`; the call stays bridged) and the API's park
//! (`503` with `Retry-After`). Each refusal counts as `media_capacity` in `parkd_sip_refusals_total`; each turn of
//! the guard is a [`ParkEvent::Capacity`] and a WARN line.

use super::admission::capacity::{GuardState, MediaLoad, Transition};
use super::admission::Reason;
use super::{Core, ParkEvent};
use crate::sip::Request;
use crate::time::Time;
use crate::txn::ServerTxnId;

impl Core {
    /// Input: each media thread's measured load (index = thread), as the io side last smoothed it.
    pub fn handle_media_load(&mut self, now: Time, loads: &[MediaLoad]) {
        let (parked, threads) = (self.parking.len(), self.ports.shards());
        if let Some(t) = self.admission.capacity.observe(now, loads, parked, threads) {
            self.capacity_turned(t);
        }
    }

    /// The loads of the last [`Core::handle_media_load`] (the `parkd_media_load` gauge).
    pub fn media_loads(&self) -> &[MediaLoad] {
        self.admission.capacity.loads()
    }

    /// Whether the capacity guard takes new parks now.
    pub fn capacity_state(&self) -> GuardState {
        self.admission.capacity.state()
    }

    /// Whether a new park may go on. A refusal is counted (`media_capacity`); the caller answers it.
    pub(super) fn capacity_admits(&mut self, now: Time) -> bool {
        let (parked, threads) = (self.parking.len(), self.ports.shards());
        let (ok, turned) = self.admission.capacity.admit(now, parked, threads);
        if let Some(t) = turned {
            self.capacity_turned(t);
        }
        if !ok {
            self.admission.count(Reason::MediaCapacity);
        }
        ok
    }

    /// Seconds in the `Retry-After` of a park the guard refused.
    pub(super) fn capacity_retry_after(&self) -> u32 {
        self.admission.capacity.config().retry_after
    }

    fn capacity_turned(&mut self, t: Transition) {
        let (load_pct, late_us) = ((t.load.busy * 100.0).round().clamp(0.0, 1000.0) as u32, (t.load.late_ms * 1000.0).round().max(0.0) as u64);
        match t.state {
            GuardState::Refusing => tracing::warn!(cause = t.cause.as_str(), load_pct, late_us, "capacity guard: refusing new parks (503) to keep hold music clean"),
            GuardState::Accepting => tracing::warn!(load_pct, late_us, "capacity guard: accepting new parks again"),
        }
        self.ep.emit(ParkEvent::Capacity { state: t.state.as_str().into(), cause: t.cause.as_str().into(), load_pct, late_us });
    }

    /// Answers a park the guard refused: 503 with Retry-After, reported as a `refused` event.
    pub(super) fn refuse_capacity(&mut self, now: Time, txn: ServerTxnId, req: &Request) {
        tracing::debug!(number = req.uri.user.as_deref().unwrap_or(""), "capacity guard: park refused");
        self.ep.emit(ParkEvent::Refused {
            number: req.uri.user.as_deref().unwrap_or_default().to_string(),
            status: 503,
            reason: "Media Capacity".into(),
            call_id: req.common.call_id.as_str().into(),
        });
        let retry = self.capacity_retry_after();
        self.ep.respond(now, txn, req, 503, Some("Service Unavailable: Media Capacity"), None, |r| {
            r.common.push_header("Retry-After", retry.to_string());
        });
    }
}
