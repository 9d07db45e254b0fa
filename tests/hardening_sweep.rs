//! Truncation and byte-flip sweeps over every input format the tool reads: checkpoint pickles,
//! `tokenizer.model` protobufs and GGUFs (through the reader and `Model::load`). Every damaged
//! input must give `Err` with a message naming the file (where a path is involved) or `Ok` when
//! the damage only hit payload bytes; never a panic, a hang or an allocation out of proportion
//! to the input. Each case runs under `catch_unwind` so a failure names the case; a counting
//! global allocator records the largest single allocation of each case.

mod common;

use grok1_quant::checkpoint::pickle::{self, PickleObject};
use grok1_quant::checkpoint::{preset, write_checkpoint, Checkpoint};
use grok1_quant::config::GrokConfig;
use grok1_quant::gguf::{encode_gguf, GgmlType, GgufArray, GgufFile, Metadata, TensorSpec};
use grok1_quant::model::{tokenizer_from_gguf, Model};
use grok1_quant::tokenizer::{SpmModel, Tokenizer};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Largest single allocation per thread.

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|m| {
        if size > m.get() {
            m.set(size)
        }
    });
}

// SAFETY: forwards every call unchanged to the system allocator; the only addition is a
// thread-local maximum (const-initialised, so recording it never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------------------------------------
// Case runner.

/// Fixed-seed splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// How a case ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Err(String),
}

#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    err: usize,
}

/// Run `f` on one damaged input; panics (naming the case) on a panic inside, on a case slower
/// than `budget`, or on a single allocation larger than `alloc_limit`.
fn case(
    name: &str,
    budget: Duration,
    alloc_limit: usize,
    tally: &mut Tally,
    f: impl FnOnce() -> Outcome,
) -> Outcome {
    LARGEST.with(|m| m.set(0));
    let t0 = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(f));
    let dt = t0.elapsed();
    let largest = LARGEST.with(Cell::get);
    let outcome = match r {
        Ok(o) => o,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{name}: panicked: {msg}");
        }
    };
    assert!(dt <= budget, "{name}: took {dt:?} (budget {budget:?})");
    assert!(
        largest <= alloc_limit,
        "{name}: allocated {largest} bytes at once (limit {alloc_limit})"
    );
    match &outcome {
        Outcome::Ok => tally.ok += 1,
        Outcome::Err(_) => tally.err += 1,
    }
    outcome
}

/// `n` evenly spaced truncation lengths in `0..len` (0 included, `len` excluded).
fn cuts(len: usize, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).map(|i| i * len / n).collect();
    v.dedup();
    v
}

/// Flip 1 to 4 random bits of 1 to 3 random bytes, in `range` of `buf`; returns the undo list.
fn flip(rng: &mut Rng, buf: &mut [u8], range: std::ops::Range<usize>) -> Vec<(usize, u8)> {
    let n = 1 + rng.below(3);
    let mut undo = Vec::new();
    for _ in 0..n {
        let at = range.start + rng.below(range.len());
        undo.push((at, buf[at]));
        let mut mask = 0u8;
        for _ in 0..1 + rng.below(4) {
            mask |= 1 << rng.below(8);
        }
        buf[at] ^= mask;
    }
    undo
}

fn undo(buf: &mut [u8], undo: Vec<(usize, u8)>) {
    for (at, b) in undo.into_iter().rev() {
        buf[at] = b;
    }
}

fn limit_for(input: usize) -> usize {
    16 * input + (1 << 20)
}

const CASE_BUDGET: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Pickles.

/// A tiny config: one layer, small dims, every parameter kind present.
fn tiny_config() -> GrokConfig {
    let mut c = preset("tiny").expect("tiny preset");
    c.vocab_size = 512;
    c.emb_size = 64;
    c.key_size = 16;
    c.num_q_heads = 4;
    c.num_kv_heads = 2;
    c.num_layers = 1;
    c.ffn_size = 64;
    c.sequence_len = 64;
    c
}

/// A synthetic checkpoint of [`tiny_config`] with its tokenizer, in `dir`.
fn synth_checkpoint(dir: &Path) -> GrokConfig {
    let cfg = tiny_config();
    write_checkpoint(dir, &cfg, 7).expect("write_checkpoint");
    std::fs::write(
        dir.join("tokenizer.model"),
        SpmModel::synthetic(cfg.vocab_size).to_bytes(),
    )
    .expect("write tokenizer.model");
    cfg
}

