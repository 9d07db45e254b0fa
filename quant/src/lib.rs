//! ggml-compatible block formats.
//!
//! Every type the product writes or computes with lives here, one module per type, each with a
//! scalar reference (`quantize`, `dequantize`, `vec_dot`) and, where it pays, SIMD kernels chosen
//! at run time. This crate knows no container (GGUF lives in the main crate) and no model.

// Bit layouts read most clearly with explicit indices.
#![allow(clippy::needless_range_loop)]
// `usize::is_multiple_of` is newer than the workspace MSRV (1.80).
#![allow(clippy::manual_is_multiple_of)]

mod common;
pub mod float;
pub mod gptq;
mod k_scales;
pub mod layout;
pub mod nib4;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;
mod types;

pub use common::simd_tier;
pub use layout::Layout;
use rayon::prelude::*;
pub use types::{GgmlType, QuantError, QK_K};

fn check_aligned(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    ty.row_bytes(n)
        .ok_or(QuantError::NotBlockAligned { ty, len: n })
}

fn check_bytes(ty: GgmlType, n: usize, found: usize) -> Result<(), QuantError> {
    let expected = check_aligned(ty, n)?;
    if expected != found {
        return Err(QuantError::SizeMismatch {
            ty,
            expected,
            found,
        });
    }
    Ok(())
}

fn check_imatrix(imatrix: Option<&[f32]>, n: usize) -> Result<(), QuantError> {
    if let Some(m) = imatrix {
        if m.len() != n {
            return Err(QuantError::ImatrixLen {
                expected: n,
                found: m.len(),
            });
        }
        if let Some(index) = m.iter().position(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(QuantError::ImatrixValue { index });
        }
    }
    Ok(())
}

/// Whether [`quantize_row`] can produce `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q8_0 | Q8_1 | Q4_K | Q5_K | Q6_K | Q8_K
    )
}

/// Quantize one row (src.len() elements, block aligned) into dst (exactly row_bytes).
pub fn quantize_row(
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    if !can_quantize(ty) {
        return Err(QuantError::Unsupported {
            ty,
            what: "quantization",
        });
    }
    check_bytes(ty, src.len(), dst.len())?;
    check_imatrix(imatrix, src.len())?;
    quantize_row_unchecked(ty, src, dst, imatrix);
    Ok(())
}

fn quantize_row_unchecked(ty: GgmlType, src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    use GgmlType::*;
    match ty {
        F32 => float::quantize_f32(src, dst),
        F16 => float::quantize_f16(src, dst),
        BF16 => float::quantize_bf16(src, dst),
        Q4_0 => q4_0::quantize(src, dst, imatrix),
        Q4_1 => q4_1::quantize(src, dst, imatrix),
        Q5_0 => q5_0::quantize(src, dst, imatrix),
        Q8_0 => q8_0::quantize(src, dst, imatrix),
        Q8_1 => q8_1::quantize(src, dst),
        Q4_K => q4_k::quantize(src, dst, imatrix),
        Q5_K => q5_k::quantize(src, dst, imatrix),
        Q6_K => q6_k::quantize(src, dst, imatrix),
        Q8_K => q8_k::quantize(src, dst),
        _ => unreachable!("checked by can_quantize"),
    }
}

/// Quantize many rows in parallel (rayon); src is rows*n_per_row.
pub fn quantize_rows(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
) -> Result<(), QuantError> {
    if !can_quantize(ty) {
        return Err(QuantError::Unsupported {
            ty,
            what: "quantization",
        });
    }
    let rb = check_aligned(ty, n_per_row)?;
    if n_per_row == 0 {
        return check_bytes(ty, 0, dst.len());
    }
    if src.len() % n_per_row != 0 {
        return Err(QuantError::NotBlockAligned { ty, len: src.len() });
    }
    let rows = src.len() / n_per_row;
    let expected = rows.checked_mul(rb).ok_or(QuantError::SizeMismatch {
        ty,
        expected: usize::MAX,
        found: dst.len(),
    })?;
    if dst.len() != expected {
        return Err(QuantError::SizeMismatch {
            ty,
            expected,
            found: dst.len(),
        });
    }
    check_imatrix(imatrix, n_per_row)?;
    src.par_chunks(n_per_row)
        .zip(dst.par_chunks_mut(rb.max(1)))
        .for_each(|(s, d)| quantize_row_unchecked(ty, s, d, imatrix));
    Ok(())
}

