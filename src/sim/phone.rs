//! A reactive test phone: a small SIP user agent over UDP that does what a desk phone does by itself.
//!
//! * Calls it places ([`Phone::invite`]): retransmits the INVITE (Timer A, T1 doubling) until a
//!   response, ACKs every 2xx (retransmissions too) and every non-2xx final, CANCELs when hung up
//!   while ringing, BYEs when hung up in a call.
//! * Calls it gets: `100 Trying`, then as [`OnInvite`] says (`180` then `200` after a delay, busy, ring forever,
//!   reject), retransmits its final response (T1 doubling up to T2) until the ACK, takes CANCEL
//!   (`200` + `487`), answers re-INVITEs with its SDP.
//! * Every other request (BYE, OPTIONS, NOTIFY, MESSAGE...) gets `200` (`481` for a BYE outside a
//!   dialog). Retransmitted requests get the same response again without being acted on twice.
//! * Its own non-INVITE requests (BYE, CANCEL, SUBSCRIBE) are retransmitted per Timer E (T1 doubling,
//!   capped at T2) until a final response or Timer F (64·T1).
//! * In a confirmed call whose SDP lets it send, it talks: one marked PCMU frame
//!   ([`super::media_sink::voice_frame`]) every 20 ms to the RTP address in the other side's SDP.
//!   What it receives on its RTP address goes to its [`RtpSink`].
//!
//! It keeps what it saw ([`Phone::seen`], [`Call::final_response`], [`Subscription::notifies`]) for
//! tests to assert on. Outgoing datagrams wait in [`Phone::out`] for the [`super::Net`] to carry.

use super::media_sink::{voice_frame, RtpSink};
use super::wire::{self, crlf, RequestHead};
pub use subs::{Notify, Subscription};
use crate::media::rtp::{write_header, Pt, SeqNo, Ssrc, TS_PER_FRAME};
use crate::sip::{parse_message, Message, Method, Request, Response};
use crate::time::Time;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

#[path = "phone_subs.rs"]
mod subs;

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const FRAME_MS: Duration = Duration::from_millis(20);

/// What a phone does with an INVITE that starts a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnInvite {
    /// `180 Ringing` at once, `200 OK` after this long.
    Answer { after: Duration },
    /// `486 Busy Here`.
    Busy,
    /// `180 Ringing` and nothing more (until CANCEL).
    NoAnswer,
    /// This final status at once (e.g. 603).
    Reject(u16),
}

/// How a test phone is set up.
#[derive(Clone, Debug)]
pub struct PhoneConfig {
    /// User part of its AOR and Contact (`sip:<name>@<sip>`).
    pub name: String,
    pub sip: SocketAddr,
    pub rtp: SocketAddr,
    pub on_invite: OnInvite,
    /// Send marked RTP frames in confirmed calls.
    pub talk: bool,
    /// Payload types offered and answered (`"0"`: PCMU only).
    pub pts: String,
    /// Answers every OPTIONS `200`, even in a dialog it does not have (as some phones do) instead of `481`.
    pub options_always_ok: bool,
}

impl PhoneConfig {
    /// `name` at 127.0.0.1:`sip_port`, RTP on `sip_port + 10000`, answering after 2 s, talking, PCMU.
    pub fn new(name: &str, sip_port: u16) -> PhoneConfig {
        PhoneConfig {
            name: name.into(),
            sip: SocketAddr::from(([127, 0, 0, 1], sip_port)),
            rtp: SocketAddr::from(([127, 0, 0, 1], sip_port + 10_000)),
            on_invite: OnInvite::Answer { after: Duration::from_secs(2) },
            talk: true,
            pts: "0".into(),
            options_always_ok: false,
        }
    }
    pub fn on_invite(mut self, on: OnInvite) -> PhoneConfig {
        self.on_invite = on;
        self
    }
}

/// A call of one phone, by index in [`Phone::calls`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallId(pub usize);

/// A subscription of one phone, by index in [`Phone::subs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubId(pub usize);

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// This phone hung up (BYE, CANCEL or declining).
    HungUp,
    /// The other side sent BYE.
    ByPeer,
    /// The other side CANCELled before we answered.
    Cancelled,
    /// Our INVITE got this final status, or we refused theirs with it.
    Failed(u16),
    /// Our INVITE got no response at all (Timer B).
    TimedOut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    /// INVITE sent (or received), nothing back yet.
    Calling,
    /// A provisional response with a tag (or our 180).
    Early,
    Confirmed,
    Ended(End),
}

