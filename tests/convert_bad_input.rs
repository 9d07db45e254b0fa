//! Bad inputs: every case must fail with a message naming the file or tensor and what was
//! expected, and leave nothing under the final output name (nor a `.part`, since inputs are
//! checked before any output is created).

#[path = "convert_support.rs"]
mod support;

use grok1_quant::config::GrokConfig;
use grok1_quant::convert::convert;
use grok1_quant::naming::checkpoint_params;
use grok1_quant::tokenizer::SpmModel;
use quant::GgmlType;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Case {
    _dir: tempfile::TempDir,
    root: PathBuf,
    cfg: GrokConfig,
    out: PathBuf,
}

fn fresh() -> Case {
    let cfg = support::small_cfg(|c| c.num_layers = 2);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ck");
    support::synth(&root, &cfg, 5);
    let out = dir.path().join("out.gguf");
    Case {
        _dir: dir,
        root,
        cfg,
        out,
    }
}

impl Case {
    fn file(&self, index: usize) -> PathBuf {
        self.root.join(format!("ckpt-0/tensor{index:05}_000"))
    }

    /// Index of the first file holding `suffix` (e.g. "moe/linear_1/w").
    fn index_of(&self, suffix: &str) -> usize {
        checkpoint_params(&self.cfg)
            .iter()
            .find(|s| s.path.ends_with(suffix))
            .unwrap()
            .index
    }

    /// Run the conversion with `cfg`; it must fail. Returns the message.
    fn fail_with(&self, cfg: &GrokConfig, out: &Path) -> String {
        let opts = support::options(&self.root, cfg, &[(GgmlType::Q8_0, out.to_path_buf())]);
        let err = match convert(&opts) {
            Ok(_) => panic!("conversion succeeded on bad input"),
            Err(e) => e.to_string(),
        };
        eprintln!("message: {err}");
        assert!(!out.exists(), "{} exists after: {err}", out.display());
        let part = PathBuf::from(format!("{}.part", out.display()));
        assert!(!part.exists(), "{} exists after: {err}", part.display());
        err
    }

    fn fail(&self) -> String {
        self.fail_with(&self.cfg, &self.out)
    }

    /// The same through the binary: exit status non-zero, message on stderr, no output file.
    fn fail_binary(&self) -> String {
        let cfg_path = self.root.join("config.json");
        let o = Command::new(env!("CARGO_BIN_EXE_grok1-quant"))
            .arg("convert")
            .arg(&self.root)
            .arg("-o")
            .arg(&self.out)
            .args(["--type", "q8_0", "-q", "--config"])
            .arg(&cfg_path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "binary succeeded on bad input: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            !self.out.exists(),
            "{} exists after: {err}",
            self.out.display()
        );
        err
    }
}

fn has_all(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message lacks '{p}': {msg}");
    }
}

#[test]
fn truncated_pickle_at_several_points() {
    let c = fresh();
    let idx = c.index_of("moe/linear_1/w");
    let name = format!("tensor{idx:05}_000");
    let full = std::fs::read(c.file(idx)).unwrap();
    for cut in [
        0,
        1,
        2,
        30,
        120,
        full.len() / 2,
        full.len() - 40,
        full.len() - 1,
    ] {
        std::fs::write(c.file(idx), &full[..cut]).unwrap();
        let msg = c.fail();
        has_all(&msg, &[&name, "moe/linear_1/w"]);
        assert!(
            msg.contains("truncated") || msg.contains("empty") || msg.contains("expected"),
            "cut at {cut}: {msg}"
        );
    }
    // Through the binary too.
    std::fs::write(c.file(idx), &full[..full.len() / 2]).unwrap();
    let msg = c.fail_binary();
    has_all(&msg, &[&name, "truncated"]);
}

#[test]
fn foreign_pickle_dict() {
    let c = fresh();
    let idx = c.index_of("rms_norm_2/scale");
    // pickle.dumps({'a': 1}, protocol=2), assembled by hand.
    let dict = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.";
    std::fs::write(c.file(idx), dict).unwrap();
    let msg = c.fail();
    has_all(&msg, &[&format!("tensor{idx:05}_000"), "rms_norm_2/scale"]);
    // The same dict as protocol 4, which gets past the protocol check to the object check:
    // pickle.dumps({'a': 1}, protocol=4).
    let dict4 = b"\x80\x04\x95\x0a\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.";
    std::fs::write(c.file(idx), dict4).unwrap();
    let msg = c.fail();
    has_all(&msg, &[&format!("tensor{idx:05}_000"), "rms_norm_2/scale"]);
    assert!(!msg.contains("protocol"), "{msg}");
    let msg = c.fail_binary();
    has_all(&msg, &[&format!("tensor{idx:05}_000")]);
}

