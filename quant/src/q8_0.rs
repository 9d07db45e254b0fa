//! Q8_0: 32 values per block, one f16 scale and 32 signed bytes; value = d * q.
//! Also the activation type for Q4_0, Q5_0 and Q8_0 weights.

use crate::common::*;
use bytemuck::{Pod, Zeroable};
use half::f16;

pub const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
pub const BLOCK_BYTES: usize = 34;

/// How [`crate::Layout::Interleaved8`] packs a column of eight blocks: the eight scales, then
/// the eight rows' 32 values.
pub(crate) const PACK: &[Field] = &[SCALE, Field::rows(2, 32)];

/// A block holding the given int8 values unchanged with scale `d`.
pub fn block_from_int8(qs: &[i8; 32], d: f16) -> BlockQ8_0 {
    BlockQ8_0 { d, qs: *qs }
}

/// Quantize one block. Without weights this is ggml's reference rule (d = amax/127, round half
/// away from zero), byte-exact with gguf-py.
pub fn quantize_block(x: &[f32], imatrix: Option<&[f32]>) -> BlockQ8_0 {
    let mut b = BlockQ8_0::zeroed();
    match imatrix {
        None => {
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d == 0.0 { 0.0 } else { 1.0 / d };
            for (q, &v) in b.qs.iter_mut().zip(x) {
                *q = round_level_i8(v * id);
            }
            b.d = f16::from_f32(d);
        }
        Some(qw) => {
            let mut w = [0.0f32; QK];
            element_weights(x, qw, sigma2(x), &mut w);
            let mut l = [0i32; QK];
            let d = search_scale_signed(x, &w, -127, 127, &mut l);
            for (q, &li) in b.qs.iter_mut().zip(&l) {
                *q = li as i8;
            }
            b.d = f16::from_f32(d);
        }
    }
    b
}

pub fn quantize(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    for (i, (x, out)) in src
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        if imatrix.is_none() && simd_quantize_block(x, out) {
            continue;
        }
        let w = imatrix.map(|m| &m[i * QK..(i + 1) * QK]);
        out.copy_from_slice(bytemuck::bytes_of(&quantize_block(x, w)));
    }
}

/// The SIMD quantizer of this CPU (AVX2 or NEON; ggml's rule, no importance weights) on one
/// block of 32 values into `out` (one block's bytes), bit-exact with [`quantize_block`];
/// false where there is none or it leaves the block to the scalar code.
fn simd_quantize_block(x: &[f32], out: &mut [u8]) -> bool {
    assert!(
        x.len() >= QK && out.len() >= BLOCK_BYTES,
        "q8_0: a block is {QK} values into {BLOCK_BYTES} bytes, got {} and {}",
        x.len(),
        out.len()
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2/FMA/F16C detected; `x` holds 32 values and `out` a block (asserted).
        return unsafe { avx2::quantize_block(x, out) };
    }
    #[cfg(target_arch = "aarch64")]
    if has_neon() {
        // SAFETY: NEON detected; `x` holds 32 values and `out` a block (asserted).
        return unsafe { neon::quantize_block(x, out) };
    }
    false
}

