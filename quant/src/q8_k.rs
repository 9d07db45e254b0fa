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
        out.copy_from_slice(bytemuck::bytes_of(&quantize_block(x)));
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
