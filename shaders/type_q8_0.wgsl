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

// The whole block is one part (see matmul.wgsl).
const PARTS: u32 = 1u;

fn block_dot(b: u32, a: u32, part: u32) -> f32 {
    let d = f16_bits(w_u16(b));
    var s = 0.0;
    for (var j = 0u; j < 8u; j++) {
        let q = w_word(b + 2u + 4u * j);
        let o = a + 4u * j;
        s += f32(i8_of(q, 0u)) * xf[o] + f32(i8_of(q, 1u)) * xf[o + 1u]
            + f32(i8_of(q, 2u)) * xf[o + 2u] + f32(i8_of(q, 3u)) * xf[o + 3u];
    }
    return d * s;
}
