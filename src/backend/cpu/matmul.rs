//! `out = x · Wᵀ` for quantized W: activations are prepared once per call in the weight type's
//! dot-product format, then rayon splits the weight rows; each weight row is read once per call
//! and dotted with every token of the batch while it is in cache.

use crate::backend::WeightMatrix;
use quant::{GgmlType, QuantError};
use rayon::prelude::*;

/// Whether dot products with `ty` weights take the activations in f32 (exact: Q8_0 computes
/// exactly what the F32 file does) rather than quantized the way ggml does (Q8_0/Q8_1/Q8_K for
/// the 4-6 bit types, whose own rounding dominates).
pub fn uses_f32_activations(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q8_0 | GgmlType::F32 | GgmlType::F16 | GgmlType::BF16
    )
}

/// A batch of activation rows in the dot-product format of one weight type.
pub struct PreparedActivations {
    weight_ty: GgmlType,
    n_in: usize,
    /// Per-token byte ranges into `data`.
    stride: usize,
    tokens: usize,
    data: Vec<u8>,
}

impl PreparedActivations {
    /// Prepare `x` (`tokens × n_in` f32) for dot products with weights of type `weight_ty`.
    pub fn new(weight_ty: GgmlType, x: &[f32], n_in: usize) -> Result<Self, QuantError> {
        if n_in == 0 || x.len() % n_in != 0 {
            return Err(QuantError::SizeMismatch {
                ty: GgmlType::F32,
                expected: n_in,
                found: x.len(),
            });
        }
        let tokens = x.len() / n_in;
        let mut data = Vec::new();
        let mut stride = n_in * 4;
        if uses_f32_activations(weight_ty) {
            weight_ty
                .row_bytes(n_in)
                .ok_or(QuantError::NotBlockAligned {
                    ty: weight_ty,
                    len: n_in,
                })?;
            data.extend_from_slice(bytemuck::cast_slice(x));
        } else {
            let mut one = Vec::new();
            for row in x.chunks_exact(n_in) {
                quant::quantize_activation(weight_ty, row, &mut one)?;
                stride = one.len();
                data.extend_from_slice(&one);
            }
        }
        Ok(PreparedActivations {
            weight_ty,
            n_in,
            stride,
            tokens,
            data,
        })
    }

    pub fn tokens(&self) -> usize {
        self.tokens
    }

    fn token(&self, t: usize) -> &[u8] {
        &self.data[t * self.stride..(t + 1) * self.stride]
    }
}

/// Rows of W handed to one task (a multiple of 8: tasks split interleaved matrices at whole
/// groups).
const ROWS_PER_TASK: usize = 32;

/// The sizes [`matmul`] needs: activations prepared for `w`'s type and width, `out` of
/// `tokens × n_out`, `w` of `n_out` whole rows.
fn check(w: &WeightMatrix, acts: &PreparedActivations, out: &[f32]) -> Result<(), QuantError> {
    if acts.weight_ty != w.ty || acts.n_in != w.n_in {
        return Err(QuantError::SizeMismatch {
            ty: w.ty,
            expected: w.n_in,
            found: acts.n_in,
        });
    }
    let row_bytes = w.row_bytes();
    if out.len() != acts.tokens * w.n_out || w.data.len() != w.n_out * row_bytes {
        return Err(QuantError::SizeMismatch {
            ty: w.ty,
            expected: w.n_out * row_bytes,
            found: w.data.len(),
        });
    }
    Ok(())
}

/// One token's activation made ready for every row task of a decode matmul: unpacked once
/// ([`quant::ActPrep`]) or, for the f32-activation types, viewed as f32.
struct DecodePrep<'a> {
    act: &'a [u8],
    prep: quant::ActPrep,
    x32: Option<Vec<f32>>,
}

impl<'a> DecodePrep<'a> {
    fn new(w: &WeightMatrix, acts: &'a PreparedActivations) -> Self {
        let act = acts.token(0);
        DecodePrep {
            act,
            prep: quant::ActPrep::new(w.ty, act),
            x32: (w.ty == GgmlType::Q8_0).then(|| {
                act.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }),
        }
    }

    /// Rows `c·ROWS_PER_TASK ..` of `w` (as many as `out` holds) dotted with the activation.
    fn rows(&self, w: &WeightMatrix, c: usize, out: &mut [f32]) -> Result<(), QuantError> {
        let rb = w.row_bytes();
        let r0 = c * ROWS_PER_TASK;
        let rows = &w.data[r0 * rb..(r0 + out.len()) * rb];
        match &self.x32 {
            Some(x) => quant::layout::vec_dot_f32_rows_in(w.ty, w.n_in, rows, w.layout, x, out),
            None => quant::layout::vec_dot_rows_in(
                w.ty,
                w.n_in,
                rows,
                w.layout,
                self.act,
                Some(&self.prep),
                out,
            ),
        }
    }
}

