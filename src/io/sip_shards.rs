//! The SIP engine on several threads (`[server] sip_threads = N > 1`; README "Signalling shards"): N cores, one
//! per thread, each owning the dialogs whose Call-ID hashes to it ([`crate::sip::shard::route`]), with their own
//! RTP ports and media threads. The cores stay the sans-IO state machines of `crate::core`; this file is their
//! io, as `sip_driver.rs` is for one core.
//!
//! * **One receive path.** Shard 0's thread reads the SIP socket (one `recvmmsg` batch at a time), the TCP/TLS
//!   connections and the HTTP API. It peeks at each message's shard and handles its own at once; the others'
//!   are handed over in one channel message per batch and shard. Every shard sends UDP itself, through its own
//!   descriptor of the one socket (`sendmmsg` before it sleeps); TCP/TLS answers go back to shard 0, which
//!   owns the connections.
//! * **One shared orbit table**, the only point where the shards meet: [`Table`], the in-process cluster's
//!   store (the semantics of the Redis scripts, [`FakeRedis`]) behind one `Mutex`. Each shard is node
//!   `shard<K>` of that cluster: its claims are run under the lock, synchronously, while its output is drained,
//!   and the table's changes are delivered to every shard's inbox. Why a `Mutex` and no `dashmap`: a claim of
//!   "any free orbit" needs an ordered scan of a lot (a `BTreeMap` range), which a hash map cannot give without a
//!   scan, and the lock is held for one claim or release (about a microsecond) a few times per call, so two to
//!   sixteen threads hardly meet on it (`parkd_shard_table_waits_total` counts the times one had to wait).
//! * `/metrics` also counts the messages handed from shard 0's thread to another (`parkd_shard_handovers_total`)
//!   and the retrieves placed on their orbit's shard (`parkd_shard_placed_by_orbit_total`).
//! * The HTTP API talks to shard 0: its listings and BLF show every shard's orbits (the remote view), the
//!   events and `/metrics` event counters come from every shard; commands on a call another shard holds, and
//!   the per-core message counters of `/metrics`, are shard 0's only (see the README).

use super::api_link::ApiPort;
use super::clock::Clock;
use super::conn_limits::Refusal;
use super::events_hub::EventHub;
use super::media_shards::Media;
use super::metrics::{Metrics, ShardStats};
use super::journal_writer::JournalWriter;
use super::sip_driver::{on_tcp_event, recv_or_never, report_event, send_stream, submit_journal, Conns, DrainSignal, JournalLink, SipSockets, SipUdp, Stop, HANGUP_LINGER, MEDIA_LOAD_EVERY};
use super::tcp::{self, TcpContext, TcpEvent};
use super::udp_batch::RecvBatch;
use crate::cluster::fake_redis::FakeRedis;
use crate::cluster::{Change, Keyspace, LotSpace, NodeName, RedisOp, RedisReply};
use crate::core::{ClusterInput, Command, Core, Output};
use crate::journal::Durable;
use crate::sip::shard_router::{OrbitOwners, Router};
use crate::sip::{Peer, Transport};
use crate::time::Time;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// What a shard's thread is handed.
#[derive(Debug)]
pub enum ShardIn {
    /// SIP messages the router gave this shard, in the order received.
    Sip(Vec<(Peer, Bytes)>),
    /// A change of the shared orbit table.
    Cluster(ClusterInput),
    /// For shard 0: send this on the TCP/TLS connection to that peer.
    Stream(Peer, Bytes),
    /// Drain mode on or off (SIGUSR1 reaches shard 0, which passes it on).
    Drain(bool),
    /// Stop as shard 0 was asked to.
    Stop(Stop),
}

/// The shared orbit table and every shard's inbox.
pub struct Table {
    store: Mutex<FakeRedis>,
    keys: Keyspace,
    names: Vec<NodeName>,
    inboxes: Vec<mpsc::UnboundedSender<ShardIn>>,
    /// Times a shard found the table locked by another one, and the shards' other counters (`/metrics`).
    stats: Arc<ShardStats>,
    /// Which shard holds each occupied orbit, for the router (kept in step with `store` by [`Table::run`]).
    owners: Mutex<OrbitOwners>,
}

