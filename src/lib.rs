//! grok1-quant: convert the Grok-1 JAX checkpoint to GGUF and run it.
//!
//! Data flows one way: checkpoint → convert → gguf → model → backend, with `quant` (block
//! formats) underneath and [`config`]/[`naming`] as leaves everyone may use.

pub mod backend;
pub mod bench;
pub mod cache;
pub mod checkpoint;
pub mod cli;
pub mod compare;
pub mod config;
pub mod convert;
pub mod engine;
pub mod gguf;
pub mod imatrix;
pub mod model;
pub mod naming;
pub mod perplexity;
pub mod plot;
pub mod recipe;
pub mod requantize;
pub mod sampling;
pub mod tokenizer;
