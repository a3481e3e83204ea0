//! One node's connection to Redis: connecting (directly or through Sentinel), and running one
//! [`RedisOp`] as its script.

use super::scripts;
use crate::cluster::wire::{info_json, parse_owner, Keyspace};
use crate::cluster::{ClaimReply, Fence, OpError, RedisOp, RedisReply, RenewStatus};
use crate::config::RedisTarget;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{PushInfo, Script, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// How long one operation may wait for Redis before it fails (the room's claims give up at 1.5 s; a failure
/// sooner answers them sooner).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Orbit keys read per READ script during a resync.
const READ_CHUNK: usize = 500;

/// The scripts, hashed once (EVALSHA, falling back to EVAL after a Redis restart flushed the script cache).
struct Scripts {
    claim: Script,
    claim_any: Script,
    renew: Script,
    restore: Script,
    release: Script,
    read: Script,
}

/// What an operation runs on: the connection, the keys, and this node's name, lease and SIP address.
#[derive(Clone)]
pub struct RedisLink {
    cm: ConnectionManager,
    keys: Arc<Keyspace>,
    node: Arc<str>,
    sip: Arc<str>,
    lease_ms: u64,
    replicas: u32,
    scripts: Arc<Scripts>,
}

/// How long a claim waits for its replicas (`[cluster] replicas`) before it counts as not acknowledged.
pub const REPLICA_WAIT_MS: u64 = 500;

/// Connects to Redis (asking Sentinel for the master first when the target is one), over RESP3 so the
/// channel's messages arrive as pushes on `push` (with `Disconnection` when the connection drops; the manager
/// reconnects and subscribes again by itself).
pub async fn connect(target: &RedisTarget, push: UnboundedSender<PushInfo>) -> redis::RedisResult<ConnectionManager> {
    // A Sentinel-resolved connection gives up on its address soon: the driver asks Sentinel again instead (the
    // master may have moved). A direct one keeps trying the one address it has.
    let retries = if matches!(target, RedisTarget::Sentinel { .. }) { 2 } else { usize::MAX / 2 };
    let client = match target {
        RedisTarget::Server { url, tls: None } => redis::Client::open(with_resp3(url))?,
        RedisTarget::Server { url, tls: Some(files) } => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| redis::RedisError::from((redis::ErrorKind::Io, "cannot read a [cluster] TLS file", format!("{}: {e}", p.display()))))
            };
            let root_cert = files.ca.as_deref().map(read).transpose()?;
            let client_tls = match &files.client {
                Some((cert, key)) => Some(redis::ClientTlsConfig { client_cert: read(cert)?, client_key: read(key)? }),
                None => None,
            };
            redis::Client::build_with_tls(with_resp3(url), redis::TlsCertificates { client_tls, root_cert })?
        }
        RedisTarget::Sentinel { sentinels, master, db, username, password } => {
            let addrs = sentinels.iter().map(|h| {
                let (host, port) = h.rsplit_once(':').unwrap_or((h, "26379"));
                redis::ConnectionAddr::Tcp(host.trim_start_matches('[').trim_end_matches(']').to_string(), port.parse().unwrap_or(26379))
            });
            let mut b = redis::sentinel::SentinelClientBuilder::new(addrs, master, redis::sentinel::SentinelServerType::Master)?
                .set_client_to_redis_db(*db)
                .set_client_to_redis_protocol(redis::ProtocolVersion::RESP3);
            if let Some(u) = username {
                b = b.set_client_to_redis_username(u);
            }
            if let Some(p) = password {
                b = b.set_client_to_redis_password(p).set_client_to_sentinel_password(p);
            }
            let mut sc = b.build()?;
            tokio::time::timeout(CONNECT_TIMEOUT * 2, sc.async_get_client())
                .await
                .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "Sentinel did not answer in time")))??
        }
    };
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
        .set_number_of_retries(retries)
        .set_push_sender(push)
        .set_automatic_resubscription();
    tokio::time::timeout(CONNECT_TIMEOUT * 2, ConnectionManager::new_with_config(client, config))
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "Redis did not answer in time")))?
}

fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

fn err(e: redis::RedisError) -> OpError {
    if e.is_timeout() {
        OpError::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        OpError::Connection(e.to_string())
    } else {
        OpError::Server(e.to_string())
    }
}

