//! Device, pipelines, buffers and the kernel launchers. The `encode_*` functions record one
//! kernel into a command encoder (so a whole layer is one submit); the plain functions
//! (`matmul`, `rms_norm`, ...) are one-shot twins of the CPU backend for tests and tools.

use crate::backend::WeightMatrix;
use quant::GgmlType;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// A GPU failure, always saying what was being done.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found (install a Vulkan driver, e.g. mesa-vulkan-drivers)")]
    NoAdapter,
    #[error("requesting the GPU device failed: {0}")]
    Device(String),
    #[error("{ty:?} weights are not supported by the GPU backend")]
    Unsupported { ty: GgmlType },
    #[error("{0}")]
    Shape(String),
    #[error("GPU error while {what}: {msg}")]
    Wgpu { what: String, msg: String },
}

/// Values per block and bytes per block of the weight types the kernels read.
fn layout(ty: GgmlType) -> Option<(usize, usize, &'static str)> {
    use GgmlType::*;
    Some(match ty {
        F32 => (4, 16, include_str!("../../../shaders/type_f32.wgsl")),
        F16 => (8, 16, include_str!("../../../shaders/type_f16.wgsl")),
        BF16 => (8, 16, include_str!("../../../shaders/type_bf16.wgsl")),
        Q8_0 => (32, 34, include_str!("../../../shaders/type_q8_0.wgsl")),
        Q4_0 => (32, 18, include_str!("../../../shaders/type_q4_0.wgsl")),
        Q4_1 => (32, 20, include_str!("../../../shaders/type_q4_1.wgsl")),
        Q5_0 => (32, 22, include_str!("../../../shaders/type_q5_0.wgsl")),
        Q4_K => (
            256,
            144,
            concat!(
                include_str!("../../../shaders/k_scales.wgsl"),
                include_str!("../../../shaders/type_q4_k.wgsl")
            ),
        ),
        Q5_K => (
            256,
            176,
            concat!(
                include_str!("../../../shaders/k_scales.wgsl"),
                include_str!("../../../shaders/type_q5_k.wgsl")
            ),
        ),
        Q6_K => (256, 210, include_str!("../../../shaders/type_q6_k.wgsl")),
        _ => return None,
    })
}

/// How a weight type's kernel takes its activations.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ActFormat {
    F32,
    /// Q8_0 blocks as 9 words per 32 values.
    Q8_0,
    /// Q8_1 blocks as 10 words per 32 values.
    Q8_1,
    /// Q8_K blocks as 65 words per 256 values.
    Q8K,
}

fn act_format(ty: GgmlType) -> ActFormat {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 => ActFormat::Q8_0,
        GgmlType::Q4_1 => ActFormat::Q8_1,
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => ActFormat::Q8K,
        _ => ActFormat::F32,
    }
}

/// Tokens per matmul workgroup (TILE in matmul.wgsl).
const MM_TILE: usize = 8;

const COMMON: &str = include_str!("../../../shaders/mm_common.wgsl");
const MATMUL: &str = include_str!("../../../shaders/matmul.wgsl");
/// The matmul kernel for a single token: its tile of one keeps the per-token arrays in
/// registers (decode on an H100: see docs/gpu.md).
static MATMUL_ONE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let tile8 = "const TILE: u32 = 8u;";
    assert!(MATMUL.contains(tile8), "matmul.wgsl declares `{tile8}`");
    MATMUL.replace(tile8, "const TILE: u32 = 1u;")
});
const EMBED: &str = include_str!("../../../shaders/embed.wgsl");
const QUANTIZE: &str = include_str!("../../../shaders/quantize.wgsl");
const OPS: &str = include_str!("../../../shaders/ops.wgsl");

/// A weight matrix on the device: `n_out` rows of `n_in`, in chunks of whole units (a unit is
/// one row, or one expert's rows for merged expert tensors), each its own buffer.
pub struct GpuWeight {
    pub ty: GgmlType,
    pub n_in: usize,
    pub n_out: usize,
    /// Rows per unit (1, or rows per expert).
    pub unit: usize,
    /// (first row, rows, buffer).
    chunks: Vec<(usize, usize, wgpu::Buffer)>,
}

impl GpuWeight {
    /// Number of device buffers the matrix was split into.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// A matrix of `n_units` units of `unit` rows whose listed units each live at the start of
    /// their own buffer (`(unit index, buffer)`); units not listed are absent and never
    /// dispatched. This is how a pool of device slots is seen as one expert tensor: unit i is
    /// slot i.
    pub fn from_unit_buffers(
        ty: GgmlType,
        n_in: usize,
        unit: usize,
        n_units: usize,
        units: &[(usize, wgpu::Buffer)],
    ) -> Result<GpuWeight, GpuError> {
        let rb = weight_row_bytes(ty, n_in)?;
        let need = (rb as u64)
            .checked_mul(unit as u64)
            .filter(|_| unit > 0)
            .ok_or_else(|| GpuError::Shape(format!("{unit} rows of {ty:?}[{n_in}] per unit")))?;
        let n_out = unit
            .checked_mul(n_units)
            .ok_or_else(|| GpuError::Shape(format!("{n_units} units of {unit} rows")))?;
        let mut chunks = Vec::with_capacity(units.len());
        for (i, buf) in units {
            if *i >= n_units || buf.size() < need {
                return Err(GpuError::Shape(format!(
                    "unit {i} of {n_units}: a buffer of {} bytes for {need} bytes of weights",
                    buf.size()
                )));
            }
            chunks.push((i * unit, unit, buf.clone()));
        }
        Ok(GpuWeight {
            ty,
            n_in,
            n_out,
            unit,
            chunks,
        })
    }
}

