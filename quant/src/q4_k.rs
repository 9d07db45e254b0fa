//! Q4_K: super-blocks of 256 values in 8 sub-blocks of 32. f16 d, f16 dmin, 12 bytes holding
//! eight 6-bit scales and eight 6-bit mins, 128 bytes of nibbles (each 32-byte group holds two
//! sub-blocks: low nibbles the first, high nibbles the second). value = d*sc*q - dmin*m.
//! Dots against Q8_K activations.

use crate::common::*;
use crate::k_scales;
use crate::q8_k;
use crate::types::QK_K;
use bytemuck::{Pod, Zeroable};
use half::f16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_K>() == 144);
pub const BLOCK_BYTES: usize = 144;

/// How [`crate::Layout::Interleaved8`] packs a column: the eight rows' whole blocks, one after
/// another (the eight-row kernel reads each block as the single-row one does).
pub(crate) const PACK: &[Field] = &[Field::rows(0, BLOCK_BYTES)];

/// Unpack the eight 6-bit scales and mins.
#[inline]
pub(crate) fn unpack_scales(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0x0F) | ((q[j] >> 6) << 4);
        m[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
    (sc, m)
}

pub(crate) fn pack_scales(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..4 {
        q[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        q[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        q[j + 8] = (sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4);
    }
    q
}

/// Scale/min search for a super-block with `nmax` levels: returns d, dmin, 6-bit scales and
/// mins, and the final integer levels (requantized with the stored f16 steps).
///
/// Element weights: the importance matrix's values when given (the error minimised is
/// `Σ qw·(x − x̂)²`, the expected squared output error for activations with those mean
/// squares), else 1 (plain squared error). Each sub-block's scale and min come from
/// [`search_scale_min`] on those weights. The
/// eight scales are then coded against one step `d` by a search weighted with `Σ w·l²` of each
/// sub-block (how much its error grows per unit of scale error), the mins against `dmin`
/// weighted with `Σ w`, and finally each sub-block's pair of codes is settled on its actual
/// weighted error ([`k_scales::settle_codes`]).
pub(crate) fn quantize_superblock(
    x: &[f32],
    imatrix: Option<&[f32]>,
    nmax: i32,
) -> (f16, f16, [u8; 8], [u8; 8], [i32; QK_K]) {
    let xs: [[f32; 32]; 8] = std::array::from_fn(|j| std::array::from_fn(|k| x[32 * j + k]));
    let mut w = [[1.0f32; 32]; 8];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut wl2 = [0.0f32; 8];
    let mut wsum = [0.0f32; 8];
    let mut l = [0i32; QK_K];
    for j in 0..8 {
        let r = 32 * j..32 * j + 32;
        if let Some(m) = imatrix {
            w[j].copy_from_slice(&m[r.clone()]);
        }
        let (s, mn) = search_scale_min(&xs[j], &w[j], nmax, true, &mut l[r.clone()]);
        scales[j] = s.max(0.0);
        mins[j] = -mn;
        for (&wi, &q) in w[j].iter().zip(&l[r]) {
            wsum[j] += wi;
            wl2[j] += wi * (q * q) as f32;
        }
    }
    let (d, mut ls) = k_scales::quantize_codes(&scales, &wl2);
    let (dmin, mut lm) = k_scales::quantize_codes(&mins, &wsum);
    let d = f16::from_f32(d);
    let dmin = f16::from_f32(dmin);
    for j in 0..8 {
        let r = 32 * j..32 * j + 32;
        (ls[j], lm[j]) =
            k_scales::settle_codes(&xs[j], &w[j], d, dmin, nmax, (ls[j], lm[j]), &mut l[r]);
    }
    (d, dmin, ls, lm, l)
}

pub fn quantize_block(x: &[f32], imatrix: Option<&[f32]>) -> BlockQ4_K {
    let (d, dmin, ls, lm, l) = quantize_superblock(x, imatrix, 15);
    encode(d, dmin, &ls, &lm, &l)
}

/// A block from its steps, 6-bit codes and levels (`0..=15`).
pub(crate) fn encode(d: f16, dmin: f16, ls: &[u8; 8], lm: &[u8; 8], l: &[i32]) -> BlockQ4_K {
    let mut b = BlockQ4_K {
        d,
        dmin,
        scales: pack_scales(ls, lm),
        qs: [0; 128],
    };
    for c in 0..4 {
        for k in 0..32 {
            b.qs[32 * c + k] = l[64 * c + k] as u8 | ((l[64 * c + 32 + k] as u8) << 4);
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

pub fn dequantize_scalar(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let (sc, m) = unpack_scales(&b[4..16]);
        for c in 0..4 {
            let (d1, m1) = (d * sc[2 * c] as f32, dmin * m[2 * c] as f32);
            let (d2, m2) = (d * sc[2 * c + 1] as f32, dmin * m[2 * c + 1] as f32);
            for k in 0..32 {
                let q = b[16 + 32 * c + k];
                y[64 * c + k] = d1 * (q & 0x0F) as f32 - m1;
                y[64 * c + 32 + k] = d2 * (q >> 4) as f32 - m2;
            }
        }
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    let nb = src.len() / BLOCK_BYTES;
    assert!(
        dst.len() >= nb * QK_K,
        "q4_k dequantize: {nb} blocks need {} outputs, got {}",
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

/// Q4_K weights · Q8_K activations. Integer sums per super-block, one float step each.
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
        for c in 0..4 {
            let (mut s1, mut s2) = (0i32, 0i32);
            for k in 0..32 {
                let q = bw[16 + 32 * c + k];
                s1 += (q & 0x0F) as i32 * (y[64 * c + k] as i8) as i32;
                s2 += (q >> 4) as i32 * (y[64 * c + 32 + k] as i8) as i32;
            }
            isum += s1 * sc[2 * c] as i32 + s2 * sc[2 * c + 1] as i32;
        }
        let da = q8_k::d_of(ba);
        sum += da * f16_at(bw, 0) * isum as f32 - da * f16_at(bw, 2) * summ as f32;
    }
    sum
}

/// `out[r] = w_r · a` for rows `rb` bytes long; with `il` the whole groups of eight rows are
/// in [`crate::Layout::Interleaved8`]. Eight rows at a time through one kernel (row-major:
/// when rows are long enough, [`crate::common::k_eight_rows_from`]), each value bit-identical
/// to [`vec_dot`] of the row.
pub(crate) fn vec_dot_rows(w: &[u8], rb: usize, il: bool, a: &[u8], out: &mut [f32]) {
    let name = "q4_k vec_dot_rows";
    let ty = crate::GgmlType::Q4_K;
    k_rows_by_eight(name, ty, w, rb, il, a, out, EIGHT_ROWS, vec_dot);
}

#[cfg(target_arch = "x86_64")]
const EIGHT_ROWS: [Option<EightRows>; 2] = [
    Some(avx2::eight_rows::<false>),
    Some(avx2::eight_rows::<true>),
];
#[cfg(not(target_arch = "x86_64"))]
const EIGHT_ROWS: [Option<EightRows>; 2] = [None, None];

pub fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
    let nb = w.len() / BLOCK_BYTES;
    assert!(
        a.len() >= nb * crate::q8_k::BLOCK_BYTES,
        "q4_k vec_dot: {nb} weight blocks need {} activation bytes, got {}",
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

/// Tokens per call of the packed prefill kernel (each super-block unpacked once for them).
#[cfg(target_arch = "x86_64")]
const MULTI: usize = 8;

/// [`vec_dot_rows_multi`] over a matrix in [`crate::Layout::Interleaved8`] (sizes checked by
/// the caller): each packed group through the eight-row kernel, [`MULTI`] tokens at a time,
/// the row-major tail as usual; `None` without AVX2 (the caller unpacks the groups instead).
/// (Eight tokens per call against four: 1.66 B Q4_K prefill 84–96 → 98–103 tok/s on 1 thread,
/// 164–168 → 182 on 2; sixteen measured no better.)
pub(crate) fn vec_dot_rows_multi_packed(
    w: &[u8],
    rb: usize,
    acts: &[&[u8]],
    out: &mut [f32],
) -> Option<()> {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (w, rb, acts, out);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && rb > 0 {
        let tokens = acts.len();
        let rows = out.len() / tokens.max(1);
        let nb = rb / BLOCK_BYTES;
        assert!(
            tokens > 0
                && w.len() >= rows * rb
                && acts.iter().all(|a| a.len() >= nb * q8_k::BLOCK_BYTES),
            "q4_k vec_dot_rows_multi_packed: {rows} rows × {tokens} tokens do not fit the buffers"
        );
        let whole = rows / 8 * 8;
        for g in (0..whole).step_by(8) {
            let gp = w[g * rb..].as_ptr();
            let mut t0 = 0;
            while t0 < tokens {
                let a = |j: usize| acts[t0 + j].as_ptr();
                let mut o = [[0f32; 8]; MULTI];
                // SAFETY: AVX2/FMA/F16C detected; the group's 8·nb blocks lie in `w` and each
                // activation holds nb blocks (asserted above); each call reads only the tokens
                // that are left.
                let k = unsafe {
                    match tokens - t0 {
                        MULTI.. => {
                            avx2::vec_dot_8rows_multi::<MULTI>(
                                gp,
                                nb,
                                std::array::from_fn(a),
                                &mut o,
                            );
                            MULTI
                        }
                        4.. => {
                            let mut o4 = [[0f32; 8]; 4];
                            avx2::vec_dot_8rows_multi::<4>(gp, nb, std::array::from_fn(a), &mut o4);
                            o[..4].copy_from_slice(&o4);
                            4
                        }
                        3 => {
                            let mut o3 = [[0f32; 8]; 3];
                            avx2::vec_dot_8rows_multi::<3>(gp, nb, std::array::from_fn(a), &mut o3);
                            o[..3].copy_from_slice(&o3);
                            3
                        }
                        2 => {
                            let mut o2 = [[0f32; 8]; 2];
                            avx2::vec_dot_8rows_multi::<2>(gp, nb, std::array::from_fn(a), &mut o2);
                            o[..2].copy_from_slice(&o2);
                            2
                        }
                        _ => {
                            avx2::vec_dot_8rows::<true>(gp, nb, a(0), &mut o[0]);
                            1
                        }
                    }
                };
                for (j, ot) in o.iter().enumerate().take(k) {
                    for (r, v) in ot.iter().enumerate() {
                        out[(g + r) * tokens + t0 + j] = *v;
                    }
                }
                t0 += k;
            }
        }
        if whole < rows {
            vec_dot_rows_multi(
                &w[whole * rb..rows * rb],
                rb,
                acts,
                &mut out[whole * tokens..],
            );
        }
        return Some(());
    }
    None
}

/// Several activations at once (batched prefill): `out[r·acts.len() + t] = w_r · acts[t]` for
/// consecutive rows of `row_bytes` bytes. Eight tokens share each unpacked super-block
/// (`k_multi8`: scales and mins unpacked once, each chunk's nibbles kept in registers while the
/// tokens pass), the remaining ones up to four at a time; every entry equals [`vec_dot`] for
/// that row and token bit for bit (same integer sums, same float steps in the same order).
pub fn vec_dot_rows_multi(w: &[u8], row_bytes: usize, acts: &[&[u8]], out: &mut [f32]) {
    let tokens = acts.len();
    let name = "q4_k vec_dot_rows_multi";
    let (rows, nb) = check_rows_multi(name, w, row_bytes, BLOCK_BYTES, acts, out.len(), Q8K_BYTES);
    // Only the x86 kernels take the block count; elsewhere every token goes through `vec_dot`.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = nb;
    for (r, row) in w.chunks_exact(row_bytes.max(1)).take(rows).enumerate() {
        let o = &mut out[r * tokens..(r + 1) * tokens];
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            let mut t0 = 0;
            while t0 + 8 <= tokens {
                let a: [*const u8; 8] = std::array::from_fn(|j| acts[t0 + j].as_ptr());
                // SAFETY: AVX2/FMA/F16C detected at run time; `row` holds nb blocks and every
                // activation at least nb blocks (asserted above).
                let v = unsafe { avx2::vec_dot_multi8(row.as_ptr(), nb, &a) };
                o[t0..t0 + 8].copy_from_slice(&v);
                t0 += 8;
            }
            while t0 < tokens {
                let k = (tokens - t0).min(4);
                // SAFETY: AVX2/FMA/F16C detected at run time; `row` holds nb blocks and every
                // activation at least nb blocks (asserted above).
                unsafe {
                    match k {
                        4 => {
                            let a = [acts[t0], acts[t0 + 1], acts[t0 + 2], acts[t0 + 3]];
                            o[t0..t0 + 4].copy_from_slice(&avx2::vec_dot_multi::<4>(row, a));
                        }
                        3 => {
                            let a = [acts[t0], acts[t0 + 1], acts[t0 + 2]];
                            o[t0..t0 + 3].copy_from_slice(&avx2::vec_dot_multi::<3>(row, a));
                        }
                        2 => {
                            let a = [acts[t0], acts[t0 + 1]];
                            o[t0..t0 + 2].copy_from_slice(&avx2::vec_dot_multi::<2>(row, a));
                        }
                        _ => o[t0] = avx2::vec_dot(row, acts[t0]),
                    }
                }
                t0 += k;
            }
            continue;
        }
        // Without AVX2: the single-row kernel (NEON on aarch64), per token.
        for (ot, a) in o.iter_mut().zip(acts) {
            *ot = vec_dot(row, a);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use crate::common::x86::*;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// A Q4_K block unpacked for integer dots: its 64 low and 64 high nibbles, the eight
    /// sub-block scales broadcast as words, and the mins laid out for `bsums`.
    struct Unpacked {
        lo: [__m256i; 4],
        hi: [__m256i; 4],
        sc: [__m256i; 8],
        /// Scales (low 128 bits) and mins (high) as words ([`k_scales_mins`]).
        sm: __m256i,
    }

    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `bp` must
    /// point to one readable Q4_K block.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack(bp: *const u8, ahead: usize) -> Unpacked {
        let m4 = _mm256_set1_epi8(0x0F);
        prefetch(bp, ahead);
        prefetch(bp, ahead + 64);
        prefetch(bp, ahead + 128);
        let sm = k_scales_mins(bp.add(4));
        let scl = _mm256_permute2x128_si256(sm, sm, 0x00);
        let sc: [__m256i; 8] = [
            bcast_i16::<0>(scl),
            bcast_i16::<1>(scl),
            bcast_i16::<2>(scl),
            bcast_i16::<3>(scl),
            bcast_i16::<4>(scl),
            bcast_i16::<5>(scl),
            bcast_i16::<6>(scl),
            bcast_i16::<7>(scl),
        ];
        let qp = bp.add(16);
        let q: [__m256i; 4] =
            std::array::from_fn(|c| _mm256_loadu_si256(qp.add(32 * c) as *const __m256i));
        Unpacked {
            lo: std::array::from_fn(|c| _mm256_and_si256(q[c], m4)),
            hi: std::array::from_fn(|c| _mm256_and_si256(_mm256_srli_epi16(q[c], 4), m4)),
            sc,
            sm,
        }
    }

    /// The block's integer sums against one Q8_K activation block, in eight lanes each (their
    /// lane totals are `Σ sc·q·y` and `Σ m·bsum`); `bs2` is the block's [`k_bsum_pairs`].
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `ap` must
    /// point to one readable Q8_K block.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn int_sums(u: &Unpacked, ap: *const u8, bs2: __m256i) -> (__m256i, __m256i) {
        let summ_v = _mm256_madd_epi16(u.sm, bs2);
        let yp = ap.add(q8_k::QS_OFF);
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_setzero_si256();
        for c in 0..4 {
            let y0 = _mm256_loadu_si256(yp.add(64 * c) as *const __m256i);
            let y1 = _mm256_loadu_si256(yp.add(64 * c + 32) as *const __m256i);
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(u.lo[c], y0), u.sc[2 * c]);
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(u.hi[c], y1), u.sc[2 * c + 1]);
            acc0 = _mm256_add_epi32(acc0, p0);
            acc1 = _mm256_add_epi32(acc1, p1);
        }
        (_mm256_add_epi32(acc0, acc1), summ_v)
    }

    /// [`int_sums`] for `T` activations at once, chunk by chunk: each chunk's nibbles and two
    /// scales stay in registers while every token's activation passes, so the unpacked block
    /// is read once per chunk rather than once per token (the exact integer sums do not
    /// depend on the order in which they are added).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); each of
    /// `aps` must point to one readable Q8_K block, `bs2[t]` being its [`k_bsum_pairs`].
    #[inline(always)]
    unsafe fn int_sums_multi<const T: usize>(
        u: &Unpacked,
        aps: &[*const u8; T],
        bs2: &[__m256i; T],
    ) -> ([__m256i; T], [__m256i; T]) {
        let mut acc = [_mm256_setzero_si256(); T];
        for c in 0..4 {
            let (s0, s1) = (u.sc[2 * c], u.sc[2 * c + 1]);
            k_chunk_tokens::<T>(&mut acc, aps, c, u.lo[c], u.hi[c], s0, s1);
        }
        (
            acc,
            std::array::from_fn(|t| _mm256_madd_epi16(u.sm, bs2[t])),
        )
    }

    /// One super-block against `T` activations: per token `d_a·d·Σ sc·q·y − d_a·dmin·Σ m·bsum`
    /// (exact integer sums, then the scalar reference's float steps); the block's nibbles,
    /// scales and mins are unpacked once for all `T`. `T = 1` is the single-row kernel.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `bp` must
    /// point to one readable Q4_K block and each of `aps` to one readable Q8_K block.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn superblock_multi<const T: usize>(bp: *const u8, aps: [*const u8; T]) -> [f32; T] {
        let u = unpack(bp, 2 * BLOCK_BYTES);
        let (d, dmin) = (f16_load(bp), f16_load(bp.add(2)));
        let mut out = [0f32; T];
        for (o, ap) in out.iter_mut().zip(aps) {
            let (iv, mv) = int_sums(&u, ap, k_bsum_pairs(ap));
            let isum = hsum_epi32(iv);
            let summ = hsum_epi32(mv);
            let da = (ap as *const f32).read_unaligned();
            *o = da * d * isum as f32 - da * dmin * summ as f32;
        }
        out
    }

    /// [`vec_dot_8rows`], or [`vec_dot_8rows_512`] where `has_avx512()` (the same bits).
    ///
    /// # Safety
    ///
    /// As [`vec_dot_8rows`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn eight_rows<const PACKED: bool>(
        w: *const u8,
        nb: usize,
        a: *const u8,
        out: &mut [f32; 8],
    ) {
        if has_avx512() {
            vec_dot_8rows_512::<PACKED>(w, nb, a, out)
        } else {
            vec_dot_8rows::<PACKED>(w, nb, a, out)
        }
    }

    /// One group of eight rows against one Q8_K activation, packed (`PACKED`,
    /// [`crate::Layout::Interleaved8`]: column i holds block i of the eight rows) or row-major
    /// (rows `nb` blocks apart, the next group prefetched as one stream unless `intel_cpu()`);
    /// row `r`'s value is
    /// bit-identical to [`vec_dot`] of that row: per super-block the eight rows' integer sums
    /// are reduced together and the float step `d_a·d·isum − d_a·dmin·summ` runs in eight
    /// lanes, accumulated in super-block order from 0.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must hold
    /// `8·nb` readable blocks and `a` `nb` readable Q8_K blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_8rows<const PACKED: bool>(
        w: *const u8,
        nb: usize,
        a: *const u8,
        out: &mut [f32; 8],
    ) {
        k_8rows::<PACKED>(w, nb, BLOCK_BYTES, a, out, |bp, ahead, ap, bs2| {
            int_sums(&unpack(bp, ahead), ap, bs2)
        })
    }

    /// [`vec_dot_8rows`] on AVX-512 ([`int_sums_512`] for each row's block; the same exact
    /// sums and float steps, so the same results).
    ///
    /// # Safety
    ///
    /// As [`vec_dot_8rows`], and the CPU must support the AVX-512 features `has_avx512()`
    /// checks.
    #[target_feature(
        enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg,gfni"
    )]
    pub unsafe fn vec_dot_8rows_512<const PACKED: bool>(
        w: *const u8,
        nb: usize,
        a: *const u8,
        out: &mut [f32; 8],
    ) {
        k_8rows::<PACKED>(w, nb, BLOCK_BYTES, a, out, |bp, ahead, ap, bs2| {
            int_sums_512(bp, ahead, ap, bs2)
        })
    }

    /// Pair `c` (sub-blocks `2c` and `2c + 1`, 64 values) of the Q4_K block at `bp` as one
    /// 512-bit vector of unsigned bytes: the pair's 32 nibble bytes in both halves, one GF(2)
    /// affine with a matrix per half takes the low nibbles (sub-block `2c`) into the low half
    /// and the high ones (`2c + 1`) into the high.
    ///
    /// # Safety
    ///
    /// Inlined into a caller with the AVX-512 features `has_avx512()` checks; `bp` must point
    /// to one readable Q4_K block and `c` be below 4.
    #[inline(always)]
    unsafe fn pair_512(bp: *const u8, c: usize) -> __m512i {
        // GF(2) affine matrices (row i of the matrix, byte 7 - i, picks the source bits of
        // result bit i): the low nibble kept (low half), the high nibble moved down (high).
        let nib = _mm512_inserti64x4::<1>(
            _mm512_set1_epi64(0x0102_0408_0000_0000),
            _mm256_set1_epi64x(0x1020_4080_0000_0000),
        );
        let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(bp.add(16 + 32 * c) as *const __m256i));
        _mm512_gf2p8affine_epi64_epi8::<0>(q, nib)
    }

    /// [`int_sums`] of the block at `bp` (hinting `ahead` bytes on) on AVX-512: its four pairs
    /// of sub-blocks as vectors ([`pair_512`]) through [`k_int_sums_512`]; the lane totals are
    /// the same exact `Σ sc·q·y` and `Σ m·bsum`.
    ///
    /// # Safety
    ///
    /// Inlined into a caller with the AVX-512 features `has_avx512()` checks; `bp` must point
    /// to one readable Q4_K block and `ap` to one readable Q8_K block.
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

    /// One packed group of eight rows ([`crate::Layout::Interleaved8`]: column i holds block i
    /// of the eight rows) against `T` Q8_K activations; `out[t][r]` is bit-identical to
    /// [`vec_dot`] of row `r` with activation `t`: per super-block each row's block is
    /// unpacked once for the `T` tokens, the eight rows' integer sums are reduced together per
    /// token and the float step `d_a·d·isum − d_a·dmin·summ` runs in eight lanes, accumulated
    /// in super-block order from 0 — [`vec_dot_8rows`] per token. Prefill's kernel: decode keeps
    /// its own (the `T = 1` instance of this one decoded 10-20 % slower single-threaded).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must hold
    /// `8·nb` readable blocks and each of `a` `nb` readable Q8_K blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_8rows_multi<const T: usize>(
        w: *const u8,
        nb: usize,
        a: [*const u8; T],
        out: &mut [[f32; 8]; T],
    ) {
        if has_avx512() {
            return vec_dot_8rows_multi_512::<T>(w, nb, a, out);
        }
        rows_multi_body::<T, false>(w, nb, a, out)
    }

    /// [`vec_dot_8rows_multi`] on AVX-512: each row's block as four 512-bit pair vectors
    /// ([`pair_512`]) and two scale vectors ([`k_scale_words_512`]) held while the `T` tokens
    /// pass, one `vpdpbusd` a pair and token, two pairs one `packs` and one `madd`; the same
    /// exact sums and [`k_step8`]'s float steps, so the same bits.
    ///
    /// # Safety
    ///
    /// As [`vec_dot_8rows_multi`], and the CPU must support the AVX-512 features
    /// `has_avx512()` checks.
    #[target_feature(
        enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg,gfni"
    )]
    unsafe fn vec_dot_8rows_multi_512<const T: usize>(
        w: *const u8,
        nb: usize,
        a: [*const u8; T],
        out: &mut [[f32; 8]; T],
    ) {
        rows_multi_body::<T, true>(w, nb, a, out)
    }

    /// [`int_sums_multi`] on AVX-512 for the block at `bp` (hinting `ahead` bytes on): its four
    /// pair vectors ([`pair_512`]) and scale vectors held while every token's activation passes
    /// ([`k_pairs_dot_512`] a token); the same exact sums.
    ///
    /// # Safety
    ///
    /// Inlined into a caller with the AVX-512 features `has_avx512()` checks; `bp` must point
    /// to one readable Q4_K block and each of `aps` to one readable Q8_K block, `bs2[t]` being
    /// its [`k_bsum_pairs`].
    #[inline(always)]
    unsafe fn int_sums_multi_512<const T: usize>(
        bp: *const u8,
        ahead: usize,
        aps: &[*const u8; T],
        bs2: &[__m256i; T],
    ) -> ([__m256i; T], [__m256i; T]) {
        prefetch(bp, ahead);
        prefetch(bp, ahead + 64);
        prefetch(bp, ahead + 128);
        let sm = k_scales_mins(bp.add(4));
        let v = [
            pair_512(bp, 0),
            pair_512(bp, 1),
            pair_512(bp, 2),
            pair_512(bp, 3),
        ];
        let s = [k_scale_words_512(sm, 0), k_scale_words_512(sm, 2)];
        let mut iv = [_mm256_setzero_si256(); T];
        let mut mv = [_mm256_setzero_si256(); T];
        for t in 0..T {
            iv[t] = k_pairs_dot_512(&v, &s, aps[t]);
            mv[t] = _mm256_madd_epi16(sm, bs2[t]);
        }
        (iv, mv)
    }

    /// The body of [`vec_dot_8rows_multi`] (`WIDE` false: [`int_sums_multi`]) and
    /// [`vec_dot_8rows_multi_512`] (`WIDE`: [`int_sums_multi_512`]).
    ///
    /// # Safety
    ///
    /// As [`vec_dot_8rows_multi`]; inlined into a caller with the features `WIDE` needs.
    #[inline(always)]
    unsafe fn rows_multi_body<const T: usize, const WIDE: bool>(
        w: *const u8,
        nb: usize,
        a: [*const u8; T],
        out: &mut [[f32; 8]; T],
    ) {
        let mut acc = [_mm256_setzero_ps(); T];
        for i in 0..nb {
            let aps: [*const u8; T] = std::array::from_fn(|t| a[t].add(i * q8_k::BLOCK_BYTES));
            let bs2: [__m256i; T] = std::array::from_fn(|t| k_bsum_pairs(aps[t]));
            let mut dh = [0u16; 8];
            let mut dmh = [0u16; 8];
            // Left uninitialised, then every entry written: zeroed arrays of vectors became a
            // memset per super-block (6 % of a Q4_K prefill), arrays built by `from_fn` a copy.
            let mut iv = [[MaybeUninit::<__m256i>::uninit(); 8]; T];
            let mut mv = [[MaybeUninit::<__m256i>::uninit(); 8]; T];
            for r in 0..8 {
                // Block i of row r; hinted ahead: two columns (packed, the next in the stream)
                // or two blocks of the row (row-major).
                let bp = w.add((8 * i + r) * BLOCK_BYTES);
                let (ivs, mvs) = if WIDE {
                    int_sums_multi_512::<T>(bp, 16 * BLOCK_BYTES, &aps, &bs2)
                } else {
                    int_sums_multi::<T>(&unpack(bp, 16 * BLOCK_BYTES), &aps, &bs2)
                };
                for t in 0..T {
                    iv[t][r].write(ivs[t]);
                    mv[t][r].write(mvs[t]);
                }
                dh[r] = (bp as *const u16).read_unaligned();
                dmh[r] = (bp.add(2) as *const u16).read_unaligned();
            }
            for t in 0..T {
                // SAFETY: the loop above wrote all eight entries of iv[t] and mv[t];
                // MaybeUninit<__m256i> has __m256i's layout.
                let (iv, mv) = (
                    &*(iv[t].as_ptr() as *const [__m256i; 8]),
                    &*(mv[t].as_ptr() as *const [__m256i; 8]),
                );
                let da = _mm256_set1_ps((aps[t] as *const f32).read_unaligned());
                acc[t] = _mm256_add_ps(acc[t], k_step8(iv, mv, &dh, &dmh, da));
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(o.as_mut_ptr(), a);
        }
    }

    /// One row against eight activations ([`k_multi8`] over the nibbles).
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
        k_multi8(w, nb, BLOCK_BYTES, a, |bp, c| multi8_runs(bp, c))
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

    /// Chunk `c`'s two runs of the block at `bp`: its low and its high nibbles.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 (callers check `has_avx2()` first); `bp` must point to one
    /// readable Q4_K block and `c` be below 4.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn multi8_runs(bp: *const u8, c: usize) -> (__m256i, __m256i) {
        let m4 = _mm256_set1_epi8(0x0F);
        let q = _mm256_loadu_si256(bp.add(16 + 32 * c) as *const __m256i);
        (
            _mm256_and_si256(q, m4),
            _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
        )
    }

    /// One row against `T` activations, super-block by super-block (see [`superblock_multi`]);
    /// each token's sum accumulates in [`vec_dot`]'s order.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); each of `a`
    /// must hold at least as many activation blocks as `w` holds whole weight blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot_multi<const T: usize>(w: &[u8], a: [&[u8]; T]) -> [f32; T] {
        let _frame = align_frame();
        let nb = w.len() / BLOCK_BYTES;
        let mut sum = [0f32; T];
        for i in 0..nb {
            let aps = std::array::from_fn(|t| a[t].as_ptr().add(i * q8_k::BLOCK_BYTES));
            let sb = superblock_multi::<T>(w.as_ptr().add(i * BLOCK_BYTES), aps);
            for (s, v) in sum.iter_mut().zip(sb) {
                *s += v;
            }
        }
        sum
    }

    /// Per super-block: exact integer sums (scales unpacked with word operations, the mins
    /// term from `bsums` in one `madd`), then the same float steps as the scalar reference,
    /// eight super-blocks at a time ([`k_vec_dot`]).
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
        let nb = w.len() / BLOCK_BYTES;
        k_vec_dot(w.as_ptr(), a.as_ptr(), nb, BLOCK_BYTES, |bp, ap| {
            int_sums(&unpack(bp, 2 * BLOCK_BYTES), ap, k_bsum_pairs(ap))
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
            let o = dst.as_mut_ptr().add(i * QK_K);
            for c in 0..4 {
                let q = _mm256_loadu_si256(b.as_ptr().add(16 + 32 * c) as *const __m256i);
                let lo = _mm256_and_si256(q, _mm256_set1_epi8(0x0F));
                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0x0F));
                for (h, v) in [lo, hi].into_iter().enumerate() {
                    let j = 2 * c + h;
                    let dl = _mm256_set1_ps(d * sc[j] as f32);
                    let ml = _mm256_set1_ps(dmin * m[j] as f32);
                    store_u8x32_affine(v, dl, ml, o.add(32 * j));
                }
            }
        }
    }

    /// Store 32 unsigned bytes q as `dl*q - ml` (multiply then subtract, no fusing).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `o` must be
    /// writable for 32 `f32`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn store_u8x32_affine(v: __m256i, dl: __m256, ml: __m256, o: *mut f32) {
        let lo = _mm256_castsi256_si128(v);
        let hi = _mm256_extracti128_si256(v, 1);
        let parts = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
        for (k, part) in parts.iter().enumerate() {
            let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(*part));
            _mm256_storeu_ps(o.add(8 * k), _mm256_sub_ps(_mm256_mul_ps(dl, f), ml));
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::*;
    use crate::common::neon::*;
    use std::arch::aarch64::*;

    /// `Σ_j m_j·(bsum_2j + bsum_2j+1)` of a Q8_K block, exact for any group sums: each of
    /// the sixteen times its sub-block's min with widening multiplies into i32. Shared with
    /// Q5_K.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `ap` must point to one
    /// readable Q8_K block.
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn mins_sum(ap: *const u8, m: &[u8; 8]) -> i32 {
        let bs = ap.add(q8_k::BSUMS_OFF) as *const i16;
        let (b0, b1) = (vld1q_s16(bs), vld1q_s16(bs.add(8)));
        let mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(m.as_ptr())));
        // Each min twice in a row, for the two group sums of its sub-block.
        let (m0, m1) = (vzip1q_s16(mins, mins), vzip2q_s16(mins, mins));
        let p = vmull_s16(vget_low_s16(b0), vget_low_s16(m0));
        let p = vmlal_high_s16(p, b0, m0);
        let p = vmlal_s16(p, vget_low_s16(b1), vget_low_s16(m1));
        vaddvq_s32(vmlal_high_s16(p, b1, m1))
    }

    /// A Q4_K/Q5_K row (`block_bytes` per super-block) against Q8_K blocks, bit-exact with
    /// the scalar references: per super-block `Σ m·bsum` exact ([`mins_sum`]) and `Σ sc·q·y`
    /// exact from `isum(block, activation quants, scales)`, then `d_a·d·isum −
    /// d_a·dmin·summ` added in block order, the references' float steps.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `a` must hold at least as
    /// many Q8_K blocks as `w` holds whole weight blocks, and `isum` must read only inside the
    /// blocks it is given.
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn k_vec_dot(
        w: &[u8],
        a: &[u8],
        block_bytes: usize,
        isum: impl Fn(*const u8, *const u8, &[u8; 8]) -> i32,
    ) -> f32 {
        let nb = w.len() / block_bytes;
        let mut sum = 0.0f32;
        for i in 0..nb {
            let b = &w[i * block_bytes..(i + 1) * block_bytes];
            let ap = a.as_ptr().add(i * q8_k::BLOCK_BYTES);
            let (sc, m) = unpack_scales(&b[4..16]);
            let summ = mins_sum(ap, &m);
            let isum = isum(b.as_ptr(), ap.add(q8_k::QS_OFF), &sc);
            let da = q8_k::d_of(&a[i * q8_k::BLOCK_BYTES..]);
            sum += da * f16_load(b.as_ptr()) * isum as f32
                - da * f16_load(b.as_ptr().add(2)) * summ as f32;
        }
        sum
    }

    /// Bit-exact with [`super::vec_dot_scalar`] ([`k_vec_dot`] over the nibbles' exact sums).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `a` must hold at least as
    /// many Q8_K blocks as `w` holds whole weight blocks.
    #[target_feature(enable = "neon")]
    pub unsafe fn vec_dot(w: &[u8], a: &[u8]) -> f32 {
        k_vec_dot(w, a, BLOCK_BYTES, |b, yp, sc| {
            let y = |k: usize| vld1q_s8(yp.add(16 * k) as *const i8);
            let mut acc = vdupq_n_s32(0);
            for c in 0..4 {
                let (lo0, hi0) = nibbles(b.add(16 + 32 * c));
                let (lo1, hi1) = nibbles(b.add(32 + 32 * c));
                let zero = vdupq_n_s32(0);
                let s1 = dot16(
                    dot16(zero, vreinterpretq_s8_u8(lo0), y(4 * c)),
                    vreinterpretq_s8_u8(lo1),
                    y(4 * c + 1),
                );
                let s2 = dot16(
                    dot16(zero, vreinterpretq_s8_u8(hi0), y(4 * c + 2)),
                    vreinterpretq_s8_u8(hi1),
                    y(4 * c + 3),
                );
                acc = vmlaq_n_s32(acc, s1, sc[2 * c] as i32);
                acc = vmlaq_n_s32(acc, s2, sc[2 * c + 1] as i32);
            }
            vaddvq_s32(acc)
        })
    }

    /// Bit-exact with [`super::dequantize_scalar`] (`d·sc·q − dmin·m`, the per-sub-block
    /// factors in scalar, multiply then subtract).
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
            for c in 0..4 {
                for h in 0..2 {
                    let (lo, hi) = nibbles(b.as_ptr().add(16 + 32 * c + 16 * h));
                    for (s, q) in [lo, hi].into_iter().enumerate() {
                        let j = 2 * c + s;
                        let dl = vdupq_n_f32(d * sc[j] as f32);
                        let ml = vdupq_n_f32(dmin * m[j] as f32);
                        store_u8x16_affine(q, dl, ml, o.add(32 * j + 16 * h));
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::store_u8x32_affine;
#[cfg(target_arch = "aarch64")]
pub(crate) use neon::k_vec_dot as neon_k_vec_dot;
