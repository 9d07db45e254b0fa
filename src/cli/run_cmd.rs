//! `grok1-quant run`: generate text, streaming it as it comes.

use super::common::ModelArg;
use super::CliResult;
use crate::cache::args::CacheArgs;
use crate::engine::{Device, Engine};
use crate::model::Logits;
use crate::sampling::{sample, Rng, SamplerConfig};
use clap::Args;
use std::io::Write;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The prompt.
    #[arg(short = 'p', long)]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 64)]
    pub n: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Context size (default: prompt + n).
    #[arg(short = 'c', long = "ctx")]
    pub ctx: Option<usize>,
    /// Stop at the end-of-sequence token.
    #[arg(long, default_value_t = true)]
    pub stop_at_eos: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// auto: the GPU if an adapter exists, else the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: Device,
}

pub fn run(a: RunArgs) -> CliResult {
    let mut model = a.model.load()?;
    a.cache.apply(&mut model, true)?;
    let tok = model.tokenizer()?;
    let hp = model.hparams().clone();
    let mut ids = tok.encode(&a.prompt);
    if hp.add_bos {
        ids.insert(0, hp.bos_id);
    }
    if ids.is_empty() {
        return Err("the prompt encodes to no tokens".into());
    }
    let ctx = a.ctx.unwrap_or(ids.len() + a.n);
    let engine = Engine::select(&model, a.device, &a.cache.options())?;
    let mut session = engine.session(ctx)?;
    let cfg = SamplerConfig {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
    };
    let mut rng = Rng::new(a.seed);
    let t0 = Instant::now();
    let mut logits = engine.forward(&mut session, &ids, Logits::Last)?;
    let prefill = t0.elapsed().as_secs_f64();
    print!("{}", a.prompt);
    let prompt_text = tok.decode(&ids);
    let mut out_ids: Vec<u32> = Vec::new();
    let mut printed = 0usize;
    let t1 = Instant::now();
    let stdout = std::io::stdout();
    for _ in 0..a.n {
        let next = sample(&logits, &cfg, &mut rng) as u32;
        if a.stop_at_eos && next == hp.eos_id {
            break;
        }
        out_ids.push(next);
        // Print what decodes completely so far (multi-byte characters span byte pieces); decode
        // with the prompt so the first piece keeps its leading space.
        let all: Vec<u32> = ids.iter().chain(&out_ids).copied().collect();
        let full = tok.decode(&all);
        let text = full.get(prompt_text.len()..).unwrap_or("");
        let text = text.trim_end_matches('\u{FFFD}');
        if text.len() > printed && text.is_char_boundary(printed) {
            let mut lock = stdout.lock();
            let _ = lock.write_all(&text.as_bytes()[printed..]);
            let _ = lock.flush();
            printed = text.len();
        }
        if ids.len() + out_ids.len() >= ctx {
            break;
        }
        logits = engine.forward(&mut session, &[next], Logits::Last)?;
    }
    let decode = t1.elapsed().as_secs_f64();
    let all: Vec<u32> = ids.iter().chain(&out_ids).copied().collect();
    let full = tok.decode(&all);
    let text = full.get(prompt_text.len()..).unwrap_or("");
    if text.len() > printed && text.is_char_boundary(printed) {
        print!("{}", &text[printed.min(text.len())..]);
    }
    println!();
    eprintln!(
        "prompt: {} tokens in {:.2} s ({:.1} tok/s); generated: {} tokens in {:.2} s ({:.2} tok/s)",
        ids.len(),
        prefill,
        ids.len() as f64 / prefill.max(1e-9),
        out_ids.len(),
        decode,
        out_ids.len() as f64 / decode.max(1e-9)
    );
    a.cache.finish_with(&model, engine.vram_stats())?;
    Ok(())
}
