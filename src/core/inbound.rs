//! Requests and responses arriving from the network: decode, hand to the transaction layer, then route by
//! method and dialog.

use super::reply::{ALLOW, ALLOW_EVENTS};
use super::{Core, ParkEvent, Purpose};
use crate::dialog::DialogKey;
use crate::sip::{Message, Method, Peer, Request, Response};
use crate::time::Time;
use crate::txn::{ClientVerdict, ServerTxnId, ServerVerdict, TxnEvent};

/// Option tags (RFC 3261 §19.2) parkd implements: Replaces (RFC 3891), Refer-Sub: false (RFC 4488) and session
/// timers (RFC 4028).
pub(super) const SUPPORTED: [&str; 3] = ["replaces", "norefersub", "timer"];

impl Core {
    /// One SIP message from `from` (a UDP datagram, or one message framed off a TCP stream).
    /// Malformed input is answered 400 when enough of it is readable, else dropped; it never panics.
    pub fn handle_sip(&mut self, now: Time, from: Peer, bytes: &[u8]) {
        match crate::sip::parse_message(bytes) {
            Ok(Message::Request(req)) => self.on_request(now, from, req),
            Ok(Message::Response(resp)) => self.on_response(now, from, resp),
            Err(err) => {
                self.malformed += 1;
                match err.response_bytes() {
                    Some(bytes) if self.may_answer_malformed(now, from) => {
                        tracing::debug!(%err, from = %from.addr, "malformed request, answering {}", err.status());
                        let method = err.reply().map(|r| r.method()).unwrap_or(Method::Other(String::new()));
                        self.ep.send_stateless(from, bytes, crate::txn::MsgKind::response(err.status(), &method));
                    }
                    Some(_) => tracing::debug!(%err, from = %from.addr, "malformed request from a source over its limits dropped"),
                    None => tracing::debug!(%err, from = %from.addr, "undecodable message dropped"),
                }
            }
        }
        self.settle(now);
    }

    fn on_request(&mut self, now: Time, from: Peer, req: Request) {
        match self.ep.txn.on_request(now, from, &req) {
            ServerVerdict::New(id) => self.on_new_request(now, id, from, req),
            ServerVerdict::Retransmission | ServerVerdict::AckAbsorbed => {}
            ServerVerdict::Malformed => {
                self.malformed += 1;
                tracing::debug!(from = %from.addr, "request without a usable Via dropped");
            }
            ServerVerdict::AckForDialog => self.on_ack(now, from, &req),
            ServerVerdict::Cancel { cancel, invite } => {
                // A CANCEL of a pending INVITE is free; one matching nothing is an out-of-dialog request.
                if invite.is_some() || self.screen(now, cancel, from, &req) {
                    self.on_cancel(now, cancel, invite, &req);
                }
            }
        }
    }

    fn on_new_request(&mut self, now: Time, id: ServerTxnId, from: Peer, mut req: Request) {
        if !self.screen(now, id, from, &req) {
            return;
        }
        if req.common.max_forwards == Some(0) {
            // RFC 3261 §16.3 / §8.2: a request that has run out of hops.
            return self.ep.respond(now, id, &req, 483, None, None, |_| {});
        }
        if !self.ep.accept_routed(now, id, &mut req) {
            return;
        }
        // RFC 3261 §8.2.2.3: an extension the request requires and parkd does not support → 420 + Unsupported.
        let unsupported: Vec<String> = req
            .common
            .headers_named("Require")
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty() && !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() && req.method != Method::Cancel {
            let list = unsupported.join(", ");
            return self.ep.respond(now, id, &req, 420, None, None, |r| {
                r.common.push_header("Unsupported", list);
                r.common.push_header("Supported", SUPPORTED.join(", "));
            });
        }
        if req.common.to.tag().is_some() {
            return self.on_in_dialog(now, id, from, req);
        }
        match &req.method {
            Method::Invite => self.on_invite(now, id, from, req),
            Method::Options => self.ep.respond(now, id, &req, 200, None, None, |r| {
                r.common.push_header("Allow", ALLOW);
                r.common.push_header("Accept", "application/sdp");
                r.common.push_header("Supported", SUPPORTED.join(", "));
                r.common.push_header("Allow-Events", ALLOW_EVENTS);
            }),
            Method::Subscribe => self.on_subscribe(now, id, from, req),
            Method::Register | Method::Message | Method::Publish => {
                self.ep.respond(now, id, &req, 405, None, None, |_| {})
            }
            // parkd only takes a REFER inside a call it is part of; it never dials on someone's behalf.
            Method::Refer => self.ep.respond(now, id, &req, 403, Some("REFER Only Inside A Call"), None, |_| {}),
            Method::Bye | Method::Notify | Method::Info | Method::Prack | Method::Update | Method::Cancel | Method::Ack => {
                self.ep.respond(now, id, &req, 481, None, None, |_| {})
            }
            Method::Other(m) => {
                tracing::debug!(method = %m, "unknown method");
                self.ep.respond(now, id, &req, 501, None, None, |_| {})
            }
        }
    }

