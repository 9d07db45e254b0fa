//! Keeps the `unsafe` inventory honest (issue #9, docs/hardening.md): every `unsafe` block and
//! `unsafe impl` carries a `SAFETY:` comment, every `unsafe fn` documents its contract in a
//! `# Safety` section, and the parsers stay free of `unsafe`.
//!
//! This is a source scan, not a proof: it checks that the justification is written where a
//! reviewer will read it. A missing comment fails with the file and line.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for d in ["src", "quant/src", "quant/benches", "quant/examples"] {
        rust_files(&root.join(d), &mut files);
    }
    assert!(files.len() > 20, "found only {} source files", files.len());
    files
}

/// Code part of a line: everything before a `//` comment (string literals in this code base do
/// not contain `unsafe` next to `//`, so this simple cut is enough).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

fn is_unsafe_block(c: &str) -> bool {
    let mut rest = c;
    while let Some(i) = rest.find("unsafe") {
        let before_ok = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        let after = rest[i + 6..].trim_start();
        if before_ok && after.starts_with('{') {
            return true;
        }
        rest = &rest[i + 6..];
    }
    false
}

/// A `SAFETY` note on the line itself or in the comment lines just above it (a statement may
/// span a few lines between the comment and the `unsafe` keyword).
fn has_safety_comment(lines: &[&str], i: usize) -> bool {
    let lo = i.saturating_sub(8);
    lines[lo..=i].iter().any(|l| l.contains("SAFETY"))
}

/// The doc comment attached to the item at line `i` (skipping attributes, also those rustfmt
/// splits over several lines: `#[target_feature(` … `)]`) contains `# Safety`.
fn has_safety_doc(lines: &[&str], i: usize) -> bool {
    let mut j = i;
    // Inside a multi-line attribute, read upwards from its closing line.
    let mut in_attr = false;
    while j > 0 {
        j -= 1;
        let t = lines[j].trim_start();
        if t.starts_with("#[") || t.starts_with("#![") {
            in_attr = false;
            continue;
        }
        if in_attr {
            continue;
        }
        if t == ")]" || t == "]" {
            in_attr = true;
            continue;
        }
        if t.starts_with("///") {
            if t.contains("# Safety") {
                return true;
            }
            continue;
        }
        break;
    }
    false
}

#[test]
fn every_unsafe_site_is_justified() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    let mut counts = (0usize, 0usize, 0usize);
    for f in sources() {
        let text = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let name = f.strip_prefix(root).unwrap().display().to_string();
        for (i, line) in lines.iter().enumerate() {
            let c = code(line);
            if c.contains("unsafe fn ") {
                counts.0 += 1;
                if !has_safety_doc(&lines, i) {
                    problems.push(format!(
                        "{name}:{}: `unsafe fn` without a `# Safety` doc section",
                        i + 1
                    ));
                }
            }
            if is_unsafe_block(c) {
                counts.1 += 1;
                if !has_safety_comment(&lines, i) {
                    problems.push(format!(
                        "{name}:{}: `unsafe` block without a SAFETY comment",
                        i + 1
                    ));
                }
            }
            if c.contains("unsafe impl") {
                counts.2 += 1;
                if !has_safety_comment(&lines, i) {
                    problems.push(format!(
                        "{name}:{}: `unsafe impl` without a SAFETY comment",
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The scan must actually see the SIMD kernels and the mappings.
    assert!(
        counts.0 >= 20 && counts.1 >= 10,
        "scan saw too little: {counts:?}"
    );
}

#[test]
fn parsers_forbid_unsafe() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in [
        "src/checkpoint/pickle/mod.rs",
        "src/tokenizer/proto.rs",
        "src/tokenizer/spm_model.rs",
        "src/tokenizer/bpe.rs",
    ] {
        let p = root.join(f);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(
            text.contains("#![forbid(unsafe_code)]"),
            "{f} must carry #![forbid(unsafe_code)]"
        );
    }
    // The GGUF reader allows exactly one audited block (the file mapping).
    let gguf = std::fs::read_to_string(root.join("src/gguf/reader.rs")).unwrap();
    assert!(
        gguf.contains("#![deny(unsafe_code)]"),
        "gguf/reader.rs must deny unsafe_code"
    );
    let blocks = gguf.lines().filter(|l| is_unsafe_block(code(l))).count();
    assert_eq!(blocks, 1, "gguf/reader.rs: expected only the mmap block");
}
