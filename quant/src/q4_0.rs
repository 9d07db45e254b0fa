//! Q4_0: 32 values per block, f16 scale and 16 bytes of nibbles (low nibbles = first 16 values,
//! high nibbles = last 16); value = (q - 8) * d. Dots against Q8_0 activations.

use crate::common::*;
use bytemuck::{Pod, Zeroable};
use half::f16;

pub const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
pub const BLOCK_BYTES: usize = 18;

/// How [`crate::Layout::Interleaved8`] packs a column of eight blocks: the eight scales, then
/// the nibble bytes in 4-byte groups (what the eight-row kernel's transpose produced).
pub(crate) const PACK: &[Field] = &[SCALE, Field::dwords(2, 16)];

/// The signed value with the largest magnitude (first one on ties), as ggml picks it.
pub(crate) fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    max
}

pub(crate) fn pack_nibbles(l: &[i32; QK], qs: &mut [u8; QK / 2]) {
    for j in 0..QK / 2 {
        qs[j] = (l[j] as u8 & 0x0F) | ((l[j + QK / 2] as u8 & 0x0F) << 4);
    }
}

/// Quantize one block; without weights byte-exact with ggml's reference / gguf-py.
pub fn quantize_block(x: &[f32], imatrix: Option<&[f32]>) -> BlockQ4_0 {
    let mut l = [0i32; QK];
    let d = match imatrix {
        None => {
            let d = signed_absmax(x) / -8.0;
            let id = if d == 0.0 { 0.0 } else { 1.0 / d };
            for (q, &v) in l.iter_mut().zip(x) {
                *q = trunc_level(v * id + 8.5).min(15) as i32;
            }
            d
        }
        Some(qw) => {
            let mut w = [0.0f32; QK];
            element_weights(x, qw, sigma2(x), &mut w);
            let d = search_scale_signed(x, &w, -8, 7, &mut l);
            l.iter_mut().for_each(|q| *q += 8);
            d
        }
    };
    encode(f16::from_f32(d), &l)
}