fn strings(v: Value) -> Result<Vec<String>, OpError> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::BulkString(b) => String::from_utf8(b).map_err(|_| OpError::BadReply("not UTF-8".into())),
                Value::SimpleString(s) => Ok(s),
                Value::Int(n) => Ok(n.to_string()),
                other => Err(OpError::BadReply(format!("{other:?}"))),
            })
            .collect(),
        Value::BulkString(b) => Ok(vec![String::from_utf8(b).map_err(|_| OpError::BadReply("not UTF-8".into()))?]),
        Value::SimpleString(s) => Ok(vec![s]),
        Value::Int(n) => Ok(vec![n.to_string()]),
        other => Err(OpError::BadReply(format!("{other:?}"))),
    }
}

fn bad(what: &str, got: &[String]) -> OpError {
    OpError::BadReply(format!("{what}: {got:?}"))
}

impl RedisLink {
    pub fn new(cm: ConnectionManager, keys: Arc<Keyspace>, node: &str, sip: &str, lease: Duration) -> RedisLink {
        RedisLink {
            cm,
            keys,
            node: Arc::from(node),
            sip: Arc::from(sip),
            lease_ms: lease.as_millis() as u64,
            replicas: 0,
            scripts: Arc::new(Scripts {
                claim: Script::new(scripts::CLAIM),
                claim_any: Script::new(scripts::CLAIM_ANY),
                renew: Script::new(scripts::RENEW),
                restore: Script::new(scripts::RESTORE),
                release: Script::new(scripts::RELEASE),
                read: Script::new(scripts::READ),
            }),
        }
    }

    /// Every grant waits until `n` replicas have it (`WAIT n 500`); one that fewer replicas acknowledged is
    /// released and fails (the room answers `Unavailable`), so a Sentinel failover cannot lose an acknowledged
    /// claim. 0 (the default): no waiting; the owner's resync restores what a failover lost.
    pub fn with_replicas(mut self, n: u32) -> RedisLink {
        self.replicas = n;
        self
    }

    /// Loads every script into Redis's script cache (after connecting), so the first claims are one EVALSHA each
    /// rather than EVALSHA, NOSCRIPT, EVAL. (After a Redis restart the cache is empty again; the fallback covers it.)
    pub async fn preload(&self) -> Result<(), OpError> {
        let mut cm = self.cm.clone();
        let s = &self.scripts;
        for script in [&s.claim, &s.claim_any, &s.renew, &s.restore, &s.release, &s.read] {
            script.load_async(&mut cm).await.map_err(err)?;
        }
        Ok(())
    }

    /// The connection (for the driver's subscribe and probe).
    pub fn connection(&self) -> ConnectionManager {
        self.cm.clone()
    }

