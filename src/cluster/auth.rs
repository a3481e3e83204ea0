//! The authenticated internal header of a cross-node retrieve (docs/cluster-design.md §3.3): node B, taking
//! a retrieve for an orbit node A holds, sends A an INVITE carrying
//!
//! ```text
//! Parkd-Cluster: node=<B>;ts=<unix seconds>;nonce=<16 hex>;sig=<hex HMAC-SHA256(secret, "v1|B|ts|nonce|Call-ID|orbit")>
//! ```
//!
//! A accepts it (skipping its own admission for that request: B did it) only if the signature is right for that
//! Call-ID and orbit, the time is within `window` of A's clock, and the nonce was not seen in that window.
//! Sans-IO: the time comes in as `now`, the nonce from the caller's RNG; the replay memory is plain data bounded
//! by the window.

use super::NodeName;
use crate::time::Time;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

/// The header's name.
pub const HEADER: &str = "Parkd-Cluster";

/// Why a header was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("malformed {HEADER} header")]
    Malformed,
    #[error("{HEADER}: bad signature")]
    BadSignature,
    #[error("{HEADER}: time {ts} is more than {window_s} s from ours ({now})")]
    Stale { ts: u64, now: u64, window_s: u64 },
    #[error("{HEADER}: nonce already used")]
    Replayed,
}

/// Signs and checks the header with the cluster's shared secret.
#[derive(Debug)]
pub struct ClusterAuth {
    secret: Vec<u8>,
    window: Duration,
    /// (expiry, node, nonce) of the headers accepted, oldest first, and the same pairs for lookup.
    seen_order: BTreeSet<(Time, NodeName, u64)>,
    seen: HashSet<(NodeName, u64)>,
}

impl ClusterAuth {
    /// `window`: how far the header's time may be from ours (30 s is plenty with NTP).
    pub fn new(secret: &[u8], window: Duration) -> ClusterAuth {
        ClusterAuth { secret: secret.to_vec(), window, seen_order: BTreeSet::new(), seen: HashSet::new() }
    }

    fn mac(&self, node: &str, ts: u64, nonce: u64, call_id: &str, orbit: &str) -> Hmac<Sha256> {
        // new_from_slice accepts keys of any length (HMAC hashes long keys); it cannot fail for HMAC.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        m.update(format!("v1|{node}|{ts}|{nonce:016x}|{call_id}|{orbit}").as_bytes());
        m
    }

    /// The header value node `node` sends at `now` for the INVITE with `call_id` to `orbit`.
    pub fn sign(&self, node: &NodeName, now: Time, nonce: u64, call_id: &str, orbit: &str) -> String {
        let ts = now.as_secs();
        let sig = self.mac(node.as_str(), ts, nonce, call_id, orbit).finalize().into_bytes();
        format!("node={node};ts={ts};nonce={nonce:016x};sig={}", hex(&sig))
    }

    /// Checks a received header for the INVITE with `call_id` to `orbit`; the sending node's name if it holds.
    pub fn verify(&mut self, header: &str, now: Time, call_id: &str, orbit: &str) -> Result<NodeName, AuthError> {
        let (mut node, mut ts, mut nonce, mut sig) = (None, None, None, None);
        for part in header.split(';') {
            let (k, v) = part.trim().split_once('=').ok_or(AuthError::Malformed)?;
            match k {
                "node" => node = NodeName::new(v),
                "ts" => ts = v.parse::<u64>().ok(),
                "nonce" if v.len() == 16 => nonce = u64::from_str_radix(v, 16).ok(),
                "sig" => sig = unhex(v),
                _ => return Err(AuthError::Malformed),
            }
        }
        let (Some(node), Some(ts), Some(nonce), Some(sig)) = (node, ts, nonce, sig) else { return Err(AuthError::Malformed) };
        self.mac(node.as_str(), ts, nonce, call_id, orbit).verify_slice(&sig).map_err(|_| AuthError::BadSignature)?;
        let (then, w) = (Time::from_secs(ts), self.window);
        if then + w < now || now + w < then {
            return Err(AuthError::Stale { ts, now: now.as_secs(), window_s: w.as_secs() });
        }
        // Forget what is older than the window: a header that old is refused as stale anyway.
        while let Some(first) = self.seen_order.first().cloned() {
            if first.0 > now {
                break;
            }
            self.seen_order.pop_first();
            self.seen.remove(&(first.1, first.2));
        }
        if !self.seen.insert((node.clone(), nonce)) {
            return Err(AuthError::Replayed);
        }
        self.seen_order.insert((then + w, node.clone(), nonce));
        Ok(node)
    }

