//! Kernel throughput for `grok1-quant bench --device gpu`: matvec GB/s of weight bytes per
//! weight type (a model's end-to-end tokens/s: `crate::model::gpu::bench_forward`). Figures
//! from a software adapter (Mesa lavapipe) are a smoke test only, not GPU performance.

use super::context::{GpuContext, GpuError, MatmulKind};
use crate::backend::WeightMatrix;
use quant::GgmlType;
use std::time::Instant;

/// One weight type's decode matvec: `bytes` of weights read per call, `seconds` per call.
#[derive(Clone, Debug)]
pub struct KernelBench {
    /// Kernel name ("matvec").
    pub name: &'static str,
    pub ty: GgmlType,
    /// Rows × columns of the matrix.
    pub n_out: usize,
    pub n_in: usize,
    /// Weight bytes read per call.
    pub bytes: u64,
    /// Mean seconds per call.
    pub seconds: f64,
    /// `bytes / seconds / 1e9`.
    pub gbps: f64,
}

/// The weight types [`bench_kernels`] measures.
pub const BENCH_TYPES: [GgmlType; 4] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_K,
    GgmlType::F16,
];

/// Measure the one-token matmul (matvec) of an `n_out × n_in` matrix of each of
/// [`BENCH_TYPES`] (`n_in` a multiple of 256), `iters` calls recorded into one submit after a
/// warm-up call, timed to completion. 4096 × 1024 is a few MB per type.
pub fn bench_kernels(
    ctx: &GpuContext,
    n_in: usize,
    n_out: usize,
    iters: usize,
) -> Result<Vec<KernelBench>, GpuError> {
    if n_in == 0 || !n_in.is_multiple_of(256) || n_out == 0 || iters == 0 {
        return Err(GpuError::Shape(format!(
            "bench: {n_out} × {n_in} (n_in a multiple of 256), {iters} iterations"
        )));
    }
    // Deterministic values in (-1, 1).
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let values: Vec<f32> = (0..n_in * n_out)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let x: Vec<f32> = values[..n_in].to_vec();
    let mut out = Vec::new();
    for ty in BENCH_TYPES {
        let rb = ty.row_bytes(n_in).ok_or(GpuError::Unsupported { ty })?;
        let mut data = vec![0u8; rb * n_out];
        quant::quantize_rows(ty, &values, n_in, &mut data, None)
            .map_err(|e| GpuError::Shape(format!("bench: quantizing {ty:?}: {e}")))?;
        let w = WeightMatrix {
            ty,
            n_in,
            n_out,
            data: &data,
            layout: quant::Layout::Rows,
        };
        let gw = ctx.upload_weight(&w, 1)?;
        let xb = ctx.upload_f32("x", &x);
        let ob = ctx.scratch("out", n_out);
        let dummy = ctx.scratch("dummy", 1);
        let dense = MatmulKind::Dense { tokens: 1 };
        // Warm-up: compiles the pipeline and faults the buffers in.
        let mut enc = ctx.encoder();
        ctx.encode_matmul(&mut enc, &gw, &xb, &ob, dense, &dummy)?;
        ctx.submit(enc, "bench warm-up")?;
        ctx.read_f32(&ob, 0, 1)?;
        let t0 = Instant::now();
        let mut enc = ctx.encoder();
        for _ in 0..iters {
            ctx.encode_matmul(&mut enc, &gw, &xb, &ob, dense, &dummy)?;
        }
        ctx.submit(enc, "bench")?;
        ctx.read_f32(&ob, 0, 1)?;
        let seconds = t0.elapsed().as_secs_f64() / iters as f64;
        let bytes = (rb * n_out) as u64;
        out.push(KernelBench {
            name: "matvec",
            ty,
            n_out,
            n_in,
            bytes,
            seconds,
            gbps: bytes as f64 / seconds / 1e9,
        });
    }
    Ok(out)
}