pub fn dequantize_scalar(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (o, &q) in y.iter_mut().zip(&b[2..]) {
            *o = (q as i8) as f32 * d;
        }
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    let nb = src.len() / BLOCK_BYTES;
    assert!(
        dst.len() >= nb * QK,
        "q8_0 dequantize: {nb} blocks need {} outputs, got {}",
        nb * QK,
        dst.len()
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2/FMA/F16C detected at run time; the kernel writes nb·QK outputs (asserted above).
        unsafe { avx2::dequantize(src, dst) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if has_neon() {
        // SAFETY: NEON detected at run time; the kernel writes nb·QK outputs (asserted above).
        unsafe { neon::dequantize(src, dst) };
        return;
    }
    dequantize_scalar(src, dst)
}

/// Dequantize one group of eight rows in the packed-column layout of
/// [`crate::Layout::Interleaved8`] (`nb` columns) into `dst` (eight rows of `nb·32` values),
/// equal to [`dequantize`] of the rows.
// Kept out of line: inlined into `layout::dequantize_rows_in` it compiled to a loop 2.5× slower
// (kernel bench `q8_0 il` deq: 2.1 vs 5.5 GB/s).
#[inline(never)]
pub(crate) fn dequantize_packed_group(group: &[u8], nb: usize, dst: &mut [f32]) {
    let n = nb * QK;
    assert!(
        group.len() >= 8 * nb * BLOCK_BYTES && dst.len() >= 8 * n,
        "q8_0 dequantize_packed_group: {nb} columns"
    );
    for (b, col) in group.chunks_exact(8 * BLOCK_BYTES).take(nb).enumerate() {
        for r in 0..8 {
            let d = f16_at(col, 2 * r);
            let q = &col[16 + 32 * r..16 + 32 * (r + 1)];
            for (o, &v) in dst[r * n + b * QK..r * n + (b + 1) * QK].iter_mut().zip(q) {
                *o = (v as i8) as f32 * d;
            }
        }
    }
}

/// Integer dot of one block pair.
#[inline]
fn block_isum(w: &[u8], a: &[u8]) -> i32 {
    w[2..BLOCK_BYTES]
        .iter()
        .zip(&a[2..BLOCK_BYTES])
        .map(|(&x, &y)| (x as i8) as i32 * (y as i8) as i32)
        .sum()
}

/// Q8_0 weights · Q8_0 activations.
pub fn vec_dot_scalar(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w.chunks_exact(BLOCK_BYTES).zip(a.chunks_exact(BLOCK_BYTES)) {
        sum += block_isum(bw, ba) as f32 * (f16_at(bw, 0) * f16_at(ba, 0));
    }
    sum
}

pub fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
    let nb = w.len() / BLOCK_BYTES;
    assert!(
        a.len() >= nb * crate::q8_0::BLOCK_BYTES,
        "q8_0 vec_dot: {nb} weight blocks need {} activation bytes, got {}",
        nb * crate::q8_0::BLOCK_BYTES,
        a.len()
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2/FMA/F16C detected at run time; the kernel reads nb blocks of `w` and of `a` (asserted above).
        return unsafe { avx2::vec_dot(w, a) };
    }
    #[cfg(target_arch = "aarch64")]
    if has_neon() {
        // SAFETY: NEON detected at run time; the kernel reads nb blocks of `w` and of `a`
        // (asserted above).
        return unsafe { neon::vec_dot(w, a) };
    }
    vec_dot_scalar(w, a)
}

/// Q8_0 weights · f32 activations (no activation rounding): Σ_blocks d · Σ_i q_i·x_i.
pub fn vec_dot_f32_scalar(w: &[u8], x: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, xb) in w.chunks_exact(BLOCK_BYTES).zip(x.chunks_exact(QK)) {
        let s: f32 = bw[2..]
            .iter()
            .zip(xb)
            .map(|(&q, &v)| (q as i8) as f32 * v)
            .sum();
        sum += f16_at(bw, 0) * s;
    }
    sum
}

/// [`vec_dot_f32_scalar`] with the best SIMD path.
pub fn vec_dot_f32(w: &[u8], x: &[f32]) -> f32 {
    let nb = w.len() / BLOCK_BYTES;
    assert!(
        x.len() >= nb * QK,
        "q8_0 vec_dot_f32: {nb} blocks need {} activations, got {}",
        nb * QK,
        x.len()
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2/FMA/F16C detected at run time; the kernel reads nb blocks of `w` and
        // nb·32 values of `x` (asserted above).
        return unsafe { avx2::vec_dot_f32(w, x) };
    }
    #[cfg(target_arch = "aarch64")]
    if has_neon() {
        // SAFETY: NEON detected at run time; the kernel reads nb blocks of `w` and nb·32
        // values of `x` (asserted above).
        return unsafe { neon::vec_dot_f32(w, x) };
    }
    vec_dot_f32_scalar(w, x)
}