    /// A request inside a dialog parkd holds (its To tag is parkd's).
    fn on_in_dialog(&mut self, now: Time, id: ServerTxnId, from: Peer, req: Request) {
        let key = DialogKey { call_id: req.common.call_id.as_str().into(), local_tag: req.common.to.tag().unwrap_or("").to_string() };
        if let Some(sub) = self.blf.by_dialog(&key) {
            return self.on_subscription_request(now, id, from, req, sub);
        }
        let Some(leg_id) = self.dialogs.find(&key) else {
            return self.ep.respond(now, id, &req, 481, None, None, |_| {});
        };
        let Some(leg) = self.dialogs.get_mut(leg_id) else {
            return self.ep.respond(now, id, &req, 481, None, None, |_| {});
        };
        let span = leg.span();
        let _enter = span.enter();
        self.journal.touch(leg.call);
        if !leg.dialog.accept_remote_cseq(req.common.cseq.seq, &req.method) {
            // RFC 3261 §12.2.2: out-of-order CSeq.
            return self.ep.respond(now, id, &req, 500, Some("CSeq Out of Order"), None, |_| {});
        }
        match &req.method {
            Method::Bye => {
                tracing::info!("BYE received");
                self.ep.respond(now, id, &req, 200, None, None, |_| {});
                // A node's fetch the retriever gave up on: the call goes back into its orbit (cluster_lend.rs).
                if !self.hand_back(now, leg_id, &req) {
                    self.end_leg(now, leg_id, false);
                }
            }
            Method::Invite => self.on_reinvite(now, id, from, req, leg_id),
            // UPDATE: a session refresh without a body (RFC 4028), an offer with one.
            Method::Update => self.on_reinvite(now, id, from, req, leg_id),
            Method::Info => self.on_info(now, id, &req, leg_id),
            Method::Options => self.ep.respond(now, id, &req, 200, None, None, |_| {}),
            Method::Notify | Method::Prack => self.ep.respond(now, id, &req, 481, None, None, |_| {}),
            Method::Refer => self.on_refer(now, id, req, leg_id),
            Method::Subscribe | Method::Message | Method::Register | Method::Publish => {
                self.ep.respond(now, id, &req, 405, None, None, |_| {})
            }
            Method::Other(_) => self.ep.respond(now, id, &req, 501, None, None, |_| {}),
            Method::Ack | Method::Cancel => {}
        }
    }

    /// An ACK for a 2xx parkd sent (RFC 3261 §13.3.1.4): the dialog is confirmed and media may start.
    fn on_ack(&mut self, now: Time, _from: Peer, req: &Request) {
        let key = DialogKey { call_id: req.common.call_id.as_str().into(), local_tag: req.common.to.tag().unwrap_or("").to_string() };
        self.ep.txn.ack_received(now, &req.common.call_id, req.common.cseq.seq);
        let Some(leg_id) = self.dialogs.find(&key) else {
            tracing::debug!(call_id = %req.common.call_id, "ACK for no dialog dropped");
            return;
        };
        let Some(leg) = self.dialogs.confirm(leg_id) else { return };
        let call = leg.call;
        self.admission.release(super::admission::Hold::Unconfirmed(leg_id));
        if leg.media.awaiting_answer && !req.common.body.is_empty() {
            self.apply_remote_sdp(now, leg_id, &req.common.body);
        }
        self.sync_media(now, call);
    }

    /// CANCEL (RFC 3261 §9.2): 200 to the CANCEL; 487 to the INVITE if it is still unanswered.
    fn on_cancel(&mut self, now: Time, cancel: ServerTxnId, invite: Option<ServerTxnId>, req: &Request) {
        let Some(invite) = invite else {
            return self.ep.respond(now, cancel, req, 481, None, None, |_| {});
        };
        // RFC 3261 §9.2: the 200 to the CANCEL carries the same To tag as the INVITE's response.
        let tag = self.dialogs.awaiting_ack(invite).map(|l| l.dialog.local_tag().to_string());
        self.ep.respond(now, cancel, req, 200, None, tag.as_deref(), |_| {});
        // parkd answers INVITEs at once, so this is rare.
        if self.ep.txn.awaiting_final(invite) {
            if let Some(inv) = self.ep.txn.server_request(invite).cloned() {
                self.ep.respond(now, invite, &inv, 487, None, None, |_| {});
                self.fetch_cancelled(now, invite);
            }
        }
    }

