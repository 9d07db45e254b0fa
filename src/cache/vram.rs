//! The VRAM tier's bookkeeping: which (layer, expert) unit occupies which of a fixed number of
//! device slots, evicting by the same [`PolicyState`] as the RAM tier (so `--cache-policy`
//! means the same thing in both tiers and in `cachesim`). It owns no device memory: the GPU
//! model (`crate::model::gpu`) holds one buffer per slot and part, asks [`SlotTier::acquire`]
//! where a unit goes, and uploads it on a miss.

use super::policy::{PolicyKind, PolicyState};
use super::size::fmt_size;

/// Where a unit was found or placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotLookup {
    /// Already resident in this slot.
    Hit(usize),
    /// Not resident: assigned this slot (free, or taken from the evicted unit); the caller
    /// must upload the unit before using it.
    Miss(usize),
}

impl SlotLookup {
    pub fn slot(self) -> usize {
        match self {
            SlotLookup::Hit(s) | SlotLookup::Miss(s) => s,
        }
    }
}

/// Counters of the VRAM tier.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct VramStats {
    pub policy: String,
    /// `--vram-budget`, bytes.
    pub budget: u64,
    /// Bytes of one slot (the largest unit: gate + up + down of one expert).
    pub slot_bytes: u64,
    pub slots: usize,
    /// Bytes of the dense part (everything but the expert tensors), uploaded once, outside the
    /// budget.
    pub dense_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Expert bytes written to the device (the misses' units).
    pub bytes_uploaded: u64,
    /// Expert passes per layer: more than one when a batch routes to more distinct experts
    /// than there are slots.
    pub waves: u64,
}

impl VramStats {
    pub fn hit_rate(&self) -> f64 {
        let n = self.hits + self.misses;
        if n == 0 {
            f64::NAN
        } else {
            self.hits as f64 / n as f64
        }
    }

    /// The `--stats` lines.
    pub fn report(&self) -> String {
        format!(
            "vram tier: policy {}, budget {} = {} slots of {} (dense part {} outside it)\n  \
             {} hits, {} misses (hit rate {:.3}), {} evictions, {} uploaded, {} expert waves\n",
            self.policy,
            fmt_size(self.budget),
            self.slots,
            fmt_size(self.slot_bytes),
            fmt_size(self.dense_bytes),
            self.hits,
            self.misses,
            self.hit_rate(),
            self.evictions,
            fmt_size(self.bytes_uploaded),
            self.waves
        )
    }
}

/// A fixed set of slots under a replacement policy.
#[derive(Clone, Debug)]
pub struct SlotTier {
    /// Unit key held by each slot.
    owner: Vec<Option<u32>>,
    /// Slot of each resident key.
    slot_of: std::collections::HashMap<u32, usize>,
    policy: PolicyState,
    hits: u64,
    misses: u64,
    evictions: u64,
}

impl SlotTier {
    /// `slots` ≥ 1 device slots evicting by `kind`.
    pub fn new(kind: PolicyKind, slots: usize) -> SlotTier {
        SlotTier {
            owner: vec![None; slots],
            slot_of: Default::default(),
            policy: PolicyState::new(kind, slots),
            hits: 0,
            misses: 0,
            evictions: 0,
        }
    }

    pub fn slots(&self) -> usize {
        self.owner.len()
    }

    /// The slot of `key`, evicting the policy's victim among the slots not in `pinned` when
    /// none is free. `None` when every slot is pinned (the caller starts a new wave).
    pub fn acquire(&mut self, key: u32, pinned: &[usize]) -> Option<SlotLookup> {
        if let Some(&s) = self.slot_of.get(&key) {
            self.policy.touch(key);
            self.hits += 1;
            return Some(SlotLookup::Hit(s));
        }
        let slot = match self.owner.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                let cands = self
                    .owner
                    .iter()
                    .enumerate()
                    .filter(|(s, _)| !pinned.contains(s))
                    .filter_map(|(_, k)| *k);
                let victim = self.policy.victim(cands)?;
                let s = self.slot_of.remove(&victim)?;
                self.evictions += 1;
                s
            }
        };
        self.owner[slot] = Some(key);
        self.slot_of.insert(key, slot);
        self.policy.touch(key);
        self.misses += 1;
        Some(SlotLookup::Miss(slot))
    }

    /// Forget `slot`'s unit (its upload failed, so the slot's bytes are not that unit's).
    pub fn invalidate(&mut self, slot: usize) {
        if let Some(k) = self.owner.get_mut(slot).and_then(Option::take) {
            self.slot_of.remove(&k);
        }
    }

    /// (hits, misses, evictions) so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.hits, self.misses, self.evictions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_slots_evict_the_least_recent_unpinned() {
        let mut t = SlotTier::new(PolicyKind::Lru, 2);
        assert_eq!(t.acquire(10, &[]), Some(SlotLookup::Miss(0)));
        assert_eq!(t.acquire(11, &[0]), Some(SlotLookup::Miss(1)));
        assert_eq!(t.acquire(10, &[]), Some(SlotLookup::Hit(0)));
        // 11 is least recent: its slot goes to 12.
        assert_eq!(t.acquire(12, &[]), Some(SlotLookup::Miss(1)));
        // Both slots pinned: no room.
        assert_eq!(t.acquire(13, &[0, 1]), None);
        // Slot 1 pinned: slot 0's unit (10) goes.
        assert_eq!(t.acquire(13, &[1]), Some(SlotLookup::Miss(0)));
        assert_eq!(t.acquire(10, &[0]), Some(SlotLookup::Miss(1)));
        assert_eq!(t.counts(), (1, 5, 3));
        t.invalidate(1);
        assert_eq!(t.acquire(10, &[]), Some(SlotLookup::Miss(1)));
    }

    #[test]
    fn lfu_slots_keep_the_frequent_unit() {
        let mut t = SlotTier::new(PolicyKind::Lfu, 2);
        for _ in 0..3 {
            t.acquire(1, &[]);
        }
        t.acquire(2, &[]);
        t.acquire(3, &[]); // evicts 2 (used once), not 1
        assert_eq!(
            t.acquire(1, &[]).map(|l| matches!(l, SlotLookup::Hit(_))),
            Some(true)
        );
        assert_eq!(
            t.acquire(2, &[]).map(|l| matches!(l, SlotLookup::Miss(_))),
            Some(true)
        );
    }
}
