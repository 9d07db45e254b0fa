//! The Grok-1 forward pass on the GPU: every weight uploaded once, activations kept on the
//! device between kernels, one submit per layer, only the logits read back. Mirrors
//! `model::forward` (see there for the math): GQA attention with soft-capping and pad masking
//! over a per-session KV cache; MoE with router softmax, top-k (gates not renormalised) and
//! `(gelu_tanh(x·gate) ⊙ (x·up))·down` per chosen expert.
//!
//! Experts are either all resident (the default) or, under `--vram-budget`, held in a fixed
//! pool of device slots managed by the VRAM tier (`experts`): the dense part is uploaded
//! first and reported separately, and the experts a batch routes to are uploaded on demand
//! from the RAM tier (or the mmap).
//!
//! The backend (`crate::backend::gpu`) only holds the device, the kernels and the buffers; this
//! module is where they are put together into Grok.

mod bench;
mod experts;
mod forward;

pub use bench::{bench_forward, ForwardBench};

use crate::backend::gpu::{GpuContext, GpuError, GpuWeight};
use crate::backend::WeightMatrix;
use crate::cache::fmt_size;
use crate::cache::vram::VramStats;
use crate::cache::PolicyKind;
use crate::model::{HParams, Model};
use experts::VramTier;

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
    layer_output_norm: wgpu::Buffer,
}

/// Where the expert weights live.
enum Experts<'m> {
    /// Per layer: gate, up and down of every expert, uploaded once.
    Resident(Vec<[GpuWeight; 3]>),
    /// A pool of slots under `--vram-budget`, filled on demand.
    Tiered(Box<VramTier<'m>>),
}

/// A model on the GPU: the dense part resident, the experts resident or in the VRAM tier.
pub struct GpuModel<'m> {
    ctx: GpuContext,
    hp: HParams,
    token_embd: GpuWeight,
    /// `None`: the output projection is tied to the embedding.
    output: Option<GpuWeight>,
    output_norm: wgpu::Buffer,
    inv_freq: wgpu::Buffer,
    layers: Vec<GpuLayer>,
    experts: Experts<'m>,
    /// Bytes of the dense part (every tensor but the expert tensors) and of all experts.
    dense_bytes: u64,
    expert_bytes: u64,
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

impl<'m> GpuModel<'m> {
    /// Upload every weight of `model` through `ctx`.
    pub fn new(ctx: GpuContext, model: &'m Model) -> Result<GpuModel<'m>, GpuModelError> {
        GpuModel::open(ctx, model, None, PolicyKind::Lru)
    }

    /// Upload the dense part of `model`, then the experts: all of them without a budget, or
    /// into a VRAM tier of `vram_budget` bytes evicting by `policy`, filled on demand (through
    /// the model's expert cache when it has one, else straight from the mmap).
    pub fn open(
        ctx: GpuContext,
        model: &'m Model,
        vram_budget: Option<u64>,
        policy: PolicyKind,
    ) -> Result<GpuModel<'m>, GpuModelError> {
        let hp = model.hparams().clone();
        let file = model.gguf();
        let bad =
            |what: String| GpuModelError::Model(format!("{}: {what}", model.path().display()));
        let matrix = |name: &str| -> Result<WeightMatrix<'m>, GpuModelError> {
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
                layout: quant::Layout::Rows,
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
                layer_output_norm: vector(&n("layer_output_norm"))?,
            });
        }
        // The expert tensors: views into the file, uploaded whole or left to the VRAM tier.
        let mut expert_mats = Vec::with_capacity(hp.n_layers);
        for l in 0..hp.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let mats = [
                matrix(&n("ffn_gate_exps"))?,
                matrix(&n("ffn_up_exps"))?,
                matrix(&n("ffn_down_exps"))?,
            ];
            let want = [
                (hp.emb, hp.ffn * hp.n_experts),
                (hp.emb, hp.ffn * hp.n_experts),
                (hp.ffn, hp.emb * hp.n_experts),
            ];
            for (p, (m, (n_in, n_out))) in mats.iter().zip(want).enumerate() {
                if m.n_in != n_in || m.n_out != n_out {
                    return Err(bad(format!(
                        "blk.{l}.{}: {}×{}, expected {n_in}×{n_out}",
                        ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"][p],
                        m.n_in,
                        m.n_out
                    )));
                }
            }
            expert_mats.push(mats);
        }
        let expert_bytes: u64 = expert_mats
            .iter()
            .flatten()
            .map(|m| m.data.len() as u64)
            .sum();
        let all_bytes: u64 = file.tensors().iter().map(|t| t.size).sum();
        let dense_bytes = all_bytes.saturating_sub(expert_bytes);
        let experts = match vram_budget {
            None => {
                let mut v = Vec::with_capacity(hp.n_layers);
                for (l, [g, u, d]) in expert_mats.iter().enumerate() {
                    let up = |m: &WeightMatrix, unit: usize, what: &str| {
                        ctx.upload_weight(m, unit)
                            .map_err(|e| bad(format!("tensor 'blk.{l}.{what}.weight': {e}")))
                    };
                    v.push([
                        up(g, hp.ffn, "ffn_gate_exps")?,
                        up(u, hp.ffn, "ffn_up_exps")?,
                        up(d, hp.emb, "ffn_down_exps")?,
                    ]);
                }
                Experts::Resident(v)
            }
            Some(budget) => Experts::Tiered(Box::new(VramTier::new(
                &ctx,
                model,
                expert_mats,
                budget,
                policy,
                dense_bytes,
            )?)),
        };
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
            experts,
            dense_bytes,
            expert_bytes,
            dummy,
            act_limit: ctx.max_binding(),
            ctx,
        })
    }

    pub fn hparams(&self) -> &HParams {
        &self.hp
    }

    /// Bytes of the dense part (uploaded once) and of all experts in the file.
    pub fn weight_split(&self) -> (u64, u64) {
        (self.dense_bytes, self.expert_bytes)
    }

    /// The VRAM tier's counters (`None` when every expert is resident).
    pub fn vram_stats(&self) -> Option<VramStats> {
        match &self.experts {
            Experts::Resident(_) => None,
            Experts::Tiered(t) => Some(t.stats()),
        }
    }

    /// One line on where the weights went, for the start of a run.
    pub fn memory_report(&self) -> String {
        let head = format!(
            "GPU memory: dense part {} uploaded; experts {}",
            fmt_size(self.dense_bytes),
            fmt_size(self.expert_bytes)
        );
        match &self.experts {
            Experts::Resident(_) => format!(
                "{head} all resident (no --vram-budget; wgpu reports no free-VRAM figure, so the                  default is no budget)"
            ),
            Experts::Tiered(t) => {
                let s = t.stats();
                format!(
                    "{head} under --vram-budget {}: {} slots of {} ({}), uploaded on demand from {}",
                    fmt_size(s.budget),
                    s.slots,
                    fmt_size(s.slot_bytes),
                    s.policy,
                    t.source_name()
                )
            }
        }
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
        // The expert grouping buffer also holds one offset per expert (or slot) and one more.
        let fixed = ((self.group_width() + 1) * 4) as u64;
        (self.act_limit.saturating_sub(fixed) / per) as usize
    }

    /// Experts (or VRAM slots) the grouped expert matmul indexes.
    fn group_width(&self) -> usize {
        match &self.experts {
            Experts::Resident(_) => self.hp.n_experts,
            Experts::Tiered(t) => t.slots(),
        }
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
