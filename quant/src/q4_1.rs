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
    vec_dot_scalar(w, a)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::common::x86::*;
    use std::arch::x86_64::*;
    const AB: usize = crate::q8_1::BLOCK_BYTES;

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
