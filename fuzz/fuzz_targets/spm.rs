//! SentencePiece `ModelProto` parsing on arbitrary bytes, then the tokenizer built from whatever
//! parses: encode and decode of a short string and of every id, never a panic.
#![no_main]

use grok1_quant::tokenizer::{SpmModel, Tokenizer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = SpmModel::parse(data) else {
        return;
    };
    // What we write back must parse again.
    SpmModel::parse(&model.to_bytes()).expect("re-parse of to_bytes()");
    let Ok(tok) = Tokenizer::from_spm(&model) else {
        return;
    };
    for text in [
        "",
        " ",
        "Hello  world",
        "a\u{2581}b \u{00e9}\u{1F600}\n\t",
        "<0x41>[BOS]",
    ] {
        let ids = tok.encode(text);
        assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
        let _ = tok.decode(&ids);
    }
    let n = tok.vocab_size().min(4096) as u32;
    let all: Vec<u32> = (0..n).chain([n, u32::MAX]).collect();
    let _ = tok.decode(&all);
});
