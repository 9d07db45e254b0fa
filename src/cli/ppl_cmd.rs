//! `grok1-quant perplexity` and `grok1-quant compare`.

use super::common::{read_text, ModelArg};
use super::CliResult;
use crate::cache::args::CacheArgs;
use crate::compare::{compare, table};
use crate::model::Model;
use crate::perplexity::perplexity;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Text file to score.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx", default_value_t = 512)]
    pub ctx: usize,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No per-chunk output.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

fn check_ctx(ctx: usize, n_tokens: usize) -> Result<(), String> {
    if ctx < 2 {
        return Err(format!("-c {ctx}: a chunk needs at least 2 tokens"));
    }
    if n_tokens < ctx {
        return Err(format!(
            "the text has {n_tokens} tokens, fewer than one chunk of -c {ctx}"
        ));
    }
    Ok(())
}

pub fn run_perplexity(a: PerplexityArgs) -> CliResult {
    let mut model = a.model.load()?;
    a.cache.apply(&mut model, true)?;
    a.cache.prepare_cpu(&model)?;
    let tokens = model.tokenizer()?.encode(&read_text(&a.file)?);
    check_ctx(a.ctx, tokens.len())?;
    let quiet = a.quiet;
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new((tokens.len() / a.ctx) as u64)
    };
    let r = perplexity(&model, &tokens, a.ctx, &mut |c, _, running| {
        bar.inc(1);
        if !quiet {
            bar.println(format!("chunk {:>4}: running ppl {running:.4}", c + 1));
        }
    })?;
    bar.finish_and_clear();
    println!(
        "{}: {} tokens, {} chunks of {}, {} scored: ppl = {:.4} ± {:.4}",
        a.model.path()?.display(),
        tokens.len(),
        r.chunks,
        r.n_ctx,
        r.tokens_scored,
        r.ppl,
        r.ppl_stderr
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    a.cache.finish(&model)?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The base (F32, BF16 or our exact Q8_0) followed by the candidates.
    #[arg(required = true, num_args = 2..)]
    pub models: Vec<PathBuf>,
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    #[arg(short = 'c', long = "ctx", default_value_t = 512)]
    pub ctx: usize,
    /// Score at most this many chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG chart (ppl and KLD vs bits per weight).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Cache flags apply to every model (each gets its own budget); --trace records the base.
    #[command(flatten)]
    pub cache: CacheArgs,
}

pub fn run_compare(a: CompareArgs) -> CliResult {
    let mut models = a
        .models
        .iter()
        .map(|p| Model::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, m) in models.iter_mut().enumerate() {
        a.cache.apply(m, i == 0)?;
        a.cache.prepare_cpu(m)?;
    }
    let (base, cands) = models.split_first().ok_or("no models")?;
    let tokens = base.tokenizer()?.encode(&read_text(&a.file)?);
    check_ctx(a.ctx, tokens.len())?;
    let bar = indicatif::ProgressBar::new(0);
    let r = compare(base, cands, &tokens, a.ctx, a.chunks, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    print!("{}", table(&r));
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if let Some(p) = &a.plot {
        std::fs::write(p, crate::plot::svg(&r)).map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("chart: {}", p.display());
    }
    for m in &models {
        a.cache.finish(m)?;
    }
    Ok(())
}
