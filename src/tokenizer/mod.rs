//! The Grok-1 tokenizer: a SentencePiece BPE model, read from `tokenizer.model` (protobuf) or
//! from the vocabulary a GGUF carries, encoding exactly as python `sentencepiece` does.
//!
//! * [`SpmModel`]: the parsed `ModelProto` (pieces, scores, types and the settings encoding
//!   needs), writable back with [`SpmModel::to_bytes`]; [`SpmModel::synthetic`] builds a
//!   Grok-style vocabulary for synthetic checkpoints.
//! * [`Tokenizer`]: `encode`/`decode` (BPE with scores as merge priority, user-defined symbols,
//!   byte fallback).
//!
//! A leaf module: it uses nothing else of the crate.

mod bpe;
mod proto;
mod spm_model;
mod synthetic;

pub use bpe::{SpecialIds, Tokenizer};
pub use spm_model::{ModelType, Piece, PieceKind, SpmModel};

/// Everything that can go wrong reading a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed SentencePiece protobuf: {0}")]
    Protobuf(String),
    #[error("invalid tokenizer: {0}")]
    Invalid(String),
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
}
