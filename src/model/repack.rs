//! Load-time repacking for the CPU backend: where the CPU has the packed kernels
//! (`quant::layout::packed_kernels`: x86-64 with AVX2), matrices of the types with eight-row
//! kernels (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K; the float types with rows of
//! whole 32-byte columns; not the K-quants' long rows where `quant::layout::interleave_pays`
//! says row-major reads faster) are copied once into anonymous memory in `quant::Layout::Interleaved8`,
//! where each group of eight rows is one sequential stream (see quant's `layout` module for
//! why, and what it measured). The values are the file's, bit for bit; only their order in
//! memory changes, and the forward pass gives identical logits either way.
//!
//! All of them go into one anonymous mapping from a 2 MiB boundary, advised for transparent
//! huge pages, and the dense matrices not interleaved (a Q5_K tied output, say)
//! are copied there as stored: decode reads each matrix once per token, and on 4 KiB pages
//! (one mapping per matrix, or the file's page cache) the small ones read slower per byte
//! (1.66 B Q4_0, 2 threads, per-region GB/s ÷ the expert matmuls' in the same run: q/k/v
//! 0.68–0.79 → 0.85–1.01, the Q6_K output 0.81–0.89 → 0.97–1.03).
//!
//! It costs RAM (the copies stay resident instead of living in the page cache), so
//! the dense matrices (attention, the tied embedding/output) are always copied and the
//! experts only when there is no expert cache (which serves them from its own tiers) and
//! they fit in half of the available memory. `--no-repack` turns it off.

use super::{Model, ModelError, TensorRef};
use memmap2::{Advice, Mmap, MmapMut};
use quant::{layout, Layout};
use rayon::prelude::*;
use std::collections::HashMap;

/// What [`Model::prepare_cpu`] repacked.
#[derive(Debug, Clone, PartialEq)]
pub struct RepackReport {
    /// Matrices repacked into the interleaved layout, and their bytes.
    pub tensors: usize,
    pub bytes: u64,
    /// Dense matrices not interleaved (types without the layout, or rows it does not pay
    /// for), copied as stored (for the huge pages).
    pub copied: usize,
    pub copied_bytes: u64,
    pub experts: ExpertRepack,
    pub seconds: f64,
}

