//! A deterministic Grok-style SentencePiece BPE vocabulary for synthetic checkpoints.
//!
//! Layout as in Grok-1: `[PAD] [BOS] [EOS]` (control), `[UNK]` (unknown), the 65 user-defined
//! symbols, the 256 `<0xXX>` byte pieces, then merged pieces in decreasing score (whitespace
//! runs, then merges learned by a small BPE training run over a built-in list of common English
//! words weighted by rank, then lowercase letter strings by length), and last the single
//! characters (`▁`, letters, punctuation) so that all of them are pieces.

use super::spm_model::{ModelType, Piece, PieceKind, SpmModel};
use std::collections::{BTreeMap, HashSet};

const SPACE: char = '\u{2581}';
const MAX_PIECE_CHARS: usize = 16;

/// Common English words, most frequent first.
const WORDS: &str = "the of and to a in is that for it as was with be by on not he i this are or \
his from at which but have an they you were her she there one all we their been has when who will \
more no if out so said what up its about into than them can only other new some could time these \
two may then do first any my now such like our over man me even most made after also did many \
before must through back years where much your way well down should because each just those people \
how too little state good very make world still own see men work long get here between both life \
being under never day same another know while last might us great old year off come since against \
go came right used take three states himself few house use during without again place american \
around however home small found thought went say part once general high upon school every between \
don does got united left number course war until always away something fact though water less \
public put think almost hand enough far took head yet government system better set told nothing \
night end why called didn eyes find going look asked later knew point next city give group young \
let room president side social given present several order national possible rather second face \
per among form important often things looked early white case john become large big need four \
within felt along children saw best church ever least power development light thing seemed family \
interest want members mind country area others done turned although open god service certain kind \
problem began different thus help means door whole sense answer universe everything language model \
token question learning word words text data computer science true false name value number return";

fn user_defined_symbols() -> Vec<String> {
    let mut v = Vec::with_capacity(65);
    for n in 1..=10 {
        v.push("\n".repeat(n));
    }
    for d in 0..10 {
        v.push(d.to_string());
    }
    for n in 1..=8 {
        v.push("\t".repeat(n));
    }
    for n in 2..=16 {
        v.push(" ".repeat(n));
    }
    v.push("<|separator|>".into());
    v.push("<|mask|>".into());
    for n in 1..=20 {
        v.push(format!("<|control{n}|>"));
    }
    v
}

fn base_chars() -> Vec<char> {
    let mut v = vec![SPACE];
    v.extend('a'..='z');
    v.extend('A'..='Z');
    v.extend(".,;:!?'\"-()[]{}/\\_=+*&%$#@<>|~`^".chars());
    v
}

/// Merges learned by BPE on the weighted word list (most frequent pair first; ties broken by
/// the lexicographically smallest pair), at most `limit`.
fn learned_merges(limit: usize) -> Vec<String> {
    let mut words: Vec<(Vec<String>, u64)> = Vec::new();
    let mut seen = HashSet::new();
    for (rank, w) in WORDS.split_whitespace().enumerate() {
        if !seen.insert(w) {
            continue;
        }
        let weight = 100_000 / (rank as u64 + 10);
        let mut cap = w.to_string();
        if let Some(f) = cap.get_mut(0..1) {
            f.make_ascii_uppercase();
        }
        for (text, wt) in [(w.to_string(), weight), (cap, weight / 4 + 1)] {
            let mut syms = vec![SPACE.to_string()];
            syms.extend(text.chars().map(String::from));
            words.push((syms, wt));
        }
    }
    let mut merges = Vec::new();
    while merges.len() < limit {
        let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (syms, wt) in &words {
            for pair in syms.windows(2) {
                if pair[0].chars().count() + pair[1].chars().count() <= MAX_PIECE_CHARS {
                    *counts.entry((&pair[0], &pair[1])).or_default() += wt;
                }
            }
        }
        // BTreeMap iterates in lexicographic order; keep the first maximum.
        let Some((a, b)) = counts
            .iter()
            .fold(None::<((&str, &str), u64)>, |best, (&k, &c)| match best {
                Some((_, bc)) if bc >= c => best,
                _ => Some((k, c)),
            })
            .map(|(k, _)| (k.0.to_string(), k.1.to_string()))
        else {
            break;
        };
        let merged = format!("{a}{b}");
        for (syms, _) in &mut words {
            let mut i = 0;
            while i + 1 < syms.len() {
                if syms[i] == a && syms[i + 1] == b {
                    syms[i] = merged.clone();
                    syms.remove(i + 1);
                }
                i += 1;
            }
        }
        merges.push(merged);
    }
    merges
}