impl Table {
    /// Runs shard `k`'s operation at `now` under the lock, then hands the changes it made to every shard.
    fn run(&self, k: usize, now: Time, op: &RedisOp) -> RedisReply {
        let mut store = match self.store.try_lock() {
            Ok(s) => s,
            Err(_) => {
                self.stats.table_waits.fetch_add(1, Ordering::Relaxed);
                self.store.lock().unwrap_or_else(|e| e.into_inner())
            }
        };
        let reply = store.exec(now, &self.keys, &self.names[k], op);
        let changes = std::mem::take(&mut store.published);
        drop(store);
        if changes.iter().any(|c| !matches!(c, Change::Alive { .. })) {
            let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
            for c in &changes {
                owners.follow(c, &self.keys, &self.names);
            }
        }
        for c in changes {
            for tx in &self.inboxes {
                let _ = tx.send(ShardIn::Cluster(ClusterInput::Change(c.clone())));
            }
        }
        reply
    }

    /// Times a shard had to wait for the table's lock.
    pub fn waits(&self) -> u64 {
        self.stats.table_waits.load(Ordering::Relaxed)
    }

    /// The shard holding orbit `number` (in every lot that has it held), for the router.
    fn owner_of(&self, number: &str) -> Option<usize> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner()).shard_of(number)
    }
}

/// One shard: its core, its media threads and (journaling on) its journal (`io/journal_layout.rs`).
pub struct ShardParts {
    pub core: Core,
    pub media: Media,
    pub journal: Option<JournalLink>,
}

/// Makes `cores[k]` shard `k` of them all (see [`Core::enable_shard`]) and builds the table they share.
pub fn prepare(cores: &mut [Core], lots: &[crate::config::LotConfig]) -> (Arc<Table>, Vec<mpsc::UnboundedReceiver<ShardIn>>) {
    let n = cores.len();
    let secret: [u8; 32] = rand::random();
    let keys = Keyspace::new("parkd", lots.iter().map(LotSpace::from_config).collect());
    let mut store = FakeRedis::new(crate::core::SHARD_LEASE);
    let mut names = Vec::with_capacity(n);
    for (k, core) in cores.iter_mut().enumerate() {
        let sip = core.enable_shard(k, n, lots, &secret);
        let name = crate::core::shard_node(k);
        store.sips.insert(name.clone(), sip);
        names.push(name);
    }
    let (inboxes, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::unbounded_channel()).unzip();
    (Arc::new(Table { store: Mutex::new(store), keys, names, inboxes, stats: Arc::default(), owners: Mutex::default() }), rxs)
}

