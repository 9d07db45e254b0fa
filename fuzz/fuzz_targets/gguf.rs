//! The GGUF reader on arbitrary bytes, then the model loader and the GGUF tokenizer on whatever
//! it accepts: never a panic; every tensor view it hands out has the size the table gives.
#![no_main]

use grok1_quant::gguf::GgufFile;
use grok1_quant::model::{tokenizer_from_gguf, Model};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = match GgufFile::parse_bytes(data, "fuzz.gguf") {
        Ok(f) => f,
        Err(e) => {
            assert!(
                e.to_string().starts_with("fuzz.gguf"),
                "error names no file: {e}"
            );
            return;
        }
    };
    for i in 0..file.tensors().len() {
        let t = file.tensor_at(i);
        assert_eq!(t.data.len() as u64, t.info.size);
        let _ = t.info.n_elements();
    }
    if let Ok(tok) = tokenizer_from_gguf(&file) {
        let ids = tok.encode("Hello world, \u{00e9}t\u{00e9} \u{1F600} <0x41>");
        assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
        let _ = tok.decode(&ids);
    }
    match Model::from_gguf(file) {
        Ok(m) => {
            let _ = m.decode_weight_bytes();
        }
        Err(e) => assert!(
            e.to_string().contains("fuzz.gguf"),
            "error names no file: {e}"
        ),
    }
});
