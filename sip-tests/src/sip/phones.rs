//! [`Phones`]: many parked callers played by one [`Ua`] on a background thread, each with its own
//! [`RtpEndpoint`]; made for tests that restart parkd under its calls (issue 17).
//!
//! The thread answers everything parkd sends inside a dialog (keepalive OPTIONS, BYE, NOTIFY, re-INVITE) with
//! `200 OK` and keeps a log of it (method, CSeq, when), ACKs parkd's answers to our INVITEs, and records the
//! answers to our BYEs and SUBSCRIBEs. It runs while parkd is down too, so nothing parkd retransmits after a
//! restart goes unanswered.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parkd::sip::{Message, Method};

use super::ua::{sdp_audio_port, CallIds, Ua};
use crate::media::rtp_endpoint::RtpEndpoint;

/// A request parkd sent inside one of our dialogs.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub cseq: u32,
    pub at: Instant,
    /// The body (a NOTIFY's dialog-info), as text.
    pub body: String,
    /// The whole request as parkd's codec writes it back (Request-URI, Via, Contact... to check).
    pub text: String,
}

/// What one call (or subscription) of ours has seen.
#[derive(Clone, Debug, Default)]
pub struct CallLog {
    /// The final answer to our INVITE (or SUBSCRIBE).
    pub status: Option<u16>,
    /// `Park-Orbit` of the 200 OK.
    pub orbit: Option<String>,
    /// The RTP port of parkd's SDP answer.
    pub answer_port: Option<u16>,
    /// parkd's SDP answer, as text.
    pub answer_sdp: Option<String>,
    /// parkd's To tag.
    pub to_tag: Option<String>,
    /// The answer to our BYE.
    pub bye_status: Option<u16>,
    /// The answer to our REFER ([`Phones::refer`]).
    pub refer_status: Option<u16>,
    /// Requests parkd sent us in this dialog.
    pub requests: Vec<Received>,
}

impl CallLog {
    /// The highest CSeq of parkd's requests received before `t` (0: none).
    pub fn max_cseq_before(&self, t: Instant) -> u32 {
        self.requests.iter().filter(|r| r.at < t).map(|r| r.cseq).max().unwrap_or(0)
    }

    /// parkd's requests of `method` received at or after `t`.
    pub fn requests_since(&self, method: &str, t: Instant) -> Vec<Received> {
        self.requests.iter().filter(|r| r.method == method && r.at >= t).cloned().collect()
    }
}

struct Shared {
    ua: Mutex<Ua>,
    logs: Mutex<HashMap<String, CallLog>>,
    /// Our dialogs by Call-ID (to ACK 2xx retransmissions with the right ids).
    calls: Mutex<HashMap<String, CallIds>>,
    /// Answer dialog-creating INVITEs from parkd (recalls) with 200 and SDP on this RTP port; `None`: a bare 200.
    answer_port: Mutex<Option<u16>>,
    stop: AtomicBool,
}

/// One caller of several, as the test sees it.
pub struct Phone {
    pub ids: CallIds,
    pub rtp: RtpEndpoint,
    extra: String,
}

