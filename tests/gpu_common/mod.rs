//! Helpers shared by the GPU tests.
#![allow(dead_code)]

use grok1_quant::backend::gpu::{GpuContext, GpuError};
use std::sync::OnceLock;

/// One context per test binary. No adapter: a note and `None` (the test skips), except under
/// CI (`CI` set), where lavapipe is installed and a missing adapter fails.
pub fn gpu() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new() {
        Ok(c) => {
            eprintln!("GPU adapter: {}", c.adapter_name());
            Some(c)
        }
        Err(e @ GpuError::NoAdapter) if std::env::var_os("CI").is_none() => {
            eprintln!("note: {e}; skipping GPU tests");
            None
        }
        Err(e) => panic!("GPU context: {e}"),
    })
    .as_ref()
}

/// Deterministic values in (-scale, scale).
pub fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// max |a − b| / max |b|.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

/// max |a − b|.
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}
