//! A simulated network for tests: parkd's [`Core`] and [`MediaPlane`] with reactive phones over seeded,
//! lossy links, all in virtual time (quinn's `Pair`, str0m's netem).
//!
//! [`Net`] holds one core, one media plane and any number of [`Phone`]s. Every datagram — SIP both
//! ways, hold music, the phones' RTP, relayed audio — crosses a [`Link`] that delays, jitters (and so
//! reorders), loses and duplicates it, drawing from a random stream seeded from [`NetConfig::seed`].
//! [`Net::step`] jumps the clock to the earliest of four kinds of event — a datagram arriving, the core's
//! deadline, the media plane's next pacer slot, a phone's timer — and handles it; whatever that produces
//! (SIP to send, media commands, RTP) is carried at once. Nothing sleeps: a 45 s park with music and a
//! recall runs in milliseconds, and the same seed gives the same run, byte for byte
//! ([`Net::trace_hash`]).
//!
//! Phones act by themselves (answer, ACK, retransmit, answer BYE/OPTIONS/NOTIFY, talk in marked RTP
//! frames) and a test tells them what a person would do: call a number, hang up, re-INVITE, subscribe
//! ([`Net::call`], [`Net::park`], [`Net::hangup`], [`Net::reinvite`], [`Net::subscribe`]); [`Net::command`] is what
//! an application does through the HTTP API.
//! Each phone's [`RtpSink`](media_sink::RtpSink) records what it heard (music, whose voice, stream
//! continuity).
//!
//! Writing a test:
//! ```ignore
//! let mut net = Net::new(NetConfig::new(7).links(LinkConfig::lossy(0.10), LinkConfig::lossy(0.10)));
//! let alice = net.add_phone(PhoneConfig::new("alice", 5999));           // answers after 2 s
//! let bob = net.add_phone(PhoneConfig::new("bob", 5070));
//! let park = net.park(bob, "700", Some(alice));                         // INVITE 700 with Referred-By: alice
//! assert!(net.run_until(secs(5), |n| n.phone(bob).call(park).state == CallState::Confirmed));
//! net.run_for(secs(45));                                                // music, then the recall rings alice
//! assert!(net.run_until(secs(10), |n| n.phone(alice).calls.iter().any(|c| c.state == CallState::Confirmed)));
//! net.run_for(secs(2));
//! assert_eq!(net.phone(bob).sink.story(10), [Kind::Music, Kind::Voice(alice.talker())]);
//! net.hangup(alice, CallId(0));
//! net.run_for(secs(40));                                                // let every transaction end
//! assert_eq!(net.core.live(), Live::default());
//! ```
//! `run_until` gives up (returns false) after its virtual-time limit, so a broken flow fails instead
//! of hanging; `run_until_idle` stops when nothing at all is pending. Phones are reachable at their
//! SIP and RTP addresses only; a datagram to any other address is counted in
//! [`NetStats::unroutable`] (e.g. a recall to a parker with no phone).
//!
//! The scripted [`crate::core`] test world (`core/testkit.rs`) stays for exact message-level checks
//! (a dropped ACK, a response crafted by hand); this harness is for whole flows over a bad network.

pub mod journal;
pub mod link;
pub mod media_sink;
pub mod phone;
pub mod wire;

#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod restart_tests;
#[cfg(test)]
mod restart_tests_more;

pub use journal::SimJournal;
pub use link::{Link, LinkConfig};
pub use media_sink::{Kind, RtpSink, Sound};
pub use phone::{CallId, CallState, End, OnInvite, Phone, PhoneConfig, SubId};

use crate::config::{LotConfig, NumRange, ServerConfig};
use crate::core::{Core, Output, ParkEvent};
use crate::media::{HoldBatch, MediaCommand, MediaPlane};
use crate::sip::{Peer, Transport};
use crate::time::Time;
use crate::txn::TimerConfig;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::Duration;

/// `s` seconds.
pub const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// How a [`Net`] is built.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Seeds the core, the media plane and every link.
    pub seed: u64,
    /// parkd listens on `server.listen` (127.0.0.1:5060) with RTP ports `server.rtp_ports` (20000–20099).
    pub server: ServerConfig,
    pub lots: Vec<LotConfig>,
    pub timers: TimerConfig,
    /// Default SIP and RTP paths between each phone and parkd (both directions).
    pub sip: LinkConfig,
    pub rtp: LinkConfig,
    /// Virtual time at the start.
    pub start: Time,
    /// Journaling on, into the net's in-memory [`SimJournal`] (issue 17).
    pub journal: bool,
}

