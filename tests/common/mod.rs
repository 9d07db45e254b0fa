//! Helpers shared by the integration tests.
#![allow(dead_code)]

use grok1_quant::config::GrokConfig;
use grok1_quant::convert::{convert, ConvertOptions, OutputSpec};
use quant::GgmlType;
use std::path::{Path, PathBuf};

/// `../shared/fixtures/NAME` if present. Missing fixtures skip the test with a note, except
/// under CI (`CI` set), where they are mandatory.
pub fn fixture(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(name);
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "fixture {} is missing and CI is set: golden comparisons are mandatory",
            p.display()
        );
    }
    eprintln!(
        "note: {} missing, skipping this golden comparison",
        p.display()
    );
    None
}

/// A fixture's JSON file, parsed.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A JSON array of token ids.
pub fn token_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Convert a checkpoint directory to the given types inside `out_dir`; returns the paths.
pub fn convert_to(
    ckpt: &Path,
    cfg: &GrokConfig,
    out_dir: &Path,
    types: &[GgmlType],
) -> Vec<PathBuf> {
    convert_with(ckpt, cfg, out_dir, types, None)
}

/// [`convert_to`] with an importance matrix (`convert --imatrix`).
pub fn convert_with(
    ckpt: &Path,
    cfg: &GrokConfig,
    out_dir: &Path,
    types: &[GgmlType],
    imatrix: Option<std::sync::Arc<grok1_quant::imatrix::Imatrix>>,
) -> Vec<PathBuf> {
    let outputs: Vec<OutputSpec> = types
        .iter()
        .map(|t| OutputSpec {
            recipe: None,
            ty: *t,
            path: out_dir.join(format!("m-{}.gguf", t.name())),
        })
        .collect();
    let opts = ConvertOptions {
        ckpt_dir: ckpt.to_path_buf(),
        config: cfg.clone(),
        tokenizer: None,
        outputs: outputs.clone(),
        resume: false,
        force: true,
        token_embd_type: None,
        progress: false,
        model_name: "test".into(),
        cancel: None,
        imatrix,
        direct_io: true,
    };
    convert(&opts).expect("convert");
    outputs.into_iter().map(|o| o.path).collect()
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A small grok-shaped config (3 layers, 8 experts of ffn 256, emb 128) with `vocab` tokens.
pub fn small_grok(vocab: usize) -> GrokConfig {
    let mut c = GrokConfig::grok_1();
    c.vocab_size = vocab;
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
    c
}

/// A synthetic checkpoint of `c` (weights from `seed`) with a synthetic tokenizer, converted
/// to `ty`; the directory (keep it alive) and the GGUF's path.
pub fn synthetic_model(c: &GrokConfig, ty: GgmlType, seed: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    grok1_quant::checkpoint::write_checkpoint(dir.path(), c, seed).unwrap();
    std::fs::write(
        dir.path().join("tokenizer.model"),
        grok1_quant::tokenizer::SpmModel::synthetic(c.vocab_size).to_bytes(),
    )
    .unwrap();
    let p = convert_to(&dir.path().join("ckpt-0"), c, dir.path(), &[ty]);
    (dir, p[0].clone())
}

pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Prefill each prompt (all logits), then greedy-decode `steps` tokens; every logit, in order.
pub fn prefill_and_decode(
    model: &grok1_quant::model::Model,
    prompts: &[Vec<u32>],
    steps: usize,
) -> Vec<Vec<f32>> {
    use grok1_quant::model::{Logits, Session};
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

/// Three prompts of ids in 4..504: 24, 9 and 1 tokens.
pub fn test_prompts() -> Vec<Vec<u32>> {
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
