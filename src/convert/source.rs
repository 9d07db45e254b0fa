//! Rows of a checkpoint parameter in GGUF order.
//!
//! Checkpoint matrices are `[(experts,) in, out]` (numpy order) with int8 weights and bf16 scales
//! per (input block, output column); GGUF rows are output features, each `in` elements long. This
//! module turns a band of output rows into either exact int8 + per-row scales or f32 values,
//! reading the memory-mapped source in cache-friendly tiles. It knows nothing of the output.

use super::transpose::{transpose_bytes, RowLayout};
use half::bf16;

/// The raw data of one checkpoint parameter, as zero-copy slices of the mapped file.
#[derive(Clone, Copy)]
pub enum SourceData<'a> {
    /// Little-endian float32 values (possibly unaligned in the file, hence bytes).
    F32(&'a [u8]),
    /// int8 weights and little-endian bf16 scales with `scale_blocks` blocks along the input.
    Int8 {
        weight: &'a [u8],
        scales: &'a [u8],
        scale_blocks: usize,
    },
}

/// How the source maps to GGUF rows.
#[derive(Clone, Copy)]
pub struct RowSource<'a> {
    pub data: SourceData<'a>,
    /// Leading expert axis (1 when none).
    pub experts: usize,
    /// Input features = GGUF row length.
    pub n_in: usize,
    /// Output features per expert.
    pub n_out: usize,
    /// Whether the source is `[in, out]` (matrices) and must be transposed; `false` for arrays
    /// already stored row-major as `[rows, n_in]` (embeddings, norms).
    pub transpose: bool,
}

/// A band of rows as int8 values with one f32 scale per (row, scale block).
pub struct Int8Rows {
    pub q: Vec<i8>,
    /// `rows × scale_blocks` scales, each exactly a bf16 value widened to f32.
    pub scales: Vec<f32>,
    pub scale_blocks: usize,
}

impl<'a> RowSource<'a> {
    /// Check that the data slices hold exactly what the dimensions say.
    pub fn validate(&self) -> Result<(), String> {
        let elems = self
            .experts
            .checked_mul(self.n_in)
            .and_then(|x| x.checked_mul(self.n_out))
            .ok_or("element count overflows")?;
        match self.data {
            SourceData::F32(b) => {
                if Some(b.len()) != elems.checked_mul(4) {
                    return Err(format!("{} f32 bytes for {elems} elements", b.len()));
                }
            }
            SourceData::Int8 {
                weight,
                scales,
                scale_blocks,
            } => {
                if weight.len() != elems {
                    return Err(format!("{} int8 bytes for {elems} elements", weight.len()));
                }
                if scale_blocks == 0 || self.n_in % scale_blocks != 0 {
                    return Err(format!(
                        "{} inputs do not split into {scale_blocks} scale blocks",
                        self.n_in
                    ));
                }
                let want = self.experts * scale_blocks * self.n_out * 2;
                if scales.len() != want {
                    return Err(format!("{} scale bytes, expected {want}", scales.len()));
                }
            }
        }
        Ok(())
    }

    /// Input elements per scale block, for int8 sources.
    pub fn scale_block_len(&self) -> Option<usize> {
        match self.data {
            SourceData::Int8 { scale_blocks, .. } => Some(self.n_in / scale_blocks),
            SourceData::F32(_) => None,
        }
    }

    /// The int8 weights of the expert holding `row0`, from column `row0`'s (stride `n_out`),
    /// that expert's scales, and the column within the expert.
    fn int8_expert(&self, row0: usize, nrows: usize) -> Option<(&'a [u8], &'a [u8], usize, usize)> {
        let SourceData::Int8 {
            weight,
            scales,
            scale_blocks,
        } = self.data
        else {
            return None;
        };
        let (e, o0) = (row0 / self.n_out, row0 % self.n_out);
        assert!(o0 + nrows <= self.n_out, "band crosses an expert");
        let (n_in, n_out) = (self.n_in, self.n_out);
        let w = &weight[e * n_in * n_out + o0..(e + 1) * n_in * n_out];
        let sc = &scales[e * scale_blocks * n_out * 2..(e + 1) * scale_blocks * n_out * 2];
        Some((w, sc, o0, scale_blocks))
    }

