//! GPU kernels against their CPU twins on small random inputs (lavapipe in CI).

mod gpu_common;

use gpu_common::{gpu, rand_vec, rel_err};
use grok1_quant::backend::cpu;
use grok1_quant::backend::gpu::{AttentionShape, GpuContext};
use grok1_quant::backend::WeightMatrix;
use quant::GgmlType;

fn quantized(ty: GgmlType, n_in: usize, n_out: usize, seed: u64) -> Vec<u8> {
    quantized_at(ty, n_in, n_out, seed, 1.0)
}

/// Random weights of magnitude up to `scale`, quantized to `ty`.
fn quantized_at(ty: GgmlType, n_in: usize, n_out: usize, seed: u64, scale: f32) -> Vec<u8> {
    let w = rand_vec(n_in * n_out, seed, scale);
    let rb = ty.row_bytes(n_in).unwrap();
    let mut data = vec![0u8; rb * n_out];
    for (src, dst) in w.chunks_exact(n_in).zip(data.chunks_exact_mut(rb)) {
        quant::quantize_row(ty, src, dst, None).unwrap();
    }
    data
}

fn cpu_matmul(w: &WeightMatrix, x: &[f32]) -> Vec<f32> {
    let acts = cpu::PreparedActivations::new(w.ty, x, w.n_in).unwrap();
    let mut out = vec![0f32; acts.tokens() * w.n_out];
    cpu::matmul(w, &acts, &mut out).unwrap();
    out
}

/// Max error relative to the largest |output| (per-element relative error is meaningless for
/// outputs near zero).
fn check_matmul(ctx: &GpuContext, ty: GgmlType, n_in: usize, n_out: usize, tokens: usize) -> f32 {
    check_matmul_at(ctx, ty, n_in, n_out, tokens, 1.0)
}

fn check_matmul_at(
    ctx: &GpuContext,
    ty: GgmlType,
    n_in: usize,
    n_out: usize,
    tokens: usize,
    scale: f32,
) -> f32 {
    let data = quantized_at(ty, n_in, n_out, 11 + n_in as u64, scale);
    let w = WeightMatrix {
        ty,
        n_in,
        n_out,
        data: &data,
        layout: quant::Layout::Rows,
    };
    let x = rand_vec(n_in * tokens, 5 + tokens as u64, 2.0);
    let want = cpu_matmul(&w, &x);
    let got = ctx.matmul(&w, &x, tokens).unwrap();
    let e = rel_err(&got, &want);
    eprintln!("matmul {ty:?} {n_out}×{n_in}, {tokens} tokens: max rel err {e:.2e}");
    assert!(e <= 1e-4, "{ty:?}: relative error {e}");
    e
}

/// Every weight type the GPU kernels take.
const ALL_TYPES: [GgmlType; 10] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

#[test]
fn matmul_all_types_decode_and_prefill() {
    let Some(ctx) = gpu() else { return };
    for ty in ALL_TYPES {
        // Odd row counts and tokens not a multiple of the 4-token tile; one row.
        check_matmul(ctx, ty, 512, 67, 1);
        check_matmul(ctx, ty, 256, 1, 1);
        check_matmul(ctx, ty, 256, 1, 5);
        check_matmul(ctx, ty, 256, 131, 7);
        // Long rows (Grok-1's ffn_down is 32768 wide): many blocks per thread.
        check_matmul(ctx, ty, 16384, 3, 2);
    }
}

/// Weights so small that the block scales are f16 subnormals (Q8_0's d ≈ 8e-8 here): the
/// kernels decode them as the CPU does, not flushed to zero.
#[test]
fn matmul_with_f16_subnormal_scales() {
    let Some(ctx) = gpu() else { return };
    // F16 for its values themselves; F32 and BF16 have no f16 in them.
    for ty in ALL_TYPES
        .into_iter()
        .filter(|t| !matches!(t, GgmlType::F32 | GgmlType::BF16))
    {
        check_matmul_at(ctx, ty, 512, 9, 2, 1e-5);
    }
}

