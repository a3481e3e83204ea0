//! What the cluster writes into Redis and onto its pub/sub channel, and how it is read back (pure; the io
//! adapter and the room share it).
//!
//! Keys (`<prefix>` is `[cluster] key_prefix`, `parkd` by default; the lot name in braces is a Redis Cluster
//! hash tag, so every key of a lot lives in one slot):
//!
//! | key | type | value |
//! |---|---|---|
//! | `<prefix>:{<lot>}:orbit:<number>` | string, with the lease as TTL (`PX`) | `<fence> <node> <info JSON>` |
//! | `<prefix>:{<lot>}:fence` | integer, no TTL | the lot's fencing counter (`INCR`) |
//! | `<prefix>:{<lot>}:free` | sorted set, no TTL | orbit indexes (0-based) believed free, score = the index |
//! | `<prefix>:{<lot>}:held` | sorted set, no TTL | orbit indexes claimed, score = when the claim expires unless renewed (Redis time, ms) |
//!
//! The two sorted sets are the free-orbit index of a claim-any (see `io/cluster/scripts.rs`): every script moves
//! an index between them in the same step as it creates, renews or deletes the orbit's key.
//!
//! Channel `<prefix>:changes`, one message per change, fields separated by one space (lot and node names are
//! tokens without spaces, see [`super::is_token`]; the info JSON comes last and may contain spaces):
//!
//! | message | when |
//! |---|---|
//! | `claim <lot> <number> <fence> <node> <lease_ms> <info JSON>` | a claim was made or restored |
//! | `release <lot> <number> <fence> <node>` | a claim was deleted by its owner |
//! | `alive <node> <lease_ms> <sip URI>` | a node renewed its claims (every lease / 3) |

use super::{ClaimInfo, Fence, LotSpace, NodeName, Slot, SnapshotEntry};
use crate::ids::OrbitIdx;

/// A malformed key, value or message (another writer under parkd's prefix, or a node of another version).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a parkd cluster message: {0:?}")]
    Message(String),
    #[error("not a parkd orbit value: {0:?}")]
    Value(String),
    #[error("unknown lot {0:?} (are all nodes configured with the same lots?)")]
    UnknownLot(String),
    #[error("lot {lot:?} has no orbit {number:?}")]
    UnknownOrbit { lot: String, number: String },
}

/// A change another node (or this one) published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Claimed { slot: Slot, fence: Fence, owner: NodeName, lease_ms: u64, info: ClaimInfo },
    Released { slot: Slot, fence: Fence, owner: NodeName },
    Alive { node: NodeName, lease_ms: u64, sip: String },
}

/// The key names and the lots, shared by the room (to read messages) and the adapter (to name keys).
#[derive(Clone, Debug)]
pub struct Keyspace {
    pub prefix: String,
    pub lots: Vec<LotSpace>,
}

impl Keyspace {
    pub fn new(prefix: &str, lots: Vec<LotSpace>) -> Keyspace {
        Keyspace { prefix: prefix.to_string(), lots }
    }

    /// `<prefix>:changes`
    pub fn channel(&self) -> String {
        format!("{}:changes", self.prefix)
    }
    /// `<prefix>:{<lot>}:orbit:` — an orbit key without its number.
    pub fn orbit_key_stem(&self, lot: usize) -> String {
        format!("{}:{{{}}}:orbit:", self.prefix, self.lots[lot].name)
    }
    /// `<prefix>:{<lot>}:orbit:<number>`
    pub fn orbit_key(&self, slot: Slot) -> String {
        format!("{}{}", self.orbit_key_stem(slot.lot), self.number(slot))
    }
    /// `<prefix>:{<lot>}:fence`
    pub fn fence_key(&self, lot: usize) -> String {
        format!("{}:{{{}}}:fence", self.prefix, self.lots[lot].name)
    }
    /// `<prefix>:{<lot>}:free` — the lot's free orbit indexes.
    pub fn free_key(&self, lot: usize) -> String {
        format!("{}:{{{}}}:free", self.prefix, self.lots[lot].name)
    }
    /// `<prefix>:{<lot>}:held` — the lot's claimed orbit indexes by lease deadline.
    pub fn held_key(&self, lot: usize) -> String {
        format!("{}:{{{}}}:held", self.prefix, self.lots[lot].name)
    }
    /// The SCAN pattern that matches every orbit key of every lot.
    pub fn scan_pattern(&self) -> String {
        format!("{}:{{*}}:orbit:*", glob_escape(&self.prefix))
    }
    /// The number a phone dials for this orbit ("701").
    pub fn number(&self, slot: Slot) -> String {
        self.lots[slot.lot].orbits.name_of(slot.orbit.0)
    }
    pub fn lot_name(&self, lot: usize) -> &str {
        &self.lots[lot].name
    }

