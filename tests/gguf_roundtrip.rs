//! Write → read round trips through the public API: every value type, tensor sizes of the
//! types Grok uses, determinism, and the concurrent file writer.

use grok1_quant::gguf::{
    encode_gguf, keys, write_gguf, GgmlType, GgufArray, GgufFile, GgufFileWriter, GgufLayout,
    GgufValue, Metadata, TensorSpec,
};
use rayon::prelude::*;

fn all_values() -> Metadata {
    let mut m = Metadata::new();
    m.insert(keys::GENERAL_ARCHITECTURE, "grok");
    m.insert("v.u8", u8::MAX);
    m.insert("v.i8", i8::MIN);
    m.insert("v.u16", u16::MAX);
    m.insert("v.i16", i16::MIN);
    m.insert("v.u32", u32::MAX);
    m.insert("v.i32", i32::MIN);
    m.insert("v.f32", -1.5e-30f32);
    m.insert("v.bool.t", true);
    m.insert("v.bool.f", false);
    m.insert("v.str", "grüße ✓");
    m.insert("v.str.empty", "");
    m.insert("v.u64", u64::MAX);
    m.insert("v.i64", i64::MIN);
    m.insert("v.f64", f64::INFINITY);
    m.insert("a.u8", vec![0u8, 1, 255]);
    m.insert("a.i8", vec![-128i8, 127]);
    m.insert("a.u16", vec![1u16, 65535]);
    m.insert("a.i16", vec![-1i16]);
    m.insert("a.u32", vec![7u32; 5]);
    m.insert("a.i32", vec![-7i32, 0, 7]);
    m.insert("a.f32", vec![0.25f32, f32::MAX, f32::MIN_POSITIVE]);
    m.insert("a.bool", vec![true, false, true]);
    m.insert("a.str", vec!["<s>", "", "▁hello", "日本語"]);
    m.insert("a.u64", vec![u64::MAX, 0]);
    m.insert("a.i64", vec![i64::MIN, i64::MAX]);
    m.insert("a.f64", vec![std::f64::consts::PI]);
    m.insert("a.empty", Vec::<u32>::new());
    m.insert(
        "a.nested",
        GgufArray::Array(vec![
            GgufArray::String(vec!["x".into()]),
            GgufArray::String(vec![]),
        ]),
    );
    m
}

/// (name, shape, type, expected byte size) — sizes written out by hand from ggml's table.
fn grok_tensors() -> Vec<(TensorSpec, u64)> {
    vec![
        (TensorSpec::new("t.f32", vec![7], GgmlType::F32), 28),
        (TensorSpec::new("t.f16", vec![4, 4], GgmlType::F16), 32),
        (TensorSpec::new("t.bf16", vec![3, 5], GgmlType::BF16), 30),
        (TensorSpec::new("t.q8_0", vec![32, 3], GgmlType::Q8_0), 102),
        (TensorSpec::new("t.q4_0", vec![64, 2], GgmlType::Q4_0), 72),
        (TensorSpec::new("t.q4_k", vec![512, 2], GgmlType::Q4_K), 576),
        (
            TensorSpec::new("t.q6_k", vec![256, 3, 1, 2], GgmlType::Q6_K),
            1260,
        ),
    ]
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + seed * 17 + 5) as u8).collect()
}

