//! `[cluster]`: several parkd nodes sharing one orbit space over Redis (issue 18). Absent (no `redis`), parkd
//! is a single node exactly as without this section and needs no Redis.
//!
//! ```toml
//! [cluster]
//! redis = "redis://10.0.0.9:6379/0"   # or rediss://..., or redis+sentinel://h1:26379,h2:26379/mymaster
//! node = "park-a"                     # unique per node: A-Z a-z 0-9 . _ -
//! lease = 10                          # seconds a node's claims outlive it
//! key_prefix = "parkd"                # namespace of the keys and the channel in Redis
//! # with rediss://: the CA that signed Redis's certificate (absent: the system's roots), and this node's
//! # certificate and key when Redis asks for one (tls-auth-clients, Redis's default)
//! tls_ca_file = "/etc/parkd/redis-ca.crt"
//! tls_cert_file = "/etc/parkd/node.crt"
//! tls_key_file = "/etc/parkd/node.key"
//! ```

use crate::config::LotConfig;
use serde::Deserialize;
use std::path::PathBuf;

/// `[cluster]`, see the module doc.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where Redis is (`--redis`): `redis://[user:password@]host:port[/db]`, `rediss://...` (TLS), or
    /// `redis+sentinel://[user:password@]host:port[,host:port...]/master[/db]` (the master Sentinel names).
    /// Absent: no cluster.
    #[serde(default)]
    pub redis: Option<String>,
    /// This node's name (`--node`), unique in the cluster; required with `redis`.
    #[serde(default)]
    pub node: Option<String>,
    /// Seconds a claim lives in Redis without renewal (`--lease`, default 10, 3..=3600): a node that dies keeps its
    /// orbits that long; renewals run every lease / 3.
    #[serde(default = "default_lease")]
    pub lease: u64,
    /// Prefix of every key and of the pub/sub channel (default `parkd`), so several clusters can share one Redis.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// Replicas that must have a claim before a park is answered (`WAIT`), 0..=8 (default 0). With Sentinel and
    /// `replicas = 1`, a failover cannot lose an acknowledged claim; the price is one replication round trip per
    /// park, and parks answer 503 while no replica answers.
    #[serde(default)]
    pub replicas: u32,
    /// With `rediss://`: PEM file of the CA that signed Redis's certificate (absent: the system's trusted roots).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// With `rediss://`: this node's client certificate (PEM), for a Redis with `tls-auth-clients yes` (its
    /// default). Needs `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// With `rediss://`: the key of `tls_cert_file` (PEM).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// The secret every node shares to sign the node-to-node requests of a cross-node retrieve (HMAC-SHA256,
    /// `crate::cluster::auth`); at least 16 characters. A node with it trusts a retrieve another node sends with
    /// a valid signed `Parkd-Cluster` header (past the lot's access rules); without it such requests get 403.
    #[serde(default)]
    pub secret: Option<String>,
}

/// The files a `rediss://` connection trusts and presents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s), PEM; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key, PEM.
    pub client: Option<(PathBuf, PathBuf)>,
}

fn default_lease() -> u64 {
    10
}
fn default_prefix() -> String {
    "parkd".into()
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: None,
            node: None,
            lease: default_lease(),
            key_prefix: default_prefix(),
            replicas: 0,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            secret: None,
        }
    }
}

