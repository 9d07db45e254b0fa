//! The CPU backend: rayon over output rows, `quant`'s SIMD dot products on the quantized
//! weights (dequantization fused into the dot product, no f32 weight matrices).

mod gemm;
mod matmul;
mod ops;
mod warm;

pub use matmul::{matmul, matmul_many, PreparedActivations};
pub use ops::{
    attend_head, dot_f32, gelu_mul, gelu_tanh, rms_norm, rope_rotate_half, softcap,
    softmax_in_place, AttnInputs,
};
pub use warm::with_warm_pool;
