//! The multi-row entry points equal the per-row ones.

mod common;

use common::data;

use quant::{
    quantize_activation, quantize_row, vec_dot, vec_dot_f32, vec_dot_f32_rows, vec_dot_rows,
    GgmlType,
};

#[test]
fn rows_equal_single_row_dots_for_every_type() {
    let n = 512;
    let rows = 7;
    for ty in [
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
    ] {
        let rb = ty.row_bytes(n).unwrap();
        let src = data(n * rows, 3);
        let mut w = vec![0u8; rb * rows];
        for r in 0..rows {
            quantize_row(
                ty,
                &src[r * n..(r + 1) * n],
                &mut w[r * rb..(r + 1) * rb],
                None,
            )
            .unwrap();
        }
        let x = data(n, 9);
        let mut act = Vec::new();
        quantize_activation(ty, &x, &mut act).unwrap();
        let mut out = vec![0f32; rows];
        vec_dot_rows(ty, n, &w, &act, &mut out).unwrap();
        let mut out32 = vec![0f32; rows];
        vec_dot_f32_rows(ty, n, &w, &x, &mut out32).unwrap();
        for r in 0..rows {
            let row = &w[r * rb..(r + 1) * rb];
            assert_eq!(out[r], vec_dot(ty, n, row, &act).unwrap(), "{ty} row {r}");
            assert_eq!(
                out32[r],
                vec_dot_f32(ty, n, row, &x).unwrap(),
                "{ty} f32 row {r}"
            );
        }
        // Wrong sizes are errors, not panics.
        assert!(vec_dot_rows(ty, n, &w[..rb * rows - 1], &act, &mut out).is_err());
        assert!(vec_dot_rows(ty, n, &w, &act[..act.len() - 1], &mut out).is_err());
    }
}

/// Q4_K's rows in either layout give every row exactly its single-row dot (the packed groups
/// go through the eight-row kernel), for row counts with and without a remainder and several
/// row lengths.
#[test]
fn q4_k_eight_row_kernel_equals_single_row_dots() {
    let ty = GgmlType::Q4_K;
    for (n, rows, seed) in [(256, 8, 1), (2048, 19, 2), (3840, 16, 3), (512, 33, 4)] {
        let rb = ty.row_bytes(n).unwrap();
        // Rows of different scales, so the eight lanes hold different magnitudes.
        let src: Vec<f32> = data(n * rows, seed)
            .iter()
            .enumerate()
            .map(|(i, v)| v * (1.0 + (i / n) as f32 * 0.37))
            .collect();
        let mut w = vec![0u8; rb * rows];
        quant::quantize_rows(ty, &src, n, &mut w, None).unwrap();
        let mut act = Vec::new();
        quantize_activation(ty, &data(n, seed + 10), &mut act).unwrap();
        let mut il = vec![0u8; w.len()];
        quant::layout::interleave_rows(ty, n, &w, &mut il).unwrap();
        let (mut out, mut out_il) = (vec![0f32; rows], vec![0f32; rows]);
        vec_dot_rows(ty, n, &w, &act, &mut out).unwrap();
        let packed = quant::Layout::Interleaved8;
        quant::layout::vec_dot_rows_in(ty, n, &il, packed, &act, None, &mut out_il).unwrap();
        for r in 0..rows {
            let want = vec_dot(ty, n, &w[r * rb..(r + 1) * rb], &act).unwrap();
            assert_eq!(
                out[r].to_bits(),
                want.to_bits(),
                "n {n} row {r}: {} vs {want}",
                out[r]
            );
            assert_eq!(out_il[r].to_bits(), want.to_bits(), "n {n} packed row {r}");
        }
    }
}

/// Row-major K-quant rows long enough for the eight-row kernels (32 super-blocks and more)
/// give every row exactly its single-row dot: whole groups of eight and a row-by-row tail,
/// super-block counts with and without a batch remainder, rows of different magnitudes; Q4_K
/// in its packed layout too.
#[test]
fn k_quant_long_rows_eight_at_a_time_equal_single_row_dots() {
    for ty in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
        for (sb, rows, seed) in [(33, 11, 21), (40, 16, 22), (32, 9, 23)] {
            let n = 256 * sb;
            let rb = ty.row_bytes(n).unwrap();
            let src: Vec<f32> = data(n * rows, seed)
                .iter()
                .enumerate()
                .map(|(i, v)| v * (1.0 + (i / n) as f32 * 0.29))
                .collect();
            let mut w = vec![0u8; rb * rows];
            quant::quantize_rows(ty, &src, n, &mut w, None).unwrap();
            let mut act = Vec::new();
            quantize_activation(ty, &data(n, seed + 40), &mut act).unwrap();
            let mut out = vec![0f32; rows];
            vec_dot_rows(ty, n, &w, &act, &mut out).unwrap();
            let packed = quant::layout::can_interleave(ty).then(|| {
                let mut il = vec![0u8; w.len()];
                quant::layout::interleave_rows(ty, n, &w, &mut il).unwrap();
                let mut out_il = vec![0f32; rows];
                let lay = quant::Layout::Interleaved8;
                quant::layout::vec_dot_rows_in(ty, n, &il, lay, &act, None, &mut out_il).unwrap();
                out_il
            });
            for r in 0..rows {
                let want = vec_dot(ty, n, &w[r * rb..(r + 1) * rb], &act).unwrap();
                let got = out[r];
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{ty} {sb} sb row {r}: {got} vs {want}"
                );
                if let Some(p) = &packed {
                    assert_eq!(
                        p[r].to_bits(),
                        want.to_bits(),
                        "{ty} {sb} sb packed row {r}"
                    );
                }
            }
        }
    }
}
