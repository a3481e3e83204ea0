//! The secure step's cycles (issue 19): park → retrieve → hang-up over UDP, TCP and TLS against one parkd, with
//! the connections opened once and reused by many calls (as phones and a PBX do), and the cost of a TLS handshake.
//!
//! Per cycle `i` (rate-paced): phone A (parker link `i % LINKS`) INVITEs the park code with `Referred-By` and a
//! PCMU offer on a shared sink; 60 ms after the 200 phone B (retriever link `i % LINKS`) INVITEs the orbit from
//! the 200's `Park-Orbit`; 40 ms after that 200, B hangs up; the cycle is done when B's BYE is answered and
//! parkd's BYE has reached A (over A's own connection) and been answered. Over UDP an unanswered INVITE or BYE is
//! sent again (0.5, 1, 2 s); a stream transport is reliable, so nothing is resent. Bounded: the given number of
//! cycles, each given up after [`CYCLE_LIMIT`].
//!
//! Handshakes: `n` new connections in a row, each sending one OPTIONS, reading its 200 and closing: over TLS
//! with a full handshake (resumption off), over TLS resuming a session, and over plain TCP (the floor).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parkd::sip::{Message, Method};

use crate::hist::Hist;
use crate::net::{self, RecvBatch};
use crate::secure_sip::{wait_readable, Link, Transport};
use crate::sys;

const RETRIEVE_AFTER: Duration = Duration::from_millis(60);
const HANGUP_AFTER: Duration = Duration::from_millis(40);
const CYCLE_LIMIT: Duration = Duration::from_secs(6);
/// Parker and retriever connections each (a cycle uses parker `i % LINKS` and retriever `i % LINKS`).
pub const LINKS: usize = 8;
const REFERRED: &str = "Referred-By: <sip:parker@127.0.0.1>\r\n";

/// Figures for one transport at one rate.
#[derive(Default)]
pub struct CycleFigures {
    pub transport: &'static str,
    pub rate: u32,
    pub cycles: usize,
    pub completed: usize,
    pub failed: usize,
    pub elapsed_s: f64,
    /// parkd's CPU (all threads) per completed cycle, µs.
    pub cpu_us_per_cycle: f64,
    pub cpu_pct: f64,
    /// INVITE → 200 of the park and the retrieve INVITEs.
    pub invite: Hist,
    pub retransmissions: u64,
    pub garbage: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Parking,
    Parked,
    Retrieving,
    Bridged,
    HangingUp,
    Done,
    Failed,
}

struct Cycle {
    stage: Stage,
    started: Instant,
    sent_at: Instant,
    next_at: Instant,
    retx: u32,
    a_tag: Option<String>,
    b_tag: Option<String>,
    orbit: String,
    b_bye_ok: bool,
    a_bye_seen: bool,
}

fn sdp(port: u16) -> String {
    format!("v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")
}

/// `p17@t500.sec` → (true, 17).
fn index_of(call_id: &str) -> Option<(bool, usize)> {
    let (head, _) = call_id.split_once('@')?;
    Some((head.starts_with('p'), head.get(1..)?.parse().ok()?))
}

struct Phones {
    parkers: Vec<Link>,
    retrievers: Vec<Link>,
    tag: String,
    a_port: u16,
    b_port: u16,
}

impl Phones {
    fn park(&mut self, i: usize) {
        let l = &mut self.parkers[i % LINKS];
        let text = l.request("INVITE", "700", &format!("p{i}"), &format!("pt{i}"), None, &format!("p{i}@{}", self.tag), 1, &format!("p{i}-{}-inv", self.tag), REFERRED, &sdp(self.a_port));
        l.send(&text);
    }
    fn retrieve(&mut self, i: usize, orbit: &str) {
        let l = &mut self.retrievers[i % LINKS];
        let text = l.request("INVITE", orbit, &format!("q{i}"), &format!("qt{i}"), None, &format!("q{i}@{}", self.tag), 1, &format!("q{i}-{}-inv", self.tag), "", &sdp(self.b_port));
        l.send(&text);
    }
    fn ack(&mut self, a: bool, i: usize, target: &str, to_tag: &str, ok: bool) {
        let (l, p) = if a { (&mut self.parkers[i % LINKS], "p") } else { (&mut self.retrievers[i % LINKS], "q") };
        // RFC 3261 §17.1.1.3: the ACK of a failure reuses the INVITE's branch; a 2xx's ACK has its own.
        let branch = if ok { format!("{p}{i}-{}-ack", self.tag) } else { format!("{p}{i}-{}-inv", self.tag) };
        let text = l.request("ACK", target, &format!("{p}{i}"), &format!("{p}t{i}"), Some(to_tag), &format!("{p}{i}@{}", self.tag), 1, &branch, "", "");
        l.send(&text);
    }
    fn bye(&mut self, i: usize, orbit: &str, to_tag: &str) {
        let l = &mut self.retrievers[i % LINKS];
        let text = l.request("BYE", orbit, &format!("q{i}"), &format!("qt{i}"), Some(to_tag), &format!("q{i}@{}", self.tag), 2, &format!("q{i}-{}-bye", self.tag), "", "");
        l.send(&text);
    }
}

