//! Replays every input kept under `fuzz/regressions/<target>/` (crashes the fuzzers found,
//! and hand-made hostile inputs) with the same checks as the fuzz targets, so CI keeps them
//! fixed without cargo-fuzz. Plus the hostile pickles behind the fixes, built in code.

mod common;

use grok1_quant::checkpoint::pickle::{parse, ArrayView, PickleObject};
use grok1_quant::gguf::GgufFile;
use grok1_quant::model::{tokenizer_from_gguf, Model};
use grok1_quant::tokenizer::{SpmModel, Tokenizer};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    v.sort();
    v
}

/// Runs `check` on every regression input of `target`, naming the input that panics.
fn replay(target: &str, check: impl Fn(&[u8])) -> usize {
    let files = inputs(target);
    for p in &files {
        let data = std::fs::read(p).unwrap();
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{}: {msg}", p.display());
        }
    }
    files.len()
}

fn check_view(v: &ArrayView, len: usize) {
    let end = v
        .offset
        .checked_add(v.len_bytes)
        .expect("view end overflows");
    assert!(end <= len, "view {v:?} runs past the {len}-byte input");
    let numel = v.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    assert_eq!(
        numel.and_then(|n| n.checked_mul(v.dtype.itemsize())),
        Some(v.len_bytes)
    );
}

fn check_pickle(data: &[u8]) {
    match parse(data) {
        Ok(PickleObject::Array(a)) => check_view(&a, data.len()),
        Ok(PickleObject::Quantized { weight, scales }) => {
            check_view(&weight, data.len());
            check_view(&scales, data.len());
        }
        Err(e) => assert!(e.offset <= data.len()),
    }
}

#[test]
fn replay_pickle_regressions() {
    let n = replay("pickle", check_pickle);
    eprintln!("{n} pickle regression inputs");
}

fn check_gguf(data: &[u8]) {
    let file = match GgufFile::parse_bytes(data, "regression.gguf") {
        Ok(f) => f,
        Err(e) => {
            assert!(e.to_string().starts_with("regression.gguf"), "{e}");
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
    if let Err(e) = Model::from_gguf(file) {
        assert!(e.to_string().contains("regression.gguf"), "{e}");
    }
}

#[test]
fn replay_gguf_regressions() {
    let n = replay("gguf", check_gguf);
    eprintln!("{n} gguf regression inputs");
}

fn check_spm(data: &[u8]) {
    let Ok(model) = SpmModel::parse(data) else {
        return;
    };
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
}

#[test]
fn replay_spm_regressions() {
    let n = replay("spm", check_spm);
    eprintln!("{n} spm regression inputs");
}

#[test]
fn replay_tokenizer_regressions() {
    let Some(p) = common::fixture("grok-1-tokenizer/tokenizer.model") else {
        return;
    };
    let tok = Tokenizer::from_spm_file(&p).unwrap();
    let n = replay("tokenizer", |data| {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        if mode & 1 == 0 {
            let text = String::from_utf8_lossy(rest);
            let ids = tok.encode(&text);
            assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
            let back = tok.decode(&ids);
            if !text.contains('\u{2581}') {
                assert_eq!(back, text, "decode(encode(text)) != text for ids {ids:?}");
            }
        } else {
            let ids: Vec<u32> = rest
                .chunks_exact(4)
                .map(|c| {
                    u32::from_le_bytes([c[0], c[1], c[2], c[3]]) % (tok.vocab_size() as u32 + 16)
                })
                .collect();
            let _ = tok.decode(&ids);
        }
    });
    eprintln!("{n} tokenizer regression inputs");
}

// ---- Hostile pickles behind the fixes, built in code.

/// PROTO 4, None, then `n` TUPLE1 opcodes: a chain of tuples `n` deep. Before the depth
/// bound its recursive drop overflowed the stack (a crash, not an error).
#[test]
fn pickle_deeply_nested_tuples_are_refused() {
    let mut p = vec![0x80, 4, b'N'];
    p.extend(vec![0x85u8; 1_000_000]);
    p.push(b'.');
    let e = parse(&p).unwrap_err();
    assert!(e.to_string().contains("tuples nested deeper than"), "{e}");
    assert_eq!(e.offset, 3 + 16, "{e}");
    // The same through MARK ... TUPLE.
    let mut p = vec![0x80, 4, b'N'];
    p.extend(vec![b'('; 1000]);
    p.extend(vec![b't'; 1000]);
    let e = parse(&p).unwrap_err();
    assert!(e.to_string().contains("tuples nested deeper than"), "{e}");
}

/// A dict fed thousands of distinct keys: refused at a small bound instead of growing (and
/// rescanning) without limit.
#[test]
fn pickle_dict_size_is_bounded() {
    let s = |p: &mut Vec<u8>, x: &str| {
        p.push(0x8c);
        p.push(x.len() as u8);
        p.extend_from_slice(x.as_bytes());
    };
    // numpy.core.multiarray._reconstruct(numpy.ndarray, (), None): an ndarray value, kept in
    // memo 0; then an empty dict on top of it.
    let mut p = vec![0x80, 4];
    s(&mut p, "numpy.core.multiarray");
    s(&mut p, "_reconstruct");
    p.push(0x93);
    s(&mut p, "numpy");
    s(&mut p, "ndarray");
    p.push(0x93);
    p.extend_from_slice(b")N\x87R\x94}");
    for i in 0..1000 {
        s(&mut p, &format!("k{i}"));
        p.extend_from_slice(b"h\x00s");
    }
    p.push(b'.');
    let e = parse(&p).unwrap_err();
    assert!(
        e.to_string().contains("dict with more than 64 entries"),
        "{e}"
    );
}

/// A LONG_BINPUT with a large index right after PROTO: refused, instead of growing the memo
/// to 65536 slots (1.5 MB) for a 10-byte input.
#[test]
fn pickle_memo_index_is_bounded_by_the_input() {
    let p = b"\x80\x04Nr\xff\xff\x00\x00N.";
    let e = parse(p).unwrap_err();
    assert!(e.to_string().contains("more entries than opcodes"), "{e}");
    assert_eq!(e.offset, 3);
    // Sequential indices, as every pickler writes them, are fine.
    let p = b"\x80\x04Nq\x00h\x00\x86.";
    let e = parse(p).unwrap_err();
    assert!(e.to_string().contains("top-level object is tuple"), "{e}");
}
