#!/usr/bin/env python3
"""Check converted GGUF files against the Grok-1 checkpoint they came from, independently of the
Rust code: gguf-py reads the GGUF, Python's pickle + numpy + ml_dtypes read the checkpoint.

usage: check_convert.py CKPT_DIR CONFIG.json GGUF [GGUF ...]

CKPT_DIR is the checkpoint root (containing ckpt-0/) or ckpt-0 itself. For every GGUF:
  * architecture `grok`, exactly the tensors llama.cpp's grok loader wants (no `output`),
    with the right shapes and types (the file's type from general.file_type);
  * the grok.* and tokenizer.ggml.* metadata against the config (add_bos_token false);
  * every Q8_0 tensor dequantizes (gguf.quants.dequantize) BIT-EXACTLY to int8 x f32(bf16 scale)
    of the checkpoint, transposed to GGUF rows, with the right scale block per row element;
  * every F32 tensor equals the source (or the dequantized int8 source) bit for bit;
  * F16/BF16 tensors equal the source rounded; other block types dequantize close to it.
Exits non-zero with a message naming the file and tensor on the first class of mismatch.
"""
import dataclasses
import json
import os
import pickle
import sys

import ml_dtypes  # noqa: F401  (registers bfloat16 for the pickles)
import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize


@dataclasses.dataclass
class QuantizedWeight8bit:
    weight: np.ndarray
    scales: np.ndarray


# The release pickles name the class __main__.QuantizedWeight8bit.
sys.modules["__main__"].QuantizedWeight8bit = QuantizedWeight8bit

# (checkpoint suffix, GGUF base name, kind) in the checkpoint's per-layer order.
LAYER = [
    ("moe/linear/w", "ffn_gate_exps", "expert"),
    ("moe/linear_1/w", "ffn_down_exps", "expert"),
    ("moe/linear_v/w", "ffn_up_exps", "expert"),
    ("multi_head_attention/key/w", "attn_k", "matrix"),
    ("multi_head_attention/linear/w", "attn_output", "matrix"),
    ("multi_head_attention/query/w", "attn_q", "matrix"),
    ("multi_head_attention/value/w", "attn_v", "matrix"),
    ("rms_norm/scale", "attn_norm", "norm"),
    ("rms_norm_1/scale", "attn_output_norm", "norm"),
    ("rms_norm_2/scale", "ffn_norm", "norm"),
    ("rms_norm_3/scale", "layer_output_norm", "norm"),
    ("router/w", "ffn_gate_inp", "router"),
]

# llama_ftype -> the type of the big matrices.
FILE_TYPES = {0: T.F32, 1: T.F16, 2: T.Q4_0, 3: T.Q4_1, 7: T.Q8_0, 8: T.Q5_0, 9: T.Q5_1,
              10: T.Q2_K, 12: T.Q3_K, 14: T.Q4_K, 16: T.Q5_K, 18: T.Q6_K, 32: T.BF16}
# Loose sanity bound (relative RMS error) for lossy block types.
LOSSY_RMS = {T.Q8_0: 0.01, T.Q6_K: 0.03, T.Q5_K: 0.06, T.Q5_0: 0.08, T.Q5_1: 0.08,
             T.Q4_K: 0.12, T.Q4_0: 0.15, T.Q4_1: 0.15, T.Q3_K: 0.3, T.Q2_K: 0.6}


class Fail(Exception):
    pass


def param_list(cfg):
    """(file index, checkpoint path, GGUF name, kind) in the checkpoint's file order."""
    entries = [("language_model/in_out_embed/embeddings", "token_embd.weight", "embd"),
               ("language_model/rms_norm/scale", "output_norm.weight", "norm")]
    for layer in range(cfg["num_layers"]):
        for suffix, base, kind in LAYER:
            entries.append((f"transformer/decoder_layer_{layer}/{suffix}",
                            f"blk.{layer}.{base}.weight", kind))
    # jax tree_flatten order: string order of the module paths (stable).
    entries.sort(key=lambda t: t[0].rsplit("/", 1)[0])
    return [(i, p, g, k) for i, (p, g, k) in enumerate(entries)]


def block_size(ty):
    return gguf.GGML_QUANT_SIZES[ty][0]


def expected_type(main, name, kind, n_in):
    if kind == "embd":
        want = main if main in (T.F32, T.F16, T.BF16) else (T.F32 if main == T.Q8_0 else T.Q6_K)
    elif kind in ("expert", "matrix"):
        want = main
    else:
        want = T.F32
    if n_in % block_size(want) == 0:
        return want
    for t in (T.Q8_0, T.F16):
        if n_in % block_size(t) == 0:
            return t
    return T.F32


def load_param(path):
    with open(path, "rb") as f:
        obj = pickle.load(f)
    return obj


