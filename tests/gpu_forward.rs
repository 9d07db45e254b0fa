//! The whole GPU forward pass against the CPU `Model::forward` on a tiny synthetic model, and
//! against the reference logits of grok-tiny when that fixture is present.

mod gpu_common;

use gpu_common::{gpu, max_abs};
use grok1_quant::backend::gpu::GpuContext;
use grok1_quant::checkpoint::write_checkpoint;
use grok1_quant::config::GrokConfig;
use grok1_quant::model::gpu::GpuModel;
use grok1_quant::model::{Logits, Model, Session};
use grok1_quant::tokenizer::SpmModel;
use quant::GgmlType;
use std::path::{Path, PathBuf};

/// Convert to `ty` with the default embedding type (Q6_K for the 4-bit files).
fn convert_one(ckpt: &Path, cfg: &GrokConfig, dir: &Path, ty: GgmlType) -> PathBuf {
    gpu_common::convert_to(ckpt, cfg, dir, ty, None, "gpu-test")
}

/// Convert to `ty`, the embedding (tied output) in `embd` or the default.
fn convert_with_embd(
    ckpt: &Path,
    cfg: &GrokConfig,
    dir: &Path,
    ty: GgmlType,
    embd: Option<GgmlType>,
) -> PathBuf {
    gpu_common::convert_to(ckpt, cfg, dir, ty, embd, "gpu-test")
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0
}

fn compare(model: &Model, ctx: GpuContext, prompt: &[u32], label: &str, min_busiest: usize) -> f32 {
    let c = compare_scaled(model, ctx, prompt, label, min_busiest);
    c.prefill.iter().fold(c.decode, |m, &e| m.max(e))
}

/// Errors of one GPU-vs-CPU comparison.
struct Compared {
    /// Max |Δlogit| at each prompt position (prefill).
    prefill: Vec<f32>,
    /// Max |Δlogit| of the decode step after it.
    decode: f32,
    /// The largest |logit| of the decode step (the scale of the errors).
    scale: f32,
}

/// [`compare`], with the errors per prefill position and the logits' scale.
fn compare_scaled(
    model: &Model,
    ctx: GpuContext,
    prompt: &[u32],
    label: &str,
    min_busiest: usize,
) -> Compared {
    let gm = GpuModel::new(ctx, model).expect("upload");
    let cap = prompt.len() + 2;
    let mut cs = Session::new(model.hparams(), cap);
    // Busiest expert over all layers: the grouped expert matmul takes up to 8 tokens per
    // workgroup, so > 8 tokens on one expert exercises several tiles of one expert.
    let mut busiest = 0usize;
    let want = model
        .forward_traced(&mut cs, prompt, Logits::All, &mut |_, _, routing| {
            let mut count = vec![0usize; model.hparams().n_experts];
            for (e, _) in routing.iter().flatten() {
                count[*e] += 1;
            }
            busiest = busiest.max(count.into_iter().max().unwrap_or(0));
        })
        .unwrap();
    assert!(
        busiest >= min_busiest,
        "{label}: busiest expert has only {busiest} tokens"
    );
    let mut gs = gm.session(cap).unwrap();
    let got = gm.forward(&mut gs, prompt, true).unwrap();
    let vocab = model.hparams().vocab;
    let per_position: Vec<f32> = got
        .chunks_exact(vocab)
        .zip(want.chunks_exact(vocab))
        .map(|(g, w)| max_abs(g, w))
        .collect();
    let e_prefill = per_position.iter().fold(0f32, |m, &e| m.max(e));
    // Top-1 identical at every prompt position.
    for (p, (g, w)) in got
        .chunks_exact(vocab)
        .zip(want.chunks_exact(vocab))
        .enumerate()
    {
        assert_eq!(
            argmax(g),
            argmax(w),
            "{label}: argmax differs at position {p}"
        );
    }
    // Then one decode step on the filled caches (last-token logits).
    let next = [prompt[1]];
    let want = model.forward(&mut cs, &next, Logits::Last).unwrap();
    let got = gm.forward(&mut gs, &next, false).unwrap();
    let e_decode = max_abs(&got, &want);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    eprintln!(
        "{label}: max |Δlogit| prefill {e_prefill:.2e}, decode {e_decode:.2e} (max |logit| {scale:.2})"
    );
    assert_eq!(gs.len(), prompt.len() + 1);
    // Capacity is enforced.
    assert!(gm.forward(&mut gs, &[5, 6], false).is_err());
    assert!(gm
        .forward(&mut gm.session(4).unwrap(), &[9999], false)
        .is_err());
    Compared {
        prefill: per_position,
        decode: e_decode,
        scale,
    }
}

