//! Q8_1: activation type for Q4_1. f16 scale d, f16 s = d * sum(q), 32 signed bytes.

use crate::common::*;
use bytemuck::{Pod, Zeroable};
use half::f16;

pub const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);
pub const BLOCK_BYTES: usize = 36;

pub fn quantize_block(x: &[f32]) -> BlockQ8_1 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let mut b = BlockQ8_1::zeroed();
    let mut sum = 0i32;
    for (q, &v) in b.qs.iter_mut().zip(x) {
        *q = round_level_i8(v * id);
        sum += *q as i32;
    }
    b.d = f16::from_f32(d);
    b.s = f16::from_f32(sum as f32 * d);
    b
}

/// Importance weights are ignored: Q8_1 is an activation type.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, out) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        out.copy_from_slice(bytemuck::bytes_of(&quantize_block(x)));
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (o, &q) in y.iter_mut().zip(&b[4..]) {
            *o = (q as i8) as f32 * d;
        }
    }
}
