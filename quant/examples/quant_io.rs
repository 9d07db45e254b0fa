//! Drive the quantizers from outside (used by tools/check_quant_gguf_py.py).
//!
//! `quant_io quantize <type> <n_per_row> <in.f32> <out.bin>`: raw little-endian f32 in,
//! quantized rows out. `quant_io dequantize <type> <n_per_row> <in.bin> <out.f32>`: the reverse.
use std::process::ExitCode;

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        return Err("usage: quant_io quantize|dequantize <type> <n_per_row> <in> <out>".into());
    }
    let ty = quant::GgmlType::from_name(&args[2]).ok_or(format!("unknown type {}", args[2]))?;
    let n: usize = args[3].parse().map_err(|e| format!("bad n_per_row: {e}"))?;
    let input = std::fs::read(&args[4]).map_err(|e| format!("{}: {e}", args[4]))?;
    let rb = ty.row_bytes(n).ok_or(format!("{n} not aligned for {ty}"))?;
    let out: Vec<u8> = match args[1].as_str() {
        "quantize" => {
            if input.len() % (4 * n.max(1)) != 0 {
                return Err("input is not whole rows of f32".into());
            }
            let src: Vec<f32> = input
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let mut dst = vec![0u8; src.len() / n.max(1) * rb];
            quant::quantize_rows(ty, &src, n, &mut dst, None).map_err(|e| e.to_string())?;
            dst
        }
        "dequantize" => {
            if rb == 0 || input.len() % rb != 0 {
                return Err("input is not whole rows".into());
            }
            let mut res = Vec::with_capacity(input.len() / rb * n * 4);
            let mut row = vec![0f32; n];
            for r in input.chunks_exact(rb) {
                quant::dequantize_row(ty, r, &mut row).map_err(|e| e.to_string())?;
                res.extend(row.iter().flat_map(|v| v.to_le_bytes()));
            }
            res
        }
        other => return Err(format!("unknown mode {other}")),
    };
    std::fs::write(&args[5], out).map_err(|e| format!("{}: {e}", args[5]))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quant_io: {e}");
            ExitCode::FAILURE
        }
    }
}
