//! Perplexity on the trained fixture against its golden value, Q8_0 == F32, and compare's
//! figures equal to separate perplexity runs.

mod common;

use grok1_quant::compare::compare;
use grok1_quant::config::GrokConfig;
use grok1_quant::model::Model;
use grok1_quant::perplexity::perplexity;
use quant::GgmlType;

#[test]
fn mini_trained_ppl_matches_reference_and_q8_0_equals_f32() {
    let Some(fx) = common::fixture("grok-mini-trained") else {
        return;
    };
    let cfg = GrokConfig::from_file(&fx.join("config.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let paths = common::convert_to(
        &fx.join("ckpt-0"),
        &cfg,
        dir.path(),
        &[GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_K],
    );
    let f32m = Model::load(&paths[0]).unwrap();
    let q8m = Model::load(&paths[1]).unwrap();
    let q4m = Model::load(&paths[2]).unwrap();
    let text = std::fs::read_to_string(fx.join("eval.txt")).unwrap();
    let tokens = f32m.tokenizer().unwrap().encode(&text);
    assert_eq!(tokens.len(), 43763);
    let golden: serde_json::Value = common::read_json(&fx.join("reference/ppl.json"));
    let want = golden["ppl"].as_f64().unwrap();
    let r = perplexity(&f32m, &tokens, 256, &mut |_, _, _| {}).unwrap();
    eprintln!("f32 ppl {} (reference {want})", r.ppl);
    assert_eq!(r.chunks, 170);
    assert_eq!(r.tokens_scored, 21760);
    assert!((r.ppl / want - 1.0).abs() < 1e-3, "ppl {} vs {want}", r.ppl);
    let per_chunk = golden["per_chunk_mean_nll"].as_array().unwrap();
    for (c, (ours, theirs)) in r.per_chunk_mean_nll.iter().zip(per_chunk).enumerate() {
        let theirs = theirs.as_f64().unwrap();
        assert!(
            (ours - theirs).abs() < 2e-3,
            "chunk {c}: {ours} vs {theirs}"
        );
    }
    let q8 = perplexity(&q8m, &tokens, 256, &mut |_, _, _| {}).unwrap();
    assert_eq!(
        q8.ppl, r.ppl,
        "Q8_0 holds the same weights and must give the same ppl"
    );

    // compare() over the first chunks equals separate perplexity runs on the same chunks.
    let few = &tokens[..256 * 6];
    let c = compare(&f32m, &[q8m, q4m], few, 256, None, &mut |_, _| {}).unwrap();
    let p_f32 = perplexity(&f32m, few, 256, &mut |_, _, _| {}).unwrap();
    let p_q4 = perplexity(
        &Model::load(&paths[2]).unwrap(),
        few,
        256,
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(c.rows[0].ppl, p_f32.ppl);
    assert_eq!(c.rows[1].ppl, p_f32.ppl);
    assert_eq!(c.rows[1].mean_kld, 0.0);
    assert_eq!(c.rows[1].top1_agreement, 1.0);
    assert_eq!(c.rows[2].ppl, p_q4.ppl);
    assert!(c.rows[2].mean_kld > 0.0 && c.rows[2].mean_kld < 0.1);

    // Other chunk sizes work and stay in the same range.
    let r128 = perplexity(&f32m, &tokens[..128 * 40], 128, &mut |_, _, _| {}).unwrap();
    assert_eq!(r128.tokens_scored, 40 * 64);
    assert!(r128.ppl > 20.0 && r128.ppl < 80.0, "{}", r128.ppl);
}
