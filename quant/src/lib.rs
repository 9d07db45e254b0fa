//! ggml-compatible block formats.
//!
//! Every type the product writes or computes with lives here, one module per type, each with a
//! scalar reference (`quantize`, `dequantize`, `vec_dot`) and, where it pays, SIMD kernels chosen
//! at run time. This crate knows no container (GGUF lives in the main crate) and no model.

mod types;

pub use types::{GgmlType, QuantError};
