//! The byte transpose that turns the checkpoint's `[in, out]` int8 matrices into GGUF rows.
//!
//! Kernels, picked at run time: AVX2 32×32 blocks, SSE2 16×16 blocks (every x86-64 CPU), and a
//! portable 8×8 register transpose elsewhere; scalar code does the ragged edges. All of them
//! write exactly the same bytes (tested against each other and a naive loop).

/// Where input element `i` of a row lands in a destination row: plain rows (`Plain`) or the
/// quants of Q8_0 blocks (`Q8_0`: every 32 values are preceded by a 2-byte `d`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RowLayout {
    Plain,
    Q8_0,
}

impl RowLayout {
    /// (bytes per 32 values, offset of the first value in them)
    #[inline(always)]
    fn block(self) -> (usize, usize) {
        match self {
            RowLayout::Plain => (32, 0),
            RowLayout::Q8_0 => (34, 2),
        }
    }
}

/// A transpose kernel.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kernel {
    /// 8×8 blocks in 64-bit registers (any CPU).
    #[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
    Portable,
    /// 16×16 blocks in SSE2 registers (every x86-64 CPU).
    #[cfg(target_arch = "x86_64")]
    Sse2,
    /// 32×32 blocks in AVX2 registers, SSE2 for the 16-aligned rest.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                return Kernel::Avx2;
            }
            Kernel::Sse2
        }
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Portable
    }

    /// Every kernel this CPU runs.
    #[cfg(test)]
    pub fn available() -> Vec<Kernel> {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut v = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            v.push(Kernel::Sse2);
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push(Kernel::Avx2);
            }
        }
        v
    }
}

/// `dst[r * dst_stride + col(i)] = src[i * src_stride + r]` for `i < n_in`, `r < nrows`, where
/// `col(i) = i / 32 * block + lead + i % 32` per `layout`, with the fastest kernel. Bytes of
/// `dst` outside the written columns (Q8_0 `d`s) are left as they are.
pub fn transpose_bytes(
    src: &[u8],
    src_stride: usize,
    dst: &mut [u8],
    dst_stride: usize,
    n_in: usize,
    nrows: usize,
    layout: RowLayout,
) {
    let g = Geometry {
        src_stride,
        dst_stride,
        n_in,
        nrows,
        layout,
    };
    transpose_with(Kernel::best(), src, dst, g);
}

#[derive(Clone, Copy)]
struct Geometry {
    src_stride: usize,
    dst_stride: usize,
    n_in: usize,
    nrows: usize,
    layout: RowLayout,
}

impl Geometry {
    #[inline(always)]
    fn col(&self, i: usize) -> usize {
        let (blk, lead) = self.layout.block();
        i / 32 * blk + lead + i % 32
    }
}

