//! Does the claims' lease outlast a Sentinel failover? A claim lives `lease` after its last renewal (renewed every
//! lease/3), and nobody can renew it while the master is down: the replica Sentinel promotes holds the claims with
//! the expiry times the old master gave them. If the failover takes longer than what is left of the lease, every
//! claim expires on the new master before its node reaches it, and another node may take the orbit of a call that
//! is still parked (the node then moves its call to another orbit, `orbit_lost`). Sentinel declares the master down
//! after `down-after-milliseconds` (30 s by default) and then elects and promotes (measured 1–2 s on loopback), so
//! parkd asks each Sentinel for that setting once at start and warns when the lease is too short for it.

use crate::config::RedisTarget;
use std::time::Duration;

/// What a failover adds to `down-after-milliseconds` before a node renews on the new master: the election and
/// promotion (1–2 s measured with one Sentinel on loopback) and the node's reconnection (0.5 s probe).
pub const FAILOVER_MARGIN: Duration = Duration::from_secs(3);

/// The shortest time a claim is guaranteed to live after the master dies: it was renewed at most lease/3 earlier.
pub fn guaranteed_after_failure(lease: Duration) -> Duration {
    lease - lease / 3
}

/// The shortest lease that outlasts a failover detected after `down_after`.
pub fn lease_needed(down_after: Duration) -> Duration {
    // lease·2/3 ≥ down_after + margin, rounded up to whole seconds (`--lease` takes seconds).
    let need = (down_after + FAILOVER_MARGIN).as_millis() * 3 / 2;
    Duration::from_secs(need.div_ceil(1000) as u64)
}

/// `Some(needed lease)` when `lease` does not outlast a failover with this `down-after-milliseconds`.
pub fn too_short(lease: Duration, down_after: Duration) -> Option<Duration> {
    (guaranteed_after_failure(lease) < down_after + FAILOVER_MARGIN).then(|| lease_needed(down_after))
}

/// `down-after-milliseconds` from a `SENTINEL MASTER <name>` reply (flat field/value pairs).
pub fn down_after_of(fields: &[String]) -> Option<Duration> {
    fields.chunks_exact(2).find(|kv| kv[0] == "down-after-milliseconds").and_then(|kv| kv[1].parse().ok()).map(Duration::from_millis)
}

/// Asks the Sentinels of `target` (when it is one) for the master's `down-after-milliseconds` and logs a warning
/// when `lease` is too short for a failover. Best effort: a Sentinel that does not answer is skipped.
pub async fn check(target: &RedisTarget, lease: Duration) {
    let RedisTarget::Sentinel { sentinels, master, password, .. } = target else { return };
    for s in sentinels {
        let Some(fields) = ask(s, master, password.as_deref()).await else { continue };
        let Some(down_after) = down_after_of(&fields) else { continue };
        match too_short(lease, down_after) {
            Some(need) => tracing::warn!(
                lease_s = lease.as_secs(),
                sentinel = %s,
                down_after_ms = down_after.as_millis() as u64,
                lease_needed_s = need.as_secs(),
                "cluster: the lease is shorter than a Sentinel failover: claims would expire on the promoted replica \
                 before this node reaches it, and another node could take a parked call's orbit. Raise --lease / \
                 [cluster] lease, or lower Sentinel's down-after-milliseconds"
            ),
            None => tracing::info!(lease_s = lease.as_secs(), down_after_ms = down_after.as_millis() as u64, "cluster: the lease outlasts a Sentinel failover"),
        }
        return;
    }
    tracing::warn!(master = %master, "cluster: no Sentinel told its down-after-milliseconds; cannot check that the lease outlasts a failover");
}

async fn ask(sentinel: &str, master: &str, password: Option<&str>) -> Option<Vec<String>> {
    use redis::IntoConnectionInfo;
    let (host, port) = sentinel.rsplit_once(':').unwrap_or((sentinel, "26379"));
    let addr = redis::ConnectionAddr::Tcp(host.trim_start_matches('[').trim_end_matches(']').to_string(), port.parse().unwrap_or(26379));
    let mut info = addr.into_connection_info().ok()?;
    if let Some(p) = password {
        info = info.set_redis_settings(redis::RedisConnectionInfo::default().set_password(p));
    }
    let client = redis::Client::open(info).ok()?;
    let query = async {
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("SENTINEL").arg("MASTER").arg(master).query_async::<Vec<String>>(&mut c).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(2), query).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn sentinel_defaults_need_a_long_lease() {
        // Sentinel's default down-after-milliseconds (30 s) against parkd's default lease (10 s): too short.
        assert_eq!(too_short(S(10), S(30)), Some(S(50)));
        assert_eq!(too_short(S(50), S(30)), None);
    }

    #[test]
    fn a_fast_sentinel_fits_a_short_lease() {
        // down-after 1 s: a claim must live 4 s after the master dies → lease 6 s.
        assert_eq!(lease_needed(Duration::from_millis(1000)), S(6));
        assert_eq!(too_short(S(6), Duration::from_millis(1000)), None);
        assert_eq!(too_short(S(5), Duration::from_millis(1000)), Some(S(6)));
        // The CI case that lost claims: lease 3 s, down-after 1 s, promotion 2.9 s after the kill.
        assert!(too_short(S(3), Duration::from_millis(1000)).is_some());
    }

    #[test]
    fn reads_down_after_from_the_sentinel_master_reply() {
        let f = ["name", "parkm", "ip", "127.0.0.1", "down-after-milliseconds", "1000", "quorum", "1"].map(String::from);
        assert_eq!(down_after_of(&f), Some(Duration::from_millis(1000)));
        assert_eq!(down_after_of(&f[..4]), None);
    }
}
