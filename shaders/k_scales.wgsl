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