fn pickle_sweep(label: &str, original: &[u8]) -> Tally {
    let want = pickle::parse(original).unwrap_or_else(|e| panic!("{label}: {e}"));
    let mut tally = Tally::default();
    let limit = limit_for(original.len());
    let check = |data: &[u8]| -> Outcome {
        match pickle::parse(data) {
            // Damage that parses must have hit payload (or padding such as a frame length):
            // the structure is the original's.
            Ok(obj) => {
                assert_eq!(obj, want, "damaged pickle parsed to another structure");
                Outcome::Ok
            }
            Err(e) => {
                assert!(e.offset <= data.len());
                Outcome::Err(e.to_string())
            }
        }
    };
    for cut in cuts(original.len(), 100) {
        let o = case(
            &format!("{label} cut {cut}"),
            CASE_BUDGET,
            limit,
            &mut tally,
            || check(&original[..cut]),
        );
        assert!(matches!(o, Outcome::Err(_)), "{label} cut {cut}: parsed");
    }
    let mut buf = original.to_vec();
    let mut rng = Rng(0x5eed_0001);
    for i in 0..200 {
        let u = flip(&mut rng, &mut buf, 0..original.len());
        case(
            &format!("{label} flip #{i} {u:?}"),
            CASE_BUDGET,
            limit,
            &mut tally,
            || check(&buf),
        );
        undo(&mut buf, u);
    }
    tally
}

/// The smallest int8 (QuantizedWeight8bit) file of a checkpoint directory.
fn smallest_quantized(dir: &Path) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        if let Ok(PickleObject::Quantized { .. }) = pickle::parse(&bytes) {
            let len = bytes.len() as u64;
            if best.as_ref().is_none_or(|(l, _)| len < *l) {
                best = Some((len, p));
            }
        }
    }
    best.expect("no quantized parameter").1
}

#[test]
fn sweep_fixture_pickle() {
    let Some(dir) = common::fixture("grok-tiny/ckpt-0") else {
        return;
    };
    let p = smallest_quantized(&dir);
    let t = pickle_sweep(&p.display().to_string(), &std::fs::read(&p).unwrap());
    eprintln!("fixture pickle {}: {t:?}", p.display());
    assert!(t.err >= 100);
}