/// Quantize many rows (rayon) with error feedback through the input covariance factored in
/// `f` (see [`gptq`]); `ty` must be one of [`gptq::supports`], rows `f.n()` long.
pub fn quantize_rows_gptq(
    ty: GgmlType,
    src: &[f32],
    f: &gptq::Factor,
    dst: &mut [u8],
) -> Result<(), QuantError> {
    if !gptq::supports(ty) {
        return Err(QuantError::Unsupported {
            ty,
            what: "quantization with an input covariance",
        });
    }
    let n = f.n();
    let rb = check_aligned(ty, n)?;
    if n == 0 {
        return check_bytes(ty, 0, dst.len());
    }
    if src.len() % n != 0 {
        return Err(QuantError::NotBlockAligned { ty, len: src.len() });
    }
    check_bytes(ty, src.len(), dst.len())?;
    src.par_chunks(n)
        .zip(dst.par_chunks_mut(rb))
        .for_each(|(s, d)| gptq::quantize_row(ty, f, s, d));
    Ok(())
}

/// [`quantize_rows_gptq`] with `cov` where given and `ty` can use it (see
/// [`gptq::supports`]), else [`quantize_rows`] with the importance weights.
pub fn quantize_rows_fed(
    ty: GgmlType,
    src: &[f32],
    n_per_row: usize,
    dst: &mut [u8],
    imatrix: Option<&[f32]>,
    cov: Option<&gptq::Factor>,
) -> Result<(), QuantError> {
    match cov.filter(|_| gptq::supports(ty)) {
        Some(f) => quantize_rows_gptq(ty, src, f, dst),
        None => quantize_rows(ty, src, n_per_row, dst, imatrix),
    }
}

/// Dequantize one row; dst.len() is the element count.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    use GgmlType::*;
    check_bytes(ty, dst.len(), src.len())?;
    match ty {
        F32 => float::dequantize(float::Kind::F32, src, dst),
        F16 => float::dequantize(float::Kind::F16, src, dst),
        BF16 => float::dequantize(float::Kind::BF16, src, dst),
        Q4_0 => q4_0::dequantize(src, dst),
        Q4_1 => q4_1::dequantize(src, dst),
        Q5_0 => q5_0::dequantize(src, dst),
        Q8_0 => q8_0::dequantize(src, dst),
        Q8_1 => q8_1::dequantize(src, dst),
        Q4_K => q4_k::dequantize(src, dst),
        Q5_K => q5_k::dequantize(src, dst),
        Q6_K => q6_k::dequantize(src, dst),
        Q8_K => q8_k::dequantize(src, dst),
        _ => {
            return Err(QuantError::Unsupported {
                ty,
                what: "dequantization",
            })
        }
    }
    Ok(())
}

/// Scalar-only dequantization (reference for tests and benchmarks).
pub fn dequantize_row_scalar(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    use GgmlType::*;
    check_bytes(ty, dst.len(), src.len())?;
    match ty {
        F32 => float::dequantize_f32(src, dst),
        F16 => float::dequantize_f16(src, dst),
        BF16 => float::dequantize_bf16(src, dst),
        Q4_0 => q4_0::dequantize_scalar(src, dst),
        Q4_1 => q4_1::dequantize_scalar(src, dst),
        Q5_0 => q5_0::dequantize_scalar(src, dst),
        Q8_0 => q8_0::dequantize_scalar(src, dst),
        Q8_1 => q8_1::dequantize(src, dst),
        Q4_K => q4_k::dequantize_scalar(src, dst),
        Q5_K => q5_k::dequantize_scalar(src, dst),
        Q6_K => q6_k::dequantize_scalar(src, dst),
        Q8_K => q8_k::dequantize(src, dst),
        _ => {
            return Err(QuantError::Unsupported {
                ty,
                what: "dequantization",
            })
        }
    }
    Ok(())
}

