//! Plain float rows: F32, F16 (IEEE half) and BF16. Their dot products use F32 activations.

use crate::common::{assert_il_covered, Field};
use half::f16;

/// Bytes of each row per column of [`crate::Layout::Interleaved8`]: 8 F32 or 16 F16/BF16
/// values, so a row length must be a multiple of that to be interleaved.
pub(crate) const PACK_BYTES: usize = 32;

/// How [`crate::Layout::Interleaved8`] packs a column: each row's 32 bytes in turn.
pub(crate) const PACK: &[Field] = &[Field::rows(0, PACK_BYTES)];

/// f32 -> bf16 bits as ggml (and gguf-py) round: NaNs forced quiet, otherwise round to
/// nearest even on the top 16 bits.
#[inline]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let mut n = x.to_bits();
    if n & 0x7fff_ffff > 0x7f80_0000 {
        n = (n & 0xffff_0000) | (64 << 16);
    }
    ((n as u64 + (0x7fff + ((n >> 16) & 1)) as u64) >> 16) as u16
}

#[inline]
pub fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

pub fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    for (x, o) in src.iter().zip(dst.chunks_exact_mut(4)) {
        o.copy_from_slice(&x.to_le_bytes());
    }
}
pub fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    for (x, o) in src.iter().zip(dst.chunks_exact_mut(2)) {
        o.copy_from_slice(&f16::from_f32(*x).to_bits().to_le_bytes());
    }
}
pub fn quantize_bf16(src: &[f32], dst: &mut [u8]) {
    for (x, o) in src.iter().zip(dst.chunks_exact_mut(2)) {
        o.copy_from_slice(&f32_to_bf16_bits(*x).to_le_bytes());
    }
}

pub fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(4).zip(dst.iter_mut()) {
        *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}
pub fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *y = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    }
}
pub fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *y = bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

#[inline]
fn act(a: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
}

/// Float element kinds for the dot products.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    F32,
    F16,
    BF16,
}

pub fn vec_dot_scalar(kind: Kind, n: usize, w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for i in 0..n {
        let x = match kind {
            Kind::F32 => act(w, i),
            Kind::F16 => f16::from_bits(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])).to_f32(),
            Kind::BF16 => bf16_bits_to_f32(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])),
        };
        sum += x * act(a, i);
    }
    sum
}

pub fn vec_dot(kind: Kind, n: usize, w: &[u8], a: &[u8]) -> f32 {
    let es = if kind == Kind::F32 { 4 } else { 2 };
    assert!(
        w.len() / es >= n && a.len() / 4 >= n,
        "float vec_dot: {n} elements need {} weight and {} activation bytes, got {} and {}",
        n * es,
        n * 4,
        w.len(),
        a.len()
    );
    #[cfg(target_arch = "x86_64")]
    if crate::common::has_avx2() {
        // SAFETY: AVX2/FMA/F16C detected at run time; the kernel reads n elements of `w` and
        // `a`, both long enough (asserted above).
        return unsafe { avx2::vec_dot(kind, n, w, a) };
    }
    #[cfg(target_arch = "aarch64")]
    if crate::common::has_neon() {
        // SAFETY: NEON detected at run time; the kernel reads n elements of `w` and `a`, both
        // long enough (asserted above).
        return unsafe { neon::vec_dot(kind, n, w, a) };
    }
    vec_dot_scalar(kind, n, w, a)
}

