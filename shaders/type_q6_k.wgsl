// Q6_K: 210-byte super-blocks of 256: ql[128] (low 4 bits), qh[64] (high 2 bits), 16 signed
// 8-bit scales (one per 16 values), f16 d at byte 208; value = d * scale * (q - 32). Element e
// of half h = e/128, run k = (e%128)/32, lane l = e%32: low bits from ql[64h + l + 32(k%2)]
// (high nibble when k >= 2), high bits from qh[32h + l] >> 2k. Dotted with Q8_K activations
// as the CPU does (65-word activation blocks).
const QK: u32 = 256u;
const BLOCK_BYTES: u32 = 210u;
const ACT_QUANT: u32 = 2u;
const ACT_WORDS: u32 = 65u;

fn q6_value(b: u32, e: u32) -> i32 {
    let h = e / 128u;
    let r = e % 128u;
    let k = r / 32u;
    let l = r % 32u;
    let lo = (w_byte(b + 64u * h + l + 32u * (k % 2u)) >> select(0u, 4u, k >= 2u)) & 15u;
    let hi = (w_byte(b + 128u + 32u * h + l) >> (2u * k)) & 3u;
    return i32(lo | (hi << 4u)) - 32;
}

fn q6_scale(b: u32, g: u32) -> i32 {
    return bitcast<i32>(w_byte(b + 192u + g) << 24u) >> 24u;
}

fn deq(row: u32, i: u32) -> f32 {
    let b = row + (i / 256u) * 210u;
    let e = i % 256u;
    let dl = f16_bits(w_u16(b + 208u)) * f32(q6_scale(b, e / 16u));
    return dl * f32(q6_value(b, e));
}

// Part g (0..15) of a super-block: scale group g, 16 values whose low bits are 16 consecutive
// ql bytes and high bits 16 consecutive qh bytes, read as words (a warp's lanes read
// consecutive words; see matmul.wgsl).
const PARTS: u32 = 16u;

fn block_dot(b: u32, a: u32, g: u32) -> f32 {
    let h = g / 8u;
    let r = (g % 8u) * 16u;
    let k = r / 32u;
    let lo_at = b + 64u * h + r % 32u + 32u * (k % 2u);
    let hi_at = b + 128u + 32u * h + r % 32u;
    let lo_shift = select(0u, 4u, k >= 2u);
    var s = 0i;
    for (var j = 0u; j < 4u; j++) {
        let ql = w_word(lo_at + 4u * j);
        let qh = w_word(hi_at + 4u * j);
        let y = xq[a + 1u + 4u * g + j];
        for (var t = 0u; t < 4u; t++) {
            let lo = (ql >> (8u * t + lo_shift)) & 15u;
            let hi = (qh >> (8u * t + 2u * k)) & 3u;
            s += (i32(lo | (hi << 4u)) - 32) * i8_of(y, t);
        }
    }
    return bitcast<f32>(xq[a]) * f16_bits(w_u16(b + 208u)) * f32(s * q6_scale(b, g));
}
