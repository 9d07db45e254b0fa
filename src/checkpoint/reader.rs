//! Opening a checkpoint directory and reading its parameters as validated, zero-copy views.

use super::pickle::{self, ArrayView, Dtype, PickleObject};
use crate::config::GrokConfig;
use crate::naming::{checkpoint_file_name, checkpoint_params, ParamSpec, StoredAs};
use half::bf16;
use memmap2::Mmap;
use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A checkpoint that cannot be read, always naming the file or directory concerned.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir}: no checkpoint files (expected {expected} files tensor00000_000 ...)")]
    Empty { dir: PathBuf, expected: usize },
    #[error("{dir}: missing checkpoint file(s) {names} (config expects {expected} files)")]
    Missing {
        dir: PathBuf,
        names: String,
        expected: usize,
    },
    #[error("{dir}: unexpected checkpoint file(s) {names} (config expects {expected} files)")]
    Extra {
        dir: PathBuf,
        names: String,
        expected: usize,
    },
    #[error("{file} ({param}): {source}")]
    Pickle {
        file: PathBuf,
        param: String,
        source: pickle::PickleError,
    },
    #[error("{file} ({param}): expected {expected}, found {found}")]
    Mismatch {
        file: PathBuf,
        param: String,
        expected: String,
        found: String,
    },
    #[error("no tokenizer: {0}")]
    Tokenizer(String),
}

/// An opened checkpoint directory whose file set matches the config.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    specs: Vec<ParamSpec>,
    total_bytes: u64,
}

