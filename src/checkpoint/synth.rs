//! Synthetic checkpoints: random but healthy weights in exactly the release's file format.
//!
//! Weights follow the grok-tiny fixture's `init_recipe`: embeddings ~ N(0, (1/embedding_multiplier)^2),
//! linear weights ~ N(0, 1/fan_in) quantized per (row block, output column) as the release does
//! (scale = bf16(max|w| / 127), weight = clip(round(w / scale), -128, 127)), pre-norm scales
//! ~ 1 + 0.1 N, post-norm scales ~ 2 (1 + 0.1 N), final norm ~ 25 (1 + 0.1 N), router
//! ~ N(0, (1.5 / sqrt(emb))^2). The generator is counter based (splitmix64 of the element index),
//! so a tensor is produced in two streaming passes without ever being held in memory.

use super::pickle::Dtype;
use super::pickle_write::{ArraySpec, ObjectSpec, PickleLayout};
use crate::config::GrokConfig;
use crate::naming::{checkpoint_file_name, checkpoint_params, ParamSpec, Role, StoredAs};
use half::bf16;
use rayon::prelude::*;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

/// What [`write_checkpoint`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthStats {
    pub files: usize,
    pub bytes: u64,
    /// Number of parameters (elements of the float32 arrays and int8 weights).
    pub params: u64,
    pub seconds: f64,
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Standard-normal-like value of element `i` of stream `key` (Irwin-Hall sum of four uniforms,
/// unit variance, tails bounded at about 3.46).
fn normal(key: u64, i: u64) -> f32 {
    let r = mix(key.wrapping_add(i.wrapping_mul(GAMMA)));
    let s = (r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48);
    // mean 4 * 32767.5, variance 4 * (65536^2 - 1) / 12
    (s as f32 - 131_070.0) * (1.732_050_8 / 65_536.0)
}

/// Built-in synthetic configs: `tiny`, `small` (~150 MB), `1b` (~1.66 B params), `4gb` (~4.8 GB).
pub fn preset(name: &str) -> Option<GrokConfig> {
    let mut c = GrokConfig::grok_1();
    let (vocab, emb, key, q, kv, layers, ffn, seq) = match name {
        "tiny" => (4096, 256, 32, 8, 2, 2, 512, 256),
        "small" => (32768, 512, 64, 8, 2, 4, 1536, 1024),
        "1b" => (32768, 2048, 128, 16, 4, 8, 3840, 4096),
        "4gb" => (32768, 3072, 128, 24, 4, 7, 8192, 8192),
        _ => return None,
    };
    c.vocab_size = vocab;
    c.emb_size = emb;
    c.key_size = key;
    c.num_q_heads = q;
    c.num_kv_heads = kv;
    c.num_layers = layers;
    c.ffn_size = ffn;
    c.sequence_len = seq;
    c.attn_output_multiplier = 1.0 / (key as f64).sqrt();
    Some(c)
}

/// Write `dir/ckpt-0/tensor{i:05}_000` for every parameter of `cfg`, files in parallel.
pub fn write_checkpoint(dir: &Path, cfg: &GrokConfig, seed: u64) -> io::Result<SynthStats> {
    cfg.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("config: {e}")))?;
    let t0 = Instant::now();
    let out = dir.join("ckpt-0");
    std::fs::create_dir_all(&out)?;
    let specs = checkpoint_params(cfg);
    // Largest files first so the parallel tail is short.
    let mut order: Vec<&ParamSpec> = specs.iter().collect();
    order.sort_by_key(|s| std::cmp::Reverse(s.shape.iter().product::<usize>()));
    let sizes = order
        .par_iter()
        .map(|s| write_param(&out, cfg, s, seed))
        .collect::<io::Result<Vec<u64>>>()?;
    Ok(SynthStats {
        files: specs.len(),
        bytes: sizes.iter().sum(),
        params: specs
            .iter()
            .map(|s| s.shape.iter().product::<usize>() as u64)
            .sum(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn write_param(dir: &Path, cfg: &GrokConfig, spec: &ParamSpec, seed: u64) -> io::Result<u64> {
    let path = dir.join(checkpoint_file_name(spec.index));
    let key = mix(seed ^ mix(spec.index as u64 + 1));
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).map_err(ctx)?);
    let size = match spec.stored {
        StoredAs::F32 => write_f32(&mut w, cfg, spec, key),
        StoredAs::Int8 { scale_blocks } => write_int8(&mut w, spec, scale_blocks, key),
    }
    .map_err(ctx)?;
    w.flush().map_err(ctx)?;
    Ok(size)
}

fn write_f32(w: &mut impl Write, cfg: &GrokConfig, spec: &ParamSpec, key: u64) -> io::Result<u64> {
    let emb = cfg.emb_size as f32;
    // value = mean + std * normal
    let (mean, std) = match spec.role {
        Role::TokenEmbd => (0.0, 1.0 / cfg.embedding_multiplier_scale as f32),
        Role::FfnGateInp => (0.0, 1.5 / emb.sqrt()),
        Role::AttnNorm | Role::FfnNorm => (1.0, 0.1),
        Role::AttnOutputNorm | Role::LayerOutputNorm => (2.0, 0.2),
        Role::OutputNorm => (25.0, 2.5),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{other:?} is not a float32 parameter"),
            ))
        }
    };
    let layout = PickleLayout::new(&ObjectSpec::Array(ArraySpec {
        dtype: Dtype::F32,
        shape: spec.shape.clone(),
    }))?;
    let n = spec.shape.iter().product::<usize>() as u64;
    layout.write(w, |_, w| {
        let mut buf = Vec::with_capacity(1 << 16);
        let mut i = 0u64;
        while i < n {
            let end = (i + (1 << 14)).min(n);
            buf.clear();
            for j in i..end {
                buf.extend_from_slice(&(mean + std * normal(key, j)).to_le_bytes());
            }
            w.write_all(&buf)?;
            i = end;
        }
        Ok(())
    })?;
    Ok(layout.total_len())
}

