//! Load that should not hurt: an INVITE flood that never ACKs, sent from its own loopback address
//! ([`InviteFlood`]), and a legitimate phone parking and retrieving meanwhile ([`LegitPhone`]).
//!
//! Both are bounded in count and time and stop by themselves. Traffic stays on 127.0.0.0/8. The flood test
//! (`tests/flood.rs`) uses both; the benchmark's flood step (`sip-tests/bench`) floods with [`InviteFlood`] too.

use crate::harness::udp;
use crate::sip::ua::{CallIds, Ua};
use parkd::sip::{Message, Method, Request, Response};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a finished flood saw.
#[derive(Debug, Default)]
pub struct FloodReport {
    pub sent: usize,
    /// For each final status parkd answered with: how many INVITEs (Call-IDs) got it as their first final answer.
    pub answered: BTreeMap<u16, usize>,
    /// Datagrams received in all (retransmitted responses included).
    pub datagrams: usize,
    /// How long sending took.
    pub sending: Duration,
}

impl FloodReport {
    /// INVITEs whose first final answer was `status`.
    pub fn got(&self, status: u16) -> usize {
        self.answered.get(&status).copied().unwrap_or(0)
    }

    /// INVITEs that got no answer at all.
    pub fn unanswered(&self) -> usize {
        self.sent.saturating_sub(self.answered.values().sum())
    }
}

/// An INVITE flood running in the background.
pub struct InviteFlood {
    sender: Option<JoinHandle<(usize, Duration)>>,
    receiver: Option<JoinHandle<(HashMap<String, u16>, usize)>>,
    stop: Arc<AtomicBool>,
}

impl InviteFlood {
    /// Starts sending `count` INVITEs to `user` at `target` from `source` (any port), evenly over `over`,
    /// each with its own Call-ID and branch, and never ACKs anything.
    pub fn start(target: SocketAddr, source: IpAddr, user: &str, count: usize, over: Duration) -> io::Result<InviteFlood> {
        let sock = UdpSocket::bind(SocketAddr::new(source, 0))?;
        // Room for a burst of answers while the receiving thread waits for a core.
        udp::set_buffers(&sock, 8 << 20);
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let local = sock.local_addr()?;
        let rx = sock.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let user = user.to_string();
        let sender = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut sent = 0;
            while sent < count {
                let due = ((t0.elapsed().as_secs_f64() / over.as_secs_f64()) * count as f64).ceil() as usize;
                while sent < due.min(count) {
                    let _ = sock.send_to(flood_invite(&user, target, local, sent).as_bytes(), target);
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            (sent, t0.elapsed())
        });
        let stop_rx = stop.clone();
        let receiver = std::thread::spawn(move || {
            // Call-ID → its first final status (later ones, e.g. retransmissions, are not counted again).
            let mut answered: HashMap<String, u16> = HashMap::new();
            let mut datagrams = 0;
            let mut buf = vec![0u8; 65_536];
            while !stop_rx.load(Ordering::Relaxed) {
                let Ok(n) = rx.recv(&mut buf) else { continue };
                datagrams += 1;
                if let Ok(Message::Response(r)) = parkd::sip::parse_message(&buf[..n]) {
                    if r.status >= 200 {
                        answered.entry(r.common.call_id.to_string()).or_insert(r.status);
                    }
                }
            }
            (answered, datagrams)
        });
        Ok(InviteFlood { sender: Some(sender), receiver: Some(receiver), stop })
    }

    /// Whether it is still sending.
    pub fn sending(&self) -> bool {
        self.sender.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Waits until every INVITE was sent, listens `linger` longer for answers, then reports.
    pub fn finish(mut self, linger: Duration) -> FloodReport {
        let (sent, sending) = self.sender.take().and_then(|h| h.join().ok()).unwrap_or_default();
        std::thread::sleep(linger);
        self.stop.store(true, Ordering::Relaxed);
        let (answered, datagrams) = self.receiver.take().and_then(|h| h.join().ok()).unwrap_or_default();
        let mut by_status = BTreeMap::new();
        for status in answered.into_values() {
            *by_status.entry(status).or_insert(0) += 1;
        }
        FloodReport { sent, answered: by_status, datagrams, sending }
    }
}

impl Drop for InviteFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn flood_invite(user: &str, target: SocketAddr, local: SocketAddr, i: usize) -> String {
    let sdp = format!("v=0\r\no=flood 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", ip = local.ip());
    format!(
        "INVITE sip:{user}@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-flood-{i};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:flood@{local}>;tag=fl{i}\r\nTo: <sip:{user}@{target}>\r\nCall-ID: flood-{i}@{ip}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:flood@{local}>\r\nReferred-By: <sip:flood@{ip}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
        ip = local.ip(),
        len = sdp.len()
    )
}

/// How long one legitimate cycle's steps took.
#[derive(Clone, Copy, Debug)]
pub struct CycleTimes {
    /// Park INVITE → its 200.
    pub park: Duration,
    /// Retrieve INVITE → its 200.
    pub retrieve: Duration,
}

/// A phone on 127.0.0.1 parking itself (with Referred-By, as a transferee) and another of its lines
/// retrieving the call, then hanging up; it answers parkd's BYE. Requests are retransmitted every 500 ms
/// (RFC 3261 T1) as a phone would.
pub struct LegitPhone {
    ua: Ua,
    sink: UdpSocket,
    /// Messages received that no step has used yet.
    inbox: Vec<Message>,
}

impl LegitPhone {
    pub fn new(parkd: SocketAddr) -> io::Result<LegitPhone> {
        Ok(LegitPhone { ua: Ua::new(parkd)?, sink: UdpSocket::bind("127.0.0.1:0")?, inbox: Vec::new() })
    }