#[test]
fn wrong_dtype() {
    let c = fresh();
    // A float32 norm's file replaced by an int8 weight's file, and a float32 array whose dtype
    // descriptor says int32 (same size, so only the dtype is wrong).
    let norm = c.index_of("rms_norm/scale");
    let q = c.index_of("multi_head_attention/key/w");
    std::fs::copy(c.file(q), c.file(norm)).unwrap();
    let msg = c.fail();
    has_all(
        &msg,
        &[&format!("tensor{norm:05}_000"), "expected", "float32"],
    );

    let c = fresh();
    let idx = c.index_of("rms_norm_3/scale");
    let mut bytes = std::fs::read(c.file(idx)).unwrap();
    let at = bytes
        .windows(2)
        .position(|w| w == b"f4")
        .expect("dtype descriptor 'f4' in the pickle");
    bytes[at] = b'i';
    std::fs::write(c.file(idx), bytes).unwrap();
    let msg = c.fail();
    has_all(&msg, &[&format!("tensor{idx:05}_000"), "rms_norm_3/scale"]);
    assert!(msg.contains("float32") || msg.contains("i4"), "{msg}");
}

#[test]
fn config_disagrees_with_files() {
    let c = fresh();
    let mut other = c.cfg.clone();
    other.ffn_size = 192;
    let msg = c.fail_with(&other, &c.out);
    has_all(&msg, &["tensor", "expected", "192"]);
    let mut other = c.cfg.clone();
    other.vocab_size = c.cfg.vocab_size * 2;
    std::fs::write(
        c.root.join("tokenizer.model"),
        SpmModel::synthetic(other.vocab_size).to_bytes(),
    )
    .unwrap();
    let msg = c.fail_with(&other, &c.out);
    has_all(
        &msg,
        &["tensor00000_000", "in_out_embed", "expected", "float32"],
    );
    // Fewer layers in the config than files: extra files.
    let mut other = c.cfg.clone();
    other.num_layers = 1;
    let msg = c.fail_with(&other, &c.out);
    has_all(&msg, &["unexpected checkpoint file", "expects 14 files"]);
}

#[test]
fn missing_and_extra_files() {
    let c = fresh();
    std::fs::remove_file(c.file(5)).unwrap();
    let msg = c.fail();
    has_all(&msg, &["missing", "tensor00005_000", "26 files"]);
    let msg = c.fail_binary();
    has_all(&msg, &["missing", "tensor00005_000"]);

    let c = fresh();
    std::fs::write(c.root.join("ckpt-0/tensor00026_000"), b"x").unwrap();
    let msg = c.fail();
    has_all(&msg, &["unexpected", "tensor00026_000"]);
    let c = fresh();
    std::fs::write(c.root.join("ckpt-0/tensor0003_000"), b"x").unwrap();
    let msg = c.fail();
    has_all(&msg, &["unexpected", "tensor0003_000"]);
}

#[test]
fn bad_tokenizer() {
    let c = fresh();
    let tok = c.root.join("tokenizer.model");
    let good = std::fs::read(&tok).unwrap();
    std::fs::write(&tok, b"this is not a sentencepiece model\xff\xff\xff").unwrap();
    let msg = c.fail();
    has_all(&msg, &["tokenizer", "tokenizer.model"]);
    std::fs::write(&tok, &good[..good.len() / 3]).unwrap();
    let msg = c.fail();
    has_all(&msg, &["tokenizer.model"]);
    std::fs::write(&tok, b"").unwrap();
    let msg = c.fail();
    has_all(&msg, &["tokenizer.model"]);
    std::fs::remove_file(&tok).unwrap();
    let msg = c.fail();
    has_all(&msg, &["tokenizer.model", "--tokenizer"]);
    // Vocabulary size differs from the config.
    std::fs::write(&tok, SpmModel::synthetic(c.cfg.vocab_size + 100).to_bytes()).unwrap();
    let msg = c.fail();
    let want = format!("{} pieces", c.cfg.vocab_size + 100);
    has_all(&msg, &["tokenizer.model", &want, "vocab_size 512"]);
    let msg = c.fail_binary();
    has_all(&msg, &[&want, "vocab_size 512"]);
}

#[test]
fn output_not_writable() {
    let c = fresh();
    // Parent directory does not exist.
    let out = c.root.join("no/such/dir/out.gguf");
    let msg = c.fail_with(&c.cfg, &out);
    has_all(&msg, &["no/such/dir/out.gguf"]);
    // Parent is a regular file.
    let out = c.root.join("config.json/out.gguf");
    let msg = c.fail_with(&c.cfg, &out);
    has_all(&msg, &["config.json/out.gguf"]);
    // A read-only directory (root ignores permissions, so only checked as another user).
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        let ro = c.root.join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let msg = c.fail_with(&c.cfg, &ro.join("out.gguf"));
        has_all(&msg, &["ro/out.gguf"]);
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    } else {
        eprintln!("note: running as root, read-only directory case skipped");
    }
}