    /// The slot of `lot` name and orbit `number`.
    pub fn slot(&self, lot: &str, number: &str) -> Result<Slot, WireError> {
        let li = self.lots.iter().position(|l| l.name == lot).ok_or_else(|| WireError::UnknownLot(lot.to_string()))?;
        let idx = self.lots[li]
            .orbits
            .contains_number(number)
            .ok_or_else(|| WireError::UnknownOrbit { lot: lot.to_string(), number: number.to_string() })?;
        Ok(Slot { lot: li, orbit: OrbitIdx(idx) })
    }

    /// The slot an orbit key names (`None`: not one of ours).
    pub fn parse_orbit_key(&self, key: &str) -> Option<Slot> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":{")?;
        let (lot, rest) = rest.split_once('}')?;
        let number = rest.strip_prefix(":orbit:")?;
        self.slot(lot, number).ok()
    }

    /// Reads one pub/sub message.
    pub fn decode_change(&self, msg: &str) -> Result<Change, WireError> {
        let bad = || WireError::Message(msg.chars().take(200).collect());
        let (kind, rest) = msg.split_once(' ').ok_or_else(bad)?;
        match kind {
            "claim" => {
                let mut it = rest.splitn(6, ' ');
                let (lot, number, fence, owner, lease, info) =
                    (it.next(), it.next(), it.next(), it.next(), it.next(), it.next());
                let (Some(lot), Some(number), Some(fence), Some(owner), Some(lease), Some(info)) = (lot, number, fence, owner, lease, info) else {
                    return Err(bad());
                };
                Ok(Change::Claimed {
                    slot: self.slot(lot, number)?,
                    fence: Fence(fence.parse().map_err(|_| bad())?),
                    owner: NodeName::new(owner).ok_or_else(bad)?,
                    lease_ms: lease.parse().map_err(|_| bad())?,
                    info: serde_json::from_str(info).map_err(|_| bad())?,
                })
            }
            "release" => {
                let f: Vec<&str> = rest.split(' ').collect();
                let [lot, number, fence, owner] = f[..] else { return Err(bad()) };
                Ok(Change::Released {
                    slot: self.slot(lot, number)?,
                    fence: Fence(fence.parse().map_err(|_| bad())?),
                    owner: NodeName::new(owner).ok_or_else(bad)?,
                })
            }
            "alive" => {
                let mut it = rest.splitn(3, ' ');
                let (Some(node), Some(lease), Some(sip)) = (it.next(), it.next(), it.next()) else { return Err(bad()) };
                Ok(Change::Alive { node: NodeName::new(node).ok_or_else(bad)?, lease_ms: lease.parse().map_err(|_| bad())?, sip: sip.to_string() })
            }
            _ => Err(bad()),
        }
    }

    /// Reads one orbit key's value with its TTL into a snapshot entry.
    pub fn snapshot_entry(&self, slot: Slot, value: &str, ttl_ms: u64) -> Result<SnapshotEntry, WireError> {
        let (fence, owner, info) = parse_value(value)?;
        Ok(SnapshotEntry { slot, owner, fence, info, ttl_ms })
    }
}

/// The info JSON stored in a value and carried in `claim` messages.
pub fn info_json(info: &ClaimInfo) -> String {
    serde_json::to_string(info).unwrap_or_else(|_| "{}".into())
}

/// `<fence> <node> <info JSON>` → its parts.
pub fn parse_value(value: &str) -> Result<(Fence, NodeName, ClaimInfo), WireError> {
    let bad = || WireError::Value(value.chars().take(200).collect());
    let mut it = value.splitn(3, ' ');
    let (Some(fence), Some(owner), Some(info)) = (it.next(), it.next(), it.next()) else { return Err(bad()) };
    Ok((
        Fence(fence.parse().map_err(|_| bad())?),
        NodeName::new(owner).ok_or_else(bad)?,
        serde_json::from_str(info).map_err(|_| bad())?,
    ))
}