/// Runs every shard until `shutdown` resolves: shards 1.. on their own threads, shard 0 (the receive path and
/// the API) on this task. Returns once every shard has stopped.
pub async fn run(
    mut shards: Vec<ShardParts>,
    table: Arc<Table>,
    mut inboxes: Vec<mpsc::UnboundedReceiver<ShardIn>>,
    sockets: SipSockets,
    clock: Clock,
    mut api: ApiPort,
    shutdown: impl std::future::Future<Output = Stop>,
) -> Stop {
    let mut threads = Vec::new();
    // Each shard says when its first turn is done (a restart: its restored calls' claims are back in the table),
    // and shard 0 reads the socket only then, so no new park takes an orbit a restored call holds.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<usize>();
    let rest: Vec<_> = shards.drain(1..).zip(inboxes.drain(1..)).collect();
    for (i, (parts, inbox)) in rest.into_iter().enumerate() {
        let k = i + 1;
        let sock = match sockets.udp_clone() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot share the SIP socket with a SIP thread; it does not start");
                continue;
            }
        };
        let (table, metrics, hub, ready) = (table.clone(), api.metrics.clone(), api.hub.clone(), ready_tx.clone());
        let spawned = std::thread::Builder::new().name(format!("parkd-sip{k}")).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, shard = k, "cannot start a SIP thread's runtime");
                    return;
                }
            };
            rt.block_on(async move {
                let udp = match tokio::net::UdpSocket::from_std(sock) {
                    Ok(u) => SipUdp::new(u),
                    Err(e) => {
                        tracing::error!(error = %e, shard = k, "cannot use the SIP socket on a SIP thread");
                        return;
                    }
                };
                let (journal, durable) = parts.journal.map(|j| (j.writer, j.durable)).unzip();
                if let Some(d) = test_start_delay() {
                    std::thread::sleep(d);
                }
                let mut s = Shard { k, core: parts.core, media: parts.media, udp, table, to0: None, metrics, hub, clock, journal };
                s.serve(inbox, durable, ready).await;
                s.close_journal();
            });
        });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => tracing::error!(error = %e, shard = k, "cannot spawn a SIP thread"),
        }
    }
    drop(ready_tx);
    let Some(parts) = shards.pop() else { return Stop::KeepCalls };
    let Some(inbox) = inboxes.pop() else { return Stop::KeepCalls };
    let SipSockets { udp, tcp: listener, limits, tls } = sockets;
    let (tcp_tx, tcp_rx) = mpsc::channel::<TcpEvent>(1024);
    let tcp_ctx = TcpContext::new(limits, api.metrics.clone(), tcp_tx);
    tokio::spawn(tcp::accept_loop(listener, tcp_ctx.clone()));
    let mut conns = Conns::default();
    if let Some((listener, t)) = tls {
        tokio::spawn(super::tls::accept_loop(listener, tcp_ctx.clone(), t.clone()));
        conns.tls = Some(t);
    }
    let udp = SipUdp::new(udp);
    if let Err(e) = udp.writable().await {
        tracing::warn!(error = %e, "SIP UDP socket not writable");
    }
    tracing::info!(threads = table.inboxes.len(), "SIP engine sharded by Call-ID over several threads, one orbit table");
    api.metrics.set_shards(table.stats.clone());
    // SIGHUP reloads the TLS certificate; the configuration is refused (409 on the API) until a restart.
    api.reloader.sharded = true;
    let (journal, durable) = parts.journal.map(|j| (j.writer, j.durable)).unzip();
    let mut s0 = Shard { k: 0, core: parts.core, media: parts.media, udp, table: table.clone(), to0: Some((&mut conns, &tcp_ctx)), metrics: api.metrics.clone(), hub: api.hub.clone(), clock, journal };
    let started = threads.len();
    let stop = s0.front(inbox, tcp_rx, &mut api, durable, Ready { rx: ready_rx, shards: started }, shutdown).await;
    for t in threads {
        let _ = t.join();
    }
    s0.close_journal();
    tracing::info!(table_waits = table.waits(), "every SIP thread stopped");
    stop
}

struct Shard<'a> {
    k: usize,
    core: Core,
    media: Media,
    udp: SipUdp,
    table: Arc<Table>,
    /// Shard 0: the TCP/TLS connections it writes to. Other shards hand stream messages to shard 0's inbox.
    to0: Option<(&'a mut Conns, &'a TcpContext)>,
    metrics: Arc<Metrics>,
    hub: EventHub,
    clock: Clock,
    /// Journaling on: this shard's journal writer (its completions come on the `durable` channel).
    journal: Option<JournalWriter>,
}

/// A delay before shards 1.. take their first turn, from `PARKD_TEST_SHARD_START_DELAY_MS` (at most 10 s): a test
/// hook that widens the window the ready barrier closes (see [`run`]), so an end-to-end test can catch its loss.
/// Unset (as in production), nothing waits.
fn test_start_delay() -> Option<std::time::Duration> {
    let ms: u64 = std::env::var("PARKD_TEST_SHARD_START_DELAY_MS").ok()?.parse().ok()?;
    Some(std::time::Duration::from_millis(ms.min(10_000)))
}

/// The other shards' "first turn done" (see [`run`]).
struct Ready {
    rx: std::sync::mpsc::Receiver<usize>,
    shards: usize,
}

impl Ready {
    /// Waits (at most 5 s, a bound should a thread be stuck) until every other shard has had its first turn.
    fn wait(self) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for _ in 0..self.shards {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if self.rx.recv_timeout(left).is_err() {
                tracing::warn!("a SIP thread did not report ready in 5 s; reading the socket anyway");
                return;
            }
        }
    }
}

