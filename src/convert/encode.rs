//! Encode bands of rows into one output type: plain float types, exact Q8_0 from the int8
//! source, or any `quant` block type from f32.

use super::source::RowSource;
use half::{bf16, f16};
use quant::GgmlType;

/// Counters an encode reports, summed over a conversion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeStats {
    /// Q8_0 blocks that hold the checkpoint's int8 values unchanged.
    pub exact_q8_blocks: u64,
    /// Q8_0 blocks that had to be requantized (scale not representable in f16, or a block
    /// straddling two scale blocks).
    pub requantized_q8_blocks: u64,
}

impl std::ops::AddAssign for EncodeStats {
    fn add_assign(&mut self, o: Self) {
        self.exact_q8_blocks += o.exact_q8_blocks;
        self.requantized_q8_blocks += o.requantized_q8_blocks;
    }
}

/// The source rows of one band, decoded at most once per form and shared by every output type.
pub struct Band<'s, 'a> {
    src: &'s RowSource<'a>,
    row0: usize,
    nrows: usize,
    f32: Option<Vec<f32>>,
}

impl<'s, 'a> Band<'s, 'a> {
    pub fn new(src: &'s RowSource<'a>, row0: usize, nrows: usize) -> Self {
        Band {
            src,
            row0,
            nrows,
            f32: None,
        }
    }

    fn f32(&mut self) -> &[f32] {
        if self.f32.is_none() {
            self.f32 = Some(self.src.f32_rows(self.row0, self.nrows));
        }
        self.f32.as_deref().unwrap_or(&[])
    }

    /// Encode the band as `ty` into `dst` (exactly `nrows × row_bytes(ty)` bytes).
    pub fn encode(
        &mut self,
        ty: GgmlType,
        dst: &mut [u8],
        imatrix: Option<&[f32]>,
        cov: Option<&quant::gptq::Factor>,
    ) -> Result<EncodeStats, quant::QuantError> {
        let n_in = self.src.n_in;
        let mut stats = EncodeStats::default();
        match ty {
            GgmlType::F32 => {
                for (d, v) in dst.chunks_exact_mut(4).zip(self.f32()) {
                    d.copy_from_slice(&v.to_le_bytes());
                }
            }
            GgmlType::F16 => {
                for (d, v) in dst.chunks_exact_mut(2).zip(self.f32()) {
                    d.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
                }
            }
            GgmlType::BF16 => {
                for (d, v) in dst.chunks_exact_mut(2).zip(self.f32()) {
                    d.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
                }
            }
            GgmlType::Q8_0 if imatrix.is_none() && self.src.scale_block_len().is_some() => {
                stats = self.encode_exact_q8_0(dst)?;
            }
            _ => {
                let f = self.f32();
                quant::quantize_rows_fed(ty, f, n_in, dst, imatrix, cov)?;
            }
        }
        Ok(stats)
    }

    /// Q8_0 holding the checkpoint's int8 values unchanged with d = f16(scale), where every block
    /// of 32 lies in one scale block and the scale is exactly representable in f16; other blocks
    /// are requantized from int8 × scale with ggml's rule and counted.
    fn encode_exact_q8_0(&mut self, dst: &mut [u8]) -> Result<EncodeStats, quant::QuantError> {
        let n_in = self.src.n_in;
        let nrows = self.nrows;
        let blk_len = self.src.scale_block_len().unwrap_or(n_in);
        let row_bytes =
            GgmlType::Q8_0
                .row_bytes(n_in)
                .ok_or(quant::QuantError::NotBlockAligned {
                    ty: GgmlType::Q8_0,
                    len: n_in,
                })?;
        let mut stats = EncodeStats::default();
        // (row, block) to requantize.
        let mut pending: Vec<(usize, usize)> = Vec::new();
        // The int8 values go straight into the blocks' quants; then each block gets its d.
        let scales = self
            .src
            .int8_into_q8_0(self.row0, nrows, dst)
            .expect("checked by caller");
        let scale_blocks = scales.len() / nrows.max(1);
        // Per block of 32 (the same in every row): its scale block, or `None` when it
        // straddles two.
        let block_scale: Vec<Option<usize>> = (0..n_in / 32)
            .map(|b| {
                let (first, last) = (b * 32 / blk_len, (b * 32 + 31) / blk_len);
                (first == last).then_some(first)
            })
            .collect();
        let mut row_d: Vec<Option<[u8; 2]>> = Vec::with_capacity(scale_blocks);
        for (r, out) in dst.chunks_exact_mut(row_bytes).enumerate() {
            // Each scale of the row as f16 bytes, where f16 holds it exactly.
            row_d.clear();
            row_d.extend(
                scales[r * scale_blocks..(r + 1) * scale_blocks]
                    .iter()
                    .map(|&s| {
                        let d = f16::from_f32(s);
                        (d.to_f32() == s && s.is_finite()).then(|| d.to_le_bytes())
                    }),
            );
            for (b, blk) in out.chunks_exact_mut(34).enumerate() {
                match block_scale[b].and_then(|sb| row_d[sb]) {
                    Some(d) => {
                        blk[..2].copy_from_slice(&d);
                        stats.exact_q8_blocks += 1;
                    }
                    None => pending.push((r, b)),
                }
            }
        }
        if !pending.is_empty() {
            let f = self.f32().to_vec();
            for (r, b) in pending {
                let vals = &f[r * n_in + b * 32..r * n_in + b * 32 + 32];
                let at = r * row_bytes + b * 34;
                quant::quantize_row(GgmlType::Q8_0, vals, &mut dst[at..at + 34], None)?;
                stats.requantized_q8_blocks += 1;
            }
        }
        Ok(stats)
    }
}
