//! The VRAM expert tier (`--vram-budget`): a synthetic grok-shaped model whose experts are
//! ≥ 4× the budget gives logits identical to the unbudgeted GPU run (lavapipe in CI), with the
//! misses uploaded from the mmap or from a bounded RAM tier.

mod gpu_common;

use gpu_common::gpu;
use grok1_quant::backend::gpu::GpuContext;
use grok1_quant::cache::{CacheOptions, PolicyKind, ReadMode};
use grok1_quant::checkpoint::write_checkpoint;
use grok1_quant::config::GrokConfig;
use grok1_quant::model::gpu::GpuModel;
use grok1_quant::model::{ExpertRepack, Model};
use grok1_quant::tokenizer::SpmModel;
use quant::GgmlType;
use std::path::{Path, PathBuf};

fn convert_to(ckpt: &Path, cfg: &GrokConfig, dir: &Path, ty: GgmlType) -> PathBuf {
    std::fs::write(
        dir.join("tokenizer.model"),
        SpmModel::synthetic(cfg.vocab_size).to_bytes(),
    )
    .unwrap();
    gpu_common::convert_to(ckpt, cfg, dir, ty, None, "vram-test")
}

/// A 9-token prefill (all logits) and two greedy decode steps.
fn run(gm: &GpuModel, prompt: &[u32]) -> Vec<Vec<f32>> {
    let vocab = gm.hparams().vocab;
    let mut s = gm.session(prompt.len() + 2).unwrap();
    let mut out = vec![gm.forward(&mut s, prompt, true).unwrap()];
    for _ in 0..2 {
        let last = &out[out.len() - 1];
        let tail = &last[last.len() - vocab..];
        let next = (0..vocab).fold(0, |b, i| if tail[i] > tail[b] { i } else { b }) as u32;
        out.push(gm.forward(&mut s, &[next], false).unwrap());
    }
    out
}

/// Bytes of one (layer, expert) unit: gate + up + down slices (same in every layer here).
fn unit_bytes(model: &Model) -> u64 {
    let hp = model.hparams();
    ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"]
        .iter()
        .map(|p| {
            model
                .gguf()
                .tensor(&format!("blk.0.{p}.weight"))
                .unwrap()
                .data
                .len() as u64
        })
        .sum::<u64>()
        / hp.n_experts as u64
}

#[test]
fn vram_budget_gives_identical_logits() {
    if gpu().is_none() {
        return;
    }
    let cfg = gpu_common::tiny_config(8);
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &cfg, 5).unwrap();
    // Pad token inside; 9 tokens × top-2 over 8 experts route to more experts than 2 slots.
    let prompt: Vec<u32> = vec![1, 17, 300, 0, 42, 511, 77, 3, 250];
    for ty in [GgmlType::Q8_0, GgmlType::Q4_K] {
        let path = convert_to(&dir.path().join("ckpt-0"), &cfg, dir.path(), ty);
        let model = Model::load(&path).unwrap();
        let unit = unit_bytes(&model);
        let (_, experts) = model.weight_split();
        let want = run(
            &GpuModel::new(GpuContext::new().unwrap(), &model).unwrap(),
            &prompt,
        );

        // Two slots: experts are 8× the budget.
        let budget = 2 * unit + unit / 2;
        assert!(experts >= 4 * budget, "{experts} vs {budget}");
        let gm = GpuModel::open(
            GpuContext::new().unwrap(),
            &model,
            Some(budget),
            PolicyKind::Lru,
        )
        .unwrap();
        let got = run(&gm, &prompt);
        let st = gm.vram_stats().expect("tiered");
        eprintln!("{} {}: {}", ty.name(), gm.memory_report(), st.report());
        assert_eq!(got, want, "{ty:?}: budgeted logits differ");
        assert_eq!(st.slots, 2);
        assert_eq!(st.slot_bytes, unit);
        assert!(st.misses > 0 && st.evictions > 0, "{st:?}");
        assert_eq!(st.bytes_uploaded, st.misses * unit, "{st:?}");
        // 2 layers × 3 steps, and the prefill needed several waves per layer.
        assert!(st.waves > 6, "{st:?}");
        let (dense, exp) = gm.weight_split();
        assert_eq!(exp, experts);
        assert!(dense > 0);

        // LFU in the VRAM tier, misses served by a bounded RAM tier (3 units).
        let mut model2 = Model::load(&path).unwrap();
        model2
            .enable_expert_cache(&CacheOptions {
                ram_budget: Some(3 * unit),
                vram_budget: Some(3 * unit),
                prefetch: false,
                ..Default::default()
            })
            .unwrap();
        let gm = GpuModel::open(
            GpuContext::new().unwrap(),
            &model2,
            Some(3 * unit),
            PolicyKind::Lfu,
        )
        .unwrap();
        let got = run(&gm, &prompt);
        let ram = model2.expert_cache().unwrap().stats();
        let st = gm.vram_stats().unwrap();
        eprintln!(
            "{} lfu + RAM tier: vram {} hits / {} misses, ram {} hits / {} misses",
            ty.name(),
            st.hits,
            st.misses,
            ram.ram_hits,
            ram.ram_misses
        );
        assert_eq!(got, want, "{ty:?}: logits through the RAM tier differ");
        assert_eq!(
            ram.ram_hits + ram.ram_misses,
            st.misses,
            "every VRAM miss reads the RAM tier"
        );
        assert!(ram.ram_misses > 0 && ram.peak_held_bytes <= 3 * unit);

        // A `pread` RAM tier that a CPU engine set packing (`prepare_cpu`): the GPU path
        // uploads each packed part back in the file's rows.
        let mut model3 = Model::load(&path).unwrap();
        model3
            .enable_expert_cache(&CacheOptions {
                ram_budget: Some(3 * unit),
                vram_budget: Some(2 * unit),
                read_mode: ReadMode::Pread,
                prefetch: false,
                ..Default::default()
            })
            .unwrap();
        let r = model3.prepare_cpu(true).unwrap().expect("a report");
        assert_eq!(r.experts, ExpertRepack::CachedPacked, "{ty:?}: {r}");
        let gm = GpuModel::open(
            GpuContext::new().unwrap(),
            &model3,
            Some(2 * unit),
            PolicyKind::Lru,
        )
        .unwrap();
        let got = run(&gm, &prompt);
        assert_eq!(
            got, want,
            "{ty:?}: logits through a packing RAM tier differ"
        );
        assert!(model3.expert_cache().unwrap().stats().ram_misses > 0);
    }
}

#[test]
fn vram_budget_below_one_expert_is_a_clear_error() {
    if gpu().is_none() {
        return;
    }
    let cfg = gpu_common::tiny_config(8);
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &cfg, 6).unwrap();
    let path = convert_to(&dir.path().join("ckpt-0"), &cfg, dir.path(), GgmlType::Q8_0);
    let model = Model::load(&path).unwrap();
    let unit = unit_bytes(&model);
    let msg = GpuModel::open(
        GpuContext::new().unwrap(),
        &model,
        Some(unit - 1),
        PolicyKind::Lru,
    )
    .err()
    .expect("must fail")
    .to_string();
    assert!(
        msg.contains("--vram-budget")
            && msg.contains("below one expert")
            && msg.contains(&unit.to_string()),
        "{msg}"
    );
}
