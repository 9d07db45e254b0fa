//! Kernel throughput: `cargo bench -p quant --bench kernels` (QUANT_BENCH_MIB sets the working
//! set, default 512; QUANT_BENCH_REPS the repetitions, default 5; QUANT_BENCH_ONLY a
//! comma-separated list of lines to run; QUANT_BENCH_ROW the row length, default 8192). GB/s
//! counts quantized weight bytes read, over a weight matrix much larger than L3 (tasks of 32 rows split across threads by
//! rayon through `vec_dot_rows`, one activation vector reused for every row, as in the
//! runner's decode; `×N` lines: N activations per pass through `vec_dot_rows_multi`, as in
//! batched prefill (the K-quants' kernels take eight tokens at a time); ` il` lines: the same over rows repacked into `Layout::Interleaved8`, the
//! layout the CPU runner uses for those types). The machine is shared,
//! so every kernel timing is paired with a STREAM-like triad a[i] = b[i] + s*c[i] (3 arrays
//! counted) taken back to back with it: `/tri` is the ratio of the best of each, `med` (all
//! threads) the median of the per-pair ratios.
use quant::layout::{self, Layout};
use quant::*;
use rayon::prelude::*;
use std::time::Instant;

fn secs<F: FnMut() -> f32>(mut f: F) -> f64 {
    let t = Instant::now();
    std::hint::black_box(f());
    t.elapsed().as_secs_f64()
}

