//! The RAM tier: owned copies (or bounded mmap residency) of (layer, expert) units under a
//! byte budget, a background prefetcher, statistics and the routing trace.

use super::policy::{PolicyKind, PolicyState};
use super::size::fmt_size;
use memmap2::Mmap;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a cold expert gets into RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// `pread` into an anonymous buffer the cache owns (freed with `munmap` on eviction).
    Pread,
    /// Touch the mmap slice (after `madvise(WILLNEED)`); on eviction `madvise(DONTNEED)` the
    /// slice's whole pages so the process stops mapping them.
    Mmap,
}

impl ReadMode {
    pub fn parse(s: &str) -> Result<ReadMode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pread" => Ok(ReadMode::Pread),
            "mmap" => Ok(ReadMode::Mmap),
            o => Err(format!(
                "unknown cache read mode '{o}' (known: pread, mmap)"
            )),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            ReadMode::Pread => "pread",
            ReadMode::Mmap => "mmap",
        }
    }
}

/// Everything a model-running command may ask of the expert cache.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// Bytes of expert weights the RAM tier may hold; `None`: read everything from the mmap.
    pub ram_budget: Option<u64>,
    /// Bytes of expert weights the VRAM tier may hold (GPU path; see `crate::model::gpu`).
    pub vram_budget: Option<u64>,
    pub policy: PolicyKind,
    pub read_mode: ReadMode,
    /// Predict and load layer l+1's experts while layer l computes.
    pub prefetch: bool,
    /// Write the routing trace (JSON lines) here.
    pub trace: Option<PathBuf>,
    /// On the CPU, repack the matrices whose type and rows it pays for into the interleaved row
    /// layout at load (see `crate::model::RepackReport`); `--no-repack` clears it.
    pub repack: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            ram_budget: None,
            vram_budget: None,
            policy: PolicyKind::Lru,
            read_mode: ReadMode::Mmap,
            prefetch: true,
            trace: None,
            repack: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "--ram-budget {budget} is below one layer's top-{k} working set: {k} experts × {per} = \
         {min} bytes ({min_h}) is the minimum"
    )]
    BudgetTooSmall {
        budget: u64,
        k: usize,
        per: u64,
        min: u64,
        min_h: String,
    },
    #[error("reading expert (layer {layer}, expert {expert}) from {path}: {source}")]
    Read {
        layer: usize,
        expert: usize,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(String),
    #[error("internal: {0}")]
    Internal(String),
}

/// Where the three slices of every (layer, expert) lie in the file: per layer, for gate, up and
/// down, the absolute file offset of expert 0 and the bytes of one expert.
#[derive(Clone, Debug)]
pub struct ExpertLayout {
    pub n_experts: usize,
    pub n_used: usize,
    pub layers: Vec<[(u64, usize); 3]>,
}

impl ExpertLayout {
    fn unit_bytes(&self, l: usize) -> u64 {
        self.layers[l].iter().map(|p| p.1 as u64).sum()
    }
    /// The largest unit (all layers have the same shapes in Grok; take the max to be safe).
    pub fn max_unit_bytes(&self) -> u64 {
        (0..self.layers.len())
            .map(|l| self.unit_bytes(l))
            .max()
            .unwrap_or(0)
    }
    pub fn total_bytes(&self) -> u64 {
        (0..self.layers.len())
            .map(|l| self.unit_bytes(l) * self.n_experts as u64)
            .sum()
    }
    fn range(&self, l: usize, e: usize, p: usize) -> (u64, usize) {
        let (off, per) = self.layers[l][p];
        (off + (e * per) as u64, per)
    }
}

/// Anonymous memory owned by the cache: `mmap(MAP_ANONYMOUS)` on creation, `munmap` on drop, so
/// an evicted expert really leaves the process (no allocator keeps it).
struct AnonBuf {
    ptr: *mut u8,
    len: usize,
    /// Per part (gate, up, down): written in `quant::Layout::Interleaved8` (see
    /// [`ExpertCache::pack_on_read`]) rather than as the file stores it.
    packed: [bool; 3],
}

