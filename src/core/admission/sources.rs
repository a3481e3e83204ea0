//! The bounded table of source addresses the admission room tracks.
//!
//! * At most `capacity` entries. A new source when the table is full replaces the least recently seen entry
//!   among the next [`EVICT_SCAN`] slots after a moving hand (the CLOCK approximation of LRU, O(1) per
//!   insertion) that holds nothing (no unconfirmed call, parked call or subscription): what a source holds
//!   is never forgotten. When every scanned entry holds something the new source is not tracked (the room
//!   then drops its request; holdings are themselves bounded by orbits, RTP ports and per-source caps).
//! * Idle entries go by themselves: every use of the table also looks at the next [`SWEEP_STEPS`] slots and
//!   removes those the caller calls idle (nothing held and nothing a fresh entry would not also say), so
//!   after a flood the table shrinks back as ordinary traffic goes on, with no timer.
//! * Keys are chosen by the peer: std's SipHash `HashMap` (collision-resistant) indexes the slots.

use super::bucket::{Bucket, Rate, Window};
use super::Reason;
use crate::time::Time;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// Slots looked at to find a victim when the table is full.
pub const EVICT_SCAN: usize = 32;
/// Slots looked at for idle entries on every use.
pub const SWEEP_STEPS: usize = 2;

/// What a source is tracked by: an IPv4 address; for IPv6 its /64 prefix (one host usually owns a whole
/// /64, so per-address state would let it rotate addresses forever), except for trusted proxies, which are
/// tracked by their exact address. An IPv4-mapped IPv6 address counts as the IPv4 address it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceKey {
    ip: IpAddr,
    pub trusted: bool,
}

impl SourceKey {
    pub fn new(ip: IpAddr, trusted: bool) -> SourceKey {
        let ip = match ip.to_canonical() {
            IpAddr::V6(v6) if !trusted => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
            other => other,
        };
        SourceKey { ip, trusted }
    }
}

/// Everything known about one source: its buckets, what it holds, and how much it was told and logged.
#[derive(Clone, Debug)]
pub struct Source {
    pub new_dialogs: Bucket,
    pub out_of_dialog: Bucket,
    pub in_dialog: Bucket,
    /// Calls answered 2xx whose ACK has not come.
    pub unconfirmed: u32,
    /// Orbits held by calls parked from this source.
    pub parked: u32,
    /// BLF subscriptions alive.
    pub subscriptions: u32,
    /// 503s sent in the current second.
    pub refusals: Window,
    /// Refusal log lines written in the current second.
    pub logged: Window,
    /// Refusals not logged one by one since the last line (summarised later).
    pub suppressed: u32,
    /// The reason of the last refusal, for the summary line.
    pub last_reason: Reason,
    /// The address last seen (the key may be a /64).
    pub last_ip: IpAddr,
    pub last_seen: Time,
}

impl Source {
    /// A source first seen at `now` from `ip`: full buckets at these rates (new dialogs, other out-of-dialog
    /// requests, in-dialog requests), nothing held, nothing refused.
    pub fn fresh(now: Time, ip: IpAddr, new_dialogs: Rate, out_of_dialog: Rate, in_dialog: Rate) -> Source {
        Source {
            new_dialogs: Bucket::full(new_dialogs, now),
            out_of_dialog: Bucket::full(out_of_dialog, now),
            in_dialog: Bucket::full(in_dialog, now),
            unconfirmed: 0,
            parked: 0,
            subscriptions: 0,
            refusals: Window::default(),
            logged: Window::default(),
            suppressed: 0,
            last_reason: Reason::Acl,
            last_ip: ip,
            last_seen: now,
        }
    }

    pub fn holds_anything(&self) -> bool {
        self.unconfirmed > 0 || self.parked > 0 || self.subscriptions > 0
    }
}

/// The table: slots in a `Vec` (swap-removed), an index from key to slot, and the CLOCK hand.
#[derive(Debug)]
pub struct SourceTable {
    slots: Vec<(SourceKey, Source)>,
    index: HashMap<SourceKey, usize>,
    hand: usize,
    capacity: usize,
}

