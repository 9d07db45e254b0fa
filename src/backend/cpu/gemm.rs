//! A small f32 GEMM micro-kernel for batched prefill: a tile of weight rows (already
//! dequantized to f32) times a batch of token rows, `out[r][t] = Σ_i w[r][i]·x[t][i]`.
//! AVX2+FMA computes 2 rows × 4 tokens per pass with 8 accumulators; the scalar path is the
//! reference.

/// `w`: `rows × n`, `x`: `tokens × n`, `out`: `rows × tokens`.
pub fn gemm_tile(w: &[f32], x: &[f32], n: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the features are present; the slices' lengths are checked inside.
        unsafe { avx2::gemm_tile(w, x, n, out) };
        return;
    }
    gemm_tile_scalar(w, x, n, out);
}

/// Scalar reference of [`gemm_tile`].
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

    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA (callers check `is_x86_feature_detected!` first); nothing
    /// else (registers only).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Dot products of `nr` (≤ 2) weight rows with `nt` (≤ 4) token rows. Index loops keep the
    /// register tile explicit.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA (callers check `is_x86_feature_detected!` first); rows
    /// `r0..r0+nr` of `w` and `t0..t0+nt` of `x` (each `n` long) must lie inside the slices, `nr ≤
    /// 2`, `nt ≤ 4`.
    #[inline]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block(
        w: &[f32],
        x: &[f32],
        n: usize,
        r0: usize,
        nr: usize,
        t0: usize,
        nt: usize,
        res: &mut [[f32; 4]; 2],
    ) {
        let mut acc = [[_mm256_setzero_ps(); 4]; 2];
        let n8 = n / 8 * 8;
        let wp = w.as_ptr();
        let xp = x.as_ptr();
        let mut i = 0;
        while i < n8 {
            let mut wv = [_mm256_setzero_ps(); 2];
            for (r, v) in wv.iter_mut().enumerate().take(nr) {
                *v = _mm256_loadu_ps(wp.add((r0 + r) * n + i));
            }
            for t in 0..nt {
                let xv = _mm256_loadu_ps(xp.add((t0 + t) * n + i));
                for r in 0..nr {
                    acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
                }
            }
            i += 8;
        }
        for r in 0..nr {
            for t in 0..nt {
                let mut s = hsum(acc[r][t]);
                for k in n8..n {
                    s += w[(r0 + r) * n + k] * x[(t0 + t) * n + k];
                }
                res[r][t] = s;
            }
        }
    }

    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA (callers check `is_x86_feature_detected!` first); nothing
    /// else (sizes are asserted).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)]
    pub unsafe fn gemm_tile(w: &[f32], x: &[f32], n: usize, out: &mut [f32]) {
        let rows = w.len() / n;
        let tokens = x.len() / n;
        assert!(out.len() >= rows * tokens && w.len() == rows * n && x.len() == tokens * n);
        let mut res = [[0f32; 4]; 2];
        for r0 in (0..rows).step_by(2) {
            let nr = (rows - r0).min(2);
            for t0 in (0..tokens).step_by(4) {
                let nt = (tokens - t0).min(4);
                block(w, x, n, r0, nr, t0, nt, &mut res);
                for r in 0..nr {
                    for t in 0..nt {
                        out[(r0 + r) * tokens + t0 + t] = res[r][t];
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
        for (rows, tokens, n) in [(1, 1, 8), (3, 5, 40), (16, 9, 256), (2, 4, 13)] {
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
