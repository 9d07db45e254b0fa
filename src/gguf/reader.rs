//! Reading GGUF files: memory-mapped, zero-copy, and validated against the file size before
//! anything is allocated.

// The parser is safe code; the one exception is the file mapping in `GgufFile::open`.
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::value::{GgufArray, GgufValue, GgufValueType, Metadata};
use super::{
    align_up, keys, tensor_nbytes, GgmlType, GgufError, GGML_MAX_DIMS, GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC, GGUF_MAX_ARRAY_DEPTH, GGUF_MAX_NAME_LEN, GGUF_VERSION,
};

/// One entry of the tensor table, with its data range resolved to absolute file offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml `ne` order: `shape[0]` is the row length.
    pub shape: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute file offset of the data.
    pub offset: u64,
    /// Byte size of the data.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        // Cannot overflow: the byte size, which is at least the element count divided by the
        // block size, was checked when the file was opened.
        self.shape.iter().product()
    }
}

/// A tensor's table entry and its bytes, borrowed from the mapped file.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

/// An open, validated GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    mmap: Arc<Mmap>,
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

macro_rules! typed_get {
    ($name:ident, $as:ident, $t:ty) => {
        #[doc = concat!("`", stringify!($as), "` of the value of `key`.")]
        pub fn $name(&self, key: &str) -> Option<$t> {
            self.metadata.get(key).and_then(GgufValue::$as)
        }
    };
}

impl GgufFile {
    /// Map `path` read-only and parse and validate it. Tensor data is not read.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| GgufError::io(&path, e))?;
        let len = file.metadata().map_err(|e| GgufError::io(&path, e))?.len();
        if len == 0 {
            return Err(GgufError::NotGguf {
                file: path.display().to_string(),
                found: Vec::new(),
            });
        }
        // SAFETY: the map is read-only; as with any mmap, the file must not be truncated or
        // modified by others while it is open.
        #[allow(unsafe_code)]
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io(&path, e))?;
        GgufFile::from_mmap(path, mmap)
    }

    /// Parse and validate a GGUF held in memory; `name` stands for the file in messages and
    /// [`GgufFile::path`]. The bytes are copied into an anonymous read-only mapping, so the
    /// result behaves exactly like a file opened with [`GgufFile::open`].
    pub fn parse_bytes(bytes: &[u8], name: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = name.as_ref().to_path_buf();
        if bytes.is_empty() {
            return Err(GgufError::NotGguf {
                file: path.display().to_string(),
                found: Vec::new(),
            });
        }
        // Validate before allocating the copy, so hostile input costs no extra memory. The
        // offsets found are positions in `bytes`, hence equally in the copy.
        let parsed = parse(bytes, &path.display().to_string())?;
        let mut anon =
            memmap2::MmapMut::map_anon(bytes.len()).map_err(|e| GgufError::io(&path, e))?;
        anon.copy_from_slice(bytes);
        let mmap = anon.make_read_only().map_err(|e| GgufError::io(&path, e))?;
        Ok(GgufFile::from_parts(path, mmap, parsed))
    }

    fn from_mmap(path: PathBuf, mmap: Mmap) -> Result<GgufFile, GgufError> {
        let parsed = parse(&mmap, &path.display().to_string())?;
        Ok(GgufFile::from_parts(path, mmap, parsed))
    }

    fn from_parts(path: PathBuf, mmap: Mmap, parsed: Parsed) -> GgufFile {
        GgufFile {
            path,
            mmap: Arc::new(mmap),
            version: parsed.version,
            metadata: parsed.metadata,
            index: parsed
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            tensors: parsed.tensors,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
        }
    }

    /// The path this file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (always 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All metadata in file order.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    typed_get!(get_u8, as_u8, u8);
    typed_get!(get_i8, as_i8, i8);
    typed_get!(get_u16, as_u16, u16);
    typed_get!(get_i16, as_i16, i16);
    typed_get!(get_u32, as_u32, u32);
    typed_get!(get_i32, as_i32, i32);
    typed_get!(get_u64, as_u64, u64);
    typed_get!(get_i64, as_i64, i64);
    typed_get!(get_f32, as_f32, f32);
    typed_get!(get_f64, as_f64, f64);
    typed_get!(get_bool, as_bool, bool);
    typed_get!(get_str, as_str, &str);
    typed_get!(get_array, as_array, &GgufArray);
    typed_get!(get_string_array, as_string_array, &[String]);
    typed_get!(get_u32_array, as_u32_array, &[u32]);
    typed_get!(get_i32_array, as_i32_array, &[i32]);
    typed_get!(get_f32_array, as_f32_array, &[f32]);
    /// Any integer value of `key` converted losslessly to `u64`.
    pub fn get_uint(&self, key: &str) -> Option<u64> {
        self.metadata.get(key).and_then(GgufValue::to_u64)
    }

    /// The tensor table in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name` and its bytes.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.index.get(name).map(|&i| self.tensor_at(i))
    }

    /// Tensor `i` of the table and its bytes. Panics if `i` is out of range.
    pub fn tensor_at(&self, i: usize) -> TensorView<'_> {
        let info = &self.tensors[i];
        // In range: checked against the file size when the file was opened.
        let data = &self.mmap[info.offset as usize..(info.offset + info.size) as usize];
        TensorView { info, data }
    }

    /// Absolute file offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The alignment in effect (`general.alignment` or 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// The whole mapped file, for callers that hand out slices that outlive `self`.
    pub fn mmap(&self) -> &Arc<Mmap> {
        &self.mmap
    }
}

