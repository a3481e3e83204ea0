//! Building and sending responses to requests parkd received.

use super::Core;
use crate::sip::{reason_phrase, Request, Response};
use crate::time::Time;
use crate::txn::ServerTxnId;

/// Methods parkd accepts, advertised in `Allow` (RFC 3261 §20.5).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, REFER, SUBSCRIBE";
/// Event packages parkd serves, advertised in `Allow-Events` (RFC 6665 §8.2.2).
pub const ALLOW_EVENTS: &str = "dialog";
/// parkd's product token for `Server`/`User-Agent`.
pub const PRODUCT: &str = concat!("parkd/", env!("CARGO_PKG_VERSION"));

impl Core {
    /// Answers server transaction `txn` (opened by `req`) with `status`. A To tag is added to any non-100
    /// response to a request without one (a fresh tag unless `to_tag` names the dialog's). `build` adds
    /// headers and body.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond(
        &mut self,
        now: Time,
        txn: ServerTxnId,
        req: &Request,
        status: u16,
        reason: Option<&str>,
        to_tag: Option<&str>,
        build: impl FnOnce(&mut Response),
    ) {
        let fresh;
        let to_tag = match to_tag {
            Some(t) => Some(t),
            None if status > 100 && req.common.to.tag().is_none() => {
                fresh = self.new_tag();
                Some(fresh.as_str())
            }
            None => None,
        };
        let mut resp = Response::to_request(req, status, reason.unwrap_or(reason_phrase(status)), to_tag);
        resp.common.push_header("Server", PRODUCT);
        if status == 405 || status == 501 {
            resp.common.push_header("Allow", ALLOW);
        }
        build(&mut resp);
        self.txn.respond(now, txn, &resp);
    }

    /// A final refusal of a request outside any dialog, reported as an event.
    pub(super) fn refuse(&mut self, now: Time, txn: ServerTxnId, req: &Request, status: u16, reason: &str) {
        tracing::info!(status, reason, number = req.uri.user.as_deref().unwrap_or(""), "refused");
        self.out.push_back(super::Output::Event(super::ParkEvent::Refused {
            number: req.uri.user.clone().unwrap_or_default(),
            status,
            reason: reason.to_string(),
            call_id: req.common.call_id.clone(),
        }));
        self.respond(now, txn, req, status, Some(reason), None, |_| {});
    }
}