/// The activation type a weight type's dot product uses (Q8_0 for Q4_0/Q8_0/Q5_0, Q8_1 for
/// Q4_1, Q8_K for K-quants, F32 for F32/F16/BF16). Types without a dot product map to F32;
/// [`vec_dot`] rejects them.
pub fn vec_dot_type(ty: GgmlType) -> GgmlType {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => Q8_0,
        Q4_1 => Q8_1,
        Q4_K | Q5_K | Q6_K => Q8_K,
        _ => F32,
    }
}

fn has_vec_dot(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q8_0 | Q4_K | Q5_K | Q6_K
    )
}

/// Quantize an activation vector x to vec_dot_type(weight_ty); overwrites out.
pub fn quantize_activation(
    weight_ty: GgmlType,
    x: &[f32],
    out: &mut Vec<u8>,
) -> Result<(), QuantError> {
    if !has_vec_dot(weight_ty) {
        return Err(QuantError::Unsupported {
            ty: weight_ty,
            what: "dot products",
        });
    }
    let at = vec_dot_type(weight_ty);
    // The weight row has the same length, so it must be aligned for the weight type too.
    check_aligned(weight_ty, x.len())?;
    let rb = check_aligned(at, x.len())?;
    out.clear();
    out.resize(rb, 0);
    quantize_row_unchecked(at, x, out, None);
    Ok(())
}

