//! SentencePiece `ModelProto`: the fields the Grok tokenizer needs, parsed and written with the
//! minimal wire-format code in `proto.rs`.
//!
//! Field numbers (sentencepiece_model.proto): ModelProto { 1 pieces, 2 trainer_spec,
//! 3 normalizer_spec }; SentencePiece { 1 piece, 2 score, 3 type }; TrainerSpec { 3 model_type,
//! 4 vocab_size, 24 treat_whitespace_as_suffix, 35 byte_fallback, 40 unk_id, 41 bos_id,
//! 42 eos_id, 43 pad_id, 44 unk_surface }; NormalizerSpec { 1 name, 2 precompiled_charsmap,
//! 3 add_dummy_prefix, 4 remove_extra_whitespaces, 5 escape_whitespaces }.

#![forbid(unsafe_code)]

use super::proto::{Reader, Writer, WT_FIXED32, WT_LEN};
use super::TokenizerError;
use std::path::Path;

/// SentencePiece's default surface of the unknown piece (" ⁇ ").
pub(crate) const DEFAULT_UNK_SURFACE: &str = " \u{2047} ";

/// The type of a piece; the numbers are SentencePiece's protobuf enum values, which are also
/// llama.cpp's GGUF `tokenizer.ggml.token_type` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PieceKind {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl PieceKind {
    /// The kind for a protobuf / GGUF type number, `None` if it is not one.
    pub fn from_i32(v: i32) -> Option<PieceKind> {
        Some(match v {
            1 => PieceKind::Normal,
            2 => PieceKind::Unknown,
            3 => PieceKind::Control,
            4 => PieceKind::UserDefined,
            5 => PieceKind::Unused,
            6 => PieceKind::Byte,
            _ => return None,
        })
    }

    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

/// `TrainerSpec.ModelType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelType {
    Unigram = 1,
    Bpe = 2,
    Word = 3,
    Char = 4,
}

impl ModelType {
    fn from_i32(v: i32) -> Option<ModelType> {
        Some(match v {
            1 => ModelType::Unigram,
            2 => ModelType::Bpe,
            3 => ModelType::Word,
            4 => ModelType::Char,
            _ => return None,
        })
    }
}

/// One vocabulary entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceKind,
}

/// A SentencePiece model: its pieces and the trainer/normalizer settings encoding depends on.
/// Ids are `i32` as in the protobuf; a negative id means "none" (e.g. `pad_id = -1`).
#[derive(Clone, Debug, PartialEq)]
pub struct SpmModel {
    pub pieces: Vec<Piece>,
    pub model_type: ModelType,
    pub byte_fallback: bool,
    pub unk_id: i32,
    pub bos_id: i32,
    pub eos_id: i32,
    pub pad_id: i32,
    /// What `decode` writes for the unknown piece (`TrainerSpec.unk_surface`).
    pub unk_surface: String,
    pub treat_whitespace_as_suffix: bool,
    pub normalizer_name: String,
    /// Non-empty for normalizers such as NFKC; this crate supports only the identity (empty).
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl SpmModel {
    /// Reads and parses a `tokenizer.model` file. Errors name the file.
    pub fn from_file(path: &Path) -> Result<SpmModel, TokenizerError> {
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
            path: path.display().to_string(),
            source,
        })?;
        SpmModel::parse(&bytes).map_err(|e| e.in_file(path))
    }

    /// Parses a serialized `ModelProto`. Unknown fields are skipped; malformed input is an
    /// error, never a panic.
    pub fn parse(bytes: &[u8]) -> Result<SpmModel, TokenizerError> {
        // proto2 defaults
        let mut m = SpmModel {
            pieces: Vec::new(),
            model_type: ModelType::Unigram,
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
            unk_surface: DEFAULT_UNK_SURFACE.to_string(),
            treat_whitespace_as_suffix: false,
            normalizer_name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        };
        let mut r = Reader::new(bytes);
        while !r.is_empty() {
            let (field, wt) = r.key()?;
            match field {
                1 => {
                    Reader::expect(field, wt, WT_LEN)?;
                    let piece = parse_piece(r.bytes()?)?;
                    m.pieces.push(piece);
                }
                2 => {
                    Reader::expect(field, wt, WT_LEN)?;
                    parse_trainer_spec(r.bytes()?, &mut m)?;
                }
                3 => {
                    Reader::expect(field, wt, WT_LEN)?;
                    parse_normalizer_spec(r.bytes()?, &mut m)?;
                }
                _ => r.skip(field, wt)?,
            }
        }
        Ok(m)
    }

    /// Serializes the model as a `ModelProto` that SentencePiece can load. Only the fields of
    /// this struct are written (trainer-only settings are dropped); `vocab_size` is the number
    /// of pieces.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Writer::default();
        for p in &self.pieces {
            let mut w = Writer::default();
            w.string(1, &p.piece);
            w.float(2, p.score);
            if p.kind != PieceKind::Normal {
                w.int32(3, p.kind.as_i32());
            }
            out.bytes(1, &w.buf);
        }
        let mut t = Writer::default();
        t.int32(3, self.model_type as i32);
        t.int32(4, i32::try_from(self.pieces.len()).unwrap_or(i32::MAX));
        if self.treat_whitespace_as_suffix {
            t.bool(24, true);
        }
        t.bool(35, self.byte_fallback);
        t.int32(40, self.unk_id);
        t.int32(41, self.bos_id);
        t.int32(42, self.eos_id);
        t.int32(43, self.pad_id);
        if self.unk_surface != DEFAULT_UNK_SURFACE {
            t.string(44, &self.unk_surface);
        }
        out.bytes(2, &t.buf);
        let mut n = Writer::default();
        n.string(1, &self.normalizer_name);
        if !self.precompiled_charsmap.is_empty() {
            n.bytes(2, &self.precompiled_charsmap);
        }
        n.bool(3, self.add_dummy_prefix);
        n.bool(4, self.remove_extra_whitespaces);
        n.bool(5, self.escape_whitespaces);
        out.bytes(3, &n.buf);
        out.buf
    }

    /// Number of pieces.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }
}

