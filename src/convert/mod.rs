//! `convert`: the Grok-1 checkpoint → GGUF, streaming, in parallel, resumable.
//!
//! Every output file is planned up front (header, tensor offsets, total size), written to
//! `OUT.part` at precomputed offsets as bands of rows are produced on all cores, recorded tensor
//! by tensor in a journal, and renamed to its final name only when complete and synced. Peak
//! memory is a few bands per thread, independent of model size.

mod encode;
mod journal;
pub mod metadata;
mod source;
mod stream;
mod transpose;

pub use encode::EncodeStats;

use crate::checkpoint::{Checkpoint, CheckpointError, Param};
use crate::config::GrokConfig;
use crate::gguf::{GgufArray, GgufError, GgufFileWriter, GgufLayout, GgufValue, TensorSpec};
use crate::naming::{checkpoint_params, gguf_shape, ParamSpec, Role, StoredAs};
use crate::tokenizer::{SpmModel, TokenizerError};
use journal::{Journal, JournalError};
use quant::GgmlType;
use source::{RowSource, SourceData};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use std::time::UNIX_EPOCH;

/// One requested output file.
#[derive(Clone, Debug)]
pub struct OutputSpec {
    /// A mixed-precision recipe (q4_k_m, …) instead of one type for every matrix; `ty` is then
    /// the recipe's base type.
    pub recipe: Option<crate::recipe::Recipe>,
    pub ty: GgmlType,
    pub path: PathBuf,
}

/// Everything `convert` needs to know.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub ckpt_dir: PathBuf,
    pub config: GrokConfig,
    pub tokenizer: Option<PathBuf>,
    pub outputs: Vec<OutputSpec>,
    /// Continue an interrupted conversion from its `.part` file and journal.
    pub resume: bool,
    /// Overwrite an existing output or abandon an existing `.part`.
    pub force: bool,
    /// Type of `token_embd` (also the tied output projection); default: see [`embd_type_for`].
    pub token_embd_type: Option<GgmlType>,
    pub progress: bool,
    pub model_name: String,
    /// Set from a Ctrl-C handler: stop at the next band, leaving a resumable `.part`.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Importance matrix for the quantizers (exact Q8_0 tensors ignore it: they keep the
    /// checkpoint's values).
    pub imatrix: Option<Arc<crate::imatrix::Imatrix>>,
    /// Write whole pages with `O_DIRECT` (bypassing the page cache) where the file system
    /// allows; `false` writes everything through the page cache.
    pub direct_io: bool,
}

