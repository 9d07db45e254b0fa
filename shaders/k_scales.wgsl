// 6-bit scales and mins of the 8 sub-blocks of a Q4_K / Q5_K super-block (12 bytes at b + 4):
// sub-blocks 0..3 in the low 6 bits of bytes 0..3 (scales) and 4..7 (mins); sub-blocks 4..7
// split between the nibbles of bytes 8..11 and the top 2 bits of bytes 0..7.

// Scale (x) and min (y) of sub-block j.
fn scale_min(b: u32, j: u32) -> vec2<u32> {
    let s = b + 4u;
    if (j < 4u) {
        return vec2(w_byte(s + j) & 63u, w_byte(s + j + 4u) & 63u);
    }
    let hi = w_byte(s + j + 4u);
    return vec2((hi & 15u) | ((w_byte(s + j - 4u) >> 6u) << 4u),
                (hi >> 4u) | ((w_byte(s + j) >> 6u) << 4u));
}

// The float result of one part of a Q4_K / Q5_K super-block at `b` dotted with the Q8_K
// activation block at `a`: s = (Σq·y over sub-block 2c, over 2c+1, Σy over 2c, over 2c+1)
// of the part's values, scaled and offset by the two sub-blocks' scales and mins.
fn k_part(b: u32, a: u32, c: u32, s: vec4<i32>) -> f32 {
    let sm1 = scale_min(b, 2u * c);
    let sm2 = scale_min(b, 2u * c + 1u);
    let isum = s.x * i32(sm1.x) + s.y * i32(sm2.x);
    let summ = i32(sm1.y) * s.z + i32(sm2.y) * s.w;
    let da = bitcast<f32>(xq[a]);
    return da * f16_bits(w_u16(b)) * f32(isum) - da * f16_bits(w_u16(b + 2u)) * f32(summ);
}
