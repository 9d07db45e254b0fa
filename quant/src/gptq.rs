//! Error-feedback quantization with the input covariance (the method of GPTQ, Frantar et al.,
//! 2022), in ggml's block formats.
//!
//! With `H = E[x·xᵀ]`, the mean outer product of a matrix's inputs, a row `w` quantized to `ŵ`
//! changes the output by `(w − ŵ)·x`, whose mean square is `(w − ŵ)ᵀ H (w − ŵ)`. The diagonal
//! importance (`diag H`) weights each column's error alone; the covariance also lets the error
//! made on one column be compensated on the columns not yet quantized. Columns are taken in
//! order; column `i` is rounded to its block's grid, and its error, scaled by row `i` of `U` (the
//! upper Cholesky factor of `H⁻¹`, `H⁻¹ = UᵀU`), is subtracted from the later columns. Each
//! block's parameters (scales, mins) are chosen when its first column is reached, from the
//! values as they are then, weighted by `diag H`; the K-quants re-settle each sub-block's codes
//! when its first column is reached.

use crate::common::round_away;
use crate::k_scales;
use crate::types::{QuantError, QK_K};
use crate::{q4_0, q4_k, q5_0, q5_k, q6_k, q8_0};
use half::f16;

/// `U` and `diag H` of one covariance, ready to quantize rows of that many columns.
#[derive(Clone, Debug)]
pub struct Factor {
    n: usize,
    /// Row-major `n × n`, upper triangle used.
    u: Vec<f32>,
    /// The undamped diagonal, the weights of each block's parameter search.
    diag: Vec<f32>,
}

/// In place, the lower Cholesky factor `L` of the symmetric positive definite `a` (`n × n`,
/// row-major; the upper triangle is left as it was). `false` when `a` is not positive definite.
fn cholesky(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let lj = a[j * n..j * n + j].to_vec();
        let s = a[j * n + j] - lj.iter().map(|v| v * v).sum::<f64>();
        if !(s > 0.0 && s.is_finite()) {
            return false;
        }
        let ljj = s.sqrt();
        a[j * n + j] = ljj;
        for i in j + 1..n {
            let row_i = &mut a[i * n..(i + 1) * n];
            let dot: f64 = row_i[..j].iter().zip(&lj).map(|(x, y)| x * y).sum();
            row_i[j] = (row_i[j] - dot) / ljj;
        }
    }
    true
}

impl Factor {
    /// From `cov` (`n × n`, row-major, symmetric: the mean of `x·xᵀ` over calibration inputs).
    /// `damp` (GPTQ uses 0.01) times the mean diagonal is added to the diagonal, which keeps
    /// the factorisation stable when the calibration inputs span fewer than `n` directions;
    /// a column that never saw a nonzero input gets 1 on the diagonal (its error then stays
    /// its own).
    pub fn new(cov: &[f64], n: usize, damp: f64) -> Result<Factor, QuantError> {
        let bad = |what: &'static str| Err(QuantError::Covariance { n, what });
        if n.checked_mul(n) != Some(cov.len()) {
            return bad("its length is not n × n");
        }
        if cov.iter().any(|v| !v.is_finite()) {
            return bad("it holds a value that is not finite");
        }
        let diag: Vec<f64> = (0..n).map(|i| cov[i * n + i]).collect();
        if diag.iter().any(|&v| v < 0.0) {
            return bad("a diagonal value is negative");
        }
        let mean = diag.iter().sum::<f64>() / n.max(1) as f64;
        let mut h = cov.to_vec();
        for i in 0..n {
            h[i * n + i] = if diag[i] > 0.0 {
                diag[i] + damp * mean
            } else {
                1.0
            };
        }
        // With J the reversal permutation, J·H·J = R·Rᵀ (R lower) gives H = V·Vᵀ with
        // V = J·R·J upper, so H⁻¹ = V⁻ᵀ·V⁻¹ and U = V⁻¹ = J·R⁻¹·J.
        let mut a = vec![0.0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
            }
        }
        if !cholesky(&mut a, n) {
            return bad("it is not positive definite (even damped)");
        }
        // X = R⁻¹ row by row: X_i = (e_i − Σ_k<i R_ik·X_k) / R_ii (rows of X are zero past i).
        let mut x = vec![0.0f64; n * n];
        for i in 0..n {
            let (done, rest) = x.split_at_mut(i * n);
            let xi = &mut rest[..n];
            xi[i] = 1.0;
            for k in 0..i {
                let r = a[i * n + k];
                if r != 0.0 {
                    for (v, &xk) in xi[..=k].iter_mut().zip(&done[k * n..k * n + k + 1]) {
                        *v -= r * xk;
                    }
                }
            }
            let rii = a[i * n + i];
            xi[..=i].iter_mut().for_each(|v| *v /= rii);
        }
        let mut u = vec![0.0f32; n * n];
        for i in 0..n {
            for j in i..n {
                u[i * n + j] = x[(n - 1 - i) * n + (n - 1 - j)] as f32;
            }
        }
        Ok(Factor {
            n,
            u,
            diag: diag.iter().map(|&v| v as f32).collect(),
        })
    }

    /// Columns of the rows this factor quantizes.
    pub fn n(&self) -> usize {
        self.n
    }
}