impl SourceTable {
    /// An empty table for at most `capacity` sources (at least 1).
    pub fn new(capacity: usize) -> SourceTable {
        SourceTable { slots: Vec::new(), index: HashMap::new(), hand: 0, capacity: capacity.max(1) }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn get_mut(&mut self, key: &SourceKey) -> Option<&mut Source> {
        let i = *self.index.get(key)?;
        self.slots.get_mut(i).map(|(_, s)| s)
    }

    /// The entry of `key`, created with `make` when absent. `None` when the table is full and no scanned
    /// entry may be forgotten.
    pub fn get_or_insert(&mut self, key: SourceKey, make: impl FnOnce() -> Source) -> Option<&mut Source> {
        if let Some(&i) = self.index.get(&key) {
            return self.slots.get_mut(i).map(|(_, s)| s);
        }
        let slot = if self.slots.len() < self.capacity {
            self.slots.push((key, make()));
            self.slots.len() - 1
        } else {
            let victim = self.victim()?;
            let (old, _) = std::mem::replace(&mut self.slots[victim], (key, make()));
            self.index.remove(&old);
            victim
        };
        self.index.insert(key, slot);
        self.slots.get_mut(slot).map(|(_, s)| s)
    }

    /// The least recently seen entry holding nothing among the next [`EVICT_SCAN`] slots.
    fn victim(&mut self) -> Option<usize> {
        let n = self.slots.len();
        let mut best: Option<(Time, usize)> = None;
        for _ in 0..EVICT_SCAN.min(n) {
            self.hand = (self.hand + 1) % n;
            let (_, s) = &self.slots[self.hand];
            if !s.holds_anything() && best.is_none_or(|(t, _)| s.last_seen < t) {
                best = Some((s.last_seen, self.hand));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Looks at the next [`SWEEP_STEPS`] slots and removes each one `idle` says may go (`idle` sees it first,
    /// e.g. to log what it still owed).
    pub fn sweep(&mut self, mut idle: impl FnMut(&SourceKey, &mut Source) -> bool) {
        for _ in 0..SWEEP_STEPS {
            if self.slots.is_empty() {
                return;
            }
            self.hand = (self.hand + 1) % self.slots.len();
            let i = self.hand;
            let (key, source) = &mut self.slots[i];
            if idle(key, source) {
                self.remove_slot(i);
            }
        }
    }

    fn remove_slot(&mut self, i: usize) {
        let (key, _) = self.slots.swap_remove(i);
        self.index.remove(&key);
        if let Some((moved, _)) = self.slots.get(i) {
            self.index.insert(*moved, i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::admission::bucket::Rate;

    fn source(now: Time, ip: IpAddr) -> Source {
        let r = Rate::new(1.0, 1);
        Source::fresh(now, ip, r, r, r)
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn ipv6_sources_are_tracked_per_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(SourceKey::new(a, false), SourceKey::new(b, false));
        assert_ne!(SourceKey::new(a, false), SourceKey::new(c, false));
        assert_ne!(SourceKey::new(a, true), SourceKey::new(b, true), "trusted proxies: exact address");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(SourceKey::new(mapped, false), SourceKey::new(ip(1), false));
    }

    #[test]
    fn a_full_table_forgets_the_least_recently_seen_idle_entry_never_a_holder() {
        let mut t = SourceTable::new(3);
        for n in 0..3 {
            t.get_or_insert(SourceKey::new(ip(n), false), || source(Time::from_secs(10 + u64::from(n)), ip(n))).unwrap();
        }
        t.get_mut(&SourceKey::new(ip(0), false)).unwrap().parked = 1;
        t.get_or_insert(SourceKey::new(ip(9), false), || source(Time::from_secs(20), ip(9))).unwrap();
        assert_eq!(t.len(), 3);
        assert!(t.get_mut(&SourceKey::new(ip(0), false)).is_some(), "a holder is kept although oldest");
        assert!(t.get_mut(&SourceKey::new(ip(1), false)).is_none(), "the oldest idle entry went");
        for k in [ip(2), ip(9)] {
            t.get_mut(&SourceKey::new(k, false)).unwrap().subscriptions = 1;
        }
        assert!(t.get_or_insert(SourceKey::new(ip(10), false), || source(Time::from_secs(30), ip(10))).is_none(), "everyone holds something");
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn sweep_removes_idle_entries_and_keeps_the_index_right() {
        let mut t = SourceTable::new(100);
        for n in 0..10 {
            t.get_or_insert(SourceKey::new(ip(n), false), || source(Time::from_secs(1), ip(n))).unwrap().parked = n % 2;
        }
        for _ in 0..20 {
            t.sweep(|_, s| !s.holds_anything());
        }
        assert_eq!(t.len(), 5, "the five idle entries went");
        for n in 0..10 {
            let found = t.get_mut(&SourceKey::new(ip(n), false)).map(|s| s.parked);
            assert_eq!(found, (n % 2 == 1).then_some(1), "source {n}");
        }
    }
}
