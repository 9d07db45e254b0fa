//! Grok tensor naming: the checkpoint's parameter list (in `jax.tree_util` flatten order) and the
//! GGUF names and shapes llama.cpp's `grok` architecture uses.
//!
//! A leaf module beside [`crate::config`]: derived from the config alone, never from a hard-coded
//! list of names.

use crate::config::GrokConfig;

/// What a parameter is, independent of where it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    TokenEmbd,
    OutputNorm,
    /// `moe/linear`: expert gate projection (GELU side).
    FfnGateExps,
    /// `moe/linear_1`: expert down projection.
    FfnDownExps,
    /// `moe/linear_v`: expert up projection.
    FfnUpExps,
    AttnK,
    AttnOutput,
    AttnQ,
    AttnV,
    /// `rms_norm`: before attention.
    AttnNorm,
    /// `rms_norm_1`: after attention, before the residual add.
    AttnOutputNorm,
    /// `rms_norm_2`: before the MoE.
    FfnNorm,
    /// `rms_norm_3`: after the MoE, before the residual add.
    LayerOutputNorm,
    /// `router`: expert logits.
    FfnGateInp,
}

/// How a parameter is stored in the checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredAs {
    /// A plain numpy float32 array.
    F32,
    /// `QuantizedWeight8bit`: int8 weight and bf16 scales with `scale_blocks` row blocks along the
    /// input dimension.
    Int8 { scale_blocks: usize },
}

/// One parameter of the checkpoint: file index, haiku path, role and expected shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// File index i of `tensor{i:05}_000`.
    pub index: usize,
    /// Haiku module path and parameter, e.g. `transformer/decoder_layer_0/moe/linear/w`.
    pub path: String,
    pub layer: Option<usize>,
    pub role: Role,
    pub stored: StoredAs,
    /// Shape in the checkpoint (numpy order).
    pub shape: Vec<usize>,
    /// Shape of the bf16 scales, for int8 parameters.
    pub scales_shape: Option<Vec<usize>>,
}

impl Role {
    /// The GGUF tensor name (llama.cpp `grok` conventions).
    pub fn gguf_name(self, layer: Option<usize>) -> String {
        let base = match self {
            Role::TokenEmbd => return "token_embd.weight".into(),
            Role::OutputNorm => return "output_norm.weight".into(),
            Role::FfnGateExps => "ffn_gate_exps",
            Role::FfnDownExps => "ffn_down_exps",
            Role::FfnUpExps => "ffn_up_exps",
            Role::AttnK => "attn_k",
            Role::AttnOutput => "attn_output",
            Role::AttnQ => "attn_q",
            Role::AttnV => "attn_v",
            Role::AttnNorm => "attn_norm",
            Role::AttnOutputNorm => "attn_output_norm",
            Role::FfnNorm => "ffn_norm",
            Role::LayerOutputNorm => "layer_output_norm",
            Role::FfnGateInp => "ffn_gate_inp",
        };
        format!("blk.{}.{base}.weight", layer.unwrap_or(0))
    }

    /// Whether the tensor is a large matrix that gets the requested quant type (norms, router and
    /// embeddings' companions stay F32).
    pub fn is_matmul_weight(self) -> bool {
        matches!(
            self,
            Role::FfnGateExps
                | Role::FfnDownExps
                | Role::FfnUpExps
                | Role::AttnK
                | Role::AttnOutput
                | Role::AttnQ
                | Role::AttnV
        )
    }

    /// Whether the tensor holds one matrix per expert.
    pub fn is_expert(self) -> bool {
        matches!(
            self,
            Role::FfnGateExps | Role::FfnDownExps | Role::FfnUpExps
        )
    }

