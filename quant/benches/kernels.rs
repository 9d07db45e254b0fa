//! Kernel throughput: `cargo bench -p quant --bench kernels` (QUANT_BENCH_MIB sets the working
//! set, default 512). GB/s counts quantized weight bytes read; triad is a STREAM-like
//! a[i] = b[i] + s*c[i] over the same total size, counting 3 arrays.
use quant::*;
use rayon::prelude::*;
use std::time::Instant;

fn best_of<F: FnMut() -> f32>(reps: usize, mut f: F) -> f64 {
    let mut best = f64::MAX;
    let mut sink = 0.0f32;
    for _ in 0..reps {
        let t = Instant::now();
        sink += f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink);
    best
}

fn triad(bytes: usize, par: bool) -> f64 {
    let n = bytes / 12;
    let b = vec![1.0f32; n];
    let c = vec![2.0f32; n];
    let mut a = vec![0.0f32; n];
    let chunk = 1 << 16;
    let t = best_of(3, || {
        if par {
            a.par_chunks_mut(chunk)
                .zip(b.par_chunks(chunk))
                .zip(c.par_chunks(chunk))
                .for_each(|((a, b), c)| {
                    for i in 0..a.len() {
                        a[i] = b[i] + 3.0 * c[i];
                    }
                });
        } else {
            for i in 0..n {
                a[i] = b[i] + 3.0 * c[i];
            }
        }
        a[n / 2]
    });
    (3 * 4 * n) as f64 / t / 1e9
}

fn main() {
    let mib: usize = std::env::var("QUANT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let bytes = mib << 20;
    let threads = rayon::current_num_threads();
    let tri1 = triad(bytes, false);
    let trin = triad(bytes, true);
    println!(
        "working set {mib} MiB, {threads} threads; triad GB/s: 1 thread {tri1:.1}, all {trin:.1}"
    );
    println!(
        "{:6} | {:>9} {:>9} | {:>9} {:>9} {:>6} | {:>9} | {:>11}",
        "type", "deq 1T", "deq all", "dot 1T", "dot all", "/triad", "dot scal", "quant rows/s"
    );
    let n = 8192usize; // row length (Grok-1 hidden size is 6144; 8192 keeps all types aligned)
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    for ty in types {
        let rb = ty.row_bytes(n).unwrap();
        // quantize speed on a few distinct rows
        let qrows = 64;
        let src: Vec<f32> = (0..qrows * n)
            .map(|i| x[i % n] * (1.0 + (i / n) as f32 * 0.01))
            .collect();
        let mut small = vec![0u8; qrows * rb];
        let tq = best_of(2, || {
            quantize_rows(ty, &src, n, &mut small, None).unwrap();
            small[0] as f32
        });
        // big working set: tile the quantized rows
        let rows = bytes / rb;
        let mut w = vec![0u8; rows * rb];
        w.par_chunks_mut(rb)
            .enumerate()
            .for_each(|(i, r)| r.copy_from_slice(&small[(i % qrows) * rb..][..rb]));
        let mut act = Vec::new();
        quantize_activation(ty, &x, &mut act).unwrap();
        let gb = (rows * rb) as f64 / 1e9;
        let dot1 = gb
            / best_of(3, || {
                w.chunks(rb).map(|r| vec_dot(ty, n, r, &act).unwrap()).sum()
            });
        let dotn = gb
            / best_of(3, || {
                w.par_chunks(rb)
                    .map(|r| vec_dot(ty, n, r, &act).unwrap())
                    .sum()
            });
        let srows = (rows / 8).max(1);
        let dots = (srows * rb) as f64
            / 1e9
            / best_of(1, || {
                w.chunks(rb)
                    .take(srows)
                    .map(|r| vec_dot_scalar(ty, n, r, &act).unwrap())
                    .sum()
            });
        let mut out = vec![0f32; n];
        let deq1 = gb
            / best_of(2, || {
                w.chunks(rb)
                    .map(|r| {
                        dequantize_row(ty, r, &mut out).unwrap();
                        out[0]
                    })
                    .sum()
            });
        let deqn = gb
            / best_of(2, || {
                w.par_chunks(rb)
                    .map_init(
                        || vec![0f32; n],
                        |o, r| {
                            dequantize_row(ty, r, o).unwrap();
                            o[0]
                        },
                    )
                    .sum()
            });
        println!(
            "{:6} | {:9.2} {:9.2} | {:9.2} {:9.2} {:6.2} | {:9.2} | {:11.0}",
            ty.name(),
            deq1,
            deqn,
            dot1,
            dotn,
            dotn / trin,
            dots,
            qrows as f64 / tq
        );
    }
}
