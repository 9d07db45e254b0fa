//! Elementwise and row operations in f32.

/// `x * rsqrt(mean(x²) + eps) * scale`, in place, for each row of `x` (rows of `scale.len()`).
pub fn rms_norm(x: &mut [f32], scale: &[f32], eps: f32) {
    let n = scale.len();
    for row in x.chunks_exact_mut(n) {
        let ss: f32 = row.iter().map(|v| v * v).sum::<f32>() / n as f32;
        let inv = 1.0 / (ss + eps).sqrt();
        for (v, s) in row.iter_mut().zip(scale) {
            *v = *v * inv * s;
        }
    }
}

/// `Σ a_i·b_i` in eight interleaved partial sums (lane k takes i ≡ k mod 8), added pairwise at
/// the end: a fixed order that the compiler turns into SIMD (a single running sum cannot be
/// reordered, and ran scalar: the attention's q·k was 13 % of decode at a few hundred
/// positions).
#[inline(always)]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    for (k, (x, y)) in ar.iter().zip(br).enumerate() {
        acc[k] += x * y;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// Masked attention score, as the reference uses.
const MASKED: f32 = -1e30;

/// One head's keys and values in the KV cache: position s's key at `k[s·stride..][..head_dim]`
/// (likewise `v`), `masked[s]` for positions whose key the reference masks (pad tokens); the
/// query attends to every position of `masked`.
pub struct AttnInputs<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub stride: usize,
    pub masked: &'a [bool],
    pub scale: f32,
    pub cap: f32,
}

/// One query head's attention: scores `q·k × scale`, soft-capped, masked, softmax in f32,
/// `out += Σ p·v` (`out` zeroed by the caller). `scores` is scratch. On x86-64 with AVX2 the
/// same code is compiled for 8-lane vectors (the operations and their order are the same, so
/// the result is too; no FMA contraction).
pub fn attend_head(q: &[f32], a: &AttnInputs, scores: &mut Vec<f32>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked on the line above); the function asserts that every
        // key and value row it reads lies inside `a.k` / `a.v` and that `out` holds a head.
        unsafe { attend_head_avx2(q, a, scores, out) };
        return;
    }
    attend_head_body(q, a, scores, out)
}