#[test]
fn sweep_synth_pickles_and_checkpoint_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = synth_checkpoint(tmp.path());
    let ckpt = Checkpoint::open(tmp.path(), &cfg).unwrap();
    // A float32 file and an int8 one.
    let specs = ckpt.specs().to_vec();
    let f32_spec = specs
        .iter()
        .find(|s| s.scales_shape.is_none())
        .unwrap()
        .clone();
    let q_spec = specs
        .iter()
        .filter(|s| s.scales_shape.is_some())
        .min_by_key(|s| s.shape.iter().product::<usize>())
        .unwrap()
        .clone();
    for spec in [&f32_spec, &q_spec] {
        let path = ckpt.file_path(spec.index);
        let original = std::fs::read(&path).unwrap();
        let t = pickle_sweep(&path.display().to_string(), &original);
        eprintln!("synth pickle {}: {t:?}", spec.path);
        // Through the checkpoint reader: every failure names the file and the parameter.
        let name = path.display().to_string();
        let mut tally = Tally::default();
        let limit = limit_for(original.len());
        let mut rng = Rng(0x5eed_0002);
        for i in 0..40 {
            let mut data = original.clone();
            if i % 2 == 0 {
                data.truncate(rng.below(original.len()));
            } else {
                flip(&mut rng, &mut data, 0..original.len());
            }
            std::fs::write(&path, &data).unwrap();
            case(
                &format!("{name} case {i}"),
                CASE_BUDGET,
                limit,
                &mut tally,
                || match ckpt.param(spec) {
                    Ok(p) => {
                        assert_eq!(p.data.shape, spec.shape);
                        Outcome::Ok
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        assert!(msg.contains(&name), "{msg}");
                        assert!(msg.contains(&spec.path), "{msg}");
                        Outcome::Err(msg)
                    }
                },
            );
        }
        std::fs::write(&path, &original).unwrap();
        assert!(tally.err >= 20, "{tally:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// tokenizer.model.

/// `build_every`: also build a tokenizer and encode/decode on every n-th parsed case.
fn spm_sweep(label: &str, original: &[u8], build_every: usize) -> Tally {
    SpmModel::parse(original).unwrap_or_else(|e| panic!("{label}: {e}"));
    let mut tally = Tally::default();
    let limit = limit_for(original.len());
    let mut n = 0usize;
    let mut check = |data: &[u8]| -> Outcome {
        match SpmModel::parse(data) {
            Ok(m) => {
                n += 1;
                if n % build_every == 0 {
                    if let Ok(t) = Tokenizer::from_spm(&m) {
                        let ids = t.encode("Hello  world\n\t\u{00e9}\u{1F600} 12");
                        assert!(ids.iter().all(|&i| (i as usize) < t.vocab_size()));
                        let _ = t.decode(&ids);
                        let _ = t.decode(&[0, 1, 2, 3, 200, u32::MAX]);
                    }
                }
                Outcome::Ok
            }
            Err(e) => Outcome::Err(e.to_string()),
        }
    };
    // A protobuf has no overall length, so a cut between two fields is a valid, shorter model.
    for cut in cuts(original.len(), 100) {
        case(
            &format!("{label} cut {cut}"),
            CASE_BUDGET,
            limit,
            &mut tally,
            || check(&original[..cut]),
        );
    }
    let mut buf = original.to_vec();
    let mut rng = Rng(0x5eed_0003);
    for i in 0..200 {
        let u = flip(&mut rng, &mut buf, 0..original.len());
        case(
            &format!("{label} flip #{i} {u:?}"),
            CASE_BUDGET,
            limit,
            &mut tally,
            || check(&buf),
        );
        undo(&mut buf, u);
    }
    tally
}

/// `from_file` names the file in parse errors.
fn spm_file_errors(original: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tokenizer.model");
    let name = path.display().to_string();
    // Cut in the middle of the first field (the first piece), and a bad wire type.
    let mut bad_wire = original.to_vec();
    bad_wire[0] = (1 << 3) | 7;
    for data in [&original[..original.len().min(5)], &bad_wire[..]] {
        std::fs::write(&path, data).unwrap();
        let e = SpmModel::from_file(&path).unwrap_err().to_string();
        assert!(e.contains(&name), "{e}");
        let e = Tokenizer::from_spm_file(&path).unwrap_err().to_string();
        assert!(e.contains(&name), "{e}");
    }
}

#[test]
fn sweep_tokenizer_models() {
    let synth = SpmModel::synthetic(512).to_bytes();
    let t = spm_sweep("synthetic tokenizer.model", &synth, 1);
    eprintln!("synthetic tokenizer.model: {t:?}");
    spm_file_errors(&synth);
    if let Some(p) = common::fixture("grok-tiny/tokenizer.model") {
        let t = spm_sweep(&p.display().to_string(), &std::fs::read(&p).unwrap(), 1);
        eprintln!("grok-tiny tokenizer.model: {t:?}");
    }
    if let Some(p) = common::fixture("grok-1-tokenizer/tokenizer.model") {
        // 131072 pieces: build the tokenizer on every 25th parsed case only.
        let t = spm_sweep(&p.display().to_string(), &std::fs::read(&p).unwrap(), 25);
        eprintln!("Grok-1 tokenizer.model: {t:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF and Model::load.

fn gguf_check(data: &[u8], name: &str) -> Outcome {
    let file = match GgufFile::parse_bytes(data, name) {
        Ok(f) => f,
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(name), "{msg}");
            return Outcome::Err(msg);
        }
    };
    for i in 0..file.tensors().len() {
        let t = file.tensor_at(i);
        assert_eq!(t.data.len() as u64, t.info.size);
    }
    if let Ok(tok) = tokenizer_from_gguf(&file) {
        let ids = tok.encode("Hello world");
        assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
    }
    match Model::from_gguf(file) {
        Ok(_) => Outcome::Ok,
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(name), "{msg}");
            Outcome::Err(msg)
        }
    }
}

#[test]
fn sweep_converted_gguf() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let cfg = synth_checkpoint(&ck);
    let out = common::convert_to(&ck, &cfg, tmp.path(), &[GgmlType::Q8_0]);
    let path = &out[0];
    let name = path.display().to_string();
    let original = std::fs::read(path).unwrap();
    let header_end = GgufFile::open(path).unwrap().data_offset() as usize;
    Model::load(path).expect("undamaged model loads");
    let limit = limit_for(original.len());
    let mut tally = Tally::default();
    // Truncations: 100 over the whole file, 100 inside the header; all must fail.
    let mut all_cuts = cuts(original.len(), 100);
    all_cuts.extend(cuts(header_end, 100));
    for cut in all_cuts {
        let o = case(
            &format!("{name} cut {cut}"),
            CASE_BUDGET,
            limit,
            &mut tally,
            || gguf_check(&original[..cut], &name),
        );
        assert!(matches!(o, Outcome::Err(_)), "{name} cut {cut}: loaded");
    }
    // Flips: half in the header (metadata, tensor table), half anywhere.
    let mut buf = original.clone();
    let mut rng = Rng(0x5eed_0004);
    for i in 0..200 {
        let range = if i % 2 == 0 {
            0..header_end
        } else {
            0..original.len()
        };
        let u = flip(&mut rng, &mut buf, range);
        case(
            &format!("{name} flip #{i} {u:?}"),
            CASE_BUDGET,
            limit,
            &mut tally,
            || gguf_check(&buf, &name),
        );
        undo(&mut buf, u);
    }
    eprintln!("converted q8_0 GGUF ({} bytes): {tally:?}", original.len());
    // A few truncated files on disk, through Model::load itself.
    for cut in [0, 3, 24, header_end / 2, header_end, original.len() - 1] {
        std::fs::write(path, &original[..cut]).unwrap();
        let e = Model::load(path).err().expect("truncated file loaded");
        assert!(e.to_string().contains(&name), "{e}");
    }
}