/// [`transpose_bytes`] with a given kernel. Panics if `kernel` does not run on this CPU or the
/// slices are too short for the geometry (a caller bug, checked before any unsafe code).
fn transpose_with(kernel: Kernel, src: &[u8], dst: &mut [u8], g: Geometry) {
    let Geometry {
        src_stride,
        dst_stride,
        n_in,
        nrows,
        ..
    } = g;
    if nrows == 0 || n_in == 0 {
        return;
    }
    // Bounds, checked once for the unchecked kernels below.
    assert!(
        (n_in - 1) * src_stride + nrows <= src.len(),
        "source too short"
    );
    assert!(
        (nrows - 1) * dst_stride + g.col(n_in - 1) < dst.len(),
        "destination too short"
    );
    assert!(
        nrows <= src_stride && g.col(n_in - 1) < dst_stride,
        "rows overlap"
    );
    let (fi, fr) = match kernel {
        Kernel::Portable => portable8(src, dst, g),
        #[cfg(target_arch = "x86_64")]
        Kernel::Sse2 => {
            let (fi, fr) = (n_in / 16 * 16, nrows / 16 * 16);
            sse2_blocks(src, dst, g, 0..fi, 0..fr);
            (fi, fr)
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            assert!(
                std::arch::is_x86_feature_detected!("avx2"),
                "AVX2 kernel on a CPU without AVX2"
            );
            let (fi, fr) = (n_in / 16 * 16, nrows / 16 * 16);
            let (ai, ar) = (n_in / 32 * 32, nrows / 32 * 32);
            // SAFETY: AVX2 is present (checked above); bounds as for the SSE2 kernel.
            unsafe { avx2_blocks(src, dst, g, ai, ar) };
            // The 16-aligned rest: rows past the 32-row part, inputs past the 32-input part.
            sse2_blocks(src, dst, g, 0..fi, ar..fr);
            sse2_blocks(src, dst, g, ai..fi, 0..ar);
            (fi, fr)
        }
    };
    // Edges: inputs past the blocked part (all rows), rows past it (blocked inputs).
    for i in 0..n_in {
        let rows = if i < fi { fr..nrows } else { 0..nrows };
        let c = g.col(i);
        for r in rows {
            dst[r * dst_stride + c] = src[i * src_stride + r];
        }
    }
}

/// Transpose the 8×8 byte matrix held in `x` (row `k` = `x[k]`, byte `j` at bits `8j`).
#[inline(always)]
fn transpose_8x8(x: &mut [u64; 8]) {
    // Swap the off-diagonal halves of 2×2, then 4×4, then 8×8 blocks (in units of 1, 2, 4 bytes).
    for (dist, mask) in [
        (1usize, 0x00FF_00FF_00FF_00FFu64),
        (2, 0x0000_FFFF_0000_FFFF),
        (4, 0x0000_0000_FFFF_FFFF),
    ] {
        let shift = 8 * dist as u32;
        for k in 0..8 {
            if k & dist == 0 {
                let t = ((x[k] >> shift) ^ x[k + dist]) & mask;
                x[k + dist] ^= t;
                x[k] ^= t << shift;
            }
        }
    }
}

