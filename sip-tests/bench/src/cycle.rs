//! Cycles: park (INVITE 700) → retrieve (INVITE to the orbit) → bridged RTP → hang up, at a
//! fixed rate for a bounded number of cycles, plus the unpark switch time.
//!
//! Per cycle, phone A parks itself and receives hold music on a shared sink socket; 60 ms
//! later phone B dials A's orbit. After B's ACK, B sends marked RTP every 2 ms until the first
//! marked packet reaches A (the switch time); hold packets reaching A after that are counted.
//! 40 ms later B hangs up; parkd BYEs A, which answers 200.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use parkd::sip::{Message, Method};
use sip_tests::sip::ua::{self, CallIds, Ua};

use crate::hist::Hist;
use crate::net::{self, RecvBatch};
use crate::sys;

const MAGIC: &[u8; 4] = b"BNCH";
const RETRIEVE_AFTER: Duration = Duration::from_millis(60);
const HANGUP_AFTER: Duration = Duration::from_millis(40);
const CYCLE_LIMIT: Duration = Duration::from_secs(6);

/// Figures for one cycle rate.
#[derive(Default)]
pub struct CycleResult {
    pub rate: u32,
    pub cycles: usize,
    pub completed: usize,
    pub failed: usize,
    pub elapsed_s: f64,
    pub cpu_us_per_cycle: f64,
    /// Of which the media thread (hold music during the short hold, relayed RTP, media commands).
    pub media_cpu_us_per_cycle: f64,
    pub cpu_pct: f64,
    /// INVITE → 200, both the park and the retrieve INVITE.
    pub invite: Hist,
    /// Retrieve ACK → first bridged packet at the parked party.
    pub switch: Hist,
    pub hold_after_bridge: u64,
    pub cycles_with_hold_after: usize,
    /// Requests we retransmitted (no answer within 500 ms).
    pub our_retransmissions: u64,
    /// Responses / requests parkd sent again (a 2xx or BYE seen twice).
    pub their_retransmissions: u64,
    /// A bare UDP responder's CPU for a cycle's 6 datagrams in and 4 out at this rate (see `sip_floor`).
    pub sip_floor_us: f64,
    /// The same responder on a tokio current-thread runtime (epoll and a timer, as parkd's SIP loop).
    pub tokio_floor_us: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
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
    a: CallIds,
    b: CallIds,
    stage: Stage,
    started: Instant,
    sent_at: Instant,
    retx: u32,
    a_port: u16,
    b_port: u16,
    next_at: Instant,
    ack_at: Option<Instant>,
    first_bridged: Option<Instant>,
    hold_after: u64,
    rtp_seq: u16,
    b_bye_ok: bool,
    a_bye_seen: bool,
}

fn index_of(call_id: &str) -> Option<(bool, usize)> {
    let (head, _) = call_id.split_once('@')?;
    let is_a = head.starts_with('p');
    Some((is_a, head.get(1..)?.parse().ok()?))
}