/// Bytes of one row of `n_in` values of `ty`, or why the kernels cannot read such rows.
pub fn weight_row_bytes(ty: GgmlType, n_in: usize) -> Result<usize, GpuError> {
    let (qk, _, _) = layout(ty).ok_or(GpuError::Unsupported { ty })?;
    ty.row_bytes(n_in)
        .filter(|_| n_in.is_multiple_of(qk) && n_in > 0)
        .ok_or_else(|| {
            GpuError::Shape(format!(
                "{ty:?} rows of {n_in} values are not whole blocks of {qk}"
            ))
        })
}

/// Shape of one matmul launch.
#[derive(Clone, Copy, Debug)]
pub(crate) enum MatmulKind<'a> {
    /// `x` holds `tokens` rows; out is `tokens × n_out`.
    Dense { tokens: usize },
    /// Experts, grouped: `groups` is the output of the `group_experts` kernel for `tokens ×
    /// slots` routing slots over `n_exp` experts (offsets, then slot ids by expert); the
    /// activation row of slot (t, k) is `t*xs_t + k*xs_k` of `x_rows`; out is
    /// `(tokens·slots) × unit`. Each expert's rows are read once per tile of its tokens.
    Experts {
        groups: &'a wgpu::Buffer,
        tokens: usize,
        slots: usize,
        n_exp: usize,
        x_rows: usize,
        xs_t: usize,
        xs_k: usize,
    },
}

/// The parameter block of ops.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct OpParams {
    pub n: u32,
    pub rows: u32,
    pub p0: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub k: u32,
    pub pad: u32,
    pub f0: f32,
    pub f1: f32,
    pub capacity: u32,
    pub n_exp: u32,
}

/// Shape and constants of one attention call (see [`GpuContext::attention`]).
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Position of the first query row.
    pub p0: usize,
    /// Score multiplier applied before the soft-cap.
    pub scale: f32,
    pub softcap: f32,
    pub pad_id: u32,
}

pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    max_binding: u64,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    error: Arc<Mutex<Option<String>>>,
    params: Mutex<ParamRing>,
    profile: Mutex<Option<Profile>>,
}

/// GPU time per kernel, from timestamps around each dispatch (each then in a pass of its
/// own), while [`GpuContext::set_profiling`] is on.
struct Profile {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    /// Labels of the dispatches recorded since the last submit, in query order.
    labels: Vec<String>,
    /// Dispatches that found the query set full (not timed).
    untimed: u64,
    totals: HashMap<String, (u64, f64)>,
}

/// Timestamp queries per submit (two a dispatch).
const PROFILE_QUERIES: u32 = 4096;

/// One kernel's line in [`GpuContext::profile_report`].
#[derive(Clone, Debug)]
pub struct KernelTime {
    pub label: String,
    pub calls: u64,
    /// GPU time of all calls, seconds.
    pub seconds: f64,
}

/// A command encoder whose dispatches share one compute pass until a copy (or the submit)
/// closes it: a pass per dispatch cost about 20 µs of CPU time each in wgpu (measured on
/// lavapipe), as much as the kernels of a small matrix take on an H100. wgpu still orders the
/// dispatches of a pass by their buffer use.
pub(crate) struct Encoder {
    enc: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
}

impl Encoder {
    /// The open compute pass (opened if none is).
    fn pass(&mut self) -> &mut wgpu::ComputePass<'static> {
        let enc = &mut self.enc;
        self.pass.get_or_insert_with(|| {
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                .forget_lifetime()
        })
    }

    /// Copy `size` bytes between buffers (after the dispatches recorded so far).
    pub(crate) fn copy_buffer_to_buffer(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        self.pass = None;
        self.enc
            .copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size);
    }

    fn finish(mut self) -> wgpu::CommandBuffer {
        self.pass = None;
        self.enc.finish()
    }
}

/// Kernel parameters of every dispatch, in slots of one uniform buffer (a fresh buffer when
/// one fills up; a slot is never reused, so an encoder not yet submitted cannot see another's
/// values), written to the GPU at the next submit. Creating a small uniform buffer for each
/// dispatch cost about 45 µs of CPU time on NVIDIA's Vulkan driver (H100): most of a decode
/// step's time.
struct ParamRing {
    buf: Option<wgpu::Buffer>,
    next: u64,
    /// Writes not yet handed to the queue: (buffer, offset, bytes).
    pending: Vec<(wgpu::Buffer, u64, Vec<u8>)>,
}

/// Bytes per parameter slot: WebGPU's largest `min_uniform_buffer_offset_alignment`.
const PARAM_SLOT: u64 = 256;
/// Slots per parameter buffer.
const PARAM_SLOTS: u64 = 4096;

fn u32_of(v: usize, what: &str) -> Result<u32, GpuError> {
    u32::try_from(v).map_err(|_| GpuError::Shape(format!("{what} = {v} exceeds 32 bits")))
}