impl NetConfig {
    /// parkd at 127.0.0.1:5060 with one lot (park code 700, orbits 701–705, 45 s parking time), clean links.
    pub fn new(seed: u64) -> NetConfig {
        let mut lot = LotConfig::default_lot();
        lot.orbits = NumRange::parse("701-705").unwrap_or(lot.orbits);
        let server = ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            advertise: None,
            rtp_ports: NumRange::parse("20000-20099").unwrap_or(ServerConfig::default().rtp_ports),
            outbound_proxy: None,
            media_threads: 1,
            ..ServerConfig::default()
        };
        NetConfig { seed, server, lots: vec![lot], timers: TimerConfig::default(), sip: LinkConfig::clean(), rtp: LinkConfig::clean(), start: Time::from_secs(1_000_000), journal: false }
    }

    /// The same paths for SIP and RTP defaults.
    pub fn links(mut self, sip: LinkConfig, rtp: LinkConfig) -> NetConfig {
        self.sip = sip;
        self.rtp = rtp;
        self
    }

    /// With journaling on (parks acknowledged once durable; [`Net::crash_and_restart`] restores).
    pub fn journaled(mut self) -> NetConfig {
        self.journal = true;
        self
    }

    /// Changes the first lot.
    pub fn lot(mut self, f: impl FnOnce(&mut LotConfig)) -> NetConfig {
        if let Some(l) = self.lots.first_mut() {
            f(l);
        }
        self
    }
}

/// A phone of a [`Net`], by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PhoneId(pub usize);

impl PhoneId {
    /// The talker id in this phone's voice frames ([`Kind::Voice`]).
    pub fn talker(self) -> u8 {
        self.0 as u8
    }
}

/// Counters of the whole net.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub steps: u64,
    pub delivered: u64,
    /// Datagrams to an address nobody has (or from parkd to a phone-less address).
    pub unroutable: u64,
}

/// The four paths of one phone.
#[derive(Debug)]
struct Paths {
    sip_up: Link,
    sip_down: Link,
    rtp_up: Link,
    rtp_down: Link,
}

/// A datagram in flight.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Time,
    /// Send order: ties at the same arrival time keep it.
    n: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
enum Due {
    Datagram,
    Core,
    Media,
    Phone(usize),
    Journal,
}

/// parkd and phones on a simulated network (see the module doc).
pub struct Net {
    pub now: Time,
    pub core: Core,
    pub media: MediaPlane,
    phones: Vec<Phone>,
    paths: Vec<Paths>,
    sip_addr: SocketAddr,
    rtp_ports: (u16, u16),
    defaults: (LinkConfig, LinkConfig),
    seed: u64,
    queue: BinaryHeap<Reverse<InFlight>>,
    sent: u64,
    batch: HoldBatch,
    hash: std::collections::hash_map::DefaultHasher,
    /// Park events with the time they happened.
    pub events: Vec<(Time, ParkEvent)>,
    /// Media commands the core gave, with their time.
    pub media_log: Vec<(Time, MediaCommand)>,
    pub stats: NetStats,
    /// The journal the core writes to (used with [`NetConfig::journaled`]).
    pub journal: SimJournal,
    /// parkd is down (between a crash and its restart): what reaches its addresses is lost.
    pub down: bool,
    /// How parkd was built, to build it again after a crash.
    cfg: NetConfig,
    /// Restarts so far (each gets a fresh seed, as a new process would).
    pub restarts: u64,
    /// What each restart's restore reported.
    pub restores: Vec<crate::core::RestoreReport>,
}

