//! `grok1-quant demo`: the whole job on a machine with nothing downloaded — a Grok-format
//! checkpoint (the trained fixture if `../shared` is there, else a synthetic one), converted to
//! every supported type in one pass, a short generation, and the comparison table and chart.

use super::convert_cmd::CONVERT_TYPES;
use super::CliResult;
use crate::checkpoint::{preset, write_checkpoint};
use crate::compare::{compare, table};
use crate::config::GrokConfig;
use crate::convert::{convert, ConvertOptions, OutputSpec};
use crate::model::{Logits, Model, Session};
use crate::sampling::argmax;
use crate::tokenizer::SpmModel;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Instant;

const DEMO_TEXT: &str = include_str!("assets/demo_eval.txt");

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Working directory for the checkpoint, the GGUF files and the report.
    #[arg(long, default_value = "grok1-quant-demo")]
    pub dir: PathBuf,
    /// Use a synthetic checkpoint even if the trained fixture is available.
    #[arg(long)]
    pub synthetic: bool,
    /// Where to look for the trained fixture.
    #[arg(long, default_value = "../shared/fixtures/grok-mini-trained")]
    pub fixture: PathBuf,
    /// Chunk size for the comparison.
    #[arg(short = 'c', long = "ctx", default_value_t = 256)]
    pub ctx: usize,
    /// Chunks scored in the comparison (the whole text if larger).
    #[arg(long, default_value_t = 24)]
    pub chunks: usize,
}

struct Source {
    ckpt: PathBuf,
    config: GrokConfig,
    eval_text: String,
    label: String,
}

fn source(a: &DemoArgs) -> Result<Source, Box<dyn std::error::Error>> {
    let fx = &a.fixture;
    if !a.synthetic && fx.join("ckpt-0").is_dir() {
        let config = GrokConfig::from_file(&fx.join("config.json"))?;
        let eval_text = std::fs::read_to_string(fx.join("eval.txt"))
            .map_err(|e| format!("{}: {e}", fx.join("eval.txt").display()))?;
        return Ok(Source {
            ckpt: fx.join("ckpt-0"),
            config,
            eval_text,
            label: format!("trained fixture {}", fx.display()),
        });
    }
    let dir = a.dir.join("synthetic");
    let mut config = preset("tiny").ok_or("no tiny preset")?;
    config.vocab_size = 4096;
    if !dir.join("ckpt-0").is_dir() {
        eprintln!(
            "writing a synthetic Grok-format checkpoint to {}",
            dir.display()
        );
        write_checkpoint(&dir, &config, 1)?;
        std::fs::write(
            dir.join("tokenizer.model"),
            SpmModel::synthetic(config.vocab_size).to_bytes(),
        )?;
    }
    Ok(Source {
        ckpt: dir.join("ckpt-0"),
        config,
        eval_text: DEMO_TEXT.repeat(4),
        label: "synthetic checkpoint (random weights: ppl is large, the differences between types are what matter)".into(),
    })
}

fn path_for(dir: &Path, ty: quant::GgmlType) -> PathBuf {
    dir.join(format!("model-{}.gguf", ty.name()))
}

pub fn run(a: DemoArgs) -> CliResult {
    let t0 = Instant::now();
    std::fs::create_dir_all(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
    let src = source(&a)?;
    eprintln!("source: {}", src.label);
    // 1. Convert to every type in one pass over the checkpoint.
    let outputs: Vec<OutputSpec> = CONVERT_TYPES
        .iter()
        .map(|&ty| OutputSpec {
            recipe: None,
            ty,
            path: path_for(&a.dir, ty),
        })
        .collect();
    let summary = convert(&ConvertOptions {
        ckpt_dir: src.ckpt.clone(),
        config: src.config.clone(),
        tokenizer: None,
        outputs: outputs.clone(),
        resume: false,
        force: true,
        token_embd_type: None,
        progress: true,
        model_name: "grok1-quant demo".into(),
        cancel: None,
        imatrix: None,
        direct_io: true,
    })?;
    eprintln!(
        "converted {} tensors to {} files in {:.1} s ({} exact Q8_0 blocks, {} requantized)",
        summary.tensors,
        summary.outputs.len(),
        summary.seconds,
        summary.stats.exact_q8_blocks,
        summary.stats.requantized_q8_blocks
    );
    // 2. A short greedy generation from the exact 8-bit file.
    let q8 = Model::load(&path_for(&a.dir, quant::GgmlType::Q8_0))?;
    crate::cache::args::prepare_cpu(&q8, true)?;
    let tok = q8.tokenizer()?;
    let prompt = "In the beginning";
    let mut ids = tok.encode(prompt);
    let mut s = Session::new(q8.hparams(), ids.len() + 24);
    let mut logits = q8.forward(&mut s, &ids, Logits::Last)?;
    for _ in 0..24 {
        let next = argmax(&logits) as u32;
        ids.push(next);
        logits = q8.forward(&mut s, &[next], Logits::Last)?;
    }
    println!("\nq8_0 greedy: {}\n", tok.decode(&ids).replace('\n', " "));
    // 3. Compare every type against F32 on held-out text.
    let base = Model::load(&path_for(&a.dir, quant::GgmlType::F32))?;
    let cands = CONVERT_TYPES
        .iter()
        .filter(|&&t| t != quant::GgmlType::F32)
        .map(|&t| Model::load(&path_for(&a.dir, t)))
        .collect::<Result<Vec<_>, _>>()?;
    for m in std::iter::once(&base).chain(&cands) {
        crate::cache::args::prepare_cpu(m, true)?;
    }
    let tokens = base.tokenizer()?.encode(&src.eval_text);
    if tokens.len() < a.ctx {
        return Err(format!(
            "the evaluation text has only {} tokens (< -c {})",
            tokens.len(),
            a.ctx
        )
        .into());
    }
    let bar = indicatif::ProgressBar::new(0);
    let r = compare(
        &base,
        &cands,
        &tokens,
        a.ctx,
        Some(a.chunks),
        &mut |d, n| {
            bar.set_length(n as u64);
            bar.set_position(d as u64);
        },
    )?;
    bar.finish_and_clear();
    print!("{}", table(&r));
    let json = a.dir.join("compare.json");
    let svg = a.dir.join("compare.svg");
    std::fs::write(&json, serde_json::to_string_pretty(&r)?)?;
    std::fs::write(&svg, crate::plot::svg(&r))?;
    println!(
        "\nreport: {} and {}; demo took {:.0} s",
        json.display(),
        svg.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