/// One INVITE dialog of a phone.
#[derive(Debug)]
pub struct Call {
    pub call_id: String,
    /// This phone placed the call.
    pub uac: bool,
    pub state: CallState,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// From/To values without tags, seen from this phone.
    local: String,
    remote: String,
    /// Request-URI of in-dialog requests (the other side's Contact), and of the initial INVITE.
    target: String,
    ruri: String,
    cseq: u32,
    invite_cseq: u32,
    invite_branch: String,
    /// Our ACK to the 2xx of `invite_cseq`, resent on every retransmitted 2xx.
    ack: Option<(u32, Vec<u8>)>,
    /// The final response to this phone's latest INVITE in this call.
    pub final_response: Option<Response>,
    /// The INVITE this phone is answering (it places no call).
    pub invite_in: Option<Request>,
    answer_at: Option<Time>,
    /// Where the other side wants RTP, and whether it wants any.
    pub remote_rtp: Option<SocketAddr>,
    pub may_send: bool,
    rtp: RtpOut,
}

#[derive(Debug)]
struct RtpOut {
    next: Option<Time>,
    n: u32,
    seq: u16,
    ts: u32,
    ssrc: u32,
}

#[derive(Clone, Copy, Debug)]
enum Purpose {
    Call(usize),
    Sub(usize),
}

/// A request of ours being retransmitted until its final response.
#[derive(Debug)]
struct ClientTxn {
    branch: String,
    method: Method,
    bytes: Vec<u8>,
    next: Option<Time>,
    interval: Duration,
    timeout: Option<Time>,
    purpose: Purpose,
}

/// A final response of ours to an INVITE, retransmitted until the ACK.
#[derive(Debug)]
struct ResponseRetx {
    call: usize,
    cseq: u32,
    bytes: Vec<u8>,
    next: Time,
    interval: Duration,
    until: Time,
}

/// A datagram a phone wants sent.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
    /// From the phone's RTP address (else its SIP address).
    pub rtp: bool,
}

/// A reactive test phone (see the module doc).
#[derive(Debug)]
pub struct Phone {
    pub cfg: PhoneConfig,
    /// Marks its voice frames; the index of the phone in its [`super::Net`].
    pub talker: u8,
    /// Where its requests go (parkd).
    server: SocketAddr,
    pub calls: Vec<Call>,
    pub subs: Vec<Subscription>,
    /// Every SIP message received, parsed, in order.
    pub seen: Vec<(Time, Message)>,
    pub sink: RtpSink,
    txns: Vec<ClientTxn>,
    retx: Vec<ResponseRetx>,
    /// Responses already sent, by (branch, method): a retransmitted request gets the same again.
    answered: HashMap<(String, Method), Vec<u8>>,
    counter: u64,
    /// Requests and responses this phone sent again (its timers fired before an answer or an ACK).
    pub retransmissions: u64,
    pub out: Vec<Outgoing>,
}

impl Phone {
    pub fn new(cfg: PhoneConfig, talker: u8, server: SocketAddr) -> Phone {
        Phone { cfg, talker, server, calls: Vec::new(), subs: Vec::new(), seen: Vec::new(), sink: RtpSink::default(), txns: Vec::new(), retx: Vec::new(), answered: HashMap::new(), counter: 0, retransmissions: 0, out: Vec::new() }
    }

    pub fn call(&self, id: CallId) -> &Call {
        &self.calls[id.0]
    }

    pub fn sub(&self, id: SubId) -> &Subscription {
        &self.subs[id.0]
    }

    /// Requests of `method` received (retransmissions included).
    pub fn requests(&self, method: Method) -> Vec<&Request> {
        self.seen.iter().filter_map(|(_, m)| match m {
            Message::Request(r) if r.method == method => Some(r),
            _ => None,
        }).collect()
    }

    /// Every response received.
    pub fn responses(&self) -> Vec<&Response> {
        self.seen.iter().filter_map(|(_, m)| match m {
            Message::Response(r) => Some(r),
            _ => None,
        }).collect()
    }

    /// The phone's URI as header text.
    pub fn aor(&self) -> String {
        format!("<sip:{}@{}>", self.cfg.name, self.cfg.sip)
    }

