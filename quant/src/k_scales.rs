//! Q4_K/Q5_K super-block scales: the eight sub-block scales (and, separately, the eight mins)
//! are stored as 6-bit multiples of one f16 (`d`, `dmin`). This module chooses those
//! multiples: a weighted search for the shared step, then, once `d` and `dmin` are rounded to
//! f16, a local search of each sub-block's pair of 6-bit codes on the sub-block's actual
//! weighted error.

#[cfg(target_arch = "x86_64")]
use crate::common::has_avx2;
use crate::common::{level, round_away};
use half::f16;

/// Largest 6-bit code.
const CODE_MAX: i32 = 63;
/// Scale codes tried on each side of the first choice by [`settle_codes`].
const SETTLE_RADIUS: i32 = 3;
/// Steps tried around `CODE_MAX / max` by [`quantize_codes`], in tenths of a code.
const STEPS: i32 = 10;

/// Codes `c_j` in `0..=63` and a step `d` with `v_j ≈ d·c_j` for the non-negative values `v`,
/// minimising `Σ wt_j (v_j − d·c_j)²`. Inverse steps `(63 + k/10) / max v` for `|k| ≤ 10` are
/// tried (each with its least-squares `d`), then single codes are moved by ±1 while that lowers
/// the error. Returns `(0, zeros)` when no value is positive or one is infinite; when every
/// weight is 0, the plain rule `d = max/63`, codes rounded.
pub(crate) fn quantize_codes(v: &[f32; 8], wt: &[f32; 8]) -> (f32, [u8; 8]) {
    let max = v.iter().copied().fold(0.0f32, f32::max);
    // f32::max skips NaN, so `max` is a number.
    if max <= 0.0 || !max.is_finite() {
        return (0.0, [0; 8]);
    }
    // Score of codes c: (Σ wt·v·c)² / Σ wt·c² — the error is Σ wt·v² minus it.
    let sums = |c: &[i32; 8]| -> (f32, f32) {
        let (mut sxc, mut scc) = (0.0f32, 0.0f32);
        for j in 0..8 {
            sxc += wt[j] * v[j] * c[j] as f32;
            scc += wt[j] * (c[j] * c[j]) as f32;
        }
        (sxc, scc)
    };
    let better = |a: (f32, f32), b: (f32, f32)| -> bool {
        // a.0²/a.1 > b.0²/b.1 without dividing (both denominators positive when compared).
        a.1 > 0.0 && (b.1 <= 0.0 || a.0 * a.0 * b.1 > b.0 * b.0 * a.1)
    };
    let mut best_c = [0i32; 8];
    let mut best = (0.0f32, 0.0f32);
    for k in -STEPS..=STEPS {
        let is = (CODE_MAX as f32 + 0.1 * k as f32) / max;
        let mut c = [0i32; 8];
        for j in 0..8 {
            c[j] = (round_away(is * v[j]) as i32).clamp(0, CODE_MAX);
        }
        let s = sums(&c);
        if better(s, best) {
            best = s;
            best_c = c;
        }
    }
    let positive = |v: f32| v > 0.0;
    if !positive(best.0) || !positive(best.1) {
        // All weights zero: the plain max rule.
        let is = CODE_MAX as f32 / max;
        let mut out = [0u8; 8];
        for j in 0..8 {
            out[j] = round_away(is * v[j]).clamp(0.0, CODE_MAX as f32) as u8;
        }
        return (max / CODE_MAX as f32, out);
    }
    // Coordinate moves: one code ±1 at a time while the score improves (sums updated in place).
    for _ in 0..4 {
        let mut moved = false;
        for j in 0..8 {
            for delta in [-1, 1] {
                let c = best_c[j] + delta;
                if !(0..=CODE_MAX).contains(&c) {
                    continue;
                }
                let s = (
                    best.0 + wt[j] * v[j] * delta as f32,
                    best.1 + wt[j] * (c * c - best_c[j] * best_c[j]) as f32,
                );
                if better(s, best) {
                    best = s;
                    best_c[j] = c;
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }
    let mut out = [0u8; 8];
    for j in 0..8 {
        out[j] = best_c[j] as u8;
    }
    (best.0 / best.1, out)
}

/// Length of a Q4_K/Q5_K sub-block.
const SUB: usize = 32;

/// Level of `v` for `x ≈ dl·q − ml` given `inv = 1/dl` (0 when `dl` is 0, every level is then 0).
#[inline]
pub(crate) fn level_of(v: f32, dl: f32, inv: f32, ml: f32, nmax: i32) -> i32 {
    if dl == 0.0 {
        0
    } else {
        level(inv * (v + ml), 0, nmax)
    }
}

/// Weighted squared error of one sub-block coded as `dl·q − ml`, each `q` rounded from `x`.
/// Summed as the AVX2 path does: element `k` into partial sum `k mod 8` (in element order),
/// then the eight partial sums added pairwise in a fixed order — so both paths agree exactly.
fn settle_err_scalar(x: &[f32; SUB], w: &[f32; SUB], dl: f32, ml: f32, nmax: i32) -> f32 {
    let inv = if dl == 0.0 { 0.0 } else { 1.0 / dl };
    let mut acc = [0.0f32; 8];
    for k in 0..SUB {
        let q = level_of(x[k], dl, inv, ml, nmax) as f32;
        let e = dl * q - ml - x[k];
        acc[k % 8] += w[k] * e * e;
    }
    let a = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (a[0] + a[2]) + (a[1] + a[3])
}

fn settle_err(x: &[f32; SUB], w: &[f32; SUB], dl: f32, ml: f32, nmax: i32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: features checked.
        return unsafe { x86::settle_err(x, w, dl, ml, nmax) };
    }
    settle_err_scalar(x, w, dl, ml, nmax)
}

/// Final codes of one sub-block for the stored steps `d`, `dmin`. Scale and min errors trade
/// off along a valley (a larger scale with a larger min fits nearly as well), so for each scale
/// code within `SETTLE_RADIUS` of `codes.0` the min code is put where the least-squares min of
/// the sub-block's current levels `l` lies (the two nearest codes), and each pair is scored on
/// its actual weighted error with its levels re-rounded. The best pair (the given one unless
/// another is strictly better) is returned and its levels left in `l`.
pub(crate) fn settle_codes(
    x: &[f32; SUB],
    w: &[f32; SUB],
    d: f16,
    dmin: f16,
    nmax: i32,
    codes: (u8, u8),
    l: &mut [i32],
) -> (u8, u8) {
    let (d, dmin) = (d.to_f32(), dmin.to_f32());
    // The least-squares min for scale code s with the current levels:
    // (s·d·Σw·l − Σw·x) / Σw, in units of dmin.
    let (mut sw, mut swl, mut swx) = (0.0f32, 0.0f32, 0.0f32);
    for ((&v, &wi), &q) in x.iter().zip(w).zip(l.iter()) {
        sw += wi;
        swl += wi * q as f32;
        swx += wi * v;
    }
    let mut best = codes;
    let mut best_err = settle_err(x, w, d * codes.0 as f32, dmin * codes.1 as f32, nmax);
    for ds in -SETTLE_RADIUS..=SETTLE_RADIUS {
        let s = codes.0 as i32 + ds;
        if !(0..=CODE_MAX).contains(&s) {
            continue;
        }
        let m_cont = if sw > 0.0 && dmin > 0.0 {
            (s as f32 * d * swl - swx) / sw / dmin
        } else {
            0.0
        };
        let m0 = if m_cont.is_finite() {
            m_cont.floor().clamp(-1.0, CODE_MAX as f32) as i32
        } else {
            0
        };
        for m in [m0, m0 + 1] {
            if !(0..=CODE_MAX).contains(&m) || (s, m) == (codes.0 as i32, codes.1 as i32) {
                continue;
            }
            let err = settle_err(x, w, d * s as f32, dmin * m as f32, nmax);
            if err < best_err {
                best_err = err;
                best = (s as u8, m as u8);
            }
        }
    }
    let (dl, ml) = (d * best.0 as f32, dmin * best.1 as f32);
    let inv = if dl == 0.0 { 0.0 } else { 1.0 / dl };
    for (q, &v) in l.iter_mut().zip(x) {
        *q = level_of(v, dl, inv, ml, nmax);
    }
    best
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::SUB;
    use crate::common::x86::{hsum_ps, level_ps};
    use std::arch::x86_64::*;

    /// [`super::settle_err_scalar`] with the eight partial sums in the lanes of one register.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); nothing else
    /// (fixed-size arrays, read within bounds).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn settle_err(x: &[f32; SUB], w: &[f32; SUB], dl: f32, ml: f32, nmax: i32) -> f32 {
        let zero_step = dl == 0.0;
        let inv = _mm256_set1_ps(if zero_step { 0.0 } else { 1.0 / dl });
        let (dlv, mlv) = (_mm256_set1_ps(dl), _mm256_set1_ps(ml));
        let (lo, hi) = (_mm256_setzero_ps(), _mm256_set1_ps(nmax as f32));
        let mut acc = _mm256_setzero_ps();
        for g in 0..SUB / 8 {
            let v = _mm256_loadu_ps(x.as_ptr().add(8 * g));
            let wv = _mm256_loadu_ps(w.as_ptr().add(8 * g));
            let q = if zero_step {
                _mm256_setzero_ps()
            } else {
                level_ps(_mm256_mul_ps(inv, _mm256_add_ps(v, mlv)), lo, hi)
            };
            let e = _mm256_sub_ps(_mm256_sub_ps(_mm256_mul_ps(dlv, q), mlv), v);
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(wv, e), e));
        }
        hsum_ps(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_of_exact_multiples_are_exact() {
        let v = [0.0, 0.63, 0.1, 0.5, 0.33, 0.01, 0.2, 0.07];
        let (d, c) = quantize_codes(&v, &[1.0; 8]);
        for j in 0..8 {
            assert!((d * c[j] as f32 - v[j]).abs() < 1e-6, "{j}: {d} {c:?}");
        }
    }

    #[test]
    fn weights_steer_the_codes() {
        // One heavy value that the max rule would round badly: the weighted search fits it.
        let v = [1.0, 0.4119, 0.3, 0.2, 0.9, 0.5, 0.6, 0.7];
        let mut wt = [0.01f32; 8];
        wt[1] = 100.0;
        let err = |d: f32, c: &[u8; 8]| -> f32 {
            (0..8)
                .map(|j| wt[j] * (v[j] - d * c[j] as f32).powi(2))
                .sum()
        };
        let (d, c) = quantize_codes(&v, &wt);
        let plain: [u8; 8] = std::array::from_fn(|j| round_away(63.0 * v[j]) as u8);
        assert!(err(d, &c) < 0.5 * err(1.0 / 63.0, &plain), "{d} {c:?}");
    }

    #[test]
    fn degenerate_inputs_give_zero() {
        assert_eq!(quantize_codes(&[0.0; 8], &[1.0; 8]), (0.0, [0; 8]));
        let mut v = [0.5f32; 8];
        v[2] = f32::INFINITY;
        assert_eq!(quantize_codes(&v, &[1.0; 8]).1, [0; 8]);
        let (d, c) = quantize_codes(&[0.5; 8], &[0.0; 8]);
        assert_eq!(c, [63; 8]);
        assert!((d * 63.0 - 0.5).abs() < 1e-7);
    }

    #[test]
    fn settle_error_paths_agree_exactly() {
        let mut st = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            (st >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for case in 0..4000 {
            let mag = 10f32.powf(next() * 12.0);
            let x: [f32; SUB] = std::array::from_fn(|_| next() * mag);
            let w: [f32; SUB] = std::array::from_fn(|_| (next() + 0.5) * (case % 7) as f32);
            let dl = match case % 5 {
                0 => 0.0,
                1 => f32::MIN_POSITIVE * next().abs(),
                _ => mag * next().abs() / 7.0,
            };
            let ml = mag * next();
            for nmax in [15, 31] {
                let a = settle_err(&x, &w, dl, ml, nmax);
                let b = settle_err_scalar(&x, &w, dl, ml, nmax);
                assert_eq!(a.to_bits(), b.to_bits(), "case {case}: {a} vs {b}");
            }
        }
    }
}
