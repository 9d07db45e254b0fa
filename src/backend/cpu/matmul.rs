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

/// Rows of W handed to one task of a batched matmul (a multiple of 8: tasks split interleaved
/// matrices at whole groups).
const ROWS_PER_TASK: usize = 32;

/// Rows of W handed to one task of a decode matmul (a multiple of 8, as above). 64 rather than
/// 32: half the tasks per region and twice as long a weight stream per task. 1.66 B Q4_0
/// decode at 2 threads, thirteen alternating pairs (`bench -n 128 -p 1 --reps 3`), decode ÷
/// triad 0.59–0.86 (median 0.79) → 0.79–0.90 (median 0.84), higher in 12 of the 13 pairs
/// (128 rows: 0.81–0.86 in four pairs).
///
/// Both decode regions ([`matmul`] with one token, [`matmul_many`]) are split down to single
/// tasks of this size (`with_max_len(1)`): rayon's default splitting stops at a few pieces per
/// thread, and a thread that finished its share found nothing left to steal while the other
/// still had a piece of up to an eighth of the region. Timing each task (1.66 B Q4_0, the
/// experts' regions back to back, two runs each): the second thread was busy 47-84 % of the
/// regions' wall time, 78-92 % split to single tasks; decode ÷ triad in six alternating pairs
/// of `bench -n 64 -p 16 --reps 3`: 0.62-0.73 (median 0.67) → 0.73-0.86 (median 0.77). Each
/// thread still walks its range in order.
const DECODE_ROWS_PER_TASK: usize = 64;

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

    /// Rows `c·DECODE_ROWS_PER_TASK ..` of `w` (as many as `out` holds) dotted with the
    /// activation.
    fn rows(&self, w: &WeightMatrix, c: usize, out: &mut [f32]) -> Result<(), QuantError> {
        let rb = w.row_bytes();
        let r0 = c * DECODE_ROWS_PER_TASK;
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
        for (c, chunk) in o.chunks_mut(DECODE_ROWS_PER_TASK).enumerate() {
            tasks.push((j, c, chunk));
        }
    }
    tasks
        .into_par_iter()
        .with_max_len(1)
        .try_for_each(|(j, c, chunk)| preps[j].rows(jobs[j].0, c, chunk))
}

/// `out[t][r] = Σ_i x[t][i] · W[r][i]` for every token t and weight row r; `out` is
/// `tokens × w.n_out`.
pub fn matmul(
    w: &WeightMatrix,
    acts: &PreparedActivations,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let t = acts.tokens;
    check(w, acts, out)?;
    if t == 1 {
        let d = DecodePrep::new(w, acts);
        return out
            .par_chunks_mut(DECODE_ROWS_PER_TASK)
            .enumerate()
            .with_max_len(1)
            .try_for_each(|(c, chunk)| d.rows(w, c, chunk));
    }
    batch(w, acts, out, t)
}

