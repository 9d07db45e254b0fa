//! Command-line front end: argument definitions and dispatch. Each subcommand lives in its own
//! module and calls the library; nothing here computes.

mod convert_cmd;
mod inspect_cmd;
mod synth_cmd;

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