/// `out[r] = w_r · a` for consecutive rows of `n` elements of `kind` against one f32
/// activation (`a`, little-endian f32 bytes). Eight rows at a time share every activation load
/// and stream from eight places at once; the rest go row by row. Equal to [`vec_dot`] per row
/// up to float summation order.
///
/// `il`: the whole eight-row groups are interleaved (see `q4_0::vec_dot_rows`; rows a multiple
/// of `PACK_BYTES` long), only with the AVX2 kernel.
pub fn vec_dot_rows(kind: Kind, n: usize, w: &[u8], il: bool, a: &[u8], out: &mut [f32]) {
    let es = if kind == Kind::F32 { 4 } else { 2 };
    let rb = n * es;
    assert!(
        w.len() / rb.max(1) >= out.len() && a.len() / 4 >= n,
        "float vec_dot_rows: {} rows of {n} need {} weight and {} activation bytes, got {} and {}",
        out.len(),
        out.len() * rb,
        n * 4,
        w.len(),
        a.len()
    );
    // Rows the eight-row kernel took (x86 only; elsewhere every row goes one by one).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut r = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::common::has_avx2() && n >= 8 {
        while r + 8 <= out.len() {
            let mut o = [0f32; 8];
            // SAFETY: AVX2/FMA/F16C detected at run time; rows r..r+8 (n elements each, in
            // either layout the same bytes) lie inside `w` and `a` holds n f32 (asserted above);
            // packed rows are whole columns long (asserted).
            let g = w[r * rb..].as_ptr();
            unsafe {
                if il {
                    avx2::vec_dot_8rows::<true>(kind, n, g, rb, a.as_ptr(), &mut o)
                } else {
                    avx2::vec_dot_8rows::<false>(kind, n, g, rb, a.as_ptr(), &mut o)
                }
            };
            out[r..r + 8].copy_from_slice(&o);
            r += 8;
        }
    }
    assert!(
        !il || rb % PACK_BYTES == 0,
        "float vec_dot_rows: interleaved rows of {rb} bytes are not whole columns"
    );
    assert_il_covered(il, r, out.len(), rb, "float vec_dot_rows");
    for (o, row) in out[r..].iter_mut().zip(w[r * rb..].chunks_exact(rb.max(1))) {
        *o = vec_dot(kind, n, row, a);
    }
}

