//! The Grok-1 forward pass on the GPU: every weight uploaded once, activations kept on the
//! device between kernels, one submit per layer, only the logits read back. Mirrors
//! `model::forward` (see there for the math): GQA attention with soft-capping and pad masking
//! over a per-session KV cache; MoE with router softmax, top-k (gates not renormalised) and
//! `(gelu_tanh(x·gate) ⊙ (x·up))·down` per chosen expert.
//!
//! The backend (`crate::backend::gpu`) only holds the device, the kernels and the buffers; this
//! module is where they are put together into Grok.

mod bench;
mod forward;

pub use bench::{bench_forward, ForwardBench};

use crate::backend::gpu::{GpuContext, GpuError, GpuWeight};
use crate::backend::WeightMatrix;
use crate::model::{HParams, Model};

/// A failure of the GPU model: the backend's, or the model's own (shapes, tokens, context).
#[derive(Debug, thiserror::Error)]
pub enum GpuModelError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("{0}")]
    Model(String),
}

struct GpuLayer {
    attn_norm: wgpu::Buffer,
    attn_q: GpuWeight,
    attn_k: GpuWeight,
    attn_v: GpuWeight,
    attn_output: GpuWeight,
    attn_output_norm: wgpu::Buffer,
    ffn_norm: wgpu::Buffer,
    ffn_gate_inp: GpuWeight,
    gate_exps: GpuWeight,
    up_exps: GpuWeight,
    down_exps: GpuWeight,
    layer_output_norm: wgpu::Buffer,
}

/// A model resident on the GPU.
pub struct GpuModel {
    ctx: GpuContext,
    hp: HParams,
    token_embd: GpuWeight,
    /// `None`: the output projection is tied to the embedding.
    output: Option<GpuWeight>,
    output_norm: wgpu::Buffer,
    inv_freq: wgpu::Buffer,
    layers: Vec<GpuLayer>,
    dummy: wgpu::Buffer,
    /// Bytes one activation / KV-cache buffer may hold (the adapter's storage binding limit
    /// unless lowered by [`GpuModel::set_activation_limit`]).
    act_limit: u64,
}

/// A generation session on the GPU: its KV cache and the token ids it holds.
pub struct GpuSession {
    capacity: usize,
    tokens: Vec<u32>,
    tok_buf: wgpu::Buffer,
    k: Vec<wgpu::Buffer>,
    v: Vec<wgpu::Buffer>,
}

impl GpuSession {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forget everything (keeps the buffers).
    pub fn clear(&mut self) {
        self.tokens.clear();
    }
}

pub(super) fn u32_of(v: usize, what: &str) -> Result<u32, GpuError> {
    u32::try_from(v).map_err(|_| GpuError::Shape(format!("{what} = {v} exceeds 32 bits")))
}

