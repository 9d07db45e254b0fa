"""Shared helpers for the llama.cpp side-by-side scripts (compat.py, ppl.py, speed.py).

llama.cpp itself is never part of this repository: tools/llamacpp/build.sh fetches the
llama-cpp-python sdist from PyPI and builds it in a cache dir, and writes $CACHE/env.sh,
which is what this module reads.
"""
import ctypes
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("LLAMACPP_CACHE", Path.home() / ".cache" / "grok1-llamacpp"))
FIX = Path(os.environ.get("GROK_FIXTURES", "/work/shared/fixtures"))


def die(msg, code=2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def llamacpp_env():
    """KEY=VALUE pairs written by build.sh; exits with a hint when llama.cpp is not built."""
    env_sh = CACHE / "env.sh"
    if not env_sh.exists():
        die(f"{env_sh} missing: run tools/llamacpp/build.sh first")
    env = {}
    for line in env_sh.read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


def llama_bin(name):
    p = Path(llamacpp_env()["LLAMACPP_BIN"]) / name
    if not p.exists():
        die(f"{p} not built (tools/llamacpp/build.sh builds it)")
    return str(p)


def ours():
    """Path of our grok1-quant binary ($GROK1_QUANT, else target/release)."""
    p = os.environ.get("GROK1_QUANT") or str(REPO / "target" / "release" / "grok1-quant")
    if not Path(p).exists():
        p2 = shutil.which("grok1-quant")
        if not p2:
            die(f"{p} missing: cargo build --release")
        p = p2
    return p


def ours_logits(gguf, ids, out, threads=None):
    """Our engine's logits (`grok1-quant logits ... --device cpu`) for one sequence of token ids,
    as float64 [len(ids)][n_vocab]; `out` is the scratch file the command writes."""
    import numpy as np
    cmd = [ours(), "logits", gguf, "--tokens", ",".join(map(str, ids)), "--out", out, "--device", "cpu"]
    if threads:
        cmd += ["--threads", str(threads)]
    rc, o, e = run(cmd, timeout=900)
    if rc != 0:
        raise RuntimeError(f"grok1-quant logits {Path(gguf).name}: {e.strip()[-300:]}")
    a = np.fromfile(out, dtype="<f4")
    if a.size == 0 or a.size % len(ids):
        raise RuntimeError(f"grok1-quant logits wrote {a.size} floats to {out}: not a multiple of {len(ids)} tokens")
    return a.reshape(len(ids), -1).astype(np.float64)


_cmds = None


def ours_has(cmd):
    """Whether our CLI has subcommand `cmd` (parsed from `grok1-quant help`)."""
    global _cmds
    if _cmds is None:
        out = subprocess.run([ours(), "help"], capture_output=True, text=True).stdout
        _cmds, on = set(), False
        for line in out.splitlines():
            if line.strip().startswith("Commands:"):
                on = True
                continue
            if on:
                if not line.startswith("  "):
                    on = False
                    continue
                _cmds.add(line.split()[0])
    return cmd in _cmds


def run(cmd, timeout=None, env=None):
    """Run a command; returns (rc, stdout, stderr)."""
    try:
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                           timeout=timeout, env=env)
        return r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        return 124, e.stdout or "", (e.stderr or "") + "\n[timeout]"


def llama_errors(text, n=6):
    """The llama.cpp log lines worth quoting (errors, exceptions, asserts)."""
    keys = ("error", "failed", "exception", "assert", "wrong", "missing", "unknown", "abort")
    lines = [l.strip() for l in text.splitlines() if any(k in l.lower() for k in keys)]
    return lines[-n:]


# --- python binding (ctypes) from the same sdist, bound to the libllama.so build.sh built ---

_L = None


def binding():
    """llama_cpp.llama_cpp (the low-level ctypes module) of the cached sdist, without its
    package __init__ (which pulls in the high-level API and its extra dependencies)."""
    global _L
    if _L is not None:
        return _L
    env = llamacpp_env()
    os.environ["LLAMA_CPP_LIB_PATH"] = env["LLAMACPP_LIB"]
    pkg_dir = Path(env["LLAMACPP_PYBIND"]) / "llama_cpp"
    if "llama_cpp" not in sys.modules:
        pkg = types.ModuleType("llama_cpp")
        pkg.__path__ = [str(pkg_dir)]
        sys.modules["llama_cpp"] = pkg
    import importlib
    _L = importlib.import_module("llama_cpp.llama_cpp")
    _L.llama_backend_init()
    # keep llama.cpp's log in LOG (quoted on failure); echo it with LLAMACPP_VERBOSE=1
    def _log(level, text, user):
        t = text.decode("utf-8", "replace") if text else ""
        LOG.append(t)
        del LOG[:-400]
        if os.environ.get("LLAMACPP_VERBOSE"):
            sys.stderr.write(t)
    cb = _L.llama_log_callback(_log)
    binding._keep = cb
    _L.llama_log_set(cb, ctypes.c_void_p(0))
    return _L


