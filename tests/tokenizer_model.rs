//! SpmModel parsing/writing, the synthetic vocabulary, decode edge cases and hostile input.

use grok1_quant::tokenizer::{PieceKind, SpecialIds, SpmModel, Tokenizer};
use std::path::{Path, PathBuf};

fn fixtures(sub: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(sub);
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("fixtures missing at {}", dir.display());
    }
    eprintln!("note: skipping, fixtures missing at {}", dir.display());
    None
}

#[test]
fn synthetic_layout_and_roundtrip() {
    for n in [0usize, 326, 400, 4096, 131072] {
        let m = SpmModel::synthetic(n);
        assert_eq!(m.pieces.len(), n.max(326));
        assert_eq!(m.pieces[0].piece, "[PAD]");
        assert_eq!(m.pieces[3].kind, PieceKind::Unknown);
        assert_eq!(m.pieces[4].piece, "\n");
        assert_eq!(m.pieces[47].piece, "<|separator|>");
        assert_eq!(m.pieces[68].piece, "<|control20|>");
        assert_eq!(m.pieces[69].piece, "<0x00>");
        assert_eq!(m.pieces[324].piece, "<0xFF>");
        // As in Grok-1 the first merged piece is "▁▁" (tiny vocabularies hold only single characters).
        let first = if n >= 1000 {
            "\u{2581}\u{2581}"
        } else {
            "\u{2581}"
        };
        assert_eq!(m.pieces[325].piece, first);
        let mut seen = std::collections::HashSet::new();
        assert!(m.pieces.iter().all(|p| seen.insert(p.piece.as_str())));
        assert_eq!(SpmModel::parse(&m.to_bytes()).unwrap(), m);
        assert_eq!(SpmModel::synthetic(n), m, "deterministic");
        let tok = Tokenizer::from_spm(&m).unwrap();
        let text = "Hello, World!  x\t\ty 42 <|mask|> café 日";
        assert_eq!(tok.decode(&tok.encode(text)), text);
    }
}

/// Ids from python sentencepiece 0.2 loading `SpmModel::synthetic(4096).to_bytes()`.
#[test]
fn synthetic_4096_matches_python_sentencepiece() {
    let tok = Tokenizer::from_spm(&SpmModel::synthetic(4096)).unwrap();
    let text = "The answer to life the universe and everything is of course";
    let ids = tok.encode(text);
    assert_eq!(
        ids,
        [402, 1055, 365, 699, 347, 1056, 375, 1058, 394, 363, 813]
    );
    let pieces: Vec<&str> = ids.iter().map(|&i| tok.piece(i)).collect();
    assert_eq!(pieces[..3], ["▁The", "▁answer", "▁to"]);
    assert_eq!(
        tok.encode("Hello, World!  x\t\ty 42 <|mask|> café 日"),
        [
            602, 372, 4026, 4065, 1134, 4068, 325, 4035, 25, 4036, 4011, 18, 16, 4011, 48, 543,
            4017, 264, 238, 4011, 299, 220, 234
        ]
    );
    assert!(tok.encode("").is_empty());
}

/// Decode rules checked against python sentencepiece on the Grok-1 model.
#[test]
fn grok1_decode_edge_cases() {
    let Some(dir) = fixtures("grok-1-tokenizer") else {
        return;
    };
    let tok = Tokenizer::from_spm_file(&dir.join("tokenizer.model")).unwrap();
    let world = tok.token_id("▁world").unwrap();
    let a = tok.token_id("<0x41>").unwrap();
    let e2 = tok.token_id("<0xE2>").unwrap();
    let x96 = tok.token_id("<0x96>").unwrap();
    let sp = tok.token_id("▁").unwrap();
    let cases: Vec<(Vec<u32>, &str)> = vec![
        (vec![1, world], "world"),
        (vec![1, 1, world], "world"),
        (vec![3, world], "[UNK] world"),
        (vec![a, world], "A world"),
        (vec![a, a, world], "AA world"),
        (vec![sp, world], " world"),
        (vec![sp, sp, world], "  world"),
        (vec![world, world], "world world"),
        (vec![e2, x96, world], "\u{FFFD}\u{FFFD} world"),
        (vec![a, e2], "A\u{FFFD}"),
        (vec![world, 999_999_999], "world"),
    ];
    for (ids, want) in cases {
        assert_eq!(tok.decode(&ids), want, "{ids:?}");
    }
    assert_eq!(tok.piece(u32::MAX), "");
    assert_eq!(tok.kind(47), Some(PieceKind::UserDefined));
    assert_eq!(tok.token_types().len(), 131072);
}