fn check_dot(weight_ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> Result<(), QuantError> {
    if !has_vec_dot(weight_ty) {
        return Err(QuantError::Unsupported {
            ty: weight_ty,
            what: "dot products",
        });
    }
    check_bytes(weight_ty, n, w.len())?;
    check_bytes(vec_dot_type(weight_ty), n, act.len())
}

fn dot_unchecked(weight_ty: GgmlType, n: usize, w: &[u8], act: &[u8], simd: bool) -> f32 {
    use GgmlType::*;
    macro_rules! pick {
        ($m:ident) => {
            if simd {
                $m::vec_dot(w, act)
            } else {
                $m::vec_dot_scalar(w, act)
            }
        };
    }
    let fk = |k| {
        if simd {
            float::vec_dot(k, n, w, act)
        } else {
            float::vec_dot_scalar(k, n, w, act)
        }
    };
    match weight_ty {
        F32 => fk(float::Kind::F32),
        F16 => fk(float::Kind::F16),
        BF16 => fk(float::Kind::BF16),
        Q4_0 => pick!(q4_0),
        Q4_1 => pick!(q4_1),
        Q5_0 => pick!(q5_0),
        Q8_0 => pick!(q8_0),
        Q4_K => pick!(q4_k),
        Q5_K => pick!(q5_k),
        Q6_K => pick!(q6_k),
        _ => unreachable!("checked by has_vec_dot"),
    }
}

/// Dot product of one weight row (n elements, bytes of weight_ty) with an activation produced
/// by quantize_activation. Uses the best SIMD path available.
pub fn vec_dot(weight_ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> Result<f32, QuantError> {
    check_dot(weight_ty, n, w, act)?;
    Ok(dot_unchecked(weight_ty, n, w, act, true))
}

/// Same, scalar reference only (for tests and benchmarks).
pub fn vec_dot_scalar(
    weight_ty: GgmlType,
    n: usize,
    w: &[u8],
    act: &[u8],
) -> Result<f32, QuantError> {
    check_dot(weight_ty, n, w, act)?;
    Ok(dot_unchecked(weight_ty, n, w, act, false))
}

/// Dot product of one weight row with f32 activations, dequantization fused, no rounding of the
/// activations: the "exact" path (Q8_0 has its own SIMD kernel; F32/F16/BF16 use theirs; other
/// types dequantize block by block on the stack).
pub fn vec_dot_f32(weight_ty: GgmlType, n: usize, w: &[u8], x: &[f32]) -> Result<f32, QuantError> {
    use GgmlType::*;
    check_bytes(weight_ty, n, w.len())?;
    if x.len() != n {
        return Err(QuantError::SizeMismatch {
            ty: F32,
            expected: n * 4,
            found: x.len() * 4,
        });
    }
    let xb: &[u8] = bytemuck::cast_slice(x);
    Ok(match weight_ty {
        Q8_0 => q8_0::vec_dot_f32(w, x),
        F32 => float::vec_dot(float::Kind::F32, n, w, xb),
        F16 => float::vec_dot(float::Kind::F16, n, w, xb),
        BF16 => float::vec_dot(float::Kind::BF16, n, w, xb),
        _ => {
            let (bs, ts) = (weight_ty.block_size(), weight_ty.type_size());
            let mut buf = [0f32; QK_K];
            let mut sum = 0.0f32;
            for (blk, xs) in w.chunks_exact(ts).zip(x.chunks_exact(bs)) {
                dequantize_row(weight_ty, blk, &mut buf[..bs])?;
                sum += buf[..bs].iter().zip(xs).map(|(a, b)| a * b).sum::<f32>();
            }
            sum
        }
    })
}

/// An activation made ready, once, for many row-group kernel calls (decode dots one activation
/// with every row of several matrices; each call gets a chunk of rows). Holds what the weight
/// type's multi-row kernel wants beyond the activation bytes (for Q4_0: the Q8_0 blocks
/// unpacked, f32 scales, block sums; Q5_0 the same; and for Q4_0, Q4_1 and Q5_0, made on the
/// first row-major decode call where they run, the `nib4` kernels' [`nib4::Lanes`]); nothing
/// for the other types.
pub struct ActPrep {
    weight_ty: GgmlType,
    unpacked: Option<q8_0::PreparedQ8>,
    /// Q4_0's, Q4_1's and Q5_0's `nib4` layout ([`nib4::Lanes`]), made on first use by a
    /// row-major group where those kernels run (decode; batched prefill never asks).
    lanes: std::sync::OnceLock<Option<nib4::Lanes>>,
}

impl ActPrep {
    /// Prepare `act` (as made by [`quantize_activation`] for `weight_ty`).
    pub fn new(weight_ty: GgmlType, act: &[u8]) -> Self {
        let unpacked = match weight_ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 => Some(q8_0::PreparedQ8::new(act)),
            _ => None,
        };
        ActPrep {
            weight_ty,
            unpacked,
            lanes: std::sync::OnceLock::new(),
        }
    }

    /// The `nib4` kernels' layout of `act` (the activation this was made from), where they
    /// run and the weight type has them.
    fn lanes(&self, act: &[u8]) -> Option<&nib4::Lanes> {
        if !nib4::Lanes::wanted() {
            return None;
        }
        self.lanes
            .get_or_init(|| match (&self.unpacked, self.weight_ty) {
                (Some(p), _) => Some(nib4::Lanes::from_q8_0(p)),
                (None, GgmlType::Q4_1) => Some(nib4::Lanes::from_q8_1(act)),
                _ => None,
            })
            .as_ref()
    }
}

/// Dot every row of `w` (consecutive rows of `n` elements) with one activation: `out[r] = w_r ·
/// act`. Sizes are checked once, then the rows stream through the SIMD kernel (decode's inner
/// loop: no per-row dispatch).
pub fn vec_dot_rows(
    weight_ty: GgmlType,
    n: usize,
    w: &[u8],
    act: &[u8],
    out: &mut [f32],
) -> Result<(), QuantError> {
    vec_dot_rows_with(weight_ty, n, w, act, None, out)
}

/// [`vec_dot_rows`] with the activation prepared once by [`ActPrep::new`] (from this `act`).
pub fn vec_dot_rows_with(
    weight_ty: GgmlType,
    n: usize,
    w: &[u8],
    act: &[u8],
    prep: Option<&ActPrep>,
    out: &mut [f32],
) -> Result<(), QuantError> {
    rows_with(weight_ty, n, w, false, act, prep, out)
}

/// [`vec_dot_rows_with`] on rows in ggml's layout (`il` false) or with whole eight-row groups
/// interleaved (`il` true: only for [`layout::can_interleave`] types with the AVX2 kernel
/// running; `layout` sees to both).
pub(crate) fn rows_with(
    weight_ty: GgmlType,
    n: usize,
    w: &[u8],
    il: bool,
    act: &[u8],
    prep: Option<&ActPrep>,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let rb = check_aligned(weight_ty, n)?;
    check_bytes(weight_ty, n * out.len(), w.len())?;
    if let Some(first) = w.get(..rb) {
        check_dot(weight_ty, n, first, act)?;
    }
    let unpacked = prep.and_then(|p| p.unpacked.as_ref());
    // Lanes only from a preparation for this weight type (Q4_1's come from Q8_1 blocks, the
    // others' from Q8_0); without, the kernel call makes its own.
    let lanes = prep
        .filter(|p| !il && p.weight_ty == weight_ty)
        .and_then(|p| p.lanes(act));
    match weight_ty {
        GgmlType::Q4_0 => q4_0::vec_dot_rows(w, rb, il, act, unpacked, lanes, out),
        GgmlType::Q4_1 => q4_1::vec_dot_rows(w, rb, il, act, lanes, out),
        GgmlType::Q5_0 => q5_0::vec_dot_rows(w, rb, il, act, unpacked, lanes, out),
        GgmlType::Q8_0 => q8_0::vec_dot_rows(w, rb, il, act, out),
        // Bit-identical to `vec_dot` per row, so not `has_rows_kernel` types.
        GgmlType::Q4_K => q4_k::vec_dot_rows(w, rb, il, act, out),
        GgmlType::Q5_K => q5_k::vec_dot_rows(w, rb, il, act, out),
        GgmlType::Q6_K => q6_k::vec_dot_rows(w, rb, il, act, out),
        GgmlType::F32 => float::vec_dot_rows(float::Kind::F32, n, w, il, act, out),
        GgmlType::F16 => float::vec_dot_rows(float::Kind::F16, n, w, il, act, out),
        GgmlType::BF16 => float::vec_dot_rows(float::Kind::BF16, n, w, il, act, out),
        _ => {
            assert!(!il, "{} has no interleaved layout", weight_ty.name());
            for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
                *o = dot_unchecked(weight_ty, n, row, act, true);
            }
        }
    }
    Ok(())
}

