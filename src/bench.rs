//! Throughput measurements: memory bandwidth (a STREAM-like triad) and the model's prefill and
//! decode speed, so the decode weight-read rate can be reported as a fraction of bandwidth
//! measured in the same run.

use crate::engine::{Engine, EngineError};
use crate::model::{Logits, Model};
use crate::sampling::Rng;
use rayon::prelude::*;
use std::time::Instant;

/// Best-of-`reps` triad bandwidth `a = b + s·c` over arrays of `mib` MiB each, on all rayon
/// threads, in GB/s (bytes read + written).
pub fn triad_gbps(mib: usize, reps: usize) -> f64 {
    let n = mib * (1 << 20) / 4;
    let mut a = vec![0f32; n];
    let b = vec![1f32; n];
    let c = vec![2f32; n];
    let chunk = 1 << 16;
    let mut best = f64::MAX;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        a.par_chunks_mut(chunk)
            .zip(b.par_chunks(chunk))
            .zip(c.par_chunks(chunk))
            .for_each(|((a, b), c)| {
                for i in 0..a.len() {
                    a[i] = b[i] + 3.0 * c[i];
                }
            });
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&a);
    (3 * n * 4) as f64 / best / 1e9
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    pub model: String,
    /// `cpu` or `gpu`.
    pub device: String,
    pub ty: String,
    pub threads: usize,
    pub prefill_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tokens: usize,
    pub decode_tok_s: f64,
    /// Weight bytes one decode step reads.
    pub decode_weight_bytes: u64,
    pub decode_weight_gbps: f64,
    pub memory_gbps: f64,
    pub decode_bandwidth_fraction: f64,
}

/// Prefill `prefill` random tokens, then, in a fresh session, decode `decode` tokens one at a
/// time (best of `reps` runs each), and measure memory bandwidth in the same run: a triad before each decode, the
/// fraction the median over repetitions of decode weight GB/s ÷ that repetition's triad.
pub fn bench(
    model: &Model,
    engine: &Engine,
    prefill: usize,
    decode: usize,
    reps: usize,
    seed: u64,
) -> Result<BenchResult, EngineError> {
    let hp = model.hparams();
    let mut rng = Rng::new(seed);
    let mut random_ids = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| 1 + (rng.next_u64() % (hp.vocab as u64 - 1)) as u32)
            .collect()
    };
    let bytes = model.decode_weight_bytes();
    let mut best_prefill = f64::MAX;
    let mut best_decode = f64::MAX;
    // Per repetition: the triad right before the decode it is compared with (this machine's
    // bandwidth moves between runs by up to 1.5×; a pair taken together sees one state).
    let mut triads = Vec::new();
    let mut fractions = Vec::new();
    for _ in 0..reps.max(1) {
        let ids = random_ids(prefill.max(1));
        let mut s = engine.session(prefill.max(1))?;
        let t = Instant::now();
        let logits = engine.forward(&mut s, &ids, Logits::Last)?;
        best_prefill = best_prefill.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&logits);
        // Decode from an empty context, as llama-bench's tg test does (its pp and tg are
        // separate tests): the attention then costs what it costs over `decode` positions.
        let steps = random_ids(decode);
        let mut s = engine.session(decode + 1)?;
        let triad = triad_gbps(256, 3);
        let t = Instant::now();
        for &id in &steps {
            std::hint::black_box(engine.forward(&mut s, &[id], Logits::Last)?);
        }
        let secs = t.elapsed().as_secs_f64();
        best_decode = best_decode.min(secs);
        triads.push(triad);
        fractions.push(bytes as f64 * decode as f64 / secs.max(1e-12) / 1e9 / triad);
    }
    let decode_tok_s = decode as f64 / best_decode.max(1e-12);
    let gbps = bytes as f64 * decode_tok_s / 1e9;
    let memory_gbps = median(&mut triads);
    let decode_bandwidth_fraction = median(&mut fractions);
    Ok(BenchResult {
        model: model.path().display().to_string(),
        device: if engine.is_gpu() {
            "gpu".to_string()
        } else {
            format!("cpu ({})", quant::simd_tier())
        },
        ty: model.expert_type().name().to_string(),
        threads: rayon::current_num_threads(),
        prefill_tokens: prefill,
        prefill_tok_s: prefill as f64 / best_prefill.max(1e-12),
        decode_tokens: decode,
        decode_tok_s,
        decode_weight_bytes: bytes,
        decode_weight_gbps: gbps,
        memory_gbps,
        decode_bandwidth_fraction,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
