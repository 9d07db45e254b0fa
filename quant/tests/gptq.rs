//! Error feedback through the input covariance (`quant::gptq`): on inputs with correlated
//! channels it must lower the output error `Σ_rows (w − ŵ)ᵀ H (w − ŵ)` well below the
//! importance-weighted quantizer's, and never raise it when there is nothing to compensate
//! (uncorrelated inputs).

mod common;

use quant::{dequantize_row, gptq::Factor, quantize_rows, quantize_rows_gptq, GgmlType};

const N: usize = 256;
const ROWS: usize = 48;
const TOKENS: usize = 1024;

/// `TOKENS × N` inputs: channel scales spread over 10×; with `rho > 0`, each channel leans on
/// the one before it (an AR(1) chain), as activations after a norm and a projection do.
fn inputs(rho: f32) -> Vec<f32> {
    let z = common::data(TOKENS * N, 11);
    let mut x = vec![0.0f32; TOKENS * N];
    for t in 0..TOKENS {
        let mut prev = 0.0f32;
        for j in 0..N {
            let v = rho * prev + z[t * N + j];
            prev = v;
            x[t * N + j] = v * (1.0 + 9.0 * ((j * 37) % N) as f32 / N as f32);
        }
    }
    x
}

fn covariance(x: &[f32]) -> Vec<f64> {
    let mut h = vec![0.0f64; N * N];
    for row in x.chunks_exact(N) {
        for i in 0..N {
            for j in 0..N {
                h[i * N + j] += row[i] as f64 * row[j] as f64;
            }
        }
    }
    h.iter_mut().for_each(|v| *v /= TOKENS as f64);
    h
}

/// Weights with a heavy tail (a cube of uniform values, plus a few outliers).
fn weights() -> Vec<f32> {
    common::data(ROWS * N, 5)
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if i % 97 == 0 {
                4.0 * v
            } else {
                v * v * v + 0.3 * v
            }
        })
        .collect()
}

fn output_error(ty: GgmlType, w: &[f32], q: &[u8], h: &[f64]) -> f64 {
    let rb = ty.row_bytes(N).unwrap();
    let mut total = 0.0f64;
    let mut deq = vec![0.0f32; N];
    for (r, row) in w.chunks_exact(N).enumerate() {
        dequantize_row(ty, &q[r * rb..(r + 1) * rb], &mut deq).unwrap();
        let e: Vec<f64> = row.iter().zip(&deq).map(|(a, b)| (a - b) as f64).collect();
        for i in 0..N {
            let hi = &h[i * N..(i + 1) * N];
            total += e[i] * hi.iter().zip(&e).map(|(a, b)| a * b).sum::<f64>();
        }
    }
    total
}

/// (importance-weighted error, covariance error) for `ty` on inputs with correlation `rho`.
fn errors(ty: GgmlType, rho: f32) -> (f64, f64) {
    let h = covariance(&inputs(rho));
    let imp: Vec<f32> = (0..N).map(|i| h[i * N + i] as f32).collect();
    let w = weights();
    let rb = ty.row_bytes(N).unwrap();
    let mut plain = vec![0u8; ROWS * rb];
    quantize_rows(ty, &w, N, &mut plain, Some(&imp)).unwrap();
    let f = Factor::new(&h, N, 0.01).unwrap();
    let mut fed = vec![0u8; ROWS * rb];
    quantize_rows_gptq(ty, &w, &f, &mut fed).unwrap();
    (
        output_error(ty, &w, &plain, &h),
        output_error(ty, &w, &fed, &h),
    )
}

const TYPES: [GgmlType; 6] = [
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// For every type, the error with covariance feedback stays below `bound` × the weighted one.
fn check_ratio(rho: f32, bound: f64) {
    for ty in TYPES {
        let (plain, fed) = errors(ty, rho);
        eprintln!(
            "{} (rho {rho}): weighted {plain:.4e}, with covariance {fed:.4e}",
            ty.name()
        );
        assert!(fed < bound * plain, "{}: {fed} vs {plain}", ty.name());
    }
}

#[test]
fn correlated_inputs_lower_the_output_error() {
    check_ratio(0.9, 0.7);
}

#[test]
fn uncorrelated_inputs_cost_nothing() {
    // Sampled inputs are only nearly uncorrelated: a little compensation remains possible.
    check_ratio(0.0, 1.02);
}

#[test]
fn sizes_and_types_are_checked() {
    let h: Vec<f64> = (0..N * N)
        .map(|k| if k % (N + 1) == 0 { 1.0 } else { 0.0 })
        .collect();
    let f = Factor::new(&h, N, 0.01).unwrap();
    let w = weights();
    let mut out = vec![0u8; GgmlType::Q4_0.row_bytes(N).unwrap() * ROWS];
    assert!(quantize_rows_gptq(GgmlType::Q4_0, &w[..N * ROWS - 1], &f, &mut out).is_err());
    assert!(quantize_rows_gptq(GgmlType::Q4_0, &w, &f, &mut out[1..]).is_err());
    assert!(quantize_rows_gptq(GgmlType::Q4_1, &w, &f, &mut out).is_err());
    assert!(quantize_rows_gptq(GgmlType::Q4_0, &w, &f, &mut out).is_ok());
}
