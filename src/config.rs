//! The Grok model configuration: hyperparameters and constants, read from a config file or built in.
//!
//! A leaf module: everyone may use it; it uses nothing of the crate. Constants are always taken
//! from the config, never derived (grok-mini-trained has key_size 64 but Grok-1's literal
//! attention multiplier).

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Hyperparameters of a Grok-architecture model, with the keys of the fixtures' `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrokConfig {
    pub vocab_size: usize,
    pub emb_size: usize,
    pub key_size: usize,
    pub num_q_heads: usize,
    pub num_kv_heads: usize,
    pub num_layers: usize,
    pub num_experts: usize,
    pub num_selected_experts: usize,
    pub ffn_size: usize,
    pub embedding_multiplier_scale: f64,
    pub output_multiplier_scale: f64,
    pub attn_output_multiplier: f64,
    pub rms_norm_eps: f64,
    pub rope_base: f64,
    pub attn_logit_softcap: f64,
    pub pad_token: u32,
    pub bos_token: u32,
    pub eos_token: u32,
    #[serde(default = "default_unk")]
    pub unk_token: u32,
    pub sequence_len: usize,
    /// Number of row blocks of the row-parallel weights' scales (attention `linear`, moe `linear_1`).
    #[serde(default = "default_row_scale_blocks")]
    pub row_parallel_scale_blocks: usize,
}

fn default_unk() -> u32 {
    3
}

fn default_row_scale_blocks() -> usize {
    8
}

/// A config that cannot describe a model, with what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: not a Grok config: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("config {path}: {what}")]
    Invalid { path: String, what: String },
    #[error("unknown built-in config '{0}' (known: grok-1)")]
    UnknownBuiltin(String),
}

impl GrokConfig {
    /// Grok-1 as released (xai-org/grok-1 `run.py`).
    pub fn grok_1() -> GrokConfig {
        GrokConfig {
            vocab_size: 131072,
            emb_size: 6144,
            key_size: 128,
            num_q_heads: 48,
            num_kv_heads: 8,
            num_layers: 64,
            num_experts: 8,
            num_selected_experts: 2,
            ffn_size: 32768,
            embedding_multiplier_scale: 78.38367176906169,
            output_multiplier_scale: 0.5773502691896257,
            attn_output_multiplier: 0.08838834764831845,
            rms_norm_eps: 1e-5,
            rope_base: 10000.0,
            attn_logit_softcap: 30.0,
            pad_token: 0,
            bos_token: 1,
            eos_token: 2,
            unk_token: 3,
            sequence_len: 8192,
            row_parallel_scale_blocks: 8,
        }
    }

    /// `grok-1` (built in) or a path to a JSON file with the fixtures' keys.
    pub fn load(spec: &str) -> Result<GrokConfig, ConfigError> {
        if spec == "grok-1" {
            return Ok(GrokConfig::grok_1());
        }
        let path = Path::new(spec);
        if !path.exists() && !spec.contains('/') && !spec.ends_with(".json") {
            return Err(ConfigError::UnknownBuiltin(spec.to_string()));
        }
        Self::from_file(path)
    }

    /// Read a JSON config file.
    pub fn from_file(path: &Path) -> Result<GrokConfig, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: p.clone(),
            source,
        })?;
        let cfg: GrokConfig = serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: p.clone(),
            source,
        })?;
        cfg.validate()
            .map_err(|what| ConfigError::Invalid { path: p, what })?;
        Ok(cfg)
    }

    /// Check that the numbers describe a model this tool can build.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("emb_size", self.emb_size),
            ("key_size", self.key_size),
            ("num_q_heads", self.num_q_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("num_layers", self.num_layers),
            ("num_experts", self.num_experts),
            ("num_selected_experts", self.num_selected_experts),
            ("ffn_size", self.ffn_size),
            ("sequence_len", self.sequence_len),
            ("row_parallel_scale_blocks", self.row_parallel_scale_blocks),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if self.num_q_heads % self.num_kv_heads != 0 {
            return Err(format!(
                "num_q_heads {} is not a multiple of num_kv_heads {}",
                self.num_q_heads, self.num_kv_heads
            ));
        }
        if self.num_selected_experts > self.num_experts {
            return Err(format!(
                "num_selected_experts {} > num_experts {}",
                self.num_selected_experts, self.num_experts
            ));
        }
        if self.key_size % 2 != 0 {
            return Err(format!("key_size {} must be even for RoPE", self.key_size));
        }
        let q_dim = self.num_q_heads * self.key_size;
        for (name, n) in [("num_q_heads*key_size", q_dim), ("ffn_size", self.ffn_size)] {
            if n % self.row_parallel_scale_blocks != 0 {
                return Err(format!(
                    "{name} = {n} does not split into {} scale blocks",
                    self.row_parallel_scale_blocks
                ));
            }
        }
        // Bound the sizes so later arithmetic on products cannot overflow.
        let limit = 1usize << 24;
        for (name, v) in positive {
            if v > limit {
                return Err(format!("{name} = {v} is implausibly large (> {limit})"));
            }
        }
        for (name, v) in [
            (
                "embedding_multiplier_scale",
                self.embedding_multiplier_scale,
            ),
            ("output_multiplier_scale", self.output_multiplier_scale),
            ("attn_output_multiplier", self.attn_output_multiplier),
            ("rms_norm_eps", self.rms_norm_eps),
            ("rope_base", self.rope_base),
            ("attn_logit_softcap", self.attn_logit_softcap),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(format!("{name} = {v} must be a positive finite number"));
            }
        }
        for (name, id) in [
            ("pad_token", self.pad_token),
            ("bos_token", self.bos_token),
            ("eos_token", self.eos_token),
        ] {
            if id as usize >= self.vocab_size {
                return Err(format!("{name} {id} >= vocab_size {}", self.vocab_size));
            }
        }
        Ok(())
    }

    /// Query projection width (heads × key_size).
    pub fn q_dim(&self) -> usize {
        self.num_q_heads * self.key_size
    }

    /// Key/value projection width.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.key_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grok_1_is_valid_and_has_the_released_shape() {
        let c = GrokConfig::grok_1();
        c.validate().unwrap();
        assert_eq!(c.q_dim(), 6144);
        assert_eq!(c.kv_dim(), 1024);
    }

    #[test]
    fn rejects_bad_head_split() {
        let mut c = GrokConfig::grok_1();
        c.num_kv_heads = 5;
        assert!(c.validate().unwrap_err().contains("num_kv_heads"));
    }

    #[test]
    fn unknown_builtin_is_named() {
        let e = GrokConfig::load("grok-2").unwrap_err();
        assert!(e.to_string().contains("grok-2"));
    }
}