    /// Rows `row0 .. row0 + nrows` (all within one expert) as exact int8 + scales.
    /// Returns `None` for f32 sources.
    pub fn int8_rows(&self, row0: usize, nrows: usize) -> Option<Int8Rows> {
        let (w, sc, o0, scale_blocks) = self.int8_expert(row0, nrows)?;
        let (n_in, n_out) = (self.n_in, self.n_out);
        let mut q = vec![0i8; nrows * n_in];
        transpose_bytes(
            w,
            n_out,
            bytemuck::cast_slice_mut(&mut q),
            n_in,
            n_in,
            nrows,
            RowLayout::Plain,
        );
        let mut out_scales = vec![0f32; nrows * scale_blocks];
        for b in 0..scale_blocks {
            for r in 0..nrows {
                let at = (b * n_out + o0 + r) * 2;
                out_scales[r * scale_blocks + b] =
                    bf16::from_le_bytes([sc[at], sc[at + 1]]).to_f32();
            }
        }
        Some(Int8Rows {
            q,
            scales: out_scales,
            scale_blocks,
        })
    }

    /// Write the int8 values of rows `row0 .. row0 + nrows` (within one expert) straight into
    /// the quants of Q8_0 rows in `dst` (`nrows × n_in / 32 × 34` bytes; the 2-byte `d` of each
    /// block is left as it is), and return the rows' scales (`rows × scale_blocks`, bf16 widened
    /// to f32). Returns `None` for f32 sources. `n_in` must be a multiple of 32.
    pub fn int8_into_q8_0(&self, row0: usize, nrows: usize, dst: &mut [u8]) -> Option<Vec<f32>> {
        let (w, sc, o0, scale_blocks) = self.int8_expert(row0, nrows)?;
        let (n_in, n_out) = (self.n_in, self.n_out);
        assert!(n_in % 32 == 0, "Q8_0 rows need a multiple of 32 values");
        let row_bytes = n_in / 32 * 34;
        assert_eq!(dst.len(), nrows * row_bytes, "Q8_0 band size");
        transpose_bytes(w, n_out, dst, row_bytes, n_in, nrows, RowLayout::Q8_0);
        let mut out_scales = vec![0f32; nrows * scale_blocks];
        for b in 0..scale_blocks {
            let row = &sc[(b * n_out + o0) * 2..(b * n_out + o0 + nrows) * 2];
            for (r, c) in row.chunks_exact(2).enumerate() {
                out_scales[r * scale_blocks + b] = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Some(out_scales)
    }

    /// The source bytes of rows `row0 .. row0 + nrows` when they are already GGUF F32 rows
    /// (a float32 array stored row-major): the output can be written from them unchanged.
    pub fn f32_rows_raw(&self, row0: usize, nrows: usize) -> Option<&'a [u8]> {
        match self.data {
            SourceData::F32(bytes) if !self.transpose => {
                Some(&bytes[row0 * self.n_in * 4..(row0 + nrows) * self.n_in * 4])
            }
            _ => None,
        }
    }

    /// Rows `row0 .. row0 + nrows` (within one expert) as f32 (int8 × scale for int8 sources,
    /// which is exact in f32).
    pub fn f32_rows(&self, row0: usize, nrows: usize) -> Vec<f32> {
        let n_in = self.n_in;
        match self.data {
            SourceData::Int8 { .. } => {
                let rows = self.int8_rows(row0, nrows).expect("int8 source");
                let blk = n_in / rows.scale_blocks;
                let mut out = vec![0f32; nrows * n_in];
                for (r, row) in out.chunks_exact_mut(n_in).enumerate() {
                    for (i, v) in row.iter_mut().enumerate() {
                        let s = rows.scales[r * rows.scale_blocks + i / blk];
                        *v = rows.q[r * n_in + i] as f32 * s;
                    }
                }
                out
            }
            SourceData::F32(bytes) => {
                let mut out = vec![0f32; nrows * n_in];
                if !self.transpose {
                    let src = &bytes[row0 * n_in * 4..(row0 + nrows) * n_in * 4];
                    for (v, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                        *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    }
                } else {
                    let (e, o0) = (row0 / self.n_out, row0 % self.n_out);
                    let n_out = self.n_out;
                    let base = e * n_in * n_out;
                    for i in 0..n_in {
                        for r in 0..nrows {
                            let at = (base + i * n_out + o0 + r) * 4;
                            out[r * n_in + i] = f32::from_le_bytes([
                                bytes[at],
                                bytes[at + 1],
                                bytes[at + 2],
                                bytes[at + 3],
                            ]);
                        }
                    }
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_and_dequantizes_row_parallel_scales() {
        // 2 experts, in 4, out 3, 2 scale blocks.
        let (e, n_in, n_out, sb) = (2, 4, 3, 2);
        let weight: Vec<u8> = (0..e * n_in * n_out)
            .map(|x| (x as i8 - 10) as u8)
            .collect();
        let scales: Vec<u8> = (0..e * sb * n_out)
            .flat_map(|x| bf16::from_f32(0.5 + x as f32).to_le_bytes())
            .collect();
        let src = RowSource {
            data: SourceData::Int8 {
                weight: &weight,
                scales: &scales,
                scale_blocks: sb,
            },
            experts: e,
            n_in,
            n_out,
            transpose: true,
        };
        src.validate().unwrap();
        // Row 4 = expert 1, out column 1.
        let f = src.f32_rows(4, 2);
        for i in 0..n_in {
            let w = weight[n_in * n_out + i * n_out + 1] as i8 as f32;
            let s = 0.5 + (sb * n_out + (i / 2) * n_out + 1) as f32;
            assert_eq!(f[i], w * s);
        }
        let q = src.int8_rows(3, 3).unwrap();
        assert_eq!(q.q[0], weight[n_in * n_out] as i8);
        assert_eq!(q.q.len(), 12);
    }

    #[test]
    fn int8_into_q8_0_places_quants_and_scales() {
        // 2 experts, in 64, out 40, 2 scale blocks; rows 3..37 of expert 1 (ragged for SIMD).
        let (e, n_in, n_out, sb) = (2, 64, 40, 2);
        let weight: Vec<u8> = (0..e * n_in * n_out).map(|x| (x * 13 + 5) as u8).collect();
        let scales: Vec<u8> = (0..e * sb * n_out)
            .flat_map(|x| bf16::from_f32(0.25 * x as f32).to_le_bytes())
            .collect();
        let src = RowSource {
            data: SourceData::Int8 {
                weight: &weight,
                scales: &scales,
                scale_blocks: sb,
            },
            experts: e,
            n_in,
            n_out,
            transpose: true,
        };
        let (row0, nrows) = (n_out + 3, 34);
        let mut dst = vec![0x5Au8; nrows * 68];
        let got = src.int8_into_q8_0(row0, nrows, &mut dst).unwrap();
        let want = src.int8_rows(row0, nrows).unwrap();
        assert_eq!(got, want.scales);
        for r in 0..nrows {
            for b in 0..2 {
                let blk = &dst[r * 68 + b * 34..r * 68 + b * 34 + 34];
                assert_eq!(blk[..2], [0x5A, 0x5A], "d left alone");
                let q: Vec<i8> = blk[2..].iter().map(|&x| x as i8).collect();
                assert_eq!(q, want.q[r * n_in + b * 32..r * n_in + b * 32 + 32]);
            }
        }
        assert!(src.f32_rows_raw(0, 1).is_none());
    }

    #[test]
    fn f32_rows_transpose_router() {
        // router [in=3, out=2] → rows [2][3]
        let vals: Vec<f32> = (0..6).map(|x| x as f32).collect();
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let src = RowSource {
            data: SourceData::F32(&bytes),
            experts: 1,
            n_in: 3,
            n_out: 2,
            transpose: true,
        };
        assert_eq!(src.f32_rows(0, 2), vec![0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
        assert!(src.f32_rows_raw(0, 2).is_none(), "transposed: no raw rows");
        let plain = RowSource {
            transpose: false,
            ..src
        };
        assert_eq!(plain.f32_rows_raw(1, 1), Some(&bytes[12..24]));
    }
}
