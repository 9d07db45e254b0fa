//! Direct (`O_DIRECT`) and buffered writes give byte-identical files: a checkpoint big enough
//! that bands span many pages, converted to several types in one pass both ways.

#[path = "convert_support.rs"]
mod support;

use grok1_quant::convert::convert;
use quant::GgmlType;
use std::os::unix::fs::OpenOptionsExt;

#[test]
fn direct_and_buffered_writes_give_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    // Rows of 1024 and 2048 values: Q8_0 bands of many pages at unaligned file offsets.
    let cfg = support::small_cfg(|c| {
        c.num_layers = 2;
        c.emb_size = 1024;
        c.key_size = 64;
        c.num_q_heads = 8;
        c.num_kv_heads = 2;
        c.ffn_size = 2048;
        c.num_experts = 4;
        c.num_selected_experts = 2;
        c.vocab_size = 2048;
    });
    let ckpt = dir.path().join("ckpt");
    support::synth(&ckpt, &cfg, 7);
    // Whether this file system takes O_DIRECT at all (tmpfs and ext4 do; some FUSE mounts not).
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"").unwrap();
    let direct_ok = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();

    let types = [GgmlType::Q8_0, GgmlType::F32, GgmlType::Q4_0];
    let mut files = Vec::new();
    for direct_io in [true, false] {
        let outs: Vec<_> = types
            .iter()
            .map(|&ty| (ty, dir.path().join(format!("{ty}-{direct_io}.gguf"))))
            .collect();
        let mut opts = support::options(&ckpt, &cfg, &outs);
        opts.direct_io = direct_io;
        let s = convert(&opts).unwrap();
        for o in &s.outputs {
            if !direct_io {
                assert_eq!(o.direct_bytes, 0, "{}", o.path.display());
            } else if direct_ok {
                // Most of every file is whole pages of bands.
                assert!(
                    o.direct_bytes > o.bytes / 2,
                    "{}: {} of {} bytes direct",
                    o.path.display(),
                    o.direct_bytes,
                    o.bytes
                );
            } else {
                eprintln!("note: the temp dir refuses O_DIRECT; both runs were buffered");
            }
        }
        files.push(
            outs.iter()
                .map(|(_, p)| std::fs::read(p).unwrap())
                .collect::<Vec<_>>(),
        );
    }
    for (k, ty) in types.iter().enumerate() {
        assert!(
            files[0][k] == files[1][k],
            "{ty}: direct and buffered files differ"
        );
    }
}