    /// Runs `op`; every call ends, with a reply or an error, within about [`RESPONSE_TIMEOUT`].
    pub async fn run(&self, op: RedisOp) -> Result<RedisReply, OpError> {
        let mut cm = self.cm.clone();
        let k = &self.keys;
        let channel = k.channel();
        let node = &*self.node;
        match op {
            RedisOp::Claim { slot, info } => {
                let number = k.number(slot);
                let v: Value = self
                    .scripts
                    .claim
                    .key(k.orbit_key(slot))
                    .key(k.fence_key(slot.lot))
                    .key(k.free_key(slot.lot))
                    .key(k.held_key(slot.lot))
                    .arg(node)
                    .arg(self.lease_ms)
                    .arg(info_json(&info))
                    .arg(&channel)
                    .arg(k.lot_name(slot.lot))
                    .arg(&number)
                    .arg(slot.orbit.0)
                    .invoke_async(&mut cm)
                    .await
                    .map_err(err)?;
                let r = self.claim_reply(slot.lot, strings(v)?)?;
                self.replicated(&mut cm, slot.lot, r).await
            }
            RedisOp::ClaimAny { lot, start, info } => {
                let orbits = k.lots[lot].orbits;
                let v: Value = self
                    .scripts
                    .claim_any
                    .key(k.fence_key(lot))
                    .key(k.free_key(lot))
                    .key(k.held_key(lot))
                    .arg(node)
                    .arg(self.lease_ms)
                    .arg(info_json(&info))
                    .arg(&channel)
                    .arg(k.lot_name(lot))
                    .arg(k.orbit_key_stem(lot))
                    .arg(orbits.lo)
                    .arg(orbits.len())
                    .arg(orbits.width)
                    .arg(start.0)
                    .invoke_async(&mut cm)
                    .await
                    .map_err(err)?;
                let r = self.claim_reply(lot, strings(v)?)?;
                self.replicated(&mut cm, lot, r).await
            }
            RedisOp::Renew { claims } => {
                let mut inv = self.scripts.renew.prepare_invoke();
                for (slot, _) in &claims {
                    inv.key(k.orbit_key(*slot));
                }
                for (slot, _) in &claims {
                    inv.key(k.held_key(slot.lot));
                }
                inv.arg(node).arg(self.lease_ms).arg(&channel).arg(&*self.sip);
                for (_, fence) in &claims {
                    inv.arg(fence.0);
                }
                for (slot, _) in &claims {
                    inv.arg(slot.orbit.0);
                }
                let v: Value = inv.invoke_async(&mut cm).await.map_err(err)?;
                renew_statuses(strings(v)?, claims.len())
            }
            RedisOp::Restore { claims } => {
                let mut inv = self.scripts.restore.prepare_invoke();
                for (slot, _, _) in &claims {
                    inv.key(k.orbit_key(*slot));
                }
                for (slot, _, _) in &claims {
                    inv.key(k.fence_key(slot.lot));
                }
                for (slot, _, _) in &claims {
                    inv.key(k.free_key(slot.lot));
                }
                for (slot, _, _) in &claims {
                    inv.key(k.held_key(slot.lot));
                }
                inv.arg(node).arg(self.lease_ms).arg(&channel);
                for (slot, fence, info) in &claims {
                    inv.arg(fence.0).arg(info_json(info)).arg(k.lot_name(slot.lot)).arg(k.number(*slot)).arg(slot.orbit.0);
                }
                let v: Value = inv.invoke_async(&mut cm).await.map_err(err)?;
                renew_statuses(strings(v)?, claims.len())
            }
            RedisOp::Release { slot, fence } => self.run_release(&mut cm, slot, fence).await,
            RedisOp::Resync => self.resync(&mut cm).await,
        }
    }

    /// With `replicas`, a grant counts once that many replicas have it; otherwise it is given back and fails.
    async fn replicated(&self, cm: &mut ConnectionManager, lot: usize, r: RedisReply) -> Result<RedisReply, OpError> {
        let RedisReply::Claim(ClaimReply::Granted { orbit, fence }) = &r else { return Ok(r) };
        if self.replicas == 0 {
            return Ok(r);
        }
        let acked: i64 = redis::cmd("WAIT").arg(self.replicas).arg(REPLICA_WAIT_MS).query_async(cm).await.map_err(err)?;
        if acked >= i64::from(self.replicas) {
            return Ok(r);
        }
        let slot = crate::cluster::Slot { lot, orbit: *orbit };
        let _ = self.run_release(cm, slot, *fence).await;
        Err(OpError::Server(format!("claim reached {acked} of {} replicas within {REPLICA_WAIT_MS} ms; given back", self.replicas)))
    }

    async fn run_release(&self, cm: &mut ConnectionManager, slot: crate::cluster::Slot, fence: Fence) -> Result<RedisReply, OpError> {
        let k = &self.keys;
        let v: Value = self
            .scripts
            .release
            .key(k.orbit_key(slot))
            .key(k.free_key(slot.lot))
            .key(k.held_key(slot.lot))
            .arg(&*self.node)
            .arg(fence.0)
            .arg(k.channel())
            .arg(k.lot_name(slot.lot))
            .arg(k.number(slot))
            .arg(slot.orbit.0)
            .invoke_async(cm)
            .await
            .map_err(err)?;
        Ok(RedisReply::Released(strings(v)?.first().is_some_and(|s| s == "1")))
    }

