#!/usr/bin/env python3
"""Cross-check our GGUF I/O against gguf-py, the format's reference implementation.

  gguf_check.py write OUT        write a small GGUF with gguf-py (many metadata types, a string
                                 array, F32/F16/Q8_0/BF16 tensors, alignment 64)
  gguf_check.py read IN --json   print IN's metadata and tensor table as read by gguf.GGUFReader,
                                 with a sha256 of every tensor's bytes

JSON of `read`: {"version", "alignment", "data_offset", "metadata": [{"key", "type",
"elem_type" (arrays only), "value"}], "tensors": [{"name", "type" (ggml id), "type_name",
"shape" (ggml ne order), "offset" (absolute), "n_bytes", "sha256"}]}. Float values are
written as strings (Python repr) so that they survive JSON parsing exactly.

Exit status 0 on success, 2 on usage errors; exceptions from gguf-py propagate (status 1).
"""

import argparse
import hashlib
import json
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType, GGUFValueType


def write(path: str) -> None:
    w = gguf.GGUFWriter(path, "grok")
    w.add_custom_alignment(64)
    w.add_name("gguf-py cross-check")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 65000)
    w.add_int16("test.i16", -32000)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_float32("test.f32", 0.1)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo wörld ✓")
    w.add_uint64("test.u64", 2**63 + 12345)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", 1e-300)
    w.add_array("test.strings", ["<pad>", "", "▁the", "日本"])
    w.add_array("test.i32s", [1, -2, 3])
    w.add_array("test.f32s", [0.5, -1.25, 3.0e-8])
    w.add_file_type(7)
    w.add_quantization_version(2)

    rng = np.random.default_rng(1234)
    w.add_tensor("t.f32", rng.standard_normal((3, 4), dtype=np.float32))
    w.add_tensor("t.f16", rng.standard_normal((2, 8)).astype(np.float16))
    # Raw bytes with a raw type: the byte shape (rows, row_bytes) becomes ne [64, 2].
    w.add_tensor("t.q8_0", rng.integers(0, 256, (2, 68), dtype=np.uint8),
                 raw_dtype=GGMLQuantizationType.Q8_0)
    # BF16: one element per block, two bytes each; byte shape (3, 10) becomes ne [5, 3].
    w.add_tensor("t.bf16", rng.integers(0, 256, (3, 10), dtype=np.uint8),
                 raw_dtype=GGMLQuantizationType.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def json_scalar(vtype: GGUFValueType, v):
    if vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        return repr(float(v))
    if vtype == GGUFValueType.BOOL:
        return bool(v)
    if vtype == GGUFValueType.STRING:
        return v
    return int(v)


def read(path: str) -> dict:
    r = gguf.GGUFReader(path)
    meta = []
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue  # gguf-py's pseudo fields for the header
        main = field.types[0]
        entry = {"key": name, "type": main.name}
        if main == GGUFValueType.ARRAY:
            if len(field.types) != 2:
                raise SystemExit(f"{path}: key {name}: nested arrays are not compared")
            sub = field.types[1]
            entry["elem_type"] = sub.name
            entry["value"] = [json_scalar(sub, x) for x in field.contents()]
        else:
            entry["value"] = json_scalar(main, field.contents())
        meta.append(entry)
    tensors = []
    for t in r.tensors:
        raw = np.ascontiguousarray(t.data).tobytes()
        if len(raw) != t.n_bytes:
            raise SystemExit(f"{path}: tensor {t.name}: {len(raw)} bytes, expected {t.n_bytes}")
        tensors.append({
            "name": t.name,
            "type": int(t.tensor_type),
            "type_name": t.tensor_type.name,
            "shape": [int(d) for d in t.shape],
            "offset": int(t.data_offset),
            "n_bytes": int(t.n_bytes),
            "sha256": hashlib.sha256(raw).hexdigest(),
        })
    version = int(r.fields["GGUF.version"].contents())
    return {
        "version": version,
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "metadata": meta,
        "tensors": tensors,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pw = sub.add_parser("write")
    pw.add_argument("out")
    pr = sub.add_parser("read")
    pr.add_argument("path")
    pr.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    a = p.parse_args()
    if a.cmd == "write":
        write(a.out)
    else:
        if not a.json:
            p.error("read needs --json")
        json.dump(read(a.path), sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
