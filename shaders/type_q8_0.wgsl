// Q8_0: f16 d, then 32 signed bytes; value = d * q. Dotted with f32 activations (as the CPU).
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 34u;
const ACT_QUANT: u32 = 0u;
const ACT_WORDS: u32 = QK;

fn deq(row: u32, i: u32) -> f32 {
    let b = row + (i / 32u) * 34u;
    let q = bitcast<i32>(w_byte(b + 2u + i % 32u) << 24u) >> 24u;
    return f32(q) * f16_bits(w_u16(b));
}

// Part j (0..7): values 4j..4j+3, so the lanes of a warp read consecutive words of a row
// and of the activations (see matmul.wgsl).
const PARTS: u32 = 8u;

fn block_dot(b: u32, a: u32, j: u32) -> f32 {
    let q = w_word(b + 2u + 4u * j);
    let o = a + 4u * j;
    let s = f32(i8_of(q, 0u)) * xf[o] + f32(i8_of(q, 1u)) * xf[o + 1u]
        + f32(i8_of(q, 2u)) * xf[o + 2u] + f32(i8_of(q, 3u)) * xf[o + 3u];
    return f16_bits(w_u16(b)) * s;
}