/// `out[r] = w_r · a` for consecutive rows of `row_bytes` bytes against one Q8_0 activation:
/// eight rows at a time share each activation block load (eight weight streams in flight, one
/// accumulator per row), the rest row by row. Equal to [`vec_dot`] per row up to float
/// summation order. `il`: whole eight-row groups block-interleaved (see `q4_0::vec_dot_rows`).
pub fn vec_dot_rows(w: &[u8], row_bytes: usize, il: bool, a: &[u8], out: &mut [f32]) {
    let nb = check_rows("q8_0 vec_dot_rows", w, row_bytes, BLOCK_BYTES, out.len());
    assert!(
        a.len() >= nb * BLOCK_BYTES,
        "q8_0 vec_dot_rows: {nb} blocks per row need {} activation bytes, got {}",
        nb * BLOCK_BYTES,
        a.len()
    );
    by_eight(
        "q8_0 vec_dot_rows",
        w,
        row_bytes,
        il,
        has_avx2(),
        out,
        |g, o| {
            // Never called without the x86 kernel (`simd` is false there).
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (g, o);
            // SAFETY: AVX2/FMA/F16C detected at run time; the group's eight rows of nb blocks (in
            // either layout, the same bytes) lie inside `w` and `a` holds nb blocks (asserted
            // above).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                if il {
                    avx2::vec_dot_8rows::<true>(g.as_ptr(), row_bytes, nb, a.as_ptr(), o)
                } else {
                    avx2::vec_dot_8rows::<false>(g.as_ptr(), row_bytes, nb, a.as_ptr(), o)
                }
            }
        },
        |row| vec_dot(row, a),
    );
}

/// `out[r] = w_r · x` (f32 activations, the exact path) for consecutive rows of `row_bytes`
/// bytes. Eight rows at a time share each activation load and convert their scales together;
/// the rest go row by row. Equal to [`vec_dot_f32`] per row up to float summation order.
/// `il`: whole eight-row groups block-interleaved (see `q4_0::vec_dot_rows`).
pub fn vec_dot_f32_rows(w: &[u8], row_bytes: usize, il: bool, x: &[f32], out: &mut [f32]) {
    let nb = check_rows(
        "q8_0 vec_dot_f32_rows",
        w,
        row_bytes,
        BLOCK_BYTES,
        out.len(),
    );
    assert!(
        x.len() >= nb * QK,
        "q8_0 vec_dot_f32_rows: {nb} blocks per row need {} activations, got {}",
        nb * QK,
        x.len()
    );
    let simd = has_avx2() && nb > 0;
    by_eight(
        "q8_0 vec_dot_f32_rows",
        w,
        row_bytes,
        il,
        simd,
        out,
        |g, o| {
            // Never called without the x86 kernel (`simd` is false there).
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (g, o);
            // SAFETY: AVX2/FMA/F16C detected at run time; the group's eight rows (in either layout,
            // the same bytes) lie inside `w` (asserted: w holds out.len() rows of nb blocks) and
            // `x` holds nb·32 values (asserted).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                let (g, x) = (g.as_ptr(), x.as_ptr());
                match (has_avx512(), il) {
                    (true, true) => avx512::vec_dot_f32_8rows::<true>(g, row_bytes, nb, x, o),
                    (true, false) => avx512::vec_dot_f32_8rows::<false>(g, row_bytes, nb, x, o),
                    (false, true) => avx2::vec_dot_f32_8rows::<true>(g, row_bytes, nb, x, o),
                    (false, false) => avx2::vec_dot_f32_8rows::<false>(g, row_bytes, nb, x, o),
                }
            }
        },
        |row| vec_dot_f32(row, x),
    );
}

/// A Q8_0 activation unpacked for multi-row kernels: the 32 values of each block contiguous,
/// the scales as f32 and the per-block sums Σq, computed once per activation and reused for
/// every weight row.
pub struct PreparedQ8 {
    pub qs: Vec<i8>,
    pub d: Vec<f32>,
    pub sum: Vec<i32>,
}

impl PreparedQ8 {
    /// Unpack the whole blocks of `a` (a trailing partial block is ignored).
    pub fn new(a: &[u8]) -> Self {
        let nb = a.len() / BLOCK_BYTES;
        let mut p = PreparedQ8 {
            qs: Vec::with_capacity(nb * QK),
            d: Vec::with_capacity(nb),
            sum: Vec::with_capacity(nb),
        };
        for blk in a.chunks_exact(BLOCK_BYTES) {
            p.d.push(f16_at(blk, 0));
            let q = bytemuck::cast_slice::<u8, i8>(&blk[2..]);
            p.sum.push(q.iter().map(|&v| v as i32).sum());
            p.qs.extend_from_slice(q);
        }
        p
    }

    pub fn blocks(&self) -> usize {
        self.d.len()
    }
}

/// An eight-row kernel over activations unpacked by [`PreparedQ8::new`] (see
/// [`crate::common::TokensKernel`]).
pub(crate) type TokensKernel = crate::common::TokensKernel<PreparedQ8>;

