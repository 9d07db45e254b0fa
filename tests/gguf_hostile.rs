//! Hostile and broken inputs: every one must give an `Err` with a clear message, never a
//! panic, an overflow or a huge allocation.

use std::path::{Path, PathBuf};

use grok1_quant::gguf::{encode_gguf, GgmlType, GgufFile, Metadata, TensorSpec};

/// A hand-made GGUF byte builder, so tests can write anything, valid or not.
struct Raw {
    version: u32,
    kvs: Vec<Vec<u8>>,
    tensors: Vec<Vec<u8>>,
    n_kv: Option<u64>,
    n_tensors: Option<u64>,
    data: Vec<u8>,
}

fn s(bytes: &[u8]) -> Vec<u8> {
    let mut v = (bytes.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(bytes);
    v
}

impl Raw {
    fn new() -> Raw {
        Raw {
            version: 3,
            kvs: vec![],
            tensors: vec![],
            n_kv: None,
            n_tensors: None,
            data: vec![],
        }
    }

    fn kv(mut self, key: &str, ty: u32, value: &[u8]) -> Raw {
        let mut e = s(key.as_bytes());
        e.extend_from_slice(&ty.to_le_bytes());
        e.extend_from_slice(value);
        self.kvs.push(e);
        self
    }

    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Raw {
        let mut e = s(name.as_bytes());
        e.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            e.extend_from_slice(&d.to_le_bytes());
        }
        e.extend_from_slice(&ty.to_le_bytes());
        e.extend_from_slice(&offset.to_le_bytes());
        self.tensors.push(e);
        self
    }

    fn data(mut self, n: usize) -> Raw {
        self.data = vec![0x5A; n];
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(
            &self
                .n_tensors
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        b.extend_from_slice(&self.n_kv.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        for e in self.kvs.iter().chain(&self.tensors) {
            b.extend_from_slice(e);
        }
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend_from_slice(&self.data);
        b
    }
}

struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hostile.gguf");
        Scratch { _dir: dir, path }
    }

    fn open(&self, bytes: &[u8]) -> Result<GgufFile, String> {
        std::fs::write(&self.path, bytes).unwrap();
        GgufFile::open(&self.path).map_err(|e| e.to_string())
    }

    /// Open `bytes`, expect an error naming the file that contains every one of `parts`.
    fn expect_err(&self, bytes: &[u8], parts: &[&str]) {
        let e = match self.open(bytes) {
            Ok(_) => panic!("expected an error containing {parts:?}, the file was accepted"),
            Err(e) => e,
        };
        eprintln!("{e}");
        assert!(
            e.starts_with(&self.path.display().to_string()),
            "no file name: {e}"
        );
        for p in parts {
            assert!(e.contains(p), "expected {p:?} in: {e}");
        }
    }
}

const U32: u32 = 4;
const STR: u32 = 8;
const ARR: u32 = 9;
const BOOL: u32 = 7;

#[test]
fn header_problems() {
    let sc = Scratch::new();
    sc.expect_err(b"", &["not a GGUF file"]);
    sc.expect_err(b"GGU", &["not a GGUF file"]);
    sc.expect_err(b"GGML\x03\0\0\0", &["not a GGUF file", "47, 47, 4d, 4c"]);
    let mut v2 = Raw::new();
    v2.version = 2;
    sc.expect_err(&v2.bytes(), &["unsupported GGUF version 2"]);
    let mut be = Raw::new();
    be.version = 3u32.swap_bytes();
    sc.expect_err(&be.bytes(), &["unsupported GGUF version", "big-endian"]);
    sc.expect_err(b"GGUF\x03\0\0", &["truncated", "version"]);
    sc.expect_err(b"GGUF\x03\0\0\0\0\0", &["truncated", "tensor count"]);
}