    /// Every per-layer role, in the order of the checkpoint files within a layer.
    pub const LAYER_ROLES: [(Role, &'static str); 12] = [
        (Role::FfnGateExps, "moe/linear/w"),
        (Role::FfnDownExps, "moe/linear_1/w"),
        (Role::FfnUpExps, "moe/linear_v/w"),
        (Role::AttnK, "multi_head_attention/key/w"),
        (Role::AttnOutput, "multi_head_attention/linear/w"),
        (Role::AttnQ, "multi_head_attention/query/w"),
        (Role::AttnV, "multi_head_attention/value/w"),
        (Role::AttnNorm, "rms_norm/scale"),
        (Role::AttnOutputNorm, "rms_norm_1/scale"),
        (Role::FfnNorm, "rms_norm_2/scale"),
        (Role::LayerOutputNorm, "rms_norm_3/scale"),
        (Role::FfnGateInp, "router/w"),
    ];
}

/// The checkpoint shape and storage of a role under `cfg`.
fn stored_shape(cfg: &GrokConfig, role: Role) -> (StoredAs, Vec<usize>, Option<Vec<usize>>) {
    let (e, emb, ffn) = (cfg.num_experts, cfg.emb_size, cfg.ffn_size);
    let rb = cfg.row_parallel_scale_blocks;
    let col = StoredAs::Int8 { scale_blocks: 1 };
    let row = StoredAs::Int8 { scale_blocks: rb };
    match role {
        Role::TokenEmbd => (StoredAs::F32, vec![cfg.vocab_size, emb], None),
        Role::OutputNorm
        | Role::AttnNorm
        | Role::AttnOutputNorm
        | Role::FfnNorm
        | Role::LayerOutputNorm => (StoredAs::F32, vec![emb], None),
        Role::FfnGateInp => (StoredAs::F32, vec![emb, e], None),
        Role::FfnGateExps | Role::FfnUpExps => (col, vec![e, emb, ffn], Some(vec![e, 1, ffn])),
        Role::FfnDownExps => (row, vec![e, ffn, emb], Some(vec![e, rb, emb])),
        Role::AttnQ => (col, vec![emb, cfg.q_dim()], Some(vec![1, cfg.q_dim()])),
        Role::AttnK | Role::AttnV => (col, vec![emb, cfg.kv_dim()], Some(vec![1, cfg.kv_dim()])),
        Role::AttnOutput => (row, vec![cfg.q_dim(), emb], Some(vec![rb, emb])),
    }
}

/// All checkpoint parameters of `cfg` in file order: `jax.tree_util` flattens the haiku params
/// dict with its keys (module paths) sorted as strings, so `decoder_layer_10` precedes
/// `decoder_layer_2`.
pub fn checkpoint_params(cfg: &GrokConfig) -> Vec<ParamSpec> {
    let mut entries: Vec<(String, Option<usize>, Role)> = vec![
        (
            "language_model/in_out_embed/embeddings".into(),
            None,
            Role::TokenEmbd,
        ),
        (
            "language_model/rms_norm/scale".into(),
            None,
            Role::OutputNorm,
        ),
    ];
    for layer in 0..cfg.num_layers {
        for (role, suffix) in Role::LAYER_ROLES {
            entries.push((
                format!("transformer/decoder_layer_{layer}/{suffix}"),
                Some(layer),
                role,
            ));
        }
    }
    // Sort by module path (the dict key); the param name is the last path component.
    entries.sort_by(|a, b| module_of(&a.0).cmp(module_of(&b.0)));
    entries
        .into_iter()
        .enumerate()
        .map(|(index, (path, layer, role))| {
            let (stored, shape, scales_shape) = stored_shape(cfg, role);
            ParamSpec {
                index,
                path,
                layer,
                role,
                stored,
                shape,
                scales_shape,
            }
        })
        .collect()
}

fn module_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(m, _)| m).unwrap_or(path)
}

/// The checkpoint file name of parameter `index`.
pub fn checkpoint_file_name(index: usize) -> String {
    format!("tensor{index:05}_000")
}

