//! The band stream: every band of every unfinished tensor, handed out in file order to a pool of
//! workers that encode and write them; a tensor is journaled when its last band is written.
//!
//! One ordered stream (rather than a parallel loop per tensor or expert) keeps every worker busy
//! across tensor boundaries, and keeps the bands in flight close together in the input, so the
//! source pages of an expert can be released as soon as its last band is done. The pool has
//! more threads than cores: with direct I/O a worker waits for the device while it writes, and
//! the others compute meanwhile.

use super::encode::{Band, EncodeStats};
use super::source::RowSource;
use super::{gguf_err, hash_bands, ConvertError, Output};
use crate::checkpoint::Param;
use crate::gguf::{PageBuf, PartialPages};
use quant::GgmlType;
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

thread_local! {
    /// Each worker thread's band output buffer, reused from band to band.
    static BAND_BUF: std::cell::RefCell<PageBuf> = std::cell::RefCell::new(PageBuf::new());
}

/// One tensor still to be written to at least one output.
pub(super) struct TensorJob<'p, 'o> {
    /// Index in GGUF order.
    pub t: usize,
    pub name: String,
    pub param: &'p Param,
    pub src: RowSource<'p>,
    /// The outputs that still need this tensor.
    pub needed: Vec<&'o Output>,
    /// (first row, rows) of each band, expert by expert.
    pub bands: Vec<(usize, usize)>,
    /// Importance weights of each expert (or of the one matrix).
    pub imatrix_rows: Vec<Option<Vec<f32>>>,
    /// Input covariance of each expert, factored (error-feedback quantization), when the
    /// imatrix holds one.
    pub cov_factors: Vec<Option<quant::gptq::Factor>>,
    /// Input bytes to credit the progress bar per band.
    pub per_band_in: u64,
    hashes: Vec<Mutex<Vec<u64>>>,
    /// Per needed output: the bands' partial first/last pages, written when the tensor is
    /// complete (about 8 KiB per band).
    partial: Vec<Mutex<PartialPages>>,
    stats: Mutex<EncodeStats>,
    bands_left: AtomicUsize,
    expert_bands_left: Vec<AtomicUsize>,
}

impl<'p, 'o> TensorJob<'p, 'o> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        t: usize,
        name: String,
        param: &'p Param,
        src: RowSource<'p>,
        needed: Vec<&'o Output>,
        bands: Vec<(usize, usize)>,
        imatrix_rows: Vec<Option<Vec<f32>>>,
        cov_factors: Vec<Option<quant::gptq::Factor>>,
        per_band_in: u64,
    ) -> Self {
        let expert_bands_left = (0..src.experts)
            .map(|e| {
                let n = bands.iter().filter(|b| b.0 / src.n_out == e).count();
                AtomicUsize::new(n)
            })
            .collect();
        TensorJob {
            hashes: needed
                .iter()
                .map(|_| Mutex::new(vec![0; bands.len()]))
                .collect(),
            partial: needed
                .iter()
                .map(|_| Mutex::new(PartialPages::new()))
                .collect(),
            stats: Mutex::new(EncodeStats::default()),
            bands_left: AtomicUsize::new(bands.len()),
            expert_bands_left,
            t,
            name,
            param,
            src,
            needed,
            bands,
            imatrix_rows,
            cov_factors,
            per_band_in,
        }
    }
}

/// What the stream needs besides the jobs.
pub(super) struct StreamCtx<'a> {
    pub cancel: Option<&'a AtomicBool>,
    /// Pause per band, taken one band at a time so the pace does not depend on the number of
    /// workers (fault-injection knob of the kill/resume tests).
    pub throttle: Option<Duration>,
    pub bar: &'a indicatif::ProgressBar,
    /// Worker threads.
    pub threads: usize,
}

/// Encode and write every band of `jobs`; returns the exact/requantized Q8_0 block counts (once
/// per tensor, however many Q8_0 outputs need it).
pub(super) fn run(jobs: &[TensorJob], ctx: &StreamCtx) -> Result<EncodeStats, ConvertError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(ctx.threads)
        .thread_name(|i| format!("convert-{i}"))
        .build()
        .map_err(|e| ConvertError::Workers {
            threads: ctx.threads,
            reason: e.to_string(),
        })?;
    let total = Mutex::new(EncodeStats::default());
    let throttle_lock = Mutex::new(());
    let stream = jobs
        .iter()
        .flat_map(|job| (0..job.bands.len()).map(move |bi| (job, bi)));
    pool.install(|| {
        stream
            .par_bridge()
            .try_for_each(|(job, bi)| -> Result<(), ConvertError> {
                if ctx.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(ConvertError::Interrupted);
                }
                if let Some(d) = ctx.throttle {
                    let _one_at_a_time = throttle_lock.lock().expect("throttle lock");
                    std::thread::sleep(d);
                }
                write_band(job, bi)?;
                ctx.bar.inc(job.per_band_in);
                band_done(job, bi, &total)
            })
    })?;
    let total = *total.lock().expect("stats lock");
    Ok(total)
}

