//! `grok1-quant bench`: prefill/decode tok/s and decode weight-read bandwidth vs the machine's.

use super::common::ModelArg;
use super::CliResult;
use crate::cache::args::CacheArgs;
use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Prompt tokens for the prefill measurement.
    #[arg(short = 'p', long, default_value_t = 128)]
    pub prefill: usize,
    /// Decode steps.
    #[arg(short = 'n', long, default_value_t = 32)]
    pub decode: usize,
    /// Repetitions (best is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// auto: the GPU if a hardware adapter exists, else the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: crate::engine::Device,
    /// On the GPU, after the timed runs: decode `--decode` more tokens with every kernel
    /// timed on the GPU (timestamp queries) and print the time per kernel and token.
    #[arg(long)]
    pub gpu_profile: bool,
}

pub fn run(a: BenchArgs) -> CliResult {
    let mut model = a.model.load()?;
    a.cache.apply(&mut model, true)?;
    let engine = crate::engine::Engine::select(&model, a.device, &a.cache.options())?;
    let r = crate::bench::bench(&model, &engine, a.prefill, a.decode, a.reps, a.seed)?;
    if let crate::engine::Engine::Gpu(gm) = &engine {
        let ctx = gm.context();
        if ctx.is_software() {
            eprintln!(
                "note: {} is a software adapter: GPU figures are a smoke test only",
                ctx.adapter_name()
            );
        }
        let iters = if ctx.is_software() { 2 } else { 50 };
        for k in crate::backend::gpu::bench_kernels(ctx, 4096, 1024, iters)? {
            println!(
                "gpu kernel {} {:>5} {}×{}: {:.3} GB/s of weights ({} bytes, {:.2} ms)",
                k.name,
                k.ty.name(),
                k.n_out,
                k.n_in,
                k.gbps,
                k.bytes,
                k.seconds * 1e3
            );
        }
    }
    if a.gpu_profile {
        let crate::engine::Engine::Gpu(gm) = &engine else {
            return Err("--gpu-profile needs the GPU (--device gpu)".into());
        };
        profile_decode(gm, a.decode.max(1), a.seed)?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} [{}] on {}, {} threads: prefill {:.1} tok/s ({} tokens), decode {:.2} tok/s; decode reads {:.1} MB/token = {:.2} GB/s (best run); median per run of decode GB/s ÷ the triad just before it: {:.2} (triad median {:.2} GB/s)",
            r.model,
            r.ty,
            r.device,
            r.threads,
            r.prefill_tok_s,
            r.prefill_tokens,
            r.decode_tok_s,
            r.decode_weight_bytes as f64 / 1e6,
            r.decode_weight_gbps,
            r.decode_bandwidth_fraction,
            r.memory_gbps
        );
    }
    a.cache.finish_with(&model, engine.vram_stats())?;
    Ok(())
}

/// Decode `steps` tokens (ids from `seed`) with every kernel timed on the GPU; print each
/// kernel's GPU time per token, most first.
fn profile_decode(gm: &crate::model::gpu::GpuModel, steps: usize, seed: u64) -> CliResult {
    let ctx = gm.context();
    let vocab = gm.hparams().vocab as u64;
    let mut s = gm.session(steps)?;
    // Token ids as `crate::bench` draws them.
    let mut rng = crate::sampling::Rng::new(seed);
    ctx.set_profiling(true)?;
    let t = std::time::Instant::now();
    for _ in 0..steps {
        let id = 1 + (rng.next_u64() % (vocab - 1)) as u32;
        gm.forward(&mut s, &[id], false)?;
    }
    let wall = t.elapsed().as_secs_f64();
    let (times, untimed) = ctx.profile_report();
    ctx.set_profiling(false)?;
    let total: f64 = times.iter().map(|k| k.seconds).sum();
    println!(
        "gpu profile: {steps} decode steps, kernels {:.1} µs of GPU time per token ({:.1} µs wall per token while profiling; each kernel in a pass of its own){}",
        total / steps as f64 * 1e6,
        wall / steps as f64 * 1e6,
        if untimed > 0 {
            format!(", {untimed} dispatches untimed")
        } else {
            String::new()
        }
    );
    for k in &times {
        println!(
            "  {:>8.1} µs/token {:>5.1} %  {:>6.2} calls/token  {:>7.2} µs/call  {}",
            k.seconds / steps as f64 * 1e6,
            100.0 * k.seconds / total.max(1e-12),
            k.calls as f64 / steps as f64,
            k.seconds / k.calls.max(1) as f64 * 1e6,
            k.label
        );
    }
    Ok(())
}
