//! Q5_K: like Q4_K with a fifth bit per value in 32 bytes `qh` (bit j of `qh[k]` belongs to
//! sub-block j, position k). f16 d, f16 dmin, 12 scale bytes, 32 qh, 128 qs.
//! value = d*sc*q - dmin*m. Dots against Q8_K activations.

use crate::common::*;
use crate::q4_k::{pack_scales, quantize_superblock, unpack_scales};
use crate::q8_k;
use crate::types::QK_K;
use bytemuck::{Pod, Zeroable};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_K>() == 176);
pub const BLOCK_BYTES: usize = 176;

pub fn quantize_block(x: &[f32], imatrix: Option<&[f32]>) -> BlockQ5_K {
    let (d, dmin, ls, lm, l) = quantize_superblock(x, imatrix, 31);
    encode(d, dmin, &ls, &lm, &l)
}

/// A block from its steps, 6-bit codes and levels (`0..=31`).
pub(crate) fn encode(d: f16, dmin: f16, ls: &[u8; 8], lm: &[u8; 8], l: &[i32]) -> BlockQ5_K {
    let mut b = BlockQ5_K {
        d,
        dmin,
        scales: pack_scales(ls, lm),
        qh: [0; 32],
        qs: [0; 128],
    };
    for c in 0..4 {
        for k in 0..32 {
            let (q1, q2) = (l[64 * c + k] as u8, l[64 * c + 32 + k] as u8);
            b.qs[32 * c + k] = (q1 & 0x0F) | ((q2 & 0x0F) << 4);
            b.qh[k] |= ((q1 >> 4) << (2 * c)) | ((q2 >> 4) << (2 * c + 1));
        }
    }
    b
}

pub fn quantize(src: &[f32], dst: &mut [u8], imatrix: Option<&[f32]>) {
    for (i, (x, out)) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let w = imatrix.map(|m| &m[i * QK_K..(i + 1) * QK_K]);
        out.copy_from_slice(bytemuck::bytes_of(&quantize_block(x, w)));
    }
}

/// The 5-bit value at sub-block `j`, position `k`.
#[inline]
fn value(b: &[u8], j: usize, k: usize) -> u8 {
    let q = b[48 + 32 * (j / 2) + k];
    let lo = if j & 1 == 0 { q & 0x0F } else { q >> 4 };
    lo | (((b[16 + k] >> j) & 1) << 4)
}

pub fn dequantize_scalar(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let (sc, m) = unpack_scales(&b[4..16]);
        for j in 0..8 {
            let (dl, ml) = (d * sc[j] as f32, dmin * m[j] as f32);
            for k in 0..32 {
                y[32 * j + k] = dl * value(b, j, k) as f32 - ml;
            }
        }
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    let nb = src.len() / BLOCK_BYTES;
    assert!(
        dst.len() >= nb * QK_K,
        "q5_k dequantize: {nb} blocks need {} outputs, got {}",
        nb * QK_K,
        dst.len()
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2/FMA/F16C detected at run time; the kernel writes nb·QK_K outputs (asserted above).
        unsafe { avx2::dequantize(src, dst) };
        return;
    }
    #[cfg(target_arch = "aarch64")]
    if has_neon() {
        // SAFETY: NEON detected at run time; the kernel writes nb·QK_K outputs (asserted
        // above).
        unsafe { neon::dequantize(src, dst) };
        return;
    }
    dequantize_scalar(src, dst)
}

/// Q5_K weights · Q8_K activations.
pub fn vec_dot_scalar(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(q8_k::BLOCK_BYTES))
    {
        let (sc, m) = unpack_scales(&bw[4..16]);
        let mut summ = 0i32;
        for j in 0..8 {
            summ += m[j] as i32 * (q8_k::bsum(ba, 2 * j) + q8_k::bsum(ba, 2 * j + 1));
        }
        let y = &ba[q8_k::QS_OFF..];
        let mut isum = 0i32;
        for j in 0..8 {
            let s: i32 = (0..32)
                .map(|k| value(bw, j, k) as i32 * (y[32 * j + k] as i8) as i32)
                .sum();
            isum += s * sc[j] as i32;
        }
        let da = q8_k::d_of(ba);
        sum += da * f16_at(bw, 0) * isum as f32 - da * f16_at(bw, 2) * summ as f32;
    }
    sum
}