// ---- Metadata that lies.

/// A valid tiny grok GGUF in memory: 1 layer, emb 32, 4 heads of 8 (2 KV heads), 2 experts
/// (1 used) of width 32, the synthetic 326-piece vocabulary. Experts are Q8_0, the rest F32.
struct TinyGguf {
    meta: Metadata,
    tensors: Vec<(String, Vec<u64>, GgmlType)>,
}

const EMB: u64 = 32;
const FFN: u64 = 32;
const EXPERTS: u64 = 2;

impl TinyGguf {
    fn new() -> TinyGguf {
        let spm = SpmModel::synthetic(326);
        let vocab = spm.pieces.len() as u64;
        let mut meta = Metadata::new();
        meta.insert("general.architecture", "grok");
        meta.insert("grok.embedding_length", EMB as u32);
        meta.insert("grok.block_count", 1u32);
        meta.insert("grok.attention.head_count", 4u32);
        meta.insert("grok.attention.head_count_kv", 2u32);
        meta.insert("grok.attention.key_length", 8u32);
        meta.insert("grok.expert_feed_forward_length", FFN as u32);
        meta.insert("grok.expert_count", EXPERTS as u32);
        meta.insert("grok.expert_used_count", 1u32);
        meta.insert("grok.context_length", 64u32);
        meta.insert("tokenizer.ggml.model", "llama");
        meta.insert(
            "tokenizer.ggml.tokens",
            GgufArray::String(spm.pieces.iter().map(|p| p.piece.clone()).collect()),
        );
        meta.insert(
            "tokenizer.ggml.scores",
            spm.pieces.iter().map(|p| p.score).collect::<Vec<f32>>(),
        );
        meta.insert(
            "tokenizer.ggml.token_type",
            spm.pieces
                .iter()
                .map(|p| p.kind.as_i32())
                .collect::<Vec<i32>>(),
        );
        let f = GgmlType::F32;
        let mut tensors = vec![
            ("token_embd.weight".to_string(), vec![EMB, vocab], f),
            ("output_norm.weight".to_string(), vec![EMB], f),
        ];
        let b = |s: &str| format!("blk.0.{s}.weight");
        for (n, shape, ty) in [
            ("attn_norm", vec![EMB], f),
            ("attn_q", vec![EMB, 32], f),
            ("attn_k", vec![EMB, 16], f),
            ("attn_v", vec![EMB, 16], f),
            ("attn_output", vec![32, EMB], f),
            ("attn_output_norm", vec![EMB], f),
            ("ffn_norm", vec![EMB], f),
            ("ffn_gate_inp", vec![EMB, EXPERTS], f),
            ("ffn_gate_exps", vec![EMB, FFN, EXPERTS], GgmlType::Q8_0),
            ("ffn_up_exps", vec![EMB, FFN, EXPERTS], GgmlType::Q8_0),
            ("ffn_down_exps", vec![FFN, EMB, EXPERTS], GgmlType::Q8_0),
            ("layer_output_norm", vec![EMB], f),
        ] {
            tensors.push((b(n), shape, ty));
        }
        TinyGguf { meta, tensors }
    }

