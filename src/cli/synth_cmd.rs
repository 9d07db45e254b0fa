//! `grok1-quant synth`: a synthetic checkpoint in the release format, with a tokenizer and config.

use super::CliResult;
use crate::checkpoint::{preset, write_checkpoint};
use crate::config::GrokConfig;
use crate::tokenizer::SpmModel;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output directory (gets ckpt-0/, tokenizer.model and config.json).
    #[arg(short, long)]
    pub output: PathBuf,
    /// A JSON config with the fixtures' keys.
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// tiny | small | 1b | 4gb.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(a: SynthArgs) -> CliResult {
    let cfg = match &a.config {
        Some(p) => GrokConfig::from_file(p)?,
        None => preset(&a.preset).ok_or_else(|| {
            format!(
                "unknown preset '{}' (known: tiny, small, 1b, 4gb)",
                a.preset
            )
        })?,
    };
    std::fs::create_dir_all(&a.output).map_err(|e| format!("{}: {e}", a.output.display()))?;
    let stats = write_checkpoint(&a.output, &cfg, a.seed)
        .map_err(|e| format!("writing {}: {e}", a.output.display()))?;
    let tok = a.output.join("tokenizer.model");
    std::fs::write(&tok, SpmModel::synthetic(cfg.vocab_size).to_bytes())
        .map_err(|e| format!("{}: {e}", tok.display()))?;
    let cfg_path = a.output.join("config.json");
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg)?)
        .map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    eprintln!(
        "wrote {} files, {:.2} GB, {:.3} B parameters to {} in {:.1} s (config: {})",
        stats.files,
        stats.bytes as f64 / 1e9,
        stats.params as f64 / 1e9,
        a.output.display(),
        stats.seconds,
        cfg_path.display()
    );
    Ok(())
}