/// `<fence> <node>` at the start of a value (what renewals compare), without reading the info.
pub fn parse_owner(value: &str) -> Result<(Fence, NodeName), WireError> {
    let bad = || WireError::Value(value.chars().take(200).collect());
    let mut it = value.splitn(3, ' ');
    let (Some(fence), Some(owner)) = (it.next(), it.next()) else { return Err(bad()) };
    Ok((Fence(fence.parse().map_err(|_| bad())?), NodeName::new(owner).ok_or_else(bad)?))
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NumRange, SlotPolicy};

    fn ks() -> Keyspace {
        Keyspace::new(
            "parkd",
            vec![
                LotSpace { name: "default".into(), orbits: NumRange::parse("701-720").unwrap(), policy: SlotPolicy::First },
                LotSpace { name: "sales".into(), orbits: NumRange::parse("0801-0805").unwrap(), policy: SlotPolicy::First },
            ],
        )
    }

    #[test]
    fn keys_are_namespaced_and_read_back() {
        let k = ks();
        let s = Slot { lot: 1, orbit: OrbitIdx(2) };
        assert_eq!(k.orbit_key(s), "parkd:{sales}:orbit:0803");
        assert_eq!(k.fence_key(0), "parkd:{default}:fence");
        assert_eq!((k.free_key(1), k.held_key(1)), ("parkd:{sales}:free".to_string(), "parkd:{sales}:held".to_string()));
        assert_eq!(k.channel(), "parkd:changes");
        assert_eq!(k.parse_orbit_key("parkd:{sales}:orbit:0803"), Some(s));
        assert_eq!(k.parse_orbit_key("parkd:{sales}:orbit:803"), None, "zero padding is part of the number");
        assert_eq!(k.parse_orbit_key("parkd:{other}:orbit:701"), None);
        assert_eq!(k.parse_orbit_key("other:{default}:orbit:701"), None);
        assert_eq!(k.scan_pattern(), "parkd:{*}:orbit:*");
    }

    #[test]
    fn messages_round_trip_and_garbage_is_a_typed_error() {
        let k = ks();
        let info = ClaimInfo {
            parked: "sip:alice@x".into(),
            parked_name: Some("Alice Smith".into()),
            parker: None,
            since_ms: 5,
            dialog: Some(super::super::ParkedDialog { call_id: "a84b@pc33".into(), local_tag: "p1".into(), remote_tag: "x 9".into() }),
            node_sip: Some("sip:127.0.0.1:5070".into()),
        };
        let msg = format!("claim default 705 42 node-a 10000 {}", info_json(&info));
        assert_eq!(
            k.decode_change(&msg).unwrap(),
            Change::Claimed { slot: Slot { lot: 0, orbit: OrbitIdx(4) }, fence: Fence(42), owner: NodeName::new("node-a").unwrap(), lease_ms: 10_000, info }
        );
        assert_eq!(
            k.decode_change("release sales 0801 7 b").unwrap(),
            Change::Released { slot: Slot { lot: 1, orbit: OrbitIdx(0) }, fence: Fence(7), owner: NodeName::new("b").unwrap() }
        );
        assert_eq!(
            k.decode_change("alive b 3000 sip:127.0.0.1:5070").unwrap(),
            Change::Alive { node: NodeName::new("b").unwrap(), lease_ms: 3000, sip: "sip:127.0.0.1:5070".into() }
        );
        for bad in ["", "claim", "claim default 705 x a 1 {}", "release default 705 1", "alive", "hello a b", "claim default 705 1 a b {}"] {
            assert!(matches!(k.decode_change(bad), Err(WireError::Message(_))), "{bad:?}");
        }
        assert_eq!(k.decode_change("release nolot 705 1 a"), Err(WireError::UnknownLot("nolot".into())));
        assert!(matches!(k.decode_change("release default 799 1 a"), Err(WireError::UnknownOrbit { .. })));
    }

    #[test]
    fn values_parse() {
        let (f, n, i) = parse_value(r#"12 node-a {"parked":"sip:x@y z","since_ms":3}"#).unwrap();
        assert_eq!((f, n.as_str(), i.parked.as_str(), i.since_ms), (Fence(12), "node-a", "sip:x@y z", 3));
        assert_eq!(parse_owner("12 node-a {}").unwrap(), (Fence(12), NodeName::new("node-a").unwrap()));
        assert!(parse_value("12 node-a").is_err());
        assert!(parse_value("x node-a {}").is_err());
    }
}
