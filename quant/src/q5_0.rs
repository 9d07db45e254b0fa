//! Q5_0: 32 values per block, f16 scale, 32 high bits (u32, little-endian) and 16 bytes of low
//! nibbles; value = (q - 16) * d. Dots against Q8_0 activations.

use crate::common::*;
use bytemuck::{Pod, Zeroable};
use half::f16;

pub const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    /// Bit j is bit 4 of value j (a little-endian u32 in ggml; bytes here to avoid padding).
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
pub const BLOCK_BYTES: usize = 22;

/// How [`crate::Layout::Interleaved8`] packs a column of eight blocks: the eight scales, the
/// eight `qh` words bit-transposed for the nibble vectors ([`Pack::HighBits`]), then the
/// nibble bytes in 4-byte groups.
pub(crate) const PACK: &[Field] = &[SCALE, Field::high_bits(2), Field::dwords(6, 16)];

/// Quantize one block; without weights byte-exact with ggml's reference / gguf-py.
pub fn quantize_block(x: &[f32], imatrix: Option<&[f32]>) -> BlockQ5_0 {
    let mut l = [0i32; QK];
    let d = match imatrix {
        None => {
            let d = crate::q4_0::signed_absmax(x) / -16.0;
            let id = if d == 0.0 { 0.0 } else { 1.0 / d };
            for (q, &v) in l.iter_mut().zip(x) {
                *q = trunc_level(v * id + 16.5).min(31) as i32;
            }
            d
        }
        Some(qw) => {
            let mut w = [0.0f32; QK];
            element_weights(x, qw, sigma2(x), &mut w);
            let d = search_scale_signed(x, &w, -16, 15, &mut l);
            l.iter_mut().for_each(|q| *q += 16);
            d
        }
    };
    encode(f16::from_f32(d), &l)
}

/// A block from its scale and levels (`0..=31`, value = (l − 16)·d).
pub(crate) fn encode(d: f16, l: &[i32; QK]) -> BlockQ5_0 {
    let mut qh = 0u32;
    for (j, &q) in l.iter().enumerate() {
        qh |= ((q as u32 >> 4) & 1) << j;
    }
    let mut b = BlockQ5_0 {
        d,
        qh: qh.to_le_bytes(),
        qs: [0; 16],
    };
    crate::q4_0::pack_nibbles(l, &mut b.qs);
    b
}

pub fn quantize(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    for (i, (x, out)) in src
        .chunks_exact(QK)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let w = imatrix.map(|m| &m[i * QK..(i + 1) * QK]);
        out.copy_from_slice(bytemuck::bytes_of(&quantize_block(x, w)));
    }
}

