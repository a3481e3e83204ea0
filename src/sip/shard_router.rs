//! The io layer's router over SIP shards (`[server] sip_threads = N > 1`): the stateless rule of
//! [`super::shard`], plus two rules that keep a retrieve on the shard holding its orbit, so it is answered there
//! and not fetched from it across shards (README "Signalling shards").
//!
//! Before the stateless rule's `Replaces` and Call-ID steps:
//! * **sticky Call-IDs**: a request whose Call-ID a new INVITE was routed by its orbit goes where that INVITE
//!   went, for [`STICKY_FOR`] after the last such request (its retransmissions, its CANCEL, the ACK of a non-2xx,
//!   an INVITE retried with credentials), even if the orbit changed hands meanwhile. Requests inside the dialog
//!   need no memory: their Request-URI is parkd's Contact, which names its shard (RFC 3261 §12.2.1.1; a peer
//!   that sends them to the orbit number instead reaches the shard only while its Call-ID is remembered);
//! * **orbit owner**: a new INVITE whose Request-URI user is an orbit number one shard holds (in every lot that
//!   has that number) goes to that shard.
//!
//! Any shard can serve any new dialog (the orbit table is shared), so these rules only save work: an INVITE they
//! do not place (the retrieve code, a number two shards hold in different lots, a full sticky table) goes by its
//! Call-ID as before and its shard fetches the call. Plain data, time a parameter: no clock, no lock.

use super::shard::{shard_of_call_id, Peek};
use crate::cluster::{Change, Keyspace, NodeName};
use crate::time::Time;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// How long a Call-ID routed by its orbit stays on that shard: 64×T1, the life of an INVITE transaction.
pub const STICKY_FOR: Duration = Duration::from_secs(32);

/// At most this many sticky Call-IDs; past it a new INVITE is routed by its Call-ID (correct, one fetch dearer).
pub const STICKY_MAX: usize = 65_536;

/// Which shard holds each occupied orbit, by the number a phone dials. Kept in step with the shared orbit table
/// (`Claimed` / `Released` changes).
#[derive(Debug, Default)]
pub struct OrbitOwners {
    /// Number → (lot, shard) for each lot where an orbit of that number is held.
    by_number: HashMap<Box<str>, Vec<(usize, usize)>>,
}

impl OrbitOwners {
    /// Orbit `number` of `lot` is now held by `shard`.
    pub fn claimed(&mut self, number: &str, lot: usize, shard: usize) {
        let holders = self.by_number.entry(number.into()).or_default();
        holders.retain(|&(l, _)| l != lot);
        holders.push((lot, shard));
    }

    /// Orbit `number` of `lot` is free again.
    pub fn released(&mut self, number: &str, lot: usize) {
        if let Some(holders) = self.by_number.get_mut(number) {
            holders.retain(|&(l, _)| l != lot);
            if holders.is_empty() {
                self.by_number.remove(number);
            }
        }
    }

    /// Follows one change of the shared orbit table, whose nodes are the shards `names` (in shard order).
    pub fn follow(&mut self, change: &Change, keys: &Keyspace, names: &[NodeName]) {
        match change {
            Change::Claimed { slot, owner, .. } => match names.iter().position(|n| n == owner) {
                Some(holder) => self.claimed(&keys.number(*slot), slot.lot, holder),
                None => self.released(&keys.number(*slot), slot.lot),
            },
            Change::Released { slot, .. } => self.released(&keys.number(*slot), slot.lot),
            Change::Alive { .. } => {}
        }
    }

    /// The shard holding `number` in every lot where it is held, if it is held and by one shard only.
    pub fn shard_of(&self, number: &str) -> Option<usize> {
        let holders = self.by_number.get(number)?;
        let (_, first) = *holders.first()?;
        holders.iter().all(|&(_, s)| s == first).then_some(first)
    }

    /// No orbit is held.
    pub fn is_empty(&self) -> bool {
        self.by_number.is_empty()
    }
}

/// The router of one process's shards: the stateless rule and the sticky Call-IDs (module doc).
#[derive(Debug)]
pub struct Router {
    n: usize,
    /// Call-ID → (shard, until).
    sticky: HashMap<Box<str>, (usize, Time)>,
    /// The sticky entries in the order they were made, to forget them when they expire (oldest first).
    expiry: VecDeque<(Time, Box<str>)>,
    /// New INVITEs placed on their orbit's shard rather than their Call-ID's, since the start.
    placed_by_orbit: u64,
}

impl Router {
    pub fn new(n: usize) -> Router {
        Router { n: n.max(1), sticky: HashMap::new(), expiry: VecDeque::new(), placed_by_orbit: 0 }
    }