/// Where Redis is, as `[cluster] redis` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://` or `rediss://` (`tls` is `Some`): one server (the URL as given, for the redis crate).
    Server { url: String, tls: Option<TlsFiles> },
    /// `redis+sentinel://`: ask these Sentinels for the master named `master`, then connect to it.
    Sentinel { sentinels: Vec<String>, master: String, db: i64, username: Option<String>, password: Option<String> },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterConfigError {
    #[error("[cluster] redis = {0:?} is not redis://host:port[/db], rediss://host:port[/db] or redis+sentinel://host:port[,host:port...]/master[/db]")]
    BadUrl(String),
    #[error("[cluster] node = {0:?}: a node name is 1-64 of A-Z a-z 0-9 . _ -")]
    BadNode(String),
    #[error("[cluster] needs both redis (--redis) and node (--node); only {0} is set")]
    Incomplete(&'static str),
    #[error("[cluster] lease = {0}: must be 3..=3600 seconds")]
    BadLease(u64),
    #[error("[cluster] replicas = {0}: at most 8")]
    BadReplicas(u32),
    #[error("[cluster] key_prefix = {0:?}: 1-64 of A-Z a-z 0-9 . _ -")]
    BadPrefix(String),
    #[error("lot {0:?}: in a cluster, lot names go into Redis keys and must be 1-64 of A-Z a-z 0-9 . _ -")]
    BadLotName(String),
    #[error("[cluster] tls_ca_file, tls_cert_file and tls_key_file need a rediss:// URL")]
    TlsWithoutRediss,
    #[error("[cluster] tls_cert_file and tls_key_file go together")]
    TlsHalfClient,
    #[error("[cluster] secret: at least 16 characters")]
    ShortSecret,
}

impl ClusterConfig {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        self.redis.is_some()
    }

    /// Checks the section (nothing to check when it is off).
    pub fn validate(&self, lots: &[LotConfig]) -> Result<(), ClusterConfigError> {
        match (&self.redis, &self.node) {
            (None, None) => return Ok(()),
            (Some(_), None) => return Err(ClusterConfigError::Incomplete("redis")),
            (None, Some(_)) => return Err(ClusterConfigError::Incomplete("node")),
            (Some(_), Some(n)) if !crate::cluster::is_token(n) => return Err(ClusterConfigError::BadNode(n.clone())),
            _ => {}
        }
        let target = self.target()?;
        let tls_keys = self.tls_ca_file.is_some() || self.tls_cert_file.is_some() || self.tls_key_file.is_some();
        if tls_keys && !matches!(target, Some(RedisTarget::Server { tls: Some(_), .. })) {
            return Err(ClusterConfigError::TlsWithoutRediss);
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ClusterConfigError::TlsHalfClient);
        }
        if self.secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(ClusterConfigError::ShortSecret);
        }
        if !(3..=3600).contains(&self.lease) {
            return Err(ClusterConfigError::BadLease(self.lease));
        }
        if self.replicas > 8 {
            return Err(ClusterConfigError::BadReplicas(self.replicas));
        }
        if !crate::cluster::is_token(&self.key_prefix) {
            return Err(ClusterConfigError::BadPrefix(self.key_prefix.clone()));
        }
        if let Some(l) = lots.iter().find(|l| !crate::cluster::is_token(&l.name)) {
            return Err(ClusterConfigError::BadLotName(l.name.clone()));
        }
        Ok(())
    }

    /// `redis`, parsed, with the TLS files for `rediss://` (`None` when the cluster is off).
    pub fn target(&self) -> Result<Option<RedisTarget>, ClusterConfigError> {
        let mut t = self.redis.as_deref().map(parse_target).transpose()?;
        if let Some(RedisTarget::Server { tls: Some(files), .. }) = &mut t {
            files.ca = self.tls_ca_file.clone();
            files.client = self.tls_cert_file.clone().zip(self.tls_key_file.clone());
        }
        Ok(t)
    }
}

