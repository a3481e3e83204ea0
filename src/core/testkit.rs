//! A virtual-time world for engine tests: one core, scripted phones as text, a clock that jumps.
//! Nothing sleeps; a 45 s park runs in microseconds.
//!
//! Here the test writes every message a phone sends and reads every message parkd sends: the place for exact,
//! message-level checks (a lost ACK, a crafted response). The shared preludes live here too: [`World::park`]
//! (a phone parks as [`ParkAs`] says) and [`World::recall_ringing`]. For whole flows with phones that act by
//! themselves, the media plane and a lossy network, see [`crate::sim`].

use super::{Core, Output, ParkEvent};
use crate::config::{LotConfig, NumRange, ServerConfig};
use crate::media::{MediaCommand, MediaLegId};
use crate::sip::{parse_message, Message, Peer, Response, Transport};
use crate::time::Time;
use crate::txn::TimerConfig;
use bytes::Bytes;
use std::time::Duration;

/// The media leg of the first RTP port the test world hands out (one leg per port).
pub(super) const LEG_20000: MediaLegId = MediaLegId::solo(20000);
/// The media leg of the second RTP port the test world hands out.
pub(super) const LEG_20002: MediaLegId = MediaLegId::solo(20002);

pub struct World {
    pub core: Core,
    pub now: Time,
    /// Every SIP message the core sent, in order.
    pub sent: Vec<(Peer, Bytes)>,
    pub media: Vec<MediaCommand>,
    pub events: Vec<ParkEvent>,
    /// Journal groups the core wrote (journaling on), with their tokens.
    pub journal: Vec<(Vec<crate::journal::Record>, Option<crate::journal::JournalToken>)>,
    /// Cluster operations the core handed out (cluster enabled) and not yet run by the test.
    pub cluster_ops: Vec<(crate::cluster::OpId, crate::cluster::RedisOp)>,
    /// Answers to commands given later ([`Core::submit_command`]), in order.
    pub commands_done: Vec<(crate::core::CommandTicket, crate::core::CommandResult)>,
}

pub fn udp(port: u16) -> Peer {
    Peer { transport: Transport::Udp, addr: format!("127.0.0.1:{port}").parse().unwrap() }
}

impl World {
    pub fn new() -> World {
        let mut lot = LotConfig::default_lot();
        lot.orbits = NumRange::parse("701-705").unwrap();
        World::with_lots(vec![lot])
    }

    pub fn with_lots(lots: Vec<LotConfig>) -> World {
        let server = ServerConfig {
            listen: "127.0.0.1:5060".parse().unwrap(),
            advertise: None,
            rtp_ports: NumRange::parse("20000-20099").unwrap(),
            outbound_proxy: None,
            ..ServerConfig::default()
        };
        World::with_server(server, lots)
    }