def source_rows(obj, kind, path):
    """The source as f32 in GGUF row order (numpy shape = reversed GGUF shape)."""
    if kind in ("expert", "matrix"):
        if not isinstance(obj, QuantizedWeight8bit):
            raise Fail(f"{path}: expected a QuantizedWeight8bit, found {type(obj).__name__}")
        w, s = obj.weight, obj.scales
        if w.dtype != np.int8 or s.dtype != ml_dtypes.bfloat16:
            raise Fail(f"{path}: expected int8 weight + bfloat16 scales, found {w.dtype} + {s.dtype}")
        n_in = w.shape[-2]
        blocks = s.shape[-2]
        if n_in % blocks:
            raise Fail(f"{path}: {n_in} inputs do not split into {blocks} scale blocks")
        scale = np.repeat(s.astype(np.float32), n_in // blocks, axis=-2)
        deq = w.astype(np.float32) * scale  # exact: |int8| < 2^8, bf16 has 8 mantissa bits
        rows = lambda a: np.ascontiguousarray(np.swapaxes(a, -1, -2))
        return rows(deq), rows(scale), n_in // blocks

    if not isinstance(obj, np.ndarray) or obj.dtype != np.float32:
        raise Fail(f"{path}: expected a float32 array, found {getattr(obj, 'dtype', type(obj).__name__)}")
    if kind == "router":
        return np.ascontiguousarray(obj.T), None, None
    return obj, None, None


def q8_0_expected(src, scale, blk_len):
    """What an exact Q8_0 conversion holds: int8 x scale wherever a block of 32 lies in one
    scale block whose scale f16 represents exactly; elsewhere ggml's Q8_0 rounding of those
    values (gguf-py's quantize). Returns (values, number of requantized blocks)."""
    n_in = src.shape[-1]
    blocks = src.reshape(-1, n_in // 32, 32)
    first = scale.reshape(-1, n_in // 32, 32)[:, :, 0]
    b = np.arange(n_in // 32)
    straddle = (b * 32) // blk_len != (b * 32 + 31) // blk_len
    exact_scale = first.astype(np.float16).astype(np.float32) == first
    requant = straddle[None, :] | ~exact_scale
    want = blocks.copy()
    if requant.any():
        vals = blocks[requant]
        want[requant] = dequantize(gguf.quants.quantize(vals, T.Q8_0), T.Q8_0).astype(np.float32)
    return want.reshape(src.shape), int(requant.sum())


def bits_equal(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def first_diff(a, b):
    idx = np.argwhere(a.view(np.uint32) != b.view(np.uint32))[0]
    return f"first difference at {tuple(int(i) for i in idx)}: gguf {a[tuple(idx)]!r}, source {b[tuple(idx)]!r}"


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        raise Fail(f"metadata key {key} is missing")
    return f.contents()


def check_metadata(reader, cfg, gname):
    def eq(key, want):
        got = field(reader, key)
        if got != want:
            raise Fail(f"{gname}: metadata {key} = {got!r}, expected {want!r}")

    def eqf(key, want):
        got = field(reader, key)
        if np.float32(got) != np.float32(want):
            raise Fail(f"{gname}: metadata {key} = {got!r}, expected f32({want!r})")

    eq("general.architecture", "grok")
    a = "grok"
    eq(f"{a}.vocab_size", cfg["vocab_size"])
    eq(f"{a}.context_length", cfg["sequence_len"])
    eq(f"{a}.embedding_length", cfg["emb_size"])
    eq(f"{a}.block_count", cfg["num_layers"])
    eq(f"{a}.feed_forward_length", cfg["ffn_size"])
    eq(f"{a}.expert_feed_forward_length", cfg["ffn_size"])
    eq(f"{a}.attention.head_count", cfg["num_q_heads"])
    eq(f"{a}.attention.head_count_kv", cfg["num_kv_heads"])
    eq(f"{a}.attention.key_length", cfg["key_size"])
    eq(f"{a}.attention.value_length", cfg["key_size"])
    eq(f"{a}.rope.dimension_count", cfg["key_size"])
    eq(f"{a}.expert_count", cfg["num_experts"])
    eq(f"{a}.expert_used_count", cfg["num_selected_experts"])
    eqf(f"{a}.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])
    eqf(f"{a}.rope.freq_base", cfg["rope_base"])
    eqf(f"{a}.embedding_scale", cfg["embedding_multiplier_scale"])
    eqf(f"{a}.logit_scale", cfg["output_multiplier_scale"])
    eqf(f"{a}.attention.output_scale", cfg["attn_output_multiplier"])
    eqf(f"{a}.attn_logit_softcapping", cfg["attn_logit_softcap"])
    eq("tokenizer.ggml.model", "llama")
    eq("tokenizer.ggml.add_bos_token", False)
    eq("tokenizer.ggml.add_eos_token", False)
    eq("tokenizer.ggml.bos_token_id", cfg.get("bos_token", 1))
    eq("tokenizer.ggml.eos_token_id", cfg["eos_token"])
    eq("tokenizer.ggml.padding_token_id", cfg["pad_token"])
    eq("tokenizer.ggml.unknown_token_id", cfg.get("unk_token", 3))
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        n = len(field(reader, key))
        if n != cfg["vocab_size"]:
            raise Fail(f"{gname}: metadata {key} has {n} entries, expected vocab_size {cfg['vocab_size']}")
    ft = field(reader, "general.file_type")
    if ft not in FILE_TYPES:
        raise Fail(f"{gname}: general.file_type {ft} is not a type this checker knows")
    return FILE_TYPES[ft]


def check_gguf(gpath, ckpt, cfg, params):
    gname = os.path.basename(gpath)
    reader = gguf.GGUFReader(gpath)
    main = check_metadata(reader, cfg, gname)
    tensors = {t.name: t for t in reader.tensors}
    want_names = {g for _, _, g, _ in params}
    if "output.weight" in tensors:
        raise Fail(f"{gname}: has output.weight; grok ties the output to token_embd")
    missing = sorted(want_names - tensors.keys())
    extra = sorted(tensors.keys() - want_names)
    if missing or extra:
        raise Fail(f"{gname}: tensor set differs: missing {missing[:5]}, unexpected {extra[:5]}")
    if len(reader.tensors) != len(params):
        raise Fail(f"{gname}: {len(reader.tensors)} tensors, expected {len(params)}")
    counts = {}
    requantized = 0
    for index, path, name, kind in params:
        t = tensors[name]
        src_file = os.path.join(ckpt, f"tensor{index:05d}_000")
        src, scale, blk_len = source_rows(load_param(src_file), kind, f"{src_file} ({path})")
        want_shape = list(reversed(src.shape))
        if [int(x) for x in t.shape] != want_shape:
            raise Fail(f"{gname}: {name}: GGUF shape {[int(x) for x in t.shape]}, expected {want_shape} from {path}")
        ty = T(t.tensor_type)
        want_ty = expected_type(main, name, kind, want_shape[0])
        if ty != want_ty:
            raise Fail(f"{gname}: {name}: type {ty.name}, expected {want_ty.name}")
        if ty == T.F32:
            got = np.asarray(t.data, dtype=np.float32).reshape(src.shape)
            if not bits_equal(got, src):
                raise Fail(f"{gname}: {name}: F32 differs from {path}: {first_diff(got, src)}")
        elif ty == T.Q8_0 and kind in ("expert", "matrix"):
            got = dequantize(t.data, ty).astype(np.float32).reshape(src.shape)
            want, nreq = q8_0_expected(src, scale, blk_len)
            requantized += nreq
            if not bits_equal(got, want):
                raise Fail(f"{gname}: {name}: Q8_0 does not dequantize to int8 x bf16 scale of {path}: {first_diff(got, want)}")
        elif ty in (T.F16, T.BF16):
            got = dequantize(t.data, ty).astype(np.float32).reshape(src.shape)
            rounded = src.astype(np.float16 if ty == T.F16 else ml_dtypes.bfloat16).astype(np.float32)
            if not bits_equal(got, rounded):
                raise Fail(f"{gname}: {name}: {ty.name} is not the source rounded: {first_diff(got, rounded)}")
        else:
            got = dequantize(t.data, ty).astype(np.float32).reshape(src.shape)
            rms = float(np.sqrt(np.mean((got.astype(np.float64) - src) ** 2)))
            ref = float(np.sqrt(np.mean(src.astype(np.float64) ** 2))) or 1.0
            if not rms / ref <= LOSSY_RMS.get(ty, 1.0):
                raise Fail(f"{gname}: {name}: {ty.name} relative RMS error {rms / ref:.4f} exceeds {LOSSY_RMS.get(ty, 1.0)}")
        counts[ty.name] = counts.get(ty.name, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    print(f"OK {gname}: {main.name} file, {len(params)} tensors ({summary}), metadata matches the config"
          + (f", {requantized} Q8_0 blocks requantized (straddling scale blocks)" if requantized else ""))


def main():
    if len(sys.argv) < 4:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    ckpt, cfg_path, ggufs = sys.argv[1], sys.argv[2], sys.argv[3:]
    if os.path.isdir(os.path.join(ckpt, "ckpt-0")):
        ckpt = os.path.join(ckpt, "ckpt-0")
    with open(cfg_path) as f:
        cfg = json.load(f)
    params = param_list(cfg)
    try:
        present = sorted(n for n in os.listdir(ckpt) if n.startswith("tensor"))
        want = [f"tensor{i:05d}_000" for i, _, _, _ in params]
        if present != want:
            raise Fail(f"{ckpt}: {len(present)} checkpoint files, config expects {len(want)}")
        for g in ggufs:
            check_gguf(g, ckpt, cfg, params)
    except Fail as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
