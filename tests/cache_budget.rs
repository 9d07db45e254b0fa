//! The expert cache under budgets: logits bit-identical to the unbudgeted run (prefill and
//! decode, every policy and read mode), the budget never exceeded, stats consistent, and
//! budgets below one layer's working set refused.

mod common;

use grok1_quant::cache::{CacheOptions, PolicyKind, ReadMode};
use grok1_quant::checkpoint::write_checkpoint;
use grok1_quant::config::GrokConfig;
use grok1_quant::model::{Logits, Model, Session};
use grok1_quant::tokenizer::SpmModel;
use quant::GgmlType;
use std::path::PathBuf;

/// A grok-shaped model whose experts (3 layers × 8 × ~100 KiB in Q8_0) dwarf the budgets used.
fn synthetic(ty: GgmlType) -> (tempfile::TempDir, PathBuf) {
    let mut c = GrokConfig::grok_1();
    c.vocab_size = 512;
    c.emb_size = 128;
    c.key_size = 32;
    c.num_q_heads = 4;
    c.num_kv_heads = 2;
    c.num_layers = 3;
    c.num_experts = 8;
    c.num_selected_experts = 2;
    c.ffn_size = 256;
    c.sequence_len = 128;
    c.attn_output_multiplier = 1.0 / (32f64).sqrt();
    c.validate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &c, 11).unwrap();
    std::fs::write(
        dir.path().join("tokenizer.model"),
        SpmModel::synthetic(c.vocab_size).to_bytes(),
    )
    .unwrap();
    let p = common::convert_to(&dir.path().join("ckpt-0"), &c, dir.path(), &[ty]);
    (dir, p[0].clone())
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Prefill each prompt (all logits), then greedy-decode `steps` tokens; every logit, in order.
fn run(model: &Model, prompts: &[Vec<u32>], steps: usize) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for p in prompts {
        let mut s = Session::new(model.hparams(), p.len() + steps);
        let l = model.forward(&mut s, p, Logits::All).unwrap();
        let vocab = model.hparams().vocab;
        let mut next = argmax(&l[l.len() - vocab..]);
        out.push(l);
        for _ in 0..steps {
            let l = model.forward(&mut s, &[next], Logits::Last).unwrap();
            next = argmax(&l);
            out.push(l);
        }
    }
    out
}

fn prompts() -> Vec<Vec<u32>> {
    let mut x = 12345u64;
    let mut rnd = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                4 + ((x >> 33) % 500) as u32
            })
            .collect()
    };
    vec![rnd(24), rnd(9), rnd(1)]
}

