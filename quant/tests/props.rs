//! Property tests: SIMD == scalar, quantization error bounds, round trips, bad input.
use proptest::prelude::*;
use quant::*;

const WEIGHT_TYPES: [GgmlType; 10] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn row(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    // xorshift normal-ish values
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            let mut acc = 0.0f32;
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            acc * scale
        })
        .collect()
}

fn quant(ty: GgmlType, x: &[f32], im: Option<&[f32]>) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    quantize_row(ty, x, &mut q, im).unwrap();
    q
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn simd_matches_scalar(seed in any::<u64>(), nblk in 1usize..5, scale in 1e-3f32..1e3, ti in 0usize..10) {
        let ty = WEIGHT_TYPES[ti];
        let n = nblk * 256;
        let w = quant(ty, &row(seed, n, scale), None);
        let mut act = Vec::new();
        quantize_activation(ty, &row(seed ^ 0xabc, n, 1.0), &mut act).unwrap();
        let a = vec_dot(ty, n, &w, &act).unwrap();
        let b = vec_dot_scalar(ty, n, &w, &act).unwrap();
        if ty.block_size() == 256 {
            // integer sums per super-block, identical float steps: bit-exact
            prop_assert_eq!(a.to_bits(), b.to_bits(), "{} {} vs {}", ty, a, b);
        } else {
            // float accumulation order differs; bound by the magnitude of the terms
            let mut x = vec![0f32; n];
            dequantize_row(ty, &w, &mut x).unwrap();
            let mut y = vec![0f32; n];
            dequantize_row(vec_dot_type(ty), &act, &mut y).unwrap();
            let mag: f32 = x.iter().zip(&y).map(|(p, q)| (p * q).abs()).sum();
            prop_assert!((a - b).abs() <= 1e-5 * mag + 1e-30, "{} {} vs {} (mag {})", ty, a, b, mag);
        }
        let mut d1 = vec![0f32; n];
        let mut d2 = vec![0f32; n];
        dequantize_row(ty, &w, &mut d1).unwrap();
        dequantize_row_scalar(ty, &w, &mut d2).unwrap();
        prop_assert!(d1.iter().zip(&d2).all(|(p, q)| p.to_bits() == q.to_bits()), "{} dequantize", ty);
        // vec_dot_multi agrees with vec_dot
        let mut out = [0f32; 2];
        vec_dot_multi(ty, n, &w, &[&act, &act], &mut out).unwrap();
        prop_assert!((out[0] - a).abs() <= 1e-4 * a.abs().max(1e-3) + 1e-3 * scale, "{} multi {} vs {}", ty, out[0], a);
    }

    #[test]
    fn quantize_error_bounds(seed in any::<u64>(), scale in 1e-2f32..1e2, ti in 3usize..10, use_im in any::<bool>()) {
        let ty = WEIGHT_TYPES[ti];
        let n = 512;
        let x = row(seed, n, scale);
        let im: Vec<f32> = row(seed ^ 7, n, 1.0).iter().map(|v| v.abs() + 0.1).collect();
        let q = quant(ty, &x, use_im.then_some(&im[..]));
        let mut y = vec![0f32; n];
        dequantize_row(ty, &q, &mut y).unwrap();
        let rms = |v: &mut dyn Iterator<Item = f32>| (v.map(|e| e * e).sum::<f32>() / n as f32).sqrt();
        let err = rms(&mut x.iter().zip(&y).map(|(a, b)| a - b)) / rms(&mut x.iter().copied());
        let bound = match ty {
            GgmlType::Q8_0 => 0.01,
            GgmlType::Q6_K => 0.03,
            GgmlType::Q5_0 | GgmlType::Q5_K => 0.06,
            _ => 0.13,
        };
        prop_assert!(err < bound, "{} rel rms {} (imatrix {})", ty, err, use_im);
    }
}