/// [`attend_head_body`] in AVX2, bit-identical to it (no FMA contraction, the same sums in the
/// same order):
/// - `q·k` for eight keys at once, each in its own 8-lane accumulator (lane k takes
///   i ≡ k mod 8), the eight transposed and reduced together in [`dot_f32`]'s pairwise order;
///   one key at a time the single accumulator was a chain of dependent adds (latency-bound:
///   attention was ~12 % of a 512-token prefill);
/// - the scale and soft-cap in a loop of their own, which the compiler vectorizes;
/// - `out += p·v` with 64 output values held in registers across all keys.
///
/// # Safety
///
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_head_avx2(q: &[f32], a: &AttnInputs, scores: &mut Vec<f32>, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let hd = q.len();
    let n = a.masked.len();
    let n8 = hd / 8 * 8;
    assert!(out.len() >= hd && (n == 0 || a.k.len().min(a.v.len()) >= (n - 1) * a.stride + hd));
    scores.clear();
    scores.resize(n, 0.0);
    let mut s = 0;
    if n8 == hd {
        while s + 8 <= n {
            let d = dots8(q.as_ptr(), a.k.as_ptr().add(s * a.stride), a.stride, hd);
            _mm256_storeu_ps(scores.as_mut_ptr().add(s), d);
            s += 8;
        }
    }
    for (s, sc) in scores.iter_mut().enumerate().skip(s) {
        let kp = a.k.as_ptr().add(s * a.stride);
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i < n8 {
            let prod = _mm256_mul_ps(
                _mm256_loadu_ps(q.as_ptr().add(i)),
                _mm256_loadu_ps(kp.add(i)),
            );
            acc = _mm256_add_ps(acc, prod);
            i += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        for (k, j) in (n8..hd).enumerate() {
            lanes[k] += q[j] * *kp.add(j);
        }
        *sc = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
            + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
    }
    for sc in scores.iter_mut() {
        *sc = softcap(*sc * a.scale, a.cap);
    }
    for (sc, &m) in scores.iter_mut().zip(a.masked) {
        if m {
            *sc = MASKED;
        }
    }
    softmax_in_place(scores);
    // out += Σ_s p_s·v_s: per output value the same additions in the same order as the body.
    let mut c = 0;
    while c + 64 <= hd {
        let op = out.as_mut_ptr().add(c);
        let mut o: [__m256; 8] = std::array::from_fn(|j| _mm256_loadu_ps(op.add(8 * j)));
        for (s, &p) in scores.iter().enumerate() {
            let vp = a.v.as_ptr().add(s * a.stride + c);
            let pv = _mm256_set1_ps(p);
            for (j, o) in o.iter_mut().enumerate() {
                *o = _mm256_add_ps(*o, _mm256_mul_ps(pv, _mm256_loadu_ps(vp.add(8 * j))));
            }
        }
        for (j, o) in o.iter().enumerate() {
            _mm256_storeu_ps(op.add(8 * j), *o);
        }
        c += 64;
    }
    for (s, &p) in scores.iter().enumerate() {
        let vp = a.v.as_ptr().add(s * a.stride);
        let pv = _mm256_set1_ps(p);
        let mut i = c;
        while i + 8 <= hd {
            let o = out.as_mut_ptr().add(i);
            _mm256_storeu_ps(
                o,
                _mm256_add_ps(
                    _mm256_loadu_ps(o),
                    _mm256_mul_ps(pv, _mm256_loadu_ps(vp.add(i))),
                ),
            );
            i += 8;
        }
        for (j, o) in out.iter_mut().enumerate().take(hd).skip(i) {
            *o += p * *vp.add(j);
        }
    }
}

/// The raw dot products of `q` (`hd` values, a multiple of 8) with the eight keys at `k`,
/// `k + stride`, …, each summed as [`dot_f32`] sums (lane k of its accumulator takes
/// i ≡ k mod 8; then `((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7))`), key j in lane j.
///
/// # Safety
///
/// The CPU must support AVX2; `q` must be readable for `hd` values and each key for `hd`
/// values at `k + j·stride`, j < 8.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dots8(
    q: *const f32,
    k: *const f32,
    stride: usize,
    hd: usize,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut i = 0;
    while i < hd {
        let qv = _mm256_loadu_ps(q.add(i));
        for (j, acc) in acc.iter_mut().enumerate() {
            let kv = _mm256_loadu_ps(k.add(j * stride + i));
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(qv, kv));
        }
        i += 8;
    }
    // Transpose: v[l] holds lane l of every key's accumulator (key j in lane j).
    let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
    let (t0, t1) = (_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
    let (t2, t3) = (_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
    let (t4, t5) = (_mm256_unpacklo_ps(a4, a5), _mm256_unpackhi_ps(a4, a5));
    let (t6, t7) = (_mm256_unpacklo_ps(a6, a7), _mm256_unpackhi_ps(a6, a7));
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let v = [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ];
    _mm256_add_ps(
        _mm256_add_ps(_mm256_add_ps(v[0], v[4]), _mm256_add_ps(v[2], v[6])),
        _mm256_add_ps(_mm256_add_ps(v[1], v[5]), _mm256_add_ps(v[3], v[7])),
    )
}

/// The reference (and non-AVX2) path of [`attend_head`].
fn attend_head_body(q: &[f32], a: &AttnInputs, scores: &mut Vec<f32>, out: &mut [f32]) {
    let hd = q.len();
    let n = a.masked.len();
    scores.clear();
    scores.resize(n, 0.0);
    for (s, (sc, &m)) in scores.iter_mut().zip(a.masked).enumerate() {
        *sc = if m {
            MASKED
        } else {
            let kh = &a.k[s * a.stride..s * a.stride + hd];
            softcap(dot_f32(q, kh) * a.scale, a.cap)
        };
    }
    softmax_in_place(scores);
    for (s, p) in scores.iter().enumerate() {
        let vh = &a.v[s * a.stride..s * a.stride + hd];
        for (o, x) in out.iter_mut().zip(vh) {
            *o += p * x;
        }
    }
}

/// Numerically stable softmax of one row, in place.
#[inline]
pub fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// GELU, tanh approximation: `0.5·x·(1 + tanh(z))` with `z = √(2/π)·(x + 0.044715·x³)`,
/// computed as the equal `x / (1 + e^(−2z))` with `exp_f32`: branch-free, so the loop in
/// [`gelu_mul`] vectorizes (glibc's `tanhf` was 5–7 % of a decode step). Within 2e-7 of the
/// f64 formula, relative to `max(|x|, 1)` (tested).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    let z = C * (x + 0.044715 * x * x * x);
    x / (1.0 + exp_f32(-2.0 * z))
}