/// Parses `redis://`, `rediss://` and `redis+sentinel://` URLs (only the shape; the redis crate reads the rest).
pub fn parse_target(url: &str) -> Result<RedisTarget, ClusterConfigError> {
    let bad = || ClusterConfigError::BadUrl(url.to_string());
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let (hosts, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p),
        None => (rest, ""),
    };
    let host_ok = |h: &str| match h.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => !h.is_empty() && !h.contains(','),
    };
    match scheme {
        "redis" | "rediss" => {
            if !host_ok(hosts) || !(path.is_empty() || path.parse::<i64>().is_ok_and(|d| d >= 0)) {
                return Err(bad());
            }
            Ok(RedisTarget::Server { url: url.to_string(), tls: (scheme == "rediss").then(TlsFiles::default) })
        }
        "redis+sentinel" => {
            let sentinels: Vec<String> = hosts.split(',').map(str::to_string).collect();
            if sentinels.iter().any(|h| !host_ok(h) || !h.contains(':')) {
                return Err(bad());
            }
            let mut parts = path.split('/');
            let master = parts.next().filter(|m| !m.is_empty()).ok_or_else(bad)?.to_string();
            let db = match parts.next() {
                None | Some("") => 0,
                Some(d) => d.parse::<i64>().ok().filter(|d| *d >= 0).ok_or_else(bad)?,
            };
            if parts.next().is_some() {
                return Err(bad());
            }
            let (username, password) = match auth {
                None => (None, None),
                Some(a) => match a.split_once(':') {
                    Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
                    None => (Some(a.to_string()), None),
                },
            };
            Ok(RedisTarget::Sentinel { sentinels, master, db, username, password })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(redis: Option<&str>, node: Option<&str>) -> ClusterConfig {
        ClusterConfig { redis: redis.map(Into::into), node: node.map(Into::into), ..ClusterConfig::default() }
    }

    #[test]
    fn off_by_default_and_both_halves_required() {
        let lots = [LotConfig::default_lot()];
        assert!(!ClusterConfig::default().enabled());
        assert_eq!(ClusterConfig::default().validate(&lots), Ok(()));
        assert_eq!(with(Some("redis://127.0.0.1:6379"), None).validate(&lots), Err(ClusterConfigError::Incomplete("redis")));
        assert_eq!(with(None, Some("a")).validate(&lots), Err(ClusterConfigError::Incomplete("node")));
        assert_eq!(with(Some("redis://127.0.0.1:6379"), Some("a b")).validate(&lots), Err(ClusterConfigError::BadNode("a b".into())));
        assert_eq!(with(Some("redis://127.0.0.1:6379/2"), Some("park-a")).validate(&lots), Ok(()));
        let mut tls = with(Some("rediss://127.0.0.1:6380"), Some("a"));
        assert_eq!(tls.validate(&lots), Ok(()), "system roots, no client certificate");
        tls.tls_ca_file = Some("/etc/parkd/ca.crt".into());
        tls.tls_cert_file = Some("/etc/parkd/a.crt".into());
        assert_eq!(tls.validate(&lots), Err(ClusterConfigError::TlsHalfClient));
        tls.tls_key_file = Some("/etc/parkd/a.key".into());
        assert_eq!(tls.validate(&lots), Ok(()));
        assert_eq!(
            tls.target(),
            Ok(Some(RedisTarget::Server {
                url: "rediss://127.0.0.1:6380".into(),
                tls: Some(TlsFiles { ca: Some("/etc/parkd/ca.crt".into()), client: Some(("/etc/parkd/a.crt".into(), "/etc/parkd/a.key".into())) })
            }))
        );
        tls.redis = Some("redis://127.0.0.1:6379".into());
        assert_eq!(tls.validate(&lots), Err(ClusterConfigError::TlsWithoutRediss));
        let mut secret = with(Some("redis://127.0.0.1:6379"), Some("a"));
        secret.secret = Some("too short".into());
        assert_eq!(secret.validate(&lots), Err(ClusterConfigError::ShortSecret));
        secret.secret = Some("sixteen chars ok".into());
        assert_eq!(secret.validate(&lots), Ok(()));
        let mut short = with(Some("redis://127.0.0.1:6379"), Some("a"));
        short.lease = 2;
        assert_eq!(short.validate(&lots), Err(ClusterConfigError::BadLease(2)));
        let mut lot = LotConfig::default_lot();
        lot.name = "front desk".into();
        assert_eq!(with(Some("redis://127.0.0.1:6379"), Some("a")).validate(&[lot]), Err(ClusterConfigError::BadLotName("front desk".into())));
    }

    #[test]
    fn the_three_url_forms() {
        assert_eq!(parse_target("redis://127.0.0.1:6379/0"), Ok(RedisTarget::Server { url: "redis://127.0.0.1:6379/0".into(), tls: None }));
        assert_eq!(
            parse_target("rediss://u:p@redis.example:6380"),
            Ok(RedisTarget::Server { url: "rediss://u:p@redis.example:6380".into(), tls: Some(TlsFiles::default()) })
        );
        assert_eq!(
            parse_target("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster/3"),
            Ok(RedisTarget::Sentinel {
                sentinels: vec!["10.0.0.1:26379".into(), "10.0.0.2:26379".into()],
                master: "mymaster".into(),
                db: 3,
                username: None,
                password: Some("pw".into())
            })
        );
        for bad in ["", "127.0.0.1:6379", "http://x:1", "redis://", "redis://h:0", "redis://h:1/x", "redis+sentinel://h:1", "redis+sentinel://h/m", "redis+sentinel://h:1/m/x", "redis+sentinel://h:1,/m"] {
            assert!(parse_target(bad).is_err(), "{bad:?}");
        }
    }
}
