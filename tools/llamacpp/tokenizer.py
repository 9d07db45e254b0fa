#!/usr/bin/env python3
"""Does llama.cpp's SPM tokenizer reproduce Grok-1's tokenizer?

Writes a vocab-only GGUF (arch grok, Grok-1's hyperparameters, no tensors) carrying the real
Grok-1 vocabulary from /work/shared/fixtures/grok-1-tokenizer/tokenizer.model, with exactly the
tokenizer keys our converter writes (src/convert/metadata.rs), using gguf-py from the cached
llama.cpp source; loads it through libllama with vocab_only=true and tokenizes the 36 golden
strings (no BOS, parse_special=false), comparing with the sentencepiece golden ids.

  python3 tools/llamacpp/tokenizer.py [--gguf /tmp/llamacpp-work/grok1-vocab.gguf] [-v]
"""
import argparse
import ctypes
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

TOKDIR = C.FIX / "grok-1-tokenizer"


def write_vocab_gguf(path):
    env = C.llamacpp_env()
    sys.path.insert(0, str(Path(env["LLAMACPP_SRC"]) / "gguf-py"))
    import gguf
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(TOKDIR / "tokenizer.model"))
    n = sp.vocab_size()
    toks, scores, types = [], [], []
    for i in range(n):
        toks.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        t = 1  # NORMAL
        if sp.is_unknown(i):
            t = 2
        elif sp.is_control(i):
            t = 3
        elif sp.is_byte(i):
            t = 6
        elif sp.is_unused(i):
            t = 5
        types.append(t)
    # USER_DEFINED (4): sentencepiece's python API has no is_user_defined; ids 4..68 per the facts
    facts = json.load(open(TOKDIR / "golden_tokenization.json"))["tokenizer_facts"]
    lo, hi = facts["user_defined_id_range"]
    for i in range(lo, hi + 1):
        types[i] = 4
    w = gguf.GGUFWriter(str(path), "grok")
    # Grok-1's hyperparameters (needed by load_hparams even with vocab_only)
    w.add_name("grok-1-vocab-only")
    w.add_context_length(8192)
    w.add_embedding_length(6144)
    w.add_block_count(64)
    w.add_feed_forward_length(32768)
    w.add_expert_feed_forward_length(32768)
    w.add_head_count(48)
    w.add_head_count_kv(8)
    w.add_key_length(128)
    w.add_value_length(128)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(128)
    w.add_expert_count(8)
    w.add_expert_used_count(2)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=Path("/tmp/llamacpp-work/grok1-vocab.gguf"))
    ap.add_argument("-v", action="store_true", help="print every mismatch")
    a = ap.parse_args()
    a.gguf.parent.mkdir(parents=True, exist_ok=True)
    if not a.gguf.exists():
        write_vocab_gguf(a.gguf)
    L = C.binding()
    mp = L.llama_model_default_params()
    mp.vocab_only = True
    model = L.llama_model_load_from_file(str(a.gguf).encode(), mp)
    if not model:
        C.die("vocab-only load failed: " + "; ".join(C.log_tail_errors()))
    vocab = L.llama_model_get_vocab(model)
    cases = json.load(open(TOKDIR / "golden_tokenization.json"))["cases"]
    ok = 0
    rows = []
    for c in cases:
        b = c["text"].encode("utf-8")
        buf = (L.llama_token * (len(b) * 4 + 8))()
        n = L.llama_tokenize(vocab, b, len(b), buf, len(buf), False, False)
        got = list(buf[:max(n, 0)]) if n >= 0 else [f"err {n}"]
        same = got == c["ids"]
        ok += same
        rows.append((c["text"], same, got, c["ids"]))
    print(f"llama.cpp SPM tokenizer vs sentencepiece on Grok-1's tokenizer.model: {ok}/{len(cases)} golden strings identical")
    for text, same, got, ref in rows:
        if not same:
            print(f"  DIFF {text[:40]!r}: llama {got[:10]}{'...' if len(got) > 10 else ''} "
                  f"vs spm {ref[:10]}{'...' if len(ref) > 10 else ''}")
            if not a.v:
                continue
    L.llama_model_free(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