/// `out[i] = gelu_tanh(g[i]) · u[i]` (the expert's gated activation).
pub fn gelu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, a), b) in out.iter_mut().zip(g).zip(u) {
        *o = gelu_tanh(*a) * b;
    }
}

/// `e^x` in f32 without a libm call: `x = n·ln2 + r`, |r| ≤ ln2/2, e^r by its degree-7 Taylor
/// polynomial (truncation < 6e-9 relative), `2^n` put in the exponent bits. Inputs are clamped
/// to [−87, 88] (normal results; NaN stays NaN). About 1 ulp.
#[inline]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // ln 2 split so n·LN2_HI is exact for |n| < 2^8
    const LN2_LO: f32 = 1.428_606_8e-6;
    const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // t's low mantissa bits hold n (two's complement around MAGIC's bits).
    let ni = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    p * f32::from_bits(((ni + 127) as u32) << 23)
}

/// `cap · tanh(x / cap)`, with `tanh_f32` (glibc's `tanhf` was ~3 % of a 512-token
/// prefill: one call per attention score).
#[inline]
pub fn softcap(x: f32, cap: f32) -> f32 {
    cap * tanh_f32(x / cap)
}

/// `tanh(y)` as `1 − 2 / (e^(2y) + 1)` with [`exp_f32`]: branch-free, within 2.5e-7 of the
/// true value in absolute terms (tested; the absolute error is what the soft-cap's `30·`
/// scales, ≤ 7.5e-6 on an attention logit, far below its own f32 rounding at the magnitudes
/// where the cap matters).
#[inline]
pub fn tanh_f32(y: f32) -> f32 {
    1.0 - 2.0 / (exp_f32(2.0 * y) + 1.0)
}

