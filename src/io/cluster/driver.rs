//! The task that runs a [`ClusterRoom`] against Redis: it owns the room, carries its operations out (concurrently
//! on the multiplexed connection, written in the order the room issued them), feeds it the channel's
//! messages and the connection's ups and downs, and fires its deadlines. The rest of parkd talks to it through
//! a [`ClusterHandle`] and hears from it on a channel of [`ClusterEvent`]s.

use super::link::{connect_until_subscribed, LinkIdentity, RedisLink, PROBE_EVERY, RESPONSE_TIMEOUT};
use crate::cluster::{
    ClaimId, ClaimInfo, ClaimResult, ClusterOutput, ClusterRoom, ClusterSettings, Fence, Keyspace, NodeName, OpError, OpId, OwnClaim,
    RedisReply, RemoteClaim, Slot, ViewChange, Want,
};
use crate::config::RedisTarget;
use crate::io::clock::Clock;
use redis::{PushInfo, PushKind, Value};
use futures_util::stream::{FuturesUnordered, StreamExt};
use rustc_hash::FxHashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the cluster tells the rest of parkd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The remote view changed.
    View(ViewChange),
    /// This node lost an orbit it held (its call must move).
    Lost { slot: Slot, fence: Fence, to: Option<(NodeName, Fence)> },
    /// Claims can (`true`) or cannot be made now.
    Available(bool),
}

/// A copy of the room's state, for the API and the tests.
#[derive(Clone, Debug, Default)]
pub struct ClusterSnapshot {
    pub available: bool,
    pub own: Vec<(Slot, OwnClaim)>,
    pub remote: Vec<(Slot, RemoteClaim)>,
}

enum Cmd {
    Claim { lot: usize, want: Want, info: ClaimInfo, reply: oneshot::Sender<ClaimResult> },
    Release(Slot),
    Snapshot(oneshot::Sender<ClusterSnapshot>),
    /// Stop the task (claims stay in Redis until their lease runs out, as after a crash).
    Stop,
    /// Stop renewing but keep running (tests: a node that hangs).
    Freeze(bool),
}

/// The rest of parkd's side of the cluster task. Cheap to clone.
#[derive(Clone)]
pub struct ClusterHandle {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl ClusterHandle {
    /// Claims an orbit of `lot`; resolves with the room's answer (within `claim_timeout`).
    pub async fn claim(&self, lot: usize, want: Want, info: ClaimInfo) -> ClaimResult {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Claim { lot, want, info, reply }).is_err() {
            return ClaimResult::Unavailable;
        }
        rx.await.unwrap_or(ClaimResult::Unavailable)
    }
    /// Lets an orbit go.
    pub fn release(&self, slot: Slot) {
        let _ = self.tx.send(Cmd::Release(slot));
    }
    /// The room's state now.
    pub async fn snapshot(&self) -> ClusterSnapshot {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Cmd::Snapshot(tx));
        rx.await.unwrap_or_default()
    }
    /// Stops the task (like a crash as far as Redis is concerned: the claims expire with the lease).
    pub fn stop(&self) {
        let _ = self.tx.send(Cmd::Stop);
    }
    /// While frozen, the room gets no Redis replies, messages or timeouts (a node that hangs, for the
    /// tests); what arrived meanwhile is handed to it when it thaws, as to a process that was paused.
    pub fn freeze(&self, frozen: bool) {
        let _ = self.tx.send(Cmd::Freeze(frozen));
    }
}

/// Starts the cluster task on the current tokio runtime. `replicas`: see [`RedisLink::with_replicas`].
pub fn spawn(settings: ClusterSettings, keys: Keyspace, target: RedisTarget, replicas: u32) -> (ClusterHandle, mpsc::UnboundedReceiver<ClusterEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(settings, keys, target, replicas, rx, ev_tx));
    (ClusterHandle { tx }, ev_rx)
}

/// Operations in flight. Polled as one stream by the loop: a new one is first polled (and so written to the
/// connection) in the order the room issued it, and all of them run concurrently on the multiplexed connection.
type InFlight = FuturesUnordered<Pin<Box<dyn Future<Output = (OpId, Result<RedisReply, OpError>)> + Send>>>;

struct Driver {
    clock: Clock,
    room: ClusterRoom,
    keys: Arc<Keyspace>,
    link: Option<RedisLink>,
    waiters: FxHashMap<ClaimId, oneshot::Sender<ClaimResult>>,
    next_claim: u64,
    events: mpsc::UnboundedSender<ClusterEvent>,
}

