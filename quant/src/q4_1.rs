//! Q4_1: 32 values per block, f16 scale d, f16 offset m and 16 bytes of nibbles;
//! value = q * d + m. Dots against Q8_1 activations (whose `s` carries the sum the offset needs).

use crate::common::*;
use bytemuck::{Pod, Zeroable};
use half::f16;

pub const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
pub const BLOCK_BYTES: usize = 20;

/// How [`crate::Layout::Interleaved8`] packs a column of eight blocks: the eight scales, the
/// eight offsets, then the nibble bytes in 4-byte groups (as Q4_0's).
pub(crate) const PACK: &[Field] = &[SCALE, Field::rows(2, 2), Field::dwords(4, 16)];

/// Quantize one block; without weights byte-exact with ggml's reference / gguf-py.
pub fn quantize_block(x: &[f32], imatrix: Option<&[f32]>) -> BlockQ4_1 {
    let mut l = [0i32; QK];
    let (d, m) = match imatrix {
        None => {
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let min = x.iter().copied().fold(f32::INFINITY, f32::min);
            let d = (max - min) / 15.0;
            let id = if d == 0.0 { 0.0 } else { 1.0 / d };
            for (q, &v) in l.iter_mut().zip(x) {
                *q = trunc_level((v - min) * id + 0.5).min(15) as i32;
            }
            (d, min)
        }
        Some(qw) => {
            let mut w = [0.0f32; QK];
            element_weights(x, qw, sigma2(x), &mut w);
            search_scale_min(x, &w, 15, false, &mut l)
        }
    };
    let mut b = BlockQ4_1 {
        d: f16::from_f32(d),
        m: f16::from_f32(m),
        qs: [0; 16],
    };
    crate::q4_0::pack_nibbles(&l, &mut b.qs);
    b
}

pub fn quantize(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    for (i, (x, out)) in src
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let w = imatrix.map(|m| &m[i * QK..(i + 1) * QK]);
        out.copy_from_slice(bytemuck::bytes_of(&quantize_block(x, w)));
    }
}

