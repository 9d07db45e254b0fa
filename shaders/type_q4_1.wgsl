// Q4_1: f16 d, f16 m, 16 bytes of nibbles (low nibbles are values 0..15, high nibbles
// 16..31); value = d * q + m. Dotted with Q8_1-quantized activations as the CPU does: per block
// an exact integer sum scaled by d_w * d_a, plus m_w * s_a (s_a = d_a · Σ q_a, rounded to f16).
// Activation block = 10 words: d (f32), s (f32), 32 i8.
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 20u;
const ACT_QUANT: u32 = 1u;
const ACT_WORDS: u32 = 10u;

fn deq(row: u32, i: u32) -> f32 {
    let b = row + (i / 32u) * 20u;
    let k = i % 32u;
    let byte = w_byte(b + 4u + k % 16u);
    let q = select(byte & 15u, byte >> 4u, k >= 16u);
    return f16_bits(w_u16(b)) * f32(q) + f16_bits(w_u16(b + 2u));
}

// The whole block is one part (see matmul.wgsl).
const PARTS: u32 = 1u;

fn block_dot(b: u32, a: u32, part: u32) -> f32 {
    var isum = 0i;
    for (var j = 0u; j < 4u; j++) {
        let q = w_word(b + 4u + 4u * j);
        let lo = xq[a + 2u + j];
        let hi = xq[a + 6u + j];
        for (var k = 0u; k < 4u; k++) {
            let byte = (q >> (8u * k)) & 0xffu;
            isum += i32(byte & 15u) * i8_of(lo, k) + i32(byte >> 4u) * i8_of(hi, k);
        }
    }
    let dd = f16_bits(w_u16(b)) * bitcast<f32>(xq[a]);
    return f32(isum) * dd + f16_bits(w_u16(b + 2u)) * bitcast<f32>(xq[a + 1u]);
}