/// Whether [`vec_dot_rows_with`]'s match above sends `ty` to a multi-row kernel (whose float
/// summation order then differs from [`vec_dot`]'s); the batched entry point must go through
/// the same kernel (`rows_multi_equals_rows_per_token` checks it bit for bit).
fn has_rows_kernel(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, Q4_0 | Q4_1 | Q5_0 | Q8_0 | F32 | F16 | BF16)
}

/// Dot every row of `w` (consecutive rows of `n` elements) with several activations (batched
/// prefill): `out[r·acts.len() + t] = w_r · acts[t]`. Sizes are checked once; Q4_0 and Q5_0 go
/// through kernels that unpack each weight block once for four tokens and eight rows, Q4_K, Q5_K and
/// Q6_K ones that unpack each super-block once for eight tokens, the other types row by row
/// with each row hot in cache across the tokens.
pub fn vec_dot_rows_multi(
    weight_ty: GgmlType,
    n: usize,
    w: &[u8],
    acts: &[&[u8]],
    out: &mut [f32],
) -> Result<(), QuantError> {
    vec_dot_rows_multi_with(weight_ty, n, w, acts, None, out)
}

/// [`vec_dot_rows_multi`] with the activations prepared once by [`ActPrep::new`] (one per
/// activation, in order).
pub fn vec_dot_rows_multi_with(
    weight_ty: GgmlType,
    n: usize,
    w: &[u8],
    acts: &[&[u8]],
    preps: Option<&[ActPrep]>,
    out: &mut [f32],
) -> Result<(), QuantError> {
    rows_multi_with(weight_ty, n, w, false, acts, preps, out)
}