#[test]
fn every_value_type_and_tensor_type_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.gguf");
    let specs = grok_tensors();
    let datas: Vec<Vec<u8>> = specs
        .iter()
        .enumerate()
        .map(|(i, (_, n))| pattern(i, *n as usize))
        .collect();
    let tensors: Vec<(TensorSpec, &[u8])> = specs
        .iter()
        .zip(&datas)
        .map(|((s, _), d)| (s.clone(), d.as_slice()))
        .collect();
    let layout = write_gguf(&path, all_values(), &tensors, 32).unwrap();

    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.metadata(), &all_values());
    assert_eq!(
        f.metadata().keys().collect::<Vec<_>>(),
        all_values().keys().collect::<Vec<_>>()
    );
    assert_eq!(f.file_size(), layout.file_size());
    assert_eq!(f.data_offset(), layout.data_offset());
    assert_eq!(f.get_str(keys::GENERAL_ARCHITECTURE), Some("grok"));
    assert_eq!(f.get_u32("v.u32"), Some(u32::MAX));
    assert_eq!(
        f.get_u64("v.u32"),
        None,
        "getters are strict about the type"
    );
    assert_eq!(f.get_uint("v.u32"), Some(u64::from(u32::MAX)));
    assert_eq!(f.get_i8("v.i8"), Some(i8::MIN));
    assert_eq!(f.get_f32("v.f32"), Some(-1.5e-30));
    assert_eq!(f.get_f64("v.f64"), Some(f64::INFINITY));
    assert_eq!(f.get_bool("v.bool.t"), Some(true));
    assert_eq!(f.get_str("v.str.empty"), Some(""));
    let strs = f.get_string_array("a.str").unwrap();
    assert_eq!(strs, ["<s>", "", "▁hello", "日本語"]);
    assert_eq!(f.get_i32_array("a.i32"), Some(&[-7, 0, 7][..]));
    assert_eq!(f.get_f32_array("a.f32").map(<[f32]>::len), Some(3));
    assert_eq!(
        f.get("a.empty"),
        Some(&GgufValue::Array(GgufArray::U32(vec![])))
    );
    assert!(f.get("missing").is_none());

    assert_eq!(f.tensors().len(), specs.len());
    for (i, ((spec, size), data)) in specs.iter().zip(&datas).enumerate() {
        let info = &f.tensors()[i];
        assert_eq!(info.name, spec.name);
        assert_eq!(info.shape, spec.shape);
        assert_eq!(info.ty, spec.ty);
        assert_eq!(info.size, *size, "{}", spec.name);
        assert_eq!(info.offset, layout.tensor_offset(i));
        assert_eq!(info.size, layout.tensor_size(i));
        assert_eq!(info.offset % 32, 0);
        let view = f.tensor(&spec.name).unwrap();
        assert_eq!(view.data, data.as_slice(), "{}", spec.name);
        assert_eq!(f.tensor_at(i).data, data.as_slice());
        // The data is a view into the shared map, not a copy.
        let base = f.mmap().as_ptr() as usize;
        assert_eq!(view.data.as_ptr() as usize - base, info.offset as usize);
    }
    assert!(f.tensor("nope").is_none());
    assert_eq!(f.tensors()[6].n_elements(), 256 * 3 * 2);
}

#[test]
fn output_is_deterministic_and_matches_in_memory_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let specs = grok_tensors();
    let datas: Vec<Vec<u8>> = specs.iter().map(|(_, n)| pattern(3, *n as usize)).collect();
    let tensors: Vec<(TensorSpec, &[u8])> = specs
        .iter()
        .zip(&datas)
        .map(|((s, _), d)| (s.clone(), d.as_slice()))
        .collect();
    let spec_list: Vec<TensorSpec> = specs.iter().map(|(s, _)| s.clone()).collect();
    let a = GgufLayout::new(all_values(), spec_list.clone(), 32).unwrap();
    let b = GgufLayout::new(all_values(), spec_list, 32).unwrap();
    assert_eq!(a.header_bytes(), b.header_bytes());
    let mem1 = encode_gguf(all_values(), &tensors, 32).unwrap();
    let mem2 = encode_gguf(all_values(), &tensors, 32).unwrap();
    assert_eq!(mem1, mem2);
    assert_eq!(&mem1[..a.header_bytes().len()], a.header_bytes().as_slice());
    assert_eq!(mem1.len() as u64, a.file_size());
    // Padding between the header and the data, and between tensors, is zero.
    assert!(mem1[a.header_len() as usize..a.data_offset() as usize]
        .iter()
        .all(|&b| b == 0));
    let end0 = (a.tensor_offset(0) + a.tensor_size(0)) as usize;
    assert!(mem1[end0..a.tensor_offset(1) as usize]
        .iter()
        .all(|&b| b == 0));

    let p1 = dir.path().join("1.gguf");
    let p2 = dir.path().join("2.gguf");
    // Writing over an existing, longer file must leave no trace of it.
    std::fs::write(&p2, vec![0xAAu8; 100_000]).unwrap();
    write_gguf(&p1, all_values(), &tensors, 32).unwrap();
    write_gguf(&p2, all_values(), &tensors, 32).unwrap();
    assert_eq!(std::fs::read(&p1).unwrap(), mem1);
    assert_eq!(std::fs::read(&p2).unwrap(), mem1);
}

