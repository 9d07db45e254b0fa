//! `grok1-quant inspect`: a checkpoint directory's or a GGUF file's tables.

use super::CliResult;
use crate::checkpoint::Checkpoint;
use crate::config::GrokConfig;
use crate::gguf::{GgufArray, GgufFile, GgufValue};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A checkpoint directory or a .gguf file.
    pub path: PathBuf,
    /// Config for a checkpoint directory: `grok-1` or a JSON file.
    #[arg(long, default_value = "grok-1")]
    pub config: String,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

fn short(v: &GgufValue) -> serde_json::Value {
    match v {
        GgufValue::String(s) => json!(s),
        GgufValue::Bool(b) => json!(b),
        GgufValue::F32(x) => json!(x),
        GgufValue::F64(x) => json!(x),
        GgufValue::Array(a) => {
            let n = a.len();
            match a {
                GgufArray::String(s) if n <= 8 => json!(s),
                _ => json!(format!("[{} × {}]", n, a.elem_type().name())),
            }
        }
        other => other.to_i64().map_or(json!(null), |x| json!(x)),
    }
}

pub fn run(a: InspectArgs) -> CliResult {
    if a.path.is_dir() {
        let cfg = GrokConfig::load(&a.config)?;
        let ckpt = Checkpoint::open(&a.path, &cfg)?;
        let mut rows = Vec::new();
        for spec in ckpt.specs().to_vec() {
            let p = ckpt.param(&spec)?;
            rows.push(json!({
                "index": spec.index,
                "file": ckpt.file_path(spec.index).file_name().map(|f| f.to_string_lossy().to_string()),
                "path": spec.path,
                "dtype": format!("{:?}", p.data.dtype),
                "shape": p.data.shape,
                "scales_shape": p.scales.as_ref().map(|s| s.shape.clone()),
            }));
        }
        if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"dir": ckpt.dir(), "config": cfg, "tensors": rows, "total_bytes": ckpt.total_bytes()})
                )?
            );
        } else {
            println!(
                "{}: {} files, {:.2} GB",
                ckpt.dir().display(),
                rows.len(),
                ckpt.total_bytes() as f64 / 1e9
            );
            for r in rows {
                println!(
                    "{:>5} {:<58} {:<5} {:<18} scales {}",
                    r["index"],
                    r["path"].as_str().unwrap_or(""),
                    r["dtype"].as_str().unwrap_or(""),
                    r["shape"].to_string(),
                    r["scales_shape"]
                );
            }
        }
        return Ok(());
    }
    let f = GgufFile::open(&a.path)?;
    let md: serde_json::Map<String, serde_json::Value> = f
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_string(), short(v)))
        .collect();
    let tensors: Vec<serde_json::Value> = f
        .tensors()
        .iter()
        .map(|t| json!({"name": t.name, "type": t.ty.name(), "shape": t.shape, "offset": t.offset, "bytes": t.size}))
        .collect();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"file": a.path, "version": f.version(), "metadata": md, "tensors": tensors})
            )?
        );
        return Ok(());
    }
    println!(
        "{}: GGUF v{}, {} tensors",
        a.path.display(),
        f.version(),
        tensors.len()
    );
    for (k, v) in &md {
        println!("  {k:<44} {v}");
    }
    for t in f.tensors() {
        println!(
            "  {:<36} {:<5} {:<20} {:>12} bytes",
            t.name,
            t.ty.name(),
            format!("{:?}", t.shape),
            t.size
        );
    }
    Ok(())
}
