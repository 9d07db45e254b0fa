//! Reading the Grok-1 JAX checkpoint (`ckpt-0/tensor{i:05}_000`, one pickle per parameter) and
//! writing synthetic checkpoints in exactly the same format.
//!
//! * [`pickle`]: a small non-executing pickle reader yielding zero-copy array views.
//! * [`pickle_write`]: the byte layout CPython's pickler gives these objects (protocol 4).

pub mod pickle;
pub mod pickle_write;