/// The sizes of a batched dot: `out_len` a whole number of rows for `tokens > 0` activations
/// and `w` exactly those rows of `n` elements. Returns (row bytes, rows).
pub(crate) fn check_multi(
    ty: GgmlType,
    n: usize,
    w: &[u8],
    tokens: usize,
    out_len: usize,
) -> Result<(usize, usize), QuantError> {
    let rb = check_aligned(ty, n)?;
    if tokens == 0 || out_len % tokens != 0 {
        return Err(QuantError::OutLen {
            expected: tokens.max(1) * (out_len / tokens.max(1)),
            found: out_len,
        });
    }
    let rows = out_len / tokens;
    check_bytes(ty, n * rows, w.len())?;
    Ok((rb, rows))
}

/// [`vec_dot_rows_multi_with`] in either layout (see [`rows_with`]).
pub(crate) fn rows_multi_with(
    weight_ty: GgmlType,
    n: usize,
    w: &[u8],
    il: bool,
    acts: &[&[u8]],
    preps: Option<&[ActPrep]>,
    out: &mut [f32],
) -> Result<(), QuantError> {
    let tokens = acts.len();
    let (rb, rows) = check_multi(weight_ty, n, w, tokens, out.len())?;
    if let Some(first) = w.get(..rb) {
        for a in acts {
            check_dot(weight_ty, n, first, a)?;
        }
    }
    if matches!(weight_ty, GgmlType::Q4_0 | GgmlType::Q5_0) {
        let unpacked: Option<Vec<&q8_0::PreparedQ8>> =
            preps.and_then(|ps| ps.iter().map(|p| p.unpacked.as_ref()).collect());
        let u = unpacked.filter(|u| u.len() == acts.len());
        if weight_ty == GgmlType::Q4_0 {
            q4_0::vec_dot_rows_multi(w, rb, il, acts, u.as_deref(), out);
        } else {
            q5_0::vec_dot_rows_multi(w, rb, il, acts, u.as_deref(), out);
        }
        return Ok(());
    }
    if weight_ty == GgmlType::Q4_1 {
        q4_1::vec_dot_rows_multi(w, rb, il, acts, out);
        return Ok(());
    }
    if weight_ty == GgmlType::Q4_K {
        if !il {
            q4_k::vec_dot_rows_multi(w, rb, acts, out);
            return Ok(());
        }
        if q4_k::vec_dot_rows_multi_packed(w, rb, acts, out).is_some() {
            return Ok(());
        }
        // The scalar path reads rows: each packed group is unpacked first.
        return layout::via_rows(weight_ty, w, rb, rows, |plain, r0| {
            let k = plain.len() / rb.max(1);
            q4_k::vec_dot_rows_multi(plain, rb, acts, &mut out[r0 * tokens..(r0 + k) * tokens]);
            Ok(())
        });
    }
    if matches!(weight_ty, GgmlType::Q5_K | GgmlType::Q6_K) {
        let multi = if weight_ty == GgmlType::Q5_K {
            q5_k::vec_dot_rows_multi
        } else {
            q6_k::vec_dot_rows_multi
        };
        if il {
            // The batched kernels take one row at a time (their unpacking dominates, not the
            // reads): each packed group unpacked first.
            return layout::via_rows(weight_ty, w, rb, rows, |plain, r0| {
                let k = plain.len() / rb.max(1);
                multi(plain, rb, acts, &mut out[r0 * tokens..(r0 + k) * tokens]);
                Ok(())
            });
        }
        multi(w, rb, acts, out);
        return Ok(());
    }
    if has_rows_kernel(weight_ty) {
        // A multi-row decode kernel but no batched one: take it per token so both paths agree,
        // with each token's prepared activation when the caller made them.
        let mut one = vec![0f32; rows];
        for (t, a) in acts.iter().enumerate() {
            rows_with(
                weight_ty,
                n,
                w,
                il,
                a,
                preps.and_then(|p| p.get(t)),
                &mut one,
            )?;
            for (r, v) in one.iter().enumerate() {
                out[r * tokens + t] = *v;
            }
        }
        return Ok(());
    }
    assert!(!il, "{} has no interleaved layout", weight_ty.name());
    for (res, row) in out.chunks_exact_mut(tokens).zip(w.chunks_exact(rb)) {
        for (o, a) in res.iter_mut().zip(acts) {
            *o = dot_unchecked(weight_ty, n, row, a, true);
        }
    }
    Ok(())
}

