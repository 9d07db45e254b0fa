//! `grok1-quant imatrix` (collect importance statistics with our runner) and
//! `grok1-quant quantize` (re-quantize a GGUF, optionally weighted by them).

use super::common::{read_text, ModelArg};
use super::CliResult;
use crate::imatrix::{wants_covariance, Collector, Imatrix, MIN_TOKENS};
use crate::model::{Logits, Session};
use crate::recipe::Recipe;
use crate::requantize::{quantize_gguf, QuantizeOptions};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct ImatrixArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Calibration text (never the evaluation text).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Output (llama.cpp's GGUF imatrix format).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx", default_value_t = 512)]
    pub ctx: usize,
    /// At most this many chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Read weights as stored (no interleaved copy; see `run --help`).
    #[arg(long)]
    pub no_repack: bool,
    /// Also collect each matrix's input covariance (`n_in × n_in` per matrix and expert, as
    /// `<name>.in_cov` tensors, which llama.cpp ignores). `quantize`/`convert --imatrix` then
    /// compensate each column's rounding error on the columns after it (GPTQ) for Q4_0, Q5_0,
    /// Q8_0, Q4_K, Q5_K and Q6_K. Held in memory as f64 while collecting: refused when that
    /// exceeds half of the available memory (Grok-1 would need hundreds of GB; for models with
    /// small matrices).
    #[arg(long)]
    pub covariance: bool,
}

pub fn run_imatrix(a: ImatrixArgs) -> CliResult {
    let model = a.model.load()?;
    crate::cache::args::prepare_cpu(&model, !a.no_repack)?;
    let text = read_text(&a.file)?;
    let tokens = model.tokenizer()?.encode(&text);
    if a.ctx == 0 || tokens.len() < a.ctx {
        return Err(format!(
            "{} tokens: fewer than one chunk of -c {}",
            tokens.len(),
            a.ctx
        )
        .into());
    }
    let chunks = (tokens.len() / a.ctx).min(a.chunks.unwrap_or(usize::MAX));
    let collector = Collector::default();
    // The matrices the forward pass reports (the layers'), as `Imatrix::accumulate` keeps them.
    let cov_need = Imatrix::cov_bytes(
        model
            .gguf()
            .tensors()
            .iter()
            .filter(|t| {
                t.name.starts_with("blk.") && t.shape.len() >= 2 && wants_covariance(&t.name)
            })
            .map(|t| {
                (
                    t.shape[0] as usize,
                    t.shape.get(2).copied().unwrap_or(1) as usize,
                )
            }),
    );
    let avail = crate::model::mem_available().unwrap_or(0);
    if a.covariance {
        if cov_need > avail / 2 {
            return Err(format!(
                "--covariance needs {:.1} GB to hold the input covariances, more than half of the \
                 {:.1} GB available; collect without it (importance only)",
                cov_need as f64 / 1e9,
                avail as f64 / 1e9
            )
            .into());
        }
        eprintln!(
            "collecting input covariances: {:.1} MB",
            cov_need as f64 / 1e6
        );
        collector
            .0
            .lock()
            .map_err(|_| "collector poisoned")?
            .collect_cov = true;
    } else if cov_need <= avail / 8 {
        eprintln!(
            "hint: --covariance ({:.1} MB for this model) also records each matrix's input \
             covariance, with which quantize/convert compensate rounding errors (GPTQ); on \
             grok-mini it lowered Q4_K's KL divergence by 29 % and Q4_0's by 42 % \
             (docs/imatrix.md)",
            cov_need as f64 / 1e6
        );
    }
    let mut session = Session::new(model.hparams(), a.ctx);
    session.set_sink(Box::new(collector.clone()));
    let bar = indicatif::ProgressBar::new(chunks as u64);
    let t0 = Instant::now();
    for c in 0..chunks {
        session.clear();
        model.forward(
            &mut session,
            &tokens[c * a.ctx..(c + 1) * a.ctx],
            Logits::None,
        )?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut im = collector
        .0
        .lock()
        .map_err(|_| "collector poisoned")?
        .clone();
    im.datasets = vec![a.file.display().to_string()];
    im.chunk_count = chunks as u32;
    im.chunk_size = a.ctx as u32;
    im.write(&a.output)?;
    eprintln!(
        "{} chunks of {} tokens in {:.1} s; {} matrices → {}",
        chunks,
        a.ctx,
        t0.elapsed().as_secs_f64(),
        im.entries.len(),
        a.output.display()
    );
    print!("{}", coverage_report(&im));
    Ok(())
}

/// Per layer, the calibration tokens each expert saw; experts under MIN_TOKENS are flagged.
pub fn coverage_report(im: &Imatrix) -> String {
    let mut s = String::from("expert coverage (calibration tokens per expert; * = fewer than ");
    s.push_str(&format!("{MIN_TOKENS}, blended with the layer average)\n"));
    let mut rows: Vec<(usize, &Vec<f64>)> = im
        .entries
        .iter()
        .filter_map(|(n, e)| {
            let l = n
                .strip_prefix("blk.")?
                .strip_suffix(".ffn_gate_exps.weight")?
                .parse()
                .ok()?;
            Some((l, &e.counts))
        })
        .collect();
    rows.sort_by_key(|r| r.0);
    for (l, counts) in rows {
        let cells: Vec<String> = counts
            .iter()
            .map(|&c| format!("{:>7}{}", c as u64, if c < MIN_TOKENS { "*" } else { " " }))
            .collect();
        s.push_str(&format!("layer {l:>3}: {}\n", cells.join("")));
    }
    s
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Source GGUF (F32, F16, BF16 or Q8_0 for the best result).
    pub input: PathBuf,
    /// Output GGUF.
    pub output: PathBuf,
    /// A type name (pure: every matrix) or a recipe: q4_k_m, q5_k_m.
    #[arg(long = "type", short = 't')]
    pub recipe: String,
    /// An importance matrix (ours or llama.cpp's GGUF format).
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    #[arg(long)]
    pub force: bool,
}

pub fn run_quantize(a: QuantizeArgs) -> CliResult {
    let recipe = Recipe::parse(&a.recipe).ok_or_else(|| {
        format!("unknown type or recipe '{}' (types: q8_0 q4_0 q4_1 q5_0 q4_k q5_k q6_k f16 bf16 f32; recipes: q4_k_m q5_k_m)", a.recipe)
    })?;
    let im = match &a.imatrix {
        Some(p) => Some(Imatrix::read(p)?),
        None => None,
    };
    let s = quantize_gguf(&QuantizeOptions {
        input: &a.input,
        output: &a.output,
        recipe,
        imatrix: im.as_ref(),
        force: a.force,
    })?;
    eprintln!(
        "{} → {} [{}]: {} tensors, {:.3} GB in {:.1} s{}",
        a.input.display(),
        a.output.display(),
        recipe.name(),
        s.tensors,
        s.bytes_out as f64 / 1e9,
        s.seconds,
        if im.is_some() {
            format!(
                ", {} weighted by the imatrix ({} with error feedback through its covariances)",
                s.weighted, s.with_cov
            )
        } else {
            String::new()
        }
    );
    Ok(())
}
