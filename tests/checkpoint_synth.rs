//! Synthetic checkpoints read back, and the reader's errors on bad input.

use grok1_quant::checkpoint::pickle::parse;
use grok1_quant::checkpoint::pickle_write::{ArraySpec, ObjectSpec, PickleLayout};
use grok1_quant::checkpoint::{write_checkpoint, Checkpoint, Dtype, PickleObject};
use grok1_quant::config::GrokConfig;
use grok1_quant::naming::{checkpoint_file_name, Role, StoredAs};
use std::path::Path;

// Made once with Python 3.11, numpy 2.4, pickle.dumps(obj, protocol=...).
const DICT: &str = "8004950a000000000000007d948c0161944b01732e";
const LIST: &str = "80049509000000000000005d94284b014b02652e";
const STR: &str = "80049509000000000000008c0568656c6c6f942e";
const OS_SYSTEM: &str = "80049514000000000000008c05706f736978948c0673797374656d9493942e";
const F64: &str = "80049599000000000000008c166e756d70792e5f636f72652e6d756c74696172726179948c0c5f7265636f6e7374727563749493948c056e756d7079948c076e6461727261799493944b0085944301629487945294284b014b02859468038c0564747970659493948c02663894898887945294284b038c013c944e4e4e4affffffff4affffffff4b0074946289431000000000000000000000000000000000947494622e";
const BIG_ENDIAN: &str = "80049595000000000000008c166e756d70792e5f636f72652e6d756c74696172726179948c0c5f7265636f6e7374727563749493948c056e756d7079948c076e6461727261799493944b0085944301629487945294284b014b03859468038c0564747970659493948c02663494898887945294284b038c013e944e4e4e4affffffff4affffffff4b0074946289430c000000000000000000000000947494622e";
const FORTRAN: &str = "800495a3000000000000008c166e756d70792e5f636f72652e6d756c74696172726179948c0c5f7265636f6e7374727563749493948c056e756d7079948c076e6461727261799493944b0085944301629487945294284b014b024b03869468038c0564747970659493948c02663494898887945294284b038c013c944e4e4e4affffffff4affffffff4b00749462884318000000000000000000000000000000000000000000000000947494622e";
const PROTO5: &str = "8005958e000000000000008c136e756d70792e5f636f72652e6e756d65726963948c0b5f66726f6d62756666657294939428961800000000000000000000000000803f0000004000004040000080400000a040948c056e756d7079948c0564747970659493948c02663494898887945294284b038c013c944e4e4e4affffffff4affffffff4b007494624b024b0386948c014394749452942e";
const PROTO2: &str = "8002636e756d70792e5f636f72652e6d756c746961727261790a5f7265636f6e7374727563740a7100636e756d70790a6e6461727261790a71014b00857102635f636f646563730a656e636f64650a7103580100000062710458060000006c6174696e317105867106527107877108527109284b014b0285710a636e756d70790a64747970650a710b58020000006634710c898887710d52710e284b0358010000003c710f4e4e4e4affffffff4affffffff4b00747110628968035808000000000000000000000071116805867112527113747114622e";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A small config with odd dimensions (emb 72, 3 experts, vocab 301).
fn odd_config(layers: usize) -> GrokConfig {
    let mut c = GrokConfig::grok_1();
    c.vocab_size = 301;
    c.emb_size = 72;
    c.key_size = 6;
    c.num_q_heads = 4;
    c.num_kv_heads = 2;
    c.num_layers = layers;
    c.num_experts = 3;
    c.num_selected_experts = 2;
    c.ffn_size = 40;
    c.sequence_len = 64;
    c.validate().unwrap();
    c
}

