//! Conversions of checkpoints from our own writer with configs unlike the fixtures: 1, 3 and 13
//! layers (13 > 11, so a layer-order bug from the checkpoint's string-sorted file order shows),
//! other head, kv-head, ffn, vocab and key sizes; F32, Q8_0, Q4_0 and Q4_K outputs checked value
//! by value against the checkpoint read with `Param::row_f32` and loaded by `Model::load`.

#[path = "convert_support.rs"]
mod support;

use grok1_quant::checkpoint::Checkpoint;
use grok1_quant::config::GrokConfig;
use grok1_quant::convert::convert;
use grok1_quant::gguf::GgufFile;
use grok1_quant::model::Model;
use quant::GgmlType;
use std::path::PathBuf;

/// (checkpoint suffix, GGUF base, kind): 'e' expert, 'm' matrix, 'r' router, 'n' norm.
const LAYER: [(&str, &str, char); 12] = [
    ("moe/linear/w", "ffn_gate_exps", 'e'),
    ("moe/linear_1/w", "ffn_down_exps", 'e'),
    ("moe/linear_v/w", "ffn_up_exps", 'e'),
    ("multi_head_attention/key/w", "attn_k", 'm'),
    ("multi_head_attention/linear/w", "attn_output", 'm'),
    ("multi_head_attention/query/w", "attn_q", 'm'),
    ("multi_head_attention/value/w", "attn_v", 'm'),
    ("rms_norm/scale", "attn_norm", 'n'),
    ("rms_norm_1/scale", "attn_output_norm", 'n'),
    ("rms_norm_2/scale", "ffn_norm", 'n'),
    ("rms_norm_3/scale", "layer_output_norm", 'n'),
    ("router/w", "ffn_gate_inp", 'r'),
];

/// (file index, checkpoint path, GGUF name, kind), worked out here independently of naming.rs.
fn expected_params(cfg: &GrokConfig) -> Vec<(usize, String, String, char)> {
    let mut v: Vec<(String, String, char)> = vec![
        (
            "language_model/in_out_embed/embeddings".into(),
            "token_embd.weight".into(),
            'x',
        ),
        (
            "language_model/rms_norm/scale".into(),
            "output_norm.weight".into(),
            'n',
        ),
    ];
    for l in 0..cfg.num_layers {
        for (suffix, base, kind) in LAYER {
            v.push((
                format!("transformer/decoder_layer_{l}/{suffix}"),
                format!("blk.{l}.{base}.weight"),
                kind,
            ));
        }
    }
    v.sort_by(|a, b| {
        let m = |s: &str| {
            s.rsplit_once('/')
                .map_or(String::new(), |x| x.0.to_string())
        };
        m(&a.0).cmp(&m(&b.0))
    });
    v.into_iter()
        .enumerate()
        .map(|(i, (p, g, k))| (i, p, g, k))
        .collect()
}

/// The source in GGUF element order (row-major over GGUF rows) from `Param::row_f32`.
fn source_gguf_order(p: &grok1_quant::checkpoint::Param, kind: char) -> (Vec<f32>, usize) {
    let shape = p.data.shape.clone();
    match kind {
        'x' => {
            let (rows, n) = (shape[0], shape[1]);
            ((0..rows).flat_map(|r| p.row_f32(r)).collect(), n)
        }
        'n' => (p.row_f32(0), shape[0]),
        _ => {
            let (e, n_in, n_out) = if kind == 'e' {
                (shape[0], shape[1], shape[2])
            } else {
                (1, shape[0], shape[1])
            };
            let src: Vec<Vec<f32>> = (0..e * n_in).map(|r| p.row_f32(r)).collect();
            let mut out = Vec::with_capacity(e * n_in * n_out);
            for expert in src.chunks(n_in) {
                for o in 0..n_out {
                    out.extend(expert.iter().map(|row| row[o]));
                }
            }
            (out, n_in)
        }
    }
}

fn dequantize(ty: GgmlType, data: &[u8], n_in: usize) -> Vec<f32> {
    let rb = ty.row_bytes(n_in).expect("row bytes");
    assert_eq!(data.len() % rb, 0);
    let mut out = vec![0f32; data.len() / rb * n_in];
    for (src, dst) in data.chunks_exact(rb).zip(out.chunks_exact_mut(n_in)) {
        quant::dequantize_row(ty, src, dst).expect("dequantize");
    }
    out
}