#[inline]
fn values(b: &[u8]) -> [i32; QK] {
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let mut v = [0i32; QK];
    for j in 0..QK / 2 {
        let q = b[6 + j];
        v[j] = ((q & 0x0F) as u32 | ((qh >> j) & 1) << 4) as i32 - 16;
        v[j + 16] = ((q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4) as i32 - 16;
    }
    v
}

pub fn dequantize_scalar(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (o, q) in y.iter_mut().zip(values(b)) {
            *o = q as f32 * d;
        }
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    let nb = src.len() / BLOCK_BYTES;
    assert!(
        dst.len() >= nb * QK,
        "q5_0 dequantize: {nb} blocks need {} outputs, got {}",
        nb * QK,
        dst.len()
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2/FMA/F16C detected at run time; the kernel writes nb·QK outputs (asserted above).
        unsafe { avx2::dequantize(src, dst) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if has_neon() {
        // SAFETY: NEON detected at run time; the kernel writes nb·QK outputs (asserted above).
        unsafe { neon::dequantize(src, dst) };
        return;
    }
    dequantize_scalar(src, dst)
}

/// Q5_0 weights · Q8_0 activations.
pub fn vec_dot_scalar(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(crate::q8_0::BLOCK_BYTES))
    {
        let isum: i32 = values(bw)
            .iter()
            .zip(&ba[2..])
            .map(|(&q, &y)| q * (y as i8) as i32)
            .sum();
        sum += isum as f32 * (f16_at(bw, 0) * f16_at(ba, 0));
    }
    sum
}

pub fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
    let nb = w.len() / BLOCK_BYTES;
    assert!(
        a.len() >= nb * crate::q8_0::BLOCK_BYTES,
        "q5_0 vec_dot: {nb} weight blocks need {} activation bytes, got {}",
        nb * crate::q8_0::BLOCK_BYTES,
        a.len()
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2/FMA/F16C detected at run time; the kernel reads nb blocks of `w` and of `a` (asserted above).
        return unsafe { avx2::vec_dot(w, a) };
    }
    #[cfg(target_arch = "aarch64")]
    if has_neon() {
        // SAFETY: NEON detected at run time; the kernel reads nb blocks of `w` and of `a`
        // (asserted above).
        return unsafe { neon::vec_dot(w, a) };
    }
    vec_dot_scalar(w, a)
}

/// `out[r] = w_r · a` for consecutive rows of `row_bytes` bytes against one Q8_0 activation:
/// eight rows at a time through a kernel that transposes the rows' nibbles and fifth bits so
/// each row sums in its own lane (see `q4_0::vec_dot_rows`), the rest row by row; on AVX-512
/// groups of row-major rows through [`crate::nib4`]'s kernel (the same bits). `prep`, when
/// given, is `a` unpacked by [`crate::q8_0::PreparedQ8::new`], `lanes` made from it by
/// [`crate::nib4::Lanes::from_q8_0`]. `il`: whole eight-row groups block-interleaved (see
/// `q4_0::vec_dot_rows`).
pub fn vec_dot_rows(
    w: &[u8],
    row_bytes: usize,
    il: bool,
    a: &[u8],
    prep: Option<&crate::q8_0::PreparedQ8>,
    lanes: Option<&crate::nib4::Lanes>,
    out: &mut [f32],
) {
    let nb = check_rows("q5_0 vec_dot_rows", w, row_bytes, BLOCK_BYTES, out.len());
    let need = nb * crate::q8_0::BLOCK_BYTES;
    assert!(
        a.len() >= need,
        "q5_0 vec_dot_rows: {nb} blocks per row need {need} activation bytes, got {}",
        a.len()
    );
    // Rows the eight-row kernel took (x86 only; elsewhere every row goes one by one).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut r = 0;
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (prep, lanes);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && out.len() >= 8 && nb > 0 {
        let own;
        let prep = match prep {
            Some(p) => p,
            None => {
                own = crate::q8_0::PreparedQ8::new(&a[..need]);
                &own
            }
        };
        assert!(
            prep.blocks() >= nb,
            "q5_0 vec_dot_rows: prepared activation has {} blocks, rows need {nb}",
            prep.blocks()
        );
        let mut own_lanes = None;
        let lanes =
            crate::nib4::Lanes::for_q8_0(lanes, &mut own_lanes, il, nb, prep, "q5_0 vec_dot_rows");
        while r + 8 <= out.len() {
            let mut o = [[0f32; 8]; 1];
            let g = w[r * row_bytes..].as_ptr();
            // SAFETY: AVX2/FMA/F16C detected at run time; rows r..r+8 of nb blocks (in either
            // layout, the same byte range) lie inside `w` (asserted) and `prep` holds nb blocks
            // (asserted).
            unsafe {
                if il {
                    avx2::eight_rows::<1, true>(g, row_bytes, nb, [prep], &mut o)
                } else if let Some(l) = lanes {
                    crate::nib4::rows8::<{ crate::nib4::Q5_0 }>(g, row_bytes, nb, a, l, &mut o[0]);
                } else {
                    avx2::eight_rows::<1, false>(g, row_bytes, nb, [prep], &mut o)
                }
            };
            out[r..r + 8].copy_from_slice(&o[0]);
            r += 8;
        }
    }
    assert_il_covered(il, r, out.len(), row_bytes, "q5_0 vec_dot_rows");
    for (o, row) in out[r..]
        .iter_mut()
        .zip(w[r * row_bytes..].chunks_exact(row_bytes))
    {
        *o = vec_dot(row, a);
    }
}

/// Several activations at once (batched prefill): `out[r·acts.len() + t] = w_r · acts[t]` for
/// consecutive rows of `row_bytes` bytes, eight rows × up to four tokens per kernel call (each
/// column's 5-bit values merged once for the tokens); each entry equals [`vec_dot_rows`] for
/// that token. `preps`, when given, holds each activation unpacked by
/// [`crate::q8_0::PreparedQ8::new`]; `il` as in [`vec_dot_rows`].
pub fn vec_dot_rows_multi(
    w: &[u8],
    row_bytes: usize,
    il: bool,
    acts: &[&[u8]],
    preps: Option<&[&crate::q8_0::PreparedQ8]>,
    out: &mut [f32],
) {
    let name = "q5_0 vec_dot_rows_multi";
    crate::q8_0::prepared_rows_multi(
        name,
        w,
        row_bytes,
        BLOCK_BYTES,
        il,
        acts,
        preps,
        out,
        TOKENS_KERNEL,
        vec_dot,
    );
}

#[cfg(target_arch = "x86_64")]
const TOKENS_KERNEL: Option<crate::q8_0::TokensKernel> = Some(avx2::tokens);
#[cfg(not(target_arch = "x86_64"))]
const TOKENS_KERNEL: Option<crate::q8_0::TokensKernel> = None;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::common::x86::*;
    use std::arch::x86_64::*;
    const AB: usize = crate::q8_0::BLOCK_BYTES;

    /// Eight rows against one activation: the rows' nibble bytes transposed in 4-byte groups (as in
    /// the Q4_0 kernel), the fifth bits taken from the eight `qh` words held one per lane (byte
    /// replicated, bit masked, clamped to 0x10, or'ed in; over the packed layout, whose `qh`
    /// bits are already spread one per byte and step, a shift and a mask), unsigned 0..31
    /// values × activation with `maddubs` in two i16 halves (≤ 4·2·31·128 < 2^15 each), −16
    /// applied as 16·Σa.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must be
    /// readable for eight rows of `nb` Q5_0 blocks (`rb` bytes apart; with `PACKED`, one group
    /// in the packed-column layout of [`crate::Layout::Interleaved8`]) and each of `preps` must
    /// describe at least `nb` activation blocks.
    ///
    /// `T` tokens (batched prefill) share each column's unpacked values: with `T > 1` the
    /// eight steps' 5-bit values are merged once and every token's activation passes over
    /// them; `T = 1` (decode) merges each step where it is used.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_8rows<const T: usize, const PACKED: bool>(
        w: *const u8,
        rb: usize,
        nb: usize,
        preps: [&crate::q8_0::PreparedQ8; T],
        out: &mut [[f32; 8]; T],
    ) {
        rows_body::<false, T, PACKED>(w, rb, nb, preps, out)
    }

    /// [`vec_dot_8rows`] on AVX-512 (see [`crate::common::has_avx512`]): the fifth bits as a
    /// byte mask straight from the `qh` words (`vpshufbitqmb` for row-major rows; over the
    /// packed layout a byte test), added in as 0x10 under that mask; the high nibbles moved
    /// down by one GF(2) affine step; `vpdpbusd` summing value × activation into i32 lanes.
    /// The same exact integer sums and float steps, so the same results.
    ///
    /// # Safety
    ///
    /// As [`vec_dot_8rows`], and the CPU must support the AVX-512 features `has_avx512()`
    /// checks.
    #[target_feature(
        enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg,gfni"
    )]
    pub unsafe fn vec_dot_8rows_512<const T: usize, const PACKED: bool>(
        w: *const u8,
        rb: usize,
        nb: usize,
        preps: [&crate::q8_0::PreparedQ8; T],
        out: &mut [[f32; 8]; T],
    ) {
        rows_body::<true, T, PACKED>(w, rb, nb, preps, out)
    }

    /// The body of [`vec_dot_8rows`] (`VNNI` false) and [`vec_dot_8rows_512`] (true).
    ///
    /// # Safety
    ///
    /// As [`vec_dot_8rows`]; inlined into a caller with the features `VNNI` needs.
    #[inline(always)]
    unsafe fn rows_body<const VNNI: bool, const T: usize, const PACKED: bool>(
        w: *const u8,
        rb: usize,
        nb: usize,
        preps: [&crate::q8_0::PreparedQ8; T],
        out: &mut [[f32; 8]; T],
    ) {
        let m4 = _mm256_set1_epi8(0x0F);
        let x10 = _mm256_set1_epi8(0x10);
        let mut acc = [_mm256_setzero_ps(); T];
        let rows: [*const u8; 8] = std::array::from_fn(|r| w.wrapping_add(r * rb));
        // Decode (one token) over row-major groups of long rows on Intel: each row hinted on
        // its own (`row_hints` says why, and why not for several tokens).
        let per_row = !PACKED && T == 1 && row_hints(rb);
        // AVX2, row-major: for a step over values v..v+3 (v = 4k, or 16 + 4k for the high
        // nibbles) the fifth bits are bits v..v+3 of qh: byte v/8 replicated over the lane's 4
        // bytes, each byte keeping one of bits 4..7 (for v mod 8 = 0, of qh shifted up by 4),
        // then clamped to 0x10 (`min`: any set bit of 0x10..0x80 gives 0x10, none gives 0).
        let rep = |byte: usize| {
            let idx: [u8; 32] = std::array::from_fn(|j| (4 * (j % 16 / 4) + byte) as u8);
            _mm256_loadu_si256(idx.as_ptr() as *const __m256i)
        };
        let reps: [__m256i; 4] = std::array::from_fn(rep);
        let bit4to7 = _mm256_set1_epi32(0x8040_2010u32 as i32);
        // AVX-512, row-major: byte i of step k's values (lane r = i / 4 holds row r) takes bit
        // 4k + i mod 4 of row r's qh, which is dword r of `qv`: bit 32·(r mod 2) + 4k + i mod 4
        // of qword r / 2, gathered into a mask by `vpshufbitqmb`.
        let bit_idx: [__m256i; 8] = std::array::from_fn(|k| {
            let idx: [u8; 32] = std::array::from_fn(|i| (32 * (i / 4 % 2) + 4 * k + i % 4) as u8);
            _mm256_loadu_si256(idx.as_ptr() as *const __m256i)
        });
        // AVX-512: bits 4..7 of each byte to bits 0..3, the rest cleared (row i of the GF(2)
        // matrix, byte 7 - i, picks the source bit of result bit i).
        let high = _mm256_set1_epi64x(0x1020_4080_0000_0000);
        let sh = row_shuffles();
        for b in 0..nb {
            // Both layouts keep a group in 8·rb contiguous bytes: the next group hinted as one
            // stream, or (`per_row`) each row on its own (`prefetch_group`).
            prefetch_group(w, rb, &rows, BLOCK_BYTES, b, per_row);
            let (v, qv, dw) = if PACKED {
                gather_packed(w, b)
            } else {
                gather_rows(&rows, b, sh)
            };
            // AVX2: the fifth bits as 0x10 bytes for step s (0..3 the low nibbles, 4..7 the
            // high), computed where each step uses them: built up front as an array of eight,
            // the row-major kernel's registers ran out and it spilled (2-5 % slower in cache).
            //
            // `fifth!`, `value!` and `token!` are macros, not closures: a closure here is its
            // own function without the wrapper's target features, and where LLVM left one out
            // of line every intrinsic in it became a call (the AVX2 row-major kernel ran at
            // 0.4 GB/s in cache, 60× slow, until tools/check_inlined_intrinsics.sh caught it).
            let qv4 = _mm256_slli_epi16(qv, 4);
            macro_rules! fifth {
                ($s:expr) => {{
                    let s: usize = $s;
                    if PACKED {
                        // Bit s of every byte to bit 4 (16-bit shifts: what crosses a byte
                        // boundary lands outside bit 4 and is masked off).
                        let f = match s {
                            0 => qv4,
                            1 => _mm256_slli_epi16(qv, 3),
                            2 => _mm256_slli_epi16(qv, 2),
                            3 => _mm256_slli_epi16(qv, 1),
                            4 => qv,
                            5 => _mm256_srli_epi16(qv, 1),
                            6 => _mm256_srli_epi16(qv, 2),
                            _ => _mm256_srli_epi16(qv, 3),
                        };
                        _mm256_and_si256(f, x10)
                    } else {
                        // Bits 0..3 of each qh byte moved to 4..7 (what crosses into the next
                        // byte lands in its bits 0..3, which the mask drops) for the even steps.
                        let src = if s % 2 == 0 { qv4 } else { qv };
                        let q = if s < 4 { s / 2 } else { 2 + (s - 4) / 2 };
                        let bits = _mm256_and_si256(_mm256_shuffle_epi8(src, reps[q]), bit4to7);
                        _mm256_min_epu8(bits, x10)
                    }
                }};
            }
            // Step k's unsigned 5-bit values: the low nibbles (k < 4) or the high ones, with
            // the fifth bit as 0x10.
            macro_rules! value {
                ($k:expr) => {{
                    let k: usize = $k;
                    let vk = v[k % 4];
                    if VNNI {
                        let nib = if k < 4 {
                            _mm256_and_si256(vk, m4)
                        } else {
                            _mm256_gf2p8affine_epi64_epi8::<0>(vk, high)
                        };
                        let bit = if PACKED {
                            _mm256_test_epi8_mask(qv, _mm256_set1_epi8(1 << k))
                        } else {
                            _mm256_bitshuffle_epi64_mask(qv, bit_idx[k])
                        };
                        _mm256_mask_add_epi8(nib, bit, nib, x10)
                    } else {
                        let nib = if k < 4 { vk } else { _mm256_srli_epi16(vk, 4) };
                        _mm256_or_si256(_mm256_and_si256(nib, m4), fifth!(k))
                    }
                }};
            }
            // Token t's block sum against the eight steps (step k's values `$val`), scaled
            // into acc[t]: each row in its own lane, −16·Σa for the offset.
            macro_rules! token {
                ($t:expr, |$k:ident| $val:expr) => {{
                    let t: usize = $t;
                    let prep = preps[t];
                    let ab = prep.qs.as_ptr().add(b * 32) as *const i32;
                    let (mut slo, mut shi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                    for i in 0..4 {
                        let alo = _mm256_set1_epi32(std::ptr::read_unaligned(ab.add(i)));
                        let ahi = _mm256_set1_epi32(std::ptr::read_unaligned(ab.add(4 + i)));
                        let lo = {
                            let $k = i;
                            $val
                        };
                        let hi = {
                            let $k = 4 + i;
                            $val
                        };
                        slo = u8i8_acc::<VNNI>(slo, lo, alo);
                        shi = u8i8_acc::<VNNI>(shi, hi, ahi);
                    }
                    let isum = _mm256_sub_epi32(
                        _mm256_add_epi32(u8i8_total::<VNNI>(slo), u8i8_total::<VNNI>(shi)),
                        _mm256_set1_epi32(16 * *prep.sum.get_unchecked(b)),
                    );
                    let d = _mm256_mul_ps(dw, _mm256_set1_ps(*prep.d.get_unchecked(b)));
                    acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum), acc[t]);
                }};
            }
            if T == 1 {
                token!(0, |k| value!(k));
            } else {
                let mut merged = [_mm256_setzero_si256(); 8];
                for (k, m) in merged.iter_mut().enumerate() {
                    *m = value!(k);
                }
                for t in 0..T {
                    token!(t, |k| merged[k]);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(o.as_mut_ptr(), a);
        }
    }

    /// The shuffles [`gather_rows`] takes.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn row_shuffles() -> [__m256i; 2] {
        let z = -128i8;
        let a: [i8; 16] = [2, 3, 4, 5, 10, 11, 12, 13, 0, 1, 8, 9, z, z, z, z];
        let b: [i8; 16] = [2, 3, 4, 5, 10, 11, 12, 13, z, z, z, z, 0, 1, 8, 9];
        let v = |t: [i8; 16]| _mm_loadu_si128(t.as_ptr() as *const __m128i);
        [
            _mm256_broadcastsi128_si256(v(a)),
            _mm256_broadcastsi128_si256(v(b)),
        ]
    }

    /// Block `b` of eight row-major rows: the nibble bytes transposed in 4-byte groups (lane
    /// `r` row `r`'s, as `transpose16_8rows` gives them), the rows' `qh` words (dword `r` row
    /// `r`'s) and their scales. The first 8 bytes of each row's block (d, qh, two nibble bytes)
    /// are loaded two rows to a lane, `pa` rows 0, 1 | 4, 5 and `pb` rows 2, 3 | 6, 7; the
    /// shuffles `sh` ([`row_shuffles`]) put the two qh words in bytes 0..7 and the two d in
    /// bytes 8..11 (a) or 12..15 (b). (Gathering them with scalar loads, as the Q4_0 kernel
    /// gathers its d, measured 10-15 % slower on Zen 3.)
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); each of
    /// `rows` must be readable for `b + 1` Q5_0 blocks.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn gather_rows(
        rows: &[*const u8; 8],
        b: usize,
        sh: [__m256i; 2],
    ) -> ([__m256i; 4], __m256i, __m256) {
        let off = b * BLOCK_BYTES;
        let ld = |r: usize| _mm_loadl_epi64(rows[r].add(off) as *const __m128i);
        let two = |r: usize| _mm_unpacklo_epi64(ld(r), ld(r + 1));
        let lanes =
            |lo: __m128i, hi: __m128i| _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
        let pa = _mm256_shuffle_epi8(lanes(two(0), two(4)), sh[0]);
        let pb = _mm256_shuffle_epi8(lanes(two(2), two(6)), sh[1]);
        // qh of rows 0..3 in the low lane, 4..7 in the high lane, matching the nibbles.
        let qv = _mm256_unpacklo_epi64(pa, pb);
        // d of rows 0..3 in qword 1, of rows 4..7 in qword 3.
        let d = _mm256_permute4x64_epi64(_mm256_or_si256(pa, pb), 0b1101);
        (
            transpose16_8rows(rows, off + 6),
            qv,
            _mm256_cvtph_ps(_mm256_castsi256_si128(d)),
        )
    }

    /// Column `b` of a packed group: the nibble vectors, the rows' `qh` bits spread one per
    /// byte and step (`Pack::HighBits`: bit s of byte i is the fifth bit of step s's value i)
    /// and the eight scales.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must be
    /// readable for `b + 1` packed columns of eight Q5_0 blocks.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn gather_packed(w: *const u8, b: usize) -> ([__m256i; 4], __m256i, __m256) {
        let col = w.add(b * 8 * BLOCK_BYTES);
        (
            std::array::from_fn(|k| _mm256_loadu_si256(col.add(48 + 32 * k) as *const __m256i)),
            _mm256_loadu_si256(col.add(16) as *const __m256i),
            _mm256_cvtph_ps(_mm_loadu_si128(col as *const __m128i)),
        )
    }

    /// [`vec_dot_8rows`], or its AVX-512 twin [`vec_dot_8rows_512`] where the CPU has it: the
    /// same sums, bit for bit.
    ///
    /// # Safety
    ///
    /// As [`vec_dot_8rows`].
    #[inline]
    pub(super) unsafe fn eight_rows<const T: usize, const PACKED: bool>(
        w: *const u8,
        rb: usize,
        nb: usize,
        preps: [&crate::q8_0::PreparedQ8; T],
        out: &mut [[f32; 8]; T],
    ) {
        if has_avx512() {
            vec_dot_8rows_512::<T, PACKED>(w, rb, nb, preps, out)
        } else {
            vec_dot_8rows::<T, PACKED>(w, rb, nb, preps, out)
        }
    }

    /// [`crate::q8_0::TokensKernel`] over [`eight_rows`].
    ///
    /// # Safety
    ///
    /// As [`crate::q8_0::TokensKernel`].
    pub unsafe fn tokens(
        il: bool,
        w: *const u8,
        rb: usize,
        nb: usize,
        preps: &[&crate::q8_0::PreparedQ8],
        out: &mut [[f32; 8]; 4],
    ) {
        per_token_count!(*preps, out, |arr, o| if il {
            eight_rows::<_, true>(w, rb, nb, arr, o)
        } else {
            eight_rows::<_, false>(w, rb, nb, arr, o)
        });
    }

    /// The 32 unsigned 5-bit values of a block.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `p` must point
    /// to one readable Q5_0 block (22 bytes).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_q(p: *const u8) -> __m256i {
        let qh = (p.add(2) as *const u32).read_unaligned();
        let hi = _mm256_and_si256(bits_to_bytes(u32::from_le(qh)), _mm256_set1_epi8(0x10));
        _mm256_or_si256(unpack_nibbles_16(p.add(6)), hi)
    }

    /// Four blocks per iteration, four accumulators, weights prefetched ahead.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `a` must hold
    /// at least as many activation blocks as `w` holds whole weight blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        let nb = w.len() / BLOCK_BYTES;
        let (wp, ap) = (w.as_ptr(), a.as_ptr());
        let sixteen = _mm256_set1_epi8(16);
        let mut acc = [_mm256_setzero_ps(); 4];
        /// # Safety
        ///
        /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `wb` must
        /// point to one readable weight block and `ab` to one readable activation block.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn block(wb: *const u8, ab: *const u8, sixteen: __m256i, acc: &mut __m256) {
            let q = _mm256_sub_epi8(load_q(wb), sixteen);
            let p = dot_i8_ps(q, _mm256_loadu_si256(ab.add(2) as *const __m256i));
            let d = _mm256_set1_ps(f16_load(wb) * f16_load(ab));
            *acc = _mm256_fmadd_ps(d, p, *acc);
        }
        let mut i = 0;
        while i + 4 <= nb {
            let (w0, a0) = (wp.add(i * BLOCK_BYTES), ap.add(i * AB));
            prefetch(w0, 384);
            prefetch(w0, 448);
            for (k, acc_k) in acc.iter_mut().enumerate() {
                block(w0.add(k * BLOCK_BYTES), a0.add(k * AB), sixteen, acc_k);
            }
            i += 4;
        }
        while i < nb {
            block(
                wp.add(i * BLOCK_BYTES),
                ap.add(i * AB),
                sixteen,
                &mut acc[0],
            );
            i += 1;
        }
        hsum_ps(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }

    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `dst` must hold
    /// at least one block's worth of values per whole block of `src`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dequantize(src: &[u8], dst: &mut [f32]) {
        let nb = src.len() / BLOCK_BYTES;
        for i in 0..nb {
            let p = src.as_ptr().add(i * BLOCK_BYTES);
            let d = _mm256_set1_ps(f16_load(p));
            let q = _mm256_sub_epi8(load_q(p), _mm256_set1_epi8(16));
            crate::q4_0::store_i8x32_scaled(q, d, dst.as_mut_ptr().add(i * QK));
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use crate::common::neon::*;
    use std::arch::aarch64::*;

    /// A block's 32 values `q − 16` as signed bytes, in order: the nibbles with the fifth bits
    /// of `qh` (bit j for value j) or'ed in as 0x10.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `wb` must point to one
    /// readable Q5_0 block.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn values(wb: *const u8) -> [int8x16_t; 2] {
        let qh = (wb.add(2) as *const u32).read_unaligned().to_le();
        let (lo, hi) = nibbles(wb.add(6));
        let sixteen = vdupq_n_s8(16);
        let v = |n: uint8x16_t, bits: u32| {
            let q = vorrq_u8(n, bits_to_0x10(bits as u16));
            vsubq_s8(vreinterpretq_s8_u8(q), sixteen)
        };
        [v(lo, qh), v(hi, qh >> 16)]
    }

    /// Bit-exact with [`super::vec_dot_scalar`]: each block's integer sum exact, then
    /// `sum += isum·(d_w·d_a)` block after block, as the reference does.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `a` must hold at least as
    /// many activation blocks as `w` holds whole weight blocks.
    #[target_feature(enable = "neon")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        scaled_blocks_dot(w, a, BLOCK_BYTES, |wb| values(wb))
    }

    /// Bit-exact with [`super::dequantize_scalar`] (`(q − 16)·d`, one rounding each).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `dst` must hold at least
    /// one block's worth of values per whole block of `src`.
    #[target_feature(enable = "neon")]
    pub unsafe fn dequantize(src: &[u8], dst: &mut [f32]) {
        scaled_blocks_dequantize(src, dst, BLOCK_BYTES, |p| values(p))
    }
}
