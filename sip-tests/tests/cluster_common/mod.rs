//! What the cluster's e2e tests share (`cluster_park.rs`, `cluster_retrieve.rs`): nodes on one `redis-server`
//! (own SIP/RTP/HTTP ports and state dirs, waited for until Redis answers), a phone talking to one node, a BLF
//! watcher, the HTTP API's view of an orbit, the node-to-node signature, SIGSTOP of a node.
#![allow(dead_code)]

use parkd::sip::{Message, Method, Response};
use sip_tests::harness::redis::RedisServer;
use sip_tests::sip::ua::{CallIds, Ua};
use sip_tests::{Parkd, ParkdOptions};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub const TOKEN: &str = "cluster-test-token-0123456789";

pub fn skip() -> bool {
    if RedisServer::available() {
        return false;
    }
    eprintln!("SKIPPED: redis-server is not installed (scripts/test.sh installs it: apt-get install redis-server)");
    true
}

/// A parkd node of the cluster on `redis`, waited for until it reports Redis answering.
pub fn node(test: &str, redis: &RedisServer, name: &str) -> Parkd {
    node_with(test, redis, name, "")
}

/// [`node`] with more TOML (e.g. a `[cluster]` section).
pub fn node_with(test: &str, redis: &RedisServer, name: &str, more_config: &str) -> Parkd {
    node_leased(test, redis, name, more_config, 3)
}