// SAFETY: the buffer is plain bytes written once before it is shared and only read after.
unsafe impl Send for AnonBuf {}
unsafe impl Sync for AnonBuf {}

impl AnonBuf {
    fn new(len: usize) -> std::io::Result<AnonBuf> {
        let len = len.max(1);
        // SAFETY: a fresh private anonymous mapping; checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(AnonBuf {
            ptr: p as *mut u8,
            len,
            packed: [false; 3],
        })
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is our live mapping.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AnonBuf {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

/// A pinned expert: its gate, up and down bytes stay valid (and resident) while it lives.
pub struct ExpertHandle {
    shared: Option<Arc<Shared>>,
    key: u32,
    parts: [(usize, usize); 3],
    data: HandleData,
}

enum HandleData {
    Owned(Arc<AnonBuf>),
    Mapped(Arc<Mmap>),
}

impl ExpertHandle {
    /// Bytes of part `p` (0 gate, 1 up, 2 down), in [`ExpertHandle::layout`].
    pub fn part(&self, p: usize) -> &[u8] {
        let (o, n) = self.parts[p];
        match &self.data {
            HandleData::Owned(b) => &b.bytes()[o..o + n],
            HandleData::Mapped(m) => &m[o..o + n],
        }
    }

    /// How part `p`'s rows lie: as the file stores them, or packed by the cache as it read
    /// them ([`ExpertCache::pack_on_read`]).
    pub fn layout(&self, p: usize) -> quant::Layout {
        match &self.data {
            HandleData::Owned(b) if b.packed[p] => quant::Layout::Interleaved8,
            _ => quant::Layout::Rows,
        }
    }
}

/// Per layer, per part (gate, up, down): the weight type and row length to pack it with as the
/// cache reads it, or `None` to keep the file's rows (see [`ExpertCache::pack_on_read`]).
pub type PackSpec = Vec<[Option<(quant::GgmlType, usize)>; 3]>;

impl Drop for ExpertHandle {
    fn drop(&mut self) {
        if let Some(s) = &self.shared {
            let mut st = s.lock();
            if let Some(e) = st.entries.get_mut(&self.key) {
                e.pins = e.pins.saturating_sub(1);
            }
            drop(st);
            s.cv.notify_all();
        }
    }
}

/// Counters of one run of the RAM tier (the VRAM tier's are `super::vram::VramStats`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CacheStats {
    pub bounded: bool,
    pub policy: String,
    pub read_mode: String,
    pub ram_budget: Option<u64>,
    pub vram_budget: Option<u64>,
    pub unit_bytes: u64,
    pub capacity_units: usize,
    /// Expert uses found resident (including ones a prefetch was still loading).
    pub ram_hits: u64,
    /// Expert uses the forward pass had to read itself.
    pub ram_misses: u64,
    /// Hits on a unit a prefetch was still loading (the forward pass waited for it).
    pub ram_late_prefetch: u64,
    pub bytes_read: u64,
    pub evictions: u64,
    /// Most bytes the RAM tier held at once (never above the budget).
    pub peak_held_bytes: u64,
    pub held_bytes: u64,
    pub prefetch_issued: u64,
    pub prefetch_loaded: u64,
    /// Prefetched units later used before being evicted.
    pub prefetch_used: u64,
    /// Prefetches dropped for lack of evictable space.
    pub prefetch_dropped: u64,
    /// Prefetched units their layer passed without using (wrong guesses).
    pub prefetch_wasted: u64,
    /// Over predicted layers: distinct experts the batch needed, and how many were predicted.
    pub predicted_needed: u64,
    pub predicted_correct: u64,
    /// Distinct experts predicted (for precision).
    pub predicted_total: u64,
    /// Time the forward pass spent waiting for expert bytes (own reads and late prefetches).
    pub stall_seconds: f64,
    /// Time spent reading (forward pass and prefetcher together).
    pub read_seconds: f64,
}

impl CacheStats {
    pub fn hit_rate(&self) -> f64 {
        let n = self.ram_hits + self.ram_misses;
        if n == 0 {
            f64::NAN
        } else {
            self.ram_hits as f64 / n as f64
        }
    }
    pub fn prefetch_accuracy(&self) -> f64 {
        if self.predicted_needed == 0 {
            f64::NAN
        } else {
            self.predicted_correct as f64 / self.predicted_needed as f64
        }
    }

