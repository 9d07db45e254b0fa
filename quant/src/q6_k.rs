//! Q6_K: super-blocks of 256 values in 16 groups of 16. Field order: 128 bytes `ql` (low 4
//! bits), 64 bytes `qh` (high 2 bits), 16 signed 8-bit scales, then f16 d.
//! value = d * scale * (q - 32). Dots against Q8_K activations.

use crate::common::*;
use crate::q8_k;
use crate::types::QK_K;
use bytemuck::{Pod, Zeroable};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ6_K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6_K>() == 210);
pub const BLOCK_BYTES: usize = 210;

/// Position of element `e` (0..256): (ql byte, ql shift, qh byte, qh shift).
#[inline]
fn pos(e: usize) -> (usize, u32, usize, u32) {
    let h = e / 128;
    let r = e % 128;
    let k = r / 32; // which of the four 32-runs in this half
    let l = r % 32;
    let ql = 64 * h + l + 32 * (k % 2);
    let qls = if k >= 2 { 4 } else { 0 };
    (ql, qls, 32 * h + l, 2 * k as u32)
}

pub fn quantize_block(x: &[f32], imatrix: Option<&[f32]>) -> BlockQ6_K {
    let s2 = sigma2(x);
    let mut scales = [0.0f32; 16];
    let mut l = [0i32; QK_K];
    let mut w = [0.0f32; 16];
    for g in 0..16 {
        let sub = &x[16 * g..16 * g + 16];
        match imatrix {
            Some(m) => element_weights(sub, &m[16 * g..16 * g + 16], s2, &mut w),
            None => sub.iter().zip(w.iter_mut()).for_each(|(v, o)| *o = v * v),
        }
        scales[g] = search_scale_signed(sub, &w, -32, 31, &mut l[16 * g..16 * g + 16]);
    }
    let max_scale = crate::q4_0::signed_absmax(&scales);
    let mut b = BlockQ6_K::zeroed();
    if max_scale == 0.0 || !max_scale.is_finite() {
        // All zero: q = 32 everywhere with zero scales decodes to 0.
        for e in 0..QK_K {
            let (qi, qs, hi, hs) = pos(e);
            b.ql[qi] |= (32u8 & 0x0F) << qs;
            b.qh[hi] |= (32u8 >> 4) << hs;
        }
        return b;
    }
    let iscale = -128.0 / max_scale;
    b.d = f16::from_f32(1.0 / iscale);
    let d = b.d.to_f32();
    for g in 0..16 {
        let ls = round_away(iscale * scales[g]).clamp(-128.0, 127.0) as i8;
        b.scales[g] = ls;
        let dl = d * ls as f32;
        for k in 16 * g..16 * g + 16 {
            l[k] = if dl == 0.0 {
                0
            } else {
                (round_away(x[k] / dl) as i32).clamp(-32, 31)
            };
        }
    }
    encode(b.d, b.scales, &l)
}