/// Several matmuls at once: `outs[i] = matmul(jobs[i])`, identical results. With one token
/// each (decode) their row tasks form one parallel region, one fork/join for, say, q, k and v
/// or both chosen experts' gate and up instead of one per matrix; batches go one by one.
pub fn matmul_many(
    jobs: &[(&WeightMatrix, &PreparedActivations)],
    outs: &mut [&mut [f32]],
) -> Result<(), QuantError> {
    if outs.len() != jobs.len() {
        return Err(QuantError::OutLen {
            expected: jobs.len(),
            found: outs.len(),
        });
    }
    if jobs.len() < 2 || jobs.iter().any(|(_, a)| a.tokens != 1) {
        for ((w, a), o) in jobs.iter().zip(outs.iter_mut()) {
            matmul(w, a, o)?;
        }
        return Ok(());
    }
    for ((w, a), o) in jobs.iter().zip(outs.iter()) {
        check(w, a, o)?;
    }
    let preps: Vec<DecodePrep> = jobs.iter().map(|(w, a)| DecodePrep::new(w, a)).collect();
    let mut tasks: Vec<(usize, usize, &mut [f32])> = Vec::new();
    for (j, o) in outs.iter_mut().enumerate() {
        for (c, chunk) in o.chunks_mut(ROWS_PER_TASK).enumerate() {
            tasks.push((j, c, chunk));
        }
    }
    tasks
        .into_par_iter()
        .try_for_each(|(j, c, chunk)| preps[j].rows(jobs[j].0, c, chunk))
}

/// `out[t][r] = Σ_i x[t][i] · W[r][i]` for every token t and weight row r; `out` is
/// `tokens × w.n_out`.
pub fn matmul(
    w: &WeightMatrix,
    acts: &PreparedActivations,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let (n_out, t) = (w.n_out, acts.tokens);
    check(w, acts, out)?;
    if t == 1 {
        let d = DecodePrep::new(w, acts);
        return out
            .par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .try_for_each(|(c, chunk)| d.rows(w, c, chunk));
    }
    // Row-major [n_out][t] results, transposed into out afterwards, in a buffer this thread
    // keeps between calls: a fresh one per matmul (megabytes in prefill) cost page faults,
    // kernel page zeroing and a memset every time (~20 % of a 512-token Q4_K prefill).
    // Not cleared: `batch` writes every element.
    let mut tmp = TMP.with(|c| std::mem::take(&mut *c.borrow_mut()));
    tmp.resize(n_out * t, 0.0);
    let r = batch(w, acts, &mut tmp, t);
    if r.is_ok() {
        // Token by token in parallel: each output row gathers its column of tmp.
        out.par_chunks_mut(n_out).enumerate().for_each(|(tok, o)| {
            for (r, v) in o.iter_mut().enumerate() {
                *v = tmp[r * t + tok];
            }
        });
    }
    TMP.with(|c| *c.borrow_mut() = tmp);
    r
}

thread_local! {
    /// [`matmul`]'s batch result buffer (see there).
    static TMP: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The batched part of [`matmul`]: `tmp[r·t + k] = w_r · x_k`.
fn batch(
    w: &WeightMatrix,
    acts: &PreparedActivations,
    tmp: &mut [f32],
    t: usize,
) -> Result<(), QuantError> {
    let n_in = w.n_in;
    let row_bytes = w.row_bytes();
    if uses_f32_activations(w.ty) {
        // Dequantize a tile of rows once, then a register-blocked f32 GEMM over the batch.
        let x: Vec<f32> = acts
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // Packed once for every row tile.
        let packed = super::gemm::PackedTokens::new(&x, n_in);
        // One tile buffer per worker, reused across its tasks (a fresh 32-row tile per task
        // would be a fresh mapping: page faults and kernel zeroing on every task).
        tmp.par_chunks_mut(ROWS_PER_TASK * t)
            .enumerate()
            .try_for_each_init(
                Vec::new,
                |tile: &mut Vec<f32>, (c, chunk)| -> Result<(), QuantError> {
                    let rows = chunk.len() / t;
                    let r0 = c * ROWS_PER_TASK;
                    tile.resize(rows * n_in, 0.0);
                    quant::layout::dequantize_rows_in(
                        w.ty,
                        n_in,
                        &w.data[r0 * row_bytes..(r0 + rows) * row_bytes],
                        w.layout,
                        &mut tile[..rows * n_in],
                    )?;
                    super::gemm::gemm_tile_packed(&tile[..rows * n_in], &packed, chunk);
                    Ok(())
                },
            )?;
    } else {
        let toks: Vec<&[u8]> = (0..t).map(|k| acts.token(k)).collect();
        let preps: Vec<quant::ActPrep> =
            toks.iter().map(|a| quant::ActPrep::new(w.ty, a)).collect();
        tmp.par_chunks_mut(ROWS_PER_TASK * t)
            .enumerate()
            .try_for_each(|(c, chunk)| -> Result<(), QuantError> {
                let r0 = c * ROWS_PER_TASK;
                let rows = &w.data[r0 * row_bytes..(r0 + chunk.len() / t) * row_bytes];
                quant::layout::vec_dot_rows_multi_in(
                    w.ty,
                    n_in,
                    rows,
                    w.layout,
                    &toks,
                    Some(&preps),
                    chunk,
                )
            })?;
    }
    Ok(())
}