    fn encode(&self) -> Vec<u8> {
        let mut rng = Rng(11);
        let datas: Vec<Vec<u8>> = self
            .tensors
            .iter()
            .map(|(_, shape, ty)| {
                let n: u64 = shape.iter().product();
                match ty {
                    GgmlType::Q8_0 => (0..n / 32)
                        .flat_map(|_| {
                            // f16 scale 1/64, then 32 small int8 values.
                            let mut blk = vec![0x00, 0x24];
                            blk.extend((0..32).map(|_| (rng.below(9) as u8).wrapping_sub(4)));
                            blk
                        })
                        .collect(),
                    _ => (0..n)
                        .flat_map(|_| ((rng.below(200) as f32 - 100.0) / 400.0).to_le_bytes())
                        .collect(),
                }
            })
            .collect();
        let specs: Vec<(TensorSpec, &[u8])> = self
            .tensors
            .iter()
            .zip(&datas)
            .map(|((n, s, t), d)| (TensorSpec::new(n.clone(), s.clone(), *t), &d[..]))
            .collect();
        encode_gguf(self.meta.clone(), &specs, 32).unwrap()
    }

    fn set(mut self, key: &str, v: u32) -> TinyGguf {
        self.meta.insert(key, v);
        self
    }

    fn shape(mut self, name: &str, shape: Vec<u64>) -> TinyGguf {
        self.tensors.iter_mut().find(|t| t.0 == name).unwrap().1 = shape;
        self
    }
}

/// Loads `bytes` written to a file and returns the error, which must name the file and say
/// `expect`.
fn load_err(bytes: &[u8], expect: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("lying.gguf");
    std::fs::write(&path, bytes).unwrap();
    let e = match Model::load(&path) {
        Ok(_) => panic!("loaded a model that should be refused ({expect})"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains(expect), "expected '{expect}' in: {e}");
}

#[test]
fn tiny_gguf_is_a_valid_model() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tiny.gguf");
    std::fs::write(&path, TinyGguf::new().encode()).unwrap();
    let m = Model::load(&path).unwrap();
    assert_eq!(m.hparams().n_experts, 2);
    assert_eq!(m.hparams().vocab, 326);
    m.tokenizer().unwrap();
}

#[test]
fn model_load_refuses_lying_metadata() {
    let t = TinyGguf::new;
    // Shapes that disagree with the metadata.
    load_err(
        &t().set("grok.embedding_length", 64).encode(),
        "tensor 'token_embd.weight': shape [32, 326], expected [64, 326]",
    );
    load_err(
        &t().set("grok.expert_count", 3).encode(),
        "tensor 'blk.0.ffn_gate_inp.weight': shape [32, 2], expected [32, 3]",
    );
    load_err(
        &t().set("grok.expert_feed_forward_length", 64).encode(),
        "tensor 'blk.0.ffn_gate_exps.weight'",
    );
    load_err(
        &t().set("grok.attention.key_length", 16).encode(),
        "tensor 'blk.0.attn_q.weight'",
    );
    load_err(
        &t().shape("blk.0.attn_k.weight", vec![EMB, 8]).encode(),
        "tensor 'blk.0.attn_k.weight': shape [32, 8], expected [32, 16]",
    );
    // Head counts that do not divide.
    load_err(
        &t().set("grok.attention.head_count", 3).encode(),
        "head_count 3 is not a multiple of head_count_kv 2",
    );
    // More blocks than the file has.
    load_err(
        &t().set("grok.block_count", 2).encode(),
        "tensor 'blk.1.attn_norm.weight' is missing",
    );
    // Out-of-range counts and values.
    load_err(
        &t().set("grok.expert_used_count", 3).encode(),
        "expert_used_count 3 > expert_count 2",
    );
    load_err(
        &t().set("grok.block_count", 0).encode(),
        "block_count = 0 is out of range",
    );
    load_err(
        &t().set("grok.context_length", 0).encode(),
        "context_length = 0 is out of range",
    );
    load_err(
        &t().set("tokenizer.ggml.bos_token_id", 326).encode(),
        "bos_token_id 326 is outside the vocabulary of 326",
    );
    let mut m = t();
    m.meta.insert("grok.rope.freq_base", f32::NAN);
    load_err(&m.encode(), "grok.rope.freq_base = NaN");
    let mut m = t();
    m.meta
        .insert("grok.attention.layer_norm_rms_epsilon", -1e-5f32);
    load_err(
        &m.encode(),
        "grok.attention.layer_norm_rms_epsilon = -0.00001 is not a finite positive number",
    );
    let mut m = t();
    m.meta.insert("tokenizer.ggml.eos_token_id", 1u64 << 32);
    load_err(&m.encode(), "eos_token_id is not a 32-bit unsigned integer");
    // A tensor table entry whose shape needs more bytes than the file holds.
    let bytes = t().encode();
    let file = GgufFile::parse_bytes(&bytes, "mem").unwrap();
    let last = file.tensors().iter().max_by_key(|t| t.offset).unwrap();
    let cut = (last.offset + last.size - 1) as usize;
    load_err(&bytes[..cut], "runs past the end of the file");
}