impl GpuModel {
    /// Upload every weight of `model` through `ctx`.
    pub fn new(ctx: GpuContext, model: &Model) -> Result<GpuModel, GpuModelError> {
        let hp = model.hparams().clone();
        let file = model.gguf();
        let bad =
            |what: String| GpuModelError::Model(format!("{}: {what}", model.path().display()));
        let matrix = |name: &str| -> Result<WeightMatrix<'_>, GpuModelError> {
            let t = file
                .tensor(name)
                .ok_or_else(|| bad(format!("tensor '{name}' is missing")))?;
            let shape = &t.info.shape;
            if shape.is_empty() {
                return Err(bad(format!("tensor '{name}' has no dimensions")));
            }
            Ok(WeightMatrix {
                ty: t.info.ty,
                n_in: shape[0] as usize,
                n_out: shape[1..].iter().product::<u64>() as usize,
                data: t.data,
            })
        };
        let upload = |name: &str, unit: usize| -> Result<GpuWeight, GpuModelError> {
            ctx.upload_weight(&matrix(name)?, unit)
                .map_err(|e| bad(format!("tensor '{name}': {e}")))
        };
        let vector = |name: &str| -> Result<wgpu::Buffer, GpuModelError> {
            let m = matrix(name)?;
            let n = m.n_in * m.n_out;
            if n != hp.emb {
                return Err(bad(format!(
                    "tensor '{name}' has {n} values, {} expected",
                    hp.emb
                )));
            }
            let mut out = vec![0f32; n];
            quant::dequantize_row(m.ty, m.data, &mut out)
                .map_err(|e| bad(format!("tensor '{name}': {e}")))?;
            Ok(ctx.upload_f32(name, &out))
        };
        let token_embd = upload("token_embd.weight", 1)?;
        let output = match file.tensor("output.weight") {
            Some(_) => Some(upload("output.weight", 1)?),
            None => None,
        };
        let mut layers = Vec::with_capacity(hp.n_layers);
        for l in 0..hp.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            layers.push(GpuLayer {
                attn_norm: vector(&n("attn_norm"))?,
                attn_q: upload(&n("attn_q"), 1)?,
                attn_k: upload(&n("attn_k"), 1)?,
                attn_v: upload(&n("attn_v"), 1)?,
                attn_output: upload(&n("attn_output"), 1)?,
                attn_output_norm: vector(&n("attn_output_norm"))?,
                ffn_norm: vector(&n("ffn_norm"))?,
                ffn_gate_inp: upload(&n("ffn_gate_inp"), 1)?,
                gate_exps: upload(&n("ffn_gate_exps"), hp.ffn)?,
                up_exps: upload(&n("ffn_up_exps"), hp.ffn)?,
                down_exps: upload(&n("ffn_down_exps"), hp.emb)?,
                layer_output_norm: vector(&n("layer_output_norm"))?,
            });
        }
        // Shapes the kernels rely on (the CPU loader validated the same against metadata).
        let check = |w: &GpuWeight, n_in: usize, n_out: usize, what: &str| {
            if w.n_in != n_in || w.n_out != n_out {
                return Err(bad(format!(
                    "{what}: {}×{}, expected {n_in}×{n_out}",
                    w.n_in, w.n_out
                )));
            }
            Ok(())
        };
        check(&token_embd, hp.emb, hp.vocab, "token_embd")?;
        if let Some(o) = &output {
            check(o, hp.emb, hp.vocab, "output")?;
        }
        for (l, ly) in layers.iter().enumerate() {
            let e = hp.n_experts;
            check(&ly.attn_q, hp.emb, hp.q_dim(), &format!("blk.{l}.attn_q"))?;
            check(&ly.attn_k, hp.emb, hp.kv_dim(), &format!("blk.{l}.attn_k"))?;
            check(&ly.attn_v, hp.emb, hp.kv_dim(), &format!("blk.{l}.attn_v"))?;
            check(
                &ly.attn_output,
                hp.q_dim(),
                hp.emb,
                &format!("blk.{l}.attn_output"),
            )?;
            check(
                &ly.ffn_gate_inp,
                hp.emb,
                e,
                &format!("blk.{l}.ffn_gate_inp"),
            )?;
            check(
                &ly.gate_exps,
                hp.emb,
                hp.ffn * e,
                &format!("blk.{l}.ffn_gate_exps"),
            )?;
            check(
                &ly.up_exps,
                hp.emb,
                hp.ffn * e,
                &format!("blk.{l}.ffn_up_exps"),
            )?;
            check(
                &ly.down_exps,
                hp.ffn,
                hp.emb * e,
                &format!("blk.{l}.ffn_down_exps"),
            )?;
        }
        if hp.head_dim > 256 {
            return Err(bad(format!(
                "head_dim {} is over the attention kernel's 256",
                hp.head_dim
            )));
        }
        let half = hp.head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| (hp.rope_base as f64).powf(-(2.0 * i as f64) / hp.head_dim as f64) as f32)
            .collect();
        let inv_freq = ctx.upload_f32("inv_freq", &inv_freq);
        let output_norm = vector("output_norm.weight")?;
        let dummy = ctx.scratch("dummy", 1);
        ctx.check("uploading the model")?;
        Ok(GpuModel {
            hp,
            token_embd,
            output,
            output_norm,
            inv_freq,
            layers,
            dummy,
            act_limit: ctx.max_binding(),
            ctx,
        })
    }

    pub fn hparams(&self) -> &HParams {
        &self.hp
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Lower the bytes one activation or KV-cache buffer may hold (tests force small limits
    /// to exercise batch splitting); never raises it above the adapter's binding limit.
    pub fn set_activation_limit(&mut self, bytes: u64) {
        self.act_limit = bytes.clamp(4, self.ctx.max_binding());
    }

    /// Bytes one activation or KV-cache buffer may hold.
    pub fn activation_limit(&self) -> u64 {
        self.act_limit
    }

    /// Largest activation buffer per token of a forward call, and what it is.
    fn per_token_bytes(&self, all_logits: bool) -> (u64, &'static str) {
        let hp = &self.hp;
        let k = hp.n_experts_used;
        let mut v = [
            (hp.emb, "hidden state"),
            (hp.q_dim(), "query"),
            (hp.kv_dim(), "key/value"),
            (hp.n_experts + k, "router"),
            (k * hp.ffn, "expert hidden"),
            (k * hp.emb, "expert output"),
            (if all_logits { hp.vocab } else { 0 }, "logits"),
        ];
        v.sort_by_key(|&(n, _)| n);
        let (n, what) = v[v.len() - 1];
        ((n * 4) as u64, what)
    }

    /// Most tokens one forward call can take under the activation limit (more are run in
    /// several batches by [`GpuModel::forward`]).
    pub fn max_batch(&self, all_logits: bool) -> usize {
        let (per, _) = self.per_token_bytes(all_logits);
        // The expert grouping buffer also holds n_experts + 1 offsets.
        let fixed = ((self.hp.n_experts + 1) * 4) as u64;
        (self.act_limit.saturating_sub(fixed) / per) as usize
    }

    /// An empty session holding at most `capacity` positions.
    pub fn session(&self, capacity: usize) -> Result<GpuSession, GpuModelError> {
        let per_layer = capacity.max(1) * self.hp.kv_dim();
        let row = (self.hp.kv_dim() * 4) as u64;
        if (per_layer * 4) as u64 > self.act_limit {
            return Err(GpuModelError::Model(format!(
                "a KV cache of {capacity} positions × {} values is {} bytes per layer, over the \
                 storage binding limit (max_storage_buffer_binding_size) of {} bytes: at most {} \
                 positions fit",
                self.hp.kv_dim(),
                per_layer * 4,
                self.act_limit,
                self.act_limit / row
            )));
        }
        let ctx = &self.ctx;
        Ok(GpuSession {
            capacity,
            tokens: Vec::with_capacity(capacity),
            tok_buf: ctx.scratch("tokens", capacity),
            k: (0..self.hp.n_layers)
                .map(|_| ctx.scratch("k cache", per_layer))
                .collect(),
            v: (0..self.hp.n_layers)
                .map(|_| ctx.scratch("v cache", per_layer))
                .collect(),
        })
    }
}
