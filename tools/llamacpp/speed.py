#!/usr/bin/env python3
"""llama-bench vs grok1-quant bench on the same synthetic ~1.7 B-param grok GGUFs.

  python3 tools/llamacpp/speed.py [--work /tmp/llamacpp-work] [--types q4_0,q4_k,q8_0]
                                  [--threads 1,2] [--pairs 5] [--pp 512] [--tg 128]

Makes the files once (grok1-quant synth --preset 1b; convert), then for each pair, type and
thread count runs llama-bench (pp and tg, one repetition each) and `grok1-quant bench` back to
back, alternating which goes first, and prints tokens/s plus ours/theirs ratios as
min/median/max over the pairs. Without our `bench` command only llama.cpp's numbers are printed.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402


def make_files(work, types, prefix="s1b"):
    files = {t: work / f"{prefix}-{t}.gguf" for t in types}
    if all(f.exists() for f in files.values()) or prefix != "s1b":
        return files
    src = work / "synth1b"
    if not (src / "ckpt-0").exists():
        rc, o, e = C.run([C.ours(), "synth", "-o", src, "--preset", "1b"])
        if rc != 0:
            C.die(f"synth failed: {e[-300:]}")
    rc, o, e = C.run([C.ours(), "convert", src / "ckpt-0", "--config", src / "config.json", "-o",
                      work / "s1b-{type}.gguf", "--type", ",".join(types), "--force", "-q"])
    if rc != 0:
        C.die(f"convert failed: {e[-300:]}")
    return files


def llama_bench(f, threads, pp, tg):
    cmd = [C.llama_bin("llama-bench"), "-m", f, "-p", str(pp), "-n", str(tg), "-t", str(threads),
           "-r", "1", "-fa", "0", "-o", "json"]
    rc, o, e = C.run(cmd, timeout=3000)
    if rc != 0:
        raise RuntimeError(f"llama-bench rc={rc}: {C.llama_errors(o + e, 3)}")
    d = json.loads(o)
    r = {}
    for t in d:
        if t["n_prompt"] and not t["n_gen"]:
            r["pp"] = t["avg_ts"]
        elif t["n_gen"] and not t["n_prompt"]:
            r["tg"] = t["avg_ts"]
    return r


def our_bench(f, threads, pp, tg):
    # same work as llama-bench -p PP -n TG -r 1: one repetition of each
    rc, o, e = C.run([C.ours(), "--threads", str(threads), "bench", f, "-p", str(pp), "-n", str(tg),
                      "--reps", "1", "--json"], timeout=3000)
    if rc != 0:
        raise RuntimeError(f"grok1-quant bench rc={rc}: {e.strip()[-200:]}")
    d = json.loads(o[o.index("{"):])
    return {"pp": d.get("prefill_tok_s"), "tg": d.get("decode_tok_s"),
            "decode_weight_gbps": d.get("decode_weight_gbps"), "memory_gbps": d.get("memory_gbps")}


def mmm(xs):
    xs = [x for x in xs if x]
    return f"{min(xs):.3f}/{statistics.median(xs):.3f}/{max(xs):.3f}" if xs else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/llamacpp-work"))
    ap.add_argument("--types", default="q4_0,q4_k,q8_0")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--prefix", default="s1b", help="use WORK/PREFIX-TYPE.gguf (e.g. mini) instead of the 1.7 B files")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    types = a.types.split(",")
    files = make_files(a.work, types, a.prefix)
    have_ours = C.ours_has("bench")
    if not have_ours:
        print("grok1-quant has no `bench` command yet: printing llama.cpp's numbers only")
    res = {}  # (type, threads) -> {"theirs": [...], "ours": [...]}
    for i in range(a.pairs):
        for t in types:
            for th in map(int, a.threads.split(",")):
                k = (t, th)
                r = res.setdefault(k, {"theirs": [], "ours": []})
                order = ["theirs", "ours"] if i % 2 == 0 else ["ours", "theirs"]
                for who in order:
                    if who == "ours" and not have_ours:
                        continue
                    fn = llama_bench if who == "theirs" else our_bench
                    try:
                        r[who].append(fn(files[t], th, a.pp, a.tg))
                    except Exception as e:  # noqa: BLE001
                        print(f"pair {i} {t} t={th} {who}: {e}", file=sys.stderr)
                        r[who].append({})
                last = r["theirs"][-1]
                print(f"pair {i} {t:<5} t={th}: llama.cpp pp{a.pp} {last.get('pp', 0):.2f} tg{a.tg} "
                      f"{last.get('tg', 0):.2f} tok/s" + (f"; ours pp {r['ours'][-1].get('pp')} "
                                                         f"tg {r['ours'][-1].get('tg')}" if have_ours else ""),
                      flush=True)
    print(f"\n{'type':<6} {'t':>2} | {'llama.cpp pp tok/s':>20} {'tg tok/s':>20} | "
          f"{'ours/theirs pp':>20} {'ours/theirs tg':>20}   (min/median/max over {a.pairs} pairs)")
    out = []
    for (t, th), r in res.items():
        pps = [x.get("pp") for x in r["theirs"]]
        tgs = [x.get("tg") for x in r["theirs"]]
        rp = [o.get("pp") / x.get("pp") for o, x in zip(r["ours"], r["theirs"]) if o.get("pp") and x.get("pp")]
        rt = [o.get("tg") / x.get("tg") for o, x in zip(r["ours"], r["theirs"]) if o.get("tg") and x.get("tg")]
        print(f"{t:<6} {th:>2} | {mmm(pps):>20} {mmm(tgs):>20} | {mmm(rp):>20} {mmm(rt):>20}")
        out.append(dict(type=t, threads=th, theirs=r["theirs"], ours=r["ours"]))
    if a.json:
        a.json.write_text(json.dumps(dict(pp=a.pp, tg=a.tg, runs=out), indent=1))


if __name__ == "__main__":
    main()
