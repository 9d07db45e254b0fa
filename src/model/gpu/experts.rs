//! The VRAM expert tier: `slots` device slots, each one buffer per part (gate, up, down) big
//! enough for any layer's expert, managed by [`SlotTier`] (the RAM tier's policy code). Per
//! layer the routing is read back, the distinct experts are placed in slots (uploading the
//! missing ones from the RAM tier or the mmap), and the grouped expert matmuls run over the
//! slot pool, seen as one expert tensor whose unit i is slot i. A batch routing to more
//! distinct experts than there are slots runs in waves of at most `slots` experts.
//!
//! Each output row is computed by the same kernel from the same bytes as with every expert
//! resident, so the logits are identical to an unbudgeted run.

use super::{u32_of, GpuModelError};
use crate::backend::gpu::{GpuContext, GpuWeight, MatmulKind, OpParams};
use crate::backend::WeightMatrix;
use crate::cache::vram::{SlotLookup, SlotTier, VramStats};
use crate::cache::{fmt_size, PolicyKind};
use crate::model::Model;
use std::sync::{Mutex, MutexGuard};

const PARTS: [&str; 3] = ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"];

pub(super) struct VramTier<'m> {
    model: &'m Model,
    /// Per layer: the merged gate, up and down tensors (views into the mapping).
    mats: Vec<[WeightMatrix<'m>; 3]>,
    /// Rows of one expert in each part.
    rows: [usize; 3],
    /// Per slot: one buffer per part.
    slots: Vec<[wgpu::Buffer; 3]>,
    state: Mutex<(SlotTier, VramStats)>,
}

/// The per-forward buffers the expert block reads and writes.
pub(super) struct ExpertBuffers<'a> {
    /// Normed hidden states, `tokens × emb`.
    pub x: &'a wgpu::Buffer,
    /// Gate and up outputs, and `a` = gelu(gate) ⊙ up, `(tokens·k) × ffn` each (one row per
    /// route, not per VRAM slot).
    pub g: &'a wgpu::Buffer,
    pub u: &'a wgpu::Buffer,
    pub a: &'a wgpu::Buffer,
    /// Down outputs, `(tokens·k) × emb`.
    pub d: &'a wgpu::Buffer,
    pub dummy: &'a wgpu::Buffer,
}

impl<'m> VramTier<'m> {
    pub(super) fn new(
        ctx: &GpuContext,
        model: &'m Model,
        mats: Vec<[WeightMatrix<'m>; 3]>,
        budget: u64,
        policy: PolicyKind,
        dense_bytes: u64,
    ) -> Result<VramTier<'m>, GpuModelError> {
        let hp = model.hparams();
        let bad =
            |what: String| GpuModelError::Model(format!("{}: {what}", model.path().display()));
        let rows = [hp.ffn, hp.ffn, hp.emb];
        // A slot's part buffer holds that part of any layer's expert (types may differ by
        // layer, e.g. Q6_K down projections in some layers of a q4_k_m file).
        let mut part_bytes = [0u64; 3];
        for (l, m) in mats.iter().enumerate() {
            for p in 0..3 {
                let rb = crate::backend::gpu::weight_row_bytes(m[p].ty, m[p].n_in)
                    .map_err(|e| bad(format!("blk.{l}.{}: {e}", PARTS[p])))?;
                let n = (rb as u64)
                    .checked_mul(rows[p] as u64)
                    .ok_or_else(|| bad(format!("blk.{l}.{}: expert size overflows", PARTS[p])))?;
                part_bytes[p] = part_bytes[p].max(n.div_ceil(4) * 4);
            }
        }
        let slot_bytes: u64 = part_bytes.iter().sum();
        if slot_bytes == 0 || budget < slot_bytes {
            return Err(bad(format!(
                "--vram-budget {budget} bytes ({}) is below one expert: gate + up + down = \
                 {slot_bytes} bytes ({})",
                fmt_size(budget),
                fmt_size(slot_bytes)
            )));
        }
        // More slots than units would never be used.
        let units = hp.n_layers * hp.n_experts;
        let n_slots = ((budget / slot_bytes) as usize).min(units.max(1));
        let mut slots = Vec::with_capacity(n_slots);
        for s in 0..n_slots {
            let mut bufs = Vec::with_capacity(3);
            for p in 0..3 {
                let b = ctx
                    .device_buffer(PARTS[p], part_bytes[p])
                    .map_err(|e| bad(format!("VRAM slot {s}, {}: {e}", PARTS[p])))?;
                bufs.push(b);
            }
            let [g, u, d]: [wgpu::Buffer; 3] = bufs
                .try_into()
                .map_err(|_| bad("internal: slot buffers".into()))?;
            slots.push([g, u, d]);
        }
        ctx.check("allocating the VRAM expert slots")?;
        let stats = VramStats {
            policy: policy.name().to_string(),
            budget,
            slot_bytes,
            slots: n_slots,
            dense_bytes,
            ..Default::default()
        };
        Ok(VramTier {
            model,
            mats,
            rows,
            slots,
            state: Mutex::new((SlotTier::new(policy, n_slots), stats)),
        })
    }

