//! SentencePiece BPE encoding and decoding, reproducing python `sentencepiece` 0.2 for models
//! with the identity normalizer (the Grok-1 family).
//!
//! Encoding: the text is normalized (dummy-prefix `▁`, spaces → `▁`), split into initial
//! symbols (a user-defined symbol by longest match, frozen, else one character), then adjacent
//! pairs whose concatenation is a piece are merged, best score first (ties: leftmost), with a
//! binary heap over a linked list of symbols (O(n log n)). Symbols that are not pieces fall
//! back to `<0xXX>` byte pieces when the model has them, else to the unknown id.

#![forbid(unsafe_code)]

use super::spm_model::{ModelType, PieceKind, SpmModel, DEFAULT_UNK_SURFACE};
use super::TokenizerError;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

const SPACE: &str = "\u{2581}";
const NONE: u32 = u32::MAX;

/// Special token ids, as a GGUF carries them (`tokenizer.ggml.{bos,eos,unknown,padding}_token_id`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
}

/// A small, fast, non-cryptographic hasher for piece lookups (keys are trusted vocabulary
/// strings and short text spans).
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A SentencePiece BPE tokenizer.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    pieces: Vec<String>,
    scores: Vec<f32>,
    kinds: Vec<PieceKind>,
    /// Normal, user-defined and unused pieces: the ones BPE may produce by merging.
    mergeable: FastMap<String, u32>,
    /// Control, unknown and byte pieces (looked up first, as SentencePiece's `PieceToId`).
    reserved: FastMap<String, u32>,
    /// User-defined piece ids by first byte, longest first.
    user_defined: Vec<Vec<u32>>,
    byte_ids: [u32; 256],
    byte_fallback: bool,
    has_unused: bool,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    specials: SpecialIds,
    unk: u32,
    unk_surface: String,
}

/// A merge candidate: symbols `left` and `right` whose concatenation (`size` bytes) is a piece
/// with `score`.
#[derive(Clone, Copy)]
struct Candidate {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
    frozen: bool,
}

/// The byte of a `<0xXX>` piece.
fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn to_id(i: usize) -> Result<u32, TokenizerError> {
    u32::try_from(i)
        .ok()
        .filter(|&v| v != NONE)
        .ok_or_else(|| TokenizerError::Invalid("too many pieces".into()))
}

impl Tokenizer {
    /// Builds the tokenizer of a SentencePiece model. Only BPE models with the identity
    /// normalizer and whitespace as prefix are supported.
    pub fn from_spm(model: &SpmModel) -> Result<Tokenizer, TokenizerError> {
        if model.model_type != ModelType::Bpe {
            return Err(TokenizerError::Unsupported(format!(
                "model type {:?} (only BPE is supported)",
                model.model_type
            )));
        }
        if !model.precompiled_charsmap.is_empty() {
            return Err(TokenizerError::Unsupported(format!(
                "normalizer '{}' with a precompiled charsmap (only identity is supported)",
                model.normalizer_name
            )));
        }
        if model.treat_whitespace_as_suffix {
            return Err(TokenizerError::Unsupported(
                "treat_whitespace_as_suffix".into(),
            ));
        }
        let n = model.pieces.len();
        let id = |v: i32| -> Option<u32> {
            usize::try_from(v).ok().filter(|&i| i < n).map(|i| i as u32)
        };
        let unk = id(model.unk_id).ok_or_else(|| {
            TokenizerError::Invalid(format!("unk_id {} is not a piece", model.unk_id))
        })?;
        let specials = SpecialIds {
            bos: id(model.bos_id),
            eos: id(model.eos_id),
            unk: Some(unk),
            pad: id(model.pad_id),
        };
        Tokenizer::build(
            model.pieces.iter().map(|p| p.piece.clone()).collect(),
            model.pieces.iter().map(|p| p.score).collect(),
            model.pieces.iter().map(|p| p.kind).collect(),
            specials,
            unk,
            model.byte_fallback,
            model.add_dummy_prefix,
            model.remove_extra_whitespaces,
            model.escape_whitespaces,
            model.unk_surface.clone(),
        )
    }

