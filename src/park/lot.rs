//! A parking lot: its numbers (park code, orbits) and which orbit holds which call.
//!
//! Pure data and policy: no SIP, no time. Orbits are indices into the lot's range; `name_of` turns an index
//! into the number a phone dials.
//!
//! Costs: which orbits are free is kept in a [`FreeIndex`], so picking an orbit (every policy), counting and
//! walking the occupied orbits are O(log n) per answer in the lot's size, never a scan of the lot.

use super::free_index::FreeIndex;
use crate::config::{LotConfig, SlotPolicy};
use rand::Rng;

pub use crate::ids::OrbitIdx;

/// What a dialed number means in a lot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialed {
    /// The lot's park code (indirect park).
    ParkCode,
    /// One of the lot's orbits.
    Orbit(OrbitIdx),
    /// The lot's retrieve code: take the longest-parked call.
    RetrieveCode,
}

/// Why an orbit could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("orbit is occupied")]
    Occupied,
    #[error("every orbit of the lot is occupied")]
    LotFull,
}

/// One lot's orbits. `T` is what occupies an orbit (the engine stores its call handle).
#[derive(Clone, Debug)]
pub struct Lot<T> {
    pub cfg: LotConfig,
    /// The configured orbits (`0..capacity`), then the retired ones (see [`Lot::reconfigure`]).
    orbits: Vec<Option<T>>,
    /// Index used last, for the `next` policy.
    last: Option<OrbitIdx>,
    /// Which configured orbits are free (kept in step with `orbits[..capacity]`).
    free: FreeIndex,
    /// Orbits a reload took out of the range while a call was in them (issue 21): index `capacity + k` is
    /// `retired[k]`, named by its old number. Such a call stays until it leaves and can be retrieved by that
    /// number; nothing can be parked there; the slot is dropped at the next reload once empty.
    retired: Vec<String>,
    /// Calls in retired orbits.
    retired_occupied: usize,
    /// The lot was removed from the configuration by a reload: its calls stay until they leave, nothing new
    /// is parked in it, and it answers no number of its own (its calls are still retrievable by orbit number
    /// where no configured lot has that number).
    pub removed: bool,
}

/// Where a reload moved an occupied orbit (old index → new index; a new index ≥ capacity is retired).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved<T> {
    pub who: T,
    pub from: OrbitIdx,
    pub to: OrbitIdx,
}

impl<T: Copy + PartialEq> Lot<T> {
    pub fn new(cfg: LotConfig) -> Lot<T> {
        let n = cfg.orbits.len();
        Lot { cfg, orbits: vec![None; n], last: None, free: FreeIndex::new(n), retired: Vec::new(), retired_occupied: 0, removed: false }
    }

    /// Applies a new configuration (a reload) keeping every call: a call whose orbit number is still in the
    /// new range keeps that number (at its new index); one whose number left the range moves to a retired
    /// orbit (index ≥ the new capacity, see the `retired` field). Retired orbits that are empty are dropped. The
    /// free index is rebuilt (O(new size + calls)). Returns every occupied orbit whose index changed.
    pub fn reconfigure(&mut self, cfg: LotConfig) -> Vec<Moved<T>> {
        let old: Vec<(OrbitIdx, T, String)> = self.occupants().map(|(i, who)| (i, who, self.orbit_name(i))).collect();
        let last_name = self.last.filter(|l| l.0 < self.capacity()).map(|l| self.orbit_name(l));
        let removed = self.removed;
        *self = Lot::new(cfg);
        self.removed = removed;
        self.last = last_name.and_then(|n| self.cfg.orbits.contains_number(&n)).map(OrbitIdx);
        let mut moved = Vec::new();
        let mut retired_slots: Vec<Option<T>> = Vec::new();
        for (from, who, name) in old {
            let to = match self.cfg.orbits.contains_number(&name) {
                Some(i) => {
                    self.orbits[i] = Some(who);
                    self.free.set_free(i, false);
                    OrbitIdx(i)
                }
                None => {
                    self.retired.push(name);
                    retired_slots.push(Some(who));
                    self.retired_occupied += 1;
                    OrbitIdx(self.capacity() + retired_slots.len() - 1)
                }
            };
            if to != from {
                moved.push(Moved { who, from, to });
            }
        }
        self.orbits.extend(retired_slots);
        moved
    }

    /// Puts `who` in a new retired orbit named `name` (a call restored after a restart whose number is no longer
    /// in the range). Returns its index.
    pub fn adopt_retired(&mut self, name: &str, who: T) -> OrbitIdx {
        self.retired.push(name.to_string());
        self.orbits.push(Some(who));
        self.retired_occupied += 1;
        OrbitIdx(self.orbits.len() - 1)
    }

