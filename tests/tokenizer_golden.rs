//! Golden tokenizations from python sentencepiece 0.2 (shared fixtures): the real Grok-1
//! tokenizer, grok-tiny's and grok-mini-trained's.

mod common;

use common::{fixture, read_json, token_ids};
use grok1_quant::tokenizer::{PieceKind, SpecialIds, SpmModel, Tokenizer};
use serde_json::Value;

/// Checks every case of a `tokenization.json`-style file; returns the number checked.
fn check_cases(tok: &Tokenizer, golden: &Value, label: &str) -> usize {
    let cases = golden["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = token_ids(&case["ids"]);
        let got = tok.encode(text);
        if got != want {
            failures.push(format!("encode {text:?}: got {got:?}, want {want:?}"));
        }
        let pieces: Vec<&str> = want.iter().map(|&i| tok.piece(i)).collect();
        let want_pieces: Vec<&str> = case["pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        if pieces != want_pieces {
            failures.push(format!("pieces of {text:?}: {pieces:?} vs {want_pieces:?}"));
        }
        let decoded = tok.decode(&want);
        if decoded != case["decoded"].as_str().unwrap() {
            failures.push(format!("decode {text:?}: got {decoded:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: {}/{} failures:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

/// The tokenizer a GGUF would carry: tokens, scores, types and special ids of the model.
fn via_vocab(model: &SpmModel) -> Tokenizer {
    let id = |v: i32| u32::try_from(v).ok();
    Tokenizer::from_vocab(
        model.pieces.iter().map(|p| p.piece.clone()).collect(),
        model.pieces.iter().map(|p| p.score).collect(),
        model.pieces.iter().map(|p| p.kind.as_i32()).collect(),
        SpecialIds {
            bos: id(model.bos_id),
            eos: id(model.eos_id),
            unk: id(model.unk_id),
            pad: id(model.pad_id),
        },
        model.add_dummy_prefix,
    )
    .unwrap()
}

#[test]
fn grok1_model_facts() {
    let Some(dir) = fixture("grok-1-tokenizer") else {
        return;
    };
    let model = SpmModel::from_file(&dir.join("tokenizer.model")).unwrap();
    assert_eq!(model.pieces.len(), 131072);
    let count = |k: PieceKind| model.pieces.iter().filter(|p| p.kind == k).count();
    assert_eq!(count(PieceKind::Normal), 130747);
    assert_eq!(count(PieceKind::UserDefined), 65);
    assert_eq!(count(PieceKind::Byte), 256);
    assert_eq!(count(PieceKind::Control), 3);
    assert_eq!(count(PieceKind::Unknown), 1);
    assert_eq!(
        (model.pad_id, model.bos_id, model.eos_id, model.unk_id),
        (0, 1, 2, 3)
    );
    assert!(model.byte_fallback && model.add_dummy_prefix && model.escape_whitespaces);
    assert!(!model.remove_extra_whitespaces);
    assert_eq!(model.normalizer_name, "identity");
    assert_eq!(model.unk_surface, "[UNK]");
    assert_eq!(model.pieces[325].piece, "\u{2581}\u{2581}");
    assert_eq!(model.pieces[47].piece, "<|separator|>");
    assert_eq!(model.pieces[69].piece, "<0x00>");
    let tok = Tokenizer::from_spm(&model).unwrap();
    assert_eq!(tok.vocab_size(), 131072);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id(), tok.unk_id()),
        (Some(1), Some(2), Some(0), 3)
    );
    // Re-serialized, the model parses to the same thing.
    assert_eq!(SpmModel::parse(&model.to_bytes()).unwrap(), model);
}

#[test]
fn grok1_golden_encode_decode() {
    let Some(dir) = fixture("grok-1-tokenizer") else {
        return;
    };
    let golden = read_json(&dir.join("golden_tokenization.json"));
    let model = SpmModel::from_file(&dir.join("tokenizer.model")).unwrap();
    let tok = Tokenizer::from_spm(&model).unwrap();
    assert_eq!(check_cases(&tok, &golden, "grok-1 from_spm"), 36);
    let tok = via_vocab(&model);
    assert_eq!(check_cases(&tok, &golden, "grok-1 from_vocab"), 36);
}

#[test]
fn grok_tiny_golden() {
    let Some(dir) = fixture("grok-tiny") else {
        return;
    };
    let model = SpmModel::from_file(&dir.join("tokenizer.model")).unwrap();
    let tok = Tokenizer::from_spm(&model).unwrap();
    let golden = read_json(&dir.join("reference/tokenization.json"));
    assert!(check_cases(&tok, &golden, "grok-tiny") > 0);
    check_cases(&via_vocab(&model), &golden, "grok-tiny from_vocab");
    let prompts = read_json(&dir.join("reference/prompts.json"));
    let prompts = prompts["prompts"].as_array().unwrap();
    assert!(!prompts.is_empty());
    for p in prompts {
        let text = p["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text),
            token_ids(&p["token_ids"]),
            "prompt {text:?}"
        );
        assert_eq!(tok.decode(&token_ids(&p["token_ids"])), text);
    }
}

/// FNV-1a over the ids, as computed once with python sentencepiece.
fn fnv(ids: &[u32]) -> u64 {
    ids.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &i| {
        (h ^ u64::from(i)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn grok_mini_trained_eval_and_calib() {
    let Some(dir) = fixture("grok-mini-trained") else {
        return;
    };
    let tok = Tokenizer::from_spm_file(&dir.join("tokenizer.model")).unwrap();
    let text = std::fs::read_to_string(dir.join("eval.txt")).unwrap();
    let start = std::time::Instant::now();
    let ids = tok.encode(&text);
    eprintln!("eval.txt: {} tokens in {:?}", ids.len(), start.elapsed());
    assert_eq!(ids.len(), 43763);
    assert_eq!(
        &ids[..10],
        &[741, 2447, 4042, 15, 5, 4090, 421, 426, 544, 359]
    );
    assert_eq!(ids.iter().map(|&i| u64::from(i)).sum::<u64>(), 61463789);
    assert_eq!(fnv(&ids), 0x0485_fe5d_cb8c_298c);
    assert_eq!(tok.decode(&ids), text);

    let calib = std::fs::read_to_string(dir.join("calib.txt")).unwrap();
    let ids = tok.encode(&calib);
    assert_eq!(ids.len(), 53543);
    assert_eq!(fnv(&ids), 0x4bae_f5e5_29f2_e60b);
}
