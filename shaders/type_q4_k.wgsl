// Q4_K: 144-byte super-blocks of 256 values: f16 d, f16 dmin, 12 bytes of 6-bit scales and
// mins for 8 sub-blocks of 32 (k_scales.wgsl), then 128 nibble bytes (byte group c of 32 holds
// sub-block 2c in its low nibbles and 2c+1 in its high ones); value = d*sc*q - dmin*m. Dotted
// with Q8_K activations as the CPU does. Activation block = 65 words: d (f32), 256 i8.
const QK: u32 = 256u;
const BLOCK_BYTES: u32 = 144u;
const ACT_QUANT: u32 = 2u;
const ACT_WORDS: u32 = 65u;

fn deq(row: u32, i: u32) -> f32 {
    let b = row + (i / 256u) * 144u;
    let k = i % 256u;
    let c = k / 64u;
    let hi = (k % 64u) >= 32u;
    let j = 2u * c + select(0u, 1u, hi);
    let byte = w_byte(b + 16u + 32u * c + k % 32u);
    let q = select(byte & 15u, byte >> 4u, hi);
    let sm = scale_min(b, j);
    let d = f16_bits(w_u16(b)) * f32(sm.x);
    let m = f16_bits(w_u16(b + 2u)) * f32(sm.y);
    return d * f32(q) - m;
}

// Part p (0..15) of a super-block: 8 bytes of nibble group c = p/4 (words 2(p%4) and
// 2(p%4)+1), 8 values of sub-block 2c in their low nibbles and 8 of 2c+1 in their high ones,
// so a warp's lanes read consecutive words (see matmul.wgsl).
const PARTS: u32 = 16u;

fn block_dot(b: u32, a: u32, p: u32) -> f32 {
    let c = p / 4u;
    var s1 = 0i;
    var s2 = 0i;
    var y1 = 0i;
    var y2 = 0i;
    for (var j = 2u * (p % 4u); j < 2u * (p % 4u) + 2u; j++) {
        let q = w[(b + 16u + 32u * c + 4u * j) >> 2u];
        let lo = xq[a + 1u + 16u * c + j];
        let hi = xq[a + 9u + 16u * c + j];
        for (var k = 0u; k < 4u; k++) {
            let byte = (q >> (8u * k)) & 0xffu;
            let yl = i8_of(lo, k);
            let yh = i8_of(hi, k);
            s1 += i32(byte & 15u) * yl;
            s2 += i32(byte >> 4u) * yh;
            y1 += yl;
            y2 += yh;
        }
    }
    return k_part(b, a, c, vec4(s1, s2, y1, y2));
}