/// Many callers on one SIP socket, served by a background thread (stopped when dropped).
pub struct Phones {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    pub phones: Vec<Phone>,
    /// Our SIP address (what parkd sends to).
    pub local: SocketAddr,
    prefix: String,
    /// The address our SIP and RTP sockets bind to.
    ip: IpAddr,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Phones {
    /// A SIP socket talking to `server`; call ids start with `prefix`.
    pub fn new(server: SocketAddr, prefix: &str) -> Phones {
        Phones::new_at(IpAddr::V4(Ipv4Addr::LOCALHOST), server, prefix)
    }

    /// [`Phones::new`] with the SIP and RTP sockets on `ip` (`::1`: IPv6 phones, SDP `c=IN IP6 ::1`).
    pub fn new_at(ip: IpAddr, server: SocketAddr, prefix: &str) -> Phones {
        let ua = Ua::new_at(ip, server).unwrap_or_else(|e| panic!("UA socket on {ip}: {e}"));
        let local = ua.local;
        let shared = Arc::new(Shared { ua: Mutex::new(ua), logs: Mutex::default(), calls: Mutex::default(), answer_port: Mutex::default(), stop: AtomicBool::new(false) });
        let s = shared.clone();
        let thread = std::thread::spawn(move || serve(&s));
        Phones { shared, thread: Some(thread), phones: Vec::new(), local, prefix: prefix.to_string(), ip }
    }

    /// From now on, dialog-creating INVITEs from parkd (a recall) are answered 200 with a PCMU answer naming
    /// `rtp_port` on our address (an [`RtpEndpoint`] the test bound on the same address).
    pub fn answer_invites(&self, rtp_port: u16) {
        *lock(&self.shared.answer_port) = Some(rtp_port);
    }

    /// Parks one more caller by dialling `number` (the park code or an orbit); its RTP endpoint starts
    /// recording (and talks with `talk` when nonzero). Returns its index; wait with [`Phones::wait_answered`].
    pub fn park(&mut self, number: &str, talk: u8) -> usize {
        self.park_with(number, talk, "")
    }

    /// [`Phones::park`] with extra header lines on the INVITE (each ending in CRLF), e.g. a `Referred-By` that
    /// makes a call to an empty orbit a directed park (a transfer) rather than a retrieve.
    pub fn park_with(&mut self, number: &str, talk: u8, extra: &str) -> usize {
        let i = self.phones.len();
        let name = format!("{}{i}", self.prefix);
        let rtp = RtpEndpoint::bind_on(self.ip, &name);
        if talk != 0 {
            rtp.start_talking(talk);
        }
        let ids = CallIds {
            call_id: format!("{name}-{}@restart.test", std::process::id()),
            from_tag: format!("{name}-tag"),
            user: name.clone(),
            target: number.to_string(),
            to_tag: None,
        };
        lock(&self.shared.calls).insert(ids.call_id.clone(), ids.clone());
        lock(&self.shared.logs).insert(ids.call_id.clone(), CallLog::default());
        lock(&self.shared.ua).invite(&ids, rtp.port(), extra);
        self.phones.push(Phone { ids, rtp, extra: extra.to_string() });
        i
    }

    /// Waits until every call has a final answer to its INVITE (resending INVITEs still unanswered every
    /// second); panics after `timeout`.
    pub fn wait_answered(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut resend = Instant::now() + Duration::from_secs(1);
        loop {
            let pending: Vec<&Phone> = self.phones.iter().filter(|p| self.log(p).status.is_none()).collect();
            if pending.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{} calls unanswered after {timeout:?}", pending.len());
            if Instant::now() >= resend {
                for p in &pending {
                    lock(&self.shared.ua).invite(&p.ids, p.rtp.port(), &p.extra);
                }
                resend = Instant::now() + Duration::from_secs(1);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What call `p` has seen so far.
    pub fn log(&self, p: &Phone) -> CallLog {
        lock(&self.shared.logs).get(&p.ids.call_id).cloned().unwrap_or_default()
    }

    /// The log of any dialog of ours by Call-ID (a subscription's).
    pub fn log_of(&self, call_id: &str) -> CallLog {
        lock(&self.shared.logs).get(call_id).cloned().unwrap_or_default()
    }

    /// Hangs up call `i` (BYE, resent every second until answered); returns the answer's status.
    pub fn bye(&self, i: usize, timeout: Duration) -> Option<u16> {
        let p = &self.phones[i];
        let mut ids = p.ids.clone();
        ids.to_tag = self.log(p).to_tag;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            lock(&self.shared.ua).bye(&ids);
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                if let Some(s) = self.log(p).bye_status {
                    return Some(s);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        None
    }

    /// Sends a REFER (CSeq 2, so not followed by [`Phones::bye`]) in call `i`'s answered dialog, transferring the
    /// party across (e.g. a call this phone retrieved) to `number` at the same server, with `Referred-By` naming
    /// this phone. The answer lands in [`CallLog::refer_status`], parkd's NOTIFYs in the call's `requests`.
    pub fn refer(&self, i: usize, number: &str) {
        let p = &self.phones[i];
        let to_tag = self.log(p).to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let ua = lock(&self.shared.ua);
        let text = format!(
            "REFER sip:{t}@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-refer-{f};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{u}@{l}>;tag={f}\r\nTo: <sip:{t}@{s}>{to_tag}\r\nCall-ID: {cid}\r\nCSeq: 2 REFER\r\n\
             Contact: <sip:{u}@{l}>\r\nRefer-To: <sip:{number}@{s}>\r\nReferred-By: <sip:{u}@{l}>\r\nContent-Length: 0\r\n\r\n",
            t = p.ids.target,
            s = ua.server,
            l = ua.local,
            u = p.ids.user,
            f = p.ids.from_tag,
            cid = p.ids.call_id,
        );
        let _ = ua.sock.send_to(text.as_bytes(), ua.server);
    }

    /// SUBSCRIBEs to the dialog state of `orbit` (BLF) for `expires` seconds; returns the subscription's
    /// Call-ID (its NOTIFYs are in [`Phones::log_of`]).
    pub fn subscribe(&self, orbit: &str, expires: u32) -> String {
        let call_id = format!("{}-blf-{orbit}-{}@restart.test", self.prefix, std::process::id());
        lock(&self.shared.logs).insert(call_id.clone(), CallLog::default());
        let ua = lock(&self.shared.ua);
        let text = format!(
            "SUBSCRIBE sip:{orbit}@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-sub-{orbit}-{n};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:watcher@{l}>;tag=watch-{orbit}\r\nTo: <sip:{orbit}@{s}>\r\nCall-ID: {call_id}\r\nCSeq: 1 SUBSCRIBE\r\n\
             Contact: <sip:watcher@{l}>\r\nEvent: dialog\r\nAccept: application/dialog-info+xml\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
            s = ua.server,
            l = ua.local,
            n = std::process::id(),
        );
        let _ = ua.sock.send_to(text.as_bytes(), ua.server);
        call_id
    }

    /// The text of the first request of `method` parkd sent in any of our dialogs (e.g. a recall INVITE, whose
    /// Call-ID is parkd's).
    pub fn any_request(&self, method: &str) -> Option<String> {
        let logs = lock(&self.shared.logs);
        logs.values().flat_map(|l| l.requests.iter()).filter(|r| r.method == method).min_by_key(|r| r.at).map(|r| r.text.clone())
    }

    /// Waits until `pred` holds for the log of `call_id`.
    pub fn wait_log(&self, call_id: &str, timeout: Duration, pred: impl Fn(&CallLog) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.log_of(call_id)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Phones {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The background thread: read everything, answer, log.
fn serve(s: &Shared) {
    while !s.stop.load(Ordering::SeqCst) {
        let mut got_any = false;
        loop {
            let msg = lock(&s.ua).try_recv();
            let Some(msg) = msg else { break };
            got_any = true;
            match msg {
                Message::Request(req) => {
                    if req.method == Method::Ack {
                        continue;
                    }
                    let answer_port = *lock(&s.answer_port);
                    match answer_port {
                        Some(port) if req.method == Method::Invite && req.common.to.tag().is_none() => lock(&s.ua).answer_invite(&req, port),
                        _ => lock(&s.ua).ok_to(&req),
                    }
                    let call_id = req.common.call_id.to_string();
                    let received = Received {
                        method: req.method.as_str().to_string(),
                        cseq: req.common.cseq.seq,
                        at: Instant::now(),
                        body: String::from_utf8_lossy(&req.common.body).into_owned(),
                        text: String::from_utf8_lossy(&req.encode()).into_owned(),
                    };
                    lock(&s.logs).entry(call_id).or_default().requests.push(received);
                }
                Message::Response(resp) => {
                    let call_id = resp.common.call_id.to_string();
                    let method = resp.common.cseq.method.clone();
                    if resp.status < 200 {
                        continue;
                    }
                    let mut logs = lock(&s.logs);
                    let log = logs.entry(call_id.clone()).or_default();
                    match method {
                        Method::Invite => {
                            log.status = Some(resp.status);
                            if resp.status < 300 {
                                log.orbit = resp.common.header("Park-Orbit").map(str::to_string);
                                log.answer_port = sdp_audio_port(&resp);
                                log.answer_sdp = Some(String::from_utf8_lossy(&resp.common.body).into_owned());
                                log.to_tag = resp.common.to.tag().map(str::to_string);
                            }
                            let ids = lock(&s.calls).get(&call_id).cloned();
                            drop(logs);
                            if let Some(mut ids) = ids {
                                ids.to_tag = resp.common.to.tag().map(str::to_string);
                                lock(&s.ua).ack(&ids, resp.status < 300);
                            }
                        }
                        Method::Bye => log.bye_status = Some(resp.status),
                        Method::Refer => log.refer_status = Some(resp.status),
                        Method::Subscribe => log.status = Some(resp.status),
                        _ => {}
                    }
                }
            }
        }
        if !got_any {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