/// Batched prefill over rows of a type whose eight-row kernels take prepared Q8_0 activations
/// (Q4_0, Q5_0): `out[r·acts.len() + t] = w_r · acts[t]`, eight rows × up to four tokens per
/// `kernel` call (each weight block unpacked once for the tokens), the rows after the last whole
/// group through `one` per token. `preps`, when given, holds each activation prepared (they
/// are made here otherwise). `kernel` must give each entry the bits of the type's
/// `vec_dot_rows` for that token.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepared_rows_multi(
    name: &str,
    w: &[u8],
    row_bytes: usize,
    block_bytes: usize,
    il: bool,
    acts: &[&[u8]],
    preps: Option<&[&PreparedQ8]>,
    out: &mut [f32],
    kernel: Option<TokensKernel>,
    one: fn(&[u8], &[u8]) -> f32,
) {
    let tokens = acts.len();
    let (rows, nb) = check_rows_multi(
        name,
        w,
        row_bytes,
        block_bytes,
        acts,
        out.len(),
        BLOCK_BYTES,
    );
    let need = nb * BLOCK_BYTES;
    let kernel = kernel.filter(|_| has_avx2() && rows >= 8 && nb > 0);
    let own: Vec<PreparedQ8>;
    let own_refs: Vec<&PreparedQ8>;
    let preps = match (kernel, preps) {
        (None, _) => &[][..],
        (Some(_), Some(p)) => p,
        (Some(_), None) => {
            own = acts.iter().map(|a| PreparedQ8::new(&a[..need])).collect();
            own_refs = own.iter().collect();
            &own_refs[..]
        }
    };
    if kernel.is_some() {
        assert!(
            preps.len() == tokens && preps.iter().all(|p| p.blocks() >= nb),
            "{name}: {} prepared activations for {tokens} tokens of {nb} blocks",
            preps.len()
        );
    }
    rows_multi_by(
        name,
        w,
        row_bytes,
        (rows, nb),
        il,
        acts,
        preps,
        out,
        kernel,
        one,
    );
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::common::x86::*;
    use std::arch::x86_64::*;

    /// [`super::quantize_block`] without weights, bit-exact with it: the same `amax`, `d` and
    /// `1/d`, each level rounded half away from zero. Returns `false` (nothing written) where
    /// `1/d` is not finite (a denormal `d`), which the scalar rule handles.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C; `x` holds 32 values, `out` 34 bytes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_block(x: &[f32], out: &mut [u8]) -> bool {
        debug_assert!(x.len() >= QK && out.len() >= BLOCK_BYTES);
        let v: [__m256; 4] = std::array::from_fn(|k| _mm256_loadu_ps(x.as_ptr().add(8 * k)));
        let sign = _mm256_set1_ps(-0.0);
        // max_ps returns its second operand when the first is NaN: NaNs are skipped, as
        // f32::max skips them in the scalar fold.
        let mut m = _mm256_setzero_ps();
        for vk in v {
            m = _mm256_max_ps(_mm256_andnot_ps(sign, vk), m);
        }
        let lanes: [f32; 8] = std::mem::transmute(m);
        let amax = lanes.iter().copied().fold(0.0f32, f32::max);
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        if !id.is_finite() {
            return false;
        }
        let idv = _mm256_set1_ps(id);
        let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
        let q: [__m256i; 4] = std::array::from_fn(|k| {
            let y = _mm256_mul_ps(v[k], idv);
            // level_ps maps NaN to 0, as round_level_i8 does; with a finite 1/d an infinite
            // product needs an infinite input, whose amax gives d = ∞ and 1/d = 0 instead.
            _mm256_cvtps_epi32(level_ps(y, lo, hi))
        });
        let p16a = _mm256_packs_epi32(q[0], q[1]);
        let p16b = _mm256_packs_epi32(q[2], q[3]);
        let p8 = _mm256_packs_epi16(p16a, p16b);
        let p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        _mm256_storeu_si256(out.as_mut_ptr().add(2) as *mut __m256i, p8);
        true
    }

    /// Four blocks per iteration into four independent accumulators; prefetches ahead.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `a` must hold
    /// at least as many activation blocks as `w` holds whole weight blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        let nb = w.len() / BLOCK_BYTES;
        let (wp, ap) = (w.as_ptr(), a.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 4 <= nb {
            let w0 = wp.add(i * BLOCK_BYTES);
            let a0 = ap.add(i * BLOCK_BYTES);
            prefetch(w0, 512);
            prefetch(w0, 576);
            for (k, acc_k) in acc.iter_mut().enumerate() {
                let (wb, ab) = (w0.add(k * BLOCK_BYTES), a0.add(k * BLOCK_BYTES));
                let p = dot_i8_ps(
                    _mm256_loadu_si256(wb.add(2) as *const __m256i),
                    _mm256_loadu_si256(ab.add(2) as *const __m256i),
                );
                let d = _mm256_set1_ps(f16_load(wb) * f16_load(ab));
                *acc_k = _mm256_fmadd_ps(d, p, *acc_k);
            }
            i += 4;
        }
        while i < nb {
            let (wb, ab) = (wp.add(i * BLOCK_BYTES), ap.add(i * BLOCK_BYTES));
            let p = dot_i8_ps(
                _mm256_loadu_si256(wb.add(2) as *const __m256i),
                _mm256_loadu_si256(ab.add(2) as *const __m256i),
            );
            let d = _mm256_set1_ps(f16_load(wb) * f16_load(ab));
            acc[0] = _mm256_fmadd_ps(d, p, acc[0]);
            i += 1;
        }
        hsum_ps(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }

    /// Block column `b` of a group of eight rows, for both eight-row kernels: the rows' f16
    /// scales as f32 lanes and a pointer to each row's 32 values. Packed: the column holds the
    /// eight scales, then the eight rows' values. Row-major: the rows `rows[r]` (`rb` bytes
    /// apart). The weights ahead are hinted by [`prefetch_group`] (`per_row`: row-major rows
    /// where `intel_cpu()`).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); block `b`
    /// must be readable in the layout `PACKED` names (`w` the group's start, `rows` its rows).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn column<const PACKED: bool>(
        w: *const u8,
        rb: usize,
        rows: &[*const u8; 8],
        b: usize,
        per_row: bool,
    ) -> (__m256, [*const u8; 8]) {
        prefetch_group(w, rb, rows, BLOCK_BYTES, b, per_row);
        if PACKED {
            let col = w.add(b * 8 * BLOCK_BYTES);
            prefetch_column(col, 8 * BLOCK_BYTES);
            (
                _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i)),
                std::array::from_fn(|r| col.add(16 + 32 * r)),
            )
        } else {
            (
                f16_8rows(rows, b * BLOCK_BYTES),
                std::array::from_fn(|r| rows[r].add(b * BLOCK_BYTES + 2)),
            )
        }
    }

    /// Eight rows against one Q8_0 activation: per block the activation's 32 bytes and scale
    /// are loaded once, each row's block dotted with the sign trick into its own accumulator
    /// (scales of the eight rows converted together).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must be
    /// readable for eight rows of `nb` blocks (`rb` bytes apart; with `PACKED`, one group in
    /// the packed-column layout of [`crate::Layout::Interleaved8`]) and `a` for `nb` blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_8rows<const PACKED: bool>(
        w: *const u8,
        rb: usize,
        nb: usize,
        a: *const u8,
        out: &mut [f32; 8],
    ) {
        let _frame = align_frame();
        let rows: [*const u8; 8] = std::array::from_fn(|r| w.wrapping_add(r * rb));
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut ds = [0f32; 8];
        let per_row = !PACKED && crate::common::intel_cpu();
        for b in 0..nb {
            let (dw, qs) = column::<PACKED>(w, rb, &rows, b, per_row);
            let ab = a.add(b * BLOCK_BYTES);
            let av = _mm256_loadu_si256(ab.add(2) as *const __m256i);
            let da = f16_load(ab);
            let d = _mm256_mul_ps(dw, _mm256_set1_ps(da));
            _mm256_storeu_ps(ds.as_mut_ptr(), d);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let q = _mm256_loadu_si256(qs[r] as *const __m256i);
                *acc_r = _mm256_fmadd_ps(_mm256_broadcast_ss(&ds[r]), dot_i8_ps(q, av), *acc_r);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = hsum_ps(a);
        }
    }

    /// Eight rows against f32 activations: per block column the eight rows' f16 scales are
    /// packed with integer shifts and converted at once, the activation's four vectors are
    /// loaded once for all rows, and each row keeps its own accumulator
    /// (`acc_r += d_r · Σ_k q_rk·x_k`, the block's inner sum before the scale).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must be
    /// readable for eight rows of `nb` blocks (`rb` bytes apart; with `PACKED`, one group in
    /// the packed-column layout of [`crate::Layout::Interleaved8`]) and `x` for `nb·32` values.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_f32_8rows<const PACKED: bool>(
        w: *const u8,
        rb: usize,
        nb: usize,
        x: *const f32,
        out: &mut [f32; 8],
    ) {
        let _frame = align_frame();
        let rows: [*const u8; 8] = std::array::from_fn(|r| w.wrapping_add(r * rb));
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut ds = [0f32; 8];
        let per_row = !PACKED && crate::common::intel_cpu();
        for b in 0..nb {
            let (dw, qs) = column::<PACKED>(w, rb, &rows, b, per_row);
            _mm256_storeu_ps(ds.as_mut_ptr(), dw);
            let xb = x.add(b * QK);
            let xv = [
                _mm256_loadu_ps(xb),
                _mm256_loadu_ps(xb.add(8)),
                _mm256_loadu_ps(xb.add(16)),
                _mm256_loadu_ps(xb.add(24)),
            ];
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let q = qs[r];
                let f = |k: usize| {
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                        q.add(8 * k) as *const __m128i
                    )))
                };
                let mut t = _mm256_mul_ps(f(0), xv[0]);
                t = _mm256_fmadd_ps(f(1), xv[1], t);
                t = _mm256_fmadd_ps(f(2), xv[2], t);
                t = _mm256_fmadd_ps(f(3), xv[3], t);
                *acc_r = _mm256_fmadd_ps(_mm256_broadcast_ss(&ds[r]), t, *acc_r);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = hsum_ps(a);
        }
    }

    /// Each weight byte is widened to f32, scaled by its block's d, and multiplied into one of
    /// eight accumulators (one per 8-lane slice of two blocks): no per-block reduction chain.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `x` must hold
    /// at least 32 values per whole block of `w`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_f32(w: &[u8], x: &[f32]) -> f32 {
        let nb = w.len() / BLOCK_BYTES;
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 8];
        /// # Safety
        ///
        /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `wb` must
        /// point to one readable Q8_0 block and `xb` to 32 readable `f32`.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn block(wb: *const u8, xb: *const f32, acc: &mut [__m256]) {
            let d = _mm256_set1_ps(f16_load(wb));
            for (k, acc_k) in acc.iter_mut().enumerate() {
                let q = _mm_loadl_epi64(wb.add(2 + 8 * k) as *const __m128i);
                let f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d);
                *acc_k = _mm256_fmadd_ps(f, _mm256_loadu_ps(xb.add(8 * k)), *acc_k);
            }
        }
        let mut i = 0;
        while i + 2 <= nb {
            let w0 = wp.add(i * BLOCK_BYTES);
            prefetch(w0, 512);
            let (lo, hi) = acc.split_at_mut(4);
            block(w0, xp.add(i * QK), lo);
            block(w0.add(BLOCK_BYTES), xp.add(i * QK + QK), hi);
            i += 2;
        }
        if i < nb {
            block(wp.add(i * BLOCK_BYTES), xp.add(i * QK), &mut acc[..4]);
        }
        let s0 = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let s1 = _mm256_add_ps(_mm256_add_ps(acc[4], acc[5]), _mm256_add_ps(acc[6], acc[7]));
        hsum_ps(_mm256_add_ps(s0, s1))
    }

    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `dst` must hold
    /// at least one block's worth of values per whole block of `src`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dequantize(src: &[u8], dst: &mut [f32]) {
        let nb = src.len() / BLOCK_BYTES;
        for i in 0..nb {
            let p = src.as_ptr().add(i * BLOCK_BYTES);
            let d = _mm256_set1_ps(f16_load(p));
            let o = dst.as_mut_ptr().add(i * QK);
            for k in 0..4 {
                let q = _mm_loadl_epi64(p.add(2 + 8 * k) as *const __m128i);
                let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                _mm256_storeu_ps(o.add(8 * k), _mm256_mul_ps(f, d));
            }
        }
    }
}