    fn fresh(&mut self, what: &str) -> String {
        self.counter += 1;
        format!("{}-{what}{}", self.cfg.name, self.counter)
    }

    fn sdp(&self, dir: &str) -> String {
        wire::sdp(&self.cfg.name, self.cfg.rtp, &self.cfg.pts, dir)
    }

    fn send(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.out.push(Outgoing { to, bytes, rtp: false });
    }

    /// Sends `text` to the server and retransmits it until its final response.
    fn start_txn(&mut self, now: Time, method: Method, branch: String, text: &str, purpose: Purpose) {
        let bytes = crlf(text);
        self.send(self.server, bytes.clone());
        self.txns.push(ClientTxn { branch, method, bytes, next: Some(now + T1), interval: T1, timeout: Some(now + 64 * T1), purpose });
    }

    /// Places a call to `user` at the server (`extra`: header lines such as `Referred-By: ...\n`).
    pub fn invite(&mut self, now: Time, user: &str, extra: &str) -> CallId {
        let idx = self.calls.len();
        let call_id = format!("{}@sim", self.fresh("call"));
        let local_tag = self.fresh("tag");
        let ruri = format!("sip:{user}@{}", self.server);
        let mut call = Call::new(call_id, true, local_tag, self.aor(), format!("<{ruri}>"), ruri.clone(), ruri, self.rtp_out(idx));
        call.cseq = 1;
        self.calls.push(call);
        self.send_invite(now, idx, extra, "sendrecv");
        CallId(idx)
    }

    fn rtp_out(&self, call: usize) -> RtpOut {
        let k = u32::from(self.talker) << 8 | (call as u32 & 0xFF);
        RtpOut { next: None, n: 0, seq: (k as u16).wrapping_mul(977), ts: k.wrapping_mul(7919), ssrc: 0x5100_0000 | k }
    }

    /// Sends the call's initial INVITE or a re-INVITE (CSeq already set) with an SDP offer in `dir`.
    fn send_invite(&mut self, now: Time, idx: usize, extra: &str, dir: &str) {
        let branch = format!("z9hG4bK-{}", self.fresh("br"));
        let body = self.sdp(dir);
        let (contact, via) = (self.aor(), self.cfg.sip);
        let c = &mut self.calls[idx];
        c.invite_cseq = c.cseq;
        c.invite_branch = branch.clone();
        let (from, to) = dialog_ends(c);
        let ruri = if c.remote_tag.is_some() { c.target.clone() } else { c.ruri.clone() };
        let head = RequestHead { method: "INVITE", ruri: &ruri, via, branch: &branch, from: &from, to: &to, call_id: &c.call_id, cseq: c.cseq, contact: &contact, extra };
        let text = head.text(Some(("application/sdp", &body)));
        self.start_txn(now, Method::Invite, branch, &text, Purpose::Call(idx));
    }

    /// Hangs up: BYE in a confirmed call, CANCEL while our INVITE rings, `603` to an INVITE still ringing here.
    pub fn hangup(&mut self, now: Time, id: CallId) {
        let idx = id.0;
        let (contact, via) = (self.aor(), self.cfg.sip);
        let c = &mut self.calls[idx];
        c.rtp.next = None;
        match (c.state, c.uac) {
            (CallState::Confirmed, _) => {
                c.state = CallState::Ended(End::HungUp);
                self.in_dialog(now, idx, "BYE", "");
            }
            (CallState::Calling | CallState::Early, true) => {
                c.state = CallState::Ended(End::HungUp);
                let (branch, cseq) = (c.invite_branch.clone(), c.invite_cseq);
                let from = format!("{};tag={}", c.local, c.local_tag);
                let head = RequestHead { method: "CANCEL", ruri: &c.ruri, via, branch: &branch, from: &from, to: &c.remote, call_id: &c.call_id, cseq, contact: &contact, extra: "" };
                let text = head.text(None);
                self.start_txn(now, Method::Cancel, branch, &text, Purpose::Call(idx));
            }
            (CallState::Calling | CallState::Early, false) => {
                c.state = CallState::Ended(End::HungUp);
                c.answer_at = None;
                self.answer_final(now, idx, 603, "Decline", None);
            }
            (CallState::Ended(_), _) => {}
        }
    }

