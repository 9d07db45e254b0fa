//! Planning and writing GGUF files.
//!
//! [`GgufLayout`] computes everything about a file except the tensor bytes, so a converter can
//! create the file up front and fill tensors from many threads in any order through
//! [`GgufFileWriter`].

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::direct::{DirectFile, PageBuf, PartialPages};
use super::value::{GgufArray, GgufValue, Metadata};
use super::{
    align_up, keys, tensor_nbytes, GgmlType, GgufError, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC,
    GGUF_MAX_ARRAY_DEPTH, GGUF_MAX_NAME_LEN, GGUF_VERSION,
};

/// A tensor to be written: name, shape in ggml `ne` order (`ne[0]` is the row length), type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, shape: Vec<u64>, ty: GgmlType) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            shape,
            ty,
        }
    }
}

/// The complete plan of a GGUF file: header bytes, where each tensor's data goes, file size.
#[derive(Clone, Debug)]
pub struct GgufLayout {
    metadata: Metadata,
    tensors: Vec<TensorSpec>,
    index: HashMap<String, usize>,
    alignment: u64,
    header: Vec<u8>,
    data_offset: u64,
    offsets: Vec<u64>,
    sizes: Vec<u64>,
    file_size: u64,
}

impl GgufLayout {
    /// Plan a file. `alignment` (a power of two that fits in `u32`) aligns the data section and
    /// every tensor; if it is not the default 32, `general.alignment` is added to the metadata
    /// (a `general.alignment` already present must be a `u32` equal to `alignment`). Tensor data
    /// is laid out in the given order, each tensor starting at a multiple of `alignment`.
    pub fn new(
        metadata: Metadata,
        tensors: Vec<TensorSpec>,
        alignment: u64,
    ) -> Result<GgufLayout, GgufError> {
        let mut metadata = metadata;
        if !alignment.is_power_of_two() || alignment > u64::from(u32::MAX) {
            return Err(GgufError::Layout(format!(
                "alignment {alignment} must be a power of two that fits in u32"
            )));
        }
        match metadata.get(keys::GENERAL_ALIGNMENT) {
            Some(GgufValue::U32(a)) if u64::from(*a) == alignment => {}
            Some(v) => {
                return Err(GgufError::Layout(format!(
                    "metadata {} is {v:?} but the layout alignment is {alignment} (expected UINT32 {alignment})",
                    keys::GENERAL_ALIGNMENT
                )))
            }
            None if alignment != GGUF_DEFAULT_ALIGNMENT => {
                metadata.insert(keys::GENERAL_ALIGNMENT, alignment as u32);
            }
            None => {}
        }

        let mut header = Vec::new();
        header.extend_from_slice(&GGUF_MAGIC);
        header.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata.iter() {
            if key.is_empty() || key.len() > GGUF_MAX_NAME_LEN {
                return Err(GgufError::Layout(format!(
                    "metadata key of {} bytes, expected 1..={GGUF_MAX_NAME_LEN}",
                    key.len()
                )));
            }
            put_str(&mut header, key);
            header.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut header, value, 0)
                .map_err(|msg| GgufError::Layout(format!("metadata key '{key}': {msg}")))?;
        }

        let mut index = HashMap::with_capacity(tensors.len());
        let mut sizes = Vec::with_capacity(tensors.len());
        let mut rel_offsets = Vec::with_capacity(tensors.len());
        let mut cursor = 0u64;
        let overflow = || GgufError::Layout("total tensor data size overflows u64".into());
        for (i, t) in tensors.iter().enumerate() {
            let err = |msg: String| GgufError::LayoutTensor {
                tensor: t.name.clone(),
                msg,
            };
            if t.name.is_empty() || t.name.len() > GGUF_MAX_NAME_LEN {
                return Err(err(format!(
                    "name of {} bytes, expected 1..={GGUF_MAX_NAME_LEN}",
                    t.name.len()
                )));
            }
            if let Some(prev) = index.insert(t.name.clone(), i) {
                return Err(err(format!("duplicate name (tensors {prev} and {i})")));
            }
            let size = tensor_nbytes(&t.shape, t.ty).map_err(err)?;
            rel_offsets.push(cursor);
            sizes.push(size);
            cursor = cursor
                .checked_add(size)
                .and_then(|c| align_up(c, alignment))
                .ok_or_else(overflow)?;

            put_str(&mut header, &t.name);
            header.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in &t.shape {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ty.id().to_le_bytes());
            header.extend_from_slice(&rel_offsets[i].to_le_bytes());
        }