struct Triad {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Triad {
    fn new(bytes: usize) -> Self {
        let n = bytes / 12;
        Triad {
            a: vec![0.0; n],
            b: vec![1.0; n],
            c: vec![2.0; n],
        }
    }
    /// GB/s of one pass.
    fn run(&mut self, par: bool) -> f64 {
        let n = self.a.len();
        let (a, b, c) = (&mut self.a, &self.b, &self.c);
        let chunk = 1 << 16;
        let t = secs(|| {
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
        (12 * n) as f64 / t / 1e9
    }
}

/// What [`paired`] measured: best GB/s of the kernel, best triad GB/s, and the median of the
/// per-repetition ratios (each kernel pass ÷ the triad pass right before it), which a burst of
/// extra bandwidth in one triad pass moves less than the ratio of the two bests.
struct Paired {
    best: f64,
    best_t: f64,
    median_ratio: f64,
}

/// `f` (moving `gb` GB) and the triad, alternating, `reps` times.
fn paired<F: FnMut() -> f32>(tri: &mut Triad, par: bool, reps: usize, gb: f64, mut f: F) -> Paired {
    let (mut best, mut best_t) = (0.0f64, 0.0f64);
    let mut ratios = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = tri.run(par);
        let k = gb / secs(&mut f);
        best_t = best_t.max(t);
        best = best.max(k);
        ratios.push(k / t);
    }
    ratios.sort_by(f64::total_cmp);
    let median_ratio = match ratios.len() {
        0 => f64::NAN,
        l if l % 2 == 1 => ratios[l / 2],
        l => (ratios[l / 2 - 1] + ratios[l / 2]) / 2.0,
    };
    Paired {
        best,
        best_t,
        median_ratio,
    }
}

fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let mib = env("QUANT_BENCH_MIB", 512);
    let reps = env("QUANT_BENCH_REPS", 5);
    let only: Option<Vec<String>> = std::env::var("QUANT_BENCH_ONLY")
        .ok()
        .map(|s| s.split(',').map(|t| t.trim().to_string()).collect());
    let bytes = mib << 20;
    let threads = rayon::current_num_threads();
    // Row length (Grok-1's hidden size is 6144; 8192 keeps all types aligned).
    let n = env("QUANT_BENCH_ROW", 8192);
    let mut tri = Triad::new(bytes);
    println!(
        "working set {mib} MiB, {threads} threads, best of {reps}; rows of {n}; kernels: {}",
        quant::simd_tier()
    );
    println!(
        "{:11} | {:>6} {:>6} | {:>6} {:>6} {:>5} | {:>6} {:>6} {:>5} {:>5} | {:>6} | {:>11}",
        "type",
        "deq1T",
        "deqAll",
        "dot1T",
        "tri1T",
        "/tri",
        "dotAll",
        "triAll",
        "/tri",
        "med",
        "scal1T",
        "quant rows/s"
    );
    let lines: [(&str, GgmlType); 33] = [
        ("f32", GgmlType::F32),
        ("f16", GgmlType::F16),
        ("bf16", GgmlType::BF16),
        ("q8_0", GgmlType::Q8_0),
        ("q8_0×f32", GgmlType::Q8_0),
        ("q4_0", GgmlType::Q4_0),
        ("q4_1", GgmlType::Q4_1),
        ("q5_0", GgmlType::Q5_0),
        ("q4_k", GgmlType::Q4_K),
        ("q5_k", GgmlType::Q5_K),
        ("q6_k", GgmlType::Q6_K),
        ("q4_0×4", GgmlType::Q4_0),
        ("q4_1×4", GgmlType::Q4_1),
        ("q5_0×4", GgmlType::Q5_0),
        ("q4_k×4", GgmlType::Q4_K),
        ("q4_k×8", GgmlType::Q4_K),
        ("q5_k×8", GgmlType::Q5_K),
        ("q6_k×8", GgmlType::Q6_K),
        // The layout the CPU runner repacks these types into at load (quant::layout).
        ("f32 il", GgmlType::F32),
        ("f16 il", GgmlType::F16),
        ("bf16 il", GgmlType::BF16),
        ("q8_0 il", GgmlType::Q8_0),
        ("q8_0×f32 il", GgmlType::Q8_0),
        ("q4_0 il", GgmlType::Q4_0),
        ("q4_1 il", GgmlType::Q4_1),
        ("q5_0 il", GgmlType::Q5_0),
        ("q4_0×4 il", GgmlType::Q4_0),
        ("q4_1×4 il", GgmlType::Q4_1),
        ("q5_0×4 il", GgmlType::Q5_0),
        ("q4_k il", GgmlType::Q4_K),
        ("q4_k×8 il", GgmlType::Q4_K),
        ("q5_k il", GgmlType::Q5_K),
        ("q6_k il", GgmlType::Q6_K),
    ];
    // Gaussian-ish weights (sum of uniforms), like trained weights.
    let mut s = 0x9e3779b97f4a7c15u64;
    let mut gauss = move || {
        let mut acc = 0.0f32;
        for _ in 0..4 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        }
        acc
    };
    let x: Vec<f32> = (0..n).map(|_| gauss()).collect();
    let qrows = 64;
    let src: Vec<f32> = (0..qrows * n).map(|_| gauss() * 0.02).collect();
    for (name, ty) in lines {
        if let Some(o) = &only {
            if !o.iter().any(|t| t == name) {
                continue;
            }
        }
        let rb = ty.row_bytes(n).unwrap();
        let mut small = vec![0u8; qrows * rb];
        let mut tq = f64::MAX;
        for _ in 0..2 {
            tq = tq.min(secs(|| {
                quantize_rows(ty, &src, n, &mut small, None).unwrap();
                small[0] as f32
            }));
        }
        // big working set: tile the quantized rows
        let rows = bytes / rb;
        let mut w = vec![0u8; rows * rb];
        w.par_chunks_mut(rb)
            .enumerate()
            .for_each(|(i, r)| r.copy_from_slice(&small[(i % qrows) * rb..][..rb]));
        let gb = (rows * rb) as f64 / 1e9;
        let il = name.ends_with(" il");
        let layout = if il {
            let mut packed = vec![0u8; w.len()];
            packed
                .par_chunks_mut(8 * rb)
                .zip(w.par_chunks(8 * rb))
                .for_each(|(d, s)| layout::interleave_rows(ty, n, s, d).unwrap());
            w = packed;
            Layout::Interleaved8
        } else {
            Layout::Rows
        };
        let mut act = Vec::new();
        quantize_activation(ty, &x, &mut act).unwrap();
        // `×N` lines: N activations per weight pass (batched prefill's entry point).
        let batch: Option<usize> = name
            .split('×')
            .nth(1)
            .and_then(|t| t.trim_end_matches(" il").parse().ok());
        let acts4: Vec<Vec<u8>> = (0..batch.unwrap_or(0))
            .map(|k| {
                let xs: Vec<f32> = x.iter().map(|v| v * (1.0 + k as f32)).collect();
                let mut a = Vec::new();
                quantize_activation(ty, &xs, &mut a).unwrap();
                a
            })
            .collect();
        // Prepared once, as the runner does per matmul.
        let prep = ActPrep::new(ty, &act);
        let preps4: Vec<ActPrep> = acts4.iter().map(|a| ActPrep::new(ty, a)).collect();
        // Decode's shape: tasks of 32 consecutive rows through the rows entry points (which
        // pick the multi-row kernels), one activation reused for every row.
        const TASK: usize = 32;
        let dot = |r: &[u8]| -> f32 {
            let mut out = [0f32; TASK];
            let k = r.len() / rb;
            match name.trim_end_matches(" il") {
                "q8_0×f32" => {
                    layout::vec_dot_f32_rows_in(ty, n, r, layout, &x, &mut out[..k]).unwrap()
                }
                _ if batch.is_some() => {
                    // Batched prefill: N activations per weight pass.
                    let t = acts4.len();
                    let refs: Vec<&[u8]> = acts4.iter().map(|a| &a[..]).collect();
                    let mut ot = vec![0f32; t * k];
                    let p = Some(&preps4[..]);
                    layout::vec_dot_rows_multi_in(ty, n, r, layout, &refs, p, &mut ot).unwrap();
                    out[0] = ot.iter().sum();
                }
                _ => layout::vec_dot_rows_in(ty, n, r, layout, &act, Some(&prep), &mut out[..k])
                    .unwrap(),
            }
            out.iter().sum()
        };
        let one = paired(&mut tri, false, reps, gb, || {
            w.chunks(TASK * rb).map(dot).sum()
        });
        let all = paired(&mut tri, true, reps, gb, || {
            w.par_chunks(TASK * rb).map(dot).sum()
        });
        let srows = (rows / 16).max(1);
        // vec_dot_f32 has no public scalar entry point; multi is compared with vec_dot above.
        let dots = if name.contains('×') || il {
            f64::NAN
        } else {
            (srows * rb) as f64
                / 1e9
                / secs(|| {
                    w.chunks(rb)
                        .take(srows)
                        .map(|r| vec_dot_scalar(ty, n, r, &act).unwrap())
                        .sum()
                })
        };
        // Dequantization by groups of eight rows (either layout).
        let mut out = vec![0f32; 8 * n];
        let deq1 = paired(&mut tri, false, 2, gb, || {
            w.chunks(8 * rb)
                .map(|r| {
                    let o = &mut out[..r.len() / rb * n];
                    layout::dequantize_rows_in(ty, n, r, layout, o).unwrap();
                    o[0]
                })
                .sum()
        });
        let deqn = paired(&mut tri, true, 2, gb, || {
            w.par_chunks(8 * rb)
                .map_init(
                    || vec![0f32; 8 * n],
                    |o, r| {
                        let o = &mut o[..r.len() / rb * n];
                        layout::dequantize_rows_in(ty, n, r, layout, o).unwrap();
                        o[0]
                    },
                )
                .sum()
        });
        println!(
            "{:11} | {:6.2} {:6.2} | {:6.2} {:6.2} {:5.2} | {:6.2} {:6.2} {:5.2} {:5.2} | {:6.2} | {:11.0}",
            name,
            deq1.best,
            deqn.best,
            one.best,
            one.best_t,
            one.best / one.best_t,
            all.best,
            all.best_t,
            all.best / all.best_t,
            all.median_ratio,
            dots,
            qrows as f64 / tq
        );
    }
}