/// The Q8_0 × f32 eight-row kernel on AVX-512 (see [`crate::common::has_avx512`]): sixteen
/// values a step, widened and converted in 512-bit vectors (half the instructions of the
/// AVX2 kernel's eight-lane steps). Its sums are added in another order than the AVX2
/// kernel's, so the two agree to the float dots' tolerance, not bit for bit; both layouts go
/// through the same steps, so packed and row-major rows stay bit-identical.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::avx2::column;
    use super::QK;
    use std::arch::x86_64::*;

    /// As `avx2::vec_dot_f32_8rows`: per block column the eight rows' scales convert together,
    /// the activation's two 16-lane vectors are loaded once for all rows, and each row keeps
    /// its own accumulator (`acc_r += d_r · Σ_k q_rk·x_k`).
    ///
    /// # Safety
    ///
    /// As `avx2::vec_dot_f32_8rows`, and the CPU must support the AVX-512 features
    /// `has_avx512()` checks.
    #[target_feature(
        enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg,gfni"
    )]
    pub unsafe fn vec_dot_f32_8rows<const PACKED: bool>(
        w: *const u8,
        rb: usize,
        nb: usize,
        x: *const f32,
        out: &mut [f32; 8],
    ) {
        let rows: [*const u8; 8] = std::array::from_fn(|r| w.wrapping_add(r * rb));
        let mut acc = [_mm512_setzero_ps(); 8];
        let mut ds = [0f32; 8];
        let per_row = !PACKED && crate::common::intel_cpu();
        for b in 0..nb {
            let (dw, qs) = column::<PACKED>(w, rb, &rows, b, per_row);
            _mm256_storeu_ps(ds.as_mut_ptr(), dw);
            let xb = x.add(b * QK);
            let x0 = _mm512_loadu_ps(xb);
            let x1 = _mm512_loadu_ps(xb.add(16));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let q = qs[r];
                let f = |k: usize| {
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                        q.add(16 * k) as *const __m128i
                    )))
                };
                let t = _mm512_fmadd_ps(f(1), x1, _mm512_mul_ps(f(0), x0));
                *acc_r = _mm512_fmadd_ps(_mm512_set1_ps(ds[r]), t, *acc_r);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = _mm512_reduce_add_ps(a);
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use crate::common::neon::*;
    use std::arch::aarch64::*;

    /// [`super::quantize_block`] without weights, bit-exact with it: the same `amax` (NaNs
    /// skipped), `d` and `1/d`, each level rounded half away from zero by FCVTAS (NaN to 0,
    /// as `round_level_i8`). Returns `false` (nothing written) where `1/d` is not finite (a
    /// denormal `d`), which the scalar rule handles.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `x` holds 32 values,
    /// `out` 34 bytes.
    #[target_feature(enable = "neon")]
    pub unsafe fn quantize_block(x: &[f32], out: &mut [u8]) -> bool {
        debug_assert!(x.len() >= QK && out.len() >= BLOCK_BYTES);
        let amax = abs_max(&x[..QK]);
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        if !id.is_finite() {
            return false;
        }
        // With a finite 1/d a product is infinite only for an infinite input, whose amax
        // gives d = ∞ and 1/d = 0 instead (∞·0 = NaN, stored as 0 on both paths).
        let idv = vdupq_n_f32(id);
        for h in 0..2 {
            let v: [float32x4_t; 4] =
                std::array::from_fn(|k| vmulq_f32(vld1q_f32(x.as_ptr().add(16 * h + 4 * k)), idv));
            vst1q_s8(out.as_mut_ptr().add(2 + 16 * h) as *mut i8, round_i8x16(v));
        }
        out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        true
    }

    /// Bit-exact with [`super::vec_dot_scalar`]: each block's integer sum exact, then
    /// `sum += isum·(d_w·d_a)` block after block, the reference's float steps in its order.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `a` must hold at least as
    /// many activation blocks as `w` holds whole weight blocks.
    #[target_feature(enable = "neon")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        scaled_blocks_dot(w, a, BLOCK_BYTES, |wb| values(wb))
    }

    /// Each weight byte widened to f32 and scaled by its block's d, then multiplied into one
    /// of eight accumulators (one per 4-lane slice of a block): the float order differs from
    /// the scalar reference's (held to the same tolerance as the AVX2 kernel).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `x` must hold at least 32
    /// values per whole block of `w`.
    #[target_feature(enable = "neon")]
    pub unsafe fn vec_dot_f32(w: &[u8], x: &[f32]) -> f32 {
        let nb = w.len() / BLOCK_BYTES;
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut acc = [vdupq_n_f32(0.0); 8];
        for i in 0..nb {
            let wb = wp.add(i * BLOCK_BYTES);
            let xb = xp.add(i * QK);
            let d = vdupq_n_f32(f16_load(wb));
            for h in 0..2 {
                let q = vld1q_s8(wb.add(2 + 16 * h) as *const i8);
                for (k, f) in widen_i8x16(q).into_iter().enumerate() {
                    let f = vmulq_f32(f, d);
                    let j = 4 * h + k;
                    acc[j] = vfmaq_f32(acc[j], f, vld1q_f32(xb.add(4 * j)));
                }
            }
        }
        let s0 = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        let s1 = vaddq_f32(vaddq_f32(acc[4], acc[5]), vaddq_f32(acc[6], acc[7]));
        vaddvq_f32(vaddq_f32(s0, s1))
    }

    /// Bit-exact with [`super::dequantize_scalar`] (`q·d`, one rounding each).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `dst` must hold at least
    /// one block's worth of values per whole block of `src`.
    #[target_feature(enable = "neon")]
    pub unsafe fn dequantize(src: &[u8], dst: &mut [f32]) {
        scaled_blocks_dequantize(src, dst, BLOCK_BYTES, |p| values(p))
    }

    /// A block's 32 int8 values, in order.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `wb` must point to one
    /// readable Q8_0 block.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn values(wb: *const u8) -> [int8x16_t; 2] {
        [
            vld1q_s8(wb.add(2) as *const i8),
            vld1q_s8(wb.add(18) as *const i8),
        ]
    }
}

