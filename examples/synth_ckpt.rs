//! Write a synthetic Grok checkpoint: `cargo run --release --example synth_ckpt -- DIR
//! [--preset tiny|small|1b|4gb | --config CONFIG.json] [--seed N]`.
//!
//! Also copies nothing and needs no tokenizer; check the result with
//! `python3 tools/check_synth_pickle.py DIR --config CONFIG.json` (or `--preset`).

use grok1_quant::checkpoint::{preset, write_checkpoint};
use grok1_quant::config::GrokConfig;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut cfg = preset("tiny").expect("built-in preset");
    let mut seed = 1234u64;
    while let Some(a) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        let r: Result<(), String> = match a.as_str() {
            "--preset" => value("--preset").and_then(|p| {
                cfg = preset(&p).ok_or(format!("unknown preset '{p}' (tiny, small, 1b, 4gb)"))?;
                Ok(())
            }),
            "--config" => value("--config").and_then(|p| {
                cfg = GrokConfig::from_file(p.as_ref()).map_err(|e| e.to_string())?;
                Ok(())
            }),
            "--seed" => value("--seed").and_then(|s| {
                seed = s.parse().map_err(|_| format!("bad --seed '{s}'"))?;
                Ok(())
            }),
            _ if dir.is_none() && !a.starts_with('-') => {
                dir = Some(PathBuf::from(&a));
                Ok(())
            }
            _ => Err(format!("unexpected argument '{a}'")),
        };
        if let Err(e) = r {
            eprintln!("synth_ckpt: {e}");
            return ExitCode::from(2);
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: synth_ckpt DIR [--preset tiny|small|1b|4gb | --config FILE] [--seed N]");
        return ExitCode::from(2);
    };
    match write_checkpoint(&dir, &cfg, seed) {
        Ok(s) => {
            let cfg_path = dir.join("config.json");
            if let Err(e) = std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()) {
                eprintln!("synth_ckpt: {}: {e}", cfg_path.display());
                return ExitCode::FAILURE;
            }
            println!(
                "wrote {} files, {:.3} GB, {} params in {:.2} s ({:.0} MB/s) to {}",
                s.files,
                s.bytes as f64 / 1e9,
                s.params,
                s.seconds,
                s.bytes as f64 / 1e6 / s.seconds.max(1e-9),
                dir.join("ckpt-0").display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synth_ckpt: {e}");
            ExitCode::FAILURE
        }
    }
}
