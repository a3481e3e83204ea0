//! Client transactions: INVITE (RFC 3261 §17.1.1 with RFC 6026's Accepted state) and non-INVITE (§17.1.2).
//!
//! INVITE client: Calling (A retransmits, doubling without cap; B = 64·T1 times out) → 1xx: Proceeding →
//! 300-699: the layer ACKs (§17.1.1.3) and enters Completed (D absorbs final retransmissions, re-ACKing) /
//! 2xx: Accepted (Timer M = 64·T1; every further 2xx goes to the TU, which ACKs it).
//! After the TU sends a CANCEL for it, Timer B is re-armed at 64·T1 so an INVITE whose peer never answers
//! the CANCEL still ends (§9.1).
//!
//! Non-INVITE client: Trying (E doubles up to T2; F = 64·T1) → 1xx: Proceeding (E every T2) → final:
//! Completed (K = T4) → gone. On reliable transports A/E are not used and D/K are zero.

use super::key::ClientKey;
use super::timer::{Side, TimerKind, TimerRef, TimerTable};
use super::{ClientTxnId, ClientVerdict, MsgKind, TxnEvent, TxnLayer};
use crate::sip::{CSeq, Common, Method, Peer, Request, Response};
use crate::time::Time;
use bytes::Bytes;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientKind {
    Invite,
    NonInvite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientState {
    /// INVITE, no response yet.
    Calling,
    /// Non-INVITE, no response yet.
    Trying,
    Proceeding,
    Completed,
    /// INVITE: a 2xx arrived (RFC 6026).
    Accepted,
}

/// One client transaction.
#[derive(Debug)]
pub(crate) struct ClientTxn {
    kind: ClientKind,
    state: ClientState,
    key: ClientKey,
    request: Request,
    /// The encoded request, for retransmission.
    bytes: Bytes,
    to: Peer,
    /// The ACK built for a non-2xx final, re-sent on its retransmissions.
    ack: Option<Bytes>,
    pub(crate) timers: TimerTable,
    /// Current A/E interval.
    interval: Duration,
}

/// The ACK for a non-2xx final (§17.1.1.3): the request's Request-URI, Call-ID, From, top Via (same
/// branch) and Route; To from the response (with its tag); CSeq number of the request with method ACK.
pub fn ack_for_non_2xx(req: &Request, resp: &Response) -> Request {
    Request {
        method: Method::Ack,
        uri: req.uri.clone(),
        common: Common {
            max_forwards: Some(70),
            route: req.common.route.clone(),
            ..Common::new(
                req.common.via.first().cloned().into_iter().collect(),
                req.common.from.clone(),
                resp.common.to.clone(),
                req.common.call_id.clone(),
                CSeq { seq: req.common.cseq.seq, method: Method::Ack },
            )
        },
    }
}

impl TxnLayer {
    /// Sends `req` (which carries a top Via with our branch) through a new client transaction: INVITE → ICT,
    /// anything else → NICT. An ACK is not a transaction: it is sent statelessly and a dead id returned.
    pub fn send_request(&mut self, now: Time, to: Peer, req: &Request) -> ClientTxnId {
        if req.method == Method::Ack {
            self.send_stateless(to, req.encode(), MsgKind::request(&Method::Ack));
            return ClientTxnId::DEAD;
        }
        let key = ClientKey::for_request(req);
        let bytes = req.encode();
        let (kind, state) = match req.method {
            Method::Invite => (ClientKind::Invite, ClientState::Calling),
            _ => (ClientKind::NonInvite, ClientState::Trying),
        };
        let txn = ClientTxn {
            kind,
            state,
            key: key.clone(),
            request: req.clone(),
            bytes: bytes.clone(),
            to,
            ack: None,
            timers: TimerTable::default(),
            interval: self.cfg.t1,
        };
        let (idx, gen) = self.clients.insert(txn);
        let id = ClientTxnId { idx, gen };
        if self.client_index.insert(key.clone(), id).is_some() {
            tracing::warn!(branch = %key.branch, "txn: client branch reused; the older transaction loses its responses");
        }
        self.transmit(to, bytes, MsgKind::request(&req.method));
        match kind {
            ClientKind::Invite => {
                self.arm_client(now, id, TimerKind::A);
                self.arm_client(now, id, TimerKind::B);
            }
            ClientKind::NonInvite => {
                self.arm_client(now, id, TimerKind::E);
                self.arm_client(now, id, TimerKind::F);
            }
        }
        if req.method == Method::Cancel {
            self.guard_cancelled_invite(now, &key.branch);
        }
        id
    }

    /// §9.1: once a CANCEL is sent, the INVITE ends 64·T1 later if no final arrives (Timer B re-armed).
    fn guard_cancelled_invite(&mut self, now: Time, branch: &str) {
        let key = ClientKey { branch: branch.to_string(), method: Method::Invite };
        let Some(id) = self.client_index.get(&key).copied() else { return };
        let Some(t) = self.clients.get_mut(id.idx, id.gen) else { return };
        if !matches!(t.state, ClientState::Calling | ClientState::Proceeding) {
            return;
        }
        let Some(d) = self.cfg.duration(TimerKind::B, t.to.transport) else { return };
        let at = now + d;
        if t.timers.get(TimerKind::B).is_none_or(|b| at < b) {
            let r = TimerRef { side: Side::Client, idx: id.idx, gen: id.gen, kind: TimerKind::B };
            self.timers.arm(&mut t.timers, r, at);
        }
    }

    /// Matches a received response to its client transaction (§17.1.3). `None`: stray, or a retransmission
    /// the transaction absorbed (a non-2xx final is re-ACKed here).
    pub fn on_response(&mut self, now: Time, _from: Peer, resp: &Response) -> Option<(ClientTxnId, ClientVerdict)> {
        self.counts.count_received(MsgKind::response(resp.status, &resp.common.cseq.method));
        let key = ClientKey::for_response(resp)?;
        let id = self.client_index.get(&key).copied()?;
        let t = self.clients.get_mut(id.idx, id.gen)?;
        let status = resp.status;
        let verdict = match t.kind {
            ClientKind::Invite => match (t.state, status) {
                (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                    // §17.1.1.2: no more retransmissions; B only applies in Calling.
                    t.state = ClientState::Proceeding;
                    t.timers.clear(TimerKind::A);
                    t.timers.clear(TimerKind::B);
                    ClientVerdict::Provisional(resp.clone())
                }
                (ClientState::Calling | ClientState::Proceeding, 200..=299) => {
                    t.state = ClientState::Accepted;
                    t.timers.clear(TimerKind::A);
                    t.timers.clear(TimerKind::B);
                    self.arm_client(now, id, TimerKind::M);
                    ClientVerdict::Final(resp.clone())
                }
                (ClientState::Calling | ClientState::Proceeding, _) if status >= 300 => {
                    let ack = ack_for_non_2xx(&t.request, resp).encode();
                    t.state = ClientState::Completed;
                    t.timers.clear(TimerKind::A);
                    t.timers.clear(TimerKind::B);
                    t.ack = Some(ack.clone());
                    let to = t.to;
                    self.transmit(to, ack, MsgKind::request(&Method::Ack));
                    self.arm_client_or_end(now, id, TimerKind::D);
                    ClientVerdict::Final(resp.clone())
                }
                (ClientState::Completed, 300..) => {
                    // §17.1.1.2: a retransmitted final is re-ACKed and absorbed.
                    let (to, ack) = (t.to, t.ack.clone());
                    if let Some(ack) = ack {
                        self.stats.retransmitted_requests += 1;
                        self.transmit(to, ack, MsgKind::request(&Method::Ack));
                    }
                    return None;
                }
                // RFC 6026 §8.4: every 2xx in Accepted goes up, so the TU re-ACKs it.
                (ClientState::Accepted, 200..=299) => ClientVerdict::Final(resp.clone()),
                _ => return None,
            },
            ClientKind::NonInvite => match (t.state, status) {
                (ClientState::Trying | ClientState::Proceeding, 100..=199) => {
                    t.state = ClientState::Proceeding;
                    ClientVerdict::Provisional(resp.clone())
                }
                (ClientState::Trying | ClientState::Proceeding, 200..) => {
                    t.state = ClientState::Completed;
                    t.timers.clear(TimerKind::E);
                    t.timers.clear(TimerKind::F);
                    self.arm_client_or_end(now, id, TimerKind::K);
                    ClientVerdict::Final(resp.clone())
                }
                _ => return None,
            },
        };
        Some((id, verdict))
    }

    /// The transport could not deliver client transaction `id`'s request (§17.1.4): it ends with
    /// [`TxnEvent::ClientTimeout`]. Stale ids are ignored.
    pub fn transport_error(&mut self, id: ClientTxnId) {
        if self.clients.get(id.idx, id.gen).is_some() {
            self.remove_client(id);
            self.event(TxnEvent::ClientTimeout(id));
        }
    }

    /// The request that opened client transaction `id`.
    pub fn client_request(&self, id: ClientTxnId) -> Option<&Request> {
        self.clients.get(id.idx, id.gen).map(|t| &t.request)
    }

    fn arm_client(&mut self, now: Time, id: ClientTxnId, kind: TimerKind) {
        let Some(t) = self.clients.get_mut(id.idx, id.gen) else { return };
        let Some(d) = self.cfg.duration(kind, t.to.transport) else { return };
        let r = TimerRef { side: Side::Client, idx: id.idx, gen: id.gen, kind };
        self.timers.arm(&mut t.timers, r, now + d);
    }

    fn arm_client_or_end(&mut self, now: Time, id: ClientTxnId, kind: TimerKind) {
        let transport = match self.clients.get(id.idx, id.gen) {
            Some(t) => t.to.transport,
            None => return,
        };
        match self.cfg.duration(kind, transport) {
            Some(d) if d.is_zero() => self.remove_client(id),
            Some(_) => self.arm_client(now, id, kind),
            None => {}
        }
    }

    pub(super) fn fire_client(&mut self, id: ClientTxnId, kind: TimerKind, at: Time) {
        let Some(t) = self.clients.get_mut(id.idx, id.gen) else { return };
        match (kind, t.state) {
            (TimerKind::A, ClientState::Calling)
            | (TimerKind::E, ClientState::Trying)
            | (TimerKind::E, ClientState::Proceeding) => {
                // §17.1.2.2: in Proceeding, E is reset to T2.
                t.interval = if t.state == ClientState::Proceeding {
                    self.cfg.t2
                } else {
                    self.cfg.next_interval(kind, t.interval)
                };
                let r = TimerRef { side: Side::Client, idx: id.idx, gen: id.gen, kind };
                self.timers.arm(&mut t.timers, r, at + t.interval);
                let (to, bytes, sent) = (t.to, t.bytes.clone(), MsgKind::request(&t.request.method));
                self.stats.retransmitted_requests += 1;
                self.transmit(to, bytes, sent);
            }
            (TimerKind::B, ClientState::Calling | ClientState::Proceeding)
            | (TimerKind::F, ClientState::Trying | ClientState::Proceeding) => {
                self.remove_client(id);
                self.event(TxnEvent::ClientTimeout(id));
            }
            (TimerKind::D, ClientState::Completed)
            | (TimerKind::K, ClientState::Completed)
            | (TimerKind::M, ClientState::Accepted) => self.remove_client(id),
            _ => {}
        }
    }

    fn remove_client(&mut self, id: ClientTxnId) {
        let Some(t) = self.clients.remove(id.idx, id.gen) else { return };
        if self.client_index.get(&t.key) == Some(&id) {
            self.client_index.remove(&t.key);
        }
    }
}