impl Shard<'_> {
    /// The shard joins the shared orbit table. Its operations run while draining, so the claims of the calls
    /// restored into this shard are back in the table when this returns (see [`run`]).
    fn first_turn(&mut self, deferred: Option<&mut super::api_link::DeferredReplies>) {
        self.core.handle_cluster(ClusterInput::Link(true), self.clock.now());
        if self.drain(deferred) {
            self.media.wake();
        }
    }

    /// Commits what this shard's journal has queued, then closes it (its lock is released).
    fn close_journal(&mut self) {
        if let Some(w) = self.journal.take() {
            w.shutdown();
            tracing::info!(shard = self.k, "journal flushed and closed");
        }
    }

    /// The journal writer made these groups durable (or failed to): the core releases what it held for them.
    fn on_durable(&mut self, done: Durable) {
        let (now, ok) = (self.clock.now(), done.result.is_ok());
        for token in done.tokens {
            self.core.handle_journal_durable(token, ok, now);
        }
    }

    /// Drains the core's output until `None` (the core's contract); true when media commands were queued.
    fn drain(&mut self, mut deferred: Option<&mut super::api_link::DeferredReplies>) -> bool {
        let mut media_queued = false;
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Sip { to, bytes } => match (to.transport, self.to0.as_mut()) {
                    (Transport::Udp, _) => self.udp.queue(to.addr, bytes),
                    (_, Some((conns, tcp))) => send_stream(conns, tcp, to, bytes),
                    (_, None) => {
                        let _ = self.table.inboxes[0].send(ShardIn::Stream(to, bytes));
                    }
                },
                Output::Media(cmd) => media_queued |= self.media.queue(cmd),
                Output::Event(ev) => report_event(&self.metrics, &self.hub, &self.clock, ev),
                Output::Cluster { op, cmd } => {
                    let now = self.clock.now();
                    let reply = self.table.run(self.k, now, &cmd);
                    self.core.handle_cluster(ClusterInput::Reply { op, result: Ok(reply) }, now);
                }
                Output::CommandDone { ticket, result } => match deferred.as_deref_mut() {
                    Some(d) => d.answer(ticket, result),
                    None => tracing::warn!(shard = self.k, "a command's answer on a shard without the API"),
                },
                Output::Journal { records, token } => submit_journal(&mut self.core, self.journal.as_ref(), records, token, self.clock.now()),
            }
        }
        media_queued
    }

    /// One message handed to this shard.
    fn on_input(&mut self, msg: ShardIn, leaving: &mut Option<std::time::Instant>) -> bool {
        let now = self.clock.now();
        let mut media_queued = false;
        match msg {
            ShardIn::Sip(batch) => {
                for (peer, bytes) in batch {
                    self.core.handle_sip(self.clock.now(), peer, &bytes);
                    media_queued |= self.drain(None);
                }
            }
            ShardIn::Cluster(input) => self.core.handle_cluster(input, now),
            ShardIn::Stream(to, bytes) => match self.to0.as_mut() {
                Some((conns, tcp)) => send_stream(conns, tcp, to, bytes),
                None => tracing::warn!(shard = self.k, "a stream message for a shard without the connections"),
            },
            ShardIn::Drain(on) => self.core.set_draining(on),
            ShardIn::Stop(Stop::KeepCalls) => *leaving = Some(std::time::Instant::now()),
            ShardIn::Stop(Stop::HangUpAll) => self.hang_up_all(leaving),
        }
        media_queued
    }

    fn hang_up_all(&mut self, leaving: &mut Option<std::time::Instant>) {
        if leaving.is_some() {
            return;
        }
        self.core.set_draining(true);
        let r = self.core.handle_command(self.clock.now(), Command::HangupAll);
        tracing::warn!(shard = self.k, outcome = ?r, "hanging up every call, then stopping");
        *leaving = Some(std::time::Instant::now() + HANGUP_LINGER);
    }

    /// Whether a stopping shard is done: every call hung up and answered, or its time is up.
    fn done(&self, leaving: Option<std::time::Instant>) -> bool {
        leaving.is_some_and(|until| {
            let live = self.core.live();
            (live.calls == 0 && live.client_txns == 0) || std::time::Instant::now() >= until
        })
    }

    /// Re-arms `timer` for the core's next deadline when it moved.
    fn arm(&self, timer: std::pin::Pin<&mut tokio::time::Sleep>, armed: &mut Option<Time>) {
        let deadline = self.core.poll_timeout().map(|(t, _)| t);
        if deadline != *armed {
            *armed = deadline;
            timer.reset(deadline.map(|t| tokio::time::Instant::from_std(self.clock.instant_at(t))).unwrap_or_else(far));
        }
    }

    /// Fires the core's due deadlines (the clock is checked, not only the sleep).
    fn fire_due(&mut self) {
        if let Some((t, _)) = self.core.poll_timeout() {
            let now = self.clock.now();
            if t <= now {
                self.core.handle_timeout(now);
            }
        }
    }

    /// Shards 1..: inputs from the inbox, the core's timer and the media load, until told to stop.
    async fn serve(&mut self, mut inbox: mpsc::UnboundedReceiver<ShardIn>, mut durable: Option<mpsc::UnboundedReceiver<Durable>>, ready: std::sync::mpsc::Sender<usize>) {
        self.first_turn(None);
        let _ = ready.send(self.k);
        let timer = tokio::time::sleep_until(far());
        tokio::pin!(timer);
        let mut armed = None;
        let mut load_tick = tokio::time::interval(MEDIA_LOAD_EVERY);
        load_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leaving = None;
        let mut buf = Vec::with_capacity(64);
        let mut reports = self.media.take_reports();
        loop {
            if self.drain(None) {
                self.media.wake();
            }
            self.udp.flush();
            if self.done(leaving) {
                return;
            }
            self.arm(timer.as_mut(), &mut armed);
            tokio::select! {
                n = inbox.recv_many(&mut buf, 64) => {
                    if n == 0 {
                        return;
                    }
                    let mut media_queued = false;
                    for msg in buf.drain(..) {
                        media_queued |= self.on_input(msg, &mut leaving);
                        media_queued |= self.drain(None);
                    }
                    if media_queued {
                        self.media.wake();
                    }
                }
                _ = load_tick.tick() => self.core.handle_media_load(self.clock.now(), &self.media.loads()),
                Some(report) = recv_or_never(reports.as_mut()) => self.core.handle_media_report(self.clock.now(), report),
                Some(done) = recv_or_never(durable.as_mut()) => self.on_durable(done),
                _ = timer.as_mut() => {
                    armed = None;
                    timer.as_mut().reset(far());
                }
            }
            self.fire_due();
        }
    }

    /// Shard 0: as [`Shard::serve`], and the receive path (UDP, TCP/TLS), the HTTP API, SIGUSR1 and the stop.
    async fn front(
        &mut self,
        mut inbox: mpsc::UnboundedReceiver<ShardIn>,
        mut tcp_rx: mpsc::Receiver<TcpEvent>,
        api: &mut ApiPort,
        mut durable: Option<mpsc::UnboundedReceiver<Durable>>,
        ready: Ready,
        shutdown: impl std::future::Future<Output = Stop>,
    ) -> Stop {
        let n = self.table.inboxes.len();
        let Some(tcp_ctx) = self.to0.as_ref().map(|(_, t)| (*t).clone()) else { return Stop::KeepCalls };
        self.first_turn(Some(&mut api.deferred));
        ready.wait();
        let timer = tokio::time::sleep_until(far());
        tokio::pin!(timer);
        tokio::pin!(shutdown);
        let mut armed = None;
        let mut load_tick = tokio::time::interval(MEDIA_LOAD_EVERY);
        load_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_toggle = DrainSignal::new();
        let mut leaving: Option<std::time::Instant> = None;
        let mut stop = Stop::KeepCalls;
        let mut rx_batch = RecvBatch::new();
        let mut buf = Vec::with_capacity(64);
        let mut reports = self.media.take_reports();
        let mut hup = super::reload::HupSignal::new();
        // Messages for the other shards, collected over one receive batch.
        let mut fwd: Vec<Vec<(Peer, Bytes)>> = vec![Vec::new(); n];
        // Which shard each message goes to: a retrieve to the shard holding its orbit (`sip/shard_router.rs`).
        let mut router = Router::new(n);
        let table = self.table.clone();
        loop {
            if self.drain(Some(&mut api.deferred)) {
                self.media.wake();
            }
            self.udp.flush();
            if self.done(leaving) {
                return stop;
            }
            self.arm(timer.as_mut(), &mut armed);
            tokio::select! {
                r = self.udp.readable() => match r {
                    Ok(()) => {
                        self.udp.recv_batch(&mut rx_batch);
                        let mut media_queued = false;
                        for i in 0..rx_batch.len() {
                            let Some((from, bytes)) = rx_batch.get(i) else { break };
                            let from = super::dual_stack::canonical(from);
                            if let Err(e) = crate::sip::check_datagram(bytes, &tcp_ctx.limits.frame) {
                                tcp_ctx.refuse(Refusal::of_framing(&e), from.ip());
                                if let Some(answer) = e.response_bytes() {
                                    let _ = self.udp.try_send_to(&answer, self.udp.destination(from));
                                }
                                continue;
                            }
                            let peer = Peer { transport: Transport::Udp, addr: from };
                            match router.route(bytes, self.clock.now(), |u| table.owner_of(u)) {
                                0 => {
                                    self.core.handle_sip(self.clock.now(), peer, bytes);
                                    media_queued |= self.drain(Some(&mut api.deferred));
                                }
                                k => fwd[k].push((peer, Bytes::copy_from_slice(bytes))),
                            }
                        }
                        self.forward(&mut fwd);
                        table.stats.placed_by_orbit.store(router.placed_by_orbit(), Ordering::Relaxed);
                        if media_queued {
                            self.media.wake();
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "UDP socket not readable"),
                },
                Some(ev) = tcp_rx.recv() => {
                    let msg = self.to0.as_mut().and_then(|(conns, _)| on_tcp_event(conns, ev));
                    if let Some((peer, bytes)) = msg {
                        match router.route(&bytes, self.clock.now(), |u| table.owner_of(u)) {
                            0 => self.core.handle_sip(self.clock.now(), peer, &bytes),
                            k => {
                                fwd[k].push((peer, bytes));
                                self.forward(&mut fwd);
                            }
                        }
                        table.stats.placed_by_orbit.store(router.placed_by_orbit(), Ordering::Relaxed);
                    }
                }
                m = inbox.recv_many(&mut buf, 64) => {
                    let mut media_queued = false;
                    for msg in buf.drain(..m) {
                        media_queued |= self.on_input(msg, &mut leaving);
                        media_queued |= self.drain(Some(&mut api.deferred));
                    }
                    if media_queued {
                        self.media.wake();
                    }
                }
                Some(req) = api.rx.recv() => super::api_link::serve(&mut self.core, &self.media, self.clock.now(), req, &mut api.deferred, &api.reloader),
                Some(report) = recv_or_never(reports.as_mut()) => self.core.handle_media_report(self.clock.now(), report),
                Some(done) = recv_or_never(durable.as_mut()) => self.on_durable(done),
                _ = hup.recv() => {
                    let tls = self.to0.as_ref().and_then(|(conns, _)| conns.tls.as_ref());
                    let _ = api.reloader.reload(&mut self.core, &self.media, tls, self.clock.now(), "SIGHUP");
                }
                _ = load_tick.tick() => self.core.handle_media_load(self.clock.now(), &self.media.loads()),
                _ = drain_toggle.recv() => {
                    let on = !self.core.is_draining();
                    self.core.set_draining(on);
                    for tx in &self.table.inboxes[1..] {
                        let _ = tx.send(ShardIn::Drain(on));
                    }
                }
                _ = timer.as_mut() => {
                    armed = None;
                    timer.as_mut().reset(far());
                }
                how = &mut shutdown, if leaving.is_none() => {
                    stop = how;
                    for tx in &self.table.inboxes[1..] {
                        let _ = tx.send(ShardIn::Stop(how));
                    }
                    match how {
                        Stop::KeepCalls => {
                            let calls = self.core.live().calls;
                            if self.journal.is_some() {
                                tracing::info!(calls, "stopping; every call is kept (each shard's journal, restored at the next start; no BYE sent)");
                            } else {
                                tracing::info!(calls, "stopping; journal = false, so the calls are dropped");
                            }
                            return stop;
                        }
                        Stop::HangUpAll => self.hang_up_all(&mut leaving),
                    }
                }
            }
            self.fire_due();
        }
    }

    /// Hands each other shard what the router collected for it, in one message.
    fn forward(&self, fwd: &mut [Vec<(Peer, Bytes)>]) {
        for (k, msgs) in fwd.iter_mut().enumerate().skip(1) {
            if !msgs.is_empty() {
                self.table.stats.handovers.fetch_add(msgs.len() as u64, Ordering::Relaxed);
                let _ = self.table.inboxes[k].send(ShardIn::Sip(std::mem::take(msgs)));
            }
        }
    }
}

fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(3600)
}
