//! Load-time repacking for the CPU backend: matrices of the types with eight-row kernels
//! (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K; the float types with rows of whole 32-byte
//! columns) are copied once into anonymous memory in `quant::Layout::Interleaved8`,
//! where each group of eight rows is one sequential stream (see quant's `layout` module for
//! why, and what it measured). The values are the file's, bit for bit; only their order in
//! memory changes, and the forward pass gives identical logits either way.
//!
//! It costs RAM (the repacked bytes stay resident instead of living in the page cache), so
//! the dense matrices (attention, the tied embedding/output) are always repacked and the
//! experts only when there is no expert cache (which serves them from its own tiers) and
//! they fit in half of the available memory. `--no-repack` turns it off.

use super::{Model, ModelError, TensorRef};
use memmap2::{Advice, Mmap, MmapMut};
use quant::layout;
use rayon::prelude::*;
use std::collections::HashMap;

/// What [`Model::prepare_cpu`] repacked.
#[derive(Debug, Clone, PartialEq)]
pub struct RepackReport {
    pub tensors: usize,
    pub bytes: u64,
    pub experts: ExpertRepack,
    pub seconds: f64,
}

/// Whether the expert tensors were repacked, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpertRepack {
    Done,
    /// Their type has no interleaved layout (or rows per expert are not whole groups).
    NotEligible,
    /// An expert cache serves them.
    Cached,
    /// They would not fit in half of the available memory.
    NoRoom {
        need: u64,
        available: u64,
    },
}

impl std::fmt::Display for RepackReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "repacked {} matrices ({:.2} GB) into the interleaved row layout in {:.2} s",
            self.tensors,
            self.bytes as f64 / 1e9,
            self.seconds
        )?;
        match &self.experts {
            ExpertRepack::Done | ExpertRepack::NotEligible => Ok(()),
            ExpertRepack::Cached => write!(f, "; experts served by the expert cache as stored"),
            ExpertRepack::NoRoom { need, available } => write!(
                f,
                "; experts read from the mapping as stored ({:.2} GB would not fit in half of the {:.2} GB available)",
                *need as f64 / 1e9,
                *available as f64 / 1e9
            ),
        }
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes.
pub(crate) fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Repacked matrices by tensor index.
pub(super) type Repacked = HashMap<usize, Mmap>;

impl Model {
    /// Repack for the CPU backend (once; later calls return `None`). `allow` false records that
    /// nothing is repacked.
    pub fn prepare_cpu(&self, allow: bool) -> Result<Option<RepackReport>, ModelError> {
        if self.repacked.get().is_some() {
            return Ok(None);
        }
        let start = std::time::Instant::now();
        let eligible = |r: &TensorRef| layout::can_interleave_rows(r.ty, r.n_in);
        let mut dense: Vec<TensorRef> = Vec::new();
        for r in [self.token_embd, self.output] {
            if eligible(&r) && !dense.iter().any(|d| d.index == r.index) {
                dense.push(r);
            }
        }
        for l in &self.layers {
            dense.extend(
                [l.attn_q, l.attn_k, l.attn_v, l.attn_output]
                    .into_iter()
                    .filter(eligible),
            );
        }
        let hp = &self.hp;
        let experts: Vec<TensorRef> = self
            .layers
            .iter()
            .flat_map(|l| [l.gate_exps, l.up_exps, l.down_exps])
            .filter(|r| eligible(r) && (r.n_out / hp.n_experts.max(1)) % 8 == 0)
            .collect();
        let size = |rs: &[TensorRef]| -> u64 {
            rs.iter().map(|r| self.file.tensors()[r.index].size).sum()
        };
        let (dense_bytes, expert_bytes) = (size(&dense), size(&experts));
        let expert_state = if experts.is_empty() {
            ExpertRepack::NotEligible
        } else if self.experts.is_some() {
            ExpertRepack::Cached
        } else {
            let available = mem_available().unwrap_or(0);
            let need = dense_bytes + expert_bytes;
            if need <= available / 2 {
                ExpertRepack::Done
            } else {
                ExpertRepack::NoRoom { need, available }
            }
        };
        let mut jobs = dense;
        if expert_state == ExpertRepack::Done {
            jobs.extend(experts);
        }
        if !allow {
            jobs.clear();
        }
        let maps: Vec<(usize, Mmap)> = jobs
            .iter()
            .map(|r| self.repack_one(r).map(|m| (r.index, m)))
            .collect::<Result<_, _>>()?;
        let bytes = maps.iter().map(|(_, m)| m.len() as u64).sum();
        let report = RepackReport {
            tensors: maps.len(),
            bytes,
            experts: if allow {
                expert_state
            } else {
                ExpertRepack::NotEligible
            },
            seconds: start.elapsed().as_secs_f64(),
        };
        // A concurrent caller may have won; either result is complete.
        let _ = self.repacked.set(maps.into_iter().collect());
        Ok(allow.then_some(report))
    }

    fn repack_one(&self, r: &TensorRef) -> Result<Mmap, ModelError> {
        let info = &self.file.tensors()[r.index];
        let src = self.file.tensor_at(r.index).data;
        let fail = |what: String| ModelError::Invalid {
            path: self.path.clone(),
            what: format!("repacking tensor '{}': {what}", info.name),
        };
        let mut dst = MmapMut::map_anon(src.len().max(1))
            .map_err(|e| fail(format!("{} bytes of memory: {e}", src.len())))?;
        // Best effort: huge pages halve the TLB misses of a streaming read; without them the
        // layout still helps.
        let _ = dst.advise(Advice::HugePage);
        let rb =
            r.ty.row_bytes(r.n_in)
                .ok_or_else(|| fail("rows are not whole blocks".into()))?;
        // Chunks of whole eight-row groups (the last one with the row-major tail) in parallel.
        let chunk = (8 * rb * 64).max(1);
        let dst_bytes = &mut dst[..src.len()];
        dst_bytes
            .par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .try_for_each(|(d, s)| layout::interleave_rows(r.ty, r.n_in, s, d))
            .map_err(|e| fail(e.to_string()))?;
        let map = dst
            .make_read_only()
            .map_err(|e| fail(format!("sealing the copy: {e}")))?;
        Ok(map)
    }

    /// Bytes repacked by [`Model::prepare_cpu`] (0 before it or with it off).
    pub fn repacked_bytes(&self) -> u64 {
        self.repacked
            .get()
            .map_or(0, |m| m.values().map(|m| m.len() as u64).sum())
    }

    /// The repacked copy of tensor `index`, if any.
    pub(super) fn repacked(&self, index: usize) -> Option<&[u8]> {
        let m = self.repacked.get()?.get(&index)?;
        let len = self.file.tensors()[index].size as usize;
        Some(&m[..len])
    }
}