/// Shape of the GGUF tensor for `spec` in ggml order (ne0 first = the input dimension).
///
/// Checkpoint matrices are stored `[.., in, out]`; GGUF rows are output features, so ne0 = in and
/// ne1 = out (the converter transposes). The embeddings are `[vocab, emb]` rows already.
pub fn gguf_shape(spec: &ParamSpec) -> Vec<u64> {
    let s: Vec<u64> = spec.shape.iter().map(|&d| d as u64).collect();
    match spec.role {
        Role::TokenEmbd => vec![s[1], s[0]],
        Role::FfnGateExps | Role::FfnUpExps | Role::FfnDownExps => vec![s[1], s[2], s[0]],
        Role::AttnK | Role::AttnQ | Role::AttnV | Role::AttnOutput | Role::FfnGateInp => {
            vec![s[0], s[1]]
        }
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_string_sorted_like_tree_flatten() {
        let mut cfg = GrokConfig::grok_1();
        cfg.num_layers = 12;
        let p = checkpoint_params(&cfg);
        assert_eq!(p.len(), 2 + 12 * 12);
        assert_eq!(p[0].path, "language_model/in_out_embed/embeddings");
        assert_eq!(p[1].path, "language_model/rms_norm/scale");
        let layers: Vec<usize> = p[2..]
            .iter()
            .step_by(12)
            .map(|s| s.layer.unwrap())
            .collect();
        assert_eq!(layers, vec![0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(p[3].path, "transformer/decoder_layer_0/moe/linear_1/w");
        assert_eq!(p[13].path, "transformer/decoder_layer_0/router/w");
        assert_eq!(p[14].path, "transformer/decoder_layer_1/moe/linear/w");
    }

    #[test]
    fn grok_1_has_770_files_and_known_shapes() {
        let cfg = GrokConfig::grok_1();
        let p = checkpoint_params(&cfg);
        assert_eq!(p.len(), 770);
        let down = p
            .iter()
            .find(|s| s.role == Role::FfnDownExps && s.layer == Some(0))
            .unwrap();
        assert_eq!(down.shape, vec![8, 32768, 6144]);
        assert_eq!(down.scales_shape, Some(vec![8, 8, 6144]));
        assert_eq!(gguf_shape(down), vec![32768, 6144, 8]);
        assert_eq!(
            down.role.gguf_name(down.layer),
            "blk.0.ffn_down_exps.weight"
        );
    }
}

impl Role {
    /// The role and layer of a GGUF tensor name (the inverse of [`Role::gguf_name`]).
    pub fn from_gguf_name(name: &str) -> Option<(Role, Option<usize>)> {
        match name {
            "token_embd.weight" => return Some((Role::TokenEmbd, None)),
            "output_norm.weight" => return Some((Role::OutputNorm, None)),
            _ => {}
        }
        let rest = name.strip_prefix("blk.")?.strip_suffix(".weight")?;
        let (layer, base) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let role = Role::ALL_LAYER
            .iter()
            .copied()
            .find(|r| r.gguf_name(Some(layer)) == name)?;
        let _ = base;
        Some((role, Some(layer)))
    }

    /// Every per-layer role.
    pub const ALL_LAYER: [Role; 12] = [
        Role::FfnGateExps,
        Role::FfnDownExps,
        Role::FfnUpExps,
        Role::AttnK,
        Role::AttnOutput,
        Role::AttnQ,
        Role::AttnV,
        Role::AttnNorm,
        Role::AttnOutputNorm,
        Role::FfnNorm,
        Role::LayerOutputNorm,
        Role::FfnGateInp,
    ];
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn gguf_names_round_trip() {
        for role in Role::ALL_LAYER {
            let n = role.gguf_name(Some(17));
            assert_eq!(Role::from_gguf_name(&n), Some((role, Some(17))));
        }
        assert_eq!(
            Role::from_gguf_name("token_embd.weight"),
            Some((Role::TokenEmbd, None))
        );
        assert_eq!(Role::from_gguf_name("output.weight"), None);
        assert_eq!(Role::from_gguf_name("blk.x.attn_q.weight"), None);
    }
}