struct Parsed {
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

/// Smallest encoding of one key/value pair: key length, value type, one byte of value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest encoding of one tensor table entry: name length, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                file: self.file.to_string(),
                what: what(),
                offset: self.pos as u64,
                need: n,
                size: self.buf.len() as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A length-prefixed string; `Err(Ok(msg))` style problems are reported through `bad`.
    fn string(
        &mut self,
        what: &dyn Fn() -> String,
        bad: &dyn Fn(String) -> GgufError,
    ) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(bad(format!("{} is not valid UTF-8 ({e})", what()))),
        }
    }
}

fn parse(buf: &[u8], file: &str) -> Result<Parsed, GgufError> {
    if buf.len() < 4 || buf[..4] != GGUF_MAGIC {
        return Err(GgufError::NotGguf {
            file: file.to_string(),
            found: buf[..buf.len().min(4)].to_vec(),
        });
    }
    let mut c = Cursor { buf, pos: 4, file };
    let version = c.u32(&|| "version".into())?;
    if version != GGUF_VERSION {
        let swapped = version.swap_bytes();
        return Err(GgufError::UnsupportedVersion {
            file: file.to_string(),
            version,
            hint: if (1..=3).contains(&swapped) {
                "; this looks like a big-endian file, which is not supported"
            } else {
                ""
            },
        });
    }
    let n_tensors = c.u64(&|| "tensor count".into())?;
    let n_kv = c.u64(&|| "metadata count".into())?;
    let fmt_err = |msg: String| GgufError::Format {
        file: file.to_string(),
        msg,
    };
    let min_bytes = n_kv
        .checked_mul(MIN_KV_BYTES)
        .zip(n_tensors.checked_mul(MIN_TENSOR_INFO_BYTES))
        .and_then(|(a, b)| a.checked_add(b));
    if exceeds(min_bytes, c.remaining()) {
        return Err(fmt_err(format!(
            "{n_kv} metadata entries and {n_tensors} tensors need at least {} bytes, only {} remain after the header",
            min_bytes.map_or_else(|| "more than 2^64".to_string(), |b| b.to_string()),
            c.remaining()
        )));
    }

    let mut metadata = Metadata::new();
    for i in 0..n_kv {
        let key = c.string(&|| format!("metadata key #{i}"), &fmt_err)?;
        if key.is_empty() || key.len() > GGUF_MAX_NAME_LEN {
            return Err(fmt_err(format!(
                "metadata key #{i} has {} bytes, expected 1..={GGUF_MAX_NAME_LEN}",
                key.len()
            )));
        }
        if metadata.contains_key(&key) {
            return Err(GgufError::Metadata {
                file: file.to_string(),
                key,
                msg: "duplicate key".into(),
            });
        }
        let kv = KeyCtx { file, key: &key };
        let ty = c.u32(&|| format!("type of metadata key '{key}'"))?;
        let value = read_value(&mut c, &kv, ty)?;
        metadata.insert(key, value);
    }

    let alignment = match metadata.get(keys::GENERAL_ALIGNMENT) {
        None => GGUF_DEFAULT_ALIGNMENT,
        Some(GgufValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(v) => {
            return Err(GgufError::Metadata {
                file: file.to_string(),
                key: keys::GENERAL_ALIGNMENT.into(),
                msg: format!(
                    "expected a non-zero power of two of type UINT32, found {} {v:?}",
                    v.type_description()
                ),
            })
        }
    };

    // Re-check with the metadata consumed: every remaining tensor entry needs 32 bytes.
    if exceeds(n_tensors.checked_mul(MIN_TENSOR_INFO_BYTES), c.remaining()) {
        return Err(fmt_err(format!(
            "{n_tensors} tensors need at least {} bytes of tensor table each, only {} bytes remain",
            MIN_TENSOR_INFO_BYTES,
            c.remaining()
        )));
    }
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut rel_offsets = Vec::with_capacity(n_tensors as usize);
    let mut index: HashMap<String, usize> = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = c.string(&|| format!("name of tensor #{i}"), &fmt_err)?;
        let terr = |msg: String| GgufError::Tensor {
            file: file.to_string(),
            tensor: name.clone(),
            msg,
        };
        if name.is_empty() || name.len() > GGUF_MAX_NAME_LEN {
            return Err(fmt_err(format!(
                "name of tensor #{i} has {} bytes, expected 1..={GGUF_MAX_NAME_LEN}",
                name.len()
            )));
        }
        if let Some(prev) = index.get(&name) {
            return Err(terr(format!("duplicate name (tensors #{prev} and #{i})")));
        }
        let n_dims = c.u32(&|| format!("dimension count of tensor '{name}'"))?;
        if n_dims == 0 || n_dims as usize > GGML_MAX_DIMS {
            return Err(terr(format!(
                "expected 1..={GGML_MAX_DIMS} dimensions, found {n_dims}"
            )));
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            shape.push(c.u64(&|| format!("shape of tensor '{name}'"))?);
        }
        let ty_id = c.u32(&|| format!("type of tensor '{name}'"))?;
        let ty = GgmlType::from_id(ty_id)
            .ok_or_else(|| terr(format!("unknown ggml type id {ty_id}")))?;
        let rel = c.u64(&|| format!("data offset of tensor '{name}'"))?;
        let size = tensor_nbytes(&shape, ty).map_err(terr)?;
        if rel % alignment != 0 {
            return Err(terr(format!(
                "data offset {rel} is not a multiple of the alignment {alignment}"
            )));
        }
        index.insert(name.clone(), i as usize);
        rel_offsets.push(rel);
        tensors.push(TensorInfo {
            name,
            shape,
            ty,
            offset: 0,
            size,
        });
    }

    let header_end = c.pos as u64;
    let data_offset =
        align_up(header_end, alignment).ok_or_else(|| fmt_err("header size overflows".into()))?;
    let file_size = buf.len() as u64;
    for (t, rel) in tensors.iter_mut().zip(rel_offsets) {
        let start = data_offset.checked_add(rel);
        let end = start.and_then(|s| s.checked_add(t.size));
        match (start, end) {
            (Some(s), Some(e)) if e <= file_size => t.offset = s,
            _ => {
                return Err(GgufError::Tensor {
                    file: file.to_string(),
                    tensor: t.name.clone(),
                    msg: format!(
                        "data [{}..{}) runs past the end of the file (size {file_size})",
                        u128::from(data_offset) + u128::from(rel),
                        u128::from(data_offset) + u128::from(rel) + u128::from(t.size)
                    ),
                })
            }
        }
    }
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        if a.offset + a.size > b.offset {
            return Err(GgufError::Tensor {
                file: file.to_string(),
                tensor: b.name.clone(),
                msg: format!(
                    "data [{}..{}) overlaps tensor '{}' data [{}..{})",
                    b.offset,
                    b.offset + b.size,
                    a.name,
                    a.offset,
                    a.offset + a.size
                ),
            });
        }
    }
    Ok(Parsed {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// Whether a checked byte count overflowed or exceeds `limit`.
fn exceeds(need: Option<u64>, limit: u64) -> bool {
    match need {
        Some(v) => v > limit,
        None => true,
    }
}

struct KeyCtx<'a> {
    file: &'a str,
    key: &'a str,
}

impl KeyCtx<'_> {
    fn err(&self, msg: String) -> GgufError {
        GgufError::Metadata {
            file: self.file.to_string(),
            key: self.key.to_string(),
            msg,
        }
    }

    fn what(&self) -> String {
        format!("value of metadata key '{}'", self.key)
    }
}