    /// The `--stats` report.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let b = |x: Option<u64>| x.map_or("none".to_string(), fmt_size);
        s += &format!(
            "expert cache: policy {}, read {}, ram budget {} ({} units of {}), vram budget {}\n",
            self.policy,
            self.read_mode,
            b(self.ram_budget),
            self.capacity_units,
            fmt_size(self.unit_bytes),
            b(self.vram_budget)
        );
        s += &format!(
            "  ram tier:  {} hits, {} misses (hit rate {:.3}), {} late-prefetch waits, {} evictions\n",
            self.ram_hits,
            self.ram_misses,
            self.hit_rate(),
            self.ram_late_prefetch,
            self.evictions
        );
        s += &format!(
            "  read from disk: {} in {:.3} s; stall {:.3} s; held now {}, peak {}\n",
            fmt_size(self.bytes_read),
            self.read_seconds,
            self.stall_seconds,
            fmt_size(self.held_bytes),
            fmt_size(self.peak_held_bytes)
        );
        s += &format!(
            "  prefetch: accuracy {:.3} ({} of {} needed experts predicted; precision {:.3}), {} issued, {} loaded, {} used, {} wasted, {} dropped\n",
            self.prefetch_accuracy(),
            self.predicted_correct,
            self.predicted_needed,
            if self.predicted_total == 0 { f64::NAN } else { self.predicted_correct as f64 / self.predicted_total as f64 },
            self.prefetch_issued,
            self.prefetch_loaded,
            self.prefetch_used,
            self.prefetch_wasted,
            self.prefetch_dropped
        );
        s
    }
}

enum Status {
    Loading,
    Ready(Option<Arc<AnonBuf>>),
}

struct Entry {
    status: Status,
    pins: usize,
    /// Loaded by the prefetcher and not used yet.
    prefetched: bool,
}

struct State {
    entries: HashMap<u32, Entry>,
    held: u64,
    policy: PolicyState,
    stats: CacheStats,
    /// Per layer: the experts predicted for the next batch at that layer.
    predicted: HashMap<usize, HashSet<usize>>,
}

