//! End-to-end tokens/s of a GPU-resident model for `grok1-quant bench --device gpu`. Figures
//! from a software adapter (Mesa lavapipe) are a smoke test only, not GPU performance.

use super::{GpuModel, GpuModelError};
use std::time::Instant;

/// End-to-end throughput of [`bench_forward`].
#[derive(Clone, Debug)]
pub struct ForwardBench {
    pub prompt_tokens: usize,
    /// Seconds for the prompt as one batch (last-token logits read back).
    pub prefill_seconds: f64,
    pub prefill_tok_s: f64,
    pub decode_tokens: usize,
    /// Seconds for `decode_tokens` single-token steps (each reads its logits back).
    pub decode_seconds: f64,
    pub decode_tok_s: f64,
}

/// Prefill `prompt` in one batch, then `decode_tokens` single-token steps (greedy on the
/// returned logits), in a fresh session; the first call also compiles the pipelines, so run
/// a short warm-up first when that matters.
pub fn bench_forward(
    model: &GpuModel,
    prompt: &[u32],
    decode_tokens: usize,
) -> Result<ForwardBench, GpuModelError> {
    if prompt.is_empty() {
        return Err(GpuModelError::Model("bench: empty prompt".into()));
    }
    let mut session = model.session(prompt.len() + decode_tokens)?;
    let t0 = Instant::now();
    let mut logits = model.forward(&mut session, prompt, false)?;
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 0..decode_tokens {
        let next = logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |b, (i, &v)| {
                if v > b.1 {
                    (i, v)
                } else {
                    b
                }
            })
            .0 as u32;
        logits = model.forward(&mut session, &[next], false)?;
    }
    let decode_seconds = t1.elapsed().as_secs_f64();
    Ok(ForwardBench {
        prompt_tokens: prompt.len(),
        prefill_seconds,
        prefill_tok_s: prompt.len() as f64 / prefill_seconds,
        decode_tokens,
        decode_seconds,
        decode_tok_s: if decode_tokens == 0 {
            0.0
        } else {
            decode_tokens as f64 / decode_seconds
        },
    })
}
