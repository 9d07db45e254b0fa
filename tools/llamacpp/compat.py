#!/usr/bin/env python3
"""llama.cpp <-> grok1-quant compatibility checks.

  (a) llama.cpp loads our F32/Q8_0/Q4_0/Q4_K GGUFs of grok-tiny and grok-mini-trained
      (python binding: load + decode the prompt; llama-simple: a short generation)
  (b) llama.cpp's logits on the grok-tiny prompts (fed as token ids, KV f16 and f32) vs the
      reference logits_f32_*.bin and vs ours (`grok1-quant logits --device cpu`), per prompt and
      summed over all prompts (top-1, disagreements, near ties, max|delta|, KL(ours||llama.cpp))
  (c) llama-quantize of our F32 GGUF to Q4_K_M / Q4_0 / Q8_0 gives files our tool loads
      (`grok1-quant inspect`) and runs: on grok-tiny, ours vs the reference and llama.cpp vs ours
  The same agreement on grok-mini-trained held-out text (where it means something): agree.py.

  python3 tools/llamacpp/compat.py [--work /tmp/llamacpp-work] [--reuse] [--json OUT]

Exits 1 when something that should work fails. Needs tools/llamacpp/build.sh first.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

TYPES = ["f32", "q8_0", "q4_0", "q4_k"]
MODELS = {
    "tiny": (C.FIX / "grok-tiny/ckpt-0", C.FIX / "grok-tiny/reference/config.json"),
    "mini": (C.FIX / "grok-mini-trained/ckpt-0", C.FIX / "grok-mini-trained/config.json"),
}
LQ_TYPES = ["Q4_K_M", "Q4_0", "Q8_0"]

failures = []


def fail(what):
    failures.append(what)
    print(f"FAIL: {what}", file=sys.stderr)


def convert(work, reuse):
    files = {}
    for name, (ckpt, cfg) in MODELS.items():
        out = {t: work / f"{name}-{t}.gguf" for t in TYPES}
        if not (reuse and all(p.exists() for p in out.values())):
            rc, o, e = C.run([C.ours(), "convert", ckpt, "--config", cfg, "-o",
                              work / f"{name}-{{type}}.gguf", "--type", ",".join(TYPES), "--force", "-q"])
            if rc != 0:
                fail(f"grok1-quant convert {name}: {e.strip()[-300:]}")
                continue
        files[name] = out
    return files


def ref_prompts():
    d = C.FIX / "grok-tiny/reference"
    ps = json.load(open(d / "prompts.json"))["prompts"]
    for p in ps:
        T, V = p["logits_f32"]["shape"]
        p["ref"] = np.fromfile(C.FIX / "grok-tiny" / p["logits_f32"]["file"], dtype="<f4").reshape(T, V)
    return ps


def cmp(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float((a.argmax(-1) == b.argmax(-1)).mean()), float(np.abs(a - b).max()), \
        float(np.sqrt(((a - b) ** 2).mean()))


def section_a(files):
    print("\n## (a) llama.cpp loads our files")
    print(f"{'file':<18} {'binding load+decode':<22} llama-simple (8 tokens)")
    simple = Path(C.llamacpp_env()["LLAMACPP_BIN"]) / "llama-simple"
    for name, fs in files.items():
        for t, f in fs.items():
            try:
                C.llama_logits(f, [1, 710, 3980, 512])
                bind = "ok"
            except Exception as e:  # noqa: BLE001
                bind = f"FAIL {e}"
                fail(f"llama.cpp load {f.name}: {e}")
            if simple.exists():
                rc, o, e = C.run([simple, "-m", f, "-n", "8", "The answer"], timeout=300)
                gen = f"ok: {o.strip().splitlines()[-1][:40]!r}" if rc == 0 and o.strip() else \
                    f"FAIL rc={rc} {'; '.join(C.llama_errors(e, 2))}"
                if rc != 0:
                    fail(f"llama-simple {f.name}: rc={rc}")
            else:
                gen = "skipped (llama-simple not built)"
            print(f"{f.name:<18} {bind:<22} {gen}")


def llama_array(f, ids, kv32):
    lg, _ = C.llama_logits(f, ids, kv_f32=kv32)
    return np.array([np.frombuffer(r, dtype=np.float32) for r in lg], dtype=np.float64)


def section_b(files, work, res):
    print("\n## (b) logits on grok-tiny prompts (ids fed directly, no BOS)")
    ps = ref_prompts()
    have_ours = C.ours_has("logits")
    if not have_ours:
        print("  (grok1-quant has no `logits` command yet: ours columns skipped)")
    hdr = f"{'file':<16} {'KV':<4} {'prompt':>6} {'T':>3} | {'top1 vs ref':>11} {'max|d| ref':>10} {'rms ref':>8}"
    hdr += f" | {'top1 vs ours':>12} {'max|d| ours':>11}" if have_ours else ""
    print(hdr)
    ours_cache, summary = {}, []
    for t, f in files["tiny"].items():
        ours_ref = C.Agreement()  # our engine vs the reference, for context
        kv_noise = C.Agreement()  # llama.cpp KV f32 (A) vs KV f16 (B): its own rounding noise floor
        ll_by_kv = {}
        for kv32 in (False, True):
            vs_ref, vs_ours = C.Agreement(), C.Agreement()
            for p in ps:
                ids = p["token_ids"]
                try:
                    lg = llama_array(f, ids, kv32)
                except Exception as e:  # noqa: BLE001
                    fail(f"llama.cpp logits {f.name}: {e}")
                    continue
                a1, mx, rms = cmp(lg, p["ref"])
                vs_ref.add(p["ref"], lg)
                ll_by_kv[(kv32, p["index"])] = lg
                if kv32 and (False, p["index"]) in ll_by_kv:
                    kv_noise.add(lg, ll_by_kv[(False, p["index"])])
                row = dict(file=f.name, kv="f32" if kv32 else "f16", prompt=p["index"], T=len(ids),
                           top1_ref=a1, maxd_ref=mx, rms_ref=rms)
                line = f"{f.name:<16} {row['kv']:<4} {p['index']:>6} {len(ids):>3} | {a1:>11.3f} {mx:>10.4f} {rms:>8.4f}"
                if have_ours:
                    try:
                        key = (t, p["index"])
                        if key not in ours_cache:
                            ours_cache[key] = C.ours_logits(f, ids, work / "ours-logits.bin")
                            ours_ref.add(p["ref"], ours_cache[key])
                        ol = ours_cache[key]
                        a2, mx2, _ = cmp(lg, ol)
                        vs_ours.add(ol, lg)
                        row.update(top1_ours=a2, maxd_ours=mx2)
                        line += f" | {a2:>12.3f} {mx2:>11.4f}"
                    except Exception as e:  # noqa: BLE001
                        line += f" | ours failed: {e}"[:60]
                        fail(f"grok1-quant logits {f.name}: {e}")
                print(line)
                res.append(row)
                if t == "f32" and a1 < 0.9:
                    fail(f"llama.cpp top-1 agreement {a1:.3f} < 0.9 on {f.name} prompt {p['index']}")
            summary.append(dict(file=f"tiny-{t}", engine="llama.cpp", kv="f32" if kv32 else "f16",
                                vs_ref=vs_ref, vs_ours=vs_ours))
        if ours_ref.n:
            summary.append(dict(file=f"tiny-{t}", engine="ours", vs_ref=ours_ref))
        if kv_noise.n:
            summary.append(dict(file=f"tiny-{t}", engine="llama-kv", vs_ref=None, vs_ours=kv_noise))
    if summary:
        print(f"\nall {sum(len(p['token_ids']) for p in ps)} positions of the 4 prompts:")
        print(f"{'file':<16} {'engine/KV':<14} {'top1 vs ref':>11} | {'top1 llama vs ours':>18} {'diff':>4} "
              f"{'ties<0.1':>8} {'max|d|':>7} {'KL(ours||llama)':>15}")
        for m in summary:
            if m["engine"] == "ours":
                print(f"{m['file']:<16} {'ours':<14} {m['vs_ref'].top1():>11.3f} |")
                res.append(dict(file=m["file"], engine="ours", top1_ref=m["vs_ref"].top1()))
                continue
            if not m["vs_ours"].n:
                continue
            r = m["vs_ours"].row(m["file"])
            if m["engine"] == "llama-kv":
                label, ref = "llama f32~f16", ""
            else:
                label, ref = "llama " + m["kv"], f"{m['vs_ref'].top1():.3f}"
            print(f"{m['file']:<16} {label:<14} {ref:>11} | {r['top1']:>18.3f} "
                  f"{r['disagree']:>4} {r['near_ties']:>8} {r['max_abs_delta']:>7.3f} {r['mean_kl']:>15.2e}")
            res.append(dict(r, engine=m["engine"], kv=m.get("kv"),
                            top1_ref=m["vs_ref"].top1() if m["vs_ref"] else None))


def section_c(files, work, reuse, res):
    print("\n## (c) llama-quantize of our F32 GGUF -> files grok1-quant loads and runs")
    q = C.llama_bin("llama-quantize")
    have_ours = C.ours_has("logits")
    ps = ref_prompts()
    print(f"{'file':<22} {'grok1-quant inspect':<40} ours vs ref | llama.cpp (KV f32) vs ours: "
          "top1 / diff / ties<0.1 / max|d| (all 4 prompts)")
    for name, fs in files.items():
        for lt in LQ_TYPES:
            out = work / f"{name}-llq-{lt.lower()}.gguf"
            if not (reuse and out.exists()):
                rc, o, e = C.run([q, fs["f32"], out, lt, "2"], timeout=600)
                if rc != 0:
                    fail(f"llama-quantize {name} {lt}: {C.llama_errors(o + e, 3)}")
                    print(f"{out.name:<22} FAIL {C.llama_errors(o + e, 2)}")
                    continue
            rc, o, e = C.run([C.ours(), "inspect", out])
            if rc == 0:
                types = sorted({w for l in o.splitlines() for w in l.split()
                                if w.upper() in ("F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K",
                                                 "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "BF16")})
                ins = "ok (" + ",".join(types)[:34] + ")"
            else:
                ins = "FAIL " + (e.strip().splitlines() or ["?"])[-1][:60]
                fail(f"grok1-quant inspect {out.name}: {e.strip()[-200:]}")
            lg = "skipped (no `logits` command)"
            row = dict(file=out.name, inspect=ins)
            if have_ours and name == "tiny":
                try:
                    vs_ref, vs_ll = C.Agreement(), C.Agreement()
                    for p in ps:
                        ol = C.ours_logits(out, p["token_ids"], work / "ours-logits.bin")
                        vs_ref.add(p["ref"], ol)
                        vs_ll.add(ol, llama_array(out, p["token_ids"], True))
                    r = vs_ll.row(out.name)
                    lg = f"{vs_ref.top1():.3f} | {r['top1']:.3f} / {r['disagree']} / {r['near_ties']} / " \
                         f"{r['max_abs_delta']:.3f}"
                    row.update(r, top1_ours_vs_ref=vs_ref.top1())
                except Exception as e:  # noqa: BLE001
                    lg = f"FAIL {e}"[:60]
                    fail(f"grok1-quant logits {out.name}: {e}")
            elif name != "tiny":
                lg = "(agreement on held-out text: agree.py)"
            print(f"{out.name:<22} {ins:<40} {lg}")
            res.append(row)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/llamacpp-work"))
    ap.add_argument("--reuse", action="store_true", help="reuse GGUFs already in --work")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", default="abc")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    env = C.llamacpp_env()
    print(f"llama.cpp from llama-cpp-python {env.get('LLAMACPP_PY_VERSION', '?')}; ours: {C.ours()}")
    files = convert(a.work, a.reuse)
    res = {"b": [], "c": []}
    if "a" in a.only:
        section_a(files)
    if "b" in a.only:
        section_b(files, a.work, res["b"])
    if "c" in a.only:
        section_c(files, a.work, a.reuse, res["c"])
    if a.json:
        a.json.write_text(json.dumps(dict(results=res, failures=failures), indent=1))
    print(f"\n{len(failures)} failure(s)" + "".join(f"\n  - {f}" for f in failures))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