/// One block's grid: its parameters, chosen from the block's current values, and the level and
/// value of an element under them.
trait Grid: Sized {
    /// Elements per block.
    const BLOCK: usize;
    /// Elements per sub-block (the grid may be re-settled at each sub-block's first element).
    const SUB: usize;
    fn start(x: &[f32], w: &[f32]) -> Self;
    /// At sub-block `j` (> 0), with the block's current values `x`.
    fn resettle(&mut self, _j: usize, _x: &[f32], _w: &[f32]) {}
    fn level(&self, k: usize, v: f32) -> i32;
    fn value(&self, k: usize, q: i32) -> f32;
    fn encode(&self, l: &[i32], out: &mut [u8]);
}

/// Q4_0 (levels −8..=7), Q5_0 (−16..=15) and Q8_0 (−127..=127): one f16 scale per 32.
struct SymGrid<const LO: i32, const HI: i32> {
    d: f16,
}

impl<const LO: i32, const HI: i32> Grid for SymGrid<LO, HI> {
    const BLOCK: usize = q4_0::QK;
    const SUB: usize = q4_0::QK;
    fn start(x: &[f32], w: &[f32]) -> Self {
        let d = match HI {
            7 => q4_0::quantize_block(x, Some(w)).d,
            15 => q5_0::quantize_block(x, Some(w)).d,
            _ => q8_0::quantize_block(x, Some(w)).d,
        };
        SymGrid { d }
    }
    fn level(&self, _k: usize, v: f32) -> i32 {
        let d = self.d.to_f32();
        if d == 0.0 {
            0
        } else {
            (round_away(v / d) as i32).clamp(LO, HI)
        }
    }
    fn value(&self, _k: usize, q: i32) -> f32 {
        q as f32 * self.d.to_f32()
    }
    fn encode(&self, l: &[i32], out: &mut [u8]) {
        // Q4_0/Q5_0 store l − LO (value = (stored + LO)·d); Q8_0 stores l.
        let lv: [i32; q4_0::QK] = std::array::from_fn(|k| l[k] - LO);
        match HI {
            7 => out.copy_from_slice(bytemuck::bytes_of(&q4_0::encode(self.d, &lv))),
            15 => out.copy_from_slice(bytemuck::bytes_of(&q5_0::encode(self.d, &lv))),
            _ => {
                let b = q8_0::BlockQ8_0 {
                    d: self.d,
                    qs: std::array::from_fn(|k| l[k] as i8),
                };
                out.copy_from_slice(bytemuck::bytes_of(&b));
            }
        }
    }
}

/// Q6_K: an f16 step, sixteen 8-bit sub-block scales, levels `−32..=31`.
struct Q6KGrid {
    d: f16,
    scales: [i8; 16],
}

impl Grid for Q6KGrid {
    const BLOCK: usize = QK_K;
    const SUB: usize = QK_K;
    fn start(x: &[f32], w: &[f32]) -> Self {
        let b = q6_k::quantize_block(x, Some(w));
        Q6KGrid {
            d: b.d,
            scales: b.scales,
        }
    }
    fn level(&self, k: usize, v: f32) -> i32 {
        let dl = self.d.to_f32() * self.scales[k / 16] as f32;
        if dl == 0.0 {
            0
        } else {
            (round_away(v / dl) as i32).clamp(-32, 31)
        }
    }
    fn value(&self, k: usize, q: i32) -> f32 {
        self.d.to_f32() * self.scales[k / 16] as f32 * q as f32
    }
    fn encode(&self, l: &[i32], out: &mut [u8]) {
        out.copy_from_slice(bytemuck::bytes_of(&q6_k::encode(self.d, self.scales, l)));
    }
}

/// Q4_K (`NMAX` 15) and Q5_K (31).
struct KGrid<const NMAX: i32> {
    d: f16,
    dmin: f16,
    ls: [u8; 8],
    lm: [u8; 8],
}

impl<const NMAX: i32> KGrid<NMAX> {
    fn steps(&self, k: usize) -> (f32, f32) {
        let j = k / 32;
        (
            self.d.to_f32() * self.ls[j] as f32,
            self.dmin.to_f32() * self.lm[j] as f32,
        )
    }
}

