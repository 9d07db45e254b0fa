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
    let mut b = BlockQ4_0 {
        d: f16::from_f32(d),
        qs: [0; 16],
    };
    pack_nibbles(&l, &mut b.qs);
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
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: features checked; whole blocks validated by the caller.
        unsafe { avx2::dequantize(src, dst) };
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
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: features checked; equal block counts validated by the caller.
        return unsafe { avx2::vec_dot(w, a) };
    }
    vec_dot_scalar(w, a)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::common::x86::*;
    use std::arch::x86_64::*;
    const AB: usize = crate::q8_0::BLOCK_BYTES;

    /// Four blocks per iteration, four accumulators, weights prefetched ahead.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        let nb = w.len() / BLOCK_BYTES;
        let (wp, ap) = (w.as_ptr(), a.as_ptr());
        let eight = _mm256_set1_epi8(8);
        let mut acc = [_mm256_setzero_ps(); 4];
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
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::store_i8x32_scaled;