    /// Whether `idx` is a retired orbit (out of the configured range since a reload, see [`Lot::reconfigure`]).
    pub fn is_retired(&self, idx: OrbitIdx) -> bool {
        idx.0 >= self.capacity() && idx.0 < self.orbits.len()
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// What `user` (the Request-URI user part) means in this lot, if anything.
    pub fn dialed(&self, user: &str) -> Option<Dialed> {
        if user == self.cfg.park_code {
            return Some(Dialed::ParkCode);
        }
        if self.cfg.retrieve_code.as_deref() == Some(user) {
            return Some(Dialed::RetrieveCode);
        }
        self.cfg.orbits.contains_number(user).map(|i| Dialed::Orbit(OrbitIdx(i))).or_else(|| self.dialed_retired(user))
    }

    /// A retired orbit still holding a call, by its old number.
    fn dialed_retired(&self, user: &str) -> Option<Dialed> {
        let cap = self.capacity();
        let k = self.retired.iter().enumerate().position(|(k, n)| n == user && self.orbits.get(cap + k).is_some_and(Option::is_some))?;
        Some(Dialed::Orbit(OrbitIdx(cap + k)))
    }

    /// What `user` means in a lot a reload removed: only its occupied orbits, to retrieve their calls.
    pub fn dialed_removed(&self, user: &str) -> Option<Dialed> {
        match self.dialed(user)? {
            Dialed::Orbit(i) if self.occupant(i).is_some() => Some(Dialed::Orbit(i)),
            _ => None,
        }
    }

    /// The number of orbit `idx` as dialed ("701"); a retired orbit keeps its old number.
    pub fn orbit_name(&self, idx: OrbitIdx) -> String {
        match idx.0.checked_sub(self.capacity()) {
            Some(k) => self.retired.get(k).cloned().unwrap_or_default(),
            None => self.cfg.orbits.name_of(idx.0),
        }
    }

    pub fn occupant(&self, idx: OrbitIdx) -> Option<T> {
        self.orbits.get(idx.0).copied().flatten()
    }

    /// Occupied orbits, retired ones included.
    pub fn occupied(&self) -> usize {
        self.capacity() - self.free.free_count() + self.retired_occupied
    }

    /// The configured orbits (retired ones not counted).
    pub fn capacity(&self) -> usize {
        self.free.len()
    }

    pub fn is_full(&self) -> bool {
        self.free.free_count() == 0
    }

    /// Every occupied orbit and its occupant, in orbit order (free orbits are skipped, not visited), then the
    /// occupied retired orbits.
    pub fn occupants(&self) -> impl Iterator<Item = (OrbitIdx, T)> + '_ {
        let mut next = 0;
        let configured = std::iter::from_fn(move || {
            let i = self.free.next_occupied_from(next)?;
            next = i + 1;
            Some((OrbitIdx(i), self.orbits.get(i).copied().flatten()?))
        });
        let cap = self.capacity();
        let retired = self.orbits.get(cap..).unwrap_or(&[]).iter().enumerate().filter_map(move |(k, o)| o.map(|w| (OrbitIdx(cap + k), w)));
        configured.chain(retired)
    }

    /// Takes orbit `idx` for `who` (directed park).
    pub fn claim(&mut self, idx: OrbitIdx, who: T) -> Result<(), ClaimError> {
        if idx.0 >= self.capacity() {
            return Err(ClaimError::Occupied); // retired orbits take no new call
        }
        match self.orbits.get_mut(idx.0) {
            Some(slot @ None) => {
                *slot = Some(who);
                self.free.set_free(idx.0, false);
                self.last = Some(idx);
                Ok(())
            }
            _ => Err(ClaimError::Occupied),
        }
    }

    /// Picks a free orbit by the lot's policy and takes it for `who` (indirect park).
    ///
    /// `first`: the lowest free orbit; `next`: the lowest free one after the orbit taken last, wrapping to the
    /// lowest; `random`: uniform among the free orbits (the `k`-th free one in orbit order, `k` drawn from the
    /// number free). Each is O(log n).
    pub fn claim_any(&mut self, who: T, rng: &mut impl Rng) -> Result<OrbitIdx, ClaimError> {
        let n = self.capacity();
        let idx = match self.cfg.slot_policy {
            SlotPolicy::First => self.free.first_free_from(0, false),
            SlotPolicy::Next => {
                let start = self.last.map_or(0, |l| (l.0 + 1) % n.max(1));
                self.free.first_free_from(start, true)
            }
            SlotPolicy::Random => {
                let frees = self.free.free_count();
                (frees > 0).then(|| rng.gen_range(0..frees)).and_then(|k| self.free.kth_free(k))
            }
        };
        let idx = idx.ok_or(ClaimError::LotFull)?;
        if let Some(slot) = self.orbits.get_mut(idx) {
            *slot = Some(who);
            self.free.set_free(idx, false);
        }
        self.last = Some(OrbitIdx(idx));
        Ok(OrbitIdx(idx))
    }

