// BF16 weights: the high half of an f32, read as 8-value blocks.
const QK: u32 = 8u;
const BLOCK_BYTES: u32 = 16u;
const ACT_QUANT: u32 = 0u;
const ACT_WORDS: u32 = QK;

fn deq(row: u32, i: u32) -> f32 {
    return bitcast<f32>(w_u16(row + 2u * i) << 16u);
}

// The whole block is one part (see matmul.wgsl).
const PARTS: u32 = 1u;

fn block_dot(b: u32, a: u32, part: u32) -> f32 {
    var s = 0.0;
    for (var j = 0u; j < 4u; j++) {
        let v = w_word(b + 4u * j);
        s += bitcast<f32>(v << 16u) * xf[a + 2u * j] + bitcast<f32>(v & 0xffff0000u) * xf[a + 2u * j + 1u];
    }
    return s;
}