impl SpmModel {
    /// A deterministic Grok-style BPE vocabulary of exactly `vocab_size` pieces (at least 326:
    /// smaller sizes are raised to 326, the specials, user-defined symbols, bytes and `▁`).
    /// Identity normalizer, dummy prefix, byte fallback, ids pad 0, bos 1, eos 2, unk 3.
    pub fn synthetic(vocab_size: usize) -> SpmModel {
        let vocab_size = vocab_size.max(326);
        let mut pieces: Vec<Piece> = Vec::with_capacity(vocab_size);
        let push = |pieces: &mut Vec<Piece>, piece: String, score: f32, kind: PieceKind| {
            pieces.push(Piece { piece, score, kind });
        };
        for p in ["[PAD]", "[BOS]", "[EOS]"] {
            push(&mut pieces, p.into(), 0.0, PieceKind::Control);
        }
        push(&mut pieces, "[UNK]".into(), 0.0, PieceKind::Unknown);
        for s in user_defined_symbols() {
            push(&mut pieces, s, 0.0, PieceKind::UserDefined);
        }
        for b in 0..=255u8 {
            push(&mut pieces, format!("<0x{b:02X}>"), 0.0, PieceKind::Byte);
        }
        let chars = base_chars();
        let n_chars = chars.len().min(vocab_size - pieces.len());
        let n_merges = vocab_size - pieces.len() - n_chars;

        let mut taken: HashSet<String> = pieces.iter().map(|p| p.piece.clone()).collect();
        taken.extend(chars.iter().map(|c| c.to_string()));
        let mut merged: Vec<String> = Vec::with_capacity(n_merges);
        let mut add = |merged: &mut Vec<String>, s: String| {
            if merged.len() < n_merges && taken.insert(s.clone()) {
                merged.push(s);
            }
        };
        for n in 2..=MAX_PIECE_CHARS {
            add(&mut merged, SPACE.to_string().repeat(n));
        }
        for m in learned_merges(n_merges) {
            add(&mut merged, m);
        }
        // Fill with lowercase strings by length: "▁s" then "s", every prefix already present.
        let mut len = 1u32;
        while merged.len() < n_merges && len <= 8 {
            let total = 26u64.pow(len);
            for k in 0..total {
                if merged.len() >= n_merges {
                    break;
                }
                let mut s = vec![b'a'; len as usize];
                let mut v = k;
                for slot in s.iter_mut().rev() {
                    *slot = b'a' + (v % 26) as u8;
                    v /= 26;
                }
                let s = String::from_utf8(s).unwrap_or_default();
                add(&mut merged, format!("{SPACE}{s}"));
                if len >= 2 {
                    add(&mut merged, s);
                }
            }
            len += 1;
        }
        let mut score = 0.0f32;
        for m in merged {
            push(&mut pieces, m, score, PieceKind::Normal);
            score -= 1.0;
        }
        for c in chars.into_iter().take(n_chars) {
            push(&mut pieces, c.to_string(), score, PieceKind::Normal);
            score -= 1.0;
        }
        SpmModel {
            pieces,
            model_type: ModelType::Bpe,
            byte_fallback: true,
            unk_id: 3,
            bos_id: 1,
            eos_id: 2,
            pad_id: 0,
            unk_surface: "[UNK]".into(),
            treat_whitespace_as_suffix: false,
            normalizer_name: "identity".into(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: false,
            escape_whitespaces: true,
        }
    }
}
