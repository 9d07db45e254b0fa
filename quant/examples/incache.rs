//! In-cache kernel throughput, the fastest of many short samples (wall-clock: on a shared
//! virtual machine neither CPU time nor a long sample escapes the neighbours, but some short
//! samples run undisturbed): how fast each `vec_dot` runs when memory is not the limit.
//! `cargo run --release -p quant --example incache [KiB]` (default 192 KiB of weights, inside a
//! Zen 3 core's 512 KiB L2; `QUANT_BENCH_ROW` sets the row length, default 8192).
use quant::*;

fn main() {
    let kib: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(192);
    let n: usize = std::env::var("QUANT_BENCH_ROW")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8192);
    let mut seed = 0x1234_5678u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    };
    let x: Vec<f32> = (0..n).map(|_| rnd()).collect();
    println!(
        "{kib} KiB of weights per pass, rows of {n}, one thread, fastest of 400 samples; kernels: {}",
        simd_tier()
    );
    println!("{:<12} {:>10} {:>12}", "type", "GB/s", "ns/block32");
    let types = [
        ("f32", GgmlType::F32),
        ("f16", GgmlType::F16),
        ("bf16", GgmlType::BF16),
        ("q8_0", GgmlType::Q8_0),
        ("q4_0", GgmlType::Q4_0),
        ("q4_1", GgmlType::Q4_1),
        ("q5_0", GgmlType::Q5_0),
        ("q4_k", GgmlType::Q4_K),
        ("q5_k", GgmlType::Q5_K),
        ("q6_k", GgmlType::Q6_K),
    ];
    let only = std::env::var("QUANT_BENCH_ONLY").unwrap_or_default();
    let variants = types
        .iter()
        .copied()
        .chain([("q8_0×f32", GgmlType::Q8_0)])
        .flat_map(|(name, ty)| [(name, ty, false), (name, ty, true)]);
    for (name, ty, il) in variants {
        if il && !layout::can_interleave(ty) {
            continue;
        }
        let label = if il {
            format!("{name} il")
        } else {
            name.to_string()
        };
        if !only.is_empty() && !only.split(',').any(|o| o == label) {
            continue;
        }
        let rb = ty.row_bytes(n).unwrap();
        // Whole groups of eight rows (the packed layout needs them).
        let rows = ((kib * 1024 / rb) / 8 * 8).max(8);
        let src: Vec<f32> = (0..rows * n).map(|_| rnd()).collect();
        let mut w = vec![0u8; rows * rb];
        quantize_rows(ty, &src, n, &mut w, None).unwrap();
        let lay = if il {
            let mut packed = vec![0u8; w.len()];
            layout::interleave_rows(ty, n, &w, &mut packed).unwrap();
            w = packed;
            Layout::Interleaved8
        } else {
            Layout::Rows
        };
        let mut act = Vec::new();
        quantize_activation(ty, &x, &mut act).unwrap();
        // Prepared once, as the runner does per matmul (unprepared, Q4_0/Q5_0 spent ~18 % of
        // a pass unpacking the activation for these few rows).
        let prep = ActPrep::new(ty, &act);
        let mut out = vec![0f32; rows];
        let f32_path = name == "q8_0×f32";
        let pass = |out: &mut [f32]| {
            if f32_path {
                layout::vec_dot_f32_rows_in(ty, n, &w, lay, &x, out).unwrap();
            } else {
                layout::vec_dot_rows_in(ty, n, &w, lay, &act, Some(&prep), out).unwrap();
            }
        };
        pass(&mut out);
        let mut best = f64::MAX;
        for _ in 0..400 {
            let reps = (512 << 10) / w.len().max(1) + 1;
            let t0 = std::time::Instant::now();
            for _ in 0..reps {
                pass(&mut out);
                std::hint::black_box(&out);
            }
            best = best.min(t0.elapsed().as_nanos() as f64 / reps as f64);
        }
        let gbs = w.len() as f64 / best;
        let blocks32 = (rows * n / 32) as f64;
        println!("{label:<12} {gbs:>10.2} {:>12.3}", best / blocks32);
    }
}
