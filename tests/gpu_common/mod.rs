//! Helpers shared by the GPU tests.
#![allow(dead_code)]

use grok1_quant::backend::gpu::{GpuContext, GpuError};
use grok1_quant::config::GrokConfig;
use grok1_quant::convert::{convert, ConvertOptions, OutputSpec};
use quant::GgmlType;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The small grok-shaped config of the GPU forward tests: 2 layers, emb 256, 8 q / 2 kv heads
/// of 32, `num_experts` experts (top 2), ffn 256, vocab 512.
pub fn tiny_config(num_experts: usize) -> GrokConfig {
    let mut c = GrokConfig::grok_1();
    c.vocab_size = 512;
    c.emb_size = 256;
    c.key_size = 32;
    c.num_q_heads = 8;
    c.num_kv_heads = 2;
    c.num_layers = 2;
    c.num_experts = num_experts;
    c.num_selected_experts = 2;
    c.ffn_size = 256;
    c.sequence_len = 64;
    c.pad_token = 0;
    c.bos_token = 1;
    c.eos_token = 2;
    c.unk_token = 3;
    c.validate().unwrap();
    c
}

/// Convert the checkpoint at `ckpt` to `dir/m-TYPE.gguf` (the embedding, and so the tied
/// output projection, in `embd` or the converter's default), named `model_name`.
pub fn convert_to(
    ckpt: &Path,
    cfg: &GrokConfig,
    dir: &Path,
    ty: GgmlType,
    embd: Option<GgmlType>,
    model_name: &str,
) -> PathBuf {
    let path = dir.join(format!("m-{}.gguf", ty.name()));
    convert(&ConvertOptions {
        ckpt_dir: ckpt.to_path_buf(),
        config: cfg.clone(),
        tokenizer: None,
        outputs: vec![OutputSpec {
            recipe: None,
            ty,
            path: path.clone(),
        }],
        resume: false,
        force: true,
        token_embd_type: embd,
        progress: false,
        model_name: model_name.into(),
        cancel: None,
        direct_io: true,
        imatrix: None,
    })
    .expect("convert");
    path
}

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
