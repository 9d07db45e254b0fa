//! Cross-check with gguf-py (the format's reference) through tools/gguf_check.py, both ways:
//! we read what gguf-py wrote, and gguf-py reads what we wrote.
//!
//! Skipped with a note when python3 or the `gguf` package is missing, unless `CI` is set.

use std::path::Path;
use std::process::Command;

use grok1_quant::gguf::{
    keys, write_gguf, GgmlType, GgufArray, GgufFile, GgufValue, Metadata, TensorSpec,
};
use serde_json::Value;

const TOOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/gguf_check.py");

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but python3 with the gguf and numpy packages is not available"
        );
        eprintln!(
            "note: skipping the gguf-py cross-check: python3 with gguf + numpy not importable"
        );
    }
    ok
}

fn tool(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(TOOL)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gguf_check.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn py_read(path: &Path) -> Value {
    serde_json::from_str(&tool(&["read", path.to_str().unwrap(), "--json"])).unwrap()
}

/// Compare one of our values with gguf_check.py's JSON of it (floats come as repr strings).
fn check_value(key: &str, v: &GgufValue, entry: &Value) {
    let ty = entry["type"].as_str().unwrap();
    assert_eq!(v.value_type().name(), ty, "type of {key}");
    let json = &entry["value"];
    match v {
        GgufValue::Array(a) => {
            assert_eq!(
                a.elem_type().name(),
                entry["elem_type"].as_str().unwrap(),
                "{key}"
            );
            let items = json.as_array().unwrap();
            assert_eq!(items.len(), a.len(), "length of {key}");
            let as_values: Vec<GgufValue> = match a {
                GgufArray::U8(x) => x.iter().map(|&e| e.into()).collect(),
                GgufArray::I8(x) => x.iter().map(|&e| e.into()).collect(),
                GgufArray::U16(x) => x.iter().map(|&e| e.into()).collect(),
                GgufArray::I16(x) => x.iter().map(|&e| e.into()).collect(),
                GgufArray::U32(x) => x.iter().map(|&e| e.into()).collect(),
                GgufArray::I32(x) => x.iter().map(|&e| e.into()).collect(),
                GgufArray::F32(x) => x.iter().map(|&e| e.into()).collect(),
                GgufArray::Bool(x) => x.iter().map(|&e| e.into()).collect(),
                GgufArray::String(x) => x.iter().map(|e| e.as_str().into()).collect(),
                GgufArray::U64(x) => x.iter().map(|&e| e.into()).collect(),
                GgufArray::I64(x) => x.iter().map(|&e| e.into()).collect(),
                GgufArray::F64(x) => x.iter().map(|&e| e.into()).collect(),
                GgufArray::Array(_) => panic!("{key}: nested arrays are not cross-checked"),
            };
            for (e, j) in as_values.iter().zip(items) {
                check_scalar(key, e, j);
            }
        }
        _ => check_scalar(key, v, json),
    }
}

fn check_scalar(key: &str, v: &GgufValue, json: &Value) {
    match v {
        GgufValue::F32(_) | GgufValue::F64(_) => {
            let py: f64 = json.as_str().unwrap().parse().unwrap();
            assert_eq!(
                v.to_f64().unwrap().to_bits(),
                py.to_bits(),
                "{key}: {v:?} vs {py}"
            );
        }
        GgufValue::Bool(b) => assert_eq!(json.as_bool(), Some(*b), "{key}"),
        GgufValue::String(s) => assert_eq!(json.as_str(), Some(s.as_str()), "{key}"),
        GgufValue::U64(x) => assert_eq!(json.as_u64(), Some(*x), "{key}"),
        other => assert_eq!(json.as_i64(), other.to_i64(), "{key}"),
    }
}

/// Everything gguf-py reports about `path` must match what we read from it.
fn check_same_view(path: &Path, ours: &GgufFile) {
    let py = py_read(path);
    assert_eq!(py["version"].as_u64(), Some(u64::from(ours.version())));
    assert_eq!(py["alignment"].as_u64(), Some(ours.alignment()));
    assert_eq!(py["data_offset"].as_u64(), Some(ours.data_offset()));
    let meta = py["metadata"].as_array().unwrap();
    assert_eq!(meta.len(), ours.metadata().len());
    for ((key, v), entry) in ours.metadata().iter().zip(meta) {
        assert_eq!(entry["key"].as_str(), Some(key), "metadata order");
        check_value(key, v, entry);
    }
    let tensors = py["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), ours.tensors().len());
    for (t, j) in ours.tensors().iter().zip(tensors) {
        assert_eq!(j["name"].as_str(), Some(t.name.as_str()));
        assert_eq!(j["type"].as_u64(), Some(u64::from(t.ty.id())), "{}", t.name);
        let shape: Vec<u64> = j["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(shape, t.shape, "{}", t.name);
        assert_eq!(j["offset"].as_u64(), Some(t.offset), "{}", t.name);
        assert_eq!(j["n_bytes"].as_u64(), Some(t.size), "{}", t.name);
        let data = ours.tensor(&t.name).unwrap().data;
        assert_eq!(
            j["sha256"].as_str().unwrap(),
            sha256_hex(data),
            "{}",
            t.name
        );
    }
}

#[test]
fn we_read_what_gguf_py_wrote() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("py.gguf");
    tool(&["write", path.to_str().unwrap()]);
    let f = GgufFile::open(&path).unwrap();
    // Spot checks against what the tool writes, so an empty file cannot pass.
    assert_eq!(f.get_str(keys::GENERAL_ARCHITECTURE), Some("grok"));
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.get_u32("test.u32"), Some(4_000_000_000));
    assert_eq!(f.get_i8("test.i8"), Some(-100));
    assert_eq!(f.get_f32("test.f32"), Some(0.1));
    assert_eq!(f.get_u64("test.u64"), Some((1 << 63) + 12345));
    assert_eq!(f.get_str("test.string"), Some("héllo wörld ✓"));
    assert_eq!(
        f.get_string_array("test.strings").unwrap(),
        ["<pad>", "", "▁the", "日本"]
    );
    let types: Vec<(GgmlType, Vec<u64>, u64)> = f
        .tensors()
        .iter()
        .map(|t| (t.ty, t.shape.clone(), t.size))
        .collect();
    assert_eq!(
        types,
        [
            (GgmlType::F32, vec![4, 3], 48),
            (GgmlType::F16, vec![8, 2], 32),
            (GgmlType::Q8_0, vec![64, 2], 136),
            (GgmlType::BF16, vec![5, 3], 30),
        ]
    );
    check_same_view(&path, &f);
}

#[test]
fn gguf_py_reads_what_we_wrote() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for alignment in [32u64, 64] {
        let path = dir.path().join(format!("rs{alignment}.gguf"));
        let mut m = Metadata::new();
        m.insert(keys::GENERAL_ARCHITECTURE, "grok");
        m.insert("t.u8", 250u8);
        m.insert("t.i8", -3i8);
        m.insert("t.u16", 60000u16);
        m.insert("t.i16", -30000i16);
        m.insert("t.u32", 123456789u32);
        m.insert("t.i32", -123456789i32);
        m.insert("t.f32", 1.0e-5f32);
        m.insert("t.bool", false);
        m.insert("t.str", "ünïcode ✓");
        m.insert("t.u64", u64::MAX);
        m.insert("t.i64", i64::MIN);
        m.insert("t.f64", -2.5e300f64);
        m.insert(keys::TOKENIZER_TOKENS, vec!["<pad>", "", "▁x", "日本"]);
        m.insert(keys::TOKENIZER_SCORES, vec![0.0f32, -1.5, 3.25e-7]);
        m.insert("t.u8s", vec![1u8, 2, 3]);
        m.insert("t.i64s", vec![-1i64, 1]);
        m.insert("t.bools", vec![true, false]);
        let specs = [
            (TensorSpec::new("f32", vec![5, 2], GgmlType::F32), 40),
            (TensorSpec::new("f16", vec![6], GgmlType::F16), 12),
            (TensorSpec::new("bf16", vec![3, 3], GgmlType::BF16), 18),
            (TensorSpec::new("q8_0", vec![64, 3], GgmlType::Q8_0), 204),
            (TensorSpec::new("q4_0", vec![32, 1, 2], GgmlType::Q4_0), 36),
            (TensorSpec::new("q4_k", vec![256, 2], GgmlType::Q4_K), 288),
            (TensorSpec::new("q6_k", vec![512], GgmlType::Q6_K), 420),
        ];
        let datas: Vec<Vec<u8>> = specs
            .iter()
            .enumerate()
            .map(|(i, (_, n))| (0..*n).map(|k| (k * 13 + i * 7 + 1) as u8).collect())
            .collect();
        let tensors: Vec<(TensorSpec, &[u8])> = specs
            .iter()
            .zip(&datas)
            .map(|((s, _), d)| (s.clone(), d.as_slice()))
            .collect();
        write_gguf(&path, m, &tensors, alignment).unwrap();
        let f = GgufFile::open(&path).unwrap();
        check_same_view(&path, &f);
        // And the hashes gguf-py reports are those of the bytes we put in.
        let py = py_read(&path);
        for (j, d) in py["tensors"].as_array().unwrap().iter().zip(&datas) {
            assert_eq!(j["sha256"].as_str().unwrap(), sha256_hex(d));
        }
    }
}

#[test]
fn sha256_matches_known_vectors() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let long = vec![b'a'; 1000];
    assert_eq!(
        sha256_hex(&long),
        "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
    );
}

/// SHA-256 (FIPS 180-4), enough to compare tensor bytes with gguf-py's hashes.
fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}