/// `out[r] = w_r · a` for rows `rb` bytes long, each bit-identical to [`vec_dot`] of the row:
/// row-major (`il` false), eight rows at a time through one kernel when rows are long enough
/// ([`crate::common::k_eight_rows_from`]), the rest row by row; `il`, whole groups of eight in
/// [`crate::Layout::Interleaved8`] (see [`PACK`]) through the same kernel over the packed
/// columns.
pub(crate) fn vec_dot_rows(w: &[u8], rb: usize, il: bool, a: &[u8], out: &mut [f32]) {
    let name = "q5_k vec_dot_rows";
    let ty = crate::GgmlType::Q5_K;
    k_rows_by_eight(name, ty, w, rb, il, a, out, EIGHT_ROWS, vec_dot);
}

/// A packed column of eight Q5_K rows: block b of each, whole, one after another (as Q4_K's).
pub(crate) const PACK: &[Field] = &[Field::rows(0, BLOCK_BYTES)];

/// Several activations at once (batched prefill) over row-major rows `rb` bytes long:
/// `out[r·acts.len() + t] = w_r · acts[t]`, each bit-identical to [`vec_dot`]; with AVX2 eight
/// tokens at a time share each unpacked super-block ([`k_multi8`]).
pub(crate) fn vec_dot_rows_multi(w: &[u8], rb: usize, acts: &[&[u8]], out: &mut [f32]) {
    let name = "q5_k vec_dot_rows_multi";
    k_rows_multi8(name, w, rb, BLOCK_BYTES, acts, out, EIGHT_TOKENS, vec_dot);
}

#[cfg(target_arch = "x86_64")]
const EIGHT_TOKENS: Option<EightTokens> = Some(avx2::vec_dot_multi8);
#[cfg(not(target_arch = "x86_64"))]
const EIGHT_TOKENS: Option<EightTokens> = None;

#[cfg(target_arch = "x86_64")]
const EIGHT_ROWS: [Option<EightRows>; 2] = [
    Some(avx2::vec_dot_8rows::<false>),
    Some(avx2::vec_dot_8rows::<true>),
];
#[cfg(not(target_arch = "x86_64"))]
const EIGHT_ROWS: [Option<EightRows>; 2] = [None, None];

