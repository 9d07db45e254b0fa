//! The forward pass against the reference JAX implementation's outputs on grok-tiny.

mod common;

use grok1_quant::config::GrokConfig;
use grok1_quant::model::{Logits, Model, Session};
use quant::GgmlType;
use serde_json::Value;

use grok1_quant::sampling::argmax;

#[test]
fn tiny_logits_match_reference_f32_and_q8_0_matches_f32() {
    let Some(fx) = common::fixture("grok-tiny") else {
        return;
    };
    let cfg = GrokConfig::from_file(&fx.join("reference/config.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let paths = common::convert_to(
        &fx.join("ckpt-0"),
        &cfg,
        dir.path(),
        &[GgmlType::F32, GgmlType::Q8_0],
    );
    let f32m = Model::load(&paths[0]).unwrap();
    let q8m = Model::load(&paths[1]).unwrap();
    let prompts: Value = common::read_json(&fx.join("reference/prompts.json"));
    let vocab = cfg.vocab_size;
    for p in prompts["prompts"].as_array().unwrap() {
        let ids: Vec<u32> = common::token_ids(&p["token_ids"]);
        let reference = common::read_f32(&fx.join(p["logits_f32"]["file"].as_str().unwrap()));
        let ref_bf16 = common::read_f32(&fx.join(p["logits_bf16"]["file"].as_str().unwrap()));
        let mut s = Session::new(f32m.hparams(), ids.len());
        let ours = f32m.forward(&mut s, &ids, Logits::All).unwrap();
        let mut s = Session::new(q8m.hparams(), ids.len());
        let q8 = q8m.forward(&mut s, &ids, Logits::All).unwrap();
        assert_eq!(ours.len(), reference.len());
        let max_ref = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let max_q8 = ours
            .iter()
            .zip(&q8)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let max_bf16 = ours
            .iter()
            .zip(&ref_bf16)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let mut argmax_ok = 0;
        for t in 0..ids.len() {
            let r = t * vocab..(t + 1) * vocab;
            if argmax(&ours[r.clone()]) == argmax(&reference[r]) {
                argmax_ok += 1;
            }
        }
        eprintln!(
            "prompt {}: {} tokens, max|Δ| vs ref f32 {max_ref:.2e}, q8_0 vs our f32 {max_q8:.2e}, vs ref bf16 {max_bf16:.3}, argmax {argmax_ok}/{}",
            p["index"], ids.len(), ids.len()
        );
        assert!(max_ref <= 1e-3, "max |Δlogit| {max_ref} > 1e-3");
        assert_eq!(argmax_ok, ids.len());
        assert!(max_q8 <= 1e-4, "Q8_0 vs F32 {max_q8} > 1e-4");
    }
}

fn load_tiny(types: &[GgmlType]) -> Option<(std::path::PathBuf, tempfile::TempDir, Vec<Model>)> {
    let fx = common::fixture("grok-tiny")?;
    let cfg = GrokConfig::from_file(&fx.join("reference/config.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let paths = common::convert_to(&fx.join("ckpt-0"), &cfg, dir.path(), types);
    let models = paths.iter().map(|p| Model::load(p).unwrap()).collect();
    Some((fx, dir, models))
}

#[test]
fn tiny_routing_and_hidden_states_match_reference_per_layer() {
    let Some((fx, _dir, models)) = load_tiny(&[GgmlType::F32]) else {
        return;
    };
    let m = &models[0];
    let routing: Value = common::read_json(&fx.join("reference/routing.json"));
    let ids: Vec<u32> = common::token_ids(&routing["token_ids"]);
    let hidden = common::read_f32(&fx.join("reference/hidden_f32_0.bin"));
    let emb = m.hparams().emb;
    let t = ids.len();
    let layers = routing["f32"]["layers"].as_array().unwrap();
    let mut s = Session::new(m.hparams(), t);
    let mut checked = 0;
    m.forward_traced(&mut s, &ids, Logits::None, &mut |l, h, r| {
        let want = &layers[l];
        for (tok, chosen) in r.iter().enumerate() {
            let experts: Vec<usize> = want["top2_experts"][tok]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let got: Vec<usize> = chosen.iter().map(|x| x.0).collect();
            assert_eq!(got, experts, "layer {l} token {tok}: top-2 experts");
            for (k, (_, g)) in chosen.iter().enumerate() {
                let wg = want["top2_gates"][tok][k].as_f64().unwrap() as f32;
                assert!(
                    (g - wg).abs() < 1e-5,
                    "layer {l} token {tok} gate {k}: {g} vs {wg}"
                );
            }
        }
        let reference = &hidden[(l + 1) * t * emb..(l + 2) * t * emb];
        let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = h
            .iter()
            .zip(reference)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= 1e-5 * scale.max(1.0),
            "layer {l}: hidden max |Δ| {err} (scale {scale})"
        );
        checked += 1;
    })
    .unwrap();
    assert_eq!(checked, m.hparams().n_layers);
}

#[test]
fn tiny_greedy_decoding_with_kv_cache_reproduces_full_recompute_f32() {
    let Some((fx, _dir, models)) = load_tiny(&[GgmlType::F32, GgmlType::Q8_0]) else {
        return;
    };
    let greedy: Value = common::read_json(&fx.join("reference/greedy.json"));
    for m in &models {
        for p in greedy["prompts"].as_array().unwrap() {
            let ids: Vec<u32> = common::token_ids(&p["prompt_ids"]);
            let want: Vec<u32> = common::token_ids(&p["full_recompute_f32"]);
            let mut s = Session::new(m.hparams(), ids.len() + want.len());
            let mut logits = m.forward(&mut s, &ids, Logits::Last).unwrap();
            let mut got = Vec::new();
            for _ in 0..want.len() {
                let next = argmax(&logits) as u32;
                got.push(next);
                logits = m.forward(&mut s, &[next], Logits::Last).unwrap();
            }
            assert_eq!(got, want, "{}: prompt {}", m.path().display(), p["index"]);
        }
    }
}

/// The decode path (one token per step, KV cache) of the Q8_0 file against the F32 file's: the
/// weights are identical, so the logits must agree as tightly as the batched path's do.
#[test]
fn tiny_q8_0_decode_matches_f32_decode() {
    let Some((fx, _dir, models)) = load_tiny(&[GgmlType::F32, GgmlType::Q8_0]) else {
        return;
    };
    let prompts: Value = common::read_json(&fx.join("reference/prompts.json"));
    let mut worst = 0f32;
    for p in prompts["prompts"].as_array().unwrap() {
        let ids: Vec<u32> = common::token_ids(&p["token_ids"]);
        let mut s32 = Session::new(models[0].hparams(), ids.len());
        let mut s8 = Session::new(models[1].hparams(), ids.len());
        for &id in &ids {
            let a = models[0].forward(&mut s32, &[id], Logits::Last).unwrap();
            let b = models[1].forward(&mut s8, &[id], Logits::Last).unwrap();
            assert_eq!(argmax(&a), argmax(&b));
            let d = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            worst = worst.max(d);
        }
    }
    eprintln!("decode: Q8_0 vs F32 max |Δlogit| {worst:.2e}");
    assert!(worst <= 1e-4, "Q8_0 decode vs F32 decode {worst} > 1e-4");
}