LOG = []


def log_tail_errors():
    return llama_errors("".join(LOG))


class LlamaRunner:
    """One llama.cpp model + context (CPU); eval(ids) returns logits [T][n_vocab] for one sequence
    from an empty cache, fed as ids (no tokenizer, no BOS)."""

    def __init__(self, model_path, n_ctx=256, kv_f32=False, n_threads=2):
        L = self.L = binding()
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(str(model_path).encode(), mp)
        if not self.model:
            raise RuntimeError("; ".join(log_tail_errors()) or f"load failed: {model_path}")
        cp = L.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx
        cp.n_threads = cp.n_threads_batch = n_threads
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if kv_f32:
            cp.type_k = cp.type_v = L.GGML_TYPE_F32
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            L.llama_model_free(self.model)
            raise RuntimeError("; ".join(log_tail_errors()) or f"context failed: {model_path}")
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.n_ctx = n_ctx

    def eval(self, token_ids):
        import array
        L, T, nv = self.L, len(token_ids), self.n_vocab
        if T > self.n_ctx:
            raise ValueError(f"{T} tokens > n_ctx {self.n_ctx}")
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
        batch = L.llama_batch_init(T, 0, 1)
        try:
            batch.n_tokens = T
            for i, t in enumerate(token_ids):
                batch.token[i] = t
                batch.pos[i] = i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1
            rc = L.llama_decode(self.ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}: " + "; ".join(log_tail_errors()))
            ptr = L.llama_get_logits(self.ctx)
            flat = (ctypes.c_float * (T * nv)).from_address(ctypes.addressof(ptr.contents))
            a = array.array("f", bytes(flat))
        finally:
            L.llama_batch_free(batch)
        return [a[i * nv:(i + 1) * nv] for i in range(T)]

    def close(self):
        self.L.llama_free(self.ctx)
        self.L.llama_model_free(self.model)


def llama_logits(model_path, token_ids, kv_f32=False, n_threads=2):
    """llama.cpp's logits for every position of `token_ids` (one sequence, from an empty
    cache, fed as ids). Returns (T lists of n_vocab floats, n_vocab)."""
    r = LlamaRunner(model_path, n_ctx=max(256, len(token_ids)), kv_f32=kv_f32, n_threads=n_threads)
    try:
        return r.eval(token_ids), r.n_vocab
    finally:
        r.close()


# --- agreement statistics between two engines' logits (compat.py, agree.py) ---


def log_softmax(x):
    import numpy as np
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


class Agreement:
    """Accumulates, over chunks of [T][n_vocab] logits, how engine B (llama.cpp) agrees with
    engine A (ours): top-1 agreement, max|delta|, mean KL(A || B) in nats, and the disagreements
    that are near ties (A's own top-1 / top-2 gap below `tie`). With the token ids, also each
    engine's ppl over next-token predictions (all positions but the last of each chunk)."""

    def __init__(self, tie=0.1):
        self.tie = tie
        self.n = self.agree = self.ties = self.n_next = 0
        self.maxd = self.kl = self.nll_a = self.nll_b = 0.0
        self.flip_gaps = []

    def add(self, a, b, ids=None):
        import numpy as np
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"logits shapes differ: {a.shape} vs {b.shape}")
        same = a.argmax(-1) == b.argmax(-1)
        self.n += len(a)
        self.agree += int(same.sum())
        self.maxd = max(self.maxd, float(np.abs(a - b).max()))
        la, lb = log_softmax(a), log_softmax(b)
        self.kl += float((np.exp(la) * (la - lb)).sum())
        srt = np.sort(a, -1)
        gap = (srt[:, -1] - srt[:, -2])[~same]
        self.flip_gaps += [float(g) for g in gap]
        self.ties += int((gap < self.tie).sum())
        if ids is not None and len(ids) > 1:
            nxt = np.asarray(ids[1:])
            rows = np.arange(len(nxt))
            self.nll_a -= float(la[rows, nxt].sum())
            self.nll_b -= float(lb[rows, nxt].sum())
            self.n_next += len(nxt)

    def top1(self):
        return self.agree / self.n if self.n else float("nan")

    def row(self, name):
        import math
        r = dict(file=name, positions=self.n, top1=self.top1(), disagree=self.n - self.agree,
                 near_ties=self.ties, max_flip_gap=max(self.flip_gaps, default=0.0),
                 max_abs_delta=self.maxd, mean_kl=self.kl / self.n if self.n else float("nan"))
        if self.n_next:
            r.update(ppl_ours=math.exp(self.nll_a / self.n_next), ppl_llama=math.exp(self.nll_b / self.n_next))
        return r
