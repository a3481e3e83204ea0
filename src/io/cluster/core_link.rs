//! The cluster's io for the SIP engine (issue 18): the [`crate::core::Core`] owns the cluster room; this task
//! only runs the operations the core hands out ([`crate::core::Output::Cluster`]) against Redis and brings back
//! their outcomes, the change channel's messages and the connection's ups and downs as
//! [`ClusterInput`]s for [`crate::core::Core::handle_cluster`]. (The room-owning task of [`super::driver`] stays
//! for the tests and tools.)
//!
//! Operations are polled in one `FuturesUnordered` in the order they arrive, so they are written to the
//! multiplexed connection in issue order (a release is in Redis before the next claim of that orbit).

use super::link::{connect_until_subscribed, LinkIdentity, RedisLink, PROBE_EVERY, RESPONSE_TIMEOUT};
use crate::cluster::{Keyspace, OpError, OpId, RedisOp, RedisReply};
use crate::config::RedisTarget;
use crate::core::ClusterInput;
use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::{PushInfo, PushKind, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The engine's side of the task: operations go out on `ops`, inputs come back on `inputs`.
pub struct CoreLink {
    pub ops: mpsc::UnboundedSender<(OpId, RedisOp)>,
    pub inputs: mpsc::UnboundedReceiver<ClusterInput>,
}

/// Where and who: what the task needs to connect and to run the scripts in this node's name.
#[derive(Clone, Debug)]
pub struct LinkSettings {
    pub target: RedisTarget,
    pub keys: Keyspace,
    pub node: String,
    pub sip: String,
    pub lease: Duration,
    pub replicas: u32,
}

type InFlight = FuturesUnordered<Pin<Box<dyn Future<Output = (OpId, Result<RedisReply, OpError>)> + Send>>>;

/// Starts the task on the current tokio runtime. It stops when the engine drops its [`CoreLink`].
pub fn spawn(s: LinkSettings) -> CoreLink {
    let (ops_tx, ops_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (target, lease) = (s.target.clone(), s.lease);
    tokio::spawn(async move { super::sentinel_check::check(&target, lease).await });
    tokio::spawn(run(s, ops_rx, in_tx));
    CoreLink { ops: ops_tx, inputs: in_rx }
}

fn start_connector(s: &LinkSettings, keys: Arc<Keyspace>, push_tx: mpsc::UnboundedSender<PushInfo>, conn_tx: mpsc::UnboundedSender<RedisLink>) {
    let who = LinkIdentity { node: s.node.clone(), sip: s.sip.clone(), lease: s.lease, replicas: s.replicas };
    tokio::spawn(connect_until_subscribed(s.target.clone(), keys, who, push_tx, conn_tx));
}

async fn run(s: LinkSettings, mut ops: mpsc::UnboundedReceiver<(OpId, RedisOp)>, inputs: mpsc::UnboundedSender<ClusterInput>) {
    let keys = Arc::new(s.keys.clone());
    let mut inflight = InFlight::new();
    let (push_tx, mut push_rx) = mpsc::unbounded_channel::<PushInfo>();
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel::<RedisLink>();
    start_connector(&s, keys.clone(), push_tx.clone(), conn_tx.clone());
    let sentinel = matches!(s.target, RedisTarget::Sentinel { .. });
    let mut link: Option<RedisLink> = None;
    // Whether the engine was last told the link is up.
    let mut up = false;
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let send = |i: ClusterInput| inputs.send(i).is_ok();
    loop {
        tokio::select! {
            op = ops.recv() => match op {
                None => return,
                Some((op, cmd)) => match &link {
                    Some(l) => {
                        let l = l.clone();
                        inflight.push(Box::pin(async move { (op, l.run(cmd).await) }));
                    }
                    None => inflight.push(Box::pin(async move { (op, Err(OpError::Connection("not connected".into()))) })),
                },
            },
            Some((op, result)) = inflight.next(), if !inflight.is_empty() => if !send(ClusterInput::Reply { op, result }) { return },
            Some(p) = push_rx.recv() => match p.kind {
                PushKind::Message => {
                    let mut it = p.data.into_iter();
                    if let (_, Some(Value::BulkString(payload))) = (it.next(), it.next()) {
                        match std::str::from_utf8(&payload).map_err(|_| "not UTF-8".to_string()).and_then(|t| keys.decode_change(t).map_err(|e| e.to_string())) {
                            Ok(change) => if !send(ClusterInput::Change(change)) { return },
                            Err(e) => tracing::debug!(error = %e, "cluster: ignoring a message on the change channel"),
                        }
                    }
                }
                // Subscribed again after a reconnection: messages may have been missed, the room resynchronises.
                PushKind::Subscribe if link.is_some() => {
                    up = true;
                    if !send(ClusterInput::Link(true)) { return }
                }
                PushKind::Disconnection => {
                    up = false;
                    if !send(ClusterInput::Link(false)) { return }
                    if sentinel {
                        // The master may have moved: ask Sentinel again instead of reconnecting to the old address.
                        link = None;
                        start_connector(&s, keys.clone(), push_tx.clone(), conn_tx.clone());
                    }
                }
                _ => {}
            },
            Some(l) = conn_rx.recv() => {
                link = Some(l);
                up = true;
                if !send(ClusterInput::Link(true)) { return }
            },
            _ = probe.tick() => if !up {
                // A PING makes the connection manager reconnect; once it answers, subscribing again brings the
                // link back up (the Subscribe push above).
                if let Some(l) = &link {
                    let mut c = l.connection();
                    let channel = keys.channel();
                    tokio::spawn(async move {
                        let ping = tokio::time::timeout(RESPONSE_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut c)).await;
                        if matches!(ping, Ok(Ok(_))) {
                            let _ = tokio::time::timeout(RESPONSE_TIMEOUT, c.subscribe(channel)).await;
                        }
                    });
                }
            },
        }
    }
}