/// What a conversion did.
#[derive(Clone, Debug)]
pub struct ConvertSummary {
    pub tensors: usize,
    pub bytes_in: u64,
    pub outputs: Vec<OutputSummary>,
    pub seconds: f64,
    pub stats: EncodeStats,
    /// Tensors kept from an interrupted run (verified), per output summed.
    pub resumed_tensors: usize,
    /// Tensors written in another type than requested (not block aligned), with why.
    pub fallbacks: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct OutputSummary {
    pub path: PathBuf,
    pub ty: GgmlType,
    pub bytes: u64,
    /// Bits per weight over all tensors.
    pub bpw: f64,
    /// Bytes written with `O_DIRECT` in this run (0 with buffered writes, or where the file
    /// system refused direct I/O).
    pub direct_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("tokenizer {path}: {source}")]
    Tokenizer {
        path: PathBuf,
        source: TokenizerError,
    },
    #[error("tokenizer {path}: {found} pieces, but the config says vocab_size {expected}")]
    VocabMismatch {
        path: PathBuf,
        expected: usize,
        found: usize,
    },
    /// The GGUF error names the file itself.
    #[error("{source}")]
    Gguf { path: PathBuf, source: GgufError },
    #[error("disk full while writing {path}: {source}; free some space, then run the same command with --resume")]
    DiskFull {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{0} exists; pass --force to overwrite it")]
    Exists(PathBuf),
    #[error("{0} exists from an interrupted conversion: pass --resume to continue it, or --force to start over")]
    PartExists(PathBuf),
    #[error("--resume: {0} does not exist (nothing to resume); run without --resume")]
    NothingToResume(PathBuf),
    #[error("--resume: {path} has {found} bytes, the plan needs {expected}; run with --force to start over")]
    PartSize {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("not enough disk space for {path}: {need} more bytes needed, {free} free")]
    NoSpace { path: PathBuf, need: u64, free: u64 },
    #[error("tensor {tensor}: {what}")]
    Tensor { tensor: String, what: String },
    #[error("interrupted: the finished tensors are kept in the .part file(s); run the same command with --resume to continue")]
    Interrupted,
    #[error("cannot start {threads} converter threads: {reason}")]
    Workers { threads: usize, reason: String },
    #[error("two outputs have the same path {0}")]
    DuplicateOutput(PathBuf),
}

/// The default type of `token_embd` for a file whose matrices are `ty`: exact types keep the
/// source's f32 embeddings exact (so Q8_0 computes exactly what F32 does), 4/5-bit files use
/// Q6_K as llama.cpp does for a tied output projection.
pub fn embd_type_for(ty: GgmlType) -> GgmlType {
    match ty {
        GgmlType::F32 | GgmlType::Q8_0 => GgmlType::F32,
        GgmlType::F16 => GgmlType::F16,
        GgmlType::BF16 => GgmlType::BF16,
        _ => GgmlType::Q6_K,
    }
}

/// The GGUF tensor order: global tensors, then layer by layer in numeric order.
fn gguf_order(specs: &[ParamSpec]) -> Vec<ParamSpec> {
    let rank = |r: Role| match r {
        Role::TokenEmbd => 0,
        Role::OutputNorm => 1,
        Role::AttnNorm => 2,
        Role::AttnQ => 3,
        Role::AttnK => 4,
        Role::AttnV => 5,
        Role::AttnOutput => 6,
        Role::AttnOutputNorm => 7,
        Role::FfnNorm => 8,
        Role::FfnGateInp => 9,
        Role::FfnGateExps => 10,
        Role::FfnUpExps => 11,
        Role::FfnDownExps => 12,
        Role::LayerOutputNorm => 13,
    };
    let mut v = specs.to_vec();
    v.sort_by_key(|s| (s.layer.map_or(0, |l| l + 1), rank(s.role)));
    v
}

/// Row geometry of a parameter: (experts, n_in = GGUF row length, n_out per expert, transpose).
fn geometry(spec: &ParamSpec) -> (usize, usize, usize, bool) {
    let s = &spec.shape;
    match spec.role {
        Role::TokenEmbd => (1, s[1], s[0], false),
        Role::FfnGateExps | Role::FfnUpExps | Role::FfnDownExps => (s[0], s[1], s[2], true),
        Role::AttnK | Role::AttnQ | Role::AttnV | Role::AttnOutput | Role::FfnGateInp => {
            (1, s[0], s[1], true)
        }
        _ => (1, s[0], 1, false),
    }
}

/// The type a tensor gets in an output of type `ty`, and a note when it had to fall back.
fn tensor_type(
    spec: &ParamSpec,
    ty: GgmlType,
    embd: GgmlType,
    n_in: usize,
) -> (GgmlType, Option<String>) {
    let want = match spec.role {
        Role::TokenEmbd => embd,
        r if r.is_matmul_weight() => ty,
        _ => GgmlType::F32,
    };
    if n_in % want.block_size() == 0 {
        return (want, None);
    }
    let fallback = [GgmlType::Q8_0, GgmlType::F16]
        .into_iter()
        .find(|t| n_in % t.block_size() == 0)
        .unwrap_or(GgmlType::F32);
    let note = format!(
        "{}: rows of {n_in} are not a multiple of {}'s block of {}, written as {}",
        spec.role.gguf_name(spec.layer),
        want,
        want.block_size(),
        fallback
    );
    (fallback, Some(note))
}

/// Rows per band, never crossing an expert boundary, a multiple of 32 rows (the transpose's
/// widest SIMD block) where that many fit. f32 sources: about 4 MiB per band. int8 sources:
/// about 2 MiB of int8 (8 MiB once decoded to f32 for the quantizers); the transpose reads one
/// source page per input for every band, so wide bands keep the page walks per byte low.
fn band_rows(n_in: usize, n_out: usize, int8: bool) -> usize {
    let (budget, per_row) = if int8 {
        (2 << 20, n_in)
    } else {
        (4 << 20, n_in.saturating_mul(4))
    };
    let rows = budget / per_row.max(1);
    let rows = match rows {
        32.. => rows / 32 * 32,
        16.. => rows / 16 * 16,
        _ => rows,
    };
    rows.clamp(1, n_out.max(1))
}

fn is_int8(spec: &ParamSpec) -> bool {
    matches!(spec.stored, StoredAs::Int8 { .. })
}

/// The bands of one expert: (first row, rows).
fn bands_of_expert(e: usize, n_in: usize, n_out: usize, int8: bool) -> Vec<(usize, usize)> {
    let step = band_rows(n_in, n_out, int8);
    (0..n_out)
        .step_by(step)
        .map(|o| (e * n_out + o, step.min(n_out - o)))
        .collect()
}

struct Output {
    spec: OutputSpec,
    part: PathBuf,
    /// Type of each tensor, in GGUF order.
    types: Vec<GgmlType>,
    writer: GgufFileWriter,
    journal: Mutex<Journal>,
}

/// A hash of an importance matrix's statistics (part of the resume plan and the metadata).
fn imatrix_hash(im: &crate::imatrix::Imatrix) -> u64 {
    let mut bytes = Vec::new();
    for (name, e) in &im.entries {
        bytes.extend_from_slice(name.as_bytes());
        for v in e.sums.iter().chain(&e.counts) {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

fn append_ext(p: &Path, ext: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

fn hash_bands(hashes: &[u64]) -> u64 {
    let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.to_le_bytes()).collect();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// A GGUF write error; running out of space gets its own clear message.
fn gguf_err(path: &Path) -> impl FnOnce(GgufError) -> ConvertError + '_ {
    move |source| match source {
        GgufError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
            ConvertError::DiskFull {
                path: path.to_path_buf(),
                source,
            }
        }
        source => ConvertError::Gguf {
            path: path.to_path_buf(),
            source,
        },
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ConvertError + '_ {
    move |source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Free bytes on the filesystem holding `path`.
fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is a plain C struct of integers, for which all-zero bytes are valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    (st.f_bavail as u64).checked_mul(st.f_frsize as u64)
}

/// Convert a checkpoint to one or more GGUF files.
pub fn convert(opts: &ConvertOptions) -> Result<ConvertSummary, ConvertError> {
    let start = Instant::now();
    let cfg = &opts.config;
    for (i, a) in opts.outputs.iter().enumerate() {
        if opts.outputs[..i].iter().any(|b| b.path == a.path) {
            return Err(ConvertError::DuplicateOutput(a.path.clone()));
        }
    }
    let ckpt = Checkpoint::open(&opts.ckpt_dir, cfg)?;
    let tok_path = Checkpoint::find_tokenizer(&opts.ckpt_dir, opts.tokenizer.as_deref())?;
    let tok = SpmModel::from_file(&tok_path).map_err(|source| ConvertError::Tokenizer {
        path: tok_path.clone(),
        source,
    })?;
    if tok.pieces.len() != cfg.vocab_size {
        return Err(ConvertError::VocabMismatch {
            path: tok_path,
            expected: cfg.vocab_size,
            found: tok.pieces.len(),
        });
    }
    let specs = gguf_order(&checkpoint_params(cfg));
    // Parse and check every input file before any output exists, so a truncated or foreign
    // file late in the checkpoint fails in seconds rather than hours into the conversion
    // (pickle parsing reads only the opcodes, not the array payloads).
    let mut params = Vec::with_capacity(specs.len());
    for spec in &specs {
        let param = ckpt.param(spec)?;
        row_source(&param, spec)
            .validate()
            .map_err(|what| ConvertError::Tensor {
                tensor: format!("{} ({})", spec.path, param.file.display()),
                what,
            })?;
        params.push(param);
    }
    // Input identity for the resume plan: every file's size and modification time.
    let file_bytes: Vec<u64> = specs
        .iter()
        .map(|s| {
            let p = ckpt.file_path(s.index);
            std::fs::metadata(&p).map(|m| m.len()).map_err(io_err(&p))
        })
        .collect::<Result<_, _>>()?;
    let fingerprint = {
        let mut h = Vec::new();
        for s in &specs {
            let p = ckpt.file_path(s.index);
            let m = std::fs::metadata(&p).map_err(io_err(&p))?;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64);
            h.extend_from_slice(&m.len().to_le_bytes());
            h.extend_from_slice(&mtime.to_le_bytes());
        }
        xxhash_rust::xxh3::xxh3_64(&h)
    };
    let mut fallbacks = Vec::new();

    // Plan every output.
    let mut outputs = Vec::new();
    for out in &opts.outputs {
        let embd = opts.token_embd_type.unwrap_or_else(|| match out.recipe {
            Some(r) => r.embd_type(),
            None => embd_type_for(out.ty),
        });
        let mut types = Vec::new();
        let mut tensors = Vec::new();
        for spec in &specs {
            let (_, n_in, _, _) = geometry(spec);
            let ty = match (out.recipe, spec.layer) {
                (Some(r), layer) => r
                    .matrix_type(spec.role, layer.unwrap_or(0), cfg.num_layers)
                    .unwrap_or(out.ty),
                (None, _) => out.ty,
            };
            let (t, note) = tensor_type(spec, ty, embd, n_in);
            if let Some(n) = note {
                fallbacks.push(format!("{}: {n}", out.path.display()));
            }
            types.push(t);
            tensors.push(TensorSpec {
                name: spec.role.gguf_name(spec.layer),
                shape: gguf_shape(spec),
                ty: t,
            });
        }
        let mut md = metadata::grok_metadata(cfg, &tok, out.ty, &opts.model_name);
        if let Some(r) = out.recipe {
            md.insert("general.file_type", GgufValue::U32(r.file_type()));
            md.insert("grok1_quant.recipe", GgufValue::String(r.name()));
            md.insert(
                "grok1_quant.tensor_types",
                GgufValue::Array(GgufArray::String(
                    tensors
                        .iter()
                        .map(|t| format!("{}:{}", t.name, t.ty.name()))
                        .collect(),
                )),
            );
        }
        if let Some(im) = &opts.imatrix {
            md.insert(
                "grok1_quant.imatrix_datasets",
                GgufValue::Array(GgufArray::String(im.datasets.clone())),
            );
            md.insert("grok1_quant.imatrix_hash", GgufValue::U64(imatrix_hash(im)));
        }
        let layout = GgufLayout::new(md, tensors, 32).map_err(|source| ConvertError::Gguf {
            path: out.path.clone(),
            source,
        })?;
        let mut plan = layout.header_bytes();
        plan.extend_from_slice(&layout.file_size().to_le_bytes());
        plan.extend_from_slice(&fingerprint.to_le_bytes());
        plan.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
        let plan = xxhash_rust::xxh3::xxh3_64(&plan);

        let part = append_ext(&out.path, ".part");
        let jpath = append_ext(&out.path, ".journal");
        if out.path.exists() && !opts.force {
            return Err(ConvertError::Exists(out.path.clone()));
        }
        let (mut writer, journal) = if opts.resume {
            if !part.exists() {
                return Err(ConvertError::NothingToResume(part));
            }
            let journal = Journal::open(&jpath, plan)?;
            let found = std::fs::metadata(&part).map_err(io_err(&part))?.len();
            let opened = if found != layout.file_size() {
                Err(ConvertError::PartSize {
                    path: part.clone(),
                    expected: layout.file_size(),
                    found,
                })
            } else {
                GgufFileWriter::open_existing(&part, layout.clone()).map_err(|source| {
                    ConvertError::Gguf {
                        path: part.clone(),
                        source,
                    }
                })
            };
            let writer = match opened {
                Ok(w) => w,
                // Killed while the .part was being created: nothing was finished, so
                // nothing is lost by laying it out again.
                Err(_) if journal.done().is_empty() => {
                    GgufFileWriter::create(&part, layout).map_err(gguf_err(&part))?
                }
                Err(e) => return Err(e),
            };
            (writer, journal)
        } else {
            if part.exists() && !opts.force {
                return Err(ConvertError::PartExists(part));
            }
            if let Some(free) = free_space(&out.path) {
                if free < layout.file_size() {
                    return Err(ConvertError::NoSpace {
                        path: out.path.clone(),
                        need: layout.file_size(),
                        free,
                    });
                }
            }
            // The journal first: a kill right after leaves no .part, so nothing to resume.
            let journal = Journal::create(&jpath, plan)?;
            let writer = GgufFileWriter::create(&part, layout).map_err(gguf_err(&part))?;
            (writer, journal)
        };
        if opts.direct_io {
            writer.enable_direct_io();
        }
        outputs.push(Output {
            spec: out.clone(),
            part,
            types,
            writer,
            journal: Mutex::new(journal),
        });
    }

    // Verify what an interrupted run left, tensor by tensor.
    let mut resumed = 0;
    for out in &outputs {
        let done: Vec<(usize, u64)> = {
            let j = out.journal.lock().expect("journal lock");
            j.done().iter().map(|(&k, &v)| (k, v)).collect()
        };
        for (t, hash) in done {
            let ok = t < specs.len() && verify_tensor(out, t, &specs[t])? == hash;
            let mut j = out.journal.lock().expect("journal lock");
            if ok {
                resumed += 1;
            } else {
                j.forget(t);
            }
        }
    }

    let bytes_in: u64 = file_bytes.iter().sum();
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(bytes_in);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("static template"),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };

    // Fault-injection knob for the kill/resume tests: a pause per band makes "killed mid-way"
    // independent of how fast this machine converts. Never set in normal use.
    let throttle = std::env::var("GROK1_QUANT_THROTTLE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_millis);
    let mut jobs = Vec::new();
    for (t, (spec, param)) in specs.iter().zip(&params).enumerate() {
        let needed: Vec<&Output> = outputs
            .iter()
            .filter(|o| {
                !o.journal
                    .lock()
                    .expect("journal lock")
                    .done()
                    .contains_key(&t)
            })
            .collect();
        if needed.is_empty() {
            bar.inc(file_bytes[t]);
            continue;
        }
        let name = spec.role.gguf_name(spec.layer);
        let src = row_source(param, spec);
        let bands: Vec<(usize, usize)> = (0..src.experts)
            .flat_map(|e| bands_of_expert(e, src.n_in, src.n_out, is_int8(spec)))
            .collect();
        let imatrix_rows = (0..src.experts)
            .map(|e| {
                opts.imatrix
                    .as_ref()
                    .and_then(|im| im.importance(&name, e))
                    .filter(|w| w.len() == src.n_in)
            })
            .collect();
        let cov_factors = match opts.imatrix.as_ref() {
            Some(im) if needed.iter().any(|o| quant::gptq::supports(o.types[t])) => im
                .factors(&name, src.experts, src.n_in)
                .map_err(|what| ConvertError::Tensor {
                    tensor: name.clone(),
                    what,
                })?,
            _ => vec![None; src.experts],
        };
        let per_band_in = file_bytes[t] / bands.len().max(1) as u64;
        jobs.push(stream::TensorJob::new(
            t,
            name,
            param,
            src,
            needed,
            bands,
            imatrix_rows,
            cov_factors,
            per_band_in,
        ));
    }
    let ctx = stream::StreamCtx {
        cancel: opts.cancel.as_deref(),
        throttle,
        bar: &bar,
        threads: stream_threads(opts.direct_io),
    };
    let stats = stream::run(&jobs, &ctx)?;
    drop(jobs);
    bar.finish_and_clear();

    // Sync, then give each file its final name.
    let mut summaries = Vec::new();
    for out in outputs {
        out.writer.sync_all().map_err(gguf_err(&out.part))?;
        std::fs::rename(&out.part, &out.spec.path).map_err(io_err(&out.spec.path))?;
        let jpath = out
            .journal
            .lock()
            .expect("journal lock")
            .path()
            .to_path_buf();
        std::fs::remove_file(&jpath).map_err(io_err(&jpath))?;
        if let Some(dir) = out.spec.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let elems: u64 = specs
            .iter()
            .map(|s| s.shape.iter().map(|&d| d as u64).product::<u64>())
            .sum();
        let data: u64 = (0..specs.len())
            .map(|t| out.writer.layout().tensor_size(t))
            .sum();
        summaries.push(OutputSummary {
            direct_bytes: out.writer.direct_bytes(),
            bytes: out.writer.layout().file_size(),
            bpw: data as f64 * 8.0 / elems.max(1) as f64,
            path: out.spec.path,
            ty: out.spec.ty,
        });
    }
    Ok(ConvertSummary {
        tensors: specs.len(),
        bytes_in,
        outputs: summaries,
        seconds: start.elapsed().as_secs_f64(),
        stats,
        resumed_tensors: resumed,
        fallbacks,
    })
}

fn row_source<'a>(param: &'a Param, spec: &ParamSpec) -> RowSource<'a> {
    let (experts, n_in, n_out, transpose) = geometry(spec);
    let data = match spec.stored {
        StoredAs::F32 => SourceData::F32(param.data_bytes()),
        StoredAs::Int8 { scale_blocks } => SourceData::Int8 {
            weight: param.data_bytes(),
            scales: param.scales_bytes(),
            scale_blocks,
        },
    };
    RowSource {
        data,
        experts,
        n_in,
        n_out,
        transpose,
    }
}

/// Direct writes in flight beyond the cores' own: with `O_DIRECT` a worker waits for the device
/// while its band is written, so the stream runs this many extra workers to keep the cores
/// encoding and the device queue non-empty (on the 2-core development box, 2 → 4 → 6 → 8
/// workers took a 4.8 GB conversion from 14.8 to 10.3, 7.0 and 6.2 s wall).
const IO_WORKERS: usize = 6;

/// Worker threads of the band stream: the cores (or `--threads`), plus [`IO_WORKERS`] when
/// writes bypass the page cache.
fn stream_threads(direct_io: bool) -> usize {
    let cores = rayon::current_num_threads().max(1);
    if direct_io {
        cores + IO_WORKERS
    } else {
        cores
    }
}

/// Recompute a finished tensor's hash from the `.part` file, band by band as it was written.
fn verify_tensor(out: &Output, t: usize, spec: &ParamSpec) -> Result<u64, ConvertError> {
    let (experts, n_in, n_out, _) = geometry(spec);
    let row_bytes = out.types[t].row_bytes(n_in).unwrap_or(0);
    let mut hashes = Vec::new();
    let mut buf = Vec::new();
    for e in 0..experts {
        for (row0, nrows) in bands_of_expert(e, n_in, n_out, is_int8(spec)) {
            buf.resize(nrows * row_bytes, 0);
            let off = out.writer.layout().tensor_offset(t) + (row0 * row_bytes) as u64;
            out.writer
                .read_at(off, &mut buf)
                .map_err(|source| ConvertError::Gguf {
                    path: out.part.clone(),
                    source,
                })?;
            hashes.push(xxhash_rust::xxh3::xxh3_64(&buf));
        }
    }
    Ok(hash_bands(&hashes))
}
