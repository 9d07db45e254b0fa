// Shared by every weight-type kernel: byte access into weights bound as raw u32 words.
// Weight rows are ggml blocks that need not be 4-byte aligned; every scalar read here starts
// at an even byte offset (all block sizes are even), so a u16 never straddles two words.

@group(0) @binding(1) var<storage, read> w: array<u32>;

fn w_byte(off: u32) -> u32 {
    return (w[off >> 2u] >> ((off & 3u) * 8u)) & 0xffu;
}

fn w_u16(off: u32) -> u32 {
    return (w[off >> 2u] >> ((off & 2u) * 8u)) & 0xffffu;
}

// Four bytes starting at an even offset.
fn w_word(off: u32) -> u32 {
    let i = off >> 2u;
    if ((off & 2u) == 0u) {
        return w[i];
    }
    return (w[i] >> 16u) | (w[i + 1u] << 16u);
}

fn f16_bits(bits: u32) -> f32 {
    return unpack2x16float(bits).x;
}

// Byte k (0..3) of a word as a signed 8-bit integer.
fn i8_of(word: u32, k: u32) -> i32 {
    return bitcast<i32>(word << (24u - 8u * k)) >> 24u;
}
