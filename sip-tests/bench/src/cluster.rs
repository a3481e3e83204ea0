//! The cluster step (issue 18): one real `redis-server` and three parkd nodes (`--redis`, `--node`, a shared
//! `[cluster] secret`), park → retrieve → hang-up cycles spread over the nodes, half of the retrieves on the node
//! holding the call and half on another node (which fetches the call from the owner: the cross-node retrieve).
//! The floor, measured in the same run: the same cycles against one parkd without `--redis`, and a raw Redis
//! `PING` round trip from this program.
//!
//! Per cycle `i` (rate-paced): a phone parks on node `i % n` (INVITE to the park code with `Referred-By`; the
//! 200 waits for the Redis claim); 60 ms after the 200 another phone dials the orbit on the retrieve node; 40 ms
//! after that 200 the retriever hangs up; the cycle is done when its BYE is answered and the owner node has sent
//! the parked party its BYE. A park answered 486 or 503 (an allocation conflict or Redis not answering) is sent
//! again as a new call (at most [`PARK_TRIES`] times) and counted as retried. Bounded: the given number of cycles,
//! each given up after [`CYCLE_LIMIT`].

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parkd::sip::{Message, Method};
use sip_tests::sip::ua::{self, CallIds, Ua};

use crate::hist::Hist;
use crate::net::{self, RecvBatch};
use crate::sys;

const RETRIEVE_AFTER: Duration = Duration::from_millis(60);
const HANGUP_AFTER: Duration = Duration::from_millis(40);
const CYCLE_LIMIT: Duration = Duration::from_secs(8);
/// A park refused 486/503 is tried this many times in all.
pub const PARK_TRIES: u32 = 4;
const RETRY_AFTER: Duration = Duration::from_millis(20);
const REFERRED: &str = "Referred-By: <sip:parker@127.0.0.1>\r\n";

/// A `redis-server` this program started (no persistence), pinned and niced like the load; killed on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// Starts `redis-server` on 127.0.0.1:`port`, on `cpu`, and waits until it answers PING.
    pub fn start(port: u16, cpu: usize, log: &Path) -> io::Result<Redis> {
        let logf = std::fs::File::create(log)?;
        let child = Command::new("setsid")
            .args(["nice", "-n", &sys::NICE.to_string(), "taskset", "-c", &cpu.to_string(), "redis-server", "--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(log.parent().unwrap_or(Path::new(".")))
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()?;
        let mut r = Redis { child, port };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = r.child.try_wait() {
                return Err(io::Error::other(format!("redis-server exited: {status}; log: {}", std::fs::read_to_string(log).unwrap_or_default())));
            }
            if r.ping_once().is_ok() {
                return Ok(r);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = r.child.kill();
        Err(io::Error::other("redis-server did not answer PING within 10 s"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ping_once(&self) -> io::Result<()> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_millis(300)))?;
        s.write_all(b"PING\r\n")?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf)?;
        if buf.get(..n).is_some_and(|b| b.starts_with(b"+PONG")) {
            Ok(())
        } else {
            Err(io::Error::other("no PONG"))
        }
    }

    /// `n` PINGs one after the other on one connection: the round trip of a Redis command over loopback.
    pub fn ping_floor(&self, n: usize) -> io::Result<Hist> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut h = Hist::default();
        let mut buf = [0u8; 16];
        for _ in 0..n {
            let t = Instant::now();
            s.write_all(b"PING\r\n")?;
            let mut got = 0;
            while !buf.get(..got).is_some_and(|b| b.ends_with(b"\r\n")) {
                let k = s.read(buf.get_mut(got..).unwrap_or_default())?;
                if k == 0 {
                    return Err(io::Error::other("redis closed the connection"));
                }
                got += k;
            }
            h.add(t.elapsed().as_micros() as u64);
        }
        Ok(h)
    }

    /// Calls per command (`INFO commandstats`, commands run inside scripts included) and
    /// `total_commands_processed` (`INFO stats`), by `redis-cli`.
    pub fn command_counts(&self) -> io::Result<BTreeMap<String, u64>> {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string(), "INFO", "all"]).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut m = BTreeMap::new();
        for line in text.lines() {
            if let Some((cmd, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) {
                if let Some(calls) = rest.split(',').find_map(|kv| kv.strip_prefix("calls=")).and_then(|v| v.parse().ok()) {
                    m.insert(cmd.to_string(), calls);
                }
            } else if let Some(v) = line.strip_prefix("total_commands_processed:").and_then(|v| v.trim().parse().ok()) {
                m.insert("total_commands_processed".to_string(), v);
            }
        }
        if m.is_empty() {
            return Err(io::Error::other(format!("redis-cli INFO gave nothing: {}", String::from_utf8_lossy(&out.stderr))));
        }
        Ok(m)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `after - before` per key (the `info` / `command` calls of redis-cli itself left out).
pub fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "info" | "command" | "command|docs"))
        .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Figures of one load (one rate, one set of nodes).
