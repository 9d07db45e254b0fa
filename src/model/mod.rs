//! The Grok model over a memory-mapped GGUF: hyperparameters, validated tensor references and
//! the forward pass. Weights are never copied: every matrix is a view into the mapping.

mod forward;
pub mod gpu;
pub mod hparams;
mod kv;
mod repack;

pub use forward::Logits;
pub use hparams::HParams;
pub use kv::{ActivationSink, Session};
pub(crate) use repack::mem_available;
pub use repack::{ExpertRepack, RepackReport};

use crate::backend::WeightMatrix;
use crate::gguf::GgufFile;
use quant::GgmlType;
use std::path::{Path, PathBuf};

/// A load failure, naming the file and the tensor or key.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Gguf {
        path: PathBuf,
        source: crate::gguf::GgufError,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken { id: u32, vocab: usize },
    #[error(
        "context full: {needed} positions needed, the session holds {capacity} (raise -c/--ctx)"
    )]
    ContextFull { needed: usize, capacity: usize },
    #[error("compute: {0}")]
    Compute(#[from] quant::QuantError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
}

/// Where a matrix lies in the file.
#[derive(Clone, Copy, Debug)]
struct TensorRef {
    ty: GgmlType,
    n_in: usize,
    n_out: usize,
    index: usize,
}

struct LayerRefs {
    attn_norm: Vec<f32>,
    attn_q: TensorRef,
    attn_k: TensorRef,
    attn_v: TensorRef,
    attn_output: TensorRef,
    attn_output_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    ffn_gate_inp: TensorRef,
    gate_exps: TensorRef,
    up_exps: TensorRef,
    down_exps: TensorRef,
    layer_output_norm: Vec<f32>,
}

/// A loaded model.
pub struct Model {
    path: PathBuf,
    file: GgufFile,
    hp: HParams,
    token_embd: TensorRef,
    output: TensorRef,
    output_norm: Vec<f32>,
    layers: Vec<LayerRefs>,
    inv_freq: Vec<f32>,
    /// Where experts come from when a budget, trace or stats are asked for (`None`: the mmap).
    experts: Option<crate::cache::ExpertCache>,
    /// CPU copies in the interleaved row layout, set once by [`Model::prepare_cpu`].
    repacked: std::sync::OnceLock<repack::Repacked>,
}