#[cfg(test)]
mod f32_dot_tests {
    use super::*;

    #[test]
    fn simd_f32_dot_matches_scalar_and_exact_products() {
        let n = 32 * 7;
        let mut w = vec![0u8; 7 * BLOCK_BYTES];
        for (b, blk) in w.chunks_exact_mut(BLOCK_BYTES).enumerate() {
            blk[..2].copy_from_slice(&f16::from_f32(0.01 * (b as f32 + 1.0)).to_le_bytes());
            for (i, q) in blk[2..].iter_mut().enumerate() {
                *q = ((i as i32 * 37 + b as i32 * 11) % 255 - 127) as i8 as u8;
            }
        }
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.37)
            .collect();
        let s = vec_dot_f32_scalar(&w, &x);
        let v = vec_dot_f32(&w, &x);
        assert!((s - v).abs() <= 1e-5 * s.abs().max(1.0), "{s} vs {v}");
        let mut deq = vec![0f32; n];
        dequantize_scalar(&w, &mut deq);
        let exact: f64 = deq.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((exact - v as f64).abs() < 1e-3, "{exact} vs {v}");
    }
}

#[cfg(test)]
mod quantize_simd_tests {
    use super::*;

    #[test]
    fn simd_quantize_is_bit_exact_with_scalar() {
        let mut rng = TestRng(0x9e37_79b9_7f4a_7c15);
        let mut simd_blocks = 0;
        for case in 0..20_000 {
            let mut x = rng.block(QK);
            let mut next = || rng.next();
            match case % 9 {
                // Exact halves after scaling: k + 0.5 steps of amax/127.
                0 => {
                    for (i, v) in x.iter_mut().enumerate() {
                        *v = i as f32 - 15.5;
                    }
                    x[0] = 127.0;
                }
                1 => x[(next() % 32) as usize] = f32::NAN,
                2 => x[(next() % 32) as usize] = f32::INFINITY,
                3 => x.iter_mut().for_each(|v| *v = 0.0),
                4 => x.iter_mut().for_each(|v| *v *= 1e-39),
                5 => x[(next() % 32) as usize] = -f32::MAX,
                _ => {}
            }
            let want = bytemuck::bytes_of(&quantize_block(&x, None)).to_vec();
            let mut got = vec![0u8; BLOCK_BYTES];
            if simd_quantize_block(&x, &mut got) {
                simd_blocks += 1;
                assert_eq!(got, want, "case {case}: {x:?}");
            }
        }
        // Where there is a SIMD quantizer it takes almost every block (not the NaN ones).
        let simd = simd_quantize_block(&[1.0; QK], &mut [0u8; BLOCK_BYTES]);
        assert!(!simd || simd_blocks > 19_000, "{simd_blocks}");
    }
}