    /// The shard `msg` goes to at `now`; `owner_of` answers which shard holds an orbit number
    /// ([`OrbitOwners::shard_of`], read under the table's lock by the io layer).
    pub fn route(&mut self, msg: &[u8], now: Time, owner_of: impl FnOnce(&str) -> Option<usize>) -> usize {
        if self.n <= 1 {
            return 0;
        }
        self.forget_expired(now);
        let p = Peek::of(msg);
        if let Some(k) = p.marked(self.n) {
            return k;
        }
        if !p.request {
            return p.shard(self.n);
        }
        if let Some(call_id) = p.call_id.map(str::trim) {
            if let Some(&(k, _)) = self.sticky.get(call_id) {
                // Retransmitted, retried with credentials, or a peer's request in the dialog: from now.
                self.stick(call_id, k, now);
                return k;
            }
        }
        if p.method == b"INVITE" && p.replaces.is_none() {
            if let (Some(user), Some(call_id)) = (p.uri_user, p.call_id) {
                if let Some(k) = owner_of(user).filter(|&k| k < self.n) {
                    if k == shard_of_call_id(call_id, self.n) {
                        return k;
                    }
                    if self.stick(call_id.trim(), k, now) {
                        self.placed_by_orbit += 1;
                        return k;
                    }
                }
            }
        }
        p.shard(self.n)
    }

    /// New INVITEs placed on their orbit's shard rather than their Call-ID's (`parkd_shard_placed_by_orbit_total`).
    pub fn placed_by_orbit(&self) -> u64 {
        self.placed_by_orbit
    }

    /// Sticky Call-IDs remembered now (for tests and gauges).
    pub fn sticky_len(&self) -> usize {
        self.sticky.len()
    }

    /// Remembers that `call_id` goes to shard `k` until [`STICKY_FOR`] from `now`; false when the table is full.
    fn stick(&mut self, call_id: &str, k: usize, now: Time) -> bool {
        let until = now + STICKY_FOR;
        if let Some(entry) = self.sticky.get_mut(call_id) {
            // Its queue entry stays; `forget_expired` finds the later deadline here and queues it again.
            *entry = (k, until);
            return true;
        }
        if self.sticky.len() >= STICKY_MAX {
            return false;
        }
        self.sticky.insert(call_id.into(), (k, until));
        self.expiry.push_back((until, call_id.into()));
        true
    }