/// The portable kernel: 8×8 register blocks in 64×64 tiles. Returns how many leading inputs
/// and rows it wrote.
fn portable8(src: &[u8], dst: &mut [u8], g: Geometry) -> (usize, usize) {
    const TILE: usize = 64;
    let (fi, fr) = (g.n_in / 8 * 8, g.nrows / 8 * 8);
    for i0 in (0..fi).step_by(TILE) {
        let i1 = (i0 + TILE).min(fi);
        for r0 in (0..fr).step_by(TILE) {
            let r1 = (r0 + TILE).min(fr);
            for i in (i0..i1).step_by(8) {
                let c = g.col(i);
                for r in (r0..r1).step_by(8) {
                    let mut x = [0u64; 8];
                    for (k, v) in x.iter_mut().enumerate() {
                        let at = (i + k) * g.src_stride + r;
                        *v = u64::from_le_bytes(src[at..at + 8].try_into().expect("8 bytes"));
                    }
                    transpose_8x8(&mut x);
                    for (k, v) in x.iter().enumerate() {
                        let at = (r + k) * g.dst_stride + c;
                        dst[at..at + 8].copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
    }
    (fi, fr)
}

/// SSE2 16×16 blocks over inputs `is` × rows `rs` (both 16-aligned ranges inside the checked
/// bounds of [`transpose_with`]).
#[cfg(target_arch = "x86_64")]
fn sse2_blocks(
    src: &[u8],
    dst: &mut [u8],
    g: Geometry,
    is: std::ops::Range<usize>,
    rs: std::ops::Range<usize>,
) {
    // Tiles of 64 inputs × all rows keep the source lines of a tile in L1 while every row's
    // destination is written sequentially.
    for i0 in is.clone().step_by(64) {
        let i1 = (i0 + 64).min(is.end);
        for r in rs.clone().step_by(16) {
            for i in (i0..i1).step_by(16) {
                let c = g.col(i);
                // SAFETY: `transpose_with` checked `(n_in - 1) * src_stride + nrows <=
                // src.len()` and `(nrows - 1) * dst_stride + col(n_in - 1) < dst.len()`; here
                // `i + 15 < n_in` and `r + 15 < nrows`, and the 16 values at `col(i)` are
                // contiguous (`i % 32` is 0 or 16), so every load `src[(i + k) * src_stride + r
                // .. + 16]` and store `dst[(r + k) * dst_stride + c .. + 16]` is in bounds. SSE2
                // is part of x86-64.
                unsafe {
                    transpose16_sse2(
                        src.as_ptr().add(i * g.src_stride + r),
                        g.src_stride,
                        dst.as_mut_ptr().add(r * g.dst_stride + c),
                        g.dst_stride,
                    )
                };
            }
        }
    }
}

/// Transpose a 16×16 byte block: `dst[k * dst_stride + j] = src[j * src_stride + k]`.
///
/// # Safety
/// `src + j * src_stride .. + 16` must be readable and `dst + k * dst_stride .. + 16` writable
/// for `j, k < 16`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transpose16_sse2(src: *const u8, src_stride: usize, dst: *mut u8, dst_stride: usize) {
    use std::arch::x86_64::*;
    let mut a = [_mm_setzero_si128(); 16];
    for (j, v) in a.iter_mut().enumerate() {
        *v = _mm_loadu_si128(src.add(j * src_stride) as *const __m128i);
    }
    // Interleaving rows j and j + 8 byte-wise rotates the 8-bit index (row, column) left by
    // one bit; four rounds swap row and column.
    for _ in 0..4 {
        let mut t = [_mm_setzero_si128(); 16];
        for j in 0..8 {
            t[2 * j] = _mm_unpacklo_epi8(a[j], a[j + 8]);
            t[2 * j + 1] = _mm_unpackhi_epi8(a[j], a[j + 8]);
        }
        a = t;
    }
    for (k, v) in a.iter().enumerate() {
        _mm_storeu_si128(dst.add(k * dst_stride) as *mut __m128i, *v);
    }
}

/// AVX2 32×32 blocks over inputs `0..ai` × rows `0..ar` (multiples of 32).
///
/// # Safety
/// AVX2 must be available; `transpose_with` must have checked the bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_blocks(src: &[u8], dst: &mut [u8], g: Geometry, ai: usize, ar: usize) {
    for i0 in (0..ai).step_by(64) {
        let i1 = (i0 + 64).min(ai);
        for r in (0..ar).step_by(32) {
            for i in (i0..i1).step_by(32) {
                let c = g.col(i);
                // SAFETY: as in `sse2_blocks`, with `i + 31 < n_in`, `r + 31 < nrows` and the
                // 32 values at `col(i)` contiguous (`i % 32 == 0`).
                unsafe {
                    transpose32_avx2(
                        src.as_ptr().add(i * g.src_stride + r),
                        g.src_stride,
                        dst.as_mut_ptr().add(r * g.dst_stride + c),
                        g.dst_stride,
                    )
                };
            }
        }
    }
}

/// Transpose a 32×32 byte block: `dst[k * dst_stride + j] = src[j * src_stride + k]`.
///
/// # Safety
/// AVX2 must be available; `src + j * src_stride .. + 32` readable and `dst + k * dst_stride ..
/// + 32` writable for `j, k < 32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn transpose32_avx2(src: *const u8, src_stride: usize, dst: *mut u8, dst_stride: usize) {
    use std::arch::x86_64::*;
    let lo = transpose16_lanes_avx2(src, src_stride);
    let hi = transpose16_lanes_avx2(src.add(16 * src_stride), src_stride);
    for k in 0..16 {
        // Column k: source rows 0..16 from `lo`'s lane 0, rows 16..32 from `hi`'s lane 0.
        let col_k = _mm256_permute2x128_si256::<0x20>(lo[k], hi[k]);
        let col_k16 = _mm256_permute2x128_si256::<0x31>(lo[k], hi[k]);
        _mm256_storeu_si256(dst.add(k * dst_stride) as *mut __m256i, col_k);
        _mm256_storeu_si256(dst.add((k + 16) * dst_stride) as *mut __m256i, col_k16);
    }
}

/// Load 16 source rows of 32 bytes and let each 128-bit lane run the SSE2 16×16 transpose on
/// its own: lane 0 of result `k` is column `k`, lane 1 is column `16 + k`, over the 16 rows.
///
/// # Safety
/// AVX2 must be available; `src + j * src_stride .. + 32` readable for `j < 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn transpose16_lanes_avx2(
    src: *const u8,
    src_stride: usize,
) -> [std::arch::x86_64::__m256i; 16] {
    use std::arch::x86_64::*;
    let mut a = [_mm256_setzero_si256(); 16];
    for (j, v) in a.iter_mut().enumerate() {
        *v = _mm256_loadu_si256(src.add(j * src_stride) as *const __m256i);
    }
    for _ in 0..4 {
        let mut t = [_mm256_setzero_si256(); 16];
        for j in 0..8 {
            t[2 * j] = _mm256_unpacklo_epi8(a[j], a[j + 8]);
            t[2 * j + 1] = _mm256_unpackhi_epi8(a[j], a[j + 8]);
        }
        a = t;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `transpose_bytes` must write, element by element.
    fn naive(src: &[u8], stride: usize, n_in: usize, nrows: usize, layout: RowLayout) -> Vec<u8> {
        let (blk, lead) = layout.block();
        let dst_stride = n_in.div_ceil(32) * blk;
        let mut dst = vec![0xA5u8; nrows * dst_stride];
        for r in 0..nrows {
            for i in 0..n_in {
                dst[r * dst_stride + i / 32 * blk + lead + i % 32] = src[i * stride + r];
            }
        }
        dst
    }

    #[test]
    fn every_kernel_matches_naive_on_ragged_sizes() {
        // Sizes around the 8/16/32-element blocks and the 64-input tile, both layouts.
        let kernels = Kernel::available();
        eprintln!("kernels: {kernels:?}, best {:?}", Kernel::best());
        for (n_in, nrows, stride) in [
            (1, 1, 1),
            (8, 8, 8),
            (13, 21, 30),
            (16, 16, 16),
            (32, 17, 33),
            (32, 32, 32),
            (64, 64, 70),
            (96, 48, 48),
            (96, 80, 100),
            (130, 75, 75),
            (160, 131, 200),
            (192, 112, 113),
            (256, 64, 4096),
            (512, 544, 4128),
        ] {
            let src: Vec<u8> = (0..n_in * stride)
                .map(|x| (x * 7 + x / 251) as u8)
                .collect();
            for layout in [RowLayout::Plain, RowLayout::Q8_0] {
                if layout == RowLayout::Q8_0 && n_in % 32 != 0 {
                    continue;
                }
                let want = naive(&src, stride, n_in, nrows, layout);
                let g = Geometry {
                    src_stride: stride,
                    dst_stride: want.len() / nrows,
                    n_in,
                    nrows,
                    layout,
                };
                for &k in &kernels {
                    let mut dst = vec![0xA5u8; want.len()];
                    transpose_with(k, &src, &mut dst, g);
                    assert_eq!(dst, want, "{k:?} {n_in} {nrows} {stride} {layout:?}");
                }
                let mut dst = vec![0xA5u8; want.len()];
                transpose_bytes(&src, stride, &mut dst, g.dst_stride, n_in, nrows, layout);
                assert_eq!(dst, want, "best {n_in} {nrows} {stride} {layout:?}");
            }
        }
    }
}
