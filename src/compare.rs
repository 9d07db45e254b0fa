//! Quant-level comparison: the base model and every candidate run over the same chunks in
//! lockstep, so no logits are stored on disk; per candidate: ppl, KL divergence from the base,
//! top-1 agreement and RMS Δp of the true token.

use crate::model::{Model, ModelError, Session};
use crate::perplexity::{chunk_count, first_scored, score_chunk, summarize};
use crate::sampling::argmax;

/// One file's figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CompareRow {
    pub file: String,
    /// The expert matrices' type.
    pub ty: String,
    pub bytes: u64,
    pub bits_per_weight: f64,
    pub ppl: f64,
    pub ppl_stderr: f64,
    pub delta_ppl: f64,
    pub ppl_ratio: f64,
    pub mean_kld: f64,
    pub kld_p99: f64,
    pub top1_agreement: f64,
    pub rms_delta_p: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CompareResult {
    pub n_ctx: usize,
    pub chunks: usize,
    pub tokens_scored: usize,
    pub rows: Vec<CompareRow>,
}

/// Bits per weight over all tensors of the file.
pub fn bits_per_weight(model: &Model) -> f64 {
    let (mut bytes, mut elems) = (0u64, 0u64);
    for t in model.gguf().tensors() {
        bytes += t.size;
        elems += t.n_elements();
    }
    bytes as f64 * 8.0 / elems.max(1) as f64
}

#[derive(Default)]
struct Acc {
    nll: Vec<f64>,
    kld: Vec<f64>,
    top1: usize,
    dp2: f64,
}

/// Compare `candidates` against `base` over the chunks of `tokens`; `on_chunk(done, total)`
/// reports progress.
pub fn compare(
    base: &Model,
    candidates: &[Model],
    tokens: &[u32],
    n_ctx: usize,
    max_chunks: Option<usize>,
    on_chunk: &mut dyn FnMut(usize, usize),
) -> Result<CompareResult, ModelError> {
    let vocab = base.hparams().vocab;
    for c in candidates {
        if c.hparams().vocab != vocab {
            return Err(ModelError::Invalid {
                path: c.path().to_path_buf(),
                what: format!(
                    "vocabulary of {} differs from the base's {vocab}",
                    c.hparams().vocab
                ),
            });
        }
    }
    let chunks = chunk_count(tokens.len(), n_ctx).min(max_chunks.unwrap_or(usize::MAX));
    let mut accs: Vec<Acc> = (0..=candidates.len()).map(|_| Acc::default()).collect();
    let mut sessions: Vec<Session> = std::iter::once(base)
        .chain(candidates.iter())
        .map(|m| Session::new(m.hparams(), n_ctx))
        .collect();
    for c in 0..chunks {
        let b = score_chunk(base, &mut sessions[0], tokens, n_ctx, c, true)?;
        let first = first_scored(n_ctx);
        accs[0].nll.extend_from_slice(&b.nll);
        for (k, m) in candidates.iter().enumerate() {
            let q = score_chunk(m, &mut sessions[k + 1], tokens, n_ctx, c, true)?;
            let acc = &mut accs[k + 1];
            acc.nll.extend_from_slice(&q.nll);
            for (j, (lb, lq)) in b
                .log_probs
                .chunks_exact(vocab)
                .zip(q.log_probs.chunks_exact(vocab))
                .enumerate()
            {
                let kl: f64 = lb
                    .iter()
                    .zip(lq)
                    .map(|(&a, &b)| (a as f64).exp() * (a as f64 - b as f64))
                    .sum();
                acc.kld.push(kl.max(0.0));
                if argmax(lb) == argmax(lq) {
                    acc.top1 += 1;
                }
                let tok = tokens[c * n_ctx + first + j] as usize;
                let dp = (lq[tok] as f64).exp() - (lb[tok] as f64).exp();
                acc.dp2 += dp * dp;
            }
        }
        on_chunk(c + 1, chunks);
    }
    let (_, base_ppl, _) = summarize(&accs[0].nll);
    let n = accs[0].nll.len();
    let rows = std::iter::once(base)
        .chain(candidates.iter())
        .zip(&mut accs)
        .map(|(m, acc)| {
            let (_, ppl, err) = summarize(&acc.nll);
            let mut kld = acc.kld.clone();
            kld.sort_by(|a, b| a.total_cmp(b));
            let (mean_kld, p99) = if kld.is_empty() {
                (0.0, 0.0)
            } else {
                let idx = ((kld.len() as f64 * 0.99).ceil() as usize).clamp(1, kld.len()) - 1;
                (kld.iter().sum::<f64>() / kld.len() as f64, kld[idx])
            };
            let is_base = std::ptr::eq(m, base);
            CompareRow {
                file: m.path().display().to_string(),
                ty: m.expert_type().name().to_string(),
                bytes: m.gguf().file_size(),
                bits_per_weight: bits_per_weight(m),
                ppl,
                ppl_stderr: err,
                delta_ppl: ppl - base_ppl,
                ppl_ratio: ppl / base_ppl,
                mean_kld,
                kld_p99: p99,
                top1_agreement: if is_base {
                    1.0
                } else {
                    acc.top1 as f64 / n.max(1) as f64
                },
                rms_delta_p: (acc.dp2 / n.max(1) as f64).sqrt(),
            }
        })
        .collect();
    Ok(CompareResult {
        n_ctx,
        chunks,
        tokens_scored: n,
        rows,
    })
}

/// The result as an aligned text table.
pub fn table(r: &CompareResult) -> String {
    let mut s = format!(
        "n_ctx {}, {} chunks, {} tokens scored\n{:<28} {:>6} {:>9} {:>6} {:>16} {:>9} {:>7} {:>10} {:>10} {:>7} {:>8}\n",
        r.n_ctx, r.chunks, r.tokens_scored,
        "file", "type", "size MB", "bpw", "ppl", "Δppl", "ratio", "mean KLD", "KLD p99", "top-1", "RMS Δp"
    );
    for row in &r.rows {
        let name = std::path::Path::new(&row.file)
            .file_name()
            .map_or(row.file.clone(), |f| f.to_string_lossy().to_string());
        s.push_str(&format!(
            "{:<28} {:>6} {:>9.2} {:>6.3} {:>9.4} ± {:<5.3} {:>+9.4} {:>7.4} {:>10.3e} {:>10.3e} {:>6.2}% {:>8.5}\n",
            name,
            row.ty,
            row.bytes as f64 / 1e6,
            row.bits_per_weight,
            row.ppl,
            row.ppl_stderr,
            row.delta_ppl,
            row.ppl_ratio,
            row.mean_kld,
            row.kld_p99,
            row.top1_agreement * 100.0,
            row.rms_delta_p
        ));
    }
    s
}