fn roundtrip(layers: usize) {
    let cfg = odd_config(layers);
    let tmp = tempfile::tempdir().unwrap();
    let stats = write_checkpoint(tmp.path(), &cfg, 7).unwrap();
    let ck = Checkpoint::open(tmp.path(), &cfg).unwrap();
    assert_eq!(stats.files, 2 + 12 * layers);
    assert_eq!(ck.specs().len(), stats.files);
    assert_eq!(ck.total_bytes(), stats.bytes);
    let mut params = 0u64;
    for spec in ck.specs() {
        let p = ck.param(spec).unwrap();
        params += p.data.numel() as u64;
        match spec.stored {
            StoredAs::F32 => {
                let v = p.f32_data();
                let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
                let want = match spec.role {
                    Role::AttnNorm | Role::FfnNorm => 1.0,
                    Role::AttnOutputNorm | Role::LayerOutputNorm => 2.0,
                    Role::OutputNorm => 25.0,
                    _ => 0.0,
                };
                let var =
                    v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
                // mean within 5 standard errors of the recipe's value
                let tol = 5.0 * (var / v.len() as f64).sqrt();
                assert!((mean - want).abs() < tol, "{}: mean {mean}", spec.path);
                assert!(v.iter().all(|x| x.is_finite()));
            }
            StoredAs::Int8 { scale_blocks } => {
                assert_eq!(p.scale_blocks(), scale_blocks);
                let w = p.int8_weight();
                let shape = &spec.shape;
                let (n_in, n_out) = (shape[shape.len() - 2], shape[shape.len() - 1]);
                let rows = n_in / scale_blocks;
                // Each (block, column) uses the full int8 range: scale = bf16(max|w|/127).
                for blk in 0..w.len() / (rows * n_out) {
                    for c in 0..n_out {
                        let m = (0..rows)
                            .map(|r| w[(blk * rows + r) * n_out + c].unsigned_abs())
                            .max()
                            .unwrap();
                        assert!((126..=128).contains(&m), "{} max {m}", spec.path);
                    }
                }
                // Dequantized weights have std about 1/sqrt(fan_in).
                let (mut s2, mut n) = (0f64, 0usize);
                for r in 0..w.len() / n_out {
                    for x in p.row_f32(r) {
                        s2 += (x as f64) * (x as f64);
                        n += 1;
                    }
                }
                let std = (s2 / n as f64).sqrt() * (n_in as f64).sqrt();
                assert!(
                    (0.8..1.2).contains(&std),
                    "{}: std*sqrt(fan_in) {std}",
                    spec.path
                );
            }
        }
    }
    assert_eq!(params, stats.params);
}

#[test]
fn synth_roundtrip_1_layer() {
    roundtrip(1);
}

#[test]
fn synth_roundtrip_3_layers() {
    roundtrip(3);
}

#[test]
fn synth_roundtrip_13_layers() {
    roundtrip(13);
}

#[test]
fn synth_is_deterministic_per_seed() {
    let cfg = odd_config(1);
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    write_checkpoint(a.path(), &cfg, 1).unwrap();
    write_checkpoint(b.path(), &cfg, 1).unwrap();
    write_checkpoint(c.path(), &cfg, 2).unwrap();
    let f = |d: &Path, i| std::fs::read(d.join("ckpt-0").join(checkpoint_file_name(i))).unwrap();
    for i in 0..14 {
        assert_eq!(f(a.path(), i), f(b.path(), i));
        assert_ne!(f(a.path(), i), f(c.path(), i));
    }
}

