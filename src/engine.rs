//! Device selection: the same forward pass on the CPU backend or on the GPU (wgpu), behind one
//! small interface the commands use.

use crate::backend::gpu::GpuContext;
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
    Gpu(Box<GpuModel>),
}

pub enum EngineSession {
    Cpu(Session),
    Gpu(Box<GpuSession>),
}

pub type EngineError = Box<dyn std::error::Error>;

impl<'m> Engine<'m> {
    /// Pick the device. `Auto` falls back to the CPU with one line on stderr when no hardware GPU
    /// adapter is found (a software one like lavapipe is slower than the CPU backend); `Gpu` uses
    /// any adapter and makes "none" an error. A model with an expert cache under a RAM budget stays
    /// on the CPU (the GPU path uploads every weight).
    pub fn select(model: &'m Model, device: Device) -> Result<Engine<'m>, EngineError> {
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
            Ok(Engine::Gpu(Box::new(GpuModel::new(ctx, model)?)))
        };
        match device {
            Device::Cpu => Ok(Engine::Cpu(model)),
            Device::Gpu => {
                if model.expert_cache().is_some() {
                    return Err("--device gpu with --ram-budget: the GPU path holds every weight in VRAM; drop the budget or use --device cpu".into());
                }
                gpu(true).map_err(|e| format!("--device gpu: {e}").into())
            }
            Device::Auto => {
                if model.expert_cache().is_some() {
                    eprintln!("device: CPU (an expert cache under --ram-budget runs on the CPU)");
                    return Ok(Engine::Cpu(model));
                }
                match gpu(false) {
                    Ok(e) => Ok(e),
                    Err(e) => {
                        eprintln!("device: CPU (no usable GPU: {e})");
                        Ok(Engine::Cpu(model))
                    }
                }
            }
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