pub fn dequantize_scalar(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        for j in 0..QK / 2 {
            let q = b[4 + j];
            y[j] = d * (q & 0x0F) as f32 + m;
            y[j + QK / 2] = d * (q >> 4) as f32 + m;
        }
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    let nb = src.len() / BLOCK_BYTES;
    assert!(
        dst.len() >= nb * QK,
        "q4_1 dequantize: {nb} blocks need {} outputs, got {}",
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

/// Q4_1 weights · Q8_1 activations.
pub fn vec_dot_scalar(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(crate::q8_1::BLOCK_BYTES))
    {
        let mut isum = 0i32;
        for j in 0..QK / 2 {
            let q = bw[4 + j];
            isum += (q & 0x0F) as i32 * (ba[4 + j] as i8) as i32;
            isum += (q >> 4) as i32 * (ba[4 + j + QK / 2] as i8) as i32;
        }
        sum += isum as f32 * (f16_at(bw, 0) * f16_at(ba, 0)) + f16_at(bw, 2) * f16_at(ba, 2);
    }
    sum
}

pub fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
    let nb = w.len() / BLOCK_BYTES;
    assert!(
        a.len() >= nb * crate::q8_1::BLOCK_BYTES,
        "q4_1 vec_dot: {nb} weight blocks need {} activation bytes, got {}",
        nb * crate::q8_1::BLOCK_BYTES,
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

/// `out[r] = w_r · a` for consecutive rows of `row_bytes` bytes (whole blocks) against one Q8_1
/// activation `a`. Eight rows at a time go through a kernel that loads each activation block
/// once for all eight and keeps the eight rows' sums in the lanes of one vector; the rest go
/// row by row. Equal to [`vec_dot`] per row up to float summation order. On AVX-512, groups
/// of row-major rows go through [`crate::nib4`]'s kernel instead (the same bits), with
/// `lanes` made from `a` by [`crate::nib4::Lanes::from_q8_1`] (made here where wanted and
/// `None`). `il`: whole eight-row groups block-interleaved (see `q4_0::vec_dot_rows`).
pub fn vec_dot_rows(
    w: &[u8],
    row_bytes: usize,
    il: bool,
    a: &[u8],
    lanes: Option<&crate::nib4::Lanes>,
    out: &mut [f32],
) {
    let nb = check_rows("q4_1 vec_dot_rows", w, row_bytes, BLOCK_BYTES, out.len());
    let need = nb * crate::q8_1::BLOCK_BYTES;
    assert!(
        a.len() >= need,
        "q4_1 vec_dot_rows: {nb} blocks per row need {need} activation bytes, got {}",
        a.len()
    );
    let name = "q4_1 vec_dot_rows";
    let simd = has_avx2() && nb > 0;
    let mut own_lanes = None;
    let lanes = if simd && out.len() >= 8 {
        crate::nib4::Lanes::for_q8_1(lanes, &mut own_lanes, il, nb, &a[..need], name)
    } else {
        None
    };
    by_eight(
        name,
        w,
        row_bytes,
        il,
        simd,
        out,
        |g, o| {
            // Never called without the x86 kernel (`simd` is false there).
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (g, o, lanes);
            // SAFETY: AVX2/FMA/F16C detected at run time (`simd`), the AVX-512 features where
            // `has_avx512()`; the group's eight rows (in either layout, the same bytes) lie
            // inside `w` (asserted: w holds out.len() rows of nb blocks) and `a` holds nb
            // activation blocks (asserted); with `lanes` (AVX-512, row-major), those hold nb / 4
            // groups (asserted by `Lanes::for_q8_1`).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                if let Some(l) = lanes {
                    crate::nib4::rows8::<{ crate::nib4::Q4_1 }>(g.as_ptr(), row_bytes, nb, a, l, o);
                } else {
                    let mut o1 = [[0f32; 8]; 1];
                    avx2::pick::<1>(il, g.as_ptr(), row_bytes, nb, [a.as_ptr()], &mut o1);
                    *o = o1[0];
                }
            }
        },
        |row| vec_dot(row, a),
    );
}

/// Several activations at once (batched prefill): `out[r·acts.len() + t] = w_r · acts[t]` for
/// consecutive rows of `row_bytes` bytes, eight rows × up to four tokens per kernel call (each
/// column's nibbles unpacked once for the tokens); each entry equals [`vec_dot_rows`] for that
/// token, bit for bit. `il` as in [`vec_dot_rows`].
pub fn vec_dot_rows_multi(w: &[u8], row_bytes: usize, il: bool, acts: &[&[u8]], out: &mut [f32]) {
    let name = "q4_1 vec_dot_rows_multi";
    let ab = crate::q8_1::BLOCK_BYTES;
    let (rows, nb) = check_rows_multi(name, w, row_bytes, BLOCK_BYTES, acts, out.len(), ab);
    // `check_rows_multi` asserted that every activation holds nb blocks.
    let kernel = TOKENS_KERNEL.filter(|_| has_avx2() && rows >= 8 && nb > 0);
    let shape = (rows, nb);
    rows_multi_by(
        name, w, row_bytes, shape, il, acts, acts, out, kernel, vec_dot,
    );
}

