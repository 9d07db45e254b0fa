#!/usr/bin/env python3
"""Importance matrices: ours vs llama.cpp's, and our quantizer vs llama-quantize, on grok-mini-trained.

Everything starts from ONE F32 GGUF (ours, converted from the checkpoint). Statistics come from
calib.txt only; every file is scored on eval.txt by OUR `grok1-quant compare` against that F32
file (ppl, Δppl, mean KLD, top-1), so tokenization and runtime are the same for all rows.

Files (TYPE in --types, default q4_k,q4_0; token_embd Q6_K in every file, for fairness:
our default for 4-bit types, llama-quantize `--token-embedding-type q6_k`):

  ours-TYPE            grok1-quant quantize F32 -t TYPE
  ours-TYPE-imO        ... --imatrix ours.imatrix          (grok1-quant imatrix, calib.txt)
  ours-TYPE-imL        ... --imatrix llama.imatrix         (llama-imatrix, calib.txt)
  ours-TYPE-imC        ... --imatrix ours-cov.imatrix      (grok1-quant imatrix --covariance:
                                                            error feedback through the input
                                                            covariances, GPTQ-style)
  llq-TYPE             llama-quantize --pure --token-embedding-type q6_k F32 TYPE
  llq-TYPE-imL         ... --imatrix llama.imatrix
  llq-TYPE-imO         ... --imatrix ours.imatrix          (isolates the quantizer from the statistics)
  llq-TYPE-imC         ... --imatrix ours-cov.imatrix      (llama.cpp reads the file; it ignores
                                                            the covariances: same tensors as imO)

llama-imatrix tokenizes calib.txt with llama.cpp's SPM tokenizer, which differs from the model's
sentencepiece tokenization (no lone ▁ before digits etc., see docs/llamacpp.md), so its
statistics come from a slightly different token stream; ours uses the reference tokenizer.

  python3 tools/llamacpp/imatrix_cmp.py [--chunks N] [--work DIR]
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIX, die, llama_bin, ours, run  # noqa: E402

from gguf import GGUFReader  # noqa: E402

MINI = FIX / "grok-mini-trained"


def sh(cmd, what, timeout=None):
    t0 = time.time()
    rc, o, e = run(cmd, timeout=timeout)
    if rc != 0:
        die(f"{what} failed (rc {rc}): {(o + e)[-2000:]}")
    print(f"  {what}: {time.time() - t0:.1f}s", file=sys.stderr, flush=True)
    return o + e


def bpw(path):
    """bits per weight over all tensors of the file (what llama-quantize prints)."""
    r = GGUFReader(path)
    nb = sum(int(t.n_bytes) for t in r.tensors)
    ne = sum(int(t.n_elements) for t in r.tensors)
    return 8.0 * nb / ne


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/llamacpp-work/imatrix")
    ap.add_argument("--types", default="q4_k,q4_0")
    ap.add_argument("--chunks", type=int, help="score only the first N chunks of eval.txt (default: all)")
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="keep files that exist")
    ap.add_argument("--only-files", action="store_true", help="make the files, do not score")
    a = ap.parse_args()
    w = Path(a.work)
    w.mkdir(parents=True, exist_ok=True)
    g = [ours(), "--threads", str(a.threads)]
    keep = lambda p: a.reuse and Path(p).exists()

    f32 = w / "mini-f32.gguf"
    if not keep(f32):
        sh(g + ["convert", MINI / "ckpt-0", "--config", MINI / "config.json", "-o", w / "mini-{type}.gguf",
                "--type", "f32", "--force", "-q"], "convert f32")
    im_o, im_l, im_c = w / "ours.imatrix", w / "llama.imatrix", w / "ours-cov.imatrix"
    if not keep(im_o):
        sh(g + ["imatrix", f32, "-f", MINI / "calib.txt", "-o", im_o, "-c", str(a.ctx)], "grok1-quant imatrix")
    if not keep(im_c):
        sh(g + ["imatrix", f32, "-f", MINI / "calib.txt", "-o", im_c, "-c", str(a.ctx), "--covariance"],
           "grok1-quant imatrix --covariance")
    if not keep(im_l):
        out = sh([llama_bin("llama-imatrix"), "-m", f32, "-f", MINI / "calib.txt", "-o", im_l,
                  "-c", str(a.ctx), "-t", "1", "--no-ppl"], "llama-imatrix")
        (w / "llama-imatrix.log").write_text(out)

    files = []
    for ty in a.types.split(","):
        for tag, im in (("", None), ("-imO", im_o), ("-imL", im_l), ("-imC", im_c)):
            p = w / f"ours-{ty}{tag}.gguf"
            if not keep(p):
                sh(g + ["quantize", f32, p, "-t", ty, "--force"] + (["--imatrix", im] if im else []), f"ours {ty}{tag}")
            files.append(p)
        for tag, im in (("", None), ("-imL", im_l), ("-imO", im_o), ("-imC", im_c)):
            p = w / f"llq-{ty}{tag}.gguf"
            if not keep(p):
                sh([llama_bin("llama-quantize"), "--pure", "--token-embedding-type", "q6_k"]
                   + (["--imatrix", im] if im else []) + [f32, p, ty.upper(), str(a.threads)],
                   f"llama-quantize {ty}{tag}")
            files.append(p)
    sizes = {p.name: bpw(p) for p in files}
    (w / "bpw.json").write_text(json.dumps(sizes, indent=1))
    for n, b in sizes.items():
        print(f"  {n}: {b:.3f} bpw", file=sys.stderr)
    if a.only_files:
        return
    js = w / f"compare{'-c' + str(a.chunks) if a.chunks else ''}.json"
    cmd = g + ["compare", f32] + files + ["-f", MINI / "eval.txt", "-c", str(a.ctx), "--json", js]
    if a.chunks:
        cmd += ["--chunks", str(a.chunks)]
    out = sh(cmd, "grok1-quant compare")
    print(out)
    print(f"json: {js}")


if __name__ == "__main__":
    main()
