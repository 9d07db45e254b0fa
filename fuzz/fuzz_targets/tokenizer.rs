//! The real Grok-1 tokenizer (loaded once): encode of arbitrary UTF-8 (ids in range, and
//! decode gives the text back) and decode of arbitrary id lists, never a panic.
#![no_main]

use grok1_quant::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = std::env::var_os("GROK1_TOKENIZER").map_or_else(
            || {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../shared/fixtures/grok-1-tokenizer/tokenizer.model")
            },
            std::path::PathBuf::from,
        );
        Tokenizer::from_spm_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (set GROK1_TOKENIZER)", path.display()))
    })
}

fuzz_target!(|data: &[u8]| {
    let tok = tokenizer();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        let ids = tok.encode(&text);
        assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
        let back = tok.decode(&ids);
        // The Grok-1 model keeps whitespace and falls back to bytes, so only `▁` (which
        // decodes to a space) may change the text.
        if !text.contains('\u{2581}') {
            assert_eq!(back, text, "decode(encode(text)) != text for ids {ids:?}");
        }
    } else {
        let ids: Vec<u32> = rest
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) % (tok.vocab_size() as u32 + 16))
            .collect();
        let _ = tok.decode(&ids);
    }
});