    /// One park + retrieve + hang-up cycle (`n` makes its Call-IDs unique). Err says which step failed.
    pub fn cycle(&mut self, n: usize, park_code: &str) -> Result<CycleTimes, String> {
        let rtp = self.sink.local_addr().map_err(|e| e.to_string())?.port();
        let mk = |p: &str, target: &str| CallIds {
            call_id: format!("legit-{p}{n}@127.0.0.1"),
            from_tag: format!("{p}{n}"),
            user: format!("{p}{n}"),
            target: target.to_string(),
            to_tag: None,
        };
        let mut a = mk("a", park_code);
        let t = Instant::now();
        let ok = self.invite(&a, rtp, "Referred-By: <sip:alice@127.0.0.1:5999>\r\n")?;
        let park = t.elapsed();
        a.to_tag = ok.common.to.tag().map(str::to_string);
        self.ua.ack(&a, true);
        let orbit = ok.common.header("Park-Orbit").ok_or("park 200 without Park-Orbit")?.to_string();
        let mut b = mk("b", &orbit);
        let t = Instant::now();
        let got = self.invite(&b, rtp, "")?;
        let retrieve = t.elapsed();
        b.to_tag = got.common.to.tag().map(str::to_string);
        self.ua.ack(&b, true);
        // B hangs up; parkd answers B and hangs up A, which answers.
        let bye_ok = self.exchange(&b, Method::Bye, |ua, c| ua.bye(c))?;
        if bye_ok.status != 200 {
            return Err(format!("retriever's BYE answered {}", bye_ok.status));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(req) = self.take_request(&a.call_id, Method::Bye) {
                self.ua.ok_to(&req);
                return Ok(CycleTimes { park, retrieve });
            }
            if Instant::now() > deadline {
                return Err("parkd never hung up the parked leg".into());
            }
            self.pump();
        }
    }

    /// Sends an INVITE for `c` and waits for its final response; Err unless it is a 200.
    fn invite(&mut self, c: &CallIds, rtp: u16, extra: &str) -> Result<Response, String> {
        let r = self.exchange(c, Method::Invite, |ua, c| ua.invite(c, rtp, extra))?;
        if r.status != 200 {
            self.ua.ack(c, false);
            return Err(format!("INVITE {} answered {} {}", c.target, r.status, r.reason));
        }
        Ok(r)
    }

    /// Sends with `send` (again every 500 ms, at most 7 times) until a final response to `method` of `c`.
    fn exchange(&mut self, c: &CallIds, method: Method, send: impl Fn(&Ua, &CallIds)) -> Result<Response, String> {
        for _ in 0..7 {
            send(&self.ua, c);
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                if let Some(r) = self.take_final(&c.call_id, &method) {
                    return Ok(r);
                }
                self.pump();
            }
        }
        Err(format!("no final response to {} {} (Call-ID {})", method.as_str(), c.target, c.call_id))
    }

    fn pump(&mut self) {
        match self.ua.try_recv() {
            Some(m) => self.inbox.push(m),
            None => std::thread::sleep(Duration::from_millis(1)),
        }
        let mut buf = [0u8; 2048];
        while self.sink.set_nonblocking(true).is_ok() && self.sink.recv(&mut buf).is_ok() {}
    }

    fn take_final(&mut self, call_id: &str, method: &Method) -> Option<Response> {
        let i = self.inbox.iter().position(|m| matches!(m, Message::Response(r) if r.common.call_id == call_id && r.common.cseq.method == *method && r.status >= 200))?;
        match self.inbox.remove(i) {
            Message::Response(r) => Some(r),
            Message::Request(_) => None,
        }
    }

    fn take_request(&mut self, call_id: &str, method: Method) -> Option<Request> {
        let i = self.inbox.iter().position(|m| matches!(m, Message::Request(r) if r.common.call_id == call_id && r.method == method))?;
        match self.inbox.remove(i) {
            Message::Request(r) => Some(r),
            Message::Response(_) => None,
        }
    }
}

/// p-th percentile (0–100) of `samples` (sorted in place); zero when empty.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let i = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[i.min(samples.len() - 1)]
}
