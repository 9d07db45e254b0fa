//! [`GpuModel::forward`]: one batch of tokens through every layer on the GPU, activations on
//! the device between kernels, one submit per layer, only the logits read back.

use super::experts::ExpertBuffers;
use super::{u32_of, Experts, GpuModel, GpuModelError, GpuSession};
use crate::backend::gpu::{Encoder, MatmulKind, OpParams};

impl GpuModel<'_> {
    /// Run `tokens` after what `session` holds; returns the logits of every new token
    /// (`tokens × vocab`) or of the last one only.
    pub fn forward(
        &self,
        session: &mut GpuSession,
        tokens: &[u32],
        want_all_logits: bool,
    ) -> Result<Vec<f32>, GpuModelError> {
        let hp = &self.hp;
        let ctx = &self.ctx;
        let t_new = tokens.len();
        let p0 = session.len();
        if p0 + t_new > session.capacity {
            return Err(GpuModelError::Model(format!(
                "context full: {} positions needed, the session holds {}",
                p0 + t_new,
                session.capacity
            )));
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= hp.vocab) {
            return Err(GpuModelError::Model(format!(
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
            return Err(GpuModelError::Model(format!(
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
        // gelu(gate) ⊙ up of the tiered path (the resident path works in place in `g`).
        let mut a_buf: Option<wgpu::Buffer> = None;
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
        let norm = |enc: &mut Encoder, buf: &wgpu::Buffer, scale, rows: usize| {
            let p = OpParams {
                n: n_emb,
                f0: hp.eps,
                ..base
            };
            ctx.encode_op(enc, "rms_norm", &p, &[(1, buf), (2, scale)], rows)
        };
        let add = |enc: &mut Encoder, a: &wgpu::Buffer, b: &wgpu::Buffer| {
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
            match &self.experts {
                Experts::Resident(w) => {
                    let [gate, up, down] = &w[l];
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
                    ctx.encode_matmul(&mut enc, gate, &x, &g, per_token, &self.dummy)?;
                    ctx.encode_matmul(&mut enc, up, &x, &u, per_token, &self.dummy)?;
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
                    ctx.encode_matmul(&mut enc, down, &g, &d, per_slot, &self.dummy)?;
                }
                Experts::Tiered(tier) => {
                    // The host places the routed experts in VRAM slots: read the routing back.
                    ctx.submit(enc, &format!("layer {l} attention and router"))?;
                    let ids = ctx.read_u32(&idx, 0, slots)?;
                    let a = a_buf.get_or_insert_with(|| ctx.scratch("gelu", slots * ffn));
                    let bufs = ExpertBuffers {
                        x: &x,
                        g: &g,
                        u: &u,
                        a,
                        d: &d,
                        dummy: &self.dummy,
                    };
                    tier.run_layer(ctx, l, &ids, t_new, &base, &bufs)?;
                    enc = ctx.encoder();
                }
            }
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
        Ok(ctx.read_f32(&logits, 0, rows * hp.vocab)?)
    }
}
