#!/usr/bin/env python3
"""Top-1 agreement llama.cpp vs grok1-quant on grok-mini-trained held-out text (issue 8, acceptance 1-2).

  python3 tools/llamacpp/agree.py [--work /tmp/llamacpp-work] [--chunks 17] [--threads 1] [--json OUT]

Files: our converter's F32 / Q8_0 / Q4_0 / Q4_K of grok-mini-trained, and llama-quantize of
our F32 file to Q8_0 / Q4_0 / Q4_K_M. Input: our tokenizer's ids (`grok1-quant tokenize` on the
F32 GGUF) of the fixture's eval.txt, checked against python sentencepiece when it is installed,
cut into the reference protocol's 256-token chunks; `--chunks N` of the 170 are used, evenly
spaced over the text (they cover all five held-out books). Each chunk runs from an empty context,
no BOS, in both engines: llama.cpp through the python binding (logits for every position, f32 KV
cache unless --kv-f16) and `grok1-quant logits --device cpu`.

Per file: top-1 agreement over all positions, max|delta logit|, mean KL(ours || llama.cpp) in
nats, and ppl of each engine over the same positions (all tokens but the first of each chunk).
For scale: "vs F32 ours/llama" is the top-1 agreement of each engine on this file with the same
engine on the F32 file (what the quantization, and for llama.cpp its activation rounding, moves), and "llama KV f16" the top-1 agreement
of llama.cpp with itself when only its KV cache type changes (f16 vs f32): a perturbation of
rounding size, i.e. the noise floor for top-1 on this model's near ties.
"Near ties" counts the disagreements where our own top-1 / top-2 logit gap is below --tie
(default 0.1): a flip there needs only a rounding-sized perturbation. Exits 1 on a failure or
when a file's agreement is below --min (default 0, i.e. report only).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

MINI = C.FIX / "grok-mini-trained"
OURS_TYPES = ["f32", "q8_0", "q4_0", "q4_k"]
LQ_TYPES = ["Q8_0", "Q4_0", "Q4_K_M"]


def convert(work, reuse):
    files = {f"mini-{t}": work / f"mini-{t}.gguf" for t in OURS_TYPES}
    if not (reuse and all(p.exists() for p in files.values())):
        rc, o, e = C.run([C.ours(), "convert", MINI / "ckpt-0", "--config", MINI / "config.json", "-o",
                          work / "mini-{type}.gguf", "--type", ",".join(OURS_TYPES), "--force", "-q"])
        if rc != 0:
            C.die(f"grok1-quant convert of {MINI / 'ckpt-0'} failed: {e.strip()[-300:]}", 1)
    q = C.llama_bin("llama-quantize")
    for lt in LQ_TYPES:
        out = work / f"mini-llq-{lt.lower()}.gguf"
        if not (reuse and out.exists()):
            rc, o, e = C.run([q, files["mini-f32"], out, lt, "1"], timeout=600)
            if rc != 0:
                C.die(f"llama-quantize {files['mini-f32']} {lt} failed: {C.llama_errors(o + e, 3)}", 1)
        files[f"mini-llq-{lt.lower()}"] = out
    return files


def eval_ids(gguf):
    """Our tokenizer's ids of eval.txt (and a note on how they compare with sentencepiece's)."""
    rc, o, e = C.run([C.ours(), "tokenize", gguf, "-f", MINI / "eval.txt", "--json"], timeout=600)
    if rc != 0:
        C.die(f"grok1-quant tokenize {gguf} -f eval.txt failed: {e.strip()[-300:]}", 1)
    try:
        ids = json.loads(o)["ids"]
    except (ValueError, KeyError) as err:
        C.die(f"grok1-quant tokenize --json: expected an object with 'ids' ({err}): {o[:200]!r}", 1)
    try:
        import sentencepiece as spm
    except ImportError:
        return ids, "python sentencepiece not installed: not cross-checked"
    sp = spm.SentencePieceProcessor(model_file=str(MINI / "tokenizer.model"))
    ref = sp.encode((MINI / "eval.txt").read_text(encoding="utf-8"))
    if ref == ids:
        return ids, f"identical to sentencepiece ({len(ids)} tokens)"
    first = next((i for i, (a, b) in enumerate(zip(ids, ref)) if a != b), min(len(ids), len(ref)))
    return ids, f"DIFFERS from sentencepiece at token {first} ({len(ids)} vs {len(ref)} tokens)"


def pick_chunks(ids, ctx, n):
    total = len(ids) // ctx
    if total < 1:
        C.die(f"eval.txt has {len(ids)} tokens, fewer than one chunk of {ctx}", 1)
    n = min(n, total)
    idx = sorted({(i * total) // n for i in range(n)})
    return idx, [ids[c * ctx:(c + 1) * ctx] for c in idx]


def llama_run(f, chunks, ctx, kv_f32, threads):
    r = C.LlamaRunner(f, n_ctx=ctx, kv_f32=kv_f32, n_threads=threads)
    try:
        return [np.array([np.frombuffer(x, dtype=np.float32) for x in r.eval(ch)], dtype=np.float64)
                for ch in chunks]
    finally:
        r.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/llamacpp-work"))
    ap.add_argument("--reuse", action="store_true", help="reuse GGUFs already in --work")
    ap.add_argument("--chunks", type=int, default=17, help="chunks of --ctx used, evenly spaced (170 = all)")
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="threads for each engine (one runs at a time)")
    ap.add_argument("--kv-f16", action="store_true", help="llama.cpp's default f16 KV cache instead of f32")
    ap.add_argument("--tie", type=float, default=0.1, help="top-1/top-2 gap counted as a near tie")
    ap.add_argument("--min", type=float, default=0.0, help="fail when a file's top-1 agreement is lower")
    ap.add_argument("--files", help="comma-separated subset of the file names (e.g. mini-f32,mini-llq-q8_0)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if a.chunks < 1 or a.ctx < 2:
        C.die("--chunks must be >= 1 and --ctx >= 2")
    a.work.mkdir(parents=True, exist_ok=True)
    env = C.llamacpp_env()
    print(f"llama.cpp from llama-cpp-python {env.get('LLAMACPP_PY_VERSION', '?')}; ours: {C.ours()}")
    files = convert(a.work, a.reuse)
    if a.files:
        want = a.files.split(",")
        unknown = [w for w in want if w not in files]
        if unknown:
            C.die(f"--files: unknown {unknown}; known: {sorted(files)}")
        files = {k: files[k] for k in want}
    ids, tok_note = eval_ids(a.work / "mini-f32.gguf")
    idx, chunks = pick_chunks(ids, a.ctx, a.chunks)
    kv = "f16" if a.kv_f16 else "f32"
    print(f"eval.txt ids (grok1-quant tokenize): {tok_note}")
    total = len(ids) // a.ctx
    which = f"all {total}" if len(idx) == total else f"{idx} of {total}"
    print(f"chunks of {a.ctx}: {which}; llama.cpp KV {kv}; {a.threads} thread(s)")
    print(f"\n{'file':<18} {'pos':>5} {'top-1':>7} {'diff':>5} {'ties':>5} {'maxgap':>7} "
          f"{'max|d|':>8} {'KL':>9} {'ppl ours':>9} {'ppl llama':>9} {'vs F32 ours/llama':>17} {'llama KV f16':>12}")
    rows, failures = [], []
    base = base_ll = None  # each engine's logits of mini-f32 per chunk: what quantization moves
    for name, f in files.items():
        st, vs_f32, kv_noise = C.Agreement(a.tie), C.Agreement(a.tie), C.Agreement(a.tie)
        ll_vs_f32 = C.Agreement(a.tie)
        try:
            lls = llama_run(f, chunks, a.ctx, not a.kv_f16, a.threads)
            for ll, alt in zip(lls, llama_run(f, chunks, a.ctx, a.kv_f16, a.threads)):
                kv_noise.add(ll, alt)
            ours_all = [C.ours_logits(f, ch, a.work / "agree-ours-logits.bin", a.threads) for ch in chunks]
            for ch, ours, ll in zip(chunks, ours_all, lls):
                st.add(ours, ll, ch)
            if name == "mini-f32":
                base, base_ll = ours_all, lls
            elif base is not None:
                for b, ours, b_ll, ll in zip(base, ours_all, base_ll, lls):
                    vs_f32.add(b, ours)
                    ll_vs_f32.add(b_ll, ll)
        except Exception as e:  # noqa: BLE001
            failures.append(f"{name}: {e}")
            print(f"{name:<18} FAIL {e}"[:200], flush=True)
            continue
        row = st.row(name)
        row["top1_ours_vs_our_f32"] = vs_f32.top1() if vs_f32.n else None
        row["top1_llama_vs_llama_f32"] = ll_vs_f32.top1() if ll_vs_f32.n else None
        row["top1_llama_kv_f16_vs_f32"] = kv_noise.top1()
        rows.append(row)
        vf = f"{vs_f32.top1():.4f} / {ll_vs_f32.top1():.4f}" if vs_f32.n else "-"
        print(f"{name:<18} {row['positions']:>5} {row['top1']:>7.4f} {row['disagree']:>5} {row['near_ties']:>5} "
              f"{row['max_flip_gap']:>7.3f} {row['max_abs_delta']:>8.4f} {row['mean_kl']:>9.2e} "
              f"{row['ppl_ours']:>9.4f} {row['ppl_llama']:>9.4f} {vf:>17} {kv_noise.top1():>12.4f}", flush=True)
        if row["top1"] < a.min:
            failures.append(f"{name}: top-1 agreement {row['top1']:.4f} < {a.min}")
    if a.json:
        a.json.write_text(json.dumps(dict(chunks=idx, ctx=a.ctx, kv=kv, tokenization=tok_note, rows=rows,
                                          failures=failures), indent=1))
    print(f"\n{len(failures)} failure(s)" + "".join(f"\n  - {x}" for x in failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
