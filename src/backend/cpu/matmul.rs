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

/// `out[t][r] = Σ_i x[t][i] · W[r][i]` for every token t and weight row r; `out` is
/// `tokens × w.n_out`.
pub fn matmul(
    w: &WeightMatrix,
    acts: &PreparedActivations,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let (n_in, n_out, t) = (w.n_in, w.n_out, acts.tokens);
    if acts.weight_ty != w.ty || acts.n_in != n_in {
        return Err(QuantError::SizeMismatch {
            ty: w.ty,
            expected: n_in,
            found: acts.n_in,
        });
    }
    let row_bytes = w.row_bytes();
    if out.len() != t * n_out || w.data.len() != n_out * row_bytes {
        return Err(QuantError::SizeMismatch {
            ty: w.ty,
            expected: n_out * row_bytes,
            found: w.data.len(),
        });
    }
    if t == 1 {
        let act = acts.token(0);
        // Unpacked once here, reused by every task's rows.
        let prep = quant::ActPrep::new(w.ty, act);
        let x32: Option<Vec<f32>> = (w.ty == GgmlType::Q8_0).then(|| {
            act.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        });
        return out
            .par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .try_for_each(|(c, chunk)| {
                let r0 = c * ROWS_PER_TASK;
                let rows = &w.data[r0 * row_bytes..(r0 + chunk.len()) * row_bytes];
                match &x32 {
                    Some(x) => {
                        quant::layout::vec_dot_f32_rows_in(w.ty, n_in, rows, w.layout, x, chunk)
                    }
                    None => quant::layout::vec_dot_rows_in(
                        w.ty,
                        n_in,
                        rows,
                        w.layout,
                        act,
                        Some(&prep),
                        chunk,
                    ),
                }
            });
    }
    // Row-major [n_out][t] results, transposed into out afterwards.
    let mut tmp = vec![0f32; n_out * t];
    if uses_f32_activations(w.ty) {
        // Dequantize a tile of rows once, then a register-blocked f32 GEMM over the batch.
        let x: Vec<f32> = acts
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
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
                    super::gemm::gemm_tile(&tile[..rows * n_in], &x, n_in, chunk);
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
    for r in 0..n_out {
        for tok in 0..t {
            out[tok * n_out + r] = tmp[r * t + tok];
        }
    }
    Ok(())
}