    fn claim_reply(&self, lot: usize, s: Vec<String>) -> Result<RedisReply, OpError> {
        match s.first().map(String::as_str) {
            Some("granted") if s.len() == 3 => {
                let slot = self.keys.slot(self.keys.lot_name(lot), &s[1]).map_err(|e| OpError::BadReply(e.to_string()))?;
                let fence = s[2].parse().map_err(|_| bad("fence", &s))?;
                Ok(RedisReply::Claim(ClaimReply::Granted { orbit: slot.orbit, fence: Fence(fence) }))
            }
            Some("taken") if s.len() == 2 => {
                let (fence, owner) = parse_owner(&s[1]).map_err(|e| OpError::BadReply(e.to_string()))?;
                Ok(RedisReply::Claim(ClaimReply::Taken { owner, fence }))
            }
            Some("full") => Ok(RedisReply::Claim(ClaimReply::Full)),
            _ => Err(bad("claim", &s)),
        }
    }

    /// SCAN for every orbit key under the prefix, then read values and TTLs in chunks.
    async fn resync(&self, cm: &mut ConnectionManager) -> Result<RedisReply, OpError> {
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        let pattern = self.keys.scan_pattern();
        loop {
            let (next, batch): (u64, Vec<String>) =
                redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query_async(cm).await.map_err(err)?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        let mut entries = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(READ_CHUNK) {
            let mut inv = self.scripts.read.prepare_invoke();
            for key in chunk {
                inv.key(key);
            }
            let v: Value = inv.invoke_async(cm).await.map_err(err)?;
            let s = strings(v)?;
            if s.len() != chunk.len() * 2 {
                return Err(bad("read", &s));
            }
            for (key, pair) in chunk.iter().zip(s.chunks(2)) {
                let (value, ttl) = (&pair[0], pair[1].parse::<i64>().unwrap_or(-2));
                let Some(slot) = self.keys.parse_orbit_key(key) else { continue };
                if value.is_empty() || ttl < 0 {
                    continue; // gone meanwhile, or a key without TTL (not one of ours)
                }
                match self.keys.snapshot_entry(slot, value, ttl as u64) {
                    Ok(e) => entries.push(e),
                    Err(e) => tracing::warn!(key = %key, error = %e, "cluster: skipping an orbit key that is not parkd's"),
                }
            }
        }
        Ok(RedisReply::Snapshot(entries))
    }
}

fn renew_statuses(s: Vec<String>, n: usize) -> Result<RedisReply, OpError> {
    if s.len() != n {
        return Err(bad("renew", &s));
    }
    s.into_iter()
        .map(|v| match v.as_str() {
            "held" => Ok(RenewStatus::Held),
            "missing" => Ok(RenewStatus::Missing),
            other => parse_owner(other).map(|(fence, owner)| RenewStatus::Taken { owner, fence }).map_err(|e| OpError::BadReply(e.to_string())),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(RedisReply::Renewed)
}

/// How often a node without a working link tries Redis again.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Who a link runs its scripts as: this node's name, SIP address, lease and the replicas each claim waits for.
#[derive(Clone, Debug)]
pub struct LinkIdentity {
    pub node: String,
    pub sip: String,
    pub lease: Duration,
    pub replicas: u32,
}

/// Connects to Redis, loads the scripts and subscribes to the change channel, trying again every
/// [`PROBE_EVERY`] until it works (the link goes to `conn_tx`) or nobody waits for it any more (`conn_tx` closed).
pub async fn connect_until_subscribed(
    target: RedisTarget,
    keys: Arc<Keyspace>,
    who: LinkIdentity,
    push_tx: UnboundedSender<PushInfo>,
    conn_tx: UnboundedSender<RedisLink>,
) {
    loop {
        match connect(&target, push_tx.clone()).await {
            Ok(cm) => {
                let link = RedisLink::new(cm, keys.clone(), &who.node, &who.sip, who.lease).with_replicas(who.replicas);
                if let Err(e) = link.preload().await {
                    tracing::warn!(error = %e, "cluster: cannot load the scripts into Redis (EVAL will be used)");
                }
                let mut c = link.connection();
                match tokio::time::timeout(RESPONSE_TIMEOUT, c.subscribe(keys.channel())).await {
                    Ok(Ok(())) => {
                        let _ = conn_tx.send(link);
                        return;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "cluster: cannot subscribe to the change channel"),
                    Err(_) => tracing::warn!("cluster: subscribing to the change channel timed out"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "cluster: cannot connect to Redis; retrying"),
        }
        if conn_tx.is_closed() {
            return;
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}