/// Runs `total` cycles started at `rate` per second against the parkd at `parkd`.
pub fn run(parkd: &sys::Parkd, rate: u32, total: usize, progress: &mut dyn FnMut(String)) -> io::Result<CycleResult> {
    let mut ua = Ua::new(parkd.sip)?;
    let a_sink = net::loopback_socket(8 << 20)?;
    let a_port = a_sink.local_addr()?.port();
    let b_rtp = net::loopback_socket(8 << 20)?;
    let b_port = b_rtp.local_addr()?.port();
    let mut rb = RecvBatch::new();
    let mut res = CycleResult { rate, cycles: total, ..Default::default() };
    let mut cycles: Vec<Cycle> = Vec::with_capacity(total);
    let mut active: Vec<usize> = Vec::new();
    let mut by_a_port: HashMap<u16, usize> = HashMap::new();
    let referred = "Referred-By: <sip:parker@127.0.0.1>\r\n";
    let pid = parkd.pid();
    let cpu0 = sys::process_cpu_ns(pid);
    let media0 = sys::media_thread_cpu_ns(pid);
    let t0 = Instant::now();
    let mut last_progress = t0;
    let tag = format!("r{rate}");
    while cycles.len() < total || !active.is_empty() {
        let now = Instant::now();
        let due = ((t0.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(total);
        while cycles.len() < due {
            let i = cycles.len();
            let mk = |p: &str, target: &str| CallIds {
                call_id: format!("{p}{i}@{tag}.bench"),
                from_tag: format!("{p}t{i}"),
                user: format!("{p}{i}"),
                target: target.into(),
                to_tag: None,
            };
            let c = Cycle {
                a: mk("p", "700"),
                b: mk("q", ""),
                stage: Stage::Parking,
                started: now,
                sent_at: now,
                retx: 0,
                a_port: 0,
                b_port: 0,
                next_at: now,
                ack_at: None,
                first_bridged: None,
                hold_after: 0,
                rtp_seq: 0,
                b_bye_ok: false,
                a_bye_seen: false,
            };
            ua.invite(&c.a, a_port, referred);
            cycles.push(c);
            active.push(i);
        }
        let mut work = 0usize;
        while let Some(m) = ua.try_recv() {
            work += 1;
            let now = Instant::now();
            let Some((is_a, i)) = index_of(&m.common().call_id) else { continue };
            let Some(c) = cycles.get_mut(i) else { continue };
            match m {
                Message::Response(r) if ua::answers_invite(&r) && r.status >= 200 => {
                    let ids = if is_a { &mut c.a } else { &mut c.b };
                    ids.to_tag = r.common.to.tag().map(str::to_string);
                    ua.ack(ids, r.status < 300);
                    let expected = if is_a { Stage::Parking } else { Stage::Retrieving };
                    if c.stage != expected {
                        res.their_retransmissions += 1;
                        continue;
                    }
                    if r.status >= 300 {
                        c.stage = Stage::Failed;
                        continue;
                    }
                    res.invite.add(now.duration_since(c.sent_at).as_micros() as u64);
                    let port = ua::sdp_audio_port(&r).unwrap_or(0);
                    if is_a {
                        c.a_port = port;
                        by_a_port.insert(port, i);
                        c.b.target = r.common.header("Park-Orbit").unwrap_or("").to_string();
                        c.stage = Stage::Parked;
                        c.next_at = now + RETRIEVE_AFTER;
                    } else {
                        c.b_port = port;
                        c.stage = Stage::Bridged;
                        c.ack_at = Some(now);
                        c.next_at = now;
                    }
                    c.retx = 0;
                }
                Message::Response(r) if r.common.cseq.method == Method::Bye && r.status >= 200 => c.b_bye_ok = true,
                Message::Request(req) => {
                    ua.ok_to(&req);
                    if req.method == Method::Bye {
                        if c.a_bye_seen {
                            res.their_retransmissions += 1;
                        }
                        c.a_bye_seen = true;
                    }
                }
                _ => {}
            }
        }
        // RTP reaching the parked parties.
        loop {
            let got = rb.recv(&a_sink, |from, pkt| {
                let Some(&i) = by_a_port.get(&from.port()) else { return };
                let Some(c) = cycles.get_mut(i) else { return };
                if c.a_port != from.port() || matches!(c.stage, Stage::Done | Stage::Failed) {
                    return;
                }
                let bridged = pkt.get(12..16) == Some(&MAGIC[..]);
                match (bridged, c.first_bridged) {
                    (true, None) if c.ack_at.is_some() => {
                        let t = Instant::now();
                        c.first_bridged = Some(t);
                        c.next_at = t + HANGUP_AFTER;
                    }
                    (false, Some(_)) => c.hold_after += 1,
                    _ => {}
                }
            });
            work += got;
            if got < net::BATCH {
                break;
            }
        }
        // Timers of the active cycles.
        let now = Instant::now();
        for &i in &active {
            let Some(c) = cycles.get_mut(i) else { continue };
            if now.duration_since(c.started) > CYCLE_LIMIT && c.stage != Stage::Done {
                c.stage = Stage::Failed;
            }
            let resend = now.duration_since(c.sent_at) > Duration::from_millis(500 << c.retx.min(3));
            match c.stage {
                Stage::Parking if resend => {
                    c.retx += 1;
                    res.our_retransmissions += 1;
                    ua.invite(&c.a, a_port, referred);
                }
                Stage::Parked if now >= c.next_at => {
                    c.stage = Stage::Retrieving;
                    c.sent_at = now;
                    ua.invite(&c.b, b_port, "");
                }
                Stage::Retrieving if resend => {
                    c.retx += 1;
                    res.our_retransmissions += 1;
                    ua.invite(&c.b, b_port, "");
                }
                Stage::Bridged if now >= c.next_at => {
                    if c.first_bridged.is_some() {
                        c.stage = Stage::HangingUp;
                        c.sent_at = now;
                        ua.bye(&c.b);
                    } else {
                        let mut pkt = [0u8; 172];
                        pkt[0] = 0x80;
                        pkt[2..4].copy_from_slice(&c.rtp_seq.to_be_bytes());
                        pkt[4..8].copy_from_slice(&(c.rtp_seq as u32 * 160).to_be_bytes());
                        pkt[8..12].copy_from_slice(&(i as u32 + 1).to_be_bytes());
                        pkt[12..16].copy_from_slice(MAGIC);
                        c.rtp_seq = c.rtp_seq.wrapping_add(1);
                        let _ = b_rtp.send_to(&pkt, ("127.0.0.1", c.b_port));
                        c.next_at = now + Duration::from_millis(2);
                    }
                }
                Stage::HangingUp if !c.b_bye_ok && resend => {
                    c.retx += 1;
                    res.our_retransmissions += 1;
                    ua.bye(&c.b);
                }
                Stage::HangingUp if c.b_bye_ok && c.a_bye_seen => c.stage = Stage::Done,
                _ => {}
            }
        }
        active.retain(|&i| cycles.get(i).is_some_and(|c| !matches!(c.stage, Stage::Done | Stage::Failed)));
        if work == 0 {
            net::wait_readable(&[&ua.sock, &a_sink], 1);
        }
        if last_progress.elapsed() > Duration::from_millis(250) {
            last_progress = Instant::now();
            progress(format!("cycle {rate}/s: started {}/{total}, in flight {}", cycles.len(), active.len()));
        }
    }
    res.elapsed_s = t0.elapsed().as_secs_f64();
    let cpu_ns = sys::process_cpu_ns(pid) - cpu0;
    let media_ns = sys::media_thread_cpu_ns(pid).saturating_sub(media0);
    for c in &cycles {
        match c.stage {
            Stage::Done => {
                res.completed += 1;
                if let (Some(a), Some(b)) = (c.ack_at, c.first_bridged) {
                    res.switch.add(b.duration_since(a).as_micros() as u64);
                }
                res.hold_after_bridge += c.hold_after;
                if c.hold_after > 0 {
                    res.cycles_with_hold_after += 1;
                }
            }
            _ => res.failed += 1,
        }
    }
    res.cpu_us_per_cycle = cpu_ns as f64 / 1000.0 / res.completed.max(1) as f64;
    res.media_cpu_us_per_cycle = media_ns as f64 / 1000.0 / res.completed.max(1) as f64;
    res.cpu_pct = cpu_ns as f64 / 1e9 / res.elapsed_s * 100.0;
    Ok(res)
}

