//! GGUF v3 (little-endian) reading and writing.
//!
//! * [`GgufFile`] memory-maps a file read-only, validates its header, metadata and tensor table
//!   against the file size, and hands out zero-copy tensor views.
//! * [`GgufLayout`] plans a file (header bytes, every tensor's absolute offset and size) before
//!   any data exists; [`GgufFileWriter`] then lets many threads write tensor data at those
//!   offsets concurrently. [`write_gguf`]/[`encode_gguf`] are in-memory conveniences.

mod direct;
mod reader;
mod value;
mod writer;

use std::path::Path;

pub use direct::{PageBuf, PartialPages, DIRECT_ALIGN};
pub use quant::GgmlType;
pub use reader::{GgufFile, TensorInfo, TensorView};
pub use value::{GgufArray, GgufValue, GgufValueType, Metadata};
pub use writer::{encode_gguf, write_gguf, GgufFileWriter, GgufLayout, TensorSpec};

/// `"GGUF"` as the first four bytes of a file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The only version read and written.
pub const GGUF_VERSION: u32 = 3;
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const GGUF_DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor can have.
pub const GGML_MAX_DIMS: usize = 4;
/// Longest key or tensor name accepted (bytes).
pub const GGUF_MAX_NAME_LEN: usize = 65535;
/// Deepest nesting of arrays accepted when reading.
pub const GGUF_MAX_ARRAY_DEPTH: usize = 8;

/// Well-known metadata keys (as used by llama.cpp).
pub mod keys {
    pub const GENERAL_ARCHITECTURE: &str = "general.architecture";
    pub const GENERAL_NAME: &str = "general.name";
    pub const GENERAL_ALIGNMENT: &str = "general.alignment";
    pub const GENERAL_FILE_TYPE: &str = "general.file_type";
    pub const GENERAL_QUANTIZATION_VERSION: &str = "general.quantization_version";
    pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
    pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
    pub const TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
    pub const TOKENIZER_SCORES: &str = "tokenizer.ggml.scores";
    pub const TOKENIZER_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const TOKENIZER_MERGES: &str = "tokenizer.ggml.merges";
    pub const TOKENIZER_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    pub const TOKENIZER_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    pub const TOKENIZER_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
    pub const TOKENIZER_SEP_ID: &str = "tokenizer.ggml.seperator_token_id";
    pub const TOKENIZER_PAD_ID: &str = "tokenizer.ggml.padding_token_id";
    pub const TOKENIZER_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const TOKENIZER_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
}

/// Everything that can go wrong reading or writing GGUF. Messages name the file, the key or
/// tensor, and what was expected versus found.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{file}: not a GGUF file (magic {found:02x?}, expected {:02x?} \"GGUF\")",
        GGUF_MAGIC
    )]
    NotGguf { file: String, found: Vec<u8> },
    #[error("{file}: unsupported GGUF version {version} (only version {GGUF_VERSION} is supported){hint}")]
    UnsupportedVersion {
        file: String,
        version: u32,
        hint: &'static str,
    },
    #[error(
        "{file}: truncated: {what} at offset {offset} needs {need} bytes, file size is {size}"
    )]
    Truncated {
        file: String,
        what: String,
        offset: u64,
        need: u64,
        size: u64,
    },
    #[error("{file}: {msg}")]
    Format { file: String, msg: String },
    #[error("{file}: metadata key '{key}': {msg}")]
    Metadata {
        file: String,
        key: String,
        msg: String,
    },
    #[error("{file}: tensor '{tensor}': {msg}")]
    Tensor {
        file: String,
        tensor: String,
        msg: String,
    },
    #[error("GGUF layout: {0}")]
    Layout(String),
    #[error("GGUF layout: tensor '{tensor}': {msg}")]
    LayoutTensor { tensor: String, msg: String },
}

impl GgufError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> GgufError {
        GgufError::Io {
            file: path.display().to_string(),
            source,
        }
    }
}

/// Round `x` up to a multiple of `align` (a power of two); `None` on overflow.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// Byte size of a tensor of `shape` (ggml `ne` order) and type `ty`, or a message saying why it
/// is not a valid ggml tensor: 1..=4 dims, each > 0, `ne[0]` a multiple of the block size, no
/// overflow.
pub(crate) fn tensor_nbytes(shape: &[u64], ty: GgmlType) -> Result<u64, String> {
    if shape.is_empty() || shape.len() > GGML_MAX_DIMS {
        return Err(format!(
            "expected 1..={GGML_MAX_DIMS} dimensions, found {}",
            shape.len()
        ));
    }
    if let Some(i) = shape.iter().position(|&d| d == 0) {
        return Err(format!(
            "dimension {i} is 0 (shape {shape:?}), expected > 0"
        ));
    }
    let ne0 = shape[0];
    let block = ty.block_size() as u64;
    if ne0 % block != 0 {
        return Err(format!(
            "row length ne[0]={ne0} is not a multiple of {ty}'s block size {block}"
        ));
    }
    let overflow = || format!("size of shape {shape:?} as {ty} overflows");
    let row = (ne0 / block)
        .checked_mul(ty.type_size() as u64)
        .ok_or_else(overflow)?;
    shape[1..]
        .iter()
        .try_fold(row, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_sizes_follow_the_type_table() {
        assert_eq!(tensor_nbytes(&[3, 5], GgmlType::BF16), Ok(30));
        assert_eq!(tensor_nbytes(&[256, 2], GgmlType::Q6_K), Ok(420));
        assert_eq!(tensor_nbytes(&[64], GgmlType::Q8_0), Ok(68));
        assert!(tensor_nbytes(&[48], GgmlType::Q4_0).is_err());
        assert!(tensor_nbytes(&[], GgmlType::F32).is_err());
        assert!(tensor_nbytes(&[1, 1, 1, 1, 1], GgmlType::F32).is_err());
        assert!(tensor_nbytes(&[4, 0], GgmlType::F32).is_err());
        assert!(tensor_nbytes(&[u64::MAX, 2], GgmlType::F32).is_err());
        assert_eq!(align_up(33, 32), Some(64));
        assert_eq!(align_up(64, 32), Some(64));
        assert_eq!(align_up(u64::MAX, 32), None);
    }
}