fn run_case(label: &str, cfg: GrokConfig) {
    cfg.validate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    support::synth(dir.path(), &cfg, 11);
    let types = [
        GgmlType::F32,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
    ];
    let outs: Vec<(GgmlType, PathBuf)> = types
        .iter()
        .map(|&t| (t, dir.path().join(format!("{label}-{}.gguf", t.name()))))
        .collect();
    let summary = convert(&support::options(dir.path(), &cfg, &outs)).unwrap();
    assert_eq!(summary.tensors, 2 + 12 * cfg.num_layers);
    let ckpt = Checkpoint::open(dir.path(), &cfg).unwrap();
    let params = expected_params(&cfg);
    for (ty, path) in &outs {
        Model::load(path).unwrap_or_else(|e| panic!("{label} {ty}: Model::load: {e}"));
        let f = GgufFile::open(path).unwrap();
        assert_eq!(f.get_str("general.architecture"), Some("grok"));
        assert_eq!(
            f.get_uint("grok.block_count"),
            Some(cfg.num_layers as u64),
            "{label}"
        );
        // Tensors in numeric layer order: globals, then blk.0, blk.1, ..., blk.12.
        let layers: Vec<usize> = f
            .tensors()
            .iter()
            .filter_map(|t| t.name.strip_prefix("blk."))
            .map(|r| r.split('.').next().unwrap().parse().unwrap())
            .collect();
        assert!(
            layers.windows(2).all(|w| w[0] <= w[1]),
            "{label}: {layers:?}"
        );
        assert_eq!(f.tensors().len(), params.len());
        for (index, ck_path, name, kind) in &params {
            let spec = &ckpt.specs()[*index];
            assert_eq!(&spec.path, ck_path, "{label}: file {index}");
            let p = ckpt.param(spec).unwrap();
            let (want, n_in) = source_gguf_order(&p, *kind);
            let t = f
                .tensor(name)
                .unwrap_or_else(|| panic!("{label}: {name} missing"));
            assert_eq!(t.info.shape[0] as usize, n_in, "{label} {name}");
            let got = dequantize(t.info.ty, t.data, n_in);
            assert_eq!(got.len(), want.len(), "{label} {ty} {name}");
            let exact =
                matches!(t.info.ty, GgmlType::F32) || (t.info.ty == GgmlType::Q8_0 && *kind != 'x');
            if exact && t.info.ty == GgmlType::Q8_0 {
                // Exact wherever a block of 32 lies inside one scale block.
                let blk = if matches!(*kind, 'e' | 'm') && p.scale_blocks() > 0 {
                    n_in / p.scale_blocks()
                } else {
                    n_in
                };
                for (r, (g, w)) in got.chunks(n_in).zip(want.chunks(n_in)).enumerate() {
                    for b in 0..n_in / 32 {
                        if (b * 32) / blk != (b * 32 + 31) / blk {
                            continue;
                        }
                        let (g, w) = (&g[b * 32..b * 32 + 32], &w[b * 32..b * 32 + 32]);
                        assert!(
                            g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{label} {ty} {name} row {r} block {b}: {g:?} != {w:?}"
                        );
                    }
                }
            } else if exact {
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{label} {ty} {name}: F32 differs from {ck_path}"
                );
            } else {
                let err: f64 = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum();
                let norm: f64 = want.iter().map(|&b| (b as f64).powi(2)).sum();
                let rel = (err / norm.max(1e-30)).sqrt();
                assert!(rel < 0.15, "{label} {ty} {name}: relative error {rel}");
            }
        }
    }
}

#[test]
fn one_layer_wide_heads() {
    run_case(
        "l1",
        support::small_cfg(|c| {
            c.num_layers = 1;
            c.num_q_heads = 8;
            c.num_kv_heads = 8;
            c.key_size = 32;
            c.vocab_size = 400;
        }),
    );
}

#[test]
fn three_layers_gqa_odd_ffn() {
    run_case(
        "l3",
        support::small_cfg(|c| {
            c.num_layers = 3;
            c.num_q_heads = 6;
            c.num_kv_heads = 2;
            c.key_size = 8;
            c.ffn_size = 96;
            c.emb_size = 96;
            c.vocab_size = 1000;
        }),
    );
}

#[test]
fn thirteen_layers_numeric_order() {
    run_case(
        "l13",
        support::small_cfg(|c| {
            c.num_layers = 13;
            c.num_experts = 4;
            c.num_selected_experts = 2;
            c.num_q_heads = 2;
            c.num_kv_heads = 1;
            c.key_size = 32;
            c.ffn_size = 256;
            c.emb_size = 256;
            c.vocab_size = 700;
        }),
    );
}
