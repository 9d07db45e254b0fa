// Q5_0: f16 d, 4 bytes qh (bit j = fifth bit of value j, little-endian), 16 bytes of nibbles
// (low nibbles are values 0..15, high nibbles 16..31); value = d * (q - 16). Dotted with Q8_0
// activations as the CPU does (9-word activation blocks: d as f32, 32 i8).
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 22u;
const ACT_QUANT: u32 = 1u;
const ACT_WORDS: u32 = 9u;

fn deq(row: u32, i: u32) -> f32 {
    let b = row + (i / 32u) * 22u;
    let k = i % 32u;
    let byte = w_byte(b + 6u + k % 16u);
    let lo = select(byte & 15u, byte >> 4u, k >= 16u);
    let q = lo | (((w_word(b + 2u) >> k) & 1u) << 4u);
    return f32(i32(q) - 16) * f16_bits(w_u16(b));
}

// The whole block is one part (see matmul.wgsl).
const PARTS: u32 = 1u;

fn block_dot(b: u32, a: u32, part: u32) -> f32 {
    let qh = w_word(b + 2u);
    var isum = 0i;
    for (var j = 0u; j < 4u; j++) {
        let q = w_word(b + 6u + 4u * j);
        let lo = xq[a + 1u + j];
        let hi = xq[a + 5u + j];
        for (var k = 0u; k < 4u; k++) {
            let e = 4u * j + k;
            let byte = (q >> (8u * k)) & 0xffu;
            let vl = (byte & 15u) | (((qh >> e) & 1u) << 4u);
            let vh = (byte >> 4u) | (((qh >> (e + 16u)) & 1u) << 4u);
            isum += (i32(vl) - 16) * i8_of(lo, k) + (i32(vh) - 16) * i8_of(hi, k);
        }
    }
    return f32(isum) * (f16_bits(w_u16(b)) * bitcast<f32>(xq[a]));
}