#[cfg(target_arch = "x86_64")]
const TOKENS_KERNEL: Option<TokensKernel<[u8]>> = Some(avx2::tokens);
#[cfg(not(target_arch = "x86_64"))]
const TOKENS_KERNEL: Option<TokensKernel<[u8]>> = None;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::common::x86::*;
    use std::arch::x86_64::*;
    const AB: usize = crate::q8_1::BLOCK_BYTES;

    /// Eight rows against `T` activations (one for decode, up to four for batched prefill), as
    /// Q4_0's kernel: per block column the eight rows' nibble bytes transposed in 4-byte groups
    /// (one vector holds four consecutive values of every row) and unpacked once for the
    /// tokens, `maddubs` against each token's broadcast activation bytes sums each row in its
    /// own lane (exact: i16 partial sums ≤ 8·2·15·128 < 2^15), the eight scales and the eight
    /// offsets convert together; the offsets' `m·s` terms go to a second accumulator per
    /// token. Each token's float steps are the single-token kernel's, so its bits too.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must be
    /// readable for eight rows of `nb` blocks (`rb` bytes apart; with `PACKED`, one group in
    /// the packed-column layout of [`crate::Layout::Interleaved8`]) and each of `a` for `nb`
    /// Q8_1 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_8rows<const T: usize, const PACKED: bool>(
        w: *const u8,
        rb: usize,
        nb: usize,
        a: [*const u8; T],
        out: &mut [[f32; 8]; T],
    ) {
        rows_body::<false, T, PACKED>(w, rb, nb, a, out)
    }

    /// [`vec_dot_8rows`] on AVX-512 (`vpdpbusd` for `maddubs` + `add`; the same exact sums).
    ///
    /// # Safety
    ///
    /// As [`vec_dot_8rows`], and the CPU must support the AVX-512 features `has_avx512()`
    /// checks.
    #[target_feature(
        enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg,gfni"
    )]
    pub unsafe fn vec_dot_8rows_512<const T: usize, const PACKED: bool>(
        w: *const u8,
        rb: usize,
        nb: usize,
        a: [*const u8; T],
        out: &mut [[f32; 8]; T],
    ) {
        rows_body::<true, T, PACKED>(w, rb, nb, a, out)
    }

    /// [`vec_dot_8rows`] (or [`vec_dot_8rows_512`] where `has_avx512()`) for the layout: `il`,
    /// a packed group; else rows `rb` bytes apart.
    ///
    /// # Safety
    ///
    /// As [`vec_dot_8rows`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn pick<const T: usize>(
        il: bool,
        w: *const u8,
        rb: usize,
        nb: usize,
        a: [*const u8; T],
        out: &mut [[f32; 8]; T],
    ) {
        match (has_avx512(), il) {
            (true, true) => vec_dot_8rows_512::<T, true>(w, rb, nb, a, out),
            (true, false) => vec_dot_8rows_512::<T, false>(w, rb, nb, a, out),
            (false, true) => vec_dot_8rows::<T, true>(w, rb, nb, a, out),
            (false, false) => vec_dot_8rows::<T, false>(w, rb, nb, a, out),
        }
    }

    /// [`TokensKernel`] over [`pick`].
    ///
    /// # Safety
    ///
    /// As [`TokensKernel`].
    pub unsafe fn tokens(
        il: bool,
        w: *const u8,
        rb: usize,
        nb: usize,
        acts: &[&[u8]],
        out: &mut [[f32; 8]; 4],
    ) {
        per_token_count!(*acts, out, |arr, o| {
            pick(il, w, rb, nb, arr.map(|a| a.as_ptr()), o)
        });
    }

    /// The body of [`vec_dot_8rows`] and [`vec_dot_8rows_512`] (see [`u8i8_acc`]).
    ///
    /// # Safety
    ///
    /// As [`vec_dot_8rows`]; inlined into a caller with the features `VNNI` needs.
    #[inline(always)]
    unsafe fn rows_body<const VNNI: bool, const T: usize, const PACKED: bool>(
        w: *const u8,
        rb: usize,
        nb: usize,
        a: [*const u8; T],
        out: &mut [[f32; 8]; T],
    ) {
        let m4 = _mm256_set1_epi8(0x0F);
        let rows: [*const u8; 8] = std::array::from_fn(|r| w.wrapping_add(r * rb));
        // Decode (one token) over row-major groups of long rows on Intel: each row hinted on
        // its own (`row_hints` says why, and why not for several tokens).
        let per_row = !PACKED && T == 1 && row_hints(rb);
        let mut acc = [_mm256_setzero_ps(); T];
        let mut accm = [_mm256_setzero_ps(); T];
        for b in 0..nb {
            // Both layouts keep a group in 8·rb contiguous bytes: the next group hinted as one
            // stream, or (`per_row`) each row on its own (`prefetch_group`).
            prefetch_group(w, rb, &rows, BLOCK_BYTES, b, per_row);
            let (v, dw, mw) = if PACKED {
                // Column b: eight scales, eight offsets, then the transposed nibble bytes.
                let col = w.add(b * 8 * BLOCK_BYTES);
                (
                    std::array::from_fn(|k| {
                        _mm256_loadu_si256(col.add(32 + 32 * k) as *const __m256i)
                    }),
                    _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i)),
                    _mm256_cvtph_ps(_mm_loadu_si128(col.add(16) as *const __m128i)),
                )
            } else {
                let off = b * BLOCK_BYTES;
                (
                    transpose16_8rows(&rows, off + 4),
                    f16_8rows(&rows, off),
                    f16_8rows(&rows, off + 2),
                )
            };
            let lo: [__m256i; 4] = std::array::from_fn(|k| _mm256_and_si256(v[k], m4));
            let hi: [__m256i; 4] =
                std::array::from_fn(|k| _mm256_and_si256(_mm256_srli_epi16(v[k], 4), m4));
            for t in 0..T {
                let ab = a[t].add(b * AB);
                let aq = ab.add(4) as *const i32;
                let mut s16 = _mm256_setzero_si256();
                for k in 0..4 {
                    let alo = _mm256_set1_epi32(std::ptr::read_unaligned(aq.add(k)));
                    let ahi = _mm256_set1_epi32(std::ptr::read_unaligned(aq.add(4 + k)));
                    s16 = u8i8_acc::<VNNI>(s16, lo[k], alo);
                    s16 = u8i8_acc::<VNNI>(s16, hi[k], ahi);
                }
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(f16_load(ab)));
                let isum = _mm256_cvtepi32_ps(u8i8_total::<VNNI>(s16));
                acc[t] = _mm256_fmadd_ps(d, isum, acc[t]);
                accm[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(f16_load(ab.add(2))), accm[t]);
            }
        }
        for t in 0..T {
            _mm256_storeu_ps(out[t].as_mut_ptr(), _mm256_add_ps(acc[t], accm[t]));
        }
    }

    /// Four blocks per iteration, four accumulators; the offset terms m·s of four blocks are
    /// widened together with F16C and kept in a vector accumulator.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `a` must hold
    /// at least as many activation blocks as `w` holds whole weight blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        let nb = w.len() / BLOCK_BYTES;
        let (wp, ap) = (w.as_ptr(), a.as_ptr());
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut accm = _mm_setzero_ps();
        /// # Safety
        ///
        /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `wb` must
        /// point to one readable weight block and `ab` to one readable activation block.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn block(wb: *const u8, ab: *const u8, ones: __m256i, acc: &mut __m256) {
            let q = unpack_nibbles_16(wb.add(4));
            let y = _mm256_loadu_si256(ab.add(4) as *const __m256i);
            let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(q, y), ones));
            let d = _mm256_set1_ps(f16_load(wb) * f16_load(ab));
            *acc = _mm256_fmadd_ps(d, p, *acc);
        }
        let h = |p: *const u8| (p as *const u16).read_unaligned() as i16;
        let mut i = 0;
        while i + 4 <= nb {
            let (w0, a0) = (wp.add(i * BLOCK_BYTES), ap.add(i * AB));
            prefetch(w0, 384);
            prefetch(w0, 448);
            for (k, acc_k) in acc.iter_mut().enumerate() {
                block(w0.add(k * BLOCK_BYTES), a0.add(k * AB), ones, acc_k);
            }
            let (w1, w2, w3) = (
                w0.add(BLOCK_BYTES),
                w0.add(2 * BLOCK_BYTES),
                w0.add(3 * BLOCK_BYTES),
            );
            let (a1, a2, a3) = (a0.add(AB), a0.add(2 * AB), a0.add(3 * AB));
            let m = _mm_set_epi16(
                0,
                0,
                0,
                0,
                h(w3.add(2)),
                h(w2.add(2)),
                h(w1.add(2)),
                h(w0.add(2)),
            );
            let s = _mm_set_epi16(
                0,
                0,
                0,
                0,
                h(a3.add(2)),
                h(a2.add(2)),
                h(a1.add(2)),
                h(a0.add(2)),
            );
            accm = _mm_fmadd_ps(_mm_cvtph_ps(m), _mm_cvtph_ps(s), accm);
            i += 4;
        }
        let mut summ = 0.0f32;
        while i < nb {
            let (w0, a0) = (wp.add(i * BLOCK_BYTES), ap.add(i * AB));
            block(w0, a0, ones, &mut acc[0]);
            summ += f16_load(w0.add(2)) * f16_load(a0.add(2));
            i += 1;
        }
        let accm = _mm_add_ps(accm, _mm_movehl_ps(accm, accm));
        let accm = _mm_add_ss(accm, _mm_movehdup_ps(accm));
        hsum_ps(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        )) + (_mm_cvtss_f32(accm) + summ)
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
            let m = _mm256_set1_ps(f16_load(p.add(2)));
            let q = unpack_nibbles_16(p.add(4));
            let o = dst.as_mut_ptr().add(i * QK);
            let lo = _mm256_castsi256_si128(q);
            let hi = _mm256_extracti128_si256(q, 1);
            let parts = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
            for (k, part) in parts.iter().enumerate() {
                let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(*part));
                _mm256_storeu_ps(o.add(8 * k), _mm256_add_ps(_mm256_mul_ps(d, f), m));
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use crate::common::neon::*;
    use std::arch::aarch64::*;
    const AB: usize = crate::q8_1::BLOCK_BYTES;

    /// Bit-exact with [`super::vec_dot_scalar`]: each block's integer sum Σ q·y exact, then
    /// `sum += isum·(d_w·d_a) + m_w·s_a` block after block, as the reference does.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `a` must hold at least as
    /// many Q8_1 blocks as `w` holds whole weight blocks.
    #[target_feature(enable = "neon")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        let nb = w.len() / BLOCK_BYTES;
        let (wp, ap) = (w.as_ptr(), a.as_ptr());
        let mut sum = 0.0f32;
        for i in 0..nb {
            let (wb, ab) = (wp.add(i * BLOCK_BYTES), ap.add(i * AB));
            let (lo, hi) = nibbles(wb.add(4));
            let y = |k: usize| vld1q_s8(ab.add(4 + 16 * k) as *const i8);
            let acc = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(lo), y(0));
            let isum = vaddvq_s32(dot16(acc, vreinterpretq_s8_u8(hi), y(1)));
            sum += isum as f32 * (f16_load(wb) * f16_load(ab))
                + f16_load(wb.add(2)) * f16_load(ab.add(2));
        }
        sum
    }

    /// Bit-exact with [`super::dequantize_scalar`] (`d·q + m`: multiply, then add).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `dst` must hold at least
    /// one block's worth of values per whole block of `src`.
    #[target_feature(enable = "neon")]
    pub unsafe fn dequantize(src: &[u8], dst: &mut [f32]) {
        let nb = src.len() / BLOCK_BYTES;
        for i in 0..nb {
            let p = src.as_ptr().add(i * BLOCK_BYTES);
            let (d, m) = (vdupq_n_f32(f16_load(p)), vdupq_n_f32(f16_load(p.add(2))));
            let o = dst.as_mut_ptr().add(i * QK);
            let (lo, hi) = nibbles(p.add(4));
            for (h, q) in [lo, hi].into_iter().enumerate() {
                for (k, f) in widen_u8x16(q).into_iter().enumerate() {
                    vst1q_f32(o.add(16 * h + 4 * k), vaddq_f32(vmulq_f32(d, f), m));
                }
            }
        }
    }
}