impl<const NMAX: i32> Grid for KGrid<NMAX> {
    const BLOCK: usize = QK_K;
    const SUB: usize = 32;
    fn start(x: &[f32], w: &[f32]) -> Self {
        let (d, dmin, ls, lm, _) = q4_k::quantize_superblock(x, Some(w), NMAX);
        KGrid { d, dmin, ls, lm }
    }
    fn resettle(&mut self, j: usize, x: &[f32], w: &[f32]) {
        let r = 32 * j..32 * j + 32;
        let xs: [f32; 32] = std::array::from_fn(|k| x[r.start + k]);
        let ws: [f32; 32] = std::array::from_fn(|k| w[r.start + k]);
        let mut l = [0i32; 32];
        (self.ls[j], self.lm[j]) = k_scales::settle_codes(
            &xs,
            &ws,
            self.d,
            self.dmin,
            NMAX,
            (self.ls[j], self.lm[j]),
            &mut l,
        );
    }
    fn level(&self, k: usize, v: f32) -> i32 {
        let (dl, ml) = self.steps(k);
        let inv = if dl == 0.0 { 0.0 } else { 1.0 / dl };
        k_scales::level_of(v, dl, inv, ml, NMAX)
    }
    fn value(&self, k: usize, q: i32) -> f32 {
        let (dl, ml) = self.steps(k);
        dl * q as f32 - ml
    }
    fn encode(&self, l: &[i32], out: &mut [u8]) {
        if NMAX == 15 {
            let b = q4_k::encode(self.d, self.dmin, &self.ls, &self.lm, l);
            out.copy_from_slice(bytemuck::bytes_of(&b));
        } else {
            let b = q5_k::encode(self.d, self.dmin, &self.ls, &self.lm, l);
            out.copy_from_slice(bytemuck::bytes_of(&b));
        }
    }
}

/// One row (`f.n` values) into `dst` (its blocks), columns in order with error feedback.
fn row<G: Grid>(f: &Factor, src: &[f32], dst: &mut [u8]) {
    let n = f.n;
    let mut w = src.to_vec();
    let mut l = vec![0i32; G::BLOCK];
    let bb = dst.len() / (n / G::BLOCK).max(1);
    for (b, out) in dst.chunks_exact_mut(bb).enumerate() {
        let g = b * G::BLOCK;
        let imp = &f.diag[g..g + G::BLOCK];
        let mut grid = G::start(&w[g..g + G::BLOCK], imp);
        for k in 0..G::BLOCK {
            if k > 0 && k % G::SUB == 0 {
                grid.resettle(k / G::SUB, &w[g..g + G::BLOCK], imp);
            }
            let i = g + k;
            let q = grid.level(k, w[i]);
            l[k] = q;
            let uii = f.u[i * n + i];
            let e = (w[i] - grid.value(k, q)) / uii;
            let ui = &f.u[i * n + i + 1..(i + 1) * n];
            for (wj, &uij) in w[i + 1..].iter_mut().zip(ui) {
                *wj -= e * uij;
            }
        }
        grid.encode(&l, out);
    }
}

/// Whether [`crate::quantize_rows_gptq`] can produce `ty`.
pub fn supports(ty: crate::GgmlType) -> bool {
    use crate::GgmlType::*;
    matches!(ty, Q4_0 | Q5_0 | Q8_0 | Q4_K | Q5_K | Q6_K)
}

/// One row of `ty` (checked by the caller: `ty` supported, sizes matching `f`).
pub(crate) fn quantize_row(ty: crate::GgmlType, f: &Factor, src: &[f32], dst: &mut [u8]) {
    use crate::GgmlType::*;
    match ty {
        Q4_0 => row::<SymGrid<-8, 7>>(f, src, dst),
        Q5_0 => row::<SymGrid<-16, 15>>(f, src, dst),
        Q8_0 => row::<SymGrid<-127, 127>>(f, src, dst),
        Q4_K => row::<KGrid<15>>(f, src, dst),
        Q5_K => row::<KGrid<31>>(f, src, dst),
        Q6_K => row::<Q6KGrid>(f, src, dst),
        _ => unreachable!("checked by supports"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_inverts_the_covariance() {
        // A random SPD matrix: H = AᵀA/k + 0.1·I.
        let n = 12;
        let mut st = 7u64;
        let mut next = || {
            st = st
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((st >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        let a: Vec<f64> = (0..3 * n * n).map(|_| next()).collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..3 * n).map(|k| a[k * n + i] * a[k * n + j]).sum::<f64>()
                    / (3 * n) as f64
                    + if i == j { 0.1 } else { 0.0 };
            }
        }
        let f = Factor::new(&h, n, 0.0).unwrap();
        // (UᵀU)·H = I.
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0f64;
                for k in 0..n {
                    let inv_ik: f64 = (0..n)
                        .map(|r| f.u[r * n + i] as f64 * f.u[r * n + k] as f64)
                        .sum::<f64>();
                    s += inv_ik * h[k * n + j];
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-4, "({i},{j}): {s}");
            }
            for j in 0..i {
                assert_eq!(f.u[i * n + j], 0.0);
            }
        }
    }

    #[test]
    fn bad_covariances_are_errors() {
        assert!(Factor::new(&[1.0; 5], 2, 0.01).is_err());
        assert!(Factor::new(&[1.0, f64::NAN, f64::NAN, 1.0], 2, 0.01).is_err());
        assert!(Factor::new(&[-1.0, 0.0, 0.0, 1.0], 2, 0.01).is_err());
        // Rank 1 becomes definite with damping; without it, it is not.
        assert!(Factor::new(&[1.0, 1.0, 1.0, 1.0], 2, 0.01).is_ok());
        assert!(Factor::new(&[1.0, 1.0, 1.0, 1.0], 2, 0.0).is_err());
        // A dead column is fine.
        assert!(Factor::new(&[0.0, 0.0, 0.0, 1.0], 2, 0.0).is_ok());
    }
}