fn read_value(c: &mut Cursor<'_>, kv: &KeyCtx<'_>, ty: u32) -> Result<GgufValue, GgufError> {
    let what = || kv.what();
    let ty = GgufValueType::from_id(ty)
        .ok_or_else(|| kv.err(format!("unknown value type id {ty}, expected 0..=12")))?;
    Ok(match ty {
        GgufValueType::U8 => GgufValue::U8(u8::from_le_bytes(c.array(&what)?)),
        GgufValueType::I8 => GgufValue::I8(i8::from_le_bytes(c.array(&what)?)),
        GgufValueType::U16 => GgufValue::U16(u16::from_le_bytes(c.array(&what)?)),
        GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(c.array(&what)?)),
        GgufValueType::U32 => GgufValue::U32(u32::from_le_bytes(c.array(&what)?)),
        GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(c.array(&what)?)),
        GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(c.array(&what)?)),
        GgufValueType::U64 => GgufValue::U64(u64::from_le_bytes(c.array(&what)?)),
        GgufValueType::I64 => GgufValue::I64(i64::from_le_bytes(c.array(&what)?)),
        GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(c.array(&what)?)),
        GgufValueType::Bool => GgufValue::Bool(read_bool(c.array::<1>(&what)?[0], kv)?),
        GgufValueType::String => GgufValue::String(c.string(&what, &|m| kv.err(m))?),
        GgufValueType::Array => GgufValue::Array(read_array(c, kv, 1)?),
    })
}