    /// Sends a re-INVITE offering `dir` (`sendonly` puts the other side on hold, `sendrecv` resumes).
    pub fn reinvite(&mut self, now: Time, id: CallId, dir: &str) {
        let c = &mut self.calls[id.0];
        c.cseq += 1;
        self.send_invite(now, id.0, "", dir);
    }

    /// Sends an in-dialog request of the call (BYE...).
    fn in_dialog(&mut self, now: Time, idx: usize, method: &str, extra: &str) {
        let branch = format!("z9hG4bK-{}", self.fresh("br"));
        let (contact, via) = (self.aor(), self.cfg.sip);
        let c = &mut self.calls[idx];
        c.cseq += 1;
        let (from, to) = dialog_ends(c);
        let head = RequestHead { method, ruri: &c.target, via, branch: &branch, from: &from, to: &to, call_id: &c.call_id, cseq: c.cseq, contact: &contact, extra };
        let text = head.text(None);
        self.start_txn(now, Method::from_token(method), branch, &text, Purpose::Call(idx));
    }

    /// Takes an RTP datagram received on the phone's RTP address.
    pub fn on_rtp(&mut self, now: Time, from: SocketAddr, bytes: &[u8]) {
        self.sink.receive(now, from, bytes);
    }

    /// Takes a SIP datagram received on the phone's SIP address.
    pub fn on_sip(&mut self, now: Time, from: SocketAddr, bytes: &[u8]) {
        let Ok(msg) = parse_message(bytes) else { return };
        self.seen.push((now, msg.clone()));
        match msg {
            Message::Request(r) => self.on_request(now, from, r),
            Message::Response(r) => self.on_response(now, r),
        }
    }