        let data_offset = align_up(header.len() as u64, alignment).ok_or_else(overflow)?;
        let file_size = data_offset.checked_add(cursor).ok_or_else(overflow)?;
        let offsets = rel_offsets
            .iter()
            .map(|&o| data_offset.checked_add(o).ok_or_else(overflow))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GgufLayout {
            metadata,
            tensors,
            index,
            alignment,
            header,
            data_offset,
            offsets,
            sizes,
            file_size,
        })
    }

    /// The header: magic, version, counts, metadata and tensor table, without the padding that
    /// follows it up to [`data_offset`](Self::data_offset). Same inputs give the same bytes.
    pub fn header_bytes(&self) -> Vec<u8> {
        self.header.clone()
    }

    /// Length of [`header_bytes`](Self::header_bytes).
    pub fn header_len(&self) -> u64 {
        self.header.len() as u64
    }

    /// Absolute file offset where tensor data begins.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Absolute file offset of tensor `i`'s data. Panics if `i` is out of range.
    pub fn tensor_offset(&self, i: usize) -> u64 {
        self.offsets[i]
    }

    /// Byte size of tensor `i`'s data. Panics if `i` is out of range.
    pub fn tensor_size(&self, i: usize) -> u64 {
        self.sizes[i]
    }

    /// Total file size, the data of the last tensor padded to the alignment.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The alignment of the data section and of each tensor.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The metadata as written (including an added `general.alignment`).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The tensors in file order.
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// Index of the tensor called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &GgufValue, depth: usize) -> Result<(), String> {
    match v {
        GgufValue::U8(x) => buf.push(*x),
        GgufValue::I8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => buf.push(u8::from(*x)),
        GgufValue::String(s) => put_str(buf, s),
        GgufValue::Array(a) => put_array(buf, a, depth + 1)?,
        GgufValue::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
    }
    Ok(())
}

fn put_array(buf: &mut Vec<u8>, a: &GgufArray, depth: usize) -> Result<(), String> {
    if depth > GGUF_MAX_ARRAY_DEPTH {
        return Err(format!(
            "arrays nested deeper than {GGUF_MAX_ARRAY_DEPTH} levels"
        ));
    }
    buf.extend_from_slice(&a.elem_type().id().to_le_bytes());
    buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        GgufArray::U8(v) => buf.extend_from_slice(v),
        GgufArray::I8(v) => le!(v),
        GgufArray::U16(v) => le!(v),
        GgufArray::I16(v) => le!(v),
        GgufArray::U32(v) => le!(v),
        GgufArray::I32(v) => le!(v),
        GgufArray::F32(v) => le!(v),
        GgufArray::Bool(v) => buf.extend(v.iter().map(|&b| u8::from(b))),
        GgufArray::String(v) => {
            for s in v {
                put_str(buf, s);
            }
        }
        GgufArray::Array(v) => {
            for inner in v {
                put_array(buf, inner, depth + 1)?;
            }
        }
        GgufArray::U64(v) => le!(v),
        GgufArray::I64(v) => le!(v),
        GgufArray::F64(v) => le!(v),
    }
    Ok(())
}

/// A GGUF file being written: the header is in place and the file has its final length; tensor
/// data is written at the layout's offsets, from any number of threads (`&self`).
#[derive(Debug)]
pub struct GgufFileWriter {
    file: File,
    path: PathBuf,
    layout: GgufLayout,
    written: Vec<AtomicU64>,
    direct: DirectFile,
}

