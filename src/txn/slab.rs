//! A slab with generation numbers: transactions live here, reached by `(idx, gen)` handles.
//!
//! Removing an entry bumps its slot's generation, so a handle kept by the TU (or a timer entry left in the
//! heap) for a removed transaction no longer matches, even after the slot is reused.

/// One slot: the generation it is on and, when occupied, its value. The value is boxed: a transaction is over a
/// kilobyte, and the slot vector keeps the peak number of slots for good, so an empty slot costs 16 bytes and a
/// finished transaction's memory goes back to the allocator.
#[derive(Debug)]
struct Slot<T> {
    gen: u32,
    value: Option<Box<T>>,
}

/// Inline size of one slot holding a `T` (`mem_sizes` test).
#[cfg(test)]
pub(crate) fn slot_size<T>() -> usize {
    size_of::<Slot<T>>()
}

/// Generational slab. Never panics: every access goes through `get`/`get_mut`.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { slots: Vec::new(), free: Vec::new(), len: 0 }
    }
}

impl<T> Slab<T> {
    /// Stores `value` and returns its `(idx, gen)` handle.
    pub(crate) fn insert(&mut self, value: T) -> (u32, u32) {
        self.len += 1;
        while let Some(idx) = self.free.pop() {
            if let Some(slot) = self.slots.get_mut(idx as usize) {
                slot.value = Some(Box::new(value));
                return (idx, slot.gen);
            }
        }
        let idx = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(Slot { gen: 0, value: Some(Box::new(value)) });
        (idx, 0)
    }

    pub(crate) fn get(&self, idx: u32, gen: u32) -> Option<&T> {
        self.slots.get(idx as usize).filter(|s| s.gen == gen).and_then(|s| s.value.as_deref())
    }

    pub(crate) fn get_mut(&mut self, idx: u32, gen: u32) -> Option<&mut T> {
        self.slots.get_mut(idx as usize).filter(|s| s.gen == gen).and_then(|s| s.value.as_deref_mut())
    }

    /// Removes the entry if `(idx, gen)` is current; its handle becomes stale at once.
    pub(crate) fn remove(&mut self, idx: u32, gen: u32) -> Option<T> {
        let slot = self.slots.get_mut(idx as usize).filter(|s| s.gen == gen)?;
        let value = slot.value.take()?;
        slot.gen = slot.gen.wrapping_add(1);
        self.free.push(idx);
        self.len -= 1;
        Some(*value)
    }

    /// Number of occupied slots.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_handles_go_stale_even_after_reuse() {
        let mut s = Slab::default();
        let (i, g) = s.insert("a");
        assert_eq!(s.get(i, g), Some(&"a"));
        assert_eq!(s.remove(i, g), Some("a"));
        assert_eq!(s.get(i, g), None);
        assert_eq!(s.remove(i, g), None);
        let (i2, g2) = s.insert("b");
        assert_eq!(i2, i, "slot reused");
        assert_ne!(g2, g);
        assert_eq!(s.get(i, g), None, "old handle does not see the new value");
        assert_eq!(s.get(i2, g2), Some(&"b"));
        assert_eq!(s.len(), 1);
        assert_eq!(s.get(99, 0), None);
    }
}
