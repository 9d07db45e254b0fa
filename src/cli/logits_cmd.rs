//! `grok1-quant logits`: the oracle command — raw little-endian f32 `[T, vocab]` logits.

use super::common::{parse_ids, ModelArg};
use super::CliResult;
use crate::cache::args::CacheArgs;
use crate::engine::{Device, Engine};
use crate::model::Logits;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Comma-separated token ids.
    #[arg(long, conflicts_with = "prompt")]
    pub tokens: Option<String>,
    /// Text to tokenize instead of ids.
    #[arg(short = 'p', long)]
    pub prompt: Option<String>,
    /// Output file (raw f32, row-major [tokens, vocab]).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// auto: the GPU if an adapter exists, else the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
}

pub fn run(a: LogitsArgs) -> CliResult {
    let mut model = a.model.load()?;
    a.cache.apply(&mut model, true)?;
    let ids = match (&a.tokens, &a.prompt) {
        (Some(t), _) => parse_ids(t)?,
        (None, Some(p)) => model.tokenizer()?.encode(p),
        (None, None) => return Err("give --tokens or --prompt".into()),
    };
    if ids.is_empty() {
        return Err("no tokens".into());
    }
    let engine = Engine::select(&model, a.device, &a.cache.options())?;
    let mut s = engine.session(ids.len())?;
    let logits = engine.forward(&mut s, &ids, Logits::All)?;
    let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&a.out, bytes).map_err(|e| format!("{}: {e}", a.out.display()))?;
    eprintln!(
        "wrote {} × {} logits to {}",
        ids.len(),
        model.hparams().vocab,
        a.out.display()
    );
    a.cache.finish_with(&model, engine.vram_stats())?;
    Ok(())
}