    /// A world whose core runs with `server` (advertise, outbound proxy, trusted proxies...).
    pub fn with_server(server: ServerConfig, lots: Vec<LotConfig>) -> World {
        World {
            core: Core::new(server, lots, TimerConfig::default(), 42),
            now: Time::from_secs(1_000_000),
            sent: Vec::new(),
            media: Vec::new(),
            events: Vec::new(),
            journal: Vec::new(),
            cluster_ops: Vec::new(),
            commands_done: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Sip { to, bytes } => self.sent.push((to, bytes)),
                Output::Media(m) => self.media.push(m),
                Output::Event(e) => self.events.push(e),
                Output::Journal { records, token } => self.journal.push((records, token)),
                Output::Cluster { op, cmd } => self.cluster_ops.push((op, cmd)),
                Output::CommandDone { ticket, result } => self.commands_done.push((ticket, result)),
            }
        }
    }

    /// Hands the core an input from the cluster's io (a Redis reply, a message, the link) and carries its outputs.
    pub fn cluster_input(&mut self, input: crate::core::ClusterInput) {
        self.core.handle_cluster(input, self.now);
        self.drain();
    }

    /// Reports journal group `token` durable (`ok`) or failed, and carries what the core then does.
    pub fn durable(&mut self, token: crate::journal::JournalToken, ok: bool) {
        self.core.handle_journal_durable(token, ok, self.now);
        self.drain();
    }

    /// Hands the core the media threads' measured load (the capacity guard's input) and carries its outputs.
    pub fn media_load(&mut self, loads: &[crate::core::admission::capacity::MediaLoad]) {
        self.core.handle_media_load(self.now, loads);
        self.drain();
    }

    /// Hands the core a report of the media plane (a parked caller's key press) and carries its outputs.
    pub fn media_report(&mut self, report: crate::media::MediaReport) {
        self.core.handle_media_report(self.now, report);
        self.drain();
    }

    /// The token of the last journal group written with one.
    pub fn last_token(&self) -> Option<crate::journal::JournalToken> {
        self.journal.iter().rev().find_map(|(_, t)| *t)
    }

    /// Delivers a message (text with `\n` line ends, turned into CRLF; Content-Length computed) from `from`.
    /// Gives the core an application command under `ticket`; its answer if given now (a later one lands in
    /// [`World::commands_done`]).
    pub fn command(&mut self, ticket: u64, cmd: crate::core::Command) -> Option<crate::core::CommandResult> {
        let r = self.core.submit_command(self.now, crate::core::CommandTicket(ticket), cmd);
        self.drain();
        r
    }

    pub fn deliver(&mut self, from: Peer, text: &str) {
        let bytes = crlf(text);
        self.core.handle_sip(self.now, from, &bytes);
        self.drain();
    }

    pub fn deliver_raw(&mut self, from: Peer, bytes: &[u8]) {
        self.core.handle_sip(self.now, from, bytes);
        self.drain();
    }

    /// Moves the clock forward by `d`, firing every deadline on the way at its own time.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some((t, _)) = self.core.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.core.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
    }

    /// `phone` INVITEs `user` as `how` says (with an SDP offer), expects `200` and ACKs it.
    pub fn park(&mut self, phone: &Phone, user: &str, how: ParkAs<'_>) -> Parked {
        let since = self.sent.len();
        let rb = how.referred_by.map(|r| format!("Referred-By: {r}\n")).unwrap_or_default();
        self.deliver(phone.peer, &phone.invite(user, &format!("{rb}{}", how.extra), Some(&phone.sdp(how.pts, "sendrecv"))));
        let ok = self.last_response_to(phone.peer, since);
        assert_eq!(ok.status, 200, "{} parking on {user} answered 200", phone.name);
        let tag = ok.common.to.tag().expect("to tag").to_string();
        self.deliver(phone.peer, &phone.ack(user, &tag, phone.cseq, None));
        Parked { tag, orbit: ok.common.header("Park-Orbit").unwrap_or("").to_string() }
    }

    /// The recall prelude: `bob` parks on 700 as `how` says (a blind transfer by Alice), `parking_time` passes,
    /// and parkd's recall INVITE rings Alice (the parker at 127.0.0.1:5999).
    pub fn recall_ringing(&mut self, bob: Phone, how: ParkAs<'_>, parking_time: Duration) -> Recall {
        let tag = self.park(&bob, "700", how).tag;
        let since = self.sent.len();
        self.advance(parking_time);
        let alice = alice();
        let invite = self.requests_to(alice.peer, since).into_iter().find(|r| r.method == crate::sip::Method::Invite).expect("a recall INVITE to the parker");
        Recall { bob, alice, tag, invite }
    }

    /// Responses sent to `to` since message index `since`.
    pub fn responses_to(&self, to: Peer, since: usize) -> Vec<Response> {
        self.sent[since..]
            .iter()
            .filter(|(p, _)| *p == to)
            .filter_map(|(_, b)| match parse_message(b) {
                Ok(Message::Response(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Requests sent to `to` since `since`.
    pub fn requests_to(&self, to: Peer, since: usize) -> Vec<crate::sip::Request> {
        self.sent[since..]
            .iter()
            .filter(|(p, _)| *p == to)
            .filter_map(|(_, b)| match parse_message(b) {
                Ok(Message::Request(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// The one final response to `to` since `since` (panics if there is not exactly one distinct status).
    pub fn last_response_to(&self, to: Peer, since: usize) -> Response {
        self.responses_to(to, since).into_iter().rev().find(|r| r.status >= 200).expect("a final response")
    }
}

/// Makes a wire message from readable text: CRLF line ends, a correct Content-Length (shared with the
/// simulated network's phones).
pub use crate::sim::wire::crlf;

/// How a scripted phone parks in [`World::park`]: who referred it (the parker), the payload types it
/// offers, extra header lines.
#[derive(Clone, Copy, Debug)]
pub struct ParkAs<'a> {
    /// The `Referred-By` value (a blind transfer by that party); `None` parks the caller itself.
    pub referred_by: Option<&'a str>,
    /// Payload types of the SDP offer (`"0"`, `"0 8 101"`).
    pub pts: &'a str,
    /// Header lines added after Referred-By, each ending in `\n`.
    pub extra: &'a str,
}

impl<'a> ParkAs<'a> {
    /// The transferee of Alice's blind transfer (`Referred-By: <sip:alice@127.0.0.1:5999>`), offering PCMU.
    pub const ALICE: ParkAs<'static> = ParkAs { referred_by: Some("<sip:alice@127.0.0.1:5999>"), pts: "0", extra: "" };
    /// Dialing the park code or an orbit without Referred-By (parks the caller itself), offering PCMU.
    pub const SELF: ParkAs<'static> = ParkAs { referred_by: None, pts: "0", extra: "" };

    pub const fn pts(self, pts: &'a str) -> ParkAs<'a> {
        ParkAs { pts, ..self }
    }
    pub const fn referred_by(self, referred_by: &'a str) -> ParkAs<'a> {
        ParkAs { referred_by: Some(referred_by), ..self }
    }
    pub const fn extra(self, extra: &'a str) -> ParkAs<'a> {
        ParkAs { extra, ..self }
    }
}

/// What [`World::park`] learned: parkd's tag of the parked dialog and the `Park-Orbit` it answered (or "").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parked {
    pub tag: String,
    pub orbit: String,
}

/// Alice, the parker of [`ParkAs::ALICE`], at 127.0.0.1:5999 (her Call-ID is unused: parkd calls her).
pub fn alice() -> Phone {
    Phone { call_id: "alice-unused".into(), ..Phone::new("alice", 5999) }
}

/// A parked call whose recall rings the parker (see [`World::recall_ringing`]).
pub struct Recall {
    pub bob: Phone,
    pub alice: Phone,
    /// parkd's tag of Bob's parked dialog.
    pub tag: String,
    /// The recall INVITE Alice got.
    pub invite: crate::sip::Request,
}

/// A phone in tests: its SIP address and RTP port, and builders for what it sends.
pub struct Phone {
    pub peer: Peer,
    pub name: &'static str,
    pub call_id: String,
    pub tag: String,
    pub cseq: u32,
    pub rtp_port: u16,
}

impl Phone {
    pub fn new(name: &'static str, port: u16) -> Phone {
        Phone { peer: udp(port), name, call_id: format!("{name}-call@test"), tag: format!("{name}-tag"), cseq: 1, rtp_port: port + 10000 }
    }

    pub fn sdp(&self, pts: &str, dir: &str) -> String {
        let rtpmaps: String = pts
            .split(' ')
            .map(|pt| match pt {
                "0" => "a=rtpmap:0 PCMU/8000\n".to_string(),
                "8" => "a=rtpmap:8 PCMA/8000\n".to_string(),
                "101" => "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16\n".to_string(),
                _ => String::new(),
            })
            .collect();
        format!(
            "v=0\no={n} 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio {p} RTP/AVP {pts}\n{rtpmaps}a={dir}\n",
            n = self.name,
            p = self.rtp_port
        )
    }

    /// A dialog-creating INVITE to `user` with optional extra header lines and SDP body.
    pub fn invite(&self, user: &str, extra: &str, body: Option<&str>) -> String {
        self.request("INVITE", user, extra, body)
    }

    /// A request outside any dialog (`INVITE`, `SUBSCRIBE`, ...) to `user`, with extra header lines and an
    /// optional SDP body. INVITE branches are `z9hG4bK-<call-id>-<cseq>` (tests that CANCEL rebuild them).
    pub fn request(&self, method: &str, user: &str, extra: &str, body: Option<&str>) -> String {
        let (ct, body) = match body {
            Some(b) => ("Content-Type: application/sdp\n", b.to_string()),
            None => ("", String::new()),
        };
        let b = self.call_id.replace('@', ".");
        let branch = if method == "INVITE" { format!("{b}-{}", self.cseq) } else { format!("{b}-{}-{}", method.to_lowercase(), self.cseq) };
        format!(
            "{method} sip:{user}@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-{branch};rport\nMax-Forwards: 70\nFrom: <sip:{n}@127.0.0.1:{port}>;tag={tag}\nTo: <sip:{user}@127.0.0.1:5060>\nCall-ID: {cid}\nCSeq: {cs} {method}\nContact: <sip:{n}@{a}>\n{extra}{ct}\n{body}",
            a = self.peer.addr,
            port = self.peer.addr.port(),
            n = self.name,
            tag = self.tag,
            cid = self.call_id,
            cs = self.cseq,
        )
    }

    /// An in-dialog request (`BYE`, re-`INVITE`, ...) with parkd's tag `to_tag`.
    pub fn in_dialog(&self, method: &str, to_user: &str, to_tag: &str, cseq: u32, body: Option<&str>) -> String {
        let (ct, body) = match body {
            Some(b) => ("Content-Type: application/sdp\n", b.to_string()),
            None => ("", String::new()),
        };
        let branch = format!("z9hG4bK-{}-{}-{}", self.call_id.replace('@', "."), method, cseq);
        format!(
            "{method} sip:parkd@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {a};branch={branch}\nMax-Forwards: 70\nFrom: <sip:{n}@127.0.0.1:{port}>;tag={tag}\nTo: <sip:{to_user}@127.0.0.1:5060>;tag={to_tag}\nCall-ID: {cid}\nCSeq: {cseq} {m}\nContact: <sip:{n}@{a}>\n{ct}\n{body}",
            a = self.peer.addr,
            port = self.peer.addr.port(),
            n = self.name,
            tag = self.tag,
            cid = self.call_id,
            m = if method == "ACK" { "ACK" } else { method },
        )
    }

    /// The ACK for parkd's 2xx to our INVITE with CSeq `cseq`.
    pub fn ack(&self, to_user: &str, to_tag: &str, cseq: u32, body: Option<&str>) -> String {
        self.in_dialog("ACK", to_user, to_tag, cseq, body)
    }

    /// A 200 OK answering parkd's request `req` (e.g. its BYE).
    pub fn ok_to(&self, req: &crate::sip::Request) -> String {
        self.answer(req, 200, "OK", None)
    }

    /// A response to parkd's request `req`: our To tag added (except for 100), optional SDP body, our Contact.
    pub fn answer(&self, req: &crate::sip::Request, status: u16, reason: &str, sdp: Option<&str>) -> String {
        let mut text = format!("SIP/2.0 {status} {reason}\n");
        for v in &req.common.via {
            text.push_str(&format!("Via: {v}\n"));
        }
        let to = if req.common.to.tag().is_none() && status > 100 { format!("{};tag={}", req.common.to, self.tag) } else { req.common.to.to_string() };
        text.push_str(&format!(
            "From: {}\nTo: {}\nCall-ID: {}\nCSeq: {} {}\nContact: <sip:{}@{}>\n",
            req.common.from, to, req.common.call_id, req.common.cseq.seq, req.common.cseq.method, self.name, self.peer.addr
        ));
        if let Some(b) = sdp {
            text.push_str(&format!("Content-Type: application/sdp\n\n{b}"));
        }
        text
    }
}
