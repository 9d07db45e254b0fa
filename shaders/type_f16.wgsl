// F16 weights: 2 bytes per value, read as 8-value blocks.
const QK: u32 = 8u;
const BLOCK_BYTES: u32 = 16u;
const ACT_QUANT: u32 = 0u;
const ACT_WORDS: u32 = QK;

fn deq(row: u32, i: u32) -> f32 {
    return f16_bits(w_u16(row + 2u * i));
}

// The whole block is one part (see matmul.wgsl).
const PARTS: u32 = 1u;

fn block_dot(b: u32, a: u32, part: u32) -> f32 {
    var s = 0.0;
    for (var j = 0u; j < 4u; j++) {
        let v = unpack2x16float(w_word(b + 4u * j));
        s += v.x * xf[a + 2u * j] + v.y * xf[a + 2u * j + 1u];
    }
    return s;
}