/// Whether the expert tensors were repacked, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpertRepack {
    Done,
    /// Their type has no interleaved layout (or rows per expert are not whole groups).
    NotEligible,
    /// An expert cache serves them as the file stores them (`mmap` mode, or no RAM budget).
    Cached,
    /// An expert cache serves them, packing each as it reads it into RAM (`pread` mode with a
    /// RAM budget: `crate::cache::ExpertCache::pack_on_read`).
    CachedPacked,
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
            "repacked {} matrices ({:.2} GB) into the interleaved row layout",
            self.tensors,
            self.bytes as f64 / 1e9,
        )?;
        if self.copied > 0 {
            write!(
                f,
                ", copied {} ({:.2} GB) as stored",
                self.copied,
                self.copied_bytes as f64 / 1e9
            )?;
        }
        write!(f, " in {:.2} s", self.seconds)?;
        match &self.experts {
            ExpertRepack::Done | ExpertRepack::NotEligible => Ok(()),
            ExpertRepack::Cached => write!(f, "; experts served by the expert cache as stored"),
            ExpertRepack::CachedPacked => write!(
                f,
                "; experts served by the expert cache, packed as it reads them"
            ),
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

/// Whether `r` goes into the interleaved layout: a type and row length with the layout, on a
/// CPU with kernels over it where they read it faster (`quant::layout::interleave_pays`;
/// elsewhere — aarch64, no AVX2 — every matmul would de-interleave it again, so the row layout
/// stays; dense matrices are still copied, as stored, for the huge pages).
fn interleaves(r: &TensorRef) -> bool {
    layout::interleave_pays(r.ty, r.n_in)
}

/// The repacked matrices: one anonymous mapping holding them all, back to back from a
/// 2 MiB boundary, so that transparent huge pages cover the small matrices too (one mapping
/// per matrix left those under 2 MiB — a layer's k and v, 0.6 MB each in the 1.66 B test model
/// — on 4 KiB pages, and the first and last partial huge page of every other one).
pub(super) struct Repacked {
    map: Option<Mmap>,
    /// Tensor index → (offset into the arena, length, layout).
    at: HashMap<usize, (usize, usize, Layout)>,
    /// Where the 2 MiB-aligned arena starts inside `map`.
    base: usize,
}

/// Huge-page size the arena is aligned to (x86-64 and aarch64 4K-granule THP).
const HUGE: usize = 2 << 20;

/// Matrices start on a cache line.
const ALIGN: usize = 64;

impl Model {
    /// Repack for the CPU backend (once; later calls return `None`). `allow` false records that
    /// nothing is repacked.
    pub fn prepare_cpu(&self, allow: bool) -> Result<Option<RepackReport>, ModelError> {
        if self.repacked.get().is_some() {
            return Ok(None);
        }
        let start = std::time::Instant::now();
        // The dense matrices: those without the layout are copied as stored, for the arena's
        // huge pages (the file's page cache maps 4 KiB pages).
        let mut dense: Vec<TensorRef> = Vec::new();
        for r in [self.token_embd, self.output] {
            if !dense.iter().any(|d| d.index == r.index) {
                dense.push(r);
            }
        }
        for l in &self.layers {
            dense.extend([l.attn_q, l.attn_k, l.attn_v, l.attn_output]);
        }
        let hp = &self.hp;
        // An expert tensor is packed (here, or by the cache) where its rows would be and every
        // expert's rows are whole groups of eight.
        let packs = |r: &TensorRef| interleaves(r) && (r.n_out / hp.n_experts.max(1)) % 8 == 0;
        let experts: Vec<TensorRef> = self
            .layers
            .iter()
            .flat_map(|l| [l.gate_exps, l.up_exps, l.down_exps])
            .filter(|r| packs(r))
            .collect();
        let size = |rs: &[TensorRef]| -> u64 {
            rs.iter().map(|r| self.file.tensors()[r.index].size).sum()
        };
        let (dense_bytes, expert_bytes) = (size(&dense), size(&experts));
        let expert_state = if experts.is_empty() {
            ExpertRepack::NotEligible
        } else if let Some(cache) = &self.experts {
            // The cache packs what it reads (where it owns its copies), the same parts.
            let spec = |r: &TensorRef| packs(r).then_some((r.ty, r.n_in));
            let spec: crate::cache::PackSpec = self
                .layers
                .iter()
                .map(|l| [spec(&l.gate_exps), spec(&l.up_exps), spec(&l.down_exps)])
                .collect();
            if allow && cache.pack_on_read(spec) {
                ExpertRepack::CachedPacked
            } else {
                ExpertRepack::Cached
            }
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
        let repacked = self.repack_all(&jobs)?;
        let count = |want: Layout| {
            let of: Vec<u64> = repacked
                .at
                .values()
                .filter(|e| e.2 == want)
                .map(|e| e.1 as u64)
                .collect();
            (of.len(), of.iter().sum::<u64>())
        };
        let ((tensors, bytes), (copied, copied_bytes)) =
            (count(Layout::Interleaved8), count(Layout::Rows));
        let report = RepackReport {
            tensors,
            bytes,
            copied,
            copied_bytes,
            experts: if allow {
                expert_state
            } else {
                ExpertRepack::NotEligible
            },
            seconds: start.elapsed().as_secs_f64(),
        };
        // A concurrent caller may have won; either result is complete.
        let _ = self.repacked.set(repacked);
        Ok(allow.then_some(report))
    }

    /// Copy `jobs` into one arena in the interleaved layout.
    fn repack_all(&self, jobs: &[TensorRef]) -> Result<Repacked, ModelError> {
        let mut at = HashMap::new();
        let mut end = 0usize;
        for r in jobs {
            let len = self.file.tensors()[r.index].size as usize;
            let lay = if interleaves(r) {
                Layout::Interleaved8
            } else {
                Layout::Rows
            };
            at.insert(r.index, (end, len, lay));
            end = end
                .checked_add(len)
                .and_then(|e| e.checked_next_multiple_of(ALIGN))
                .ok_or_else(|| ModelError::Invalid {
                    path: self.path.clone(),
                    what: "repacked matrices overflow the address space".into(),
                })?;
        }
        if at.is_empty() {
            return Ok(Repacked {
                map: None,
                at,
                base: 0,
            });
        }
        let total = end + HUGE;
        let mut map = MmapMut::map_anon(total).map_err(|e| ModelError::Invalid {
            path: self.path.clone(),
            what: format!("repacking: {total} bytes of memory: {e}"),
        })?;
        // Best effort: huge pages cut the TLB misses of a streaming read; without them the
        // layout still helps.
        let _ = map.advise(Advice::HugePage);
        let base = (map.as_ptr() as usize).next_multiple_of(HUGE) - map.as_ptr() as usize;
        for r in jobs {
            let (o, len, lay) = at[&r.index];
            let dst = &mut map[base + o..base + o + len];
            match lay {
                Layout::Interleaved8 => self.repack_one(r, dst)?,
                Layout::Rows => dst.copy_from_slice(self.file.tensor_at(r.index).data),
            }
        }
        let map = map.make_read_only().map_err(|e| ModelError::Invalid {
            path: self.path.clone(),
            what: format!("repacking: sealing the copy: {e}"),
        })?;
        Ok(Repacked {
            map: Some(map),
            at,
            base,
        })
    }

    fn repack_one(&self, r: &TensorRef, dst: &mut [u8]) -> Result<(), ModelError> {
        let info = &self.file.tensors()[r.index];
        let src = self.file.tensor_at(r.index).data;
        let fail = |what: String| ModelError::Invalid {
            path: self.path.clone(),
            what: format!("repacking tensor '{}': {what}", info.name),
        };
        if dst.len() != src.len() {
            return Err(fail(format!(
                "{} bytes in the file, {} reserved",
                src.len(),
                dst.len()
            )));
        }
        let rb =
            r.ty.row_bytes(r.n_in)
                .ok_or_else(|| fail("rows are not whole blocks".into()))?;
        // Chunks of whole eight-row groups (the last one with the row-major tail) in parallel.
        let chunk = (8 * rb * 64).max(1);
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .try_for_each(|(d, s)| layout::interleave_rows(r.ty, r.n_in, s, d))
            .map_err(|e| fail(e.to_string()))
    }

    /// Bytes repacked or copied by [`Model::prepare_cpu`] (0 before it or with it off).
    pub fn repacked_bytes(&self) -> u64 {
        self.repacked
            .get()
            .map_or(0, |m| m.at.values().map(|&(_, n, _)| n as u64).sum())
    }

    /// The copy of tensor `index` and its layout, if [`Model::prepare_cpu`] made one.
    pub(super) fn repacked(&self, index: usize) -> Option<(&[u8], Layout)> {
        let m = self.repacked.get()?;
        let &(o, len, lay) = m.at.get(&index)?;
        let start = m.base + o;
        m.map.as_ref().map(|map| (&map[start..start + len], lay))
    }
}
