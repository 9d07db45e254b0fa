//! A generation session: the KV cache (f32) and the token ids it holds.

use super::HParams;

/// Receives the input of every weight matrix as the forward pass runs (imatrix collection).
pub trait ActivationSink: Send {
    /// `x` holds `rows × n_in` inputs of matrix `mat` (of `n_mat`, the experts of a merged
    /// tensor) of the GGUF tensor `name`.
    fn input(&mut self, name: &str, mat: usize, n_mat: usize, x: &[f32], n_in: usize);
}

/// Keys and values of every layer for up to `capacity` positions, and the token ids at those
/// positions (the reference masks keys whose token is the pad id).
pub struct Session {
    pub(super) capacity: usize,
    pub(super) tokens: Vec<u32>,
    /// Per layer: `capacity × kv_dim` keys (after RoPE) and values.
    pub(super) k: Vec<Vec<f32>>,
    pub(super) v: Vec<Vec<f32>>,
    pub(super) sink: Option<Box<dyn ActivationSink>>,
}

impl Session {
    /// An empty session for a model with `hp`, holding at most `capacity` positions.
    pub fn new(hp: &HParams, capacity: usize) -> Session {
        let per_layer = capacity * hp.kv_dim();
        Session {
            capacity,
            tokens: Vec::with_capacity(capacity),
            k: (0..hp.n_layers).map(|_| vec![0.0; per_layer]).collect(),
            v: (0..hp.n_layers).map(|_| vec![0.0; per_layer]).collect(),
            sink: None,
        }
    }

    /// Report every matrix input of later forward passes to `sink`.
    pub fn set_sink(&mut self, sink: Box<dyn ActivationSink>) {
        self.sink = Some(sink);
    }

    /// Take the sink back.
    pub fn take_sink(&mut self) -> Option<Box<dyn ActivationSink>> {
        self.sink.take()
    }

    pub(super) fn observe(&mut self, name: &str, mat: usize, n_mat: usize, x: &[f32], n_in: usize) {
        if let Some(s) = self.sink.as_mut() {
            s.input(name, mat, n_mat, x, n_in);
        }
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forget everything (keeps the allocation).
    pub fn clear(&mut self) {
        self.tokens.clear();
    }

    /// The token ids processed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}
