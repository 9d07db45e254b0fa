#!/usr/bin/env python3
"""Compare the quant crate with gguf-py (the GGUF reference) on fresh random data.

Byte-exact quantize for Q8_0/Q4_0/Q4_1/Q5_0/BF16/F16 and bit-exact dequantize for every type
gguf-py can dequantize. Exits non-zero on any mismatch.

  python3 tools/check_quant_gguf_py.py            # check (builds quant_io example)
  python3 tools/check_quant_gguf_py.py --write-golden   # also (re)write quant/tests/golden/
"""
import argparse, os, subprocess, sys, tempfile
import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXACT_Q = ["q8_0", "q4_0", "q4_1", "q5_0", "bf16", "f16"]
DEQ_ONLY = ["q4_k", "q5_k", "q6_k"]  # quantized by us, dequantized by both


def qtype(name):
    return getattr(T, name.upper())


def test_rows(rng, n_rows, n):
    rows = [rng.standard_normal(n).astype(np.float32) * np.float32(10 ** rng.uniform(-3, 3))
            for _ in range(n_rows)]
    special = [
        np.zeros(n, np.float32),
        np.full(n, 0.75, np.float32),
        np.full(n, -3.5, np.float32),
        np.where(np.arange(n) % 2 == 0, 65504.0, -65504.0).astype(np.float32),
        (rng.standard_normal(n) * 1e-40).astype(np.float32),   # f32 denormals
        (rng.standard_normal(n) * 1e-6).astype(np.float32),    # f16 denormal scales
        (rng.standard_normal(n) * 3e4).astype(np.float32),
        np.tile(np.array([1.0, -1.0, 0.5, -0.5], np.float32), n // 4),  # ties in argmax
    ]
    return np.stack(rows + special)


def run_io(binary, mode, ty, n, data: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        i, o = os.path.join(d, "in"), os.path.join(d, "out")
        open(i, "wb").write(data)
        subprocess.run([binary, mode, ty, str(n), i, o], check=True)
        return open(o, "rb").read()


def build():
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "quant", "--example", "quant_io"],
                   cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "examples", "quant_io")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--write-golden", action="store_true")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--binary", default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    binary = args.binary or build()
    n = 512
    x = test_rows(rng, 24, n)
    bf = x.copy().view(np.uint32)
    bf[0, :4] = [0x7fc00001, 0xffa00000, 0x7f800000, 0x7f7fffff]  # NaNs, inf, max finite
    x_bf = bf.view(np.float32)
    failures = 0
    print(f"seed {seed}, {x.shape[0]} rows x {n}")
    for ty in EXACT_Q + DEQ_ONLY:
        src = x_bf if ty == "bf16" else x
        ours = run_io(binary, "quantize", ty, n, src.astype("<f4").tobytes())
        if ty in EXACT_Q:
            ref = quantize(src, qtype(ty)).tobytes()
            bad = sum(a != b for a, b in zip(ours, ref)) + abs(len(ours) - len(ref))
            print(f"quantize   {ty:5}: {'OK' if bad == 0 else f'MISMATCH ({bad} bytes)'}")
            failures += bad != 0
        # dequantize our bytes with both implementations
        q = np.frombuffer(ours, np.uint8).reshape(x.shape[0], -1)
        ref_deq = dequantize(q, qtype(ty)).astype("<f4")
        our_deq = np.frombuffer(run_io(binary, "dequantize", ty, n, ours), "<f4").reshape(ref_deq.shape)
        same = np.array_equal(ref_deq.view(np.uint32), our_deq.view(np.uint32))
        print(f"dequantize {ty:5}: {'OK (bit-exact)' if same else 'MISMATCH'}")
        failures += not same
        if ty in DEQ_ONLY:
            err = np.sqrt(np.mean((our_deq[:24] - x[:24]) ** 2)) / np.sqrt(np.mean(x[:24] ** 2))
            print(f"           {ty:5}: relative rms error {err:.4f}")
        if args.write_golden:
            write_golden(ty, src[:, :256] if ty not in DEQ_ONLY else src[:, :256], q, ref_deq)
    print("FAILED" if failures else "all checks passed", f"({failures} failures)")
    return 1 if failures else 0


def write_golden(ty, src, q, ref_deq):
    """Golden: input f32 rows (first 256 columns, quantized by gguf-py where it can), and
    gguf-py's dequantization of those bytes."""
    d = os.path.join(ROOT, "quant", "tests", "golden")
    os.makedirs(d, exist_ok=True)
    src = np.ascontiguousarray(src[-8:])
    if ty in EXACT_Q:
        qb = quantize(src, qtype(ty))
    else:
        # K-quants: gguf-py cannot quantize; store our bytes (first 256 columns) to check
        # the dequantization.
        rb = gguf.constants.GGML_QUANT_SIZES[qtype(ty)][1]
        qb = np.ascontiguousarray(q[-8:, :rb])
    deq = dequantize(qb, qtype(ty)).astype("<f4")
    src.astype("<f4").tofile(os.path.join(d, f"{ty}.in.f32"))
    qb.tofile(os.path.join(d, f"{ty}.q.bin"))
    deq.tofile(os.path.join(d, f"{ty}.deq.f32"))


if __name__ == "__main__":
    sys.exit(main())