/// Quantize one value with a bf16 scale as the release does.
fn quantize(v: f32, scale: f32) -> i8 {
    if scale == 0.0 {
        return 0;
    }
    (v / scale).round_ties_even().clamp(-128.0, 127.0) as i8
}

fn write_int8(w: &mut impl Write, spec: &ParamSpec, blocks: usize, key: u64) -> io::Result<u64> {
    let shape = &spec.shape;
    let (n_in, n_out) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let outer: usize = shape[..shape.len() - 2].iter().product();
    let scales_shape = spec.scales_shape.clone().unwrap_or_default();
    let layout = PickleLayout::new(&ObjectSpec::Quantized {
        weight: ArraySpec {
            dtype: Dtype::I8,
            shape: shape.clone(),
        },
        scales: ArraySpec {
            dtype: Dtype::BF16,
            shape: scales_shape,
        },
    })?;
    let std = 1.0 / (n_in as f32).sqrt();
    let rows_per_block = n_in / blocks;
    let mut scales: Vec<bf16> = Vec::with_capacity(outer * blocks * n_out);
    let mut row_buf = vec![0i8; n_out];
    let mut col_max = vec![0f32; n_out];
    let mut col_scale = vec![0f32; n_out];
    layout.write(w, |idx, w| {
        if idx == 1 {
            let bytes: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
            return w.write_all(&bytes);
        }
        for o in 0..outer {
            for b in 0..blocks {
                let rows = (o * n_in + b * rows_per_block)..(o * n_in + (b + 1) * rows_per_block);
                col_max.iter_mut().for_each(|m| *m = 0.0);
                for r in rows.clone() {
                    let base = (r * n_out) as u64;
                    for (c, m) in col_max.iter_mut().enumerate() {
                        *m = m.max((std * normal(key, base + c as u64)).abs());
                    }
                }
                for (c, &m) in col_max.iter().enumerate() {
                    let s = bf16::from_f32(m / 127.0);
                    scales.push(s);
                    col_scale[c] = s.to_f32();
                }
                for r in rows {
                    let base = (r * n_out) as u64;
                    for (c, q) in row_buf.iter_mut().enumerate() {
                        *q = quantize(std * normal(key, base + c as u64), col_scale[c]);
                    }
                    w.write_all(bytemuck::cast_slice(&row_buf))?;
                }
            }
        }
        Ok(())
    })?;
    Ok(layout.total_len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_has_unit_variance_and_zero_mean() {
        let n = 200_000u64;
        let (mut s, mut s2) = (0f64, 0f64);
        for i in 0..n {
            let v = normal(42, i) as f64;
            s += v;
            s2 += v * v;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        assert_ne!(normal(1, 0), normal(2, 0));
    }

    #[test]
    fn quantize_rounds_half_to_even_and_clips() {
        assert_eq!(quantize(2.5, 1.0), 2);
        assert_eq!(quantize(-3.5, 1.0), -4);
        assert_eq!(quantize(1000.0, 1.0), 127);
        assert_eq!(quantize(-1000.0, 1.0), -128);
        assert_eq!(quantize(5.0, 0.0), 0);
    }

    #[test]
    fn presets_are_valid_and_sized_as_documented() {
        let bytes = |c: &GrokConfig| -> u64 {
            checkpoint_params(c)
                .iter()
                .map(|s| {
                    let n = s.shape.iter().product::<usize>() as u64;
                    if s.stored == StoredAs::F32 {
                        4 * n
                    } else {
                        n
                    }
                })
                .sum()
        };
        for name in ["tiny", "small", "1b", "4gb"] {
            let c = preset(name).unwrap();
            c.validate().unwrap();
            for d in [c.emb_size, c.ffn_size, c.q_dim()] {
                assert_eq!(d % 256, 0, "{name}: {d}");
            }
        }
        assert!(preset("huge").is_none());
        let small = bytes(&preset("small").unwrap());
        assert!((100_000_000..200_000_000).contains(&small), "small {small}");
        let params: u64 = checkpoint_params(&preset("1b").unwrap())
            .iter()
            .map(|s| s.shape.iter().product::<usize>() as u64)
            .sum();
        assert!(
            (1_500_000_000..1_700_000_000).contains(&params),
            "1b {params}"
        );
        assert!(bytes(&preset("4gb").unwrap()) >= 4 << 30);
    }
}
