//! Rows of a checkpoint parameter in GGUF order.
//!
//! Checkpoint matrices are `[(experts,) in, out]` (numpy order) with int8 weights and bf16 scales
//! per (input block, output column); GGUF rows are output features, each `in` elements long. This
//! module turns a band of output rows into either exact int8 + per-row scales or f32 values,
//! reading the memory-mapped source in cache-friendly tiles. It knows nothing of the output.

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

const TILE: usize = 64;

/// Transpose the 8×8 byte matrix held in `x` (row `k` = `x[k]`, byte `j` at bits `8j`).
#[inline(always)]
fn transpose_8x8(x: &mut [u64; 8]) {
    // Swap the off-diagonal halves of 2×2, then 4×4, then 8×8 blocks (in units of 1, 2, 4 bytes).
    for (dist, mask) in [
        (1usize, 0x00FF_00FF_00FF_00FFu64),
        (2, 0x0000_FFFF_0000_FFFF),
        (4, 0x0000_0000_FFFF_FFFF),
    ] {
        let shift = 8 * dist as u32;
        for k in 0..8 {
            if k & dist == 0 {
                let t = ((x[k] >> shift) ^ x[k + dist]) & mask;
                x[k + dist] ^= t;
                x[k] ^= t << shift;
            }
        }
    }
}

/// `dst[r * dst_stride + i] = src[i * src_stride + r]` for `i < n_in`, `r < nrows`: a tiled
/// byte transpose, 8×8 blocks in registers, scalar edges.
fn transpose_bytes(
    src: &[u8],
    src_stride: usize,
    dst: &mut [u8],
    dst_stride: usize,
    n_in: usize,
    nrows: usize,
) {
    for i0 in (0..n_in).step_by(TILE) {
        let i1 = (i0 + TILE).min(n_in);
        let fi = i0 + (i1 - i0) / 8 * 8;
        for r0 in (0..nrows).step_by(TILE) {
            let r1 = (r0 + TILE).min(nrows);
            let fr = r0 + (r1 - r0) / 8 * 8;
            for i in (i0..fi).step_by(8) {
                for r in (r0..fr).step_by(8) {
                    let mut x = [0u64; 8];
                    for (k, v) in x.iter_mut().enumerate() {
                        let at = (i + k) * src_stride + r;
                        *v = u64::from_le_bytes(src[at..at + 8].try_into().expect("8 bytes"));
                    }
                    transpose_8x8(&mut x);
                    for (k, v) in x.iter().enumerate() {
                        let at = (r + k) * dst_stride + i;
                        dst[at..at + 8].copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
            // Edges: columns past the last full 8 (all rows), rows past it (full columns).
            for i in i0..i1 {
                let rows = if i < fi { fr..r1 } else { r0..r1 };
                for r in rows {
                    dst[r * dst_stride + i] = src[i * src_stride + r];
                }
            }
        }
    }
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

    /// Rows `row0 .. row0 + nrows` (all within one expert) as exact int8 + scales.
    /// Returns `None` for f32 sources.
    pub fn int8_rows(&self, row0: usize, nrows: usize) -> Option<Int8Rows> {
        let SourceData::Int8 {
            weight,
            scales,
            scale_blocks,
        } = self.data
        else {
            return None;
        };
        let (e, o0) = (row0 / self.n_out, row0 % self.n_out);
        debug_assert!(o0 + nrows <= self.n_out, "band crosses an expert");
        let (n_in, n_out) = (self.n_in, self.n_out);
        let w = &weight[e * n_in * n_out..(e + 1) * n_in * n_out];
        let mut q = vec![0i8; nrows * n_in];
        transpose_bytes(
            &w[o0..],
            n_out,
            bytemuck::cast_slice_mut(&mut q),
            n_in,
            n_in,
            nrows,
        );
        let sc = &scales[e * scale_blocks * n_out * 2..(e + 1) * scale_blocks * n_out * 2];
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
    fn byte_transpose_matches_naive_on_ragged_sizes() {
        for (n_in, nrows, stride) in [
            (1, 1, 1),
            (8, 8, 8),
            (13, 21, 30),
            (64, 64, 70),
            (130, 75, 75),
        ] {
            let src: Vec<u8> = (0..n_in * stride)
                .map(|x| (x * 7 + x / 251) as u8)
                .collect();
            let mut dst = vec![0u8; nrows * n_in];
            transpose_bytes(&src, stride, &mut dst, n_in, n_in, nrows);
            for r in 0..nrows {
                for i in 0..n_in {
                    assert_eq!(
                        dst[r * n_in + i],
                        src[i * stride + r],
                        "{n_in} {nrows} {r} {i}"
                    );
                }
            }
        }
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
    }
}
