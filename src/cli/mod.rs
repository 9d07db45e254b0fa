//! Command-line front end: argument definitions and dispatch. Each subcommand lives in its own
//! module and calls the library; nothing here computes.

mod bench_cmd;
mod cachesim_cmd;
mod common;
mod convert_cmd;
mod demo_cmd;
mod imatrix_cmd;
mod inspect_cmd;
mod logits_cmd;
mod ppl_cmd;
mod run_cmd;
mod synth_cmd;
mod tokenize_cmd;

use clap::{Parser, Subcommand};

pub type CliResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Parser, Debug)]
#[command(
    name = "grok1-quant",
    version,
    about = "Convert, quantize and run Grok-1 on one workstation"
)]
pub struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Convert a Grok-1 JAX checkpoint to GGUF.
    Convert(convert_cmd::ConvertArgs),
    /// Print a checkpoint directory's or a GGUF file's metadata and tensor table.
    Inspect(inspect_cmd::InspectArgs),
    /// Write a synthetic checkpoint in the exact release format.
    Synth(synth_cmd::SynthArgs),
    /// Generate text from a prompt.
    Run(run_cmd::RunArgs),
    /// Write raw f32 logits for a token sequence (the debugging oracle).
    Logits(logits_cmd::LogitsArgs),
    /// Print token ids of a text.
    Tokenize(tokenize_cmd::TokenizeArgs),
    /// Perplexity over a text file (llama-perplexity protocol, second half of each chunk).
    Perplexity(ppl_cmd::PerplexityArgs),
    /// Compare quant levels against a base: ppl, KL divergence, top-1 agreement.
    Compare(ppl_cmd::CompareArgs),
    /// Prefill/decode speed and decode weight bandwidth vs the machine's memory bandwidth.
    Bench(bench_cmd::BenchArgs),
    /// Collect an importance matrix over calibration text (llama.cpp's GGUF imatrix format).
    Imatrix(imatrix_cmd::ImatrixArgs),
    /// Re-quantize a GGUF to a type or recipe (q4_k_m, q5_k_m), optionally with an imatrix.
    Quantize(imatrix_cmd::QuantizeArgs),
    /// The whole job on an embedded default: checkpoint → every quant type → run → compare.
    Demo(demo_cmd::DemoArgs),
    /// Replay a routing trace under each cache policy and Belady's optimal.
    Cachesim(cachesim_cmd::CachesimArgs),
}

pub fn run(cli: Cli) -> CliResult {
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .map_err(|e| format!("--threads {n}: {e}"))?;
    }
    match cli.command {
        Command::Convert(a) => convert_cmd::run(a),
        Command::Inspect(a) => inspect_cmd::run(a),
        Command::Synth(a) => synth_cmd::run(a),
        Command::Run(a) => run_cmd::run(a),
        Command::Logits(a) => logits_cmd::run(a),
        Command::Tokenize(a) => tokenize_cmd::run(a),
        Command::Perplexity(a) => ppl_cmd::run_perplexity(a),
        Command::Compare(a) => ppl_cmd::run_compare(a),
        Command::Bench(a) => bench_cmd::run(a),
        Command::Demo(a) => demo_cmd::run(a),
        Command::Imatrix(a) => imatrix_cmd::run_imatrix(a),
        Command::Quantize(a) => imatrix_cmd::run_quantize(a),
        Command::Cachesim(a) => cachesim_cmd::run(a),
    }
}

/// Parse a comma-separated list of ggml type names.
pub(crate) fn parse_types(s: &str) -> Result<Vec<quant::GgmlType>, String> {
    s.split(',')
        .map(|t| {
            quant::GgmlType::from_name(t.trim()).ok_or_else(|| {
                format!(
                    "unknown type '{t}' (known: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q4_k q5_k q6_k)"
                )
            })
        })
        .collect()
}
