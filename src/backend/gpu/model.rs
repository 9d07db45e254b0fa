//! The Grok-1 forward pass on the GPU: every weight uploaded once, activations kept on the
//! device between kernels, one submit per layer, only the logits read back. Mirrors
//! `model::forward` (see there for the math): GQA attention with soft-capping and pad masking
//! over a per-session KV cache; MoE with router softmax, top-k (gates not renormalised) and
//! `(gelu_tanh(x·gate) ⊙ (x·up))·down` per chosen expert.

use super::context::{GpuContext, GpuError, GpuWeight, MatmulKind, OpParams};
use crate::backend::WeightMatrix;
use crate::model::{HParams, Model};

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

fn u32_of(v: usize, what: &str) -> Result<u32, GpuError> {
    u32::try_from(v).map_err(|_| GpuError::Shape(format!("{what} = {v} exceeds 32 bits")))
}

impl GpuModel {
    /// Upload every weight of `model` through `ctx`.
    pub fn new(ctx: GpuContext, model: &Model) -> Result<GpuModel, GpuError> {
        let hp = model.hparams().clone();
        let file = model.gguf();
        let bad = |what: String| GpuError::Model(format!("{}: {what}", model.path().display()));
        let matrix = |name: &str| -> Result<WeightMatrix<'_>, GpuError> {
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
        let upload = |name: &str, unit: usize| -> Result<GpuWeight, GpuError> {
            ctx.upload_weight(&matrix(name)?, unit)
                .map_err(|e| bad(format!("tensor '{name}': {e}")))
        };
        let vector = |name: &str| -> Result<wgpu::Buffer, GpuError> {
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
    pub fn session(&self, capacity: usize) -> Result<GpuSession, GpuError> {
        let per_layer = capacity.max(1) * self.hp.kv_dim();
        let row = (self.hp.kv_dim() * 4) as u64;
        if (per_layer * 4) as u64 > self.act_limit {
            return Err(GpuError::Shape(format!(
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

    /// Run `tokens` after what `session` holds; returns the logits of every new token
    /// (`tokens × vocab`) or of the last one only.
    pub fn forward(
        &self,
        session: &mut GpuSession,
        tokens: &[u32],
        want_all_logits: bool,
    ) -> Result<Vec<f32>, GpuError> {
        let hp = &self.hp;
        let ctx = &self.ctx;
        let t_new = tokens.len();
        let p0 = session.len();
        if p0 + t_new > session.capacity {
            return Err(GpuError::Model(format!(
                "context full: {} positions needed, the session holds {}",
                p0 + t_new,
                session.capacity
            )));
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= hp.vocab) {
            return Err(GpuError::Model(format!(
                "token id {id} is outside the vocabulary of {}",
                hp.vocab
            )));
        }
        if t_new == 0 {
            return Ok(Vec::new());
        }
        let fit = self.max_batch(want_all_logits);
        if fit == 0 {
            let (per, what) = self.per_token_bytes(want_all_logits);
            return Err(GpuError::Shape(format!(
                "one token's {what} buffer is {per} bytes, over the storage binding limit \
                 (max_storage_buffer_binding_size) of {} bytes",
                self.act_limit
            )));
        }
        if t_new > fit {
            // Several batches over the same session (the KV cache makes them one prompt).
            let mut out = Vec::new();
            for (i, part) in tokens.chunks(fit).enumerate() {
                let last = (i + 1) * fit >= t_new;
                let l = self.forward(session, part, want_all_logits)?;
                if want_all_logits || last {
                    out.extend_from_slice(&l);
                }
            }
            return Ok(out);
        }
        let (emb, q_dim, kv_dim) = (hp.emb, hp.q_dim(), hp.kv_dim());
        let (k_used, ffn) = (hp.n_experts_used, hp.ffn);
        let slots = t_new * k_used;
        ctx.queue.write_buffer(
            &session.tok_buf,
            (p0 * 4) as u64,
            bytemuck::cast_slice(tokens),
        );
        session.tokens.extend_from_slice(tokens);

        let h = ctx.scratch("h", t_new * emb);
        let x = ctx.scratch("x", t_new * emb);
        let q = ctx.scratch("q", t_new * q_dim);
        let kb = ctx.scratch("k", t_new * kv_dim);
        let vb = ctx.scratch("v", t_new * kv_dim);
        let att = ctx.scratch("attn", t_new * q_dim);
        let o = ctx.scratch("o", t_new * emb);
        let router = ctx.scratch("router", t_new * hp.n_experts);
        let gates = ctx.scratch("gates", slots);
        let idx = ctx.scratch("experts", slots);
        let grp = ctx.scratch("expert groups", hp.n_experts + 1 + slots);
        let g = ctx.scratch("gate", slots * ffn);
        let u = ctx.scratch("up", slots * ffn);
        let d = ctx.scratch("down", slots * emb);

        let base = OpParams {
            rows: u32_of(t_new, "tokens")?,
            p0: u32_of(p0, "position")?,
            n_heads: u32_of(hp.n_heads, "heads")?,
            n_kv_heads: u32_of(hp.n_kv_heads, "kv heads")?,
            head_dim: u32_of(hp.head_dim, "head_dim")?,
            k: u32_of(k_used, "experts used")?,
            pad: hp.pad_id,
            capacity: u32_of(session.capacity, "capacity")?,
            n_exp: u32_of(hp.n_experts, "experts")?,
            ..Default::default()
        };
        let n_emb = u32_of(emb, "emb")?;
        let norm = |enc: &mut wgpu::CommandEncoder, buf: &wgpu::Buffer, scale, rows: usize| {
            let p = OpParams {
                n: n_emb,
                f0: hp.eps,
                ..base
            };
            ctx.encode_op(enc, "rms_norm", &p, &[(1, buf), (2, scale)], rows)
        };
        let add = |enc: &mut wgpu::CommandEncoder, a: &wgpu::Buffer, b: &wgpu::Buffer| {
            let p = OpParams { n: n_emb, ..base };
            ctx.encode_op(
                enc,
                "add",
                &p,
                &[(1, a), (2, b)],
                (t_new * emb).div_ceil(64),
            )
        };
        let dense = MatmulKind::Dense { tokens: t_new };
        let bytes = |n: usize| (n * 4) as u64;

        let mut enc = ctx.encoder();
        ctx.encode_embed(
            &mut enc,
            &self.token_embd,
            (&session.tok_buf, p0),
            t_new,
            hp.embedding_scale,
            &h,
        )?;
        ctx.submit(enc, "embedding")?;

        for (l, ly) in self.layers.iter().enumerate() {
            let mut enc = ctx.encoder();
            // Attention block.
            enc.copy_buffer_to_buffer(&h, 0, &x, 0, bytes(t_new * emb));
            norm(&mut enc, &x, &ly.attn_norm, t_new)?;
            ctx.encode_matmul(&mut enc, &ly.attn_q, &x, &q, dense, &self.dummy)?;
            ctx.encode_matmul(&mut enc, &ly.attn_k, &x, &kb, dense, &self.dummy)?;
            ctx.encode_matmul(&mut enc, &ly.attn_v, &x, &vb, dense, &self.dummy)?;
            let half = hp.head_dim / 2;
            ctx.encode_op(
                &mut enc,
                "rope",
                &base,
                &[(1, &q), (2, &self.inv_freq)],
                (t_new * hp.n_heads * half).div_ceil(64),
            )?;
            let pk = OpParams {
                n_heads: base.n_kv_heads,
                ..base
            };
            ctx.encode_op(
                &mut enc,
                "rope",
                &pk,
                &[(1, &kb), (2, &self.inv_freq)],
                (t_new * hp.n_kv_heads * half).div_ceil(64),
            )?;
            let at = bytes(p0 * kv_dim);
            enc.copy_buffer_to_buffer(&kb, 0, &session.k[l], at, bytes(t_new * kv_dim));
            enc.copy_buffer_to_buffer(&vb, 0, &session.v[l], at, bytes(t_new * kv_dim));
            let pa = OpParams {
                f0: hp.attn_output_scale,
                f1: hp.softcap,
                ..base
            };
            ctx.encode_op(
                &mut enc,
                "attention",
                &pa,
                &[
                    (1, &att),
                    (2, &q),
                    (3, &session.k[l]),
                    (4, &session.tok_buf),
                    (7, &session.v[l]),
                ],
                t_new * hp.n_heads,
            )?;
            ctx.encode_matmul(&mut enc, &ly.attn_output, &att, &o, dense, &self.dummy)?;
            norm(&mut enc, &o, &ly.attn_output_norm, t_new)?;
            add(&mut enc, &h, &o)?;

            // MoE block.
            enc.copy_buffer_to_buffer(&h, 0, &x, 0, bytes(t_new * emb));
            norm(&mut enc, &x, &ly.ffn_norm, t_new)?;
            ctx.encode_matmul(&mut enc, &ly.ffn_gate_inp, &x, &router, dense, &self.dummy)?;
            ctx.encode_op(
                &mut enc,
                "route",
                &base,
                &[(1, &router), (5, &gates), (6, &idx)],
                t_new.div_ceil(64),
            )?;
            ctx.encode_op(&mut enc, "group_experts", &base, &[(6, &idx), (8, &grp)], 1)?;
            let per_token = MatmulKind::Experts {
                groups: &grp,
                n_exp: hp.n_experts,
                tokens: t_new,
                slots: k_used,
                x_rows: t_new,
                xs_t: 1,
                xs_k: 0,
            };
            ctx.encode_matmul(&mut enc, &ly.gate_exps, &x, &g, per_token, &self.dummy)?;
            ctx.encode_matmul(&mut enc, &ly.up_exps, &x, &u, per_token, &self.dummy)?;
            let pg = OpParams {
                n: u32_of(slots * ffn, "expert activations")?,
                rows: 1,
                ..base
            };
            ctx.encode_op(
                &mut enc,
                "gelu_mul",
                &pg,
                &[(1, &g), (2, &u)],
                (slots * ffn).div_ceil(64),
            )?;
            let per_slot = MatmulKind::Experts {
                groups: &grp,
                n_exp: hp.n_experts,
                tokens: t_new,
                slots: k_used,
                x_rows: slots,
                xs_t: k_used,
                xs_k: 1,
            };
            ctx.encode_matmul(&mut enc, &ly.down_exps, &g, &d, per_slot, &self.dummy)?;
            let pc = OpParams { n: n_emb, ..base };
            ctx.encode_op(
                &mut enc,
                "combine",
                &pc,
                &[(1, &o), (2, &d), (3, &gates)],
                (t_new * emb).div_ceil(64),
            )?;
            norm(&mut enc, &o, &ly.layer_output_norm, t_new)?;
            add(&mut enc, &h, &o)?;
            ctx.submit(enc, &format!("layer {l}"))?;
        }

        let (r0, rows) = if want_all_logits {
            (0, t_new)
        } else {
            (t_new - 1, 1)
        };
        let out_w = self.output.as_ref().unwrap_or(&self.token_embd);
        let logits = ctx.scratch("logits", rows * hp.vocab);
        let mut enc = ctx.encoder();
        enc.copy_buffer_to_buffer(&h, bytes(r0 * emb), &x, 0, bytes(rows * emb));
        norm(&mut enc, &x, &self.output_norm, rows)?;
        ctx.encode_matmul(
            &mut enc,
            out_w,
            &x,
            &logits,
            MatmulKind::Dense { tokens: rows },
            &self.dummy,
        )?;
        let ps = OpParams {
            n: u32_of(rows * hp.vocab, "logits")?,
            rows: 1,
            f0: hp.logit_scale,
            ..base
        };
        ctx.encode_op(
            &mut enc,
            "scale",
            &ps,
            &[(1, &logits)],
            (rows * hp.vocab).div_ceil(64),
        )?;
        ctx.submit(enc, "output")?;
        ctx.read_f32(&logits, 0, rows * hp.vocab)
    }
}
