//! Compute backends. `cpu` is always available; kernels know no model: they take weight
//! matrices as (type, shape, bytes) and activations as f32 slices.

pub mod cpu;
pub mod gpu;

use quant::{GgmlType, Layout};

/// A weight matrix: `n_out` rows of `n_in` elements of `ty`, in ggml's row-major layout or
/// (repacked at load for the CPU's eight-row kernels) `quant::Layout::Interleaved8`.
#[derive(Clone, Copy, Debug)]
pub struct WeightMatrix<'a> {
    pub ty: GgmlType,
    pub n_in: usize,
    pub n_out: usize,
    pub data: &'a [u8],
    pub layout: Layout,
}

impl<'a> WeightMatrix<'a> {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.n_in).unwrap_or(0)
    }

    /// Rows `r0..r1` as a matrix of their own (e.g. one expert of a merged tensor). An
    /// interleaved matrix splits only at whole eight-row groups (or its end).
    pub fn rows(&self, r0: usize, r1: usize) -> WeightMatrix<'a> {
        let rb = self.row_bytes();
        assert!(
            self.layout == Layout::Rows || (r0 % 8 == 0 && (r1 % 8 == 0 || r1 == self.n_out)),
            "rows {r0}..{r1} split an interleaved group"
        );
        WeightMatrix {
            ty: self.ty,
            n_in: self.n_in,
            n_out: r1 - r0,
            data: &self.data[r0 * rb..r1 * rb],
            layout: self.layout,
        }
    }

    /// Row `r` dequantized into `out` (`n_in` values), in either layout.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<(), quant::QuantError> {
        quant::layout::dequantize_row_at(
            self.ty,
            self.n_in,
            self.data,
            self.n_out,
            self.layout,
            r,
            out,
        )
    }
}
