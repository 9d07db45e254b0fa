//! A small f32 GEMM micro-kernel for batched prefill: a tile of weight rows (already
//! dequantized to f32) times a batch of token rows, `out[r][t] = Σ_i w[r][i]·x[t][i]`.
//! AVX2+FMA: k-blocked (256), tokens packed k-major 16 at a time ([`PackedTokens`], once per
//! matmul and shared by every row tile), a 6-row × 16-token register tile (12 accumulators,
//! weights broadcast); the scalar path is the reference.

/// Elements of the k dimension per pass (the AVX2 kernel's; the packing is the same without).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const KC: usize = 256;
/// Tokens per register tile (two 8-lane vectors).
const NR: usize = 16;

/// The batch `x` (`tokens × n`) packed for [`gemm_tile_packed`]: for each group of 16 tokens
/// and each k block of 256, the block's values k-major, 16 tokens per k (zeros past the last
/// token). Packing once per matmul instead of once per row tile: at 128 tokens of 2048 the
/// packing cost as much as a 32-row tile's arithmetic.
pub struct PackedTokens {
    data: Vec<f32>,
    n: usize,
    tokens: usize,
}

impl PackedTokens {
    pub fn new(x: &[f32], n: usize) -> PackedTokens {
        let tokens = x.len().checked_div(n).unwrap_or(0);
        let groups = tokens.div_ceil(NR);
        let mut data = vec![0f32; groups * n * NR];
        for g in 0..groups {
            let nt = NR.min(tokens - g * NR);
            let base = g * n * NR;
            for j in 0..nt {
                let xr = &x[(g * NR + j) * n..(g * NR + j + 1) * n];
                for (k, v) in xr.iter().enumerate() {
                    // Block k0 = k / KC starts at base + k0·KC·NR; inside it k-major.
                    data[base + k * NR + j] = *v;
                }
            }
        }
        PackedTokens { data, n, tokens }
    }
}

/// `w`: `rows × n`, `x`: `tokens × n`, `out`: `rows × tokens`.
#[cfg(test)]
pub fn gemm_tile(w: &[f32], x: &[f32], n: usize, out: &mut [f32]) {
    gemm_tile_packed(w, &PackedTokens::new(x, n), out);
}

/// [`gemm_tile`] with the batch already packed.
pub fn gemm_tile_packed(w: &[f32], x: &PackedTokens, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the features are present; the slices' lengths are checked inside.
        unsafe { avx2::gemm_tile(w, x, out) };
        return;
    }
    let n = x.n;
    let tokens = x.tokens;
    for (r, wr) in w.chunks_exact(n.max(1)).enumerate() {
        for t in 0..tokens {
            let (g, j) = (t / NR, t % NR);
            let p = &x.data[g * n * NR..(g + 1) * n * NR];
            out[r * tokens + t] = wr.iter().enumerate().map(|(k, a)| a * p[k * NR + j]).sum();
        }
    }
}

/// Scalar reference of [`gemm_tile`].
#[cfg(test)]
pub fn gemm_tile_scalar(w: &[f32], x: &[f32], n: usize, out: &mut [f32]) {
    let tokens = x.len() / n;
    for (r, wr) in w.chunks_exact(n).enumerate() {
        for (t, xt) in x.chunks_exact(n).enumerate() {
            out[r * tokens + t] = wr.iter().zip(xt).map(|(a, b)| a * b).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{PackedTokens, KC, NR};

    /// Weight rows per register tile (6 × 2 accumulators + 2 token vectors + 1 broadcast).
    const MR: usize = 6;

    /// `acc[r] = Σ_k w[r][k0 + k] · pack[k][0..16]` for `M` rows: the packed token slice
    /// (k-major, 16 tokens per k) is loaded once per k and multiplied by each row's weight,
    /// broadcast, into 2·M accumulators.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA (callers check `is_x86_feature_detected!` first);
    /// `w + r·n + k` must be readable for r < M, k < kc, and `pack` must hold `kc · 16` floats.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn micro<const M: usize>(
        w: *const f32,
        n: usize,
        pack: *const f32,
        kc: usize,
        res: &mut [[f32; NR]; MR],
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; M];
        for k in 0..kc {
            let x0 = _mm256_loadu_ps(pack.add(k * NR));
            let x1 = _mm256_loadu_ps(pack.add(k * NR + 8));
            for (r, a) in acc.iter_mut().enumerate() {
                let b = _mm256_broadcast_ss(&*w.add(r * n + k));
                a[0] = _mm256_fmadd_ps(b, x0, a[0]);
                a[1] = _mm256_fmadd_ps(b, x1, a[1]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(res[r].as_mut_ptr(), a[0]);
            _mm256_storeu_ps(res[r].as_mut_ptr().add(8), a[1]);
        }
    }

    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA (callers check `is_x86_feature_detected!` first); nothing
    /// else (sizes are asserted).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)]
    pub unsafe fn gemm_tile(w: &[f32], x: &PackedTokens, out: &mut [f32]) {
        let n = x.n;
        let tokens = x.tokens;
        let rows = w.len().checked_div(n).unwrap_or(0);
        assert!(out.len() >= rows * tokens && w.len() == rows * n);
        assert!(x.data.len() >= tokens.div_ceil(NR) * n * NR);
        out[..rows * tokens].iter_mut().for_each(|o| *o = 0.0);
        let mut res = [[0f32; NR]; MR];
        for k0 in (0..n).step_by(KC) {
            let kc = KC.min(n - k0);
            for t0 in (0..tokens).step_by(NR) {
                let nt = NR.min(tokens - t0);
                // Group t0/NR's block at k0: kc rows of 16 tokens, contiguous.
                let pp = x.data.as_ptr().add((t0 / NR) * n * NR + k0 * NR);
                for r0 in (0..rows).step_by(MR) {
                    let mr = MR.min(rows - r0);
                    let wp = w.as_ptr().add(r0 * n + k0);
                    match mr {
                        6 => micro::<6>(wp, n, pp, kc, &mut res),
                        5 => micro::<5>(wp, n, pp, kc, &mut res),
                        4 => micro::<4>(wp, n, pp, kc, &mut res),
                        3 => micro::<3>(wp, n, pp, kc, &mut res),
                        2 => micro::<2>(wp, n, pp, kc, &mut res),
                        _ => micro::<1>(wp, n, pp, kc, &mut res),
                    }
                    for r in 0..mr {
                        let o = &mut out[(r0 + r) * tokens + t0..(r0 + r) * tokens + t0 + nt];
                        for (ov, rv) in o.iter_mut().zip(&res[r]) {
                            *ov += rv;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_matches_scalar_on_odd_shapes() {
        for (rows, tokens, n) in [
            (1, 1, 8),
            (3, 5, 40),
            (16, 9, 256),
            (2, 4, 13),
            (5, 7, 777),
            (32, 33, 2048),
        ] {
            let w: Vec<f32> = (0..rows * n)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
                .collect();
            let x: Vec<f32> = (0..tokens * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.3)
                .collect();
            let mut a = vec![0f32; rows * tokens];
            let mut b = vec![0f32; rows * tokens];
            gemm_tile(&w, &x, n, &mut a);
            gemm_tile_scalar(&w, &x, n, &mut b);
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() <= 1e-4 * q.abs().max(1.0), "{p} vs {q}");
            }
        }
    }
}