/// A block from its scale and levels (`0..=15`, value = (l − 8)·d).
pub(crate) fn encode(d: f16, l: &[i32; QK]) -> BlockQ4_0 {
    let mut b = BlockQ4_0 { d, qs: [0; 16] };
    pack_nibbles(l, &mut b.qs);
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
        for j in 0..QK / 2 {
            let q = b[2 + j];
            y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
            y[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    let nb = src.len() / BLOCK_BYTES;
    assert!(
        dst.len() >= nb * QK,
        "q4_0 dequantize: {nb} blocks need {} outputs, got {}",
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

/// Q4_0 weights · Q8_0 activations.
pub fn vec_dot_scalar(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(crate::q8_0::BLOCK_BYTES))
    {
        let mut isum = 0i32;
        for j in 0..QK / 2 {
            let q = bw[2 + j];
            isum += ((q & 0x0F) as i32 - 8) * (ba[2 + j] as i8) as i32;
            isum += ((q >> 4) as i32 - 8) * (ba[2 + j + QK / 2] as i8) as i32;
        }
        sum += isum as f32 * (f16_at(bw, 0) * f16_at(ba, 0));
    }
    sum
}

pub fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
    let nb = w.len() / BLOCK_BYTES;
    assert!(
        a.len() >= nb * crate::q8_0::BLOCK_BYTES,
        "q4_0 vec_dot: {nb} weight blocks need {} activation bytes, got {}",
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

/// `out[r] = w_r · a` for consecutive rows of `row_bytes` bytes (whole blocks) against one Q8_0
/// activation `a`. Eight rows at a time go through a kernel that loads each activation block
/// once for all eight and keeps the eight rows' sums in the lanes of one vector; the rest go
/// row by row. Equal to [`vec_dot`] per row up to float summation order. On AVX-512, groups of
/// row-major rows go through [`crate::nib4`]'s kernel instead (the same bits).
///
/// `prep` is `a` unpacked by [`crate::q8_0::PreparedQ8::new`] (pass it when the same activation
/// meets many row groups, as in decode; `None` unpacks it here). It must describe `a`; so must
/// `lanes` ([`crate::nib4::Lanes::from_q8_0`]; made here where wanted and `None`).
///
/// `il`: the whole eight-row groups of `w` are block-interleaved ([`crate::Layout::Interleaved8`]);
/// only with the AVX2 kernel (the caller de-interleaves for the scalar path).
pub fn vec_dot_rows(
    w: &[u8],
    row_bytes: usize,
    il: bool,
    a: &[u8],
    prep: Option<&crate::q8_0::PreparedQ8>,
    lanes: Option<&crate::nib4::Lanes>,
    out: &mut [f32],
) {
    let nb = check_rows("q4_0 vec_dot_rows", w, row_bytes, BLOCK_BYTES, out.len());
    assert!(
        a.len() >= nb * crate::q8_0::BLOCK_BYTES,
        "q4_0 vec_dot_rows: {nb} blocks per row need {} activation bytes, got {}",
        nb * crate::q8_0::BLOCK_BYTES,
        a.len()
    );
    // Rows the eight-row kernel took (x86 only; elsewhere every row goes one by one).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut r = 0;
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (prep, lanes);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && out.len() >= 8 && nb > 0 {
        let own;
        let prep = match prep {
            Some(p) => p,
            None => {
                own = crate::q8_0::PreparedQ8::new(&a[..nb * crate::q8_0::BLOCK_BYTES]);
                &own
            }
        };
        assert!(
            prep.blocks() >= nb,
            "q4_0 vec_dot_rows: prepared activation has {} blocks, rows need {nb}",
            prep.blocks()
        );
        let mut own_lanes = None;
        let lanes =
            crate::nib4::Lanes::for_q8_0(lanes, &mut own_lanes, il, nb, prep, "q4_0 vec_dot_rows");
        while r + 8 <= out.len() {
            let mut o = [[0f32; 8]; 1];
            let g = w[r * row_bytes..].as_ptr();
            // SAFETY: AVX2/FMA/F16C detected at run time; rows r..r+8 (in either layout, the
            // same bytes) lie inside `w` (asserted: w holds out.len() rows) and `prep`
            // describes nb activation blocks.
            // With `lanes` (AVX-512, row-major), the `nib4` kernel: `a` holds nb blocks and
            // `lanes` nb / 4 groups (asserted).
            unsafe {
                if let Some(l) = lanes {
                    crate::nib4::rows8::<{ crate::nib4::Q4_0 }>(g, row_bytes, nb, a, l, &mut o[0]);
                } else {
                    avx2::pick::<1>(il, g, row_bytes, nb, [prep], &mut o)
                }
            };
            out[r..r + 8].copy_from_slice(&o[0]);
            r += 8;
        }
    }
    assert_il_covered(il, r, out.len(), row_bytes, "q4_0 vec_dot_rows");
    for (o, row) in out[r..]
        .iter_mut()
        .zip(w[r * row_bytes..].chunks_exact(row_bytes))
    {
        *o = vec_dot(row, a);
    }
}

/// Several activations at once (batched prefill): `out[r·acts.len() + t] = w_r · acts[t]` for
/// consecutive rows of `row_bytes` bytes. Eight rows × up to four tokens per kernel call, so
/// each weight block is unpacked once for four tokens; numerically each entry equals
/// [`vec_dot_rows`] for that token (same integer sums and float steps).
///
/// `preps`, when given, holds each activation unpacked by [`crate::q8_0::PreparedQ8::new`].
pub fn vec_dot_rows_multi(
    w: &[u8],
    row_bytes: usize,
    il: bool,
    acts: &[&[u8]],
    preps: Option<&[&crate::q8_0::PreparedQ8]>,
    out: &mut [f32],
) {
    let name = "q4_0 vec_dot_rows_multi";
    crate::q8_0::prepared_rows_multi(
        name,
        w,
        row_bytes,
        BLOCK_BYTES,
        il,
        acts,
        preps,
        out,
        TOKENS_KERNEL,
        vec_dot,
    );
}

#[cfg(target_arch = "x86_64")]
const TOKENS_KERNEL: Option<crate::q8_0::TokensKernel> = Some(avx2::tokens);
#[cfg(not(target_arch = "x86_64"))]
const TOKENS_KERNEL: Option<crate::q8_0::TokensKernel> = None;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::common::x86::*;
    use std::arch::x86_64::*;
    const AB: usize = crate::q8_0::BLOCK_BYTES;

    /// Four blocks per iteration, four accumulators, weights prefetched ahead.
    ///
    /// Eight rows against one activation. For each block column the eight rows' 16 nibble
    /// bytes are transposed in 4-byte groups, so one vector holds four consecutive values of
    /// every row; `maddubs` against the broadcast activation bytes then sums each row in its own
    /// lane (unsigned 0..15 weights, exact i16 partial sums ≤ 8·2·15·128 < 2^15), the −8 offset
    /// is applied once per block as 8·Σa, and the eight rows' f16 scales convert together.
    /// `T` tokens share each unpacked weight block.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must be
    /// readable for eight rows of `nb` blocks (`rb` bytes apart; with `PACKED`, one group in
    /// the packed-column layout of [`crate::Layout::Interleaved8`]), and each of `preps` must
    /// describe at least `nb` activation blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn nib_8rows<const T: usize, const PACKED: bool>(
        w: *const u8,
        rb: usize,
        nb: usize,
        preps: [&crate::q8_0::PreparedQ8; T],
        out: &mut [[f32; 8]; T],
    ) {
        nib_8rows_body::<false, T, PACKED>(w, rb, nb, preps, out)
    }

    /// [`nib_8rows`] on AVX-512 (`vpdpbusd` for `maddubs` + `add`; the same exact sums).
    ///
    /// # Safety
    ///
    /// As [`nib_8rows`], and the CPU must support the AVX-512 features `has_avx512()` checks.
    #[target_feature(
        enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg,gfni"
    )]
    pub unsafe fn nib_8rows_512<const T: usize, const PACKED: bool>(
        w: *const u8,
        rb: usize,
        nb: usize,
        preps: [&crate::q8_0::PreparedQ8; T],
        out: &mut [[f32; 8]; T],
    ) {
        nib_8rows_body::<true, T, PACKED>(w, rb, nb, preps, out)
    }

    /// The body of [`nib_8rows`] and [`nib_8rows_512`] (see [`u8i8_acc`]).
    ///
    /// # Safety
    ///
    /// As [`nib_8rows`]; inlined into a caller with the features `VNNI` needs.
    #[inline(always)]
    unsafe fn nib_8rows_body<const VNNI: bool, const T: usize, const PACKED: bool>(
        w: *const u8,
        rb: usize,
        nb: usize,
        preps: [&crate::q8_0::PreparedQ8; T],
        out: &mut [[f32; 8]; T],
    ) {
        let _frame = align_frame();
        let m4 = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); T];
        let rows: [*const u8; 8] = std::array::from_fn(|r| w.wrapping_add(r * rb));
        // Decode (one token) over row-major groups of long rows on Intel: each row hinted on
        // its own (`row_hints` says why, and why not for several tokens).
        let per_row = !PACKED && T == 1 && row_hints(rb);
        for p in &preps {
            debug_assert!(p.blocks() >= nb);
        }
        for b in 0..nb {
            // Both layouts keep a group in 8·rb contiguous bytes: the next group hinted as one
            // stream, or (`per_row`) each row on its own (`prefetch_group`).
            prefetch_group(w, rb, &rows, BLOCK_BYTES, b, per_row);
            let (v, dw) = if PACKED {
                // Column b: the eight scales, then the nibble bytes already transposed.
                let col = w.add(b * 8 * BLOCK_BYTES);
                (
                    std::array::from_fn(|k| {
                        _mm256_loadu_si256(col.add(16 + 32 * k) as *const __m256i)
                    }),
                    _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i)),
                )
            } else {
                let off = b * BLOCK_BYTES;
                (transpose16_8rows(&rows, off + 2), f16_8rows(&rows, off))
            };
            let lo: [__m256i; 4] = std::array::from_fn(|k| _mm256_and_si256(v[k], m4));
            let hi: [__m256i; 4] =
                std::array::from_fn(|k| _mm256_and_si256(_mm256_srli_epi16(v[k], 4), m4));
            for (t, p) in preps.iter().enumerate() {
                let ab = p.qs.as_ptr().add(b * 32) as *const i32;
                let mut s16 = _mm256_setzero_si256();
                for k in 0..4 {
                    let alo = _mm256_set1_epi32(std::ptr::read_unaligned(ab.add(k)));
                    let ahi = _mm256_set1_epi32(std::ptr::read_unaligned(ab.add(4 + k)));
                    s16 = u8i8_acc::<VNNI>(s16, lo[k], alo);
                    s16 = u8i8_acc::<VNNI>(s16, hi[k], ahi);
                }
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(*p.d.get_unchecked(b)));
                let isum = _mm256_sub_epi32(
                    u8i8_total::<VNNI>(s16),
                    _mm256_set1_epi32(8 * *p.sum.get_unchecked(b)),
                );
                acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum), acc[t]);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(o.as_mut_ptr(), a);
        }
    }

    /// [`nib_8rows`] (or [`nib_8rows_512`] where `has_avx512()`) for the layout: `il`, a packed
    /// group; else rows `rb` bytes apart.
    ///
    /// # Safety
    ///
    /// As [`nib_8rows`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn pick<const T: usize>(
        il: bool,
        w: *const u8,
        rb: usize,
        nb: usize,
        preps: [&crate::q8_0::PreparedQ8; T],
        out: &mut [[f32; 8]; T],
    ) {
        match (has_avx512(), il) {
            (true, true) => nib_8rows_512::<T, true>(w, rb, nb, preps, out),
            (true, false) => nib_8rows_512::<T, false>(w, rb, nb, preps, out),
            (false, true) => nib_8rows::<T, true>(w, rb, nb, preps, out),
            (false, false) => nib_8rows::<T, false>(w, rb, nb, preps, out),
        }
    }

    /// [`crate::q8_0::TokensKernel`] over [`nib_8rows`] (through [`pick`]).
    ///
    /// # Safety
    ///
    /// As [`crate::q8_0::TokensKernel`].
    pub unsafe fn tokens(
        il: bool,
        w: *const u8,
        rb: usize,
        nb: usize,
        preps: &[&crate::q8_0::PreparedQ8],
        out: &mut [[f32; 8]; 4],
    ) {
        per_token_count!(*preps, out, |arr, o| pick(il, w, rb, nb, arr, o));
    }

    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `a` must hold
    /// at least as many activation blocks as `w` holds whole weight blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        let nb = w.len() / BLOCK_BYTES;
        let (wp, ap) = (w.as_ptr(), a.as_ptr());
        let eight = _mm256_set1_epi8(8);
        let mut acc = [_mm256_setzero_ps(); 4];
        /// # Safety
        ///
        /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `wb` must
        /// point to one readable weight block and `ab` to one readable activation block.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn block(wb: *const u8, ab: *const u8, eight: __m256i, acc: &mut __m256) {
            let q = _mm256_sub_epi8(unpack_nibbles_16(wb.add(2)), eight);
            let p = dot_i8_ps(q, _mm256_loadu_si256(ab.add(2) as *const __m256i));
            let d = _mm256_set1_ps(f16_load(wb) * f16_load(ab));
            *acc = _mm256_fmadd_ps(d, p, *acc);
        }
        let mut i = 0;
        while i + 4 <= nb {
            let (w0, a0) = (wp.add(i * BLOCK_BYTES), ap.add(i * AB));
            prefetch(w0, 384);
            prefetch(w0, 448);
            for (k, acc_k) in acc.iter_mut().enumerate() {
                block(w0.add(k * BLOCK_BYTES), a0.add(k * AB), eight, acc_k);
            }
            i += 4;
        }
        while i < nb {
            block(wp.add(i * BLOCK_BYTES), ap.add(i * AB), eight, &mut acc[0]);
            i += 1;
        }
        hsum_ps(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
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
            let q = _mm256_sub_epi8(unpack_nibbles_16(p.add(2)), _mm256_set1_epi8(8));
            store_i8x32_scaled(q, d, dst.as_mut_ptr().add(i * QK));
        }
    }

    /// Store 32 signed bytes as f32 multiplied by `d`.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `o` must be
    /// writable for 32 `f32`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn store_i8x32_scaled(q: __m256i, d: __m256, o: *mut f32) {
        let lo = _mm256_castsi256_si128(q);
        let hi = _mm256_extracti128_si256(q, 1);
        let parts = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
        for (k, part) in parts.iter().enumerate() {
            let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(*part));
            _mm256_storeu_ps(o.add(8 * k), _mm256_mul_ps(f, d));
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use crate::common::neon::*;
    use std::arch::aarch64::*;

    /// A block's 32 values `q − 8` as signed bytes, in order (low nibbles, then high).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `wb` must point to one
    /// readable Q4_0 block.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn values(wb: *const u8) -> [int8x16_t; 2] {
        let (lo, hi) = nibbles(wb.add(2));
        let eight = vdupq_n_s8(8);
        [
            vsubq_s8(vreinterpretq_s8_u8(lo), eight),
            vsubq_s8(vreinterpretq_s8_u8(hi), eight),
        ]
    }

    /// Bit-exact with [`super::vec_dot_scalar`]: each block's integer sum exact, then
    /// `sum += isum·(d_w·d_a)` block after block, as the reference does.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `a` must hold at least as
    /// many activation blocks as `w` holds whole weight blocks.
    #[target_feature(enable = "neon")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        scaled_blocks_dot(w, a, BLOCK_BYTES, |wb| values(wb))
    }

    /// Bit-exact with [`super::dequantize_scalar`] (`(q − 8)·d`, one rounding each).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `dst` must hold at least
    /// one block's worth of values per whole block of `src`.
    #[target_feature(enable = "neon")]
    pub unsafe fn dequantize(src: &[u8], dst: &mut [f32]) {
        scaled_blocks_dequantize(src, dst, BLOCK_BYTES, |p| values(p))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::store_i8x32_scaled;
