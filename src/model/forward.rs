//! The Grok-1 forward pass on the CPU backend, for a batch of new tokens appended to a session.
//!
//! Per layer: `h += post_attn_norm(attn(attn_norm(h)))`, `h += post_moe_norm(moe(ffn_norm(h)))`;
//! attention scores × output_scale, soft-capped, causal and pad-masked, softmax in f32; MoE:
//! router softmax, top-k by probability, gates not renormalised, expert =
//! `(gelu_tanh(x·gate) ⊙ (x·up))·down`, tokens grouped by expert so each expert's weights are
//! read once per batch.

use super::{Model, ModelError, Session, TensorRef};
use crate::backend::cpu::{
    attend_head, gelu_mul, matmul, matmul_many, rms_norm, rope_rotate_half, softmax_in_place,
    with_warm_pool, AttnInputs, PreparedActivations,
};
use crate::backend::WeightMatrix;
use rayon::prelude::*;

/// Which positions' logits to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Every new token (`tokens × vocab`): perplexity, oracle dumps.
    All,
    /// Only the last new token (`vocab`): generation.
    Last,
    /// New tokens from index `k` on (`(tokens − k) × vocab`): scoring a chunk's second half.
    From(usize),
    /// None: warm the cache only.
    None,
}

/// Per-layer routing of a batch: for each token, the chosen experts and their gates.
pub type Routing = Vec<Vec<(usize, f32)>>;

impl Model {
    /// `x · Wᵀ` for a batch `x` of `tokens × w.n_in`.
    fn project(&self, w: &WeightMatrix, x: &[f32]) -> Result<Vec<f32>, ModelError> {
        let acts = PreparedActivations::new(w.ty, x, w.n_in)?;
        let mut out = vec![0f32; acts.tokens() * w.n_out];
        matmul(w, &acts, &mut out)?;
        Ok(out)
    }