/// [`vec_dot_f32`] over consecutive rows: `out[r] = w_r · x`, sizes checked once.
pub fn vec_dot_f32_rows(
    weight_ty: GgmlType,
    n: usize,
    w: &[u8],
    x: &[f32],
    out: &mut [f32],
) -> Result<(), QuantError> {
    f32_rows(weight_ty, n, w, false, x, out)
}

/// [`vec_dot_f32_rows`] in either layout (see [`rows_with`]).
pub(crate) fn f32_rows(
    weight_ty: GgmlType,
    n: usize,
    w: &[u8],
    il: bool,
    x: &[f32],
    out: &mut [f32],
) -> Result<(), QuantError> {
    let rb = check_aligned(weight_ty, n)?;
    check_bytes(weight_ty, n * out.len(), w.len())?;
    if weight_ty != GgmlType::Q8_0 || x.len() != n {
        assert!(!il, "{} has no interleaved f32 kernel", weight_ty.name());
        for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
            *o = vec_dot_f32(weight_ty, n, row, x)?;
        }
        return Ok(());
    }
    q8_0::vec_dot_f32_rows(w, rb, il, x, out);
    Ok(())
}

/// Dot one weight row with several activation vectors (batched prefill): `out[i] = w · acts[i]`.
/// The weight row is read once per call while it is hot in cache.
pub fn vec_dot_multi(
    weight_ty: GgmlType,
    n: usize,
    w: &[u8],
    acts: &[&[u8]],
    out: &mut [f32],
) -> Result<(), QuantError> {
    if out.len() != acts.len() {
        return Err(QuantError::OutLen {
            expected: acts.len(),
            found: out.len(),
        });
    }
    for a in acts {
        check_dot(weight_ty, n, w, a)?;
    }
    // Process the row in chunks of blocks so each weight chunk stays in L1 across activations.
    let bs = weight_ty.block_size();
    let wb = weight_ty.type_size();
    let at = vec_dot_type(weight_ty);
    let (abs_, ab) = (at.block_size(), at.type_size());
    let chunk_elems = if weight_ty.is_quantized() {
        (4096 / bs).max(1) * bs
    } else {
        1024
    };
    out.iter_mut().for_each(|o| *o = 0.0);
    let mut start = 0;
    while start < n {
        let len = chunk_elems.min(n - start);
        let wc = &w[start / bs * wb..(start + len) / bs * wb];
        for (o, a) in out.iter_mut().zip(acts) {
            let ac = &a[start / abs_ * ab..(start + len) / abs_ * ab];
            *o += dot_unchecked(weight_ty, len, wc, ac, true);
        }
        start += len;
    }
    Ok(())
}