#[test]
fn weighted_search_beats_or_matches_plain_rule() {
    // With uniform importance weights the searched scale must not be worse (in squared error)
    // than the plain reference rule on average.
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
    ] {
        let (mut e_plain, mut e_w) = (0f64, 0f64);
        for seed in 1..40u64 {
            let x = row(seed, 256, 1.0);
            let ones = vec![1f32; 256];
            for (im, e) in [(None, &mut e_plain), (Some(&ones[..]), &mut e_w)] {
                let q = quant(ty, &x, im);
                let mut y = vec![0f32; 256];
                dequantize_row(ty, &q, &mut y).unwrap();
                *e += x
                    .iter()
                    .zip(&y)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum::<f64>();
            }
        }
        assert!(
            e_w <= e_plain * 1.01,
            "{ty}: weighted {e_w} plain {e_plain}"
        );
    }
}

#[test]
fn round_trips_are_stable() {
    // Re-quantizing a dequantized Q8_0/Q4_0/BF16 row reproduces the same bytes.
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::BF16,
        GgmlType::F16,
    ] {
        let x = row(99, 1024, 3.0);
        let q = quant(ty, &x, None);
        let mut y = vec![0f32; 1024];
        dequantize_row(ty, &q, &mut y).unwrap();
        assert_eq!(quant(ty, &y, None), q, "{ty}");
    }
    // Zeros decode to zeros for every type.
    for ty in WEIGHT_TYPES {
        let q = quant(ty, &[0.0; 256], None);
        let mut y = vec![1f32; 256];
        dequantize_row(ty, &q, &mut y).unwrap();
        assert!(y.iter().all(|v| *v == 0.0), "{ty}");
    }
}

