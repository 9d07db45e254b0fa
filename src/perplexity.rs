//! Perplexity and quant-level comparison over a token stream.
//!
//! Protocol (the golden one of `grok-mini-trained/reference/ppl.json`, llama-perplexity style):
//! non-overlapping chunks of `n_ctx` tokens from token 0, each run from an empty context (BOS
//! put at the chunk start only when the model says add_bos), scoring the second half: tokens
//! `n_ctx/2 .. n_ctx`, each predicted from all tokens before it in the chunk.

use crate::model::{Logits, Model, ModelError, Session};

/// Per-token statistics of one scored chunk.
pub struct ChunkScores {
    /// Negative log-likelihood of each scored token (natural log).
    pub nll: Vec<f64>,
    /// Log-probabilities of every scored position (`scored × vocab`), for comparisons.
    pub log_probs: Vec<f32>,
}

/// The final result of a perplexity run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PplResult {
    pub model: String,
    pub n_ctx: usize,
    pub chunks: usize,
    pub tokens_scored: usize,
    pub mean_nll: f64,
    pub ppl: f64,
    /// Standard error of ppl (delta method: ppl × stderr of the mean NLL).
    pub ppl_stderr: f64,
    pub per_chunk_mean_nll: Vec<f64>,
}

/// Number of whole chunks of `n_ctx` in `n_tokens`.
pub fn chunk_count(n_tokens: usize, n_ctx: usize) -> usize {
    n_tokens.checked_div(n_ctx).unwrap_or(0)
}

/// The first scored position of a chunk of `n_ctx` (the second half; never position 0, which
/// has nothing before it).
pub fn first_scored(n_ctx: usize) -> usize {
    (n_ctx / 2).max(1)
}

/// Log-softmax of one row, in f64 for the normaliser.
pub fn log_softmax(row: &[f32], out: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    for (o, &v) in out.iter_mut().zip(row) {
        *o = (v as f64 - lse) as f32;
    }
}

/// Run chunk `c` of `tokens` through `model` and score its second half.
pub fn score_chunk(
    model: &Model,
    session: &mut Session,
    tokens: &[u32],
    n_ctx: usize,
    c: usize,
    keep_log_probs: bool,
) -> Result<ChunkScores, ModelError> {
    let hp = model.hparams();
    let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
    if hp.add_bos {
        chunk[0] = hp.bos_id;
    }
    session.clear();
    let vocab = hp.vocab;
    let first = first_scored(n_ctx);
    // Logits of positions first-1 .. n_ctx-2 predict tokens first .. n_ctx-1.
    let logits = model.forward(session, &chunk, Logits::From(first - 1))?;
    let mut nll = Vec::with_capacity(n_ctx - first);
    let mut log_probs = Vec::new();
    let mut lp = vec![0f32; vocab];
    for j in first..n_ctx {
        let at = j - first;
        log_softmax(&logits[at * vocab..(at + 1) * vocab], &mut lp);
        nll.push(-(lp[chunk[j] as usize] as f64));
        if keep_log_probs {
            log_probs.extend_from_slice(&lp);
        }
    }
    Ok(ChunkScores { nll, log_probs })
}

/// Mean, ppl and its standard error from all scored NLLs.
pub fn summarize(all_nll: &[f64]) -> (f64, f64, f64) {
    let n = all_nll.len() as f64;
    if all_nll.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mean = all_nll.iter().sum::<f64>() / n;
    let var = all_nll.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let ppl = mean.exp();
    (mean, ppl, ppl * (var / n).sqrt())
}

/// Perplexity of `model` over `tokens`, calling `on_chunk(chunk, running ppl)` after each chunk.
pub fn perplexity(
    model: &Model,
    tokens: &[u32],
    n_ctx: usize,
    on_chunk: &mut dyn FnMut(usize, usize, f64),
) -> Result<PplResult, ModelError> {
    let chunks = chunk_count(tokens.len(), n_ctx);
    let mut session = Session::new(model.hparams(), n_ctx);
    let mut all = Vec::new();
    let mut per_chunk = Vec::new();
    for c in 0..chunks {
        let s = score_chunk(model, &mut session, tokens, n_ctx, c, false)?;
        per_chunk.push(s.nll.iter().sum::<f64>() / s.nll.len().max(1) as f64);
        all.extend(s.nll);
        on_chunk(c, chunks, summarize(&all).1);
    }
    let (mean_nll, ppl, ppl_stderr) = summarize(&all);
    Ok(PplResult {
        model: model.path().display().to_string(),
        n_ctx,
        chunks,
        tokens_scored: all.len(),
        mean_nll,
        ppl,
        ppl_stderr,
        per_chunk_mean_nll: per_chunk,
    })
}