    /// When [`Phone::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Time> {
        let txns = self.txns.iter().flat_map(|t| [t.next, t.timeout]).flatten();
        let retx = self.retx.iter().map(|r| r.next.min(r.until));
        let calls = self.calls.iter().flat_map(|c| [c.answer_at, c.rtp.next]).flatten();
        txns.chain(retx).chain(calls).min()
    }

    /// Fires whatever is due at `now`: retransmissions, transaction timeouts, answering, RTP frames.
    pub fn handle_timeout(&mut self, now: Time) {
        let mut resend = Vec::new();
        let mut timed_out = Vec::new();
        self.txns.retain_mut(|t| {
            if t.timeout.is_some_and(|at| at <= now) {
                timed_out.push((t.method.clone(), t.purpose));
                return false;
            }
            if let Some(at) = t.next.filter(|at| *at <= now) {
                resend.push(t.bytes.clone());
                t.interval = if t.method == Method::Invite { t.interval * 2 } else { (t.interval * 2).min(T2) };
                t.next = Some(at + t.interval);
            }
            true
        });
        for (method, purpose) in timed_out {
            match purpose {
                Purpose::Call(i) if method == Method::Invite && self.calls[i].is_initial(self.calls[i].invite_cseq) => {
                    self.calls[i].state = CallState::Ended(End::TimedOut);
                    self.calls[i].rtp.next = None;
                }
                Purpose::Sub(i) => self.subs[i].status = Some(408),
                Purpose::Call(_) => {}
            }
        }
        self.retx.retain_mut(|r| {
            if r.until <= now {
                return false;
            }
            if r.next <= now {
                resend.push(r.bytes.clone());
                r.interval = (r.interval * 2).min(T2);
                r.next += r.interval;
            }
            true
        });
        for bytes in resend {
            self.retransmissions += 1;
            self.send(self.server, bytes);
        }
        for i in 0..self.calls.len() {
            if self.calls[i].answer_at.is_some_and(|at| at <= now) {
                self.calls[i].answer_at = None;
                let body = self.sdp(answer_direction(self.calls[i].invite_in.as_ref()));
                self.calls[i].state = CallState::Confirmed;
                self.answer_final(now, i, 200, "OK", Some(body));
                self.start_rtp(now, i);
            }
            while let Some(at) = self.calls[i].rtp.next.filter(|at| *at <= now) {
                self.send_frame(i, at);
            }
        }
    }

    fn start_rtp(&mut self, now: Time, idx: usize) {
        let c = &mut self.calls[idx];
        let talk = self.cfg.talk && c.may_send && c.remote_rtp.is_some() && c.state == CallState::Confirmed;
        match (talk, c.rtp.next) {
            (true, None) => c.rtp.next = Some(now),
            (false, _) => c.rtp.next = None,
            _ => {}
        }
    }

    fn send_frame(&mut self, idx: usize, at: Time) {
        let talker = self.talker;
        let c = &mut self.calls[idx];
        let Some(to) = c.remote_rtp else {
            c.rtp.next = None;
            return;
        };
        let r = &mut c.rtp;
        let mut pkt = write_header(Pt::from(crate::media::Codec::Pcmu), r.n == 0, SeqNo(r.seq), r.ts, Ssrc(r.ssrc)).to_vec();
        pkt.extend_from_slice(&voice_frame(talker, r.n));
        r.n += 1;
        r.seq = r.seq.wrapping_add(1);
        r.ts = r.ts.wrapping_add(TS_PER_FRAME);
        r.next = Some(at + FRAME_MS);
        self.out.push(Outgoing { to, bytes: pkt, rtp: true });
    }

    fn reply(&mut self, to: SocketAddr, req: &Request, text: &str) {
        let bytes = crlf(text);
        if let Some(b) = req.branch() {
            self.answered.insert((b.to_string(), req.method.clone()), bytes.clone());
        }
        self.send(to, bytes);
    }

    fn on_request(&mut self, now: Time, from: SocketAddr, req: Request) {
        if req.method != Method::Ack {
            if let Some(b) = req.branch().and_then(|b| self.answered.get(&(b.to_string(), req.method.clone()))) {
                let b = b.clone();
                self.send(from, b); // a retransmission: same answer, no second action
                return;
            }
        }
        let call = self.calls.iter().position(|c| c.call_id == req.common.call_id);
        let contact = self.aor();
        let tag = match call {
            Some(i) => self.calls[i].local_tag.clone(),
            None => self.fresh("tag"),
        };
        match (&req.method, call) {
            (Method::Invite, None) => self.incoming_invite(now, from, req),
            (Method::Invite, Some(i)) => {
                // A re-INVITE: follow the offer, answer at once.
                let c = &mut self.calls[i];
                take_sdp(c, &req.common.body);
                c.invite_in = Some(req);
                let body = self.sdp(answer_direction(self.calls[i].invite_in.as_ref()));
                self.answer_final(now, i, 200, "OK", Some(body));
                self.start_rtp(now, i);
            }
            (Method::Ack, Some(i)) => {
                self.retx.retain(|r| !(r.call == i && r.cseq == req.common.cseq.seq));
                if !req.common.body.is_empty() {
                    take_sdp(&mut self.calls[i], &req.common.body);
                    self.start_rtp(now, i);
                }
            }
            (Method::Ack, None) => {}
            (Method::Bye, Some(i)) => {
                let c = &mut self.calls[i];
                c.state = CallState::Ended(End::ByPeer);
                c.rtp.next = None;
                c.answer_at = None;
                self.reply(from, &req, &wire::response(&req, 200, "OK", &tag, &contact, None));
            }
            (Method::Cancel, Some(i)) if !self.calls[i].uac => {
                self.reply(from, &req, &wire::response(&req, 200, "OK", &tag, &contact, None));
                if matches!(self.calls[i].state, CallState::Calling | CallState::Early) {
                    self.calls[i].state = CallState::Ended(End::Cancelled);
                    self.calls[i].answer_at = None;
                    self.answer_final(now, i, 487, "Request Terminated", None);
                }
            }
            (Method::Bye | Method::Cancel, _) => {
                self.reply(from, &req, &wire::response(&req, 481, "Call/Transaction Does Not Exist", &tag, &contact, None));
            }
            (Method::Notify, _) => {
                self.on_notify(now, &req);
                self.reply(from, &req, &wire::response(&req, 200, "OK", &tag, &contact, None));
            }
            (Method::Options, _) if self.cfg.options_always_ok => {
                self.reply(from, &req, &wire::response(&req, 200, "OK", &tag, &contact, None));
            }
            // An in-dialog request for a call that has no dialog here (its INVITE got no 2xx): RFC 3261 §12.2.2.
            _ if req.common.to.tag().is_some() && call.is_none_or(|i| !matches!(self.calls[i].state, CallState::Confirmed | CallState::Ended(End::ByPeer | End::HungUp))) => {
                self.reply(from, &req, &wire::response(&req, 481, "Call/Transaction Does Not Exist", &tag, &contact, None));
            }
            _ => self.reply(from, &req, &wire::response(&req, 200, "OK", &tag, &contact, None)),
        }
    }

    fn incoming_invite(&mut self, now: Time, from: SocketAddr, req: Request) {
        let idx = self.calls.len();
        let target = req.common.contact.first().map_or_else(|| from.to_string(), |c| c.uri.to_string());
        let (local, remote) = (wire::untagged(&req.common.to), wire::untagged(&req.common.from));
        let mut c = Call::new(req.common.call_id.to_string(), false, self.fresh("tag"), local, remote, target, req.uri.to_string(), self.rtp_out(idx));
        c.remote_tag = req.common.from.tag().map(str::to_string);
        c.invite_branch = req.branch().unwrap_or("").to_string();
        take_sdp(&mut c, &req.common.body);
        let trying = wire::response(&req, 100, "Trying", &c.local_tag, "", None);
        self.reply(from, &req, &trying);
        c.invite_in = Some(req);
        self.calls.push(c);
        match self.cfg.on_invite {
            OnInvite::Answer { after } => {
                self.ring(idx);
                self.calls[idx].answer_at = Some(now + after);
            }
            OnInvite::NoAnswer => self.ring(idx),
            OnInvite::Busy => {
                self.calls[idx].state = CallState::Ended(End::Failed(486));
                self.answer_final(now, idx, 486, "Busy Here", None);
            }
            OnInvite::Reject(status) => {
                self.calls[idx].state = CallState::Ended(End::Failed(status));
                self.answer_final(now, idx, status, crate::sip::reason_phrase(status), None);
            }
        }
    }

    fn ring(&mut self, idx: usize) {
        self.calls[idx].state = CallState::Early;
        let contact = self.aor();
        let Some(req) = self.calls[idx].invite_in.clone() else { return };
        let text = wire::response(&req, 180, "Ringing", &self.calls[idx].local_tag, &contact, None);
        self.reply(self.server, &req, &text);
    }

    /// Sends a final response to the INVITE being answered and retransmits it until the ACK.
    fn answer_final(&mut self, now: Time, idx: usize, status: u16, reason: &str, sdp: Option<String>) {
        let contact = self.aor();
        let Some(req) = self.calls[idx].invite_in.clone() else { return };
        let body = sdp.as_deref().map(|b| ("application/sdp", b));
        let text = wire::response(&req, status, reason, &self.calls[idx].local_tag, &contact, body);
        self.reply(self.server, &req, &text);
        let bytes = crlf(&text);
        self.retx.push(ResponseRetx { call: idx, cseq: req.common.cseq.seq, bytes, next: now + T1, interval: T1, until: now + 64 * T1 });
    }

    fn on_response(&mut self, now: Time, resp: Response) {
        let branch = resp.common.via.first().and_then(|v| v.branch()).unwrap_or("").to_string();
        let method = resp.common.cseq.method.clone();
        let Some(pos) = self.txns.iter().position(|t| t.branch == branch && t.method == method) else {
            // A retransmitted final response to an INVITE whose transaction is over: ACK it again.
            if method == Method::Invite && resp.status >= 200 {
                if let Some(i) = self.calls.iter().position(|c| c.call_id == resp.common.call_id) {
                    self.ack(now, i, &resp);
                }
            }
            return;
        };
        if resp.status < 200 {
            let t = &mut self.txns[pos];
            if t.method == Method::Invite {
                t.next = None; // Timer A stops; the INVITE now waits for its final response
                t.timeout = None;
            }
            if let Purpose::Call(i) = t.purpose {
                let c = &mut self.calls[i];
                if c.state == CallState::Calling && resp.common.to.tag().is_some() {
                    c.state = CallState::Early;
                }
            }
            return;
        }
        let t = self.txns.remove(pos);
        match t.purpose {
            Purpose::Call(i) if method == Method::Invite => self.invite_final(now, i, resp),
            Purpose::Call(_) => {}
            Purpose::Sub(i) => self.subs[i].on_final(&resp),
        }
    }

    /// The final response to our INVITE (initial or re-INVITE) of call `i`.
    fn invite_final(&mut self, now: Time, i: usize, resp: Response) {
        let initial = self.calls[i].is_initial(resp.common.cseq.seq);
        let hung_up = self.calls[i].state == CallState::Ended(End::HungUp);
        {
            let c = &mut self.calls[i];
            if resp.is_success() {
                c.remote_tag = resp.common.to.tag().map(str::to_string);
                if let Some(ct) = resp.common.contact.first() {
                    c.target = ct.uri.to_string();
                }
                take_sdp(c, &resp.common.body);
                if !hung_up {
                    c.state = CallState::Confirmed;
                }
            } else if initial && !hung_up {
                c.state = CallState::Ended(End::Failed(resp.status));
            }
            c.final_response = Some(resp.clone());
        }
        self.ack(now, i, &resp);
        if resp.is_success() && hung_up {
            // Our CANCEL crossed their 200: the call exists now, end it.
            self.calls[i].state = CallState::Confirmed;
            self.hangup(now, CallId(i));
        } else {
            self.start_rtp(now, i);
        }
    }

    /// ACKs a final response to our INVITE: a new transaction for a 2xx, the INVITE's branch otherwise.
    fn ack(&mut self, _now: Time, i: usize, resp: &Response) {
        let cseq = resp.common.cseq.seq;
        if resp.is_success() {
            if let Some((acked, bytes)) = &self.calls[i].ack {
                if *acked == cseq {
                    let b = bytes.clone();
                    self.send(self.server, b);
                    return;
                }
            }
            let branch = format!("z9hG4bK-{}", self.fresh("ack"));
            let c = &self.calls[i];
            let (from, to) = dialog_ends(c);
            let head = RequestHead { method: "ACK", ruri: &c.target, via: self.cfg.sip, branch: &branch, from: &from, to: &to, call_id: &c.call_id, cseq, contact: &self.aor(), extra: "" };
            let bytes = crlf(&head.text(None));
            self.calls[i].ack = Some((cseq, bytes.clone()));
            self.send(self.server, bytes);
        } else {
            let c = &self.calls[i];
            let from = format!("{};tag={}", c.local, c.local_tag);
            let to = resp.common.to.to_string();
            let ruri = if c.is_initial(cseq) { c.ruri.clone() } else { c.target.clone() };
            let branch = resp.common.via.first().and_then(|v| v.branch()).unwrap_or("").to_string();
            let head = RequestHead { method: "ACK", ruri: &ruri, via: self.cfg.sip, branch: &branch, from: &from, to: &to, call_id: &c.call_id, cseq, contact: &self.aor(), extra: "" };
            let bytes = crlf(&head.text(None));
            self.send(self.server, bytes);
        }
    }
}