#[test]
fn tiny_model_gpu_matches_cpu_f32_q8_0_q4_0_q4_k() {
    if gpu().is_none() {
        return;
    }
    let cfg = gpu_common::tiny_config(4);
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &cfg, 42).unwrap();
    std::fs::write(
        dir.path().join("tokenizer.model"),
        SpmModel::synthetic(cfg.vocab_size).to_bytes(),
    )
    .unwrap();
    // A pad token (0) inside the prompt exercises the pad mask; 9 tokens × 2 slots over 4
    // experts share experts. The 20-token prompt puts more than 8 tokens on one expert (several
    // tiles of one expert); it runs on the f32-activation types only: with Q8-quantized
    // activations (Q4_0) a 1-ulp difference before an activation rounding boundary flips it
    // (0.13 max |Δlogit| there, the same before the grouped kernel; see docs/gpu.md).
    let prompt: Vec<u32> = vec![1, 17, 300, 0, 42, 511, 77, 3, 250];
    let long: Vec<u32> = vec![
        1, 17, 300, 0, 42, 511, 77, 3, 250, 9, 128, 64, 400, 5, 33, 480, 222, 13, 99, 310,
    ];
    for ty in [
        GgmlType::F32,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
    ] {
        let path = convert_one(&dir.path().join("ckpt-0"), &cfg, dir.path(), ty);
        let model = Model::load(&path).unwrap();
        let e = compare(&model, GpuContext::new().unwrap(), &prompt, ty.name(), 2);
        assert!(e <= 1e-3, "{ty:?}: max |Δlogit| {e}");
        if matches!(ty, GgmlType::F32 | GgmlType::Q8_0) {
            let label = format!("{} 20 tokens", ty.name());
            let e = compare(&model, GpuContext::new().unwrap(), &long, &label, 9);
            assert!(e <= 1e-3, "{ty:?} 20 tokens: max |Δlogit| {e}");
        }
    }
    // The same model split into many small bindings gives the same logits.
    let path = dir.path().join("m-q8_0.gguf");
    let model = Model::load(&path).unwrap();
    let mut ctx = GpuContext::new().unwrap();
    ctx.set_max_binding(150_000);
    let e = compare(&model, ctx, &long, "q8_0 split at 150 kB", 9);
    assert!(e <= 1e-3, "split: max |Δlogit| {e}");

    // Activation buffers bounded at 8 tokens (2048 bytes per token here): 20 tokens run as
    // batches of 8, 8, 4 and still match; a KV cache or one token over the limit is a clear
    // error naming the limit.
    let mut gm = GpuModel::new(GpuContext::new().unwrap(), &model).unwrap();
    gm.set_activation_limit(8 * 2048 + 20);
    assert_eq!(gm.max_batch(true), 8);
    let mut cs = Session::new(model.hparams(), long.len());
    let want = model.forward(&mut cs, &long, Logits::All).unwrap();
    let mut gs = gm.session(long.len()).unwrap();
    let got = gm.forward(&mut gs, &long, true).unwrap();
    let e = max_abs(&got, &want);
    eprintln!("q8_0 in batches of 8: max |Δlogit| {e:.2e}");
    assert!(e <= 1e-3, "batched: max |Δlogit| {e}");
    assert_eq!(gs.len(), long.len());
    let msg = gm
        .session(100)
        .err()
        .expect("KV cache over the limit")
        .to_string();
    assert!(
        msg.contains("max_storage_buffer_binding_size") && msg.contains("at most 64 positions"),
        "{msg}"
    );
    gm.set_activation_limit(1000);
    let msg = gm
        .forward(&mut gm.session(2).unwrap(), &[5], false)
        .expect_err("one token over the limit")
        .to_string();
    assert!(msg.contains("1000 bytes"), "{msg}");
}

