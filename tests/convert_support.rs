//! Helpers shared by the `convert_*` integration tests (included with `#[path]`; as a test
//! target of its own it only checks that the helpers work).
#![allow(dead_code)]

use grok1_quant::checkpoint::write_checkpoint;
use grok1_quant::config::GrokConfig;
use grok1_quant::convert::{ConvertOptions, OutputSpec};
use grok1_quant::tokenizer::SpmModel;
use quant::GgmlType;
use std::path::{Path, PathBuf};

/// A small config derived from the `tiny` preset with the given changes applied.
pub fn small_cfg(edit: impl FnOnce(&mut GrokConfig)) -> GrokConfig {
    let mut c = grok1_quant::checkpoint::preset("tiny").expect("tiny preset");
    c.vocab_size = 512;
    c.emb_size = 64;
    c.key_size = 16;
    c.num_q_heads = 4;
    c.num_kv_heads = 2;
    c.num_layers = 1;
    c.ffn_size = 128;
    c.sequence_len = 64;
    edit(&mut c);
    c.attn_output_multiplier = 1.0 / (c.key_size as f64).sqrt();
    c
}

/// Write a synthetic checkpoint with `tokenizer.model` and `config.json` into `dir`.
pub fn synth(dir: &Path, cfg: &GrokConfig, seed: u64) {
    write_checkpoint(dir, cfg, seed).expect("write_checkpoint");
    std::fs::write(
        dir.join("tokenizer.model"),
        SpmModel::synthetic(cfg.vocab_size).to_bytes(),
    )
    .expect("tokenizer");
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(cfg).expect("config json"),
    )
    .expect("config.json");
}

/// Conversion options for `outputs` (type, path), no force, no resume.
pub fn options(ckpt: &Path, cfg: &GrokConfig, outputs: &[(GgmlType, PathBuf)]) -> ConvertOptions {
    ConvertOptions {
        ckpt_dir: ckpt.to_path_buf(),
        config: cfg.clone(),
        tokenizer: None,
        outputs: outputs
            .iter()
            .map(|(ty, path)| OutputSpec {
                recipe: None,
                ty: *ty,
                path: path.clone(),
            })
            .collect(),
        resume: false,
        force: false,
        token_embd_type: None,
        progress: false,
        model_name: "test".into(),
        cancel: None,
        imatrix: None,
        direct_io: true,
    }
}

/// Whether python3 with numpy, gguf and ml_dtypes is usable. Without it the caller skips with a
/// note, except under CI (`CI` set), where it panics.
pub fn python_ok() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import numpy, gguf, ml_dtypes"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("python3 with numpy, gguf and ml_dtypes is required when CI is set");
        }
        eprintln!("note: python3 with numpy, gguf and ml_dtypes not available, skipping");
    }
    ok
}

/// Files in `dir` whose names end with `suffix`.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

#[test]
fn small_cfg_is_valid_and_synth_writes_every_file() {
    let cfg = small_cfg(|_| {});
    cfg.validate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), &cfg, 1);
    let n = std::fs::read_dir(dir.path().join("ckpt-0"))
        .unwrap()
        .count();
    assert_eq!(n, 2 + 12 * cfg.num_layers);
    assert!(dir.path().join("tokenizer.model").is_file());
    assert!(dir.path().join("config.json").is_file());
}