/// A block from its step, sixteen 8-bit sub-block scales and signed levels (`−32..=31`,
/// value = d·scale·l).
pub(crate) fn encode(d: f16, scales: [i8; 16], l: &[i32]) -> BlockQ6_K {
    let mut b = BlockQ6_K::zeroed();
    b.d = d;
    b.scales = scales;
    for (e, &li) in l.iter().enumerate() {
        let q = (li + 32) as u8;
        let (qi, qs, hi, hs) = pos(e);
        b.ql[qi] |= (q & 0x0F) << qs;
        b.qh[hi] |= (q >> 4) << hs;
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

#[inline]
fn value(b: &[u8], e: usize) -> i32 {
    let (qi, qs, hi, hs) = pos(e);
    let q = ((b[qi] >> qs) & 0x0F) | (((b[128 + hi] >> hs) & 3) << 4);
    q as i32 - 32
}

pub fn dequantize_scalar(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(b, 208);
        for g in 0..16 {
            let dl = d * (b[192 + g] as i8) as f32;
            for e in 16 * g..16 * g + 16 {
                y[e] = dl * value(b, e) as f32;
            }
        }
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    let nb = src.len() / BLOCK_BYTES;
    assert!(
        dst.len() >= nb * QK_K,
        "q6_k dequantize: {nb} blocks need {} outputs, got {}",
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

/// Q6_K weights · Q8_K activations.
pub fn vec_dot_scalar(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0.0f32;
    for (bw, ba) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(q8_k::BLOCK_BYTES))
    {
        let y = &ba[q8_k::QS_OFF..];
        let mut isum = 0i32;
        for g in 0..16 {
            let s: i32 = (16 * g..16 * g + 16)
                .map(|e| value(bw, e) * (y[e] as i8) as i32)
                .sum();
            isum += s * (bw[192 + g] as i8) as i32;
        }
        sum += q8_k::d_of(ba) * f16_at(bw, 208) * isum as f32;
    }
    sum
}

/// `out[r] = w_r · a` for rows `rb` bytes long, each bit-identical to [`vec_dot`] of the row:
/// row-major (`il` false), eight rows at a time through one kernel when rows are long enough
/// ([`crate::common::k_eight_rows_from`]), the rest row by row; `il`, whole groups of eight in
/// [`crate::Layout::Interleaved8`] (see [`PACK`]) through the same kernel over the packed
/// columns.
pub(crate) fn vec_dot_rows(w: &[u8], rb: usize, il: bool, a: &[u8], out: &mut [f32]) {
    let name = "q6_k vec_dot_rows";
    let ty = crate::GgmlType::Q6_K;
    k_rows_by_eight(name, ty, w, rb, il, a, out, EIGHT_ROWS, vec_dot);
}

/// A packed column of eight Q6_K rows: block b of each, whole, one after another (the
/// eight-row kernel reads each row's super-block as the row-major one does, from one stream).
pub(crate) const PACK: &[Field] = &[Field::rows(0, BLOCK_BYTES)];

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
        "q6_k vec_dot: {nb} weight blocks need {} activation bytes, got {}",
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

/// Several activations at once (batched prefill) over row-major rows `rb` bytes long:
/// `out[r·acts.len() + t] = w_r · acts[t]`, each bit-identical to [`vec_dot`]. With AVX2, eight
/// tokens at a time share each unpacked super-block (the 6-bit values and scales, which cost
/// more than the dot itself); the remaining tokens go one by one.
pub(crate) fn vec_dot_rows_multi(w: &[u8], rb: usize, acts: &[&[u8]], out: &mut [f32]) {
    let name = "q6_k vec_dot_rows_multi";
    k_rows_multi8(name, w, rb, BLOCK_BYTES, acts, out, EIGHT_TOKENS, vec_dot);
}

#[cfg(target_arch = "x86_64")]
const EIGHT_TOKENS: Option<EightTokens> = Some(avx2::vec_dot_multi8);
#[cfg(not(target_arch = "x86_64"))]
const EIGHT_TOKENS: Option<EightTokens> = None;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::common::x86::*;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// The four 32-runs (unsigned 6-bit) of half `h`.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `b` must point
    /// to one readable Q6_K block and `h` must be 0 or 1.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_half(b: *const u8, h: usize) -> [__m256i; 4] {
        let m4 = _mm256_set1_epi8(0x0F);
        let m3 = _mm256_set1_epi8(3);
        let ql0 = _mm256_loadu_si256(b.add(64 * h) as *const __m256i);
        let ql1 = _mm256_loadu_si256(b.add(64 * h + 32) as *const __m256i);
        let qh = _mm256_loadu_si256(b.add(128 + 32 * h) as *const __m256i);
        let h0 = _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4);
        let h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4);
        let h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4);
        let h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4);
        [
            _mm256_or_si256(_mm256_and_si256(ql0, m4), h0),
            _mm256_or_si256(_mm256_and_si256(ql1, m4), h1),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), h2),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), h3),
        ]
    }

    /// One super-block's exact integer sum `Σ sc·(q − 32)·y` against one Q8_K block, in eight
    /// lanes; the weights `ahead` bytes past the block are hinted into L1 (the same row two
    /// super-blocks on, or two packed columns on).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `bp` must
    /// point to one readable Q6_K block and `ap` to one readable Q8_K block.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn int_sums(bp: *const u8, ahead: usize, ap: *const u8) -> __m256i {
        for k in 0..4 {
            prefetch(bp, ahead + 64 * k);
        }
        let yp = ap.add(q8_k::QS_OFF);
        let sc8 = _mm_loadu_si128(bp.add(192) as *const __m128i);
        let bs = _mm256_loadu_si256(ap.add(q8_k::BSUMS_OFF) as *const __m256i);
        let off = _mm256_madd_epi16(bs, _mm256_cvtepi8_epi16(sc8));
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_sub_epi32(acc0, _mm256_slli_epi32(off, 5));
        for h in 0..2 {
            let qs = load_half(bp, h);
            for (k, q) in qs.iter().enumerate() {
                let g = (8 * h + 2 * k) as u8;
                let y = _mm256_loadu_si256(yp.add(128 * h + 32 * k) as *const __m256i);
                let p = _mm256_maddubs_epi16(*q, y);
                let sc = run_scales(sc8, g);
                if k % 2 == 0 {
                    acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(p, sc));
                } else {
                    acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(p, sc));
                }
            }
        }
        _mm256_add_epi32(acc0, acc1)
    }

    /// The scales of 32-runs `g` and `g + 1` (the first 16 products take `g`, the next 16
    /// `g + 1`) as i16 lanes.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 (callers check `has_avx2()` first); registers only.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run_scales(sc8: __m128i, g: u8) -> __m256i {
        let shuf = _mm_set_epi64x(
            (0x0101_0101_0101_0101u64 * (g + 1) as u64) as i64,
            (0x0101_0101_0101_0101u64 * g as u64) as i64,
        );
        _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, shuf))
    }

    /// One row against eight Q8_K activations: each super-block's 6-bit values and scales are
    /// unpacked once, and each 32-run with its scales stays in registers while the eight
    /// tokens pass; per super-block the eight exact integer sums are reduced together and
    /// `(d_a·d)·isum` is added in lane t for token t, in super-block order — the scalar
    /// reference's operations, so lane t is bit-identical to [`vec_dot`] of the row with
    /// activation t.
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
        let mut sum = _mm256_setzero_ps();
        for i in 0..nb {
            let bp = w.add(i * BLOCK_BYTES);
            let aps: [*const u8; 8] = std::array::from_fn(|t| a[t].add(i * q8_k::BLOCK_BYTES));
            let sc8 = _mm_loadu_si128(bp.add(192) as *const __m128i);
            let sc16 = _mm256_cvtepi8_epi16(sc8);
            // Each token's sum starts at −32·Σ sc·bsum (the values' −32 offset).
            let mut acc: [__m256i; 8] = std::array::from_fn(|t| {
                let bs = _mm256_loadu_si256(aps[t].add(q8_k::BSUMS_OFF) as *const __m256i);
                _mm256_sub_epi32(
                    _mm256_setzero_si256(),
                    _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5),
                )
            });
            for h in 0..2 {
                let qs = load_half(bp, h);
                for (k, q) in qs.iter().enumerate() {
                    let sc = run_scales(sc8, (8 * h + 2 * k) as u8);
                    let off = q8_k::QS_OFF + 128 * h + 32 * k;
                    for (acc_t, ap) in acc.iter_mut().zip(&aps) {
                        let y = _mm256_loadu_si256(ap.add(off) as *const __m256i);
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(*q, y), sc);
                        *acc_t = _mm256_add_epi32(*acc_t, p);
                    }
                }
            }
            let isum = _mm256_cvtepi32_ps(totals8(&acc));
            let f = |t: usize| (aps[t] as *const f32).read_unaligned();
            let da = _mm256_setr_ps(f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7));
            let d = _mm256_set1_ps(f16_load(bp.add(208)));
            sum = _mm256_add_ps(sum, _mm256_mul_ps(_mm256_mul_ps(da, d), isum));
        }
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), sum);
        out
    }

    /// Eight rows (`nb` blocks each; row-major, back to back, or with `PACKED` one group of
    /// [`crate::Layout::Interleaved8`], column i holding block i of the eight rows) against
    /// one Q8_K activation, lane r for row r: per super-block the eight rows' integer sums
    /// reduced together (`totals8`) and `da·d·isum` in eight lanes, accumulated in
    /// super-block order from 0, so every row is bit-identical to [`vec_dot`]; each
    /// activation block is read once for the eight rows. Row-major, the next group of eight
    /// rows is prefetched as one stream unless `intel_cpu()`; packed, the group is one stream.
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
        eight_rows::<PACKED>(w, nb, a, out, |bp, ahead, ap| int_sums(bp, ahead, ap))
    }

    /// [`vec_dot_8rows`] on AVX-512 ([`int_sums_512`]: the same exact sums and float steps,
    /// so the same bits).
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
        eight_rows::<PACKED>(w, nb, a, out, |bp, ahead, ap| int_sums_512(bp, ahead, ap))
    }

    /// The body of [`vec_dot_8rows`] over `sums` (a block's exact integer sums in eight lanes,
    /// hinting `ahead` bytes on).
    ///
    /// # Safety
    ///
    /// As [`vec_dot_8rows`]; inlined into a caller with the features `sums` needs.
    #[inline(always)]
    unsafe fn eight_rows<const PACKED: bool>(
        w: *const u8,
        nb: usize,
        a: *const u8,
        out: &mut [f32; 8],
        sums: impl Fn(*const u8, usize, *const u8) -> __m256i,
    ) {
        let rb = nb * BLOCK_BYTES;
        let mut acc = _mm256_setzero_ps();
        let group_prefetch = !PACKED && !crate::common::intel_cpu();
        for i in 0..nb {
            if group_prefetch {
                prefetch_next_group(w, rb, 8 * BLOCK_BYTES, i);
            }
            let ap = a.add(i * q8_k::BLOCK_BYTES);
            let mut iv = [_mm256_setzero_si256(); 8];
            // Two blocks of the row ahead (from a row's last two, the row eight on: `hint_at`).
            let row_ahead = hint_at(i * BLOCK_BYTES, 2 * BLOCK_BYTES, rb, rb) - i * BLOCK_BYTES;
            let mut dh = [0u16; 8];
            for r in 0..8 {
                let (bp, ahead) = if PACKED {
                    (w.add((8 * i + r) * BLOCK_BYTES), 16 * BLOCK_BYTES)
                } else {
                    (w.add(r * rb + i * BLOCK_BYTES), row_ahead)
                };
                iv[r] = sums(bp, ahead, ap);
                dh[r] = (bp.add(208) as *const u16).read_unaligned();
            }
            let isum = _mm256_cvtepi32_ps(totals8(&iv));
            let d = _mm256_cvtph_ps(_mm_loadu_si128(dh.as_ptr() as *const __m128i));
            let da = _mm256_set1_ps((ap as *const f32).read_unaligned());
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(da, d), isum));
        }
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
    }

    /// A Q6_K block unpacked for AVX-512: two 32-runs a 512-bit vector of unsigned 6-bit
    /// values — runs 0 and 1 of half `h` (`v[2h]`) are the low nibbles of its 64 `ql` bytes
    /// (one load), runs 2 and 3 (`v[2h + 1]`) the high ones, each pair's two high bits moved to
    /// bits 4 and 5 from the half's 32 `qh` bytes (in both halves of a vector) by a GF(2)
    /// affine with a matrix per half, joined by an `or` — and the scales laid out for
    /// `_mm512_packs_epi32(p[2h], p[2h + 1])` of the runs' `vpdpbusd` results: 128-bit lane `j`
    /// then holds group `8h + j` (words 0..3) and `8h + 4 + j` (words 4..7), `sc[h]` their
    /// scales; `sc16` the sixteen scales as words (for the −32 offset).
    struct Unpacked512 {
        v: [__m512i; 4],
        sc: [__m512i; 2],
        sc16: __m256i,
    }

    /// # Safety
    ///
    /// Inlined into a caller with the AVX-512 features `has_avx512()` checks; `bp` must point
    /// to one readable Q6_K block.
    #[inline(always)]
    unsafe fn unpack_512(bp: *const u8) -> Unpacked512 {
        // GF(2) affine matrices (byte 7 - i of the matrix picks the source bits of result bit
        // i): the high nibble moved down; bits `s` and `s + 1` to bits 4 and 5.
        const HIGH: i64 = 0x1020_4080_0000_0000;
        const fn to_bits45(s: u32) -> i64 {
            ((1i64 << s) << 24) | ((1i64 << (s + 1)) << 16)
        }
        // (A macro, not a closure: a closure is a function of its own without the caller's
        // target features, and LLVM may leave it out of line.)
        macro_rules! halves {
            ($a:expr, $b:expr) => {
                _mm512_inserti64x4::<1>(_mm512_set1_epi64($a), _mm256_set1_epi64x($b))
            };
        }
        let m4 = _mm512_set1_epi8(0x0F);
        let high = _mm512_set1_epi64(HIGH);
        let top01 = halves!(to_bits45(0), to_bits45(2));
        let top23 = halves!(to_bits45(4), to_bits45(6));
        let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp.add(192) as *const __m128i));
        let mut u = Unpacked512 {
            v: [_mm512_setzero_si512(); 4],
            sc: [_mm512_setzero_si512(); 2],
            sc16,
        };
        for h in 0..2 {
            let ql = _mm512_loadu_si512(bp.add(64 * h) as *const _);
            let qh =
                _mm512_broadcast_i64x4(_mm256_loadu_si256(bp.add(128 + 32 * h) as *const __m256i));
            u.v[2 * h] = _mm512_or_si512(
                _mm512_and_si512(ql, m4),
                _mm512_gf2p8affine_epi64_epi8::<0>(qh, top01),
            );
            u.v[2 * h + 1] = _mm512_or_si512(
                _mm512_gf2p8affine_epi64_epi8::<0>(ql, high),
                _mm512_gf2p8affine_epi64_epi8::<0>(qh, top23),
            );
            let idx: [u16; 32] =
                std::array::from_fn(|l| (8 * h + l / 8 + 4 * ((l % 8) / 4)) as u16);
            u.sc[h] = _mm512_permutexvar_epi16(
                _mm512_loadu_si512(idx.as_ptr() as *const _),
                _mm512_castsi256_si512(sc16),
            );
        }
        u
    }

    /// The exact integer sum `Σ sc·(q − 32)·y` of an unpacked block ([`unpack_512`]) against
    /// one Q8_K block, in eight lanes: [`k_pairs_dot_512`] (one `vpdpbusd` a pair of runs; each
    /// i32 lane four products of the unsigned values, at most 4·63·128 in magnitude, and each
    /// 128-bit lane one 16-value group, so a half's two results pack into words for one
    /// `madd`), then the −32 offset as in [`int_sums`].
    ///
    /// # Safety
    ///
    /// Inlined into a caller with the AVX-512 features `has_avx512()` checks; `ap` must point
    /// to one readable Q8_K block.
    #[inline(always)]
    unsafe fn sums_512(u: &Unpacked512, ap: *const u8) -> __m256i {
        let acc = k_pairs_dot_512(&u.v, &u.sc, ap);
        let bs = _mm256_loadu_si256(ap.add(q8_k::BSUMS_OFF) as *const __m256i);
        _mm256_sub_epi32(acc, _mm256_slli_epi32(_mm256_madd_epi16(bs, u.sc16), 5))
    }

    /// [`int_sums`] of the block at `bp` (hinting `ahead` bytes on) on AVX-512
    /// ([`unpack_512`], [`sums_512`]): the same exact `Σ sc·(q − 32)·y` in eight lanes.
    ///
    /// # Safety
    ///
    /// Inlined into a caller with the AVX-512 features `has_avx512()` checks; `bp` must point
    /// to one readable Q6_K block and `ap` to one readable Q8_K block.
    #[inline(always)]
    unsafe fn int_sums_512(bp: *const u8, ahead: usize, ap: *const u8) -> __m256i {
        for k in 0..4 {
            prefetch(bp, ahead + 64 * k);
        }
        sums_512(&unpack_512(bp), ap)
    }

    /// [`vec_dot_multi8`] on AVX-512: each super-block unpacked once ([`unpack_512`]) for the
    /// eight tokens ([`sums_512`]); the same exact sums and float steps, so the same bits.
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
        let mut sum = _mm256_setzero_ps();
        for i in 0..nb {
            let bp = w.add(i * BLOCK_BYTES);
            let u = unpack_512(bp);
            let mut acc = [_mm256_setzero_si256(); 8];
            let mut da = [0f32; 8];
            for t in 0..8 {
                let ap = a[t].add(i * q8_k::BLOCK_BYTES);
                acc[t] = sums_512(&u, ap);
                da[t] = (ap as *const f32).read_unaligned();
            }
            let isum = _mm256_cvtepi32_ps(totals8(&acc));
            let da = _mm256_loadu_ps(da.as_ptr());
            let d = _mm256_set1_ps(f16_load(bp.add(208)));
            sum = _mm256_add_ps(sum, _mm256_mul_ps(_mm256_mul_ps(da, d), isum));
        }
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), sum);
        out
    }

    /// Unsigned 6-bit products with `maddubs`; the -32 offset is applied once per super-block
    /// as 32·Σ scale·bsum (exact integers, so the result equals the scalar reference bit for
    /// bit).
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
        one_row(w, a, |bp, ahead, ap| int_sums(bp, ahead, ap))
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
        one_row(w, a, |bp, ahead, ap| int_sums_512(bp, ahead, ap))
    }

    /// The body of [`vec_dot`] over `sums` (as [`eight_rows`]'s).
    ///
    /// # Safety
    ///
    /// As [`vec_dot`]; inlined into a caller with the features `sums` needs.
    #[inline(always)]
    unsafe fn one_row(
        w: &[u8],
        a: &[u8],
        sums: impl Fn(*const u8, usize, *const u8) -> __m256i,
    ) -> f32 {
        let nb = w.len() / BLOCK_BYTES;
        let (wp, ap) = (w.as_ptr(), a.as_ptr());
        let mut sum = 0.0f32;
        let mut i = 0;
        // Eight super-blocks at a time: their sums reduced together (`totals8`), `da·d·isum`
        // in eight lanes, added in super-block order (bit-identical to the scalar reference).
        while i + 8 <= nb {
            let mut iv = [MaybeUninit::<__m256i>::uninit(); 8];
            let (mut dh, mut da) = ([0u16; 8], [0f32; 8]);
            for k in 0..8 {
                let bp = wp.add((i + k) * BLOCK_BYTES);
                let bap = ap.add((i + k) * q8_k::BLOCK_BYTES);
                iv[k].write(sums(bp, 2 * BLOCK_BYTES, bap));
                dh[k] = (bp.add(208) as *const u16).read_unaligned();
                da[k] = (bap as *const f32).read_unaligned();
            }
            // SAFETY: the loop above wrote all eight entries of iv; MaybeUninit<__m256i> has
            // __m256i's layout.
            let iv = &*(iv.as_ptr() as *const [__m256i; 8]);
            let isum = _mm256_cvtepi32_ps(totals8(iv));
            let d = _mm256_cvtph_ps(_mm_loadu_si128(dh.as_ptr() as *const __m128i));
            let v = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(da.as_ptr()), d), isum);
            add_in_order(&mut sum, v);
            i += 8;
        }
        while i < nb {
            let (bp, bap) = (wp.add(i * BLOCK_BYTES), ap.add(i * q8_k::BLOCK_BYTES));
            let da = (bap as *const f32).read_unaligned();
            sum += da * f16_load(bp.add(208)) * hsum_epi32(sums(bp, 2 * BLOCK_BYTES, bap)) as f32;
            i += 1;
        }
        sum
    }

    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `dst` must hold
    /// at least one block's worth of values per whole block of `src`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dequantize(src: &[u8], dst: &mut [f32]) {
        let nb = src.len() / BLOCK_BYTES;
        for i in 0..nb {
            let bp = src.as_ptr().add(i * BLOCK_BYTES);
            let d = f16_load(bp.add(208));
            let o = dst.as_mut_ptr().add(i * QK_K);
            for h in 0..2 {
                let qs = load_half(bp, h);
                for (k, q) in qs.iter().enumerate() {
                    let q = _mm256_sub_epi8(*q, _mm256_set1_epi8(32));
                    let base = 128 * h + 32 * k;
                    let g = base / 16;
                    let d0 = _mm256_set1_ps(d * (*bp.add(192 + g) as i8) as f32);
                    let d1 = _mm256_set1_ps(d * (*bp.add(192 + g + 1) as i8) as f32);
                    let lo = _mm256_castsi256_si128(q);
                    let hi = _mm256_extracti128_si256(q, 1);
                    let parts = [
                        (lo, d0),
                        (_mm_srli_si128(lo, 8), d0),
                        (hi, d1),
                        (_mm_srli_si128(hi, 8), d1),
                    ];
                    for (j, (part, dl)) in parts.iter().enumerate() {
                        let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(*part));
                        _mm256_storeu_ps(o.add(base + 8 * j), _mm256_mul_ps(*dl, f));
                    }
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

    /// The 128 values `q − 32` of half `h` (`h` < 2) as signed bytes, one group of 16 per
    /// vector in element order: run k of the half (32 values) is `ql` bytes `32·(k mod 2)..`
    /// (low nibbles for k < 2, high for k ≥ 2) with bits `2k..2k+2` of the `qh` bytes on top.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `b` must point to one
    /// readable Q6_K block.
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn values(b: *const u8, h: usize) -> [int8x16_t; 8] {
        let m3 = vdupq_n_u8(3);
        let off = vdupq_n_s8(32);
        std::array::from_fn(|g| {
            let (k, part) = (g / 2, g % 2);
            let (lo, hi) = nibbles(b.add(64 * h + 32 * (k % 2) + 16 * part));
            let n = if k < 2 { lo } else { hi };
            let qh = vld1q_u8(b.add(128 + 32 * h + 16 * part));
            let top = match k {
                0 => vandq_u8(qh, m3),
                1 => vandq_u8(vshrq_n_u8::<2>(qh), m3),
                2 => vandq_u8(vshrq_n_u8::<4>(qh), m3),
                _ => vshrq_n_u8::<6>(qh),
            };
            let q = vorrq_u8(n, vshlq_n_u8::<4>(top));
            vsubq_s8(vreinterpretq_s8_u8(q), off)
        })
    }

    /// Bit-exact with [`super::vec_dot_scalar`]: per super-block each group's integer sum
    /// exact and weighted by its 8-bit scale, then `d_a·d·isum` added in block order.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `a` must hold at least as
    /// many Q8_K blocks as `w` holds whole weight blocks.
    #[target_feature(enable = "neon")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        let nb = w.len() / BLOCK_BYTES;
        let mut sum = 0.0f32;
        for i in 0..nb {
            let bp = w.as_ptr().add(i * BLOCK_BYTES);
            let ap = a.as_ptr().add(i * q8_k::BLOCK_BYTES);
            let yp = ap.add(q8_k::QS_OFF);
            let mut acc = vdupq_n_s32(0);
            for h in 0..2 {
                for (k, v) in values(bp, h).into_iter().enumerate() {
                    let g = 8 * h + k;
                    let p = dot16(vdupq_n_s32(0), v, vld1q_s8(yp.add(16 * g) as *const i8));
                    acc = vmlaq_n_s32(acc, p, *bp.add(192 + g) as i8 as i32);
                }
            }
            let isum = vaddvq_s32(acc);
            let da = q8_k::d_of(&a[i * q8_k::BLOCK_BYTES..]);
            sum += da * f16_load(bp.add(208)) * isum as f32;
        }
        sum
    }

    /// Bit-exact with [`super::dequantize_scalar`] (`(d·scale)·(q − 32)`).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `dst` must hold at least
    /// one block's worth of values per whole block of `src`.
    #[target_feature(enable = "neon")]
    pub unsafe fn dequantize(src: &[u8], dst: &mut [f32]) {
        let nb = src.len() / BLOCK_BYTES;
        for i in 0..nb {
            let bp = src.as_ptr().add(i * BLOCK_BYTES);
            let d = f16_load(bp.add(208));
            let o = dst.as_mut_ptr().add(i * QK_K);
            for h in 0..2 {
                for (k, v) in values(bp, h).into_iter().enumerate() {
                    let g = 8 * h + k;
                    let dl = vdupq_n_f32(d * (*bp.add(192 + g) as i8) as f32);
                    for (j, f) in widen_i8x16(v).into_iter().enumerate() {
                        vst1q_f32(o.add(16 * g + 4 * j), vmulq_f32(dl, f));
                    }
                }
            }
        }
    }
}