#[test]
fn activation_quantization_is_bitwise_the_cpus() {
    let Some(ctx) = gpu() else { return };
    // 4608 Q8_0/Q8_1 blocks, 576 Q8_K blocks: enough scales that a division off by an ULP
    // shows (NVIDIA's driver, before `div_rn`, got 1 Q8_K block in 36 wrong).
    let n = 512;
    let mut x = rand_vec(n * 288, 99, 3.0);
    // A zero block and a block with a single large value.
    x[..256].iter_mut().for_each(|v| *v = 0.0);
    x[300] = 1e4;
    // Rows at other magnitudes: 1e-3 gives f16-subnormal scales (lavapipe's quantizeToF16
    // flushed them to zero). Not f32 subnormals: WGSL lets a GPU flush those in arithmetic.
    for (r, m) in [1e-3f32, 1e-30, 1e6].into_iter().enumerate() {
        x[(r + 2) * n..(r + 3) * n].iter_mut().for_each(|v| *v *= m);
    }
    for (ty, act) in [
        (GgmlType::Q4_0, GgmlType::Q8_0),
        (GgmlType::Q4_1, GgmlType::Q8_1),
        (GgmlType::Q4_K, GgmlType::Q8_K),
    ] {
        let got = ctx.quantize_activations(ty, &x, n).unwrap();
        let mut want = Vec::new();
        let mut one = Vec::new();
        for row in x.chunks_exact(n) {
            quant::quantize_activation(ty, row, &mut one).unwrap();
            want.extend_from_slice(&one);
        }
        assert_eq!(got.len(), want.len());
        let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
            eprintln!(
                "first diff at byte {i}: got {:?} want {:?}",
                &got[i.saturating_sub(4)..i + 8],
                &want[i.saturating_sub(4)..i + 8]
            );
        }
        eprintln!("{act:?} activations: {diff} of {} bytes differ", want.len());
        assert_eq!(diff, 0, "{act:?} quantization differs from the CPU");
    }
}

/// The quantizers' division is IEEE's, bit for bit: on random operands over the whole
/// exponent range (subnormal quotients and overflow included) and on the divisions the
/// quantizers do (−127 / x, 1 / that, x / 127).
#[test]
fn gpu_division_is_correctly_rounded() {
    let Some(ctx) = gpu() else { return };
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..20000 {
        // Any finite, non-NaN bit pattern (subnormals and zeros included).
        let mut any = || loop {
            let v = f32::from_bits(next() as u32);
            if v.is_finite() {
                return v;
            }
        };
        let (x, y) = (any(), any());
        if y != 0.0 {
            a.push(x);
            b.push(y);
        }
    }
    for v in rand_vec(20000, 7, 50.0) {
        if v != 0.0 {
            let iscale = -127.0 / v;
            a.extend([-127.0, 1.0, v.abs()]);
            b.extend([v, iscale, 127.0]);
        }
    }
    // Exact quotients, halfway-looking operands, the smallest subnormals, near overflow.
    let edge = [
        (1.0, 3.0),
        (2.0, 1.0),
        (f32::MIN_POSITIVE, 2.0),
        (f32::from_bits(1), 0.5),
        (f32::from_bits(1), 2.0),
        (f32::from_bits(3), 2.0),
        (f32::MAX, 0.5),
        (f32::MAX, 1.0),
        (-f32::MAX, f32::from_bits(1)),
        (1.0, f32::MAX),
        (0.0, -3.0),
        (-0.0, 3.0),
        (5.0, f32::INFINITY),
        (f32::INFINITY, -2.0),
    ];
    for (x, y) in edge {
        a.push(x);
        b.push(y);
    }
    let got = ctx.divide(&a, &b).unwrap();
    let bad: Vec<String> = a
        .iter()
        .zip(&b)
        .zip(&got)
        .filter(|((x, y), g)| (**x / **y).to_bits() != g.to_bits())
        .take(5)
        .map(|((x, y), g)| format!("{x:e} / {y:e} = {:e}, GPU {g:e}", x / y))
        .collect();
    assert!(bad.is_empty(), "{} divisions: {bad:?}", a.len());
}

