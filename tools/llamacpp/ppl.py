#!/usr/bin/env python3
"""llama-perplexity vs grok1-quant perplexity on grok-mini-trained eval.txt at n_ctx 256.

  python3 tools/llamacpp/ppl.py [--work /tmp/llamacpp-work] [--types f32,q8_0,q4_0,q4_k] [--kv-f32]

llama.cpp tokenizes the text itself (our GGUF carries the fixture's SentencePiece vocab and
add_bos_token=false, so no BOS is inserted). The token streams are compared first: llama-tokenize
on the same GGUF vs python sentencepiece on the fixture's tokenizer.model (the reference protocol).
Reference: 34.2625 (2nd-half tokens of 170 chunks of 256, no BOS).
"""
import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

MINI = C.FIX / "grok-mini-trained"
REF_PPL = 34.2625


def tokenization_check(gguf, text_path):
    """(n_llama, n_spm, first mismatch index or None) for the whole eval text."""
    rc, o, e = C.run([C.llama_bin("llama-tokenize"), "-m", gguf, "-f", text_path, "--ids", "--log-disable"],
                     timeout=600)
    if rc != 0:
        return None, None, f"llama-tokenize failed: {C.llama_errors(e, 2)}"
    m = re.search(r"\[([0-9, ]*)\]", o)
    ll = [int(x) for x in m.group(1).split(",") if x.strip()] if m else []
    try:
        import sentencepiece as spm
    except ImportError:
        return len(ll), None, "python sentencepiece missing: no reference token stream"
    sp = spm.SentencePieceProcessor(model_file=str(MINI / "tokenizer.model"))
    ref = sp.encode(Path(text_path).read_text(encoding="utf-8"))
    first = next((i for i, (a, b) in enumerate(zip(ll, ref)) if a != b), None)
    if first is None and len(ll) != len(ref):
        first = min(len(ll), len(ref))
    note = "identical" if first is None else \
        f"first difference at token {first}: llama {ll[first:first + 6]} vs spm {ref[first:first + 6]}"
    return len(ll), len(ref), note


def llama_ppl(gguf, text, ctx, kv_f32, threads):
    cmd = [C.llama_bin("llama-perplexity"), "-m", gguf, "-f", text, "-c", str(ctx), "-b", "2048",
           "-t", str(threads), "-fa", "off"]
    if kv_f32:
        cmd += ["-ctk", "f32", "-ctv", "f32"]
    rc, o, e = C.run(cmd, timeout=3000)
    log = o + e
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
    nch = re.search(r"computing over (\d+) chunks", log) or re.search(r"calculating perplexity over (\d+) chunks", log)
    bos = "BOS inserted" if re.search(r"add_bos\s*=\s*1|add_bos_token\s*=\s*true", log) else ""
    if rc != 0 or not m:
        return None, None, f"rc={rc}: {'; '.join(C.llama_errors(log, 3))}"
    return float(m.group(1)), float(m.group(2)), f"{nch.group(1) if nch else '?'} chunks {bos}".strip()


