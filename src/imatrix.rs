//! Importance matrices: for every weight matrix (and every expert of a merged expert tensor) the
//! sum of squared input activations per input channel and the number of tokens seen, gathered by
//! running the model over calibration text.
//!
//! Stored in llama.cpp's GGUF imatrix format (`general.type = imatrix`, `imatrix.datasets`,
//! `imatrix.chunk_count`, `imatrix.chunk_size`; per matrix `<name>.in_sum2` F32 `[n_in, n_mat]`
//! and `<name>.counts` F32 `[1, n_mat]`), so `llama-quantize --imatrix` reads our files and we
//! read theirs. Sums accumulate in f64 and are written as f32.

use crate::gguf::{write_gguf, GgufArray, GgufFile, GgufValue, Metadata, TensorSpec};
use quant::GgmlType;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Tokens below which an expert's own statistics are blended with its layer's average.
pub const MIN_TOKENS: f64 = 32.0;

/// Whether `imatrix --covariance` keeps a covariance for tensor `name`: every matrix but the
/// router, which stays f32 (it is never quantized).
pub fn wants_covariance(name: &str) -> bool {
    !matches!(
        crate::naming::Role::from_gguf_name(name),
        Some((crate::naming::Role::FfnGateInp, _))
    )
}

/// Damping of a covariance's diagonal before it is factored, as a fraction of the diagonal's
/// mean (GPTQ's default).
pub const COV_DAMP: f64 = 0.01;

/// One matrix (or merged expert tensor) of statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct ImatrixEntry {
    pub n_in: usize,
    pub n_mat: usize,
    /// `n_mat × n_in` sums of squared inputs.
    pub sums: Vec<f64>,
    /// Tokens seen by each matrix.
    pub counts: Vec<f64>,
    /// When collected: `n_mat × n_in × n_in` sums of `x·xᵀ` (the upper triangle, column ≥ row,
    /// is what is accumulated and read; written mirrored).
    pub cov: Option<Vec<f64>>,
}

impl ImatrixEntry {
    /// Tokens seen by all matrices together, when `mat` is one of them and any were seen.
    fn total_for(&self, mat: usize) -> Option<f64> {
        let total: f64 = self.counts.iter().sum();
        (mat < self.n_mat && total > 0.0).then_some(total)
    }

