//! Q8_K: activation type for the K-quants. f32 scale d, 256 signed bytes, and 16 i16 sums of
//! each group of 16 values (used for the K-quants' offsets).

use crate::common::*;
use crate::types::QK_K;
use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_K>() == 292);
pub const BLOCK_BYTES: usize = 292;
pub(crate) const QS_OFF: usize = 4;
pub(crate) const BSUMS_OFF: usize = 4 + QK_K;

pub fn quantize_block(x: &[f32]) -> BlockQ8_K {
    let mut b = BlockQ8_K::zeroed();
    let max = crate::q4_0::signed_absmax(x);
    if max == 0.0 || !max.is_finite() {
        return b;
    }
    let iscale = -127.0 / max;
    for (q, &v) in b.qs.iter_mut().zip(x) {
        *q = round_away(iscale * v).clamp(-127.0, 127.0) as i8;
    }
    for (g, s) in b.bsums.iter_mut().enumerate() {
        *s = b.qs[16 * g..16 * g + 16].iter().map(|&q| q as i16).sum();
    }
    b.d = 1.0 / iscale;
    b
}

pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let b = simd_quantize_block(x).unwrap_or_else(|| quantize_block(x));
        out.copy_from_slice(bytemuck::bytes_of(&b));
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::common::x86::level_ps;
    use std::arch::x86_64::*;

    /// [`super::quantize_block`], bit-exact with it: the same signed maximum (the first value
    /// of largest magnitude), scale, levels rounded half away from zero and clamped.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C; `x` holds 256 values.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_block(x: &[f32]) -> BlockQ8_K {
        debug_assert!(x.len() >= QK_K);
        let sign = _mm256_set1_ps(-0.0);
        // NaNs are skipped (max_ps returns its second operand), as the scalar `>` skips them.
        let mut m = _mm256_setzero_ps();
        for k in 0..QK_K / 8 {
            let v = _mm256_loadu_ps(x.as_ptr().add(8 * k));
            m = _mm256_max_ps(_mm256_andnot_ps(sign, v), m);
        }
        let lanes: [f32; 8] = std::mem::transmute(m);
        let amax = lanes.iter().copied().fold(0.0f32, f32::max);
        let mut b = BlockQ8_K::zeroed();
        if amax == 0.0 || !amax.is_finite() {
            return b;
        }
        let max = x[..QK_K]
            .iter()
            .copied()
            .find(|v| v.abs() == amax)
            .unwrap_or(0.0);
        let iscale = -127.0 / max;
        let is = _mm256_set1_ps(iscale);
        let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
        for g in 0..QK_K / 32 {
            let q: [__m256i; 4] = std::array::from_fn(|k| {
                let v = _mm256_loadu_ps(x.as_ptr().add(32 * g + 8 * k));
                _mm256_cvtps_epi32(level_ps(_mm256_mul_ps(is, v), lo, hi))
            });
            let p16a = _mm256_packs_epi32(q[0], q[1]);
            let p16b = _mm256_packs_epi32(q[2], q[3]);
            let p8 = _mm256_packs_epi16(p16a, p16b);
            let p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(b.qs.as_mut_ptr().add(32 * g) as *mut __m256i, p8);
        }
        for (g, s) in b.bsums.iter_mut().enumerate() {
            *s = b.qs[16 * g..16 * g + 16].iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
        b
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use crate::common::neon::{abs_max, round_i8x16};
    use std::arch::aarch64::*;

    /// [`super::quantize_block`], bit-exact with it: the same signed maximum (the first value
    /// of largest magnitude, NaNs skipped), scale, levels rounded half away from zero by
    /// FCVTAS (NaN to 0, as the scalar cast) and clamped to ±127, and group sums.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `x` holds 256 values.
    #[target_feature(enable = "neon")]
    pub unsafe fn quantize_block(x: &[f32]) -> BlockQ8_K {
        let x = &x[..QK_K];
        let amax = abs_max(x);
        let mut b = BlockQ8_K::zeroed();
        if amax == 0.0 || !amax.is_finite() {
            return b;
        }
        let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
        let iscale = -127.0 / max;
        let is = vdupq_n_f32(iscale);
        let (lo, hi) = (vdupq_n_s8(-127), vdupq_n_s8(127));
        for g in 0..QK_K / 16 {
            let v: [float32x4_t; 4] =
                std::array::from_fn(|k| vmulq_f32(vld1q_f32(x.as_ptr().add(16 * g + 4 * k)), is));
            // Saturated to i8 first: |iscale·v| ≤ 127 up to rounding, so only −128 can need
            // the clamp.
            let q = vminq_s8(vmaxq_s8(round_i8x16(v), lo), hi);
            vst1q_s8(b.qs.as_mut_ptr().add(16 * g), q);
            b.bsums[g] = vaddlvq_s8(q);
        }
        b.d = 1.0 / iscale;
        b
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for (o, &q) in y.iter_mut().zip(&b[QS_OFF..QS_OFF + QK_K]) {
            *o = d * (q as i8) as f32;
        }
    }
}

#[inline]
pub(crate) fn d_of(b: &[u8]) -> f32 {
    f32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
pub(crate) fn bsum(b: &[u8], g: usize) -> i32 {
    i16::from_le_bytes([b[BSUMS_OFF + 2 * g], b[BSUMS_OFF + 2 * g + 1]]) as i32
}

/// The SIMD activation quantizer of this CPU (AVX2 or NEON) on one block of 256 values,
/// bit-exact with [`quantize_block`]; `None` where there is none.
fn simd_quantize_block(x: &[f32]) -> Option<BlockQ8_K> {
    assert!(
        x.len() >= QK_K,
        "q8_k: a block is {QK_K} values, got {}",
        x.len()
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2/FMA/F16C detected; `x` holds a block of 256 values (asserted).
        return Some(unsafe { avx2::quantize_block(x) });
    }
    #[cfg(target_arch = "aarch64")]
    if has_neon() {
        // SAFETY: NEON detected; `x` holds a block of 256 values (asserted).
        return Some(unsafe { neon::quantize_block(x) });
    }
    None
}

#[cfg(test)]
mod simd_tests {
    use super::*;

    #[test]
    fn simd_quantize_is_bit_exact_with_scalar() {
        let mut rng = crate::common::TestRng(0x2545_f491_4f6c_dd1d);
        for case in 0..4000 {
            let mut x = rng.block(QK_K);
            let mag = x.iter().fold(0.0f32, |m, v| m.max(v.abs())) * 2.0;
            let mut next = || rng.next();
            match case % 8 {
                // Exact halves: max −127 gives iscale 1.
                0 => {
                    for (i, v) in x.iter_mut().enumerate() {
                        *v = (i % 64) as f32 - 31.5;
                    }
                    x[7] = -127.0;
                    x[9] = 127.0;
                }
                1 => x[(next() % 256) as usize] = f32::NAN,
                2 => x[(next() % 256) as usize] = f32::INFINITY,
                3 => x.iter_mut().for_each(|v| *v = 0.0),
                4 => x.iter_mut().for_each(|v| *v *= 1e-40),
                5 => {
                    // Ties in magnitude: the first one's sign wins.
                    x[3] = -mag;
                    x[200] = mag;
                }
                _ => {}
            }
            let want = quantize_block(&x);
            let Some(got) = simd_quantize_block(&x) else {
                return; // no SIMD path on this CPU (or QUANT_FORCE_SCALAR)
            };
            assert_eq!(
                bytemuck::bytes_of(&got),
                bytemuck::bytes_of(&want),
                "case {case}"
            );
        }
    }
}