/// [`node_with`] with a lease of `lease` seconds.
pub fn node_leased(test: &str, redis: &RedisServer, name: &str, more_config: &str, lease: u32) -> Parkd {
    let lease = lease.to_string();
    let args = ["--redis", &redis.url(), "--node", name, "--lease", &lease, "--http-token", TOKEN].map(String::from).to_vec();
    // Every phone here is 127.0.0.1: allow it more than the default 10 parked calls per source.
    let config = Some(format!("[limits]\nparked_per_source = 100\n{more_config}"));
    let p = Parkd::start_with(&format!("{test}_{name}"), ParkdOptions { orbits: "701-720".into(), extra_args: args, config, http: true, ..ParkdOptions::default() });
    let t0 = Instant::now();
    while !p.stderr_all().contains("parks are granted") {
        assert!(t0.elapsed() < Duration::from_secs(10), "node {name} never reached Redis:\n{}", p.stderr_tail(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

/// A phone talking to one node.
pub struct Phone {
    pub ua: Ua,
    pub n: u32,
    /// Final responses to INVITEs (by Call-ID) and what else came (parkd's BYEs are answered).
    pub finals: BTreeMap<String, Response>,
    /// The RTP port the next INVITE offers (else 40000 + n).
    pub rtp: Option<u16>,
    /// BYEs parkd sent (answered), by Call-ID.
    pub byes: Vec<String>,
}

impl Phone {
    pub fn new(parkd: &Parkd) -> Phone {
        Phone { ua: Ua::new(parkd.sip_addr()).expect("UA socket"), n: 0, finals: BTreeMap::new(), rtp: None, byes: Vec::new() }
    }

    /// A phone whose next INVITE offers RTP port `rtp` (an [`sip_tests::media::rtp_endpoint::RtpEndpoint`]'s).
    pub fn with_rtp(parkd: &Parkd, rtp: u16) -> Phone {
        Phone { rtp: Some(rtp), ..Phone::new(parkd) }
    }

    /// Sends an INVITE to `target` (with Referred-By when `referred`); returns its ids.
    pub fn invite(&mut self, target: &str, referred: bool) -> CallIds {
        let extra = if referred { "Referred-By: <sip:alice@127.0.0.1>\r\n" } else { "" };
        self.invite_with(target, |_| extra.to_string())
    }

    /// Sends an INVITE to `target` with the header lines `extra` makes from its ids; returns them.
    pub fn invite_with(&mut self, target: &str, extra: impl FnOnce(&CallIds) -> String) -> CallIds {
        self.n += 1;
        let c = CallIds {
            call_id: format!("cl-{}-{}-{}", self.ua.local.port(), self.n, target),
            from_tag: format!("t{}", self.n),
            user: format!("u{}", self.n),
            target: target.into(),
            to_tag: None,
        };
        let extra = extra(&c);
        self.ua.invite(&c, self.rtp.take().unwrap_or(40_000 + self.n as u16), &extra);
        c
    }

    /// Takes what arrived; ACKs finals, answers BYEs.
    pub fn pump(&mut self) {
        while let Some(m) = self.ua.try_recv() {
            match m {
                Message::Response(r) if r.common.cseq.method == Method::Invite && r.status >= 200 => {
                    let id = r.common.call_id.as_str().to_string();
                    self.finals.entry(id).or_insert(r);
                }
                Message::Request(req) if req.method == Method::Bye => {
                    self.byes.push(req.common.call_id.as_str().to_string());
                    self.ua.ok_to(&req)
                }
                _ => {}
            }
        }
    }

    /// The final response to `c` (waits up to 5 s), ACKed; `c` gets parkd's tag.
    pub fn final_of(&mut self, c: &mut CallIds) -> Response {
        let t0 = Instant::now();
        loop {
            self.pump();
            if let Some(r) = self.finals.get(&c.call_id).cloned() {
                c.to_tag = r.common.to.tag().map(str::to_string);
                self.ua.ack(c, r.status < 300);
                return r;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "no final response to {} ({})", c.call_id, c.target);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Parks on `target` and waits for the final response.
    pub fn park(&mut self, target: &str, referred: bool) -> (CallIds, Response) {
        let mut c = self.invite(target, referred);
        let r = self.final_of(&mut c);
        (c, r)
    }
}

pub fn orbit(r: &Response) -> String {
    r.common.header("Park-Orbit").unwrap_or("").to_string()
}

/// The status of node `p`'s `/readyz`.
pub fn readyz(p: &Parkd) -> u16 {
    let url = format!("http://{}/readyz", p.http_addr.expect("http"));
    match ureq::get(&url).timeout(Duration::from_secs(5)).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// Orbit `n` of the default lot as node `p`'s HTTP API shows it.
pub fn api_orbit(p: &Parkd, n: &str) -> serde_json::Value {
    let url = format!("http://{}/v1/lots/default/orbits", p.http_addr.expect("http"));
    let r = ureq::get(&url).set("Authorization", &format!("Bearer {TOKEN}")).timeout(Duration::from_secs(5)).call().expect("GET orbits");
    let orbits: serde_json::Value = r.into_json().expect("JSON");
    orbits.as_array().and_then(|a| a.iter().find(|o| o["orbit"] == n).cloned()).unwrap_or_else(|| panic!("no orbit {n} in {orbits}"))
}

pub const SECRET: &str = "cluster-secret-0123456789";

/// The node-to-node header node `node` signs now for the INVITE `c` to `orbit`.
pub fn signed(secret: &str, node: &str, c: &CallIds, orbit: &str) -> String {
    use parkd::cluster::auth::{ClusterAuth, HEADER};
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    let now = parkd::time::Time::from_micros(unix.as_micros() as u64);
    let name = parkd::cluster::NodeName::new(node).expect("node name");
    let h = ClusterAuth::new(secret.as_bytes(), Duration::from_secs(30)).sign(&name, now, unix.subsec_nanos() as u64, &c.call_id, orbit);
    format!("{HEADER}: {h}\r\n")
}

/// A BLF watcher: a UA that has sent node `p` a SUBSCRIBE to `orbit` (dialog event package).
pub fn subscribe(p: &Parkd, orbit: &str) -> Ua {
    let ua = Ua::new(p.sip_addr()).expect("UA socket");
    let (l, s) = (ua.local, ua.server);
    let text = format!(
        "SUBSCRIBE sip:{orbit}@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-sub-{orbit};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:watcher@{l}>;tag=w{orbit}\r\nTo: <sip:{orbit}@{s}>\r\nCall-ID: sub-{orbit}-{port}\r\nCSeq: 1 SUBSCRIBE\r\n\
         Contact: <sip:watcher@{l}>\r\nEvent: dialog\r\nAccept: application/dialog-info+xml\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
        port = l.port()
    );
    ua.sock.send_to(text.as_bytes(), s).expect("send SUBSCRIBE");
    ua
}

/// The next dialog-info body the watcher gets that satisfies `pred` (every NOTIFY is answered 200).
pub fn notify_body(ua: &mut Ua, pred: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        while let Some(m) = ua.try_recv() {
            if let Message::Request(req) = m {
                if req.method == Method::Notify {
                    ua.ok_to(&req);
                    let body = String::from_utf8_lossy(&req.common.body).into_owned();
                    if pred(&body) {
                        return body;
                    }
                }
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no NOTIFY as expected");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The last dialog-info body the watcher gets within `quiet` (every NOTIFY answered), if any.
pub fn last_notify(ua: &mut Ua, quiet: Duration) -> Option<String> {
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < quiet {
        while let Some(m) = ua.try_recv() {
            if let Message::Request(req) = m {
                if req.method == Method::Notify {
                    ua.ok_to(&req);
                    last = Some(String::from_utf8_lossy(&req.common.body).into_owned());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    last
}

/// Attribute `name` of the dialog-info body's `<dialog>` element.
pub fn attr<'a>(body: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let start = body.find(&key).map(|i| i + key.len()).unwrap_or_else(|| panic!("no {name} in {body}"));
    body[start..].split('"').next().unwrap_or("")
}

/// Waits until node `p`'s API shows `orbit` in `state` (and, when given, held by `node`).
pub fn wait_api(p: &Parkd, orbit: &str, state: &str, node: Option<&str>) {
    let t0 = Instant::now();
    loop {
        let o = api_orbit(p, orbit);
        if o["state"] == state && node.is_none_or(|n| o["node"] == n) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{orbit} never {state} ({node:?}): {o}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Hold music packets `ep` has received so far.
pub fn hold_packets(ep: &sip_tests::media::rtp_endpoint::RtpEndpoint) -> usize {
    ep.packets().iter().filter(|p| p.class == sip_tests::media::rtp_endpoint::PayloadClass::Other).count()
}

/// A CANCEL of `c`'s INVITE (as [`Ua::invite`] sent it: same branch, CSeq 1).
pub fn cancel(ua: &Ua, c: &CallIds) {
    let (l, s) = (ua.local, ua.server);
    let branch: String = c.call_id.chars().map(|ch| if ch.is_ascii_alphanumeric() || ch == '-' { ch } else { '-' }).collect();
    let text = format!(
        "CANCEL sip:{t}@{s} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK-{branch}-inv;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:{u}@{l}>;tag={ft}\r\nTo: <sip:{t}@{s}>\r\nCall-ID: {cid}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
        t = c.target,
        u = c.user,
        ft = c.from_tag,
        cid = c.call_id
    );
    ua.sock.send_to(text.as_bytes(), s).expect("send CANCEL");
}

/// Stops a process (SIGSTOP) and continues it (SIGCONT) when dropped.
pub struct Stopped(pub i32);

impl Stopped {
    pub fn stop(pid: u32) -> Stopped {
        // SAFETY: kill(2) on the PID of a parkd this test started.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        Stopped(pid as i32)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Polls `pred` every 5 ms until it holds (panics with `what` after `limit`); returns how long it took.
pub fn until(limit: Duration, what: &str, mut pred: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !pred() {
        assert!(t0.elapsed() < limit, "{what} (waited {limit:?})");
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}
