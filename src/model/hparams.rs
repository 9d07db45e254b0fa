//! Hyperparameters of a grok GGUF, read from its metadata with Grok-1's values as defaults.

use crate::config::GrokConfig;
use crate::gguf::GgufFile;

#[derive(Clone, Debug, PartialEq)]
pub struct HParams {
    pub vocab: usize,
    pub emb: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub n_experts: usize,
    pub n_experts_used: usize,
    pub eps: f32,
    pub rope_base: f32,
    pub embedding_scale: f32,
    pub logit_scale: f32,
    pub attn_output_scale: f32,
    pub softcap: f32,
    pub ctx_len: usize,
    pub pad_id: u32,
    pub bos_id: u32,
    pub eos_id: u32,
    pub add_bos: bool,
}

impl HParams {
    /// Read from `file`'s metadata; missing optional keys take Grok-1's values.
    pub fn from_gguf(file: &GgufFile) -> Result<HParams, String> {
        let arch = file
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .ok_or("general.architecture is missing")?;
        if arch != "grok" {
            return Err(format!(
                "general.architecture is '{arch}', this runner executes 'grok' models"
            ));
        }
        let g = GrokConfig::grok_1();
        let u = |key: &str, default: Option<usize>| -> Result<usize, String> {
            match file.get(&format!("grok.{key}")) {
                Some(v) => v
                    .to_u64()
                    .map(|x| x as usize)
                    .ok_or(format!("grok.{key} is not an integer")),
                None => default.ok_or(format!("grok.{key} is missing")),
            }
        };
        let f = |key: &str, default: f64| -> Result<f32, String> {
            match file.get(key) {
                Some(v) => v
                    .to_f64()
                    .map(|x| x as f32)
                    .ok_or(format!("{key} is not a number")),
                None => Ok(default as f32),
            }
        };
        let emb = u("embedding_length", None)?;
        let n_heads = u("attention.head_count", None)?;
        let head_dim_default = emb.checked_div(n_heads).ok_or("head_count is 0")?;
        let tok_u32 = |key: &str, default: u32| -> Result<u32, String> {
            match file.get(key) {
                None => Ok(default),
                Some(v) => v
                    .to_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or(format!("{key} is not a 32-bit unsigned integer")),
            }
        };
        let vocab = match file.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
            Some(a) => a.len(),
            None => u("vocab_size", None)?,
        };
        let hp = HParams {
            vocab,
            emb,
            n_layers: u("block_count", None)?,
            n_heads,
            n_kv_heads: u("attention.head_count_kv", Some(n_heads))?,
            head_dim: u("attention.key_length", Some(head_dim_default))?,
            ffn: u("expert_feed_forward_length", None)
                .or_else(|_| u("feed_forward_length", None))?,
            n_experts: u("expert_count", None)?,
            n_experts_used: u("expert_used_count", None)?,
            eps: f("grok.attention.layer_norm_rms_epsilon", g.rms_norm_eps)?,
            rope_base: f("grok.rope.freq_base", g.rope_base)?,
            embedding_scale: f("grok.embedding_scale", g.embedding_multiplier_scale)?,
            logit_scale: f("grok.logit_scale", g.output_multiplier_scale)?,
            attn_output_scale: f("grok.attention.output_scale", g.attn_output_multiplier)?,
            softcap: f("grok.attn_logit_softcapping", g.attn_logit_softcap)?,
            ctx_len: u("context_length", Some(g.sequence_len))?,
            pad_id: tok_u32("tokenizer.ggml.padding_token_id", g.pad_token)?,
            bos_id: tok_u32("tokenizer.ggml.bos_token_id", g.bos_token)?,
            eos_id: tok_u32("tokenizer.ggml.eos_token_id", g.eos_token)?,
            add_bos: file
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        };
        hp.validate()?;
        Ok(hp)
    }

    fn validate(&self) -> Result<(), String> {
        let dims = [
            ("vocab", self.vocab),
            ("embedding_length", self.emb),
            ("block_count", self.n_layers),
            ("head_count", self.n_heads),
            ("head_count_kv", self.n_kv_heads),
            ("key_length", self.head_dim),
            ("feed_forward_length", self.ffn),
            ("expert_count", self.n_experts),
            ("expert_used_count", self.n_experts_used),
            ("context_length", self.ctx_len),
        ];
        for (k, v) in dims {
            if v == 0 || v > 1 << 24 {
                return Err(format!("{k} = {v} is out of range"));
            }
        }
        if self.n_heads % self.n_kv_heads != 0 {
            return Err(format!(
                "head_count {} is not a multiple of head_count_kv {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.n_experts_used > self.n_experts {
            return Err(format!(
                "expert_used_count {} > expert_count {}",
                self.n_experts_used, self.n_experts
            ));
        }
        if self.head_dim % 2 != 0 {
            return Err(format!("key_length {} is odd", self.head_dim));
        }
        for (k, v) in [("bos", self.bos_id), ("eos", self.eos_id)] {
            if v as usize >= self.vocab {
                return Err(format!(
                    "tokenizer.ggml.{k}_token_id {v} is outside the vocabulary of {}",
                    self.vocab
                ));
            }
        }
        let positive = [
            ("attention.layer_norm_rms_epsilon", self.eps),
            ("rope.freq_base", self.rope_base),
        ];
        for (k, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("grok.{k} = {v} is not a finite positive number"));
            }
        }
        let finite = [
            ("embedding_scale", self.embedding_scale),
            ("logit_scale", self.logit_scale),
            ("attention.output_scale", self.attn_output_scale),
            ("attn_logit_softcapping", self.softcap),
        ];
        for (k, v) in finite {
            if !v.is_finite() {
                return Err(format!("grok.{k} = {v} is not finite"));
            }
        }
        Ok(())
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
