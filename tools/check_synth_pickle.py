#!/usr/bin/env python3
"""Load every checkpoint file of a Grok checkpoint with Python's own pickle + numpy + ml_dtypes and
check dtypes and shapes against the config (same rules as src/naming.rs).

usage: check_synth_pickle.py DIR [--config CONFIG.json]
DIR is the checkpoint root (containing ckpt-0/) or ckpt-0 itself; the config defaults to
DIR/config.json (written by `cargo run --example synth_ckpt`). Exits non-zero on any failure.
"""
import argparse
import dataclasses
import json
import os
import pickle
import sys

import ml_dtypes
import numpy as np


@dataclasses.dataclass
class QuantizedWeight8bit:
    weight: np.ndarray
    scales: np.ndarray


# The release pickles name the class __main__.QuantizedWeight8bit.
sys.modules["__main__"].QuantizedWeight8bit = QuantizedWeight8bit

LAYER = ["moe/linear/w", "moe/linear_1/w", "moe/linear_v/w", "multi_head_attention/key/w",
         "multi_head_attention/linear/w", "multi_head_attention/query/w",
         "multi_head_attention/value/w", "rms_norm/scale", "rms_norm_1/scale", "rms_norm_2/scale",
         "rms_norm_3/scale", "router/w"]


def expected(cfg):
    e, emb, ffn = cfg["num_experts"], cfg["emb_size"], cfg["ffn_size"]
    q, kv = cfg["num_q_heads"] * cfg["key_size"], cfg["num_kv_heads"] * cfg["key_size"]
    rb = cfg.get("row_parallel_scale_blocks", 8)
    shapes = {
        "moe/linear/w": ((e, emb, ffn), (e, 1, ffn)),
        "moe/linear_1/w": ((e, ffn, emb), (e, rb, emb)),
        "moe/linear_v/w": ((e, emb, ffn), (e, 1, ffn)),
        "multi_head_attention/key/w": ((emb, kv), (1, kv)),
        "multi_head_attention/linear/w": ((q, emb), (rb, emb)),
        "multi_head_attention/query/w": ((emb, q), (1, q)),
        "multi_head_attention/value/w": ((emb, kv), (1, kv)),
        "router/w": ((emb, e), None),
    }
    entries = [("language_model/in_out_embed/embeddings", (cfg["vocab_size"], emb), None),
               ("language_model/rms_norm/scale", (emb,), None)]
    for layer in range(cfg["num_layers"]):
        for suffix in LAYER:
            shape, scales = shapes.get(suffix, ((emb,), None))
            entries.append((f"transformer/decoder_layer_{layer}/{suffix}", shape, scales))
    entries.sort(key=lambda t: t[0].rsplit("/", 1)[0])
    return entries


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--config")
    a = ap.parse_args()
    root = a.dir
    ckpt = os.path.join(root, "ckpt-0") if os.path.isdir(os.path.join(root, "ckpt-0")) else root
    cfg_path = a.config or os.path.join(root, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    entries = expected(cfg)
    failures = 0
    names = sorted(n for n in os.listdir(ckpt) if n.startswith("tensor"))
    if len(names) != len(entries):
        print(f"FAIL {ckpt}: {len(names)} tensor files, config expects {len(entries)}")
        failures += 1
    for i, (path, shape, scales) in enumerate(entries):
        fn = os.path.join(ckpt, f"tensor{i:05d}_000")
        try:
            with open(fn, "rb") as f:
                obj = pickle.load(f)
            if scales is None:
                ok = (isinstance(obj, np.ndarray) and obj.dtype == np.float32
                      and obj.shape == shape and np.isfinite(obj).all())
                got = f"{type(obj).__name__} {getattr(obj, 'dtype', '')} {getattr(obj, 'shape', '')}"
            else:
                w, s = obj.weight, obj.scales
                ok = (w.dtype == np.int8 and w.shape == shape
                      and s.dtype == ml_dtypes.bfloat16 and s.shape == scales
                      and np.isfinite(s.astype(np.float32)).all()
                      and (s.astype(np.float32) > 0).all()
                      and np.abs(w.astype(np.int32)).max(axis=-2).min() >= 100)
                got = f"weight {w.dtype} {w.shape}, scales {s.dtype} {s.shape}"
            if not ok:
                print(f"FAIL {fn} ({path}): expected {shape} / scales {scales}, got {got}")
                failures += 1
        except Exception as e:  # noqa: BLE001 - report every file
            print(f"FAIL {fn} ({path}): {type(e).__name__}: {e}")
            failures += 1
    print(f"{len(entries) - failures if failures <= len(entries) else 0}/{len(entries)} files OK"
          f" in {ckpt}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
