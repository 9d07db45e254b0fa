//! Replaying a routing trace: the live policies and Belady's optimal (evict the unit whose next
//! use is farthest) at a given capacity in units.
//!
//! Trace format (what `--trace` writes): one JSON object per line and (token, layer),
//! `{"batch":B,"pos":P,"layer":L,"experts":[E1,E2]}`, in the order the forward pass ran:
//! batch by batch, layer by layer, token by token. `batch` counts `forward` calls.

use super::policy::{PolicyKind, PolicyState};
use std::collections::{HashMap, HashSet};

/// One line of a trace.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct TraceRecord {
    pub batch: u64,
    pub pos: u64,
    pub layer: usize,
    pub experts: Vec<usize>,
}

/// Parse a trace; errors name the line.
pub fn parse_trace(text: &str) -> Result<Vec<TraceRecord>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<TraceRecord>(l).map_err(|e| format!("trace line {}: {e}", i + 1))
        })
        .collect()
}

/// How records become cache accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// Every (token, layer) is a step: what one-token decode does.
    Token,
    /// Every (batch, layer) is a step touching the batch's distinct experts once: what the
    /// batched forward pass does.
    Batch,
}

/// The access sequence: unit keys (`layer * n_experts + expert`), each step's distinct experts
/// in ascending order. Token steps run token-major (batch, position, then layer: the order of
/// one-token decode, whatever batch the trace was recorded with); batch steps keep the trace's
/// order. `n_experts` is taken from the trace (max + 1).
pub fn accesses(trace: &[TraceRecord], g: Granularity) -> (Vec<u32>, usize) {
    let mut sorted;
    let trace = if g == Granularity::Token {
        sorted = trace.to_vec();
        sorted.sort_by_key(|r| (r.batch, r.pos, r.layer));
        &sorted[..]
    } else {
        trace
    };
    let n_exp = trace
        .iter()
        .flat_map(|r| r.experts.iter())
        .max()
        .map_or(1, |m| m + 1);
    let mut out = Vec::new();
    let mut i = 0;
    while i < trace.len() {
        let mut j = i + 1;
        if g == Granularity::Batch {
            while j < trace.len()
                && trace[j].batch == trace[i].batch
                && trace[j].layer == trace[i].layer
            {
                j += 1;
            }
        }
        let mut es: Vec<usize> = trace[i..j]
            .iter()
            .flat_map(|r| r.experts.iter().copied())
            .collect();
        es.sort_unstable();
        es.dedup();
        out.extend(es.iter().map(|&e| (trace[i].layer * n_exp + e) as u32));
        i = j;
    }
    (out, n_exp)
}

/// Hits of `policy` over `acc` with room for `capacity` units.
pub fn simulate(acc: &[u32], capacity: usize, policy: PolicyKind) -> u64 {
    let mut st = PolicyState::new(policy, capacity);
    let mut resident: HashSet<u32> = HashSet::new();
    let mut hits = 0;
    for &k in acc {
        if resident.contains(&k) {
            hits += 1;
        } else if capacity > 0 {
            if resident.len() >= capacity {
                if let Some(v) = st.victim(resident.iter().copied()) {
                    resident.remove(&v);
                }
            }
            resident.insert(k);
        }
        st.touch(k);
    }
    hits
}

/// Hits of Belady's optimal policy (farthest next use; never-used-again first).
pub fn belady(acc: &[u32], capacity: usize) -> u64 {
    let mut next = vec![usize::MAX; acc.len()];
    let mut last: HashMap<u32, usize> = HashMap::new();
    for i in (0..acc.len()).rev() {
        if let Some(&j) = last.get(&acc[i]) {
            next[i] = j;
        }
        last.insert(acc[i], i);
    }
    // Resident key → its next use.
    let mut resident: HashMap<u32, usize> = HashMap::new();
    let mut by_next: std::collections::BTreeSet<(usize, u32)> = Default::default();
    let mut hits = 0;
    for (i, &k) in acc.iter().enumerate() {
        if let Some(n) = resident.get_mut(&k) {
            hits += 1;
            by_next.remove(&(*n, k));
            *n = next[i];
            by_next.insert((next[i], k));
            continue;
        }
        if capacity == 0 {
            continue;
        }
        if resident.len() >= capacity {
            if let Some(&(n, v)) = by_next.iter().next_back() {
                by_next.remove(&(n, v));
                resident.remove(&v);
            }
        }
        resident.insert(k, next[i]);
        by_next.insert((next[i], k));
    }
    hits
}