#[test]
fn block_from_int8_keeps_values_and_dots_exactly() {
    let mut qs = [0i8; 32];
    for (i, q) in qs.iter_mut().enumerate() {
        *q = if i == 0 {
            -128
        } else {
            (i as i8).wrapping_mul(37)
        };
    }
    let b = q8_0::block_from_int8(&qs, half::f16::from_f32(0.5));
    let bytes = bytemuck::bytes_of(&b).to_vec();
    let mut y = vec![0f32; 32];
    dequantize_row(GgmlType::Q8_0, &bytes, &mut y).unwrap();
    assert!(y.iter().zip(&qs).all(|(v, q)| *v == *q as f32 * 0.5));
    let mut act = Vec::new();
    quantize_activation(GgmlType::Q8_0, &[1.0; 32], &mut act).unwrap();
    let want: i32 = qs.iter().map(|&q| q as i32 * 127).sum();
    let got = vec_dot(GgmlType::Q8_0, 32, &bytes, &act).unwrap();
    let d_act = half::f16::from_f32(1.0 / 127.0).to_f32();
    assert_eq!(got, want as f32 * (0.5 * d_act));
    assert_eq!(
        got,
        vec_dot_scalar(GgmlType::Q8_0, 32, &bytes, &act).unwrap()
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let mut d = vec![0u8; 18];
    assert!(matches!(
        quantize_row(GgmlType::Q4_0, &[0.0; 31], &mut d, None),
        Err(QuantError::NotBlockAligned { .. })
    ));
    assert!(matches!(
        quantize_row(GgmlType::Q4_0, &[0.0; 32], &mut d[..17], None),
        Err(QuantError::SizeMismatch { .. })
    ));
    assert!(matches!(
        quantize_row(GgmlType::Q4_0, &[0.0; 32], &mut d, Some(&[1.0; 3])),
        Err(QuantError::ImatrixLen { .. })
    ));
    assert!(matches!(
        quantize_row(GgmlType::Q4_0, &[0.0; 32], &mut d, Some(&[-1.0; 32])),
        Err(QuantError::ImatrixValue { .. })
    ));
    assert!(matches!(
        quantize_row(GgmlType::Q2_K, &[0.0; 256], &mut d, None),
        Err(QuantError::Unsupported { .. })
    ));
    assert!(vec_dot(GgmlType::Q4_0, 32, &d, &[0u8; 33]).is_err());
    assert!(vec_dot(GgmlType::Q8_K, 256, &[0u8; 292], &[0u8; 292]).is_err());
    assert!(dequantize_row(GgmlType::Q4_K, &[0u8; 143], &mut [0f32; 256]).is_err());
    let mut out = [0f32; 1];
    assert!(vec_dot_multi(GgmlType::Q4_0, 32, &d, &[], &mut out).is_err());
    let mut big = vec![0u8; 18 * 2];
    assert!(quantize_rows(GgmlType::Q4_0, &[0.0; 96], 32, &mut big, None).is_err());
    quantize_rows(GgmlType::Q4_0, &[0.0; 64], 32, &mut big, None).unwrap();
}

#[test]
fn every_kernel_matches_scalar_on_many_rows() {
    // Deterministic sweep (the proptest above draws only a few cases per type): odd block
    // counts exercise the unrolled kernels' tails, up to 19 super-blocks the K-quant kernels
    // that take eight at a time (two batches and a tail).
    for ty in WEIGHT_TYPES {
        for seed in 0..60u64 {
            let nblk = 1 + (seed as usize % 19);
            let n = nblk * 256;
            let scale = 10f32.powi((seed % 7) as i32 - 3);
            let w = quant(ty, &row(seed, n, scale), None);
            let xs = row(seed ^ 0x5eed, n, 1.0);
            let mut act = Vec::new();
            quantize_activation(ty, &xs, &mut act).unwrap();
            let a = vec_dot(ty, n, &w, &act).unwrap();
            let b = vec_dot_scalar(ty, n, &w, &act).unwrap();
            let mut x = vec![0f32; n];
            dequantize_row(ty, &w, &mut x).unwrap();
            if ty.block_size() == 256 {
                assert_eq!(a.to_bits(), b.to_bits(), "{ty} seed {seed}: {a} vs {b}");
            } else {
                let mut y = vec![0f32; n];
                dequantize_row(vec_dot_type(ty), &act, &mut y).unwrap();
                let mag: f32 = x.iter().zip(&y).map(|(p, q)| (p * q).abs()).sum();
                assert!(
                    (a - b).abs() <= 1e-5 * mag + 1e-30,
                    "{ty} seed {seed}: {a} vs {b}"
                );
            }
            // The exact (f32 activation) path against the dequantized row.
            let f = vec_dot_f32(ty, n, &w, &xs).unwrap();
            let exact: f64 = x.iter().zip(&xs).map(|(p, q)| *p as f64 * *q as f64).sum();
            let mag: f64 = x
                .iter()
                .zip(&xs)
                .map(|(p, q)| (*p as f64 * *q as f64).abs())
                .sum();
            assert!(
                (f as f64 - exact).abs() <= 1e-5 * mag + 1e-30,
                "{ty} f32 seed {seed}"
            );
        }
    }
}

#[test]
fn rows_entry_points_match_scalar_per_row() {
    // vec_dot_rows / vec_dot_f32_rows take the multi-row kernels (eight rows at a time, the
    // rest row by row): every row must equal the scalar reference up to float summation order,
    // for row counts around the group size and block counts that are not multiples of 8.
    for ty in WEIGHT_TYPES {
        let bs = ty.block_size();
        for (case, (rows, nblk)) in [
            (1usize, 1usize),
            (7, 3),
            (8, 1),
            (9, 5),
            (16, 7),
            (19, 2),
            (24, 33),
        ]
        .into_iter()
        .enumerate()
        {
            let n = nblk * bs.max(32);
            let n = n.div_ceil(bs) * bs;
            let seed = 1000 + case as u64;
            let mut w = Vec::new();
            let mut xs_rows = Vec::new();
            for r in 0..rows {
                // Rows of very different magnitudes so a lane mix-up cannot hide.
                let scale = 10f32.powi((r % 5) as i32 - 2);
                let x = row(seed * 31 + r as u64, n, scale);
                w.extend_from_slice(&quant(ty, &x, None));
                xs_rows.push(x);
            }
            let xs = row(seed ^ 0x77, n, 1.0);
            let mut act = Vec::new();
            quantize_activation(ty, &xs, &mut act).unwrap();
            let mut out = vec![0f32; rows];
            vec_dot_rows(ty, n, &w, &act, &mut out).unwrap();
            let mut out_f32 = vec![0f32; rows];
            vec_dot_f32_rows(ty, n, &w, &xs, &mut out_f32).unwrap();
            let rb = ty.row_bytes(n).unwrap();
            for (r, wr) in w.chunks_exact(rb).enumerate() {
                let b = vec_dot_scalar(ty, n, wr, &act).unwrap();
                let mut x = vec![0f32; n];
                dequantize_row(ty, wr, &mut x).unwrap();
                let mut y = vec![0f32; n];
                dequantize_row(vec_dot_type(ty), &act, &mut y).unwrap();
                let mag: f32 = x.iter().zip(&y).map(|(p, q)| (p * q).abs()).sum();
                assert!(
                    (out[r] - b).abs() <= 1e-5 * mag + 1e-30,
                    "{ty} rows {rows} n {n} row {r}: {} vs scalar {b}",
                    out[r]
                );
                let exact: f64 = x.iter().zip(&xs).map(|(p, q)| *p as f64 * *q as f64).sum();
                let magf: f64 = x
                    .iter()
                    .zip(&xs)
                    .map(|(p, q)| (*p as f64 * *q as f64).abs())
                    .sum();
                assert!(
                    (out_f32[r] as f64 - exact).abs() <= 1e-5 * magf + 1e-30,
                    "{ty} f32 rows {rows} n {n} row {r}: {} vs {exact}",
                    out_f32[r]
                );
            }
        }
    }
}

#[test]
fn rows_multi_equals_rows_per_token() {
    // The batched entry point must give, for every token, exactly what the decode entry point
    // gives: prefill and decode see the same numbers.
    for ty in WEIGHT_TYPES {
        let bs = ty.block_size();
        for (case, (rows, nblk, tokens)) in [
            (8usize, 1usize, 1usize),
            (9, 3, 2),
            (16, 5, 3),
            (21, 2, 4),
            (24, 7, 5),
            (3, 1, 6),
            (40, 9, 9),
        ]
        .into_iter()
        .enumerate()
        {
            let n = (nblk * bs.max(32)).div_ceil(bs) * bs;
            let seed = 5000 + case as u64;
            let mut w = Vec::new();
            for r in 0..rows {
                let scale = 10f32.powi((r % 5) as i32 - 2);
                w.extend_from_slice(&quant(ty, &row(seed * 31 + r as u64, n, scale), None));
            }
            let acts: Vec<Vec<u8>> = (0..tokens)
                .map(|t| {
                    let mut a = Vec::new();
                    quantize_activation(ty, &row(seed ^ (0x99 + t as u64), n, 1.0), &mut a)
                        .unwrap();
                    a
                })
                .collect();
            let refs: Vec<&[u8]> = acts.iter().map(|a| &a[..]).collect();
            let mut multi = vec![0f32; rows * tokens];
            vec_dot_rows_multi(ty, n, &w, &refs, &mut multi).unwrap();
            for (t, a) in acts.iter().enumerate() {
                let mut single = vec![0f32; rows];
                vec_dot_rows(ty, n, &w, a, &mut single).unwrap();
                for r in 0..rows {
                    assert_eq!(
                        multi[r * tokens + t].to_bits(),
                        single[r].to_bits(),
                        "{ty} rows {rows} tokens {tokens}: row {r} token {t}: {} vs {}",
                        multi[r * tokens + t],
                        single[r]
                    );
                }
            }
        }
    }
}