pub fn dequantize(kind: Kind, src: &[u8], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::common::has_avx2() && kind != Kind::F32 {
        // SAFETY: AVX2/FMA/F16C detected at run time; the kernel converts
        // min(dst.len(), src.len() / 2) elements, in bounds of both slices.
        unsafe { avx2::dequantize(kind, src, dst) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if crate::common::has_neon() && kind != Kind::F32 {
        // SAFETY: NEON detected at run time; the kernel converts
        // min(dst.len(), src.len() / 2) elements, in bounds of both slices.
        unsafe { neon::dequantize(kind, src, dst) };
        return;
    }
    match kind {
        Kind::F32 => dequantize_f32(src, dst),
        Kind::F16 => dequantize_f16(src, dst),
        Kind::BF16 => dequantize_bf16(src, dst),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::common::x86::*;
    use std::arch::x86_64::*;

    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `p` must be
    /// readable for 8 elements of `kind` starting at element `i`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(kind: Kind, p: *const u8, i: usize) -> __m256 {
        match kind {
            Kind::F32 => _mm256_loadu_ps((p as *const f32).add(i)),
            Kind::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i) as *const __m128i)),
            Kind::BF16 => {
                let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.add(2 * i) as *const __m128i));
                _mm256_castsi256_ps(_mm256_slli_epi32(h, 16))
            }
        }
    }

    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must hold
    /// `n` elements of `kind` and `a` `n` little-endian `f32`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(kind: Kind, n: usize, w: &[u8], a: &[u8]) -> f32 {
        // One loop per kind, so the element conversion is not re-dispatched per load.
        match kind {
            Kind::F32 => dot_kind::<0>(n, w, a),
            Kind::F16 => dot_kind::<1>(n, w, a),
            Kind::BF16 => dot_kind::<2>(n, w, a),
        }
    }

    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must hold
    /// `n` elements of `kind` and `a` `n` little-endian `f32`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_kind<const K: u8>(n: usize, w: &[u8], a: &[u8]) -> f32 {
        let kind = [Kind::F32, Kind::F16, Kind::BF16][K as usize];
        let es = if K == 0 { 4 } else { 2 };
        let (wp, ap) = (w.as_ptr(), a.as_ptr() as *const f32);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            prefetch(wp.add(i * es), 512);
            prefetch(wp.add(i * es), 576);
            for (k, acc_k) in acc.iter_mut().enumerate() {
                let j = i + 8 * k;
                *acc_k = _mm256_fmadd_ps(load8(kind, wp, j), _mm256_loadu_ps(ap.add(j)), *acc_k);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(load8(kind, wp, i), _mm256_loadu_ps(ap.add(i)), acc[0]);
            i += 8;
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut sum = hsum_ps(v);
        if i < n {
            sum += vec_dot_scalar(kind, n - i, &w[i * es..], &a[4 * i..]);
        }
        sum
    }

    /// How far ahead (bytes) the packed kernel prefetches its one weight stream. On the Intel
    /// Xeon (AVX-512) machine of 2026-11-23 its F16 and BF16 lines read 0.72-0.85 of the triad
    /// without, 0.91-0.97 at 4 KiB and 0.94-1.02 at 8 KiB ahead (kernel bench, two alternating
    /// runs at each distance; F32 0.92-0.94 → 1.03-1.13). The Zen 3 machine of earlier
    /// sessions measured this kernel without a prefetch only.
    const FLOAT_PACKED_AHEAD: usize = 8192;

    /// Eight rows against one f32 activation: each activation slice is loaded once and
    /// multiplied into eight per-row accumulators; the tail (n mod 8) is added per row.
    /// `PACKED`: one group of [`crate::Layout::Interleaved8`] (columns of each row's
    /// [`PACK_BYTES`] in turn, `n` a multiple of them); the same bytes meet the same
    /// operations in the same order as in the row-major layout, so results are bit-identical.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); rows
    /// `w + r·rb` for r < 8 (with `PACKED`, the group from `w`) must each hold `n` elements of
    /// `kind` and `a` `n` f32 (bytes, any alignment).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_8rows<const PACKED: bool>(
        kind: Kind,
        n: usize,
        w: *const u8,
        rb: usize,
        a: *const u8,
        out: &mut [f32; 8],
    ) {
        let _frame = align_frame();
        match kind {
            Kind::F32 => rows_kind::<0, PACKED>(n, w, rb, a, out),
            Kind::F16 => rows_kind::<1, PACKED>(n, w, rb, a, out),
            Kind::BF16 => rows_kind::<2, PACKED>(n, w, rb, a, out),
        }
    }

    /// # Safety
    ///
    /// As [`vec_dot_8rows`], with `K` the kind's index (0 F32, 1 F16, 2 BF16).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn rows_kind<const K: u8, const PACKED: bool>(
        n: usize,
        w: *const u8,
        rb: usize,
        a: *const u8,
        out: &mut [f32; 8],
    ) {
        let kind = [Kind::F32, Kind::F16, Kind::BF16][K as usize];
        let es = if K == 0 { 4 } else { 2 };
        let per_col = PACK_BYTES / es;
        debug_assert!(!PACKED || n % per_col == 0);
        let rows: [*const u8; 8] = std::array::from_fn(|r| w.wrapping_add(r * rb));
        // Row r's element i (i a multiple of 8, of 16 for the 2-byte kinds' paired steps).
        let at = |r: usize, i: usize| -> *const u8 {
            if PACKED {
                w.add(i / per_col * 8 * PACK_BYTES + r * PACK_BYTES + i % per_col * es)
            } else {
                rows[r].add(i * es)
            }
        };
        let ap = a as *const f32;
        let mut acc = [_mm256_setzero_ps(); 8];
        let n8 = n / 8 * 8;
        let mut i = 0;
        let ahead = |i: usize| {
            if !PACKED && i % 32 == 0 {
                prefetch_next_group(w, rb, 8 * 32 * es, i / 32);
            }
            if PACKED && i % 32 == 0 {
                // The next 32 elements' columns (8·32·es bytes), FLOAT_PACKED_AHEAD on.
                for k in 0..8 * 32 * es / 64 {
                    prefetch(at(0, i), FLOAT_PACKED_AHEAD + 64 * k);
                }
            }
        };
        if K != 0 {
            // Sixteen 2-byte values of each row per step (one 32-byte load); BF16 widens them
            // by interleaving with zero words, which takes elements 0-3 / 8-11 and 4-7 / 12-15,
            // so the activation's two vectors are permuted to match (once for the eight rows).
            let zero = _mm256_setzero_si256();
            while i + 16 <= n8 {
                ahead(i);
                let x0 = _mm256_loadu_ps(ap.add(i));
                let x1 = _mm256_loadu_ps(ap.add(i + 8));
                if K == 1 {
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let p = at(r, i);
                        let a = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
                        let b = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i));
                        *acc_r = _mm256_fmadd_ps(b, x1, _mm256_fmadd_ps(a, x0, *acc_r));
                    }
                } else {
                    let xa = _mm256_permute2f128_ps(x0, x1, 0x20);
                    let xb = _mm256_permute2f128_ps(x0, x1, 0x31);
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let v = _mm256_loadu_si256(at(r, i) as *const __m256i);
                        let a = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v));
                        let b = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v));
                        *acc_r = _mm256_fmadd_ps(b, xb, _mm256_fmadd_ps(a, xa, *acc_r));
                    }
                }
                i += 16;
            }
        }
        while i < n8 {
            ahead(i);
            let x = _mm256_loadu_ps(ap.add(i));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                *acc_r = _mm256_fmadd_ps(load8(kind, at(r, i), 0), x, *acc_r);
            }
            i += 8;
        }
        for (r, (o, acc_r)) in out.iter_mut().zip(acc).enumerate() {
            let mut s = hsum_ps(acc_r);
            if n8 < n {
                // Row-major only (packed rows are whole columns).
                let wr = std::slice::from_raw_parts(rows[r].add(n8 * es), (n - n8) * es);
                let ar = std::slice::from_raw_parts(a.add(n8 * 4), (n - n8) * 4);
                s += vec_dot_scalar(kind, n - n8, wr, ar);
            }
            *o = s;
        }
    }

    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); nothing else
    /// (converts `min(dst.len(), src.len() / 2)` elements).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dequantize(kind: Kind, src: &[u8], dst: &mut [f32]) {
        let n = dst.len().min(src.len() / 2);
        let mut i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), load8(kind, src.as_ptr(), i));
            i += 8;
        }
        match kind {
            Kind::F16 => dequantize_f16(&src[2 * i..], &mut dst[i..]),
            _ => dequantize_bf16(&src[2 * i..], &mut dst[i..]),
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use crate::common::neon::half8_to_f32;
    use std::arch::aarch64::*;

    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `w` must hold `n`
    /// elements of `kind` and `a` `n` little-endian `f32`.
    #[target_feature(enable = "neon")]
    pub unsafe fn vec_dot(kind: Kind, n: usize, w: &[u8], a: &[u8]) -> f32 {
        // One loop per kind, so the element conversion is not re-dispatched per load.
        match kind {
            Kind::F32 => dot_kind::<0>(n, w, a),
            Kind::F16 => dot_kind::<1>(n, w, a),
            Kind::BF16 => dot_kind::<2>(n, w, a),
        }
    }

    /// Sixteen values per step into four accumulators of four lanes (fused multiply-adds),
    /// the rest of the row through the scalar loop: the float order differs from the scalar
    /// reference's (held to the same tolerance as the AVX2 kernel). F16 widens exactly with
    /// integer operations, BF16 by a shift.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `w` must hold `n`
    /// elements of kind `K` (0 F32, 1 F16, 2 BF16) and `a` `n` little-endian `f32`.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn dot_kind<const K: u8>(n: usize, w: &[u8], a: &[u8]) -> f32 {
        let kind = [Kind::F32, Kind::F16, Kind::BF16][K as usize];
        let es = if K == 0 { 4 } else { 2 };
        let (wp, ap) = (w.as_ptr(), a.as_ptr() as *const f32);
        let load16 = |i: usize| -> [float32x4_t; 4] {
            let p = wp.add(i * es);
            match K {
                0 => std::array::from_fn(|k| vld1q_f32((p as *const f32).add(4 * k))),
                _ => {
                    let bf = K == 2;
                    let [a0, a1] = if bf {
                        half8_to_f32::<true>(p)
                    } else {
                        half8_to_f32::<false>(p)
                    };
                    let [b0, b1] = if bf {
                        half8_to_f32::<true>(p.add(16))
                    } else {
                        half8_to_f32::<false>(p.add(16))
                    };
                    [a0, a1, b0, b1]
                }
            }
        };
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i + 16 <= n {
            for (k, v) in load16(i).into_iter().enumerate() {
                acc[k] = vfmaq_f32(acc[k], v, vld1q_f32(ap.add(i + 4 * k)));
            }
            i += 16;
        }
        let v = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        let mut sum = vaddvq_f32(v);
        if i < n {
            sum += vec_dot_scalar(kind, n - i, &w[i * es..], &a[4 * i..]);
        }
        sum
    }

    /// Bit-exact with [`dequantize_f16`] / [`dequantize_bf16`] (both widenings are exact).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); nothing else (converts
    /// `min(dst.len(), src.len() / 2)` elements).
    #[target_feature(enable = "neon")]
    pub unsafe fn dequantize(kind: Kind, src: &[u8], dst: &mut [f32]) {
        let n = dst.len().min(src.len() / 2);
        let mut i = 0;
        while i + 8 <= n {
            let p = src.as_ptr().add(2 * i);
            let v = match kind {
                Kind::BF16 => half8_to_f32::<true>(p),
                _ => half8_to_f32::<false>(p),
            };
            vst1q_f32(dst.as_mut_ptr().add(i), v[0]);
            vst1q_f32(dst.as_mut_ptr().add(i + 4), v[1]);
            i += 8;
        }
        match kind {
            Kind::F16 => dequantize_f16(&src[2 * i..], &mut dst[i..]),
            _ => dequantize_bf16(&src[2 * i..], &mut dst[i..]),
        }
    }
}