    /// `x_i · W_iᵀ` for several matrices as one parallel region in decode (see
    /// [`matmul_many`]); jobs with the same input (by address) and weight type share one
    /// activation preparation.
    fn project_many(&self, jobs: &[(WeightMatrix, &[f32])]) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut acts: Vec<PreparedActivations> = Vec::new();
        let mut which = Vec::with_capacity(jobs.len());
        for (i, (w, x)) in jobs.iter().enumerate() {
            let same = jobs[..i]
                .iter()
                .position(|(v, y)| v.ty == w.ty && v.n_in == w.n_in && std::ptr::eq(*x, *y));
            match same {
                Some(j) => which.push(which[j]),
                None => {
                    acts.push(PreparedActivations::new(w.ty, x, w.n_in)?);
                    which.push(acts.len() - 1);
                }
            }
        }
        let pairs: Vec<(&WeightMatrix, &PreparedActivations)> = jobs
            .iter()
            .zip(&which)
            .map(|((w, _), &a)| (w, &acts[a]))
            .collect();
        let mut outs: Vec<Vec<f32>> = pairs
            .iter()
            .map(|(w, a)| vec![0f32; a.tokens() * w.n_out])
            .collect();
        let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
        matmul_many(&pairs, &mut refs)?;
        Ok(outs)
    }

    /// The embedding row of `id`, times the embedding scale.
    fn embed(&self, id: u32, out: &mut [f32]) -> Result<(), ModelError> {
        let hp = &self.hp;
        if id as usize >= hp.vocab {
            return Err(ModelError::BadToken {
                id,
                vocab: hp.vocab,
            });
        }
        self.mat(&self.token_embd)
            .dequantize_row(id as usize, out)?;
        for v in out.iter_mut() {
            *v *= hp.embedding_scale;
        }
        Ok(())
    }

    /// Run `tokens` after what `session` holds; returns logits as asked (row-major).
    ///
    /// The pass runs on a rayon worker (this thread, if it is one): each matmul's fork/join
    /// then wakes one sibling instead of handing the work to the pool and waking the caller
    /// back for every matrix (decode on 2 threads: +9 %); and the other workers keep polling
    /// for work until it ends instead of sleeping between regions
    /// ([`crate::backend::cpu::with_warm_pool`]).
    pub fn forward(
        &self,
        session: &mut Session,
        tokens: &[u32],
        want: Logits,
    ) -> Result<Vec<f32>, ModelError> {
        with_warm_pool(|| self.forward_traced(session, tokens, want, &mut |_, _, _| {}))
    }

    /// [`Model::forward`], calling `trace(layer, hidden_after_layer, routing)` after each layer.
    pub fn forward_traced(
        &self,
        session: &mut Session,
        tokens: &[u32],
        want: Logits,
        trace: &mut dyn FnMut(usize, &[f32], &Routing),
    ) -> Result<Vec<f32>, ModelError> {
        let hp = &self.hp;
        let (t_new, emb) = (tokens.len(), hp.emb);
        let p0 = session.len();
        if p0 + t_new > session.capacity {
            return Err(ModelError::ContextFull {
                needed: p0 + t_new,
                capacity: session.capacity,
            });
        }
        if t_new == 0 {
            return Ok(Vec::new());
        }
        let mut h = vec![0f32; t_new * emb];
        for (row, &id) in h.chunks_exact_mut(emb).zip(tokens) {
            self.embed(id, row)?;
        }
        session.tokens.extend_from_slice(tokens);
        for (l, layer) in self.layers.iter().enumerate() {
            // Attention block.
            let mut x = h.clone();
            rms_norm(&mut x, &layer.attn_norm, hp.eps);
            let attn = self.attention(l, session, p0, &x)?;
            if session.sink.is_some() {
                let name = format!("blk.{l}.attn_output.weight");
                session.observe(&name, 0, 1, &attn, hp.q_dim());
            }
            let mut o = self.project(&self.mat(&layer.attn_output), &attn)?;
            rms_norm(&mut o, &layer.attn_output_norm, hp.eps);
            for (a, b) in h.iter_mut().zip(&o) {
                *a += b;
            }
            // MoE block.
            let mut x = h.clone();
            rms_norm(&mut x, &layer.ffn_norm, hp.eps);
            let (mut m, routing) = self.moe(l, &x, &h, p0, session)?;
            rms_norm(&mut m, &layer.layer_output_norm, hp.eps);
            for (a, b) in h.iter_mut().zip(&m) {
                *a += b;
            }
            trace(l, &h, &routing);
        }
        if session.sink.is_some() && self.output.index != self.token_embd.index {
            // A separate output projection's input at every position (also when no logits are
            // asked for, as in the imatrix pass). Not for a tied embedding: weighting its
            // columns by the output side's importance hurt the embedding side more than it
            // helped (grok-mini Q4_K + imatrix: mean KLD 7.195e-3 → 7.406e-3; docs/imatrix.md).
            let mut x = h.clone();
            rms_norm(&mut x, &self.output_norm, hp.eps);
            let name = self.file.tensors()[self.output.index].name.clone();
            session.observe(&name, 0, 1, &x, emb);
        }
        let rows: &mut [f32] = match want {
            Logits::None => return Ok(Vec::new()),
            Logits::All => &mut h,
            Logits::Last => &mut h[(t_new - 1) * emb..],
            Logits::From(k) => &mut h[k.min(t_new) * emb..],
        };
        rms_norm(rows, &self.output_norm, hp.eps);
        let mut logits = self.project(&self.mat(&self.output), rows)?;
        for v in logits.iter_mut() {
            *v *= hp.logit_scale;
        }
        Ok(logits)
    }

    /// Grouped-query attention of the batch `x` (already normed) at positions `p0..`, appending
    /// its keys and values to the session's cache. Returns `tokens × q_dim`.
    fn attention(
        &self,
        l: usize,
        session: &mut Session,
        p0: usize,
        x: &[f32],
    ) -> Result<Vec<f32>, ModelError> {
        let hp = &self.hp;
        let layer = &self.layers[l];
        let (hd, q_dim, kv_dim) = (hp.head_dim, hp.q_dim(), hp.kv_dim());
        let t_new = x.len() / hp.emb;
        if session.sink.is_some() {
            for n in ["attn_q", "attn_k", "attn_v"] {
                session.observe(&format!("blk.{l}.{n}.weight"), 0, 1, x, hp.emb);
            }
        }
        let [mut q, mut k, v]: [Vec<f32>; 3] = self
            .project_many(&[
                (self.mat(&layer.attn_q), x),
                (self.mat(&layer.attn_k), x),
                (self.mat(&layer.attn_v), x),
            ])?
            .try_into()
            .expect("three outputs");
        for t in 0..t_new {
            rope_rotate_half(
                &mut q[t * q_dim..(t + 1) * q_dim],
                hd,
                p0 + t,
                &self.inv_freq,
            );
            rope_rotate_half(
                &mut k[t * kv_dim..(t + 1) * kv_dim],
                hd,
                p0 + t,
                &self.inv_freq,
            );
        }
        session.k[l][p0 * kv_dim..(p0 + t_new) * kv_dim].copy_from_slice(&k);
        session.v[l][p0 * kv_dim..(p0 + t_new) * kv_dim].copy_from_slice(&v);
        let (kc, vc, toks) = (&session.k[l], &session.v[l], &session.tokens);
        let group = hp.n_heads / hp.n_kv_heads;
        let (scale, cap, pad) = (hp.attn_output_scale, hp.softcap, hp.pad_id);
        let mut out = vec![0f32; t_new * q_dim];
        let masked: Vec<bool> = toks.iter().map(|&id| id == pad).collect();
        out.par_chunks_mut(hd)
            .enumerate()
            .for_each_init(Vec::new, |scores, (i, o)| {
                let (t, head) = (i / hp.n_heads, i % hp.n_heads);
                let g = head / group;
                let qh = &q[t * q_dim + head * hd..t * q_dim + (head + 1) * hd];
                let head_kv = AttnInputs {
                    k: &kc[g * hd..],
                    v: &vc[g * hd..],
                    stride: kv_dim,
                    masked: &masked[..=p0 + t],
                    scale,
                    cap,
                };
                attend_head(qh, &head_kv, scores, o);
            });
        Ok(out)
    }

    /// Top-k routing of the batch `x` (already normed) by layer `l`'s router.
    fn route(&self, l: usize, x: &[f32]) -> Result<Routing, ModelError> {
        let hp = &self.hp;
        let n_exp = hp.n_experts;
        let mut probs = self.project(&self.mat(&self.layers[l].ffn_gate_inp), x)?;
        let mut routing: Routing = Vec::with_capacity(x.len() / hp.emb);
        for p in probs.chunks_exact_mut(n_exp) {
            softmax_in_place(p);
            // Top-k by probability; ties go to the lower index (as jax.lax.top_k).
            let mut idx: Vec<usize> = (0..n_exp).collect();
            idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            routing.push(
                idx[..hp.n_experts_used]
                    .iter()
                    .map(|&e| (e, p[e]))
                    .collect(),
            );
        }
        Ok(routing)
    }

    /// With an expert cache: guess layer `l + 1`'s experts by its router on the residual `h`
    /// (before layer `l`'s MoE) and hand the guess to the cache, which prefetches.
    fn predict_next(&self, l: usize, h: &[f32]) -> Result<(), ModelError> {
        let Some(cache) = &self.experts else {
            return Ok(());
        };
        if l + 1 >= self.layers.len() || !cache.wants_prediction() {
            return Ok(());
        }
        let mut x = h.to_vec();
        rms_norm(&mut x, &self.layers[l + 1].ffn_norm, self.hp.eps);
        let mut guess: Vec<usize> = self
            .route(l + 1, &x)?
            .iter()
            .flat_map(|r| r.iter().map(|&(e, _)| e))
            .collect();
        guess.sort_unstable();
        guess.dedup();
        cache.predict(l + 1, &guess);
        Ok(())
    }

    /// The MoE block of the batch `x` (already normed; `h` is the residual it came from, at
    /// positions `p0..`): returns `tokens × emb` and the routing. Each needed expert is read
    /// once per batch; with a bounded cache, in waves of at most its capacity, ascending, so the
    /// sum runs in the same order as without one.
    fn moe(
        &self,
        l: usize,
        x: &[f32],
        h: &[f32],
        p0: usize,
        session: &mut Session,
    ) -> Result<(Vec<f32>, Routing), ModelError> {
        let hp = &self.hp;
        let layer = &self.layers[l];
        let (emb, ffn, n_exp) = (hp.emb, hp.ffn, hp.n_experts);
        let t_new = x.len() / emb;
        let observing = session.sink.is_some();
        if observing {
            session.observe(&format!("blk.{l}.ffn_gate_inp.weight"), 0, 1, x, emb);
        }
        let routing = self.route(l, x)?;
        if let Some(c) = &self.experts {
            let ids: Vec<Vec<usize>> = routing
                .iter()
                .map(|r| r.iter().map(|&(e, _)| e).collect())
                .collect();
            c.observe(l, p0, &ids);
        }
        let mut out = vec![0f32; t_new * emb];
        let members_of = |e: usize| -> Vec<(usize, f32)> {
            routing
                .iter()
                .enumerate()
                .filter_map(|(t, r)| r.iter().find(|(x, _)| *x == e).map(|&(_, g)| (t, g)))
                .collect()
        };
        let needed: Vec<usize> = (0..n_exp)
            .filter(|&e| routing.iter().any(|r| r.iter().any(|&(x, _)| x == e)))
            .collect();
        let wave = self
            .experts
            .as_ref()
            .map_or(n_exp, |c| c.capacity_units().max(1));
        let n_waves = needed.len().div_ceil(wave);
        for (w, chunk) in needed.chunks(wave).enumerate() {
            // Pin the wave (reading what is cold); with the last wave pinned, predict the next
            // layer so its prefetch can only evict what this layer no longer uses.
            let handles = match &self.experts {
                Some(c) => chunk
                    .iter()
                    .map(|&e| c.acquire(l, e))
                    .collect::<Result<Vec<_>, _>>()?,
                None => Vec::new(),
            };
            if w + 1 == n_waves {
                self.predict_next(l, h)?;
            }
            // The wave's experts: their tokens, then gate and up of all of them as one
            // parallel region, the activations, then all downs as another.
            let members: Vec<Vec<(usize, f32)>> = chunk.iter().map(|&e| members_of(e)).collect();
            let xs: Vec<Vec<f32>> = members
                .iter()
                .map(|m| {
                    m.iter()
                        .flat_map(|&(t, _)| x[t * emb..(t + 1) * emb].iter().copied())
                        .collect()
                })
                .collect();
            if observing {
                for (&e, xe) in chunk.iter().zip(&xs) {
                    for n in ["ffn_gate_exps", "ffn_up_exps"] {
                        session.observe(&format!("blk.{l}.{n}.weight"), e, n_exp, xe, emb);
                    }
                }
            }
            let expert = |i: usize, p: usize, r: &TensorRef, n_out: usize| match handles.get(i) {
                Some(hd) => WeightMatrix {
                    ty: r.ty,
                    n_in: r.n_in,
                    n_out,
                    data: hd.part(p),
                    layout: hd.layout(p),
                },
                None => self.mat(r).rows(chunk[i] * n_out, (chunk[i] + 1) * n_out),
            };
            let gate_up: Vec<(WeightMatrix, &[f32])> = (0..chunk.len())
                .flat_map(|i| {
                    [
                        (expert(i, 0, &layer.gate_exps, ffn), &xs[i][..]),
                        (expert(i, 1, &layer.up_exps, ffn), &xs[i][..]),
                    ]
                })
                .collect();
            let gu = self.project_many(&gate_up)?;
            let acts: Vec<Vec<f32>> = gu
                .chunks_exact(2)
                .map(|p| {
                    let mut a = vec![0f32; p[0].len()];
                    gelu_mul(&p[0], &p[1], &mut a);
                    a
                })
                .collect();
            if observing {
                let name = format!("blk.{l}.ffn_down_exps.weight");
                for (&e, a) in chunk.iter().zip(&acts) {
                    session.observe(&name, e, n_exp, a, ffn);
                }
            }
            let downs: Vec<(WeightMatrix, &[f32])> = (0..chunk.len())
                .map(|i| (expert(i, 2, &layer.down_exps, emb), &acts[i][..]))
                .collect();
            let ds = self.project_many(&downs)?;
            for (m, d) in members.iter().zip(&ds) {
                for (k, &(t, gate)) in m.iter().enumerate() {
                    for (o, v) in out[t * emb..(t + 1) * emb]
                        .iter_mut()
                        .zip(&d[k * emb..(k + 1) * emb])
                    {
                        *o += gate * v;
                    }
                }
            }
        }
        Ok((out, routing))
    }
}