/// The batched part of [`matmul`]: `out[k·n_out + r] = w_r · x_k`. Each task computes a block
/// of rows for every token (`[rows][t]`, in a buffer reused by its rayon split's next tasks)
/// and writes it into its columns of `out` while it is in cache. (Results first gathered into
/// one `[n_out][t]` matrix and transposed afterwards cost a pass over megabytes, ~4 % of a
/// 512-token prefill, and a buffer the size of the largest batch kept per thread.)
fn batch(
    w: &WeightMatrix,
    acts: &PreparedActivations,
    out: &mut [f32],
    t: usize,
) -> Result<(), QuantError> {
    let (n_in, n_out) = (w.n_in, w.n_out);
    let row_bytes = w.row_bytes();
    let dst = Columns::new(out, t, n_out);
    // The activations once per call, in the form the weight type's kernels take.
    enum Acts<'a> {
        /// Dequantize a tile of rows, then a register-blocked f32 GEMM over the batch (token
        /// panels packed once for every tile).
        F32(super::gemm::PackedTokens),
        /// The multi-token dot-product kernels on the quantized activations.
        Quant(Vec<&'a [u8]>, Vec<quant::ActPrep>),
    }
    let prepared = if uses_f32_activations(w.ty) {
        let x: Vec<f32> = acts
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Acts::F32(super::gemm::PackedTokens::new(&x, n_in))
    } else {
        let toks: Vec<&[u8]> = (0..t).map(|k| acts.token(k)).collect();
        let preps = toks.iter().map(|a| quant::ActPrep::new(w.ty, a)).collect();
        Acts::Quant(toks, preps)
    };
    // A tile and a result block per rayon split, reused across its tasks (a fresh 32-row tile
    // per task would be a fresh mapping: page faults and kernel zeroing on every task).
    (0..n_out.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .try_for_each_init(
            || (Vec::new(), Vec::new()),
            |(tile, res): &mut (Vec<f32>, Vec<f32>), c| -> Result<(), QuantError> {
                let r0 = c * ROWS_PER_TASK;
                let rows = ROWS_PER_TASK.min(n_out - r0);
                let wr = &w.data[r0 * row_bytes..(r0 + rows) * row_bytes];
                res.resize(rows * t, 0.0);
                match &prepared {
                    Acts::F32(packed) => {
                        tile.resize(rows * n_in, 0.0);
                        quant::layout::dequantize_rows_in(w.ty, n_in, wr, w.layout, tile)?;
                        super::gemm::gemm_tile_packed(tile, packed, res);
                    }
                    Acts::Quant(toks, preps) => quant::layout::vec_dot_rows_multi_in(
                        w.ty,
                        n_in,
                        wr,
                        w.layout,
                        toks,
                        Some(preps),
                        res,
                    )?,
                }
                dst.write(c, r0, res);
                Ok(())
            },
        )?;
    Ok(())
}

/// `out` (`t × n_out`, token-major) shared by [`batch`]'s tasks, each of which writes only the
/// columns of its own rows.
struct Columns {
    ptr: *mut f32,
    t: usize,
    n_out: usize,
    /// Which tasks have written (each may write once).
    done: Vec<std::sync::atomic::AtomicBool>,
}

// SAFETY: tasks write disjoint columns (see `write`), so sharing the pointer between threads
// creates no data race; `out` outlives every task (`batch` borrows it mutably throughout).
unsafe impl Sync for Columns {}

impl Columns {
    fn new(out: &mut [f32], t: usize, n_out: usize) -> Self {
        assert_eq!(out.len(), t * n_out, "matmul: output of {t} × {n_out}");
        Columns {
            ptr: out.as_mut_ptr(),
            t,
            n_out,
            done: (0..n_out.div_ceil(ROWS_PER_TASK))
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
        }
    }

    /// Task `c`'s results `res[r·t + k]` for rows `r0 + r` into `out[k·n_out + r0 + r]`.
    fn write(&self, c: usize, r0: usize, res: &[f32]) {
        let rows = res.len() / self.t;
        assert!(
            r0 == c * ROWS_PER_TASK
                && rows <= ROWS_PER_TASK
                && r0 + rows <= self.n_out
                && res.len() == rows * self.t,
            "matmul: task {c} writes rows {r0}+{rows} of {}",
            self.n_out
        );
        let first = !self.done[c].swap(true, std::sync::atomic::Ordering::Relaxed);
        assert!(first, "matmul: task {c} written twice");
        for k in 0..self.t {
            // SAFETY: row k of `out` spans k·n_out..(k+1)·n_out, and r0 + rows ≤ n_out
            // (asserted), so the columns r0..r0+rows lie inside it; task c alone owns the
            // columns c·ROWS_PER_TASK.. (r0 == c·ROWS_PER_TASK, rows ≤ ROWS_PER_TASK, and each
            // task writes once: asserted), so no other thread writes or reads them meanwhile.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(self.ptr.add(k * self.n_out + r0), rows) };
            for (r, d) in dst.iter_mut().enumerate() {
                *d = res[r * self.t + k];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quant::Layout;

    /// A batch's row `k` equals the matmul of token `k` alone (the decode path): bit for bit for
    /// the quantized-activation types (the same integer sums and float steps), to float
    /// rounding for the f32-activation types (a GEMM against a dot-product kernel). Row counts
    /// that are not a multiple of a task's 32 rows, both layouts, batches of 2..=9 tokens.
    #[test]
    fn batch_rows_equal_single_tokens() {
        let n_in = 256;
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_K,
            GgmlType::Q8_0,
            GgmlType::F32,
        ] {
            for n_out in [8usize, 67, 200] {
                let wf: Vec<f32> = (0..n_out * n_in)
                    .map(|i| ((i as f32) * 0.7311).sin())
                    .collect();
                let mut rows = vec![0u8; n_out * ty.row_bytes(n_in).unwrap()];
                quant::quantize_rows(ty, &wf, n_in, &mut rows, None).unwrap();
                let mut packed = vec![0u8; rows.len()];
                let il = quant::layout::interleave_rows(ty, n_in, &rows, &mut packed).is_ok()
                    && n_out % 8 == 0;
                let mut layouts = vec![(Layout::Rows, &rows[..])];
                if il {
                    layouts.push((Layout::Interleaved8, &packed[..]));
                }
                for (layout, data) in layouts {
                    let w = WeightMatrix {
                        ty,
                        n_in,
                        n_out,
                        data,
                        layout,
                    };
                    for t in 2..=9usize {
                        let x: Vec<f32> = (0..t * n_in)
                            .map(|i| ((i as f32) * 0.377).cos() * 2.0)
                            .collect();
                        let acts = PreparedActivations::new(ty, &x, n_in).unwrap();
                        let mut out = vec![f32::NAN; t * n_out];
                        matmul(&w, &acts, &mut out).unwrap();
                        for (k, got) in out.chunks_exact(n_out).enumerate() {
                            let one = &x[k * n_in..(k + 1) * n_in];
                            let a1 = PreparedActivations::new(ty, one, n_in).unwrap();
                            let mut want = vec![0f32; n_out];
                            matmul(&w, &a1, &mut want).unwrap();
                            for (r, (g, e)) in got.iter().zip(&want).enumerate() {
                                let ok = if uses_f32_activations(ty) {
                                    (g - e).abs() <= 1e-4 * e.abs().max(1.0)
                                } else {
                                    g.to_bits() == e.to_bits()
                                };
                                assert!(ok, "{ty:?} {layout:?} {n_out} rows, {t} tokens: [{k}][{r}] {g} vs {e}");
                            }
                        }
                    }
                }
            }
        }
    }
}
