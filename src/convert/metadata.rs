//! GGUF metadata for a Grok model, in llama.cpp's `grok` conventions.

use crate::config::GrokConfig;
use crate::gguf::{GgufArray, GgufValue, Metadata};
use crate::tokenizer::SpmModel;
use quant::GgmlType;

/// llama.cpp's `llama_ftype` for a file whose big matrices are `ty`.
pub fn llama_file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::Q2_K => 10,
        GgmlType::Q3_K => 12,
        GgmlType::Q4_K => 14, // Q4_K_S: every matrix Q4_K
        GgmlType::Q5_K => 16, // Q5_K_S
        GgmlType::Q6_K => 18,
        GgmlType::BF16 => 32,
        _ => 0,
    }
}

/// All metadata of a converted file: architecture, hyperparameters, Grok constants, tokenizer.
pub fn grok_metadata(cfg: &GrokConfig, tok: &SpmModel, ty: GgmlType, name: &str) -> Metadata {
    let mut md = Metadata::new();
    let arch = "grok";
    let s = |v: &str| GgufValue::String(v.to_string());
    md.insert("general.architecture", s(arch));
    md.insert("general.name", s(name));
    md.insert("general.file_type", GgufValue::U32(llama_file_type(ty)));
    md.insert("general.quantization_version", GgufValue::U32(2));
    md.insert("general.alignment", GgufValue::U32(32));
    let u = |v: usize| GgufValue::U32(v as u32);
    let f = |v: f64| GgufValue::F32(v as f32);
    md.insert(format!("{arch}.vocab_size"), u(cfg.vocab_size));
    md.insert(format!("{arch}.context_length"), u(cfg.sequence_len));
    md.insert(format!("{arch}.embedding_length"), u(cfg.emb_size));
    md.insert(format!("{arch}.block_count"), u(cfg.num_layers));
    md.insert(format!("{arch}.feed_forward_length"), u(cfg.ffn_size));
    md.insert(
        format!("{arch}.expert_feed_forward_length"),
        u(cfg.ffn_size),
    );
    md.insert(format!("{arch}.attention.head_count"), u(cfg.num_q_heads));
    md.insert(
        format!("{arch}.attention.head_count_kv"),
        u(cfg.num_kv_heads),
    );
    md.insert(format!("{arch}.attention.key_length"), u(cfg.key_size));
    md.insert(format!("{arch}.attention.value_length"), u(cfg.key_size));
    md.insert(
        format!("{arch}.attention.layer_norm_rms_epsilon"),
        f(cfg.rms_norm_eps),
    );
    md.insert(format!("{arch}.rope.freq_base"), f(cfg.rope_base));
    md.insert(format!("{arch}.rope.dimension_count"), u(cfg.key_size));
    md.insert(format!("{arch}.expert_count"), u(cfg.num_experts));
    md.insert(
        format!("{arch}.expert_used_count"),
        u(cfg.num_selected_experts),
    );
    md.insert(
        format!("{arch}.embedding_scale"),
        f(cfg.embedding_multiplier_scale),
    );
    md.insert(
        format!("{arch}.logit_scale"),
        f(cfg.output_multiplier_scale),
    );
    md.insert(
        format!("{arch}.attention.output_scale"),
        f(cfg.attn_output_multiplier),
    );
    md.insert(
        format!("{arch}.attn_logit_softcapping"),
        f(cfg.attn_logit_softcap),
    );
    // Tokenizer: SentencePiece BPE as llama.cpp's "llama" vocabulary.
    md.insert("tokenizer.ggml.model", s("llama"));
    md.insert("tokenizer.ggml.pre", s("default"));
    md.insert(
        "tokenizer.ggml.tokens",
        GgufValue::Array(GgufArray::String(
            tok.pieces.iter().map(|p| p.piece.clone()).collect(),
        )),
    );
    md.insert(
        "tokenizer.ggml.scores",
        GgufValue::Array(GgufArray::F32(tok.pieces.iter().map(|p| p.score).collect())),
    );
    md.insert(
        "tokenizer.ggml.token_type",
        GgufValue::Array(GgufArray::I32(
            tok.pieces.iter().map(|p| p.kind as i32).collect(),
        )),
    );
    md.insert("tokenizer.ggml.bos_token_id", GgufValue::U32(cfg.bos_token));
    md.insert("tokenizer.ggml.eos_token_id", GgufValue::U32(cfg.eos_token));
    md.insert(
        "tokenizer.ggml.unknown_token_id",
        GgufValue::U32(cfg.unk_token),
    );
    md.insert(
        "tokenizer.ggml.padding_token_id",
        GgufValue::U32(cfg.pad_token),
    );
    // The reference runner adds no BOS (and the trained fixture never saw one).
    md.insert("tokenizer.ggml.add_bos_token", GgufValue::Bool(false));
    md.insert("tokenizer.ggml.add_eos_token", GgufValue::Bool(false));
    md.insert(
        "tokenizer.ggml.add_space_prefix",
        GgufValue::Bool(tok.add_dummy_prefix),
    );
    md
}