    /// How many accepted headers are remembered (bounded by the window).
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(30);

    fn b() -> NodeName {
        NodeName::new("park-b").unwrap()
    }

    #[test]
    fn hmac_sha256_matches_rfc4231_case_2() {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(hex(&m.finalize().into_bytes()), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn a_signed_header_is_accepted_once_for_its_call_and_orbit() {
        let now = Time::from_secs(1_800_000_000);
        let a = ClusterAuth::new(b"a shared cluster secret", W);
        let mut check = ClusterAuth::new(b"a shared cluster secret", W);
        let h = a.sign(&b(), now, 0x1234, "call-1@pc", "701");
        assert!(h.starts_with("node=park-b;ts=1800000000;nonce=0000000000001234;sig="), "{h}");
        assert_eq!(check.verify(&h, now + Duration::from_secs(2), "call-1@pc", "701"), Ok(b()));
        assert_eq!(check.verify(&h, now + Duration::from_secs(3), "call-1@pc", "701"), Err(AuthError::Replayed));
        let h2 = a.sign(&b(), now, 0x1235, "call-1@pc", "701");
        assert_eq!(check.verify(&h2, now, "call-1@pc", "702"), Err(AuthError::BadSignature), "another orbit");
        assert_eq!(check.verify(&h2, now, "call-2@pc", "701"), Err(AuthError::BadSignature), "another call");
        let other = ClusterAuth::new(b"another secret", W).sign(&b(), now, 7, "call-1@pc", "701");
        assert_eq!(check.verify(&other, now, "call-1@pc", "701"), Err(AuthError::BadSignature), "another secret");
        let forged = h2.replace("node=park-b", "node=park-c");
        assert_eq!(check.verify(&forged, now, "call-1@pc", "701"), Err(AuthError::BadSignature), "the node name is signed");
    }

    #[test]
    fn stale_or_future_headers_and_garbage_are_refused_and_memory_stays_bounded() {
        let now = Time::from_secs(1_800_000_000);
        let a = ClusterAuth::new(b"s", W);
        let mut check = ClusterAuth::new(b"s", W);
        let old = a.sign(&b(), now - Duration::from_secs(31), 1, "c", "701");
        assert!(matches!(check.verify(&old, now, "c", "701"), Err(AuthError::Stale { .. })));
        let future = a.sign(&b(), now + Duration::from_secs(31), 2, "c", "701");
        assert!(matches!(check.verify(&future, now, "c", "701"), Err(AuthError::Stale { .. })));
        for bad in ["", "node=a", "node=a;ts=1;nonce=1;sig=00", "node=a b;ts=1;nonce=0000000000000001;sig=00", "x=1", "node=a;ts=1;nonce=0000000000000001;sig=0g"] {
            assert_eq!(check.verify(bad, now, "c", "701"), Err(AuthError::Malformed), "{bad:?}");
        }
        for i in 0..100 {
            let t = now + Duration::from_secs(i);
            assert!(check.verify(&a.sign(&b(), t, i, "c", "701"), t, "c", "701").is_ok());
        }
        assert!(check.remembered() <= 31, "only the last window is remembered: {}", check.remembered());
    }
}
