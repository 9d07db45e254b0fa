#!/usr/bin/env python3
"""Quantization error of grok1-quant's quantizers vs llama.cpp's (llama-quantize), same F32 input.

For each source F32 GGUF and each type, the same file is quantized twice:

  llama-quantize --pure [--imatrix IM] SRC OUT TYPE      (every matrix gets TYPE)
  grok1-quant quantize SRC OUT -t TYPE [--imatrix IM]    (norms/router stay F32, token_embd
                                                          gets the recipe's embd type)

Both results are dequantized with gguf-py and compared with the F32 source, matrix by matrix
(only tensors that got TYPE in BOTH files are counted). Printed per tensor kind:

  rel RMSE   = sqrt(sum (q - w)^2 / sum w^2)
  rel wRMSE  = same, each input column weighted by the imatrix importance (in_sum2 / counts),
               i.e. the expected output error for activations like the calibration set's
  same bytes = fraction of tensors whose quantized bytes are identical between the two tools

Sources (--sources):
  tiny    grok-tiny converted to F32 by us (int8 x scale weights, random)
  mini    grok-mini-trained converted to F32 by us (trained weights)
  gauss   the mini F32 file with every matrix replaced by N(0, 0.02^2)
  t3      same with Student-t (nu = 3) * 0.02 (heavy tails)
The synthetic files keep mini's shapes and metadata, so they are full grok models that both
quantizers accept, and mini's imatrix applies to them.

  python3 tools/llamacpp/rmse.py                          # no imatrix
  python3 tools/llamacpp/rmse.py --imatrix /tmp/q2/mini.imatrix --sources mini,gauss,t3
"""
import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIX, die, llama_bin, ours, run  # noqa: E402

import gguf  # noqa: E402
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType as QT  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

MATRIX = re.compile(r"(attn_q|attn_k|attn_v|attn_output|ffn_gate_exps|ffn_up_exps|ffn_down_exps|"
                    r"ffn_gate|ffn_up|ffn_down|token_embd)\.weight$")


def kind(name):
    return re.sub(r"^blk\.\d+\.", "", name).replace(".weight", "")


def convert(work, which, reuse):
    out = work / f"{which}-f32.gguf"
    if reuse and out.exists():
        return out
    if which == "tiny":
        ck, cfg = FIX / "grok-tiny/ckpt-0", FIX / "grok-tiny/reference/config.json"
    else:
        ck, cfg = FIX / "grok-mini-trained/ckpt-0", FIX / "grok-mini-trained/config.json"
    rc, o, e = run([ours(), "convert", ck, "--config", cfg, "-o", work / f"{which}-{{type}}.gguf",
                    "--type", "f32", "--force", "-q"])
    if rc != 0 or not out.exists():
        die(f"convert {which} failed: {e[-2000:]}")
    return out


def field_value(f):
    """(value, GGUFValueType, sub_type) of a reader field, for re-writing."""
    vt = f.types[0]
    if vt == gguf.GGUFValueType.ARRAY:
        st = f.types[-1]
        if st == gguf.GGUFValueType.STRING:
            v = [bytes(f.parts[i]).decode("utf-8", "replace") for i in f.data]
        else:
            v = [f.parts[i].tolist()[0] for i in f.data]
        return v, vt, st
    if vt == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8", "replace"), vt, None
    return f.parts[f.data[0]].tolist()[0], vt, None