/// One parameter: the mapped file and validated views of its arrays.
#[derive(Debug)]
pub struct Param {
    pub spec: ParamSpec,
    pub file: PathBuf,
    mmap: Mmap,
    /// The float32 array, or the int8 weight.
    pub data: ArrayView,
    /// The bf16 scales of an int8 parameter.
    pub scales: Option<ArrayView>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn list_names(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

impl Checkpoint {
    /// Open `dir`, which is either the `ckpt-0` directory or its parent, and check that it holds
    /// exactly the files `checkpoint_params(cfg)` names.
    pub fn open(dir: &Path, cfg: &GrokConfig) -> Result<Checkpoint, CheckpointError> {
        let sub = dir.join("ckpt-0");
        let dir = if sub.is_dir() { sub } else { dir.to_path_buf() };
        let specs = checkpoint_params(cfg);
        let mut present = std::collections::BTreeSet::new();
        let mut extra = Vec::new();
        for ent in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let ent = ent.map_err(io_err(&dir))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if !name.starts_with("tensor") {
                continue;
            }
            let index = name
                .strip_prefix("tensor")
                .and_then(|r| r.strip_suffix("_000"))
                .filter(|d| d.len() >= 5 && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<usize>().ok());
            match index {
                Some(i) if i < specs.len() && name == checkpoint_file_name(i) => {
                    present.insert(i);
                }
                _ => extra.push(name),
            }
        }
        if present.is_empty() && extra.is_empty() {
            return Err(CheckpointError::Empty {
                dir,
                expected: specs.len(),
            });
        }
        let missing: Vec<String> = (0..specs.len())
            .filter(|i| !present.contains(i))
            .map(checkpoint_file_name)
            .collect();
        if !missing.is_empty() {
            return Err(CheckpointError::Missing {
                dir,
                names: list_names(&missing),
                expected: specs.len(),
            });
        }
        if !extra.is_empty() {
            extra.sort();
            return Err(CheckpointError::Extra {
                dir,
                names: list_names(&extra),
                expected: specs.len(),
            });
        }
        let mut total_bytes = 0u64;
        for s in &specs {
            let p = dir.join(checkpoint_file_name(s.index));
            total_bytes += std::fs::metadata(&p).map_err(io_err(&p))?.len();
        }
        Ok(Checkpoint {
            dir,
            specs,
            total_bytes,
        })
    }

    /// The `ckpt-0` directory in use.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every parameter, in file order.
    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// Path of file `index`.
    pub fn file_path(&self, index: usize) -> PathBuf {
        self.dir.join(checkpoint_file_name(index))
    }

    /// Total size of the checkpoint files in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Map and parse the file of `spec`, checking its dtypes and shapes against the spec.
    pub fn param(&self, spec: &ParamSpec) -> Result<Param, CheckpointError> {
        let file = self.file_path(spec.index);
        let f = File::open(&file).map_err(io_err(&file))?;
        // SAFETY: the checkpoint is read-only input; a concurrent writer truncating it would be
        // a misuse this tool cannot guard against (as with any mmap reader).
        let mmap = unsafe { Mmap::map(&f) }.map_err(io_err(&file))?;
        let obj = pickle::parse(&mmap).map_err(|source| CheckpointError::Pickle {
            file: file.clone(),
            param: spec.path.clone(),
            source,
        })?;
        let mismatch = |expected: String, found: String| CheckpointError::Mismatch {
            file: file.clone(),
            param: spec.path.clone(),
            expected,
            found,
        };
        let describe = |v: &ArrayView| format!("{} {:?}", v.dtype, v.shape);
        let (data, scales) = match (spec.stored, obj) {
            (StoredAs::F32, PickleObject::Array(a)) => {
                if a.dtype != Dtype::F32 || a.shape != spec.shape {
                    return Err(mismatch(format!("float32 {:?}", spec.shape), describe(&a)));
                }
                (a, None)
            }
            (StoredAs::Int8 { .. }, PickleObject::Quantized { weight, scales }) => {
                if weight.dtype != Dtype::I8 || weight.shape != spec.shape {
                    return Err(mismatch(
                        format!("weight int8 {:?}", spec.shape),
                        format!("weight {}", describe(&weight)),
                    ));
                }
                let want = spec.scales_shape.clone().unwrap_or_default();
                if scales.dtype != Dtype::BF16 || scales.shape != want {
                    return Err(mismatch(
                        format!("scales bfloat16 {want:?}"),
                        format!("scales {}", describe(&scales)),
                    ));
                }
                (weight, Some(scales))
            }
            (StoredAs::F32, PickleObject::Quantized { weight, .. }) => {
                return Err(mismatch(
                    format!("a float32 array {:?}", spec.shape),
                    format!("a QuantizedWeight8bit with weight {}", describe(&weight)),
                ))
            }
            (StoredAs::Int8 { .. }, PickleObject::Array(a)) => {
                return Err(mismatch(
                    format!("a QuantizedWeight8bit with int8 weight {:?}", spec.shape),
                    format!("a plain array {}", describe(&a)),
                ))
            }
        };
        Ok(Param {
            spec: spec.clone(),
            file,
            mmap,
            data,
            scales,
        })
    }

    /// The tokenizer: `explicit` if given, else `tokenizer.model` beside `ckpt-0/` or in `dir`.
    pub fn find_tokenizer(dir: &Path, explicit: Option<&Path>) -> Result<PathBuf, CheckpointError> {
        if let Some(p) = explicit {
            return if p.is_file() {
                Ok(p.to_path_buf())
            } else {
                Err(CheckpointError::Tokenizer(format!(
                    "--tokenizer {} is not a file",
                    p.display()
                )))
            };
        }
        let mut candidates = vec![dir.join("tokenizer.model")];
        if dir.file_name().is_some_and(|n| n == "ckpt-0") {
            if let Some(parent) = dir.parent() {
                candidates.push(parent.join("tokenizer.model"));
            }
        }
        if let Some(p) = candidates.iter().find(|p| p.is_file()) {
            return Ok(p.clone());
        }
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        Err(CheckpointError::Tokenizer(format!(
            "none of {} exists; pass --tokenizer PATH",
            tried.join(", ")
        )))
    }
}

impl Param {
    fn bytes_of(&self, v: &ArrayView) -> &[u8] {
        &self.mmap[v.offset..v.offset + v.len_bytes]
    }