impl Model {
    /// Map and validate a grok GGUF.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let file = GgufFile::open(path).map_err(|source| ModelError::Gguf {
            path: path.to_path_buf(),
            source,
        })?;
        Model::from_gguf(file)
    }

    /// Validate an opened grok GGUF (its hyperparameters against the tensors present) and
    /// take it as a model. Errors name [`GgufFile::path`].
    pub fn from_gguf(file: GgufFile) -> Result<Model, ModelError> {
        let path = file.path().to_path_buf();
        let path = path.as_path();
        let invalid = |what: String| ModelError::Invalid {
            path: path.to_path_buf(),
            what,
        };
        let hp = HParams::from_gguf(&file).map_err(&invalid)?;
        let find = |name: &str, shape: &[usize]| -> Result<TensorRef, ModelError> {
            let index = file
                .tensors()
                .iter()
                .position(|t| t.name == name)
                .ok_or_else(|| invalid(format!("tensor '{name}' is missing")))?;
            let info = &file.tensors()[index];
            let found: Vec<usize> = info.shape.iter().map(|&d| d as usize).collect();
            if found != shape {
                return Err(invalid(format!(
                    "tensor '{name}': shape {found:?}, expected {shape:?} from the metadata"
                )));
            }
            Ok(TensorRef {
                ty: info.ty,
                n_in: shape[0],
                n_out: shape[1..].iter().product(),
                index,
            })
        };
        let vector = |name: &str, n: usize| -> Result<Vec<f32>, ModelError> {
            let r = find(name, &[n])?;
            let data = file.tensor_at(r.index).data;
            let mut out = vec![0f32; n];
            quant::dequantize_row(r.ty, data, &mut out)
                .map_err(|e| invalid(format!("tensor '{name}': {e}")))?;
            Ok(out)
        };
        let (emb, e, ffn) = (hp.emb, hp.n_experts, hp.ffn);
        let token_embd = find("token_embd.weight", &[emb, hp.vocab])?;
        let output = if file.tensors().iter().any(|t| t.name == "output.weight") {
            find("output.weight", &[emb, hp.vocab])?
        } else {
            token_embd
        };
        let output_norm = vector("output_norm.weight", emb)?;
        let mut layers = Vec::with_capacity(hp.n_layers);
        for l in 0..hp.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            layers.push(LayerRefs {
                attn_norm: vector(&n("attn_norm"), emb)?,
                attn_q: find(&n("attn_q"), &[emb, hp.q_dim()])?,
                attn_k: find(&n("attn_k"), &[emb, hp.kv_dim()])?,
                attn_v: find(&n("attn_v"), &[emb, hp.kv_dim()])?,
                attn_output: find(&n("attn_output"), &[hp.q_dim(), emb])?,
                attn_output_norm: vector(&n("attn_output_norm"), emb)?,
                ffn_norm: vector(&n("ffn_norm"), emb)?,
                ffn_gate_inp: find(&n("ffn_gate_inp"), &[emb, e])?,
                gate_exps: find(&n("ffn_gate_exps"), &[emb, ffn, e])?,
                up_exps: find(&n("ffn_up_exps"), &[emb, ffn, e])?,
                down_exps: find(&n("ffn_down_exps"), &[ffn, emb, e])?,
                layer_output_norm: vector(&n("layer_output_norm"), emb)?,
            });
        }
        let half = hp.head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| (hp.rope_base as f64).powf(-(2.0 * i as f64) / hp.head_dim as f64) as f32)
            .collect();
        Ok(Model {
            path: path.to_path_buf(),
            file,
            hp,
            token_embd,
            output,
            output_norm,
            layers,
            inv_freq,
            experts: None,
            repacked: std::sync::OnceLock::new(),
        })
    }

    /// Serve experts through a cache with these options (budget, policy, prefetch, trace).
    pub fn enable_expert_cache(
        &mut self,
        opts: &crate::cache::CacheOptions,
    ) -> Result<(), ModelError> {
        self.experts = None;
        let part = |r: &TensorRef| {
            let info = &self.file.tensors()[r.index];
            (info.offset, info.size as usize / self.hp.n_experts)
        };
        let layout = crate::cache::ExpertLayout {
            n_experts: self.hp.n_experts,
            n_used: self.hp.n_experts_used,
            layers: self
                .layers
                .iter()
                .map(|l| [part(&l.gate_exps), part(&l.up_exps), part(&l.down_exps)])
                .collect(),
        };
        let c = crate::cache::ExpertCache::new(&self.path, self.file.mmap().clone(), layout, opts)?;
        self.experts = Some(c);
        Ok(())
    }

    /// The expert cache, if one is enabled.
    pub fn expert_cache(&self) -> Option<&crate::cache::ExpertCache> {
        self.experts.as_ref()
    }

    /// Bytes of the dense part (every tensor but the three expert tensors) and of the experts.
    pub fn weight_split(&self) -> (u64, u64) {
        let experts: u64 = self
            .layers
            .iter()
            .flat_map(|l| [&l.gate_exps, &l.up_exps, &l.down_exps])
            .map(|r| self.file.tensors()[r.index].size)
            .sum();
        let all: u64 = self.file.tensors().iter().map(|t| t.size).sum();
        (all - experts, experts)
    }

    pub fn hparams(&self) -> &HParams {
        &self.hp
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    /// The CPU's view of a matrix: its repacked copy if [`Model::prepare_cpu`] made one, else
    /// the mapping.
    fn mat(&self, r: &TensorRef) -> WeightMatrix<'_> {
        let (data, layout) = self
            .repacked(r.index)
            .unwrap_or((self.file.tensor_at(r.index).data, quant::Layout::Rows));
        WeightMatrix {
            ty: r.ty,
            n_in: r.n_in,
            n_out: r.n_out,
            data,
            layout,
        }
    }

    /// Bytes of all weights one decode step reads: every dense matrix plus `n_experts_used`
    /// experts per layer, and the output projection.
    pub fn decode_weight_bytes(&self) -> u64 {
        let hp = &self.hp;
        let mut total = self.mat(&self.output).data.len() as u64;
        for l in &self.layers {
            for r in [
                &l.attn_q,
                &l.attn_k,
                &l.attn_v,
                &l.attn_output,
                &l.ffn_gate_inp,
            ] {
                total += self.mat(r).data.len() as u64;
            }
            for r in [&l.gate_exps, &l.up_exps, &l.down_exps] {
                total += (self.mat(r).data.len() / hp.n_experts * hp.n_experts_used) as u64;
            }
        }
        total
    }

    /// The type of the expert matrices (what a user calls the file's quant type).
    pub fn expert_type(&self) -> GgmlType {
        self.layers
            .first()
            .map_or(self.token_embd.ty, |l| l.gate_exps.ty)
    }
}

impl Model {
    /// The tokenizer carried in the GGUF (`tokenizer.ggml.*`, SentencePiece BPE).
    pub fn tokenizer(&self) -> Result<crate::tokenizer::Tokenizer, ModelError> {
        tokenizer_from_gguf(&self.file)
    }
}

/// The SentencePiece BPE tokenizer a GGUF carries in `tokenizer.ggml.*`.
pub fn tokenizer_from_gguf(f: &GgufFile) -> Result<crate::tokenizer::Tokenizer, ModelError> {
    {
        use crate::gguf::{GgufArray, GgufValue};
        use crate::tokenizer::{SpecialIds, Tokenizer};
        let invalid = |what: String| ModelError::Invalid {
            path: f.path().to_path_buf(),
            what,
        };
        let model = f.get("tokenizer.ggml.model").and_then(|v| v.as_str());
        if model != Some("llama") {
            return Err(invalid(format!(
                "tokenizer.ggml.model is {model:?}, expected \"llama\" (SentencePiece BPE)"
            )));
        }
        let tokens = match f.get("tokenizer.ggml.tokens") {
            Some(GgufValue::Array(GgufArray::String(t))) => t.clone(),
            _ => return Err(invalid("tokenizer.ggml.tokens is missing".into())),
        };
        let scores = match f.get("tokenizer.ggml.scores") {
            Some(GgufValue::Array(GgufArray::F32(s))) => s.clone(),
            _ => vec![0.0; tokens.len()],
        };
        let types = match f.get("tokenizer.ggml.token_type") {
            Some(GgufValue::Array(GgufArray::I32(t))) => t.clone(),
            _ => vec![1; tokens.len()],
        };
        let id = |k: &str| -> Result<Option<u32>, ModelError> {
            match f.get(k) {
                None => Ok(None),
                Some(v) => v
                    .to_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .map(Some)
                    .ok_or_else(|| invalid(format!("{k} is not a 32-bit unsigned integer"))),
            }
        };
        let specials = SpecialIds {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
        };
        let prefix = f
            .get("tokenizer.ggml.add_space_prefix")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        Tokenizer::from_vocab(tokens, scores, types, specials, prefix)
            .map_err(|e| invalid(format!("tokenizer: {e}")))
    }
}
