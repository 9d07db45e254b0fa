//! Golden vectors written by `tools/check_quant_gguf_py.py --write-golden` with gguf-py:
//! the last 8 test rows (special rows: zeros, constants, ±65504, f32 and f16 denormals, large
//! magnitudes, argmax ties) of 256 columns.
use quant::{dequantize_row, quantize_row, GgmlType};
use std::path::PathBuf;

fn read(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

const N: usize = 256;

#[test]
fn quantize_is_byte_exact_with_gguf_py() {
    for name in ["q8_0", "q4_0", "q4_1", "q5_0", "bf16", "f16"] {
        let ty = GgmlType::from_name(name).unwrap();
        let src = f32s(&read(&format!("{name}.in.f32")));
        let want = read(&format!("{name}.q.bin"));
        let rb = ty.row_bytes(N).unwrap();
        assert_eq!(want.len(), src.len() / N * rb, "{name}: golden size");
        for (r, (x, w)) in src.chunks_exact(N).zip(want.chunks_exact(rb)).enumerate() {
            let mut got = vec![0u8; rb];
            quantize_row(ty, x, &mut got, None).unwrap();
            assert_eq!(got, w, "{name} row {r}");
        }
    }
}

#[test]
fn dequantize_is_bit_exact_with_gguf_py() {
    for name in [
        "q8_0", "q4_0", "q4_1", "q5_0", "bf16", "f16", "q4_k", "q5_k", "q6_k",
    ] {
        let ty = GgmlType::from_name(name).unwrap();
        let q = read(&format!("{name}.q.bin"));
        let want = f32s(&read(&format!("{name}.deq.f32")));
        let rb = ty.row_bytes(N).unwrap();
        for (r, (qr, w)) in q.chunks_exact(rb).zip(want.chunks_exact(N)).enumerate() {
            let mut got = vec![0f32; N];
            dequantize_row(ty, qr, &mut got).unwrap();
            let gb: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            let wb: Vec<u32> = w.iter().map(|v| v.to_bits()).collect();
            assert_eq!(gb, wb, "{name} row {r} (SIMD path)");
            quant::dequantize_row_scalar(ty, qr, &mut got).unwrap();
            let gb: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(gb, wb, "{name} row {r} (scalar path)");
        }
    }
}
