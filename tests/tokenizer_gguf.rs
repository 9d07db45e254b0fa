//! The tokenizer rebuilt from a GGUF's `tokenizer.ggml.*` metadata reproduces the golden Grok-1
//! tokenizations, as the real tokenizer.model does.

mod common;

use grok1_quant::config::GrokConfig;
use grok1_quant::convert::metadata::grok_metadata;
use grok1_quant::gguf::{write_gguf, GgufFile};
use grok1_quant::model::tokenizer_from_gguf;
use grok1_quant::tokenizer::SpmModel;
use quant::GgmlType;

#[test]
fn grok_1_vocabulary_in_gguf_encodes_the_golden_strings() {
    let Some(fx) = common::fixture("grok-1-tokenizer") else {
        return;
    };
    let spm = SpmModel::from_file(&fx.join("tokenizer.model")).unwrap();
    let md = grok_metadata(&GrokConfig::grok_1(), &spm, GgmlType::Q8_0, "vocab only");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vocab.gguf");
    write_gguf(&path, md, &[], 32).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let tok = tokenizer_from_gguf(&file).unwrap();
    let golden = common::read_json(&fx.join("golden_tokenization.json"));
    let cases = golden["cases"].as_array().expect("cases");
    let mut ok = 0;
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let ids: Vec<u32> = common::token_ids(&case["ids"]);
        assert_eq!(tok.encode(text), ids, "encode {text:?}");
        assert_eq!(
            tok.decode(&ids),
            case["decoded"].as_str().unwrap(),
            "decode {text:?}"
        );
        ok += 1;
    }
    assert_eq!(ok, 36);
}
