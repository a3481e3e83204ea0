//! Server transactions: INVITE (RFC 3261 §17.2.1 with RFC 6026's Accepted state) and non-INVITE (§17.2.2).
//!
//! INVITE server: Proceeding → (1xx re-sent on INVITE retransmission) → 2xx: Accepted (Timer L = 64·T1
//! absorbs INVITE retransmissions by re-sending the 2xx; the 2xx itself is retransmitted on the G schedule
//! until `ack_received` or L, which reports [`TxnEvent::AckTimeout`] when no ACK came) / 300-699: Completed
//! (G retransmits the final, H = 64·T1 gives up) → ACK: Confirmed (I = T4) → gone.
//!
//! Non-INVITE server: Trying → Proceeding (1xx) → Completed (final; J = 64·T1 absorbs retransmissions by
//! re-sending the final) → gone. On reliable transports G is not used and I/J are zero.

use super::dest::{response_destination, stamp_top_via};
use super::key::{MethodClass, ServerKey};
use super::timer::{Side, TimerKind, TimerRef, TimerTable};
use super::{MsgKind, ServerTxnId, ServerVerdict, TxnEvent, TxnLayer};
use crate::sip::{Method, Peer, Request, Response, SipStr, Via};
use crate::time::Time;
use bytes::Bytes;
use std::time::Duration;