    pub(super) fn slots(&self) -> usize {
        self.slots.len()
    }

    fn lock(&self) -> MutexGuard<'_, (SlotTier, VramStats)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn stats(&self) -> VramStats {
        let st = self.lock();
        let (hits, misses, evictions) = st.0.counts();
        VramStats {
            hits,
            misses,
            evictions,
            ..st.1.clone()
        }
    }

    /// Where misses are read from.
    pub(super) fn source_name(&self) -> &'static str {
        match self.model.expert_cache() {
            Some(c) if c.is_bounded() => "the RAM tier",
            Some(_) => "the mmap (through the unbounded expert cache)",
            None => "the mmap",
        }
    }

    /// Write expert `e` of layer `l` into `slot`; returns the bytes written.
    fn upload(
        &self,
        ctx: &GpuContext,
        l: usize,
        e: usize,
        slot: usize,
    ) -> Result<u64, GpuModelError> {
        let mut total = 0u64;
        let handle = match self.model.expert_cache() {
            Some(c) => Some(c.acquire(l, e).map_err(|err| {
                GpuModelError::Model(format!("{}: {err}", self.model.path().display()))
            })?),
            None => None,
        };
        // A part the cache packed for the CPU's kernels (a CPU engine ran on this model
        // first) goes back to the file's rows, which the shaders read.
        let mut plain = Vec::new();
        for p in 0..3 {
            let bytes = match &handle {
                Some(h) if h.layout(p) == quant::Layout::Interleaved8 => {
                    let m = &self.mats[l][p];
                    plain.resize(h.part(p).len(), 0);
                    quant::layout::deinterleave_rows(m.ty, m.n_in, h.part(p), &mut plain).map_err(
                        |q| {
                            GpuModelError::Model(format!(
                                "{}: expert (layer {l}, expert {e}) part {p}: {q}",
                                self.model.path().display()
                            ))
                        },
                    )?;
                    &plain[..]
                }
                Some(h) => h.part(p),
                None => {
                    let r = self.rows[p];
                    self.mats[l][p].rows(e * r, (e + 1) * r).data
                }
            };
            ctx.write_bytes(&self.slots[slot][p], bytes)?;
            total += bytes.len() as u64;
        }
        Ok(total)
    }

    /// The expert block of layer `l` for `tokens` tokens routed to `ids` (`tokens × k`
    /// expert ids, slot `t*k + j`): fills `bufs.d` (`(tokens·k) × emb`), in waves of at most
    /// `slots` distinct experts, one submit each.
    pub(super) fn run_layer(
        &self,
        ctx: &GpuContext,
        l: usize,
        ids: &[u32],
        tokens: usize,
        base: &OpParams,
        bufs: &ExpertBuffers,
    ) -> Result<(), GpuModelError> {
        let hp = self.model.hparams();
        let k = hp.n_experts_used;
        let n_routes = tokens * k;
        if ids.len() != n_routes {
            return Err(GpuModelError::Model(format!(
                "layer {l}: {} routed experts read back, {n_routes} expected",
                ids.len()
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&e| e as usize >= hp.n_experts) {
            return Err(GpuModelError::Model(format!(
                "layer {l}: router chose expert {bad} of {}",
                hp.n_experts
            )));
        }
        let mut distinct: Vec<usize> = ids.iter().map(|&e| e as usize).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let n_slots = self.slots.len();
        let grp = ctx.scratch("expert groups", n_slots + 1 + n_routes);
        for wave in distinct.chunks(n_slots) {
            // Place the wave's experts; the ones placed so far are pinned.
            let mut slot_of = vec![usize::MAX; hp.n_experts];
            let mut pinned = Vec::with_capacity(wave.len());
            for &e in wave {
                let key = u32_of(l * hp.n_experts + e, "expert key")?;
                let placed = self.lock().0.acquire(key, &pinned);
                let slot = match placed {
                    Some(SlotLookup::Hit(s)) => s,
                    Some(SlotLookup::Miss(s)) => {
                        match self.upload(ctx, l, e, s) {
                            Ok(n) => self.lock().1.bytes_uploaded += n,
                            Err(err) => {
                                self.lock().0.invalidate(s);
                                return Err(err);
                            }
                        }
                        s
                    }
                    None => {
                        return Err(GpuModelError::Model(format!(
                            "internal: no free VRAM slot for (layer {l}, expert {e}) with {} of \
                             {n_slots} pinned",
                            pinned.len()
                        )))
                    }
                };
                pinned.push(slot);
                slot_of[e] = slot;
            }
            self.lock().1.waves += 1;
            // Group the routes of this wave's experts by slot: offsets, then route ids in
            // ascending order (the layout ops.wgsl's group_experts writes).
            let mut count = vec![0u32; n_slots + 1];
            for &e in ids {
                let s = slot_of[e as usize];
                if s != usize::MAX {
                    count[s + 1] += 1;
                }
            }
            for s in 0..n_slots {
                count[s + 1] += count[s];
            }
            let mut next: Vec<u32> = count[..n_slots].to_vec();
            let mut groups = count;
            groups.resize(n_slots + 1 + n_routes, 0);
            for (r, &e) in ids.iter().enumerate() {
                let s = slot_of[e as usize];
                if s != usize::MAX {
                    groups[n_slots + 1 + next[s] as usize] = u32_of(r, "route")?;
                    next[s] += 1;
                }
            }
            ctx.write_bytes(&grp, bytemuck::cast_slice(&groups))?;

            let pool = |p: usize| -> Result<GpuWeight, GpuModelError> {
                let units: Vec<(usize, wgpu::Buffer)> = pinned
                    .iter()
                    .map(|&s| (s, self.slots[s][p].clone()))
                    .collect();
                let m = &self.mats[l][p];
                Ok(GpuWeight::from_unit_buffers(
                    m.ty,
                    m.n_in,
                    self.rows[p],
                    n_slots,
                    &units,
                )?)
            };
            let per_token = MatmulKind::Experts {
                groups: &grp,
                n_exp: n_slots,
                tokens,
                slots: k,
                x_rows: tokens,
                xs_t: 1,
                xs_k: 0,
            };
            let per_route = MatmulKind::Experts {
                groups: &grp,
                n_exp: n_slots,
                tokens,
                slots: k,
                x_rows: n_routes,
                xs_t: k,
                xs_k: 1,
            };
            let mut enc = ctx.encoder();
            ctx.encode_matmul(&mut enc, &pool(0)?, bufs.x, bufs.g, per_token, bufs.dummy)?;
            ctx.encode_matmul(&mut enc, &pool(1)?, bufs.x, bufs.u, per_token, bufs.dummy)?;
            // gelu(g) ⊙ u into a copy, so the rows of earlier waves stay as they were (the
            // function is pure: recomputing them gives the same values).
            let n = n_routes * hp.ffn;
            enc.copy_buffer_to_buffer(bufs.g, 0, bufs.a, 0, (n * 4) as u64);
            let pg = OpParams {
                n: u32_of(n, "expert activations")?,
                rows: 1,
                ..*base
            };
            ctx.encode_op(
                &mut enc,
                "gelu_mul",
                &pg,
                &[(1, bufs.a), (2, bufs.u)],
                n.div_ceil(64),
            )?;
            ctx.encode_matmul(&mut enc, &pool(2)?, bufs.a, bufs.d, per_route, bufs.dummy)?;
            ctx.submit(enc, &format!("layer {l} experts"))?;
        }
        Ok(())
    }
}
