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

/// Convert a checkpoint directory to the given types inside `out_dir`; returns the paths.
pub fn convert_to(
    ckpt: &Path,
    cfg: &GrokConfig,
    out_dir: &Path,
    types: &[GgmlType],
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
        imatrix: None,
        direct_io: true,
    };
    convert(&opts).expect("convert");
    outputs.into_iter().map(|o| o.path).collect()
}

/// Little-endian f32 file.
pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