struct Shared {
    path: PathBuf,
    file: File,
    mmap: Arc<Mmap>,
    layout: ExpertLayout,
    mode: ReadMode,
    bounded: bool,
    budget: u64,
    state: Mutex<State>,
    cv: Condvar,
    /// Set once by [`ExpertCache::pack_on_read`] (pread mode only).
    packing: std::sync::OnceLock<PackSpec>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, l: usize, e: usize) -> u32 {
        (l * self.layout.n_experts + e) as u32
    }

    fn unkey(&self, k: u32) -> (usize, usize) {
        let n = self.layout.n_experts;
        (k as usize / n, k as usize % n)
    }

    /// Offsets of the three parts inside an owned buffer (64-byte aligned).
    fn owned_parts(&self, l: usize) -> ([(usize, usize); 3], usize) {
        let mut parts = [(0, 0); 3];
        let mut at = 0usize;
        for (p, slot) in parts.iter_mut().enumerate() {
            let n = self.layout.layers[l][p].1;
            *slot = (at, n);
            at = (at + n).div_ceil(64) * 64;
        }
        (parts, at)
    }

    fn mapped_parts(&self, l: usize, e: usize) -> [(usize, usize); 3] {
        let mut parts = [(0, 0); 3];
        for (p, slot) in parts.iter_mut().enumerate() {
            let (o, n) = self.layout.range(l, e, p);
            *slot = (o as usize, n);
        }
        parts
    }

    /// Read (l, e) into RAM; no lock held.
    fn read(&self, l: usize, e: usize) -> Result<Option<Arc<AnonBuf>>, CacheError> {
        let err = |source| CacheError::Read {
            layer: l,
            expert: e,
            path: self.path.clone(),
            source,
        };
        match self.mode {
            ReadMode::Pread => {
                let (parts, total) = self.owned_parts(l);
                let mut buf = AnonBuf::new(total).map_err(err)?;
                let spec = self.packing.get().and_then(|s| s.get(l));
                for (p, &(at, n)) in parts.iter().enumerate() {
                    let (off, _) = self.layout.range(l, e, p);
                    let dst = &mut buf.bytes_mut()[at..at + n];
                    match spec.and_then(|s| s[p]) {
                        Some((ty, n_in)) => {
                            let packing = |q: quant::QuantError| {
                                CacheError::Io(format!(
                                    "packing expert (layer {l}, expert {e}) part {p} of {}: {q}",
                                    self.path.display()
                                ))
                            };
                            STAGE.with_borrow_mut(|stage| {
                                read_packed(
                                    &self.file,
                                    off,
                                    (ty, n_in),
                                    STAGE_BYTES,
                                    stage,
                                    dst,
                                    err,
                                    packing,
                                )
                            })?;
                            buf.packed[p] = true;
                        }
                        None => self.file.read_exact_at(dst, off).map_err(err)?,
                    }
                }
                Ok(Some(Arc::new(buf)))
            }
            ReadMode::Mmap => {
                let mut sum = 0u8;
                for (o, n) in self.mapped_parts(l, e) {
                    advise(&self.mmap, o, n, libc::MADV_WILLNEED, false);
                    let s = &self.mmap[o..o + n];
                    for i in (0..n).step_by(4096) {
                        // SAFETY: in bounds; a volatile read so the touch is not optimised out.
                        sum ^= unsafe { std::ptr::read_volatile(s.as_ptr().add(i)) };
                    }
                }
                std::hint::black_box(sum);
                Ok(None)
            }
        }
    }

    /// Drop the mapping of (l, e)'s whole pages (mmap mode).
    fn release_mapped(&self, l: usize, e: usize) {
        for (o, n) in self.mapped_parts(l, e) {
            advise(&self.mmap, o, n, libc::MADV_DONTNEED, true);
        }
    }

    /// Evict until `need` more bytes fit. `Ok(false)`: nothing evictable (the caller decides
    /// whether to wait or give up).
    fn make_room(&self, st: &mut State, need: u64, spare_prefetched: bool) -> bool {
        while st.held + need > self.budget {
            let cands = st
                .entries
                .iter()
                .filter(|(_, en)| {
                    en.pins == 0
                        && matches!(en.status, Status::Ready(_))
                        && !(spare_prefetched && en.prefetched)
                })
                .map(|(&k, _)| k);
            let Some(v) = st.policy.victim(cands) else {
                return false;
            };
            st.entries.remove(&v);
            let (l, e) = self.unkey(v);
            st.held -= self.layout.unit_bytes(l);
            st.stats.evictions += 1;
            if self.mode == ReadMode::Mmap {
                self.release_mapped(l, e);
            }
        }
        true
    }
}

/// Bytes of the staging buffer [`read_packed`] reads through (whole eight-row groups at a time;
/// one group when a group is larger).
const STAGE_BYTES: usize = 4 << 20;