/// Encode band `bi` of `job` for every output that needs it, write it, and keep its hash.
fn write_band(job: &TensorJob, bi: usize) -> Result<(), ConvertError> {
    let (t, src) = (job.t, &job.src);
    let (row0, nrows) = job.bands[bi];
    let mut band = Band::new(src, row0, nrows);
    for (k, out) in job.needed.iter().enumerate() {
        let ty = out.types[t];
        let row_bytes = ty.row_bytes(src.n_in).ok_or_else(|| ConvertError::Tensor {
            tensor: job.name.clone(),
            what: format!("rows of {} values are not whole {ty} blocks", src.n_in),
        })?;
        let start = (row0 * row_bytes) as u64;
        let at = out.writer.layout().tensor_offset(t) + start;
        // F32 rows stored as such go from the mapped source to the file as they are.
        let raw = match ty {
            GgmlType::F32 => src.f32_rows_raw(row0, nrows),
            _ => None,
        };
        let h = BAND_BUF.with_borrow_mut(|buf| -> Result<u64, ConvertError> {
            let dst = buf.window(at, nrows * row_bytes);
            if let Some(bytes) = raw {
                dst.copy_from_slice(bytes);
            } else {
                // Every encoder overwrites the whole band, so a reused buffer needs no clearing.
                let e = row0 / src.n_out;
                let (weights, factor) = match ty {
                    GgmlType::Q8_0 => (None, None),
                    _ => (job.imatrix_rows[e].as_deref(), job.cov_factors[e].as_ref()),
                };
                let st =
                    band.encode(ty, dst, weights, factor)
                        .map_err(|q| ConvertError::Tensor {
                            tensor: job.name.clone(),
                            what: q.to_string(),
                        })?;
                *job.stats.lock().expect("stats lock") += st;
            }
            let mut partial = PartialPages::new();
            out.writer
                .write_band_deferred(t, start, buf, Some(&mut partial))
                .map_err(gguf_err(&out.part))?;
            job.partial[k]
                .lock()
                .expect("partial pages lock")
                .append(partial);
            Ok(xxhash_rust::xxh3::xxh3_64(buf.data()))
        })?;
        job.hashes[k].lock().expect("hash lock")[bi] = h;
    }
    Ok(())
}

/// Bookkeeping after band `bi` of `job` is written: release the source pages of a finished
/// expert; journal a finished tensor and add its block counts to `total`.
fn band_done(job: &TensorJob, bi: usize, total: &Mutex<EncodeStats>) -> Result<(), ConvertError> {
    let e = job.bands[bi].0 / job.src.n_out;
    if job.expert_bands_left[e].fetch_sub(1, Ordering::AcqRel) == 1 {
        let per_expert = job.param.data_bytes().len() / job.src.experts;
        job.param.release_data_range(e * per_expert, per_expert);
    }
    if job.bands_left.fetch_sub(1, Ordering::AcqRel) != 1 {
        return Ok(());
    }
    // Count exact-Q8 blocks once per tensor (every Q8_0 output counted the same blocks).
    let ts = *job.stats.lock().expect("stats lock");
    let q8_outputs = job
        .needed
        .iter()
        .filter(|o| o.types[job.t] == GgmlType::Q8_0)
        .count() as u64;
    if let (Some(e), Some(r)) = (
        ts.exact_q8_blocks.checked_div(q8_outputs),
        ts.requantized_q8_blocks.checked_div(q8_outputs),
    ) {
        let mut total = total.lock().expect("stats lock");
        total.exact_q8_blocks += e;
        total.requantized_q8_blocks += r;
    }
    for (k, out) in job.needed.iter().enumerate() {
        let partial = std::mem::take(&mut *job.partial[k].lock().expect("partial pages lock"));
        out.writer
            .write_partial_pages(partial)
            .map_err(gguf_err(&out.part))?;
        let h = hash_bands(&job.hashes[k].lock().expect("hash lock"));
        out.journal.lock().expect("journal lock").record(job.t, h)?;
    }
    Ok(())
}