/// Rotary embedding, rotate-half (NEOX) form over the whole head: for i < d/2, with
/// θ = pos · base^(−2i/d): `(x_i, x_{i+d/2}) → (x_i·cos − x_{i+d/2}·sin, x_{i+d/2}·cos + x_i·sin)`.
/// `x` holds heads of `head_dim` for one token; `inv_freq` has `head_dim/2` entries.
pub fn rope_rotate_half(x: &mut [f32], head_dim: usize, pos: usize, inv_freq: &[f32]) {
    let half = head_dim / 2;
    let (sin, cos): (Vec<f32>, Vec<f32>) =
        inv_freq.iter().map(|f| (pos as f32 * f).sin_cos()).unzip();
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * cos[i] - b * sin[i];
            head[i + half] = b * cos[i] + a * sin[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_scale() {
        let mut x = vec![3.0, 4.0];
        rms_norm(&mut x, &[1.0, 1.0], 0.0);
        let r = (12.5f32).sqrt();
        assert!((x[0] - 3.0 / r).abs() < 1e-6 && (x[1] - 4.0 / r).abs() < 1e-6);
    }

    #[test]
    fn softmax_sums_to_one_and_handles_masks() {
        let mut x = vec![1.0, 2.0, -1e30];
        softmax_in_place(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(x[2], 0.0);
    }

    #[test]
    fn rope_position_zero_is_identity_and_preserves_norm() {
        let inv: Vec<f32> = (0..2)
            .map(|i| 10000f32.powf(-(2 * i) as f32 / 4.0))
            .collect();
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        rope_rotate_half(&mut x, 4, 0, &inv);
        assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]);
        rope_rotate_half(&mut x, 4, 7, &inv);
        let n: f32 = x.iter().map(|v| v * v).sum();
        assert!((n - 30.0).abs() < 1e-4);
    }

    #[test]
    fn exp_and_gelu_match_f64() {
        let mut worst_exp = 0f64;
        let mut worst_gelu = 0f64;
        let mut x = -90.0f32;
        while x <= 90.0 {
            let e = (x.clamp(-87.0, 88.0) as f64).exp();
            worst_exp = worst_exp.max(((exp_f32(x) as f64) - e).abs() / e);
            let xd = x as f64;
            let z = (2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd * xd * xd);
            let g = 0.5 * xd * (1.0 + z.tanh());
            worst_gelu = worst_gelu.max(((gelu_tanh(x) as f64) - g).abs() / xd.abs().max(1.0));
            x += 0.000_37;
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp:e}");
        assert!(worst_gelu < 2e-7, "gelu error {worst_gelu:e}");
        assert!(exp_f32(f32::NAN).is_nan() && gelu_tanh(f32::NAN).is_nan());
        let mut worst_tanh = 0f64;
        let mut y = -50.0f32;
        while y <= 50.0 {
            worst_tanh = worst_tanh.max((tanh_f32(y) as f64 - (y as f64).tanh()).abs());
            y += 0.000_31;
        }
        assert!(worst_tanh < 2.5e-7, "tanh absolute error {worst_tanh:e}");
        assert!(tanh_f32(f32::NAN).is_nan());
        assert_eq!((tanh_f32(1e30), tanh_f32(-1e30)), (1.0, -1.0));
        assert!(gelu_tanh(-1e30).abs() < 1e-8);
        assert_eq!(gelu_tanh(1e30), 1e30);
    }

    #[test]
    fn dot_matches_f64_at_every_length() {
        for n in 0..40 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot_f32(&a, &b) as f64 - want).abs() < 1e-5, "n={n}");
        }
    }

    #[test]
    fn attention_avx2_equals_the_scalar_body() {
        for (hd, n) in [
            (128usize, 1usize),
            (128, 37),
            (64, 300),
            (12, 5),
            (136, 17),
            (8, 9),
            (192, 64),
        ] {
            let stride = hd * 3;
            let f = |i: usize, m: f32| (i as f32 * m).sin() * 3.0;
            let k: Vec<f32> = (0..n * stride).map(|i| f(i, 0.37)).collect();
            let v: Vec<f32> = (0..n * stride).map(|i| f(i, 0.11)).collect();
            let q: Vec<f32> = (0..hd).map(|i| f(i, 0.23)).collect();
            let masked: Vec<bool> = (0..n).map(|s| s % 7 == 3).collect();
            let a = AttnInputs {
                k: &k,
                v: &v,
                stride,
                masked: &masked,
                scale: 0.088,
                cap: 30.0,
            };
            let (mut o1, mut o2) = (vec![0f32; hd], vec![0f32; hd]);
            let (mut s1, mut s2) = (Vec::new(), Vec::new());
            attend_head(&q, &a, &mut s1, &mut o1);
            attend_head_body(&q, &a, &mut s2, &mut o2);
            assert_eq!(o1, o2, "hd {hd} n {n}");
        }
    }

    #[test]
    fn gelu_known_values() {
        assert_eq!(gelu_tanh(0.0), 0.0);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        assert!((gelu_tanh(-3.0) + 0.003_637_4).abs() < 1e-5);
    }
}
