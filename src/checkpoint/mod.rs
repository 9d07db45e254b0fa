//! Reading the Grok-1 JAX checkpoint (`ckpt-0/tensor{i:05}_000`, one pickle per parameter) and
//! writing synthetic checkpoints in exactly the same format.
//!
//! * [`pickle`]: a small non-executing pickle reader yielding zero-copy array views.
//! * [`pickle_write`]: the byte layout CPython's pickler gives these objects (protocol 4).
//! * [`reader`]: [`Checkpoint`] (directory, file set, validated [`Param`]s).
//! * [`synth`]: [`write_checkpoint`] and the synthetic [`preset`]s.

pub mod pickle;
pub mod pickle_write;
pub mod reader;
pub mod synth;

pub use pickle::{ArrayView, Dtype, PickleError, PickleObject};
pub use reader::{Checkpoint, CheckpointError, Param};
pub use synth::{preset, write_checkpoint, SynthStats};