#[test]
fn concurrent_chunked_writes_from_rayon_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("par.gguf");
    let specs: Vec<TensorSpec> = (0..64)
        .map(|i| {
            let ty = [GgmlType::Q8_0, GgmlType::BF16, GgmlType::Q6_K][i % 3];
            TensorSpec::new(format!("blk.{i}.w"), vec![256, 1 + i as u64 % 5], ty)
        })
        .collect();
    let mut m = Metadata::new();
    m.insert(keys::GENERAL_ARCHITECTURE, "grok");
    let layout = GgufLayout::new(m, specs, 64).unwrap();
    let w = GgufFileWriter::create(&path, layout).unwrap();
    let n = w.layout().tensors().len();
    (0..n).into_par_iter().rev().for_each(|i| {
        let size = w.layout().tensor_size(i) as usize;
        let data = pattern(i, size);
        // Write in uneven chunks, last chunk first.
        let chunks: Vec<(usize, &[u8])> = data
            .chunks(77)
            .enumerate()
            .map(|(k, c)| (k * 77, c))
            .collect();
        chunks.par_iter().rev().for_each(|(at, c)| {
            w.write_tensor_part(i, *at as u64, c).unwrap();
        });
    });
    let layout = w.layout().clone();
    w.finish().unwrap();

    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.get_u32(keys::GENERAL_ALIGNMENT), Some(64));
    assert_eq!(f.file_size(), layout.file_size());
    for i in 0..n {
        let v = f.tensor_at(i);
        assert_eq!(v.info.offset, layout.tensor_offset(i));
        assert_eq!(v.data, pattern(i, v.info.size as usize).as_slice());
    }
}

#[test]
fn writer_rejects_wrong_sizes_and_incomplete_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.gguf");
    let specs = vec![
        TensorSpec::new("a", vec![32], GgmlType::Q8_0),
        TensorSpec::new("b", vec![4], GgmlType::BF16),
    ];
    let layout = GgufLayout::new(Metadata::new(), specs, 32).unwrap();
    let w = GgufFileWriter::create(&path, layout).unwrap();
    let e = w.write_tensor(0, &[0u8; 33]).unwrap_err().to_string();
    assert!(
        e.contains("'a'") && e.contains("expected 34 bytes") && e.contains("33"),
        "{e}"
    );
    let e = w
        .write_tensor_part(1, 6, &[0u8; 4])
        .unwrap_err()
        .to_string();
    assert!(e.contains("'b'") && e.contains("runs past"), "{e}");
    assert!(w.write_tensor(2, &[]).is_err());
    w.write_tensor(0, &[1u8; 34]).unwrap();
    w.write_tensor_part(1, 0, &[2u8; 4]).unwrap();
    let e = w.finish().unwrap_err().to_string();
    assert!(
        e.contains("'b'") && e.contains("4 bytes written, expected exactly 8"),
        "{e}"
    );

    let tensors = [(
        TensorSpec::new("a", vec![32], GgmlType::Q8_0),
        &[0u8; 3][..],
    )];
    assert!(encode_gguf(Metadata::new(), &tensors, 32).is_err());
    assert!(write_gguf(&path, Metadata::new(), &tensors, 32).is_err());
}

#[test]
fn empty_file_without_tensors_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.gguf");
    write_gguf(&path, Metadata::new(), &[], 32).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert!(f.metadata().is_empty());
    assert!(f.tensors().is_empty());
    assert_eq!(f.file_size(), 32);
}