impl Net {
    pub fn new(cfg: NetConfig) -> Net {
        let sip_addr = cfg.server.listen;
        let rtp_ports = (cfg.server.rtp_ports.lo as u16, cfg.server.rtp_ports.hi as u16);
        let mut core = Core::new(cfg.server.clone(), cfg.lots.clone(), cfg.timers, cfg.seed);
        core.set_journaling(cfg.journal);
        Net {
            now: cfg.start,
            core,
            media: MediaPlane::new(vec![media_sink::builtin_music()], cfg.seed ^ 0x006d_6564_6961),
            phones: Vec::new(),
            paths: Vec::new(),
            sip_addr,
            rtp_ports,
            defaults: (cfg.sip, cfg.rtp),
            seed: cfg.seed,
            queue: BinaryHeap::new(),
            sent: 0,
            batch: HoldBatch::with_capacity(64),
            hash: std::collections::hash_map::DefaultHasher::new(),
            events: Vec::new(),
            media_log: Vec::new(),
            stats: NetStats::default(),
            journal: SimJournal::default(),
            down: false,
            cfg,
            restarts: 0,
            restores: Vec::new(),
        }
    }

    /// parkd dies (`kill -9`): the core and the media plane are dropped with everything the journal had not
    /// synced; datagrams to parkd are lost until [`Net::restart`]. Phones carry on.
    pub fn crash(&mut self) {
        self.journal.lose_unsynced();
        self.down = true;
    }

    /// parkd starts again: a new core and media plane (a fresh seed, as a new process), journaling on,
    /// restored from the journal's durable records; the restore's outputs are carried at once (media
    /// commands before any SIP, as the io driver does).
    pub fn restart(&mut self) -> crate::core::RestoreReport {
        self.restarts += 1;
        let seed = self.cfg.seed ^ self.restarts.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.core = Core::new(self.cfg.server.clone(), self.cfg.lots.clone(), self.cfg.timers, seed);
        self.core.set_journaling(true);
        self.media = MediaPlane::new(vec![media_sink::builtin_music()], seed ^ 0x006d_6564_6961);
        self.down = false;
        let live = self.journal.live.clone();
        let report = self.core.restore(&live, self.now);
        self.drain_core();
        self.restores.push(report.clone());
        report
    }

    /// A crash, `down` of virtual time with parkd gone (phones retransmit into the void), and a restart.
    pub fn crash_and_restart_after(&mut self, down: Duration) -> crate::core::RestoreReport {
        self.crash();
        self.run_for(down);
        self.restart()
    }

    /// `kill -9` and an immediate restart (10 ms later).
    pub fn crash_and_restart(&mut self) -> crate::core::RestoreReport {
        self.crash_and_restart_after(Duration::from_millis(10))
    }

    /// Adds a phone on the default paths.
    pub fn add_phone(&mut self, cfg: PhoneConfig) -> PhoneId {
        let (sip, rtp) = self.defaults;
        self.add_phone_on(cfg, sip, rtp)
    }

    /// Adds a phone whose SIP and RTP paths behave as given.
    pub fn add_phone_on(&mut self, cfg: PhoneConfig, sip: LinkConfig, rtp: LinkConfig) -> PhoneId {
        let i = self.phones.len();
        let s = |k: u64| self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((i as u64) << 8 | k);
        self.paths.push(Paths { sip_up: Link::new(sip, s(1)), sip_down: Link::new(sip, s(2)), rtp_up: Link::new(rtp, s(3)), rtp_down: Link::new(rtp, s(4)) });
        self.phones.push(Phone::new(cfg, i as u8, self.sip_addr));
        PhoneId(i)
    }

    pub fn phone(&self, id: PhoneId) -> &Phone {
        &self.phones[id.0]
    }

    /// Loss/duplicate counters of a phone's paths: (SIP up, SIP down, RTP up, RTP down), each (sent, lost).
    pub fn path_counts(&self, id: PhoneId) -> [(u64, u64); 4] {
        let p = &self.paths[id.0];
        [&p.sip_up, &p.sip_down, &p.rtp_up, &p.rtp_down].map(|l| (l.sent, l.lost))
    }