#[derive(Default)]
pub struct Load {
    pub nodes: usize,
    pub rate: u32,
    pub cycles: usize,
    pub completed: usize,
    pub failed: usize,
    /// First INVITE sent → last cycle completed (cycles given up later do not stretch it).
    pub elapsed_s: f64,
    /// Park attempts sent (first tries and retries).
    pub park_attempts: u64,
    /// Parks answered 486/503 and sent again.
    pub retried: u64,
    /// Final refusals of INVITEs by status (parks and retrieves).
    pub refusals: BTreeMap<u16, u64>,
    /// Park INVITE → 200 (the attempt that got it).
    pub park: Hist,
    /// Retrieve INVITE → 200 on the node holding the call.
    pub same: Hist,
    /// Retrieve INVITE → 200 on another node (it fetches the call from the owner).
    pub cross: Hist,
    /// CPU of all parkd processes per completed cycle.
    pub cpu_us_per_cycle: f64,
    pub our_retransmissions: u64,
}

impl Load {
    pub fn cycles_per_s(&self) -> f64 {
        self.completed as f64 / self.elapsed_s.max(1e-9)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Parking,
    Backoff,
    Parked,
    Retrieving,
    Bridged,
    HangingUp,
    Done,
    Failed,
}

struct Cycle {
    /// Park node, retrieve node.
    p: usize,
    r: usize,
    tries: u32,
    a: CallIds,
    b: CallIds,
    stage: Stage,
    started: Instant,
    sent_at: Instant,
    retx: u32,
    next_at: Instant,
    b_bye_ok: bool,
    a_bye_seen: bool,
}

/// (is the park leg, cycle index, park try) from a Call-ID `p<i>.<try>@…` / `q<i>.0@…`.
fn parse_id(call_id: &str) -> Option<(bool, usize, u32)> {
    let (head, _) = call_id.split_once('@')?;
    let (i, t) = head.get(1..)?.split_once('.')?;
    Some((head.starts_with('p'), i.parse().ok()?, t.parse().ok()?))
}

/// The node cycle `i` retrieves on: the park node for even rounds, another node (in turn) for odd ones.
fn retrieve_node(i: usize, n: usize) -> usize {
    let p = i % n;
    let round = i / n;
    if n == 1 || round.is_multiple_of(2) {
        p
    } else {
        (p + 1 + (round / 2) % (n - 1)) % n
    }
}

/// Runs `total` cycles at `rate` per second over `nodes` (parks on node `i % n`).
pub fn run(nodes: &[&sys::Parkd], rate: u32, total: usize, tag: &str, progress: &mut dyn FnMut(String)) -> io::Result<Load> {
    let n = nodes.len();
    let mut uas: Vec<Ua> = nodes.iter().map(|p| Ua::new(p.sip)).collect::<io::Result<_>>()?;
    let sink = net::loopback_socket(8 << 20)?;
    let rtp = sink.local_addr()?.port();
    let mut rb = RecvBatch::new();
    let mut res = Load { nodes: n, rate, cycles: total, ..Default::default() };
    let pids: Vec<u32> = nodes.iter().map(|p| p.pid()).collect();
    let cpu0: u64 = pids.iter().map(|&p| sys::process_cpu_ns(p)).sum();
    let mut cycles: Vec<Cycle> = Vec::with_capacity(total);
    let mut active: Vec<usize> = Vec::new();
    let t0 = Instant::now();
    let mut last_progress = t0;
    let mut last_done = t0;
    let ids = |lead: &str, i: usize, t: u32, target: &str| CallIds {
        call_id: format!("{lead}{i}.{t}@{tag}.bench"),
        from_tag: format!("{lead}t{i}.{t}"),
        user: format!("{lead}{i}"),
        target: target.into(),
        to_tag: None,
    };
    while cycles.len() < total || !active.is_empty() {
        let now = Instant::now();
        let due = ((t0.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(total);
        while cycles.len() < due {
            let i = cycles.len();
            let c = Cycle {
                p: i % n,
                r: retrieve_node(i, n),
                tries: 1,
                a: ids("p", i, 1, "700"),
                b: ids("q", i, 0, ""),
                stage: Stage::Parking,
                started: now,
                sent_at: now,
                retx: 0,
                next_at: now,
                b_bye_ok: false,
                a_bye_seen: false,
            };
            uas[c.p].invite(&c.a, rtp, REFERRED);
            res.park_attempts += 1;
            cycles.push(c);
            active.push(i);
        }
        let mut work = 0usize;
        for ua in uas.iter_mut() {
            while let Some(m) = ua.try_recv() {
                work += 1;
                let now = Instant::now();
                let Some((is_a, i, t)) = parse_id(&m.common().call_id) else { continue };
                let Some(c) = cycles.get_mut(i) else { continue };
                match m {
                    Message::Response(r) if ua::answers_invite(&r) && r.status >= 200 => {
                        let mut acked = if is_a { c.a.clone() } else { c.b.clone() };
                        acked.call_id = r.common.call_id.as_str().to_string();
                        acked.from_tag = r.common.from.tag().unwrap_or_default().to_string();
                        acked.to_tag = r.common.to.tag().map(str::to_string);
                        ua.ack(&acked, r.status < 300);
                        let expected = if is_a { Stage::Parking } else { Stage::Retrieving };
                        if c.stage != expected || (is_a && t != c.tries) {
                            continue; // a retransmitted final, or one of an earlier try
                        }
                        let took = now.duration_since(c.sent_at).as_micros() as u64;
                        if r.status >= 300 {
                            *res.refusals.entry(r.status).or_default() += 1;
                            if is_a && matches!(r.status, 486 | 503) && c.tries < PARK_TRIES {
                                res.retried += 1;
                                c.stage = Stage::Backoff;
                                c.next_at = now + RETRY_AFTER;
                            } else {
                                c.stage = Stage::Failed;
                            }
                            continue;
                        }
                        if is_a { c.a.to_tag = acked.to_tag } else { c.b.to_tag = acked.to_tag }
                        c.retx = 0;
                        if is_a {
                            res.park.add(took);
                            c.b.target = r.common.header("Park-Orbit").unwrap_or("").to_string();
                            c.stage = Stage::Parked;
                            c.next_at = now + RETRIEVE_AFTER;
                        } else {
                            if c.p == c.r { res.same.add(took) } else { res.cross.add(took) }
                            c.stage = Stage::Bridged;
                            c.next_at = now + HANGUP_AFTER;
                        }
                    }
                    Message::Response(r) if r.common.cseq.method == Method::Bye && r.status >= 200 && !is_a => c.b_bye_ok = true,
                    Message::Request(req) => {
                        ua.ok_to(&req);
                        if req.method == Method::Bye && is_a {
                            c.a_bye_seen = true;
                        }
                    }
                    _ => {}
                }
            }
        }
        // Hold music and relayed media: drained, not measured.
        loop {
            let got = rb.recv(&sink, |_, _| {});
            work += got;
            if got < net::BATCH {
                break;
            }
        }
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
                    uas[c.p].invite(&c.a, rtp, REFERRED);
                }
                Stage::Backoff if now >= c.next_at => {
                    c.tries += 1;
                    c.a = ids("p", i, c.tries, "700");
                    c.stage = Stage::Parking;
                    c.sent_at = now;
                    c.retx = 0;
                    res.park_attempts += 1;
                    uas[c.p].invite(&c.a, rtp, REFERRED);
                }
                Stage::Parked if now >= c.next_at => {
                    c.stage = Stage::Retrieving;
                    c.sent_at = now;
                    uas[c.r].invite(&c.b, rtp, "");
                }
                Stage::Retrieving if resend => {
                    c.retx += 1;
                    res.our_retransmissions += 1;
                    uas[c.r].invite(&c.b, rtp, "");
                }
                Stage::Bridged if now >= c.next_at => {
                    c.stage = Stage::HangingUp;
                    c.sent_at = now;
                    uas[c.r].bye(&c.b);
                }
                Stage::HangingUp if !c.b_bye_ok && resend => {
                    c.retx += 1;
                    res.our_retransmissions += 1;
                    uas[c.r].bye(&c.b);
                }
                Stage::HangingUp if c.b_bye_ok && c.a_bye_seen => {
                    c.stage = Stage::Done;
                    last_done = now;
                }
                _ => {}
            }
        }
        active.retain(|&i| cycles.get(i).is_some_and(|c| !matches!(c.stage, Stage::Done | Stage::Failed)));
        if work == 0 {
            let mut socks: Vec<&UdpSocket> = uas.iter().map(|u| &u.sock).collect();
            socks.push(&sink);
            net::wait_readable(&socks, 1);
        }
        if last_progress.elapsed() > Duration::from_millis(250) {
            last_progress = Instant::now();
            progress(format!("{tag} {rate}/s on {n} node(s): started {}/{total}, in flight {}", cycles.len(), active.len()));
        }
    }
    res.elapsed_s = last_done.duration_since(t0).as_secs_f64();
    let cpu_ns = pids.iter().map(|&p| sys::process_cpu_ns(p)).sum::<u64>().saturating_sub(cpu0);
    res.completed = cycles.iter().filter(|c| c.stage == Stage::Done).count();
    res.failed = total - res.completed;
    res.cpu_us_per_cycle = cpu_ns as f64 / 1000.0 / res.completed.max(1) as f64;
    Ok(res)
}

/// Parks one call on `sip` (answered 503 while the node has no Redis yet) until a park is granted; then hangs
/// it up. Up to 15 s.
pub fn wait_parks_granted(sip: SocketAddr) -> io::Result<()> {
    let mut ua = Ua::new(sip)?;
    let sink = net::loopback_socket(1 << 20)?;
    let rtp = sink.local_addr()?.port();
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(15) {
        n += 1;
        let mut c = CallIds { call_id: format!("w{n}@warmup.bench"), from_tag: format!("w{n}"), user: "warmup".into(), target: "700".into(), to_tag: None };
        ua.invite(&c, rtp, REFERRED);
        let sent = Instant::now();
        while sent.elapsed() < Duration::from_secs(2) {
            match ua.try_recv() {
                Some(Message::Response(r)) if ua::answers_invite(&r) && r.status >= 200 => {
                    c.to_tag = r.common.to.tag().map(str::to_string);
                    ua.ack(&c, r.status < 300);
                    if r.status < 300 {
                        ua.bye(&c);
                        std::thread::sleep(Duration::from_millis(50));
                        return Ok(());
                    }
                    break;
                }
                Some(_) => {}
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(io::Error::other(format!("parkd on {sip} never granted a park (Redis not reached?)")))
}
