//! Where requests meet the admission room ([`super::admission`]), and the hooks that tell the room what each
//! source holds.
//!
//! Order of the checks, cheapest and least revealing first:
//! 1. [`Core::screen`], on every new server transaction (and a CANCEL matching no INVITE): a scanner's
//!    `User-Agent` → dropped unanswered; then the source's rate limits (new dialogs, other out-of-dialog
//!    requests, requests inside its dialogs) and, for an INVITE, its cap on calls answered but not ACKed →
//!    `503` + `Retry-After`, or silence once the source had its `refusals_per_second` 503s this second.
//!    Malformed requests parkd would answer 400 take from the out-of-dialog bucket too ([`Core::may_answer_malformed`]).
//! 2. [`Core::gate`], once the lot and the action (park / retrieve) are known: the lot's source lists (403),
//!    digest authentication (401), `trusted_only` (403), drain and the capacity guard (503 for parks), then the source's cap on
//!    orbits held by its parked calls (503 / silence). SUBSCRIBE has its own sequence in `subscribe.rs` ending with
//!    the cap on subscriptions.
//!
//! A refused request keeps no state but its transaction (so a retransmission gets the same answer); a
//! dropped one keeps nothing at all.

use super::admission::{Action, Forbidden, Hold, Reason, Verdict};
use super::Core;
use crate::config::{AuthAction, AuthConfig};
use crate::dialog::DialogKey;
use crate::park::lot::OrbitIdx;
use crate::sip::{Method, Peer, Request};
use crate::time::Time;
use crate::txn::ServerTxnId;

impl Core {
    /// The first look at a new request. Returns whether parkd may go on with it; otherwise it was answered
    /// 503 or dropped (its transaction forgotten).
    pub(super) fn screen(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: &Request) -> bool {
        let ip = from.addr.ip();
        if let Some(ua) = req.common.header("User-Agent") {
            if self.admission.screen_user_agent(now, ip, ua) {
                self.ep.txn.forget_unanswered(txn);
                return false;
            }
        }
        let verdict = match (&req.method, req.common.to.tag().is_some()) {
            (_, true) if self.knows_dialog(req) => self.admission.admit_in_dialog(now, ip),
            (Method::Invite, false) => self.admission.admit_new_dialog(now, ip, true),
            (Method::Subscribe, false) => self.admission.admit_new_dialog(now, ip, false),
            _ => self.admission.admit_out_of_dialog(now, ip),
        };
        self.obey(now, txn, req, verdict)
    }

    /// Whether a malformed request from `from` may be answered (400): it takes an out-of-dialog token, so junk
    /// sent at wire speed is not reflected at wire speed. Over the limit its 400 stands in for the 503 (one of
    /// the `refusals_per_second` answers), then silence.
    pub(super) fn may_answer_malformed(&mut self, now: Time, from: Peer) -> bool {
        self.admission.admit_out_of_dialog(now, from.addr.ip()) != Verdict::Drop
    }

