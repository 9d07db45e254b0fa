//! The cache flags shared by `run`, `logits`, `perplexity`, `compare` and `bench`.

use super::vram::VramStats;
use super::{fmt_size, parse_size, CacheOptions, CacheStats, PolicyKind, ReadMode};
use crate::model::{Model, ModelError};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// RAM for expert weights (copies held by the cache), e.g. 20GiB, 4MiB, 500MB or bytes.
    /// Default: none — every expert is read straight from the mmap (page cache, unbounded).
    #[arg(long, value_parser = parse_size)]
    pub ram_budget: Option<u64>,
    /// VRAM for expert weights on the GPU (a pool of expert slots filled on demand; the dense
    /// part is uploaded first, outside it). Default: none — every expert is uploaded.
    #[arg(long, value_parser = parse_size)]
    pub vram_budget: Option<u64>,
    /// Replacement policy: lru | lfu (LFU with aging).
    #[arg(long, default_value = "lru", value_parser = PolicyKind::parse)]
    pub cache_policy: PolicyKind,
    /// How cold experts are read: mmap (touch the mapping, madvise DONTNEED on eviction; the
    /// faster one when the budget is far below the experts, see docs/expert-cache.md) | pread
    /// (owned anonymous copies, packed on the CPU for its kernels: faster when they fit).
    #[arg(long, default_value = "mmap", value_parser = ReadMode::parse)]
    pub cache_read: ReadMode,
    /// Do not predict and prefetch the next layer's experts.
    #[arg(long)]
    pub no_prefetch: bool,
    /// Print cache statistics at the end.
    #[arg(long)]
    pub stats: bool,
    /// Record the routing trace, one JSON object per (token, layer): see `cachesim`.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// CPU: read the weights as stored instead of repacking them at load into the interleaved
    /// row layout (the types and row lengths it pays for), and the other dense matrices from
    /// the file instead of a copy on huge pages (both: faster decode, cost RAM for the copy).
    #[arg(long)]
    pub no_repack: bool,
}

impl CacheArgs {
    pub fn options(&self) -> CacheOptions {
        CacheOptions {
            ram_budget: self.ram_budget,
            vram_budget: self.vram_budget,
            policy: self.cache_policy,
            read_mode: self.cache_read,
            prefetch: !self.no_prefetch,
            trace: self.trace.clone(),
            repack: !self.no_repack,
        }
    }

    /// Repack `model` for the CPU backend (unless `--no-repack`), saying what was done.
    pub fn prepare_cpu(&self, model: &Model) -> Result<(), ModelError> {
        prepare_cpu(model, !self.no_repack)
    }

    /// Whether any flag asks for the cache machinery at all.
    pub fn active(&self) -> bool {
        self.ram_budget.is_some() || self.stats || self.trace.is_some()
    }

    /// Report the memory split and attach the cache to `model` if any flag asks for it.
    /// `trace` false: ignore `--trace` (for the candidates of `compare`).
    pub fn apply(&self, model: &mut Model, trace: bool) -> Result<(), ModelError> {
        let (dense, experts) = model.weight_split();
        let budget = match self.ram_budget {
            Some(b) => format!("RAM budget {} for experts", fmt_size(b)),
            None => "no --ram-budget: experts read straight from the mmap (default, unbounded)"
                .to_string(),
        };
        eprintln!(
            "{}: dense part {} (mmap, file-backed), experts {}; {budget}{}",
            model.path().display(),
            fmt_size(dense),
            fmt_size(experts),
            self.vram_budget.map_or(String::new(), |v| format!(
                "; VRAM budget {} for experts (GPU path)",
                fmt_size(v)
            ))
        );
        if self.active() {
            let mut o = self.options();
            if !trace {
                o.trace = None;
            }
            model.enable_expert_cache(&o)?;
        }
        Ok(())
    }

    /// Flush the trace and print `--stats`.
    pub fn finish(&self, model: &Model) -> Result<(), ModelError> {
        self.finish_with(model, None)
    }

    /// [`CacheArgs::finish`], with the VRAM tier's counters of a GPU run.
    pub fn finish_with(&self, model: &Model, vram: Option<VramStats>) -> Result<(), ModelError> {
        if let Some(c) = model.expert_cache() {
            c.finish()?;
            if self.stats {
                eprint!("{}: {}", model.path().display(), c.stats().report());
            }
        }
        if let (Some(v), true) = (vram, self.stats) {
            eprint!("{}: {}", model.path().display(), v.report());
        }
        Ok(())
    }
}

/// [`Model::prepare_cpu`] with its report on stderr.
pub fn prepare_cpu(model: &Model, allow: bool) -> Result<(), ModelError> {
    if let Some(r) = model.prepare_cpu(allow)? {
        if r.tensors > 0 {
            eprintln!("{}: {r}", model.path().display());
        }
    }
    Ok(())
}

/// The stats of a model's cache, if it has one.
pub fn stats_of(model: &Model) -> Option<CacheStats> {
    model.expert_cache().map(|c| c.stats())
}