#[test]
fn forced_small_binding_limit_splits_weights() {
    if gpu().is_none() {
        return;
    }
    let mut ctx = GpuContext::new().unwrap();
    ctx.set_max_binding(1000);
    // 100 rows of Q8_0[256] = 272 bytes each: 3 rows per 1000-byte chunk.
    let (n_in, n_out, tokens) = (256, 100, 3);
    let data = quantized(GgmlType::Q8_0, n_in, n_out, 3);
    let w = WeightMatrix {
        ty: GgmlType::Q8_0,
        n_in,
        n_out,
        data: &data,
        layout: quant::Layout::Rows,
    };
    let gw = ctx.upload_weight(&w, 1).unwrap();
    assert_eq!(gw.chunk_count(), 34);
    let x = rand_vec(n_in * tokens, 8, 1.0);
    let got = ctx.matmul_uploaded(&gw, &x, tokens).unwrap();
    let e = rel_err(&got, &cpu_matmul(&w, &x));
    eprintln!("split matmul (34 chunks): max rel err {e:.2e}");
    assert!(e <= 1e-4);
    // Embedding lookup across chunks too.
    let ids = [0u32, 2, 3, 50, 99];
    let got = ctx.embed(&w, &ids, 0.5).unwrap();
    for (t, &id) in ids.iter().enumerate() {
        let mut row = vec![0f32; n_in];
        w.dequantize_row(id as usize, &mut row).unwrap();
        for (g, r) in got[t * n_in..(t + 1) * n_in].iter().zip(&row) {
            assert_eq!(*g, r * 0.5);
        }
    }
    // A unit bigger than the limit is a clear error, not a panic.
    ctx.set_max_binding(100);
    let err = ctx.upload_weight(&w, 1).err().expect("must fail");
    assert!(err.to_string().contains("binding limit"), "{err}");
}

#[test]
fn forced_split_q4_1_q5_0_q5_k() {
    if gpu().is_none() {
        return;
    }
    // 3 rows per binding, 7 tokens, odd row counts and (Q4_1, Q5_0) an odd number of blocks
    // per row; Q5_0's 110-byte rows start at non-word-aligned offsets inside a chunk.
    for (ty, n_in, n_out) in [
        (GgmlType::Q4_1, 96, 13),
        (GgmlType::Q5_0, 160, 11),
        (GgmlType::Q5_K, 512, 9),
    ] {
        let mut ctx = GpuContext::new().unwrap();
        let data = quantized(ty, n_in, n_out, 17);
        let w = WeightMatrix {
            ty,
            n_in,
            n_out,
            data: &data,
            layout: quant::Layout::Rows,
        };
        let rb = w.row_bytes() as u64;
        ctx.set_max_binding(3 * rb + 3);
        let gw = ctx.upload_weight(&w, 1).unwrap();
        assert_eq!(gw.chunk_count(), n_out.div_ceil(3), "{ty:?}");
        let x = rand_vec(n_in * 7, 9, 1.0);
        let got = ctx.matmul_uploaded(&gw, &x, 7).unwrap();
        let e = rel_err(&got, &cpu_matmul(&w, &x));
        eprintln!(
            "split matmul {ty:?} ({} chunks): max rel err {e:.2e}",
            gw.chunk_count()
        );
        assert!(e <= 1e-4, "{ty:?} split: {e}");
    }
}

#[test]
fn embedding_rows_all_types() {
    let Some(ctx) = gpu() else { return };
    for ty in ALL_TYPES {
        let (n_in, n_out) = (256, 40);
        let data = quantized(ty, n_in, n_out, 21);
        let w = WeightMatrix {
            ty,
            n_in,
            n_out,
            data: &data,
            layout: quant::Layout::Rows,
        };
        let ids = [7u32, 0, 39, 7];
        let got = ctx.embed(&w, &ids, 3.0).unwrap();
        let mut want = Vec::new();
        for &id in &ids {
            let mut row = vec![0f32; n_in];
            w.dequantize_row(id as usize, &mut row).unwrap();
            want.extend(row.iter().map(|v| v * 3.0));
        }
        let e = rel_err(&got, &want);
        assert!(e <= 1e-6, "{ty:?} embedding: {e}");
        assert!(ctx.embed(&w, &[40], 1.0).is_err());
    }
}