    /// Forgets the Call-IDs whose deadline has passed. The queue holds one entry per remembered Call-ID; an entry
    /// whose Call-ID was stuck again since is queued again with its new deadline (so the queue is only roughly in
    /// deadline order, and a Call-ID may be forgotten a little late, never early).
    fn forget_expired(&mut self, now: Time) {
        while self.expiry.front().is_some_and(|(until, _)| *until <= now) {
            let Some((_, id)) = self.expiry.pop_front() else { return };
            match self.sticky.get(&id) {
                Some(&(_, until)) if until > now => self.expiry.push_back((until, id)),
                _ => {
                    self.sticky.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(first: &str, call_id: &str, extra: &str) -> Vec<u8> {
        format!("{first}\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nCall-ID: {call_id}\r\n{extra}Content-Length: 0\r\n\r\n").into_bytes()
    }

    /// A Call-ID hashing to shard `k` of 2.
    fn id_on(k: usize, name: &str) -> String {
        (0..).map(|i| format!("{name}-{i}@h")).find(|c| shard_of_call_id(c, 2) == k).unwrap()
    }

    fn owners_703_on(k: usize) -> OrbitOwners {
        let mut o = OrbitOwners::default();
        o.claimed("703", 0, k);
        o
    }

    #[test]
    fn a_retrieve_goes_to_the_shard_holding_its_orbit_and_its_cancel_and_ack_follow_it() {
        let mut r = Router::new(2);
        let mut owners = owners_703_on(0);
        let id = id_on(1, "carol");
        let t = Time::ZERO;
        assert_eq!(r.route(&msg("INVITE sip:703@127.0.0.1 SIP/2.0", &id, ""), t, |u| owners.shard_of(u)), 0);
        assert_eq!(r.placed_by_orbit(), 1);
        // The call leaves the orbit (retrieved): the INVITE's CANCEL and a non-2xx's ACK still go to shard 0.
        owners.released("703", 0);
        assert!(owners.is_empty());
        let t = t + Duration::from_secs(1);
        assert_eq!(r.route(&msg("CANCEL sip:703@127.0.0.1 SIP/2.0", &id, ""), t, |u| owners.shard_of(u)), 0);
        assert_eq!(r.route(&msg("ACK sip:703@127.0.0.1 SIP/2.0", &id, ""), t, |u| owners.shard_of(u)), 0);
        // Inside the dialog the Contact's mark decides; a response its top Via.
        assert_eq!(r.route(&msg("BYE sip:parkd@127.0.0.1:5060;parkd-shard=1 SIP/2.0", &id, ""), t, |_| None), 1);
        let resp = format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKpks0-00ab;rport\r\nCall-ID: {id}\r\n\r\n");
        assert_eq!(r.route(resp.as_bytes(), t, |_| None), 0);
        // After an INVITE transaction's life the Call-ID is forgotten: its hash again.
        let t = t + STICKY_FOR;
        assert_eq!(r.route(&msg("CANCEL sip:703@127.0.0.1 SIP/2.0", &id, ""), t, |_| None), 1);
        assert_eq!(r.sticky_len(), 0);
    }

    #[test]
    fn an_invite_whose_orbit_is_free_or_unknown_goes_by_its_call_id_and_is_not_remembered() {
        let mut r = Router::new(2);
        let owners = owners_703_on(0);
        let id = id_on(1, "dave");
        for user in ["704", "700", "parkd"] {
            assert_eq!(r.route(&msg(&format!("INVITE sip:{user}@127.0.0.1 SIP/2.0"), &id, ""), Time::ZERO, |u| owners.shard_of(u)), 1, "{user}");
        }
        // Its own shard anyway: nothing to remember.
        let id0 = id_on(0, "erin");
        assert_eq!(r.route(&msg("INVITE sip:703@127.0.0.1 SIP/2.0", &id0, ""), Time::ZERO, |u| owners.shard_of(u)), 0);
        assert_eq!(r.sticky_len(), 0);
        // Only an INVITE is placed by its orbit (a SUBSCRIBE to 703 is a watcher's dialog, kept by its Call-ID).
        assert_eq!(r.route(&msg("SUBSCRIBE sip:703@127.0.0.1 SIP/2.0", &id, "Event: dialog\r\n"), Time::ZERO, |u| owners.shard_of(u)), 1);
    }

    #[test]
    fn a_number_held_by_two_shards_in_two_lots_is_not_placed() {
        let mut o = owners_703_on(0);
        o.claimed("703", 1, 1);
        assert_eq!(o.shard_of("703"), None);
        o.released("703", 1);
        assert_eq!(o.shard_of("703"), Some(0));
        // The same lot claimed again (a restart's re-claim): one holder, the new one.
        o.claimed("703", 0, 1);
        assert_eq!(o.shard_of("703"), Some(1));
    }

    #[test]
    fn replaces_and_marks_win_over_the_orbit() {
        let mut r = Router::new(2);
        let owners = owners_703_on(0);
        let parked = id_on(1, "parked");
        let new = id_on(1, "new");
        let with_replaces = msg("INVITE sip:703@127.0.0.1 SIP/2.0", &new, &format!("Replaces: {parked};to-tag=a;from-tag=b\r\n"));
        assert_eq!(r.route(&with_replaces, Time::ZERO, |u| owners.shard_of(u)), 1);
        let marked = msg("INVITE sip:703@127.0.0.1;parkd-shard=1 SIP/2.0", &new, "");
        assert_eq!(r.route(&marked, Time::ZERO, |u| owners.shard_of(u)), 1);
        assert_eq!(r.sticky_len(), 0);
    }

    #[test]
    fn the_sticky_table_is_bounded_and_a_full_one_routes_by_call_id() {
        let mut r = Router::new(2);
        let t = Time::ZERO;
        let ids: Vec<String> = (0..).map(|i| format!("x{i}")).filter(|c| shard_of_call_id(c, 2) == 1).take(STICKY_MAX + 1).collect();
        for id in &ids[..STICKY_MAX] {
            assert_eq!(r.route(&msg("INVITE sip:703@h SIP/2.0", id, ""), t, |_| Some(0)), 0);
        }
        assert_eq!(r.sticky_len(), STICKY_MAX);
        assert_eq!(r.route(&msg("INVITE sip:703@h SIP/2.0", &ids[STICKY_MAX], ""), t, |_| Some(0)), 1, "full: by its Call-ID");
        // Everything expires together and is forgotten at the next message.
        assert_eq!(r.route(&msg("OPTIONS sip:h SIP/2.0", "o", ""), t + STICKY_FOR, |_| None), shard_of_call_id("o", 2));
        assert_eq!(r.sticky_len(), 0);
    }

    #[test]
    fn a_call_id_is_remembered_until_sticky_for_after_its_last_request() {
        let mut r = Router::new(2);
        let id = id_on(1, "retry");
        let invite = msg("INVITE sip:703@h SIP/2.0", &id, "");
        assert_eq!(r.route(&invite, Time::ZERO, |_| Some(0)), 0);
        // Retried with credentials 20 s later: remembered to 52 s, though its first deadline (32 s) passes.
        assert_eq!(r.route(&invite, Time::ZERO + Duration::from_secs(20), |_| None), 0);
        let ack = msg("ACK sip:703@h SIP/2.0", &id, "");
        assert_eq!(r.route(&ack, Time::ZERO + Duration::from_secs(40), |_| None), 0, "the first deadline passed, the second holds");
        // The ACK was the last request: forgotten 32 s after it.
        assert_eq!(r.route(&ack, Time::ZERO + Duration::from_secs(71), |_| None), 0);
        assert_eq!(r.route(&ack, Time::ZERO + Duration::from_secs(71) + STICKY_FOR, |_| None), 1);
        assert_eq!(r.sticky_len(), 0);
    }
}
