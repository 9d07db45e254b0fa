//! The tiered expert cache: Grok-1's experts are 98% of its bytes, so they live in the GGUF
//! file and enter RAM and VRAM under byte budgets, one (layer, expert) unit — its gate, up
//! and down slices of the merged tensors — at a time.
//!
//! - [`ExpertCache`]: the RAM tier. Without a budget the forward pass reads every expert
//!   straight from the mmap (the default). With `--ram-budget` it keeps owned copies
//!   (`pread` into anonymous memory, default) or bounded mmap residency (`--cache-read mmap`,
//!   releasing pages with `madvise(DONTNEED)`), evicting by LRU or LFU-with-aging, and
//!   prefetches the next layer's predicted experts on a background thread.
//! - [`vram::SlotTier`]: the VRAM tier's slots under the same policies (the device buffers
//!   live in `crate::model::gpu`), with `--vram-budget`.
//! - [`sim`]: replays a routing trace under each policy and Belady's optimal.
//!
//! The bytes that reach the kernels are the file's bytes either way, so logits are identical
//! with and without a budget. See docs/expert-cache.md.

pub mod args;
pub mod policy;
pub mod sim;
mod size;
mod store;
pub mod vram;

pub use policy::{PolicyKind, PolicyState};
pub use size::{fmt_size, parse_size};
pub use store::{
    CacheError, CacheOptions, CacheStats, ExpertCache, ExpertHandle, ExpertLayout, PackSpec,
    ReadMode,
};