    /// Statistic `k` of matrix `mat` (`per` statistics per matrix in `sums`) over its tokens;
    /// a matrix that saw fewer than [`MIN_TOKENS`] is blended with the tensor's average over all
    /// matrices (weighted as if the average had MIN_TOKENS tokens).
    fn mean_stat(&self, sums: &[f64], per: usize, mat: usize, k: usize, total: f64) -> f64 {
        let c = self.counts[mat];
        let own = sums[mat * per + k];
        if c >= MIN_TOKENS || self.n_mat == 1 {
            own / c.max(1.0)
        } else {
            let avg = (0..self.n_mat).map(|m| sums[m * per + k]).sum::<f64>() / total;
            (own + MIN_TOKENS * avg) / (c + MIN_TOKENS)
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imatrix {
    pub entries: BTreeMap<String, ImatrixEntry>,
    pub datasets: Vec<String>,
    pub chunk_count: u32,
    pub chunk_size: u32,
    /// Collect input covariances too (`imatrix --covariance`).
    pub collect_cov: bool,
    /// The last inputs whose outer products were summed, and that sum (q/k/v and each expert's
    /// gate/up see the same inputs one after another). Not part of the file.
    gram_cache: Option<(Vec<f32>, Vec<f32>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    #[error("{path}: {source}")]
    Gguf {
        path: String,
        source: crate::gguf::GgufError,
    },
    #[error("{path}: {what}")]
    Invalid { path: String, what: String },
}

impl Imatrix {
    pub fn new() -> Imatrix {
        Imatrix::default()
    }

    /// Add the rows of `x` (`rows × n_in`) as inputs of matrix `mat` of `name` (of `n_mat`).
    pub fn accumulate(&mut self, name: &str, n_mat: usize, mat: usize, x: &[f32], n_in: usize) {
        if n_in == 0 || mat >= n_mat {
            return;
        }
        let collect_cov = self.collect_cov && wants_covariance(name);
        let e = self
            .entries
            .entry(name.to_string())
            .or_insert_with(|| ImatrixEntry {
                n_in,
                n_mat,
                sums: vec![0.0; n_in * n_mat],
                counts: vec![0.0; n_mat],
                cov: collect_cov.then(|| vec![0.0; n_in * n_in * n_mat]),
            });
        if e.n_in != n_in || e.n_mat != n_mat {
            return;
        }
        let sums = &mut e.sums[mat * n_in..(mat + 1) * n_in];
        for row in x.chunks_exact(n_in) {
            for (s, v) in sums.iter_mut().zip(row) {
                *s += (*v as f64) * (*v as f64);
            }
            e.counts[mat] += 1.0;
        }
        if let Some(cov) = e.cov.as_mut() {
            let nn = n_in * n_in;
            let cached = matches!(&self.gram_cache, Some((cx, _)) if cx.as_slice() == x);
            if !cached {
                self.gram_cache = Some((x.to_vec(), outer_upper(x, n_in)));
            }
            if let Some((_, gram)) = &self.gram_cache {
                cov[mat * nn..(mat + 1) * nn]
                    .par_chunks_mut(n_in)
                    .zip(gram.par_chunks(n_in))
                    .enumerate()
                    .for_each(|(i, (a, g))| {
                        a[i..]
                            .iter_mut()
                            .zip(&g[i..])
                            .for_each(|(a, &g)| *a += g as f64)
                    });
            }
        }
    }

    /// Covariance bytes held while collecting for matrices of these `(n_in, n_mat)` shapes.
    pub fn cov_bytes(shapes: impl Iterator<Item = (usize, usize)>) -> u64 {
        shapes
            .map(|(n, m)| {
                (n as u64)
                    .saturating_mul(n as u64)
                    .saturating_mul(m as u64 * 8)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// The mean input covariance (`n_in × n_in`, symmetric) of matrix `mat` of `name`, blended
    /// for rarely routed experts as [`Imatrix::importance`] is. `None` when not collected.
    pub fn covariance(&self, name: &str, mat: usize) -> Option<Vec<f64>> {
        let e = self.entries.get(name)?;
        let cov = e.cov.as_ref()?;
        let total = e.total_for(mat)?;
        let n = e.n_in;
        let mut out = vec![0.0f64; n * n];
        for i in 0..n {
            for j in i..n {
                let v = e.mean_stat(cov, n * n, mat, i * n + j, total);
                out[i * n + j] = v;
                out[j * n + i] = v;
            }
        }
        Some(out)
    }

    /// Per-column importance for matrix `mat` of `name`: the mean squared input. An expert that
    /// saw fewer than [`MIN_TOKENS`] tokens is blended with its tensor's average over all
    /// experts (weighted as if the average had MIN_TOKENS tokens), so rarely routed experts are
    /// neither dropped nor fitted to a handful of tokens. `None` when nothing was recorded.
    pub fn importance(&self, name: &str, mat: usize) -> Option<Vec<f32>> {
        let e = self.entries.get(name)?;
        let total = e.total_for(mat)?;
        let n = e.n_in;
        Some(
            (0..n)
                .map(|i| e.mean_stat(&e.sums, n, mat, i, total) as f32)
                .collect(),
        )
    }

    /// Per matrix of tensor `name` (`n_mat` matrices of `n_in` columns), its input covariance
    /// factored for error-feedback quantization (`quant::gptq`), where one was collected.
    /// An error names the matrix and what is wrong with its covariance.
    pub fn factors(
        &self,
        name: &str,
        n_mat: usize,
        n_in: usize,
    ) -> Result<Vec<Option<quant::gptq::Factor>>, String> {
        (0..n_mat)
            .map(|m| {
                let Some(cov) = self.covariance(name, m) else {
                    return Ok(None);
                };
                if cov.len() != n_in * n_in {
                    return Err(format!(
                        "'{name}': the imatrix's input covariance has {} values, expected \
                         {n_in}² for {n_in} columns",
                        cov.len()
                    ));
                }
                quant::gptq::Factor::new(&cov, n_in, COV_DAMP)
                    .map(Some)
                    .map_err(|e| format!("'{name}' matrix {m}: {e}"))
            })
            .collect()
    }

    /// Write in llama.cpp's GGUF imatrix format.
    pub fn write(&self, path: &Path) -> Result<(), ImatrixError> {
        let mut md = Metadata::new();
        md.insert("general.type", GgufValue::String("imatrix".into()));
        md.insert(
            "imatrix.datasets",
            GgufValue::Array(GgufArray::String(self.datasets.clone())),
        );
        md.insert("imatrix.chunk_count", GgufValue::U32(self.chunk_count));
        md.insert("imatrix.chunk_size", GgufValue::U32(self.chunk_size));
        let mut bufs: Vec<(TensorSpec, Vec<u8>)> = Vec::new();
        for (name, e) in &self.entries {
            let sums: Vec<u8> = e
                .sums
                .iter()
                .flat_map(|v| (*v as f32).to_le_bytes())
                .collect();
            let counts: Vec<u8> = e
                .counts
                .iter()
                .flat_map(|v| (*v as f32).to_le_bytes())
                .collect();
            bufs.push((
                TensorSpec::new(
                    format!("{name}.in_sum2"),
                    vec![e.n_in as u64, e.n_mat as u64],
                    GgmlType::F32,
                ),
                sums,
            ));
            if let Some(cov) = &e.cov {
                let n = e.n_in;
                let mut b = Vec::with_capacity(cov.len() * 4);
                for m in 0..e.n_mat {
                    let c = &cov[m * n * n..(m + 1) * n * n];
                    for i in 0..n {
                        for j in 0..n {
                            let v = if j >= i { c[i * n + j] } else { c[j * n + i] };
                            b.extend_from_slice(&(v as f32).to_le_bytes());
                        }
                    }
                }
                bufs.push((
                    TensorSpec::new(
                        format!("{name}.in_cov"),
                        vec![n as u64, n as u64, e.n_mat as u64],
                        GgmlType::F32,
                    ),
                    b,
                ));
            }
            bufs.push((
                TensorSpec::new(
                    format!("{name}.counts"),
                    vec![1, e.n_mat as u64],
                    GgmlType::F32,
                ),
                counts,
            ));
        }
        let tensors: Vec<(TensorSpec, &[u8])> = bufs
            .iter()
            .map(|(s, b)| (s.clone(), b.as_slice()))
            .collect();
        write_gguf(path, md, &tensors, 32).map_err(|source| ImatrixError::Gguf {
            path: path.display().to_string(),
            source,
        })?;
        Ok(())
    }

    /// Read a GGUF imatrix (ours or llama.cpp's).
    pub fn read(path: &Path) -> Result<Imatrix, ImatrixError> {
        let p = path.display().to_string();
        let f = GgufFile::open(path).map_err(|source| ImatrixError::Gguf {
            path: p.clone(),
            source,
        })?;
        let invalid = |what: String| ImatrixError::Invalid {
            path: p.clone(),
            what,
        };
        let f32s = |name: &str| -> Result<(Vec<u64>, Vec<f64>), ImatrixError> {
            let t = f
                .tensor(name)
                .ok_or_else(|| invalid(format!("tensor '{name}' is missing")))?;
            if t.info.ty != GgmlType::F32 {
                return Err(invalid(format!(
                    "tensor '{name}' is {}, expected f32",
                    t.info.ty
                )));
            }
            let v = t
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect();
            Ok((t.info.shape.clone(), v))
        };
        let mut im = Imatrix::new();
        for t in f.tensors() {
            let Some(base) = t.name.strip_suffix(".in_sum2") else {
                continue;
            };
            let (shape, sums) = f32s(&t.name)?;
            let (cshape, counts) = f32s(&format!("{base}.counts"))?;
            let n_in = shape[0] as usize;
            let n_mat = shape.get(1).copied().unwrap_or(1) as usize;
            if counts.len() != n_mat || cshape.iter().product::<u64>() as usize != n_mat {
                return Err(invalid(format!(
                    "'{base}': {} counts for {n_mat} matrices",
                    counts.len()
                )));
            }
            if sums
                .iter()
                .chain(&counts)
                .any(|v| !v.is_finite() || *v < 0.0)
            {
                return Err(invalid(format!(
                    "'{base}': negative or non-finite statistics"
                )));
            }
            let cov = match f.tensor(&format!("{base}.in_cov")) {
                None => None,
                Some(_) => {
                    let (cs, cov) = f32s(&format!("{base}.in_cov"))?;
                    let want = [n_in as u64, n_in as u64, n_mat as u64];
                    if cs.len() < 2
                        || cs.iter().product::<u64>() != want.iter().product::<u64>()
                        || cs[..2] != want[..2]
                    {
                        return Err(invalid(format!(
                            "'{base}.in_cov' has shape {cs:?}, expected {want:?}"
                        )));
                    }
                    if cov.iter().any(|v| !v.is_finite()) {
                        return Err(invalid(format!("'{base}.in_cov': non-finite values")));
                    }
                    Some(cov)
                }
            };
            im.entries.insert(
                base.to_string(),
                ImatrixEntry {
                    n_in,
                    n_mat,
                    sums,
                    counts,
                    cov,
                },
            );
        }
        if let Some(GgufValue::Array(GgufArray::String(d))) = f.get("imatrix.datasets") {
            im.datasets = d.clone();
        }
        im.chunk_count = f.get_u32("imatrix.chunk_count").unwrap_or(0);
        im.chunk_size = f.get_u32("imatrix.chunk_size").unwrap_or(0);
        Ok(im)
    }

    /// Per merged expert tensor, the tokens each expert saw (the coverage report).
    pub fn expert_coverage(&self) -> Vec<(String, Vec<f64>)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.n_mat > 1)
            .map(|(n, e)| (n.clone(), e.counts.clone()))
            .collect()
    }
}

/// `Σ_rows x·xᵀ` (the upper triangle, column ≥ row, of an `n × n` matrix; zeros below) for the
/// rows of `x` (`rows × n`): f32 over one call (at most a chunk of tokens), rows of the result
/// in parallel; the caller adds it to the f64 sums.
/// Rows and columns of one tile of [`outer_upper`].
const R: usize = 4;
const C: usize = 16;

/// `acc[k][c] = Σ_rows x[i0 + k]·x[j0 + c]`, in input-row order.
#[inline(always)]
fn tile_body(x: &[f32], n: usize, i0: usize, j0: usize, acc: &mut [[f32; C]; R]) {
    for row in x.chunks_exact(n) {
        let xj: &[f32; C] = row[j0..j0 + C].try_into().expect("C columns");
        for (k, a) in acc.iter_mut().enumerate() {
            let xi = row[i0 + k];
            for c in 0..C {
                a[c] += xi * xj[c];
            }
        }
    }
}

/// [`tile_body`] compiled for AVX2 where the CPU has it (the accumulators then fit in eight
/// registers; no FMA, so the sums are the same as the portable build's).
fn full_tile(x: &[f32], n: usize, i0: usize, j0: usize, acc: &mut [[f32; C]; R]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        /// # Safety
        ///
        /// The CPU must support AVX2 (checked just above); the body is safe code.
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(x: &[f32], n: usize, i0: usize, j0: usize, acc: &mut [[f32; C]; R]) {
            tile_body(x, n, i0, j0, acc)
        }
        // SAFETY: AVX2 was detected; the body is safe code.
        unsafe { avx2(x, n, i0, j0, acc) };
        return;
    }
    tile_body(x, n, i0, j0, acc)
}

fn outer_upper(x: &[f32], n: usize) -> Vec<f32> {
    // Tiles of R result rows × C columns, summed in registers over all input rows (each
    // element is still summed in input-row order, the same as a plain loop would).
    let mut out = vec![0.0f32; n * n];
    out.par_chunks_mut(R * n).enumerate().for_each(|(b, band)| {
        let i0 = b * R;
        let nr = band.len() / n;
        for j0 in (i0 / C * C..n).step_by(C) {
            let nc = C.min(n - j0);
            let mut acc = [[0.0f32; C]; R];
            if nr == R && nc == C {
                full_tile(x, n, i0, j0, &mut acc);
            } else {
                for row in x.chunks_exact(n) {
                    for k in 0..nr {
                        for c in 0..nc {
                            acc[k][c] += row[i0 + k] * row[j0 + c];
                        }
                    }
                }
            }
            for k in 0..nr {
                for c in 0..nc {
                    if j0 + c >= i0 + k {
                        band[k * n + j0 + c] = acc[k][c];
                    }
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulate_write_read_and_blend() {
        let mut im = Imatrix::new();
        im.accumulate("blk.0.attn_q.weight", 1, 0, &[1.0, 2.0, 3.0, 4.0], 2);
        // Expert 0 sees 40 tokens of (1, 1); expert 1 sees 2 tokens of (3, 3).
        let many = vec![1.0f32; 80];
        im.accumulate("blk.0.ffn_up_exps.weight", 2, 0, &many, 2);
        im.accumulate("blk.0.ffn_up_exps.weight", 2, 1, &[3.0; 4], 2);
        im.datasets = vec!["calib.txt".into()];
        im.chunk_count = 1;
        im.chunk_size = 42;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("im.gguf");
        im.write(&p).unwrap();
        let back = Imatrix::read(&p).unwrap();
        assert_eq!(back.datasets, im.datasets);
        assert_eq!(back.chunk_size, 42);
        assert_eq!(
            back.importance("blk.0.attn_q.weight", 0).unwrap(),
            vec![5.0, 10.0]
        );
        let well = back.importance("blk.0.ffn_up_exps.weight", 0).unwrap();
        assert_eq!(well, vec![1.0, 1.0]);
        // Rare expert: (2·9 + 32·avg) / (2 + 32), avg = (40·1 + 2·9) / 42.
        let avg = (40.0 + 18.0) / 42.0;
        let want = ((18.0 + 32.0 * avg) / 34.0) as f32;
        let rare = back.importance("blk.0.ffn_up_exps.weight", 1).unwrap();
        assert!((rare[0] - want).abs() < 1e-6, "{rare:?} vs {want}");
        assert_eq!(back.expert_coverage()[0].1, vec![40.0, 2.0]);
        assert!(back.importance("nope", 0).is_none());
        assert!(back.covariance("blk.0.attn_q.weight", 0).is_none());
    }

    #[test]
    fn covariance_write_read_and_blend() {
        let mut im = Imatrix {
            collect_cov: true,
            ..Imatrix::default()
        };
        // Two tokens (1, 2) and (3, −1): Σ x·xᵀ = [[10, −1], [−1, 5]].
        im.accumulate("blk.0.attn_q.weight", 1, 0, &[1.0, 2.0, 3.0, -1.0], 2);
        // Expert 0: 40 tokens of (1, 1); expert 1: 2 tokens of (3, 0).
        im.accumulate("blk.0.ffn_up_exps.weight", 2, 0, &[1.0f32; 80], 2);
        im.accumulate("blk.0.ffn_up_exps.weight", 2, 1, &[3.0, 0.0, 3.0, 0.0], 2);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("im.gguf");
        im.write(&p).unwrap();
        let back = Imatrix::read(&p).unwrap();
        assert_eq!(
            back.covariance("blk.0.attn_q.weight", 0).unwrap(),
            vec![5.0, -0.5, -0.5, 2.5]
        );
        assert_eq!(
            back.importance("blk.0.attn_q.weight", 0).unwrap(),
            vec![5.0, 2.5]
        );
        assert_eq!(
            back.covariance("blk.0.ffn_up_exps.weight", 0).unwrap(),
            vec![1.0; 4]
        );
        // Rare expert 1: (own + 32·avg) / (2 + 32), avg = (Σ over experts) / 42 tokens.
        let rare = back.covariance("blk.0.ffn_up_exps.weight", 1).unwrap();
        let want = |own: f64, all: f64| (own + 32.0 * all / 42.0) / 34.0;
        let expect = [
            want(18.0, 58.0),
            want(0.0, 40.0),
            want(0.0, 40.0),
            want(0.0, 40.0),
        ];
        for (a, b) in rare.iter().zip(expect) {
            assert!((a - b).abs() < 1e-9, "{rare:?} vs {expect:?}");
        }
        // A covariance of the wrong shape is an error naming it, never a panic.
        let f32b = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (sums, counts, cov) = (f32b(&[1.0, 1.0]), f32b(&[2.0]), f32b(&[1.0; 4]));
        for shape in [vec![4u64], vec![2, 1, 2], vec![4, 1, 1]] {
            let tensors = [
                (
                    TensorSpec::new("a.weight.in_sum2", vec![2, 1], GgmlType::F32),
                    &sums[..],
                ),
                (
                    TensorSpec::new("a.weight.counts", vec![1, 1], GgmlType::F32),
                    &counts[..],
                ),
                (
                    TensorSpec::new("a.weight.in_cov", shape.clone(), GgmlType::F32),
                    &cov[..],
                ),
            ];
            write_gguf(&p, Metadata::new(), &tensors, 32).unwrap();
            let err = Imatrix::read(&p).unwrap_err().to_string();
            assert!(err.contains("a.weight.in_cov"), "{shape:?}: {err}");
        }
        // A file without covariances reads as before.
        let mut plain = im.clone();
        plain.entries.values_mut().for_each(|e| e.cov = None);
        plain.write(&p).unwrap();
        assert!(Imatrix::read(&p)
            .unwrap()
            .covariance("blk.0.attn_q.weight", 0)
            .is_none());
    }
}

/// Collects an [`Imatrix`] from the forward pass (an activation sink), shareable so the caller
/// can read it after the run.
#[derive(Clone, Default)]
pub struct Collector(pub std::sync::Arc<std::sync::Mutex<Imatrix>>);

impl crate::model::ActivationSink for Collector {
    fn input(&mut self, name: &str, mat: usize, n_mat: usize, x: &[f32], n_in: usize) {
        if let Ok(mut im) = self.0.lock() {
            im.accumulate(name, n_mat, mat, x, n_in);
        }
    }
}
