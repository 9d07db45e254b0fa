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
        let w = imatrix.map(|m| &m[i * QK..(i + 1) * QK]);
        out.copy_from_slice(bytemuck::bytes_of(&quantize_block(x, w)));
    }
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
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: features checked; lengths validated by the caller (whole blocks).
        unsafe { avx2::dequantize(src, dst) };
        return;
    }
    dequantize_scalar(src, dst)
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
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: features checked; equal block counts validated by the caller.
        return unsafe { avx2::vec_dot(w, a) };
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
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: features checked; the caller validated x.len() == 32 × blocks.
        return unsafe { avx2::vec_dot_f32(w, x) };
    }
    vec_dot_f32_scalar(w, x)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::common::x86::*;
    use std::arch::x86_64::*;

    /// Four blocks per iteration into four independent accumulators; prefetches ahead.
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

    /// Each weight byte is widened to f32, scaled by its block's d, and multiplied into one of
    /// eight accumulators (one per 8-lane slice of two blocks): no per-block reduction chain.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_f32(w: &[u8], x: &[f32]) -> f32 {
        let nb = w.len() / BLOCK_BYTES;
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 8];
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
