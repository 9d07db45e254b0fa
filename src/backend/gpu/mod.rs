//! The GPU backend: WGSL compute kernels through wgpu. Weights are uploaded once as raw ggml
//! bytes and dequantized in registers inside the matmul kernels; a tensor bigger than the
//! adapter's storage-binding limit is split into several buffers of whole rows (whole experts
//! for merged expert tensors), each bound and dispatched on its own. It knows no model: the
//! Grok forward pass that strings these kernels together is `crate::model::gpu`.
//!
//! Numerics follow the CPU backend: F32/F16/BF16/Q8_0 weights take f32 activations; Q4_0 and
//! Q5_0 take Q8_0, Q4_1 takes Q8_1, Q4_K, Q5_K and Q6_K take Q8_K activations, quantized on the
//! GPU exactly as the CPU does.

mod bench;
mod context;

pub use bench::{bench_kernels, KernelBench, BENCH_TYPES};
pub use context::{weight_row_bytes, AttentionShape, GpuContext, GpuError, GpuWeight, KernelTime};
pub(crate) use context::{Encoder, MatmulKind, OpParams};