    /// Frees orbit `idx` if `who` holds it. Returns whether it did.
    pub fn release(&mut self, idx: OrbitIdx, who: T) -> bool {
        match self.orbits.get_mut(idx.0) {
            Some(slot) if *slot == Some(who) => {
                *slot = None;
                if idx.0 >= self.free.len() {
                    self.retired_occupied -= 1;
                } else {
                    self.free.set_free(idx.0, true);
                }
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NumRange;
    use rand::SeedableRng;

    fn lot(policy: SlotPolicy) -> Lot<u32> {
        let mut cfg = LotConfig::default_lot();
        cfg.orbits = NumRange::parse("701-705").unwrap();
        cfg.slot_policy = policy;
        Lot::new(cfg)
    }

    #[test]
    fn dialed_numbers_resolve_on_user_part() {
        let l = lot(SlotPolicy::First);
        assert_eq!(l.dialed("700"), Some(Dialed::ParkCode));
        assert_eq!(l.dialed("703"), Some(Dialed::Orbit(OrbitIdx(2))));
        assert_eq!(l.dialed("706"), None);
        assert_eq!(l.dialed("0703"), None);
        assert_eq!(l.orbit_name(OrbitIdx(4)), "705");
    }

    #[test]
    fn first_policy_takes_lowest_free() {
        let mut l = lot(SlotPolicy::First);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        assert_eq!(l.claim_any(1, &mut rng), Ok(OrbitIdx(0)));
        assert_eq!(l.claim_any(2, &mut rng), Ok(OrbitIdx(1)));
        assert!(l.release(OrbitIdx(0), 1));
        assert_eq!(l.claim_any(3, &mut rng), Ok(OrbitIdx(0)));
    }

    #[test]
    fn next_policy_continues_after_last_and_wraps() {
        let mut l = lot(SlotPolicy::Next);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        assert_eq!(l.claim_any(1, &mut rng), Ok(OrbitIdx(0)));
        assert_eq!(l.claim_any(2, &mut rng), Ok(OrbitIdx(1)));
        l.release(OrbitIdx(0), 1);
        assert_eq!(l.claim_any(3, &mut rng), Ok(OrbitIdx(2)));
        l.claim(OrbitIdx(4), 4).unwrap();
        assert_eq!(l.claim_any(5, &mut rng), Ok(OrbitIdx(0)), "wraps to the start");
    }

    #[test]
    fn random_policy_only_picks_free_orbits() {
        let mut l = lot(SlotPolicy::Random);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut got: Vec<usize> = (0..5).map(|i| l.claim_any(i, &mut rng).unwrap().0).collect();
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert_eq!(l.claim_any(9, &mut rng), Err(ClaimError::LotFull));
    }

    /// The allocation the lot had before its free index (linear scans), as the reference: every policy must pick
    /// exactly the same orbits, with the same draws from the generator, over long random park/unpark runs.
    fn reference_pick(orbits: &[Option<u32>], policy: SlotPolicy, last: Option<usize>, rng: &mut impl Rng) -> Option<usize> {
        let n = orbits.len();
        let free = |i: &usize| orbits[*i].is_none();
        match policy {
            SlotPolicy::First => (0..n).find(free),
            SlotPolicy::Next => {
                let start = last.map_or(0, |l| (l + 1) % n);
                (0..n).map(|k| (start + k) % n).find(free)
            }
            SlotPolicy::Random => {
                let frees: Vec<usize> = (0..n).filter(free).collect();
                (!frees.is_empty()).then(|| frees[rng.gen_range(0..frees.len())])
            }
        }
    }

    #[test]
    fn every_policy_picks_what_the_linear_scan_picked() {
        for policy in [SlotPolicy::First, SlotPolicy::Next, SlotPolicy::Random] {
            let mut cfg = LotConfig::default_lot();
            cfg.orbits = NumRange::parse("1000-1199").unwrap();
            cfg.slot_policy = policy;
            let mut l: Lot<u32> = Lot::new(cfg);
            let (mut rng, mut ref_rng) = (rand::rngs::SmallRng::seed_from_u64(11), rand::rngs::SmallRng::seed_from_u64(11));
            let mut driver = rand::rngs::SmallRng::seed_from_u64(5);
            let mut model: Vec<Option<u32>> = vec![None; 200];
            let mut last = None;
            for who in 0..5000u32 {
                // Mostly parks while filling up, then as many unparks as parks (the lot hovers near full).
                let park = driver.gen_bool(if l.occupied() < 150 { 0.8 } else { 0.5 });
                if park && driver.gen_bool(0.9) {
                    let expected = reference_pick(&model, policy, last, &mut ref_rng);
                    let got = l.claim_any(who, &mut rng);
                    assert_eq!(got.ok().map(|o| o.0), expected, "{policy:?} park {who}");
                    if let Some(i) = expected {
                        model[i] = Some(who);
                        last = Some(i);
                    }
                } else if park {
                    let i = driver.gen_range(0..200);
                    assert_eq!(l.claim(OrbitIdx(i), who).is_ok(), model[i].is_none());
                    if model[i].is_none() {
                        model[i] = Some(who);
                        last = Some(i);
                    }
                } else if let Some(i) = (0..200).map(|k| (k + driver.gen_range(0..200)) % 200).find(|i| model[*i].is_some()) {
                    assert!(l.release(OrbitIdx(i), model[i].unwrap()));
                    model[i] = None;
                }
                let occ: Vec<(usize, u32)> = model.iter().enumerate().filter_map(|(i, o)| o.map(|w| (i, w))).collect();
                assert_eq!(l.occupants().map(|(i, w)| (i.0, w)).collect::<Vec<_>>(), occ);
                assert_eq!((l.occupied(), l.is_full()), (occ.len(), occ.len() == 200));
            }
        }
    }

    /// A reload narrowing and shifting the range: calls keep their numbers where they still exist, the others go to
    /// retired orbits (retrievable by their old number, never parked into), and the free index follows.
    #[test]
    fn reconfigure_keeps_calls_and_retires_orbits_out_of_the_new_range() {
        let mut l = lot(SlotPolicy::First); // 701-705
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        l.claim(OrbitIdx(0), 10).unwrap(); // 701
        l.claim(OrbitIdx(3), 13).unwrap(); // 704
        let mut cfg = l.cfg.clone();
        cfg.orbits = NumRange::parse("703-708").unwrap();
        let moved = l.reconfigure(cfg);
        // 704 moves from index 3 to 1; 701 is retired at index 6 (capacity 6).
        assert_eq!(moved, vec![Moved { who: 10, from: OrbitIdx(0), to: OrbitIdx(6) }, Moved { who: 13, from: OrbitIdx(3), to: OrbitIdx(1) }]);
        assert_eq!((l.capacity(), l.occupied(), l.is_full()), (6, 2, false));
        assert_eq!(l.orbit_name(OrbitIdx(6)), "701");
        assert!(l.is_retired(OrbitIdx(6)));
        assert_eq!(l.dialed("701"), Some(Dialed::Orbit(OrbitIdx(6))), "the retired orbit is still retrievable");
        assert_eq!(l.dialed("704"), Some(Dialed::Orbit(OrbitIdx(1))));
        assert_eq!(l.claim(OrbitIdx(6), 99), Err(ClaimError::Occupied));
        assert_eq!(l.occupants().collect::<Vec<_>>(), vec![(OrbitIdx(1), 13), (OrbitIdx(6), 10)]);
        // Free orbits are taken lowest first, skipping the occupied 704.
        let got: Vec<usize> = (0..5).map(|w| l.claim_any(20 + w, &mut rng).unwrap().0).collect();
        assert_eq!(got, vec![0, 2, 3, 4, 5]);
        assert_eq!(l.claim_any(30, &mut rng), Err(ClaimError::LotFull), "a retired orbit is never handed out");
        // The retired call leaves: its number answers nothing any more, the slot is gone at the next reload.
        assert!(l.release(OrbitIdx(6), 10));
        assert_eq!(l.dialed("701"), None);
        assert_eq!(l.occupied(), 6);
        let cfg = l.cfg.clone();
        assert!(l.reconfigure(cfg).is_empty(), "same range: nobody moves");
        assert_eq!(l.occupants().count(), 6);
        assert_eq!(l.orbit_name(OrbitIdx(6)), "");
    }

    #[test]
    fn directed_claim_of_occupied_orbit_fails_and_release_checks_owner() {
        let mut l = lot(SlotPolicy::First);
        l.claim(OrbitIdx(3), 10).unwrap();
        assert_eq!(l.claim(OrbitIdx(3), 11), Err(ClaimError::Occupied));
        assert!(!l.release(OrbitIdx(3), 11), "only the occupant frees an orbit");
        assert_eq!(l.occupant(OrbitIdx(3)), Some(10));
        assert_eq!(l.claim(OrbitIdx(99), 1), Err(ClaimError::Occupied));
    }
}
