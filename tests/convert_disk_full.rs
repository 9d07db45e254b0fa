//! Running out of disk space, on a small tmpfs (needs permission to mount; skipped with a
//! note where mounting is not allowed): the up-front check refuses an output that cannot fit,
//! and space running out during the writing is a clear error naming the file, leaves nothing
//! under the final names, and `--resume` finishes identically once space is freed.

#[path = "convert_support.rs"]
mod support;

use grok1_quant::convert::{convert, ConvertError};
use quant::GgmlType;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Mount(PathBuf);

impl Mount {
    fn new(dir: &Path, bytes: u64) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes}"))
            .arg("tmpfs")
            .arg(dir)
            .output();
        match o {
            Ok(o) if o.status.success() => Some(Mount(dir.to_path_buf())),
            Ok(o) => {
                eprintln!(
                    "note: cannot mount a tmpfs ({}), skipping the disk-full test",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("note: cannot run mount ({e}), skipping the disk-full test");
                None
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn free_bytes(p: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and a writable statvfs.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Fill `fs` so that exactly about `free` bytes stay free; returns the filler's path.
fn leave_free(fs: &Path, free: u64) -> PathBuf {
    let filler = fs.join("filler");
    let now = free_bytes(fs);
    assert!(now > free, "tmpfs too small: {now} free, want {free}");
    std::fs::write(&filler, vec![1u8; (now - free) as usize]).unwrap();
    filler
}

#[test]
fn disk_full_up_front_and_while_writing_then_resume() {
    let cfg = support::small_cfg(|c| c.num_layers = 2);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ck");
    support::synth(&root, &cfg, 9);
    // References on the normal disk.
    let refs: Vec<(GgmlType, PathBuf)> = [GgmlType::F32, GgmlType::Q8_0]
        .iter()
        .map(|&t| (t, dir.path().join(format!("ref-{}.gguf", t.name()))))
        .collect();
    convert(&support::options(&root, &cfg, &refs)).unwrap();
    let sizes: Vec<u64> = refs
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .collect();
    let fs = dir.path().join("fs");
    let Some(_mount) = Mount::new(&fs, sizes.iter().sum::<u64>() * 2) else {
        return;
    };
    let outs: Vec<(GgmlType, PathBuf)> = refs
        .iter()
        .map(|(t, _)| (*t, fs.join(format!("m-{}.gguf", t.name()))))
        .collect();
    let no_outputs = |outs: &[(GgmlType, PathBuf)]| {
        for (_, p) in outs {
            assert!(!p.exists(), "{} exists", p.display());
        }
    };

    // 1. Up front: less free space than the F32 file needs.
    let filler = leave_free(&fs, sizes[0] / 2);
    let err = convert(&support::options(&root, &cfg, &outs[..1])).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConvertError::NoSpace { .. }), "{msg}");
    assert!(
        msg.contains("not enough disk space") && msg.contains("m-f32.gguf"),
        "{msg}"
    );
    no_outputs(&outs);
    assert!(!PathBuf::from(format!("{}.part", outs[0].1.display())).exists());
    std::fs::remove_file(&filler).unwrap();

    // 2. While writing: each output fits the free space, both together do not.
    let free = sizes[0].max(sizes[1]) + 64 * 1024;
    assert!(free < sizes[0] + sizes[1]);
    let filler = leave_free(&fs, free);
    let err = convert(&support::options(&root, &cfg, &outs)).unwrap_err();
    let msg = err.to_string();
    eprintln!("message: {msg}");
    assert!(
        msg.contains("disk full while writing") || msg.contains("No space left"),
        "{msg}"
    );
    assert!(
        msg.contains(&fs.display().to_string()),
        "no file named: {msg}"
    );
    assert!(msg.contains("--resume") || msg.contains("journal"), "{msg}");
    no_outputs(&outs);

    // 3. Free the space; --resume finishes both, identical to the references.
    std::fs::remove_file(&filler).unwrap();
    let mut opts = support::options(&root, &cfg, &outs);
    opts.resume = true;
    convert(&opts).unwrap();
    for ((_, r), (_, o)) in refs.iter().zip(&outs) {
        assert!(
            std::fs::read(r).unwrap() == std::fs::read(o).unwrap(),
            "{} differs from the uninterrupted conversion",
            o.display()
        );
        assert!(!PathBuf::from(format!("{}.part", o.display())).exists());
        assert!(!PathBuf::from(format!("{}.journal", o.display())).exists());
    }
}