    /// Reads a `tokenizer.model` file and builds its tokenizer.
    /// Errors name the file.
    pub fn from_spm_file(path: &Path) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_spm(&SpmModel::from_file(path)?).map_err(|e| e.in_file(path))
    }

    /// Builds a tokenizer from a vocabulary as a GGUF with `tokenizer.ggml.model = llama`
    /// stores it: tokens, scores and llama.cpp token types (1 normal, 2 unknown, 3 control,
    /// 4 user-defined, 5 unused, 6 byte; 0 "undefined" is read as normal). Byte fallback is on
    /// when the vocabulary has byte pieces; spaces are escaped to `▁` and extra whitespace is
    /// kept, as in the Grok-1 model. The unknown id is `specials.unk`, else the first piece of
    /// type unknown.
    pub fn from_vocab(
        tokens: Vec<String>,
        scores: Vec<f32>,
        types: Vec<i32>,
        specials: SpecialIds,
        add_dummy_prefix: bool,
    ) -> Result<Tokenizer, TokenizerError> {
        if tokens.len() != scores.len() || tokens.len() != types.len() {
            return Err(TokenizerError::Invalid(format!(
                "{} tokens, {} scores, {} types",
                tokens.len(),
                scores.len(),
                types.len()
            )));
        }
        let kinds = types
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                if t == 0 {
                    Some(PieceKind::Normal)
                } else {
                    PieceKind::from_i32(t)
                }
                .ok_or_else(|| TokenizerError::Invalid(format!("token {i} has type {t}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let n = tokens.len();
        for (name, v) in [
            ("bos", specials.bos),
            ("eos", specials.eos),
            ("unk", specials.unk),
            ("pad", specials.pad),
        ] {
            if let Some(v) = v {
                if v as usize >= n {
                    return Err(TokenizerError::Invalid(format!(
                        "{name} id {v} out of range (vocab {n})"
                    )));
                }
            }
        }
        let unk = match specials.unk {
            Some(u) => u,
            None => kinds
                .iter()
                .position(|&k| k == PieceKind::Unknown)
                .map(|i| i as u32)
                .ok_or_else(|| TokenizerError::Invalid("no unknown token".into()))?,
        };
        let byte_fallback = kinds.contains(&PieceKind::Byte);
        let specials = SpecialIds {
            unk: Some(unk),
            ..specials
        };
        Tokenizer::build(
            tokens,
            scores,
            kinds,
            specials,
            unk,
            byte_fallback,
            add_dummy_prefix,
            false,
            true,
            DEFAULT_UNK_SURFACE.to_string(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        pieces: Vec<String>,
        scores: Vec<f32>,
        kinds: Vec<PieceKind>,
        specials: SpecialIds,
        unk: u32,
        byte_fallback: bool,
        add_dummy_prefix: bool,
        remove_extra_whitespaces: bool,
        escape_whitespaces: bool,
        unk_surface: String,
    ) -> Result<Tokenizer, TokenizerError> {
        let mut mergeable = FastMap::default();
        let mut reserved = FastMap::default();
        let mut user_defined: Vec<Vec<u32>> = vec![Vec::new(); 256];
        let mut byte_ids = [NONE; 256];
        let mut has_unused = false;
        for (i, (piece, &kind)) in pieces.iter().zip(&kinds).enumerate() {
            let id = to_id(i)?;
            let map = match kind {
                PieceKind::Normal | PieceKind::UserDefined | PieceKind::Unused => &mut mergeable,
                PieceKind::Unknown | PieceKind::Control | PieceKind::Byte => &mut reserved,
            };
            // The first of duplicate pieces wins (SentencePiece rejects duplicates).
            map.entry(piece.clone()).or_insert(id);
            match kind {
                PieceKind::UserDefined => {
                    if let Some(&b) = piece.as_bytes().first() {
                        user_defined[b as usize].push(id);
                    }
                }
                PieceKind::Byte => {
                    if let Some(b) = parse_byte_piece(piece) {
                        if byte_ids[b as usize] == NONE {
                            byte_ids[b as usize] = id;
                        }
                    }
                }
                PieceKind::Unused => has_unused = true,
                _ => {}
            }
        }
        for list in &mut user_defined {
            list.sort_by_key(|&id| std::cmp::Reverse(pieces[id as usize].len()));
        }
        Ok(Tokenizer {
            pieces,
            scores,
            kinds,
            mergeable,
            reserved,
            user_defined,
            byte_ids,
            byte_fallback,
            has_unused,
            add_dummy_prefix,
            remove_extra_whitespaces,
            escape_whitespaces,
            specials,
            unk,
            unk_surface,
        })
    }

    /// Number of pieces.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The piece of `id` (`""` for an id outside the vocabulary).
    pub fn piece(&self, id: u32) -> &str {
        self.pieces.get(id as usize).map_or("", String::as_str)
    }

    /// The score of `id` (0 outside the vocabulary).
    pub fn score(&self, id: u32) -> f32 {
        self.scores.get(id as usize).copied().unwrap_or(0.0)
    }

    /// The type of `id`, `None` outside the vocabulary.
    pub fn kind(&self, id: u32) -> Option<PieceKind> {
        self.kinds.get(id as usize).copied()
    }

    /// The id of a piece, as SentencePiece's `PieceToId` without the unknown fallback.
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.reserved
            .get(piece)
            .or_else(|| self.mergeable.get(piece))
            .copied()
    }

    /// All pieces, in id order (GGUF `tokenizer.ggml.tokens`).
    pub fn pieces(&self) -> &[String] {
        &self.pieces
    }

    /// All scores, in id order (GGUF `tokenizer.ggml.scores`).
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// All types as GGUF / SentencePiece numbers, in id order (GGUF `tokenizer.ggml.token_type`).
    pub fn token_types(&self) -> Vec<i32> {
        self.kinds.iter().map(|k| k.as_i32()).collect()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.specials.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.specials.eos
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.specials.pad
    }

    pub fn unk_id(&self) -> u32 {
        self.unk
    }

    pub fn add_dummy_prefix(&self) -> bool {
        self.add_dummy_prefix
    }

    pub fn byte_fallback(&self) -> bool {
        self.byte_fallback
    }

    /// SentencePiece's identity normalization: optional whitespace cleanup, the dummy prefix and
    /// spaces escaped to `▁`.
    fn normalize(&self, text: &str) -> String {
        let mut input = text;
        if self.remove_extra_whitespaces {
            input = input.trim_start_matches(' ');
        }
        if input.is_empty() {
            return String::new();
        }
        let space = if self.escape_whitespaces { SPACE } else { " " };
        let mut out = String::with_capacity(input.len() + input.len() / 2 + 3);
        if self.add_dummy_prefix {
            out.push_str(space);
        }
        let mut prev_space = self.remove_extra_whitespaces;
        for c in input.chars() {
            if c == ' ' {
                if !prev_space {
                    out.push_str(space);
                }
                prev_space = self.remove_extra_whitespaces;
            } else {
                out.push(c);
                prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        out
    }

    /// Length of the longest user-defined piece that `s` starts with.
    fn match_user_defined(&self, s: &str) -> Option<usize> {
        let first = *s.as_bytes().first()?;
        self.user_defined[first as usize]
            .iter()
            .map(|&id| self.pieces[id as usize].as_str())
            .find(|p| s.starts_with(p))
            .map(str::len)
    }

    /// Encodes `text` as python `sentencepiece`'s `encode(text)` does: no BOS or EOS.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let norm = self.normalize(text);
        let mut out = Vec::with_capacity(norm.len() / 3 + 1);
        self.encode_normalized(&norm, &mut out);
        out
    }

    fn encode_normalized<'n>(&self, norm: &'n str, out: &mut Vec<u32>) {
        if norm.is_empty() {
            return;
        }
        // A string longer than u32 symbols is encoded in pieces (never reached in practice).
        if norm.len() >= NONE as usize {
            let mut cut = (NONE as usize) / 2;
            while !norm.is_char_boundary(cut) {
                cut -= 1;
            }
            self.encode_normalized(&norm[..cut], out);
            self.encode_normalized(&norm[cut..], out);
            return;
        }
        // Initial symbols.
        let mut symbols: Vec<Symbol> = Vec::with_capacity(norm.len());
        let mut pos = 0usize;
        while pos < norm.len() {
            let rest = &norm[pos..];
            let (len, frozen) = match self.match_user_defined(rest) {
                Some(l) => (l, true),
                None => (rest.chars().next().map_or(1, char::len_utf8), false),
            };
            let idx = symbols.len() as u32;
            symbols.push(Symbol {
                start: pos as u32,
                len: len as u32,
                prev: if idx == 0 { NONE } else { idx - 1 },
                next: if pos + len >= norm.len() {
                    NONE
                } else {
                    idx + 1
                },
                frozen,
            });
            pos += len;
        }

        let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(symbols.len());
        let mut rev_merge: FastMap<&'n str, (&'n str, &'n str)> = FastMap::default();
        let try_pair = |symbols: &[Symbol],
                        heap: &mut BinaryHeap<Candidate>,
                        rev: &mut FastMap<&'n str, (&'n str, &'n str)>,
                        left: u32,
                        right: u32| {
            if left == NONE || right == NONE {
                return;
            }
            let (l, r) = (symbols[left as usize], symbols[right as usize]);
            if l.frozen || r.frozen {
                return;
            }
            let size = l.len + r.len;
            let s = l.start as usize;
            let piece = &norm[s..s + size as usize];
            if let Some(&id) = self.mergeable.get(piece) {
                heap.push(Candidate {
                    score: self.scores[id as usize],
                    left,
                    right,
                    size,
                });
                if self.kinds[id as usize] == PieceKind::Unused {
                    let cut = s + l.len as usize;
                    rev.insert(piece, (&norm[s..cut], &norm[cut..s + size as usize]));
                }
            }
        };
        for i in 1..symbols.len() as u32 {
            try_pair(&symbols, &mut heap, &mut rev_merge, i - 1, i);
        }
        while let Some(top) = heap.pop() {
            let (l, r) = (symbols[top.left as usize], symbols[top.right as usize]);
            if l.len == 0 || r.len == 0 || l.len + r.len != top.size {
                continue; // stale
            }
            symbols[top.left as usize].len = top.size;
            symbols[top.left as usize].next = r.next;
            if r.next != NONE {
                symbols[r.next as usize].prev = top.left;
            }
            symbols[top.right as usize].len = 0;
            try_pair(&symbols, &mut heap, &mut rev_merge, l.prev, top.left);
            try_pair(&symbols, &mut heap, &mut rev_merge, top.left, r.next);
        }

        let mut idx = 0u32;
        while idx != NONE {
            let s = symbols[idx as usize];
            let piece = &norm[s.start as usize..(s.start + s.len) as usize];
            self.resegment(piece, &rev_merge, out);
            idx = s.next;
        }
    }

    /// Emits the ids of a final symbol: unused pieces are split back along the merge that
    /// made them; a symbol that is no piece becomes byte pieces (or the unknown id).
    fn resegment(&self, piece: &str, rev: &FastMap<&str, (&str, &str)>, out: &mut Vec<u32>) {
        let id = self.token_id(piece).unwrap_or(self.unk);
        if self.has_unused && self.kinds[id as usize] == PieceKind::Unused {
            if let Some(&(a, b)) = rev.get(piece) {
                self.resegment(a, rev, out);
                self.resegment(b, rev, out);
                return;
            }
        }
        if self.kinds[id as usize] == PieceKind::Unknown && self.byte_fallback {
            for b in piece.bytes() {
                let bid = self.byte_ids[b as usize];
                out.push(if bid == NONE { self.unk } else { bid });
            }
        } else {
            out.push(id);
        }
    }

    /// Decodes ids as python `sentencepiece`'s `decode(ids)`: control pieces give nothing, the
    /// unknown piece its surface, runs of byte pieces are reassembled as UTF-8 (each invalid
    /// byte → U+FFFD), `▁` → space, and a leading `▁` of the first non-control piece is dropped
    /// when the model adds a dummy prefix. Ids outside the vocabulary are skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut text = String::new();
        let mut bytes: Vec<u8> = Vec::new();
        // The dummy-prefix `▁` is expected until the first piece that is not a control piece.
        let mut bos_ws = true;
        for &id in ids {
            let Some(&kind) = self.kinds.get(id as usize) else {
                continue;
            };
            let piece = self.pieces[id as usize].as_str();
            if kind == PieceKind::Byte {
                bos_ws = false;
                match parse_byte_piece(piece) {
                    Some(b) => bytes.push(b),
                    None => {
                        flush_bytes(&mut bytes, &mut text);
                        text.push_str(piece);
                    }
                }
                continue;
            }
            flush_bytes(&mut bytes, &mut text);
            let at_bos = bos_ws;
            if kind != PieceKind::Control {
                bos_ws = false;
            }
            match kind {
                PieceKind::Control => {}
                PieceKind::Unknown => text.push_str(&self.unk_surface),
                _ => {
                    let mut p = piece;
                    if at_bos && (self.add_dummy_prefix || self.remove_extra_whitespaces) {
                        p = p.strip_prefix(SPACE).unwrap_or(p);
                    }
                    if self.escape_whitespaces {
                        text.push_str(&p.replace(SPACE, " "));
                    } else {
                        text.push_str(p);
                    }
                }
            }
        }
        flush_bytes(&mut bytes, &mut text);
        text
    }
}

/// Appends a run of byte-piece bytes as UTF-8, one U+FFFD per byte that starts no valid
/// character (SentencePiece's rule, which differs from `String::from_utf8_lossy`).
fn flush_bytes(bytes: &mut Vec<u8>, text: &mut String) {
    let mut i = 0;
    while i < bytes.len() {
        let want = match bytes[i] {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 0,
        };
        let valid = (want > 0 && i + want <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i..i + want]).ok())
            .flatten();
        match valid {
            Some(s) => {
                text.push_str(s);
                i += want;
            }
            None => {
                text.push('\u{FFFD}');
                i += 1;
            }
        }
    }
    bytes.clear();
}
