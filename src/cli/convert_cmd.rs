//! `grok1-quant convert`.

use super::{parse_types, CliResult};
use crate::config::GrokConfig;
use crate::convert::{convert, ConvertOptions, OutputSpec};
use crate::imatrix::Imatrix;
use crate::recipe::Recipe;
use clap::Args;
use quant::GgmlType;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The types `convert` writes.
pub const CONVERT_TYPES: [GgmlType; 10] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Checkpoint directory (`ckpt-0` or the directory holding it).
    pub ckpt_dir: PathBuf,
    /// Output file; with several types, `{type}` in the name is replaced by each type.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Output type(s), comma-separated: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q4_k q5_k q6_k, or the
    /// recipes q4_k_m / q5_k_m (more bits where it matters).
    #[arg(long = "type", short = 't', default_value = "q8_0")]
    pub types: String,
    /// `grok-1` (built in) or a JSON config with the fixtures' keys.
    #[arg(long, default_value = "grok-1")]
    pub config: String,
    /// tokenizer.model (default: beside ckpt-0 or inside the directory).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Type of token_embd (the tied output projection too).
    #[arg(long)]
    pub token_embd_type: Option<String>,
    /// An importance matrix (`grok1-quant imatrix`, or llama.cpp's GGUF imatrix) for the 4-6 bit
    /// quantizers.
    #[arg(long)]
    pub imatrix: Option<PathBuf>,
    /// Continue an interrupted conversion.
    #[arg(long)]
    pub resume: bool,
    /// Overwrite existing outputs and abandon unfinished ones.
    #[arg(long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Write everything through the page cache instead of sending whole pages straight to the
    /// device with O_DIRECT (used automatically where the file system refuses O_DIRECT).
    #[arg(long)]
    pub buffered_writes: bool,
    /// general.name in the output.
    #[arg(long, default_value = "Grok-1")]
    pub name: String,
}

pub fn run(a: ConvertArgs) -> CliResult {
    let config = GrokConfig::load(&a.config)?;
    let mut types = Vec::new();
    for name in a.types.split(',').map(str::trim) {
        let recipe = Recipe::parse(name).ok_or_else(|| {
            format!("unknown type '{name}' (types: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q4_k q5_k q6_k; recipes: q4_k_m q5_k_m)")
        })?;
        if !CONVERT_TYPES.contains(&recipe.base()) {
            return Err(format!("convert cannot write {}", recipe.base()).into());
        }
        types.push(recipe);
    }
    let template = a.output.to_string_lossy().to_string();
    if types.len() > 1 && !template.contains("{type}") {
        return Err(
            "several types need `{type}` in the output name, e.g. -o grok-1-{type}.gguf".into(),
        );
    }
    let outputs = types
        .iter()
        .map(|r| OutputSpec {
            recipe: match r {
                Recipe::Pure(_) => None,
                mixed => Some(*mixed),
            },
            ty: r.base(),
            path: PathBuf::from(template.replace("{type}", &r.name())),
        })
        .collect();
    let token_embd_type = match &a.token_embd_type {
        Some(s) => Some(
            parse_types(s)?
                .into_iter()
                .next()
                .ok_or("empty --token-embd-type")?,
        ),
        None => None,
    };
    let imatrix = match &a.imatrix {
        Some(p) => Some(Arc::new(Imatrix::read(p)?)),
        None => None,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let c = cancel.clone();
        // A second Ctrl-C kills at once; the .part and journal stay resumable either way.
        let _ = ctrlc::set_handler(move || {
            if c.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupt: finishing the bands in flight, then stopping (Ctrl-C again to kill)"
            );
        });
    }
    let opts = ConvertOptions {
        ckpt_dir: a.ckpt_dir,
        config,
        tokenizer: a.tokenizer,
        outputs,
        resume: a.resume,
        force: a.force,
        token_embd_type,
        progress: !a.quiet,
        model_name: a.name,
        cancel: Some(cancel),
        imatrix,
        direct_io: !a.buffered_writes,
    };
    let s = convert(&opts)?;
    eprintln!(
        "converted {} tensors, {:.2} GB in, in {:.1} s ({:.2} GB/s)",
        s.tensors,
        s.bytes_in as f64 / 1e9,
        s.seconds,
        s.bytes_in as f64 / 1e9 / s.seconds.max(1e-9)
    );
    for o in &s.outputs {
        eprintln!(
            "  {} [{}]: {:.2} GB, {:.3} bits/weight, {:.2} GB written with O_DIRECT",
            o.path.display(),
            o.ty,
            o.bytes as f64 / 1e9,
            o.bpw,
            o.direct_bytes as f64 / 1e9
        );
    }
    if s.stats.exact_q8_blocks + s.stats.requantized_q8_blocks > 0 {
        eprintln!(
            "  Q8_0: {} blocks hold the checkpoint's int8 values exactly, {} requantized",
            s.stats.exact_q8_blocks, s.stats.requantized_q8_blocks
        );
    }
    if s.resumed_tensors > 0 {
        eprintln!(
            "  resumed: {} finished tensors verified and kept",
            s.resumed_tensors
        );
    }
    for f in &s.fallbacks {
        eprintln!("  note: {f}");
    }
    Ok(())
}
