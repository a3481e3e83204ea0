//! Which orbits of a lot are free, as a Fenwick (binary indexed) tree of free counts: every question a park,
//! a retrieve or a listing asks of it is O(log n) in the lot's size, whatever the number of calls parked.
//!
//! * the `k`-th free orbit in orbit order (the `random` policy's uniform pick, the `first`/`next` policies' "lowest
//!   free orbit from here on", wrapping);
//! * the lowest occupied orbit from `i` on (walking the occupied orbits in order without visiting free ones);
//! * how many are free (a counter).
//!
//! Pure data, no policy: [`super::lot::Lot`] decides which orbit to take.

/// Free/occupied flags of `n` orbits with order statistics.
#[derive(Clone, Debug)]
pub struct FreeIndex {
    /// 1-based Fenwick tree: `tree[i]` counts the free orbits in `(i - lowbit(i), i]` (orbit `j` is position `j + 1`).
    tree: Vec<u32>,
    /// Per orbit: free or not (the flag the tree counts).
    free: Vec<bool>,
    free_count: usize,
    /// The highest power of two ≤ n (where the descending searches start).
    top: usize,
}

impl FreeIndex {
    /// `n` orbits, all free. O(n).
    pub fn new(n: usize) -> FreeIndex {
        let mut tree = vec![0u32; n + 1];
        for i in 1..=n {
            tree[i] += 1;
            let j = i + (i & i.wrapping_neg());
            if j <= n {
                tree[j] += tree[i];
            }
        }
        let top = if n == 0 { 0 } else { 1 << (usize::BITS - 1 - n.leading_zeros()) };
        FreeIndex { tree, free: vec![true; n], free_count: n, top }
    }

    pub fn len(&self) -> usize {
        self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    pub fn free_count(&self) -> usize {
        self.free_count
    }

    pub fn is_free(&self, i: usize) -> bool {
        self.free.get(i).copied().unwrap_or(false)
    }

    fn add(&mut self, i: usize, up: bool) {
        let mut p = i + 1;
        while p < self.tree.len() {
            if up {
                self.tree[p] += 1;
            } else {
                self.tree[p] -= 1;
            }
            p += p & p.wrapping_neg();
        }
    }

    /// Marks orbit `i` free or occupied (no-op if it already is, or out of range).
    pub fn set_free(&mut self, i: usize, free: bool) {
        match self.free.get_mut(i) {
            Some(f) if *f != free => *f = free,
            _ => return,
        }
        self.add(i, free);
        if free {
            self.free_count += 1;
        } else {
            self.free_count -= 1;
        }
    }

    /// Free orbits among `0..i`.
    pub fn free_before(&self, i: usize) -> usize {
        let mut p = i.min(self.free.len());
        let mut s = 0usize;
        while p > 0 {
            s += self.tree[p] as usize;
            p &= p - 1;
        }
        s
    }

    /// The `k`-th (0-based) orbit in orbit order that is free (`want_free`) or occupied.
    fn kth(&self, k: usize, want_free: bool) -> Option<usize> {
        let total = if want_free { self.free_count } else { self.free.len() - self.free_count };
        if k >= total {
            return None;
        }
        // Descending binary search: at each step `pos` is a multiple of 2·step, so tree[pos + step] covers exactly
        // the `step` positions (pos, pos + step].
        let (mut pos, mut rem, mut step) = (0usize, k + 1, self.top);
        while step > 0 {
            let next = pos + step;
            if next < self.tree.len() {
                let free = self.tree[next] as usize;
                let here = if want_free { free } else { step - free };
                if here < rem {
                    pos = next;
                    rem -= here;
                }
            }
            step >>= 1;
        }
        Some(pos)
    }

    /// The `k`-th free orbit (0-based, in orbit order).
    pub fn kth_free(&self, k: usize) -> Option<usize> {
        self.kth(k, true)
    }

    /// The lowest free orbit from `start` on; with `wrap`, the lowest of all when none is.
    pub fn first_free_from(&self, start: usize, wrap: bool) -> Option<usize> {
        let before = self.free_before(start);
        self.kth_free(before).or_else(|| if wrap { self.kth_free(0) } else { None })
    }

    /// The lowest occupied orbit from `i` on.
    pub fn next_occupied_from(&self, i: usize) -> Option<usize> {
        let i = i.min(self.free.len());
        let occupied_before = i - self.free_before(i);
        self.kth(occupied_before, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Every answer matches the obvious linear scan, over random flips of random sizes.
    #[test]
    fn matches_a_linear_scan() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        for n in [0usize, 1, 2, 3, 5, 8, 13, 64, 100, 257] {
            let mut idx = FreeIndex::new(n);
            let mut flags = vec![true; n];
            for _ in 0..400 {
                if n > 0 {
                    let i = rng.gen_range(0..n);
                    let f = rng.gen_bool(0.4);
                    idx.set_free(i, f);
                    flags[i] = f;
                }
                let frees: Vec<usize> = (0..n).filter(|i| flags[*i]).collect();
                let occ: Vec<usize> = (0..n).filter(|i| !flags[*i]).collect();
                assert_eq!(idx.free_count(), frees.len());
                for k in 0..=n {
                    assert_eq!(idx.kth_free(k), frees.get(k).copied(), "n={n} k={k}");
                    assert_eq!(idx.free_before(k), frees.iter().filter(|f| **f < k).count());
                    assert_eq!(idx.next_occupied_from(k), occ.iter().copied().find(|o| *o >= k));
                    let from = frees.iter().copied().find(|f| *f >= k);
                    assert_eq!(idx.first_free_from(k, false), from);
                    assert_eq!(idx.first_free_from(k, true), from.or(frees.first().copied()));
                }
            }
        }
    }
}