#[test]
fn tiny_model_gpu_matches_cpu_q4_1_q5_0_q5_k() {
    if gpu().is_none() {
        return;
    }
    let cfg = gpu_common::tiny_config(4);
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &cfg, 7).unwrap();
    std::fs::write(
        dir.path().join("tokenizer.model"),
        SpmModel::synthetic(cfg.vocab_size).to_bytes(),
    )
    .unwrap();
    // Every matrix, the embedding and the tied output projection in the type under test.
    let prompt: Vec<u32> = vec![1, 17, 300, 0, 42, 511, 77, 3, 250];
    for ty in [GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_K] {
        let path = convert_with_embd(&dir.path().join("ckpt-0"), &cfg, dir.path(), ty, Some(ty));
        let model = Model::load(&path).unwrap();
        for name in [
            "token_embd.weight",
            "blk.0.attn_q.weight",
            "blk.1.ffn_down_exps.weight",
        ] {
            let t = model.gguf().tensor(name).unwrap();
            assert_eq!(t.info.ty, ty, "{name}");
        }
        let c = compare_scaled(&model, GpuContext::new().unwrap(), &prompt, ty.name(), 2);
        // These types dot against activations rounded to Q8_1 / Q8_0 / Q8_K, a step
        // function: the backends' different float orders (and the CPU's own exp-based GELU
        // against WGSL's tanh, within 2e-7) can move one hidden value across a rounding
        // boundary, and this random-weight model amplifies that at the position it happens in
        // and, through attention, at later ones. Seen: Q5_0 7.9e-2 at one position (7.0e-3 of
        // max |logit| 11.3); Q4_1 8.9e-3 at one position with the CPU's single-row kernel, and
        // 6.7e-2..8.2e-2 (6.7e-3 of 12.2) at four of nine positions and the decode step with
        // its eight-row kernel (same bytes, another summation order); every other position
        // ~2e-6. The GPU's kernels are checked against the CPU's on identical quantized inputs
        // to 1e-4 in gpu_kernels.rs. So here: argmax identical everywhere (checked in
        // `compare_scaled`), every position and the decode step within 1e-2 of the largest
        // logit, and at least half of the positions within 1e-3 of it (a wiring error, unlike a
        // flip, moves every position).
        let tol = 1e-3 * c.scale;
        let close = c.prefill.iter().filter(|&&e| e <= tol).count();
        let worst = c.prefill.iter().fold(c.decode, |m, &e| m.max(e));
        assert!(
            worst <= 10.0 * tol && 2 * close >= c.prefill.len(),
            "{ty:?}: max |Δlogit| per position {:?}, decode {} (max |logit| {})",
            c.prefill,
            c.decode,
            c.scale
        );
    }
}

#[test]
fn grok_tiny_reference_logits() {
    if gpu().is_none() {
        return;
    }
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/grok-tiny");
    if !fx.exists() {
        if std::env::var_os("CI").is_some() {
            panic!("{} is missing and CI is set", fx.display());
        }
        eprintln!("note: {} missing, skipping", fx.display());
        return;
    }
    let cfg = GrokConfig::from_file(&fx.join("reference/config.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = convert_one(&fx.join("ckpt-0"), &cfg, dir.path(), GgmlType::F32);
    let model = Model::load(&path).unwrap();
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(fx.join(name)).unwrap()).unwrap()
    };
    let ids_of = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let argmax = |x: &[f32]| -> usize {
        let mut b = 0;
        for (i, &v) in x.iter().enumerate() {
            if v > x[b] {
                b = i;
            }
        }
        b
    };
    let prompts = read("reference/prompts.json");
    let greedy = read("reference/greedy.json");
    let gm = GpuModel::new(GpuContext::new().unwrap(), &model).unwrap();
    let vocab = cfg.vocab_size;
    for (p, g) in prompts["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(greedy["prompts"].as_array().unwrap())
    {
        let ids = ids_of(&p["token_ids"]);
        let reference: Vec<f32> = std::fs::read(fx.join(p["logits_f32"]["file"].as_str().unwrap()))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut cs = grok1_quant::model::Session::new(model.hparams(), ids.len());
        let cpu = model
            .forward(&mut cs, &ids, grok1_quant::model::Logits::All)
            .unwrap();
        let want = ids_of(&g["full_recompute_f32"]);
        let mut s = gm.session(ids.len() + want.len()).unwrap();
        let got = gm.forward(&mut s, &ids, true).unwrap();
        let e_ref = max_abs(&got, &reference);
        let e_cpu = max_abs(&got, &cpu);
        for t in 0..ids.len() {
            let r = t * vocab..(t + 1) * vocab;
            assert_eq!(
                argmax(&got[r.clone()]),
                argmax(&reference[r]),
                "prompt {} position {t}",
                p["index"]
            );
        }
        // Greedy decode on the GPU with its KV cache equals the reference's full recompute.
        let mut last = got[(ids.len() - 1) * vocab..].to_vec();
        let mut decoded = Vec::new();
        for _ in 0..want.len() {
            let next = argmax(&last) as u32;
            decoded.push(next);
            last = gm.forward(&mut s, &[next], false).unwrap();
        }
        eprintln!(
            "grok-tiny prompt {} ({} tokens): GPU vs reference f32 max |Δlogit| {e_ref:.2e}, vs CPU {e_cpu:.2e}; greedy {}/{}",
            p["index"],
            ids.len(),
            decoded.iter().zip(&want).filter(|(a, b)| a == b).count(),
            want.len()
        );
        assert!(e_ref <= 1e-3, "max |Δlogit| vs reference {e_ref}");
        assert!(e_cpu <= 1e-3, "max |Δlogit| vs CPU {e_cpu}");
        assert_eq!(decoded, want, "prompt {}: GPU greedy decode", p["index"]);
    }
}