def synth(template, out, dist, seed, reuse):
    """Copy `template` (an F32 grok GGUF) with every matrix replaced by random values."""
    if reuse and out.exists():
        return out
    r = GGUFReader(template)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    w = GGUFWriter(str(out), arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        v, vt, st = field_value(f)
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(name, v, vt, sub_type=st)
        else:
            w.add_key_value(name, v, vt)
    rng = np.random.default_rng(seed)
    for t in r.tensors:
        a = np.array(t.data, dtype=np.float32)
        if MATRIX.search(t.name):
            if dist == "gauss":
                a = rng.standard_normal(a.shape).astype(np.float32) * 0.02
            else:
                a = (rng.standard_t(3, a.shape) * 0.02).astype(np.float32)
        w.add_tensor(t.name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def load_imatrix(path):
    """{tensor name: importance [n_mat, n_in]} from a GGUF imatrix (in_sum2 / counts)."""
    r = GGUFReader(path)
    t = {x.name: np.array(x.data, dtype=np.float64) for x in r.tensors}
    out = {}
    for n, s in t.items():
        if n.endswith(".in_sum2"):
            base = n[: -len(".in_sum2")]
            c = t.get(base + ".counts")
            s = s.reshape(-1, s.shape[-1])
            c = np.maximum(c.reshape(-1, 1), 1) if c is not None else 1.0
            out[base] = s / c
    return out


def tensors(path):
    r = GGUFReader(path)
    return {t.name: t for t in r.tensors}


def deq(t):
    a = dequantize(np.array(t.data), t.tensor_type).astype(np.float64)
    shape = tuple(int(x) for x in reversed(t.shape))
    return a.reshape(shape)


def errors(src, q, imat):
    """{name: (sum err^2, sum w^2, weighted sum err^2, weighted sum w^2, qtype, raw bytes)}"""
    res = {}
    for name, tq in q.items():
        if name not in src or not MATRIX.search(name):
            continue
        w = np.array(src[name].data, dtype=np.float64).reshape(
            tuple(int(x) for x in reversed(src[name].shape)))
        d = deq(tq)
        e2 = (d - w) ** 2
        row = [e2.sum(), (w ** 2).sum(), np.nan, np.nan, tq.tensor_type.name, bytes(np.array(tq.data).tobytes())]
        im = imat.get(name) if imat else None
        if im is not None:
            # w: [n_mat?, n_out, n_in]; importance per (matrix, input column)
            n_in = w.shape[-1]
            iw = im.reshape(-1, 1, n_in) if w.ndim == 3 else im.reshape(1, n_in)
            row[2] = (e2 * iw).sum()
            row[3] = (w ** 2 * iw).sum()
        res[name] = row
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/llamacpp-work/rmse")
    ap.add_argument("--sources", default="tiny,mini,gauss,t3")
    ap.add_argument("--types", default="q4_0,q8_0,q4_k,q5_k,q6_k")
    ap.add_argument("--imatrix", help="GGUF imatrix (ours or llama-imatrix's) given to BOTH quantizers")
    ap.add_argument("--weight-imatrix", help="imatrix used only to weight the error (default: --imatrix)")
    ap.add_argument("--reuse", action="store_true", help="keep existing converted/quantized files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write all numbers here")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    srcs = {}
    for s in a.sources.split(","):
        if s in ("tiny", "mini"):
            srcs[s] = convert(work, s, a.reuse)
        elif s in ("gauss", "t3"):
            tmpl = convert(work, "mini", True)
            srcs[s] = synth(tmpl, work / f"{s}-f32.gguf", s, 1234 if s == "gauss" else 4321, a.reuse)
        else:
            die(f"unknown source {s}")
    wim_path = a.weight_imatrix or a.imatrix
    imat = load_imatrix(wim_path) if wim_path else None
    tag = "-im" if a.imatrix else ""
    results = []
    print(f"# rel RMSE (x1e-3) per tensor kind; imatrix given to quantizers: {a.imatrix or 'none'}; "
          f"error weighted by: {wim_path or 'none'}")
    print("| source | type | kind | n | llama.cpp rRMSE | ours rRMSE | ours/llama | llama.cpp wRMSE | ours wRMSE | ours/llama (w) | same bytes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for sname, sp in srcs.items():
        src = tensors(sp)
        for ty in a.types.split(","):
            lq = work / f"{sname}-llq-{ty}{tag}.gguf"
            oq = work / f"{sname}-ours-{ty}{tag}.gguf"
            if not (a.reuse and lq.exists()):
                cmd = [llama_bin("llama-quantize"), "--pure"]
                if a.imatrix:
                    cmd += ["--imatrix", a.imatrix]
                cmd += [sp, lq, ty.upper(), str(a.threads)]
                t0 = time.time()
                rc, o, e = run(cmd)
                if rc != 0:
                    die(f"llama-quantize {sname} {ty}: {(o + e)[-1500:]}")
                print(f"  llama-quantize {sname} {ty}: {time.time() - t0:.1f}s", file=sys.stderr)
            if not (a.reuse and oq.exists()):
                cmd = [ours(), "--threads", str(a.threads), "quantize", sp, oq, "-t", ty, "--force"]
                if a.imatrix:
                    cmd += ["--imatrix", a.imatrix]
                t0 = time.time()
                rc, o, e = run(cmd)
                if rc != 0:
                    die(f"grok1-quant quantize {sname} {ty}: {(o + e)[-1500:]}")
                print(f"  grok1-quant quantize {sname} {ty}: {time.time() - t0:.1f}s", file=sys.stderr)
            el = errors(src, tensors(lq), imat)
            eo = errors(src, tensors(oq), imat)
            want = QT[ty.upper()].name
            kinds = {}
            for n in el:
                if n in eo and el[n][4] == want and eo[n][4] == want:
                    kinds.setdefault(kind(n), []).append(n)
            allk = sorted(kinds) + ["ALL"]
            kinds["ALL"] = [n for k in sorted(kinds) for n in kinds[k]]
            for k in allk:
                ns = kinds[k]
                def agg(E, i, j):
                    # weighted columns: only tensors the imatrix covers (token_embd has no entry
                    # unless the imatrix was collected with the output projection)
                    m = [n for n in ns if np.isfinite(E[n][i])]
                    num = sum(E[n][i] for n in m)
                    den = sum(E[n][j] for n in m)
                    return float(np.sqrt(num / den)) if den and np.isfinite(den) else float("nan")
                lr, orr = agg(el, 0, 1), agg(eo, 0, 1)
                lw, ow = agg(el, 2, 3), agg(eo, 2, 3)
                same = sum(el[n][5] == eo[n][5] for n in ns)
                fmt = lambda x: "-" if not np.isfinite(x) else f"{x * 1e3:.3f}"
                rat = lambda x, y: "-" if not (np.isfinite(x) and np.isfinite(y) and x) else f"{y / x:.3f}"
                print(f"| {sname} | {ty} | {k} | {len(ns)} | {fmt(lr)} | {fmt(orr)} | {rat(lr, orr)} | "
                      f"{fmt(lw)} | {fmt(ow)} | {rat(lw, ow)} | {same}/{len(ns)} |", flush=True)
                results.append(dict(source=sname, type=ty, kind=k, n=len(ns), llama_rrmse=lr, ours_rrmse=orr,
                                    llama_wrmse=lw, ours_wrmse=ow, same_bytes=same,
                                    imatrix=a.imatrix, weight_imatrix=wim_path))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