async fn run(
    settings: ClusterSettings,
    keys: Keyspace,
    target: RedisTarget,
    replicas: u32,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    events: mpsc::UnboundedSender<ClusterEvent>,
) {
    let keys = Arc::new(keys);
    let mut inflight = InFlight::new();
    let (push_tx, mut push_rx) = mpsc::unbounded_channel::<PushInfo>();
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel::<RedisLink>();
    let node = settings.node.clone();
    let (sip, lease) = (settings.sip.clone(), settings.lease);
    let mut d = Driver {
        clock: Clock::new(),
        room: ClusterRoom::new(settings, (*keys).clone()),
        keys: keys.clone(),
        link: None,
        waiters: FxHashMap::default(),
        next_claim: 0,
        events,
    };
    let connector = {
        let (target, keys) = (target.clone(), keys.clone());
        let who = LinkIdentity { node: node.as_str().to_string(), sip: sip.clone(), lease, replicas };
        move |push_tx: mpsc::UnboundedSender<PushInfo>, conn_tx: mpsc::UnboundedSender<RedisLink>| {
            tokio::spawn(connect_until_subscribed(target.clone(), keys.clone(), who.clone(), push_tx, conn_tx));
        }
    };
    connector(push_tx.clone(), conn_tx.clone());
    let sentinel = matches!(target, RedisTarget::Sentinel { .. });
    let mut frozen = false;
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !frozen {
            d.drain(&mut inflight);
        }
        let deadline = d.room.poll_timeout().map(|(t, _)| t).filter(|_| !frozen);
        let sleep_to = deadline.map(|t| tokio::time::Instant::from_std(d.clock.instant_at(t)));
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None | Some(Cmd::Stop) => break,
                Some(Cmd::Freeze(f)) => frozen = f,
                Some(c) => d.command(c),
            },
            Some((op, r)) = inflight.next(), if !frozen && !inflight.is_empty() => d.room.handle_reply(d.clock.now(), op, r),
            Some(push) = push_rx.recv(), if !frozen => if d.push(push) && sentinel {
                // The master may have moved: ask Sentinel again instead of reconnecting to the old address.
                d.link = None;
                connector(push_tx.clone(), conn_tx.clone());
            },
            Some(link) = conn_rx.recv() => {
                d.link = Some(link);
                d.room.set_link(d.clock.now(), true);
            },
            _ = probe.tick() => if !frozen { d.probe() },
            _ = async { match sleep_to { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {},
        }
        let now = d.clock.now();
        if !frozen && deadline.is_some_and(|t| t <= now) {
            d.room.handle_timeout(now);
        }
    }
}

impl Driver {
    fn drain(&mut self, inflight: &mut InFlight) {
        while let Some(o) = self.room.poll_output() {
            match o {
                ClusterOutput::Redis { op, cmd } => match &self.link {
                    Some(link) => {
                        let link = link.clone();
                        inflight.push(Box::pin(async move { (op, link.run(cmd).await) }));
                    }
                    None => inflight.push(Box::pin(async move { (op, Err(OpError::Connection("not connected".into()))) })),
                },
                ClusterOutput::Claim { id, result } => {
                    if let Some(w) = self.waiters.remove(&id) {
                        let _ = w.send(result);
                    }
                }
                ClusterOutput::View(v) => {
                    let _ = self.events.send(ClusterEvent::View(v));
                }
                ClusterOutput::Lost { slot, fence, to } => {
                    tracing::warn!(lot = slot.lot, orbit = slot.orbit.0, fence = fence.0, "cluster: orbit lost to another node");
                    let _ = self.events.send(ClusterEvent::Lost { slot, fence, to });
                }
                ClusterOutput::Available(a) => {
                    tracing::info!(available = a, "cluster: Redis {}", if a { "answers" } else { "does not answer" });
                    let _ = self.events.send(ClusterEvent::Available(a));
                }
            }
        }
    }

    fn command(&mut self, c: Cmd) {
        let now = self.clock.now();
        match c {
            Cmd::Claim { lot, want, info, reply } => {
                self.next_claim += 1;
                let id = ClaimId(self.next_claim);
                self.waiters.insert(id, reply);
                self.room.claim(now, id, lot, want, info);
            }
            Cmd::Release(slot) => self.room.release(slot),
            Cmd::Snapshot(tx) => {
                let _ = tx.send(ClusterSnapshot {
                    available: self.room.available(),
                    own: self.room.own().map(|(s, c)| (s, c.clone())).collect(),
                    remote: self.room.view().iter().map(|(s, c)| (s, c.clone())).collect(),
                });
            }
            Cmd::Stop | Cmd::Freeze(_) => {}
        }
        // A claim whose caller went away is cancelled (its orbit given back if Redis grants it).
        let gone: Vec<ClaimId> = self.waiters.iter().filter(|(_, w)| w.is_closed()).map(|(id, _)| *id).collect();
        for id in gone {
            self.waiters.remove(&id);
            self.room.cancel(id);
        }
    }

    /// One push from the connection; `true` when it was a disconnection.
    fn push(&mut self, p: PushInfo) -> bool {
        let now = self.clock.now();
        match p.kind {
            PushKind::Message => {
                let mut it = p.data.into_iter();
                let (_, Some(Value::BulkString(payload))) = (it.next(), it.next()) else { return false };
                match std::str::from_utf8(&payload).map_err(|_| "not UTF-8".to_string()).and_then(|s| self.keys.decode_change(s).map_err(|e| e.to_string())) {
                    Ok(change) => self.room.handle_change(now, change),
                    Err(e) => tracing::debug!(error = %e, "cluster: ignoring a message on the change channel"),
                }
                false
            }
            // Subscribed again after a reconnection: messages may have been missed, the room resynchronises.
            PushKind::Subscribe if self.link.is_some() => {
                self.room.set_link(now, true);
                false
            }
            PushKind::Disconnection => {
                self.room.set_link(now, false);
                true
            }
            _ => false,
        }
    }

    /// While the room counts Redis as down, a PING makes the connection manager reconnect (it reconnects on a
    /// failed request) and, once it answers, subscribing again brings the room back up.
    fn probe(&mut self) {
        if self.room.available() {
            return;
        }
        let Some(link) = &self.link else { return };
        let mut c = link.connection();
        let channel = self.keys.channel();
        tokio::spawn(async move {
            let ping = tokio::time::timeout(RESPONSE_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut c)).await;
            if matches!(ping, Ok(Ok(_))) {
                let _ = tokio::time::timeout(RESPONSE_TIMEOUT, c.subscribe(channel)).await;
            }
        });
    }
}
