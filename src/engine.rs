//! Device selection: the same forward pass on the CPU backend or on the GPU (wgpu), behind one
//! small interface the commands use.

use crate::backend::gpu::GpuContext;
use crate::cache::vram::VramStats;
use crate::cache::CacheOptions;
use crate::model::gpu::{GpuModel, GpuSession};
use crate::model::{HParams, Logits, Model, Session};

/// `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The GPU if an adapter exists, else the CPU (said on stderr).
    Auto,
    Cpu,
    Gpu,
}

pub enum Engine<'m> {
    Cpu(&'m Model),
    Gpu(Box<GpuModel<'m>>),
}

pub enum EngineSession {
    Cpu(Session),
    Gpu(Box<GpuSession>),
}

pub type EngineError = Box<dyn std::error::Error>;

impl<'m> Engine<'m> {
    /// Pick the device. `Auto` falls back to the CPU with one line on stderr when no hardware GPU
    /// adapter is found (a software one like lavapipe is slower than the CPU backend); `Gpu` uses
    /// any adapter and makes "none" an error. On the GPU, `cache.vram_budget` bounds the VRAM
    /// held for experts (the VRAM tier, filled from the model's RAM tier when it has one); a
    /// RAM budget without a VRAM budget stays on the CPU (the GPU would upload every expert).
    pub fn select(
        model: &'m Model,
        device: Device,
        cache: &CacheOptions,
    ) -> Result<Engine<'m>, EngineError> {
        let ram_bounded = model.expert_cache().is_some_and(|c| c.is_bounded());
        let cpu = |model: &'m Model| -> Result<Engine<'m>, EngineError> {
            crate::cache::args::prepare_cpu(model, cache.repack)?;
            Ok(Engine::Cpu(model))
        };
        let vram = cache.vram_budget;
        let gpu = |allow_software: bool| -> Result<Engine<'m>, EngineError> {
            let ctx = GpuContext::new()?;
            if ctx.is_software() && !allow_software {
                return Err(format!(
                    "the only adapter, {}, is a software renderer (slower than the CPU backend; --device gpu uses it anyway)",
                    ctx.adapter_name()
                )
                .into());
            }
            eprintln!("device: GPU ({})", ctx.adapter_name());
            let gm = GpuModel::open(ctx, model, vram, cache.policy)?;
            eprintln!("{}", gm.memory_report());
            Ok(Engine::Gpu(Box::new(gm)))
        };
        match device {
            Device::Cpu => {
                if vram.is_some() {
                    eprintln!("note: --vram-budget has no effect on the CPU");
                }
                cpu(model)
            }
            Device::Gpu => {
                if ram_bounded && vram.is_none() {
                    return Err("--device gpu with --ram-budget needs --vram-budget too (without it every expert is uploaded to VRAM); or use --device cpu".into());
                }
                gpu(true).map_err(|e| format!("--device gpu: {e}").into())
            }
            Device::Auto => {
                if ram_bounded && vram.is_none() {
                    eprintln!("device: CPU (--ram-budget without --vram-budget runs on the CPU)");
                    return cpu(model);
                }
                match gpu(false) {
                    Ok(e) => Ok(e),
                    Err(e) => {
                        eprintln!("device: CPU (no usable GPU: {e})");
                        cpu(model)
                    }
                }
            }
        }
    }

    /// The VRAM tier's counters, when the engine is a GPU model under `--vram-budget`.
    pub fn vram_stats(&self) -> Option<VramStats> {
        match self {
            Engine::Gpu(g) => g.vram_stats(),
            Engine::Cpu(_) => None,
        }
    }

    pub fn hparams(&self) -> &HParams {
        match self {
            Engine::Cpu(m) => m.hparams(),
            Engine::Gpu(g) => g.hparams(),
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Engine::Gpu(_))
    }

    /// A fresh session holding up to `capacity` positions.
    pub fn session(&self, capacity: usize) -> Result<EngineSession, EngineError> {
        Ok(match self {
            Engine::Cpu(m) => EngineSession::Cpu(Session::new(m.hparams(), capacity)),
            Engine::Gpu(g) => EngineSession::Gpu(Box::new(g.session(capacity)?)),
        })
    }

    /// Run `tokens` after what the session holds and return the logits asked for.
    pub fn forward(
        &self,
        s: &mut EngineSession,
        tokens: &[u32],
        want: Logits,
    ) -> Result<Vec<f32>, EngineError> {
        match (self, s) {
            (Engine::Cpu(m), EngineSession::Cpu(s)) => Ok(m.forward(s, tokens, want)?),
            (Engine::Gpu(g), EngineSession::Gpu(s)) => {
                let vocab = g.hparams().vocab;
                let all = matches!(want, Logits::All | Logits::From(_));
                let logits = g.forward(s, tokens, all)?;
                Ok(match want {
                    Logits::From(k) => logits[k.min(tokens.len()) * vocab..].to_vec(),
                    Logits::None => Vec::new(),
                    _ => logits,
                })
            }
            _ => Err("session belongs to another device".into()),
        }
    }
}