    /// Carries out the room's verdict on request `req`: nothing, a 503 with Retry-After, or silence.
    pub(super) fn obey(&mut self, now: Time, txn: ServerTxnId, req: &Request, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Admit => true,
            Verdict::Refuse { retry_after } => {
                self.ep.respond(now, txn, req, 503, Some("Service Unavailable"), None, |r| {
                    r.common.push_header("Retry-After", retry_after.to_string());
                });
                false
            }
            Verdict::Drop => {
                self.ep.txn.forget_unanswered(txn);
                false
            }
        }
    }

    /// Whether a request's To tag names a dialog or subscription parkd holds.
    fn knows_dialog(&self, req: &Request) -> bool {
        let Some(tag) = req.common.to.tag() else { return false };
        let key = DialogKey { call_id: req.common.call_id.as_str().into(), local_tag: tag.to_string() };
        self.dialogs.find(&key).is_some() || self.blf.by_dialog(&key).is_some()
    }

    /// Every check a request must pass before parkd acts on it in `lot`: the lot's source networks (403), digest
    /// authentication (401), the trusted-proxy requirement (403), drain (503 for parks) and the source's cap
    /// on parked calls. A refused request is answered here; returns whether parkd may go on.
    pub(super) fn gate(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: &Request, lot: usize, action: Action) -> bool {
        if let Err(e) = self.access(lot, action, from) {
            self.admission.refused(now, from.addr.ip(), Reason::Acl);
            self.ep.refuse(now, txn, req, 403, e.reason());
            return false;
        }
        if !self.authorized(now, txn, from, req, lot, action) {
            return false;
        }
        if self.parking.lot(lot).is_some_and(|l| l.cfg.trusted_only) && !self.trusted(from) {
            self.admission.refused(now, from.addr.ip(), Reason::Acl);
            self.ep.refuse(now, txn, req, 403, "Forbidden: Not From A Trusted Proxy");
            return false;
        }
        if action != Action::Park {
            return true;
        }
        if self.admission.is_draining() {
            self.refuse_draining(now, txn, req);
            return false;
        }
        if !self.capacity_admits(now) {
            self.refuse_capacity(now, txn, req);
            return false;
        }
        let verdict = self.admission.admit_park(now, from.addr.ip());
        self.obey(now, txn, req, verdict)
    }

    /// Whether the lot's source lists let `from` perform `action` (unknown lots: allowed).
    pub(super) fn access(&self, lot: usize, action: Action, from: Peer) -> Result<(), Forbidden> {
        match self.parking.lot(lot) {
            Some(l) => super::admission::check(&l.cfg, action, from.addr.ip()),
            None => Ok(()),
        }
    }

    /// Tells the room who holds orbit `orbit` of lot `lot` now: the source of the call parked there, if any.
    /// Called from `orbit_changed`, which the engine calls on every change of an orbit.
    pub(super) fn admission_orbit_changed(&mut self, now: Time, lot: usize, orbit: OrbitIdx) {
        let holder = self
            .parking
            .parked_in(lot, orbit)
            .and_then(|call| self.parking.get(call))
            .and_then(|c| self.dialogs.get(c.parked))
            .map(|leg| leg.source.addr.ip());
        self.admission.set_orbit_holder(now, lot, orbit, holder);
    }

    /// A leg parkd answered 2xx from `from`: unconfirmed until its ACK.
    pub(super) fn admission_unconfirmed(&mut self, now: Time, leg: super::LegId, from: Peer) {
        self.admission.hold(now, Hold::Unconfirmed(leg), from.addr.ip());
    }

    /// The refusal counts by reason (exported as `parkd_sip_refusals_total{reason}`).
    pub fn refusals(&self) -> super::admission::RefusalCounts {
        self.admission.refusals()
    }

    /// Sources the admission room tracks right now (bounded by `[limits] tracked_sources`).
    pub fn tracked_sources(&self) -> usize {
        self.admission.tracked_sources()
    }

    /// Digest-authenticates `req` for `action` in lot `lot` when the lot asks for it. On failure answers the
    /// request `401` with fresh SHA-256 and MD5 challenges and returns false.
    pub(super) fn authorized(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: &Request, lot: usize, action: Action) -> bool {
        let Some(cfg) = self.parking.cfg(lot).and_then(|c| c.auth.clone()) else { return true };
        let wanted = match action {
            Action::Park => AuthAction::Park,
            Action::Retrieve => AuthAction::Retrieve,
            Action::Subscribe => AuthAction::Subscribe,
        };
        if !cfg.actions.contains(&wanted) {
            return true;
        }
        self.digest(now, txn, from, req, &cfg)
    }

    /// A number no lot knows, dialed (INVITE) or watched (SUBSCRIBE) from an untrusted source while some lot
    /// uses digest authentication: challenged exactly like a guarded number of that lot (the first with
    /// `[lot.auth]`), so a scanner cannot tell numbers that exist from numbers that do not (SIPVicious'
    /// `svwar` gives up when an unknown number is challenged, as with Asterisk's `alwaysauthreject`).
    /// With valid credentials, or when no lot authenticates, the caller answers 404. Returns false when the
    /// request was answered 401 here.
    pub(super) fn authorized_for_unknown_number(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: &Request) -> bool {
        if self.trusted(from) {
            return true;
        }
        let Some(cfg) = self.parking.lots().find_map(|l| l.cfg.auth.clone()) else { return true };
        self.digest(now, txn, from, req, &cfg)
    }

    /// The admission room checks `req`'s credentials against `cfg`; a failure is answered 401 with its challenge.
    fn digest(&mut self, now: Time, txn: ServerTxnId, from: Peer, req: &Request, cfg: &AuthConfig) -> bool {
        let Err(challenge) = self.admission.digest(now, from.addr.ip(), req, cfg, self.ep.rng()) else { return true };
        self.ep.respond(now, txn, req, 401, None, None, |r| {
            for value in challenge.headers() {
                r.common.push_header("WWW-Authenticate", value);
            }
        });
        false
    }
}