pub fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
    let nb = w.len() / BLOCK_BYTES;
    assert!(
        a.len() >= nb * crate::q8_k::BLOCK_BYTES,
        "q5_k vec_dot: {nb} weight blocks need {} activation bytes, got {}",
        nb * crate::q8_k::BLOCK_BYTES,
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::common::x86::*;
    use std::arch::x86_64::*;

    /// The 32 five-bit values of sub-blocks 2c and 2c+1.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `b` must point
    /// to one readable Q5_K block and `c` must be below 4.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_pair(b: *const u8, qh: __m256i, c: usize) -> (__m256i, __m256i) {
        let m4 = _mm256_set1_epi8(0x0F);
        let one = _mm256_set1_epi8(1);
        let q = _mm256_loadu_si256(b.add(48 + 32 * c) as *const __m256i);
        let sh0 = _mm_cvtsi32_si128((2 * c) as i32);
        let sh1 = _mm_cvtsi32_si128((2 * c + 1) as i32);
        let h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, sh0), one), 4);
        let h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, sh1), one), 4);
        let lo = _mm256_or_si256(_mm256_and_si256(q, m4), h0);
        let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1);
        (lo, hi)
    }

    /// Eight rows (`nb` blocks each; row-major, back to back, or with `PACKED` one group of
    /// [`crate::Layout::Interleaved8`]) against one Q8_K activation, lane r for row r
    /// ([`k_8rows`], shared with Q4_K): per super-block the eight rows' integer sums
    /// ([`int_sums`]) and the float step `d_a·d·isum − d_a·dmin·summ` in eight lanes,
    /// accumulated in super-block order from 0, so every row is bit-identical to [`vec_dot`];
    /// each activation block is read once for the eight rows (row-major, the next group of
    /// eight rows prefetched as one stream unless `intel_cpu()`).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must
    /// hold `8·nb` readable blocks and `a` `nb` readable Q8_K blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_8rows<const PACKED: bool>(
        w: *const u8,
        nb: usize,
        a: *const u8,
        out: &mut [f32; 8],
    ) {
        if has_avx512() {
            return vec_dot_8rows_512::<PACKED>(w, nb, a, out);
        }
        let _frame = align_frame();
        k_8rows::<PACKED>(w, nb, BLOCK_BYTES, a, out, |bp, ahead, ap, bs2| {
            int_sums(bp, ahead, ap, bs2)
        })
    }

    /// [`vec_dot_8rows`] on AVX-512 ([`int_sums_512`] for each row's block: the same exact
    /// sums and float steps, so the same bits).
    ///
    /// # Safety
    ///
    /// As [`vec_dot_8rows`], and the CPU must support the AVX-512 features `has_avx512()`
    /// checks.
    #[target_feature(
        enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg,gfni"
    )]
    unsafe fn vec_dot_8rows_512<const PACKED: bool>(
        w: *const u8,
        nb: usize,
        a: *const u8,
        out: &mut [f32; 8],
    ) {
        let _frame = align_frame();
        k_8rows::<PACKED>(w, nb, BLOCK_BYTES, a, out, |bp, ahead, ap, bs2| {
            int_sums_512(bp, ahead, ap, bs2)
        })
    }

    /// Pair `c` (sub-blocks `2c` and `2c + 1`, 64 values) of the Q5_K block at `bp` as one
    /// 512-bit vector of unsigned bytes: the pair's 32 nibble bytes in both halves, one GF(2)
    /// affine with a matrix per half takes the low nibbles (sub-block `2c`) into the low half
    /// and the high ones into the high; a second one moves `qh`'s bit `2c` (low half) or
    /// `2c + 1` (high) of each byte to bit 4; an `or` joins them.
    ///
    /// # Safety
    ///
    /// Inlined into a caller with the AVX-512 features `has_avx512()` checks; `bp` must point
    /// to one readable Q5_K block and `c` be below 4.
    #[inline(always)]
    unsafe fn pair_512(bp: *const u8, c: usize) -> __m512i {
        // GF(2) affine matrices (row i of the matrix, byte 7 - i, picks the source bits of
        // result bit i): the low nibble kept, the high nibble moved down, bit `s` to bit 4.
        const LOW: i64 = 0x0102_0408_0000_0000;
        const HIGH: i64 = 0x1020_4080_0000_0000;
        const fn to_bit4(s: usize) -> i64 {
            (1i64 << s) << 24
        }
        // (Macros, not closures: a closure is a function of its own without the caller's
        // target features, and LLVM may leave it out of line.)
        macro_rules! halves {
            ($a:expr, $b:expr) => {
                _mm512_inserti64x4::<1>(_mm512_set1_epi64($a), _mm256_set1_epi64x($b))
            };
        }
        let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(bp.add(16) as *const __m256i));
        let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(bp.add(48 + 32 * c) as *const __m256i));
        _mm512_or_si512(
            _mm512_gf2p8affine_epi64_epi8::<0>(q, halves!(LOW, HIGH)),
            _mm512_gf2p8affine_epi64_epi8::<0>(qh, halves!(to_bit4(2 * c), to_bit4(2 * c + 1))),
        )
    }

    /// [`int_sums`] of the block at `bp` (hinting `ahead` bytes on) on AVX-512: its four pairs
    /// of sub-blocks as vectors ([`pair_512`]) through [`k_int_sums_512`]; the lane totals are
    /// the same exact `Σ sc·q·y` and `Σ m·bsum`.
    ///
    /// # Safety
    ///
    /// Inlined into a caller with the AVX-512 features `has_avx512()` checks; `bp` must point
    /// to one readable Q5_K block and `ap` to one readable Q8_K block.
    #[inline(always)]
    unsafe fn int_sums_512(
        bp: *const u8,
        ahead: usize,
        ap: *const u8,
        bs2: __m256i,
    ) -> (__m256i, __m256i) {
        let v = [
            pair_512(bp, 0),
            pair_512(bp, 1),
            pair_512(bp, 2),
            pair_512(bp, 3),
        ];
        k_int_sums_512(bp, ahead, ap, bs2, v)
    }

    /// One row against eight activations ([`k_multi8`] over the 5-bit values).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must be
    /// readable for `nb` blocks and each of `a` for `nb` Q8_K blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_multi8(w: *const u8, nb: usize, a: &[*const u8; 8]) -> [f32; 8] {
        if has_avx512() {
            return vec_dot_multi8_512(w, nb, a);
        }
        let _frame = align_frame();
        k_multi8(w, nb, BLOCK_BYTES, a, |bp, c| {
            load_pair(bp, _mm256_loadu_si256(bp.add(16) as *const __m256i), c)
        })
    }

    /// [`vec_dot_multi8`] on AVX-512 ([`k_multi8_512!`] over [`pair_512`]).
    ///
    /// # Safety
    ///
    /// As [`vec_dot_multi8`], and the CPU must support the AVX-512 features `has_avx512()`
    /// checks.
    #[target_feature(
        enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg,gfni"
    )]
    unsafe fn vec_dot_multi8_512(w: *const u8, nb: usize, a: &[*const u8; 8]) -> [f32; 8] {
        let _frame = align_frame();
        k_multi8_512!(w, nb, BLOCK_BYTES, a, pair_512)
    }

    /// One super-block's exact integer sums against one Q8_K block, in eight lanes each (their
    /// lane totals are `Σ sc·q·y` and `Σ m·bsum`); the weights `ahead` bytes past the block are
    /// hinted into L1.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `bp` must
    /// point to one readable Q5_K block and `ap` to one readable Q8_K block.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn int_sums(
        bp: *const u8,
        ahead: usize,
        ap: *const u8,
        bs2: __m256i,
    ) -> (__m256i, __m256i) {
        prefetch(bp, ahead);
        prefetch(bp, ahead + 64);
        prefetch(bp, ahead + 128);
        let sm = k_scales_mins(bp.add(4));
        let summ_v = _mm256_madd_epi16(sm, bs2);
        let scl = _mm256_permute2x128_si256(sm, sm, 0x00);
        let yp = ap.add(q8_k::QS_OFF);
        let qh = _mm256_loadu_si256(bp.add(16) as *const __m256i);
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_setzero_si256();
        macro_rules! pair {
            ($c:literal, $j0:literal, $j1:literal) => {{
                let (lo, hi) = load_pair(bp, qh, $c);
                let y0 = _mm256_loadu_si256(yp.add(64 * $c) as *const __m256i);
                let y1 = _mm256_loadu_si256(yp.add(64 * $c + 32) as *const __m256i);
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), bcast_i16::<$j0>(scl));
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), bcast_i16::<$j1>(scl));
                acc0 = _mm256_add_epi32(acc0, p0);
                acc1 = _mm256_add_epi32(acc1, p1);
            }};
        }
        pair!(0, 0, 1);
        pair!(1, 2, 3);
        pair!(2, 4, 5);
        pair!(3, 6, 7);
        (_mm256_add_epi32(acc0, acc1), summ_v)
    }

    /// As Q4_K's kernel, with the fifth bits merged in per pair of sub-blocks: [`k_vec_dot`]
    /// over [`int_sums`] (bit-identical to the scalar reference).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `a` must hold
    /// at least as many activation blocks as `w` holds whole weight blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        if has_avx512() {
            return vec_dot_512(w, a);
        }
        let _frame = align_frame();
        let nb = w.len() / BLOCK_BYTES;
        k_vec_dot(w.as_ptr(), a.as_ptr(), nb, BLOCK_BYTES, |bp, ap| {
            int_sums(bp, 2 * BLOCK_BYTES, ap, k_bsum_pairs(ap))
        })
    }

    /// [`vec_dot`] on AVX-512 ([`int_sums_512`]: the same exact sums, so the same bits).
    ///
    /// # Safety
    ///
    /// As [`vec_dot`], and the CPU must support the AVX-512 features `has_avx512()` checks.
    #[target_feature(
        enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg,gfni"
    )]
    unsafe fn vec_dot_512(w: &[u8], a: &[u8]) -> f32 {
        let _frame = align_frame();
        let nb = w.len() / BLOCK_BYTES;
        k_vec_dot(w.as_ptr(), a.as_ptr(), nb, BLOCK_BYTES, |bp, ap| {
            int_sums_512(bp, 2 * BLOCK_BYTES, ap, k_bsum_pairs(ap))
        })
    }

    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `dst` must hold
    /// at least one block's worth of values per whole block of `src`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dequantize(src: &[u8], dst: &mut [f32]) {
        let nb = src.len() / BLOCK_BYTES;
        for i in 0..nb {
            let b = &src[i * BLOCK_BYTES..(i + 1) * BLOCK_BYTES];
            let d = f16_load(b.as_ptr());
            let dmin = f16_load(b.as_ptr().add(2));
            let (sc, m) = unpack_scales(&b[4..16]);
            let qh = _mm256_loadu_si256(b.as_ptr().add(16) as *const __m256i);
            let o = dst.as_mut_ptr().add(i * QK_K);
            for c in 0..4 {
                let (lo, hi) = load_pair(b.as_ptr(), qh, c);
                for (h, v) in [lo, hi].into_iter().enumerate() {
                    let j = 2 * c + h;
                    let dl = _mm256_set1_ps(d * sc[j] as f32);
                    let ml = _mm256_set1_ps(dmin * m[j] as f32);
                    crate::q4_k::store_u8x32_affine(v, dl, ml, o.add(32 * j));
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use crate::common::neon::*;
    use std::arch::aarch64::*;

    /// The 32 five-bit values of sub-block `j` (`j` < 8), in two halves of 16: nibbles from
    /// `qs` (low for even `j`, high for odd), bit `j` of each `qh` byte as 0x10.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `b` must point to one
    /// readable Q5_K block.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn values(b: *const u8, j: usize) -> [uint8x16_t; 2] {
        let bit = vdupq_n_u8(1 << j);
        let x10 = vdupq_n_u8(0x10);
        std::array::from_fn(|h| {
            let (lo, hi) = nibbles(b.add(48 + 32 * (j / 2) + 16 * h));
            let n = if j % 2 == 0 { lo } else { hi };
            let qh = vld1q_u8(b.add(16 + 16 * h));
            vorrq_u8(n, vandq_u8(vtstq_u8(qh, bit), x10))
        })
    }

    /// Bit-exact with [`super::vec_dot_scalar`]: Q4_K's [`crate::q4_k::neon_k_vec_dot`] over
    /// the five-bit values' exact sums.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `a` must hold at least as
    /// many Q8_K blocks as `w` holds whole weight blocks.
    #[target_feature(enable = "neon")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        crate::q4_k::neon_k_vec_dot(w, a, BLOCK_BYTES, |b, yp, sc| {
            let y = |k: usize| vld1q_s8(yp.add(16 * k) as *const i8);
            let mut acc = vdupq_n_s32(0);
            for j in 0..8 {
                let [v0, v1] = values(b, j);
                let s = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(v0), y(2 * j));
                let s = dot16(s, vreinterpretq_s8_u8(v1), y(2 * j + 1));
                acc = vmlaq_n_s32(acc, s, sc[j] as i32);
            }
            vaddvq_s32(acc)
        })
    }

    /// Bit-exact with [`super::dequantize_scalar`].
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `dst` must hold at least
    /// one block's worth of values per whole block of `src`.
    #[target_feature(enable = "neon")]
    pub unsafe fn dequantize(src: &[u8], dst: &mut [f32]) {
        let nb = src.len() / BLOCK_BYTES;
        for i in 0..nb {
            let b = &src[i * BLOCK_BYTES..(i + 1) * BLOCK_BYTES];
            let d = f16_load(b.as_ptr());
            let dmin = f16_load(b.as_ptr().add(2));
            let (sc, m) = unpack_scales(&b[4..16]);
            let o = dst.as_mut_ptr().add(i * QK_K);
            for j in 0..8 {
                let dl = vdupq_n_f32(d * sc[j] as f32);
                let ml = vdupq_n_f32(dmin * m[j] as f32);
                for (h, v) in values(b.as_ptr(), j).into_iter().enumerate() {
                    store_u8x16_affine(v, dl, ml, o.add(32 * j + 16 * h));
                }
            }
        }
    }
}