fn perr(data: &[u8]) -> String {
    match parse(data) {
        Ok(o) => panic!("parsed bad input as {o:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn foreign_pickles_are_rejected_with_a_reason() {
    assert!(perr(&hex(DICT)).contains("dict value for 'a' is int; expected numpy.ndarray"));
    assert!(perr(&hex(LIST)).contains("opcode 0x5d"));
    assert!(perr(&hex(STR)).contains("top-level object is str"));
    assert!(perr(&hex(OS_SYSTEM)).contains("global posix.system is not allowed"));
    assert!(perr(&hex(PROTO2)).contains("protocol 2"));
    assert!(perr(&hex(BIG_ENDIAN)).contains("big-endian"));
    assert!(perr(&hex(FORTRAN)).contains("Fortran"));
    assert!(perr(b"").contains("truncated"));
    assert!(perr(&[0x80, 4, b'.']).contains("stack"));
    // numpy float64 parses (as an unsupported dtype the reader then rejects)
    match parse(&hex(F64)).unwrap() {
        PickleObject::Array(a) => assert!(matches!(a.dtype, Dtype::Other { .. })),
        o => panic!("{o:?}"),
    }
    // protocol 5 (_frombuffer + BYTEARRAY8) is accepted
    match parse(&hex(PROTO5)).unwrap() {
        PickleObject::Array(a) => {
            assert_eq!(
                (a.dtype, a.shape, a.len_bytes),
                (Dtype::F32, vec![2, 3], 24)
            );
            let data = hex(PROTO5);
            assert_eq!(&data[a.offset + 4..a.offset + 8], &1f32.to_le_bytes());
        }
        o => panic!("{o:?}"),
    }
}

/// A 1-layer synthetic checkpoint to damage.
fn damaged() -> (tempfile::TempDir, GrokConfig) {
    let cfg = odd_config(1);
    let tmp = tempfile::tempdir().unwrap();
    write_checkpoint(tmp.path(), &cfg, 3).unwrap();
    (tmp, cfg)
}

#[test]
fn truncation_anywhere_is_an_error_never_a_panic() {
    let (tmp, cfg) = damaged();
    let ck = Checkpoint::open(tmp.path(), &cfg).unwrap();
    for spec in &ck.specs()[..6] {
        let data = std::fs::read(ck.file_path(spec.index)).unwrap();
        let points: Vec<usize> = (0..data.len().min(400))
            .chain((400..data.len()).step_by(997))
            .chain(data.len().saturating_sub(20)..data.len())
            .collect();
        for n in points {
            let e = parse(&data[..n]).unwrap_err();
            assert!(e.offset <= n, "{e}");
        }
        // Damaged bytes anywhere in the structure: an error or a still-valid parse, no panic.
        for i in 0..data.len().min(300) {
            let mut d = data.clone();
            d[i] ^= 0x5a;
            let _ = parse(&d);
        }
    }
    // Through the reader, the message names the file and the parameter.
    let spec = &ck.specs()[3];
    let path = ck.file_path(spec.index);
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&path, &data[..data.len() / 2]).unwrap();
    let e = ck.param(spec).unwrap_err().to_string();
    assert!(
        e.contains(&checkpoint_file_name(3)) && e.contains(&spec.path),
        "{e}"
    );
    assert!(e.contains("truncated"), "{e}");
}

fn write_obj(path: &Path, obj: &ObjectSpec) {
    let layout = PickleLayout::new(obj).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    let lens = layout.payload_lens().to_vec();
    layout
        .write(&mut f, |i, w| {
            std::io::Write::write_all(w, &vec![0u8; lens[i]])
        })
        .unwrap();
}

#[test]
fn wrong_dtype_shape_or_kind_names_file_expected_and_found() {
    let (tmp, cfg) = damaged();
    let ck = Checkpoint::open(tmp.path(), &cfg).unwrap();
    let specs = ck.specs().to_vec();
    let norm = &specs[1]; // language_model/rms_norm/scale, float32 [72]
    let quant = &specs[3]; // moe/linear_1: int8 [3, 40, 72], scales [3, 8, 72]
    let arr = |dtype, shape: Vec<usize>| ArraySpec { dtype, shape };

    let cases: Vec<(usize, ObjectSpec, &str, &str)> = vec![
        (
            1,
            ObjectSpec::Array(arr(Dtype::I8, vec![72])),
            "float32 [72]",
            "int8 [72]",
        ),
        (
            1,
            ObjectSpec::Array(arr(Dtype::F32, vec![73])),
            "float32 [72]",
            "float32 [73]",
        ),
        (
            1,
            ObjectSpec::Quantized {
                weight: arr(Dtype::I8, vec![72]),
                scales: arr(Dtype::BF16, vec![1]),
            },
            "a float32 array",
            "QuantizedWeight8bit",
        ),
        (
            3,
            ObjectSpec::Array(arr(Dtype::F32, vec![3, 40, 72])),
            "QuantizedWeight8bit",
            "plain array",
        ),
        (
            3,
            ObjectSpec::Quantized {
                weight: arr(Dtype::I8, vec![3, 72, 40]),
                scales: arr(Dtype::BF16, vec![3, 8, 72]),
            },
            "weight int8 [3, 40, 72]",
            "weight int8 [3, 72, 40]",
        ),
        (
            3,
            ObjectSpec::Quantized {
                weight: arr(Dtype::I8, vec![3, 40, 72]),
                scales: arr(Dtype::BF16, vec![3, 1, 72]),
            },
            "scales bfloat16 [3, 8, 72]",
            "scales bfloat16 [3, 1, 72]",
        ),
        (
            3,
            ObjectSpec::Quantized {
                weight: arr(Dtype::I8, vec![3, 40, 72]),
                scales: arr(Dtype::F32, vec![3, 8, 72]),
            },
            "scales bfloat16",
            "scales float32",
        ),
    ];
    for (idx, obj, expected, found) in cases {
        let spec = if idx == 1 { norm } else { quant };
        write_obj(&ck.file_path(idx), &obj);
        let e = ck.param(spec).unwrap_err().to_string();
        for want in [
            checkpoint_file_name(idx).as_str(),
            spec.path.as_str(),
            expected,
            found,
        ] {
            assert!(e.contains(want), "'{e}' lacks '{want}'");
        }
    }
    // float64 from numpy itself
    std::fs::write(ck.file_path(1), hex(F64)).unwrap();
    let e = ck.param(norm).unwrap_err().to_string();
    assert!(
        e.contains("numpy dtype 'f8'") && e.contains("float32 [72]"),
        "{e}"
    );
    // A shape that disagrees with the payload length.
    write_obj(
        &ck.file_path(1),
        &ObjectSpec::Array(arr(Dtype::F32, vec![72])),
    );
    let mut d = std::fs::read(ck.file_path(1)).unwrap();
    let at = d.windows(3).position(|w| w == [b'K', 72, 0x85]).unwrap();
    d[at + 1] = 73;
    std::fs::write(ck.file_path(1), &d).unwrap();
    let e = ck.param(norm).unwrap_err().to_string();
    assert!(e.contains("payload is 288 bytes; expected 292"), "{e}");
    // A memo reference that was never stored.
    write_obj(
        &ck.file_path(3),
        &ObjectSpec::Quantized {
            weight: arr(Dtype::I8, vec![3, 40, 72]),
            scales: arr(Dtype::BF16, vec![3, 8, 72]),
        },
    );
    let mut d = std::fs::read(ck.file_path(3)).unwrap();
    let at = d.windows(4).position(|w| w == [b'h', 9, 0x8c, 5]).unwrap();
    d[at + 1] = 200;
    std::fs::write(ck.file_path(3), &d).unwrap();
    let e = ck.param(quant).unwrap_err().to_string();
    assert!(e.contains("memo index 200"), "{e}");
}

#[test]
fn missing_and_extra_files_are_named() {
    let (tmp, cfg) = damaged();
    let dir = tmp.path().join("ckpt-0");
    std::fs::rename(dir.join("tensor00005_000"), tmp.path().join("moved")).unwrap();
    let e = Checkpoint::open(tmp.path(), &cfg).unwrap_err().to_string();
    assert!(
        e.contains("missing") && e.contains("tensor00005_000"),
        "{e}"
    );
    assert!(e.contains("expects 14 files"), "{e}");
    std::fs::rename(tmp.path().join("moved"), dir.join("tensor00005_000")).unwrap();
    Checkpoint::open(tmp.path(), &cfg).unwrap();

    std::fs::write(dir.join("tensor00014_000"), b"x").unwrap();
    std::fs::write(dir.join("tensor00000_001"), b"x").unwrap();
    std::fs::write(dir.join("notes.txt"), b"x").unwrap();
    let e = Checkpoint::open(&dir, &cfg).unwrap_err().to_string();
    assert!(
        e.contains("unexpected") && e.contains("tensor00000_001, tensor00014_000"),
        "{e}"
    );

    // A config with more layers than the files hold.
    let e = Checkpoint::open(&dir, &odd_config(2))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tensor00014_000") || e.contains("missing"),
        "{e}"
    );

    let empty = tempfile::tempdir().unwrap();
    let e = Checkpoint::open(empty.path(), &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no checkpoint files"), "{e}");
    let e = Checkpoint::open(&empty.path().join("absent"), &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent"), "{e}");
}