#[test]
fn huge_counts_and_lengths_are_bounded_by_the_file_size() {
    let sc = Scratch::new();
    let mut r = Raw::new();
    r.n_kv = Some(u64::MAX);
    sc.expect_err(&r.bytes(), &["metadata entries", "need at least"]);
    let mut r = Raw::new();
    r.n_tensors = Some(1 << 40);
    sc.expect_err(&r.bytes(), &["tensors need at least"]);
    let mut r = Raw::new().kv("a", U32, &1u32.to_le_bytes());
    r.n_tensors = Some(2);
    sc.expect_err(&r.bytes(), &["tensors need at least"]);

    // Key length far beyond the file.
    let mut b = Raw::new().kv("k", U32, &[0; 4]).bytes();
    b[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    sc.expect_err(&b, &["truncated", "metadata key #0"]);

    // String value length far beyond the file.
    let mut val = (1u64 << 60).to_le_bytes().to_vec();
    val.extend_from_slice(b"abc");
    sc.expect_err(
        &Raw::new().kv("k", STR, &val).bytes(),
        &["truncated", "'k'"],
    );

    // Array counts far beyond the file, for a fixed-size and a string element type.
    for (elem, name) in [
        (6u32, "FLOAT32"),
        (STR, "STRING"),
        (ARR, "ARRAY"),
        (0, "UINT8"),
    ] {
        let mut val = elem.to_le_bytes().to_vec();
        val.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        sc.expect_err(
            &Raw::new().kv("arr", ARR, &val).bytes(),
            &["metadata key 'arr'", "array of", name, "needs at least"],
        );
    }

    // A string array whose counts fit but whose second string's length does not.
    let mut val = STR.to_le_bytes().to_vec();
    val.extend_from_slice(&2u64.to_le_bytes());
    val.extend_from_slice(&s(b"ok"));
    val.extend_from_slice(&(1u64 << 50).to_le_bytes());
    val.extend_from_slice(&[0; 16]);
    sc.expect_err(
        &Raw::new().kv("toks", ARR, &val).bytes(),
        &["truncated", "'toks'"],
    );

    // Tensor name length beyond the file.
    let mut b = Raw::new().tensor("t", &[4], 0, 0).data(16).bytes();
    b[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());
    sc.expect_err(&b, &["truncated", "name of tensor #0"]);
}

#[test]
fn bad_metadata_values() {
    let sc = Scratch::new();
    sc.expect_err(
        &Raw::new().kv("k", 13, &[0; 8]).bytes(),
        &["'k'", "unknown value type id 13"],
    );
    let mut val = 99u32.to_le_bytes().to_vec();
    val.extend_from_slice(&0u64.to_le_bytes());
    sc.expect_err(
        &Raw::new().kv("k", ARR, &val).bytes(),
        &["unknown array element type id 99"],
    );
    sc.expect_err(
        &Raw::new().kv("b", BOOL, &[2]).bytes(),
        &["'b'", "bool byte is 2"],
    );
    sc.expect_err(
        &Raw::new().kv("u", STR, &s(b"\xff\xfe")).bytes(),
        &["'u'", "UTF-8"],
    );
    let dup = Raw::new().kv("k", U32, &[0; 4]).kv("k", U32, &[0; 4]);
    sc.expect_err(&dup.bytes(), &["'k'", "duplicate key"]);
    sc.expect_err(
        &Raw::new().kv("", U32, &[0; 4]).bytes(),
        &["metadata key #0", "0 bytes"],
    );
    for (ty, v) in [
        (U32, 0u32.to_le_bytes().to_vec()),
        (U32, 48u32.to_le_bytes().to_vec()),
        (10, 32u64.to_le_bytes().to_vec()),
    ] {
        sc.expect_err(
            &Raw::new().kv("general.alignment", ty, &v).bytes(),
            &["'general.alignment'", "power of two"],
        );
    }
}

#[test]
fn bad_tensor_entries() {
    let sc = Scratch::new();
    let one = |dims: &[u64], ty: u32, off: u64, data: usize| {
        Raw::new()
            .tensor("blk.3.attn_q.weight", dims, ty, off)
            .data(data)
            .bytes()
    };
    sc.expect_err(
        &one(&[4], 4, 0, 64),
        &["'blk.3.attn_q.weight'", "unknown ggml type id 4"],
    );
    sc.expect_err(&one(&[4], 1000, 0, 64), &["unknown ggml type id 1000"]);
    sc.expect_err(&one(&[], 0, 0, 64), &["expected 1..=4 dimensions, found 0"]);
    sc.expect_err(
        &one(&[1, 1, 1, 1, 1], 0, 0, 64),
        &["expected 1..=4 dimensions, found 5"],
    );
    sc.expect_err(&one(&[4, 0], 0, 0, 64), &["dimension 1 is 0"]);
    sc.expect_err(
        &one(&[33], 8, 0, 64),
        &["ne[0]=33", "q8_0", "block size 32"],
    );
    sc.expect_err(&one(&[1 << 62, 1 << 62], 0, 0, 64), &["overflows"]);
    sc.expect_err(&one(&[4], 0, 16, 64), &["data offset 16", "alignment 32"]);
    sc.expect_err(
        &one(&[32], 0, 0, 100),
        &[
            "'blk.3.attn_q.weight'",
            "runs past the end of the file",
            "size",
        ],
    );
    sc.expect_err(
        &one(&[4], 0, 1 << 40, 64),
        &["runs past the end of the file"],
    );
    sc.expect_err(
        &one(&[4], 0, u64::MAX - 31, 64),
        &["runs past the end of the file"],
    );

    let overlap = Raw::new()
        .tensor("a", &[16], 0, 0)
        .tensor("b", &[16], 0, 32)
        .data(128)
        .bytes();
    sc.expect_err(&overlap, &["overlaps tensor 'a'"]);
    let dup = Raw::new()
        .tensor("a", &[4], 0, 0)
        .tensor("a", &[4], 0, 32)
        .data(64)
        .bytes();
    sc.expect_err(&dup, &["'a'", "duplicate name"]);
    // Same layout without the overlap is fine: the checks are not too strict.
    let ok = Raw::new()
        .tensor("a", &[16], 0, 64)
        .tensor("b", &[16], 0, 0)
        .data(128);
    let f = sc.open(&ok.bytes()).unwrap();
    assert_eq!(f.tensor("a").unwrap().data.len(), 64);
}

fn valid_file() -> Vec<u8> {
    let mut m = Metadata::new();
    m.insert("general.architecture", "grok");
    m.insert("tokenizer.ggml.tokens", vec!["a", "bc", ""]);
    m.insert("tokenizer.ggml.scores", vec![0.5f32, -1.0, 2.0]);
    m.insert("grok.block_count", 64u32);
    m.insert("flag", true);
    let q8 = [1u8; 68];
    let bf = [2u8; 6];
    encode_gguf(
        m,
        &[
            (TensorSpec::new("q", vec![64], GgmlType::Q8_0), &q8[..]),
            (TensorSpec::new("b", vec![3], GgmlType::BF16), &bf[..]),
        ],
        32,
    )
    .unwrap()
}

fn data_end(path: &Path) -> u64 {
    let f = GgufFile::open(path).unwrap();
    f.tensors().iter().map(|t| t.offset + t.size).max().unwrap()
}

#[test]
fn truncation_at_every_length() {
    let sc = Scratch::new();
    let full = valid_file();
    sc.open(&full).unwrap();
    let end = data_end(&sc.path) as usize;
    for len in 0..full.len() {
        match sc.open(&full[..len]) {
            Ok(_) => assert!(len >= end, "accepted a file cut at {len} < data end {end}"),
            Err(e) => {
                assert!(len < end, "rejected a complete file cut at {len}: {e}");
                assert!(e.starts_with(&sc.path.display().to_string()), "{e}");
            }
        }
    }
}

#[test]
fn byte_mutations_of_the_header_never_panic() {
    let sc = Scratch::new();
    let full = valid_file();
    let header_len = GgufFile::open({
        std::fs::write(&sc.path, &full).unwrap();
        &sc.path
    })
    .unwrap()
    .data_offset() as usize;
    let mut accepted = 0;
    let mut rejected = 0;
    for i in 0..header_len {
        for v in [0u8, 1, 0x7f, 0x80, 0xff, full[i].wrapping_add(1)] {
            let mut b = full.clone();
            b[i] = v;
            match sc.open(&b) {
                Ok(f) => {
                    accepted += 1;
                    for t in f.tensors() {
                        assert!(t.offset + t.size <= f.file_size());
                    }
                }
                Err(e) => {
                    rejected += 1;
                    assert!(!e.is_empty());
                }
            }
        }
    }
    assert!(
        rejected > header_len,
        "only {rejected} of the mutations were rejected"
    );
    assert!(accepted > 0);
}
