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
