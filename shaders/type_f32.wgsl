// F32 weights: 4 bytes per value. A "block" is 4 values so a row is read a word at a time.
const QK: u32 = 4u;
const BLOCK_BYTES: u32 = 16u;
const ACT_QUANT: u32 = 0u;
const ACT_WORDS: u32 = QK;

fn deq(row: u32, i: u32) -> f32 {
    return bitcast<f32>(w[(row + 4u * i) >> 2u]);
}

// Dot of the weight block at byte `b` with f32 activations starting at index `a`.
// The whole block is one part (see matmul.wgsl).
const PARTS: u32 = 1u;

fn block_dot(b: u32, a: u32, part: u32) -> f32 {
    let i = b >> 2u;
    return bitcast<f32>(w[i]) * xf[a] + bitcast<f32>(w[i + 1u]) * xf[a + 1u]
        + bitcast<f32>(w[i + 2u]) * xf[a + 2u] + bitcast<f32>(w[i + 3u]) * xf[a + 3u];
}