#[test]
fn sweep_tiny_gguf() {
    let original = TinyGguf::new().encode();
    let name = "tiny.gguf";
    let limit = limit_for(original.len());
    let mut tally = Tally::default();
    for cut in cuts(original.len(), 100) {
        let o = case(
            &format!("cut {cut}"),
            CASE_BUDGET,
            limit,
            &mut tally,
            || gguf_check(&original[..cut], name),
        );
        assert!(matches!(o, Outcome::Err(_)), "cut {cut}: loaded");
    }
    let mut buf = original.clone();
    let mut rng = Rng(0x5eed_0005);
    for i in 0..200 {
        let u = flip(&mut rng, &mut buf, 0..original.len());
        case(
            &format!("flip #{i} {u:?}"),
            CASE_BUDGET,
            limit,
            &mut tally,
            || gguf_check(&buf, name),
        );
        undo(&mut buf, u);
    }
    eprintln!("tiny GGUF ({} bytes): {tally:?}", original.len());
}

/// Writes seed inputs for the fuzz targets into `fuzz/corpus/<target>/` (git-ignored). Run
/// with `cargo test --release --test hardening_sweep -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes fuzz seed corpora; run by hand"]
fn write_fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let dir = |t: &str| {
        let d = root.join(t);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = synth_checkpoint(tmp.path());
    let ckpt = Checkpoint::open(tmp.path(), &cfg).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for s in ckpt.specs() {
        let bytes = std::fs::read(ckpt.file_path(s.index)).unwrap();
        // One seed per distinct (kind, size) below 64 KiB.
        if bytes.len() < 65536 && seen.insert((s.scales_shape.is_some(), bytes.len())) {
            std::fs::write(dir("pickle").join(format!("synth-{}", s.index)), &bytes).unwrap();
        }
    }
    std::fs::write(
        dir("gguf").join("tiny-model.gguf"),
        TinyGguf::new().encode(),
    )
    .unwrap();
    let mut small = Metadata::new();
    small.insert("general.architecture", "grok");
    small.insert("k", GgufArray::Array(vec![GgufArray::U8(vec![1, 2])]));
    let data = [0u8; 34];
    let one = encode_gguf(
        small,
        &[(TensorSpec::new("t", vec![32], GgmlType::Q8_0), &data[..])],
        32,
    )
    .unwrap();
    std::fs::write(dir("gguf").join("one-tensor.gguf"), one).unwrap();
    for n in [326, 400] {
        std::fs::write(
            dir("spm").join(format!("synthetic-{n}.model")),
            SpmModel::synthetic(n).to_bytes(),
        )
        .unwrap();
    }
    let tok = dir("tokenizer");
    for (i, s) in [
        "Hello world",
        "  leading spaces\n\n\ttabs",
        "\u{4e2d}\u{6587} \u{1F468}\u{200D}\u{1F469}",
        "<|separator|> [BOS] 12345",
    ]
    .iter()
    .enumerate()
    {
        let mut b = vec![0u8];
        b.extend_from_slice(s.as_bytes());
        std::fs::write(tok.join(format!("text-{i}")), b).unwrap();
    }
    let ids: Vec<u8> = [1u32, 325, 69, 200, 131_071, 3]
        .iter()
        .flat_map(|i| i.to_le_bytes())
        .collect();
    let mut b = vec![1u8];
    b.extend(ids);
    std::fs::write(tok.join("ids-0"), b).unwrap();
}