thread_local! {
    /// Each reading thread's staging buffer, kept between reads: a fresh one the size of a whole
    /// part (113 MB for a Grok-1 Q4_0 expert matrix) was faulted in and zeroed on every read.
    static STAGE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Read `dst.len()` bytes of `ty` rows of `n_in` values from `file` at `off` into `dst` in the
/// packed layout ([`quant::layout::interleave_rows`]), in chunks of whole eight-row groups of
/// at most `stage_bytes` (one group if a group is larger) through `stage`; each group packs on
/// its own, so the result is the whole part's.
#[allow(clippy::too_many_arguments)]
fn read_packed(
    file: &File,
    off: u64,
    (ty, n_in): (quant::GgmlType, usize),
    stage_bytes: usize,
    stage: &mut Vec<u8>,
    dst: &mut [u8],
    err: impl Fn(std::io::Error) -> CacheError,
    packing: impl Fn(quant::QuantError) -> CacheError,
) -> Result<(), CacheError> {
    let rb = ty.row_bytes(n_in).filter(|&rb| rb > 0).ok_or_else(|| {
        packing(quant::QuantError::Unsupported {
            ty,
            what: "rows of this length",
        })
    })?;
    let group = 8 * rb;
    let chunk = (stage_bytes / group).max(1) * group;
    if stage.len() < chunk.min(dst.len()) {
        stage.resize(chunk.min(dst.len()), 0);
    }
    let mut done = 0usize;
    while done < dst.len() {
        let n = chunk.min(dst.len() - done);
        let at = off
            .checked_add(done as u64)
            .ok_or_else(|| err(std::io::Error::other("offset overflows u64")))?;
        file.read_exact_at(&mut stage[..n], at).map_err(&err)?;
        quant::layout::interleave_rows(ty, n_in, &stage[..n], &mut dst[done..done + n])
            .map_err(&packing)?;
        done += n;
    }
    Ok(())
}

/// `madvise` the whole pages inside `[o, o+n)` of the map (`inward`), or the pages covering it.
fn advise(m: &Mmap, o: usize, n: usize, advice: libc::c_int, inward: bool) {
    const PAGE: usize = 4096;
    let base = m.as_ptr() as usize;
    let (start, end) = if inward {
        (
            (base + o).div_ceil(PAGE) * PAGE,
            (base + o + n) / PAGE * PAGE,
        )
    } else {
        (
            (base + o) / PAGE * PAGE,
            (base + o + n).div_ceil(PAGE) * PAGE,
        )
    };
    let end = end.min((base + m.len()).div_ceil(PAGE) * PAGE);
    if end > start {
        // SAFETY: the range lies within our read-only private file mapping; WILLNEED and
        // DONTNEED on such a mapping never change its contents (pages refault from the file).
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, advice);
        }
    }
}

/// The expert cache of one model.
pub struct ExpertCache {
    shared: Arc<Shared>,
    opts: CacheOptions,
    capacity: usize,
    prefetch_tx: Option<Mutex<mpsc::Sender<u32>>>,
    worker: Option<JoinHandle<()>>,
    trace: Option<Mutex<TraceSink>>,
}

struct TraceSink {
    w: BufWriter<File>,
    batch: u64,
    last_layer: Option<usize>,
    error: Option<String>,
}

