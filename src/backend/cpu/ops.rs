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

/// Numerically stable softmax of one row, in place.
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

/// GELU, tanh approximation: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * x * (1.0 + (C * (x + 0.044715 * x * x * x)).tanh())
}

/// `cap · tanh(x / cap)`.
pub fn softcap(x: f32, cap: f32) -> f32 {
    cap * (x / cap).tanh()
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
    fn gelu_known_values() {
        assert_eq!(gelu_tanh(0.0), 0.0);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
        assert!((gelu_tanh(-3.0) + 0.003_637_4).abs() < 1e-5);
    }
}