impl GpuContext {
    /// The first adapter wgpu offers (any backend), with the adapter's own limits.
    pub fn new() -> Result<GpuContext, GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::PRIMARY,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|_| GpuError::NoAdapter)?;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("grok1-quant"),
            // Timestamps for `set_profiling` where the adapter has them.
            required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device(e.to_string()))?;
        let error = Arc::new(Mutex::new(None));
        let sink = error.clone();
        device.on_uncaptured_error(Arc::new(move |e| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        let max_binding =
            (limits.max_storage_buffer_binding_size as u64).min(limits.max_buffer_size);
        Ok(GpuContext {
            device,
            queue,
            info: adapter.get_info(),
            max_binding,
            pipelines: Mutex::new(HashMap::new()),
            error,
            params: Mutex::new(ParamRing {
                buf: None,
                next: 0,
                pending: Vec::new(),
            }),
            profile: Mutex::new(None),
        })
    }

    /// Adapter name and backend, for messages.
    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// Bytes one storage binding may hold (what weights are split by).
    pub fn max_binding(&self) -> u64 {
        self.max_binding
    }

    /// Time every dispatch on the GPU from now on (`true`; each dispatch then runs in a pass
    /// of its own, and each submit waits for its timestamps) or stop (`false`). An error if
    /// the adapter has no timestamp queries.
    pub fn set_profiling(&self, on: bool) -> Result<(), GpuError> {
        let mut prof = self.profile.lock().unwrap_or_else(|p| p.into_inner());
        if !on {
            *prof = None;
            return Ok(());
        }
        if !self
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            return Err(GpuError::Device(format!(
                "{} has no timestamp queries: cannot profile kernels",
                self.adapter_name()
            )));
        }
        if prof.is_none() {
            *prof = Some(Profile {
                set: self.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("kernel timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: PROFILE_QUERIES,
                }),
                resolve: self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamp resolve"),
                    size: u64::from(PROFILE_QUERIES) * 8,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                labels: Vec::new(),
                untimed: 0,
                totals: HashMap::new(),
            });
        }
        Ok(())
    }

    /// GPU time per kernel label since profiling began or the last report, most first; the
    /// count of dispatches that went untimed (over 2048 in one submit). Resets the totals.
    pub fn profile_report(&self) -> (Vec<KernelTime>, u64) {
        let mut prof = self.profile.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pr) = prof.as_mut() else {
            return (Vec::new(), 0);
        };
        let mut v: Vec<KernelTime> = pr
            .totals
            .drain()
            .map(|(label, (calls, seconds))| KernelTime {
                label,
                calls,
                seconds,
            })
            .collect();
        v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        (v, std::mem::take(&mut pr.untimed))
    }

    /// Lower the split size (tests force tiny limits to exercise the splitting); never raises
    /// it above the adapter's limit.
    pub fn set_max_binding(&mut self, bytes: u64) {
        self.max_binding = bytes.clamp(4, self.max_binding);
    }

    /// Turn an error reported by wgpu since the last check into a `GpuError`.
    pub(crate) fn check(&self, what: &str) -> Result<(), GpuError> {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(msg) => Err(GpuError::Wgpu {
                what: what.to_string(),
                msg,
            }),
            None => Ok(()),
        }
    }

    fn pipeline(
        &self,
        key: &str,
        entry: &str,
        source: impl FnOnce() -> String,
    ) -> Result<Arc<wgpu::ComputePipeline>, GpuError> {
        let mut map = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = map.get(key) {
            return Ok(p.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(key),
                source: wgpu::ShaderSource::Wgsl(source().into()),
            });
        let p = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Wgpu {
                what: format!("compiling kernel {key}"),
                msg: e.to_string(),
            });
        }
        let p = Arc::new(p);
        map.insert(key.to_string(), p.clone());
        Ok(p)
    }

    fn type_pipeline(
        &self,
        ty: GgmlType,
        main: &str,
        name: &str,
    ) -> Result<Arc<wgpu::ComputePipeline>, GpuError> {
        let (_, _, src) = layout(ty).ok_or(GpuError::Unsupported { ty })?;
        let x_decl = match act_format(ty) {
            ActFormat::F32 => "@group(0) @binding(2) var<storage, read> xf: array<f32>;\n",
            _ => "@group(0) @binding(2) var<storage, read> xq: array<u32>;\n",
        };
        let prelude = if name == "embed" { "" } else { x_decl };
        self.pipeline(&format!("{name}/{}", ty.name()), "main", || {
            format!("{prelude}{COMMON}\n{src}\n{main}")
        })
    }

    pub(crate) fn ops_pipeline(&self, entry: &str) -> Result<Arc<wgpu::ComputePipeline>, GpuError> {
        self.pipeline(&format!("ops/{entry}"), entry, || OPS.to_string())
    }

    /// A storage buffer with `bytes` (padded to whole words).
    pub(crate) fn upload_bytes(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        if bytes.len().is_multiple_of(4) && !bytes.is_empty() {
            return self
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytes,
                    usage,
                });
        }
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &padded,
                usage,
            })
    }

    pub(crate) fn upload_f32(&self, label: &str, x: &[f32]) -> wgpu::Buffer {
        self.upload_bytes(label, bytemuck::cast_slice(x))
    }

    /// A zeroed storage buffer of `n` 4-byte elements.
    pub(crate) fn scratch(&self, label: &str, n: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (n.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    /// A zeroed device buffer of `bytes` (rounded up to whole words) that one binding can hold.
    pub fn device_buffer(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer, GpuError> {
        let size = bytes.max(4).div_ceil(4) * 4;
        if size > self.max_binding {
            return Err(GpuError::Shape(format!(
                "a {label} buffer of {size} bytes is over the storage binding limit of {}",
                self.max_binding
            )));
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    /// Queue a write of `bytes` to the start of `buf` (zero-padded to a whole word); it lands
    /// before the commands of the next submit and after those of earlier ones.
    pub fn write_bytes(&self, buf: &wgpu::Buffer, bytes: &[u8]) -> Result<(), GpuError> {
        let padded = bytes.len().div_ceil(4) * 4;
        if padded as u64 > buf.size() {
            return Err(GpuError::Shape(format!(
                "writing {} bytes into a buffer of {}",
                bytes.len(),
                buf.size()
            )));
        }
        if padded == bytes.len() {
            self.queue.write_buffer(buf, 0, bytes);
        } else {
            let mut v = bytes.to_vec();
            v.resize(padded, 0);
            self.queue.write_buffer(buf, 0, &v);
        }
        Ok(())
    }

    /// Upload a weight matrix; `unit` rows stay together in one chunk (1 for dense matrices,
    /// rows per expert for merged expert tensors).
    pub fn upload_weight(&self, w: &WeightMatrix, unit: usize) -> Result<GpuWeight, GpuError> {
        let rb = weight_row_bytes(w.ty, w.n_in)?;
        if w.layout != quant::Layout::Rows {
            return Err(GpuError::Shape(
                "the GPU kernels read ggml's row layout; this matrix was repacked for the CPU"
                    .into(),
            ));
        }
        if unit == 0 || !w.n_out.is_multiple_of(unit) {
            return Err(GpuError::Shape(format!(
                "{} rows are not whole units of {unit}",
                w.n_out
            )));
        }
        if w.data.len() != rb * w.n_out {
            return Err(GpuError::Shape(format!(
                "weight data is {} bytes, {} rows of {:?}[{}] need {}",
                w.data.len(),
                w.n_out,
                w.ty,
                w.n_in,
                rb * w.n_out
            )));
        }
        let unit_bytes = (rb * unit) as u64;
        // A chunk's padded size must fit the binding limit.
        let units_per_chunk = ((self.max_binding.saturating_sub(3)) / unit_bytes) as usize;
        if units_per_chunk == 0 {
            return Err(GpuError::Shape(format!(
                "one unit of {unit} rows is {unit_bytes} bytes, over the storage binding limit of {}",
                self.max_binding
            )));
        }
        let rows_per_chunk = units_per_chunk * unit;
        let mut chunks = Vec::new();
        let mut r0 = 0;
        while r0 < w.n_out {
            let r1 = (r0 + rows_per_chunk).min(w.n_out);
            let buf = self.upload_bytes("weight", &w.data[r0 * rb..r1 * rb]);
            chunks.push((r0, r1 - r0, buf));
            r0 = r1;
        }
        Ok(GpuWeight {
            ty: w.ty,
            n_in: w.n_in,
            n_out: w.n_out,
            unit,
            chunks,
        })
    }

    /// Record one compute dispatch of `groups` workgroups (spread over x and y) × `z`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch(
        &self,
        enc: &mut Encoder,
        pipeline: &wgpu::ComputePipeline,
        label: impl FnOnce() -> String,
        params: &[u8],
        bindings: &[(u32, &wgpu::Buffer)],
        groups: usize,
        z: usize,
    ) -> Result<(), GpuError> {
        if groups == 0 || z == 0 {
            return Ok(());
        }
        if params.is_empty() || params.len() as u64 > PARAM_SLOT {
            return Err(GpuError::Shape(format!(
                "kernel parameters of {} bytes (1 to {PARAM_SLOT})",
                params.len()
            )));
        }
        let (ub, offset) = self.param_slot(params);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &ub,
                offset,
                size: wgpu::BufferSize::new(params.len() as u64),
            }),
        }];
        for &(binding, buf) in bindings {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: buf.as_entire_binding(),
            });
        }
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let max = 65535usize;
        let x = groups.min(max);
        let y = groups.div_ceil(x);
        if y > max || z > max {
            return Err(GpuError::Shape(format!(
                "dispatch of {groups}×{z} workgroups is too large"
            )));
        }
        let mut prof = self.profile.lock().unwrap_or_else(|p| p.into_inner());
        let timed = match prof.as_mut() {
            Some(pr) if (pr.labels.len() as u32 + 1) * 2 <= PROFILE_QUERIES => {
                let i = pr.labels.len() as u32 * 2;
                pr.labels.push(label());
                // End the open pass (it borrows the encoder) before this one begins.
                enc.pass = None;
                enc.pass = Some(
                    enc.enc
                        .begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: None,
                            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                                query_set: &pr.set,
                                beginning_of_pass_write_index: Some(i),
                                end_of_pass_write_index: Some(i + 1),
                            }),
                        })
                        .forget_lifetime(),
                );
                true
            }
            Some(pr) => {
                pr.untimed += 1;
                false
            }
            None => false,
        };
        drop(prof);
        let pass = enc.pass();
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(x as u32, y as u32, z as u32);
        if timed {
            enc.pass = None;
        }
        Ok(())
    }

    /// Quantize `rows` rows of `n` f32 in `x` to the activation format `ty` dots with.
    /// Returns `None` when `ty` takes f32 activations.
    fn encode_quantize(
        &self,
        enc: &mut Encoder,
        ty: GgmlType,
        x: &wgpu::Buffer,
        n: usize,
        rows: usize,
    ) -> Result<Option<wgpu::Buffer>, GpuError> {
        let (entry, qk, words) = match act_format(ty) {
            ActFormat::F32 => return Ok(None),
            ActFormat::Q8_0 => ("q8_0", 32, 9),
            ActFormat::Q8_1 => ("q8_1", 32, 10),
            ActFormat::Q8K => ("q8_k", 256, 65),
        };
        let p = self.pipeline(&format!("quantize/{entry}"), entry, || QUANTIZE.to_string())?;
        let blocks = n / qk * rows;
        let q = self.scratch("qacts", blocks * words);
        let params = [u32_of(n, "row length")?, u32_of(rows, "rows")?];
        // Workgroups of 64 threads, 4 values each: 8 blocks of 32 or one of 256.
        self.dispatch(
            enc,
            &p,
            || format!("quantize {entry} ×{n}"),
            bytemuck::cast_slice(&params),
            &[(1, x), (2, &q)],
            (blocks * qk).div_ceil(256),
            1,
        )?;
        Ok(Some(q))
    }

    /// Record `out = x · Wᵀ` (see [`MatmulKind`]).
    pub(crate) fn encode_matmul(
        &self,
        enc: &mut Encoder,
        w: &GpuWeight,
        x: &wgpu::Buffer,
        out: &wgpu::Buffer,
        kind: MatmulKind,
        dummy: &wgpu::Buffer,
    ) -> Result<(), GpuError> {
        // One token (decode): the kernel variant with a tile of one.
        let one = matches!(
            kind,
            MatmulKind::Dense { tokens: 1 } | MatmulKind::Experts { tokens: 1, .. }
        );
        let (tile, p) = if one {
            (1, self.type_pipeline(w.ty, &MATMUL_ONE, "matmul1")?)
        } else {
            (MM_TILE, self.type_pipeline(w.ty, MATMUL, "matmul")?)
        };
        let x_rows = match kind {
            MatmulKind::Dense { tokens } => tokens,
            MatmulKind::Experts { x_rows, .. } => x_rows,
        };
        let q = self.encode_quantize(enc, w.ty, x, w.n_in, x_rows)?;
        let xb = q.as_ref().unwrap_or(x);
        for (r0, rows, buf) in &w.chunks {
            // [n_in, n_rows, row0, out_stride, tokens, tile, mode, n_slots, e0, e1, xs_t, xs_k,
            //  n_exp, tiles_per_e, -, -]
            let (params, groups, z, bound) = match kind {
                MatmulKind::Dense { tokens } => (
                    [
                        w.n_in, *rows, *r0, w.n_out, tokens, tile, 0, 1, 0, 1, 1, 0, 0, 1, 0, 0,
                    ],
                    *rows,
                    tokens.div_ceil(tile),
                    dummy,
                ),
                MatmulKind::Experts {
                    groups,
                    tokens,
                    slots,
                    n_exp,
                    xs_t,
                    xs_k,
                    ..
                } => {
                    // An expert takes each token at most once: ≤ `tokens` slots per expert.
                    let tiles = tokens.div_ceil(tile);
                    let (e0, e1) = (r0 / w.unit, (r0 + rows) / w.unit);
                    if e1 > n_exp {
                        return Err(GpuError::Shape(format!(
                            "expert matrix has {} experts, routing over {n_exp}",
                            w.n_out / w.unit
                        )));
                    }
                    (
                        [
                            w.n_in,
                            w.unit,
                            0,
                            w.unit,
                            tokens * slots,
                            tile,
                            1,
                            slots,
                            e0,
                            e1,
                            xs_t,
                            xs_k,
                            n_exp,
                            tiles,
                            0,
                            0,
                        ],
                        w.unit,
                        (e1 - e0) * tiles,
                        groups,
                    )
                }
            };
            let mut words = [0u32; 16];
            for (o, v) in words.iter_mut().zip(params) {
                *o = u32_of(v, "matmul parameter")?;
            }
            self.dispatch(
                enc,
                &p,
                || {
                    let what = match kind {
                        MatmulKind::Dense { .. } => "matmul",
                        MatmulKind::Experts { .. } => "experts",
                    };
                    format!("{what} {} {}×{}", w.ty.name(), w.n_out, w.n_in)
                },
                bytemuck::cast_slice(&words),
                &[(1, buf), (2, xb), (3, out), (4, bound)],
                groups,
                z,
            )?;
        }
        Ok(())
    }

    /// Record the embedding lookup of `tokens` ids (in the buffer from element `id_offset`)
    /// into `out`.
    pub(crate) fn encode_embed(
        &self,
        enc: &mut Encoder,
        w: &GpuWeight,
        (ids, id_offset): (&wgpu::Buffer, usize),
        tokens: usize,
        scale: f32,
        out: &wgpu::Buffer,
    ) -> Result<(), GpuError> {
        let p = self.type_pipeline(w.ty, EMBED, "embed")?;
        for (r0, rows, buf) in &w.chunks {
            let params: [u32; 6] = [
                u32_of(w.n_in, "n_in")?,
                u32_of(*rows, "rows")?,
                u32_of(*r0, "row0")?,
                u32_of(tokens, "tokens")?,
                scale.to_bits(),
                u32_of(id_offset, "id offset")?,
            ];
            self.dispatch(
                enc,
                &p,
                || format!("embed {}", w.ty.name()),
                bytemuck::cast_slice(&params),
                &[(1, buf), (2, ids), (3, out)],
                (tokens * w.n_in).div_ceil(64),
                1,
            )?;
        }
        Ok(())
    }

    /// Record one ops.wgsl kernel over `groups` workgroups.
    pub(crate) fn encode_op(
        &self,
        enc: &mut Encoder,
        entry: &str,
        params: &OpParams,
        bindings: &[(u32, &wgpu::Buffer)],
        groups: usize,
    ) -> Result<(), GpuError> {
        let p = self.ops_pipeline(entry)?;
        self.dispatch(
            enc,
            &p,
            || entry.to_string(),
            bytemuck::bytes_of(params),
            bindings,
            groups,
            1,
        )
    }

    /// A parameter slot holding `params` (written at the next submit): its buffer and offset.
    fn param_slot(&self, params: &[u8]) -> (wgpu::Buffer, u64) {
        let mut ring = self.params.lock().unwrap_or_else(|p| p.into_inner());
        if ring.buf.is_none() || ring.next == PARAM_SLOTS {
            ring.buf = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: PARAM_SLOT * PARAM_SLOTS,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
            ring.next = 0;
        }
        let buf = ring.buf.clone().expect("a parameter buffer was just made");
        let offset = ring.next * PARAM_SLOT;
        ring.next += 1;
        let mut bytes = params.to_vec();
        bytes.resize(bytes.len().div_ceil(4) * 4, 0);
        // Consecutive slots of one buffer go to the queue as one write.
        match ring.pending.last_mut() {
            Some((b, o, v))
                if *b == buf
                    && *o + PARAM_SLOT * (v.len() as u64).div_ceil(PARAM_SLOT) == offset =>
            {
                v.resize((offset - *o) as usize, 0);
                v.extend_from_slice(&bytes);
            }
            _ => ring.pending.push((buf.clone(), offset, bytes)),
        }
        (buf, offset)
    }

    /// Submit `enc` (after writing the kernel parameters recorded so far) and surface any
    /// error wgpu reported while recording or running it.
    pub(crate) fn submit(&self, mut enc: Encoder, what: &str) -> Result<(), GpuError> {
        let mut prof = self.profile.lock().unwrap_or_else(|p| p.into_inner());
        let timed = match prof.as_mut() {
            Some(pr) if !pr.labels.is_empty() => {
                let n = pr.labels.len() as u32 * 2;
                enc.pass = None;
                enc.enc.resolve_query_set(&pr.set, 0..n, &pr.resolve, 0);
                let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamps"),
                    size: u64::from(n) * 8,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                enc.enc
                    .copy_buffer_to_buffer(&pr.resolve, 0, &staging, 0, u64::from(n) * 8);
                Some((staging, std::mem::take(&mut pr.labels)))
            }
            _ => None,
        };
        {
            // Under the lock: another thread's submit cannot slip in between another's
            // parameter writes and its own.
            let mut ring = self.params.lock().unwrap_or_else(|p| p.into_inner());
            for (buf, offset, bytes) in std::mem::take(&mut ring.pending) {
                self.queue.write_buffer(&buf, offset, &bytes);
            }
            self.queue.submit(Some(enc.finish()));
        }
        if let (Some((staging, labels)), Some(pr)) = (timed, prof.as_mut()) {
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&self.map_read(&staging)?);
            let period = f64::from(self.queue.get_timestamp_period());
            for (label, t) in labels.into_iter().zip(ticks.chunks_exact(2)) {
                let e = pr.totals.entry(label).or_insert((0, 0.0));
                e.0 += 1;
                e.1 += t[1].saturating_sub(t[0]) as f64 * period * 1e-9;
            }
        }
        drop(prof);
        self.check(what)
    }

    pub(crate) fn encoder(&self) -> Encoder {
        Encoder {
            enc: self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default()),
            pass: None,
        }
    }

    /// Read `n` u32 from `buf` starting at element `offset`.
    pub(crate) fn read_u32(
        &self,
        buf: &wgpu::Buffer,
        offset: usize,
        n: usize,
    ) -> Result<Vec<u32>, GpuError> {
        Ok(bytemuck::pod_collect_to_vec(
            &self.read_words(buf, offset, n)?,
        ))
    }

    /// Read `n` f32 from `buf` starting at element `offset`.
    pub(crate) fn read_f32(
        &self,
        buf: &wgpu::Buffer,
        offset: usize,
        n: usize,
    ) -> Result<Vec<f32>, GpuError> {
        Ok(bytemuck::pod_collect_to_vec(
            &self.read_words(buf, offset, n)?,
        ))
    }

    /// The bytes of `n` 4-byte elements of `buf` from element `offset`.
    fn read_words(&self, buf: &wgpu::Buffer, offset: usize, n: usize) -> Result<Vec<u8>, GpuError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: (n * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.encoder();
        enc.copy_buffer_to_buffer(buf, (offset * 4) as u64, &staging, 0, (n * 4) as u64);
        self.submit(enc, "reading back")?;
        let out = self.map_read(&staging)?;
        self.check("reading back")?;
        Ok(out)
    }

    /// The bytes of a MAP_READ buffer, once the GPU work submitted so far is done.
    fn map_read(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>, GpuError> {
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Wgpu {
                what: "waiting for the GPU".into(),
                msg: e.to_string(),
            })?;
        let mapped = rx.recv().map_err(|e| GpuError::Wgpu {
            what: "reading back".into(),
            msg: e.to_string(),
        })?;
        mapped.map_err(|e| GpuError::Wgpu {
            what: "mapping the readback buffer".into(),
            msg: e.to_string(),
        })?;
        let view = slice.get_mapped_range().map_err(|e| GpuError::Wgpu {
            what: "viewing the readback buffer".into(),
            msg: e.to_string(),
        })?;
        let out = view.to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// `out[t][r] = Σ_i x[t][i]·W[r][i]` for `tokens` rows of `x` (twin of the CPU matmul).
    pub fn matmul(&self, w: &WeightMatrix, x: &[f32], tokens: usize) -> Result<Vec<f32>, GpuError> {
        let gw = self.upload_weight(w, 1)?;
        self.matmul_uploaded(&gw, x, tokens)
    }

    /// [`GpuContext::matmul`] with an already uploaded weight.
    pub fn matmul_uploaded(
        &self,
        w: &GpuWeight,
        x: &[f32],
        tokens: usize,
    ) -> Result<Vec<f32>, GpuError> {
        if x.len() != tokens * w.n_in {
            return Err(GpuError::Shape(format!(
                "x has {} values, {tokens} tokens of {} expected",
                x.len(),
                w.n_in
            )));
        }
        let xb = self.upload_f32("x", x);
        let out = self.scratch("out", tokens * w.n_out);
        let dummy = self.scratch("dummy", 1);
        let mut enc = self.encoder();
        self.encode_matmul(&mut enc, w, &xb, &out, MatmulKind::Dense { tokens }, &dummy)?;
        self.submit(enc, "matmul")?;
        self.read_f32(&out, 0, tokens * w.n_out)
    }

    /// The activation quantization the 4-bit kernels use, read back as the CPU's block bytes
    /// (`quant::quantize_activation` layout) for comparison.
    pub fn quantize_activations(
        &self,
        ty: GgmlType,
        x: &[f32],
        n: usize,
    ) -> Result<Vec<u8>, GpuError> {
        if n == 0 || !x.len().is_multiple_of(n) {
            return Err(GpuError::Shape(format!(
                "{} values are not rows of {n}",
                x.len()
            )));
        }
        let rows = x.len() / n;
        let xb = self.upload_f32("x", x);
        let mut enc = self.encoder();
        let q = self
            .encode_quantize(&mut enc, ty, &xb, n, rows)?
            .ok_or_else(|| GpuError::Shape(format!("{ty:?} takes f32 activations")))?;
        self.submit(enc, "quantizing")?;
        let (qk, words) = match act_format(ty) {
            ActFormat::Q8_0 => (32, 9),
            ActFormat::Q8_1 => (32, 10),
            _ => (256, 65),
        };
        let blocks = n / qk * rows;
        let raw = self.read_f32(&q, 0, blocks * words)?;
        let raw: &[u32] = bytemuck::cast_slice(&raw);
        let f16_bytes = |w: u32| half::f16::from_f32(f32::from_bits(w)).to_le_bytes();
        let mut out = Vec::new();
        for b in raw.chunks_exact(words) {
            match words {
                9 | 10 => {
                    // d (and s) were rounded to f16 on the GPU: converting back is exact.
                    let heads = words - 8;
                    for &w in &b[..heads] {
                        out.extend_from_slice(&f16_bytes(w));
                    }
                    out.extend_from_slice(bytemuck::cast_slice(&b[heads..]));
                }
                _ => {
                    let qs: &[u8] = bytemuck::cast_slice(&b[1..]);
                    out.extend_from_slice(&b[0].to_le_bytes());
                    out.extend_from_slice(qs);
                    for g in qs.chunks_exact(16) {
                        let s: i16 = g.iter().map(|&v| v as i8 as i16).sum();
                        out.extend_from_slice(&s.to_le_bytes());
                    }
                }
            }
        }
        Ok(out)
    }

    /// `a[i] / b[i]` through the division the activation quantizers use (correctly rounded,
    /// as the CPU divides; WGSL's `/` may be off by 2.5 ULP), for tests.
    pub fn divide(&self, a: &[f32], b: &[f32]) -> Result<Vec<f32>, GpuError> {
        if a.len() != b.len() || a.is_empty() {
            return Err(GpuError::Shape(format!(
                "divide: {} dividends and {} divisors",
                a.len(),
                b.len()
            )));
        }
        let pairs: Vec<f32> = a.iter().zip(b).flat_map(|(&x, &y)| [x, y]).collect();
        let xb = self.upload_f32("pairs", &pairs);
        let q = self.scratch("quotients", a.len());
        let p = self.pipeline("quantize/divide", "divide", || QUANTIZE.to_string())?;
        let params = [u32_of(a.len(), "divisions")?, 1];
        let mut enc = self.encoder();
        self.dispatch(
            &mut enc,
            &p,
            || "divide".to_string(),
            bytemuck::cast_slice(&params),
            &[(1, &xb), (2, &q)],
            a.len().div_ceil(64),
            1,
        )?;
        self.submit(enc, "divide")?;
        self.read_f32(&q, 0, a.len())
    }

    fn rows_op(
        &self,
        entry: &str,
        a: &[f32],
        b: Option<&[f32]>,
        params: OpParams,
        groups: usize,
    ) -> Result<Vec<f32>, GpuError> {
        let ab = self.upload_f32("a", a);
        let bb = b.map(|b| self.upload_f32("b", b));
        let mut binds = vec![(1, &ab)];
        if let Some(bb) = &bb {
            binds.push((2, bb));
        }
        let mut enc = self.encoder();
        self.encode_op(&mut enc, entry, &params, &binds, groups)?;
        self.submit(enc, entry)?;
        self.read_f32(&ab, 0, a.len())
    }

    /// Twin of `cpu::rms_norm` (rows of `scale.len()`).
    pub fn rms_norm(&self, x: &[f32], scale: &[f32], eps: f32) -> Result<Vec<f32>, GpuError> {
        let n = scale.len();
        if n == 0 || !x.len().is_multiple_of(n) {
            return Err(GpuError::Shape(format!(
                "{} values are not rows of {n}",
                x.len()
            )));
        }
        let rows = x.len() / n;
        let p = OpParams {
            n: u32_of(n, "n")?,
            rows: u32_of(rows, "rows")?,
            f0: eps,
            ..Default::default()
        };
        self.rows_op("rms_norm", x, Some(scale), p, rows)
    }

    /// Twin of `cpu::softmax_in_place`, for each row of `n`.
    pub fn softmax(&self, x: &[f32], n: usize) -> Result<Vec<f32>, GpuError> {
        if n == 0 || !x.len().is_multiple_of(n) {
            return Err(GpuError::Shape(format!(
                "{} values are not rows of {n}",
                x.len()
            )));
        }
        let rows = x.len() / n;
        let p = OpParams {
            n: u32_of(n, "n")?,
            rows: u32_of(rows, "rows")?,
            ..Default::default()
        };
        self.rows_op("softmax_rows", x, None, p, rows.div_ceil(64))
    }

    /// Twin of `cpu::rope_rotate_half` for `tokens` rows of heads, row t at position `p0 + t`.
    pub fn rope(
        &self,
        x: &[f32],
        head_dim: usize,
        p0: usize,
        tokens: usize,
        inv_freq: &[f32],
    ) -> Result<Vec<f32>, GpuError> {
        if head_dim == 0
            || !head_dim.is_multiple_of(2)
            || inv_freq.len() != head_dim / 2
            || tokens == 0
            || !x.len().is_multiple_of(tokens * head_dim)
        {
            return Err(GpuError::Shape(format!(
                "rope: {} values, {tokens} tokens, head_dim {head_dim}, {} frequencies",
                x.len(),
                inv_freq.len()
            )));
        }
        let heads = x.len() / tokens / head_dim;
        let p = OpParams {
            rows: u32_of(tokens, "tokens")?,
            p0: u32_of(p0, "p0")?,
            n_heads: u32_of(heads, "heads")?,
            head_dim: u32_of(head_dim, "head_dim")?,
            ..Default::default()
        };
        self.rows_op("rope", x, Some(inv_freq), p, (x.len() / 2).div_ceil(64))
    }

    /// `gelu_tanh(g) ⊙ u`, elementwise.
    pub fn gelu_mul(&self, g: &[f32], u: &[f32]) -> Result<Vec<f32>, GpuError> {
        if g.len() != u.len() {
            return Err(GpuError::Shape(format!(
                "{} vs {} values",
                g.len(),
                u.len()
            )));
        }
        let p = OpParams {
            n: u32_of(g.len(), "n")?,
            rows: 1,
            ..Default::default()
        };
        self.rows_op("gelu_mul", g, Some(u), p, g.len().div_ceil(64))
    }

    /// Router: softmax of each row of `n_exp` logits and the top `k` (expert, probability)
    /// per row, ties to the lower index.
    pub fn route(
        &self,
        logits: &[f32],
        n_exp: usize,
        k: usize,
    ) -> Result<Vec<Vec<(usize, f32)>>, GpuError> {
        if n_exp == 0 || k == 0 || k > n_exp || !logits.len().is_multiple_of(n_exp) {
            return Err(GpuError::Shape(format!(
                "route: {} logits, {n_exp} experts, top {k}",
                logits.len()
            )));
        }
        let rows = logits.len() / n_exp;
        let a = self.upload_f32("router", logits);
        let idx = self.scratch("idx", rows * k);
        let gates = self.scratch("gates", rows * k);
        let p = OpParams {
            rows: u32_of(rows, "rows")?,
            k: u32_of(k, "k")?,
            n_exp: u32_of(n_exp, "n_exp")?,
            ..Default::default()
        };
        let mut enc = self.encoder();
        self.encode_op(
            &mut enc,
            "route",
            &p,
            &[(1, &a), (5, &gates), (6, &idx)],
            rows.div_ceil(64),
        )?;
        self.submit(enc, "route")?;
        let ids = self.read_f32(&idx, 0, rows * k)?;
        let g = self.read_f32(&gates, 0, rows * k)?;
        Ok((0..rows)
            .map(|r| {
                (0..k)
                    .map(|j| (ids[r * k + j].to_bits() as usize, g[r * k + j]))
                    .collect()
            })
            .collect())
    }

    /// Embedding rows of `ids` times `scale` (twin of the CPU embedding lookup).
    pub fn embed(&self, w: &WeightMatrix, ids: &[u32], scale: f32) -> Result<Vec<f32>, GpuError> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= w.n_out) {
            return Err(GpuError::Shape(format!(
                "token id {bad} is outside the vocabulary of {}",
                w.n_out
            )));
        }
        let gw = self.upload_weight(w, 1)?;
        let idb = self.upload_bytes("ids", bytemuck::cast_slice(ids));
        let out = self.scratch("emb", ids.len() * w.n_in);
        let mut enc = self.encoder();
        self.encode_embed(&mut enc, &gw, (&idb, 0), ids.len(), scale, &out)?;
        self.submit(enc, "embedding")?;
        self.read_f32(&out, 0, ids.len() * w.n_in)
    }

    /// Causal GQA attention of query rows `q` (`T × n_heads × head_dim`, row t at position
    /// `p0 + t`) over `k`/`v` (`(p0 + T) × n_kv_heads·head_dim`, RoPE already applied), keys at
    /// pad-token positions masked: the twin of the CPU forward pass's attention.
    pub fn attention(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        tokens: &[u32],
        sh: &AttentionShape,
    ) -> Result<Vec<f32>, GpuError> {
        let (hd, nh, nkv) = (sh.head_dim, sh.n_heads, sh.n_kv_heads);
        let bad = || {
            GpuError::Shape(format!(
                "attention: q {}, k {}, v {}, {} tokens for {sh:?}",
                q.len(),
                k.len(),
                v.len(),
                tokens.len()
            ))
        };
        if hd == 0
            || hd > 256
            || nh == 0
            || nkv == 0
            || !nh.is_multiple_of(nkv)
            || !q.len().is_multiple_of(nh * hd)
        {
            return Err(bad());
        }
        let t = q.len() / (nh * hd);
        let ctx_len = sh.p0 + t;
        if t == 0 || k.len() != ctx_len * nkv * hd || v.len() != k.len() || tokens.len() != ctx_len
        {
            return Err(bad());
        }
        let (qb, kb, vb) = (
            self.upload_f32("q", q),
            self.upload_f32("k", k),
            self.upload_f32("v", v),
        );
        let tb = self.upload_bytes("tokens", bytemuck::cast_slice(tokens));
        let out = self.scratch("attn", q.len());
        let p = OpParams {
            rows: u32_of(t, "rows")?,
            p0: u32_of(sh.p0, "p0")?,
            n_heads: u32_of(nh, "heads")?,
            n_kv_heads: u32_of(nkv, "kv heads")?,
            head_dim: u32_of(hd, "head_dim")?,
            pad: sh.pad_id,
            f0: sh.scale,
            f1: sh.softcap,
            capacity: u32_of(ctx_len, "capacity")?,
            ..Default::default()
        };
        let mut enc = self.encoder();
        self.encode_op(
            &mut enc,
            "attention",
            &p,
            &[(1, &out), (2, &qb), (3, &kb), (4, &tb), (7, &vb)],
            t * nh,
        )?;
        self.submit(enc, "attention")?;
        self.read_f32(&out, 0, q.len())
    }
}

impl GpuContext {
    /// Whether the adapter is a software rasterizer on the CPU (lavapipe, SwiftShader): correct,
    /// but far slower than the CPU backend.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }
}