impl ExpertCache {
    /// A cache over `mmap` (the model's mapping of `path`) with the given layout.
    pub fn new(
        path: &Path,
        mmap: Arc<Mmap>,
        layout: ExpertLayout,
        opts: &CacheOptions,
    ) -> Result<ExpertCache, CacheError> {
        let unit = layout.max_unit_bytes();
        let bounded = opts.ram_budget.is_some();
        let budget = opts.ram_budget.unwrap_or(u64::MAX);
        let capacity = if bounded {
            (budget / unit.max(1)) as usize
        } else {
            layout.layers.len() * layout.n_experts
        };
        if bounded && capacity < layout.n_used {
            let min = unit * layout.n_used as u64;
            return Err(CacheError::BudgetTooSmall {
                budget,
                k: layout.n_used,
                per: unit,
                min,
                min_h: fmt_size(min),
            });
        }
        let file =
            File::open(path).map_err(|e| CacheError::Io(format!("{}: {e}", path.display())))?;
        let trace = match &opts.trace {
            Some(p) => {
                let f = File::create(p)
                    .map_err(|e| CacheError::Io(format!("--trace {}: {e}", p.display())))?;
                Some(Mutex::new(TraceSink {
                    w: BufWriter::new(f),
                    batch: 0,
                    last_layer: None,
                    error: None,
                }))
            }
            None => None,
        };
        let stats = CacheStats {
            bounded,
            policy: opts.policy.name().into(),
            read_mode: opts.read_mode.name().into(),
            ram_budget: opts.ram_budget,
            vram_budget: opts.vram_budget,
            unit_bytes: unit,
            capacity_units: capacity,
            ..Default::default()
        };
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            file,
            mmap,
            layout,
            mode: opts.read_mode,
            bounded,
            budget,
            state: Mutex::new(State {
                entries: HashMap::new(),
                held: 0,
                policy: PolicyState::new(opts.policy, capacity),
                stats,
                predicted: HashMap::new(),
            }),
            cv: Condvar::new(),
            packing: std::sync::OnceLock::new(),
        });
        let (prefetch_tx, worker) = if bounded && opts.prefetch {
            let (tx, rx) = mpsc::channel::<u32>();
            let s = Arc::clone(&shared);
            let h = std::thread::Builder::new()
                .name("expert-prefetch".into())
                .spawn(move || prefetch_worker(s, rx))
                .map_err(|e| CacheError::Io(format!("starting the prefetch thread: {e}")))?;
            (Some(Mutex::new(tx)), Some(h))
        } else {
            (None, None)
        };
        Ok(ExpertCache {
            shared,
            opts: opts.clone(),
            capacity,
            prefetch_tx,
            worker,
            trace,
        })
    }

    pub fn options(&self) -> &CacheOptions {
        &self.opts
    }

    pub fn is_bounded(&self) -> bool {
        self.shared.bounded
    }

    /// From now on, write the parts `spec` names into `quant::Layout::Interleaved8` as they are
    /// read into RAM (each handle says its parts' layout: [`ExpertHandle::layout`]), so the
    /// CPU's packed kernels read the cached experts. Only where the cache owns its copies
    /// (`pread` mode with a RAM budget): returns whether it will. Set once; a later call
    /// changes nothing. The CPU backend calls it; the GPU path, which uploads the file's
    /// layout, never does.
    pub fn pack_on_read(&self, spec: PackSpec) -> bool {
        let s = &self.shared;
        if s.mode != ReadMode::Pread || !s.bounded || spec.len() != s.layout.layers.len() {
            return false;
        }
        let _ = s.packing.set(spec);
        true
    }

    /// Units the RAM tier holds at most (every unit when unbounded).
    pub fn capacity_units(&self) -> usize {
        self.capacity
    }

    /// Whether the forward pass should run the next layer's router for a prediction.
    pub fn wants_prediction(&self) -> bool {
        self.opts.prefetch
    }

    /// Pin (l, e), reading it if it is not resident. Bounded caches hold at most `capacity`
    /// pinned units; the caller pins at most that many at once.
    pub fn acquire(&self, l: usize, e: usize) -> Result<ExpertHandle, CacheError> {
        let s = &self.shared;
        let key = s.key(l, e);
        if !s.bounded {
            let mut st = s.lock();
            st.stats.ram_hits += 1;
            drop(st);
            return Ok(ExpertHandle {
                shared: None,
                key,
                parts: s.mapped_parts(l, e),
                data: HandleData::Mapped(Arc::clone(&s.mmap)),
            });
        }
        let unit = s.layout.unit_bytes(l);
        let mut st = s.lock();
        let mut stall = Duration::ZERO;
        let mut waited_on_prefetch = false;
        loop {
            match st.entries.get_mut(&key) {
                Some(en) => match &en.status {
                    Status::Ready(buf) => {
                        let buf = buf.clone();
                        en.pins += 1;
                        let was_prefetched = std::mem::replace(&mut en.prefetched, false);
                        st.policy.touch(key);
                        st.stats.ram_hits += 1;
                        if was_prefetched {
                            st.stats.prefetch_used += 1;
                        }
                        if waited_on_prefetch {
                            st.stats.ram_late_prefetch += 1;
                        }
                        st.stats.stall_seconds += stall.as_secs_f64();
                        return Ok(self.handle(key, l, e, buf));
                    }
                    Status::Loading => {
                        waited_on_prefetch = true;
                        let t = Instant::now();
                        st = s.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                        stall += t.elapsed();
                    }
                },
                None => {
                    if !s.make_room(&mut st, unit, false) {
                        let loading = st
                            .entries
                            .values()
                            .any(|en| matches!(en.status, Status::Loading));
                        if !loading {
                            return Err(CacheError::Internal(format!(
                                "no evictable expert for (layer {l}, expert {e}): {} units pinned of a capacity of {}",
                                st.entries.values().filter(|en| en.pins > 0).count(),
                                self.capacity
                            )));
                        }
                        let t = Instant::now();
                        st = s.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                        stall += t.elapsed();
                        continue;
                    }
                    st.entries.insert(
                        key,
                        Entry {
                            status: Status::Loading,
                            pins: 1,
                            prefetched: false,
                        },
                    );
                    st.held += unit;
                    st.stats.peak_held_bytes = st.stats.peak_held_bytes.max(st.held);
                    drop(st);
                    let t = Instant::now();
                    let r = s.read(l, e);
                    let dt = t.elapsed();
                    st = s.lock();
                    st.stats.read_seconds += dt.as_secs_f64();
                    stall += dt;
                    st.stats.stall_seconds += stall.as_secs_f64();
                    let buf = match r {
                        Ok(b) => b,
                        Err(err) => {
                            st.entries.remove(&key);
                            st.held -= unit;
                            drop(st);
                            s.cv.notify_all();
                            return Err(err);
                        }
                    };
                    if let Some(en) = st.entries.get_mut(&key) {
                        en.status = Status::Ready(buf.clone());
                    }
                    st.policy.touch(key);
                    st.stats.ram_misses += 1;
                    st.stats.bytes_read += unit;
                    drop(st);
                    s.cv.notify_all();
                    return Ok(self.handle(key, l, e, buf));
                }
            }
        }
    }

    fn handle(&self, key: u32, l: usize, e: usize, buf: Option<Arc<AnonBuf>>) -> ExpertHandle {
        let s = &self.shared;
        match buf {
            Some(b) => ExpertHandle {
                shared: Some(Arc::clone(s)),
                key,
                parts: s.owned_parts(l).0,
                data: HandleData::Owned(b),
            },
            None => ExpertHandle {
                shared: Some(Arc::clone(s)),
                key,
                parts: s.mapped_parts(l, e),
                data: HandleData::Mapped(Arc::clone(&s.mmap)),
            },
        }
    }

    /// The forward pass predicts that layer `l` will use `experts` (distinct): remember the
    /// guess for accuracy and, when bounded, start loading them in the background.
    pub fn predict(&self, l: usize, experts: &[usize]) {
        let s = &self.shared;
        {
            let mut st = s.lock();
            st.stats.predicted_total += experts.len() as u64;
            st.predicted.insert(l, experts.iter().copied().collect());
        }
        if let Some(tx) = &self.prefetch_tx {
            let tx = tx.lock().unwrap_or_else(|p| p.into_inner());
            for &e in experts {
                let key = s.key(l, e);
                let present = s.lock().entries.contains_key(&key);
                if !present && tx.send(key).is_ok() {
                    s.lock().stats.prefetch_issued += 1;
                }
            }
        }
    }

    /// Layer `l` of a batch at positions `p0..` routed as `routing` (per token, its experts):
    /// score the prediction and append to the trace.
    pub fn observe(&self, l: usize, p0: usize, routing: &[Vec<usize>]) {
        let needed: HashSet<usize> = routing.iter().flatten().copied().collect();
        {
            let mut st = self.shared.lock();
            // Prefetches for other layers that were not used by now were wrong guesses: make
            // them ordinary residents, so they no longer block further prefetches.
            let n = self.shared.layout.n_experts;
            let mut stale = 0;
            for (k, en) in st.entries.iter_mut() {
                if en.prefetched && *k as usize / n != l && matches!(en.status, Status::Ready(_)) {
                    en.prefetched = false;
                    stale += 1;
                }
            }
            st.stats.prefetch_wasted += stale;
            if let Some(pred) = st.predicted.remove(&l) {
                st.stats.predicted_needed += needed.len() as u64;
                st.stats.predicted_correct += needed.intersection(&pred).count() as u64;
            }
        }
        if let Some(t) = &self.trace {
            let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
            if t.last_layer.is_some_and(|last| l <= last) {
                t.batch += 1;
            }
            t.last_layer = Some(l);
            let batch = t.batch;
            for (i, r) in routing.iter().enumerate() {
                let es: Vec<String> = r.iter().map(|e| e.to_string()).collect();
                let line = format!(
                    "{{\"batch\":{batch},\"pos\":{},\"layer\":{l},\"experts\":[{}]}}\n",
                    p0 + i,
                    es.join(",")
                );
                if let Err(e) = t.w.write_all(line.as_bytes()) {
                    t.error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        let st = self.shared.lock();
        let mut s = st.stats.clone();
        s.held_bytes = st.held;
        s
    }

    /// Flush the trace; report a write error if one happened.
    pub fn finish(&self) -> Result<(), CacheError> {
        if let Some(t) = &self.trace {
            let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
            let p = self.opts.trace.clone().unwrap_or_default();
            if let Some(e) = t.error.take() {
                return Err(CacheError::Io(format!("--trace {}: {e}", p.display())));
            }
            t.w.flush()
                .map_err(|e| CacheError::Io(format!("--trace {}: {e}", p.display())))?;
        }
        Ok(())
    }
}

impl Drop for ExpertCache {
    fn drop(&mut self) {
        let _ = self.finish();
        self.prefetch_tx = None;
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }
}

fn prefetch_worker(s: Arc<Shared>, rx: mpsc::Receiver<u32>) {
    while let Ok(key) = rx.recv() {
        let (l, e) = s.unkey(key);
        let unit = s.layout.unit_bytes(l);
        {
            let mut st = s.lock();
            if st.entries.contains_key(&key) {
                continue;
            }
            if !s.make_room(&mut st, unit, true) {
                st.stats.prefetch_dropped += 1;
                continue;
            }
            st.entries.insert(
                key,
                Entry {
                    status: Status::Loading,
                    pins: 0,
                    prefetched: true,
                },
            );
            st.held += unit;
            st.stats.peak_held_bytes = st.stats.peak_held_bytes.max(st.held);
        }
        let t = Instant::now();
        let r = s.read(l, e);
        let dt = t.elapsed();
        let mut st = s.lock();
        st.stats.read_seconds += dt.as_secs_f64();
        match r {
            Ok(buf) => {
                if let Some(en) = st.entries.get_mut(&key) {
                    en.status = Status::Ready(buf);
                }
                st.policy.admit(key);
                st.stats.prefetch_loaded += 1;
                st.stats.bytes_read += unit;
            }
            Err(_) => {
                // The forward pass will read it itself and report the error if it persists.
                st.entries.remove(&key);
                st.held -= unit;
                st.stats.prefetch_dropped += 1;
            }
        }
        drop(st);
        s.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_reads_in_chunks_equal_packing_the_whole_part() {
        let (ty, n_in) = (quant::GgmlType::Q4_0, 64);
        let rb = ty.row_bytes(n_in).unwrap();
        let rows = 8 * 5 + 3; // five eight-row groups and a row-major tail
        let src: Vec<u8> = (0..rows * rb).map(|i| (i * 31 % 251) as u8).collect();
        let mut want = vec![0u8; src.len()];
        quant::layout::interleave_rows(ty, n_in, &src, &mut want).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part");
        let lead = 7usize;
        let mut bytes = vec![0xAAu8; lead];
        bytes.extend_from_slice(&src);
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let err = |e: std::io::Error| CacheError::Io(e.to_string());
        let packing = |q: quant::QuantError| CacheError::Io(q.to_string());
        // A chunk of one group, of two, one smaller than a group, and the whole part at once;
        // a stage left longer by an earlier read is reused as it is.
        let mut stage = vec![0x55u8; 3];
        for stage_bytes in [8 * rb, 16 * rb, rb, 1 << 20] {
            let mut got = vec![0u8; src.len()];
            read_packed(
                &file,
                lead as u64,
                (ty, n_in),
                stage_bytes,
                &mut stage,
                &mut got,
                err,
                packing,
            )
            .unwrap();
            assert_eq!(got, want, "stage of {stage_bytes} bytes");
        }
        // Past the end of the file: an error, not a short part.
        let mut got = vec![0u8; src.len()];
        let e = read_packed(
            &file,
            lead as u64 + 1,
            (ty, n_in),
            8 * rb,
            &mut stage,
            &mut got,
            err,
            packing,
        );
        assert!(e.is_err());
    }
}