    /// Raw little-endian bytes of the float32 array or int8 weight.
    pub fn data_bytes(&self) -> &[u8] {
        self.bytes_of(&self.data)
    }

    /// The float32 values: borrowed from the map when the payload is 4-byte aligned, else copied.
    /// For large tensors prefer [`Param::f32_range`] on row ranges.
    pub fn f32_data(&self) -> Cow<'_, [f32]> {
        self.f32_range(0, self.data.numel())
    }

    /// Elements `start..start + len` of the float32 array (borrowed when aligned).
    ///
    /// Panics if the range is out of bounds or the parameter is not float32.
    pub fn f32_range(&self, start: usize, len: usize) -> Cow<'_, [f32]> {
        assert_eq!(
            self.data.dtype,
            Dtype::F32,
            "{} is not float32",
            self.spec.path
        );
        let b = &self.data_bytes()[start * 4..(start + len) * 4];
        match bytemuck::try_cast_slice::<u8, f32>(b) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
        }
    }

    /// The int8 weight (any alignment is fine for bytes).
    ///
    /// Panics if the parameter is not int8.
    pub fn int8_weight(&self) -> &[i8] {
        assert_eq!(self.data.dtype, Dtype::I8, "{} is not int8", self.spec.path);
        bytemuck::cast_slice(self.data_bytes())
    }

    /// Raw bytes of the bf16 scales (empty for float32 parameters).
    pub fn scales_bytes(&self) -> &[u8] {
        self.scales.as_ref().map_or(&[], |s| self.bytes_of(s))
    }

    /// The bf16 scales, borrowed when 2-byte aligned, else copied (they are small).
    pub fn scales_bf16(&self) -> Cow<'_, [bf16]> {
        let b = self.scales_bytes();
        match bytemuck::try_cast_slice::<u8, bf16>(b) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(
                b.chunks_exact(2)
                    .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            ),
        }
    }

    /// Number of scale row blocks (1, or 8 for row-parallel weights); 0 for float32 parameters.
    pub fn scale_blocks(&self) -> usize {
        self.scales
            .as_ref()
            .and_then(|s| s.shape.iter().rev().nth(1).copied())
            .unwrap_or(0)
    }

    /// Dequantized (or plain) float32 value of row `row` (over all leading dims flattened) of the
    /// last axis, as the release defines it: `weight[.., i, o] * scales[.., i / (n_in/blocks), o]`.
    pub fn row_f32(&self, row: usize) -> Vec<f32> {
        let out = *self.data.shape.last().unwrap_or(&1);
        match &self.scales {
            None => self.f32_range(row * out, out).into_owned(),
            Some(_) => {
                let shape = &self.data.shape;
                let n_in = shape[shape.len() - 2];
                let blocks = self.scale_blocks();
                let (outer, i) = (row / n_in, row % n_in);
                let b = i / (n_in / blocks);
                let scales = self.scales_bf16();
                let srow = &scales[(outer * blocks + b) * out..][..out];
                let w = &self.int8_weight()[row * out..][..out];
                w.iter()
                    .zip(srow)
                    .map(|(&q, s)| q as f32 * s.to_f32())
                    .collect()
            }
        }
    }
}

impl Param {
    /// Tell the kernel this process is done with `len` bytes of the data payload from element
    /// byte `start` (they leave this process's resident set; the page cache keeps them). Keeps
    /// peak RSS bounded while a multi-GB tensor streams through.
    pub fn release_data_range(&self, start: usize, len: usize) {
        let page = 4096;
        let begin = self.data.offset.saturating_add(start);
        let end = begin.saturating_add(len).min(self.mmap.len());
        // Whole pages strictly inside the range, so neighbouring data is unaffected.
        let a = begin.div_ceil(page) * page;
        let b = end / page * page;
        if b > a {
            // SAFETY: a read-only private file mapping; DONTNEED only drops our page-table
            // entries, later reads fault the same file bytes back in.
            let _ = unsafe {
                self.mmap
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a)
            };
        }
    }
}
