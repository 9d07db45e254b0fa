//! Helpers shared by the quantizers and kernels: rounding, scale searches, f16 access and CPU
//! feature detection.

use half::f16;

/// Round half away from zero (C's `roundf`), as ggml's reference quantizers do.
#[inline]
pub(crate) fn round_away(x: f32) -> f32 {
    x.round()
}

/// Float to small unsigned level the way ggml's reference (x86 C) and gguf-py's numpy casts
/// behave: truncation toward zero, and 0 for a non-finite value (a scale so small that its
/// inverse overflows makes every product infinite or NaN; both references then store 0).
#[inline]
pub(crate) fn trunc_level(v: f32) -> u8 {
    if v.is_finite() {
        v as u8
    } else {
        0
    }
}

/// Round half away from zero to i8, 0 for a non-finite value (see [`trunc_level`]).
#[inline]
pub(crate) fn round_level_i8(v: f32) -> i8 {
    if v.is_finite() {
        round_away(v) as i8
    } else {
        0
    }
}

/// Read a little-endian f16 at `off` and widen it.
#[inline]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Whether AVX2, FMA and F16C are available (detected once).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        std::env::var_os("QUANT_FORCE_SCALAR").is_none()
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// Per-element weights for a block: the importance weights scaled by the value's magnitude
/// (ggml's `qw * sqrt(sigma2 + x^2)`) when given, else a magnitude-based default.
pub(crate) fn element_weights(x: &[f32], imatrix: Option<&[f32]>, sigma2: f32, out: &mut [f32]) {
    match imatrix {
        Some(qw) => {
            for ((o, &v), &q) in out.iter_mut().zip(x).zip(qw) {
                *o = q * (sigma2 + v * v).sqrt();
            }
        }
        None => {
            let av = (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
            for (o, &v) in out.iter_mut().zip(x) {
                *o = av + v.abs();
            }
        }
    }
}

/// Mean square of `x` times 2 (ggml's `sigma2` for importance weighting).
pub(crate) fn sigma2(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    2.0 * x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32
}

/// Symmetric scale search: find `d` and integers `l` in `[lo, hi]` with `x ≈ d*l`, minimising
/// `Σ w (x - d l)²`. Candidate inverse scales around `lo/max` and `hi/max` are tried; for each,
/// the least-squares optimal `d` for the resulting `l` is taken. Returns `d`; `l` is filled.
pub(crate) fn search_scale_signed(x: &[f32], w: &[f32], lo: i32, hi: i32, l: &mut [i32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-30 || !amax.is_finite() {
        l.iter_mut().for_each(|q| *q = 0);
        return 0.0;
    }
    let mut best_score = -1.0f32; // sumlx^2 / suml2, larger is better
    let mut best_d = 0.0f32;
    let mut cand = vec![0i32; x.len()];
    let mut try_scale = |iscale: f32, l: &mut [i32], best_score: &mut f32, best_d: &mut f32| {
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for ((c, &v), &wi) in cand.iter_mut().zip(x).zip(w) {
            let q = (round_away(iscale * v) as i32).clamp(lo, hi);
            *c = q;
            sumlx += wi * v * q as f32;
            suml2 += wi * (q * q) as f32;
        }
        if suml2 > 0.0 {
            let score = sumlx * sumlx / suml2;
            if score > *best_score {
                *best_score = score;
                *best_d = sumlx / suml2;
                l.copy_from_slice(&cand);
            }
        }
    };
    for base in [lo as f32, hi as f32] {
        for step in -9..=9 {
            let iscale = (base + 0.1 * step as f32 * base.signum()) / max;
            try_scale(iscale, l, &mut best_score, &mut best_d);
        }
    }
    if best_score < 0.0 {
        // All weights zero: fall back to plain max scaling.
        let iscale = lo as f32 / max;
        for (q, &v) in l.iter_mut().zip(x) {
            *q = (round_away(iscale * v) as i32).clamp(lo, hi);
        }
        return 1.0 / iscale;
    }
    best_d
}

/// Asymmetric scale+offset search: `x ≈ scale*l + min` with `l` in `[0, nmax]`, minimising the
/// weighted squared error. With `clamp_min`, `min` is kept `<= 0` (K-quants store `-min`).
/// Returns `(scale, min)`; `l` is filled.
pub(crate) fn search_scale_min(
    x: &[f32],
    w: &[f32],
    nmax: i32,
    clamp_min: bool,
    l: &mut [i32],
) -> (f32, f32) {
    let mut min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if clamp_min && min > 0.0 {
        min = 0.0;
    }
    if max.is_nan() || min.is_nan() || max <= min || !(max - min).is_finite() {
        l.iter_mut().for_each(|q| *q = 0);
        return (0.0, if min.is_finite() { min } else { 0.0 });
    }
    let err_of = |scale: f32, mn: f32, l: &[i32]| -> f32 {
        x.iter()
            .zip(w)
            .zip(l)
            .map(|((&v, &wi), &q)| {
                let e = scale * q as f32 + mn - v;
                wi * e * e
            })
            .sum()
    };
    let iscale0 = nmax as f32 / (max - min);
    for (q, &v) in l.iter_mut().zip(x) {
        *q = (round_away(iscale0 * (v - min)) as i32).clamp(0, nmax);
    }
    let mut best = (1.0 / iscale0, min);
    let mut best_err = err_of(best.0, best.1, l);
    let mut cand = vec![0i32; x.len()];
    for step in 0..=20 {
        let iscale = (nmax as f32 - 1.0 + 0.1 * step as f32) / (max - min);
        let (mut sw, mut sl, mut sl2, mut sx, mut sxl) = (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for ((c, &v), &wi) in cand.iter_mut().zip(x).zip(w) {
            let q = (round_away(iscale * (v - min)) as i32).clamp(0, nmax);
            *c = q;
            let qf = q as f32;
            sw += wi;
            sl += wi * qf;
            sl2 += wi * qf * qf;
            sx += wi * v;
            sxl += wi * v * qf;
        }
        let det = sw * sl2 - sl * sl;
        if det <= 0.0 {
            continue;
        }
        let mut scale = (sw * sxl - sx * sl) / det;
        let mut mn = (sl2 * sx - sl * sxl) / det;
        if clamp_min && mn > 0.0 {
            mn = 0.0;
            scale = if sl2 > 0.0 { sxl / sl2 } else { 0.0 };
        }
        if scale.is_nan() || scale < 0.0 || !scale.is_finite() || !mn.is_finite() {
            continue;
        }
        let err = err_of(scale, mn, &cand);
        if err < best_err {
            best_err = err;
            best = (scale, mn);
            l.copy_from_slice(&cand);
        }
    }
    best
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn hsum_ps(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn hsum_epi32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// f16 bits at `p` (unaligned) widened with F16C.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn f16_load(p: *const u8) -> f32 {
        let bits = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// 16 packed bytes of nibbles -> 32 bytes: low nibbles in the low lane, high in the high lane.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn unpack_nibbles_16(p: *const u8) -> __m256i {
        let b = _mm_loadu_si128(p as *const __m128i);
        let m = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(b, m);
        let hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
        _mm256_set_m128i(hi, lo)
    }

    /// 32 bits -> 32 bytes, 0xFF where the bit is set (bit i -> byte i).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn bits_to_bytes(bits: u32) -> __m256i {
        let v = _mm256_set1_epi32(bits as i32);
        let shuf = _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0x0000000000000000,
        );
        let bytes = _mm256_shuffle_epi8(v, shuf);
        let mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe_u64 as i64);
        _mm256_cmpeq_epi8(_mm256_or_si256(bytes, mask), _mm256_set1_epi64x(-1))
    }
}
