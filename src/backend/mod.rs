//! Compute backends. `cpu` is always available; kernels know no model: they take weight
//! matrices as (type, shape, bytes) and activations as f32 slices.

pub mod cpu;
pub mod gpu;

use quant::GgmlType;

/// A weight matrix in ggml layout: `n_out` rows of `n_in` elements of `ty`, row-major bytes.
#[derive(Clone, Copy, Debug)]
pub struct WeightMatrix<'a> {
    pub ty: GgmlType,
    pub n_in: usize,
    pub n_out: usize,
    pub data: &'a [u8],
}

impl<'a> WeightMatrix<'a> {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.n_in).unwrap_or(0)
    }

    /// Rows `r0..r1` as a matrix of their own (e.g. one expert of a merged tensor).
    pub fn rows(&self, r0: usize, r1: usize) -> WeightMatrix<'a> {
        let rb = self.row_bytes();
        WeightMatrix {
            ty: self.ty,
            n_in: self.n_in,
            n_out: r1 - r0,
            data: &self.data[r0 * rb..r1 * rb],
        }
    }

    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}