#[test]
fn ops_match_cpu() {
    let Some(ctx) = gpu() else { return };
    // rms_norm: rows shorter than one 8-load round (320), and of several rounds plus a tail
    // (8·64·4 + 67).
    for n in [320, 2115] {
        let x = rand_vec(n * 5, 1, 4.0);
        let scale = rand_vec(n, 2, 1.0);
        let mut want = x.clone();
        cpu::rms_norm(&mut want, &scale, 1e-5);
        let e = rel_err(&ctx.rms_norm(&x, &scale, 1e-5).unwrap(), &want);
        eprintln!("rms_norm {n}: {e:.2e}");
        assert!(e <= 1e-5, "rms_norm {n}: {e}");
    }
    // softmax
    let mut x = rand_vec(8 * 37, 3, 10.0);
    x[5] = -1e30;
    let mut want = x.clone();
    want.chunks_exact_mut(37).for_each(cpu::softmax_in_place);
    let e = rel_err(&ctx.softmax(&x, 37).unwrap(), &want);
    eprintln!("softmax: {e:.2e}");
    assert!(e <= 1e-5, "softmax {e}");
    // rope: 3 tokens of 4 heads of 32 at positions 5..8
    let (hd, heads, tokens, p0) = (32, 4, 3, 5);
    let inv: Vec<f32> = (0..hd / 2)
        .map(|i| 10000f64.powf(-(2.0 * i as f64) / hd as f64) as f32)
        .collect();
    let x = rand_vec(hd * heads * tokens, 4, 1.0);
    let mut want = x.clone();
    for (t, row) in want.chunks_exact_mut(hd * heads).enumerate() {
        cpu::rope_rotate_half(row, hd, p0 + t, &inv);
    }
    let e = rel_err(&ctx.rope(&x, hd, p0, tokens, &inv).unwrap(), &want);
    eprintln!("rope: {e:.2e}");
    assert!(e <= 1e-5, "rope {e}");
    // gelu-gated product
    let g = rand_vec(1000, 6, 4.0);
    let u = rand_vec(1000, 7, 1.0);
    let want: Vec<f32> = g
        .iter()
        .zip(&u)
        .map(|(a, b)| cpu::gelu_tanh(*a) * b)
        .collect();
    let e = rel_err(&ctx.gelu_mul(&g, &u).unwrap(), &want);
    eprintln!("gelu_mul: {e:.2e}");
    assert!(e <= 1e-5, "gelu {e}");
    // router: softmax + top-2 with a tie resolved to the lower index
    let mut logits = rand_vec(6 * 8, 9, 3.0);
    logits[8 + 2] = 5.0;
    logits[8 + 6] = 5.0;
    let got = ctx.route(&logits, 8, 2).unwrap();
    for (t, row) in logits.chunks_exact(8).enumerate() {
        let mut p = row.to_vec();
        cpu::softmax_in_place(&mut p);
        let mut idx: Vec<usize> = (0..8).collect();
        idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        for j in 0..2 {
            assert_eq!(got[t][j].0, idx[j], "token {t} slot {j}");
            assert!((got[t][j].1 - p[idx[j]]).abs() <= 1e-6);
        }
    }
    assert_eq!((got[1][0].0, got[1][1].0), (2, 6));
    // bad shapes are errors
    assert!(ctx.rms_norm(&[1.0; 5], &[1.0; 2], 1e-5).is_err());
    assert!(ctx.route(&[0.0; 8], 8, 9).is_err());
}

/// The CPU forward pass's attention, written out with the CPU ops.
fn cpu_attention(q: &[f32], k: &[f32], v: &[f32], toks: &[u32], sh: &AttentionShape) -> Vec<f32> {
    let (hd, nh) = (sh.head_dim, sh.n_heads);
    let kv_dim = sh.n_kv_heads * hd;
    let group = nh / sh.n_kv_heads;
    let t_new = q.len() / (nh * hd);
    let mut out = vec![0f32; q.len()];
    for t in 0..t_new {
        let pos = sh.p0 + t;
        for head in 0..nh {
            let g = head / group;
            let qh = &q[(t * nh + head) * hd..(t * nh + head + 1) * hd];
            let mut scores: Vec<f32> = (0..=pos)
                .map(|s| {
                    if toks[s] == sh.pad_id {
                        return -1e30;
                    }
                    let kh = &k[s * kv_dim + g * hd..s * kv_dim + (g + 1) * hd];
                    let dot: f32 = qh.iter().zip(kh).map(|(a, b)| a * b).sum();
                    cpu::softcap(dot * sh.scale, sh.softcap)
                })
                .collect();
            cpu::softmax_in_place(&mut scores);
            let o = &mut out[(t * nh + head) * hd..(t * nh + head + 1) * hd];
            for (s, p) in scores.iter().enumerate() {
                let vh = &v[s * kv_dim + g * hd..s * kv_dim + (g + 1) * hd];
                for (a, b) in o.iter_mut().zip(vh) {
                    *a += p * b;
                }
            }
        }
    }
    out
}

