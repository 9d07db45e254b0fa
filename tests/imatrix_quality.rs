//! Importance-matrix quantization closes the loop: statistics collected with our runner on
//! calibration text (never the evaluation text) lower Q4_K's and Q4_0's KL divergence on held-out
//! text, the input covariances (error feedback) lower it much further; convert --imatrix and
//! quantize --imatrix write the same tensors.

mod common;

use grok1_quant::compare::compare;
use grok1_quant::config::GrokConfig;
use grok1_quant::gguf::GgufFile;
use grok1_quant::imatrix::{Collector, Imatrix};
use grok1_quant::model::{Logits, Model, Session};
use grok1_quant::recipe::Recipe;
use grok1_quant::requantize::{quantize_gguf, QuantizeOptions};
use quant::GgmlType;

#[test]
fn imatrix_from_calib_lowers_kld_on_eval() {
    let Some(fx) = common::fixture("grok-mini-trained") else {
        return;
    };
    let cfg = GrokConfig::from_file(&fx.join("config.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f32p = common::convert_to(&fx.join("ckpt-0"), &cfg, dir.path(), &[GgmlType::F32]).remove(0);
    let base = Model::load(&f32p).unwrap();
    let tok = base.tokenizer().unwrap();
    // Collect on 64 chunks of calib.txt.
    let calib = tok.encode(&std::fs::read_to_string(fx.join("calib.txt")).unwrap());
    let collector = Collector::default();
    collector.0.lock().unwrap().collect_cov = true;
    let mut s = Session::new(base.hparams(), 256);
    s.set_sink(Box::new(collector.clone()));
    for c in 0..64 {
        s.clear();
        base.forward(&mut s, &calib[c * 256..(c + 1) * 256], Logits::None)
            .unwrap();
    }
    let im: Imatrix = collector.0.lock().unwrap().clone();
    // Every expert of every layer saw tokens, and the file round-trips.
    let cov = im.expert_coverage();
    assert_eq!(cov.len(), 3 * cfg.num_layers);
    let imp = dir.path().join("calib.imatrix");
    im.write(&imp).unwrap();
    let im = Imatrix::read(&imp).unwrap();
    let mut diag_only = im.clone();
    diag_only.entries.values_mut().for_each(|e| e.cov = None);
    let eval = tok.encode(&std::fs::read_to_string(fx.join("eval.txt")).unwrap());
    for ty in [GgmlType::Q4_K, GgmlType::Q4_0] {
        let plain = dir.path().join(format!("{ty}-plain.gguf"));
        let weighted = dir.path().join(format!("{ty}-im.gguf"));
        let fed = dir.path().join(format!("{ty}-cov.gguf"));
        for (out, imx) in [
            (&plain, None),
            (&weighted, Some(&diag_only)),
            (&fed, Some(&im)),
        ] {
            quantize_gguf(&QuantizeOptions {
                input: &f32p,
                output: out,
                recipe: Recipe::Pure(ty),
                imatrix: imx,
                force: true,
            })
            .unwrap();
        }
        let cands = [
            Model::load(&plain).unwrap(),
            Model::load(&weighted).unwrap(),
            Model::load(&fed).unwrap(),
        ];
        let r = compare(&base, &cands, &eval, 256, Some(24), &mut |_, _| {}).unwrap();
        let (p, w, c) = (&r.rows[1], &r.rows[2], &r.rows[3]);
        eprintln!(
            "{ty}: KLD plain {:.4e} → imatrix {:.4e} → with covariances {:.4e}; \
             ppl {:.4} → {:.4} → {:.4}",
            p.mean_kld, w.mean_kld, c.mean_kld, p.ppl, w.ppl, c.ppl
        );
        // The diagonal alone helps Q4_0 (whose plain rule is ggml's max rule); our plain Q4_K
        // search already minimises squared error, and on this model the diagonal weighting
        // alone is a tie with it (docs/imatrix.md), so only the covariance is asserted there.
        if ty == GgmlType::Q4_0 {
            assert!(w.mean_kld < p.mean_kld, "{ty}: imatrix did not lower KLD");
        }
        assert!(
            c.mean_kld < 0.85 * w.mean_kld.min(p.mean_kld),
            "{ty}: the covariances did not lower KLD by 15 %"
        );
        // The converter, given the same imatrix, writes the same tensors.
        let conv = common::convert_with(
            &fx.join("ckpt-0"),
            &cfg,
            dir.path(),
            &[ty],
            Some(std::sync::Arc::new(im.clone())),
        )
        .remove(0);
        let (a, b) = (
            GgufFile::open(&conv).unwrap(),
            GgufFile::open(&fed).unwrap(),
        );
        for t in b.tensors() {
            let ta = a.tensor(&t.name).unwrap();
            assert!(
                ta.data == b.tensor(&t.name).unwrap().data,
                "{ty}: {} differs between convert and quantize",
                t.name
            );
        }
    }
}