def ids_ppl(gguf, ctx, kv_f32, threads, max_chunks=None):
    """llama.cpp's engine on the REFERENCE token stream (sentencepiece ids fed through the python
    binding): the golden protocol exactly (chunks of ctx, tokens ctx/2..ctx-1 scored, no BOS)."""
    import numpy as np
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(MINI / "tokenizer.model"))
    toks = sp.encode((MINI / "eval.txt").read_text(encoding="utf-8"))
    n = len(toks) // ctx if max_chunks is None else min(max_chunks, len(toks) // ctx)
    r = C.LlamaRunner(gguf, n_ctx=ctx, kv_f32=kv_f32, n_threads=threads)
    nll, cnt = 0.0, 0
    try:
        for c in range(n):
            ch = toks[c * ctx:(c + 1) * ctx]
            lg = np.array([np.frombuffer(x, dtype=np.float32) for x in r.eval(ch)], dtype=np.float64)
            lg = lg[ctx // 2 - 1:ctx - 1]
            m = lg.max(-1, keepdims=True)
            lse = (m[:, 0] + np.log(np.exp(lg - m).sum(-1)))
            nll += float((lse - lg[np.arange(len(lg)), ch[ctx // 2:]]).sum())
            cnt += len(lg)
    finally:
        r.close()
    return float(np.exp(nll / cnt)), n


def our_ppl(gguf, text, ctx, work):
    if not C.ours_has("perplexity"):
        return None, "no `perplexity` command yet"
    out = work / "ours-ppl.json"
    rc, o, e = C.run([C.ours(), "perplexity", gguf, "-f", text, "-c", str(ctx), "--json", out], timeout=3000)
    if rc != 0:
        return None, f"failed: {e.strip()[-120:]}"
    d = json.loads(out.read_text())
    for k in ("ppl", "perplexity", "ppl_second_half"):
        if isinstance(d.get(k), (int, float)):
            return float(d[k]), ""
    return None, f"no ppl key in {list(d)[:6]}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/llamacpp-work"))
    ap.add_argument("--types", default="f32,q8_0,q4_0,q4_k")
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kv-f32", action="store_true", help="also run F32 with an f32 KV cache")
    ap.add_argument("--max-chunks", type=int, help="limit the ids-fed run (default: all 170)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    text = MINI / "eval.txt"
    types = a.types.split(",")
    files = {t: a.work / f"mini-{t}.gguf" for t in types}
    if not all(f.exists() for f in files.values()):
        rc, o, e = C.run([C.ours(), "convert", MINI / "ckpt-0", "--config", MINI / "config.json", "-o",
                          a.work / "mini-{type}.gguf", "--type", a.types, "--force", "-q"])
        if rc != 0:
            C.die(f"convert failed: {e[-300:]}")
    n_ll, n_spm, note = tokenization_check(files[types[0]], text)
    print(f"tokenization of eval.txt: llama.cpp {n_ll} tokens, sentencepiece {n_spm} tokens; {note}")
    rows, bad = [], 0
    print(f"\n{'file':<16} {'KV':<4} {'llama-perplexity':>16} {'vs ref 34.2625':>15} "
          f"{'llama.cpp on ref ids':>20} {'vs ref':>9} {'ours':>9}  notes")
    runs = [(t, False) for t in types] + ([("f32", True)] if a.kv_f32 and "f32" in types else [])
    for t, kv32 in runs:
        p, err, note = llama_ppl(files[t], text, a.ctx, kv32, a.threads)
        o, onote = (None, "") if kv32 else our_ppl(files[t], text, a.ctx, a.work)
        if p is None:
            bad += 1
        ps = f"{p:.4f}+/-{err:.3f}" if p else "FAIL"
        rel = f"{(p / REF_PPL - 1) * 100:+.3f}%" if p else "-"
        os_ = f"{o:.4f}" if o else "-"
        try:
            ip, nch = ids_ppl(files[t], a.ctx, kv32, a.threads, a.max_chunks)
            ips, irel = f"{ip:.4f}", f"{(ip / REF_PPL - 1) * 100:+.3f}%"
        except Exception as e:  # noqa: BLE001
            ip, ips, irel = None, f"FAIL {e}"[:20], "-"
        print(f"mini-{t + '.gguf':<11} {'f32' if kv32 else 'f16':<4} {ps:>16} {rel:>15} {ips:>20} {irel:>9} "
              f"{os_:>9}  {note} {onote}", flush=True)
        rows.append(dict(type=t, kv="f32" if kv32 else "f16", llama_ppl=p, llama_err=err, llama_ids_ppl=ip,
                         ours_ppl=o, note=note))
    if a.json:
        a.json.write_text(json.dumps(dict(tokens_llama=n_ll, tokens_spm=n_spm, tokenization=note, rows=rows), indent=1))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
