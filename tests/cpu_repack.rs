//! The CPU's load-time repacking into the interleaved row layout changes nothing but speed:
//! prefill and decode logits bit-identical to the model read as stored, for every type with
//! the layout, with matrices whose row counts are not whole eight-row groups (vocab 516), and
//! with an expert cache (experts then stay as stored).

mod common;

use grok1_quant::cache::{CacheOptions, ReadMode};
use grok1_quant::model::{ExpertRepack, Model};
use quant::GgmlType;

#[test]
fn repacked_logits_are_bit_identical() {
    let prompts = common::test_prompts();
    for ty in [
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        let (_dir, path) = common::synthetic_model(&common::small_grok(516), ty, 5);
        let plain = Model::load(&path).unwrap();
        let want = common::prefill_and_decode(&plain, &prompts, 6);

        let packed = Model::load(&path).unwrap();
        let r = packed.prepare_cpu(true).unwrap().expect("a report");
        // Every matrix of a type with the layout but the router: 4 attention matrices × 3
        // layers, 3 expert tensors × 3 layers, and token_embd (the tied output, F32 where the
        // converter kept it so).
        let matrices = |experts: bool| layout_matrices(&packed, experts);
        assert!(
            quant::layout::packed_kernels(),
            "run without QUANT_FORCE_SCALAR"
        );
        assert!(matrices(true) >= 21, "{ty}");
        assert_eq!(r.tensors, matrices(true), "{ty}: {r:?}");
        assert_eq!(r.experts, ExpertRepack::Done, "{ty}");
        assert_eq!(packed.repacked_bytes(), r.bytes + r.copied_bytes);
        assert!(packed.prepare_cpu(true).unwrap().is_none(), "repacks once");
        let got = common::prefill_and_decode(&packed, &prompts, 6);
        assert_eq!(got, want, "{ty}: repacked logits differ");

        let mut cached = Model::load(&path).unwrap();
        cached
            .enable_expert_cache(&CacheOptions::default())
            .unwrap();
        let r = cached.prepare_cpu(true).unwrap().expect("a report");
        assert_eq!(r.experts, ExpertRepack::Cached, "{ty}");
        assert_eq!(r.tensors, matrices(false), "{ty}: dense only");
        let got = common::prefill_and_decode(&cached, &prompts, 6);
        assert_eq!(got, want, "{ty}: repacked dense + cached experts differ");

        // `pread` with a RAM budget: the cache owns its copies and packs each expert as it
        // reads it (half the experts fit, so they are evicted and read again).
        let mut pread = Model::load(&path).unwrap();
        let half = pread.weight_split().1 / 2;
        pread
            .enable_expert_cache(&CacheOptions {
                ram_budget: Some(half),
                read_mode: ReadMode::Pread,
                ..CacheOptions::default()
            })
            .unwrap();
        let r = pread.prepare_cpu(true).unwrap().expect("a report");
        assert_eq!(r.experts, ExpertRepack::CachedPacked, "{ty}: {r}");
        assert!(r.to_string().contains("packed as it reads them"), "{r}");
        let got = common::prefill_and_decode(&pread, &prompts, 6);
        assert_eq!(got, want, "{ty}: experts packed by the cache differ");
        let stats = pread.expert_cache().unwrap().stats();
        assert!(
            stats.evictions > 0,
            "{ty}: the budget evicted nothing: {stats:?}"
        );

        let off = Model::load(&path).unwrap();
        assert!(off.prepare_cpu(false).unwrap().is_none());
        assert_eq!(off.repacked_bytes(), 0);
    }
}

/// The matrices the runner repacks: every 2-D tensor whose type and rows the layout pays for
/// but the router
/// (expert tensors only with `experts`).
fn layout_matrices(m: &Model, experts: bool) -> usize {
    m.gguf()
        .tensors()
        .iter()
        .filter(|t| t.shape.len() >= 2 && quant::layout::interleave_pays(t.ty, t.shape[0] as usize))
        .filter(|t| !t.name.contains("ffn_gate_inp"))
        .filter(|t| experts || !t.name.contains("_exps"))
        .count()
}

/// The dense 2-D matrices but the router (what the runner copies as stored where nothing is
/// interleaved).
fn dense_matrices(m: &Model) -> usize {
    m.gguf()
        .tensors()
        .iter()
        .filter(|t| t.shape.len() >= 2 && !t.name.contains("ffn_gate_inp"))
        .filter(|t| !t.name.contains("_exps"))
        .count()
}

/// Where the CPU has no kernels over the packed layout (aarch64, no AVX2; here
/// `QUANT_FORCE_SCALAR`, in a child process), nothing is interleaved: the dense matrices are
/// copied as stored, the experts left in the mapping, and the logits are the file's.
#[test]
fn without_packed_kernels_nothing_is_interleaved() {
    if std::env::var_os("QUANT_FORCE_SCALAR").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "without_packed_kernels_nothing_is_interleaved",
                "--test-threads=1",
            ])
            .env("QUANT_FORCE_SCALAR", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "child with QUANT_FORCE_SCALAR failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert!(!quant::layout::packed_kernels());
    let (_dir, path) = common::synthetic_model(&common::small_grok(516), GgmlType::Q4_0, 5);
    let prompts = common::test_prompts();
    let plain = Model::load(&path).unwrap();
    let want = common::prefill_and_decode(&plain, &prompts, 3);
    let m = Model::load(&path).unwrap();
    let r = m.prepare_cpu(true).unwrap().expect("a report");
    assert_eq!(r.tensors, 0, "{r:?}");
    assert_eq!(r.experts, ExpertRepack::NotEligible, "{r:?}");
    assert_eq!(r.copied, dense_matrices(&m), "dense matrices copied: {r:?}");
    assert_eq!(common::prefill_and_decode(&m, &prompts, 3), want);
}

#[test]
fn dense_matrices_without_the_layout_are_copied_as_stored() {
    // Every type the converter writes has the layout, but F16 rows of 120 values (240 bytes)
    // are not whole 32-byte columns: q, k, v and the embedding (rows of emb_size) stay
    // row-major, copied as stored (for the huge pages) and read as rows.
    let mut c = common::small_grok(512);
    c.emb_size = 120;
    c.validate().unwrap();
    let (_dir, path) = common::synthetic_model(&c, GgmlType::F16, 5);
    let plain = Model::load(&path).unwrap();
    let dense_rows = plain
        .gguf()
        .tensors()
        .iter()
        .filter(|t| t.ty == GgmlType::F16 && t.shape.len() >= 2 && !t.name.contains("_exps"))
        .filter(|t| !quant::layout::can_interleave_rows(t.ty, t.shape[0] as usize))
        .count();
    assert!(
        dense_rows >= 4,
        "the file has dense F16 matrices of rows of 120"
    );
    let prompts = common::test_prompts();
    let want = common::prefill_and_decode(&plain, &prompts, 4);

    let m = Model::load(&path).unwrap();
    let r = m.prepare_cpu(true).unwrap().expect("a report");
    assert_eq!(r.copied, dense_rows, "{r:?}");
    assert!(
        r.copied_bytes > 0 && r.to_string().contains("as stored"),
        "{r}"
    );
    assert_eq!(m.repacked_bytes(), r.bytes + r.copied_bytes);
    let got = common::prefill_and_decode(&m, &prompts, 4);
    assert_eq!(got, want, "copied matrices give other logits");
}