impl GgufFileWriter {
    /// Create (or truncate) `path`, write the header and zero padding, and set the file to its
    /// final length (sparse where the file system allows, so unwritten bytes read as zero).
    pub fn create(path: impl AsRef<Path>, layout: GgufLayout) -> Result<GgufFileWriter, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |e| GgufError::io(&path, e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io)?;
        file.set_len(layout.file_size()).map_err(io)?;
        file.write_all_at(&layout.header, 0).map_err(io)?;
        let written = (0..layout.tensors.len())
            .map(|_| AtomicU64::new(0))
            .collect();
        let direct = DirectFile::open(&path, false);
        Ok(GgufFileWriter {
            file,
            path,
            layout,
            written,
            direct,
        })
    }

    /// The plan this file follows.
    pub fn layout(&self) -> &GgufLayout {
        &self.layout
    }

    /// The path being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write all of tensor `index`'s data; `data` must be exactly its size.
    pub fn write_tensor(&self, index: usize, data: &[u8]) -> Result<(), GgufError> {
        let size = self.spec_size(index)?;
        if data.len() as u64 != size {
            return Err(self.tensor_err(
                index,
                format!("expected {size} bytes of data, found {}", data.len()),
            ));
        }
        self.write_tensor_part(index, 0, data)
    }

    /// Write `data` at byte `start` within tensor `index` (for tensors produced in chunks).
    pub fn write_tensor_part(
        &self,
        index: usize,
        start: u64,
        data: &[u8],
    ) -> Result<(), GgufError> {
        self.check_part(index, start, data.len())?;
        let at = self.layout.offsets[index] + start;
        self.file
            .write_all_at(data, at)
            .map_err(|e| GgufError::io(&self.path, e))?;
        self.written[index].fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Send the whole pages of [`write_band`](Self::write_band)s straight to the device
    /// (`O_DIRECT`), bypassing the page cache; a file system that refuses gets buffered writes.
    pub fn enable_direct_io(&mut self) {
        self.direct = DirectFile::open(&self.path, true);
    }

    /// Bytes written with `O_DIRECT` so far.
    pub fn direct_bytes(&self) -> u64 {
        self.direct.direct_bytes()
    }

    /// Write the band in `buf` (prepared with `buf.window(tensor_offset(index) + start, len)`)
    /// at byte `start` within tensor `index`, with direct I/O where enabled and possible.
    pub fn write_band(&self, index: usize, start: u64, buf: &PageBuf) -> Result<(), GgufError> {
        self.write_band_deferred(index, start, buf, None)
    }

    /// [`write_band`](Self::write_band), keeping the band's partial first and last pages in
    /// `defer` (when they are not written at once) for
    /// [`write_partial_pages`](Self::write_partial_pages): buffered writes of partial pages
    /// wait for the direct writes in flight, and neighbouring bands' pieces join into whole
    /// pages.
    pub fn write_band_deferred(
        &self,
        index: usize,
        start: u64,
        buf: &PageBuf,
        defer: Option<&mut PartialPages>,
    ) -> Result<(), GgufError> {
        let data = buf.data();
        self.check_part(index, start, data.len())?;
        let at = self.layout.offsets[index] + start;
        if buf.file_offset() != at {
            return Err(self.tensor_err(
                index,
                format!(
                    "band prepared for file offset {}, written at {at}",
                    buf.file_offset()
                ),
            ));
        }
        self.direct
            .write_band(&self.file, buf, defer)
            .map_err(|e| GgufError::io(&self.path, e))?;
        self.written[index].fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Write the partial pages that [`write_band_deferred`](Self::write_band_deferred) kept.
    pub fn write_partial_pages(&self, pages: PartialPages) -> Result<(), GgufError> {
        self.direct
            .write_partial_pages(&self.file, pages)
            .map_err(|e| GgufError::io(&self.path, e))
    }

    fn check_part(&self, index: usize, start: u64, len: usize) -> Result<(), GgufError> {
        let size = self.spec_size(index)?;
        let fits = matches!(start.checked_add(len as u64), Some(e) if e <= size);
        if fits {
            Ok(())
        } else {
            Err(self.tensor_err(
                index,
                format!("write of {len} bytes at {start} runs past the tensor's {size} bytes"),
            ))
        }
    }

    /// Flush data and metadata to disk.
    pub fn sync_all(&self) -> Result<(), GgufError> {
        self.file
            .sync_all()
            .map_err(|e| GgufError::io(&self.path, e))
    }

    /// Check that every tensor received exactly its size in bytes, then [`sync_all`](Self::sync_all).
    pub fn finish(self) -> Result<(), GgufError> {
        for (i, w) in self.written.iter().enumerate() {
            let w = w.load(Ordering::Relaxed);
            let size = self.layout.sizes[i];
            if w != size {
                return Err(
                    self.tensor_err(i, format!("{w} bytes written, expected exactly {size}"))
                );
            }
        }
        self.sync_all()
    }

    fn spec_size(&self, index: usize) -> Result<u64, GgufError> {
        self.layout
            .sizes
            .get(index)
            .copied()
            .ok_or_else(|| GgufError::Format {
                file: self.path.display().to_string(),
                msg: format!(
                    "tensor index {index} out of range (the layout has {} tensors)",
                    self.layout.sizes.len()
                ),
            })
    }

    fn tensor_err(&self, index: usize, msg: String) -> GgufError {
        GgufError::Tensor {
            file: self.path.display().to_string(),
            tensor: self.layout.tensors[index].name.clone(),
            msg,
        }
    }
}

/// Build a whole GGUF file in memory. Each tensor's data must be exactly its size.
pub fn encode_gguf(
    metadata: Metadata,
    tensors: &[(TensorSpec, &[u8])],
    alignment: u64,
) -> Result<Vec<u8>, GgufError> {
    let layout = GgufLayout::new(
        metadata,
        tensors.iter().map(|(s, _)| s.clone()).collect(),
        alignment,
    )?;
    let len = usize::try_from(layout.file_size())
        .map_err(|_| GgufError::Layout("file too large for memory".into()))?;
    let mut out = vec![0u8; len];
    out[..layout.header.len()].copy_from_slice(&layout.header);
    for (i, (spec, data)) in tensors.iter().enumerate() {
        if data.len() as u64 != layout.sizes[i] {
            return Err(GgufError::LayoutTensor {
                tensor: spec.name.clone(),
                msg: format!(
                    "expected {} bytes of data, found {}",
                    layout.sizes[i],
                    data.len()
                ),
            });
        }
        let at = layout.offsets[i] as usize;
        out[at..at + data.len()].copy_from_slice(data);
    }
    Ok(out)
}

/// Write a whole GGUF file from in-memory tensors (for tests and small tools); returns the layout.
pub fn write_gguf(
    path: impl AsRef<Path>,
    metadata: Metadata,
    tensors: &[(TensorSpec, &[u8])],
    alignment: u64,
) -> Result<GgufLayout, GgufError> {
    let layout = GgufLayout::new(
        metadata,
        tensors.iter().map(|(s, _)| s.clone()).collect(),
        alignment,
    )?;
    let w = GgufFileWriter::create(path, layout)?;
    for (i, (_, data)) in tensors.iter().enumerate() {
        w.write_tensor(i, data)?;
    }
    let layout = w.layout.clone();
    w.finish()?;
    Ok(layout)
}

/// Resuming an interrupted write.
impl GgufFileWriter {
    /// Open a file that an earlier [`GgufFileWriter::create`] for the same `layout` began: its
    /// length and header must match the layout exactly.
    pub fn open_existing(
        path: impl AsRef<Path>,
        layout: GgufLayout,
    ) -> Result<GgufFileWriter, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |e| GgufError::io(&path, e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let format = |msg: String| GgufError::Format {
            file: path.display().to_string(),
            msg,
        };
        if len != layout.file_size() {
            return Err(format(format!(
                "has {len} bytes, the plan needs {}",
                layout.file_size()
            )));
        }
        let mut head = vec![0u8; layout.header.len()];
        file.read_exact_at(&mut head, 0).map_err(io)?;
        if head != layout.header {
            return Err(format(
                "its header differs from the plan (metadata or tensor table changed)".into(),
            ));
        }
        let written = (0..layout.tensors.len())
            .map(|_| AtomicU64::new(0))
            .collect();
        let direct = DirectFile::open(&path, false);
        Ok(GgufFileWriter {
            file,
            path,
            layout,
            written,
            direct,
        })
    }

    /// Read back `buf.len()` bytes at absolute offset `at`.
    pub fn read_at(&self, at: u64, buf: &mut [u8]) -> Result<(), GgufError> {
        self.file
            .read_exact_at(buf, at)
            .map_err(|e| GgufError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_places_tensors_aligned_and_back_to_back() {
        let mut m = Metadata::new();
        m.insert(keys::GENERAL_ARCHITECTURE, "grok");
        let tensors = vec![
            TensorSpec::new("a", vec![3], GgmlType::BF16),
            TensorSpec::new("b", vec![64, 2], GgmlType::Q8_0),
        ];
        let l = GgufLayout::new(m, tensors, 32).unwrap();
        assert_eq!(l.data_offset() % 32, 0);
        assert!(l.data_offset() >= l.header_len());
        assert_eq!(l.tensor_offset(0), l.data_offset());
        assert_eq!(l.tensor_size(0), 6);
        assert_eq!(l.tensor_offset(1), l.data_offset() + 32);
        assert_eq!(l.tensor_size(1), 136);
        assert_eq!(l.file_size(), l.data_offset() + 32 + 160);
        assert!(!l.metadata().contains_key(keys::GENERAL_ALIGNMENT));
    }

    #[test]
    fn layout_rejects_bad_specs() {
        let bad = |t: TensorSpec| {
            GgufLayout::new(Metadata::new(), vec![t], 32)
                .unwrap_err()
                .to_string()
        };
        assert!(bad(TensorSpec::new("x", vec![33], GgmlType::Q8_0)).contains("block size 32"));
        assert!(bad(TensorSpec::new("x", vec![], GgmlType::F32)).contains("dimensions"));
        assert!(bad(TensorSpec::new("x", vec![2, 0], GgmlType::F32)).contains("is 0"));
        assert!(bad(TensorSpec::new("", vec![2], GgmlType::F32)).contains("name"));
        assert!(bad(TensorSpec::new("x".repeat(65536), vec![2], GgmlType::F32)).contains("name"));
        assert!(bad(TensorSpec::new("x", vec![u64::MAX, 4], GgmlType::F32)).contains("overflows"));
        let dup = vec![
            TensorSpec::new("x", vec![2], GgmlType::F32),
            TensorSpec::new("x", vec![2], GgmlType::F32),
        ];
        let e = GgufLayout::new(Metadata::new(), dup, 32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("duplicate"), "{e}");
        assert!(GgufLayout::new(Metadata::new(), vec![], 24).is_err());
        let mut m = Metadata::new();
        m.insert(keys::GENERAL_ALIGNMENT, 32u32);
        assert!(GgufLayout::new(m, vec![], 64).is_err());
    }

    #[test]
    fn non_default_alignment_is_recorded() {
        let l = GgufLayout::new(
            Metadata::new(),
            vec![TensorSpec::new("t", vec![1], GgmlType::F32)],
            64,
        )
        .unwrap();
        assert_eq!(
            l.metadata().get(keys::GENERAL_ALIGNMENT),
            Some(&GgufValue::U32(64))
        );
        assert_eq!(l.data_offset() % 64, 0);
        assert_eq!(l.file_size(), l.data_offset() + 64);
    }
}