    fn on_response(&mut self, now: Time, from: Peer, resp: Response) {
        let Some((id, verdict)) = self.ep.txn.on_response(now, from, &resp) else {
            // No transaction: perhaps the answer to a recall INVITE sent before a restart (issue 17).
            return self.on_restored_invite_response(now, &resp);
        };
        let Some(purpose) = self.ep.purpose(id) else { return };
        match (purpose, verdict) {
            (Purpose::Bye | Purpose::Cancel | Purpose::Notify, ClientVerdict::Final(_)) => {
                self.ep.finish(id);
            }
            (Purpose::Bye | Purpose::Cancel | Purpose::Notify, ClientVerdict::Provisional(_)) => {}
            (Purpose::Recall(call), v) => {
                self.touch(call);
                self.on_recall_response(now, call, id, v)
            }
            (Purpose::Keepalive(call), ClientVerdict::Final(r)) => {
                self.ep.finish(id);
                self.on_keepalive_result(now, call, r.status);
            }
            (Purpose::Keepalive(_), ClientVerdict::Provisional(_)) => {}
            (Purpose::OrphanRecall, v) => self.on_orphan_response(now, id, v),
            (Purpose::RecallAnswered { leg }, ClientVerdict::Final(r)) if r.is_success() => {
                // A retransmitted 2xx: the ACK was lost, send it again (RFC 3261 §13.2.2.4).
                if let Some((to, ack)) = self.dialogs.get(leg).and_then(|l| l.ack_again()) {
                    self.ep.send_ack(to, ack);
                }
            }
            (Purpose::RecallAnswered { .. }, _) => {}
            (Purpose::BlfNotify(sub), v) => self.on_notify_response(now, sub, id, v),
            (Purpose::Probe { leg, last }, ClientVerdict::Final(r)) => {
                self.ep.finish(id);
                self.on_probe_result(now, leg, r.status, last);
            }
            (Purpose::Probe { .. }, ClientVerdict::Provisional(_)) => {}
            (Purpose::RestoredCancel(call), ClientVerdict::Final(r)) => {
                self.ep.finish(id);
                // 200: the INVITE was pending there, its 487 follows. Anything else: nothing rings there.
                if r.status != 200 {
                    self.ring_again(now, call);
                }
            }
            (Purpose::RestoredCancel(_), ClientVerdict::Provisional(_)) => {}
            (Purpose::ClusterFetch(call), v) => self.on_fetch_response(now, call, id, v),
            (Purpose::SessionRefresh(leg), v) => self.on_refresh_response(now, leg, id, v),
            (Purpose::DirectMedia { call, leg }, v) => self.on_direct_response(now, call, leg, id, v),
        }
    }

    /// Something the transaction layer reported while an input was handled, acted on with that input's `now`.
    pub(super) fn on_txn_event(&mut self, now: Time, ev: TxnEvent) {
        match ev {
            TxnEvent::ClientTimeout(id) => match self.ep.finish(id) {
                Some(Purpose::Recall(call)) => {
                    self.touch(call);
                    self.on_recall_timeout(now, call, id)
                }
                Some(Purpose::OrphanRecall) => {
                    self.bridging.take_orphan(id);
                }
                Some(Purpose::Keepalive(call)) => self.on_keepalive_result(now, call, 408),
                Some(Purpose::BlfNotify(sub)) => self.on_notify_timeout(sub, id),
                Some(Purpose::Probe { leg, last }) => self.on_probe_result(now, leg, 408, last),
                Some(Purpose::RestoredCancel(call)) => self.ring_again(now, call),
                Some(Purpose::ClusterFetch(call)) => self.on_fetch_timeout(now, call),
                Some(Purpose::SessionRefresh(leg)) => self.on_refresh_failed(now, leg, 408),
                Some(Purpose::DirectMedia { call, .. }) => self.on_direct_timeout(now, call, id),
                _ => {}
            },
            TxnEvent::AckTimeout { txn, call_id, .. } => {
                if let Some(leg_id) = self.dialogs.ack_timed_out(txn) {
                    tracing::warn!(%call_id, "2xx never acknowledged; ending the call");
                    self.ep.emit(ParkEvent::AckTimeout { call_id: call_id.into() });
                    self.end_leg(now, leg_id, true);
                }
            }
            TxnEvent::ServerTimeout(_) => {}
        }
    }
}
