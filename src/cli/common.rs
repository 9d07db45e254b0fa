//! Arguments and helpers shared by the model-running subcommands.

use crate::model::Model;
use clap::Args;
use std::path::PathBuf;

/// `MODEL` as a positional argument or `-m MODEL` (llama.cpp style).
#[derive(Args, Debug, Clone)]
pub struct ModelArg {
    /// The GGUF file.
    #[arg(value_name = "MODEL")]
    pub model_pos: Option<PathBuf>,
    /// The GGUF file (alternative to the positional argument).
    #[arg(short = 'm', long = "model")]
    pub model_flag: Option<PathBuf>,
}

impl ModelArg {
    pub fn path(&self) -> Result<PathBuf, String> {
        match (&self.model_pos, &self.model_flag) {
            (Some(p), None) | (None, Some(p)) => Ok(p.clone()),
            (Some(_), Some(_)) => Err("give the model once: positional or -m, not both".into()),
            (None, None) => Err("no model given (MODEL or -m MODEL)".into()),
        }
    }

    pub fn load(&self) -> Result<Model, Box<dyn std::error::Error>> {
        Ok(Model::load(&self.path()?)?)
    }
}

/// Read a text file with a clear error.
pub fn read_text(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parse `1,2,3` into token ids.
pub fn parse_ids(s: &str) -> Result<Vec<u32>, String> {
    s.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("'{t}' is not a token id"))
        })
        .collect()
}