#[test]
fn from_vocab_rejects_inconsistent_input() {
    let toks = vec!["[UNK]".to_string(), "a".to_string()];
    let sp = SpecialIds {
        unk: Some(0),
        ..Default::default()
    };
    assert!(Tokenizer::from_vocab(toks.clone(), vec![0.0], vec![2, 1], sp, true).is_err());
    assert!(Tokenizer::from_vocab(toks.clone(), vec![0.0; 2], vec![2, 9], sp, true).is_err());
    let bad = SpecialIds { bos: Some(7), ..sp };
    assert!(Tokenizer::from_vocab(toks.clone(), vec![0.0; 2], vec![2, 1], bad, true).is_err());
    let none = SpecialIds::default();
    assert!(Tokenizer::from_vocab(toks.clone(), vec![0.0; 2], vec![1, 1], none, true).is_err());
    // unk found by type; no byte pieces: unknown characters become the unk id
    let tok = Tokenizer::from_vocab(toks, vec![0.0; 2], vec![2, 1], none, false).unwrap();
    assert_eq!(tok.encode("ab"), [1, 0]);
    assert!(!tok.byte_fallback());
}

/// Offsets where top-level fields of a serialized message end.
fn top_level_boundaries(bytes: &[u8]) -> Vec<usize> {
    fn varint(b: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0;
        let mut shift = 0;
        loop {
            let x = b[*pos];
            *pos += 1;
            v |= u64::from(x & 0x7f) << shift;
            shift += 7;
            if x & 0x80 == 0 {
                return v;
            }
        }
    }
    let mut pos = 0;
    let mut out = vec![0];
    while pos < bytes.len() {
        let key = varint(bytes, &mut pos);
        assert_eq!(key & 7, 2, "all top-level ModelProto fields are messages");
        let len = varint(bytes, &mut pos) as usize;
        pos += len;
        out.push(pos);
    }
    out
}

fn check_no_panic(bytes: &[u8]) {
    if let Ok(m) = SpmModel::parse(bytes) {
        if let Ok(tok) = Tokenizer::from_spm(&m) {
            let ids = tok.encode("Hello <|mask|> wörld 12\n\t 日本");
            let _ = tok.decode(&ids);
        }
    }
}

#[test]
fn hostile_truncations_are_errors() {
    let bytes = SpmModel::synthetic(500).to_bytes();
    let boundaries = top_level_boundaries(&bytes);
    for cut in 0..bytes.len() {
        let r = SpmModel::parse(&bytes[..cut]);
        if boundaries.binary_search(&cut).is_ok() {
            assert!(r.is_ok(), "cut at field boundary {cut} should parse");
        } else {
            assert!(r.is_err(), "cut inside a field at {cut} parsed");
        }
    }
    check_no_panic(&bytes);
}

#[test]
fn hostile_bit_flips_never_panic() {
    let original = SpmModel::synthetic(400).to_bytes();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut errors = 0;
    for _ in 0..3000 {
        let mut bytes = original.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % bytes.len() as u64) as usize;
            bytes[i] ^= 1 << (next() % 8);
        }
        if SpmModel::parse(&bytes).is_err() {
            errors += 1;
        }
        check_no_panic(&bytes);
    }
    assert!(errors > 0, "some flips must break the message");
    // Pure garbage and adversarial shapes.
    for bytes in [
        vec![0xff; 64],
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        vec![0x0a, 0x80],
        vec![0x0b; 100], // start-groups nested too deep / unterminated
        vec![0x0c],      // stray end-group
        vec![
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ],
        vec![0x00, 0x00],                   // field number 0
        vec![0x0a, 0x02, 0x0a, 0x05],       // piece string length beyond its message
        vec![0x0a, 0x03, 0x0a, 0x01, 0xff], // invalid UTF-8 piece
        vec![0x0a, 0x02, 0x18, 0x09],       // unknown piece type
    ] {
        assert!(SpmModel::parse(&bytes).is_err(), "{bytes:?}");
    }
    // A model with no pieces parses but is not a usable tokenizer.
    let empty = SpmModel::parse(&[]).unwrap();
    assert!(Tokenizer::from_spm(&empty).is_err());
}

#[test]
fn grok_tiny_model_truncations() {
    let Some(dir) = fixtures("grok-tiny") else {
        return;
    };
    let bytes = std::fs::read(dir.join("tokenizer.model")).unwrap();
    let boundaries = top_level_boundaries(&bytes);
    for cut in (0..bytes.len()).step_by(7) {
        let r = SpmModel::parse(&bytes[..cut]);
        assert_eq!(
            r.is_ok(),
            boundaries.binary_search(&cut).is_ok(),
            "cut {cut}"
        );
    }
    assert!(SpmModel::parse(&bytes).is_ok());
}