#[test]
fn attention_matches_cpu_over_several_tiles_with_pad_masking() {
    let Some(ctx) = gpu() else { return };
    // 150 cached positions (3 tiles of 64) + 3 new rows; GQA 8 query heads on 2 kv heads.
    let sh = AttentionShape {
        n_heads: 8,
        n_kv_heads: 2,
        head_dim: 64,
        p0: 150,
        scale: 0.125,
        softcap: 30.0,
        pad_id: 0,
    };
    let t = 3;
    let n = sh.p0 + t;
    let kv = sh.n_kv_heads * sh.head_dim;
    let q = rand_vec(t * sh.n_heads * sh.head_dim, 31, 4.0);
    let k = rand_vec(n * kv, 32, 4.0);
    let v = rand_vec(n * kv, 33, 1.0);
    let toks: Vec<u32> = (0..n as u32)
        .map(|i| if i % 7 == 3 { 0 } else { i + 1 })
        .collect();
    let want = cpu_attention(&q, &k, &v, &toks, &sh);
    let got = ctx.attention(&q, &k, &v, &toks, &sh).unwrap();
    let e = rel_err(&got, &want);
    eprintln!("attention (153 positions): max rel err {e:.2e}");
    assert!(e <= 1e-5, "attention {e}");
    // Every key masked: uniform weights, as the CPU's softmax of equal scores.
    let all_pad = vec![0u32; n];
    let e = rel_err(
        &ctx.attention(&q, &k, &v, &all_pad, &sh).unwrap(),
        &cpu_attention(&q, &k, &v, &all_pad, &sh),
    );
    assert!(e <= 1e-5, "all-masked attention {e}");
    assert!(ctx.attention(&q, &k, &v[1..], &toks, &sh).is_err());
}

#[test]
fn bench_kernels_smoke() {
    let Some(ctx) = gpu() else { return };
    let r = grok1_quant::backend::gpu::bench_kernels(ctx, 1024, 64, 2).unwrap();
    assert_eq!(r.len(), 4);
    for b in &r {
        let rb = b.ty.row_bytes(1024).unwrap() as u64;
        assert_eq!(b.bytes, rb * 64, "{b:?}");
        assert!(
            b.seconds > 0.0 && b.gbps.is_finite() && b.gbps > 0.0,
            "{b:?}"
        );
        eprintln!(
            "{:?} matvec {} B: {:.3} GB/s (lavapipe: smoke test only)",
            b.ty, b.bytes, b.gbps
        );
    }
    assert!(grok1_quant::backend::gpu::bench_kernels(ctx, 1000, 64, 2).is_err());
}

/// `set_profiling` times each dispatch on the GPU under its label; off, nothing is kept.
#[test]
fn kernel_profile_labels_and_times() {
    if gpu().is_none() {
        return;
    }
    // A context of its own: profiling changes how every dispatch is recorded.
    let ctx = GpuContext::new().unwrap();
    if let Err(e) = ctx.set_profiling(true) {
        assert!(e.to_string().contains("no timestamp queries"), "{e}");
        eprintln!("note: {e}; skipping");
        return;
    }
    for _ in 0..3 {
        // Timed or not, the same results.
        check_matmul(&ctx, GgmlType::Q4_0, 512, 9, 1);
    }
    let (times, untimed) = ctx.profile_report();
    assert_eq!(untimed, 0);
    let find = |label: &str| times.iter().find(|k| k.label == label).cloned();
    let mm = find("matmul q4_0 9×512").expect("the matmul's label");
    let q = find("quantize q8_0 ×512").expect("the activation quantizer's label");
    assert_eq!((mm.calls, q.calls), (3, 3), "{times:?}");
    assert!(mm.seconds >= 0.0 && mm.seconds.is_finite() && q.seconds >= 0.0);
    // Reported totals are reset; profiling off keeps nothing.
    assert!(ctx.profile_report().0.is_empty());
    ctx.set_profiling(false).unwrap();
    check_matmul(&ctx, GgmlType::Q4_0, 512, 9, 1);
    assert!(ctx.profile_report().0.is_empty());
}
