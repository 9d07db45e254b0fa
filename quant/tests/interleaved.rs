//! The interleaved row layout gives bit-identical results to ggml's row-major one, through
//! every entry point, on the AVX2 kernels and (re-run in a child process with
//! `QUANT_FORCE_SCALAR=1`) on the scalar fallback.

mod common;

use common::data;

use quant::layout::*;
use quant::{
    dequantize_row, quantize_activation, quantize_rows, vec_dot_f32_rows, vec_dot_rows_multi_with,
    vec_dot_rows_with, ActPrep, GgmlType,
};

const TYPES: [GgmlType; 10] = [
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

fn matrix(ty: GgmlType, n: usize, rows: usize, seed: u32) -> Vec<u8> {
    let mut w = vec![0u8; ty.row_bytes(n).unwrap() * rows];
    quantize_rows(ty, &data(n * rows, seed), n, &mut w, None).unwrap();
    w
}

fn check_all(n: usize, rows: usize) {
    for ty in TYPES {
        let Some(rb) = ty.row_bytes(n) else {
            continue; // n is not a whole number of this type's blocks
        };
        let w = matrix(ty, n, rows, 7 + rows as u32);
        let mut il = vec![0u8; w.len()];
        interleave_rows(ty, n, &w, &mut il).unwrap();
        if rows >= 8 && n > ty.block_size() {
            assert_ne!(il, w, "{ty}: {rows} rows were not permuted");
        }
        let mut back = vec![0u8; w.len()];
        deinterleave_rows(ty, n, &il, &mut back).unwrap();
        assert_eq!(back, w, "{ty} n={n} rows={rows}: round trip");

        let xs: Vec<Vec<f32>> = (0..11).map(|t| data(n, 100 + t)).collect();
        let acts: Vec<Vec<u8>> = xs
            .iter()
            .map(|x| {
                let mut a = Vec::new();
                quantize_activation(ty, x, &mut a).unwrap();
                a
            })
            .collect();
        let preps: Vec<ActPrep> = acts.iter().map(|a| ActPrep::new(ty, a)).collect();
        // One activation.
        let (mut plain, mut inter) = (vec![0f32; rows], vec![0f32; rows]);
        vec_dot_rows_with(ty, n, &w, &acts[0], Some(&preps[0]), &mut plain).unwrap();
        vec_dot_rows_in(
            ty,
            n,
            &il,
            Layout::Interleaved8,
            &acts[0],
            Some(&preps[0]),
            &mut inter,
        )
        .unwrap();
        assert_eq!(plain, inter, "{ty} n={n} rows={rows}: vec_dot_rows");
        // Several activations, 1..=11 tokens (the batched kernels take four or eight at a time).
        for t in 1..=11 {
            let a: Vec<&[u8]> = acts[..t].iter().map(|a| &a[..]).collect();
            let (mut p, mut q) = (vec![0f32; rows * t], vec![0f32; rows * t]);
            vec_dot_rows_multi_with(ty, n, &w, &a, Some(&preps[..t]), &mut p).unwrap();
            vec_dot_rows_multi_in(
                ty,
                n,
                &il,
                Layout::Interleaved8,
                &a,
                Some(&preps[..t]),
                &mut q,
            )
            .unwrap();
            assert_eq!(p, q, "{ty} n={n} rows={rows} tokens={t}: multi");
        }
        // f32 activations.
        let (mut p, mut q) = (vec![0f32; rows], vec![0f32; rows]);
        vec_dot_f32_rows(ty, n, &w, &xs[1], &mut p).unwrap();
        vec_dot_f32_rows_in(ty, n, &il, Layout::Interleaved8, &xs[1], &mut q).unwrap();
        assert_eq!(p, q, "{ty} n={n} rows={rows}: f32 rows");
        // Dequantization, whole and one row at a time.
        let (mut p, mut q) = (vec![0f32; rows * n], vec![0f32; rows * n]);
        dequantize_row(ty, &w, &mut p).unwrap();
        dequantize_rows_in(ty, n, &il, Layout::Interleaved8, &mut q).unwrap();
        assert_eq!(p, q, "{ty} n={n} rows={rows}: dequantize");
        let mut one = vec![0f32; n];
        for r in 0..rows {
            dequantize_row_at(ty, n, &il, rows, Layout::Interleaved8, r, &mut one).unwrap();
            assert_eq!(
                one,
                p[r * n..(r + 1) * n],
                "{ty} n={n} rows={rows}: row {r}"
            );
        }
        // A range starting at a whole group is an interleaved matrix of its own.
        if rows > 8 {
            let sub = &il[8 * rb..];
            let mut s = vec![0f32; rows - 8];
            vec_dot_rows_in(ty, n, sub, Layout::Interleaved8, &acts[0], None, &mut s).unwrap();
            assert_eq!(s, plain[8..], "{ty} n={n} rows={rows}: rows 8..");
        }
    }
}

#[test]
fn interleaved_equals_rows_bit_for_bit() {
    for rows in [1, 7, 8, 9, 16, 23, 40] {
        for n in [32, 96, 256, 768, 2048] {
            check_all(n, rows);
        }
    }
}

#[test]
fn long_rows_equal_bit_for_bit() {
    // Long rows (Grok-1's are 6144 and 32768 values) through every type's row-major and packed
    // kernels: 8192, and 8352 (261 blocks of 32, an odd count; the K-quants skip it).
    for (n, rows) in [(8192, 8), (8352, 17)] {
        check_all(n, rows);
    }
}

/// A command that runs this test binary again. Cross-compiled for aarch64 and run under
/// qemu-user without binfmt_misc (tools/test.sh on an x86 host) the binary cannot exec itself,
/// so the child goes through the runner cargo used (`CARGO_TARGET_…_RUNNER`, inherited).
fn self_command() -> std::process::Command {
    let exe = std::env::current_exe().unwrap();
    let runner = if cfg!(target_arch = "aarch64") {
        std::env::var("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER").ok()
    } else {
        None
    };
    let runner = runner.unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(prog) => {
            let mut c = std::process::Command::new(prog);
            c.args(words).arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    }
}

#[test]
fn interleaved_equals_rows_on_the_scalar_path() {
    if std::env::var_os("QUANT_FORCE_SCALAR").is_some() {
        return; // the child: interleaved_equals_rows_bit_for_bit runs there
    }
    let out = self_command()
        .args([
            "--exact",
            "interleaved_equals_rows_bit_for_bit",
            "--test-threads=1",
        ])
        .env("QUANT_FORCE_SCALAR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "scalar child failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn other_types_refuse_the_interleaved_layout() {
    // Every weight type the converter writes has the layout; an activation type does not.
    let ty = GgmlType::Q8_K;
    let n = 256;
    let w = vec![0u8; 8 * ty.row_bytes(n).unwrap()];
    let mut il = vec![0u8; w.len()];
    assert!(!can_interleave(ty));
    assert!(interleave_rows(ty, n, &w, &mut il).is_err());
    let act = vec![0u8; w.len() / 8];
    let mut out = vec![0f32; 8];
    let e = vec_dot_rows_in(ty, n, &w, Layout::Interleaved8, &act, None, &mut out).unwrap_err();
    assert!(e.to_string().contains("interleaved"), "{e}");
    // The float types' columns hold 32 bytes of each row: other row lengths are refused.
    for (ty, n) in [
        (GgmlType::F16, 24),
        (GgmlType::BF16, 40),
        (GgmlType::F32, 12),
    ] {
        assert!(can_interleave(ty) && !can_interleave_rows(ty, n));
        assert!(can_interleave_rows(ty, 2 * n));
        let w = matrix(ty, n, 8, 4);
        let mut il = vec![0u8; w.len()];
        let e = interleave_rows(ty, n, &w, &mut il).unwrap_err();
        assert!(e.to_string().contains("rows of this length"), "{e}");
        let x = data(n, 5);
        let mut act = Vec::new();
        quantize_activation(ty, &x, &mut act).unwrap();
        let mut out = vec![0f32; 8];
        assert!(vec_dot_rows_in(ty, n, &w, Layout::Interleaved8, &act, None, &mut out).is_err());
    }
    // A size mismatch is an error, not a panic.
    let ty = GgmlType::Q4_0;
    let w = matrix(ty, 64, 8, 3);
    let mut short = vec![0u8; w.len() - 1];
    assert!(interleave_rows(ty, 64, &w, &mut short).is_err());
}
