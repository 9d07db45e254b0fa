//! The checkpoint pickle reader on arbitrary bytes: never a panic, and every view it returns
//! lies inside the input and matches its shape.
#![no_main]

use grok1_quant::checkpoint::pickle::{parse, ArrayView, PickleObject};
use libfuzzer_sys::fuzz_target;

fn check(v: &ArrayView, len: usize) {
    let end = v
        .offset
        .checked_add(v.len_bytes)
        .expect("view end overflows");
    assert!(end <= len, "view {v:?} runs past the {len}-byte input");
    let numel = v.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    assert_eq!(
        numel.and_then(|n| n.checked_mul(v.dtype.itemsize())),
        Some(v.len_bytes),
        "view {v:?}: payload size does not match its shape"
    );
}

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(PickleObject::Array(a)) => check(&a, data.len()),
        Ok(PickleObject::Quantized { weight, scales }) => {
            check(&weight, data.len());
            check(&scales, data.len());
        }
        Err(e) => {
            assert!(
                e.offset <= data.len(),
                "error offset {} past the input",
                e.offset
            );
            let _ = e.to_string();
        }
    }
});