fn read_bool(b: u8, kv: &KeyCtx<'_>) -> Result<bool, GgufError> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(kv.err(format!("bool byte is {b}, expected 0 or 1"))),
    }
}

fn read_array(c: &mut Cursor<'_>, kv: &KeyCtx<'_>, depth: usize) -> Result<GgufArray, GgufError> {
    let what = || kv.what();
    if depth > GGUF_MAX_ARRAY_DEPTH {
        return Err(kv.err(format!(
            "arrays nested deeper than {GGUF_MAX_ARRAY_DEPTH} levels"
        )));
    }
    let ty_id = c.u32(&what)?;
    let ty = GgufValueType::from_id(ty_id).ok_or_else(|| {
        kv.err(format!(
            "unknown array element type id {ty_id}, expected 0..=12"
        ))
    })?;
    let n = c.u64(&what)?;
    let need = n.checked_mul(ty.min_encoded_size());
    if exceeds(need, c.remaining()) {
        return Err(kv.err(format!(
            "array of {n} {ty} elements needs at least {} bytes, only {} remain in the file",
            need.map_or_else(|| "more than 2^64".to_string(), |b| b.to_string()),
            c.remaining()
        )));
    }
    // From here `n` elements are known to fit in the file, so `n` fits in usize.
    let n = n as usize;
    macro_rules! fixed {
        ($t:ty, $variant:ident) => {{
            const W: usize = std::mem::size_of::<$t>();
            let bytes = c.take((n * W) as u64, &what)?;
            GgufArray::$variant(
                bytes
                    .chunks_exact(W)
                    .map(|ch| <$t>::from_le_bytes(ch.try_into().expect("chunk of W bytes")))
                    .collect(),
            )
        }};
    }
    Ok(match ty {
        GgufValueType::U8 => GgufArray::U8(c.take(n as u64, &what)?.to_vec()),
        GgufValueType::I8 => fixed!(i8, I8),
        GgufValueType::U16 => fixed!(u16, U16),
        GgufValueType::I16 => fixed!(i16, I16),
        GgufValueType::U32 => fixed!(u32, U32),
        GgufValueType::I32 => fixed!(i32, I32),
        GgufValueType::F32 => fixed!(f32, F32),
        GgufValueType::U64 => fixed!(u64, U64),
        GgufValueType::I64 => fixed!(i64, I64),
        GgufValueType::F64 => fixed!(f64, F64),
        GgufValueType::Bool => GgufArray::Bool(
            c.take(n as u64, &what)?
                .iter()
                .map(|&b| read_bool(b, kv))
                .collect::<Result<_, _>>()?,
        ),
        GgufValueType::String => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(c.string(&what, &|m| kv.err(m))?);
            }
            GgufArray::String(v)
        }
        GgufValueType::Array => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_array(c, kv, depth + 1)?);
            }
            GgufArray::Array(v)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{encode_gguf, TensorSpec};

    #[test]
    fn parses_what_the_encoder_writes() {
        let mut m = Metadata::new();
        m.insert("general.architecture", "grok");
        m.insert(
            "nested",
            GgufArray::Array(vec![GgufArray::U8(vec![1, 2]), GgufArray::U8(vec![])]),
        );
        let data = [7u8; 68];
        let bytes = encode_gguf(
            m.clone(),
            &[(TensorSpec::new("t", vec![64], GgmlType::Q8_0), &data[..])],
            32,
        )
        .unwrap();
        let p = parse(&bytes, "mem").unwrap();
        assert_eq!(p.metadata, m);
        assert_eq!(p.tensors.len(), 1);
        assert_eq!(p.tensors[0].size, 68);
        assert_eq!(&bytes[p.tensors[0].offset as usize..][..68], &data[..]);
    }

    #[test]
    fn deep_nesting_is_rejected_not_recursed() {
        // "GGUF", v3, 0 tensors, 1 kv; key "k"; type ARRAY; then 10_000 nested array headers.
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b'k');
        b.extend_from_slice(&9u32.to_le_bytes());
        for _ in 0..10_000 {
            b.extend_from_slice(&9u32.to_le_bytes());
            b.extend_from_slice(&1u64.to_le_bytes());
        }
        let e = parse(&b, "mem").err().unwrap().to_string();
        assert!(e.contains("nested deeper"), "{e}");
    }
}