/// The stored request's stamped top Via (`stored`), when `resp`'s own top Via is the same hop unstamped: the Via
/// the response must carry instead (§18.2.1, RFC 3581 §4).
fn stamped_top_via<'a>(stored: Option<&'a Via>, resp: &Response) -> Option<&'a Via> {
    match (resp.common.via.first(), stored) {
        (Some(rv), Some(sv)) if rv != sv && rv.branch() == sv.branch() && rv.sent_by() == sv.sent_by() => Some(sv),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServerKind {
    Invite,
    NonInvite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServerState {
    /// Non-INVITE, nothing sent yet.
    Trying,
    Proceeding,
    /// A non-2xx final (INVITE) or any final (non-INVITE) was sent.
    Completed,
    /// INVITE: the ACK for the non-2xx final arrived.
    Confirmed,
    /// INVITE: a 2xx was sent (RFC 6026).
    Accepted,
}

/// What a server transaction keeps of its request: all of it until the final response; after it only what is
/// used again (re-sent responses are stored bytes): the stamped top Via a re-sent 2xx echoes, the method for the
/// message counts, Call-ID and CSeq for the ACK bookkeeping. An INVITE's transaction lives on for 32 s (Timer L)
/// after a park is answered, so this is most of the engine's memory per call at a high park rate (issue 20).
#[derive(Debug)]
enum Kept {
    Whole(Box<Request>),
    Answered(Box<Answered>),
}

/// The part of a request kept after the final response.
#[derive(Debug)]
struct Answered {
    method: Method,
    top_via: Option<Via>,
    call_id: SipStr,
    cseq: u32,
}

impl Kept {
    fn request(&self) -> Option<&Request> {
        match self {
            Kept::Whole(r) => Some(r),
            Kept::Answered(_) => None,
        }
    }
    fn method(&self) -> &Method {
        match self {
            Kept::Whole(r) => &r.method,
            Kept::Answered(a) => &a.method,
        }
    }
    fn top_via(&self) -> Option<&Via> {
        match self {
            Kept::Whole(r) => r.common.via.first(),
            Kept::Answered(a) => a.top_via.as_ref(),
        }
    }
    fn call_id(&self) -> &str {
        match self {
            Kept::Whole(r) => &r.common.call_id,
            Kept::Answered(a) => &a.call_id,
        }
    }
    fn cseq(&self) -> u32 {
        match self {
            Kept::Whole(r) => r.common.cseq.seq,
            Kept::Answered(a) => a.cseq,
        }
    }
    /// Frees what is no longer needed once the final response is sent.
    fn shed(&mut self) {
        let Kept::Whole(r) = self else { return };
        let c = &mut r.common;
        let answered = Answered { method: r.method.clone(), top_via: c.via.drain(..).next(), call_id: std::mem::take(&mut c.call_id), cseq: c.cseq.seq };
        *self = Kept::Answered(Box::new(answered));
    }
}

/// One server transaction.
#[derive(Debug)]
pub(crate) struct ServerTxn {
    kind: ServerKind,
    state: ServerState,
    key: ServerKey,
    /// The request that opened it, its top Via stamped with `received`/`rport` (see [`Kept`]).
    request: Kept,
    /// Where responses go (§18.2.2, RFC 3581).
    dest: Peer,
    /// The last response sent (re-sent on retransmissions), with what it is for the message counts.
    last_response: Option<(Bytes, MsgKind)>,
    /// To tag of the final sent (RFC 2543 ACK matching).
    final_to_tag: Option<String>,
    pub(crate) timers: TimerTable,
    /// Current G interval.
    interval: Duration,
    /// Accepted: the TU reported the ACK for the 2xx.
    acked: bool,
}

/// What a server transaction keeps of the request that opened it until its final response: its method and URI,
/// and the headers a response copies (RFC 3261 §8.2.6: Via, From, To, Call-ID, CSeq; Record-Route for a 1xx/2xx).
/// Not its body, Contact or other headers: a copy of those would be made and dropped for every request.
fn response_headers(req: &Request) -> Request {
    let c = &req.common;
    let mut common = crate::sip::Common::new(c.via.clone(), c.from.clone(), c.to.clone(), c.call_id.clone(), c.cseq.clone());
    common.record_route = c.record_route.clone();
    Request { method: req.method.clone(), uri: req.uri.clone(), common }
}

impl TxnLayer {
    /// Matches a received request to a server transaction, creating one for a new request (§17.2.3).
    pub fn on_request(&mut self, now: Time, from: Peer, req: &Request) -> ServerVerdict {
        self.counts.count_received(MsgKind::request(&req.method));
        let Some(key) = ServerKey::for_request(req) else { return ServerVerdict::Malformed };
        if req.method == Method::Ack {
            return self.on_ack(now, req, key);
        }
        if let Some(id) = self.server_index.get(&key).copied() {
            if let Some(t) = self.servers.get(id.idx, id.gen) {
                // §17.2.1/§17.2.2: a retransmission re-sends the last response; Accepted re-sends the 2xx.
                let resend = match t.state {
                    ServerState::Proceeding | ServerState::Completed | ServerState::Accepted => t.last_response.clone(),
                    ServerState::Trying | ServerState::Confirmed => None,
                };
                let dest = t.dest;
                self.stats.absorbed_retransmissions += 1;
                if let Some((bytes, kind)) = resend {
                    self.stats.retransmitted_responses += 1;
                    self.transmit(dest, bytes, kind);
                }
                return ServerVerdict::Retransmission;
            }
        }
        let mut request = response_headers(req);
        if let Some(via) = request.common.via.first_mut() {
            stamp_top_via(via, from);
        }
        let dest = response_destination(from, request.common.via.first());
        let (kind, state) = match req.method {
            Method::Invite => (ServerKind::Invite, ServerState::Proceeding),
            _ => (ServerKind::NonInvite, ServerState::Trying),
        };
        let txn = ServerTxn {
            kind,
            state,
            key: key.clone(),
            request: Kept::Whole(Box::new(request)),
            dest,
            last_response: None,
            final_to_tag: None,
            timers: TimerTable::default(),
            interval: self.cfg.t1,
            acked: false,
        };
        let (idx, gen) = self.servers.insert(txn);
        let id = ServerTxnId { idx, gen };
        if req.method == Method::Cancel {
            // §9.2: the INVITE with the same branch and sent-by (or the same RFC 2543 fields).
            let invite = self.server_index.get(&key.with_method(MethodClass::Invite)).copied();
            let invite = invite.filter(|i| self.servers.get(i.idx, i.gen).is_some());
            self.server_index.insert(key, id);
            return ServerVerdict::Cancel { cancel: id, invite };
        }
        self.server_index.insert(key, id);
        ServerVerdict::New(id)
    }

    fn on_ack(&mut self, now: Time, ack: &Request, key: ServerKey) -> ServerVerdict {
        let ack_to_tag = ack.common.to.tag();
        let mut found = None;
        for k in std::iter::once(Some(key.clone())).chain(std::iter::once(key.without_to_tag())).flatten() {
            let Some(id) = self.server_index.get(&k).copied() else { continue };
            let Some(t) = self.servers.get(id.idx, id.gen) else { continue };
            // RFC 2543: the ACK's To tag must be the one the final carried.
            if t.kind == ServerKind::Invite && (!k.is_legacy() || t.final_to_tag.as_deref() == ack_to_tag) {
                found = Some(id);
                break;
            }
        }
        let Some(id) = found else { return ServerVerdict::AckForDialog };
        let Some(t) = self.servers.get_mut(id.idx, id.gen) else { return ServerVerdict::AckForDialog };
        match t.state {
            ServerState::Completed => {
                // §17.2.1: ACK for the non-2xx final → Confirmed, G and H stop, I starts.
                t.state = ServerState::Confirmed;
                t.timers.clear(TimerKind::G);
                t.timers.clear(TimerKind::H);
                self.arm_server_or_end(now, id, TimerKind::I);
                ServerVerdict::AckAbsorbed
            }
            // RFC 6026 §8.7: in Accepted the ACK (for the 2xx) goes to the TU.
            ServerState::Accepted => ServerVerdict::AckForDialog,
            ServerState::Confirmed => {
                // A retransmitted ACK for the non-2xx final (§17.2.1): absorbed.
                self.stats.absorbed_retransmissions += 1;
                ServerVerdict::AckAbsorbed
            }
            ServerState::Proceeding | ServerState::Trying => ServerVerdict::AckAbsorbed,
        }
    }

    /// Sends `resp` on server transaction `id` to the right place (§18.2.2) and arms its timers. Responses
    /// the state does not allow (a second final, a 1xx after the final) and stale ids are ignored.
    /// If `resp` was built from the request as received (top Via without `received`/`rport`), its top Via
    /// is replaced by the stamped one, so the response always echoes them (§18.2.1, RFC 3581 §4).
    pub fn respond(&mut self, now: Time, id: ServerTxnId, resp: &Response) {
        let Some(t) = self.servers.get_mut(id.idx, id.gen) else { return };
        let status = resp.status;
        let provisional = status < 200;
        let success = (200..300).contains(&status);
        let allowed = match (t.kind, t.state) {
            (ServerKind::Invite, ServerState::Proceeding) => true,
            // RFC 6026: the TU may send the 2xx again (or another 2xx) while Accepted.
            (ServerKind::Invite, ServerState::Accepted) => success,
            (ServerKind::NonInvite, ServerState::Trying | ServerState::Proceeding) => true,
            _ => false,
        };
        if !allowed {
            tracing::debug!(status, state = ?t.state, "txn: response not allowed in this state, dropped");
            return;
        }
        let bytes = resp.encode_with_top_via(stamped_top_via(t.request.top_via(), resp));
        let dest = t.dest;
        let kind = MsgKind::response(status, t.request.method());
        t.last_response = Some((bytes.clone(), kind));
        self.transmit(dest, bytes, kind);
        let Some(t) = self.servers.get_mut(id.idx, id.gen) else { return };
        if provisional {
            if t.kind == ServerKind::NonInvite {
                t.state = ServerState::Proceeding;
            }
            return;
        }
        t.final_to_tag = resp.common.to.tag().map(str::to_string);
        // After a final response only the top Via, Call-ID and CSeq of the request are used again (re-sent
        // responses are stored bytes): drop the rest, it may live on for 32 s (Timers J/L) per call.
        t.request.shed();
        match (t.kind, t.state) {
            (ServerKind::Invite, ServerState::Proceeding) if success => {
                t.state = ServerState::Accepted;
                t.acked = false;
                t.interval = self.cfg.t1;
                let key = (t.request.call_id().to_string(), t.request.cseq());
                self.awaiting_ack.insert(key, id);
                self.arm_server(now, id, TimerKind::L);
                self.arm_server(now, id, TimerKind::G);
            }
            (ServerKind::Invite, ServerState::Proceeding) => {
                t.state = ServerState::Completed;
                t.interval = self.cfg.t1;
                self.arm_server(now, id, TimerKind::H);
                self.arm_server(now, id, TimerKind::G);
            }
            (ServerKind::NonInvite, _) => {
                t.state = ServerState::Completed;
                self.arm_server_or_end(now, id, TimerKind::J);
            }
            _ => {}
        }
    }

    /// The TU saw the ACK for the 2xx of INVITE `(call_id, cseq)`: 2xx retransmission stops (§13.3.1.4).
    /// The transaction stays in Accepted until Timer L. Returns whether an unACKed 2xx matched.
    pub fn ack_received(&mut self, _now: Time, call_id: &str, cseq: u32) -> bool {
        let Some(id) = self.awaiting_ack.remove(&(call_id.to_string(), cseq)) else { return false };
        let Some(t) = self.servers.get_mut(id.idx, id.gen) else { return false };
        if t.state != ServerState::Accepted || t.acked {
            return false;
        }
        t.acked = true;
        t.timers.clear(TimerKind::G);
        // The UAC has the 2xx: a late INVITE retransmission is now only absorbed (RFC 6026 §7.1), so the
        // encoded 2xx need not be kept for the rest of Timer L.
        t.last_response = None;
        true
    }

    /// Forgets server transaction `id` if nothing was answered on it yet: the TU drops the request unanswered
    /// (a scanner, a source over its limits), and nothing of it is kept. A retransmission of it is then a new
    /// request again. Stale ids and answered transactions are left alone.
    pub fn forget_unanswered(&mut self, id: ServerTxnId) {
        let unanswered = self.servers.get(id.idx, id.gen).is_some_and(|t| t.last_response.is_none() && matches!(t.state, ServerState::Trying | ServerState::Proceeding));
        if unanswered {
            self.remove_server(id);
        }
    }

    /// The request that opened server transaction `id` as far as a response needs it (method, URI, Via with the
    /// top one stamped with `received`/`rport`, From, To, Call-ID, CSeq, Record-Route; no body or other headers),
    /// until its final response is sent (then `None`: only what the transaction itself still needs is kept).
    pub fn server_request(&self, id: ServerTxnId) -> Option<&Request> {
        self.servers.get(id.idx, id.gen).and_then(|t| t.request.request())
    }

    /// Whether server transaction `id` is alive and has sent no final response yet (a CANCEL then gets its
    /// INVITE answered with 487).
    pub fn awaiting_final(&self, id: ServerTxnId) -> bool {
        self.servers
            .get(id.idx, id.gen)
            .is_some_and(|t| matches!(t.state, ServerState::Trying | ServerState::Proceeding))
    }

    /// Arms `kind` for its first period on the transaction's transport (no-op when unused there).
    fn arm_server(&mut self, now: Time, id: ServerTxnId, kind: TimerKind) {
        let Some(t) = self.servers.get_mut(id.idx, id.gen) else { return };
        let Some(d) = self.cfg.duration(kind, t.dest.transport) else { return };
        let r = TimerRef { side: Side::Server, idx: id.idx, gen: id.gen, kind };
        self.timers.arm(&mut t.timers, r, now + d);
    }

    /// Arms a wait timer, or ends the transaction now when it is zero (reliable transports).
    fn arm_server_or_end(&mut self, now: Time, id: ServerTxnId, kind: TimerKind) {
        let transport = match self.servers.get(id.idx, id.gen) {
            Some(t) => t.dest.transport,
            None => return,
        };
        match self.cfg.duration(kind, transport) {
            Some(d) if d.is_zero() => self.remove_server(id),
            Some(_) => self.arm_server(now, id, kind),
            None => {}
        }
    }

    pub(super) fn fire_server(&mut self, id: ServerTxnId, kind: TimerKind, at: Time) {
        let Some(t) = self.servers.get_mut(id.idx, id.gen) else { return };
        match (kind, t.state) {
            (TimerKind::G, ServerState::Completed) | (TimerKind::G, ServerState::Accepted) if !t.acked => {
                let (dest, bytes) = (t.dest, t.last_response.clone());
                t.interval = self.cfg.next_interval(TimerKind::G, t.interval);
                let r = TimerRef { side: Side::Server, idx: id.idx, gen: id.gen, kind };
                self.timers.arm(&mut t.timers, r, at + t.interval);
                if let Some((bytes, kind)) = bytes {
                    self.stats.retransmitted_responses += 1;
                    self.transmit(dest, bytes, kind);
                }
            }
            (TimerKind::H, ServerState::Completed) => {
                self.remove_server(id);
                self.event(TxnEvent::ServerTimeout(id));
            }
            (TimerKind::L, ServerState::Accepted) => {
                if !t.acked {
                    let call_id = t.request.call_id().to_string();
                    let cseq = t.request.cseq();
                    self.event(TxnEvent::AckTimeout { txn: id, call_id, cseq });
                }
                self.remove_server(id);
            }
            (TimerKind::I, ServerState::Confirmed) | (TimerKind::J, ServerState::Completed) => self.remove_server(id),
            _ => {}
        }
    }

    fn remove_server(&mut self, id: ServerTxnId) {
        let Some(t) = self.servers.remove(id.idx, id.gen) else { return };
        if self.server_index.get(&t.key) == Some(&id) {
            self.server_index.remove(&t.key);
        }
        let ack_key = (t.request.call_id().to_string(), t.request.cseq());
        if self.awaiting_ack.get(&ack_key) == Some(&id) {
            self.awaiting_ack.remove(&ack_key);
        }
    }
}
