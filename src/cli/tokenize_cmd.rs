//! `grok1-quant tokenize`: ids (and pieces) of a text, from a GGUF's vocabulary or a
//! tokenizer.model.

use super::common::{read_text, ModelArg};
use super::CliResult;
use crate::tokenizer::Tokenizer;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// A SentencePiece tokenizer.model instead of a GGUF.
    #[arg(long)]
    pub spm: Option<PathBuf>,
    /// Text to tokenize (or -f FILE).
    #[arg(long, short = 'p')]
    pub text: Option<String>,
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Print `{"ids": [...], "pieces": [...]}`.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: TokenizeArgs) -> CliResult {
    let tok = match &a.spm {
        Some(p) => Tokenizer::from_spm_file(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => a.model.load()?.tokenizer()?,
    };
    let text = match (&a.text, &a.file) {
        (Some(t), None) => t.clone(),
        (None, Some(f)) => read_text(f)?,
        _ => return Err("give the text with -p TEXT or -f FILE (one of them)".into()),
    };
    let ids = tok.encode(&text);
    if a.json {
        let pieces: Vec<&str> = ids.iter().map(|&i| tok.piece(i)).collect();
        println!("{}", serde_json::json!({"ids": ids, "pieces": pieces}));
    } else {
        let s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        println!("{}", s.join(" "));
    }
    Ok(())
}
