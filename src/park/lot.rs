//! A parking lot: its numbers (park code, orbits) and which orbit holds which call.
//!
//! Pure data and policy: no SIP, no time. Orbits are indices into the lot's range; `name_of` turns an index
//! into the number a phone dials.

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
    orbits: Vec<Option<T>>,
    /// Index used last, for the `next` policy.
    last: Option<OrbitIdx>,
}

impl<T: Copy + PartialEq> Lot<T> {
    pub fn new(cfg: LotConfig) -> Lot<T> {
        let n = cfg.orbits.len();
        Lot { cfg, orbits: vec![None; n], last: None }
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
        self.cfg.orbits.contains_number(user).map(|i| Dialed::Orbit(OrbitIdx(i)))
    }

    /// The number of orbit `idx` as dialed ("701").
    pub fn orbit_name(&self, idx: OrbitIdx) -> String {
        self.cfg.orbits.name_of(idx.0)
    }

    pub fn occupant(&self, idx: OrbitIdx) -> Option<T> {
        self.orbits.get(idx.0).copied().flatten()
    }

    pub fn occupied(&self) -> usize {
        self.orbits.iter().filter(|o| o.is_some()).count()
    }

    pub fn capacity(&self) -> usize {
        self.orbits.len()
    }

    pub fn is_full(&self) -> bool {
        self.orbits.iter().all(|o| o.is_some())
    }

    /// Every occupied orbit and its occupant.
    pub fn occupants(&self) -> impl Iterator<Item = (OrbitIdx, T)> + '_ {
        self.orbits.iter().enumerate().filter_map(|(i, o)| o.map(|t| (OrbitIdx(i), t)))
    }

    /// Takes orbit `idx` for `who` (directed park).
    pub fn claim(&mut self, idx: OrbitIdx, who: T) -> Result<(), ClaimError> {
        match self.orbits.get_mut(idx.0) {
            Some(slot @ None) => {
                *slot = Some(who);
                self.last = Some(idx);
                Ok(())
            }
            _ => Err(ClaimError::Occupied),
        }
    }

    /// Picks a free orbit by the lot's policy and takes it for `who` (indirect park).
    pub fn claim_any(&mut self, who: T, rng: &mut impl Rng) -> Result<OrbitIdx, ClaimError> {
        let n = self.orbits.len();
        let free = |i: &usize| self.orbits[*i].is_none();
        let idx = match self.cfg.slot_policy {
            SlotPolicy::First => (0..n).find(free),
            SlotPolicy::Next => {
                let start = self.last.map_or(0, |l| (l.0 + 1) % n);
                (0..n).map(|k| (start + k) % n).find(free)
            }
            SlotPolicy::Random => {
                let frees: Vec<usize> = (0..n).filter(free).collect();
                (!frees.is_empty()).then(|| frees[rng.gen_range(0..frees.len())])
            }
        };
        let idx = idx.ok_or(ClaimError::LotFull)?;
        if let Some(slot) = self.orbits.get_mut(idx) {
            *slot = Some(who);
        }
        self.last = Some(OrbitIdx(idx));
        Ok(OrbitIdx(idx))
    }

    /// Frees orbit `idx` if `who` holds it. Returns whether it did.
    pub fn release(&mut self, idx: OrbitIdx, who: T) -> bool {
        match self.orbits.get_mut(idx.0) {
            Some(slot) if *slot == Some(who) => {
                *slot = None;
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