impl Call {
    #[allow(clippy::too_many_arguments)]
    fn new(call_id: String, uac: bool, local_tag: String, local: String, remote: String, target: String, ruri: String, rtp: RtpOut) -> Call {
        Call {
            call_id,
            uac,
            state: CallState::Calling,
            local_tag,
            remote_tag: None,
            local,
            remote,
            target,
            ruri,
            cseq: 0,
            invite_cseq: 0,
            invite_branch: String::new(),
            ack: None,
            final_response: None,
            invite_in: None,
            answer_at: None,
            remote_rtp: None,
            may_send: false,
            rtp,
        }
    }

    /// `cseq` is the INVITE that created this call (placed by this phone).
    fn is_initial(&self, cseq: u32) -> bool {
        self.uac && cseq == 1
    }
}

/// (From, To) header values of an in-dialog request from this side of the call.
fn dialog_ends(c: &Call) -> (String, String) {
    let from = format!("{};tag={}", c.local, c.local_tag);
    let to = match &c.remote_tag {
        Some(t) => format!("{};tag={t}", c.remote),
        None => c.remote.clone(),
    };
    (from, to)
}

/// Follows an SDP body (offer or answer): where to send RTP and whether the other side wants it.
fn take_sdp(c: &mut Call, body: &[u8]) {
    if body.is_empty() {
        return;
    }
    if let Ok(sdp) = crate::sdp::parse_sdp(body) {
        c.may_send = sdp.direction.peer_receives() && !sdp.addr.ip().is_unspecified();
        c.remote_rtp = Some(sdp.addr);
    }
}

/// Our answer's direction to the offer in `invite` (sendrecv without an offer).
fn answer_direction(invite: Option<&Request>) -> &'static str {
    invite
        .filter(|r| !r.common.body.is_empty())
        .and_then(|r| crate::sdp::parse_sdp(&r.common.body).ok())
        .map_or("sendrecv", |s| s.direction.reverse().as_str())
}
