//! The per-type kernels are safe functions over byte slices: a caller passing an activation or
//! output buffer shorter than the weights need must get a panic, never an out-of-bounds read or
//! write in the SIMD path (which indexes raw pointers).

use std::panic::catch_unwind;

fn panics(f: impl FnOnce() + std::panic::UnwindSafe) -> bool {
    catch_unwind(f).is_err()
}

#[test]
fn short_activations_panic_instead_of_reading_past_the_end() {
    // (name, weight block bytes, activation block bytes, elements per block, vec_dot, dequantize)
    type Dot = fn(&[u8], &[u8]) -> f32;
    type Deq = fn(&[u8], &mut [f32]);
    let cases: [(&str, usize, usize, usize, Dot, Deq); 7] = [
        (
            "q4_0",
            quant::q4_0::BLOCK_BYTES,
            quant::q8_0::BLOCK_BYTES,
            32,
            quant::q4_0::vec_dot,
            quant::q4_0::dequantize,
        ),
        (
            "q4_1",
            quant::q4_1::BLOCK_BYTES,
            quant::q8_1::BLOCK_BYTES,
            32,
            quant::q4_1::vec_dot,
            quant::q4_1::dequantize,
        ),
        (
            "q5_0",
            quant::q5_0::BLOCK_BYTES,
            quant::q8_0::BLOCK_BYTES,
            32,
            quant::q5_0::vec_dot,
            quant::q5_0::dequantize,
        ),
        (
            "q8_0",
            quant::q8_0::BLOCK_BYTES,
            quant::q8_0::BLOCK_BYTES,
            32,
            quant::q8_0::vec_dot,
            quant::q8_0::dequantize,
        ),
        (
            "q4_k",
            quant::q4_k::BLOCK_BYTES,
            quant::q8_k::BLOCK_BYTES,
            256,
            quant::q4_k::vec_dot,
            quant::q4_k::dequantize,
        ),
        (
            "q5_k",
            quant::q5_k::BLOCK_BYTES,
            quant::q8_k::BLOCK_BYTES,
            256,
            quant::q5_k::vec_dot,
            quant::q5_k::dequantize,
        ),
        (
            "q6_k",
            quant::q6_k::BLOCK_BYTES,
            quant::q8_k::BLOCK_BYTES,
            256,
            quant::q6_k::vec_dot,
            quant::q6_k::dequantize,
        ),
    ];
    for (name, wb, ab, qk, dot, deq) in cases {
        let blocks = 9;
        let w = vec![0u8; wb * blocks];
        let a_ok = vec![0u8; ab * blocks];
        assert!(
            !panics(|| {
                dot(&w, &a_ok);
            }),
            "{name}: matching buffers must not panic"
        );
        let a_short = vec![0u8; ab * (blocks - 1)];
        assert!(
            panics(|| {
                dot(&w, &a_short);
            }),
            "{name}: short activations must panic"
        );
        let mut out = vec![0f32; qk * blocks - 1];
        assert!(
            panics(move || deq(&w, &mut out)),
            "{name}: short dequantize output must panic"
        );
    }
    let w = vec![0u8; quant::q8_0::BLOCK_BYTES * 4];
    assert!(panics(|| {
        quant::q8_0::vec_dot_f32(&w, &[0.0; 127]);
    }));
    assert!(panics(|| {
        quant::float::vec_dot(quant::float::Kind::F16, 64, &[0u8; 126], &[0u8; 256]);
    }));
    assert!(panics(|| {
        quant::float::vec_dot(quant::float::Kind::F32, 64, &[0u8; 256], &[0u8; 252]);
    }));
}