    /// Lets phone `id` act now (`f` gets the phone and the time); what it sends is carried at once.
    pub fn with_phone<R>(&mut self, id: PhoneId, f: impl FnOnce(&mut Phone, Time) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.phones[id.0], now);
        self.flush_phones();
        r
    }

    /// Phone `id` calls `user` at parkd, with extra header lines.
    pub fn call(&mut self, id: PhoneId, user: &str, extra: &str) -> CallId {
        self.with_phone(id, |p, now| p.invite(now, user, extra))
    }

    /// Phone `id` parks itself by dialing `user` (the park code or an orbit), as the transferee of a blind
    /// transfer by `parker` (its `Referred-By`), or with no Referred-By when `parker` is `None`.
    pub fn park(&mut self, id: PhoneId, user: &str, parker: Option<PhoneId>) -> CallId {
        let extra = parker.map(|p| format!("Referred-By: {}\n", self.phones[p.0].aor())).unwrap_or_default();
        self.call(id, user, &extra)
    }

    pub fn hangup(&mut self, id: PhoneId, call: CallId) {
        self.with_phone(id, |p, now| p.hangup(now, call));
    }

    pub fn reinvite(&mut self, id: PhoneId, call: CallId, dir: &str) {
        self.with_phone(id, |p, now| p.reinvite(now, call, dir));
    }

    pub fn subscribe(&mut self, id: PhoneId, user: &str, expires: u32) -> SubId {
        self.with_phone(id, |p, now| p.subscribe(now, user, expires))
    }

    pub fn resubscribe(&mut self, id: PhoneId, sub: SubId, expires: u32) {
        self.with_phone(id, |p, now| p.resubscribe(now, sub, expires));
    }

    /// Runs an application command (what the HTTP API does: unpark to a URI, park a bridged call, hang up).
    pub fn command(&mut self, cmd: crate::core::Command) -> crate::core::CommandResult {
        let r = self.core.handle_command(self.now, cmd);
        self.drain_core();
        r
    }

    /// A digest of every datagram delivered so far (time, addresses, bytes): equal for equal runs.
    pub fn trace_hash(&self) -> u64 {
        self.hash.finish()
    }

    fn next_due(&self) -> Option<(Time, Due)> {
        let mut best: Option<(Time, Due)> = None;
        let mut consider = |t: Option<Time>, d: Due| {
            if let Some(t) = t {
                if best.is_none_or(|(b, _)| t < b) {
                    best = Some((t, d));
                }
            }
        };
        consider(self.queue.peek().map(|Reverse(d)| d.at), Due::Datagram);
        if !self.down {
            consider(self.core.poll_timeout().map(|(t, _)| t), Due::Core);
            consider(self.media.poll_timeout().map(|(t, _)| t), Due::Media);
            consider(self.journal.next_sync(), Due::Journal);
        }
        for (i, p) in self.phones.iter().enumerate() {
            consider(p.poll_timeout(), Due::Phone(i));
        }
        best
    }

    /// When the next event is due, if anything is pending.
    pub fn next_event(&self) -> Option<Time> {
        self.next_due().map(|(t, _)| t.max(self.now))
    }

    /// Handles the earliest pending event (moving the clock to it) and carries what it produced. Returns
    /// false when nothing at all is pending.
    pub fn step(&mut self) -> bool {
        let Some((at, due)) = self.next_due() else { return false };
        self.now = self.now.max(at);
        self.stats.steps += 1;
        let now = self.now;
        match due {
            Due::Datagram => {
                if let Some(Reverse(d)) = self.queue.pop() {
                    self.deliver(d);
                }
            }
            Due::Core => {
                self.core.handle_timeout(now);
                self.drain_core();
            }
            Due::Media => {
                let mut batch = std::mem::take(&mut self.batch);
                batch.clear();
                self.media.poll_hold(now, &mut batch);
                for p in batch.packets() {
                    let mut bytes = p.header.to_vec();
                    bytes.extend_from_slice(&p.payload);
                    self.send(SocketAddr::new(self.sip_addr.ip(), p.port), p.to, bytes);
                }
                self.batch = batch;
            }
            Due::Phone(i) => self.phones[i].handle_timeout(now),
            Due::Journal => {
                let (tokens, ok) = self.journal.sync();
                for token in tokens {
                    self.core.handle_journal_durable(token, ok, now);
                    self.drain_core();
                }
            }
        }
        self.flush_phones();
        true
    }

    /// Runs every event due within `d`, then sets the clock to `now + d`.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.next_due().is_some_and(|(t, _)| t <= end) {
            self.step();
        }
        self.now = end;
    }

    /// Steps until `pred` holds (true) or `within` of virtual time has passed (false).
    pub fn run_until(&mut self, within: Duration, mut pred: impl FnMut(&Net) -> bool) -> bool {
        let end = self.now + within;
        loop {
            if pred(self) {
                return true;
            }
            match self.next_due() {
                Some((t, _)) if t <= end => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(end);
                    return pred(self);
                }
            }
        }
    }

    /// Steps until nothing is pending (true) or `max_steps` were taken (false). With hold music playing or a
    /// phone talking something is always pending: use [`Net::run_for`] or [`Net::run_until`] then.
    pub fn run_until_idle(&mut self, max_steps: u64) -> bool {
        for _ in 0..max_steps {
            if !self.step() {
                return true;
            }
        }
        self.next_due().is_none()
    }

    fn drain_core(&mut self) {
        let now = self.now;
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Sip { to, bytes } => self.send(self.sip_addr, to.addr, bytes.to_vec()),
                Output::Media(cmd) => {
                    self.media_log.push((now, cmd.clone()));
                    self.media.apply(now, cmd);
                }
                Output::Event(e) => self.events.push((now, e)),
                Output::Journal { records, token } => self.journal.write(now, records, token),
                // The simulated network runs single nodes (no cluster enabled): never emitted (commands are
                // answered at once there).
                Output::Cluster { .. } | Output::CommandDone { .. } => {}
            }
        }
    }

    fn flush_phones(&mut self) {
        for i in 0..self.phones.len() {
            let out = std::mem::take(&mut self.phones[i].out);
            let (sip, rtp) = (self.phones[i].cfg.sip, self.phones[i].cfg.rtp);
            for o in out {
                self.send(if o.rtp { rtp } else { sip }, o.to, o.bytes);
            }
        }
    }

    fn is_parkd_rtp(&self, a: SocketAddr) -> bool {
        a.ip() == self.sip_addr.ip() && (self.rtp_ports.0..=self.rtp_ports.1).contains(&a.port())
    }

    fn is_parkd(&self, a: SocketAddr) -> bool {
        a == self.sip_addr || self.is_parkd_rtp(a)
    }

    /// The phone at `a` and whether `a` is its RTP address.
    fn phone_at(&self, a: SocketAddr) -> Option<(usize, bool)> {
        self.phones.iter().position(|p| p.cfg.sip == a).map(|i| (i, false)).or_else(|| self.phones.iter().position(|p| p.cfg.rtp == a).map(|i| (i, true)))
    }

    /// Puts a datagram on the path between parkd and the phone at one end.
    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let link = match (self.is_parkd(from), self.phone_at(from), self.phone_at(to)) {
            (true, _, Some((i, rtp))) => {
                let p = &mut self.paths[i];
                if rtp { &mut p.rtp_down } else { &mut p.sip_down }
            }
            (false, Some((i, rtp)), _) if self.is_parkd(to) => {
                let p = &mut self.paths[i];
                if rtp { &mut p.rtp_up } else { &mut p.sip_up }
            }
            _ => {
                self.stats.unroutable += 1;
                return;
            }
        };
        let times: Vec<Time> = link.send(self.now).into_iter().collect();
        for at in times {
            self.sent += 1;
            self.queue.push(Reverse(InFlight { at, n: self.sent, from, to, bytes: bytes.clone() }));
        }
    }

    fn deliver(&mut self, d: InFlight) {
        let now = self.now;
        self.stats.delivered += 1;
        (d.at, d.from, d.to, &d.bytes).hash(&mut self.hash);
        if self.down && self.is_parkd(d.to) {
            return;
        }
        if d.to == self.sip_addr {
            self.core.handle_sip(now, Peer { transport: Transport::Udp, addr: d.from }, &d.bytes);
            self.drain_core();
        } else if self.is_parkd_rtp(d.to) {
            let mut buf = d.bytes;
            if let Some(f) = self.media.on_rtp(now, d.to.port(), d.from, &mut buf) {
                buf.truncate(f.len);
                self.send(SocketAddr::new(self.sip_addr.ip(), f.port), f.to, buf);
            }
        } else {
            match self.phone_at(d.to) {
                Some((i, false)) => self.phones[i].on_sip(now, d.from, &d.bytes),
                Some((i, true)) => self.phones[i].on_rtp(now, d.from, &d.bytes),
                None => self.stats.unroutable += 1,
            }
        }
    }
}