/// Runs `total` cycles at `rate` per second over `transport` against parkd (`pid`) at `server`.
pub fn run(pid: u32, server: SocketAddr, transport: Transport, tls: Option<&Arc<rustls::ClientConfig>>, rate: u32, total: usize, progress: &mut dyn FnMut(String)) -> io::Result<CycleFigures> {
    let connect = || (0..LINKS).map(|_| Link::connect(transport, server, tls)).collect::<io::Result<Vec<Link>>>();
    let a_sink = net::loopback_socket(8 << 20)?;
    let b_sink = net::loopback_socket(8 << 20)?;
    let mut ph = Phones { parkers: connect()?, retrievers: connect()?, tag: format!("{}{rate}.sec", transport.name().to_lowercase()), a_port: a_sink.local_addr()?.port(), b_port: b_sink.local_addr()?.port() };
    let mut fds: Vec<_> = ph.parkers.iter().chain(ph.retrievers.iter()).map(|l| l.fd()).collect();
    fds.extend([std::os::fd::AsRawFd::as_raw_fd(&a_sink), std::os::fd::AsRawFd::as_raw_fd(&b_sink)]);
    let mut rb = RecvBatch::new();
    let mut res = CycleFigures { transport: transport.name(), rate, cycles: total, ..Default::default() };
    let mut cycles: Vec<Cycle> = Vec::with_capacity(total);
    let mut active: Vec<usize> = Vec::new();
    let mut msgs = Vec::new();
    let cpu0 = sys::process_cpu_ns(pid);
    let t0 = Instant::now();
    let mut last_progress = t0;
    let hard_stop = Duration::from_secs(total as u64 / rate.max(1) as u64 + 30);
    while (cycles.len() < total || !active.is_empty()) && t0.elapsed() < hard_stop {
        let now = Instant::now();
        let due = ((t0.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(total);
        while cycles.len() < due {
            let i = cycles.len();
            ph.park(i);
            cycles.push(Cycle { stage: Stage::Parking, started: now, sent_at: now, next_at: now, retx: 0, a_tag: None, b_tag: None, orbit: String::new(), b_bye_ok: false, a_bye_seen: false });
            active.push(i);
        }
        let mut work = 0;
        for side in 0..2 {
            for k in 0..LINKS {
                msgs.clear();
                let link = if side == 0 { &mut ph.parkers[k] } else { &mut ph.retrievers[k] };
                work += link.poll(&mut msgs);
                for m in msgs.drain(..) {
                    let now = Instant::now();
                    let Some((is_a, i)) = index_of(&m.common().call_id) else { continue };
                    let Some(c) = cycles.get_mut(i) else { continue };
                    match m {
                        Message::Response(r) if r.common.cseq.method == Method::Invite && r.status >= 200 => {
                            let tag = r.common.to.tag().unwrap_or("").to_string();
                            let ok = r.status < 300;
                            let target = if is_a { "700".to_string() } else { c.orbit.clone() };
                            ph.ack(is_a, i, &target, &tag, ok);
                            let expected = if is_a { Stage::Parking } else { Stage::Retrieving };
                            if c.stage != expected {
                                continue;
                            }
                            if !ok {
                                c.stage = Stage::Failed;
                                continue;
                            }
                            res.invite.add(now.duration_since(c.sent_at).as_micros() as u64);
                            c.retx = 0;
                            if is_a {
                                c.a_tag = Some(tag);
                                c.orbit = r.common.header("Park-Orbit").unwrap_or("").to_string();
                                c.stage = Stage::Parked;
                                c.next_at = now + RETRIEVE_AFTER;
                            } else {
                                c.b_tag = Some(tag);
                                c.stage = Stage::Bridged;
                                c.next_at = now + HANGUP_AFTER;
                            }
                        }
                        Message::Response(r) if r.common.cseq.method == Method::Bye && r.status >= 200 => c.b_bye_ok = true,
                        Message::Request(req) => {
                            let link = if side == 0 { &mut ph.parkers[k] } else { &mut ph.retrievers[k] };
                            link.ok_to(&req);
                            if req.method == Method::Bye && is_a {
                                c.a_bye_seen = true;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        // Hold music and relayed media reaching the phones: drained, not checked (the density step checks media).
        for s in [&a_sink, &b_sink] {
            loop {
                let got = rb.recv(s, |_, _| {});
                work += got;
                if got < net::BATCH {
                    break;
                }
            }
        }
        let now = Instant::now();
        let udp = transport == Transport::Udp;
        for &i in &active {
            let Some(c) = cycles.get_mut(i) else { continue };
            if now.duration_since(c.started) > CYCLE_LIMIT {
                c.stage = Stage::Failed;
                continue;
            }
            let resend = udp && now.duration_since(c.sent_at) > Duration::from_millis(500 << c.retx.min(3));
            match c.stage {
                Stage::Parking if resend => {
                    c.retx += 1;
                    res.retransmissions += 1;
                    ph.park(i);
                }
                Stage::Parked if now >= c.next_at => {
                    c.stage = Stage::Retrieving;
                    c.sent_at = now;
                    let orbit = c.orbit.clone();
                    ph.retrieve(i, &orbit);
                }
                Stage::Retrieving if resend => {
                    c.retx += 1;
                    res.retransmissions += 1;
                    let orbit = c.orbit.clone();
                    ph.retrieve(i, &orbit);
                }
                Stage::Bridged if now >= c.next_at => {
                    c.stage = Stage::HangingUp;
                    c.sent_at = now;
                    let (orbit, tag) = (c.orbit.clone(), c.b_tag.clone().unwrap_or_default());
                    ph.bye(i, &orbit, &tag);
                }
                Stage::HangingUp if !c.b_bye_ok && resend => {
                    c.retx += 1;
                    res.retransmissions += 1;
                    let (orbit, tag) = (c.orbit.clone(), c.b_tag.clone().unwrap_or_default());
                    ph.bye(i, &orbit, &tag);
                }
                Stage::HangingUp if c.b_bye_ok && c.a_bye_seen => c.stage = Stage::Done,
                _ => {}
            }
        }
        active.retain(|&i| cycles.get(i).is_some_and(|c| !matches!(c.stage, Stage::Done | Stage::Failed)));
        if work == 0 {
            wait_readable(&fds, 1);
        }
        if last_progress.elapsed() > Duration::from_millis(250) {
            last_progress = Instant::now();
            progress(format!("cycle {} {rate}/s: started {}/{total}, in flight {}", transport.name(), cycles.len(), active.len()));
        }
    }
    res.elapsed_s = t0.elapsed().as_secs_f64();
    let cpu_ns = sys::process_cpu_ns(pid).saturating_sub(cpu0);
    res.completed = cycles.iter().filter(|c| c.stage == Stage::Done).count();
    res.failed = total - res.completed;
    res.garbage = ph.parkers.iter().chain(ph.retrievers.iter()).map(|l| l.garbage).sum();
    res.cpu_us_per_cycle = cpu_ns as f64 / 1000.0 / res.completed.max(1) as f64;
    res.cpu_pct = cpu_ns as f64 / 1e9 / res.elapsed_s * 100.0;
    Ok(res)
}

/// What `n` new connections cost parkd.
#[derive(Default)]
pub struct HandshakeFigures {
    pub what: &'static str,
    pub n: usize,
    pub ok: usize,
    /// parkd's CPU per connection (accept, handshake, one OPTIONS and its 200, the close), µs.
    pub cpu_us: f64,
    /// Connect (+ handshake) → the OPTIONS' 200, at the client.
    pub latency: Hist,
    /// TLS connections that resumed a session (per rustls' handshake kind).
    pub resumed: usize,
}

/// `n` connections in a row, paced at `rate` per second: connect (TLS: handshake), OPTIONS, 200, close.
pub fn handshakes(pid: u32, server: SocketAddr, transport: Transport, tls: Option<&Arc<rustls::ClientConfig>>, what: &'static str, n: usize, rate: u32) -> io::Result<HandshakeFigures> {
    let mut res = HandshakeFigures { what, n, ..Default::default() };
    let mut msgs = Vec::new();
    let cpu0 = sys::process_cpu_ns(pid);
    let t0 = Instant::now();
    for i in 0..n {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let start = Instant::now();
        let Ok(mut l) = Link::connect(transport, server, tls) else { continue };
        let id: String = what.chars().filter(char::is_ascii_alphanumeric).collect();
        let text = l.request("OPTIONS", "700", "hs", &format!("h{i}"), None, &format!("h{i}-{id}@hs.sec"), 1, &format!("h{i}-{id}"), "", "");
        l.send(&text);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut answered = false;
        while !answered && !l.closed && Instant::now() < deadline {
            msgs.clear();
            if l.poll(&mut msgs) == 0 {
                wait_readable(&[l.fd()], 2);
            }
            answered = msgs.iter().any(|m| matches!(m, Message::Response(r) if r.status == 200));
        }
        if answered {
            res.ok += 1;
            res.latency.add(start.elapsed().as_micros() as u64);
            if l.resumed() {
                res.resumed += 1;
            }
        }
    }
    // Let parkd see the last close before reading its CPU.
    std::thread::sleep(Duration::from_millis(50));
    res.cpu_us = sys::process_cpu_ns(pid).saturating_sub(cpu0) as f64 / 1000.0 / res.ok.max(1) as f64;
    Ok(res)
}
