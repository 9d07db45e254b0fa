#!/usr/bin/env python3
"""Quantify llama.cpp's known deviations from the Grok-1 reference forward, one at a time.

A float32 numpy forward pass of a grok GGUF of ours (read with gguf-py from the cached llama.cpp
source) that follows the fixtures' `semantics` exactly, with switches for what llama.cpp's grok
graph does differently:
  renorm  top-2 gates renormalised to sum 1 (build_moe_ffn(..., norm_w=true, ...))
  gelu16  GELU through ggml's f16 lookup table (GGML_GELU_FP16: x -> f16 -> table -> f32)
  kv16    K and V rounded to f16 (llama.cpp's default KV cache type)
  nopad   keys with token id == pad (0) NOT masked
Reports, per switch, the grok-tiny logits vs the reference (top-1, max|d|) and the
grok-mini-trained perplexity on eval.txt (n_ctx 256, 2nd half scored, no BOS).

  python3 tools/llamacpp/ablate.py [--work /tmp/llamacpp-work] [--chunks 170]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402


def load(path):
    sys.path.insert(0, str(Path(C.llamacpp_env()["LLAMACPP_SRC"]) / "gguf-py"))
    import gguf
    r = gguf.GGUFReader(str(path))
    kv = {}
    for f in r.fields.values():
        if f.name.startswith("grok.") and f.types and f.types[0] != gguf.GGUFValueType.ARRAY:
            kv[f.name[5:]] = f.parts[f.data[0]][0].item()
    from gguf.quants import dequantize
    w = {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        w[t.name] = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
    return kv, w


def rms(x, s, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * s


def gelu(x, f16):
    if f16:
        xh = x.astype(np.float16).astype(np.float32)
        y = (0.5 * xh * (1 + np.tanh(np.sqrt(2 / np.pi) * (xh + 0.044715 * xh ** 3)))).astype(np.float16).astype(np.float32)
        return np.where(x <= -10, 0, np.where(x >= 10, x, y))
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def forward(kv, w, ids, renorm=False, gelu16=False, kv16=False, nopad=False, pad=0):
    ids = np.asarray(ids)
    T = len(ids)
    eps = kv["attention.layer_norm_rms_epsilon"]
    H, KVH, D = kv["attention.head_count"], kv["attention.head_count_kv"], kv["attention.key_length"]
    E = w["token_embd.weight"]
    h = E[ids] * kv["embedding_scale"]
    inv = 1.0 / kv["rope.freq_base"] ** (np.arange(D // 2) * 2 / D)
    ang = np.arange(T)[:, None] * np.concatenate([inv, inv])[None]
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]

    def rope(x):
        return x * cos + np.concatenate([-x[..., D // 2:], x[..., :D // 2]], -1) * sin

    mask = np.triu(np.ones((T, T), bool), 1)
    if not nopad:
        mask = mask | (ids == pad)[None, :]
    cap, mul = kv["attn_logit_softcapping"], kv["attention.output_scale"]
    for l in range(kv["block_count"]):
        g = lambda n: w[f"blk.{l}.{n}.weight"]  # noqa: E731
        x = rms(h, g("attn_norm"), eps)
        q = rope((x @ g("attn_q").T).reshape(T, H, D))
        k = rope((x @ g("attn_k").T).reshape(T, KVH, D))
        v = (x @ g("attn_v").T).reshape(T, KVH, D)
        if kv16:
            k, v = k.astype(np.float16).astype(np.float32), v.astype(np.float16).astype(np.float32)
        rep = H // KVH
        k, v = np.repeat(k, rep, 1), np.repeat(v, rep, 1)
        s = np.einsum("thd,shd->hts", q, k) * mul
        s = cap * np.tanh(s / cap)
        s = np.where(mask[None], -1e30, s)
        s = np.exp(s - s.max(-1, keepdims=True))
        p = s / s.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", p, v).reshape(T, H * D) @ g("attn_output").T
        h = h + rms(o, g("attn_output_norm"), eps)
        x = rms(h, g("ffn_norm"), eps)
        lg = x @ g("ffn_gate_inp").T
        pr = np.exp(lg - lg.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        top = np.argsort(-pr, -1, kind="stable")[:, :2]
        gates = np.take_along_axis(pr, top, -1)
        if renorm:
            gates = gates / gates.sum(-1, keepdims=True)
        moe = np.zeros_like(x)
        Wg, Wu, Wd = g("ffn_gate_exps"), g("ffn_up_exps"), g("ffn_down_exps")
        for e in range(Wg.shape[0]):
            rows, slot = np.nonzero(top == e)
            if len(rows) == 0:
                continue
            xe = x[rows]
            y = (gelu(xe @ Wg[e].T, gelu16) * (xe @ Wu[e].T)) @ Wd[e].T
            moe[rows] += gates[rows, slot][:, None] * y
        h = h + rms(moe, g("layer_output_norm"), eps)
    h = rms(h, w["output_norm.weight"], eps)
    return (h @ E.T) * kv["logit_scale"]


VARIANTS = [("reference", {}), ("renorm", dict(renorm=True)), ("gelu16", dict(gelu16=True)),
            ("kv16", dict(kv16=True)), ("all llama.cpp", dict(renorm=True, gelu16=True, kv16=True, nopad=True))]


def compare_files(a):
    """Separates what is in our quantized file from what llama.cpp's kernels add (it quantizes
    activations to Q8_0/Q8_K for quantized matmuls; the reference math here keeps f32)."""
    ps = json.load(open(C.FIX / "grok-tiny/reference/prompts.json"))["prompts"]
    print(f"{'file':<22} | {'dequant-f32 math vs ref':>24} | {'llama.cpp vs dequant-f32 math':>30}")
    print(f"{'':<22} | {'top1':>8} {'max|d|':>8} {'rms':>6} | {'top1':>8} {'max|d|':>8} {'rms':>6}")
    for f in a.files.split(","):
        kv, w = load(f)
        A = [[0, 0, 0.0, 0.0], [0, 0, 0.0, 0.0]]
        for p in ps:
            T, V = p["logits_f32"]["shape"]
            ref = np.fromfile(C.FIX / "grok-tiny" / p["logits_f32"]["file"], dtype="<f4").reshape(T, V)
            mine = forward(kv, w, p["token_ids"])
            ll, _ = C.llama_logits(f, p["token_ids"], kv_f32=True)
            ll = np.array([np.frombuffer(r, dtype=np.float32) for r in ll])
            for k, (x, y) in enumerate(((mine, ref), (ll, mine))):
                A[k][0] += int((x.argmax(-1) == y.argmax(-1)).sum())
                A[k][1] += T
                A[k][2] = max(A[k][2], float(np.abs(x - y).max()))
                A[k][3] += float(((x - y) ** 2).sum()) / V
        r = [(x[0] / x[1], x[2], (x[3] / x[1]) ** 0.5) for x in A]
        print(f"{Path(f).name:<22} | {r[0][0]:>8.3f} {r[0][1]:>8.4f} {r[0][2]:>6.3f} | "
              f"{r[1][0]:>8.3f} {r[1][1]:>8.4f} {r[1][2]:>6.3f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/llamacpp-work"))
    ap.add_argument("--chunks", type=int, default=170)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--files", help="comma list of grok-tiny GGUFs: only compare, on the 4 prompts, the "
                    "reference math on each file's (dequantized) weights with llama.cpp on the same file")
    a = ap.parse_args()
    out = {}
    if a.files:
        return compare_files(a)
    tiny = a.work / "tiny-f32.gguf"
    mini = a.work / "mini-f32.gguf"
    for f in (tiny, mini):
        if not f.exists():
            C.die(f"{f} missing: run tools/llamacpp/compat.py first (it converts the fixtures)")
    kv, w = load(tiny)
    ps = json.load(open(C.FIX / "grok-tiny/reference/prompts.json"))["prompts"]
    print("grok-tiny logits vs reference logits_f32 (all 4 prompts): top-1 agreement, max|d|")
    # a pad-key probe: prompt 0 with two pad ids inserted
    for name, opt in VARIANTS:
        agree, n, mx = 0, 0, 0.0
        for p in ps:
            T, V = p["logits_f32"]["shape"]
            ref = np.fromfile(C.FIX / "grok-tiny" / p["logits_f32"]["file"], dtype="<f4").reshape(T, V)
            lg = forward(kv, w, p["token_ids"], **opt)
            agree += int((lg.argmax(-1) == ref.argmax(-1)).sum())
            n += T
            mx = max(mx, float(np.abs(lg - ref).max()))
        out.setdefault(name, {}).update(tiny_top1=agree / n, tiny_maxd=mx)
        print(f"  {name:<14} top-1 {agree / n:.4f}  max|d| {mx:.4f}")
    ids = ps[0]["token_ids"][:5] + [0, 0] + ps[0]["token_ids"][5:]
    a0, a1 = forward(kv, w, ids), forward(kv, w, ids, nopad=True)
    d = float(np.abs(a0 - a1)[7:].max())
    print(f"  nopad: prompt 0 with 2 pad ids inserted at 5: max|d| after the pads {d:.4f}, "
          f"top-1 agreement {(a0.argmax(-1) == a1.argmax(-1)).mean():.3f}")
    out["nopad_probe_maxd"] = d

    import sentencepiece as spm
    kv, w = load(mini)
    sp = spm.SentencePieceProcessor(model_file=str(C.FIX / "grok-mini-trained/tokenizer.model"))
    toks = sp.encode((C.FIX / "grok-mini-trained/eval.txt").read_text(encoding="utf-8"))
    n_ctx = 256
    nch = min(a.chunks, len(toks) // n_ctx)
    print(f"\ngrok-mini-trained ppl on eval.txt ({nch} chunks x {n_ctx}, 2nd half, no BOS); reference 34.2625")
    for name, opt in VARIANTS:
        nll, cnt = 0.0, 0
        for c in range(nch):
            ch = toks[c * n_ctx:(c + 1) * n_ctx]
            lg = forward(kv, w, ch, **opt).astype(np.float64)
            lp = lg - lg.max(-1, keepdims=True)
            lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
            for i in range(n_ctx // 2, n_ctx):
                nll -= lp[i - 1, ch[i]]
                cnt += 1
        ppl = float(np.exp(nll / cnt))
        out[name]["mini_ppl"] = ppl
        print(f"  {name:<14} ppl {ppl:.4f}  ({(ppl / 34.2625 - 1) * 100:+.3f}% vs reference)", flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