impl TokenizerError {
    /// The same error with `path` in front of its message (I/O errors already name it).
    pub(crate) fn in_file(self, path: &Path) -> TokenizerError {
        let p = path.display();
        match self {
            TokenizerError::Protobuf(m) => TokenizerError::Protobuf(format!("{p}: {m}")),
            TokenizerError::Invalid(m) => TokenizerError::Invalid(format!("{p}: {m}")),
            TokenizerError::Unsupported(m) => TokenizerError::Unsupported(format!("{p}: {m}")),
            io @ TokenizerError::Io { .. } => io,
        }
    }
}

fn parse_piece(bytes: &[u8]) -> Result<Piece, TokenizerError> {
    let mut p = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceKind::Normal,
    };
    let mut r = Reader::new(bytes);
    while !r.is_empty() {
        let (field, wt) = r.key()?;
        match field {
            1 => {
                Reader::expect(field, wt, WT_LEN)?;
                p.piece = r.string()?;
            }
            2 => {
                Reader::expect(field, wt, WT_FIXED32)?;
                p.score = f32::from_bits(r.fixed32()?);
            }
            3 => {
                let v = r.int32_field(field, wt)?;
                p.kind = PieceKind::from_i32(v)
                    .ok_or_else(|| TokenizerError::Protobuf(format!("unknown piece type {v}")))?;
            }
            _ => r.skip(field, wt)?,
        }
    }
    Ok(p)
}

fn parse_trainer_spec(bytes: &[u8], m: &mut SpmModel) -> Result<(), TokenizerError> {
    let mut r = Reader::new(bytes);
    while !r.is_empty() {
        let (field, wt) = r.key()?;
        match field {
            3 => {
                let v = r.int32_field(field, wt)?;
                m.model_type = ModelType::from_i32(v)
                    .ok_or_else(|| TokenizerError::Protobuf(format!("unknown model type {v}")))?;
            }
            24 => m.treat_whitespace_as_suffix = r.bool_field(field, wt)?,
            35 => m.byte_fallback = r.bool_field(field, wt)?,
            40 => m.unk_id = r.int32_field(field, wt)?,
            41 => m.bos_id = r.int32_field(field, wt)?,
            42 => m.eos_id = r.int32_field(field, wt)?,
            43 => m.pad_id = r.int32_field(field, wt)?,
            44 => {
                Reader::expect(field, wt, WT_LEN)?;
                m.unk_surface = r.string()?;
            }
            _ => r.skip(field, wt)?,
        }
    }
    Ok(())
}

fn parse_normalizer_spec(bytes: &[u8], m: &mut SpmModel) -> Result<(), TokenizerError> {
    let mut r = Reader::new(bytes);
    while !r.is_empty() {
        let (field, wt) = r.key()?;
        match field {
            1 => {
                Reader::expect(field, wt, WT_LEN)?;
                m.normalizer_name = r.string()?;
            }
            2 => {
                Reader::expect(field, wt, WT_LEN)?;
                m.precompiled_charsmap = r.bytes()?.to_vec();
            }
            3 => m.add_dummy_prefix = r.bool_field(field, wt)?,
            4 => m.remove_extra_whitespaces = r.bool_field(field, wt)?,
            5 => m.escape_whitespaces = r.bool_field(field, wt)?,
            _ => r.skip(field, wt)?,
        }
    }
    Ok(())
}
