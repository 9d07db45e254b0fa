//! The expert cache under budgets: logits bit-identical to the unbudgeted run (prefill and
//! decode, every policy and read mode), the budget never exceeded, stats consistent, and
//! budgets below one layer's working set refused.

mod common;

use grok1_quant::cache::{CacheOptions, PolicyKind, ReadMode};
use grok1_quant::model::Model;
use quant::GgmlType;
use std::path::PathBuf;

/// A grok-shaped model whose experts (3 layers × 8 × ~100 KiB in Q8_0) dwarf the budgets used.
fn synthetic(ty: GgmlType) -> (tempfile::TempDir, PathBuf) {
    common::synthetic_model(&common::small_grok(512), ty, 11)
}

#[test]
fn budgeted_logits_are_identical_and_the_budget_holds() {
    let (_d, path) = synthetic(GgmlType::Q8_0);
    let prompts = common::test_prompts();
    let steps = 6;
    let plain = Model::load(&path).unwrap();
    let want = common::prefill_and_decode(&plain, &prompts, steps);
    let (_, experts_total) = plain.weight_split();
    let hp = plain.hparams().clone();
    let unit = experts_total / (hp.n_layers * hp.n_experts) as u64;
    // Expert uses of the whole workload: one per distinct expert per (forward call, layer).
    let mut counted = Model::load(&path).unwrap();
    counted
        .enable_expert_cache(&CacheOptions::default())
        .unwrap();
    assert_eq!(common::prefill_and_decode(&counted, &prompts, steps), want);
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
            let got = common::prefill_and_decode(&m, &prompts, steps);
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
    let prompts = common::test_prompts();
    let plain = Model::load(&path).unwrap();
    let want = common::prefill_and_decode(&plain, &prompts, 3);
    let mut m = Model::load(&path).unwrap();
    let trace = d.path().join("trace.jsonl");
    m.enable_expert_cache(&CacheOptions {
        trace: Some(trace.clone()),
        ..Default::default()
    })
    .unwrap();
    let got = common::prefill_and_decode(&m, &prompts, 3);
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
