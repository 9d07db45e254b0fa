// Q4_0: f16 d, 16 bytes of nibbles (low nibbles are values 0..15, high nibbles 16..31);
// value = d * (q - 8). Dotted with Q8_0-quantized activations as the CPU does: per block an
// exact integer sum scaled by d_w * d_a. Activation block = 9 words: d (f32), 32 i8.
const QK: u32 = 32u;
const BLOCK_BYTES: u32 = 18u;
const ACT_QUANT: u32 = 1u;
const ACT_WORDS: u32 = 9u;

fn deq(row: u32, i: u32) -> f32 {
    let b = row + (i / 32u) * 18u;
    let k = i % 32u;
    let byte = w_byte(b + 2u + k % 16u);
    let q = select(byte & 15u, byte >> 4u, k >= 16u);
    return f32(i32(q) - 8) * f16_bits(w_u16(b));
}

// Part j (0..3): nibble word j, values 4j..4j+3 and 16+4j..16+4j+3, so the lanes of a warp
// read consecutive words of a row (see matmul.wgsl).
const PARTS: u32 = 4u;

fn block_dot(b: u32, a: u32, j: u32) -> f32 {
    var isum = 0i;
    let q = w_word(b + 2u + 4u * j);
    let lo = xq[a + 1u + j];
    let hi = xq[a + 5u + j];
    for (var k = 0u; k < 4u; k++) {
        let byte = (q >> (8u * k)) & 0xffu;
        isum += (i32(byte & 15u) - 8) * i8_of(lo, k) + (i32(byte >> 4u) - 8) * i8_of(hi, k);
    }
    return f32(isum) * (f16_bits(w_u16(b)) * bitcast<f32>(xq[a]));
}
