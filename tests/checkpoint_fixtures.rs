//! The reader against the read-only fixtures: every file of grok-tiny and grok-mini-trained.

use grok1_quant::checkpoint::{Checkpoint, Dtype};
use grok1_quant::config::GrokConfig;
use std::path::{Path, PathBuf};

/// The fixture directory, or `None` (with a note) when absent outside CI.
fn fixture(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(name);
    if p.is_dir() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "fixture {} missing under CI",
        p.display()
    );
    eprintln!("note: skipping, fixture {} not found", p.display());
    None
}

fn dtype_name(d: &Dtype) -> String {
    match d {
        Dtype::F32 => "float32".into(),
        Dtype::I8 => "int8".into(),
        Dtype::BF16 => "bfloat16".into(),
        other => format!("{other}"),
    }
}

fn shape_of(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .expect("shape array")
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

/// Opens the fixture with its config and checks every param against reference tensors.json.
fn check_fixture(root: &Path, config: &Path, tensors: &Path) {
    let cfg = GrokConfig::from_file(config).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tensors).unwrap()).unwrap();
    let entries = json["tensors"].as_array().unwrap();
    for dir in [root.to_path_buf(), root.join("ckpt-0")] {
        let ck = Checkpoint::open(&dir, &cfg).unwrap();
        assert_eq!(ck.specs().len(), entries.len());
        let mut total = 0;
        for (spec, t) in ck.specs().iter().zip(entries) {
            assert_eq!(spec.path, t["path"].as_str().unwrap());
            let p = ck.param(spec).unwrap();
            assert_eq!(dtype_name(&p.data.dtype), t["dtype"].as_str().unwrap());
            assert_eq!(p.data.shape, shape_of(&t["shape"]), "{}", spec.path);
            match &p.scales {
                None => assert_eq!(t["kind"], "array"),
                Some(s) => {
                    assert_eq!(t["kind"], "quantized");
                    assert_eq!(dtype_name(&s.dtype), t["scales_dtype"].as_str().unwrap());
                    assert_eq!(s.shape, shape_of(&t["scales_shape"]));
                    assert_eq!(p.scale_blocks() as u64, t["scale_blocks"].as_u64().unwrap());
                    assert!(p.scales_bf16().iter().all(|s| s.to_f32() > 0.0));
                    assert_eq!(p.int8_weight().len(), p.data.numel());
                }
            }
            let bytes = t["file_bytes"].as_u64().unwrap();
            assert_eq!(
                std::fs::metadata(ck.file_path(spec.index)).unwrap().len(),
                bytes
            );
            total += bytes;
        }
        assert_eq!(ck.total_bytes(), total);
    }
}

#[test]
fn grok_tiny_every_file_matches_tensors_json() {
    let Some(root) = fixture("grok-tiny") else {
        return;
    };
    check_fixture(
        &root,
        &root.join("reference/config.json"),
        &root.join("reference/tensors.json"),
    );
}

#[test]
fn grok_mini_trained_every_file_matches_tensors_json() {
    let Some(root) = fixture("grok-mini-trained") else {
        return;
    };
    check_fixture(
        &root,
        &root.join("config.json"),
        &root.join("reference/tensors.json"),
    );
}

/// Values computed with Python's pickle + numpy + ml_dtypes from the same files.
#[test]
fn grok_tiny_values_match_numpy() {
    let Some(root) = fixture("grok-tiny") else {
        return;
    };
    let cfg = GrokConfig::from_file(&root.join("reference/config.json")).unwrap();
    let ck = Checkpoint::open(&root, &cfg).unwrap();
    let specs = ck.specs();

    let norm = ck.param(&specs[1]).unwrap();
    let v = norm.f32_data();
    assert_eq!(&v[..3], &[26.005682_f32, 23.103657, 25.544722]);
    let sum: f64 = v.iter().map(|&x| x as f64).sum();
    assert!((sum - 6422.488431930542).abs() < 1e-9, "{sum}");

    let emb = ck.param(&specs[0]).unwrap();
    assert_eq!(
        emb.f32_range(5 * 256, 3).as_ref(),
        &[-0.0013463959_f32, -0.024134926, -0.004096237]
    );
    let sum: f64 = emb.f32_data().iter().map(|&x| x as f64).sum();
    assert!((sum + 12.157292827368227).abs() < 1e-9, "{sum}");
    assert_eq!(emb.row_f32(5)[..3], emb.f32_range(5 * 256, 3)[..]);

    // moe/linear_1 of layer 0: int8 [8, 512, 256], scales [8, 8, 256]
    let down = ck.param(&specs[3]).unwrap();
    let w = down.int8_weight();
    let at = (512 + 300) * 256;
    assert_eq!(&w[at..at + 4], &[32, 84, -59, 96]);
    assert_eq!(w.iter().map(|&x| x as i64).sum::<i64>(), 96182);
    let s = down.scales_bf16();
    let sat = (8 + 300 / 64) * 256;
    let s4: Vec<f64> = s[sat..sat + 4].iter().map(|x| x.to_f64()).collect();
    assert_eq!(
        s4,
        [
            0.0009765625,
            0.00102996826171875,
            0.0009765625,
            0.000888824462890625
        ]
    );
    let row = down.row_f32(512 + 300);
    assert_eq!(&row[..4], &[0.03125, 0.086517334, -0.057617188, 0.08532715]);
    let sum: f64 = row.iter().map(|&x| x as f64).sum();
    assert!((sum - 0.014072418212890625).abs() < 1e-7, "{sum}");
}

#[test]
fn tokenizer_is_found_beside_ckpt0_or_explicitly() {
    let Some(root) = fixture("grok-mini-trained") else {
        return;
    };
    let want = root.join("tokenizer.model");
    assert_eq!(Checkpoint::find_tokenizer(&root, None).unwrap(), want);
    assert_eq!(
        Checkpoint::find_tokenizer(&root.join("ckpt-0"), None).unwrap(),
        want
    );
    let explicit = root.join("../grok-1-tokenizer/tokenizer.model");
    if explicit.is_file() {
        assert_eq!(
            Checkpoint::find_tokenizer(&root, Some(&explicit)).unwrap(),
            explicit
        );
    }
    let e = Checkpoint::find_tokenizer(&root, Some(&root.join("nope.model"))).unwrap_err();
    assert!(e.to_string().contains("nope.model"), "{e}");
    let e = Checkpoint::find_tokenizer(&root.join("reference"), None).unwrap_err();
    assert!(e.to_string().contains("tokenizer.model"), "{e}");
}
