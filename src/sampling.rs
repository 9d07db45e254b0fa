//! Token sampling: greedy, or temperature with top-k and top-p, from a seeded PRNG.

/// A small deterministic PRNG (splitmix64), so `--seed` reproduces a run exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Debug)]
pub struct SamplerConfig {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// 0 = no limit.
    pub top_k: usize,
    /// 1.0 = no limit.
    pub top_p: f32,
}

/// The index of the largest logit (the first on ties).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

/// Pick the next token id.
pub fn sample(logits: &[f32], cfg: &SamplerConfig, rng: &mut Rng) -> usize {
    if cfg.temperature <= 0.0 || logits.is_empty() {
        return argmax(logits);
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if cfg.top_k > 0 {
        idx.truncate(cfg.top_k);
    }
    let max = logits[idx[0]];
    let mut p: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i] - max) / cfg.temperature) as f64).exp())
        .collect();
    let total: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= total);
    if cfg.top_p < 1.0 {
        let mut acc = 0.0;
        let keep = p
            .iter()
            .position(|&x| {
                acc += x;
                acc >= cfg.top_p as f64
            })
            .map_or(p.len(), |k| k + 1);
        p.truncate(keep);
        idx.truncate(keep);
        let s: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= s);
    }
    let r = rng.next_f64();
    let mut acc = 0.0;
    for (k, &x) in p.iter().enumerate() {
        acc += x;
        if r < acc {
            return idx[k];
        }
    }
    idx[p.len() - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_top_k_one_agree() {
        let l = [0.1, 3.0, -2.0, 2.9];
        let mut rng = Rng::new(1);
        assert_eq!(argmax(&l), 1);
        let cfg = SamplerConfig {
            temperature: 0.8,
            top_k: 1,
            top_p: 1.0,
        };
        for _ in 0..10 {
            assert_eq!(sample(&l, &cfg, &mut rng), 1);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let l = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        };
        let mut rng = Rng::new(7);
        let n = 20000;
        let ones = (0..n).filter(|_| sample(&l, &cfg, &mut rng) == 1).count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
    }
}
