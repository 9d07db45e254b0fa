//! Replacement policies shared by the live cache and the trace simulator, so the simulator's
//! hit rates are those of the code that runs.

use std::collections::HashMap;

/// Which unit to evict when the cache is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    /// Least recently used.
    Lru,
    /// Least frequently used, with aging: every `age_period` accesses all counts are halved,
    /// so old popularity fades; counts survive eviction (frequency history); ties go to the
    /// least recently used.
    Lfu,
}

impl PolicyKind {
    pub fn parse(s: &str) -> Result<PolicyKind, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lru" => Ok(PolicyKind::Lru),
            "lfu" => Ok(PolicyKind::Lfu),
            other => Err(format!("unknown cache policy '{other}' (known: lru, lfu)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Lru => "lru",
            PolicyKind::Lfu => "lfu",
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Meta {
    last: u64,
    count: u32,
}

/// Per-key bookkeeping of one policy. Keys are `layer * n_experts + expert`.
#[derive(Clone, Debug)]
pub struct PolicyState {
    kind: PolicyKind,
    clock: u64,
    age_period: u64,
    meta: HashMap<u32, Meta>,
}

impl PolicyState {
    /// `capacity` (in units) sets the LFU aging period: 8 × capacity accesses.
    pub fn new(kind: PolicyKind, capacity: usize) -> PolicyState {
        PolicyState {
            kind,
            clock: 0,
            age_period: 8 * capacity.max(1) as u64,
            meta: HashMap::new(),
        }
    }

    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// Record a use of `key` (a hit, or the load after a miss).
    pub fn touch(&mut self, key: u32) {
        self.clock += 1;
        let m = self.meta.entry(key).or_default();
        m.last = self.clock;
        m.count = m.count.saturating_add(1);
        if self.kind == PolicyKind::Lfu && self.clock % self.age_period == 0 {
            for m in self.meta.values_mut() {
                m.count /= 2;
            }
        }
    }

    /// Record that `key` became resident without being used (a prefetch): recency only.
    pub fn admit(&mut self, key: u32) {
        self.clock += 1;
        self.meta.entry(key).or_default().last = self.clock;
    }

    /// The key to evict among `candidates` (resident and evictable), or `None` if there is none.
    pub fn victim(&self, candidates: impl Iterator<Item = u32>) -> Option<u32> {
        let rank = |k: u32| {
            let m = self.meta.get(&k).copied().unwrap_or_default();
            match self.kind {
                PolicyKind::Lru => (0, m.last),
                PolicyKind::Lfu => (m.count as u64, m.last),
            }
        };
        candidates.min_by_key(|&k| (rank(k), k))
    }
}
