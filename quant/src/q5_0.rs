//! Q5_0: 32 values per block, f16 scale, 32 high bits (u32, little-endian) and 16 bytes of low
//! nibbles; value = (q - 16) * d. Dots against Q8_0 activations.

use crate::common::*;
use bytemuck::{Pod, Zeroable};
use half::f16;

pub const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    /// Bit j is bit 4 of value j (a little-endian u32 in ggml; bytes here to avoid padding).
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
pub const BLOCK_BYTES: usize = 22;

/// Quantize one block; without weights byte-exact with ggml's reference / gguf-py.
pub fn quantize_block(x: &[f32], imatrix: Option<&[f32]>) -> BlockQ5_0 {
    let mut l = [0i32; QK];
    let d = match imatrix {
        None => {
            let d = crate::q4_0::signed_absmax(x) / -16.0;
            let id = if d == 0.0 { 0.0 } else { 1.0 / d };
            for (q, &v) in l.iter_mut().zip(x) {
                *q = trunc_level(v * id + 16.5).min(31) as i32;
            }
            d
        }
        Some(qw) => {
            let mut w = [0.0f32; QK];
            element_weights(x, qw, sigma2(x), &mut w);
            let d = search_scale_signed(x, &w, -16, 15, &mut l);
            l.iter_mut().for_each(|q| *q += 16);
            d
        }
    };
    let mut qh = 0u32;
    for (j, &q) in l.iter().enumerate() {
        qh |= ((q as u32 >> 4) & 1) << j;
    }
    let mut b = BlockQ5_0 {
        d: f16::from_f32(d),
        qh: qh.to_le_bytes(),
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

#[inline]
fn values(b: &[u8]) -> [i32; QK] {
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let mut v = [0i32; QK];
    for j in 0..QK / 2 {
        let q = b[6 + j];
        v[j] = ((q & 0x0F) as u32 | ((qh >> j) & 1) << 4) as i32 - 16;
        v[j + 16] = ((q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4) as i32 - 16;
    }
    v
}

pub fn dequantize_scalar(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (o, q) in y.iter_mut().zip(values(b)) {
            *o = q as f32 * d;
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

/// Q5_0 weights · Q8_0 activations.
pub fn vec_dot_scalar(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(crate::q8_0::BLOCK_BYTES))
    {
        let isum: i32 = values(bw)
            .iter()
            .zip(&ba[2..])
            .map(|(&q, &y)| q * (y as i8) as i32)
            .sum();
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

    /// The 32 unsigned 5-bit values of a block.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_q(p: *const u8) -> __m256i {
        let qh = (p.add(2) as *const u32).read_unaligned();
        let hi = _mm256_and_si256(bits_to_bytes(u32::from_le(qh)), _mm256_set1_epi8(0x10));
        _mm256_or_si256(unpack_nibbles_16(p.add(6)), hi)
    }

    /// Four blocks per iteration, four accumulators, weights prefetched ahead.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        let nb = w.len() / BLOCK_BYTES;
        let (wp, ap) = (w.as_ptr(), a.as_ptr());
        let sixteen = _mm256_set1_epi8(16);
        let mut acc = [_mm256_setzero_ps(); 4];
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn block(wb: *const u8, ab: *const u8, sixteen: __m256i, acc: &mut __m256) {
            let q = _mm256_sub_epi8(load_q(wb), sixteen);
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
                block(w0.add(k * BLOCK_BYTES), a0.add(k * AB), sixteen, acc_k);
            }
            i += 4;
        }
        while i < nb {
            block(
                wp.add(i * BLOCK_BYTES),
                ap.add(i * AB),
                sixteen,
                &mut acc[0],
            );
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
            let q = _mm256_sub_epi8(load_q(p), _mm256_set1_epi8(16));
            crate::q4_0::store_i8x32_scaled(q, d, dst.as_mut_ptr().add(i * QK));
        }
    }
}