#[test]
fn budgeted_logits_are_identical_and_the_budget_holds() {
    let (_d, path) = synthetic(GgmlType::Q8_0);
    let prompts = prompts();
    let steps = 6;
    let plain = Model::load(&path).unwrap();
    let want = run(&plain, &prompts, steps);
    let (_, experts_total) = plain.weight_split();
    let hp = plain.hparams().clone();
    let unit = experts_total / (hp.n_layers * hp.n_experts) as u64;
    // Expert uses of the whole workload: one per distinct expert per (forward call, layer).
    let mut counted = Model::load(&path).unwrap();
    counted
        .enable_expert_cache(&CacheOptions::default())
        .unwrap();
    assert_eq!(run(&counted, &prompts, steps), want);
    let uses = counted.expert_cache().unwrap().stats().ram_hits;
    assert!(uses > 0);
    // Exactly the top-k working set, and 5 units (experts are ~4.8× this budget).
    for units in [hp.n_experts_used as u64, 5] {
        let budget = unit * units + unit / 2;
        assert!(experts_total >= 4 * budget, "experts must dwarf the budget");
        for (policy, mode, prefetch) in [
            (PolicyKind::Lru, ReadMode::Pread, true),
            (PolicyKind::Lfu, ReadMode::Pread, true),
            (PolicyKind::Lru, ReadMode::Mmap, true),
            (PolicyKind::Lfu, ReadMode::Pread, false),
        ] {
            let mut m = Model::load(&path).unwrap();
            let opts = CacheOptions {
                ram_budget: Some(budget),
                policy,
                read_mode: mode,
                prefetch,
                ..Default::default()
            };
            m.enable_expert_cache(&opts).unwrap();
            let got = run(&m, &prompts, steps);
            let what = format!("{units} units, {policy:?}, {mode:?}, prefetch {prefetch}");
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let same =
                    g.len() == w.len() && g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{what}: logits of call {i} differ");
            }
            let s = m.expert_cache().unwrap().stats();
            assert!(s.bounded, "{what}");
            assert_eq!(s.capacity_units as u64, units, "{what}");
            assert!(
                s.peak_held_bytes <= budget,
                "{what}: peak {}",
                s.peak_held_bytes
            );
            assert!(s.held_bytes <= budget, "{what}");
            assert!(s.peak_held_bytes > 0 && s.ram_misses > 0, "{what}");
            // Each needed expert is loaded or found once per batch and layer, whatever the waves.
            assert_eq!(s.ram_hits + s.ram_misses, uses, "{what}: expert uses");
            assert_eq!(
                s.bytes_read,
                (s.ram_misses + s.prefetch_loaded) * unit,
                "{what}: bytes read vs loads"
            );
            assert!(
                s.prefetch_used + s.prefetch_wasted <= s.prefetch_loaded,
                "{what}: prefetches used {} + wasted {} > loaded {}",
                s.prefetch_used,
                s.prefetch_wasted,
                s.prefetch_loaded
            );
            assert!(s.predicted_correct <= s.predicted_needed, "{what}");
            if !prefetch {
                assert_eq!(s.prefetch_issued + s.predicted_needed, 0, "{what}");
            } else {
                assert!(s.predicted_needed > 0, "{what}");
            }
            // With 24 units and room for at most 5, evictions must have happened.
            assert!(s.evictions > 0, "{what}");
        }
    }
}

#[test]
fn unbounded_cache_counts_every_expert_use_and_traces_routing() {
    let (d, path) = synthetic(GgmlType::Q4_0);
    let prompts = prompts();
    let plain = Model::load(&path).unwrap();
    let want = run(&plain, &prompts, 3);
    let mut m = Model::load(&path).unwrap();
    let trace = d.path().join("trace.jsonl");
    m.enable_expert_cache(&CacheOptions {
        trace: Some(trace.clone()),
        ..Default::default()
    })
    .unwrap();
    let got = run(&m, &prompts, 3);
    assert_eq!(got, want);
    let s = m.expert_cache().unwrap().stats();
    m.expert_cache().unwrap().finish().unwrap();
    assert!(!s.bounded);
    assert_eq!(s.ram_misses, 0);
    let text = std::fs::read_to_string(&trace).unwrap();
    let recs = grok1_quant::cache::sim::parse_trace(&text).unwrap();
    let hp = m.hparams();
    let tokens: usize = prompts.iter().map(|p| p.len() + 3).sum();
    assert_eq!(recs.len(), tokens * hp.n_layers);
    assert!(recs.iter().all(|r| r.experts.len() == hp.n_experts_used));
    // Every forward call is one batch; hits count distinct experts per (batch, layer).
    let (acc, _) =
        grok1_quant::cache::sim::accesses(&recs, grok1_quant::cache::sim::Granularity::Batch);
    assert_eq!(s.ram_hits, acc.len() as u64);
    assert_eq!(recs.last().unwrap().batch as usize + 1, prompts.len() * 4);
}

#[test]
fn budget_below_the_working_set_is_refused_with_the_minimum() {
    let (_d, path) = synthetic(GgmlType::Q4_0);
    let mut m = Model::load(&path).unwrap();
    let (_, experts) = m.weight_split();
    let hp = m.hparams().clone();
    let unit = experts / (hp.n_layers * hp.n_experts) as u64;
    let err = m
        .enable_expert_cache(&CacheOptions {
            ram_budget: Some(unit * 2 - 1),
            ..Default::default()
        })
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("minimum") && err.contains(&(2 * unit).to_string()),
        "{err}"
    );
    m.enable_expert_cache(&CacheOptions {
        ram_budget: Some(unit * 2),
        ..Default::default()
    })
    .unwrap();
}
